//! Protocol abuse against running daemons (issue 7, item 2): datagrams crafted in the test and
//! sent over real UDP to a daemon's control port from another namespace leave membership as it
//! was, the daemons alive and the mesh working, and show up in `status --json` → `exchange` as
//! drops counted by reason. Needs root; run with `--features root-tests`.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failure is a test failure"
)]

mod common;

use common::{Lab, Node, wait_until};
use serde_json::Value;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wgmesh_derive::{MeshAddresses, MeshKeys, NodeSeed, Secret};
use wgmesh_exchange::{Endpoint, EndpointKind, Entropy, Event, Exchange, ExchangeConfig, Record};

const FORMATION: Duration = Duration::from_secs(60);

/// Runs in the attacker's namespace: sends what the test writes on stdin (`send IP PORT HEX
/// [COUNT]`), from one socket, and prints every datagram it receives (`rx IP PORT HEX`).
const ATTACKER: &str = r#"
import socket, sys, threading, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 0))
lock = threading.Lock()
def say(line):
    with lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
def rx():
    while True:
        d, a = s.recvfrom(65535)
        say("rx %s %d %s" % (a[0], a[1], d.hex()))
threading.Thread(target=rx, daemon=True).start()
for line in sys.stdin:
    p = line.split()
    dest, data = (p[1], int(p[2])), bytes.fromhex(p[3].strip("-"))
    n = int(p[4]) if len(p) > 4 else 1
    t0 = time.time()
    for i in range(n):
        s.sendto(data, dest)
        if i % 100 == 99:
            time.sleep(0.005)
    say("sent %d %.3f" % (n, time.time() - t0))
"#;

struct Attacker {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    /// Datagrams received so far: (source, bytes).
    received: Vec<(SocketAddr, Vec<u8>)>,
}

impl Attacker {
    fn spawn(node: &Node) -> Self {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &node.ns, "python3", "-c", ATTACKER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            stdin,
            lines,
            received: Vec::new(),
        }
    }

    fn take(&mut self, line: &str) -> Option<f64> {
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["rx", ip, port, data] => {
                let from = SocketAddr::new(ip.parse().unwrap(), port.parse().unwrap());
                self.received.push((from, hex_decode(data)));
                None
            }
            ["sent", _, secs] => Some(secs.parse().unwrap()),
            _ => panic!("attacker said {line:?}"),
        }
    }

    /// Sends `datagram` `count` times to `to`; returns how long the sending took.
    fn send(&mut self, to: SocketAddr, datagram: &[u8], count: u32) -> f64 {
        writeln!(
            self.stdin,
            "send {} {} {} {count}",
            to.ip(),
            to.port(),
            hex_encode(datagram)
        )
        .unwrap();
        loop {
            let line = self.lines.recv_timeout(FORMATION).unwrap();
            if let Some(secs) = self.take(&line) {
                return secs;
            }
        }
    }

    /// Collects what arrives within `wait`.
    fn drain(&mut self, wait: Duration) {
        let deadline = Instant::now() + wait;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.take(&line);
                }
                Err(_) => break,
            }
        }
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Hex, with `-` for nothing (the attacker reads whitespace-separated words).
fn hex_encode(bytes: &[u8]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    if hex.is_empty() { "-".to_owned() } else { hex }
}

fn hex_decode(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn entropy() -> Entropy {
    Entropy::from_os().unwrap()
}

/// A member the test controls: same secret, its own random key, an address on the attacker's LAN.
fn member(keys: &MeshKeys, lan_ip: Ipv4Addr) -> Exchange {
    let private = keys.node_private_key(&NodeSeed::generate().unwrap());
    let public = private.public_key();
    let addresses = MeshAddresses::derive(keys, &public, 0);
    let record = Record {
        public_key: public,
        collision_counter: 0,
        mesh_ipv4: addresses.ipv4,
        mesh_ipv6: addresses.ipv6,
        endpoints: vec![Endpoint {
            kind: EndpointKind::Lan,
            addr: SocketAddr::new(IpAddr::V4(lan_ip), 51820),
        }],
        listen_port: 51820,
        routes: Vec::new(),
        flags: 0,
        timestamp: now_ms() / 1000,
    };
    Exchange::new(keys, private, record, ExchangeConfig::default()).unwrap()
}

/// The public keys a node lists as peers, sorted.
fn members(node: &Node) -> Vec<String> {
    let mut keys: Vec<String> = node.status_ok()["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["public_key"].as_str().unwrap().to_owned())
        .collect();
    keys.sort();
    keys
}

fn dropped(status: &Value, reason: &str) -> u64 {
    status["exchange"]["dropped"][reason].as_u64().unwrap_or(0)
}

/// UDP receive-buffer overflows in a namespace (datagrams the kernel dropped, not the daemon).
fn rcvbuf_errors(node: &Node) -> u64 {
    let out = node.exec("cat", &["/proc/net/snmp"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next().unwrap(), udp.next().unwrap());
    let column = names
        .split_whitespace()
        .position(|n| n == "RcvbufErrors")
        .unwrap();
    values
        .split_whitespace()
        .nth(column)
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: run with --features root-tests"
)]
fn crafted_datagrams_on_the_control_port_change_nothing() {
    let mut lab = Lab::new(3);
    // Nodes 1 and 2 form the mesh; node 3's namespace is the attacker's.
    lab.nodes[0].start(&[]);
    lab.nodes[1].start(&[]);
    lab.wait_for_full_mesh(FORMATION);
    let keys = MeshKeys::derive(
        &Secret::parse(&std::fs::read_to_string(&lab.nodes[0].secret_file).unwrap()).unwrap(),
    );
    let port = keys.control_port();
    let (victim, other) = (&lab.nodes[0], &lab.nodes[1]);
    let victim_addr = SocketAddr::new(victim.lan_ip.parse().unwrap(), port);
    let other_addr = SocketAddr::new(other.lan_ip.parse().unwrap(), port);
    let attacker_ip: Ipv4Addr = lab.nodes[2].lan_ip.parse().unwrap();
    let mut attacker = Attacker::spawn(&lab.nodes[2]);
    let members_before = [members(victim), members(other)];
    let pids = [
        victim.status_ok()["pid"].clone(),
        other.status_ok()["pid"].clone(),
    ];
    let before = victim.status_ok();
    let other_before = other.status_ok();

    // A member the test controls captures genuine datagrams: its Probe, and the victim's Hello.
    let mut mallory = member(&keys, attacker_ip);
    let probe = mallory.probe(now_ms(), victim_addr, entropy());
    attacker.send(victim_addr, &probe, 1);
    wait_until(Duration::from_secs(5), "the victim's answer", || {
        attacker.drain(Duration::from_millis(100));
        !attacker.received.is_empty()
    });
    let (from, hello) = attacker.received.remove(0);
    assert_eq!(from, victim_addr);
    let handled = mallory.handle(now_ms(), victim_addr, &hello, entropy());
    assert!(
        matches!(&handled.event, Some(Event::Verified { record, .. })
            if record.public_key.to_base64() == victim.status_ok()["public_key"]),
        "the captured Hello is genuine: {:?}",
        handled.dropped
    );
    // Mallory never answers the victim's challenge, so it never becomes a member. The victim
    // answered a stranger's Probe whose completing Hello never came: 2 s later it probes that
    // address back, once (in case the Hello was lost; budgeted per target). That Probe is the
    // only datagram the attacker gets without asking again.
    wait_until(Duration::from_secs(5), "the victim's probe-back", || {
        attacker.drain(Duration::from_millis(100));
        !attacker.received.is_empty()
    });
    let (from, back) = attacker.received.remove(0);
    assert_eq!(from, victim_addr);
    let handled = mallory.handle(now_ms(), victim_addr, &back, entropy());
    assert_eq!(
        handled.probed_by.map(|k| k.to_base64()),
        victim.status_ok()["public_key"].as_str().map(str::to_owned),
        "the probe-back is a Probe from the victim: {:?}",
        handled.dropped
    );
    attacker.drain(Duration::from_secs(3));
    assert!(
        attacker.received.is_empty(),
        "more than one probe-back: {}",
        attacker.received.len()
    );

    // Replays of the Probe, the victim's Hello reflected back and sent to the other member, a
    // Probe from another mesh, truncations, oversized datagrams. 17 datagrams: within the
    // per-source burst (40), so each is refused for its own reason.
    for _ in 0..5 {
        attacker.send(victim_addr, &probe, 1);
    }
    attacker.send(victim_addr, &hello, 1);
    attacker.send(other_addr, &hello, 1);
    let stranger_keys =
        MeshKeys::derive(&Secret::parse("wgmesh://v1/another-mesh-entirely-0001").unwrap());
    let stranger = member(&stranger_keys, attacker_ip).probe(now_ms(), victim_addr, entropy());
    attacker.send(victim_addr, &stranger, 1);
    for len in [0, 10, 44] {
        attacker.send(victim_addr, &probe[..len], 1);
    }
    for len in [45, probe.len() - 1] {
        attacker.send(victim_addr, &probe[..len], 1);
    }
    for len in [1201, 1500, 4000, 9000] {
        let mut big = probe.clone();
        big.resize(len, b'W');
        attacker.send(victim_addr, &big, 1);
    }
    attacker.drain(Duration::from_secs(2));
    assert!(
        attacker.received.is_empty(),
        "a refused datagram was answered ({} replies)",
        attacker.received.len()
    );
    let after = victim.status_ok();
    let delta = |reason: &str| dropped(&after, reason) - dropped(&before, reason);
    for (reason, expected) in [
        ("replay", 5),
        ("from_self", 1),
        ("bad_aead", 3),
        ("too_short", 3),
        ("too_large", 4),
        ("rate_limited", 0),
    ] {
        assert_eq!(delta(reason), expected, "victim's {reason} drops: {after}");
    }
    let other_after = other.status_ok();
    assert_eq!(
        dropped(&other_after, "not_for_us") - dropped(&other_before, "not_for_us"),
        1
    );

    // A flood from one source: the bucket (40, then 20/s) lets a few reach the AEAD, the rest
    // are refused before any crypto.
    std::thread::sleep(Duration::from_millis(2_500));
    let (before, kernel_before) = (victim.status_ok(), rcvbuf_errors(victim));
    let secs = attacker.send(victim_addr, &stranger, 10_000);
    std::thread::sleep(Duration::from_secs(1));
    let (after, kernel_after) = (victim.status_ok(), rcvbuf_errors(victim));
    let delta = |reason: &str| dropped(&after, reason) - dropped(&before, reason);
    let received = 10_000 - (kernel_after - kernel_before);
    let allowed = 40 + (20.0 * (secs + 1.0)).ceil() as u64;
    eprintln!(
        "flood: {secs:.2} s to send, {received} received, {} rate-limited, {} opened (allowed {allowed})",
        delta("rate_limited"),
        delta("bad_aead")
    );
    assert_eq!(
        delta("rate_limited") + delta("bad_aead"),
        received,
        "every flooded datagram is counted once"
    );
    assert!(received >= 5_000, "the kernel dropped most of the flood");
    assert!(
        delta("bad_aead") <= allowed,
        "{} flooded datagrams reached the AEAD",
        delta("bad_aead")
    );
    let opens = after["exchange"]["aead_opens"].as_u64().unwrap()
        - before["exchange"]["aead_opens"].as_u64().unwrap();
    assert!(opens <= delta("bad_aead") + 20, "{opens} AEAD opens");

    // Nothing changed: same daemons, same members, the mesh still carries traffic.
    attacker.drain(Duration::from_millis(500));
    assert!(attacker.received.is_empty(), "the flood was answered");
    for (i, node) in [victim, other].into_iter().enumerate() {
        assert_eq!(
            node.status_ok()["pid"],
            pids[i],
            "node {} restarted",
            node.index
        );
        assert_eq!(
            members(node),
            members_before[i],
            "node {} membership",
            node.index
        );
        assert!(
            !node.log().contains("panicked"),
            "node {} panicked",
            node.index
        );
    }
    let target = other.status_ok()["mesh_ipv4"].as_str().unwrap().to_owned();
    wait_until(FORMATION, "ping after the abuse", || victim.ping(&target));
}
