//! The order of what each member said: the newest record and Hello accepted from a sender and
//! the newest Goodbye, so a Hello or Goodbye that an on-path attacker withheld and delivers late
//! (still inside the timestamp window, answering a LAN challenge that is still open) cannot roll
//! a member's record back, remove a member that has said Hello since, or bring back one that
//! has left.

use std::collections::HashMap;
use wgmesh_keys::PublicKey;

/// Unix seconds, as carried in messages and records.
#[derive(Debug, Clone, Copy, Default)]
struct Said {
    record: u64,
    hello: u64,
    goodbye: u64,
    /// After this (Unix ms) every message this entry could order is stale anyway.
    expires_ms: u64,
}

#[derive(Debug)]
pub(crate) struct Order {
    capacity: usize,
    senders: HashMap<PublicKey, Said>,
}

impl Order {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            senders: HashMap::new(),
        }
    }

    fn live(&self, now_ms: u64, sender: &PublicKey) -> Option<&Said> {
        self.senders
            .get(sender)
            .filter(|said| said.expires_ms > now_ms)
    }

    /// A Hello whose record is older than one already accepted, or that was sent before a
    /// Goodbye already accepted.
    pub(crate) fn hello_is_superseded(
        &self,
        now_ms: u64,
        sender: &PublicKey,
        record_timestamp: u64,
        hello_timestamp: u64,
    ) -> bool {
        self.live(now_ms, sender)
            .is_some_and(|said| record_timestamp < said.record || hello_timestamp < said.goodbye)
    }

    /// A Goodbye sent before a Hello already accepted (the member came back since).
    pub(crate) fn goodbye_is_superseded(
        &self,
        now_ms: u64,
        sender: &PublicKey,
        goodbye_timestamp: u64,
    ) -> bool {
        self.live(now_ms, sender)
            .is_some_and(|said| goodbye_timestamp < said.hello)
    }

    pub(crate) fn hello(
        &mut self,
        now_ms: u64,
        sender: PublicKey,
        record_timestamp: u64,
        hello_timestamp: u64,
        expires_ms: u64,
    ) {
        if let Some(said) = self.entry(now_ms, sender) {
            said.record = said.record.max(record_timestamp);
            said.hello = said.hello.max(hello_timestamp);
            said.expires_ms = said.expires_ms.max(expires_ms);
        }
    }

    pub(crate) fn goodbye(
        &mut self,
        now_ms: u64,
        sender: PublicKey,
        goodbye_timestamp: u64,
        expires_ms: u64,
    ) {
        if let Some(said) = self.entry(now_ms, sender) {
            said.goodbye = said.goodbye.max(goodbye_timestamp);
            said.expires_ms = said.expires_ms.max(expires_ms);
        }
    }

    /// The sender's entry, made room for by dropping expired ones. When every tracked sender is
    /// live, a new one is not tracked: ordering is then only as good as the timestamp window
    /// and the replay cache, which still hold; refusing the message would let a flood of
    /// members lock out a real one.
    fn entry(&mut self, now_ms: u64, sender: PublicKey) -> Option<&mut Said> {
        if !self.senders.contains_key(&sender) && self.senders.len() >= self.capacity {
            self.senders.retain(|_, said| said.expires_ms > now_ms);
            if self.senders.len() >= self.capacity {
                return None;
            }
        }
        let said = self.senders.entry(sender).or_default();
        if said.expires_ms <= now_ms {
            *said = Said::default();
        }
        Some(said)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> PublicKey {
        PublicKey::from_bytes([n; 32])
    }

    #[test]
    fn older_records_and_goodbyes_are_superseded_until_the_entry_expires() {
        let mut order = Order::new(8);
        order.hello(1_000, key(1), 50, 100, 200_000);
        assert!(order.hello_is_superseded(1_000, &key(1), 49, 101));
        assert!(!order.hello_is_superseded(1_000, &key(1), 50, 99));
        assert!(order.goodbye_is_superseded(1_000, &key(1), 99));
        assert!(!order.goodbye_is_superseded(1_000, &key(1), 100));
        // Other senders are not affected.
        assert!(!order.hello_is_superseded(1_000, &key(2), 0, 0));

        order.goodbye(2_000, key(1), 110, 200_000);
        assert!(order.hello_is_superseded(2_000, &key(1), 60, 109));
        assert!(!order.hello_is_superseded(2_000, &key(1), 60, 110));

        // Expired: nothing is ordered any more (such messages are stale anyway).
        assert!(!order.hello_is_superseded(200_000, &key(1), 0, 0));
        order.hello(200_000, key(1), 10, 10, 400_000);
        assert!(!order.goodbye_is_superseded(200_001, &key(1), 10));
        assert!(order.goodbye_is_superseded(200_001, &key(1), 9));
    }

    #[test]
    fn a_full_table_drops_expired_entries_and_never_grows_past_capacity() {
        let mut order = Order::new(2);
        order.hello(0, key(1), 5, 5, 1_000);
        order.hello(0, key(2), 5, 5, 9_000);
        order.hello(0, key(3), 5, 5, 9_000);
        assert!(!order.hello_is_superseded(0, &key(3), 0, 0), "not tracked");
        order.hello(2_000, key(3), 5, 5, 9_000);
        assert!(order.hello_is_superseded(2_000, &key(3), 4, 5));
        assert!(order.senders.len() <= 2);
    }
}
