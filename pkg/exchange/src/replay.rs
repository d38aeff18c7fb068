//! Bounded memory of what was already seen: the strangers' replay cache and the members' one.

use crate::codec::CHALLENGE_LEN;
use std::collections::HashMap;
use wgmesh_keys::PublicKey;

type Token = [u8; CHALLENGE_LEN];

/// The strangers' partition (senders not verified): (sender, nonce or challenge) pairs already
/// acted upon, each kept until a message carrying it could no longer pass the timestamp window.
#[derive(Debug)]
pub(crate) struct ReplayCache {
    capacity: usize,
    seen: HashMap<(PublicKey, Token), u64>,
}

/// The cache is full of live entries. Callers fail closed: they refuse the message rather than
/// forget an entry that may still be replayed.
#[derive(Debug)]
pub(crate) struct CacheFull;

impl ReplayCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            seen: HashMap::new(),
        }
    }

    pub(crate) fn contains(&self, now_ms: u64, sender: &PublicKey, token: &Token) -> bool {
        self.seen
            .get(&(*sender, *token))
            .is_some_and(|&expires| expires > now_ms)
    }

    pub(crate) fn insert(
        &mut self,
        now_ms: u64,
        sender: PublicKey,
        token: Token,
        expires_ms: u64,
    ) -> Result<(), CacheFull> {
        if self.seen.len() >= self.capacity && !self.seen.contains_key(&(sender, token)) {
            self.seen.retain(|_, &mut expires| expires > now_ms);
            if self.seen.len() >= self.capacity {
                return Err(CacheFull);
            }
        }
        self.seen.insert((sender, token), expires_ms);
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.seen.len()
    }
}

/// Which of a member's quotas an entry counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// A Probe: its sender key is a claim (anyone holding the secret can make one), so Probes
    /// can at worst use up the claimed member's Probe quota, never its quota for proven ones.
    Claimed,
    /// A Hello or Goodbye whose MAC verified: only the member itself (or a replay of it, which
    /// the cache refuses before inserting) adds these.
    Proven,
}

/// Entries per member and [`Kind`]: a member sends a handful of Probes and Goodbyes a minute.
pub(crate) const MEMBER_QUOTA: usize = 32;
/// Entries in the members' partition in all.
pub(crate) const MEMBER_PARTITION_CAPACITY: usize = 65_536;

/// The replay cache of verified members (issue 13): each member has its own quota, so neither
/// strangers (who have their own partition) nor another member can use up a member's slots.
/// A full quota refuses only that member's messages of that kind (fail closed).
#[derive(Debug, Default)]
pub(crate) struct MemberReplay {
    seen: HashMap<(PublicKey, Kind), Vec<(Token, u64)>>,
    len: usize,
}

impl MemberReplay {
    pub(crate) fn contains(&self, now_ms: u64, sender: &PublicKey, token: &Token) -> bool {
        [Kind::Claimed, Kind::Proven].iter().any(|kind| {
            self.seen.get(&(*sender, *kind)).is_some_and(|entries| {
                entries
                    .iter()
                    .any(|(t, expires)| t == token && *expires > now_ms)
            })
        })
    }

    pub(crate) fn insert(
        &mut self,
        now_ms: u64,
        sender: PublicKey,
        kind: Kind,
        token: Token,
        expires_ms: u64,
    ) -> Result<(), CacheFull> {
        let entries = self.seen.entry((sender, kind)).or_default();
        let before = entries.len();
        entries.retain(|(_, expires)| *expires > now_ms);
        self.len -= before - entries.len();
        if let Some(entry) = entries.iter_mut().find(|(t, _)| *t == token) {
            entry.1 = entry.1.max(expires_ms);
            return Ok(());
        }
        if entries.len() >= MEMBER_QUOTA {
            return Err(CacheFull);
        }
        if self.len >= MEMBER_PARTITION_CAPACITY {
            self.purge(now_ms);
            if self.len >= MEMBER_PARTITION_CAPACITY {
                return Err(CacheFull);
            }
        }
        if let Some(entries) = self.seen.get_mut(&(sender, kind)) {
            entries.push((token, expires_ms));
            self.len += 1;
        }
        Ok(())
    }

    /// Whether any entry of `sender` is live (it must not be forgotten as a member yet).
    pub(crate) fn has_live(&self, now_ms: u64, sender: &PublicKey) -> bool {
        [Kind::Claimed, Kind::Proven].iter().any(|kind| {
            self.seen
                .get(&(*sender, *kind))
                .is_some_and(|entries| entries.iter().any(|(_, e)| *e > now_ms))
        })
    }

    /// Drops `sender`'s (expired) entries.
    pub(crate) fn forget(&mut self, sender: &PublicKey) {
        for kind in [Kind::Claimed, Kind::Proven] {
            if let Some(entries) = self.seen.remove(&(*sender, kind)) {
                self.len -= entries.len();
            }
        }
    }

    fn purge(&mut self, now_ms: u64) {
        let mut len = 0;
        self.seen.retain(|_, entries| {
            entries.retain(|(_, expires)| *expires > now_ms);
            len += entries.len();
            !entries.is_empty()
        });
        self.len = len;
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: PublicKey = PublicKey::from_bytes([1; 32]);
    const K2: PublicKey = PublicKey::from_bytes([2; 32]);

    #[test]
    fn replay_cache_fails_closed_when_full_of_live_entries() {
        let mut cache = ReplayCache::new(2);
        assert!(cache.insert(0, K1, [1; 16], 100).is_ok());
        assert!(cache.insert(0, K1, [2; 16], 200).is_ok());
        assert!(cache.insert(50, K1, [3; 16], 300).is_err());
        assert!(cache.contains(50, &K1, &[1; 16]));
        assert!(!cache.contains(50, &K2, &[1; 16]));
        // Once the first expires it is purged to make room.
        assert!(cache.insert(100, K1, [3; 16], 300).is_ok());
        assert!(!cache.contains(100, &K1, &[1; 16]));
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn a_member_quota_fails_closed_for_that_member_and_kind_only() {
        let mut members = MemberReplay::default();
        for n in 0..MEMBER_QUOTA as u8 {
            assert!(members.insert(0, K1, Kind::Claimed, [n; 16], 100).is_ok());
        }
        assert!(
            members
                .insert(0, K1, Kind::Claimed, [200; 16], 100)
                .is_err()
        );
        assert!(members.insert(0, K1, Kind::Proven, [200; 16], 100).is_ok());
        assert!(members.insert(0, K2, Kind::Claimed, [200; 16], 100).is_ok());
        assert!(members.contains(50, &K1, &[3; 16]));
        assert!(!members.contains(100, &K1, &[3; 16]), "expired");
        assert!(members.has_live(99, &K1) && !members.has_live(100, &K1));
        // Expired entries make room again.
        assert!(
            members
                .insert(100, K1, Kind::Claimed, [201; 16], 300)
                .is_ok()
        );
        assert_eq!(members.len(), 3);
    }
}
