//! Verified members and how long they stay.

use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use wgmesh_keys::PublicKey;
use wgmesh_names::{Claim, MemberName, Naming};

/// How a member was first found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Lan,
    Static,
    Dht,
    Cache,
    Gossip,
    /// It contacted us first.
    Inbound,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lan => "lan",
            Self::Static => "static",
            Self::Dht => "dht",
            Self::Cache => "cache",
            Self::Gossip => "gossip",
            Self::Inbound => "inbound",
        }
    }
}

/// A member that proved its key and addresses in an exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub public_key: PublicKey,
    pub mesh_ipv4: Ipv4Addr,
    pub mesh_ipv6: Ipv6Addr,
    pub collision_counter: u8,
    /// Where to send WireGuard packets (its listen port on the address it reached us from).
    pub endpoint: Option<SocketAddr>,
    /// Where its exchange protocol answers (for refreshes and goodbyes).
    pub control_addr: Option<SocketAddr>,
    /// Routes it advertises, before this host's filter.
    pub routes: Vec<IpNet>,
    pub source: Source,
    pub relay_offered: bool,
    /// Milliseconds since the Unix epoch of the last verified exchange.
    pub last_seen_ms: u64,
    /// When a verified exchange last came from a new address (the member moved networks), in
    /// Unix milliseconds; 0 if never. A WireGuard handshake older than this does not vouch for
    /// the old endpoint any more.
    pub moved_at_ms: u64,
    /// Reached through this member (a relay) because no direct path works.
    pub relay_via: Option<PublicKey>,
    /// With `relay_via`: the relay's port that carries our pair (TURN-style, the relay forwards
    /// the pair's WireGuard datagrams and never decrypts them), our WireGuard endpoint for this
    /// member. `None` until the relay has granted it.
    pub relay_endpoint: Option<SocketAddr>,
    /// The name it announced (sanitised), if its release announces one.
    pub name: Option<MemberName>,
    /// The software version it announced (sanitised), if its release announces one.
    pub version: Option<String>,
    /// When this host first verified it under its current name, as a table-wide sequence
    /// number: the earliest claim keeps a name (see `wgmesh_names::resolve`). Set by
    /// [`MemberTable::upsert`]; whatever the caller puts here is ignored.
    pub name_claim: u64,
}

/// What an upsert changed, so the daemon reconciles only on news.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberChange {
    New,
    /// Something the device or routes depend on changed.
    Updated,
    /// Only the last-seen time moved.
    Refreshed,
}

/// Members by public key.
#[derive(Debug, Clone, Default)]
pub struct MemberTable {
    /// The members by key. Looked up several times for every datagram, so a hash map with a
    /// fast keyed hash (foldhash, seeded per process: keys a member grinds cannot be aimed at
    /// one bucket); [`Self::order`] gives the deterministic key order everything iterates in.
    members: HashMap<PublicKey, Member, foldhash::fast::RandomState>,
    order: BTreeSet<PublicKey>,
    /// Who holds each mesh address, so "is this address taken" costs a lookup and not a scan
    /// of the table on every verified exchange (that scan made forming a mesh cubic in its
    /// size). Normally one key per address; the caller decides whether to admit a second.
    by_address: HashMap<IpAddr, Vec<PublicKey>>,
    /// Members with a control address and an endpoint (the ones gossip can pass on), in key
    /// order, so picking a few at random needs no scan of the table.
    reachable: Vec<PublicKey>,
    /// The next name claim's sequence number.
    next_claim: u64,
    /// When each member's route was first verified here, as a table-wide sequence number: the
    /// earliest claim of a prefix is its incumbent (`crate::routes`). Dropped when the member
    /// withdraws the route or leaves.
    route_claims: HashMap<(PublicKey, IpNet), u64>,
    next_route_claim: u64,
}

impl MemberTable {
    /// Inserts or updates a member. The first source is kept: it answers "how was it found".
    /// A member keeps its name claim while its name stays the same; a new name is a new claim.
    pub fn upsert(&mut self, mut member: Member) -> MemberChange {
        let claim = self.next_claim;
        match self.members.get_mut(&member.public_key) {
            None => {
                member.name_claim = claim;
                self.next_claim += 1;
                self.claim_routes(&member.public_key, &[], &member.routes);
                self.index(&member);
                self.order.insert(member.public_key);
                self.members.insert(member.public_key, member);
                MemberChange::New
            }
            Some(existing) => {
                if existing.name == member.name {
                    member.name_claim = existing.name_claim;
                } else {
                    member.name_claim = claim;
                    self.next_claim += 1;
                }
                member.source = existing.source;
                // A new underlay address, or a new path (relayed to direct, or another relay
                // port): a WireGuard handshake from before does not vouch for the new endpoint.
                let path_changed = existing.relay_endpoint != member.relay_endpoint;
                member.moved_at_ms = if path_changed
                    || existing.control_addr.is_some()
                        && member.control_addr.map(|a| a.ip())
                            != existing.control_addr.map(|a| a.ip())
                {
                    member.last_seen_ms
                } else {
                    existing.moved_at_ms
                };
                let relevant = |m: &Member| {
                    (
                        m.mesh_ipv4,
                        m.mesh_ipv6,
                        m.endpoint,
                        m.control_addr,
                        m.routes.clone(),
                        m.relay_offered,
                        m.relay_via,
                        m.relay_endpoint,
                    )
                };
                let change = if relevant(existing) == relevant(&member) {
                    MemberChange::Refreshed
                } else {
                    MemberChange::Updated
                };
                let indexed = |m: &Member| {
                    (
                        m.mesh_ipv4,
                        m.mesh_ipv6,
                        m.control_addr.is_some() && m.endpoint.is_some(),
                    )
                };
                let old = std::mem::replace(existing, member);
                let routes_changed = old.routes != existing.routes;
                let index_changed = indexed(&old) != indexed(existing);
                if routes_changed || index_changed {
                    let new = existing.clone();
                    if routes_changed {
                        self.claim_routes(&new.public_key, &old.routes, &new.routes);
                    }
                    if index_changed {
                        self.unindex(&old);
                        self.index(&new);
                    }
                }
                change
            }
        }
    }

    pub fn remove(&mut self, key: &PublicKey) -> Option<Member> {
        let gone = self.members.remove(key)?;
        self.order.remove(key);
        self.claim_routes(key, &gone.routes, &[]);
        self.unindex(&gone);
        Some(gone)
    }

    /// A member other than `key` that holds `ipv4` or `ipv6`, if any.
    pub fn address_holder(
        &self,
        key: &PublicKey,
        ipv4: Ipv4Addr,
        ipv6: Ipv6Addr,
    ) -> Option<PublicKey> {
        [IpAddr::V4(ipv4), IpAddr::V6(ipv6)]
            .iter()
            .filter_map(|ip| self.by_address.get(ip))
            .flatten()
            .find(|holder| *holder != key)
            .copied()
    }

    /// When this host first verified `key` advertising `route` (truncated), as a sequence number
    /// comparable across members: smaller is earlier.
    pub fn route_claim(&self, key: &PublicKey, route: &IpNet) -> Option<u64> {
        self.route_claims.get(&(*key, route.trunc())).copied()
    }

    /// Records claims for routes `key` newly advertises and drops those it withdrew.
    fn claim_routes(&mut self, key: &PublicKey, old: &[IpNet], new: &[IpNet]) {
        let new: Vec<IpNet> = new.iter().map(IpNet::trunc).collect();
        for route in old.iter().map(IpNet::trunc) {
            if !new.contains(&route) {
                self.route_claims.remove(&(*key, route));
            }
        }
        for route in new {
            if let std::collections::hash_map::Entry::Vacant(entry) =
                self.route_claims.entry((*key, route))
            {
                entry.insert(self.next_route_claim);
                self.next_route_claim += 1;
            }
        }
    }

    /// Members with a control address and an endpoint, in key order (the order of [`Self::iter`]).
    pub fn reachable(&self) -> &[PublicKey] {
        &self.reachable
    }

    fn index(&mut self, member: &Member) {
        if member.control_addr.is_some()
            && member.endpoint.is_some()
            && let Err(at) = self.reachable.binary_search(&member.public_key)
        {
            self.reachable.insert(at, member.public_key);
        }
        for ip in [IpAddr::V4(member.mesh_ipv4), IpAddr::V6(member.mesh_ipv6)] {
            self.by_address
                .entry(ip)
                .or_default()
                .push(member.public_key);
        }
    }

    fn unindex(&mut self, member: &Member) {
        if let Ok(at) = self.reachable.binary_search(&member.public_key) {
            self.reachable.remove(at);
        }
        for ip in [IpAddr::V4(member.mesh_ipv4), IpAddr::V6(member.mesh_ipv6)] {
            if let Some(keys) = self.by_address.get_mut(&ip) {
                keys.retain(|k| *k != member.public_key);
                if keys.is_empty() {
                    self.by_address.remove(&ip);
                }
            }
        }
    }

    /// Drops members not seen within `ttl_ms`; returns them.
    pub fn expire(&mut self, now_ms: u64, ttl_ms: u64) -> Vec<Member> {
        let stale: Vec<PublicKey> = self
            .iter()
            .filter(|m| now_ms.saturating_sub(m.last_seen_ms) > ttl_ms)
            .map(|m| m.public_key)
            .collect();
        stale.iter().filter_map(|k| self.remove(k)).collect()
    }

    /// Marks a member as seen (e.g. WireGuard reports a fresh handshake with it).
    pub fn touch(&mut self, key: &PublicKey, now_ms: u64) {
        if let Some(member) = self.members.get_mut(key) {
            member.last_seen_ms = member.last_seen_ms.max(now_ms);
        }
    }

    pub fn get(&self, key: &PublicKey) -> Option<&Member> {
        self.members.get(key)
    }

    /// The members in key order.
    pub fn iter(&self) -> impl Iterator<Item = &Member> {
        self.order.iter().filter_map(|key| self.members.get(key))
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// How each named member is shown, with `own` (this host) keeping its own name: the member
    /// first verified under a name keeps it, later claimants are contested.
    pub fn naming(&self, own: Option<(PublicKey, &MemberName)>) -> BTreeMap<PublicKey, Naming> {
        wgmesh_names::resolve(
            own,
            self.iter().filter_map(|m| {
                Some(Claim {
                    key: m.public_key,
                    name: m.name.as_ref()?,
                    order: m.name_claim,
                })
            }),
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn member(n: u8) -> Member {
        Member {
            public_key: PublicKey::from_bytes([n; 32]),
            mesh_ipv4: Ipv4Addr::new(10, 1, 0, n),
            mesh_ipv6: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, u16::from(n)),
            collision_counter: 0,
            endpoint: Some(SocketAddr::from(([192, 0, 2, n], 51820))),
            control_addr: Some(SocketAddr::from(([192, 0, 2, n], 51900))),
            routes: Vec::new(),
            source: Source::Lan,
            relay_offered: false,
            last_seen_ms: 1_000,
            moved_at_ms: 0,
            relay_via: None,
            relay_endpoint: None,
            name: None,
            version: None,
            name_claim: 0,
        }
    }

    fn named(n: u8, name: &str) -> Member {
        Member {
            name: Some(MemberName::parse(name).unwrap()),
            ..member(n)
        }
    }

    #[test]
    fn the_address_index_follows_upserts_moves_and_removals() {
        let mut table = MemberTable::default();
        let key = |n: u8| PublicKey::from_bytes([n; 32]);
        let (v4, v6) = (member(1).mesh_ipv4, member(1).mesh_ipv6);
        table.upsert(member(1));
        assert_eq!(table.address_holder(&key(2), v4, v6), Some(key(1)));
        assert_eq!(
            table.address_holder(&key(1), v4, v6),
            None,
            "not its own rival"
        );
        // Either address alone is enough to be the holder.
        let other_v4 = Ipv4Addr::new(10, 9, 9, 9);
        assert_eq!(table.address_holder(&key(2), other_v4, v6), Some(key(1)));
        // Moving to a new address frees the old one.
        let mut moved = member(1);
        moved.mesh_ipv4 = other_v4;
        moved.mesh_ipv6 = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x99);
        table.upsert(moved);
        assert_eq!(table.address_holder(&key(2), v4, v6), None);
        assert_eq!(
            table.address_holder(&key(2), other_v4, Ipv6Addr::UNSPECIFIED),
            Some(key(1))
        );
        // Removal and expiry free addresses too.
        table.remove(&key(1));
        assert_eq!(
            table.address_holder(&key(2), other_v4, Ipv6Addr::UNSPECIFIED),
            None
        );
        // Only members with both a control address and an endpoint are reachable.
        table.upsert(member(5));
        table.upsert(member(3));
        let mut relayed = member(4);
        relayed.endpoint = None;
        table.upsert(relayed);
        assert_eq!(table.reachable(), [key(3), key(5)]);
        table.upsert(member(4));
        assert_eq!(table.reachable(), [key(3), key(4), key(5)]);
        table.remove(&key(5));
        table.remove(&key(4));
        assert_eq!(table.reachable(), [key(3)]);
        table.expire(100_000, 1_000);
        assert!(table.reachable().is_empty());
        assert!(table.is_empty());
        assert_eq!(
            table.address_holder(&key(2), member(3).mesh_ipv4, member(3).mesh_ipv6),
            None
        );
    }

    #[test]
    fn a_name_stays_with_the_member_first_verified_under_it() {
        let mut table = MemberTable::default();
        // Key 9 first, then key 1 (lower, so key order would favour it) claims the same name.
        table.upsert(named(9, "web1"));
        table.upsert(named(1, "web1"));
        table.upsert(named(2, "db1"));
        let shown = |t: &MemberTable, n: u8| {
            let naming = t.naming(None);
            let entry = &naming[&PublicKey::from_bytes([n; 32])];
            (entry.display().to_owned(), entry.contested)
        };
        assert_eq!(shown(&table, 9), ("web1".to_owned(), false));
        assert_eq!(shown(&table, 1), ("web1~01010101".to_owned(), true));
        assert_eq!(shown(&table, 2), ("db1".to_owned(), false));
        // Refreshes keep the claim; the newcomer cannot win by announcing again.
        let mut again = named(1, "web1");
        again.last_seen_ms = 9_000;
        table.upsert(again);
        table.upsert(named(9, "web1"));
        assert_eq!(shown(&table, 9), ("web1".to_owned(), false));
        // The holder renames: its old name passes to the next claimant; coming back to it is a
        // new claim, behind the one now holding it.
        table.upsert(named(9, "web9"));
        assert_eq!(shown(&table, 1), ("web1".to_owned(), false));
        table.upsert(named(9, "web1"));
        assert_eq!(shown(&table, 9), ("web1~09090909".to_owned(), true));
        // The holder leaves: likewise.
        table.remove(&PublicKey::from_bytes([1; 32]));
        assert_eq!(shown(&table, 9), ("web1".to_owned(), false));
        // Our own name is ours.
        let own = MemberName::parse("db1").unwrap();
        let naming = table.naming(Some((PublicKey::from_bytes([7; 32]), &own)));
        assert!(naming[&PublicKey::from_bytes([2; 32])].contested);
        assert!(!naming[&PublicKey::from_bytes([7; 32])].contested);
    }

    #[test]
    fn upsert_reports_what_changed() {
        let mut table = MemberTable::default();
        assert_eq!(table.upsert(member(1)), MemberChange::New);
        let mut seen_again = member(1);
        seen_again.last_seen_ms = 2_000;
        seen_again.source = Source::Static;
        assert_eq!(table.upsert(seen_again.clone()), MemberChange::Refreshed);
        assert_eq!(
            table.get(&seen_again.public_key).map(|m| m.source),
            Some(Source::Lan)
        );
        seen_again.routes.push("192.168.1.0/24".parse().unwrap());
        assert_eq!(table.upsert(seen_again.clone()), MemberChange::Updated);
        assert_eq!(
            table.get(&seen_again.public_key).map(|m| m.moved_at_ms),
            Some(0)
        );
        seen_again.control_addr = Some("198.51.100.1:51900".parse().unwrap());
        seen_again.last_seen_ms = 3_000;
        assert_eq!(table.upsert(seen_again.clone()), MemberChange::Updated);
        assert_eq!(
            table.get(&seen_again.public_key).map(|m| m.moved_at_ms),
            Some(3_000)
        );
    }

    #[test]
    fn unseen_members_expire() {
        let mut table = MemberTable::default();
        table.upsert(member(1));
        let mut fresh = member(2);
        fresh.last_seen_ms = 500_000;
        table.upsert(fresh);
        table.touch(&member(1).public_key, 100_000);
        assert!(table.expire(600_000, 600_000).is_empty());
        let gone = table.expire(700_001, 600_000);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].public_key, member(1).public_key);
        assert_eq!(table.len(), 1);
    }
}
