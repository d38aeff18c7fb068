//! When each discovery source is polled, and whether the DHT looks up fast or slow.
//!
//! Fast polls while starting (a lost first datagram costs a second, not a minute), then slow: a
//! newcomer announces itself, so a steady mesh only needs the slow polls to notice healed
//! partitions. The peer cache is only useful while starting, so it falls silent after.
//!
//! The slow interval grows with the members we know, `SLOW_POLL × (members + 1)` (jittered by
//! ±50 %, capped at [`MAX_SLOW_POLL`]): the mesh as a whole then beacons about once per
//! [`SLOW_POLL`], whatever its size, so what a node receives from beacons does not grow with N,
//! and each half of a split mesh still beacons that often to find the other.

use std::time::{Duration, Instant};
use wgmesh_mesh::Source;

/// Polls of LAN and static sources one second apart before falling back to [`SLOW_POLL`].
pub const FAST_POLLS: u32 = 5;
/// The steady poll interval of LAN multicast and static seeds, for a node that knows no member
/// (see the module documentation for how it grows).
pub const SLOW_POLL: Duration = Duration::from_secs(30);
/// The slow interval never grows past this.
pub const MAX_SLOW_POLL: Duration = Duration::from_secs(3_600);
/// Polls of the peer cache: once a second for ten seconds, then never again.
pub const CACHE_POLLS: u32 = 10;
/// The mesh counts as stable (slow DHT lookups) once no member has joined for this long.
pub const DHT_SETTLE: Duration = Duration::from_secs(60);

const FAST_POLL: Duration = Duration::from_secs(1);

/// One polled discovery source.
#[derive(Debug, Clone)]
struct Polled {
    source: Source,
    polls: u32,
    /// `None` once the source has nothing more to give (the cache after its start-up polls).
    next: Option<Instant>,
}

impl Polled {
    /// `jitter_permille` (0..1000) spreads slow polls from ×0.5 to ×1.5.
    fn after_poll(&self, members: usize, jitter_permille: u64) -> Option<Duration> {
        match self.source {
            Source::Cache if self.polls >= CACHE_POLLS => None,
            Source::Cache => Some(FAST_POLL),
            _ if self.polls < FAST_POLLS => Some(FAST_POLL),
            _ => Some(slow_poll(members, jitter_permille)),
        }
    }
}

/// The slow interval for a node that knows `members` members.
pub fn slow_poll(members: usize, jitter_permille: u64) -> Duration {
    let base = SLOW_POLL.saturating_mul(u32::try_from(members + 1).unwrap_or(u32::MAX));
    let jittered = base.as_millis() as u64 * (500 + jitter_permille.min(999)) / 1000;
    Duration::from_millis(jittered).min(MAX_SLOW_POLL)
}

/// The poll schedule of every polled source (LAN, static, cache). The DHT pushes candidates on
/// its own and is not polled.
#[derive(Debug, Clone, Default)]
pub struct DiscoverySchedule {
    sources: Vec<Polled>,
}

impl DiscoverySchedule {
    /// Adds a source, first polled at `now`. A source added twice is polled once.
    pub fn add(&mut self, source: Source, now: Instant) {
        if self.sources.iter().any(|p| p.source == source) {
            return;
        }
        self.sources.push(Polled {
            source,
            polls: 0,
            next: Some(now),
        });
    }

    pub fn next_deadline(&self) -> Option<(Instant, Source)> {
        self.sources
            .iter()
            .filter_map(|p| Some((p.next?, p.source)))
            .min_by_key(|(t, _)| *t)
    }

    /// The sources due at `now`, each rescheduled; `members` is how many we know, `jitter` a
    /// random number (the core's seeded stream).
    pub fn due(&mut self, now: Instant, members: usize, jitter: u64) -> Vec<Source> {
        let mut due = Vec::new();
        for polled in &mut self.sources {
            if polled.next.is_some_and(|t| t <= now) {
                polled.polls = polled.polls.saturating_add(1);
                polled.next = polled.after_poll(members, jitter % 1000).map(|d| now + d);
                due.push(polled.source);
            }
        }
        due
    }

    /// The host moved networks: poll every source that still has something to give at once.
    pub fn rediscover(&mut self, now: Instant) {
        for polled in &mut self.sources {
            if polled.next.is_some() {
                polled.next = Some(now);
            }
        }
    }
}

/// Fast DHT lookups while forming, and again when a member went missing (it may be back at a
/// new address), until the mesh has been stable for [`DHT_SETTLE`].
#[derive(Debug, Clone)]
pub struct DhtCadence {
    last_join: Instant,
    members_seen: usize,
    fast: Option<bool>,
}

impl DhtCadence {
    pub fn new(now: Instant) -> Self {
        Self {
            last_join: now,
            members_seen: 0,
            fast: None,
        }
    }

    pub fn joined(&mut self, now: Instant) {
        self.last_join = now;
    }

    /// Called at every member refresh; returns the new setting when it changed.
    pub fn review(&mut self, now: Instant, members: usize) -> Option<bool> {
        if members < self.members_seen {
            self.last_join = now;
        }
        self.members_seen = members;
        let fast = members == 0 || now.duration_since(self.last_join) < DHT_SETTLE;
        (self.fast != Some(fast)).then(|| {
            self.fast = Some(fast);
            fast
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll_times(source: Source, until: Duration) -> Vec<u64> {
        let start = Instant::now();
        let mut schedule = DiscoverySchedule::default();
        schedule.add(source, start);
        let mut times = Vec::new();
        while let Some((at, _)) = schedule.next_deadline() {
            if at > start + until {
                break;
            }
            assert_eq!(schedule.due(at, 0, 500), vec![source]);
            times.push(at.duration_since(start).as_secs());
        }
        times
    }

    #[test]
    fn lan_and_static_poll_fast_then_slow() {
        for source in [Source::Lan, Source::Static] {
            assert_eq!(
                poll_times(source, Duration::from_secs(100)),
                vec![0, 1, 2, 3, 4, 34, 64, 94]
            );
        }
    }

    #[test]
    fn the_cache_polls_ten_times_then_falls_silent() {
        assert_eq!(
            poll_times(Source::Cache, Duration::from_secs(10_000)),
            (0..10).collect::<Vec<_>>()
        );
    }

    #[test]
    fn rediscovery_polls_live_sources_at_once() {
        let start = Instant::now();
        let mut schedule = DiscoverySchedule::default();
        schedule.add(Source::Lan, start);
        schedule.add(Source::Cache, start);
        let mut now = start;
        for _ in 0..12 {
            now += Duration::from_secs(1);
            schedule.due(now, 0, 500);
        }
        let later = now + Duration::from_secs(5);
        schedule.rediscover(later);
        assert_eq!(schedule.due(later, 0, 500), vec![Source::Lan]);
    }

    #[test]
    fn the_slow_poll_grows_with_the_mesh_so_the_mesh_beacons_at_a_fixed_rate() {
        assert_eq!(slow_poll(0, 500), SLOW_POLL);
        assert_eq!(slow_poll(9, 500), SLOW_POLL * 10);
        assert_eq!(slow_poll(9, 0), SLOW_POLL * 5);
        assert_eq!(slow_poll(9, 999), Duration::from_millis(449_700));
        assert_eq!(slow_poll(10_000, 500), MAX_SLOW_POLL);
    }

    #[test]
    fn dht_is_fast_while_forming_and_after_a_loss() {
        let start = Instant::now();
        let mut dht = DhtCadence::new(start);
        let at = |s| start + Duration::from_secs(s);
        assert_eq!(dht.review(at(60), 0), Some(true));
        dht.joined(at(70));
        assert_eq!(dht.review(at(120), 3), None);
        assert_eq!(dht.review(at(180), 3), Some(false));
        // A member went missing: fast again.
        assert_eq!(dht.review(at(240), 2), Some(true));
        assert_eq!(dht.review(at(360), 2), Some(false));
    }
}
