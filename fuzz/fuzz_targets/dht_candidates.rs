//! `wgmesh_dht::candidates_from_dht`: what the daemon probes of the peers a DHT lookup returned
//! (untrusted: any DHT node on the path answers). Checked against a naive model: each output is
//! a probe target from its batch, new in its round, in batch order, and a round never yields
//! more than MAX_CANDIDATES_PER_ROUND; nothing acceptable is skipped below the bound.
//!
//! Input: `flags | batch*`, `flags & 1` = accept loopback; `batch = count:u8 | count x peer`
//! with `peer` in the DHT's compact form (4 bytes IPv4, 2 bytes port, big-endian, as in a
//! get_peers `values` list); a count of 0 starts a new lookup round.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::{BTreeSet, HashSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use wgmesh_dht::{MAX_CANDIDATES_PER_ROUND, candidates_from_dht, is_probe_target};

fn peers(bytes: &[u8]) -> Vec<SocketAddrV4> {
    bytes
        .chunks_exact(6)
        .map(|p| {
            SocketAddrV4::new(
                Ipv4Addr::new(p[0], p[1], p[2], p[3]),
                u16::from_be_bytes([p[4], p[5]]),
            )
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let accept_loopback = flags & 1 == 1;
    let mut seen = HashSet::new();
    let mut model: BTreeSet<SocketAddrV4> = BTreeSet::new();
    while let Some((&count, tail)) = rest.split_first() {
        if count == 0 {
            seen.clear();
            model.clear();
            rest = tail;
            continue;
        }
        let len = (usize::from(count) * 6).min(tail.len());
        let batch = peers(&tail[..len]);
        rest = &tail[len..];

        let got = candidates_from_dht(&batch, &mut seen, accept_loopback);
        let mut want = Vec::new();
        for addr in &batch {
            if model.len() >= MAX_CANDIDATES_PER_ROUND {
                break;
            }
            if is_probe_target(*addr, accept_loopback) && model.insert(*addr) {
                want.push(SocketAddr::V4(*addr));
            }
        }
        assert_eq!(got, want, "batch {batch:?}");
        assert!(seen.len() <= MAX_CANDIDATES_PER_ROUND);
        assert_eq!(seen.len(), model.len());
        for addr in &got {
            let SocketAddr::V4(v4) = addr else {
                panic!("an IPv6 candidate from an IPv4 DHT: {addr}");
            };
            assert_ne!(v4.port(), 0);
            assert!(
                !v4.ip().is_multicast() && !v4.ip().is_unspecified() && !v4.ip().is_broadcast()
            );
            assert!(accept_loopback || !v4.ip().is_loopback());
        }
    }
});
