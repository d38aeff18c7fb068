//! The daemon in a lab of network namespaces with real wireguard-go (DESIGN.md §9): what an
//! operator would check — pings across the mesh, `wgmesh status --json`, `ip route`.
//! Needs root; run with `--features root-tests` (scripts/test.sh does).
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failure is a test failure"
)]

mod common;

use common::{Lab, wait_until};
use std::time::{Duration, Instant};

const FORMATION: Duration = Duration::from_secs(60);

fn peers(status: &serde_json::Value) -> &Vec<serde_json::Value> {
    status["peers"].as_array().unwrap()
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: run with --features root-tests"
)]
fn five_nodes_form_a_full_mesh_and_make_no_writes_when_steady() {
    let mut lab = Lab::new(5);
    let start = Instant::now();
    lab.start_all(&[]);
    lab.wait_for_full_mesh(FORMATION);
    wait_until(FORMATION, "all pairs to ping over IPv4 and IPv6", || {
        lab.all_pairs_ping()
    });
    let converged = start.elapsed();
    eprintln!("5-node mesh: simultaneous start to all-pairs ping (v4+v6) in {converged:?}");

    for node in &lab.nodes {
        let status = node.status_ok();
        assert_eq!(status["backend"], "userspace");
        assert_eq!(peers(&status).len(), 4, "node {}: {status}", node.index);
        for peer in peers(&status) {
            assert!(
                peer["last_handshake_unix"].as_u64().is_some(),
                "node {} peer without handshake: {peer}",
                node.index
            );
            assert!(peer["rx_bytes"].as_u64().unwrap() > 0);
            // Found by a LAN beacon, or told about by a member that was (gossip).
            assert!(
                peer["source"] == "lan" || peer["source"] == "gossip",
                "{peer}"
            );
        }
        let rss_kb =
            std::fs::read_to_string(format!("/proc/{}/status", node.daemon_pid().unwrap()))
                .unwrap()
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().to_owned()))
                .unwrap();
        eprintln!("node {} daemon RSS {rss_kb}", node.index);
    }

    // Steady state: passes still run on events (here an address added and removed in each
    // node's namespace, as any network change does; the safety pass is once a minute) but
    // write nothing.
    let before: Vec<serde_json::Value> = lab
        .nodes
        .iter()
        .map(|n| n.status_ok()["reconcile"].clone())
        .collect();
    for node in &lab.nodes {
        for args in [
            &["addr", "add", "198.18.255.77/32", "dev", "lo"][..],
            &["addr", "del", "198.18.255.77/32", "dev", "lo"][..],
        ] {
            let out = node.exec("ip", args);
            assert!(out.status.success(), "{out:?}");
        }
    }
    std::thread::sleep(Duration::from_secs(3));
    for (node, before) in lab.nodes.iter().zip(before) {
        let after = node.status_ok()["reconcile"].clone();
        assert!(
            after["runs"].as_u64() > before["runs"].as_u64(),
            "reconcile loop stalled: {after}"
        );
        assert_eq!(
            after["device_writes"], before["device_writes"],
            "node {} wrote in a steady state",
            node.index
        );
        assert_eq!(after["route_writes"], before["route_writes"]);
    }
    // ... and logs nothing per tick.
    let quiet_from = lab.nodes[0].log().len();
    std::thread::sleep(Duration::from_secs(6));
    let new_lines = lab.nodes[0].log()[quiet_from..].to_owned();
    assert!(
        new_lines.trim().is_empty(),
        "a steady daemon logged:\n{new_lines}"
    );
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: run with --features root-tests"
)]
fn reload_advertises_and_withdraws_routes_and_rejects_bad_files() {
    let mut lab = Lab::new(3);
    lab.start_all(&[]);
    lab.wait_for_full_mesh(FORMATION);
    let node1 = &lab.nodes[0];
    let key1 = node1.status_ok()["public_key"].as_str().unwrap().to_owned();

    std::fs::write(
        node1.reload_path(),
        "# ops script\nadvertise-routes = 192.168.77.0/24\n",
    )
    .unwrap();
    let out = node1.wgmesh(&["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let took = wait_until(Duration::from_secs(10), "route on every other node", || {
        lab.nodes[1..]
            .iter()
            .all(|n| n.routes(&["proto", "77"]).contains("192.168.77.0/24"))
    });
    eprintln!("route propagation to 2 nodes: {took:?}");
    for node in &lab.nodes[1..] {
        let status = node.status_ok();
        let from1 = peers(&status)
            .iter()
            .find(|p| p["public_key"] == key1.as_str())
            .unwrap();
        assert_eq!(from1["routes"], serde_json::json!(["192.168.77.0/24"]));
        let wg = node.exec("wg", &["show", &node.interface, "allowed-ips"]);
        assert!(String::from_utf8_lossy(&wg.stdout).contains("192.168.77.0/24"));
    }
    assert_eq!(
        node1.status_ok()["advertised_routes"],
        serde_json::json!(["192.168.77.0/24"])
    );

    // A foreign route on the same interface must survive wgmesh's cleanup.
    let node2 = &lab.nodes[1];
    let add = node2.exec(
        "ip",
        &[
            "route",
            "add",
            "192.168.88.0/24",
            "dev",
            &node2.interface,
            "proto",
            "static",
        ],
    );
    assert!(add.status.success());

    // A bad edit is refused with its line, and nothing changes.
    std::fs::write(
        node1.reload_path(),
        "advertise-routes=192.168.77.0/24\nadvertise-routes=10.1.2.0/33\n",
    )
    .unwrap();
    let out = node1.wgmesh(&["reload"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2"), "{err}");
    std::fs::write(node1.reload_path(), "advertise-routes=10.1.2.0/33\n").unwrap();
    let out = node1.wgmesh(&["reload"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("line 1: advertise-routes: \"10.1.2.0/33\" is not a CIDR")
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        node1.status_ok()["advertised_routes"],
        serde_json::json!(["192.168.77.0/24"])
    );
    assert!(node2.routes(&["proto", "77"]).contains("192.168.77.0/24"));

    // Known but not reloadable keys warn; clearing withdraws the route everywhere.
    std::fs::write(node1.reload_path(), "listen-port=1234\nadvertise-routes=\n").unwrap();
    let out = node1.wgmesh(&["reload"]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("line 1: listen-port cannot be set here; use the flag or the env file")
    );
    wait_until(
        Duration::from_secs(10),
        "route withdrawn everywhere",
        || {
            lab.nodes[1..]
                .iter()
                .all(|n| !n.routes(&["proto", "77"]).contains("192.168.77.0/24"))
        },
    );
    assert!(
        node2.routes(&[]).contains("192.168.88.0/24 dev"),
        "foreign route removed: {}",
        node2.routes(&[])
    );

    // No reload file: a warning and a no-op.
    std::fs::remove_file(node1.reload_path()).unwrap();
    let out = node1.wgmesh(&["reload"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: run with --features root-tests"
)]
fn routes_that_must_never_be_accepted_are_not_installed() {
    let mut lab = Lab::new(3);
    lab.nodes[1].start(&[]);
    lab.nodes[2].start(&[]);
    lab.nodes[1].child.as_ref().unwrap();
    let subnet = {
        let status = lab.nodes[1].status();
        wait_until(Duration::from_secs(20), "node 2 up", || {
            lab.nodes[1].status().is_some()
        });
        let _ = status;
        let s = lab.nodes[1].status_ok();
        let ip: std::net::Ipv4Addr = s["mesh_ipv4"].as_str().unwrap().parse().unwrap();
        format!("{}.{}.0.0/16", ip.octets()[0], ip.octets()[1])
    };
    let routes = format!("0.0.0.0/0,::/0,{subnet},192.168.150.0/24,192.168.99.0/24");
    lab.nodes[0].start(&["--advertise-routes", &routes]);
    lab.wait_for_full_mesh(FORMATION);
    wait_until(Duration::from_secs(10), "the acceptable route", || {
        lab.nodes[1..]
            .iter()
            .all(|n| n.routes(&["proto", "77"]).contains("192.168.99.0/24"))
    });
    for node in &lab.nodes[1..] {
        let ours = node.routes(&["proto", "77"]);
        let ours6 = String::from_utf8_lossy(
            &node
                .exec("ip", &["-6", "route", "show", "proto", "77"])
                .stdout,
        )
        .into_owned();
        assert_eq!(
            ours.trim().lines().count(),
            1,
            "only 192.168.99.0/24 may be installed: {ours}"
        );
        assert!(ours6.trim().is_empty(), "{ours6}");
        let allowed = String::from_utf8_lossy(
            &node
                .exec("wg", &["show", &node.interface, "allowed-ips"])
                .stdout,
        )
        .into_owned();
        for forbidden in ["0.0.0.0/0", "::/0", &subnet, "192.168.150.0/24"] {
            assert!(
                !allowed.contains(forbidden),
                "node {} accepted {forbidden}: {allowed}",
                node.index
            );
        }
    }
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: run with --features root-tests"
)]
fn static_seeds_form_the_mesh_without_lan_discovery() {
    let mut lab = Lab::new(3);
    let seeds = common::seeds(&lab.nodes);
    for node in &mut lab.nodes {
        // Each node is told about all (a node listed as its own seed ignores itself).
        node.start(&["--no-lan", "--peer", &seeds]);
    }
    lab.wait_for_full_mesh(FORMATION);
    for node in &lab.nodes {
        for peer in peers(&node.status_ok()) {
            // Whoever probed first: our seed list, theirs (inbound), or a member's gossip.
            assert!(
                ["static", "inbound", "gossip"].contains(&peer["source"].as_str().unwrap()),
                "{peer}"
            );
        }
    }
    wait_until(FORMATION, "all pairs to ping", || lab.all_pairs_ping());
}

/// The reload file is applied at startup and wins over flags and `WGMESH_*` variables, so a
/// restart (crash, upgrade, reboot) advertises what ops scripts last wrote. A rejected file at
/// startup does not stop the daemon: it runs on the flag values and `status` shows why.
#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: run with --features root-tests"
)]
fn a_restart_applies_the_reload_file_before_ready() {
    let mut lab = Lab::new(2);
    let from_env = [("WGMESH_ADVERTISE_ROUTES", "192.168.50.0/24")];
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
        .create(lab.nodes[0].state_dir())
        .unwrap();
    std::fs::write(
        lab.nodes[0].reload_path(),
        "advertise-routes=192.168.78.0/24\nlog-level=debug\nname=from-file\n",
    )
    .unwrap();
    lab.nodes[0].start_with_env(&["--name", "from-flag"], &from_env);
    lab.nodes[1].start(&[]);
    lab.wait_for_full_mesh(FORMATION);
    let status = lab.nodes[0].status_ok();
    assert_eq!(
        status["advertised_routes"],
        serde_json::json!(["192.168.78.0/24"])
    );
    assert_eq!(status["reload"]["ok"], true);
    assert_eq!(status["name"], "from-file");
    let log = lab.nodes[0].log();
    let reload_file = lab.nodes[0].reload_path().display().to_string();
    assert!(
        log.contains(&format!(
            "key=\"advertise-routes\" value=[192.168.78.0/24] source=reload file {reload_file}"
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "key=\"log-level\" value=debug source=reload file {reload_file}"
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "key=\"name\" value=from-file source=reload file {reload_file}"
        )),
        "{log}"
    );
    wait_until(FORMATION, "the reload file's route on the peer", || {
        lab.nodes[1]
            .routes(&["proto", "77"])
            .contains("192.168.78.0/24")
    });

    // A crash, then a restart with a file an ops script broke: the daemon starts on the
    // variable's value, says why, and a fixed file reloads as usual.
    lab.nodes[0].kill9();
    std::fs::write(lab.nodes[0].reload_path(), "advertise-routes=bogus\n").unwrap();
    lab.nodes[0].start_with_env(&["--name", "from-flag"], &from_env);
    lab.wait_for_full_mesh(FORMATION);
    let status = lab.nodes[0].status_ok();
    assert_eq!(
        status["advertised_routes"],
        serde_json::json!(["192.168.50.0/24"])
    );
    assert_eq!(status["reload"]["ok"], false);
    assert_eq!(status["name"], "from-flag");
    let why = status["reload"]["messages"][0].as_str().unwrap();
    assert!(
        why.contains("line 1: advertise-routes: \"bogus\" is not a CIDR")
            && why.contains("starting with the flag values"),
        "{why}"
    );
    assert!(lab.nodes[0].log().contains(
        "key=\"advertise-routes\" value=[192.168.50.0/24] source=WGMESH_ADVERTISE_ROUTES"
    ),);
    wait_until(
        FORMATION,
        "the variable's route replaces the file's",
        || {
            let routes = lab.nodes[1].routes(&["proto", "77"]);
            routes.contains("192.168.50.0/24") && !routes.contains("192.168.78.0/24")
        },
    );
    std::fs::write(
        lab.nodes[0].reload_path(),
        "advertise-routes=192.168.79.0/24\n",
    )
    .unwrap();
    let out = lab.nodes[0].wgmesh(&["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(lab.nodes[0].status_ok()["reload"]["ok"], true);
}
