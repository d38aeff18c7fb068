//! Repeated probes: hole punching towards addresses learned second-hand, and probes through the
//! tunnel after WireGuard has been pointed somewhere new.
//!
//! Both sides start punching when gossip reaches them, and the first datagrams of each side
//! usually hit the other's NAT before its own outbound mapping exists; so an address is probed
//! again after each of [`PUNCH_RETRIES`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// When to probe a gossiped address again (ms after the first probe).
pub const PUNCH_RETRIES: [u64; 4] = [500, 1_000, 2_000, 4_000];
/// Probes through a tunnel, after the reconcile has pointed WireGuard at a new endpoint.
pub const TUNNEL_RETRIES: [u64; 2] = [300, 1_000];
/// Probes through the tunnel after a relayed pair found its direct path: early and dense, so
/// each end's first WireGuard datagram on the direct path follows the reconcile within
/// milliseconds, whatever its duration ([`crate::direct`]).
pub const DIRECT_SWITCH_PROBES: [u64; 6] = [5, 15, 30, 60, 120, 300];
/// (Probes through a relayed trial tunnel: [`crate::relay::TRIAL_PROBES`].)
/// At most this many pending probes: gossip from many members cannot grow the schedule without
/// bound. Past it new probes are dropped (the periodic refresh and discovery still run).
pub const MAX_PENDING_PUNCHES: usize = 4_096;

/// Who named an address the schedule probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamedBy {
    /// A third party (gossip): its probes are budgeted ([`crate::budget`]).
    Gossip,
    /// A member we verified (its own address, or a tunnel address): not budgeted.
    Member,
}

#[derive(Debug, Clone, Default)]
pub struct PunchSchedule {
    pending: Vec<(Instant, SocketAddr, NamedBy)>,
}

impl PunchSchedule {
    /// Probes `addr`, which gossip named, again after each delay (milliseconds from `now`).
    pub fn schedule(&mut self, now: Instant, addr: SocketAddr, delays_ms: &[u64]) {
        self.schedule_named(now, addr, delays_ms, NamedBy::Gossip);
    }

    /// As [`Self::schedule`], for an address of a member we verified.
    pub fn schedule_member(&mut self, now: Instant, addr: SocketAddr, delays_ms: &[u64]) {
        self.schedule_named(now, addr, delays_ms, NamedBy::Member);
    }

    fn schedule_named(&mut self, now: Instant, addr: SocketAddr, delays_ms: &[u64], by: NamedBy) {
        for ms in delays_ms {
            if self.pending.len() >= MAX_PENDING_PUNCHES {
                return;
            }
            self.pending
                .push((now + Duration::from_millis(*ms), addr, by));
        }
    }

    pub fn is_pending(&self, addr: SocketAddr) -> bool {
        self.pending.iter().any(|(_, a, _)| *a == addr)
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.iter().map(|(t, _, _)| *t).min()
    }

    /// The addresses due at `now`, in the order they were scheduled, with who named each;
    /// removed from the schedule.
    pub fn take_due(&mut self, now: Instant) -> Vec<(SocketAddr, NamedBy)> {
        let due = self
            .pending
            .iter()
            .filter(|(t, _, _)| *t <= now)
            .map(|(_, a, by)| (*a, *by))
            .collect();
        self.pending.retain(|(t, _, _)| *t > now);
        due
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_come_due_in_time_and_once() {
        let start = Instant::now();
        let addr = SocketAddr::from(([192, 0, 2, 1], 5000));
        let mut punches = PunchSchedule::default();
        punches.schedule(start, addr, &PUNCH_RETRIES);
        assert!(punches.is_pending(addr));
        assert_eq!(
            punches.next_deadline(),
            Some(start + Duration::from_millis(500))
        );
        assert!(punches.take_due(start).is_empty());
        assert_eq!(
            punches.take_due(start + Duration::from_millis(1_000)),
            vec![(addr, NamedBy::Gossip); 2]
        );
        punches.schedule_member(start, addr, &[0]);
        assert_eq!(punches.take_due(start), vec![(addr, NamedBy::Member)]);
        assert_eq!(punches.len(), 2);
        assert_eq!(punches.take_due(start + Duration::from_secs(9)).len(), 2);
        assert!(punches.is_empty() && punches.next_deadline().is_none());
    }

    #[test]
    fn the_schedule_is_bounded() {
        let start = Instant::now();
        let mut punches = PunchSchedule::default();
        for port in 0..=u16::MAX {
            punches.schedule(
                start,
                SocketAddr::from(([192, 0, 2, 1], port)),
                &PUNCH_RETRIES,
            );
        }
        assert_eq!(punches.len(), MAX_PENDING_PUNCHES);
    }
}
