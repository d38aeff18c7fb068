//! Budgets for probes that a third party asked for: addresses named by gossip (a member, possibly
//! an insider) or by the DHT (anyone). Without them one gossip datagram made every member send a
//! burst of probes to any address it named: traffic reflected at a victim that never asked.
//!
//! Per target address (IP), at most [`PER_TARGET_PER_MINUTE`] probes per minute; in all, at most
//! [`TOTAL_PER_MINUTE`]. Probes to members we verified, to the LAN group, to static seeds and to
//! the peer cache are not counted: the operator or a proof of key possession vouches for those.

use std::collections::HashMap;
use std::net::IpAddr;

pub const PER_TARGET_PER_MINUTE: u32 = 4;
pub const TOTAL_PER_MINUTE: u32 = 120;
const WINDOW_MS: u64 = 60_000;

#[derive(Debug, Clone, Default)]
pub struct ProbeBudget {
    window_start_ms: u64,
    total: u32,
    /// Probes per target in the current window (at most [`TOTAL_PER_MINUTE`] entries).
    per_target: HashMap<IpAddr, u32>,
    refused: u64,
}

impl ProbeBudget {
    /// Whether a probe to `target` fits the budget at `now_ms` (wall clock: a budget, not a
    /// protocol timestamp); counts it if so.
    pub fn allow(&mut self, now_ms: u64, target: IpAddr) -> bool {
        if now_ms.saturating_sub(self.window_start_ms) >= WINDOW_MS || now_ms < self.window_start_ms
        {
            self.window_start_ms = now_ms;
            self.total = 0;
            self.per_target.clear();
        }
        let spent = self.per_target.get(&target).copied().unwrap_or(0);
        if self.total >= TOTAL_PER_MINUTE || spent >= PER_TARGET_PER_MINUTE {
            self.refused += 1;
            return false;
        }
        self.total += 1;
        self.per_target.insert(target, spent + 1);
        true
    }

    /// Probes refused so far.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    pub fn len(&self) -> usize {
        self.per_target.len()
    }

    pub fn is_empty(&self) -> bool {
        self.per_target.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_target_and_total_caps_hold_within_a_minute_and_reset_after() {
        let mut budget = ProbeBudget::default();
        let victim = IpAddr::from([192, 0, 2, 9]);
        let allowed = (0..10).filter(|_| budget.allow(1_000, victim)).count();
        assert_eq!(allowed, PER_TARGET_PER_MINUTE as usize);
        let others = (0..500u32)
            .filter(|n| budget.allow(2_000, IpAddr::from(n.to_be_bytes())))
            .count();
        assert_eq!(others, (TOTAL_PER_MINUTE - PER_TARGET_PER_MINUTE) as usize);
        assert!(budget.len() <= TOTAL_PER_MINUTE as usize);
        assert!(budget.allow(61_000, victim));
        assert_eq!(budget.refused(), 6 + 500 - others as u64);
    }
}
