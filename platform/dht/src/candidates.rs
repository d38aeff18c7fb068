//! What a lookup may make us probe. A `get_peers` answer comes from any DHT node on the path to
//! our infohash, not from a member, so its peer list is untrusted: a hostile node can return
//! hundreds of arbitrary addresses per reply. The daemon sends a sealed Probe to every candidate
//! at once, so each accepted address costs one datagram to a host the answering node chose.
//!
//! Dropped here: addresses no member can be reached at (port 0, `0.0.0.0/8`, multicast, the
//! reserved `240.0.0.0/4` including broadcast) and loopback unless the caller runs a DHT on this
//! host. A multicast address matters most: the daemon sends a Probe to a multicast group out of
//! every LAN interface. Kept on purpose:
//! - private, link-local and other special ranges: a DHT reachable on a private network is real
//!   (labs, isolated sites), and the Probe's bytes are AEAD output the answering node cannot
//!   choose;
//! - our own announced address: behind a shared NAT the same `public IP : control port` may be
//!   another member's, and the exchange recognises a Probe from itself (`from_self`).

use std::collections::HashSet;
use std::net::{SocketAddr, SocketAddrV4};

/// New candidates taken from one lookup round (three infohashes, every DHT node that answers).
/// An honest mainline node answers with at most 10 random peers of an infohash, and a lookup
/// reaches a handful of the nodes storing it, so an honest round stays well below this; a hostile
/// node can put a few hundred addresses in each answer. In a larger mesh the random samples
/// differ from round to round, and gossip introduces the rest.
pub const MAX_CANDIDATES_PER_ROUND: usize = 256;

/// Whether a member could be reached at `addr` at all.
pub fn is_probe_target(addr: SocketAddrV4, accept_loopback: bool) -> bool {
    let ip = *addr.ip();
    let first = ip.octets()[0];
    addr.port() != 0
        && first != 0
        && !ip.is_multicast()
        && first < 240
        && (accept_loopback || !ip.is_loopback())
}

/// Filters one batch of a lookup round's peers into the candidates to probe, in batch order:
/// each address once per round (`seen` holds the round's accepted addresses; start each round
/// with an empty set), only [`is_probe_target`] addresses, and at most
/// [`MAX_CANDIDATES_PER_ROUND`] per round in total.
pub fn candidates_from_dht(
    batch: &[SocketAddrV4],
    seen: &mut HashSet<SocketAddrV4>,
    accept_loopback: bool,
) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for &addr in batch {
        if seen.len() >= MAX_CANDIDATES_PER_ROUND {
            break;
        }
        if is_probe_target(addr, accept_loopback) && seen.insert(addr) {
            out.push(SocketAddr::V4(addr));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddrV4 {
        s.parse().unwrap_or_else(|err| panic!("{s}: {err}"))
    }

    #[test]
    fn bogus_addresses_are_not_probed() {
        for (s, loopback_ok, want) in [
            ("203.0.113.7:51900", false, true),
            ("198.18.0.21:51900", false, true),
            ("10.1.0.2:51900", false, true),
            ("192.168.1.5:51900", false, true),
            ("169.254.10.1:51900", false, true),
            ("203.0.113.7:0", false, false),
            ("0.0.0.0:51900", false, false),
            ("0.1.2.3:51900", false, false),
            ("224.0.0.251:51900", false, false),
            ("239.255.77.1:51900", false, false),
            ("240.0.0.1:51900", false, false),
            ("255.255.255.255:51900", false, false),
            ("127.0.0.1:51900", false, false),
            ("127.0.0.1:51900", true, true),
            ("127.0.0.1:0", true, false),
        ] {
            assert_eq!(
                is_probe_target(addr(s), loopback_ok),
                want,
                "{s} loopback_ok={loopback_ok}"
            );
        }
    }

    #[test]
    fn each_address_once_per_round_in_batch_order() {
        let (a, b, c) = (
            addr("192.0.2.1:5000"),
            addr("192.0.2.2:5000"),
            addr("192.0.2.1:5001"),
        );
        let mut seen = HashSet::new();
        let first = candidates_from_dht(&[a, b, a, addr("224.0.0.1:5000")], &mut seen, false);
        assert_eq!(first, [SocketAddr::V4(a), SocketAddr::V4(b)]);
        let second = candidates_from_dht(&[b, c, a], &mut seen, false);
        assert_eq!(second, [SocketAddr::V4(c)]);
        // A new round reports the same members again.
        let next_round = candidates_from_dht(&[b, a], &mut HashSet::new(), false);
        assert_eq!(next_round, [SocketAddr::V4(b), SocketAddr::V4(a)]);
    }

    #[test]
    fn a_round_is_bounded_however_many_peers_the_dht_returns() {
        let flood: Vec<SocketAddrV4> = (0..1000u16)
            .map(|i| SocketAddrV4::new(std::net::Ipv4Addr::new(198, 51, 100, 1), 1 + i))
            .collect();
        let mut seen = HashSet::new();
        let first = candidates_from_dht(&flood[..200], &mut seen, false);
        let rest = candidates_from_dht(&flood[200..], &mut seen, false);
        assert_eq!(first.len(), 200);
        assert_eq!(first.len() + rest.len(), MAX_CANDIDATES_PER_ROUND);
        assert!(candidates_from_dht(&[addr("192.0.2.9:1")], &mut seen, false).is_empty());
        // Rejected and repeated addresses do not use up the bound.
        let mut seen = HashSet::new();
        let junk = vec![addr("0.0.0.0:0"); 1000];
        assert!(candidates_from_dht(&junk, &mut seen, false).is_empty());
        assert_eq!(
            candidates_from_dht(&flood, &mut seen, false).len(),
            MAX_CANDIDATES_PER_ROUND
        );
    }
}
