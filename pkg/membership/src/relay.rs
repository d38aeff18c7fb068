//! Second-hand members and relay choice.
//!
//! A member heard of only through gossip gets [`RELAY_AFTER`] to answer directly. If it does
//! not (both sides behind endpoint-dependent NAT, so no hole can be punched), its traffic goes
//! through a member that offers to relay, like TURN/DERP (DESIGN.md §6). Its underlay control
//! address stays known, so the periodic member probe keeps trying the direct path; the first
//! direct exchange ends the relaying.
//!
//! **Relay choice** (issue 13, item 3) must not be winnable by grinding a key, since a relay
//! forwards the pair's traffic at the IP layer and sees it. Candidates are members that offer to
//! relay, are reached directly and that our failure detector does not suspect (measured
//! reachability); with an operator allow-list ([`RelayAllowList`]) only listed members. Among
//! candidates the lowest keyed hash of the mesh-wide tiebreak key, the pair's two keys (sorted)
//! and the relay's key wins ([`relay_rank`]). Both ends of a pair compute the same hash, so they
//! pick the same relay (WireGuard accepts a relayed member's packets only from the peer that
//! holds its allowed IPs, so the two ends must agree); recency of verification is deliberately
//! not a rank, since the two ends measure it differently. A key ground to sort low wins nothing:
//! for each pair every candidate wins with equal chance, and aiming at one given pair costs an
//! insider about as many key derivations as there are candidates, before it joins.
//!
//! **Proof before relaying** (DESIGN.md §8, item 4): a second-hand record is never a member on
//! the word of gossip. When its time to answer directly runs out it gets a *trial* (at most
//! [`RELAY_PROOF_WINDOW`]): the shell routes only its own /32 and /128 through the relay so the
//! exchange can run inside the tunnel, and it becomes a relayed member (with routes) only once
//! its own Hello proves its key. A trial that brings no proof is withdrawn
//! ([`crate::Event::RelayUnproven`]) and the key is not tried again for [`UNPROVEN_COOLDOWN`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use wgmesh_exchange::GossipEntry;
use wgmesh_keys::{KeyPrefix, KeyPrefixError, PublicKey};
use wgmesh_mesh::{Member, MemberTable, Source};

/// The shortest key prefix the allow-list accepts: 8 base64 characters are 48 bits, so grinding
/// a key that matches a listed prefix costs some 10^14 key derivations.
pub const MIN_RELAY_PREFIX_LEN: usize = KeyPrefix::MIN_LEN;

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

/// How long a trial relayed tunnel waits for the member's own proof before it is withdrawn.
/// Long enough for the far end to start its own trial for us (it hears of us by gossip a little
/// later or earlier): until both ends route the pair through the relay, nothing gets through.
pub const RELAY_PROOF_WINDOW: Duration = Duration::from_secs(30);
/// Probes through a trial tunnel (ms after it starts): a few quick ones, then every 5 s until
/// the window ends, so a far end that starts its trial later is still reached.
pub const TRIAL_PROBES: [u64; 8] = [300, 1_000, 2_000, 5_000, 10_000, 15_000, 20_000, 25_000];
/// How often a member asks its relays again for the pairs they carry (the relay releases a
/// pair nobody used for two minutes, and after its restart the ports are new), and tries each
/// relayed member's direct path again (the NATs between may have changed).
pub const RELAY_REFRESH: Duration = Duration::from_secs(30);
/// A key whose trial brought no proof gets no new trial for this long (gossip naming it again
/// does not buy it another window).
pub const UNPROVEN_COOLDOWN: Duration = Duration::from_secs(600);
/// At most this many trials at once: each routes two addresses through a relay on the shell's
/// say-so. Past it, a due second-hand member waits for the next gossip naming it.
pub const MAX_RELAY_TRIALS: usize = 64;
/// At most this many unproven keys are remembered for their cooldown (the oldest go first).
pub const MAX_UNPROVEN: usize = 1_024;

/// A second-hand member on trial: routed through `relay` only so that its own proof can come
/// through the tunnel. Not a member until it proves its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayTrial {
    /// What the shell installs meanwhile: its own addresses through the relay, no routes.
    pub member: Member,
    pub relay: PublicKey,
    pub until: Instant,
}

/// Trials under way, and keys whose trial failed (their cooldown).
#[derive(Debug, Clone, Default)]
pub struct RelayTrials {
    trials: BTreeMap<PublicKey, RelayTrial>,
    unproven: BTreeMap<PublicKey, Instant>,
}

impl RelayTrials {
    /// Whether `key` may have a trial now (none under way, not in its cooldown, room left).
    pub fn may_start(&self, key: &PublicKey, now: Instant) -> bool {
        self.trials.len() < MAX_RELAY_TRIALS
            && !self.trials.contains_key(key)
            && self
                .unproven
                .get(key)
                .is_none_or(|at| now.saturating_duration_since(*at) >= UNPROVEN_COOLDOWN)
    }

    pub fn start(&mut self, member: Member, relay: PublicKey, now: Instant) {
        if self.trials.len() >= MAX_RELAY_TRIALS {
            return;
        }
        self.trials.insert(
            member.public_key,
            RelayTrial {
                member,
                relay,
                until: now + RELAY_PROOF_WINDOW,
            },
        );
    }

    pub fn get(&self, key: &PublicKey) -> Option<&RelayTrial> {
        self.trials.get(key)
    }

    /// The relay granted (or offered) the trial's pair a port: it runs through `relay`, with
    /// `endpoint` as the WireGuard endpoint.
    pub fn route_through(&mut self, key: &PublicKey, relay: PublicKey, endpoint: SocketAddr) {
        if let Some(trial) = self.trials.get_mut(key) {
            trial.relay = relay;
            trial.member.relay_via = Some(relay);
            trial.member.relay_endpoint = Some(endpoint);
        }
    }

    /// (relay, member) of every trial.
    pub fn pairs(&self) -> impl Iterator<Item = (PublicKey, PublicKey)> + '_ {
        self.trials.values().map(|t| (t.relay, t.member.public_key))
    }

    /// Whether a trial routes `ip` (a second-hand claim never displaces another).
    pub fn holds_address(&self, ipv4: std::net::Ipv4Addr, ipv6: std::net::Ipv6Addr) -> bool {
        self.trials
            .values()
            .any(|t| t.member.mesh_ipv4 == ipv4 || t.member.mesh_ipv6 == ipv6)
    }

    /// It proved its key (through the tunnel or directly), or left: the trial ends.
    pub fn end(&mut self, key: &PublicKey) -> Option<RelayTrial> {
        self.unproven.remove(key);
        self.trials.remove(key)
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.trials.values().map(|t| t.until).min()
    }

    /// Trials whose window ran out without a proof, removed; their keys start the cooldown.
    pub fn take_expired(&mut self, now: Instant) -> Vec<RelayTrial> {
        let expired: Vec<PublicKey> = self
            .trials
            .values()
            .filter(|t| t.until <= now)
            .map(|t| t.member.public_key)
            .collect();
        if !expired.is_empty() {
            self.unproven
                .retain(|_, at| now.saturating_duration_since(*at) < UNPROVEN_COOLDOWN);
        }
        let mut gone = Vec::new();
        for key in expired {
            if let Some(trial) = self.trials.remove(&key) {
                while self.unproven.len() >= MAX_UNPROVEN {
                    let oldest = self
                        .unproven
                        .iter()
                        .min_by_key(|(_, at)| **at)
                        .map(|(k, _)| *k);
                    match oldest {
                        Some(k) => self.unproven.remove(&k),
                        None => break,
                    };
                }
                self.unproven.insert(key, now);
                gone.push(trial);
            }
        }
        gone
    }

    pub fn len(&self) -> usize {
        self.trials.len()
    }

    pub fn is_empty(&self) -> bool {
        self.trials.is_empty()
    }

    pub fn unproven_len(&self) -> usize {
        self.unproven.len()
    }
}

/// Which members may relay, as the operator lists them (`relays=KEY,...`): base64 public-key
/// prefixes of at least [`MIN_RELAY_PREFIX_LEN`] characters ([`KeyPrefix`]); a key matches if
/// its base64 starts with one of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayAllowList {
    prefixes: Vec<KeyPrefix>,
}

/// Why an allow-list entry was refused (the entry itself is not repeated: it could be a pasted
/// secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("relays entry {position}: {error}")]
pub struct RelayListError {
    /// 1-based.
    pub position: usize,
    pub error: KeyPrefixError,
}

impl RelayAllowList {
    pub fn new(prefixes: Vec<KeyPrefix>) -> Self {
        Self { prefixes }
    }

    /// Parses the operator's entries (surrounding whitespace ignored). An empty list allows no
    /// relay at all.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, RelayListError> {
        let prefixes = entries
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                entry
                    .as_ref()
                    .trim()
                    .parse::<KeyPrefix>()
                    .map_err(|error| RelayListError {
                        position: i + 1,
                        error,
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { prefixes })
    }

    pub fn allows(&self, key: &PublicKey) -> bool {
        self.prefixes.iter().any(|p| p.matches(key))
    }

    pub fn prefixes(&self) -> &[KeyPrefix] {
        &self.prefixes
    }
}

/// What relay choice needs besides the member table.
#[derive(Debug, Clone, Copy)]
pub struct RelayPolicy<'a> {
    /// Only these members may relay, if set.
    pub allow: Option<&'a RelayAllowList>,
    /// Mesh-wide key for the tiebreak hash (the same on every member, so both ends of a pair
    /// rank alike).
    pub tiebreak_key: &'a [u8; 32],
}

/// The tiebreak rank of `relay` for the pair `a`–`b` (lower wins): a keyed hash of the pair's
/// keys in sorted order (both ends compute the same value) and the relay's key, so key order
/// decides nothing.
pub fn relay_rank(
    tiebreak_key: &[u8; 32],
    a: &PublicKey,
    b: &PublicKey,
    relay: &PublicKey,
) -> [u8; 32] {
    let (low, high) = if a <= b { (a, b) } else { (b, a) };
    let mut hasher = blake3::Hasher::new_keyed(tiebreak_key);
    hasher.update(b"wgmesh relay choice");
    hasher.update(low.as_bytes());
    hasher.update(high.as_bytes());
    hasher.update(relay.as_bytes());
    *hasher.finalize().as_bytes()
}

/// The member through which `own` reaches `peer`: among members that offer to relay, are
/// reached directly (relays are not chained), have an endpoint, are not `peer` itself, pass the
/// allow-list and are not suspected (`suspect`), the one with the lowest [`relay_rank`].
pub fn choose_relay(
    members: &MemberTable,
    own: &PublicKey,
    peer: &PublicKey,
    policy: RelayPolicy<'_>,
    suspect: impl Fn(&PublicKey) -> bool,
) -> Option<PublicKey> {
    members
        .iter()
        .filter(|m| m.relay_offered && m.relay_via.is_none() && m.endpoint.is_some())
        .filter(|m| m.public_key != *peer && m.public_key != *own)
        .filter(|m| policy.allow.is_none_or(|list| list.allows(&m.public_key)))
        .filter(|m| !suspect(&m.public_key))
        .min_by_key(|m| relay_rank(policy.tiebreak_key, own, peer, &m.public_key))
        .map(|m| m.public_key)
}

/// The trial entry of a second-hand member reached through `relay` ([`RelayTrial`]). It carries
/// only its own addresses, no routes: those apply only after a proof-carrying exchange with it
/// (DESIGN.md §8), which the probes through the relayed tunnel bring.
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
        relay_endpoint: None,
        // Gossip is second-hand: a name is only taken from the member itself.
        name: None,
        version: None,
        name_claim: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

    fn relay(key: PublicKey) -> Member {
        Member {
            public_key: key,
            mesh_ipv4: Ipv4Addr::new(10, 1, 0, key.as_bytes()[0]),
            mesh_ipv6: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, u16::from(key.as_bytes()[0])),
            collision_counter: 0,
            endpoint: Some(SocketAddr::from(([192, 0, 2, 1], 51820))),
            control_addr: Some(SocketAddr::from(([192, 0, 2, 1], 51900))),
            routes: Vec::new(),
            source: Source::Lan,
            relay_offered: true,
            last_seen_ms: 0,
            moved_at_ms: 0,
            relay_via: None,
            relay_endpoint: None,
            name: None,
            version: None,
            name_claim: 0,
        }
    }

    fn key(n: u32) -> PublicKey {
        let mut bytes = *blake3::hash(&n.to_le_bytes()).as_bytes();
        bytes[0] = bytes[0].max(1);
        PublicKey::from_bytes(bytes)
    }

    #[test]
    fn the_allow_list_takes_prefixes_of_eight_base64_characters_or_more() {
        let k = key(1);
        let text = k.to_base64();
        let list = RelayAllowList::parse(&[&text[..8], "  ABCDEFGHij "]).expect("valid");
        assert!(list.allows(&k));
        assert_eq!(list.prefixes()[1].as_str(), "ABCDEFGHij");
        assert!(matches!(
            RelayAllowList::parse(&["ABCDEFG"]),
            Err(RelayListError {
                position: 1,
                error: KeyPrefixError::TooShort(7)
            })
        ));
        assert!(matches!(
            RelayAllowList::parse(&["ABCD-EFGH"]),
            Err(RelayListError {
                position: 1,
                error: KeyPrefixError::NotBase64('-')
            })
        ));
        assert!(
            !RelayAllowList::parse::<&str>(&[])
                .expect("empty")
                .allows(&k)
        );
    }

    /// A relay whose key sorts below every other wins no more pairs than any other candidate,
    /// both ends of a pair rank alike, and a suspect or unlisted candidate is never chosen.
    #[test]
    fn choice_is_a_fair_keyed_hash_never_key_order() {
        let tiebreak = [9u8; 32];
        let lowest = PublicKey::from_bytes([0; 32]);
        let (honest_a, honest_b) = (key(1_000), key(1_001));
        let mut members = MemberTable::default();
        for k in [lowest, honest_a, honest_b] {
            members.upsert(relay(k));
        }
        let policy = RelayPolicy {
            allow: None,
            tiebreak_key: &tiebreak,
        };
        let mut wins = 0;
        for n in 0..600 {
            let (a, b) = (key(2 * n), key(2 * n + 1));
            let chosen = choose_relay(&members, &a, &b, policy, |_| false);
            assert_eq!(chosen, choose_relay(&members, &b, &a, policy, |_| false));
            wins += usize::from(chosen == Some(lowest));
            assert_ne!(
                choose_relay(&members, &a, &b, policy, |k| *k == lowest),
                Some(lowest)
            );
        }
        assert!(
            (120..=280).contains(&wins),
            "{wins} of 600 (a third expected)"
        );
        let listed = RelayAllowList::parse(&[&honest_a.to_base64()[..8]]).expect("valid");
        let policy = RelayPolicy {
            allow: Some(&listed),
            tiebreak_key: &tiebreak,
        };
        for n in 0..50 {
            assert_eq!(
                choose_relay(&members, &key(2 * n), &key(2 * n + 1), policy, |_| false),
                Some(honest_a)
            );
        }
    }
}
