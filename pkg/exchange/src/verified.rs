//! Members this node verified: keys whose Hello proved possession of the key and came from the
//! address our challenge was sent to, with the (at most two) addresses each was proven at. They
//! get a replay partition and limiter table of their own (issue 13), so strangers, who can make
//! any number of keys and spoof any source, exhaust only the strangers' share.

use std::collections::HashMap;
use std::net::SocketAddr;
use wgmesh_keys::PublicKey;

/// Members tracked. Past this, a newly verified key is treated as a stranger until a tracked
/// one can be forgotten.
pub(crate) const MAX_VERIFIED: usize = 4_096;
/// Addresses remembered per member: its underlay control address and its tunnel address.
const ADDRS_PER_MEMBER: usize = 2;

#[derive(Debug, Clone)]
struct Proven {
    /// Most recent first.
    addrs: Vec<SocketAddr>,
    last_ms: u64,
}

#[derive(Debug, Default)]
pub(crate) struct VerifiedPeers {
    peers: HashMap<PublicKey, Proven>,
    by_addr: HashMap<SocketAddr, PublicKey>,
}

impl VerifiedPeers {
    pub(crate) fn is_member(&self, key: &PublicKey) -> bool {
        self.peers.contains_key(key)
    }

    /// The member proven at `addr` (canonical), if any.
    pub(crate) fn at(&self, addr: &SocketAddr) -> Option<&PublicKey> {
        self.by_addr.get(addr)
    }

    pub(crate) fn proven_at(&self, key: &PublicKey, addr: &SocketAddr) -> bool {
        self.at(addr) == Some(key)
    }

    /// `key` answered a challenge sent to `addr` (canonical). When the table is full, the least
    /// recently verified member that `forgettable` allows is forgotten; if none is, `key` is not
    /// tracked (it stays a stranger). Returns whether `key` is tracked, and the member
    /// forgotten to make room.
    pub(crate) fn note(
        &mut self,
        now_ms: u64,
        key: PublicKey,
        addr: SocketAddr,
        forgettable: impl Fn(&PublicKey) -> bool,
    ) -> (bool, Option<PublicKey>) {
        let mut evicted = None;
        if !self.peers.contains_key(&key) && self.peers.len() >= MAX_VERIFIED {
            let oldest = self
                .peers
                .iter()
                .filter(|(k, _)| forgettable(k))
                .min_by_key(|(_, p)| p.last_ms)
                .map(|(k, _)| *k);
            match oldest {
                Some(oldest) => {
                    self.forget(&oldest);
                    evicted = Some(oldest);
                }
                None => return (false, None),
            }
        }
        if let Some(previous) = self.by_addr.insert(addr, key)
            && previous != key
            && let Some(other) = self.peers.get_mut(&previous)
        {
            // Another member answers there now (the previous one moved away).
            other.addrs.retain(|a| *a != addr);
        }
        let proven = self.peers.entry(key).or_insert(Proven {
            addrs: Vec::new(),
            last_ms: now_ms,
        });
        proven.last_ms = proven.last_ms.max(now_ms);
        proven.addrs.retain(|a| *a != addr);
        proven.addrs.insert(0, addr);
        for dropped in proven
            .addrs
            .split_off(ADDRS_PER_MEMBER.min(proven.addrs.len()))
        {
            if self.by_addr.get(&dropped) == Some(&key) {
                self.by_addr.remove(&dropped);
            }
        }
        (true, evicted)
    }

    pub(crate) fn forget(&mut self, key: &PublicKey) {
        if let Some(proven) = self.peers.remove(key) {
            for addr in proven.addrs {
                if self.by_addr.get(&addr) == Some(key) {
                    self.by_addr.remove(&addr);
                }
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.peers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> PublicKey {
        PublicKey::from_bytes([n; 32])
    }

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, n], 51900))
    }

    #[test]
    fn a_member_keeps_its_two_latest_addresses_and_an_address_one_member() {
        let mut peers = VerifiedPeers::default();
        assert!(peers.note(0, key(1), addr(1), |_| true).0);
        peers.note(1, key(1), addr(2), |_| true);
        peers.note(2, key(1), addr(3), |_| true);
        assert!(peers.proven_at(&key(1), &addr(3)) && peers.proven_at(&key(1), &addr(2)));
        assert!(!peers.proven_at(&key(1), &addr(1)));
        peers.note(3, key(2), addr(3), |_| true);
        assert!(peers.proven_at(&key(2), &addr(3)));
        assert!(!peers.proven_at(&key(1), &addr(3)));
        peers.forget(&key(2));
        assert_eq!(peers.at(&addr(3)), None);
        assert!(peers.is_member(&key(1)) && !peers.is_member(&key(2)));
    }

    #[test]
    fn a_full_table_forgets_only_what_may_be_forgotten() {
        let mut peers = VerifiedPeers::default();
        for n in 0..MAX_VERIFIED as u32 {
            let mut bytes = [0u8; 32];
            bytes[..4].copy_from_slice(&n.to_le_bytes());
            peers.note(u64::from(n), PublicKey::from_bytes(bytes), addr(1), |_| {
                true
            });
        }
        assert_eq!(peers.len(), MAX_VERIFIED);
        assert_eq!(
            peers.note(10_000, key(255), addr(9), |_| false),
            (false, None)
        );
        let first = PublicKey::from_bytes([0; 32]);
        assert_eq!(
            peers.note(10_000, key(255), addr(9), |_| true),
            (true, Some(first))
        );
        assert_eq!(peers.len(), MAX_VERIFIED);
        assert!(!peers.is_member(&first), "the least recently verified went");
    }
}
