//! Hosts behind real NAT routers (tests/common/nat.rs): first that the lab's NATs behave like
//! the ones on the internet, then (once the daemon has DHT, STUN and relay support) a mesh that
//! forms across them. Needs root; run with `--features root-tests` (scripts/test.sh does).
#![expect(
    clippy::unwrap_used,
    clippy::print_stderr,
    reason = "test helpers: a failure is a test failure, and what they saw goes to the test output"
)]

mod common;

use common::nat::{NatLab, NatMode, PUB_IP, PUB_IP2, RELAY_IP};
use common::{run, wait_until};
use serde_json::Value;
use std::time::{Duration, Instant};

const FORMATION: Duration = Duration::from_secs(90);

/// In `pub`: answers each datagram on 198.18.0.1:3478/3479 with the source it saw, and sends
/// the same source an unsolicited datagram from two other endpoints (another IP; the same IP,
/// another port) that a NAT must not let through.
const OBSERVER: &str = r#"
import select, socket
def bound(ip, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((ip, port))
    return s
servers = [bound("198.18.0.1", 3478), bound("198.18.0.1", 3479)]
strangers = [bound("198.18.0.2", 3478), bound("198.18.0.1", 3480)]
print("READY", flush=True)
while True:
    ready, _, _ = select.select(servers, [], [])
    for s in ready:
        data, addr = s.recvfrom(2048)
        s.sendto(("%s:%d" % addr).encode(), addr)
        for stranger in strangers:
            stranger.sendto(b"unsolicited", addr)
"#;

/// In a host: from source port argv[1], one datagram to each observer port; prints JSON with
/// what each port saw as our source and any datagram from elsewhere.
const CLIENT: &str = r#"
import json, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.settimeout(0.2)
for port in (3478, 3479):
    s.sendto(b"hello", ("198.18.0.1", port))
seen, other = {}, []
deadline = time.time() + 1.5
while time.time() < deadline:
    try:
        data, addr = s.recvfrom(2048)
    except socket.timeout:
        continue
    if addr[0] == "198.18.0.1" and addr[1] in (3478, 3479):
        seen[str(addr[1])] = data.decode()
    else:
        other.append("%s:%d" % addr)
print(json.dumps({"seen": seen, "other": other}))
"#;

/// The source (`IP`, port) `pub` saw from host K on each observer port, and any unsolicited
/// datagram that got through.
fn observe(lab: &NatLab, host: usize, source_port: u16) -> ((String, u16), (String, u16), Value) {
    let node = &lab.hosts[host - 1];
    let out = node.exec("python3", &["-c", CLIENT, &source_port.to_string()]);
    assert!(
        out.status.success(),
        "client in h{host}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mapped = |port: &str| {
        let text = report["seen"][port]
            .as_str()
            .unwrap_or_else(|| panic!("h{host}: no answer from port {port}: {report}"));
        let (ip, port) = text.rsplit_once(':').unwrap();
        (ip.to_owned(), port.parse::<u16>().unwrap())
    };
    (mapped("3478"), mapped("3479"), report["other"].clone())
}

/// Checks host K's mapping against its router's mode; returns the two mapped ports.
fn assert_nat_mapping(lab: &NatLab, host: usize, source_port: u16) -> (u16, u16) {
    let router = lab.router_of(host);
    let ((ip1, port1), (ip2, port2), other) = observe(lab, host, source_port);
    eprintln!(
        "h{host} ({}) behind nat{} ({:?}): :{source_port} seen as {ip1}:{port1} and {ip2}:{port2}",
        lab.hosts[host - 1].lan_ip,
        router.index,
        router.mode
    );
    assert_eq!(
        ip1, router.wan_ip,
        "h{host}: source not the router's WAN IP"
    );
    assert_eq!(ip2, router.wan_ip);
    match router.mode {
        NatMode::PortPreserving | NatMode::FullCone => {
            assert_eq!(port1, source_port, "h{host}: port not preserved");
            assert_eq!(
                port2, source_port,
                "h{host}: mapping depends on the destination"
            );
        }
        NatMode::Random => assert!(
            port1 != port2 || port1 != source_port,
            "h{host}: random NAT kept one port for both destinations"
        ),
    }
    if router.mode != NatMode::FullCone {
        assert_eq!(
            other,
            serde_json::json!([]),
            "h{host}: unsolicited datagrams crossed the NAT"
        );
    }
    (port1, port2)
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: run with --features root-tests"
)]
fn nat_topology_behaves() {
    let start = Instant::now();
    let mut lab = NatLab::new(&[
        NatMode::PortPreserving,
        NatMode::Random,
        NatMode::PortPreserving,
    ]);
    eprintln!(
        "NAT lab {} with 3 routers built in {:?}",
        lab.id,
        start.elapsed()
    );
    let pub_ns = lab.pub_ns.clone();
    lab.spawn_ready(&pub_ns, "observer", "python3", &["-u", "-c", OBSERVER]);

    for k in 1..=3 {
        let host = &lab.hosts[k - 1];
        assert_eq!(host.lan_ip, format!("10.{k}.0.2"));
        for ip in [PUB_IP, PUB_IP2, RELAY_IP] {
            assert!(host.ping(ip), "h{k} cannot ping {ip}");
        }
        assert_nat_mapping(&lab, k, 40000 + u16::try_from(k).unwrap());
    }
    // Another flow through the random NAT: fresh ports again.
    assert_nat_mapping(&lab, 2, 40012);

    // Nothing on the internet reaches a host unsolicited, even with a route to its LAN.
    let relay = &lab.relay;
    assert!(relay.ping(PUB_IP));
    for router in &lab.routers {
        let k = router.index;
        assert!(relay.ping(&router.wan_ip), "relay cannot ping nat{k}'s WAN");
        let lan = format!("10.{k}.0.0/24");
        assert!(
            !relay.ping(&format!("10.{k}.0.2")),
            "no route, yet h{k} answered"
        );
        common::run(
            "ip",
            &["-n", &relay.ns, "route", "add", &lan, "via", &router.wan_ip],
        );
        assert!(
            !relay.ping(&format!("10.{k}.0.2")),
            "nat{k} forwarded an unsolicited ping to h{k}"
        );
        common::run("ip", &["-n", &relay.ns, "route", "del", &lan]);
    }

    // Blocking a host's internet drops only its traffic to `pub`.
    lab.block_internet(1);
    assert!(!lab.hosts[0].ping(PUB_IP), "h1 reaches pub while blocked");
    assert!(
        lab.hosts[0].ping(RELAY_IP),
        "block cut h1 off the relay too"
    );
    assert!(lab.hosts[2].ping(PUB_IP), "block on h1 hit h3");
    lab.unblock_internet(1);
    assert!(lab.hosts[0].ping(PUB_IP), "h1 still blocked after unblock");

    // h3 roams from nat3 to nat1 and back, keeping its namespace (where a daemon would run).
    let roam_start = Instant::now();
    lab.roam(3, 1);
    eprintln!("h3 roamed to nat1 in {:?}", roam_start.elapsed());
    assert_eq!(lab.hosts[2].lan_ip, "10.1.0.103");
    assert_eq!(lab.router_of(3).index, 1);
    assert!(lab.hosts[2].ping(PUB_IP), "h3 offline after roaming");
    assert!(
        lab.hosts[0].ping("10.1.0.103"),
        "h1 and h3 share nat1's LAN"
    );
    assert_nat_mapping(&lab, 3, 40003);
    // A block follows the host.
    lab.block_internet(3);
    lab.roam(3, 2);
    assert_eq!(lab.router_of(3).mode, NatMode::Random);
    assert!(!lab.hosts[2].ping(PUB_IP), "block lost when h3 roamed");
    lab.unblock_internet(3);
    assert_nat_mapping(&lab, 3, 40003);
    lab.roam(3, 3);
    assert_eq!(lab.hosts[2].lan_ip, "10.3.0.2");
    assert_nat_mapping(&lab, 3, 40003);
    eprintln!("NAT topology test done in {:?}", start.elapsed());
}

/// In a host: a STUN binding request (RFC 5389) from source port argv[1] to each `HOST:PORT`
/// in argv[2:]; prints the XOR-MAPPED-ADDRESS of each answer, one `IP:PORT` a line.
const STUN_CLIENT: &str = r#"
import os, socket, struct, sys
MAGIC = 0x2112A442
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.settimeout(2)
for server in sys.argv[2:]:
    host, port = server.rsplit(":", 1)
    tid = os.urandom(12)
    s.sendto(struct.pack("!HHI", 1, 0, MAGIC) + tid, (host, int(port)))
    data, _ = s.recvfrom(2048)
    assert data[8:20] == tid and struct.unpack("!H", data[:2])[0] == 0x0101, data
    at = 20
    while at < len(data):
        kind, length = struct.unpack("!HH", data[at:at + 4])
        if kind == 0x0020:
            xport, xaddr = struct.unpack("!HI", data[at + 6:at + 12])
            print("%s:%d" % (socket.inet_ntoa(struct.pack("!I", xaddr ^ MAGIC)), xport ^ (MAGIC >> 16)))
        at += 4 + (length + 3) // 4 * 4
"#;

/// In a host: a mainline DHT `ping` query (BEP 5; the `mainline` crate wants a 4-byte
/// transaction id) to argv[1]; exits 0 on a response.
const DHT_PING: &str = r#"
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.sendto(b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t4:aaaa1:y1:qe", (host, int(port)))
data, _ = s.recvfrom(2048)
sys.exit(0 if b"1:y1:r" in data else 1)
"#;

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: run with --features root-tests"
)]
fn lab_dht_and_stun_serve_hosts_behind_nat() {
    let mut lab = NatLab::new(&[NatMode::PortPreserving, NatMode::Random]);
    let start = Instant::now();
    let bootstrap = lab.start_dht(5);
    let dht_ready = start.elapsed();
    let stun = lab.start_stun();
    eprintln!(
        "dht-testnet READY in {dht_ready:?} ({bootstrap:?}), stun-server {:?} later",
        start.elapsed() - dht_ready
    );
    assert!(
        bootstrap.iter().all(|a| a.starts_with("198.18.0.1:")),
        "{bootstrap:?}"
    );
    for k in 1..=2 {
        let node = &lab.hosts[k - 1];
        let out = node.exec("python3", &["-c", DHT_PING, &bootstrap[0]]);
        assert!(out.status.success(), "h{k}: no DHT pong: {out:?}");
        let mut args = vec!["-c", STUN_CLIENT, "41000"];
        args.extend(stun.iter().map(String::as_str));
        let out = node.exec("python3", &args);
        assert!(out.status.success(), "h{k}: STUN failed: {out:?}");
        let mapped: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        eprintln!("h{k} STUN-mapped as {mapped:?}");
        let wan = &lab.routers[k - 1].wan_ip;
        assert_eq!(mapped.len(), 2);
        assert!(mapped.iter().all(|m| m.starts_with(&format!("{wan}:"))));
        match lab.routers[k - 1].mode {
            NatMode::PortPreserving | NatMode::FullCone => {
                assert!(mapped.iter().all(|m| *m == format!("{wan}:41000")));
            }
            NatMode::Random => assert!(mapped[0] != mapped[1] || !mapped[0].ends_with(":41000")),
        }
    }
}

/// Starts the DHT and STUN in `pub`; returns the flags every daemon of the lab gets.
fn internet_flags(lab: &mut NatLab) -> Vec<String> {
    let bootstrap = lab.start_dht(10).join(",");
    let stun = lab.start_stun().join(",");
    [
        "--no-lan",
        "--log-level",
        "debug",
        "--dht-bootstrap",
        &bootstrap,
        "--stun",
        &stun,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

fn with(flags: &[String], extra: &[&str]) -> Vec<String> {
    flags
        .iter()
        .cloned()
        .chain(extra.iter().map(|s| (*s).to_owned()))
        .collect()
}

/// Starts the relay with `--relay` and every host, all with `flags`.
fn start_with_relay(lab: &mut NatLab, flags: &[String]) {
    start(&mut lab.relay, &with(flags, &["--relay"]));
    for host in &mut lab.hosts {
        start(host, flags);
    }
}

fn start(node: &mut common::Node, flags: &[String]) {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    node.start(&flags);
}

/// Starts the relay and the hosts with `flags`, waits for the full mesh and for every pair to
/// ping over IPv4 and IPv6, and reports both times from the first start.
fn start_and_ping_all(lab: &mut NatLab, flags: &[String], cell: &str) {
    let begin = Instant::now();
    start_with_relay(lab, flags);
    let formed = lab.wait_for_full_mesh(FORMATION);
    wait_until(FORMATION, "all pairs to ping over IPv4 and IPv6", || {
        lab.all_pairs_ping()
    });
    eprintln!(
        "NAT lab ({cell}): membership in {formed:?}, all-pairs ping after {:?}",
        begin.elapsed()
    );
}

/// A public relay host and two hosts behind port-preserving NATs find each other through the
/// local DHT alone (LAN discovery off) and ping directly.
#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: run with --features root-tests"
)]
fn hosts_behind_port_preserving_nats_mesh_over_the_dht() {
    let mut lab = NatLab::new(&[NatMode::PortPreserving, NatMode::PortPreserving]);
    let flags = internet_flags(&mut lab);
    start_and_ping_all(&mut lab, &flags, "port-preserving");
    // With a relay present, the pair that can be direct ends direct.
    let direct = wait_direct(&lab, DIRECT_WITHIN);
    eprintln!("NAT lab (port-preserving): h1 and h2 direct after {direct:?}");
    for host in &lab.hosts {
        let status = host.status_ok();
        assert_eq!(status["nat_type"], "port-preserving NAT", "{status}");
        assert_eq!(
            status["public_endpoint"]
                .as_str()
                .unwrap()
                .split(':')
                .next(),
            Some(lab.router_of(host.index).wan_ip.as_str())
        );
        for peer in status["peers"].as_array().unwrap() {
            assert!(
                ["dht", "gossip"].contains(&peer["source"].as_str().unwrap()),
                "{peer}"
            );
        }
    }
}

/// The same mesh with the BEP 44 rendezvous (`--dht bep44`) as the only discovery: the members'
/// control addresses reach each other only inside the signed, sealed hourly item.
#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: run with --features root-tests"
)]
fn hosts_behind_port_preserving_nats_mesh_over_bep44_items() {
    let mut lab = NatLab::new(&[NatMode::PortPreserving, NatMode::PortPreserving]);
    let flags = with(&internet_flags(&mut lab), &["--dht", "bep44"]);
    start_and_ping_all(&mut lab, &flags, "bep44");
    for node in lab.hosts.iter().chain([&lab.relay]) {
        // A member found through the others' items may form before its own write completes.
        wait_until(FORMATION, "every member to write the BEP 44 item", || {
            node.log().contains("announced on the DHT port")
        });
        let log = node.log();
        assert!(log.contains("method=bep44"), "{log}");
        assert!(!log.contains("method=mainline"), "{log}");
        for peer in node.status_ok()["peers"].as_array().unwrap() {
            assert!(
                ["dht", "gossip", "inbound"].contains(&peer["source"].as_str().unwrap()),
                "{peer}"
            );
        }
    }
}

/// Issue 14: a pair that can be direct must be direct within this long of the first start (it
/// allows for conntrack's 30 s timeout of unreplied entries).
const DIRECT_WITHIN: Duration = Duration::from_secs(60);

/// Waits until h1 and h2 hold each other as direct peers (not relayed) and ping each other;
/// returns how long that took from now.
fn wait_direct(lab: &NatLab, timeout: Duration) -> Duration {
    let begin = Instant::now();
    let key = |node: &common::Node| node.status_ok()["public_key"].clone();
    let (k1, k2) = (key(&lab.hosts[0]), key(&lab.hosts[1]));
    let ips = lab.mesh_ips();
    let (h1, h2) = (ips[1].0.clone(), ips[2].0.clone());
    let direct_to = |node: &common::Node, other: &serde_json::Value| {
        node.status().is_some_and(|status| {
            status["peers"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["public_key"] == *other && p["relayed_via"].is_null())
        })
    };
    wait_until(timeout, "h1 and h2 to be direct peers that ping", || {
        direct_to(&lab.hosts[0], &k2)
            && direct_to(&lab.hosts[1], &k1)
            && lab.hosts[0].ping(&h2)
            && lab.hosts[1].ping(&h1)
    });
    begin.elapsed()
}

/// Issue 14's matrix: a host behind a full cone (endpoint-independent mapping and filtering)
/// and one behind a port-randomising NAT, with a relay present, end direct: the randomising
/// side reaches the cone's public address, and WireGuard on the cone's side follows the source
/// it actually saw (roaming).
#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: run with --features root-tests"
)]
fn a_full_cone_and_a_random_port_nat_end_direct_with_a_relay_present() {
    let mut lab = NatLab::new(&[NatMode::FullCone, NatMode::Random]);
    let flags = internet_flags(&mut lab);
    let begin = Instant::now();
    start_with_relay(&mut lab, &flags);
    lab.wait_for_full_mesh(FORMATION);
    let direct = wait_direct(&lab, DIRECT_WITHIN.saturating_sub(begin.elapsed()));
    eprintln!(
        "NAT lab (full cone + random): direct after {:?} from the first start ({direct:?} after the mesh formed)",
        begin.elapsed()
    );
    // The cone's side uses the port the randomising NAT really gave (not the STUN mapping or
    // the listen port the record names).
    let h2_router = lab.router_of(lab.hosts[1].index).wan_ip.clone();
    let h2_key = lab.hosts[1].status_ok()["public_key"].clone();
    let status = lab.hosts[0].status_ok();
    let peer = status["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["public_key"] == h2_key)
        .unwrap()
        .clone();
    assert!(
        peer["endpoint"]
            .as_str()
            .is_some_and(|e| e.starts_with(&format!("{h2_router}:"))),
        "{peer}"
    );
}

/// In a router: one datagram from `ADDR:PORT` (argv[1], argv[2]) to the same port on argv[3].
const UNSOLICITED: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.sendto(b"early", (sys.argv[3], int(sys.argv[2])))
"#;

/// Issue 14's matrix: the conntrack clash. Both routers keep ports but accept unsolicited
/// datagrams (a plain `masquerade` router). Before the daemons start, one early datagram
/// from router 2's public control and WireGuard ports reaches router 1's (a stale member, a
/// scanner): each router now holds a conntrack entry for those port pairs, so each host's
/// first flow to the other clashes with it and is given a random port, and every datagram
/// either host sends the other afterwards keeps its side's clashing flow alive. The pair
/// falls back to the relay. The routers are 100 ms apart, so datagrams sent at once cross on
/// the wire as between real sites. The pair must end direct all the same: nothing probes a
/// relayed member's direct address outside the pair's coordinated attempts, so after 30 s
/// the clashing entries are gone, and the attempt (both ends at once, timed through the
/// relayed tunnel) makes both mappings before either end's datagram arrives.
#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: run with --features root-tests"
)]
fn hosts_behind_routers_that_accept_early_datagrams_end_direct() {
    let mut lab = NatLab::with_wan_latency(
        &[NatMode::PortPreserving, NatMode::PortPreserving],
        Some(Duration::from_millis(50)),
    );
    for k in 1..=2 {
        lab.accept_unsolicited(k);
    }
    let flags = internet_flags(&mut lab);
    let (r1, r2) = (lab.routers[0].wan_ip.clone(), lab.routers[1].wan_ip.clone());
    let ports = [control_port(&lab), LISTEN_PORT];
    for port in ports.map(|p| p.to_string()) {
        let ns = &lab.routers[1].ns;
        run(
            "ip",
            &[
                "netns",
                "exec",
                ns,
                "python3",
                "-c",
                UNSOLICITED,
                &r2,
                &port,
                &r1,
            ],
        );
    }
    let begin = Instant::now();
    start_with_relay(&mut lab, &flags);
    let formed = lab.wait_for_full_mesh(FORMATION);
    wait_until(FORMATION, "all pairs to ping over IPv4 and IPv6", || {
        lab.all_pairs_ping()
    });
    let pinged = begin.elapsed();
    // The early datagrams did their harm: the pair went through the relay first.
    for host in &lab.hosts {
        wait_until(
            Duration::from_secs(5),
            "the pair to be relayed first",
            || {
                std::fs::read_to_string(host.log_path())
                    .unwrap_or_default()
                    .contains("no direct path; relaying")
            },
        );
    }
    wait_direct(&lab, DIRECT_WITHIN.saturating_sub(begin.elapsed()));
    eprintln!(
        "NAT lab (conntrack clash): membership in {formed:?}, all-pairs ping (relayed) after \
         {pinged:?}, direct after {:?} from the first start",
        begin.elapsed()
    );
    for host in &lab.hosts {
        let log = std::fs::read_to_string(host.log_path()).unwrap_or_default();
        assert_eq!(
            log.matches("direct path found; no longer relayed").count(),
            1,
            "h{}: {log}",
            host.index
        );
    }
}

/// Issue 14's matrix: a NAT that changes mode mid-run, both ways. Two hosts behind
/// port-randomising NATs meet through the relay; then both routers start keeping ports, as a NAT
/// that was only overloaded would. The relayed pair finds its direct path by itself (the end
/// with the lower key leads a coordinated attempt every 35 s, timed through the relayed tunnel),
/// `status` shows the switch, and the log says so once per end. Then both routers randomise
/// ports again: the direct path dies, each end suspects the other and falls back to the relay
/// by itself, and the pair pings through it again.
#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: run with --features root-tests"
)]
fn a_pair_switches_between_relay_and_direct_as_its_nats_change_mode() {
    let mut lab = NatLab::new(&[NatMode::Random, NatMode::Random]);
    // No DHT: its lookups would keep probing every member's public control port, which would
    // find the direct path too; here only the relayed pair's own retry can.
    let stun = lab.start_stun().join(",");
    let flags: Vec<String> = [
        "--no-lan",
        "--log-level",
        "debug",
        "--dht-bootstrap",
        "none",
        "--stun",
        &stun,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let seed = format!("{}:{}", common::nat::RELAY_IP, control_port(&lab));
    start(&mut lab.relay, &with(&flags, &["--relay"]));
    for host in &mut lab.hosts {
        start(host, &with(&flags, &["--peer", &seed]));
    }
    lab.wait_for_full_mesh(FORMATION);
    let relay_key = lab.relay.status_ok()["public_key"].clone();
    let h2_key = lab.hosts[1].status_ok()["public_key"].clone();
    // A status query that fails for a moment (a loaded machine) counts as "not yet".
    let relayed = |lab: &NatLab| {
        lab.hosts[0].status().is_some_and(|status| {
            status["peers"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["public_key"] == h2_key && p["relayed_via"] == relay_key)
        })
    };
    wait_until(FORMATION, "h1 to hold h2 through the relay", || {
        relayed(&lab)
    });
    for k in 1..=2 {
        lab.set_mode(k, NatMode::PortPreserving);
    }
    let direct = wait_direct(&lab, Duration::from_secs(90));
    eprintln!("NAT lab (random -> port-preserving): direct {direct:?} after the switch");
    for host in &lab.hosts {
        let log = std::fs::read_to_string(host.log_path()).unwrap_or_default();
        assert_eq!(
            log.matches("direct path found; no longer relayed").count(),
            1,
            "h{}: {log}",
            host.index
        );
    }
    for k in 1..=2 {
        lab.set_mode(k, NatMode::Random);
    }
    let back = Instant::now();
    let h2_ip = lab.mesh_ips()[2].0.clone();
    wait_until(
        Duration::from_secs(90),
        "h1 to hold h2 through the relay again and ping it",
        || relayed(&lab) && lab.hosts[0].ping(&h2_ip),
    );
    eprintln!(
        "NAT lab (port-preserving -> random): relayed again {:?} after the switch back",
        back.elapsed()
    );
    let lost = lab.hosts.iter().any(|host| {
        std::fs::read_to_string(host.log_path())
            .unwrap_or_default()
            .contains("direct path lost; relaying")
    });
    assert!(lost, "no end logged the fallback to the relay");
}

fn control_port(lab: &NatLab) -> u64 {
    common::derive(&lab.relay.secret_file)["control_port"]
        .as_u64()
        .unwrap()
}

/// The WireGuard port every lab daemon listens on (`wgmesh up`'s default).
const LISTEN_PORT: u64 = 51_820;

/// Only the relay and host 1 reach the DHT; host 2 knows just the relay (a static seed) and
/// still meets host 1 through gossip. Restarted with neither DHT nor seed, host 2 rejoins from
/// its peer cache.
#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: run with --features root-tests"
)]
fn gossip_joins_a_host_without_the_dht_and_the_cache_rejoins_it() {
    let mut lab = NatLab::new(&[NatMode::PortPreserving, NatMode::PortPreserving]);
    let flags = internet_flags(&mut lab);
    lab.block_internet(2);
    let seed = format!("{RELAY_IP}:{}", control_port(&lab));
    start(&mut lab.relay, &flags);
    start(&mut lab.hosts[0], &flags);
    let begin = Instant::now();
    start(&mut lab.hosts[1], &with(&flags, &["--peer", &seed]));
    lab.wait_for_full_mesh(FORMATION);
    wait_until(FORMATION, "all pairs to ping", || lab.all_pairs_ping());
    eprintln!(
        "partial discovery: host without DHT joined everyone in {:?}",
        begin.elapsed()
    );
    let status = lab.hosts[1].status_ok();
    let h1_key = lab.hosts[0].status_ok()["public_key"].clone();
    let via = status["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["public_key"] == h1_key)
        .unwrap()["source"]
        .clone();
    assert!(
        via == "gossip" || via == "inbound",
        "host 1 reached host 2 by {via}"
    );

    let cache = lab.hosts[1]
        .state_dir()
        .join(format!("{}.peers.json", lab.hosts[1].interface));
    wait_until(FORMATION, "peer cache written", || {
        std::fs::read_to_string(&cache).is_ok_and(|t| t.matches("public_key").count() == 2)
    });
    lab.hosts[1].stop();
    let begin = Instant::now();
    start(&mut lab.hosts[1], &flags);
    lab.wait_for_full_mesh(FORMATION);
    wait_until(FORMATION, "all pairs to ping after the restart", || {
        lab.all_pairs_ping()
    });
    eprintln!(
        "restart from cache (no DHT, no seed): rejoined in {:?}",
        begin.elapsed()
    );
}

/// Host 1 moves to another NAT router while running; the mesh recovers without a restart.
#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: run with --features root-tests"
)]
fn a_host_that_changes_networks_recovers_without_a_restart() {
    let mut lab = NatLab::new(&[
        NatMode::PortPreserving,
        NatMode::PortPreserving,
        NatMode::PortPreserving,
    ]);
    let flags = internet_flags(&mut lab);
    start(&mut lab.relay, &flags);
    start(&mut lab.hosts[0], &flags);
    start(&mut lab.hosts[1], &flags);
    lab.wait_for_full_mesh(FORMATION);
    wait_until(FORMATION, "all pairs to ping", || lab.all_pairs_ping());
    let ips = lab.mesh_ips();
    let (relay_ip, h1_ip, h2_ip) = (ips[0].0.clone(), ips[1].0.clone(), ips[2].0.clone());

    lab.roam(1, 3);
    let begin = Instant::now();
    wait_until(
        FORMATION,
        "host 1 to reach the relay and host 2 again, both ways",
        || {
            lab.hosts[0].ping(&relay_ip)
                && lab.hosts[0].ping(&h2_ip)
                && lab.relay.ping(&h1_ip)
                && lab.hosts[1].ping(&h1_ip)
        },
    );
    let recovered = begin.elapsed();
    eprintln!("roaming: connectivity restored {recovered:?} after the move");
    let status = lab.hosts[0].status_ok();
    let wan = lab.router_of(1).wan_ip.clone();
    wait_until(
        Duration::from_secs(15),
        "STUN to see the new router",
        || {
            lab.hosts[0].status_ok()["public_endpoint"]
                .as_str()
                .is_some_and(|e| e.starts_with(&format!("{wan}:")))
        },
    );
    assert!(status["peers"].as_array().unwrap().len() == 2);
    if std::env::var_os("WGMESH_DUMP").is_some() {
        eprintln!("{}", lab.dump_logs());
    }
}

/// DHT and STUN traffic of a steady 3-node mesh, counted at the "internet" namespace.
#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: run with --features root-tests"
)]
fn idle_mesh_dht_and_stun_traffic_is_small() {
    let mut lab = NatLab::new(&[NatMode::PortPreserving, NatMode::PortPreserving]);
    let flags = internet_flags(&mut lab);
    start(&mut lab.relay, &flags);
    for host in &mut lab.hosts {
        start(host, &flags);
    }
    lab.wait_for_full_mesh(FORMATION);
    wait_until(FORMATION, "all pairs to ping", || lab.all_pairs_ping());
    // Three minutes, counted separately: the DHT looks up fast until no member has joined for a
    // minute (checked at the one-minute member refresh), so the last minute is the steady one.
    let counters = "table inet wgmesh_count {
        chain input {
            type filter hook input priority filter; policy accept;
            iifname \"wan0\" udp dport { 3478, 3479 } counter name stun
            iifname \"wan0\" udp dport != { 3478, 3479 } counter name dht
        }
        counter stun {}
        counter dht {}
    }\n";
    let path = lab.dir.path().join("count.nft");
    std::fs::write(&path, counters).unwrap();
    common::run(
        "ip",
        &[
            "netns",
            "exec",
            &lab.pub_ns,
            "nft",
            "-f",
            &path.display().to_string(),
        ],
    );
    let read = |name: &str| -> u64 {
        let out = common::run(
            "ip",
            &[
                "netns",
                "exec",
                &lab.pub_ns,
                "nft",
                "list",
                "counter",
                "inet",
                "wgmesh_count",
                name,
            ],
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split("packets ")
            .nth(1)
            .and_then(|t| t.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap()
    };
    let mut minutes = Vec::new();
    for _ in 0..3 {
        let (stun0, dht0) = (read("stun"), read("dht"));
        std::thread::sleep(Duration::from_secs(60));
        minutes.push((read("stun") - stun0, read("dht") - dht0));
    }
    eprintln!(
        "idle 3-node mesh, datagrams per minute received by the DHT/STUN host (stun, dht): {minutes:?}"
    );
    let (stun, dht) = minutes[2];
    // Slow pacing: STUN every 5 min per node (2 servers), one DHT lookup round per 5 min per node.
    assert!(stun <= 12, "STUN datagrams in a steady minute: {stun}");
    assert!(dht <= 90, "DHT datagrams in a steady minute: {dht}");
}

/// Two hosts behind port-randomising NATs cannot punch a hole to each other; their traffic goes
/// through the member that offered `--relay`, and `status` says so.
#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: run with --features root-tests"
)]
fn hosts_behind_random_nats_reach_each_other_through_the_relay() {
    let mut lab = NatLab::new(&[NatMode::Random, NatMode::Random]);
    let flags = internet_flags(&mut lab);
    let begin = Instant::now();
    start_with_relay(&mut lab, &flags);
    lab.wait_for_full_mesh(FORMATION);
    let relay_status = lab.relay.status_ok();
    let relay_key = relay_status["public_key"].clone();
    let ips = lab.mesh_ips();
    let (h1, h2) = (ips[1].0.clone(), ips[2].0.clone());
    let statuses: Vec<serde_json::Value> = lab.hosts.iter().map(|h| h.status_ok()).collect();
    let (h1_v6, h2_v6) = (
        statuses[0]["mesh_ipv6"].as_str().unwrap().to_owned(),
        statuses[1]["mesh_ipv6"].as_str().unwrap().to_owned(),
    );
    wait_until(
        FORMATION,
        "the NATed hosts to ping each other through the relay (IPv4 and IPv6)",
        || {
            lab.hosts[0].ping(&h2)
                && lab.hosts[1].ping(&h1)
                && lab.hosts[0].ping(&h2_v6)
                && lab.hosts[1].ping(&h1_v6)
        },
    );
    eprintln!(
        "NAT lab (random ports): relayed ping after {:?}",
        begin.elapsed()
    );
    let relay_ip = lab.relay.lan_ip.clone();
    for (host, other) in [
        (&lab.hosts[0], &lab.hosts[1]),
        (&lab.hosts[1], &lab.hosts[0]),
    ] {
        let status = host.status_ok();
        assert_eq!(status["nat_type"], "symmetric NAT", "{status}");
        let other_status = other.status_ok();
        let other_key = other_status["public_key"].clone();
        let peer = status["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["public_key"] == other_key)
            .unwrap()
            .clone();
        assert_eq!(peer["relayed_via"], relay_key, "{peer}");
        // The other host is a WireGuard peer of its own (the session is end to end), and its
        // endpoint is a port of the relay.
        let endpoint = peer["endpoint"].as_str().unwrap_or_default();
        assert!(endpoint.starts_with(&format!("{relay_ip}:")), "{peer}");
        let allowed = String::from_utf8_lossy(
            &host
                .exec("wg", &["show", &host.interface, "allowed-ips"])
                .stdout,
        )
        .into_owned();
        let other_ip = other_status["mesh_ipv4"].as_str().unwrap();
        let line = allowed
            .lines()
            .find(|l| l.contains(&format!("{other_ip}/32")))
            .unwrap_or_default()
            .to_owned();
        assert!(line.starts_with(other_key.as_str().unwrap()), "{allowed}");
    }
    // The relay holds none of the pair's traffic: each of its peers has that member's own
    // addresses only, and it forwards nothing at the IP layer.
    let relay_allowed = String::from_utf8_lossy(
        &lab.relay
            .exec("wg", &["show", &lab.relay.interface, "allowed-ips"])
            .stdout,
    )
    .into_owned();
    for (i, status) in statuses.iter().enumerate() {
        let key = status["public_key"].as_str().unwrap();
        let other = &statuses[1 - i];
        let line = relay_allowed
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_default();
        for ip in [&other["mesh_ipv4"], &other["mesh_ipv6"]] {
            assert!(!line.contains(ip.as_str().unwrap()), "{relay_allowed}");
        }
    }
    for sysctl in [
        format!("net.ipv4.conf.{}.forwarding", lab.relay.interface),
        "net.ipv4.conf.all.forwarding".to_owned(),
        "net.ipv6.conf.all.forwarding".to_owned(),
    ] {
        let value = lab.relay.exec("sysctl", &["-n", &sysctl]);
        assert_eq!(
            String::from_utf8_lossy(&value.stdout).trim(),
            "0",
            "{sysctl}"
        );
    }
    // It shows the pair it carries.
    let pairs = lab.relay.status_ok()["relay_pairs"].clone();
    assert_eq!(pairs.as_array().map(Vec::len), Some(1), "{pairs}");
}
