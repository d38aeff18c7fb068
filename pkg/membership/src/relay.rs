//! Second-hand members and relay choice.
//!
//! A member heard of only through gossip gets [`RELAY_AFTER`] to answer directly. If it does
//! not (both sides behind endpoint-dependent NAT, so no hole can be punched), its traffic goes
//! through a member that offers to relay, like TURN/DERP (DESIGN.md §6). Its underlay control
//! address stays known, so the periodic member probe keeps trying the direct path; the first
//! direct exchange ends the relaying.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use wgmesh_exchange::GossipEntry;
use wgmesh_keys::PublicKey;
use wgmesh_mesh::{Member, MemberTable, Source};

/// How long a member heard of through gossip gets to answer directly before its traffic goes
/// through a relay.
pub const RELAY_AFTER: Duration = Duration::from_secs(6);
/// At most this many second-hand members wait for a direct answer. Gossip comes only from
/// verified members, but a member can name many; past the cap, new names wait for the next
/// gossip round.
pub const MAX_SECOND_HAND: usize = 1_024;

/// Members heard of through gossip, waiting for a direct answer.
#[derive(Debug, Clone, Default)]
pub struct SecondHand {
    waiting: BTreeMap<PublicKey, (GossipEntry, Instant)>,
}

impl SecondHand {
    /// Notes a gossiped member (the first report starts its clock).
    pub fn heard_of(&mut self, entry: &GossipEntry, now: Instant) {
        if self.waiting.len() >= MAX_SECOND_HAND
            && !self.waiting.contains_key(&entry.record.public_key)
        {
            return;
        }
        self.waiting
            .entry(entry.record.public_key)
            .or_insert_with(|| (entry.clone(), now));
    }

    /// It answered directly.
    pub fn answered(&mut self, key: &PublicKey) {
        self.waiting.remove(key);
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.waiting
            .values()
            .map(|(_, since)| *since + RELAY_AFTER)
            .min()
    }

    /// Those whose time ran out, removed.
    pub fn take_due(&mut self, now: Instant) -> Vec<GossipEntry> {
        let due: Vec<PublicKey> = self
            .waiting
            .iter()
            .filter(|(_, (_, since))| *since + RELAY_AFTER <= now)
            .map(|(key, _)| *key)
            .collect();
        due.iter()
            .filter_map(|key| self.waiting.remove(key).map(|(entry, _)| entry))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

/// The member to relay through: the first (by key) that offers to relay and is itself reached
/// directly (relays are not chained).
pub fn choose_relay(members: &MemberTable) -> Option<PublicKey> {
    members
        .iter()
        .find(|m| m.relay_offered && m.relay_via.is_none())
        .map(|m| m.public_key)
}

/// The table entry of a second-hand member reached through `relay`. It carries only its own
/// addresses, no routes: those apply only after a proof-carrying exchange with it (DESIGN.md §8),
/// which the probes through the relayed tunnel bring.
pub fn relayed_member(entry: &GossipEntry, relay: PublicKey, wall_ms: u64) -> Member {
    let record = &entry.record;
    Member {
        public_key: record.public_key,
        mesh_ipv4: record.mesh_ipv4,
        mesh_ipv6: record.mesh_ipv6,
        collision_counter: record.collision_counter,
        endpoint: record.endpoints.first().map(|e| e.addr),
        control_addr: Some(entry.control),
        routes: Vec::new(),
        source: Source::Gossip,
        relay_offered: record.relay_offered(),
        last_seen_ms: wall_ms,
        moved_at_ms: 0,
        relay_via: Some(relay),
        // Gossip is second-hand: a name is only taken from the member itself.
        name: None,
        version: None,
        name_claim: 0,
    }
}
