//! Bounded memory of what was already seen (replay cache) and of the challenges we issued.

use crate::codec::CHALLENGE_LEN;
use std::collections::HashMap;
use wgmesh_keys::PublicKey;

type Token = [u8; CHALLENGE_LEN];

/// (sender, nonce or challenge) pairs already acted upon, each kept until a message carrying it
/// could no longer pass the timestamp window.
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

#[derive(Debug, Clone, Copy)]
struct Outstanding {
    expires_ms: u64,
    /// The member a challenge was issued to, when known (answering its Probe). Challenges sent
    /// in our own Probes go to an address, not a key, and any member may answer them.
    peer: Option<PublicKey>,
}

/// Challenges we issued and not yet saw answered. A challenge bound to one member is consumed by
/// its valid answer; an open one (in a Probe to an address or the LAN group) stays answerable by
/// every member until it expires, each member once (the replay cache remembers who answered).
#[derive(Debug)]
pub(crate) struct Challenges {
    capacity: usize,
    lifetime_ms: u64,
    outstanding: HashMap<Token, Outstanding>,
}

impl Challenges {
    pub(crate) fn new(capacity: usize, lifetime_ms: u64) -> Self {
        Self {
            capacity: capacity.max(1),
            lifetime_ms,
            outstanding: HashMap::new(),
        }
    }

    /// Remembers a challenge. When the table is full of live challenges the one closest to
    /// expiry is forgotten: its handshake fails and is retried, but memory stays bounded.
    pub(crate) fn issue(&mut self, now_ms: u64, token: Token, peer: Option<PublicKey>) {
        if self.outstanding.len() >= self.capacity {
            self.outstanding.retain(|_, c| c.expires_ms > now_ms);
            if self.outstanding.len() >= self.capacity {
                let oldest = self
                    .outstanding
                    .iter()
                    .min_by_key(|(_, c)| c.expires_ms)
                    .map(|(token, _)| *token);
                if let Some(oldest) = oldest {
                    self.outstanding.remove(&oldest);
                }
            }
        }
        self.outstanding.insert(
            token,
            Outstanding {
                expires_ms: now_ms.saturating_add(self.lifetime_ms),
                peer,
            },
        );
    }

    /// Whether `token` is a live challenge that `sender` may answer.
    pub(crate) fn is_answerable(&self, now_ms: u64, token: &Token, sender: &PublicKey) -> bool {
        self.outstanding.get(token).is_some_and(|c| {
            c.expires_ms > now_ms && c.peer.as_ref().is_none_or(|peer| peer == sender)
        })
    }

    /// Whether `token` is open to any member (sent in our own Probe, possibly to the LAN group,
    /// where several members answer the same challenge).
    pub(crate) fn is_open(&self, token: &Token) -> bool {
        self.outstanding
            .get(token)
            .is_some_and(|c| c.peer.is_none())
    }

    pub(crate) fn consume(&mut self, token: &Token) {
        self.outstanding.remove(token);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.outstanding.len()
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
    fn challenges_expire_bind_and_are_bounded() {
        let mut challenges = Challenges::new(2, 30_000);
        challenges.issue(0, [1; 16], None);
        challenges.issue(0, [2; 16], Some(K1));
        assert!(challenges.is_answerable(29_999, &[1; 16], &K2));
        assert!(!challenges.is_answerable(30_000, &[1; 16], &K2));
        assert!(challenges.is_answerable(0, &[2; 16], &K1));
        assert!(!challenges.is_answerable(0, &[2; 16], &K2));
        challenges.issue(10, [3; 16], None);
        assert_eq!(challenges.len(), 2);
        challenges.consume(&[3; 16]);
        assert!(!challenges.is_answerable(10, &[3; 16], &K1));
    }
}
