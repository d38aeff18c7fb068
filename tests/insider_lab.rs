//! An insider (a host that holds the secret, running the unmodified daemon) tries to take an
//! established member's address with a ground identity, and its routes with a crafted reload
//! file (issue 13, docs/security.md). Needs root; run with `--features root-tests`.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failure is a test failure"
)]

mod common;

use common::{Lab, Node, plant_identity, wait_until};
use serde_json::Value;
use std::net::Ipv4Addr;
use std::time::Duration;
use wgmesh_derive::{MeshKeys, NodeSeed, Secret};
use wgmesh_keys::PublicKey;

const FORMATION: Duration = Duration::from_secs(60);

fn keys_of(lab: &Lab) -> MeshKeys {
    MeshKeys::derive(
        &Secret::parse(&std::fs::read_to_string(&lab.nodes[0].secret_file).unwrap()).unwrap(),
    )
}

/// The first seed from `start` whose key passes `wanted`: grinding, as an insider would.
fn grind(keys: &MeshKeys, start: u32, mut wanted: impl FnMut(&PublicKey) -> bool) -> NodeSeed {
    (start..)
        .map(|i| {
            let mut bytes = [0x5a; 32];
            bytes[..4].copy_from_slice(&i.to_be_bytes());
            NodeSeed::from_bytes(bytes)
        })
        .find(|seed| wanted(&keys.node_public_key(seed)))
        .unwrap()
}

/// `wg show <iface> allowed-ips` as (key, allowed IPs) lines.
fn allowed_ips(node: &Node) -> String {
    String::from_utf8_lossy(
        &node
            .exec("wg", &["show", &node.interface, "allowed-ips"])
            .stdout,
    )
    .into_owned()
}

fn allowed_of(node: &Node, key: &PublicKey) -> String {
    allowed_ips(node)
        .lines()
        .find(|line| line.starts_with(&key.to_base64()))
        .unwrap_or_default()
        .to_owned()
}

fn reload(node: &Node, text: &str) -> std::process::Output {
    std::fs::write(node.reload_path(), text).unwrap();
    node.wgmesh(&["reload"])
}

/// The refusals `viewer` reports for `key`: (route, reason code).
fn refused(viewer: &Node, key: &PublicKey) -> Vec<(String, String)> {
    let status = viewer.status_ok();
    status["refused_routes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["public_key"] == key.to_base64())
        .map(|r| {
            (
                r["route"].as_str().unwrap().to_owned(),
                r["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: run with --features root-tests"
)]
fn a_ground_identity_with_a_lower_key_takes_no_address_from_an_established_member() {
    let mut lab = Lab::new(3);
    let keys = keys_of(&lab);
    // The victim's key is in the upper half, so a lower one is cheap to grind.
    let victim_seed = grind(&keys, 0, |key| key.as_bytes()[0] >= 0x80);
    plant_identity(&lab.nodes[0], &keys, &victim_seed);
    let victim_key = keys.node_public_key(&victim_seed);
    let victim_ip = wgmesh_derive::mesh_ipv4(&keys, &victim_key, 0);
    lab.nodes[0].start(&[]);
    lab.nodes[1].start(&[]);
    common::wait_for_full_mesh(&[&lab.nodes[0], &lab.nodes[1]], FORMATION);
    // Established: it comes back up with its address from a run in a mesh (its peer cache
    // names a member), as after any restart. A fresh node is not incumbent for a minute
    // (docs/exchange-protocol.md, "Address ownership").
    lab.nodes[0].stop();
    lab.nodes[0].start(&[]);
    common::wait_for_full_mesh(&[&lab.nodes[0], &lab.nodes[1]], FORMATION);

    // The insider: the same IPv4 at counter 0 and a lower key, which v0.1's "lowest key wins"
    // handed the address to. About 2¹⁷ tries.
    let insider_seed = grind(&keys, 1 << 20, |key| {
        key < &victim_key && wgmesh_derive::mesh_ipv4(&keys, key, 0) == victim_ip
    });
    let insider_key = keys.node_public_key(&insider_seed);
    plant_identity(&lab.nodes[2], &keys, &insider_seed);
    lab.nodes[2].start(&[]);
    wait_until(FORMATION, "the insider to hear of both", || {
        lab.nodes[2].peer_count() == Some(2)
    });
    let victim_host = format!("{victim_ip}/32");
    // For a while, at every step: the victim keeps its address, and nobody routes it to the
    // insider.
    let watch = std::time::Instant::now();
    while watch.elapsed() < Duration::from_secs(15) {
        let observer = &lab.nodes[1];
        assert!(
            !allowed_of(observer, &insider_key).contains(&victim_host),
            "the observer routes the victim's address to the insider: {}",
            allowed_ips(observer)
        );
        assert_eq!(
            lab.nodes[0].status_ok()["mesh_ipv4"],
            victim_ip.to_string(),
            "the victim moved"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(allowed_of(&lab.nodes[1], &victim_key).contains(&victim_host));
    assert!(lab.nodes[1].ping(&victim_ip.to_string()));
    // The unmodified insider daemon moved itself off the address it could not have.
    wait_until(FORMATION, "the insider to re-address", || {
        lab.nodes[2]
            .status()
            .is_some_and(|s| s["mesh_ipv4"] != victim_ip.to_string())
    });
    let _: Ipv4Addr = lab.nodes[2].status_ok()["mesh_ipv4"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: run with --features root-tests"
)]
fn a_crafted_reload_file_hijacks_no_route_and_the_policy_is_reloadable() {
    let mut lab = Lab::new(3);
    let keys = keys_of(&lab);
    let owner_seed = grind(&keys, 0, |key| key.as_bytes()[0] >= 0x80);
    plant_identity(&lab.nodes[0], &keys, &owner_seed);
    let owner_key = keys.node_public_key(&owner_seed);
    lab.nodes[0].start(&["--advertise-routes", "192.168.77.0/24"]);
    // A configured server outside the LAN (a static seed nobody answers at): no member's route
    // may cover it.
    lab.nodes[1].start(&["--peer", "198.51.100.7:51900"]);
    // A host inside the owner's prefix, to see whose it is by pinging it.
    let added = lab.nodes[0].exec("ip", &["addr", "add", "192.168.77.1/32", "dev", "lo"]);
    assert!(added.status.success());
    wait_until(
        FORMATION,
        "the observer to install the owner's route",
        || allowed_of(&lab.nodes[1], &owner_key).contains("192.168.77.0/24"),
    );

    // The insider: a lower key than the owner's (v0.1 gave it the prefix) and a reload file
    // that claims the prefix, a more-specific of it, a split default, a public prefix, a whole
    // private range and the observer's configured seed.
    let insider_seed = grind(&keys, 1 << 20, |key| key < &owner_key);
    let insider_key = keys.node_public_key(&insider_seed);
    plant_identity(&lab.nodes[2], &keys, &insider_seed);
    std::fs::write(
        lab.nodes[2].reload_path(),
        "advertise-routes=192.168.77.0/24,192.168.77.128/25,0.0.0.0/1,128.0.0.0/1,8.8.0.0/16,172.16.0.0/12,198.51.100.0/24,192.168.200.0/24\n",
    )
    .unwrap();
    lab.nodes[2].start(&[]);
    lab.wait_for_full_mesh(FORMATION);
    // Its one legitimate route arrives, so the others had their chance too.
    wait_until(FORMATION, "the insider's own route", || {
        allowed_of(&lab.nodes[1], &insider_key).contains("192.168.200.0/24")
    });
    // A SIGHUP with the file again changes nothing either.
    let out = lab.nodes[2].wgmesh(&["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let observer = &lab.nodes[1];
    let insider_allowed = allowed_of(observer, &insider_key);
    for stolen in [
        "192.168.77.0/24",
        "192.168.77.128/25",
        "0.0.0.0/1",
        "128.0.0.0/1",
        "8.8.0.0/16",
        "172.16.0.0/12",
        "198.51.100.0/24",
    ] {
        assert!(
            !insider_allowed.contains(stolen),
            "the observer gave {stolen} to the insider: {insider_allowed}"
        );
    }
    assert!(allowed_of(observer, &owner_key).contains("192.168.77.0/24"));
    assert!(
        observer.ping("192.168.77.1"),
        "traffic for the prefix reaches its owner"
    );
    let mut reasons = refused(observer, &insider_key);
    reasons.sort();
    assert_eq!(
        reasons,
        [
            ("0.0.0.0/1", "default_route"),
            ("128.0.0.0/1", "default_route"),
            ("172.16.0.0/12", "shorter_than_minimum"),
            ("192.168.77.0/24", "held_by_incumbent"),
            ("192.168.77.128/25", "more_specific_of_incumbent"),
            ("198.51.100.0/24", "covers_protected_address"),
            ("8.8.0.0/16", "outside_policy"),
        ]
        .map(|(r, c)| (r.to_owned(), c.to_owned()))
    );
    let text = String::from_utf8_lossy(&observer.wgmesh(&["status"]).stdout).into_owned();
    assert!(text.contains("refused:     192.168.77.128/25"), "{text}");

    // The observer's own policy is reloadable: none withdraws every route, a pin brings back
    // only what it names.
    let out = reload(observer, "accept-routes=none\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(Duration::from_secs(10), "routes to go", || {
        observer.routes(&["proto", "77"]).trim().is_empty()
    });
    let pin = format!(
        "accept-routes=192.168.77.0/24@{}\n",
        &owner_key.to_base64()[..8]
    );
    let out = reload(observer, &pin);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(Duration::from_secs(10), "the pinned route only", || {
        observer.routes(&["proto", "77"]).trim() != ""
    });
    let routes = observer.routes(&["proto", "77"]);
    assert!(routes.contains("192.168.77.0/24"), "{routes}");
    assert!(!routes.contains("192.168.200.0/24"), "{routes}");
    let status: Value = observer.status_ok();
    assert!(
        status["accept_routes"]
            .as_str()
            .unwrap()
            .starts_with("192.168.77.0/24@"),
        "{status}"
    );
    // A bad policy is refused as a whole, naming its line; the pin stays.
    let out = reload(observer, "log-level=info\naccept-routes=10.0.0.0/8@abc\n");
    assert!(!out.status.success());
    let error = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        error.contains("line 2") && error.contains("at least 8"),
        "{error}"
    );
    assert!(
        observer.status_ok()["accept_routes"]
            .as_str()
            .unwrap()
            .starts_with("192.168.77.0/24@")
    );
}
