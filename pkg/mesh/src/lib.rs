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
    /// Keepalive for peers that need one (behind NAT); `None` on a plain LAN.
    pub persistent_keepalive: Option<u16>,
}

/// The device wgmesh wants: one peer per live member, each with the PSK, its mesh addresses and
/// the routes accepted from it as allowed IPs.
pub fn desired_device(
    settings: &DeviceSettings,
    members: &MemberTable,
    accepted: &AcceptedRoutes,
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
                persistent_keepalive: settings.persistent_keepalive,
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
