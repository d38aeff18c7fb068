//! Member names in a real mesh: who keeps a name two members claim, what `wgmesh hosts` prints,
//! and renaming through the reload file. Needs root; run with `--features root-tests`.

mod common;

use common::{Lab, Node, wait_until};
use serde_json::Value;
use std::time::Duration;
use wgmesh_names::MemberName;

const FORMATION: Duration = Duration::from_secs(60);

fn key_of(node: &Node) -> String {
    node.status_ok()["public_key"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// `(name, name_contested)` of peer `key` in `viewer`'s status.
fn shown(viewer: &Node, key: &str) -> Option<(Option<String>, bool)> {
    let status = viewer.status()?;
    let peer = status["peers"]
        .as_array()?
        .iter()
        .find(|p| p["public_key"] == key)?
        .clone();
    Some((
        peer["name"].as_str().map(str::to_owned),
        peer["name_contested"].as_bool()?,
    ))
}

fn hosts(node: &Node) -> String {
    let out = node.wgmesh(&["hosts"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn reload(node: &Node, text: &str) -> std::process::Output {
    std::fs::write(node.reload_path(), text).unwrap_or_else(|e| panic!("reload file: {e}"));
    node.wgmesh(&["reload"])
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: run with --features root-tests"
)]
fn a_contested_name_stays_with_its_first_holder_and_renames_reach_the_mesh() {
    let mut lab = Lab::new(3);
    // Node 1 first, so every member verifies it under "web" before node 2 claims the same.
    lab.nodes[0].start(&["--name", "web"]);
    lab.nodes[2].start(&["--name", "ops"]);
    lab.wait_for_full_mesh(FORMATION);
    let prefix_of = |key: &str| -> String {
        let key = wgmesh_keys::PublicKey::from_base64(key)
            .unwrap_or_else(|e| panic!("status key {key}: {e}"));
        wgmesh_names::key_prefix(&key)
    };
    let (k1, k3) = (key_of(&lab.nodes[0]), key_of(&lab.nodes[2]));
    wait_until(
        Duration::from_secs(20),
        "node 3 to know node 1 as web",
        || shown(&lab.nodes[2], &k1) == Some((Some("web".to_owned()), false)),
    );
    lab.nodes[1].start(&["--name", "web"]);
    lab.wait_for_full_mesh(FORMATION);
    let k2 = key_of(&lab.nodes[1]);
    let contested = format!("web~{}", prefix_of(&k2));
    wait_until(Duration::from_secs(20), "node 2 shown contested", || {
        shown(&lab.nodes[2], &k2) == Some((Some(contested.clone()), true))
            && shown(&lab.nodes[0], &k2) == Some((Some(contested.clone()), true))
    });
    // The first holder keeps it, on node 3 and (its own name) on node 1; node 2 sees node 1 as
    // the contester: its own name is its own.
    assert_eq!(
        shown(&lab.nodes[2], &k1),
        Some((Some("web".to_owned()), false))
    );
    assert_eq!(
        shown(&lab.nodes[1], &k1),
        Some((Some(format!("web~{}", prefix_of(&k1))), true))
    );
    let peers = lab.nodes[2].wgmesh(&["peers"]);
    eprintln!(
        "wgmesh peers on node 3:\n{}",
        String::from_utf8_lossy(&peers.stdout)
    );

    // hosts on node 3: "web" bare for node 1 only.
    let text = hosts(&lab.nodes[2]);
    eprintln!("wgmesh hosts on node 3:\n{text}");
    let status1 = lab.nodes[0].status_ok();
    let status2 = lab.nodes[1].status_ok();
    for ip in [&status1["mesh_ipv4"], &status1["mesh_ipv6"]] {
        let line = format!("{}\tweb", ip.as_str().unwrap_or_default());
        assert!(text.lines().any(|l| l == line), "{line:?} missing:\n{text}");
    }
    for ip in [&status2["mesh_ipv4"], &status2["mesh_ipv6"]] {
        let line = format!("{}\t{contested}", ip.as_str().unwrap_or_default());
        assert!(text.lines().any(|l| l == line), "{line:?} missing:\n{text}");
    }
    assert_eq!(
        text.lines().filter(|l| l.ends_with("\tweb")).count(),
        2,
        "web bare only for node 1:\n{text}"
    );
    let out = lab.nodes[2].wgmesh(&["hosts", "--json"]);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let entries = json.as_array().map_or(0, Vec::len);
    assert_eq!(entries, 3, "{json}");
    assert!(
        json.as_array()
            .into_iter()
            .flatten()
            .any(|e| e["name"] == contested.as_str() && e["name_contested"] == true),
        "{json}"
    );

    // A bad name rejects the whole file with its line; nothing changes.
    let out = reload(&lab.nodes[1], "advertise-routes=\nname=Web_2\n");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 2: name:") && err.contains("'_'"),
        "{err}"
    );
    assert_eq!(lab.nodes[1].status_ok()["name"], "web");

    // A rename through the reload file reaches the others; the name is no longer contested.
    let out = reload(&lab.nodes[1], "name = DB\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(lab.nodes[1].status_ok()["name"], "db");
    let took = wait_until(Duration::from_secs(20), "the rename everywhere", || {
        shown(&lab.nodes[0], &k2) == Some((Some("db".to_owned()), false))
            && shown(&lab.nodes[2], &k2) == Some((Some("db".to_owned()), false))
    });
    eprintln!("rename reached both members in {took:?}");
    assert_eq!(
        shown(&lab.nodes[1], &k1),
        Some((Some("web".to_owned()), false))
    );

    // An empty name= goes back to the default, the host name (all namespaces share it).
    let out = reload(&lab.nodes[1], "name=\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let default = MemberName::from_host_name(&host).map(|n| n.to_string());
    assert_eq!(
        lab.nodes[1].status_ok()["name"].as_str().map(str::to_owned),
        default
    );
    assert_eq!(
        shown(&lab.nodes[1], &k3),
        Some((Some("ops".to_owned()), false))
    );
}
