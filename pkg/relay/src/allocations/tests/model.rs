//! Random sequences of requests, datagrams, waits, expiry and departures, checked against a
//! model of where each side's latch must be, and against the table's invariants after every
//! step.

use super::*;
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};

/// Small quotas, so random sequences hit them.
const LIMITS: Limits = Limits {
    per_member: 3,
    pairs: 5,
    idle: Duration::from_secs(10),
};
const MEMBERS: u8 = 8;

#[derive(Debug, Clone)]
enum Op {
    /// `asker` asks for a pair with `peer`; each reached the relay from one of its two IPs.
    Ask {
        asker: u8,
        peer: u8,
        asker_ip: u8,
        peer_ip: u8,
    },
    /// A datagram at one of the ports ever allocated (or one never allocated), from one of a
    /// member's IPs and one of a few source ports.
    Datagram {
        port: prop::sample::Index,
        member: u8,
        member_ip: u8,
        source_port: u16,
        len: u16,
    },
    Wait(u8),
    Expire,
    Forget(u8),
}

fn op() -> impl Strategy<Value = Op> {
    let member = 0..MEMBERS;
    prop_oneof![
        3 => (member.clone(), member.clone(), 0..2u8, 0..2u8).prop_map(
            |(asker, peer, asker_ip, peer_ip)| Op::Ask { asker, peer, asker_ip, peer_ip }
        ),
        8 => (any::<prop::sample::Index>(), member.clone(), 0..2u8, 1..4u16, 1..1500u16).prop_map(
            |(port, member, member_ip, source_port, len)| Op::Datagram {
                port,
                member,
                member_ip,
                source_port,
                len,
            }
        ),
        2 => (0..8u8).prop_map(Op::Wait),
        1 => Just(Op::Expire),
        1 => member.prop_map(Op::Forget),
    ]
}

/// Member `n`'s `choice`-th underlay IP.
fn member_side(n: u8, choice: u8) -> Side {
    Side::new(key(n + 1), ip(n + 1, choice + 1))
}

/// What the relay must hold, independently of how it holds it.
#[derive(Default)]
struct Model {
    /// Each live relay port: the latest accepted source at it, if any.
    latch: HashMap<u16, Option<SocketAddr>>,
    /// Every port ever allocated, live or released: where random datagrams go.
    ports: Vec<u16>,
    released: HashSet<u16>,
    next_port: u16,
    /// Each live pair (by its first side's port): when it last forwarded or was asked for.
    last_use: HashMap<u16, Instant>,
}

impl Model {
    fn release(&mut self, pairs: &[PairStatus]) {
        for pair in pairs {
            self.last_use.remove(&pair.sides[0].port);
        }
        for side in pairs.iter().flat_map(|pair| &pair.sides) {
            self.latch.remove(&side.port);
            self.released.insert(side.port);
        }
    }
}

fn expected_refusal(pairs: &[PairStatus], asker: &PublicKey, peer: &PublicKey) -> Option<Refused> {
    for key in [asker, peer] {
        if pairs.iter().filter(|pair| pair.has(key)).count() >= LIMITS.per_member {
            return Some(Refused::MemberQuota {
                key: *key,
                limit: LIMITS.per_member,
            });
        }
    }
    (pairs.len() >= LIMITS.pairs).then_some(Refused::RelayFull {
        limit: LIMITS.pairs,
    })
}

fn step(relay: &mut Allocations, model: &mut Model, now: &mut Instant, op: Op) {
    let before: Vec<PairStatus> = relay.pairs().cloned().collect();
    match op {
        Op::Ask {
            asker,
            peer,
            asker_ip,
            peer_ip,
        } => {
            let (asker, peer) = (member_side(asker, asker_ip), member_side(peer, peer_ip));
            let result = relay.admit(*now, asker, peer);
            if asker.key == peer.key {
                assert_eq!(result, Err(Refused::SamePeer { key: asker.key }));
            } else if let Some(pair) = before.iter().find(|p| p.joins(&asker.key, &peer.key)) {
                assert_eq!(result, Ok(Admission::Existing(pair.ports_for(&asker.key))));
                model.last_use.insert(pair.sides[0].port, *now);
                for (side, new) in pair.sides.iter().flat_map(|side| {
                    [asker, peer]
                        .into_iter()
                        .filter(move |new| new.key == side.key)
                        .map(move |new| (side, new))
                }) {
                    if side.ip != new.ip {
                        model.latch.insert(side.port, None);
                    }
                }
            } else if let Some(refused) = expected_refusal(&before, &asker.key, &peer.key) {
                assert_eq!(result, Err(refused));
            } else {
                assert_eq!(result, Ok(Admission::New));
                // The shell's part: two fresh ports from the kernel.
                let ports = RelayPorts {
                    asker: model.next_port,
                    peer: model.next_port + 1,
                };
                model.next_port += 2;
                relay.insert(*now, asker, peer, ports).unwrap();
                model.last_use.insert(ports.asker, *now);
                for port in [ports.asker, ports.peer] {
                    model.latch.insert(port, None);
                    model.ports.push(port);
                }
            }
        }
        Op::Datagram {
            port,
            member,
            member_ip,
            source_port,
            len,
        } => {
            // Index 0 of the choices is a port never allocated.
            let port = match port.index(model.ports.len() + 1) {
                0 => 9,
                n => model.ports[n - 1],
            };
            let from = at(member_side(member, member_ip).ip, source_port);
            let result = relay.route(*now, port, from, len.into());
            let found = before.iter().find_map(|pair| {
                let [first, second] = &pair.sides;
                if first.port == port {
                    Some((first, second, first.port))
                } else if second.port == port {
                    Some((second, first, first.port))
                } else {
                    None
                }
            });
            let Some((near, far, pair_port)) = found else {
                assert_eq!(result, Err(Dropped::UnknownPort));
                return;
            };
            if from.ip() != near.ip {
                assert_eq!(result, Err(Dropped::Stranger));
                return;
            }
            model.latch.insert(near.port, Some(from));
            match model.latch.get(&far.port).copied().flatten() {
                Some(to) => {
                    assert_eq!(result, Ok(Forward { via: far.port, to }));
                    assert_eq!(to.ip(), far.ip, "only ever to the far side's verified IP");
                    model.last_use.insert(pair_port, *now);
                }
                None => assert_eq!(result, Err(Dropped::FarSideSilent)),
            }
        }
        Op::Wait(seconds) => *now += Duration::from_secs(seconds.into()),
        Op::Expire => {
            let released = relay.expire(*now);
            let idle = |pair: &PairStatus| now.duration_since(pair.last_use) >= LIMITS.idle;
            let want: Vec<_> = before.iter().filter(|pair| idle(pair)).cloned().collect();
            assert_eq!(released, want);
            assert!(relay.pairs().all(|pair| !idle(pair)));
            model.release(&released);
        }
        Op::Forget(member) => {
            let gone = key(member + 1);
            let released = relay.forget(&gone);
            let want: Vec<_> = before.iter().filter(|p| p.has(&gone)).cloned().collect();
            assert_eq!(released, want);
            model.release(&released);
        }
    }
}

fn check_invariants(relay: &Allocations, model: &Model) {
    let pairs: Vec<&PairStatus> = relay.pairs().collect();
    assert!(pairs.len() <= LIMITS.pairs);
    for n in 0..MEMBERS {
        let key = key(n + 1);
        assert!(pairs.iter().filter(|pair| pair.has(&key)).count() <= LIMITS.per_member);
    }
    let mut ports = HashSet::new();
    for pair in &pairs {
        let [first, second] = &pair.sides;
        assert_ne!(first.key, second.key);
        assert_eq!(Some(&pair.last_use), model.last_use.get(&first.port));
        let twins = pairs.iter().filter(|p| p.joins(&first.key, &second.key));
        assert_eq!(twins.count(), 1, "one pair per two members");
        for side in &pair.sides {
            assert!(
                ports.insert(side.port),
                "port {} faces two sides",
                side.port
            );
            assert!(!model.released.contains(&side.port));
            assert_eq!(Some(&side.latched), model.latch.get(&side.port));
            if let Some(latched) = side.latched {
                assert_eq!(latched.ip(), side.ip);
            }
        }
    }
    let live: HashSet<u16> = model.latch.keys().copied().collect();
    assert_eq!(ports, live);
    let deadline = pairs.iter().map(|pair| pair.last_use + LIMITS.idle).min();
    assert_eq!(relay.next_deadline(), deadline);
}

proptest! {
    #[test]
    fn the_table_matches_the_model(ops in prop::collection::vec(op(), 1..200)) {
        let mut now = Instant::now();
        let mut relay = Allocations::new(LIMITS);
        let mut model = Model { next_port: 10_000, ..Model::default() };
        for op in ops {
            step(&mut relay, &mut model, &mut now, op);
            check_invariants(&relay, &model);
        }
    }
}
