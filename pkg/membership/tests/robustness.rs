//! Whatever arrives and whenever the timer fires, the core never panics, its timer always moves
//! forward, and its tables stay within their caps.

mod sim;

use proptest::prelude::*;
use sim::{NetConfig, NodeOptions, Sim};
use std::net::SocketAddr;
use std::time::Duration;
use wgmesh_membership::{found, punch, relay};
use wgmesh_mesh::Source;

#[derive(Debug, Clone)]
enum Op {
    /// Arbitrary bytes from an arbitrary address.
    Garbage(u32, Vec<u8>),
    /// A real datagram another node sent, delivered again (a replay), possibly from elsewhere.
    Replay(usize, Option<u32>),
    /// Time passes and the timer fires.
    Advance(u16),
    /// A discovery source names addresses.
    Candidates(Vec<u32>),
    AddressesChanged,
    Goodbye,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (any::<u32>(), proptest::collection::vec(any::<u8>(), 0..200))
            .prop_map(|(from, bytes)| Op::Garbage(from, bytes)),
        (0usize..64, proptest::option::of(any::<u32>())).prop_map(|(i, f)| Op::Replay(i, f)),
        any::<u16>().prop_map(Op::Advance),
        proptest::collection::vec(any::<u32>(), 0..8).prop_map(Op::Candidates),
        Just(Op::AddressesChanged),
        Just(Op::Goodbye),
    ]
}

fn addr(n: u32) -> SocketAddr {
    SocketAddr::from((n.to_be_bytes(), (n % 65_535) as u16 + 1))
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_inputs_keep_the_core_sound(ops in proptest::collection::vec(op(), 1..60)) {
        // Three real nodes form a mesh; captured datagrams feed the replays.
        let mut sim = Sim::new(21, NetConfig::default());
        for _ in 0..3 {
            let seed = sim.next_node_seed();
            sim.add_node_with(NodeOptions::new(seed));
        }
        sim.record_trace = false;
        let mut captured: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
        let target = 0;
        for op in ops {
            let now = sim.now;
            let wall = sim.wall_of(target);
            match op {
                Op::Garbage(from, bytes) => sim.inject(target, addr(from), &bytes),
                Op::Replay(i, from) => {
                    if !captured.is_empty() {
                        let (orig, bytes) = captured[i % captured.len()].clone();
                        sim.inject(target, from.map_or(orig, addr), &bytes);
                    }
                }
                Op::Advance(ms) => {
                    sim.run_until(sim.elapsed() + Duration::from_millis(u64::from(ms)), |_| {});
                }
                Op::Candidates(addrs) => {
                    let addrs: Vec<SocketAddr> = addrs.into_iter().map(addr).collect();
                    sim.nodes[target].core.handle_candidates(wall, Source::Dht, &addrs);
                }
                Op::AddressesChanged => sim.nodes[target].core.handle_addresses_changed(now),
                Op::Goodbye => {
                    let wall = sim.wall_of(1);
                    sim.nodes[1].core.goodbye_all(wall);
                }
            }
            // Capture what the other nodes send, then let the network carry it.
            for i in 1..3 {
                while let Some(t) = sim.nodes[i].core.poll_transmit() {
                    captured.push((sim.nodes[i].addr, t.payload));
                }
            }
            let (at, _) = sim.nodes[target].core.poll_timeout().expect("a refresh is always due");
            if at <= sim.now {
                let (now, wall) = (sim.now, sim.wall_of(target));
                sim.nodes[target].core.handle_timeout(now, wall);
                let (next, reason) = sim.nodes[target].core.poll_timeout().expect("always");
                prop_assert!(next > sim.now, "{reason:?} due again at once");
            }
            let sizes = sim.nodes[target].core.table_sizes();
            prop_assert!(sizes.members <= 2);
            prop_assert!(sizes.probed <= found::MAX_PROBED);
            prop_assert!(sizes.punches <= punch::MAX_PENDING_PUNCHES);
            prop_assert!(sizes.second_hand <= relay::MAX_SECOND_HAND);
            sim.events_of(target);
        }
    }
}
