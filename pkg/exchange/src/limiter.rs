//! Token buckets: per source address for strangers, consulted before any cryptographic work so
//! that a flood from one address costs a hash-map lookup per datagram, not an AEAD open and an
//! X25519; and per key for verified members (issue 13), in a table of their own, so that neither
//! spoofed garbage from a member's address nor a flood of spoofed sources locks a member out.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};

/// How long a full table waits before scanning again for idle buckets, so that a flood of
/// spoofed sources cannot make every datagram pay for a full scan.
const PURGE_INTERVAL_MS: u64 = 1_000;
/// Tokens are kept in thousandths so that refill needs no floating point.
const MILLI: u64 = 1_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    milli_tokens: u64,
    last_ms: u64,
}

/// Buckets keyed by `K`: a source (see [`RateLimiter::allow`]) or a member's key.
#[derive(Debug)]
pub(crate) struct RateLimiter<K = IpAddr> {
    per_second: u64,
    capacity: u64,
    max_sources: usize,
    buckets: HashMap<K, Bucket>,
    last_purge_ms: Option<u64>,
}

impl RateLimiter<IpAddr> {
    /// Whether one more datagram from `ip` may be processed at `now_ms`.
    pub(crate) fn allow(&mut self, now_ms: u64, ip: IpAddr) -> bool {
        self.allow_key(now_ms, source_of(ip))
    }
}

impl<K: Hash + Eq + Copy> RateLimiter<K> {
    pub(crate) fn new(per_second: u32, burst: u32, max_sources: usize) -> Self {
        Self {
            per_second: u64::from(per_second),
            capacity: u64::from(burst.max(1)) * MILLI,
            max_sources: max_sources.max(1),
            buckets: HashMap::new(),
            last_purge_ms: None,
        }
    }

    /// Whether one more datagram from `source` may be processed at `now_ms`.
    pub(crate) fn allow_key(&mut self, now_ms: u64, source: K) -> bool {
        if !self.buckets.contains_key(&source) && self.buckets.len() >= self.max_sources {
            self.purge_idle(now_ms);
            if self.buckets.len() >= self.max_sources {
                // Every tracked source is active: shed newcomers rather than hand a flooder's
                // fresh addresses the burst of a source we evicted.
                return false;
            }
        }
        let (per_second, capacity) = (self.per_second, self.capacity);
        let bucket = self.buckets.entry(source).or_insert(Bucket {
            milli_tokens: capacity,
            last_ms: now_ms,
        });
        let elapsed = now_ms.saturating_sub(bucket.last_ms);
        bucket.milli_tokens = bucket
            .milli_tokens
            .saturating_add(elapsed.saturating_mul(per_second))
            .min(capacity);
        bucket.last_ms = bucket.last_ms.max(now_ms);
        if bucket.milli_tokens >= MILLI {
            bucket.milli_tokens -= MILLI;
            true
        } else {
            false
        }
    }

    /// Drops buckets that have refilled completely: they are indistinguishable from new ones.
    fn purge_idle(&mut self, now_ms: u64) {
        if self
            .last_purge_ms
            .is_some_and(|last| now_ms.saturating_sub(last) < PURGE_INTERVAL_MS)
        {
            return;
        }
        self.last_purge_ms = Some(now_ms);
        let (per_second, capacity) = (self.per_second, self.capacity);
        self.buckets.retain(|_, b| {
            let elapsed = now_ms.saturating_sub(b.last_ms);
            b.milli_tokens
                .saturating_add(elapsed.saturating_mul(per_second))
                < capacity
        });
    }
}

/// The unit of rate limiting: an IPv4 address, or an IPv6 /64 (one host usually owns a whole /64
/// and could otherwise rotate through 2^64 addresses).
fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::V6(Ipv6Addr::from(octets))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn burst_then_refill() {
        let mut limiter = RateLimiter::<IpAddr>::new(20, 40, 16);
        assert_eq!((0..100).filter(|_| limiter.allow(0, A)).count(), 40);
        // 20 per second: 50 ms buys one token.
        assert!(!limiter.allow(49, A));
        assert!(limiter.allow(50, A));
        assert!(!limiter.allow(50, A));
        assert_eq!((0..100).filter(|_| limiter.allow(10_000, A)).count(), 40);
        // Another source is unaffected.
        assert!(limiter.allow(50, B));
    }

    #[test]
    fn ipv6_shares_a_bucket_per_64() {
        let mut limiter = RateLimiter::<IpAddr>::new(1, 2, 16);
        let one: IpAddr = "2001:db8::1".parse().unwrap_or(A);
        let two: IpAddr = "2001:db8::ffff:2".parse().unwrap_or(A);
        let other: IpAddr = "2001:db8:0:1::1".parse().unwrap_or(A);
        assert!(limiter.allow(0, one));
        assert!(limiter.allow(0, two));
        assert!(!limiter.allow(0, one));
        assert!(limiter.allow(0, other));
    }

    #[test]
    fn table_is_bounded_and_idle_sources_are_forgotten() {
        let mut limiter = RateLimiter::<IpAddr>::new(20, 40, 4);
        for i in 0..4u8 {
            assert!(limiter.allow(0, IpAddr::V4(Ipv4Addr::new(10, 0, 0, i))));
        }
        let newcomer = IpAddr::V4(Ipv4Addr::new(10, 0, 1, 0));
        assert!(!limiter.allow(0, newcomer), "table full of active sources");
        assert_eq!(limiter.buckets.len(), 4);
        // After the buckets refill they are forgotten and the newcomer gets in.
        assert!(limiter.allow(5_000, newcomer));
        assert!(limiter.buckets.len() <= 4);
    }
}
