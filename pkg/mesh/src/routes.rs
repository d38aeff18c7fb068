//! Which advertised routes this host installs (DESIGN.md §6).
//!
//! A route from a member is refused, in this order, when:
//! 1. the policy is `none` ([`crate::policy`]);
//! 2. it is a default route or a piece of a split one: shorter than /8 (IPv4) or /16 (IPv6),
//!    whatever the policy or its pins;
//! 3. it overlaps the mesh prefixes, a network this host is directly connected to, or a route
//!    this host advertises itself;
//! 4. it covers an address this host must reach outside the mesh: the endpoint it uses for a
//!    peer, its default gateway, or a configured STUN, DHT or `--peer` server;
//! 5. it overlaps a prefix the policy pins to another member, lies outside the policy, or is
//!    shorter than the policy's minimum (unless pinned to this member);
//! 6. another member holds the same prefix here already (the incumbent keeps it: there is no
//!    tiebreak by key, which a ground key would win), or holds a prefix covering it (no
//!    more-specific can take part of an incumbent's range), unless the policy pins it to this
//!    member;
//! 7. [`MAX_ACCEPTED_ROUTES`] are accepted already.
//!
//! "Incumbent" is per host: the member whose claim this host verified first
//! ([`MemberTable::route_claim`]), in the order routes are examined.

use crate::members::MemberTable;
use crate::policy::{RoutePolicy, Verdict};
use ipnet::IpNet;
use std::collections::BTreeMap;
use std::net::IpAddr;
use wgmesh_keys::PublicKey;

/// Shorter than this is a default route or a split of one (`0.0.0.0/1` + `128.0.0.0/1`, or
/// pieces that avoid this host's own networks): never accepted, whatever the policy.
pub const SPLIT_DEFAULT_V4: u8 = 8;
/// The IPv6 counterpart of [`SPLIT_DEFAULT_V4`].
pub const SPLIT_DEFAULT_V6: u8 = 16;

/// Routes accepted from all members together, next to the 32 a member may advertise
/// (`wgmesh_reload::MAX_ADVERTISED_ROUTES`): each is a kernel route and an allowed IP.
pub const MAX_ACCEPTED_ROUTES: usize = 1_024;

/// Local facts the route filter needs.
#[derive(Debug, Clone, Default)]
pub struct LocalView {
    pub policy: RoutePolicy,
    /// The mesh IPv4 /16 and IPv6 /64.
    pub mesh_prefixes: Vec<IpNet>,
    /// Networks directly connected to this host (its interface addresses' prefixes), excluding
    /// the mesh interface itself.
    pub connected: Vec<IpNet>,
    /// Routes this host advertises itself.
    pub own_routes: Vec<IpNet>,
    /// Addresses this host reaches outside the mesh, which no route may cover.
    pub protected: Vec<Protected>,
}

/// An address this host must keep reaching outside the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protected {
    pub addr: IpAddr,
    pub what: ProtectedKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtectedKind {
    /// The endpoint this host uses for that peer.
    PeerEndpoint(PublicKey),
    Gateway,
    Stun,
    Dht,
    /// A `--peer` seed.
    Seed,
}

impl std::fmt::Display for ProtectedKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::PeerEndpoint(key) => write!(f, "the endpoint of peer {}", key.short()),
            Self::Gateway => f.write_str("a default gateway"),
            Self::Stun => f.write_str("a STUN server"),
            Self::Dht => f.write_str("a DHT bootstrap node"),
            Self::Seed => f.write_str("a --peer seed"),
        }
    }
}

/// Why a route was not installed; logged once when the decision changes, and in `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    AcceptRoutesOff,
    DefaultRoute,
    OverlapsMesh,
    OverlapsConnected,
    OverlapsOwn,
    Covers {
        addr: IpAddr,
        what: ProtectedKind,
    },
    /// The policy pins this prefix (or one overlapping it) to another member.
    PinnedToOther {
        pinned: IpNet,
    },
    OutsidePolicy,
    TooShort {
        min: u8,
    },
    /// Another member advertised the same prefix first (here). WireGuard allowed IPs are
    /// exclusive per peer, so exactly one can have it.
    HeldBy {
        holder: PublicKey,
    },
    /// Inside a prefix another member advertised first (here).
    MoreSpecific {
        holder: PublicKey,
        of: IpNet,
    },
    TooMany,
}

impl RejectReason {
    /// A stable code for `status --json`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::AcceptRoutesOff => "accept_routes_none",
            Self::DefaultRoute => "default_route",
            Self::OverlapsMesh => "overlaps_mesh",
            Self::OverlapsConnected => "overlaps_connected",
            Self::OverlapsOwn => "overlaps_own",
            Self::Covers { .. } => "covers_protected_address",
            Self::PinnedToOther { .. } => "pinned_to_other_member",
            Self::OutsidePolicy => "outside_policy",
            Self::TooShort { .. } => "shorter_than_minimum",
            Self::HeldBy { .. } => "held_by_incumbent",
            Self::MoreSpecific { .. } => "more_specific_of_incumbent",
            Self::TooMany => "route_cap",
        }
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AcceptRoutesOff => f.write_str("accept-routes is none"),
            Self::DefaultRoute => write!(
                f,
                "default routes and their splits (shorter than /{SPLIT_DEFAULT_V4} or /{SPLIT_DEFAULT_V6}) are never accepted"
            ),
            Self::OverlapsMesh => f.write_str("overlaps the mesh prefixes"),
            Self::OverlapsConnected => f.write_str("overlaps a directly connected network"),
            Self::OverlapsOwn => f.write_str("overlaps a route this host advertises"),
            Self::Covers { addr, what } => write!(f, "covers {addr}, {what}"),
            Self::PinnedToOther { pinned } => {
                write!(f, "accept-routes pins {pinned} to another member")
            }
            Self::OutsidePolicy => f.write_str("outside the accept-routes policy"),
            Self::TooShort { min } => write!(f, "shorter than the minimum prefix /{min}"),
            Self::HeldBy { holder } => {
                write!(
                    f,
                    "already advertised by {} (the incumbent keeps it)",
                    holder.short()
                )
            }
            Self::MoreSpecific { holder, of } => write!(
                f,
                "inside {of}, already advertised by {} (the incumbent keeps it)",
                holder.short()
            ),
            Self::TooMany => write!(f, "{MAX_ACCEPTED_ROUTES} routes are accepted already"),
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

/// Filters every member's advertised routes and resolves conflicts (see the module
/// documentation for the rules and their order).
pub fn accept_routes(view: &LocalView, members: &MemberTable) -> AcceptedRoutes {
    let mut result = AcceptedRoutes::default();
    // Every (member, route), earliest claim first, so incumbents are examined first.
    let mut claims: Vec<(u64, PublicKey, IpNet)> = members
        .iter()
        .flat_map(|member| {
            member.routes.iter().map(|route| {
                let route = route.trunc();
                let claim = members.route_claim(&member.public_key, &route);
                (claim.unwrap_or(u64::MAX), member.public_key, route)
            })
        })
        .collect();
    claims.sort();
    claims.dedup_by(|a, b| (a.1, a.2) == (b.1, b.2));
    // Accepted so far: prefix -> holder.
    let mut held: BTreeMap<IpNet, PublicKey> = BTreeMap::new();
    for (_, key, route) in claims {
        let reason = reject_reason(view, &held, &key, &route);
        match reason {
            Some(reason) => result.rejected.push((key, route, reason)),
            None => {
                held.insert(route, key);
                result.accepted.entry(key).or_default().push(route);
            }
        }
    }
    result
}

fn reject_reason(
    view: &LocalView,
    held: &BTreeMap<IpNet, PublicKey>,
    key: &PublicKey,
    route: &IpNet,
) -> Option<RejectReason> {
    let verdict = view.policy.judge(key, route);
    if verdict == Verdict::AcceptNone {
        return Some(RejectReason::AcceptRoutesOff);
    }
    let floor = match route {
        IpNet::V4(_) => SPLIT_DEFAULT_V4,
        IpNet::V6(_) => SPLIT_DEFAULT_V6,
    };
    if route.prefix_len() < floor {
        return Some(RejectReason::DefaultRoute);
    }
    if view.mesh_prefixes.iter().any(|p| overlaps(p, route)) {
        return Some(RejectReason::OverlapsMesh);
    }
    if view.connected.iter().any(|p| overlaps(p, route)) {
        return Some(RejectReason::OverlapsConnected);
    }
    if view.own_routes.iter().any(|p| overlaps(p, route)) {
        return Some(RejectReason::OverlapsOwn);
    }
    if let Some(protected) = view.protected.iter().find(|p| route.contains(&p.addr)) {
        return Some(RejectReason::Covers {
            addr: protected.addr,
            what: protected.what,
        });
    }
    let pinned = match verdict {
        Verdict::PinnedToOther(pinned) => return Some(RejectReason::PinnedToOther { pinned }),
        Verdict::OutsidePolicy => return Some(RejectReason::OutsidePolicy),
        Verdict::TooShort(min) => return Some(RejectReason::TooShort { min }),
        Verdict::AcceptNone => return Some(RejectReason::AcceptRoutesOff),
        Verdict::Inside { pinned } => pinned,
    };
    if let Some(holder) = held.get(route).filter(|holder| *holder != key) {
        return Some(RejectReason::HeldBy { holder: *holder });
    }
    if !pinned
        && let Some((of, holder)) = held
            .iter()
            .find(|(prefix, holder)| *holder != key && prefix.contains(route) && *prefix != route)
    {
        return Some(RejectReason::MoreSpecific {
            holder: *holder,
            of: *of,
        });
    }
    if held.len() >= MAX_ACCEPTED_ROUTES {
        return Some(RejectReason::TooMany);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::members::tests::member;
    use crate::policy::Accept;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn view() -> LocalView {
        LocalView {
            policy: RoutePolicy {
                accept: Accept::All,
                ..RoutePolicy::default()
            },
            mesh_prefixes: vec![net("10.1.0.0/16"), net("fd00::/64")],
            connected: vec![net("192.168.10.0/24")],
            own_routes: vec![net("172.16.0.0/16")],
            protected: Vec::new(),
        }
    }

    fn advertising(n: u8, routes: &[&str]) -> crate::Member {
        let mut m = member(n);
        m.routes = routes.iter().map(|s| net(s)).collect();
        m
    }

    #[test]
    fn filter_rejects_what_design_forbids() {
        let mut table = MemberTable::default();
        let m = advertising(
            1,
            &[
                "0.0.0.0/0",
                "::/0",
                "10.1.5.0/24",
                "10.0.0.0/8",
                "fd00::/48",
                "192.168.10.128/25",
                "172.16.4.0/24",
                "0.0.0.0/1",
                "128.0.0.0/1",
                "::/1",
                "64.0.0.0/2",
                "192.168.77.0/24",
                "fd77::/64",
            ],
        );
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
                OverlapsOwn,
                // The split default, and any piece of a split that avoids this host's networks.
                DefaultRoute,
                DefaultRoute,
                DefaultRoute,
                DefaultRoute,
            ]
        );
    }

    #[test]
    fn the_default_policy_accepts_only_private_ranges() {
        let mut table = MemberTable::default();
        let m = advertising(
            1,
            &[
                "192.168.77.0/24",
                "8.8.8.0/24",
                "fd77::/64",
                "2001:db8::/48",
            ],
        );
        table.upsert(m.clone());
        let result = accept_routes(
            &LocalView {
                policy: RoutePolicy::default(),
                ..view()
            },
            &table,
        );
        assert_eq!(
            result.routes_of(&m.public_key),
            &[net("192.168.77.0/24"), net("fd77::/64")]
        );
        assert!(
            result
                .rejected
                .iter()
                .all(|r| r.2 == RejectReason::OutsidePolicy)
        );
    }

    #[test]
    fn the_incumbent_keeps_a_prefix_whatever_the_keys() {
        // Key 9 advertises first; key 3 (lower: key order would have given it the prefix)
        // advertises the same prefix and a more-specific of it later.
        let incumbent = advertising(9, &["192.168.77.0/24"]);
        let latecomer = advertising(
            3,
            &["192.168.77.0/24", "192.168.77.128/25", "192.168.78.0/24"],
        );
        let mut table = MemberTable::default();
        table.upsert(incumbent.clone());
        table.upsert(latecomer.clone());
        let result = accept_routes(&view(), &table);
        assert_eq!(
            result.routes_of(&incumbent.public_key),
            &[net("192.168.77.0/24")]
        );
        assert_eq!(
            result.routes_of(&latecomer.public_key),
            &[net("192.168.78.0/24")]
        );
        assert_eq!(
            result.rejected,
            vec![
                (
                    latecomer.public_key,
                    net("192.168.77.0/24"),
                    RejectReason::HeldBy {
                        holder: incumbent.public_key
                    }
                ),
                (
                    latecomer.public_key,
                    net("192.168.77.128/25"),
                    RejectReason::MoreSpecific {
                        holder: incumbent.public_key,
                        of: net("192.168.77.0/24")
                    }
                ),
            ]
        );
        // Refreshing the latecomer's record changes nothing; once the incumbent withdraws, the
        // prefix goes to the latecomer.
        table.upsert(latecomer.clone());
        assert_eq!(accept_routes(&view(), &table), result);
        table.upsert(advertising(9, &[]));
        let after = accept_routes(&view(), &table);
        assert_eq!(after.routes_of(&latecomer.public_key).len(), 3);
        // A member's own more-specifics are no conflict.
        assert!(after.rejected.is_empty());
    }

    #[test]
    fn a_pin_beats_incumbency_and_the_minimum_length() {
        let owner = advertising(9, &["10.20.0.0/16"]);
        let squatter = advertising(3, &["10.20.0.0/16", "10.20.5.0/24"]);
        let mut table = MemberTable::default();
        table.upsert(squatter.clone());
        table.upsert(owner.clone());
        let pinned = LocalView {
            policy: RoutePolicy {
                accept: format!(
                    "private,10.20.0.0/16@{}",
                    &owner.public_key.to_base64()[..8]
                )
                .parse()
                .unwrap(),
                ..RoutePolicy::default()
            },
            ..view()
        };
        let result = accept_routes(&pinned, &table);
        assert_eq!(result.routes_of(&owner.public_key), &[net("10.20.0.0/16")]);
        assert!(result.routes_of(&squatter.public_key).is_empty());
        assert!(result.rejected.iter().all(|r| r.2
            == RejectReason::PinnedToOther {
                pinned: net("10.20.0.0/16")
            }));
    }

    #[test]
    fn no_route_covers_a_peer_endpoint_the_gateway_or_a_configured_server() {
        let mut table = MemberTable::default();
        let m = advertising(
            1,
            &[
                "192.0.2.0/24",
                "198.51.100.0/24",
                "203.0.113.0/24",
                "192.168.9.0/24",
            ],
        );
        table.upsert(m.clone());
        let guarded = LocalView {
            protected: vec![
                Protected {
                    addr: "192.0.2.7".parse().unwrap(),
                    what: ProtectedKind::PeerEndpoint(member(2).public_key),
                },
                Protected {
                    addr: "198.51.100.1".parse().unwrap(),
                    what: ProtectedKind::Gateway,
                },
                Protected {
                    addr: "203.0.113.53".parse().unwrap(),
                    what: ProtectedKind::Stun,
                },
            ],
            ..view()
        };
        let result = accept_routes(&guarded, &table);
        assert_eq!(result.routes_of(&m.public_key), &[net("192.168.9.0/24")]);
        let reasons: Vec<String> = result.rejected.iter().map(|r| r.2.to_string()).collect();
        assert_eq!(
            reasons,
            vec![
                format!(
                    "covers 192.0.2.7, the endpoint of peer {}",
                    member(2).public_key.short()
                ),
                "covers 198.51.100.1, a default gateway".to_owned(),
                "covers 203.0.113.53, a STUN server".to_owned(),
            ]
        );
    }

    #[test]
    fn routes_in_all_stop_at_the_cap() {
        let mut table = MemberTable::default();
        for n in 1..=40u8 {
            let routes: Vec<String> = (0..32).map(|i| format!("10.{n}.{i}.0/24")).collect();
            let routes: Vec<&str> = routes.iter().map(String::as_str).collect();
            let mut m = advertising(n, &routes);
            m.mesh_ipv4 = std::net::Ipv4Addr::new(10, 250, 0, n);
            table.upsert(m);
        }
        let view = LocalView {
            mesh_prefixes: Vec::new(),
            ..view()
        };
        let result = accept_routes(&view, &table);
        assert_eq!(result.all().len(), MAX_ACCEPTED_ROUTES);
        assert_eq!(result.rejected.len(), 40 * 32 - MAX_ACCEPTED_ROUTES);
        assert!(result.rejected.iter().all(|r| r.2 == RejectReason::TooMany));
    }

    #[test]
    fn accept_routes_none_installs_nothing() {
        let mut table = MemberTable::default();
        table.upsert(advertising(1, &["192.168.77.0/24"]));
        let result = accept_routes(
            &LocalView {
                policy: RoutePolicy {
                    accept: Accept::None,
                    ..RoutePolicy::default()
                },
                ..view()
            },
            &table,
        );
        assert!(result.all().is_empty());
        assert_eq!(result.rejected[0].2.code(), "accept_routes_none");
    }
}
