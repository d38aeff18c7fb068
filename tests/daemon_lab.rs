//! The daemon's lifecycle and its defences, in namespaces with real wireguard-go: restarts,
//! supervision, isolation between meshes, garbage on the control port, secret hygiene.
//! Needs root; run with `--features root-tests`.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failure is a test failure"
)]

mod common;

use common::{Lab, wait_until};
use std::process::Command;
use std::time::Duration;
use wgmesh_derive::{MeshKeys, NodeSeed, Secret};

const FORMATION: Duration = Duration::from_secs(60);

fn identity(node: &common::Node) -> serde_json::Value {
    let path = node.state_dir().join(format!("{}.json", node.interface));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: run with --features root-tests"
)]
fn kill_9_and_restart_keeps_identity_and_the_mesh_heals() {
    let mut lab = Lab::new(3);
    lab.start_all(&[]);
    lab.wait_for_full_mesh(FORMATION);
    let before = lab.nodes[1].status_ok();

    lab.nodes[1].kill9();
    // A second daemon on a live interface is refused; here the first is dead, so the stale pid
    // file and socket are cleaned up and the restart succeeds.
    lab.nodes[1].start(&[]);
    lab.wait_for_full_mesh(FORMATION);
    let after = lab.nodes[1].status_ok();
    for key in ["public_key", "mesh_ipv4", "mesh_ipv6"] {
        assert_eq!(before[key], after[key], "{key} changed across a restart");
    }
    wait_until(FORMATION, "all pairs to ping after the restart", || {
        lab.all_pairs_ping()
    });
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: run with --features root-tests"
)]
fn second_daemon_on_the_same_interface_is_refused() {
    let mut lab = Lab::new(1);
    lab.nodes[0].start(&["--log-format", "json"]);
    wait_until(FORMATION, "node up", || lab.nodes[0].status().is_some());
    let node = &lab.nodes[0];
    // Structured logs: every line one JSON object with a level and a message.
    for line in node.log().lines() {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            event["level"].is_string() && event["message"].is_string(),
            "{line}"
        );
    }
    let out = node.wgmesh(&[
        "up",
        "--secret-file",
        &node.secret_file.display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already runs on interface"), "{err}");
    assert!(
        node.status().is_some(),
        "the first daemon must keep running"
    );
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: run with --features root-tests"
)]
fn keep_interface_restart_loses_no_pings() {
    let mut lab = Lab::new(2);
    lab.start_all(&["--keep-interface"]);
    lab.wait_for_full_mesh(FORMATION);
    let target = lab.nodes[1].status_ok()["mesh_ipv4"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_until(FORMATION, "first ping", || lab.nodes[0].ping(&target));

    // 60 pings, one every 100 ms, while node 2's daemon restarts gracefully.
    let pinger = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.nodes[0].ns,
            "ping",
            "-i",
            "0.1",
            "-c",
            "60",
            "-W",
            "1",
            &target,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // SIGTERM, as `systemctl restart` stops it.
    lab.nodes[1].terminate();
    lab.nodes[1].start(&["--keep-interface"]);
    let out = pinger.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_default()
        .to_owned();
    eprintln!("keep-interface restart: {summary}");
    assert!(
        summary.contains("60 received") && summary.contains(" 0% packet loss"),
        "{text}"
    );
    wait_until(FORMATION, "restarted daemon adopted the device", || {
        lab.nodes[1]
            .status()
            .is_some_and(|s| s["peers"].as_array().is_some_and(|p| p.len() == 1))
    });
    assert!(
        lab.nodes[1].log().contains("adopted=true"),
        "{}",
        lab.nodes[1].log()
    );

    // `systemctl stop` (SIGTERM) leaves the tunnel up by design; `wgmesh down` then removes it.
    let node = &mut lab.nodes[1];
    let interface_up = |node: &common::Node| {
        node.exec("ip", &["link", "show", "dev", &node.interface])
            .status
            .success()
    };
    let wireguard_go_runs = |node: &common::Node| {
        Command::new("pgrep")
            .args(["-f", &format!("wireguard-go.* {}$", node.interface)])
            .status()
            .unwrap()
            .success()
    };
    node.terminate();
    assert!(interface_up(node) && wireguard_go_runs(node));
    assert!(
        lab.nodes[0].ping(&target),
        "the kept tunnel still carries traffic"
    );
    let node = &mut lab.nodes[1];
    let out = node.wgmesh(&["down"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("left up by --keep-interface"));
    assert!(!interface_up(node));
    wait_until(Duration::from_secs(5), "wireguard-go to exit", || {
        !wireguard_go_runs(node)
    });
    // Nothing left: a second down says no daemon runs (exit 3).
    assert_eq!(node.wgmesh(&["down"]).status.code(), Some(3));

    // A running --keep-interface daemon: `wgmesh down` removes the interface as well.
    node.start(&["--keep-interface"]);
    wait_until(FORMATION, "daemon up", || {
        lab.nodes[1]
            .status()
            .is_some_and(|s| s["peers"].as_array().is_some_and(|p| p.len() == 1))
    });
    lab.nodes[1].stop();
    assert!(!interface_up(&lab.nodes[1]));
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: run with --features root-tests"
)]
fn a_killed_wireguard_go_is_restarted_with_its_peers() {
    let mut lab = Lab::new(2);
    lab.start_all(&[]);
    lab.wait_for_full_mesh(FORMATION);
    let target = lab.nodes[0].status_ok()["mesh_ipv4"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_until(FORMATION, "first ping", || lab.nodes[1].ping(&target));
    let pattern = format!("wireguard-go -f {}$", lab.nodes[1].interface);
    assert!(
        Command::new("pkill")
            .args(["-9", "-f", &pattern])
            .status()
            .unwrap()
            .success()
    );
    wait_until(FORMATION, "ping after wireguard-go restarted", || {
        lab.nodes[1].ping(&target)
    });
    let status = lab.nodes[1].status_ok();
    assert_eq!(status["peers"].as_array().unwrap().len(), 1);
    assert!(
        lab.nodes[1].log().contains("wireguard-go had stopped"),
        "{}",
        lab.nodes[1].log()
    );
}

/// Run in node 3's namespace: catch one genuine LAN beacon from node 2, then throw replays of
/// it, every truncation of it and random bytes of many sizes at node 1's control port.
const ABUSER: &str = r#"
import os, socket, sys
group, port, local, source, target = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
r.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
r.bind(("", port))
r.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(group) + socket.inet_aton(local))
r.settimeout(30)
while True:
    beacon, (ip, _) = r.recvfrom(2048)
    if ip == source:
        break
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
a = (target, port)
for _ in range(100):
    s.sendto(beacon, a)
for i in range(len(beacon)):
    s.sendto(beacon[:i], a)
for n in [0, 1, 4, 29, 45, 101, 102, 500, 1200, 1500, 9000]:
    s.sendto(os.urandom(n), a)
    s.sendto(b"WGM1" + bytes([1, 2, 3]) + os.urandom(n), a)
print(len(beacon))
"#;

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: run with --features root-tests"
)]
fn another_secret_never_joins_and_garbage_changes_nothing() {
    let mut lab = Lab::new(3);
    let derived = common::derive(&lab.nodes[0].secret_file);
    let (group, port) = (
        derived["lan_group"].as_str().unwrap(),
        derived["control_port"].to_string(),
    );
    // Node 3 holds a different secret on the same bridge, and watches the mesh's LAN group.
    let other = lab.dir.path().join("other-secret");
    std::fs::write(
        &other,
        common::run(common::wgmesh_bin(), &["secret"]).stdout,
    )
    .unwrap();
    lab.nodes[2].secret_file = other;
    let (local, source, target) = (
        lab.nodes[2].lan_ip.clone(),
        lab.nodes[1].lan_ip.clone(),
        lab.nodes[0].lan_ip.clone(),
    );
    let abuser = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.nodes[2].ns,
            "python3",
            "-c",
            ABUSER,
            group,
            &port,
            &local,
            &source,
            &target,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    lab.start_all(&[]);
    let out = abuser.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "abuser failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "replayed a {}-byte genuine beacon",
        String::from_utf8_lossy(&out.stdout).trim()
    );
    std::thread::sleep(Duration::from_secs(6));

    for node in &lab.nodes[..2] {
        let status = node.status_ok();
        assert_eq!(
            status["peers"].as_array().unwrap().len(),
            1,
            "node {}: {status}",
            node.index
        );
    }
    assert!(
        lab.nodes[2].status_ok()["peers"]
            .as_array()
            .unwrap()
            .is_empty(),
        "another mesh joined"
    );
    let v4 = lab.nodes[1].status_ok()["mesh_ipv4"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_until(FORMATION, "ping after garbage", || lab.nodes[0].ping(&v4));
    for node in &lab.nodes {
        assert!(!node.log().contains("panicked"), "{}", node.log());
    }
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: run with --features root-tests"
)]
fn no_key_material_in_argv_environment_or_debug_logs() {
    let mut lab = Lab::new(2);
    lab.start_all(&[
        "--log-level",
        "debug",
        "--advertise-routes",
        "192.168.55.0/24",
    ]);
    lab.wait_for_full_mesh(FORMATION);
    let target = lab.nodes[0].status_ok()["mesh_ipv4"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_until(FORMATION, "ping", || lab.nodes[1].ping(&target));
    std::fs::write(
        lab.nodes[0].reload_path(),
        "log-level=trace\nadvertise-routes=\n",
    )
    .unwrap();
    assert!(lab.nodes[0].wgmesh(&["reload"]).status.success());
    std::thread::sleep(Duration::from_secs(2));

    let secret_text = std::fs::read_to_string(&lab.nodes[0].secret_file).unwrap();
    let secret = Secret::parse(&secret_text).unwrap();
    let keys = MeshKeys::derive(&secret);
    let mut forbidden = vec![
        secret_text.trim().to_owned(),
        secret_text
            .trim()
            .trim_start_matches("wgmesh://v1/")
            .to_owned(),
        hex(keys.preshared_key().expose_bytes()),
        base64(keys.preshared_key().expose_bytes()),
        hex(&keys.exchange_key()),
    ];
    for node in &lab.nodes {
        let seed = NodeSeed::from_hex(identity(node)["node_seed"].as_str().unwrap()).unwrap();
        let private = keys.node_private_key(&seed);
        forbidden.push(hex(private.expose_bytes()));
        forbidden.push(base64(private.expose_bytes()));
    }

    let mut haystacks = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        for file in ["cmdline", "environ"] {
            if let Ok(bytes) = std::fs::read(entry.path().join(file)) {
                haystacks.push((
                    format!("{}/{file}", entry.path().display()),
                    String::from_utf8_lossy(&bytes).into_owned(),
                ));
            }
        }
    }
    for node in &lab.nodes {
        haystacks.push((format!("node {} log", node.index), node.log()));
        haystacks.push((
            format!("node {} status", node.index),
            node.status_ok().to_string(),
        ));
    }
    assert!(
        haystacks
            .iter()
            .any(|(name, text)| name.ends_with("log") && text.contains("DEBUG")),
        "debug logging was not on"
    );
    for (name, text) in &haystacks {
        for secret in &forbidden {
            assert!(
                !text.contains(secret.as_str()),
                "{name} contains key material"
            );
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn base64(bytes: &[u8; 32]) -> String {
    wgmesh_keys::PublicKey::from_bytes(*bytes).to_base64()
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: run with --features root-tests"
)]
fn busy_listen_port_moves_to_the_next_and_forced_kernel_backend_explains() {
    let mut lab = Lab::new(1);
    let node = &mut lab.nodes[0];
    // Hold 51820 in the node's namespace.
    let holder = Command::new("ip")
        .args(["netns", "exec", &node.ns, "python3", "-c", "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',51820))\ntime.sleep(60)"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    node.start(&[]);
    wait_until(FORMATION, "node up", || node.status().is_some());
    assert_eq!(node.status_ok()["listen_port"], 51821);
    assert!(node.log().contains("listen port busy"), "{}", node.log());
    let mut holder = holder;
    let _ = holder.kill();
    let _ = holder.wait();

    #[cfg(target_os = "linux")]
    if wgmesh_linux::kernel_wireguard_available() {
        return;
    }
    let state = lab.dir.path().join("nokernel");
    let out = node.exec(
        common::wgmesh_bin(),
        &[
            "up",
            "--backend",
            "kernel",
            "--secret-file",
            &node.secret_file.display().to_string(),
            "--interface",
            "wgmnokernel",
            "--state-dir",
            &state.join("state").display().to_string(),
            "--runtime-dir",
            &state.join("run").display().to_string(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--backend kernel: kernel WireGuard is unavailable"),
        "{err}"
    );
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: run with --features root-tests"
)]
fn a_restarted_node_rejoins_from_its_peer_cache_alone() {
    let mut lab = Lab::new(3);
    let seeds = common::seeds(&lab.nodes);
    for node in &mut lab.nodes {
        node.start(&["--no-lan", "--peer", &seeds]);
    }
    lab.wait_for_full_mesh(FORMATION);
    let cache = lab.nodes[2]
        .state_dir()
        .join(format!("{}.peers.json", lab.nodes[2].interface));
    wait_until(FORMATION, "peer cache written", || {
        std::fs::read_to_string(&cache).is_ok_and(|t| t.matches("public_key").count() == 2)
    });
    // No LAN discovery, no seeds: only the cache knows where the others are.
    lab.nodes[2].stop();
    lab.nodes[2].start(&["--no-lan"]);
    lab.wait_for_full_mesh(FORMATION);
    for peer in lab.nodes[2].status_ok()["peers"].as_array().unwrap() {
        assert_eq!(peer["source"], "cache", "{peer}");
    }
    wait_until(FORMATION, "all pairs ping", || lab.all_pairs_ping());
}

/// Two node seeds whose public keys derive the same mesh IPv4 at collision counter 0.
fn colliding_seeds(keys: &MeshKeys) -> (NodeSeed, NodeSeed) {
    let mut seen = std::collections::HashMap::new();
    for i in 0u32.. {
        let mut bytes = [0u8; 32];
        bytes[..4].copy_from_slice(&i.to_be_bytes());
        let seed = NodeSeed::from_bytes(bytes);
        let ip = wgmesh_derive::mesh_ipv4(keys, &keys.node_public_key(&seed), 0);
        if let Some(other) = seen.insert(ip, seed.clone()) {
            return (other, seed);
        }
    }
    unreachable!()
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: run with --features root-tests"
)]
fn a_forced_ipv4_collision_between_newcomers_moves_both() {
    let mut lab = Lab::new(2);
    let keys = MeshKeys::derive(
        &Secret::parse(&std::fs::read_to_string(&lab.nodes[0].secret_file).unwrap()).unwrap(),
    );
    let (a, b) = colliding_seeds(&keys);
    for (node, seed) in lab.nodes.iter().zip([&a, &b]) {
        common::plant_identity(node, &keys, seed);
    }
    let same = wgmesh_derive::mesh_ipv4(&keys, &keys.node_public_key(&a), 0);
    lab.start_all(&[]);
    lab.wait_for_full_mesh(FORMATION);
    // Neither node is the incumbent (fresh identities, no peer cache: neither held the address
    // in a mesh before), so both move to counter 1, whatever their keys (issue 13).
    for node in &lab.nodes {
        wait_until(FORMATION, "both to re-address", || {
            identity(node)["collision_counter"] == 1
        });
    }
    let mesh_route = format!("{}.{}.0.0/16", same.octets()[0], same.octets()[1]);
    let mut new_ips = Vec::new();
    for moved in &lab.nodes {
        let new_ip = moved.status_ok()["mesh_ipv4"].as_str().unwrap().to_owned();
        assert_ne!(new_ip, same.to_string());
        assert!(
            moved
                .routes(&["dev", &moved.interface])
                .contains(&mesh_route),
            "{}",
            moved.routes(&[])
        );
        let addrs = String::from_utf8_lossy(
            &moved
                .exec("ip", &["-4", "addr", "show", &moved.interface])
                .stdout,
        )
        .into_owned();
        assert!(
            addrs.contains(&new_ip) && !addrs.contains(&format!("{same}/")),
            "{addrs}"
        );
        new_ips.push(new_ip);
    }
    assert_ne!(new_ips[0], new_ips[1]);
    wait_until(FORMATION, "both ping each other", || lab.all_pairs_ping());
}
