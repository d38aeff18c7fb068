//! What a local unprivileged user can do against a running daemon (docs/security.md, "local
//! unprivileged user"). Needs root (namespaces, and dropping to uid 65534); run with
//! `--features root-tests`.
mod common;

use common::{Lab, derive, wait_until};
use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;
use std::time::Duration;

const FORMATION: Duration = Duration::from_secs(60);

/// A user of another uid (`nobody`, via `setpriv`) on a member's host tries to take the
/// daemon's control port beside it, with `SO_REUSEADDR` and `SO_REUSEPORT`: on `127.0.0.1`,
/// the LAN address, the LAN group, the IPv4 wildcard and the dual-stack IPv6 wildcard. Pass when every bind is refused with
/// "Address in use" (so none of the daemon's datagrams can reach that user), and the two-node
/// mesh, formed by LAN multicast alone, still pings afterwards.
#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: run with --features root-tests"
)]
fn another_uid_cannot_bind_beside_the_control_socket() {
    let mut lab = Lab::new(2);
    // LAN discovery only: the exclusive control socket still receives the group's beacons.
    lab.start_all(&["--dht-bootstrap", "none", "--stun", "none"]);
    lab.wait_for_full_mesh(FORMATION);
    let network = derive(&lab.nodes[0].secret_file);
    let port = network["control_port"].as_u64().unwrap();
    let group = network["lan_group"].as_str().unwrap().to_owned();
    let node = &lab.nodes[0];

    // uid 65534 must be able to run the helper: a copy in a directory anyone may enter.
    let bin = tempfile::tempdir().unwrap();
    std::fs::set_permissions(bin.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let helper = bin.path().join("wgmesh-lab");
    std::fs::copy(env!("CARGO_BIN_EXE_wgmesh-lab"), &helper).unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    // `[::]` is a dual-stack socket (the default), which would take IPv4 datagrams as well.
    let targets: Vec<String> = ["127.0.0.1", &node.lan_ip, &group, "0.0.0.0", "[::]"]
        .iter()
        .map(|ip| format!("{ip}:{port}"))
        .collect();
    let mut args = vec![
        "netns".to_owned(),
        "exec".to_owned(),
        node.ns.clone(),
        "setpriv".to_owned(),
        "--reuid=65534".to_owned(),
        "--regid=65534".to_owned(),
        "--clear-groups".to_owned(),
        helper.display().to_string(),
        "udp-bind".to_owned(),
    ];
    args.extend(targets.iter().cloned());
    let out = Command::new("ip").args(&args).output().unwrap();
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "a port was taken:\n{report}");
    for target in &targets {
        assert!(
            report.contains(&format!("{target}: refused: Address already in use")),
            "{target}:\n{report}"
        );
    }
    // Proof the helper really ran as another uid and could bind: a free port is its to take.
    let mut free = args[..args.len() - targets.len()].to_vec();
    free.push(format!("127.0.0.1:{}", port + 1));
    let out = Command::new("ip").args(&free).output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bound; own datagram received: true"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    wait_until(Duration::from_secs(10), "the mesh to still ping", || {
        lab.all_pairs_ping()
    });
}
