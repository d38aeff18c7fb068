//! Which advertised routes this host installs (DESIGN.md §6).

use crate::members::MemberTable;
use ipnet::IpNet;
use std::collections::BTreeMap;
use wgmesh_keys::PublicKey;

/// Local facts the route filter needs.
#[derive(Debug, Clone, Default)]
pub struct LocalView {
    pub accept_routes: bool,
    /// The mesh IPv4 /16 and IPv6 /64.
    pub mesh_prefixes: Vec<IpNet>,
    /// Networks directly connected to this host (its interface addresses' prefixes), excluding
    /// the mesh interface itself.
    pub connected: Vec<IpNet>,
    /// Routes this host advertises itself.
    pub own_routes: Vec<IpNet>,
}

/// Why a route was not installed; logged once when the decision changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    AcceptRoutesOff,
    DefaultRoute,
    OverlapsMesh,
    OverlapsConnected,
    OverlapsOwn,
    /// Another member with a lower public key advertises the same prefix. WireGuard allowed IPs
    /// are exclusive per peer, so exactly one must win, and every host must pick the same one.
    ConflictLost {
        winner: PublicKey,
    },
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AcceptRoutesOff => f.write_str("--accept-routes is off"),
            Self::DefaultRoute => f.write_str("default routes are never accepted"),
            Self::OverlapsMesh => f.write_str("overlaps the mesh prefixes"),
            Self::OverlapsConnected => f.write_str("overlaps a directly connected network"),
            Self::OverlapsOwn => f.write_str("overlaps a route this host advertises"),
            Self::ConflictLost { winner } => {
                write!(f, "also advertised by {} (lower key wins)", winner.short())
            }
        }
    }
}

/// The outcome of filtering: accepted routes per member, and the rejections.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AcceptedRoutes {
    pub accepted: BTreeMap<PublicKey, Vec<IpNet>>,
    pub rejected: Vec<(PublicKey, IpNet, RejectReason)>,
}

impl AcceptedRoutes {
    pub fn routes_of(&self, key: &PublicKey) -> &[IpNet] {
        self.accepted.get(key).map_or(&[], Vec::as_slice)
    }

    /// Every accepted route: the kernel routes wgmesh installs through the mesh interface.
    pub fn all(&self) -> Vec<IpNet> {
        let mut all: Vec<IpNet> = self.accepted.values().flatten().copied().collect();
        all.sort();
        all
    }
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Filters every member's advertised routes and resolves conflicts.
pub fn accept_routes(view: &LocalView, members: &MemberTable) -> AcceptedRoutes {
    let mut result = AcceptedRoutes::default();
    // Prefix -> lowest key advertising it. Members iterate in key order, so the first claimant wins.
    let mut owners: BTreeMap<IpNet, PublicKey> = BTreeMap::new();
    for member in members.iter() {
        for route in &member.routes {
            let route = route.trunc();
            let reason = if !view.accept_routes {
                Some(RejectReason::AcceptRoutesOff)
            } else if route.prefix_len() == 0 {
                Some(RejectReason::DefaultRoute)
            } else if view.mesh_prefixes.iter().any(|p| overlaps(p, &route)) {
                Some(RejectReason::OverlapsMesh)
            } else if view.connected.iter().any(|p| overlaps(p, &route)) {
                Some(RejectReason::OverlapsConnected)
            } else if view.own_routes.iter().any(|p| overlaps(p, &route)) {
                Some(RejectReason::OverlapsOwn)
            } else {
                owners
                    .get(&route)
                    .map(|winner| RejectReason::ConflictLost { winner: *winner })
            };
            match reason {
                Some(reason) => result.rejected.push((member.public_key, route, reason)),
                None => {
                    owners.insert(route, member.public_key);
                    result
                        .accepted
                        .entry(member.public_key)
                        .or_default()
                        .push(route);
                }
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::members::tests::member;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn view() -> LocalView {
        LocalView {
            accept_routes: true,
            mesh_prefixes: vec![net("10.1.0.0/16"), net("fd00::/64")],
            connected: vec![net("192.168.10.0/24")],
            own_routes: vec![net("172.16.0.0/16")],
        }
    }

    #[test]
    fn filter_rejects_what_design_forbids() {
        let mut table = MemberTable::default();
        let mut m = member(1);
        m.routes = [
            "0.0.0.0/0",
            "::/0",
            "10.1.5.0/24",
            "10.0.0.0/8",
            "fd00::/48",
            "192.168.10.128/25",
            "172.16.4.0/24",
            "192.168.77.0/24",
            "fd77::/64",
        ]
        .iter()
        .map(|s| net(s))
        .collect();
        table.upsert(m.clone());
        let result = accept_routes(&view(), &table);
        assert_eq!(
            result.routes_of(&m.public_key),
            &[net("192.168.77.0/24"), net("fd77::/64")]
        );
        let reasons: Vec<RejectReason> = result.rejected.iter().map(|r| r.2).collect();
        use RejectReason::*;
        assert_eq!(
            reasons,
            vec![
                DefaultRoute,
                DefaultRoute,
                OverlapsMesh,
                OverlapsMesh,
                OverlapsMesh,
                OverlapsConnected,
                OverlapsOwn
            ]
        );
    }

    #[test]
    fn conflicts_go_to_the_lowest_key_whatever_the_insertion_order() {
        let mut a = member(9);
        let mut b = member(3);
        a.routes = vec![net("192.168.77.0/24")];
        b.routes = vec![net("192.168.77.0/24"), net("192.168.78.0/24")];
        for order in [[a.clone(), b.clone()], [b.clone(), a.clone()]] {
            let mut table = MemberTable::default();
            for m in order {
                table.upsert(m);
            }
            let result = accept_routes(&view(), &table);
            assert_eq!(result.routes_of(&b.public_key).len(), 2);
            assert!(result.routes_of(&a.public_key).is_empty());
            assert_eq!(
                result.rejected,
                vec![(
                    a.public_key,
                    net("192.168.77.0/24"),
                    RejectReason::ConflictLost {
                        winner: b.public_key
                    }
                )]
            );
        }
    }

    #[test]
    fn accept_routes_off_installs_nothing() {
        let mut table = MemberTable::default();
        let mut m = member(1);
        m.routes = vec![net("192.168.77.0/24")];
        table.upsert(m);
        let result = accept_routes(
            &LocalView {
                accept_routes: false,
                ..view()
            },
            &table,
        );
        assert!(result.all().is_empty());
    }
}
