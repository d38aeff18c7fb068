//! The core's decisions, scenario by scenario: where a member was found, tunnel versus underlay,
//! relay choice, gossip from strangers, collisions, goodbyes, forgetting.

mod sim;

use sim::{NetConfig, NodeOptions, Sim, keys};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use wgmesh_derive::{NodeSeed, mesh_ipv4};
use wgmesh_exchange::{Exchange, ExchangeConfig, GossipEntry};
use wgmesh_membership::{Collision, ESTABLISH_AFTER, Event};
use wgmesh_mesh::Source;

fn quiet_node(sim: &mut Sim, relay: bool) -> usize {
    let seed = sim.next_node_seed();
    sim.add_node_with(NodeOptions {
        lan: false,
        relay,
        ..NodeOptions::new(seed)
    })
}

fn lan_node(sim: &mut Sim, relay: bool) -> usize {
    let seed = sim.next_node_seed();
    sim.add_node_with(NodeOptions {
        relay,
        ..NodeOptions::new(seed)
    })
}

fn member_of(sim: &Sim, holder: usize, member: usize) -> Option<wgmesh_mesh::Member> {
    sim.nodes[holder]
        .core
        .members()
        .get(&sim.nodes[member].public_key)
        .cloned()
}

fn traced(sim: &Sim, node: usize, needle: &str) -> bool {
    sim.trace
        .iter()
        .any(|(_, i, event)| *i == node && event.contains(needle))
}

#[test]
fn a_member_is_reported_as_found_by_the_source_that_named_its_address() {
    // A is given B as a static seed; neither beacons on the LAN.
    let mut sim = Sim::new(11, NetConfig::default());
    let a = quiet_node(&mut sim, false);
    let b = quiet_node(&mut sim, false);
    let wall = sim.wall_of(a);
    let b_addr = sim.nodes[b].addr;
    sim.nodes[a]
        .core
        .handle_candidates(wall, Source::Static, &[b_addr]);
    sim.run_until(Duration::from_secs(3), |_| {});
    // C beacons on the LAN; D does not.
    let mut lan = Sim::new(12, NetConfig::default());
    let c = lan_node(&mut lan, false);
    let d = quiet_node(&mut lan, false);
    lan.run_until(Duration::from_secs(3), |_| {});
    // (holder, member, how the holder found it)
    let table = [
        (&sim, a, b, Source::Static),
        // A contacted B first, from an address B never probed, and B beacons on no LAN.
        (&sim, b, a, Source::Inbound),
        (&lan, c, d, Source::Lan),
        (&lan, d, c, Source::Inbound),
    ];
    for (sim, holder, member, source) in table {
        assert_eq!(
            member_of(sim, holder, member).map(|m| m.source),
            Some(source),
            "{holder} holding {member}"
        );
    }
}

#[test]
fn an_exchange_through_the_tunnel_keeps_the_underlay_endpoint() {
    let mut sim = Sim::new(12, NetConfig::default());
    let a = lan_node(&mut sim, false);
    let b = lan_node(&mut sim, false);
    sim.run_until(Duration::from_secs(2), |_| {});
    let before = member_of(&sim, a, b).expect("formed");
    let delivered = sim.delivered;
    // A moved networks: it probes every member through its tunnel too.
    let now = sim.now;
    sim.nodes[a].core.handle_addresses_changed(now);
    sim.run_until(Duration::from_secs(4), |_| {});
    assert!(sim.delivered > delivered);
    let after = member_of(&sim, a, b).expect("still a member");
    assert_eq!(after.endpoint, before.endpoint);
    assert_eq!(after.control_addr, before.control_addr);
    assert_eq!(after.relay_via, None);
    let underlay = SocketAddr::from((sim::underlay(b), sim::LISTEN_PORT));
    assert_eq!(after.endpoint, Some(underlay));
}

/// R reaches A and B, which cannot reach each other: each hears of the other through R's gossip,
/// punches, and after `RELAY_AFTER` goes through R if R offers to relay.
fn relay_scenario(relay_offered: bool) -> Sim {
    let mut sim = Sim::new(13, NetConfig::default());
    sim.record_trace = true;
    let r = lan_node(&mut sim, relay_offered);
    let a = lan_node(&mut sim, false);
    let b = lan_node(&mut sim, false);
    sim.block(a, b);
    let _ = r;
    sim.run_until(Duration::from_secs(12), |_| {});
    sim
}

#[test]
fn a_member_without_a_direct_path_is_reached_through_a_relay() {
    let sim = relay_scenario(true);
    let (r, a, b) = (0, 1, 2);
    let relay = sim.nodes[r].public_key;
    let mut ports = Vec::new();
    for (holder, member) in [(a, b), (b, a)] {
        let held = member_of(&sim, holder, member).expect("relayed member");
        assert_eq!(held.relay_via, Some(relay), "{holder} holding {member}");
        // Its WireGuard endpoint is a port of the relay (TURN-style), one per end of the pair.
        let port = held.relay_endpoint.expect("a relay port");
        assert_eq!(port.ip(), sim.nodes[r].addr.ip());
        ports.push(port);
        assert!(traced(&sim, holder, "Relayed"));
    }
    assert_ne!(ports[0], ports[1]);
    // The relay itself is reached directly, and holds the pair as two direct members: nothing
    // of theirs is relayed at its IP layer.
    assert_eq!(member_of(&sim, a, r).and_then(|m| m.relay_via), None);
    for end in [a, b] {
        let held = member_of(&sim, r, end).expect("a member of the relay");
        assert_eq!((held.relay_via, held.relay_endpoint), (None, None));
    }
    // Their exchange ran end to end through the relay's ports.
    assert!(
        sim.nodes[a]
            .core
            .members()
            .get(&sim.nodes[b].public_key)
            .is_some_and(|m| m.last_seen_ms > 0)
    );
}

/// A member offering to relay and two others on one LAN, formed (all pairs members, after 3 s),
/// with the trace on. Returns the sim and the three nodes, the relay first.
fn relay_and_two_members(seed: u64) -> (Sim, usize, usize, usize) {
    let mut sim = Sim::new(seed, NetConfig::default());
    sim.record_trace = true;
    let r = lan_node(&mut sim, true);
    let a = lan_node(&mut sim, false);
    let b = lan_node(&mut sim, false);
    sim.run_until(Duration::from_secs(3), |_| {});
    assert!(sim.missing_pairs().is_empty());
    (sim, r, a, b)
}

/// The relay allocates only for a verified member that asks, only towards a member it verified
/// itself: an ask for a key it does not know is refused; the same ask for a member it knows
/// reaches its shell.
#[test]
fn a_relay_allocates_only_towards_a_member_it_verified() {
    let (mut sim, r, a, b) = relay_and_two_members(17);
    let stranger = keys()
        .node_private_key(&NodeSeed::from_bytes([91; 32]))
        .public_key();
    let ask = |sim: &mut Sim, peer: wgmesh_keys::PublicKey, round: u8| {
        let extension = wgmesh_exchange::Extension {
            kind: wgmesh_exchange::EXT_RELAY_ASK,
            value: wgmesh_exchange::RelayAsk { peer }.encode(),
        };
        sim.inject_gossip(a, r, &[], vec![extension], round)
    };
    let events = ask(&mut sim, stranger, 1);
    assert!(
        !events.iter().any(|e| matches!(e, Event::RelayAsked { .. })),
        "{events:?}"
    );
    let b_key = sim.nodes[b].public_key;
    let events = ask(&mut sim, b_key, 2);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::RelayAsked { peer, .. } if *peer == b_key)),
        "{events:?}"
    );
}

/// Issue 14: a relayed pair whose direct path opens (the NATs between them changed) goes direct
/// by itself within a retry period ([`wgmesh_membership::direct::DIRECT_RETRY`]) and the
/// relaying ends on both sides.
#[test]
fn a_relayed_pair_goes_direct_once_its_direct_path_opens() {
    use wgmesh_membership::direct::DIRECT_RETRY;
    let mut sim = relay_scenario(true);
    let (r, a, b) = (0, 1, 2);
    let relay = sim.nodes[r].public_key;
    assert_eq!(member_of(&sim, a, b).and_then(|m| m.relay_via), Some(relay));
    sim.unblock(a, b);
    let opened = sim.elapsed();
    sim.run_until(opened + DIRECT_RETRY + Duration::from_secs(2), |_| {});
    for (holder, member) in [(a, b), (b, a)] {
        let held = member_of(&sim, holder, member).expect("still a member");
        assert_eq!(
            (held.relay_via, held.relay_endpoint),
            (None, None),
            "{holder} holding {member}"
        );
        assert!(traced(&sim, holder, "DirectPath"), "{holder}");
    }
}

/// Issue 14, the other way: a direct pair whose direct path dies (a NAT started randomising
/// ports) falls back to the relay by itself once each end suspects the other, stays a pair of
/// members (no removal, no re-join), and answers through the relay again.
#[test]
fn a_direct_pair_whose_path_dies_falls_back_to_the_relay() {
    use wgmesh_membership::liveness::{PROBE_INTERVAL, SUSPECT_TIMEOUT};
    let (mut sim, r, a, b) = relay_and_two_members(23);
    let relay = sim.nodes[r].public_key;
    assert_eq!(member_of(&sim, a, b).and_then(|m| m.relay_via), None);
    sim.block(a, b);
    let cut = sim.elapsed();
    // Each member is probed once per round of two intervals; a failed probe makes a suspect.
    sim.run_until(cut + PROBE_INTERVAL * 6, |_| {});
    for (holder, member) in [(a, b), (b, a)] {
        let held = member_of(&sim, holder, member).expect("still a member");
        assert_eq!(held.relay_via, Some(relay), "{holder} holding {member}");
        assert!(held.relay_endpoint.is_some(), "{holder} holding {member}");
        assert!(traced(&sim, holder, "DirectPathLost"), "{holder}");
    }
    // Past the suspicion timeout it is still a member: its answers come through the relay.
    sim.run_until(cut + SUSPECT_TIMEOUT + PROBE_INTERVAL * 6, |_| {});
    for (holder, member) in [(a, b), (b, a)] {
        assert!(
            member_of(&sim, holder, member).is_some(),
            "{holder} holding {member}"
        );
        assert!(
            !sim.nodes[holder]
                .core
                .is_suspect(&sim.nodes[member].public_key)
        );
    }
}

/// Issue 14: a relayed member's direct address is sent nothing outside the pair's coordinated
/// attempts (liveness, digests and gossip go through the tunnel), so between two attempts it
/// gets 30 s of silence, longer than a router keeps a conntrack entry that a stray datagram
/// confirmed; and each attempt's first probes leave both ends within milliseconds.
#[test]
fn a_relayed_members_direct_address_hears_only_coordinated_attempts() {
    let mut sim = relay_scenario(true);
    let (a, b) = (1, 2);
    let start = sim.elapsed();
    sim.run_until(start + Duration::from_secs(300), |_| {});
    let underlay = |node: usize| sim.nodes[node].addr.ip();
    let direct_sends = |from: usize, to: usize| -> Vec<Duration> {
        sim.sends
            .iter()
            .filter(|(at, sender, dst)| *at >= start && *sender == from && dst.ip() == underlay(to))
            .map(|(at, _, _)| *at)
            .collect()
    };
    let (ab, ba) = (direct_sends(a, b), direct_sends(b, a));
    // Five minutes hold at least seven attempts; each sends a probe and four retries per end.
    assert!(ab.len() >= 7 * 5 && ba.len() >= 7 * 5, "{ab:?} {ba:?}");
    for sends in [&ab, &ba] {
        for gap in sends.windows(2).map(|w| w[1] - w[0]) {
            assert!(
                gap <= Duration::from_secs(4) || gap >= Duration::from_secs(30),
                "a datagram between attempts: {sends:?}"
            );
        }
    }
    // Attempt by attempt, the two ends' first probes leave together: within the jitter of the
    // relayed path's two hops (the simulator draws each datagram's latency from 1 to 20 ms).
    let jitter = Duration::from_millis(2 * NetConfig::default().latency_max_ms);
    let firsts = |sends: &[Duration]| -> Vec<Duration> {
        let mut out: Vec<Duration> = Vec::new();
        for at in sends {
            if out
                .last()
                .is_none_or(|last| *at - *last >= Duration::from_secs(30))
            {
                out.push(*at);
            }
        }
        out
    };
    for (x, y) in firsts(&ab).into_iter().zip(firsts(&ba)) {
        let apart = x.abs_diff(y);
        assert!(apart <= jitter, "{x:?} against {y:?}");
    }
}

/// Issue 14: a pair whose control datagrams go direct but whose WireGuard never completes a
/// handshake there (only WireGuard's port met a conntrack clash) falls back to the relay once
/// each end's shell reports the silent tunnel, although neither end suspects the other.
#[test]
fn a_direct_pair_with_a_silent_tunnel_falls_back_to_the_relay() {
    let (mut sim, r, a, b) = relay_and_two_members(29);
    let relay = sim.nodes[r].public_key;
    let start = sim.elapsed();
    sim.tunnel_failed(a, b);
    sim.tunnel_failed(b, a);
    sim.run_until(start + Duration::from_secs(2), |_| {});
    for (holder, member) in [(a, b), (b, a)] {
        let held = member_of(&sim, holder, member).expect("still a member");
        assert_eq!(held.relay_via, Some(relay), "{holder} holding {member}");
        assert!(
            !sim.nodes[holder]
                .core
                .is_suspect(&sim.nodes[member].public_key)
        );
        assert!(traced(&sim, holder, "DirectPathLost"), "{holder}");
    }
    // A report about a member already relayed, or unknown, changes nothing.
    sim.tunnel_failed(a, b);
    sim.run_until(start + Duration::from_secs(4), |_| {});
    assert_eq!(member_of(&sim, a, b).and_then(|m| m.relay_via), Some(relay));
}

#[test]
fn without_a_relay_an_unreachable_member_is_reported_and_not_installed() {
    let sim = relay_scenario(false);
    let (a, b) = (1, 2);
    assert!(member_of(&sim, a, b).is_none());
    assert!(traced(&sim, a, "Unreachable"));
}

#[test]
fn gossip_from_a_stranger_is_ignored() {
    let mut sim = Sim::new(14, NetConfig::default());
    let a = quiet_node(&mut sim, false);
    let keys = keys();
    let stranger_key = keys.node_private_key(&NodeSeed::from_bytes([99; 32]));
    let stranger_pub = stranger_key.public_key();
    let addresses = wgmesh_derive::MeshAddresses::derive(keys, &stranger_pub, 0);
    let record = wgmesh_exchange::Record {
        public_key: stranger_pub,
        collision_counter: 0,
        mesh_ipv4: addresses.ipv4,
        mesh_ipv6: addresses.ipv6,
        endpoints: Vec::new(),
        listen_port: sim::LISTEN_PORT,
        routes: Vec::new(),
        flags: 0,
        timestamp: sim::WALL_START / 1000,
    };
    let stranger = Exchange::new(
        keys,
        stranger_key,
        record.clone(),
        ExchangeConfig::default(),
    )
    .expect("valid record");
    let entry = GossipEntry {
        control: SocketAddr::from(([198, 51, 100, 7], 5000)),
        record,
    };
    let gossip = stranger.gossip(
        &[entry],
        sim.wall_of(a),
        wgmesh_exchange::Entropy::from_bytes([5; wgmesh_exchange::ENTROPY_LEN]),
    );
    sim.inject(a, SocketAddr::from(([198, 51, 100, 8], 5000)), &gossip);
    assert_eq!(sim.nodes[a].core.poll_transmit(), None);
    assert!(
        sim.nodes[a]
            .core
            .poll_timeout()
            .is_some_and(|(_, r)| !matches!(
                r,
                wgmesh_membership::TimerReason::Punch | wgmesh_membership::TimerReason::Relay
            ))
    );
    assert_eq!(sim.nodes[a].core.table_sizes().second_hand, 0);
}

#[test]
fn a_goodbye_removes_the_member_and_forgotten_members_join_again() {
    let mut sim = Sim::new(15, NetConfig::default());
    sim.record_trace = true;
    let a = lan_node(&mut sim, false);
    let b = lan_node(&mut sim, false);
    sim.run_until(Duration::from_secs(2), |_| {});
    assert!(member_of(&sim, b, a).is_some());
    let wall = sim.wall_of(a);
    sim.nodes[a].core.goodbye_all(wall);
    // The daemon stops after its goodbyes.
    sim.events_of(a);
    sim.nodes[a].alive = false;
    sim.run_until(Duration::from_secs(3), |_| {});
    assert!(member_of(&sim, b, a).is_none());
    assert!(traced(&sim, b, "Left"));
    sim.nodes[a].alive = true;
    // A forgets B (as after a failure verdict): B's next probe of A, or its beacon, brings it
    // back as new.
    let key_b = sim.nodes[b].public_key;
    sim.nodes[a].core.retain_members(|k| *k != key_b);
    assert!(member_of(&sim, a, b).is_none());
    sim.run_until(Duration::from_secs(40), |_| {});
    assert!(member_of(&sim, a, b).is_some() && member_of(&sim, b, a).is_some());
}

/// Two node seeds whose keys derive the same mesh IPv4 at counter 0 (a 16-bit space: a few
/// hundred keys find a pair).
fn colliding_seeds() -> ([u8; 32], [u8; 32]) {
    let keys = keys();
    let mut seen = HashMap::new();
    for n in 0u32.. {
        let mut seed = [0u8; 32];
        seed[..4].copy_from_slice(&n.to_le_bytes());
        let key = keys.node_public_key(&NodeSeed::from_bytes(seed));
        if let Some(other) = seen.insert(mesh_ipv4(keys, &key, 0), seed) {
            return (other, seed);
        }
    }
    unreachable!()
}

#[test]
fn two_members_that_start_together_on_one_ipv4_both_move_whatever_their_keys() {
    let (one, two) = colliding_seeds();
    let mut sim = Sim::new(16, NetConfig::default());
    sim.record_trace = true;
    let a = sim.add_node_with(NodeOptions::new(one));
    let b = sim.add_node_with(NodeOptions::new(two));
    assert_eq!(sim.nodes[a].mesh_ipv4, sim.nodes[b].mesh_ipv4);
    sim.run_until(Duration::from_secs(5), |_| {});
    // Neither is the incumbent (neither held the address with members for a minute): both
    // move to counter 1, so no key order decides anything.
    for i in [a, b] {
        assert!(
            traced(&sim, i, &format!("{:?}", Collision::WeMove { counter: 1 })),
            "node {i}: {:?}",
            sim.trace
        );
        assert_eq!(sim.nodes[i].core.exchange().record().collision_counter, 1);
    }
    assert_ne!(sim.nodes[a].mesh_ipv4, sim.nodes[b].mesh_ipv4);
    assert!(sim.missing_pairs().is_empty());
    assert!(sim.address_conflicts(&[a, b]).is_empty());
    let _ = Event::DhtFast(false);
}

/// Issue 13: an insider grinds a node seed whose key sorts below an established member's and
/// derives the same IPv4, and never gives the address up. The victim keeps it, and no member
/// that had verified the victim ever installs the insider at it, whichever key is lower.
#[test]
fn an_insider_with_a_ground_colliding_key_takes_no_address_from_an_established_member() {
    for insider_is_lower in [true, false] {
        let (one, two) = colliding_seeds();
        let keys = keys();
        let lower_first = keys.node_public_key(&NodeSeed::from_bytes(one))
            < keys.node_public_key(&NodeSeed::from_bytes(two));
        let (victim_seed, insider_seed) = if lower_first == insider_is_lower {
            (two, one)
        } else {
            (one, two)
        };
        let mut sim = Sim::new(17, NetConfig::default());
        sim.record_trace = true;
        let victim = sim.add_node_with(NodeOptions::new(victim_seed));
        let others: Vec<usize> = (0..4).map(|_| lan_node(&mut sim, false)).collect();
        sim.run_until(ESTABLISH_AFTER + Duration::from_secs(10), |_| {});
        let address = sim.nodes[victim].mesh_ipv4;
        let insider = sim.add_node_with(NodeOptions::new(insider_seed));
        sim.nodes[insider].hostile = true;
        assert_eq!(sim.nodes[insider].mesh_ipv4, address);
        // (The insider's own table is its business: every honest node's is checked.)
        let honest: Vec<usize> = (0..insider).collect();
        sim.run_until(sim.elapsed() + Duration::from_secs(120), |s| {
            let conflicts = s.address_conflicts(&honest);
            assert!(conflicts.is_empty(), "{conflicts:?}");
        });
        assert_eq!(sim.nodes[victim].mesh_ipv4, address, "the victim moved");
        assert_eq!(
            sim.nodes[victim].core.exchange().record().collision_counter,
            0
        );
        let insider_key = sim.nodes[insider].public_key;
        for &o in &others {
            let holder = sim.nodes[o]
                .core
                .members()
                .iter()
                .find(|m| m.mesh_ipv4 == address)
                .map(|m| m.public_key);
            assert_eq!(holder, Some(sim.nodes[victim].public_key), "node {o}");
            assert!(sim.nodes[o].core.members().get(&insider_key).is_none());
            assert!(traced(&sim, o, "Contested"), "node {o} reports the contest");
        }
        assert!(sim.nodes[victim].core.members().get(&insider_key).is_none());
    }
}

/// An insider's gossip names a victim that is no member (a reflection attack): every member's
/// probes to it stay within the per-target budget, however often and with however many fresh
/// fake identities the insider repeats it.
#[test]
fn gossip_cannot_aim_members_probes_at_a_third_party() {
    use wgmesh_membership::budget::PER_TARGET_PER_MINUTE;
    let mut sim = Sim::new(31, NetConfig::default());
    let nodes: Vec<usize> = (0..6).map(|_| lan_node(&mut sim, false)).collect();
    sim.run_until(Duration::from_secs(3), |_| {});
    assert!(sim.missing_pairs().is_empty());
    let keys = keys();
    let victim = SocketAddr::from(([203, 0, 113, 9], 53));
    let insider = nodes[0];
    let start = sim.elapsed();
    for round in 0..60u32 {
        let entries: Vec<GossipEntry> = (0..6u32)
            .map(|n| {
                let mut seed = [7u8; 32];
                seed[..4].copy_from_slice(&(round * 6 + n).to_le_bytes());
                let key = keys
                    .node_private_key(&NodeSeed::from_bytes(seed))
                    .public_key();
                let addresses = wgmesh_derive::MeshAddresses::derive(keys, &key, 0);
                GossipEntry {
                    control: victim,
                    record: wgmesh_exchange::Record {
                        public_key: key,
                        collision_counter: 0,
                        mesh_ipv4: addresses.ipv4,
                        mesh_ipv6: addresses.ipv6,
                        endpoints: Vec::new(),
                        listen_port: 53,
                        routes: Vec::new(),
                        flags: 0,
                        timestamp: sim::WALL_START / 1000,
                    },
                }
            })
            .collect();
        for &target in &nodes[1..] {
            sim.inject_gossip(insider, target, &entries, Vec::new(), round as u8);
        }
        sim.run_until(start + Duration::from_secs(u64::from(round) + 1), |_| {});
    }
    sim.run_until(start + Duration::from_secs(70), |_| {});
    let sent = sim.sent_to.get(&victim.ip()).copied().unwrap_or(0);
    // Five members, at most two budget windows in the 70 s.
    let bound = 5 * 2 * u64::from(PER_TARGET_PER_MINUTE);
    assert!(
        sent <= bound,
        "{sent} probes reached the victim (bound {bound})"
    );
    assert!(sent > 0, "the budget still lets a named address be tried");
}

/// A node seed whose key sorts below every key in `others` and below all but 1 in 256 of any
/// keys to come (its first byte is 0): what an insider grinds to win a "lowest key" choice.
fn ground_low_seed(sim: &mut Sim) -> [u8; 32] {
    let keys = keys();
    loop {
        let seed = sim.next_node_seed();
        let key = keys.node_public_key(&NodeSeed::from_bytes(seed));
        if key.as_bytes()[0] == 0
            && sim
                .nodes
                .iter()
                .all(|n| key < n.public_key && n.public_key.as_bytes()[0] != 0)
        {
            return seed;
        }
    }
}

/// An honest relay R, an insider I that offers to relay with a key ground to sort below every
/// other, and `pairs` pairs of members without a direct path between them. Honest nodes run with
/// `relays` as their allow-list. Returns the sim, R, I and the pairs.
fn relay_choice_scenario(
    pairs: usize,
    allow_honest_relay_only: bool,
) -> (Sim, usize, usize, Vec<(usize, usize)>) {
    let mut sim = Sim::new(41, NetConfig::default());
    sim.record_trace = true;
    let r = lan_node(&mut sim, true);
    let insider_seed = ground_low_seed(&mut sim);
    let insider = sim.add_node_with(NodeOptions {
        relay: true,
        ..NodeOptions::new(insider_seed)
    });
    sim.nodes[insider].hostile = true;
    let relays = allow_honest_relay_only.then(|| {
        let prefix: String = sim.nodes[r]
            .public_key
            .to_base64()
            .chars()
            .take(10)
            .collect();
        wgmesh_membership::relay::RelayAllowList::parse(&[prefix]).unwrap_or_else(|e| panic!("{e}"))
    });
    let pairs: Vec<(usize, usize)> = (0..pairs)
        .map(|_| {
            let mut honest = || {
                let seed = sim.next_node_seed_unique_address();
                sim.add_node_with(NodeOptions {
                    relays: relays.clone(),
                    ..NodeOptions::new(seed)
                })
            };
            let (a, b) = (honest(), honest());
            (a, b)
        })
        .collect();
    for &(a, b) in &pairs {
        sim.block(a, b);
    }
    let insider_key = sim.nodes[insider].public_key;
    assert!(sim.nodes.iter().all(|n| insider_key <= n.public_key));
    sim.run_until(Duration::from_secs(20), |_| {});
    (sim, r, insider, pairs)
}

/// Issue 13, item 3: the relay used to be the lowest key among members offering one, so an
/// insider that ground a low key relayed (and read) every relayed pair's traffic. Now key order
/// decides nothing: each pair's relay is a keyed hash of the pair and the candidate, the same at
/// both ends, so the ground key wins no more pairs than any other.
#[test]
fn an_insider_with_the_lowest_ground_key_is_not_everyones_relay() {
    let (sim, r, insider, pairs) = relay_choice_scenario(6, false);
    let (relay_r, relay_i) = (sim.nodes[r].public_key, sim.nodes[insider].public_key);
    let mut through_insider = 0;
    for &(a, b) in &pairs {
        let ab = member_of(&sim, a, b).and_then(|m| m.relay_via);
        let ba = member_of(&sim, b, a).and_then(|m| m.relay_via);
        assert!(
            ab.is_some(),
            "{a} reaches {b} through a relay: {:?}",
            sim.trace
        );
        assert_eq!(ab, ba, "both ends of {a}-{b} chose the same relay");
        assert!(ab == Some(relay_r) || ab == Some(relay_i));
        through_insider += usize::from(ab == Some(relay_i));
    }
    assert!(
        through_insider < pairs.len(),
        "the insider's ground key relays all {} pairs",
        pairs.len()
    );
    assert!(
        through_insider > 0,
        "and it is not excluded either: a fair share"
    );
}

/// Issue 13, item 3: with the operator's allow-list (`relays=`), only listed members relay,
/// whatever keys the others hold.
#[test]
fn with_a_relay_allow_list_an_unlisted_insider_never_relays() {
    let (sim, r, _insider, pairs) = relay_choice_scenario(3, true);
    let relay_r = sim.nodes[r].public_key;
    for &(a, b) in &pairs {
        for (holder, member) in [(a, b), (b, a)] {
            assert_eq!(
                member_of(&sim, holder, member).and_then(|m| m.relay_via),
                Some(relay_r),
                "{holder} holding {member}"
            );
        }
    }
}

/// DESIGN.md §8 item 4, issue 13 item 3: an insider gossips a record for a key whose owner never
/// answers (made up, or not there). It used to become a relayed member, with its addresses
/// routed through the relay, 6 s later and for good; then (issue 13) it got a 30 s trial routed
/// through the relay. Now nothing is installed for it at all: the relay carries a pair only
/// between two members it verified itself, so it refuses the ask, and the key is reported
/// unreachable, never a member, never a peer, however often gossip names it.
#[test]
fn a_gossiped_member_that_never_proves_its_key_never_becomes_a_relayed_member() {
    let (mut sim, _r, insider, target) = relay_and_two_members(43);
    let keys = keys();
    let fake = keys
        .node_private_key(&NodeSeed::from_bytes([77; 32]))
        .public_key();
    let addresses = wgmesh_derive::MeshAddresses::derive(keys, &fake, 0);
    let entry = GossipEntry {
        control: SocketAddr::from(([198, 51, 100, 77], 51900)),
        record: wgmesh_exchange::Record {
            public_key: fake,
            collision_counter: 0,
            mesh_ipv4: addresses.ipv4,
            mesh_ipv6: addresses.ipv6,
            endpoints: Vec::new(),
            listen_port: sim::LISTEN_PORT,
            routes: Vec::new(),
            flags: 0,
            timestamp: sim::WALL_START / 1000,
        },
    };
    let gossip_at = |sim: &mut Sim, round: u8| {
        sim.inject_gossip(
            insider,
            target,
            std::slice::from_ref(&entry),
            Vec::new(),
            round,
        )
    };
    let start = sim.elapsed();
    gossip_at(&mut sim, 1);
    let check = |s: &Sim| {
        assert!(
            s.nodes[target].core.members().get(&fake).is_none(),
            "the gossiped key became a member without a proof"
        );
        // Waiting for the relay's answer at most; never installed with a relay port.
        assert!(
            s.nodes[target]
                .core
                .relay_trial(&fake)
                .is_none_or(|m| m.relay_endpoint.is_none())
        );
    };
    sim.run_until(start + Duration::from_secs(45), check);
    assert!(
        !traced(&sim, target, "Relayed"),
        "installed: {:?}",
        sim.trace
    );
    assert!(traced(&sim, target, "Unreachable"), "{:?}", sim.trace);
    // Named again: the relay refuses again.
    gossip_at(&mut sim, 2);
    sim.run_until(start + Duration::from_secs(90), check);
    assert!(!traced(&sim, target, "Relayed"));
    assert!(sim.nodes[target].core.relay_trial(&fake).is_none());
}

/// Issue 13, item 5: the member table had no cap, so an insider creating identities (each
/// proving its own key) grew every member's table without bound. Now it is capped, and past the
/// cap a newcomer only takes the place of a suspect: members that keep answering are never
/// pushed out, however many fresh identities prove themselves. Once the flood's identities go
/// silent (suspects), an honest newcomer takes one of their places.
#[test]
fn a_flood_of_fresh_identities_does_not_evict_members_that_keep_proving_themselves() {
    const CAP: usize = 6;
    let mut sim = Sim::new(51, NetConfig::default());
    sim.record_trace = true;
    let capped = |sim: &mut Sim| {
        let seed = sim.next_node_seed_unique_address();
        sim.add_node_with(NodeOptions {
            max_members: CAP,
            ..NodeOptions::new(seed)
        })
    };
    let honest: Vec<usize> = (0..4).map(|_| capped(&mut sim)).collect();
    sim.run_until(Duration::from_secs(3), |_| {});
    assert!(sim.missing_pairs().is_empty());
    let flood: Vec<usize> = (0..12).map(|_| capped(&mut sim)).collect();
    for &f in &flood {
        sim.nodes[f].hostile = true;
    }
    let honest_keys: Vec<_> = honest.iter().map(|&h| sim.nodes[h].public_key).collect();
    let check = |s: &Sim| {
        for &h in &honest {
            let members = s.nodes[h].core.members();
            assert!(members.len() <= CAP, "node {h} holds {}", members.len());
            for key in &honest_keys {
                assert!(
                    *key == s.nodes[h].public_key || members.get(key).is_some(),
                    "node {h} lost an honest member"
                );
            }
        }
    };
    sim.run_until(Duration::from_secs(90), check);
    for &h in &honest {
        assert_eq!(sim.nodes[h].core.members().len(), CAP, "full of the flood");
        assert!(sim.nodes[h].core.members_refused() > 0);
    }
    // The flood goes silent: its identities fail our probes and give way to a newcomer.
    for &f in &flood {
        sim.nodes[f].alive = false;
    }
    let newcomer = capped(&mut sim);
    let newcomer_key = sim.nodes[newcomer].public_key;
    sim.run_until(Duration::from_secs(400), check);
    for &h in &honest {
        assert!(
            sim.nodes[h].core.members().get(&newcomer_key).is_some(),
            "node {h} took the newcomer in place of a silent identity"
        );
    }
}

/// A valid Probe sealed under the mesh key, claiming a fresh random key (an insider needs no
/// private key for a Probe), stamped as late as the window allows.
fn random_key_probe(n: u32, wall_ms: u64) -> Vec<u8> {
    use wgmesh_exchange::{CHALLENGE_LEN, Message, Probe};
    let digest = blake3::hash(&[b"sim insider".as_slice(), &n.to_be_bytes()].concat());
    let mut challenge = [0u8; CHALLENGE_LEN];
    challenge.copy_from_slice(&digest.as_bytes()[..CHALLENGE_LEN]);
    challenge[0] |= 1;
    let message = Message::Probe(Probe {
        sender: wgmesh_keys::PublicKey::from_bytes(*digest.as_bytes()),
        timestamp: wall_ms / 1000 + 120,
        challenge,
        extensions: Vec::new(),
    });
    let mut nonce = [0u8; wgmesh_exchange::NONCE_LEN];
    nonce.copy_from_slice(&digest.as_bytes()[..wgmesh_exchange::NONCE_LEN]);
    let Ok(plaintext) = wgmesh_exchange::encode_message(&message) else {
        unreachable!("a valid Probe encodes")
    };
    let Ok(datagram) = wgmesh_exchange::seal(
        &keys().exchange_key(),
        message.msg_type(),
        &nonce,
        &plaintext,
    ) else {
        unreachable!("a Probe fits a datagram")
    };
    datagram
}

/// Issue 13, item 4: an insider floods a member with valid Probes under fresh random keys from
/// spoofed sources, more than its replay cache holds. Strangers exhaust only the strangers'
/// share: the members' refreshes still reach it (a route change arrives within seconds).
#[test]
fn random_key_probes_from_an_insider_do_not_starve_members_refreshes() {
    let mut sim = Sim::new(41, NetConfig::default());
    let nodes: Vec<usize> = (0..4).map(|_| lan_node(&mut sim, false)).collect();
    sim.run_until(Duration::from_secs(5), |_| {});
    assert!(sim.missing_pairs().is_empty());
    let (victim, member) = (nodes[0], nodes[1]);
    // 12,000 Probes over three seconds (the per-source limiter tracks 4,096 sources a second).
    let start = sim.elapsed();
    for second in 0..3u32 {
        for k in 0..4_000u32 {
            let n = second * 4_000 + k;
            let from = SocketAddr::from((std::net::Ipv4Addr::from(0x6400_0000 | n), 40_000));
            let wall = sim.wall_of(victim);
            sim.inject(victim, from, &random_key_probe(n, wall));
        }
        sim.run_until(start + Duration::from_secs(u64::from(second) + 1), |_| {});
    }
    let full = sim.nodes[victim]
        .core
        .exchange_stats()
        .get(wgmesh_exchange::DropReason::ReplayCacheFull);
    assert!(full > 0, "the flood filled the strangers' share");
    let route: ipnet::IpNet = "192.168.77.0/24".parse().expect("route");
    sim.set_routes(member, vec![route]);
    sim.run_until(sim.elapsed() + Duration::from_secs(30), |_| {});
    let held = member_of(&sim, victim, member).expect("still a member");
    assert_eq!(
        held.routes,
        vec![route],
        "the route change reached the victim"
    );
    assert!(sim.missing_pairs().is_empty());
}

/// Issue 13, item 4 (return routability): an insider that holds a challenge answers it from a
/// victim's spoofed address, both a challenge in a member's Hello (answering the insider's own
/// Probe) and one in the member's refresh Probe. No member believes the victim's address as
/// the insider's endpoint or control address, so none sends it anything.
#[test]
fn an_insider_cannot_make_members_believe_an_address_that_never_answered() {
    let mut sim = Sim::new(42, NetConfig::default());
    let seed = [42u8; 32];
    let nodes: Vec<usize> = (0..3).map(|_| lan_node(&mut sim, false)).collect();
    let insider = sim.add_node_with(NodeOptions::new(seed));
    sim.run_until(Duration::from_secs(5), |_| {});
    assert!(sim.missing_pairs().is_empty());
    let keys = keys();
    let private_key = keys.node_private_key(&NodeSeed::from_bytes(seed));
    let record = sim.nodes[insider].core.exchange().record().clone();
    let mut crafted =
        Exchange::new(keys, private_key, record, ExchangeConfig::default()).expect("record");
    let victim = SocketAddr::from(([203, 0, 113, 9], 53));
    let insider_addr = sim.nodes[insider].addr;
    let entropy = |n: u8| wgmesh_exchange::Entropy::from_bytes([n; wgmesh_exchange::ENTROPY_LEN]);
    for (round, &target) in nodes.iter().enumerate() {
        let target_addr = sim.nodes[target].addr;
        let n = round as u8 * 4;
        // 1. The insider's own Probe; the member's Hello carries a challenge bound to it.
        let wall = sim.wall_of(target);
        let probe = crafted.probe(wall, target_addr, entropy(n + 1));
        sim.inject(target, insider_addr, &probe);
        let hello = std::iter::from_fn(|| sim.nodes[target].core.poll_transmit())
            .find(|t| t.dst == insider_addr)
            .expect("the member answers");
        let answer = crafted
            .handle(wall, target_addr, &hello.payload, entropy(n + 2))
            .reply
            .expect("a completing Hello");
        sim.inject(target, victim, &answer);
        sim.events_of(target);
        // 2. The member's refresh Probe to the insider, answered from the victim's address.
        let wall = sim.wall_of(target);
        sim.nodes[target]
            .core
            .handle_candidates(wall, Source::Static, &[insider_addr]);
        let refresh = std::iter::from_fn(|| sim.nodes[target].core.poll_transmit())
            .find(|t| t.dst == insider_addr)
            .expect("the member probes");
        let answer = crafted
            .handle(wall, target_addr, &refresh.payload, entropy(n + 3))
            .reply
            .expect("the insider answers");
        sim.inject(target, victim, &answer);
        sim.events_of(target);
    }
    sim.run_until(sim.elapsed() + Duration::from_secs(30), |_| {});
    for &o in &nodes {
        let held = member_of(&sim, o, insider).expect("the insider is a member");
        assert_eq!(held.control_addr, Some(insider_addr), "node {o}");
        assert_eq!(
            held.endpoint.map(|e| e.ip()),
            Some(insider_addr.ip()),
            "node {o}"
        );
    }
    assert_eq!(
        sim.sent_to.get(&victim.ip()),
        None,
        "nothing went to the victim"
    );
}

/// An answer to a LAN beacon (our Probe to the LAN group) proves the key, but its challenge went
/// to no single address: its source is believed only on a directly connected network, where the
/// beacon went. Off the segment, an insider could otherwise aim our WireGuard handshakes at any
/// host; on it, the spoof still works (docs/security.md says so).
#[test]
fn an_answer_to_a_lan_beacon_is_believed_only_from_the_lan() {
    for (spoofed, believed) in [
        (SocketAddr::from(([203, 0, 113, 9], 51900)), false),
        (SocketAddr::from(([172, 16, 200, 9], 51900)), true),
    ] {
        let mut sim = Sim::new(43, NetConfig::default());
        let target = lan_node(&mut sim, false);
        let seed = [43u8; 32];
        let insider = sim.add_node_with(NodeOptions {
            lan: false,
            ..NodeOptions::new(seed)
        });
        let keys = keys();
        let private_key = keys.node_private_key(&NodeSeed::from_bytes(seed));
        let record = sim.nodes[insider].core.exchange().record().clone();
        let mut crafted =
            Exchange::new(keys, private_key, record, ExchangeConfig::default()).expect("record");
        let entropy =
            |n: u8| wgmesh_exchange::Entropy::from_bytes([n; wgmesh_exchange::ENTROPY_LEN]);
        let wall = sim.wall_of(target);
        let group = sim.group();
        sim.nodes[target]
            .core
            .handle_candidates(wall, Source::Lan, &[group]);
        let beacon = std::iter::from_fn(|| sim.nodes[target].core.poll_transmit())
            .find(|t| t.dst == group)
            .expect("a beacon");
        let target_addr = sim.nodes[target].addr;
        let hello = crafted
            .handle(wall, target_addr, &beacon.payload, entropy(1))
            .reply
            .expect("the insider answers the beacon");
        sim.inject(target, spoofed, &hello);
        sim.events_of(target);
        let held = member_of(&sim, target, insider);
        assert_eq!(
            held.as_ref().and_then(|m| m.control_addr),
            believed.then_some(spoofed),
            "{spoofed}"
        );
        assert_eq!(
            sim.nodes[target].core.unproven_group_answers(),
            u64::from(!believed),
            "{spoofed}"
        );
    }
}
