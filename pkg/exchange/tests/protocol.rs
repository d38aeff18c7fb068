//! The protocol end to end between `Exchange`s, and every way a datagram can be refused.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a failure is a test failure"
)]

mod common;

use common::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use wgmesh_exchange::{
    CHALLENGE_LEN, DropReason, Endpoint, EndpointKind, Event, Goodbye, Handled, Hello,
    MAX_DATAGRAM_LEN, MAX_ENDPOINTS, MAX_HELLO_DATAGRAM_LEN, MAX_NAME_LEN, MAX_OWN_EXTENSIONS_LEN,
    MAX_ROUTES, MAX_VERSION_LEN, MemberInfo, MemberName, Message, MsgType, Probe, Record,
    RecordError,
};
use wgmesh_keys::PublicKey;

fn dropped(handled: &Handled) -> DropReason {
    assert_eq!(handled.event, None);
    assert_eq!(handled.reply, None);
    handled.dropped.expect("datagram should have been dropped")
}

#[test]
fn full_handshake_both_sides_verify() {
    let (mut a, mut b) = (member(1), member(2));
    handshake(&mut a, &mut b, NOW);
    assert_eq!(a.exchange.stats().total(), 0);
    assert_eq!(b.exchange.stats().total(), 0);
    // Either side may start, at any time.
    handshake(&mut b, &mut a, NOW + 5_000);
}

#[test]
fn new_record_is_pushed_by_starting_again() {
    let (mut a, mut b) = (member(1), member(2));
    handshake(&mut a, &mut b, NOW);
    let mut record = a.record.clone();
    record.routes.push("10.99.0.0/16".parse().unwrap());
    record.flags = wgmesh_exchange::FLAG_RELAY;
    a.exchange.set_record(record.clone()).unwrap();
    // A handshake started by A ends with B verifying A's new record (asserted inside).
    handshake(&mut a, &mut b, NOW + 60_000);
    assert!(b.exchange.stats().total() == 0 && record.relay_offered());
}

#[test]
fn own_record_is_checked() {
    let a = member(1);
    let b = member(2);
    let mut foreign = a.exchange.record().clone();
    foreign.public_key = b.public_key;
    let err =
        wgmesh_exchange::Exchange::new(mesh(), a.private_key.clone(), foreign, Default::default())
            .unwrap_err();
    assert!(matches!(err, RecordError::KeyMismatch { .. }));

    let mut a = a;
    let mut wrong = a.record.clone();
    wrong.collision_counter = 1;
    assert_eq!(
        a.exchange.set_record(wrong),
        Err(RecordError::BadMeshAddress(1))
    );
    let mut too_big = a.record.clone();
    too_big.endpoints = vec![a.record.endpoints[0]; MAX_ENDPOINTS + 1];
    assert!(a.exchange.set_record(too_big).is_err());
    let mut host_bits = a.record.clone();
    host_bits.routes = vec!["10.1.2.3/16".parse().unwrap()];
    assert!(a.exchange.set_record(host_bits).is_err());
    assert_eq!(
        a.exchange.record(),
        &a.record,
        "refused records change nothing"
    );
}

#[test]
fn another_secret_is_refused_and_changes_nothing() {
    let mut a = member(1);
    let mut stranger = member_in(other_mesh(), 1);
    let probe = stranger.exchange.probe(NOW, a.addr, entropy());
    assert_eq!(
        dropped(&a.exchange.handle(NOW, stranger.addr, &probe, entropy())),
        DropReason::BadAead
    );
    let probe = a.exchange.probe(NOW, stranger.addr, entropy());
    assert_eq!(
        dropped(&stranger.exchange.handle(NOW, a.addr, &probe, entropy())),
        DropReason::BadAead
    );
    assert_eq!(a.exchange.stats().get(DropReason::BadAead), 1);
    assert_eq!(a.exchange.stats().total(), 1);
    // A still works with its real peers.
    let mut b = member(2);
    handshake(&mut a, &mut b, NOW);
}

#[test]
fn replayed_hellos_and_probes_change_nothing() {
    let (mut a, mut b) = (member(1), member(2));
    let t = handshake(&mut a, &mut b, NOW);
    let later = NOW + 1_000;
    assert_eq!(
        dropped(&a.exchange.handle(later, b.addr, &t.hello_b, entropy())),
        DropReason::Replay
    );
    assert_eq!(
        dropped(&b.exchange.handle(later, a.addr, &t.hello_a, entropy())),
        DropReason::Replay
    );
    // A replayed Probe would make B send a Hello to a forged source: refused too.
    let victim = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)), 53);
    assert_eq!(
        dropped(&b.exchange.handle(later, victim, &t.probe, entropy())),
        DropReason::Replay
    );
    // Once outside the window the timestamp alone refuses them.
    let much_later = NOW + 200_000;
    let stale = a.exchange.handle(much_later, b.addr, &t.hello_b, entropy());
    assert_eq!(dropped(&stale), DropReason::StaleTimestamp);
}

/// A member whose clock is off by more than the window is refused, and the refusal says by how
/// much, so the daemon can tell the operator to check NTP.
#[test]
fn a_skewed_clock_is_refused_and_its_offset_reported() {
    let (mut a, mut b) = (member(1), member(2));
    for (skew_ms, offset) in [(300_000i64, 300i64), (-300_000, -300), (121_500, 121)] {
        let sent = NOW.checked_add_signed(skew_ms).unwrap();
        let probe = a.exchange.probe(sent, b.addr, entropy());
        let handled = b.exchange.handle(NOW, a.addr, &probe, entropy());
        assert_eq!(dropped(&handled), DropReason::StaleTimestamp);
        assert_eq!(handled.clock_offset_secs, Some(offset), "skew {skew_ms} ms");
    }
    assert_eq!(b.exchange.stats().get(DropReason::StaleTimestamp), 3);
    // Inside the window (here +60 s) the exchange completes, and no drop reports an offset.
    let probe = a.exchange.probe(NOW + 60_000, b.addr, entropy());
    let handled = b.exchange.handle(NOW, a.addr, &probe, entropy());
    assert_eq!(handled.dropped, None);
    assert_eq!(handled.clock_offset_secs, None);
    assert!(handled.reply.is_some());
    // Other drops carry no offset.
    let garbage = b.exchange.handle(NOW, a.addr, &[0u8; 10], entropy());
    assert_eq!(garbage.dropped, Some(DropReason::TooShort));
    assert_eq!(garbage.clock_offset_secs, None);
}

#[test]
fn goodbye_is_accepted_once() {
    let (mut a, mut b, mut c) = (member(1), member(2), member(3));
    let goodbye = a.exchange.goodbye(&b.public_key, NOW, entropy()).unwrap();
    let handled = b.exchange.handle(NOW, a.addr, &goodbye, entropy());
    assert_eq!(handled.event, Some(Event::Goodbye { key: a.public_key }));
    assert_eq!(handled.reply, None);
    assert_eq!(
        dropped(&b.exchange.handle(NOW + 10_000, a.addr, &goodbye, entropy())),
        DropReason::Replay
    );
    // Addressed to B, so worthless at C.
    assert_eq!(
        dropped(&c.exchange.handle(NOW, a.addr, &goodbye, entropy())),
        DropReason::NotForUs
    );
    // C cannot say goodbye on A's behalf.
    let forged = forge(
        mesh(),
        &c.private_key,
        &b.public_key,
        &Message::Goodbye(Goodbye {
            sender: a.public_key,
            recipient: b.public_key,
            timestamp: NOW / 1000,
            nonce: [7; CHALLENGE_LEN],
            extensions: Vec::new(),
            mac: [0; 32],
        }),
    );
    assert_eq!(
        dropped(&b.exchange.handle(NOW, c.addr, &forged, entropy())),
        DropReason::BadMac
    );
    // Goodbyes outside the window are refused.
    let old = a
        .exchange
        .goodbye(&b.public_key, NOW - 121_000, entropy())
        .unwrap();
    assert_eq!(
        dropped(&b.exchange.handle(NOW, a.addr, &old, entropy())),
        DropReason::StaleTimestamp
    );
}

#[test]
fn out_of_order_hellos_are_refused() {
    let (mut a, mut b) = (member(1), member(2));
    // B's answer to a probe A never sent: deliver it to a fresh A with the same key.
    let probe = a.exchange.probe(NOW, b.addr, entropy());
    let hello_b = b
        .exchange
        .handle(NOW, a.addr, &probe, entropy())
        .reply
        .unwrap();
    let mut fresh_a = member(1);
    assert_eq!(
        dropped(&fresh_a.exchange.handle(NOW, b.addr, &hello_b, entropy())),
        DropReason::UnknownChallenge
    );
    // The challenge expires after 30 s.
    assert_eq!(
        dropped(&a.exchange.handle(NOW + 30_000, b.addr, &hello_b, entropy())),
        DropReason::UnknownChallenge
    );
    // A Hello echoing a challenge B never issued (B's challenge went to A, not to C).
    let mut c = member(3);
    let forged = forge(
        mesh(),
        &c.private_key,
        &b.public_key,
        &Message::Hello(Hello {
            sender: c.public_key,
            recipient: b.public_key,
            timestamp: NOW / 1000,
            echo: [9; CHALLENGE_LEN],
            challenge: [0; CHALLENGE_LEN],
            record: c.record.clone(),
            extensions: Vec::new(),
            mac: [0; 32],
        }),
    );
    assert_eq!(
        dropped(&b.exchange.handle(NOW, c.addr, &forged, entropy())),
        DropReason::UnknownChallenge
    );
    assert_eq!(c.exchange.stats().total(), 0);
    let _ = c.exchange.probe(NOW, elsewhere(), entropy());
}

/// A Probe from A to B, and B's challenge to A (taken from B's Hello, which A decrypts).
fn challenge_from(a: &mut Member, b: &mut Member) -> ([u8; CHALLENGE_LEN], Vec<u8>) {
    let probe = a.exchange.probe(NOW, b.addr, entropy());
    let hello_b = b
        .exchange
        .handle(NOW, a.addr, &probe, entropy())
        .reply
        .unwrap();
    let (_, plaintext) = wgmesh_exchange::open(&mesh().exchange_key(), &hello_b).unwrap();
    let Message::Hello(hello) = wgmesh_exchange::decode_message(&plaintext).unwrap() else {
        panic!("expected a Hello");
    };
    (hello.challenge, hello_b)
}

#[test]
fn impersonating_another_member_fails_the_mac() {
    let (mut a, mut b, c) = (member(1), member(2), member(3));
    // A (a member, so it holds the secret) answers B's challenge claiming to be C.
    let (challenge, _) = challenge_from(&mut a, &mut b);
    let mut as_c = hello_from(&a, &b.public_key, challenge, c.record.clone());
    if let Message::Hello(h) = &mut as_c {
        h.sender = c.public_key;
    }
    // B's challenge was issued to A's key, so C's key cannot answer it at all...
    let forged = forge(mesh(), &a.private_key, &b.public_key, &as_c);
    assert_eq!(
        dropped(&b.exchange.handle(NOW, a.addr, &forged, entropy())),
        DropReason::UnknownChallenge
    );
    // ...and a probe-issued challenge (any key may answer) still needs C's private key.
    let mut b_probe_challenge = [0; CHALLENGE_LEN];
    let probe = b.exchange.probe(NOW, c.addr, entropy());
    let (_, plain) = wgmesh_exchange::open(&mesh().exchange_key(), &probe).unwrap();
    if let Ok(Message::Probe(p)) = wgmesh_exchange::decode_message(&plain) {
        b_probe_challenge = p.challenge;
    }
    let mut as_c = hello_from(&a, &b.public_key, b_probe_challenge, c.record.clone());
    if let Message::Hello(h) = &mut as_c {
        h.sender = c.public_key;
    }
    let forged = forge(mesh(), &a.private_key, &b.public_key, &as_c);
    // From A's own address it answers a challenge sent elsewhere; spoofing C's, the MAC fails.
    assert_eq!(
        dropped(&b.exchange.handle(NOW, a.addr, &forged, entropy())),
        DropReason::AddressMismatch
    );
    assert_eq!(
        dropped(&b.exchange.handle(NOW, c.addr, &forged, entropy())),
        DropReason::BadMac
    );
    // The failed attempt did not burn the challenge: C itself can still answer it.
    let genuine = forge(
        mesh(),
        &c.private_key,
        &b.public_key,
        &hello_from(&c, &b.public_key, b_probe_challenge, c.record.clone()),
    );
    let handled = b.exchange.handle(NOW, c.addr, &genuine, entropy());
    assert!(matches!(handled.event, Some(Event::Verified { .. })));
}

type Tamper = Box<dyn Fn(&mut Record)>;

#[test]
fn records_must_belong_to_the_sender_and_derive_their_addresses() {
    let (mut a, mut b, c) = (member(1), member(2), member(3));
    let attempts: [(Tamper, DropReason); 5] = [
        (
            Box::new(|r| r.mesh_ipv4 = Ipv4Addr::new(10, 0, 0, 1)),
            DropReason::BadMeshAddress,
        ),
        (
            Box::new(|r| r.mesh_ipv6 = Ipv6Addr::LOCALHOST),
            DropReason::BadMeshAddress,
        ),
        (
            Box::new(|r| r.collision_counter = 1),
            DropReason::BadMeshAddress,
        ),
        (
            Box::new(|r| r.collision_counter = 16),
            DropReason::BadMeshAddress,
        ),
        (
            Box::new(move |r| *r = record_for(mesh(), c.public_key, 3)),
            DropReason::RecordKeyMismatch,
        ),
    ];
    for (tamper, reason) in attempts {
        let (challenge, _) = challenge_from(&mut a, &mut b);
        let mut record = a.record.clone();
        tamper(&mut record);
        let forged = forge(
            mesh(),
            &a.private_key,
            &b.public_key,
            &hello_from(&a, &b.public_key, challenge, record),
        );
        assert_eq!(
            dropped(&b.exchange.handle(NOW, a.addr, &forged, entropy())),
            reason
        );
        // The challenge survives: the honest record is then accepted.
        let honest = forge(
            mesh(),
            &a.private_key,
            &b.public_key,
            &hello_from(&a, &b.public_key, challenge, a.record.clone()),
        );
        let handled = b.exchange.handle(NOW, a.addr, &honest, entropy());
        assert!(matches!(handled.event, Some(Event::Verified { .. })));
    }
}

#[test]
fn timestamp_window_is_plus_minus_120_seconds() {
    let mut b = member(2);
    let a = member(1);
    for (offset, ok) in [(-121i64, false), (-119, true), (119, true), (121, false)] {
        let probe = seal_message(
            mesh(),
            &Message::Probe(Probe {
                sender: a.public_key,
                timestamp: (NOW / 1000).checked_add_signed(offset).unwrap(),
                challenge: [offset.unsigned_abs() as u8 + u8::from(offset > 0) * 100; 16],
                extensions: Vec::new(),
            }),
        );
        let handled = b.exchange.handle(NOW, a.addr, &probe, entropy());
        if ok {
            assert!(handled.reply.is_some(), "offset {offset}");
        } else {
            assert_eq!(
                dropped(&handled),
                DropReason::StaleTimestamp,
                "offset {offset}"
            );
        }
    }
    // ±120 exactly is inside.
    let probe = seal_message(
        mesh(),
        &Message::Probe(Probe {
            sender: a.public_key,
            timestamp: NOW / 1000 + 120,
            challenge: [3; 16],
            extensions: Vec::new(),
        }),
    );
    assert!(
        b.exchange
            .handle(NOW, a.addr, &probe, entropy())
            .reply
            .is_some()
    );
}

#[test]
fn malformed_datagrams_are_dropped_by_reason() {
    let (mut a, mut b) = (member(1), member(2));
    let probe = a.exchange.probe(NOW, elsewhere(), entropy());
    let mut cases: Vec<(Vec<u8>, DropReason)> = vec![
        (vec![0; MAX_DATAGRAM_LEN + 1], DropReason::TooLarge),
        (vec![], DropReason::TooShort),
        (probe[..44].to_vec(), DropReason::TooShort),
        (probe[..probe.len() - 1].to_vec(), DropReason::BadAead),
    ];
    let mut bad_magic = probe.clone();
    bad_magic[0] = b'X';
    cases.push((bad_magic, DropReason::BadMagic));
    let mut bad_type = probe.clone();
    bad_type[4] = 9;
    cases.push((bad_type, DropReason::UnknownType));
    let mut retyped = probe.clone();
    retyped[4] = MsgType::Goodbye.to_wire();
    cases.push((retyped, DropReason::BadAead));
    let mut flipped = probe.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    cases.push((flipped, DropReason::BadAead));
    // Sealed correctly, but the plaintext is wrong.
    let plain = wgmesh_exchange::encode_message(&Message::Probe(Probe {
        sender: a.public_key,
        timestamp: NOW / 1000,
        challenge: [1; 16],
        extensions: Vec::new(),
    }))
    .unwrap();
    cases.push((
        seal_with_type(mesh(), MsgType::Probe, &plain[..plain.len() - 1]),
        DropReason::Malformed,
    ));
    let mut trailing = plain.clone();
    trailing.push(0);
    cases.push((
        seal_with_type(mesh(), MsgType::Probe, &trailing),
        DropReason::Malformed,
    ));
    cases.push((
        seal_with_type(mesh(), MsgType::Hello, &plain),
        DropReason::TypeMismatch,
    ));
    // Our own probe, reflected back at us.
    cases.push((probe.clone(), DropReason::FromSelf));
    let mut zero_key = plain.clone();
    zero_key[1..33].fill(0);
    cases.push((
        seal_with_type(mesh(), MsgType::Probe, &zero_key),
        DropReason::WeakKey,
    ));

    for (i, (datagram, reason)) in cases.iter().enumerate() {
        let receiver = if *reason == DropReason::FromSelf {
            &mut a
        } else {
            &mut b
        };
        // A distinct source per case keeps the rate limiter out of the way.
        let from = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, i as u8)), 1);
        assert_eq!(
            dropped(&receiver.exchange.handle(NOW, from, datagram, entropy())),
            *reason,
            "case {i}"
        );
    }
    assert_eq!(b.exchange.stats().get(DropReason::BadAead), 3);
    assert_eq!(b.exchange.stats().total(), cases.len() as u64 - 1);
}

#[test]
fn flood_from_one_source_reaches_the_aead_only_a_bucketful() {
    let (a, mut b) = (member(1), member(2));
    let garbage = member_in(other_mesh(), 1)
        .exchange
        .probe(NOW, elsewhere(), entropy());
    for _ in 0..1_000 {
        b.exchange.handle(NOW, a.addr, &garbage, entropy());
    }
    let stats = b.exchange.stats();
    assert_eq!(stats.aead_opens(), 40);
    assert_eq!(stats.get(DropReason::BadAead), 40);
    assert_eq!(stats.get(DropReason::RateLimited), 960);
    // Other sources are unaffected; the flooder refills at 20 per second.
    let other = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1)), 1);
    let handled = b.exchange.handle(NOW, other, &garbage, entropy());
    assert_eq!(handled.dropped, Some(DropReason::BadAead));
    let handled = b.exchange.handle(NOW + 50, a.addr, &garbage, entropy());
    assert_eq!(handled.dropped, Some(DropReason::BadAead));
}

fn max_record(keys: &wgmesh_derive::MeshKeys, public_key: PublicKey) -> Record {
    let mut record = record_for(keys, public_key, 9);
    record.endpoints = (0..MAX_ENDPOINTS as u16)
        .map(|i| Endpoint {
            kind: EndpointKind::Stun,
            addr: SocketAddr::new(
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, i, 0, 0, 0, 0, 1)),
                i,
            ),
        })
        .collect();
    record.routes = (0..MAX_ROUTES as u16)
        .map(|i| {
            ipnet::IpNet::new(
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, i, 0, 0, 0, 1)),
                128,
            )
            .unwrap()
        })
        .collect();
    record.flags = 0xff;
    record.timestamp = u64::MAX;
    record
}

#[test]
fn largest_hello_fits_one_datagram_and_is_accepted() {
    let (mut a, mut b) = (member(1), member(2));
    a.exchange
        .set_record(max_record(mesh(), a.public_key))
        .unwrap();
    b.exchange
        .set_record(max_record(mesh(), b.public_key))
        .unwrap();
    // The longest version and name this release sends.
    for m in [&mut a, &mut b] {
        let name = MemberName::parse(&"n".repeat(MAX_NAME_LEN)).unwrap();
        m.exchange
            .set_info(MemberInfo::new(&"9".repeat(MAX_VERSION_LEN), Some(name)));
    }
    // First contact: B answers the Probe before it knows A takes extensions, so that Hello has
    // the previous release's largest size; everything after carries both fields.
    let t = handshake(&mut a, &mut b, NOW);
    assert_eq!(t.hello_b.len(), 984, "the previous release's bound");
    assert_eq!(t.hello_a.len(), MAX_HELLO_DATAGRAM_LEN);
    assert_eq!(t.hello_b_again.unwrap().len(), MAX_HELLO_DATAGRAM_LEN);
    let t = handshake(&mut a, &mut b, NOW + 1_000);
    assert_eq!(t.hello_b.len(), MAX_HELLO_DATAGRAM_LEN);
    assert_eq!(t.hello_a.len(), MAX_HELLO_DATAGRAM_LEN);
    assert_eq!(MAX_HELLO_DATAGRAM_LEN, 984 + MAX_OWN_EXTENSIONS_LEN);
    assert_eq!(MAX_HELLO_DATAGRAM_LEN, 1083);
    const { assert!(MAX_HELLO_DATAGRAM_LEN <= MAX_DATAGRAM_LEN) };
}

#[test]
fn debug_output_never_shows_key_material() {
    let a = member(1);
    let printed = format!("{:?} {:?}", a.exchange, entropy());
    let private_hex = a.private_key.expose_hex();
    assert!(!printed.contains(&private_hex));
    assert!(!printed.contains(&hex_of(&mesh().exchange_key())));
    assert!(printed.contains(&a.public_key.to_base64()));
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn one_lan_probe_is_answered_by_every_member_but_each_only_once() {
    // A Probe to the LAN group reaches every member; each must be able to complete its
    // handshake with the prober from that one challenge.
    let (mut a, mut b, mut c) = (member(1), member(2), member(3));
    let group = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(239, 192, 7, 7)), 51900);
    let probe = a.exchange.probe(NOW, group, entropy());
    let hello_b = b
        .exchange
        .handle(NOW, a.addr, &probe, entropy())
        .reply
        .expect("B answers");
    let hello_c = c
        .exchange
        .handle(NOW, a.addr, &probe, entropy())
        .reply
        .expect("C answers");
    for (hello, from) in [(&hello_b, b.addr), (&hello_c, c.addr)] {
        let handled = a.exchange.handle(NOW, from, hello, entropy());
        assert!(
            matches!(handled.event, Some(Event::Verified { .. })),
            "{handled:?}"
        );
    }
    // A second answer from the same member to the same challenge is a replay.
    let replay = a.exchange.handle(NOW + 10, b.addr, &hello_b, entropy());
    assert_eq!(dropped(&replay), DropReason::Replay);
}

#[test]
fn gossip_carries_verified_entries_and_drops_forged_ones() {
    let (a, b, c) = (member(1), member(2), member(3));
    let mut good = c.exchange.record().clone();
    good.routes.clear();
    let entry = wgmesh_exchange::GossipEntry {
        control: c.addr,
        record: good.clone(),
    };
    let mut forged = good.clone();
    forged.mesh_ipv4 = std::net::Ipv4Addr::new(10, 0, 0, 1);
    let forged = wgmesh_exchange::GossipEntry {
        control: c.addr,
        record: forged,
    };
    let about_b = wgmesh_exchange::GossipEntry {
        control: b.addr,
        record: b.exchange.record().clone(),
    };
    let datagram = a
        .exchange
        .gossip(&[entry.clone(), forged, about_b], NOW, entropy());
    assert!(datagram.len() <= MAX_DATAGRAM_LEN);
    let mut b = b;
    let handled = b.exchange.handle(NOW, a.addr, &datagram, entropy());
    assert_eq!(handled.reply, None);
    match handled.event {
        Some(Event::Gossip {
            sender,
            from,
            entries,
            extensions,
        }) => {
            assert!(extensions.is_empty());
            assert_eq!(sender, *a.exchange.public_key());
            assert_eq!(from, a.addr);
            assert_eq!(entries, vec![entry], "forged and self entries are removed");
        }
        other => panic!("expected gossip, got {other:?}"),
    }
    assert_eq!(b.exchange.stats().get(DropReason::BadGossipEntry), 2);
}

#[test]
fn the_largest_gossip_fits_a_datagram() {
    let a = member(1);
    let keys = mesh();
    let entries: Vec<_> = (2..8u8)
        .map(|n| {
            let m = member(n);
            let mut record = max_record(keys, m.public_key);
            record
                .endpoints
                .truncate(wgmesh_exchange::MAX_GOSSIP_ENDPOINTS);
            record.routes.clear();
            wgmesh_exchange::GossipEntry {
                control: SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 9),
                record,
            }
        })
        .collect();
    let datagram = a.exchange.gossip(&entries, NOW, entropy());
    assert_eq!(datagram.len(), wgmesh_exchange::MAX_GOSSIP_DATAGRAM_LEN);
    assert!(datagram.len() <= MAX_DATAGRAM_LEN);
}
