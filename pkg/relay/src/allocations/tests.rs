use super::*;
use crate::{IDLE_RELEASE, MAX_ALLOCATIONS_PER_MEMBER, MAX_PAIRS};
use std::net::Ipv4Addr;
use std::time::Duration;

mod model;

fn key(n: u8) -> PublicKey {
    PublicKey::from_bytes([n; 32])
}

fn ip(a: u8, b: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, a, b))
}

/// Member `n`: key `[n; 32]`, underlay IP 10.0.n.1.
fn side(n: u8) -> Side {
    Side::new(key(n), ip(n, 1))
}

fn at(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}

fn ports(asker: u16, peer: u16) -> RelayPorts {
    RelayPorts { asker, peer }
}

/// A relay holding `with_one` pairs of member 1 (with members 2, 3, ...) and `others` pairs of
/// members that have no other pair (100 and 101, 102 and 103, ...).
fn filled(now: Instant, with_one: u8, others: u8) -> Allocations {
    let mut relay = Allocations::new(Limits::default());
    let mut port = 1000;
    let pairs = (0..with_one)
        .map(|n| (1, 2 + n))
        .chain((0..others).map(|n| (100 + 2 * n, 101 + 2 * n)));
    for (a, b) in pairs {
        assert_eq!(relay.admit(now, side(a), side(b)), Ok(Admission::New));
        relay
            .insert(now, side(a), side(b), ports(port, port + 1))
            .unwrap();
        port += 2;
    }
    relay
}

/// A (member 1, 10.0.1.1) and B (member 2, 10.0.2.1) on relay ports 1000 and 2000.
fn one_pair(now: Instant) -> Allocations {
    let mut relay = Allocations::new(Limits::default());
    assert_eq!(relay.admit(now, side(1), side(2)), Ok(Admission::New));
    relay
        .insert(now, side(1), side(2), ports(1000, 2000))
        .unwrap();
    relay
}

fn only_pair(relay: &Allocations) -> &PairStatus {
    let pairs: Vec<_> = relay.pairs().collect();
    assert_eq!(pairs.len(), 1);
    pairs[0]
}

#[test]
fn an_existing_pair_is_found_from_either_end_with_the_askers_port_first() {
    let now = Instant::now();
    let mut relay = one_pair(now);
    assert_eq!(
        relay.admit(now, side(1), side(2)),
        Ok(Admission::Existing(ports(1000, 2000)))
    );
    assert_eq!(
        relay.admit(now, side(2), side(1)),
        Ok(Admission::Existing(ports(2000, 1000)))
    );
    assert_eq!(relay.pairs().count(), 1);
}

#[test]
fn refusals() {
    let now = Instant::now();
    let per_member = MAX_ALLOCATIONS_PER_MEMBER as u8;
    let others = (MAX_PAIRS - MAX_ALLOCATIONS_PER_MEMBER) as u8;
    // (case, pairs of member 1, other pairs, asker, peer, refusal)
    let cases = [
        (
            "a member asking for itself",
            0,
            0,
            side(1),
            side(1),
            Refused::SamePeer { key: key(1) },
        ),
        (
            "the 9th pair of the asker",
            per_member,
            0,
            side(1),
            side(50),
            Refused::MemberQuota {
                key: key(1),
                limit: 8,
            },
        ),
        (
            "the 9th pair of the peer",
            per_member,
            0,
            side(50),
            side(1),
            Refused::MemberQuota {
                key: key(1),
                limit: 8,
            },
        ),
        (
            "the 65th pair",
            per_member,
            others,
            side(60),
            side(61),
            Refused::RelayFull { limit: 64 },
        ),
    ];
    for (name, with_one, others, asker, peer, refused) in cases {
        let mut relay = filled(now, with_one, others);
        let before = relay.pairs().count();
        assert_eq!(
            relay.admit(now, asker, peer),
            Err(refused.clone()),
            "{name}"
        );
        assert_eq!(
            relay.insert(now, asker, peer, ports(60_000, 60_001)),
            Err(refused.clone()),
            "{name}: insert checks again"
        );
        assert_eq!(relay.pairs().count(), before, "{name}");
        assert_eq!(
            relay.route(now, 60_000, at(asker.ip, 1), 1),
            Err(Dropped::UnknownPort),
            "{name}"
        );
        let message = refused.to_string();
        assert!(
            message.contains(&key(1).short()) || matches!(refused, Refused::RelayFull { .. }),
            "{name}: {message}"
        );
        assert!(!message.contains(&key(1).to_base64()), "{name}: {message}");
    }
    // A pair that ends frees its members' quota and the relay's.
    let mut relay = filled(now, per_member, others);
    relay.forget(&key(2));
    assert_eq!(relay.admit(now, side(1), side(50)), Ok(Admission::New));
}

#[test]
fn insert_checks_what_changed_since_admit() {
    let now = Instant::now();
    let mut relay = one_pair(now);
    assert_eq!(
        relay.insert(now, side(2), side(1), ports(3000, 3001)),
        Err(Refused::PairExists {
            asker: key(2),
            peer: key(1)
        })
    );
    for (taken, want) in [
        (ports(1000, 3001), 1000),
        (ports(3000, 2000), 2000),
        (ports(3000, 3000), 3000),
    ] {
        assert_eq!(
            relay.insert(now, side(3), side(4), taken),
            Err(Refused::PortInUse { port: want })
        );
    }
    assert_eq!(relay.pairs().count(), 1);
    // Nothing half-inserted: port 3001 of the refused insert does not route.
    assert_eq!(
        relay.route(now, 3001, at(ip(4, 1), 1), 1),
        Err(Dropped::UnknownPort)
    );
}

/// A datagram's fate, step by step through one pair's life: A = 10.0.1.1 on relay port 1000,
/// B = 10.0.2.1 on relay port 2000.
#[test]
fn route_latches_the_source_port_of_the_verified_ip_only() {
    let now = Instant::now();
    let a = ip(1, 1);
    let b = ip(2, 1);
    let forward = |via, to| Ok(Forward { via, to });
    let steps = [
        (
            "A first: B has not sent",
            1000,
            at(a, 5000),
            Err(Dropped::FarSideSilent),
        ),
        (
            "B answers: A is latched",
            2000,
            at(b, 6000),
            forward(1000, at(a, 5000)),
        ),
        ("A again", 1000, at(a, 5000), forward(2000, at(b, 6000))),
        (
            "A's NAT rebinds it: same IP, new port",
            1000,
            at(a, 5001),
            forward(2000, at(b, 6000)),
        ),
        (
            "B's datagrams follow A",
            2000,
            at(b, 6000),
            forward(1000, at(a, 5001)),
        ),
        (
            "another IP at A's port",
            1000,
            at(ip(9, 9), 5001),
            Err(Dropped::Stranger),
        ),
        (
            "B's datagram at A's port",
            1000,
            at(b, 6000),
            Err(Dropped::Stranger),
        ),
        (
            "A's latch survived both",
            2000,
            at(b, 6000),
            forward(1000, at(a, 5001)),
        ),
        (
            "an IPv4-mapped source is A",
            1000,
            "[::ffff:10.0.1.1]:5002".parse().unwrap(),
            forward(2000, at(b, 6000)),
        ),
        (
            "and latched as IPv4",
            2000,
            at(b, 6000),
            forward(1000, at(a, 5002)),
        ),
        (
            "a port no pair holds",
            3000,
            at(a, 5000),
            Err(Dropped::UnknownPort),
        ),
    ];
    let mut relay = one_pair(now);
    for (step, port, from, want) in steps {
        assert_eq!(relay.route(now, port, from, 100), want, "{step}");
    }
    let pair = only_pair(&relay);
    let [a_side, b_side] = &pair.sides;
    assert_eq!(a_side.latched, Some(at(a, 5002)));
    assert_eq!(b_side.latched, Some(at(b, 6000)));
    // A: forwarded 3 (steps 3, 4, 9), dropped 3 (steps 1, 6, 7); B: forwarded 4, dropped 0.
    let traffic = |datagrams| Traffic {
        datagrams,
        bytes: datagrams * 100,
    };
    assert_eq!((a_side.forwarded, a_side.dropped), (traffic(3), 3));
    assert_eq!((b_side.forwarded, b_side.dropped), (traffic(4), 0));
}

#[test]
fn a_new_verified_ip_drops_the_latch() {
    let now = Instant::now();
    let mut relay = one_pair(now);
    relay.route(now, 1000, at(ip(1, 1), 5000), 1).unwrap_err();
    relay.route(now, 2000, at(ip(2, 1), 6000), 1).unwrap();
    // A moved to another network and asks again from there.
    let moved = Side::new(key(1), ip(1, 2));
    assert_eq!(
        relay.admit(now, moved, side(2)),
        Ok(Admission::Existing(ports(1000, 2000)))
    );
    assert_eq!(
        relay.route(now, 2000, at(ip(2, 1), 6000), 1),
        Err(Dropped::FarSideSilent),
        "nothing goes to A's old address"
    );
    assert_eq!(
        relay.route(now, 1000, at(ip(1, 1), 5000), 1),
        Err(Dropped::Stranger),
        "the old IP is no longer A's"
    );
    assert_eq!(
        relay.route(now, 1000, at(ip(1, 2), 7000), 1),
        Ok(Forward {
            via: 2000,
            to: at(ip(2, 1), 6000)
        })
    );
    // The same IP again changes nothing.
    relay.admit(now, moved, side(2)).unwrap();
    assert_eq!(
        relay.route(now, 2000, at(ip(2, 1), 6000), 1),
        Ok(Forward {
            via: 1000,
            to: at(ip(1, 2), 7000)
        })
    );
}

#[test]
fn idle_pairs_expire_and_their_ports_stop_routing() {
    let start = Instant::now();
    let second = Duration::from_secs(1);
    let mut relay = one_pair(start);
    relay
        .insert(start, side(3), side(4), ports(3000, 4000))
        .unwrap();
    assert_eq!(relay.next_deadline(), Some(start + IDLE_RELEASE));
    // Pair (1, 2) forwards at 100 s; pair (3, 4) only gets datagrams from one side, which do
    // not count as use.
    let t100 = start + 100 * second;
    relay.route(t100, 1000, at(ip(1, 1), 5000), 1).unwrap_err();
    relay.route(t100, 2000, at(ip(2, 1), 6000), 1).unwrap();
    relay.route(t100, 3000, at(ip(3, 1), 5000), 1).unwrap_err();
    assert_eq!(relay.expire(start + IDLE_RELEASE - second), []);
    let released = relay.expire(start + IDLE_RELEASE);
    assert_eq!(released.len(), 1);
    assert_eq!(
        [released[0].sides[0].key, released[0].sides[1].key],
        [key(3), key(4)]
    );
    assert_eq!(
        relay.route(t100, 3000, at(ip(3, 1), 5000), 1),
        Err(Dropped::UnknownPort)
    );
    assert_eq!(relay.next_deadline(), Some(t100 + IDLE_RELEASE));
    // Asking again restarts the clock.
    let t200 = start + 200 * second;
    relay.admit(t200, side(2), side(1)).unwrap();
    assert_eq!(relay.expire(t100 + IDLE_RELEASE), []);
    let released = relay.expire(t200 + IDLE_RELEASE);
    assert_eq!(released.len(), 1);
    assert_eq!(
        released[0].sides[1].forwarded.datagrams, 1,
        "final counters"
    );
    assert_eq!(relay.next_deadline(), None);
    for port in [1000, 2000] {
        assert_eq!(
            relay.route(t200, port, at(ip(2, 1), 6000), 1),
            Err(Dropped::UnknownPort)
        );
    }
}

#[test]
fn forgetting_a_member_releases_all_its_pairs() {
    let now = Instant::now();
    let mut relay = filled(now, 3, 2);
    let released = relay.forget(&key(1));
    assert_eq!(released.len(), 3);
    assert!(released.iter().all(|pair| pair.has(&key(1))));
    assert_eq!(relay.pairs().count(), 2);
    assert!(relay.pairs().all(|pair| !pair.has(&key(1))));
    // filled() gave member 1's pairs ports 1000..1006.
    for port in 1000..1006 {
        assert_eq!(
            relay.route(now, port, at(ip(1, 1), 1), 1),
            Err(Dropped::UnknownPort)
        );
    }
    assert_eq!(relay.forget(&key(1)), []);
}
