//! The membership core (`wgmesh_membership::Membership`) driven by arbitrary sequences of
//! datagrams, timer firings and inputs, with four real members (exchanges whose keys the harness
//! holds) that answer what the core sends them, so the fuzzer reaches verification, gossip,
//! punching, relaying and goodbyes, not only the AEAD gate.
//!
//! Input: the `exchange_handle` step framing (`fuzz/fixture/mesh.rs`), read differently; `op % 6`:
//!   0 RAW:        payload is a datagram to the core from `source(src)`.
//!   1 PEER PROBE: member `signer` probes the core.
//!   2 DELIVER:    what the core sent to a member is handed to it; its answers come back.
//!   3 TIMER:      the core's timer fires if due (every step first advances the clock by `dt_ms`).
//!   4 CANDIDATES: payload is 6-byte IPv4 addresses (address, port) from a discovery source.
//!   5 CHANGE:     `fix & 1`: the host's addresses changed; `fix & 2`: goodbye to all.
#![no_main]

#[path = "../fixture/mesh.rs"]
mod fixture;

use fixture::*;
use libfuzzer_sys::fuzz_target;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use wgmesh_exchange::{ENTROPY_LEN, Entropy, Exchange, ExchangeConfig, MAX_DATAGRAM_LEN};
use wgmesh_membership::{Config, Membership, Transmit, found, liveness, punch, relay};
use wgmesh_mesh::Source;

fn entropy(step: usize, who: u8) -> Entropy {
    let mut input = (step as u64).to_be_bytes().to_vec();
    input.push(who);
    let mut bytes = [0u8; ENTROPY_LEN];
    blake3::Hasher::new()
        .update(&input)
        .finalize_xof()
        .fill(&mut bytes);
    Entropy::from_bytes(bytes)
}

struct Peer {
    exchange: Exchange,
    addr: SocketAddr,
}

fuzz_target!(|data: &[u8]| {
    let keys = mesh();
    let exchange = Exchange::new(
        keys,
        private_key(TARGET_ID),
        record_for(TARGET_ID),
        ExchangeConfig::default(),
    )
    .unwrap_or_else(|err| panic!("fixture record: {err}"));
    let own_key = exchange.public_key().to_owned();
    let config = Config {
        control_port: 51900,
        mesh_prefixes: vec![
            ipnet::IpNet::V4(keys.ipv4_subnet()),
            ipnet::IpNet::V6(keys.ipv6_prefix()),
        ],
        lan_discovery: true,
        dht: true,
        established: false,
        relays: None,
        relay_tiebreak_key: keys.network_id(),
        max_members: wgmesh_membership::MAX_MEMBERS,
    };
    let start = Instant::now();
    let mut now = start;
    let mut wall = NOW;
    let mut core = Membership::new(config, exchange, [7; 32], now);
    core.add_discovery(Source::Lan, now);
    core.set_connected_networks(vec![ipnet::IpNet::V4(ipnet::Ipv4Net::new_assert(
        std::net::Ipv4Addr::new(198, 51, 100, 0),
        24,
    ))]);
    let mut peers: Vec<Peer> = SIGNER_IDS
        .iter()
        .map(|&id| Peer {
            exchange: Exchange::new(
                keys,
                private_key(id),
                record_for(id),
                ExchangeConfig::default(),
            )
            .unwrap_or_else(|err| panic!("fixture record: {err}")),
            addr: source(id),
        })
        .collect();
    let mut outbox: Vec<Transmit> = Vec::new();
    let signers: Vec<_> = SIGNER_IDS.iter().map(|&id| public_key(id)).collect();

    for (i, step) in parse_steps(data).into_iter().take(64).enumerate() {
        now += Duration::from_millis(u64::from(step.dt_ms));
        wall = wall.saturating_add(u64::from(step.dt_ms));
        let peer = usize::from(step.signer) % peers.len();
        match step.op % 6 {
            0 if step.fix & 4 != 0 => {
                core.handle_group_datagram(now, wall, source(step.src), step.payload)
            }
            0 => core.handle_datagram(now, wall, source(step.src), step.payload),
            1 => {
                let probe = peers[peer]
                    .exchange
                    .probe(wall, source(0), entropy(i, step.signer));
                core.handle_datagram(now, wall, peers[peer].addr, &probe);
            }
            2 => {
                for transmit in std::mem::take(&mut outbox) {
                    for (n, p) in peers.iter_mut().enumerate() {
                        if p.addr != transmit.dst {
                            continue;
                        }
                        let handled = p.exchange.handle(
                            wall,
                            SocketAddr::from(([198, 51, 100, TARGET_ID], 51900)),
                            &transmit.payload,
                            entropy(i, n as u8 + 100),
                        );
                        if let Some(reply) = handled.reply {
                            core.handle_datagram(now, wall, p.addr, &reply);
                        }
                    }
                }
            }
            3 => {
                if core.poll_timeout().is_some_and(|(at, _)| at <= now) {
                    core.handle_timeout(now, wall);
                    let (next, reason) = core.poll_timeout().unwrap_or_else(|| panic!("no timer"));
                    assert!(next > now, "{reason:?} due again at once");
                }
            }
            4 => {
                let candidates: Vec<SocketAddr> = step
                    .payload
                    .chunks_exact(6)
                    .map(|c| {
                        SocketAddr::from((
                            Ipv4Addr::new(c[0], c[1], c[2], c[3]),
                            u16::from_be_bytes([c[4], c[5]]),
                        ))
                    })
                    .collect();
                core.handle_candidates(wall, Source::Dht, &candidates);
            }
            _ => {
                if step.fix & 1 != 0 {
                    core.handle_addresses_changed(now);
                }
                if step.fix & 2 != 0 {
                    core.goodbye_all(wall);
                }
            }
        }
        while let Some(transmit) = core.poll_transmit() {
            assert!(
                transmit.payload.len() <= MAX_DATAGRAM_LEN,
                "transmit exceeds the datagram bound"
            );
            if outbox.len() < 4_096 {
                outbox.push(transmit);
            }
        }
        while core.poll_event().is_some() {}
        // Only members that proved their key are in the table, never ourselves.
        for member in core.members().iter() {
            assert_ne!(member.public_key, own_key, "holds itself as a member");
            assert!(
                signers.contains(&member.public_key),
                "a member that never proved its key"
            );
        }
        let sizes = core.table_sizes();
        assert!(sizes.probed <= found::MAX_PROBED);
        assert!(sizes.punches <= punch::MAX_PENDING_PUNCHES);
        assert!(sizes.second_hand <= relay::MAX_SECOND_HAND);
        assert!(sizes.liveness <= 2 * liveness::MAX_HINTED + 1);
        assert!(sizes.announcements <= signers.len());
    }
});
