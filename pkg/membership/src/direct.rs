//! Coordinated direct attempts for relayed pairs (issue 14): when, and how far ahead of the
//! other end, the leading end of a relayed pair probes the other's direct address.
//!
//! A datagram that reaches a NAT router before that router's host has sent on the same pair of
//! addresses is dropped, and a router that accepts it instead (a plain `masquerade` router has
//! no input filter) confirms a conntrack entry with it: the host's own later flow to that peer
//! then clashes with the entry and is given a random port, so neither side's datagrams get in.
//! Both ends must therefore send their first datagram before the other's arrives, which the
//! lead does through the relayed tunnel, as Tailscale's "call me maybe":
//!
//! 1. The lead (the end with the lower key, so exactly one end leads) pings the other through
//!    the tunnel ([`wgmesh_exchange::Punch::Ping`]); the pong gives the relayed round trip.
//! 2. It sends "go" and probes the other's direct address half that round trip later, when
//!    "go" arrives and the other end probes ours.
//!
//! The two probes then leave within a few milliseconds of each other, well inside the one-way
//! delay between any two sites. An attempt that failed all the same (a clash left over from the
//! members' first, uncoordinated probes) has refreshed the entries in its way, so the next
//! comes only after [`DIRECT_RETRY`], longer than conntrack keeps an unreplied UDP entry (30 s)
//! after the attempt's last probe; and nothing else probes a relayed member's direct address
//! meanwhile (the core sends its liveness probes and announcements through the tunnel only).

use std::collections::HashMap;
use std::time::{Duration, Instant};
use wgmesh_keys::PublicKey;

/// Time between two direct attempts of one relayed pair, and from relaying to the first: the
/// attempt's probes span 4 s ([`crate::punch::PUNCH_RETRIES`]), then 30 s of conntrack's
/// unreplied-UDP timeout must pass without a datagram, and a second to spare.
pub const DIRECT_RETRY: Duration = Duration::from_secs(35);
/// A pong later than this is not a usable measure of the relayed path (and is ignored).
pub const PONG_WAIT: Duration = Duration::from_secs(5);
/// The lead never waits longer than this before its own probe.
pub const MAX_LEAD: Duration = Duration::from_secs(2);

/// The attempts this end leads: when each relayed member's next one starts, and its pending
/// ping. Bounded by the member table (entries for members no longer relayed are dropped by
/// [`DirectAttempts::retain`]).
#[derive(Debug, Clone, Default)]
pub struct DirectAttempts {
    next: HashMap<PublicKey, Instant>,
    pinged: HashMap<PublicKey, (Instant, u64)>,
}

/// Whether `own` leads the direct attempts of its pair with `peer`: the lower key does.
pub fn leads(own: &PublicKey, peer: &PublicKey) -> bool {
    own.as_bytes() < peer.as_bytes()
}

impl DirectAttempts {
    /// `peer` is relayed from `now` on: its first attempt comes [`DIRECT_RETRY`] later (kept if
    /// one is already planned).
    pub fn relayed(&mut self, peer: PublicKey, now: Instant) {
        self.next.entry(peer).or_insert(now + DIRECT_RETRY);
    }

    /// Keeps only the peers `still` holds (the members still relayed).
    pub fn retain(&mut self, mut still: impl FnMut(&PublicKey) -> bool) {
        self.next.retain(|key, _| still(key));
        self.pinged.retain(|key, _| still(key));
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.next.values().min().copied()
    }

    /// The peers whose attempt starts now (each planned again [`DIRECT_RETRY`] later), sorted
    /// so the order does not depend on the hash map's.
    pub fn take_due(&mut self, now: Instant) -> Vec<PublicKey> {
        let mut due: Vec<PublicKey> = Vec::new();
        for (key, at) in &mut self.next {
            if *at <= now {
                *at = now + DIRECT_RETRY;
                due.push(*key);
            }
        }
        due.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        due
    }

    /// We pinged `peer` with `nonce` at `now`.
    pub fn pinged(&mut self, peer: PublicKey, nonce: u64, now: Instant) {
        self.pinged.insert(peer, (now, nonce));
    }

    /// `peer` answered `nonce` at `now`: how long to wait before our own probe (half the
    /// relayed round trip), or `None` for a pong we did not ask for or that came too late.
    pub fn ponged(&mut self, peer: &PublicKey, nonce: u64, now: Instant) -> Option<Duration> {
        let (sent, expected) = self.pinged.get(peer).copied()?;
        if expected != nonce {
            return None;
        }
        self.pinged.remove(peer);
        let rtt = now.checked_duration_since(sent)?;
        (rtt <= PONG_WAIT).then(|| (rtt / 2).min(MAX_LEAD))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> PublicKey {
        PublicKey::from_bytes([n; 32])
    }

    #[test]
    fn exactly_one_end_of_a_pair_leads() {
        assert!(leads(&key(1), &key(2)));
        assert!(!leads(&key(2), &key(1)));
        assert!(!leads(&key(3), &key(3)));
    }

    #[test]
    fn attempts_start_after_the_retry_time_and_repeat_at_it() {
        let start = Instant::now();
        let mut attempts = DirectAttempts::default();
        attempts.relayed(key(2), start);
        assert_eq!(attempts.next_deadline(), Some(start + DIRECT_RETRY));
        assert!(attempts.take_due(start + DIRECT_RETRY / 2).is_empty());
        // Relayed again (a re-grant) does not postpone the planned attempt.
        attempts.relayed(key(2), start + DIRECT_RETRY / 2);
        assert_eq!(attempts.take_due(start + DIRECT_RETRY), vec![key(2)]);
        assert_eq!(attempts.next_deadline(), Some(start + 2 * DIRECT_RETRY));
        attempts.retain(|_| false);
        assert_eq!(attempts.next_deadline(), None);
    }

    #[test]
    fn the_lead_is_half_the_measured_round_trip_of_the_expected_pong_only() {
        let start = Instant::now();
        let mut attempts = DirectAttempts::default();
        attempts.pinged(key(2), 7, start);
        assert_eq!(
            attempts.ponged(&key(2), 8, start + Duration::from_millis(10)),
            None
        );
        assert_eq!(
            attempts.ponged(&key(3), 7, start + Duration::from_millis(10)),
            None
        );
        assert_eq!(
            attempts.ponged(&key(2), 7, start + Duration::from_millis(80)),
            Some(Duration::from_millis(40))
        );
        // Answered once: a replayed pong is not another measure.
        assert_eq!(
            attempts.ponged(&key(2), 7, start + Duration::from_millis(90)),
            None
        );
        attempts.pinged(key(2), 9, start);
        assert_eq!(attempts.ponged(&key(2), 9, start + PONG_WAIT * 2), None);
        attempts.pinged(key(2), 10, start);
        assert_eq!(
            attempts.ponged(&key(2), 10, start + Duration::from_secs(4)),
            Some(MAX_LEAD)
        );
    }
}
