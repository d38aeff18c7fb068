//! The mesh as one member sees it: the table of verified members, which of their advertised
//! routes this host accepts, and the WireGuard device and routes that follow from both.
//!
//! Pure: the daemon feeds in exchange results, time and local facts, and applies what comes out.

mod members;
pub mod plan;
pub mod policy;
mod routes;

pub use members::{Member, MemberChange, MemberTable, Source};
pub use plan::{EndpointWrite, Now, Observed, PeerDiff, PendingNudge, Plan, PlanState, plan};
pub use policy::{Accept, RelaySetting, RoutePolicy};
pub use routes::{
    AcceptedRoutes, LocalView, MAX_ACCEPTED_ROUTES, Protected, ProtectedKind, RejectReason,
    accept_routes,
};

use wgmesh_device::{DesiredDevice, PeerConfig};
use wgmesh_keys::{PresharedKey, PrivateKey};

/// Everything the desired device needs besides the members.
#[derive(Debug, Clone)]
pub struct DeviceSettings {
    pub private_key: PrivateKey,
    pub listen_port: u16,
    pub preshared_key: PresharedKey,
    /// Keepalive (seconds) for peers that need one: those reached across a router, where a NAT
    /// or stateful firewall forgets an idle mapping. Peers on a directly connected network get
    /// none, so an idle LAN mesh sends nothing.
    pub persistent_keepalive: u16,
}

/// The keepalive a member's peer gets: none on a directly connected network, else the setting.
pub fn keepalive_for(
    member: &Member,
    connected: &[ipnet::IpNet],
    settings: &DeviceSettings,
) -> Option<u16> {
    let on_link = member
        .endpoint
        .is_some_and(|e| connected.iter().any(|net| net.contains(&e.ip())));
    (!on_link && settings.persistent_keepalive > 0).then_some(settings.persistent_keepalive)
}

/// The device wgmesh wants: one peer per live member, each with the PSK, its mesh addresses and
/// the routes accepted from it as allowed IPs.
pub fn desired_device(
    settings: &DeviceSettings,
    members: &MemberTable,
    accepted: &AcceptedRoutes,
    connected: &[ipnet::IpNet],
) -> DesiredDevice {
    // Allowed IPs are exclusive per peer. Two members that derived the same IPv4 are resolved by
    // the higher key re-addressing itself; until it has, the lower key keeps the /32.
    let mut claimed_v4 = std::collections::HashSet::new();
    let mut addresses = |member: &Member| {
        let mut ips = vec![ipnet::IpNet::from(std::net::IpAddr::V6(member.mesh_ipv6))];
        if claimed_v4.insert(member.mesh_ipv4) {
            ips.push(ipnet::IpNet::from(std::net::IpAddr::V4(member.mesh_ipv4)));
        }
        ips.extend(accepted.routes_of(&member.public_key).iter().copied());
        ips
    };
    let mut peers: Vec<PeerConfig> = Vec::new();
    for member in members.iter() {
        let allowed_ips = addresses(member);
        let (endpoint, persistent_keepalive) = match member.relay_via {
            // Reached through a relay: its own peer, with the relay's port for our pair as the
            // endpoint. The relay forwards the pair's WireGuard datagrams without holding its
            // allowed IPs or its keys (TURN-style). The keepalive keeps the relay's latch and
            // our NAT's mapping towards it open.
            Some(_) => match member.relay_endpoint {
                Some(port) => (
                    Some(port),
                    (settings.persistent_keepalive > 0).then_some(settings.persistent_keepalive),
                ),
                // The relay has not granted a port yet: nothing can reach it.
                None => continue,
            },
            None => (member.endpoint, keepalive_for(member, connected, settings)),
        };
        peers.push(PeerConfig {
            preshared_key: Some(settings.preshared_key.clone()),
            endpoint,
            allowed_ips,
            persistent_keepalive,
            ..PeerConfig::new(member.public_key)
        });
    }
    for peer in &mut peers {
        peer.normalise();
    }
    DesiredDevice {
        private_key: settings.private_key.clone(),
        listen_port: settings.listen_port,
        peers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::members::tests::member;
    use wgmesh_keys::PublicKey;

    fn all_routes() -> RoutePolicy {
        RoutePolicy {
            accept: Accept::All,
            ..RoutePolicy::default()
        }
    }

    fn settings() -> DeviceSettings {
        DeviceSettings {
            private_key: PrivateKey::from_bytes_clamped([1; 32]),
            listen_port: 51820,
            preshared_key: PresharedKey::from_bytes([2; 32]),
            persistent_keepalive: 25,
        }
    }

    #[test]
    fn every_member_becomes_a_peer_with_psk_addresses_and_accepted_routes() {
        let mut table = MemberTable::default();
        let mut a = member(1);
        a.routes = vec![
            "192.168.77.0/24".parse().unwrap(),
            "0.0.0.0/0".parse().unwrap(),
        ];
        table.upsert(a.clone());
        let mut far = member(2);
        far.endpoint = Some("203.0.113.9:51820".parse().unwrap());
        table.upsert(far.clone());
        let view = LocalView {
            policy: all_routes(),
            connected: vec!["192.0.2.0/24".parse().unwrap()],
            ..LocalView::default()
        };
        let accepted = accept_routes(&view, &table);
        let device = desired_device(&settings(), &table, &accepted, &view.connected);
        assert_eq!(device.peers.len(), 2);
        let peer_a = device
            .peers
            .iter()
            .find(|p| p.public_key == a.public_key)
            .unwrap();
        assert_eq!(
            peer_a.preshared_key,
            Some(PresharedKey::from_bytes([2; 32]))
        );
        let ips: Vec<String> = peer_a.allowed_ips.iter().map(ToString::to_string).collect();
        assert_eq!(ips, ["10.1.0.1/32", "192.168.77.0/24", "fd00::1/128"]);
        assert_eq!(peer_a.persistent_keepalive, None, "same LAN: no keepalive");
        let peer_far = device
            .peers
            .iter()
            .find(|p| p.public_key == far.public_key)
            .unwrap();
        assert_eq!(
            peer_far.persistent_keepalive,
            Some(25),
            "across a router: keepalive"
        );
    }

    #[test]
    fn relayed_members_are_their_own_peers_behind_the_relay_port_and_collisions_keep_one_owner() {
        let mut table = MemberTable::default();
        let relay = member(1);
        table.upsert(relay.clone());
        let port: std::net::SocketAddr = "192.0.2.1:40001".parse().unwrap();
        let mut far = member(2);
        far.relay_via = Some(relay.public_key);
        far.relay_endpoint = Some(port);
        far.routes = vec!["192.168.9.0/24".parse().unwrap()];
        table.upsert(far.clone());
        // Relayed, but the relay has granted no port yet: not a peer at all.
        let mut waiting = member(4);
        waiting.relay_via = Some(relay.public_key);
        table.upsert(waiting.clone());
        let mut twin = member(3);
        twin.mesh_ipv4 = relay.mesh_ipv4;
        table.upsert(twin.clone());
        let view = LocalView {
            policy: all_routes(),
            ..LocalView::default()
        };
        let accepted = accept_routes(&view, &table);
        let device = desired_device(&settings(), &table, &accepted, &[]);
        let keys: Vec<PublicKey> = device.peers.iter().map(|p| p.public_key).collect();
        assert_eq!(keys, [relay.public_key, far.public_key, twin.public_key]);
        let via = device
            .peers
            .iter()
            .find(|p| p.public_key == relay.public_key)
            .unwrap();
        // The relay holds its own addresses only: it never sees the pair's plaintext.
        assert_eq!(
            via.allowed_ips,
            [
                "10.1.0.1/32".parse().unwrap(),
                "fd00::1/128".parse().unwrap()
            ]
        );
        let far_peer = device
            .peers
            .iter()
            .find(|p| p.public_key == far.public_key)
            .unwrap();
        assert_eq!(far_peer.endpoint, Some(port));
        assert_eq!(far_peer.persistent_keepalive, Some(25));
        for ip in ["10.1.0.2/32", "192.168.9.0/24"] {
            assert!(
                far_peer.allowed_ips.contains(&ip.parse().unwrap()),
                "{ip} not on the relayed member's own peer"
            );
        }
        let twin_peer = device
            .peers
            .iter()
            .find(|p| p.public_key == twin.public_key)
            .unwrap();
        assert!(
            !twin_peer
                .allowed_ips
                .contains(&"10.1.0.1/32".parse().unwrap()),
            "the lower key keeps the /32"
        );
    }
}
