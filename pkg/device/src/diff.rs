//! The minimal change from observed to desired device state.

use crate::model::{DesiredDevice, DeviceState, DeviceUpdate, PeerConfig, PeerUpdate};
use std::time::{Duration, SystemTime};

/// A peer that completed a handshake within this window keeps its current endpoint: WireGuard
/// roamed it there from authenticated traffic, and that beats any endpoint discovery suggests.
/// 180 s is WireGuard's REJECT_AFTER_TIME; past it a session must re-handshake anyway.
pub const ROAMING_GRACE: Duration = Duration::from_secs(180);

/// Computes the update that turns `observed` into `desired`, touching only what differs.
pub fn diff_device(
    observed: &DeviceState,
    desired: &DesiredDevice,
    now: SystemTime,
) -> DeviceUpdate {
    let mut update = DeviceUpdate::default();
    if observed.private_key.as_ref() != Some(&desired.private_key) {
        update.private_key = Some(desired.private_key.clone());
    }
    if observed.listen_port != desired.listen_port {
        update.listen_port = Some(desired.listen_port);
    }
    let wanted_keys: std::collections::HashSet<_> =
        desired.peers.iter().map(|d| d.public_key).collect();
    let current = observed.by_key();
    for peer in &observed.peers {
        if !wanted_keys.contains(&peer.config.public_key) {
            update
                .peers
                .push(PeerUpdate::remove(peer.config.public_key));
        }
    }
    for wanted in &desired.peers {
        let mut wanted = wanted.clone();
        wanted.normalise();
        let change = match current.get(&wanted.public_key) {
            None => add_peer(&wanted),
            Some(current) => {
                let recently_handshook = current
                    .last_handshake
                    .and_then(|at| now.duration_since(at).ok())
                    .is_some_and(|age| age < ROAMING_GRACE);
                change_peer(&current.config, &wanted, recently_handshook)
            }
        };
        if !change.is_noop() {
            update.peers.push(change);
        }
    }
    update
}

fn add_peer(wanted: &PeerConfig) -> PeerUpdate {
    PeerUpdate {
        preshared_key: wanted.preshared_key.clone(),
        endpoint: wanted.endpoint,
        persistent_keepalive: wanted.persistent_keepalive,
        replace_allowed_ips: true,
        allowed_ips: wanted.allowed_ips.clone(),
        ..PeerUpdate::new(wanted.public_key)
    }
}

fn change_peer(current: &PeerConfig, wanted: &PeerConfig, recently_handshook: bool) -> PeerUpdate {
    let mut change = PeerUpdate::new(wanted.public_key);
    if wanted.preshared_key.is_some() && current.preshared_key != wanted.preshared_key {
        change.preshared_key = wanted.preshared_key.clone();
    }
    if wanted.endpoint.is_some() && current.endpoint != wanted.endpoint && !recently_handshook {
        change.endpoint = wanted.endpoint;
    }
    if current.persistent_keepalive != wanted.persistent_keepalive {
        change.persistent_keepalive = Some(wanted.persistent_keepalive.unwrap_or(0));
    }
    let mut current_ips = current.allowed_ips.clone();
    current_ips.iter_mut().for_each(|net| *net = net.trunc());
    current_ips.sort();
    current_ips.dedup();
    if current_ips != wanted.allowed_ips {
        change.replace_allowed_ips = true;
        change.allowed_ips = wanted.allowed_ips.clone();
    }
    change
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PeerState;
    use ipnet::IpNet;
    use proptest::prelude::*;
    use std::net::SocketAddr;
    use wgmesh_keys::{PresharedKey, PrivateKey, PublicKey};

    fn key(n: u8) -> PublicKey {
        PublicKey::from_bytes([n; 32])
    }

    fn net(text: &str) -> IpNet {
        text.parse().unwrap()
    }

    fn desired(peers: Vec<PeerConfig>) -> DesiredDevice {
        DesiredDevice {
            private_key: PrivateKey::from_bytes_clamped([1; 32]),
            listen_port: 51820,
            peers,
        }
    }

    fn peer(n: u8, endpoint: &str, ips: &[&str]) -> PeerConfig {
        PeerConfig {
            preshared_key: Some(PresharedKey::from_bytes([9; 32])),
            endpoint: Some(endpoint.parse().unwrap()),
            allowed_ips: ips.iter().map(|s| net(s)).collect(),
            ..PeerConfig::new(key(n))
        }
    }

    #[test]
    fn recently_handshook_peer_keeps_its_roamed_endpoint() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let want = desired(vec![peer(2, "192.0.2.1:51820", &["10.0.0.2/32"])]);
        let mut observed = DeviceState::default();
        observed.apply(&diff_device(&observed, &want, now));
        // WireGuard roamed the peer to a new address after an authenticated packet.
        let roamed: SocketAddr = "198.51.100.7:40000".parse().unwrap();
        observed.peers[0].config.endpoint = Some(roamed);
        observed.peers[0].last_handshake = Some(now - Duration::from_secs(30));
        assert!(diff_device(&observed, &want, now).is_empty());
        // Once the session is stale, discovery's endpoint is tried again.
        observed.peers[0].last_handshake = Some(now - ROAMING_GRACE - Duration::from_secs(1));
        let update = diff_device(&observed, &want, now);
        assert_eq!(update.peers.len(), 1);
        assert_eq!(update.peers[0].endpoint, want.peers[0].endpoint);
        assert!(
            !update.peers[0].replace_allowed_ips,
            "allowed IPs did not change"
        );
    }

    #[test]
    fn only_what_differs_is_touched() {
        let now = SystemTime::UNIX_EPOCH;
        let mut want = desired(vec![
            peer(2, "192.0.2.1:1", &["10.0.0.2/32"]),
            peer(3, "192.0.2.2:1", &["10.0.0.3/32"]),
        ]);
        let mut observed = DeviceState::default();
        observed.apply(&diff_device(&observed, &want, now));
        want.peers[1].allowed_ips.push(net("192.168.7.0/24"));
        want.peers.remove(0);
        let update = diff_device(&observed, &want, now);
        assert_eq!(update.private_key, None);
        assert_eq!(update.listen_port, None);
        assert_eq!(update.peers.len(), 2);
        assert!(update.peers[0].remove && update.peers[0].public_key == key(2));
        let changed = &update.peers[1];
        assert!(
            changed.replace_allowed_ips
                && changed.endpoint.is_none()
                && changed.preshared_key.is_none()
        );
    }

    #[test]
    fn host_bits_and_order_do_not_count_as_differences() {
        let mut observed = DeviceState {
            private_key: Some(PrivateKey::from_bytes_clamped([1; 32])),
            listen_port: 51820,
            ..DeviceState::default()
        };
        let mut current = peer(2, "192.0.2.1:1", &["10.0.0.2/32", "192.168.1.0/24"]);
        current.allowed_ips.reverse();
        observed.peers.push(PeerState::new(current));
        let want = desired(vec![peer(
            2,
            "192.0.2.1:1",
            &["192.168.1.9/24", "10.0.0.2/32"],
        )]);
        assert!(diff_device(&observed, &want, SystemTime::UNIX_EPOCH).is_empty());
    }

    fn arb_net() -> impl Strategy<Value = IpNet> {
        prop_oneof![
            (any::<[u8; 4]>(), 8u8..=32).prop_map(|(o, l)| IpNet::new(o.into(), l).unwrap()),
            (any::<[u8; 16]>(), 48u8..=128).prop_map(|(o, l)| IpNet::new(o.into(), l).unwrap()),
        ]
    }

    fn arb_peer() -> impl Strategy<Value = PeerConfig> {
        (
            0u8..12,
            proptest::option::of(any::<[u8; 32]>()),
            proptest::option::of((any::<[u8; 4]>(), 1u16..)),
            proptest::collection::vec(arb_net(), 0..4),
            proptest::option::of(1u16..120),
        )
            .prop_map(|(k, psk, endpoint, allowed_ips, keepalive)| PeerConfig {
                public_key: key(k),
                preshared_key: psk.map(PresharedKey::from_bytes),
                endpoint: endpoint.map(|(ip, port)| SocketAddr::from((ip, port))),
                allowed_ips,
                persistent_keepalive: keepalive,
            })
    }

    fn arb_device() -> impl Strategy<Value = (DesiredDevice, Vec<Option<u64>>)> {
        (
            any::<[u8; 32]>(),
            any::<u16>(),
            proptest::collection::vec(arb_peer(), 0..8),
            proptest::collection::vec(proptest::option::of(0u64..600), 12),
        )
            .prop_map(|(k, port, peers, handshakes)| {
                let mut peers: Vec<PeerConfig> = peers;
                peers.sort_by_key(|p| p.public_key);
                peers.dedup_by_key(|p| p.public_key);
                (
                    DesiredDevice {
                        private_key: PrivateKey::from_bytes_clamped(k),
                        listen_port: port,
                        peers,
                    },
                    handshakes,
                )
            })
    }

    /// Observed state for `device`, with handshake ages (seconds before `now`) per key index.
    fn observe(device: &DesiredDevice, ages: &[Option<u64>], now: SystemTime) -> DeviceState {
        let mut state = DeviceState {
            private_key: Some(device.private_key.clone()),
            listen_port: device.listen_port,
            peers: device.peers.iter().cloned().map(PeerState::new).collect(),
        };
        for peer in &mut state.peers {
            let age = ages[usize::from(peer.config.public_key.as_bytes()[0])];
            peer.last_handshake = age.map(|s| now - Duration::from_secs(s));
        }
        state.normalise();
        state
    }

    /// What the device holds when `desired` is fully applied, except that recently handshook
    /// peers keep their observed endpoint, and endpoints/PSKs are never unset (WireGuard has no
    /// "unset" for them).
    fn expected(before: &DeviceState, desired: &DesiredDevice, now: SystemTime) -> Vec<PeerConfig> {
        let mut peers: Vec<PeerConfig> = desired
            .peers
            .iter()
            .map(|want| {
                let mut want = want.clone();
                want.normalise();
                if let Some(current) = before.peer(&want.public_key) {
                    let fresh = current.last_handshake.is_some_and(|at| {
                        now.duration_since(at).unwrap_or_default() < ROAMING_GRACE
                    });
                    if fresh || want.endpoint.is_none() {
                        want.endpoint = current.config.endpoint;
                    }
                    if want.preshared_key.is_none() {
                        want.preshared_key = current.config.preshared_key.clone();
                    }
                }
                want
            })
            .collect();
        peers.sort_by_key(|p| p.public_key);
        peers
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn applying_the_diff_reaches_the_target_and_then_nothing_is_left(
            (a, ages) in arb_device(), (b, _) in arb_device()
        ) {
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000_000);
            let mut state = observe(&a, &ages, now);
            let before = state.clone();
            let update = diff_device(&state, &b, now);
            state.apply(&update);
            prop_assert_eq!(state.private_key.as_ref(), Some(&b.private_key));
            prop_assert_eq!(state.listen_port, b.listen_port);
            let got: Vec<PeerConfig> = state.peers.iter().map(|p| p.config.clone()).collect();
            prop_assert_eq!(got, expected(&before, &b, now));
            prop_assert!(diff_device(&state, &b, now).is_empty(), "second diff must be empty");
        }

        #[test]
        fn diff_of_a_state_with_itself_is_empty((a, ages) in arb_device()) {
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000_000);
            prop_assert!(diff_device(&observe(&a, &ages, now), &a, now).is_empty());
        }
    }
}
