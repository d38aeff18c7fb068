//! When to announce and when to look up: a pure state machine over an injected wall clock.
//!
//! The worker thread feeds it "now" (time since the Unix epoch) and does the IO it asks for, so
//! hour boundaries, pacing changes and clock jumps are unit-tested without a network or a sleep.

use std::time::Duration;

const HOUR: Duration = Duration::from_secs(3600);

/// The rendezvous hour (DESIGN.md §3): `e = unix_time / 3600`.
pub fn epoch_hour(now: Duration) -> u64 {
    now.as_secs() / HOUR.as_secs()
}

/// The hours whose infohashes a lookup queries: `e-1, e, e+1`, so members whose clocks differ by
/// up to an hour, or that announced just before a boundary, still meet.
pub fn lookup_hours(epoch_hour: u64) -> [u64; 3] {
    [
        epoch_hour.saturating_sub(1),
        epoch_hour,
        epoch_hour.saturating_add(1),
    ]
}

/// How often the DHT is asked. Defaults keep an idle, complete mesh to a few hundred datagrams per
/// hour on the public DHT (see README.md for measured figures).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    /// Lookup interval while a member is missing or the daemon just started.
    pub fast_lookup: Duration,
    /// Lookup interval while the mesh is complete and stable.
    pub slow_lookup: Duration,
    /// Re-announce interval within an hour. Mainline implementations drop announced peers after
    /// about 30 minutes, so this must stay well below that.
    pub reannounce: Duration,
    /// Retry delay after an announce that reached no node (bootstrap not done yet, network down).
    pub announce_retry: Duration,
    /// The second lookup after start comes this soon (in fast pacing): members started at the
    /// same moment announce while each other's first lookups are already under way, and would
    /// otherwise meet only a whole fast interval later.
    pub first_followup: Duration,
}

impl Default for Pacing {
    fn default() -> Self {
        Self {
            fast_lookup: Duration::from_secs(12),
            slow_lookup: Duration::from_secs(300),
            reannounce: Duration::from_secs(15 * 60),
            announce_retry: Duration::from_secs(30),
            first_followup: Duration::from_secs(3),
        }
    }
}

/// What is due now. The worker performs both and reports the announce outcome back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Due {
    /// Announce under this hour's infohash.
    pub announce: Option<u64>,
    /// Look up these hours' infohashes.
    pub lookup: Option<[u64; 3]>,
}

/// Announce and lookup timing. All instants are wall-clock time since the Unix epoch, because the
/// infohash is a function of wall-clock hours; a clock that jumps backwards makes everything due
/// at once rather than stalling until the old deadline comes round again.
#[derive(Debug, Clone)]
pub struct Schedule {
    pacing: Pacing,
    fast: bool,
    /// Hour and time of the last announce attempt.
    last_announce: Option<(u64, Duration)>,
    /// Whether the last announce attempt reached at least one node.
    last_announce_ok: bool,
    last_lookup: Option<Duration>,
    /// Lookup rounds started.
    lookups: u64,
}

impl Schedule {
    /// Starts in fast mode with an announce and a lookup due at once.
    pub fn new(pacing: Pacing) -> Self {
        Self {
            pacing,
            fast: true,
            last_announce: None,
            last_announce_ok: false,
            last_lookup: None,
            lookups: 0,
        }
    }

    pub fn is_fast(&self) -> bool {
        self.fast
    }

    /// Switches pacing. Entering fast mode makes a lookup due at once if the last one is older
    /// than the fast interval (a member just went missing: look now, not in five minutes).
    pub fn set_fast(&mut self, fast: bool) {
        self.fast = fast;
    }

    /// Forces an announce at the next poll (the announced port changed).
    pub fn reannounce_now(&mut self) {
        self.last_announce = None;
    }

    fn lookup_interval(&self) -> Duration {
        if self.fast && self.lookups == 1 {
            self.pacing.first_followup.min(self.pacing.fast_lookup)
        } else if self.fast {
            self.pacing.fast_lookup
        } else {
            self.pacing.slow_lookup
        }
    }

    fn next_announce(&self) -> Option<Duration> {
        let (hour, at) = self.last_announce?;
        let interval = if self.last_announce_ok {
            self.pacing.reannounce
        } else {
            self.pacing.announce_retry
        };
        let next_hour = Duration::from_secs(hour.saturating_add(1).saturating_mul(3600));
        Some(at.saturating_add(interval).min(next_hour))
    }

    fn next_lookup(&self) -> Option<Duration> {
        self.last_lookup
            .map(|at| at.saturating_add(self.lookup_interval()))
    }

    /// Returns what is due at `now` and records it as started.
    pub fn poll(&mut self, now: Duration) -> Due {
        let hour = epoch_hour(now);
        let mut due = Due::default();
        let announce_due = match (self.last_announce, self.next_announce()) {
            (Some((_, at)), Some(next)) => now >= next || now < at,
            _ => true,
        };
        if announce_due {
            due.announce = Some(hour);
            self.last_announce = Some((hour, now));
            self.last_announce_ok = false;
        }
        let lookup_due = match (self.last_lookup, self.next_lookup()) {
            (Some(at), Some(next)) => now >= next || now < at,
            _ => true,
        };
        if lookup_due {
            due.lookup = Some(lookup_hours(hour));
            self.last_lookup = Some(now);
            self.lookups = self.lookups.saturating_add(1);
        }
        due
    }

    /// Records whether the announce started by the last [`Schedule::poll`] reached any node; a
    /// failed one is retried after [`Pacing::announce_retry`] instead of [`Pacing::reannounce`].
    pub fn announce_done(&mut self, ok: bool) {
        self.last_announce_ok = ok;
    }

    /// How long the worker may sleep before the next [`Schedule::poll`] has something to do.
    pub fn sleep_for(&self, now: Duration) -> Duration {
        let next = match (self.next_announce(), self.next_lookup()) {
            (Some(a), Some(l)) => a.min(l),
            _ => return Duration::ZERO,
        };
        next.saturating_sub(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// 2026-01-01T00:00:00Z, an hour boundary.
    const T0: u64 = 1_767_225_600;

    #[test]
    fn epoch_hour_is_unix_time_over_3600() {
        assert_eq!(epoch_hour(secs(0)), 0);
        assert_eq!(epoch_hour(secs(3599)), 0);
        assert_eq!(epoch_hour(secs(3600)), 1);
        assert_eq!(epoch_hour(secs(T0)), T0 / 3600);
        assert_eq!(epoch_hour(secs(T0 - 1)), T0 / 3600 - 1);
    }

    #[test]
    fn lookup_covers_previous_current_and_next_hour() {
        assert_eq!(lookup_hours(100), [99, 100, 101]);
        assert_eq!(lookup_hours(0), [0, 0, 1]);
        assert_eq!(lookup_hours(u64::MAX), [u64::MAX - 1, u64::MAX, u64::MAX]);
    }

    #[test]
    fn first_poll_announces_and_looks_up_current_hour() {
        let mut s = Schedule::new(Pacing::default());
        let e = T0 / 3600;
        let due = s.poll(secs(T0 + 10));
        assert_eq!(due.announce, Some(e));
        assert_eq!(due.lookup, Some([e - 1, e, e + 1]));
        // The follow-up lookup 3 s later, then nothing until the fast interval has passed.
        s.announce_done(true);
        assert_eq!(s.poll(secs(T0 + 12)), Due::default());
        assert_eq!(s.sleep_for(secs(T0 + 12)), secs(1));
        assert_eq!(s.poll(secs(T0 + 13)).lookup, Some([e - 1, e, e + 1]));
        assert_eq!(s.poll(secs(T0 + 24)), Due::default());
        assert_eq!(s.sleep_for(secs(T0 + 24)), secs(1));
    }

    #[test]
    fn the_follow_up_lookup_is_only_the_second_and_only_when_fast() {
        let mut s = Schedule::new(Pacing::default());
        s.set_fast(false);
        s.poll(secs(T0));
        s.announce_done(true);
        assert!(s.poll(secs(T0 + 3)).lookup.is_none(), "slow: no follow-up");
        assert!(s.poll(secs(T0 + 300)).lookup.is_some());
        s.set_fast(true);
        assert!(
            s.poll(secs(T0 + 303)).lookup.is_none(),
            "only after the first lookup"
        );
        assert!(s.poll(secs(T0 + 312)).lookup.is_some());
    }

    #[test]
    fn fast_and_slow_lookup_pacing() {
        let p = Pacing::default();
        let mut s = Schedule::new(p);
        s.poll(secs(T0));
        s.announce_done(true);
        assert!(s.poll(secs(T0)).lookup.is_none());
        // The second lookup is the start's follow-up (3 s); then every 12 s.
        assert!(s.poll(secs(T0)).lookup.is_none());
        assert!(s.poll(secs(T0 + 2)).lookup.is_none());
        assert!(s.poll(secs(T0 + 3)).lookup.is_some());
        assert!(s.poll(secs(T0 + 14)).lookup.is_none());
        assert!(s.poll(secs(T0 + 15)).lookup.is_some());
        assert!(s.poll(secs(T0 + 26)).lookup.is_none());
        assert!(
            s.poll(secs(T0 + 12)).lookup.is_some(),
            "a clock that went back"
        );
        s.set_fast(false);
        assert!(!s.is_fast());
        assert!(s.poll(secs(T0 + 12 + 299)).lookup.is_none());
        assert_eq!(s.sleep_for(secs(T0 + 12 + 299)), secs(1));
        assert!(s.poll(secs(T0 + 12 + 300)).lookup.is_some());
        // Back to fast: the last lookup is older than the fast interval, so one is due at once.
        s.set_fast(true);
        assert!(s.poll(secs(T0 + 312 + 20)).lookup.is_some());
    }

    #[test]
    fn reannounces_every_fifteen_minutes_within_an_hour() {
        let mut s = Schedule::new(Pacing::default());
        s.set_fast(false);
        let e = T0 / 3600;
        assert_eq!(s.poll(secs(T0)).announce, Some(e));
        s.announce_done(true);
        assert_eq!(s.poll(secs(T0 + 899)).announce, None);
        assert_eq!(s.poll(secs(T0 + 900)).announce, Some(e));
    }

    #[test]
    fn hour_boundary_announces_new_infohash_at_once() {
        let mut s = Schedule::new(Pacing::default());
        s.set_fast(false);
        let start = T0 + 3600 - 60; // one minute before the next hour
        let e = T0 / 3600;
        assert_eq!(s.poll(secs(start)).announce, Some(e));
        s.announce_done(true);
        // The sleep ends at the boundary, not 15 minutes later.
        assert_eq!(s.sleep_for(secs(start)), secs(60));
        assert_eq!(s.poll(secs(T0 + 3599)).announce, None);
        let due = s.poll(secs(T0 + 3600));
        assert_eq!(due.announce, Some(e + 1));
        // A slow-mode lookup made at start is not yet due again.
        assert_eq!(due.lookup, None);
        assert_eq!(s.poll(secs(start + 300)).lookup, Some([e, e + 1, e + 2]));
    }

    #[test]
    fn failed_announce_is_retried_soon() {
        let p = Pacing::default();
        let mut s = Schedule::new(p);
        s.poll(secs(T0));
        s.announce_done(false);
        assert_eq!(s.poll(secs(T0 + 29)).announce, None);
        assert!(s.poll(secs(T0 + 30)).announce.is_some());
    }

    #[test]
    fn clock_jumping_back_makes_everything_due() {
        let mut s = Schedule::new(Pacing::default());
        s.poll(secs(T0));
        s.announce_done(true);
        let due = s.poll(secs(T0 - 7200));
        assert_eq!(due.announce, Some(T0 / 3600 - 2));
        assert!(due.lookup.is_some());
    }

    #[test]
    fn port_change_forces_announce() {
        let mut s = Schedule::new(Pacing::default());
        s.poll(secs(T0));
        s.announce_done(true);
        s.reannounce_now();
        assert_eq!(s.sleep_for(secs(T0 + 1)), Duration::ZERO);
        assert!(s.poll(secs(T0 + 1)).announce.is_some());
    }
}
