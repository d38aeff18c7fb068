//! Verified members and how long they stay.

use ipnet::IpNet;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use wgmesh_keys::PublicKey;

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
    members: BTreeMap<PublicKey, Member>,
}

impl MemberTable {
    /// Inserts or updates a member. The first source is kept: it answers "how was it found".
    pub fn upsert(&mut self, mut member: Member) -> MemberChange {
        match self.members.get_mut(&member.public_key) {
            None => {
                self.members.insert(member.public_key, member);
                MemberChange::New
            }
            Some(existing) => {
                member.source = existing.source;
                member.moved_at_ms = if existing.control_addr.is_some()
                    && member.control_addr.map(|a| a.ip()) != existing.control_addr.map(|a| a.ip())
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
                    )
                };
                let change = if relevant(existing) == relevant(&member) {
                    MemberChange::Refreshed
                } else {
                    MemberChange::Updated
                };
                *existing = member;
                change
            }
        }
    }

    pub fn remove(&mut self, key: &PublicKey) -> Option<Member> {
        self.members.remove(key)
    }

    /// Drops members not seen within `ttl_ms`; returns them.
    pub fn expire(&mut self, now_ms: u64, ttl_ms: u64) -> Vec<Member> {
        let stale: Vec<PublicKey> = self
            .members
            .values()
            .filter(|m| now_ms.saturating_sub(m.last_seen_ms) > ttl_ms)
            .map(|m| m.public_key)
            .collect();
        stale
            .iter()
            .filter_map(|k| self.members.remove(k))
            .collect()
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

    pub fn iter(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
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
        }
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
