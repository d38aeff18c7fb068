//! Our record changed (a reload, a new endpoint, a new address): every member is probed so it
//! fetches the new record, and a member that does not answer is probed again, so one lost
//! datagram does not leave it with stale routes until digests or its next probe round catch up.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use wgmesh_keys::PublicKey;

/// Attempts per member, the first included.
pub const ANNOUNCE_ATTEMPTS: u32 = 3;
/// How long each attempt waits for the member's answer.
pub const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(2);

/// Members that have not yet answered since our record last changed.
#[derive(Debug, Clone, Default)]
pub struct Announcements {
    waiting: BTreeMap<PublicKey, (u32, Instant)>,
}

impl Announcements {
    /// A new announcement to `members` (each was just probed once): replaces any older one.
    pub fn start(&mut self, members: impl IntoIterator<Item = PublicKey>, now: Instant) {
        self.waiting = members
            .into_iter()
            .map(|key| (key, (1, now + ANNOUNCE_TIMEOUT)))
            .collect();
    }

    /// The member answered (any verified Hello carries our record back to it).
    pub fn answered(&mut self, key: &PublicKey) {
        self.waiting.remove(key);
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.waiting.values().map(|(_, at)| *at).min()
    }

    /// Members to probe again now; those out of attempts are dropped (the failure detector
    /// decides about them).
    pub fn take_due(&mut self, now: Instant) -> Vec<PublicKey> {
        let mut due = Vec::new();
        self.waiting.retain(|key, (attempts, at)| {
            if *at > now {
                return true;
            }
            if *attempts >= ANNOUNCE_ATTEMPTS {
                return false;
            }
            *attempts += 1;
            *at = now + ANNOUNCE_TIMEOUT;
            due.push(*key);
            true
        });
        due
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silent_members_are_asked_again_until_their_attempts_run_out() {
        let start = Instant::now();
        let (a, b) = (
            PublicKey::from_bytes([1; 32]),
            PublicKey::from_bytes([2; 32]),
        );
        let mut announce = Announcements::default();
        announce.start([a, b], start);
        announce.answered(&a);
        assert_eq!(announce.next_deadline(), Some(start + ANNOUNCE_TIMEOUT));
        assert_eq!(announce.take_due(start + ANNOUNCE_TIMEOUT), vec![b]);
        assert_eq!(announce.take_due(start + ANNOUNCE_TIMEOUT * 2), vec![b]);
        assert!(announce.take_due(start + ANNOUNCE_TIMEOUT * 3).is_empty());
        assert!(announce.is_empty());
    }
}
