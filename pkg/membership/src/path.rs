//! Tunnel versus underlay: where a verified member's WireGuard endpoint and control address are,
//! given where its exchange came from.

use std::net::SocketAddr;
use wgmesh_keys::PublicKey;
use wgmesh_mesh::Member;

/// Where to reach a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberPath {
    pub endpoint: Option<SocketAddr>,
    pub control_addr: Option<SocketAddr>,
    pub relay_via: Option<PublicKey>,
    /// With `relay_via`: the relay's port that carries the pair (our WireGuard endpoint).
    pub relay_endpoint: Option<SocketAddr>,
}

/// The path to a member whose exchange arrived from `from` (its record names `listen_port`).
///
/// From the underlay, the source address is on a path that works, and WireGuard listens on the
/// same host at its own port; a relayed member found this way is relayed no longer. Through the
/// tunnel (`from` is a mesh address), the exchange says nothing about the underlay: what we knew
/// is kept, or WireGuard would be pointed at itself; a member first heard of this way is only
/// taken in if a relay can carry its traffic (`relay_for_new`, the relay its trial runs through
/// and the relay port granted for the pair; `None`: ignore it).
pub fn member_path(
    known: Option<&Member>,
    relay_for_new: Option<(PublicKey, Option<SocketAddr>)>,
    from: SocketAddr,
    listen_port: u16,
    through_tunnel: bool,
) -> Option<MemberPath> {
    if !through_tunnel {
        return Some(MemberPath {
            endpoint: Some(SocketAddr::new(from.ip(), listen_port)),
            control_addr: Some(from),
            relay_via: None,
            relay_endpoint: None,
        });
    }
    let (relay_via, relay_endpoint) = match known {
        Some(m) => (
            m.relay_via,
            m.relay_endpoint
                .or_else(|| relay_for_new.and_then(|(_, endpoint)| endpoint)),
        ),
        None => (
            relay_for_new.map(|(relay, _)| relay),
            relay_for_new.and_then(|(_, endpoint)| endpoint),
        ),
    };
    if known.is_none() && relay_via.is_none() {
        return None;
    }
    Some(MemberPath {
        endpoint: known.and_then(|m| m.endpoint),
        control_addr: known.and_then(|m| m.control_addr).or(Some(from)),
        relay_via,
        relay_endpoint: relay_via.and(relay_endpoint),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use wgmesh_mesh::Source;

    fn member(n: u8, relay_offered: bool, relay_via: Option<PublicKey>) -> Member {
        Member {
            public_key: PublicKey::from_bytes([n; 32]),
            mesh_ipv4: Ipv4Addr::new(10, 1, 0, n),
            mesh_ipv6: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, u16::from(n)),
            collision_counter: 0,
            endpoint: Some(SocketAddr::from(([192, 0, 2, n], 51820))),
            control_addr: Some(SocketAddr::from(([192, 0, 2, n], 51900))),
            routes: Vec::new(),
            source: Source::Lan,
            relay_offered,
            last_seen_ms: 0,
            moved_at_ms: 0,
            relay_via,
            relay_endpoint: None,
            name: None,
            version: None,
            name_claim: 0,
        }
    }

    #[test]
    fn paths_by_where_the_exchange_came_from() {
        let relay = member(1, true, None);
        let relayed = member(2, false, Some(relay.public_key));
        let port = SocketAddr::from(([192, 0, 2, 1], 40001));
        let with_relay = Some((relay.public_key, Some(port)));
        let without_relay = None;
        let underlay = SocketAddr::from(([198, 51, 100, 7], 40000));
        let tunnel = SocketAddr::from(([10, 1, 0, 2], 51900));
        let direct = MemberPath {
            endpoint: Some(SocketAddr::from(([198, 51, 100, 7], 51820))),
            control_addr: Some(underlay),
            relay_via: None,
            relay_endpoint: None,
        };
        // (known, relay for a new member, from, through the tunnel, expected)
        let table = [
            (None, without_relay, underlay, false, Some(direct)),
            // A relayed member that answers directly is relayed no longer.
            (Some(&relayed), with_relay, underlay, false, Some(direct)),
            // Through the tunnel: the underlay we knew stays.
            (
                Some(&relayed),
                with_relay,
                tunnel,
                true,
                Some(MemberPath {
                    endpoint: relayed.endpoint,
                    control_addr: relayed.control_addr,
                    relay_via: Some(relay.public_key),
                    relay_endpoint: Some(port),
                }),
            ),
            // Unknown and through the tunnel: only with a relay to carry it.
            (None, without_relay, tunnel, true, None),
            (
                None,
                with_relay,
                tunnel,
                true,
                Some(MemberPath {
                    endpoint: None,
                    control_addr: Some(tunnel),
                    relay_via: Some(relay.public_key),
                    relay_endpoint: Some(port),
                }),
            ),
        ];
        for (i, (known, relay_for_new, from, through_tunnel, want)) in table.into_iter().enumerate()
        {
            assert_eq!(
                member_path(known, relay_for_new, from, 51820, through_tunnel),
                want,
                "row {i}"
            );
        }
    }
}
