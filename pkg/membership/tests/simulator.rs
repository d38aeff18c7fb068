//! Many membership cores on a simulated network (issue 11, item 3), with invariants checked at
//! every step: formation within 5 s without loss and 30 s with 20 % loss, no two members on one
//! address, every table within its cap, and a datagram budget per node per simulated minute.

mod sim;

use proptest::prelude::*;
use sim::{NetConfig, Sim};
use std::time::Duration;
use wgmesh_membership::liveness::SUSPECT_TIMEOUT;
use wgmesh_membership::{found, punch, relay};

/// Datagrams one node may send per simulated minute in a mesh of `n`. In a steady minute (no
/// node joined, failed or came back in it or the minute before) the cost is fixed, whatever N:
/// the failure detector probes one member per 10 s (6 probes, 6 final Hellos, about 6 answers
/// to others' probes), one digest per 30 s plus answers, and beacons from known members go
/// unanswered: about 20. A node whose every probe fails (cut off) sends at most 9 per interval
/// (three attempts, the later two through the tunnel too and with a witness, and a suspect's
/// recheck both ways): 54. In a minute with joins, every join is gossiped to every member and every member
/// to the newcomer, so formation costs each node O(N²).
pub const STEADY_BUDGET: u64 = 60;

fn budget_per_minute(n: usize, joins: bool) -> u64 {
    let n = n as u64;
    if joins {
        4 * n * n + 200
    } else {
        STEADY_BUDGET
    }
}

/// The invariants that hold at every step, whatever the network does.
fn check_step(sim: &Sim) {
    let mut dirty = sim.dirty.clone();
    dirty.sort_unstable();
    dirty.dedup();
    let conflicts = sim.address_conflicts(&dirty);
    assert!(conflicts.is_empty(), "{conflicts:?}");
    let n = sim.nodes.len();
    for &i in &dirty {
        let node = &sim.nodes[i];
        let sizes = node.core.table_sizes();
        assert!(
            sizes.members < n,
            "node {i} holds {} members of {n}",
            sizes.members
        );
        assert!(sizes.probed <= found::MAX_PROBED, "node {i}: {sizes:?}");
        assert!(
            sizes.punches <= punch::MAX_PENDING_PUNCHES,
            "node {i}: {sizes:?}"
        );
        assert!(
            sizes.second_hand <= relay::MAX_SECOND_HAND,
            "node {i}: {sizes:?}"
        );
        // The minute so far (earlier minutes were checked while they ran).
        if let Some((minute, sent)) = node.sent_per_minute.iter().enumerate().next_back() {
            let budget = budget_per_minute(n, sim.join_minutes.contains(&minute));
            assert!(
                *sent <= budget,
                "node {i} sent {sent} datagrams in minute {minute}, over its budget of {budget}"
            );
        }
    }
}

/// Runs until every live connected pair are mutual members; returns how long that took, or
/// panics with the missing pairs at `deadline`.
fn converge(sim: &mut Sim, deadline: Duration) -> Duration {
    let from = sim.elapsed();
    let end = from + deadline;
    let step = Duration::from_millis(100);
    while sim.elapsed() < end {
        let next = sim.elapsed() + step;
        sim.run_until(next, check_step);
        if sim.missing_pairs().is_empty() {
            return sim.elapsed() - from;
        }
    }
    let missing = sim.missing_pairs();
    panic!(
        "{} pairs of {} nodes not mutual members {deadline:?} after the last change: {:?}",
        missing.len(),
        sim.nodes.len(),
        &missing[..missing.len().min(10)]
    );
}

#[test]
fn eight_nodes_on_a_lan_form_a_mesh_within_five_seconds() {
    let mut sim = Sim::new(1, NetConfig::default());
    for _ in 0..8 {
        sim.add_node(0);
    }
    let took = converge(&mut sim, Duration::from_secs(5));
    assert!(took <= Duration::from_secs(1), "{took:?}");
    // And it stays formed, within budget, for two minutes.
    sim.run_until(sim.elapsed() + Duration::from_secs(120), check_step);
    assert!(sim.missing_pairs().is_empty());
}

/// A starting node beacons once a second for five seconds. Members answer its first beacon;
/// the next four, from a member verified a moment ago, go unanswered (one answer per 10 s):
/// before, every member answered all five, most of a forming mesh's traffic.
#[test]
fn a_known_members_fast_beacons_are_answered_once() {
    let n = 10;
    let mut sim = Sim::new(11, NetConfig::default());
    for _ in 0..n {
        sim.add_node(0);
    }
    converge(&mut sim, Duration::from_secs(1));
    sim.run_until(Duration::from_millis(900), |_| {});
    let before = sim.delivered;
    // Beacons 2 to 5 of every node, each delivered to the other n − 1.
    sim.run_until(Duration::from_millis(4_900), |_| {});
    let beacons = (4 * n * (n - 1)) as u64;
    let delivered = sim.delivered - before;
    // Besides the beacons, about one datagram per pair (upkeep: retried announcements, digests,
    // probes). Answering every beacon added two per pair per beacon: 1,170 in all here.
    assert!(
        delivered >= beacons && delivered <= beacons + (n * (n - 1)) as u64,
        "{delivered} datagrams delivered while {beacons} beacons were"
    );
    assert!(sim.missing_pairs().is_empty());
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    let run = |seed| {
        let mut sim = Sim::new(
            seed,
            NetConfig {
                loss_permille: 100,
                duplicate_permille: 50,
                ..NetConfig::default()
            },
        );
        sim.record_trace = true;
        for _ in 0..6 {
            sim.add_node(0);
        }
        sim.run_until(Duration::from_secs(40), |_| {});
        (sim.trace, sim.delivered)
    };
    let (a, delivered) = run(7);
    assert!(!a.is_empty() && delivered > 0);
    assert_eq!(a, run(7).0);
    assert_ne!(a, run(8).0);
}

#[test]
fn a_late_joiner_is_a_mutual_member_of_everyone_within_five_seconds() {
    let mut sim = Sim::new(3, NetConfig::default());
    for _ in 0..10 {
        sim.add_node(0);
    }
    converge(&mut sim, Duration::from_secs(5));
    // Long after formation: LAN discovery is on its slow poll, so the newcomer's own beacon and
    // the gossip it triggers have to do it.
    sim.run_until(Duration::from_secs(100), check_step);
    sim.add_node(0);
    converge(&mut sim, Duration::from_secs(5));
}

#[test]
fn clock_skew_inside_the_window_does_not_matter() {
    let mut sim = Sim::new(4, NetConfig::default());
    for i in 0..6 {
        sim.add_node((i as i64 - 3) * 20_000);
    }
    converge(&mut sim, Duration::from_secs(5));
}

#[test]
fn a_node_whose_clock_is_outside_the_window_never_joins() {
    let mut sim = Sim::new(5, NetConfig::default());
    for _ in 0..4 {
        sim.add_node(0);
    }
    let skewed = sim.add_node(10 * 60_000);
    sim.run_until(Duration::from_secs(10), check_step);
    for (i, node) in sim.nodes.iter().enumerate() {
        let expected = if i == skewed { 0 } else { 3 };
        assert_eq!(node.core.members().len(), expected, "node {i}");
    }
}

#[test]
fn a_healed_partition_rejoins_within_one_slow_discovery_poll() {
    let mut sim = Sim::new(6, NetConfig::default());
    for _ in 0..10 {
        sim.add_node(0);
    }
    converge(&mut sim, Duration::from_secs(5));
    sim.run_until(Duration::from_secs(10), check_step);
    for i in 5..10 {
        sim.nodes[i].partition = 1;
    }
    sim.run_until(Duration::from_secs(20), check_step);
    // One newcomer on each side: each side takes it in as usual.
    let left = sim.add_node(0);
    let right = sim.add_node(0);
    sim.nodes[right].partition = 1;
    converge(&mut sim, Duration::from_secs(5));
    assert!(
        sim.nodes[left]
            .core
            .members()
            .get(&sim.nodes[right].public_key)
            .is_none()
    );
    sim.run_until(Duration::from_secs(40), check_step);
    for node in &mut sim.nodes {
        node.partition = 0;
    }
    sim.mark_change();
    // The halves expired each other while split. Each half as a whole beacons about once per
    // slow poll (each node's interval grows with the members it knows), and a beacon from a
    // stranger is answered: the first one after the heal, and the gossip it sets off, join them.
    converge(
        &mut sim,
        wgmesh_membership::cadence::SLOW_POLL * 3 + Duration::from_secs(5),
    );
}

#[test]
fn a_crashed_member_is_suspected_within_a_minute_and_removed_after_the_suspicion_timeout() {
    let mut sim = Sim::new(21, NetConfig::default());
    for _ in 0..12 {
        sim.add_node(0);
    }
    converge(&mut sim, Duration::from_secs(5));
    sim.run_until(Duration::from_secs(60), check_step);
    let dead = 4;
    let key = sim.nodes[dead].public_key;
    sim.nodes[dead].alive = false;
    sim.mark_change();
    let crashed_at = sim.elapsed();
    let holders = |sim: &Sim| {
        (0..sim.nodes.len())
            .filter(|&i| i != dead && sim.nodes[i].core.members().get(&key).is_some())
            .count()
    };
    let suspected = |sim: &Sim| {
        (0..sim.nodes.len())
            .filter(|&i| i != dead && sim.nodes[i].core.is_suspect(&key))
            .count()
    };
    // Every member suspects it within a minute (its own probe, or another's hint), and keeps
    // it (tunnel and routes) while it does.
    sim.run_until(crashed_at + Duration::from_secs(60), check_step);
    assert_eq!(suspected(&sim), 11);
    assert_eq!(holders(&sim), 11);
    while holders(&sim) > 0 {
        let next = sim.elapsed() + Duration::from_millis(500);
        assert!(
            next < crashed_at + SUSPECT_TIMEOUT + Duration::from_secs(60),
            "{} members still hold the crashed one",
            holders(&sim)
        );
        sim.run_until(next, check_step);
    }
    // Nobody else was removed on the way.
    for i in (0..sim.nodes.len()).filter(|&i| i != dead) {
        assert_eq!(sim.nodes[i].core.members().len(), 10, "node {i}");
    }
}

#[test]
fn an_isolated_node_does_not_expire_the_mesh() {
    let mut sim = Sim::new(22, NetConfig::default());
    for _ in 0..6 {
        sim.add_node(0);
    }
    converge(&mut sim, Duration::from_secs(5));
    sim.run_until(Duration::from_secs(30), check_step);
    // Node 0 loses its network for five minutes: the others remove it (it answers nothing),
    // but it keeps them all (no member answers it, so it never trusts its own verdicts).
    // (Its probes, rechecks and witnesses cost it more than a steady node: within budget.)
    sim.nodes[0].partition = 1;
    sim.mark_change();
    sim.run_until(Duration::from_secs(330), check_step);
    assert_eq!(sim.nodes[0].core.members().len(), 5);
    for i in 1..6 {
        assert_eq!(sim.nodes[i].core.members().len(), 4, "node {i}");
    }
    // Back: its own probes bring it back everywhere, within one probe round.
    sim.nodes[0].partition = 0;
    sim.mark_change();
    converge(&mut sim, Duration::from_secs(400));
}

#[test]
fn a_route_change_whose_announcement_was_lost_still_reaches_every_member() {
    let mut sim = Sim::new(23, NetConfig::default());
    for _ in 0..8 {
        sim.add_node(0);
    }
    converge(&mut sim, Duration::from_secs(5));
    sim.run_until(Duration::from_secs(20), check_step);
    // Node 0 changes its routes while cut off for a moment: the announcement is lost.
    sim.nodes[0].partition = 1;
    let route: ipnet::IpNet = "192.168.77.0/24".parse().unwrap();
    sim.set_routes(0, vec![route]);
    sim.run_until(sim.elapsed() + Duration::from_millis(500), |_| {});
    sim.nodes[0].partition = 0;
    // Retried announcements (and digests, and the next probe round) carry it.
    sim.run_until(sim.elapsed() + Duration::from_secs(30), check_step);
    let key = sim.nodes[0].public_key;
    for i in 1..8 {
        let held = sim.nodes[i]
            .core
            .members()
            .get(&key)
            .map(|m| m.routes.clone());
        assert_eq!(held, Some(vec![route]), "node {i}");
    }
}

#[derive(Debug, Clone)]
struct Scenario {
    seed: u64,
    nodes: usize,
    /// Nodes that start later, and when (ms).
    late: usize,
    late_at_ms: u64,
    lossy: bool,
    duplicate_permille: u32,
    latency_max_ms: u64,
}

fn scenario(max_nodes: usize) -> impl Strategy<Value = Scenario> {
    (
        any::<u64>(),
        2..=max_nodes,
        0usize..=4,
        0u64..20_000,
        any::<bool>(),
        0u32..=100,
        1u64..=150,
    )
        .prop_map(
            |(seed, nodes, late, late_at_ms, lossy, duplicate_permille, latency_max_ms)| Scenario {
                seed,
                nodes,
                late: late.min(nodes - 1),
                late_at_ms,
                lossy,
                duplicate_permille,
                latency_max_ms,
            },
        )
}

fn run_scenario(s: &Scenario) {
    let net = NetConfig {
        latency_min_ms: 1,
        latency_max_ms: s.latency_max_ms,
        loss_permille: if s.lossy { 200 } else { 0 },
        duplicate_permille: s.duplicate_permille,
        ..NetConfig::default()
    };
    let deadline = Duration::from_secs(if s.lossy { 30 } else { 5 });
    let mut sim = Sim::new(s.seed, net);
    for _ in 0..(s.nodes - s.late) {
        sim.add_node(0);
    }
    if s.late > 0 {
        sim.run_until(Duration::from_millis(s.late_at_ms), check_step);
        for _ in 0..s.late {
            sim.add_node(0);
        }
    }
    converge(&mut sim, deadline);
    // Steady for a while: still formed, still within budget.
    sim.run_until(sim.elapsed() + Duration::from_secs(70), check_step);
    assert!(sim.missing_pairs().is_empty(), "{s:?}");
}

/// The seed of the scenario generator for the proptests below.
const SCENARIO_SEED: u64 = 0x5eed_0001;

/// Found by a random-seeded run of the split proptest: after a split with one death and one
/// newcomer, and 20 % loss, two members that verified each other's claimants on opposite sides
/// ended up holding one IPv4 (`node 12: 10.228.4.70 held twice`). Since address ownership
/// (issue 13) a member never installs a second holder of an address it already routes: the
/// incumbent keeps it and the claimant is reported as contested.
#[test]
fn a_healed_split_with_a_newcomer_never_leaves_an_address_held_twice() {
    run_partition_scenario(&PartitionScenario {
        seed: 6_676_784_336_448_330_812,
        nodes: 20,
        newcomers: 1,
        split_at_ms: 1690,
        heal_after_ms: 36_277,
        deaths: 1,
        lossy: true,
    });
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 5,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        // Fixed, so every run (and CI) checks the same scenarios: same seed, same trace.
        // `PROPTEST_RNG_SEED=random` explores new ones.
        rng_seed: proptest::test_runner::RngSeed::Fixed(SCENARIO_SEED),
        ..ProptestConfig::default()
    })]

    #[test]
    fn meshes_of_up_to_64_form_within_their_deadline(s in scenario(64)) {
        run_scenario(&s);
    }
}

#[derive(Debug, Clone)]
struct PartitionScenario {
    seed: u64,
    nodes: usize,
    /// Nodes that join while the mesh is split (alternately on each side).
    newcomers: usize,
    split_at_ms: u64,
    heal_after_ms: u64,
    /// Nodes that die while split (never the newcomers).
    deaths: usize,
    lossy: bool,
}

fn partition_scenario() -> impl Strategy<Value = PartitionScenario> {
    (
        any::<u64>(),
        2usize..=24,
        1usize..=4,
        0u64..10_000,
        1_000u64..60_000,
        0usize..=3,
        any::<bool>(),
    )
        .prop_map(
            |(seed, nodes, newcomers, split_at_ms, heal_after_ms, deaths, lossy)| {
                PartitionScenario {
                    seed,
                    nodes,
                    newcomers,
                    split_at_ms,
                    heal_after_ms,
                    deaths: deaths.min(nodes - 1),
                    lossy,
                }
            },
        )
}

/// After a heal, nodes that joined on different sides meet at the next slow LAN poll; with
/// 20 % loss a poll can miss, so up to three polls.
fn heal_deadline(lossy: bool) -> Duration {
    let polls = if lossy { 3 } else { 1 };
    wgmesh_membership::cadence::SLOW_POLL * polls + Duration::from_secs(5)
}

fn run_partition_scenario(s: &PartitionScenario) {
    let net = NetConfig {
        loss_permille: if s.lossy { 200 } else { 0 },
        ..NetConfig::default()
    };
    let deadline = Duration::from_secs(if s.lossy { 30 } else { 5 });
    let mut sim = Sim::new(s.seed, net);
    for _ in 0..s.nodes {
        sim.add_node(0);
    }
    converge(&mut sim, deadline);
    let split_at = sim.elapsed() + Duration::from_millis(s.split_at_ms);
    sim.run_until(split_at, check_step);
    for (i, node) in sim.nodes.iter_mut().enumerate() {
        node.partition = (i % 2) as u8;
    }
    for k in 0..s.newcomers {
        let i = sim.add_node(0);
        sim.nodes[i].partition = (k % 2) as u8;
    }
    for i in 0..s.deaths {
        sim.nodes[i].alive = false;
    }
    // Each side takes its newcomers in as usual.
    converge(&mut sim, deadline);
    let heal_at = sim.elapsed() + Duration::from_millis(s.heal_after_ms);
    sim.run_until(heal_at, check_step);
    for node in &mut sim.nodes {
        node.partition = 0;
    }
    sim.mark_change();
    converge(&mut sim, heal_deadline(s.lossy));
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 8,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        rng_seed: proptest::test_runner::RngSeed::Fixed(SCENARIO_SEED),
        ..ProptestConfig::default()
    })]

    #[test]
    fn split_meshes_with_deaths_heal_within_their_deadline(s in partition_scenario()) {
        run_partition_scenario(&s);
    }
}
