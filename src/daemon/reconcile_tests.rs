//! The reconciler on fakes: a device, routes and a host in memory.

use super::*;
use crate::daemon::state::{OwnAddresses, unix_ms};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use wgmesh_device::{BackendKind, FakeBackend, FakeHost, FakeRoutes};
use wgmesh_keys::{PresharedKey, PrivateKey, PublicKey};
use wgmesh_mesh::{Member, Source};

type TestReconciler = Reconciler<FakeBackend, FakeRoutes, FakeHost>;

fn own_private() -> PrivateKey {
    PrivateKey::from_bytes_clamped([1; 32])
}

/// Keys greater than ours: this end starts every handshake at once, so no nudge is pending
/// between passes (a pending one would make a slow test's second pass write).
fn member_key(n: u8) -> PublicKey {
    let mut bytes = [n; 32];
    bytes[0] = 0xff;
    let key = PublicKey::from_bytes(bytes);
    assert!(own_private().public_key() < key);
    key
}

fn member(n: u8) -> Member {
    Member {
        public_key: member_key(n),
        mesh_ipv4: Ipv4Addr::new(10, 1, 0, n),
        mesh_ipv6: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, u16::from(n)),
        collision_counter: 0,
        endpoint: Some(SocketAddr::from(([192, 0, 2, n], 51820))),
        control_addr: Some(SocketAddr::from(([192, 0, 2, n], 51900))),
        routes: Vec::new(),
        source: Source::Lan,
        relay_offered: false,
        last_seen_ms: unix_ms(SystemTime::now()),
        moved_at_ms: 0,
        relay_via: None,
        relay_endpoint: None,
        name: None,
        version: None,
        name_claim: 0,
    }
}

fn reconciler(members: &[Member]) -> TestReconciler {
    let own = OwnAddresses {
        ipv4: Ipv4Addr::new(10, 1, 0, 100),
        ipv6: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 100),
        collision_counter: 0,
    };
    let shared = Shared::new(own, Vec::new());
    for m in members {
        shared.lock().members.upsert(m.clone());
    }
    let node = NodeInfo {
        interface: "wgtest0".to_owned(),
        backend: BackendKind::Userspace,
        public_key: own_private().public_key(),
        listen_port: 51820,
        control_port: 51900,
        mesh_prefixes: vec!["10.1.0.0/16".parse().unwrap(), "fd00::/64".parse().unwrap()],
        relay: false,
    };
    let link = InterfaceConfig {
        interface: "wgtest0".to_owned(),
        addresses: crate::platform::interface_addresses(own.ipv4, own.ipv6).to_vec(),
        managed: node.mesh_prefixes.clone(),
        mtu: 1420,
    };
    let settings = DeviceSettings {
        private_key: own_private(),
        listen_port: 51820,
        preshared_key: PresharedKey::from_bytes([2; 32]),
        persistent_keepalive: 25,
    };
    let mut backend = FakeBackend::new("wgtest0");
    backend.ensure_device().unwrap();
    let host = FakeHost {
        connected: vec!["192.0.2.0/24".parse().unwrap()],
        index: 7,
        ..FakeHost::default()
    };
    Reconciler::new(
        backend,
        FakeRoutes::default(),
        host,
        link,
        settings,
        shared,
        node,
    )
}

fn peers(r: &TestReconciler) -> Vec<PublicKey> {
    let state = r.backend.state.as_ref().unwrap();
    state.peers.iter().map(|p| p.config.public_key).collect()
}

#[test]
fn members_become_peers_and_routes_and_a_steady_mesh_writes_nothing() {
    let mut with_route = member(2);
    with_route.routes = vec!["172.16.9.0/24".parse().unwrap()];
    let mut r = reconciler(&[with_route.clone(), member(3)]);
    let first = r.run_once().unwrap();
    assert!(first.device_writes > 0);
    assert_eq!(first.route_writes, 1);
    assert_eq!(peers(&r), [with_route.public_key, member(3).public_key]);
    assert_eq!(r.routes.routes, ["172.16.9.0/24".parse::<IpNet>().unwrap()]);
    let device = r.backend.state.clone().unwrap();
    assert_eq!(device.listen_port, 51820);
    assert!(
        device
            .peers
            .iter()
            .all(|p| p.config.persistent_keepalive.is_none()),
        "nudge keepalives are turned off again: {device:?}"
    );

    let writes = (r.backend.writes, r.routes.writes);
    let second = r.run_once().unwrap();
    assert_eq!(second, Outcome::default());
    assert_eq!((r.backend.writes, r.routes.writes), writes);
    assert_eq!(r.stats.runs, 2);
}

#[test]
fn every_pass_is_published_for_status_without_key_material() {
    let mut r = reconciler(&[member(2)]);
    let cell = r.last_pass();
    assert!(cell.read().device.is_none());
    r.run_once().unwrap();
    let pass = cell.read();
    assert_eq!(pass.stats.runs, 1);
    let device = pass.device.unwrap();
    assert!(device.private_key.is_none());
    // What the pass read: before its own writes.
    assert!(device.peers.is_empty());
    r.refresh_snapshot();
    let device = cell.read().device.unwrap();
    assert_eq!(device.peers.len(), 1);
    assert!(device.peers[0].config.preshared_key.is_none());
}

#[test]
fn a_restarted_wireguard_go_gets_its_link_and_peers_back() {
    let mut r = reconciler(&[member(2)]);
    r.run_once().unwrap();
    assert!(r.host.configured.is_empty(), "no relink without a restart");
    r.backend.restart_next = true;
    r.host.index = 9;
    r.run_once().unwrap();
    assert_eq!(r.host.configured, [r.link.clone()]);
    assert_eq!(r.routes.index, 9, "routes follow the new link");
    assert_eq!(peers(&r), [member(2).public_key]);
}

#[test]
fn one_failing_peer_does_not_block_the_others() {
    let mut r = reconciler(&[member(2), member(3), member(4)]);
    r.backend.failing_peers = vec![member(3).public_key];
    r.run_once().unwrap();
    assert_eq!(peers(&r), [member(2).public_key, member(4).public_key]);
    // Once it is accepted, the next pass adds it.
    r.backend.failing_peers.clear();
    r.run_once().unwrap();
    assert_eq!(peers(&r).len(), 3);
}

#[test]
fn a_failing_route_is_retried_and_the_others_are_installed() {
    let mut a = member(2);
    a.routes = vec![
        "172.16.1.0/24".parse().unwrap(),
        "172.16.2.0/24".parse().unwrap(),
    ];
    let mut r = reconciler(&[a]);
    r.routes.refuse = Some("172.16.1.0/24".parse().unwrap());
    let first = r.run_once().unwrap();
    assert_eq!(first.route_writes, 1);
    assert_eq!(r.routes.routes, ["172.16.2.0/24".parse::<IpNet>().unwrap()]);
    r.routes.refuse = None;
    assert_eq!(r.run_once().unwrap().route_writes, 1);
    assert_eq!(r.routes.routes.len(), 2);
}

#[test]
fn after_adopting_a_device_nothing_is_removed_during_the_grace() {
    let mut r = reconciler(&[member(2)]);
    r.run_once().unwrap();
    r.shared.lock().members.remove(&member(2).public_key);
    r.hold_removals(Duration::from_secs(30));
    assert_eq!(r.run_once().unwrap(), Outcome::default());
    assert_eq!(peers(&r), [member(2).public_key]);
    r.hold_removals(Duration::ZERO);
    r.run_once().unwrap();
    assert!(peers(&r).is_empty());
}

#[test]
fn a_member_that_went_quiet_for_the_ttl_expires_and_is_removed() {
    let mut old = member(2);
    old.last_seen_ms = unix_ms(SystemTime::now()) - MEMBER_TTL.as_millis() as u64 - 1_000;
    let mut r = reconciler(&[old, member(3)]);
    r.run_once().unwrap();
    assert_eq!(peers(&r), [member(3).public_key]);
    assert_eq!(r.shared.lock().members.len(), 1);
}

#[test]
fn shutdown_removes_routes_and_the_device_unless_kept() {
    let mut a = member(2);
    a.routes = vec!["172.16.1.0/24".parse().unwrap()];
    let mut r = reconciler(std::slice::from_ref(&a));
    r.run_once().unwrap();
    r.shutdown(false);
    assert!(r.routes.routes.is_empty());
    assert!(r.backend.state.is_none());

    let mut kept = reconciler(&[a]);
    kept.run_once().unwrap();
    kept.shutdown(true);
    assert_eq!(kept.routes.routes.len(), 1);
    assert!(kept.backend.state.is_some());
}

#[test]
fn members_on_trial_through_a_relay_never_reach_the_peer_cache() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wgtest0.peers.json");
    let mut r = reconciler(&[member(2), member(3)]);
    r.shared.lock().on_trial.insert(member(3).public_key);
    r.set_peer_cache(path.clone(), Vec::new());
    r.run_once().unwrap();
    let cached = |path: &std::path::Path| -> Vec<PublicKey> {
        match wgmesh_state::load_peer_cache(path).unwrap() {
            wgmesh_state::CacheLoad::Loaded(peers) => peers.iter().map(|c| c.public_key).collect(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(cached(&path), [member(2).public_key]);
    // Once its own proof arrived (the exchange task clears the mark), it is cached too.
    r.shared.lock().on_trial.clear();
    r.run_once().unwrap();
    assert_eq!(cached(&path).len(), 2);
}
