//! The failure detector: a fixed probe rate per node, as in SWIM (Das, Gupta and Motivala, 2002),
//! so what liveness costs a node does not grow with the size of the mesh.
//!
//! Every [`PROBE_INTERVAL`] the node probes one member, taking members in a shuffled round-robin
//! order (each is probed once per round, a round takes N intervals). A probe that is not
//! answered within [`PROBE_TIMEOUT`] is sent again, up to [`PROBE_ATTEMPTS`] times in all (the
//! core sends the later attempts through the member's tunnel too: a second path). A member that
//! answered none is declared failed, but only if this node itself is known to be connected:
//! some other member answered it while the probe ran (the core probes a random other member, a
//! witness, with the later attempts). A host that lost its own network must not expire the
//! whole mesh one member at a time.
//!
//! A member that failed becomes a *suspect* (SWIM's suspicion): it stays a member (its tunnel and
//! routes stay, so a network blip costs nothing when it heals), one suspect is probed again per
//! interval, and it is removed only if it answered none of these for [`SUSPECT_TIMEOUT`] while
//! we kept hearing from others. An answer clears the suspicion.
//!
//! A verdict is local: each node removes only members that failed its own probes. Other members
//! are told (a suspect hint in gossip) so they probe the member at once rather than wait for
//! their own turn; they too suspect and remove it only if it fails their probes. An insider's
//! hint therefore costs one probe per named member, never a removal.
//!
//! Cost per node and minute at the 10 s interval: 6 probes sent, 6 answers sent to other
//! members' probes, 6 final Hellos: 18 datagrams, whatever N is.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};
use wgmesh_keys::PublicKey;

/// One member probed per interval.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(10);
/// How long one attempt waits for its answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Attempts per probe before the member counts as failed (the first plus retries).
pub const PROBE_ATTEMPTS: u32 = 3;
/// A hinted member (another member suspects it) is probed at most once per this window, so
/// hints cannot be used to make a node probe one member over and over.
pub const HINT_COOLDOWN: Duration = Duration::from_secs(60);
/// At most this many hinted probes wait; later hints are dropped until these are done.
pub const MAX_HINTED: usize = 64;
/// A suspect that answers none of its re-probes for this long is removed.
pub const SUSPECT_TIMEOUT: Duration = Duration::from_secs(120);
/// Removal also needs an answer from some other member within this window (we are connected).
const CONNECTED_WINDOW: Duration = Duration::from_secs(30);

/// What the core is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Probe this member (`attempt` 1 is the first; later attempts go through the tunnel too).
    Probe { key: PublicKey, attempt: u32 },
    /// The member answered none of its attempts: it is now a suspect; tell the others.
    Suspect(PublicKey),
    /// Probe a suspect once more (directly and through its tunnel).
    Recheck(PublicKey),
    /// A suspect stayed silent for [`SUSPECT_TIMEOUT`]: remove it.
    Failed(PublicKey),
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    key: PublicKey,
    started: Instant,
    attempts: u32,
    deadline: Instant,
}

#[derive(Debug)]
pub struct Liveness {
    /// Members still to be probed this round.
    round: VecDeque<PublicKey>,
    next_probe: Instant,
    /// Probes waiting for an answer: the round's current one and hinted ones.
    pending: Vec<Pending>,
    /// Members others suspect, to probe at once (from when the hint came), and when each was
    /// last hinted.
    hinted: VecDeque<(PublicKey, Instant)>,
    hinted_at: HashMap<PublicKey, Instant>,
    /// Members that failed a probe, and since when.
    suspects: BTreeMap<PublicKey, Instant>,
    /// The suspect rechecked last (they are rechecked in key order, one per interval).
    recheck_after: Option<PublicKey>,
    last_answer: Option<Instant>,
}

impl Liveness {
    pub fn new(now: Instant) -> Self {
        Self {
            round: VecDeque::new(),
            next_probe: now + PROBE_INTERVAL,
            pending: Vec::new(),
            hinted: VecDeque::new(),
            hinted_at: HashMap::new(),
            suspects: BTreeMap::new(),
            recheck_after: None,
            last_answer: None,
        }
    }

    pub fn next_deadline(&self) -> Instant {
        self.pending
            .iter()
            .map(|p| p.deadline)
            .chain(self.hinted.iter().map(|(_, at)| *at))
            .fold(self.next_probe, Instant::min)
    }

    /// A member proved itself (any verified Hello): its probe, if any, is answered, and we are
    /// connected.
    /// Returns whether `key` was a suspect (and no longer is).
    pub fn answered(&mut self, key: &PublicKey, now: Instant) -> bool {
        self.last_answer = Some(now);
        self.pending.retain(|p| p.key != *key);
        self.suspects.remove(key).is_some()
    }

    pub fn is_suspect(&self, key: &PublicKey) -> bool {
        self.suspects.contains_key(key)
    }

    pub fn suspects(&self) -> usize {
        self.suspects.len()
    }

    /// The member is gone (goodbye, removal): nothing more to ask it.
    pub fn forget(&mut self, key: &PublicKey) {
        self.pending.retain(|p| p.key != *key);
        self.round.retain(|k| k != key);
        self.hinted.retain(|(k, _)| k != key);
        self.suspects.remove(key);
    }

    /// Another member suspects `key`: probe it soon, unless it was hinted recently.
    pub fn hint(&mut self, key: PublicKey, now: Instant) -> bool {
        let recent = self
            .hinted_at
            .get(&key)
            .is_some_and(|at| now.duration_since(*at) < HINT_COOLDOWN);
        if recent || self.hinted.len() >= MAX_HINTED || self.pending.iter().any(|p| p.key == key) {
            return false;
        }
        self.hinted_at
            .retain(|_, at| now.duration_since(*at) < HINT_COOLDOWN);
        if self.hinted_at.len() >= 4 * MAX_HINTED {
            return false;
        }
        self.hinted_at.insert(key, now);
        self.hinted.push_back((key, now));
        true
    }

    /// Whether another member answered us since `since` (the guard against expiring the mesh
    /// while it is our own network that is down).
    fn connected_since(&self, since: Instant) -> bool {
        self.last_answer.is_some_and(|at| at >= since)
    }

    /// What is due at `now`. `members` lists the current members; `shuffle` orders a new round
    /// (the core's seeded randomness, so a run replays).
    pub fn due(
        &mut self,
        now: Instant,
        is_member: impl Fn(&PublicKey) -> bool,
        new_round: impl FnOnce() -> Vec<PublicKey>,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        let mut still = Vec::with_capacity(self.pending.len());
        for mut pending in std::mem::take(&mut self.pending) {
            if pending.deadline > now {
                still.push(pending);
            } else if !is_member(&pending.key) {
                // Removed meanwhile (goodbye): nothing to decide.
            } else if pending.attempts < PROBE_ATTEMPTS {
                pending.attempts += 1;
                pending.deadline = now + PROBE_TIMEOUT;
                actions.push(Action::Probe {
                    key: pending.key,
                    attempt: pending.attempts,
                });
                still.push(pending);
            } else if self.connected_since(pending.started) {
                self.suspects.entry(pending.key).or_insert(now);
                actions.push(Action::Suspect(pending.key));
            }
            // Else no verdict (we may be the one cut off); it comes round again next round.
        }
        self.pending = still;
        while let Some((key, _)) = self.hinted.pop_front() {
            if is_member(&key) && !self.pending.iter().any(|p| p.key == key) {
                self.start(key, now, &mut actions);
            }
        }
        self.suspects.retain(|key, _| is_member(key));
        let connected = self
            .last_answer
            .is_some_and(|at| now.saturating_duration_since(at) < CONNECTED_WINDOW);
        let expired: Vec<PublicKey> = self
            .suspects
            .iter()
            .filter(|(_, since)| now.saturating_duration_since(**since) >= SUSPECT_TIMEOUT)
            .map(|(key, _)| *key)
            .collect();
        if connected {
            for key in expired {
                self.suspects.remove(&key);
                actions.push(Action::Failed(key));
            }
        }
        if self.next_probe <= now {
            self.next_probe = now + PROBE_INTERVAL;
            if let Some(key) = self.next_suspect() {
                actions.push(Action::Recheck(key));
            }
            if self.round.is_empty() {
                self.round = new_round().into();
            }
            while let Some(key) = self.round.pop_front() {
                if !is_member(&key) || self.suspects.contains_key(&key) {
                    continue;
                }
                if !self.pending.iter().any(|p| p.key == key) {
                    self.start(key, now, &mut actions);
                }
                break;
            }
        }
        actions
    }

    /// The suspect after the one rechecked last, in key order, wrapping around.
    fn next_suspect(&mut self) -> Option<PublicKey> {
        use std::ops::Bound::{Excluded, Unbounded};
        let after = self.recheck_after.map_or(Unbounded, Excluded);
        let next = self
            .suspects
            .range((after, Unbounded))
            .next()
            .or_else(|| self.suspects.iter().next())
            .map(|(key, _)| *key);
        self.recheck_after = next;
        next
    }

    fn start(&mut self, key: PublicKey, now: Instant, actions: &mut Vec<Action>) {
        self.pending.push(Pending {
            key,
            started: now,
            attempts: 1,
            deadline: now + PROBE_TIMEOUT,
        });
        actions.push(Action::Probe { key, attempt: 1 });
    }

    /// Probes waiting for an answer plus hinted ones (bounded: one per round and at most
    /// [`MAX_HINTED`] hinted). Suspects are members, bounded by the member table.
    pub fn len(&self) -> usize {
        self.pending.len() + self.hinted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> PublicKey {
        PublicKey::from_bytes([n; 32])
    }

    fn probes(actions: &[Action]) -> Vec<(u8, u32)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Probe { key, attempt } => Some((key.as_bytes()[0], *attempt)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn one_member_per_interval_each_once_per_round() {
        let start = Instant::now();
        let mut liveness = Liveness::new(start);
        let members = [key(1), key(2), key(3)];
        let mut probed = Vec::new();
        let mut now = start;
        for _ in 0..6 {
            now += PROBE_INTERVAL;
            let actions = liveness.due(now, |k| members.contains(k), || members.to_vec());
            assert_eq!(actions.len(), 1);
            let (k, attempt) = probes(&actions)[0];
            assert_eq!(attempt, 1);
            liveness.answered(&key(k), now);
            probed.push(k);
        }
        assert_eq!(probed, [1, 2, 3, 1, 2, 3]);
    }

    #[test]
    fn a_silent_member_gets_three_attempts_then_fails_only_if_another_answered_meanwhile() {
        let start = Instant::now();
        let members = [key(1), key(2)];
        let run = |witness_answers: bool| {
            let mut liveness = Liveness::new(start);
            // An answer from before the probe proves nothing about now.
            liveness.answered(&key(2), start);
            let mut now = start + PROBE_INTERVAL;
            let mut all = liveness.due(now, |k| members.contains(k), || vec![key(1)]);
            for _ in 0..3 {
                now += PROBE_TIMEOUT;
                if witness_answers {
                    liveness.answered(&key(2), now - PROBE_TIMEOUT / 2);
                }
                all.extend(liveness.due(now, |k| members.contains(k), Vec::new));
            }
            all
        };
        let healthy = run(true);
        assert_eq!(probes(&healthy), [(1, 1), (1, 2), (1, 3)]);
        assert_eq!(healthy.last(), Some(&Action::Suspect(key(1))));
        let isolated = run(false);
        assert_eq!(probes(&isolated), [(1, 1), (1, 2), (1, 3)]);
        assert!(!isolated.iter().any(|a| matches!(a, Action::Suspect(_))));
    }

    #[test]
    fn a_suspect_is_rechecked_each_interval_and_removed_after_the_timeout_unless_it_answers() {
        let start = Instant::now();
        let members = [key(1), key(2)];
        let is_member = |k: &PublicKey| members.contains(k);
        let mut liveness = Liveness::new(start);
        liveness.suspects.insert(key(1), start);
        let mut now = start;
        let mut rechecks = 0;
        let mut failed = None;
        while now < start + SUSPECT_TIMEOUT + PROBE_INTERVAL {
            now += PROBE_INTERVAL;
            // Member 2 keeps answering: we are connected.
            liveness.answered(&key(2), now);
            for action in liveness.due(now, is_member, || vec![key(1), key(2)]) {
                match action {
                    Action::Recheck(k) => {
                        assert_eq!(k, key(1));
                        rechecks += 1;
                    }
                    Action::Probe { key: k, .. } => {
                        assert!(k == key(2) || failed.is_some(), "suspects skip rounds");
                    }
                    Action::Failed(k) => failed = failed.or(Some((k, now))),
                    Action::Suspect(_) => {}
                }
            }
        }
        assert!(rechecks >= 11, "{rechecks}");
        assert_eq!(failed, Some((key(1), start + SUSPECT_TIMEOUT)));

        // An answer clears it.
        let mut liveness = Liveness::new(start);
        liveness.suspects.insert(key(1), start);
        assert!(liveness.answered(&key(1), start + PROBE_INTERVAL));
        assert!(!liveness.is_suspect(&key(1)));
    }

    #[test]
    fn hints_probe_at_once_but_at_most_once_per_cooldown() {
        let start = Instant::now();
        let mut liveness = Liveness::new(start);
        let members = [key(1), key(2)];
        assert!(liveness.hint(key(2), start));
        assert!(liveness.next_deadline() <= start + PROBE_INTERVAL);
        let actions = liveness.due(start, |k| members.contains(k), Vec::new);
        assert_eq!(probes(&actions), [(2, 1)]);
        liveness.answered(&key(2), start);
        assert!(!liveness.hint(key(2), start + Duration::from_secs(30)));
        assert!(liveness.hint(key(2), start + HINT_COOLDOWN));
    }

    #[test]
    fn tables_stay_bounded_under_a_flood_of_hints() {
        let start = Instant::now();
        let mut liveness = Liveness::new(start);
        for n in 0..=255u8 {
            for m in 0..8u8 {
                let mut bytes = [n; 32];
                bytes[1] = m;
                liveness.hint(PublicKey::from_bytes(bytes), start);
            }
        }
        assert!(liveness.hinted.len() <= MAX_HINTED);
        assert!(liveness.hinted_at.len() <= 4 * MAX_HINTED);
    }
}
