//! The mesh as one member sees it: the table of verified members, which of their advertised
//! routes this host accepts, and the WireGuard device and routes that follow from both.
//!
//! Pure: the daemon feeds in exchange results, time and local facts, and applies what comes out.

mod members;
mod routes;

pub use members::{Member, MemberChange, MemberTable, Source};
pub use routes::{AcceptedRoutes, LocalView, RejectReason, accept_routes};

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
    let peers = members
        .iter()
        .map(|member| {
            let mut allowed_ips = vec![
                ipnet::IpNet::from(std::net::IpAddr::V4(member.mesh_ipv4)),
                ipnet::IpNet::from(std::net::IpAddr::V6(member.mesh_ipv6)),
            ];
            allowed_ips.extend(accepted.routes_of(&member.public_key).iter().copied());
            let mut peer = PeerConfig {
                preshared_key: Some(settings.preshared_key.clone()),
                endpoint: member.endpoint,
                allowed_ips,
                persistent_keepalive: keepalive_for(member, connected, settings),
                ..PeerConfig::new(member.public_key)
            };
            peer.normalise();
            peer
        })
        .collect();
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
            accept_routes: true,
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
}
