//! Rendezvous against a local mainline testnet on 127.0.0.1 (no root, no internet).
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failure is a test failure"
)]

use std::net::SocketAddr;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wgmesh_dht::schedule::{epoch_hour, lookup_hours};
use wgmesh_dht::{DhtConfig, DhtRendezvous, Pacing, PeerAnnounce, SignedItems};

/// A per-test "secret", so parallel tests never see each other's announcements.
fn infohash_for(secret: u8) -> impl Fn(u64) -> [u8; 20] + Send + 'static {
    move |hour| {
        let mut h = [secret; 20];
        h[..8].copy_from_slice(&hour.to_be_bytes());
        h
    }
}

fn testnet() -> wgmesh_lab_support::dht_testnet::LabTestnet {
    wgmesh_lab_support::dht_testnet::start_testnet(std::net::Ipv4Addr::LOCALHOST, 5).unwrap()
}

fn config(secret: u8, port: u16, bootstrap: &[String]) -> DhtConfig {
    let mut config = DhtConfig::new(infohash_for(secret), port);
    config.bootstrap = bootstrap.to_vec();
    config.bind = Some("127.0.0.1:0".parse().unwrap());
    config.accept_loopback = true;
    config.request_timeout = Duration::from_millis(500);
    config.pacing = Pacing {
        fast_lookup: Duration::from_secs(1),
        ..Pacing::default()
    };
    config
}

/// Waits until `want` arrives; returns how long it took.
fn wait_for(rx: &Receiver<SocketAddr>, want: &str, limit: Duration) -> Duration {
    let want: SocketAddr = want.parse().unwrap();
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(got) = rx.recv_timeout(Duration::from_millis(100))
            && got == want
        {
            return start.elapsed();
        }
    }
    panic!("{want} not found within {limit:?}");
}

#[test]
fn two_members_find_each_others_control_port() {
    let net = testnet();
    let (a, rx_a) = DhtRendezvous::start(config(1, 40_001, &net.bootstrap)).unwrap();
    let (b, rx_b) = DhtRendezvous::start(config(1, 40_002, &net.bootstrap)).unwrap();
    let limit = Duration::from_secs(10);
    let ab = wait_for(&rx_a, "127.0.0.1:40002", limit);
    let ba = wait_for(&rx_b, "127.0.0.1:40001", limit);
    assert!(a.status().announced && b.status().announced);
    assert!(a.status().local_addr.is_some());
    // Counted for metrics; a reader kept apart from the handle sees the same status.
    let reader = a.status_reader();
    assert!(reader.read().announces_ok >= 1);
    assert_eq!(reader.read().announces_failed, 0);
    eprintln!("time to first result: a found b after {ab:?}, b found a after {ba:?}");

    // A different secret sees neither.
    let (c, rx_c) = DhtRendezvous::start(config(2, 40_003, &net.bootstrap)).unwrap();
    let start = Instant::now();
    while c.status().lookups < 2 && start.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(c.status().lookups >= 2);
    let seen: Vec<SocketAddr> = rx_c.try_iter().collect();
    assert!(
        seen.iter().all(|s| s.port() == 40_003),
        "other secret saw {seen:?}"
    );

    let stop = Instant::now();
    a.stop();
    b.stop();
    c.stop();
    assert!(
        stop.elapsed() < Duration::from_secs(2),
        "stop took {:?}",
        stop.elapsed()
    );
}

#[test]
fn saved_nodes_replace_the_bootstrap_routers_on_restart() {
    let net = testnet();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wg0.dht-nodes.json");

    let mut first = config(3, 40_011, &net.bootstrap);
    first.nodes_file = Some(path.clone());
    let (a, _rx_a) = DhtRendezvous::start(first).unwrap();
    let start = Instant::now();
    while a.status().lookups < 1 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    a.stop();
    let saved = wgmesh_dht::nodes_file::load(&path).unwrap();
    assert!(!saved.is_empty(), "no nodes saved");
    assert!(
        saved.iter().all(|n| n.ip().is_loopback()),
        "saved {saved:?}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // A member announces through the testnet directly...
    let (b, _rx_b) = DhtRendezvous::start(config(3, 40_012, &net.bootstrap)).unwrap();
    // ...and the restarted member has only an unresolvable router plus its saved nodes.
    let mut second = config(3, 40_011, &["router.invalid:6881".to_owned()]);
    second.nodes_file = Some(path);
    let (a2, rx_a2) = DhtRendezvous::start(second).unwrap();
    wait_for(&rx_a2, "127.0.0.1:40012", Duration::from_secs(10));
    a2.stop();
    b.stop();
}

#[test]
fn no_reachable_bootstrap_keeps_retrying_and_stops_promptly() {
    // Empty bootstrap = mainline's public routers; they do not resolve here (no internet), and
    // no nodes file was given, so the node is never created. That is logged, retried with
    // backoff, and never panics.
    let mut config = DhtConfig::new(infohash_for(4), 40_021);
    config.bind = Some("127.0.0.1:0".parse().unwrap());
    config.accept_loopback = true;
    let (handle, rx) = DhtRendezvous::start(config).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    handle.set_fast(false);
    let status = handle.status();
    assert!(!status.announced);
    assert_eq!(status.lookups, 0);
    assert_eq!(status.announces_ok + status.announces_failed, 0);
    let stop = Instant::now();
    handle.stop();
    assert!(stop.elapsed() < Duration::from_secs(2));
    assert!(rx.try_recv().is_err());
}

#[test]
fn announces_current_hour_and_looks_up_three_hours() {
    let net = testnet();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&asked);
    let mut config = config(5, 40_031, &net.bootstrap);
    config.rendezvous = Box::new(PeerAnnounce::new(move |hour| {
        record.lock().unwrap().push(hour);
        infohash_for(5)(hour)
    }));
    let before = epoch_hour(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap(),
    );
    let (handle, _rx) = DhtRendezvous::start(config).unwrap();
    let start = Instant::now();
    while handle.status().lookups < 1 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    handle.stop();
    let asked = asked.lock().unwrap().clone();
    // The three lookup hours and the announce hour, in the first round (unless the test
    // straddled an hour boundary).
    let after = epoch_hour(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap(),
    );
    if before == after {
        let e = before;
        let mut first_round = asked[..4].to_vec();
        first_round.sort_unstable();
        let mut expected = lookup_hours(e).to_vec();
        expected.push(e);
        expected.sort_unstable();
        assert_eq!(first_round, expected);
    }
}

#[test]
fn first_lookup_round_finds_an_existing_member() {
    // Regression: the first round announces and looks up the same hour; the lookup must not be
    // swallowed by the announce's own query, or a new member waits a whole interval.
    let net = testnet();
    let (b, _rx_b) = DhtRendezvous::start(config(6, 40_041, &net.bootstrap)).unwrap();
    let start = Instant::now();
    while !b.status().announced && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut slow = config(6, 40_042, &net.bootstrap);
    slow.pacing.fast_lookup = Duration::from_secs(600);
    slow.pacing.first_followup = Duration::from_secs(600);
    let (a, rx_a) = DhtRendezvous::start(slow).unwrap();
    // Within 5 s, while the next round is 600 s away: found by the first round.
    let took = wait_for(&rx_a, "127.0.0.1:40041", Duration::from_secs(5));
    eprintln!("first result after {took:?}");
    a.stop();
    b.stop();
}

#[test]
fn reannounce_announces_at_once_without_a_lookup() {
    let net = testnet();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&asked);
    let mut config = config(7, 40_051, &net.bootstrap);
    config.pacing.fast_lookup = Duration::from_secs(600);
    config.pacing.first_followup = Duration::from_secs(600);
    config.rendezvous = Box::new(PeerAnnounce::new(move |hour| {
        record.lock().unwrap().push(hour);
        infohash_for(7)(hour)
    }));
    let (handle, _rx) = DhtRendezvous::start(config).unwrap();
    let start = Instant::now();
    while handle.status().lookups < 1 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = asked.lock().unwrap().len();
    assert_eq!(before, 4, "one announce and three lookups");
    handle.reannounce();
    let start = Instant::now();
    while asked.lock().unwrap().len() == before && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(asked.lock().unwrap().len(), before + 1, "one more announce");
    handle.set_announce_port(40_052);
    let start = Instant::now();
    while asked.lock().unwrap().len() == before + 1 && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(asked.lock().unwrap().len(), before + 2);
    handle.stop();
}

/// The BEP 44 rendezvous under a per-test "secret".
fn items_config(secret: u8, port: u16, bootstrap: &[String]) -> DhtConfig {
    let mut config = config(secret, port, bootstrap);
    config.rendezvous = Box::new(SignedItems::new(
        infohash_for(secret),
        &[secret; 32],
        &[secret ^ 0xff; 32],
    ));
    config
}

#[test]
fn bep44_members_find_each_other_through_the_signed_item() {
    let net = testnet();
    let (a, rx_a) = DhtRendezvous::start(items_config(11, 40_061, &net.bootstrap)).unwrap();
    let (b, rx_b) = DhtRendezvous::start(items_config(11, 40_062, &net.bootstrap)).unwrap();
    let (c, rx_c) = DhtRendezvous::start(items_config(11, 40_063, &net.bootstrap)).unwrap();
    let limit = Duration::from_secs(20);
    // All three wrote into one item (read, merge, compare-and-swap): each finds both others.
    let took = [
        wait_for(&rx_a, "127.0.0.1:40062", limit),
        wait_for(&rx_a, "127.0.0.1:40063", limit),
        wait_for(&rx_b, "127.0.0.1:40061", limit),
        wait_for(&rx_c, "127.0.0.1:40061", limit),
    ];
    eprintln!("bep44 found after {took:?}");
    assert_eq!(a.status().method, "bep44");
    assert!(a.status().announced && b.status().announced && c.status().announced);
    a.stop();
    b.stop();
    c.stop();
}

#[test]
fn bep44_items_of_another_mesh_are_not_read() {
    let net = testnet();
    // Same hour salt and signing key, another seal key: the item is found but does not open.
    let (a, _rx_a) = DhtRendezvous::start(items_config(12, 40_071, &net.bootstrap)).unwrap();
    let mut other = config(12, 40_072, &net.bootstrap);
    other.rendezvous = Box::new(SignedItems::new(infohash_for(12), &[12; 32], &[0; 32]));
    let (b, rx_b) = DhtRendezvous::start(other).unwrap();
    let start = Instant::now();
    while b.status().lookups < 2 && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(b.status().lookups >= 2, "b looked up twice");
    assert!(a.status().announced, "a wrote its item");
    let found: Vec<SocketAddr> = rx_b.try_iter().collect();
    assert!(
        !found.contains(&"127.0.0.1:40071".parse().unwrap()),
        "{found:?}"
    );
    a.stop();
    b.stop();
}
