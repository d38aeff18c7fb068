//! Abuse of the exchange protocol (issue 7, item 2): replays, reordering, non-members, members
//! lying about keys or addresses, bad sizes, floods. Each attack must change nothing: no event
//! (so no member-table change in the shell), no reply, exactly one drop counter moved by one per
//! datagram, and no AEAD work for datagrams the rate limiter refuses. After every attack the
//! victim still completes an honest handshake, so no state was corrupted either.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failure is a test failure"
)]

mod common;

use common::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use wgmesh_exchange::{
    CHALLENGE_LEN, DropCounters, DropReason, Event, Goodbye, GossipEntry, Handled,
    MAX_DATAGRAM_LEN, Message, MsgType, OVERHEAD, Probe, Record, decode_message, encode_message,
    open,
};

/// Per-reason counts plus AEAD opens, to compare before and after an attack.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Counters {
    drops: Vec<(DropReason, u64)>,
    aead_opens: u64,
}

impl From<&DropCounters> for Counters {
    fn from(stats: &DropCounters) -> Self {
        Self {
            drops: DropReason::ALL
                .iter()
                .map(|&reason| (reason, stats.get(reason)))
                .collect(),
            aead_opens: stats.aead_opens(),
        }
    }
}

/// Delivers `datagram` to `to` and asserts that it changed nothing but one counter: no event,
/// no reply, `reason` counted once, no other reason moved, and an AEAD open only if `opened`.
#[track_caller]
fn refused(to: &mut Member, now: u64, from: SocketAddr, datagram: &[u8], reason: DropReason) {
    let before = Counters::from(to.exchange.stats());
    let handled = to.exchange.handle(now, from, datagram, entropy());
    assert_unchanged(&handled, reason);
    let after = Counters::from(to.exchange.stats());
    for ((r, was), (_, is)) in before.drops.iter().zip(&after.drops) {
        let expected = was + u64::from(*r == reason);
        assert_eq!(*is, expected, "counter {r} after a {reason} drop");
    }
    let opened = !matches!(
        reason,
        DropReason::RateLimited
            | DropReason::TooLarge
            | DropReason::TooShort
            | DropReason::BadMagic
            | DropReason::UnknownType
    );
    assert_eq!(
        after.aead_opens,
        before.aead_opens + u64::from(opened),
        "AEAD opens after a {reason} drop"
    );
}

#[track_caller]
fn assert_unchanged(handled: &Handled, reason: DropReason) {
    assert_eq!(handled.event, None, "a {reason} drop produced an event");
    assert_eq!(handled.reply, None, "a {reason} drop produced a reply");
    assert_eq!(handled.dropped, Some(reason));
}

/// A distinct source address per call, so the rate limiter stays out of tests about other drops.
fn fresh_source() -> SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0a80_0000 | n)), 40_000)
}

/// The plaintext of a datagram sealed under the test mesh.
fn plaintext(datagram: &[u8]) -> Message {
    let (_, plain) = open(&mesh().exchange_key(), datagram).unwrap();
    decode_message(&plain).unwrap()
}

fn probe_challenge(datagram: &[u8]) -> [u8; CHALLENGE_LEN] {
    match plaintext(datagram) {
        Message::Probe(probe) => probe.challenge,
        other => panic!("expected a Probe, got {other:?}"),
    }
}

fn hello_challenge(datagram: &[u8]) -> [u8; CHALLENGE_LEN] {
    match plaintext(datagram) {
        Message::Hello(hello) => hello.challenge,
        other => panic!("expected a Hello, got {other:?}"),
    }
}

#[test]
fn every_replayed_datagram_changes_nothing() {
    let (mut a, mut b, mut c) = (member(1), member(2), member(3));
    let t = handshake(&mut a, &mut b, NOW);
    let goodbye = a.exchange.goodbye(&b.public_key, NOW, entropy()).unwrap();
    let first = b.exchange.handle(NOW, a.addr, &goodbye, entropy());
    assert_eq!(first.event, Some(Event::Goodbye { key: a.public_key }));

    // Within the window, from the original source and from forged ones (a replayed Probe would
    // otherwise make B send a Hello to a victim), at once and a minute later.
    for now in [NOW + 1, NOW + 60_000] {
        for from in [a.addr, fresh_source()] {
            refused(&mut b, now, from, &t.probe, DropReason::Replay);
            refused(&mut b, now, from, &t.hello_a, DropReason::Replay);
            refused(&mut b, now, from, &goodbye, DropReason::Replay);
        }
        for from in [b.addr, fresh_source()] {
            refused(&mut a, now, from, &t.hello_b, DropReason::Replay);
        }
    }
    // Delivered to the wrong member: a third member's view does not change either.
    refused(&mut c, NOW + 1, a.addr, &t.hello_a, DropReason::NotForUs);
    refused(&mut c, NOW + 1, a.addr, &goodbye, DropReason::NotForUs);
    // Reflected at its author.
    refused(&mut a, NOW + 1, b.addr, &t.hello_a, DropReason::FromSelf);
    refused(&mut a, NOW + 1, b.addr, &t.probe, DropReason::FromSelf);
    // Past the window the timestamp alone refuses them, before any cache lookup.
    for datagram in [&t.probe, &t.hello_a, &goodbye] {
        refused(
            &mut b,
            NOW + 200_000,
            fresh_source(),
            datagram,
            DropReason::StaleTimestamp,
        );
    }
    // B's state is intact: A can join again with a new handshake.
    handshake(&mut a, &mut b, NOW + 200_000);
}

#[test]
fn a_replayed_gossip_is_idempotent_and_expires_with_the_window() {
    // Gossip carries no challenge and is not in the replay cache: a replay within the window
    // re-delivers the very same entries (which the shell already has, so nothing changes), and
    // it can never carry routes or entries whose addresses do not derive from their keys.
    let (a, mut b, c) = (member(1), member(2), member(3));
    let mut about_c = c.record.clone();
    about_c.routes.clear();
    let entry = GossipEntry {
        control: c.addr,
        record: about_c,
    };
    let datagram = a
        .exchange
        .gossip(std::slice::from_ref(&entry), NOW, entropy());
    let first = b.exchange.handle(NOW, a.addr, &datagram, entropy());
    let replay = b
        .exchange
        .handle(NOW + 30_000, fresh_source(), &datagram, entropy());
    let entries = |h: &Handled| match &h.event {
        Some(Event::Gossip { entries, .. }) => entries.clone(),
        other => panic!("expected gossip, got {other:?}"),
    };
    assert_eq!(entries(&first), vec![entry]);
    assert_eq!(entries(&replay), entries(&first));
    assert_eq!(replay.reply, None);
    assert_eq!(b.exchange.stats().total(), 0);
    refused(
        &mut b,
        NOW + 200_000,
        a.addr,
        &datagram,
        DropReason::StaleTimestamp,
    );
}

#[test]
fn reordered_handshake_messages_change_nothing() {
    let (mut a, mut b) = (member(1), member(2));
    // The third message before the second: A answers a challenge B never sent to A.
    let probe = a.exchange.probe(NOW, b.addr, entropy());
    let hello_b = b
        .exchange
        .handle(NOW, a.addr, &probe, entropy())
        .reply
        .unwrap();
    let mut a_again = member(1);
    refused(
        &mut a_again,
        NOW,
        b.addr,
        &hello_b,
        DropReason::UnknownChallenge,
    );
    // A Hello from A, answering B's challenge, is worthless to a B that restarted meanwhile.
    let hello_a = a
        .exchange
        .handle(NOW, b.addr, &hello_b, entropy())
        .reply
        .unwrap();
    let mut b_restarted = member(2);
    refused(
        &mut b_restarted,
        NOW,
        a.addr,
        &hello_a,
        DropReason::UnknownChallenge,
    );
    // Delivered late (after B's 30 s challenge lifetime) to the real B: refused, nothing learned.
    refused(
        &mut b,
        NOW + 30_001,
        a.addr,
        &hello_a,
        DropReason::UnknownChallenge,
    );
    // Two handshakes interleaved: answers delivered in the opposite order still each verify
    // exactly once, with the same record, and no answer is accepted twice.
    let p1 = a.exchange.probe(NOW + 40_000, b.addr, entropy());
    let p2 = a.exchange.probe(NOW + 40_000, b.addr, entropy());
    let h1 = b
        .exchange
        .handle(NOW + 40_000, a.addr, &p1, entropy())
        .reply
        .unwrap();
    let h2 = b
        .exchange
        .handle(NOW + 40_000, a.addr, &p2, entropy())
        .reply
        .unwrap();
    let mut answers = Vec::new();
    for h in [&h2, &h1] {
        let handled = a.exchange.handle(NOW + 40_000, b.addr, h, entropy());
        assert!(
            matches!(&handled.event, Some(Event::Verified { record, .. }) if *record == b.record)
        );
        answers.push(handled.reply.unwrap());
    }
    for answer in answers.iter().rev() {
        let handled = b.exchange.handle(NOW + 40_000, a.addr, answer, entropy());
        assert!(
            matches!(&handled.event, Some(Event::Verified { record, .. }) if *record == a.record)
        );
    }
    for h in [&h1, &h2] {
        refused(&mut a, NOW + 40_001, b.addr, h, DropReason::Replay);
    }
    for answer in &answers {
        refused(&mut b, NOW + 40_001, a.addr, answer, DropReason::Replay);
    }
    assert_ne!(
        hello_challenge(&h1),
        hello_challenge(&h2),
        "each Hello carries its own challenge"
    );
}

/// A Hello withheld by an on-path attacker and delivered after a newer one, while the Probe
/// challenge it answers is still live (30 s), would roll the member's record (routes, endpoints)
/// back until the next refresh. The record's `timestamp` orders them: the older one is dropped
/// as `superseded`.
#[test]
fn a_withheld_older_hello_does_not_roll_a_record_back() {
    let (mut a, mut b) = (member(1), member(2));
    let probe_1 = b.exchange.probe(NOW, a.addr, entropy());
    let old = a
        .exchange
        .handle(NOW, b.addr, &probe_1, entropy())
        .reply
        .unwrap();
    let mut newer = a.record.clone();
    newer.routes.clear();
    newer.timestamp += 5;
    a.exchange.set_record(newer).unwrap();
    let probe_2 = b.exchange.probe(NOW + 5_000, a.addr, entropy());
    let fresh = a
        .exchange
        .handle(NOW + 5_000, b.addr, &probe_2, entropy())
        .reply
        .unwrap();
    assert!(
        b.exchange
            .handle(NOW + 5_000, a.addr, &fresh, entropy())
            .event
            .is_some()
    );
    let late = b.exchange.handle(NOW + 6_000, a.addr, &old, entropy());
    assert_eq!(late.event, None, "an older record replaced a newer one");
}

/// A Goodbye withheld and delivered after the member said Hello again is refused: it does not
/// remove a member that came back.
#[test]
fn a_withheld_goodbye_does_not_remove_a_member_that_came_back() {
    let (mut a, mut b) = (member(1), member(2));
    let withheld = a.exchange.goodbye(&b.public_key, NOW, entropy()).unwrap();
    let probe = b.exchange.probe(NOW + 2_000, a.addr, entropy());
    let hello = a
        .exchange
        .handle(NOW + 2_000, b.addr, &probe, entropy())
        .reply
        .unwrap();
    assert!(
        b.exchange
            .handle(NOW + 2_000, a.addr, &hello, entropy())
            .event
            .is_some()
    );
    let before = b.exchange.stats().get(DropReason::Superseded);
    let late = b.exchange.handle(NOW + 3_000, a.addr, &withheld, entropy());
    assert_eq!(
        late.event, None,
        "a Goodbye from before the Hello removed the member"
    );
    assert_eq!(late.reply, None);
    assert_eq!(b.exchange.stats().get(DropReason::Superseded), before + 1);
}

#[test]
fn a_non_member_changes_nothing() {
    let mut b = member(2);
    let mut stranger = member_in(other_mesh(), 1);
    let stranger_b = member_in(other_mesh(), 2);
    // Every message type a stranger can produce, sealed under its own (wrong) mesh key.
    let probe = stranger.exchange.probe(NOW, elsewhere(), entropy());
    let hello_reply = {
        let mut peer = member_in(other_mesh(), 2);
        peer.exchange
            .handle(NOW, stranger.addr, &probe, entropy())
            .reply
            .unwrap()
    };
    let goodbye = stranger
        .exchange
        .goodbye(&b.public_key, NOW, entropy())
        .unwrap();
    let gossip = stranger.exchange.gossip(
        &[GossipEntry {
            control: stranger_b.addr,
            record: {
                let mut r = stranger_b.record.clone();
                r.routes.clear();
                r
            },
        }],
        NOW,
        entropy(),
    );
    // A stranger who knows B's public key (it is not secret) and guesses the format.
    let mut guessed = encode_message(&Message::Probe(Probe {
        sender: b.public_key,
        timestamp: NOW / 1000,
        challenge: [5; CHALLENGE_LEN],
        extensions: Vec::new(),
    }))
    .unwrap();
    guessed.splice(0..0, *b"WGM1\x01"); // magic and the Probe type byte
    guessed.resize(guessed.len() + OVERHEAD, 0);
    for datagram in [&probe, &hello_reply, &goodbye, &gossip, &guessed] {
        refused(&mut b, NOW, fresh_source(), datagram, DropReason::BadAead);
    }
    assert_eq!(b.exchange.stats().total(), 5);
    let mut a = member(1);
    handshake(&mut a, &mut b, NOW);
}

/// A change a lying member makes to its own record.
type Lie<'a> = Box<dyn Fn(&mut Record) + 'a>;

#[test]
fn a_member_cannot_claim_another_members_key_or_address() {
    let (mut a, mut b, c) = (member(1), member(2), member(3));
    handshake(&mut a, &mut b, NOW);

    // C probes B claiming to be A: B answers (a Probe proves nothing), but the challenge in the
    // answer is bound to A's key, and C cannot produce A's MAC.
    let as_a = seal_message(
        mesh(),
        &Message::Probe(Probe {
            sender: a.public_key,
            timestamp: NOW / 1000,
            challenge: [7; CHALLENGE_LEN],
            extensions: Vec::new(),
        }),
    );
    let answer = b
        .exchange
        .handle(NOW, c.addr, &as_a, entropy())
        .reply
        .expect("B answers a Probe from anyone holding the secret");
    let challenge = hello_challenge(&answer);
    let mut claim = hello_from(&c, &b.public_key, challenge, a.record.clone());
    if let Message::Hello(h) = &mut claim {
        h.sender = a.public_key;
    }
    let forged = forge(mesh(), &c.private_key, &b.public_key, &claim);
    refused(&mut b, NOW, c.addr, &forged, DropReason::BadMac);

    // C answers a challenge of B's own Probe (any member may) with records that lie.
    let probe = b.exchange.probe(NOW, c.addr, entropy());
    let open_challenge = probe_challenge(&probe);
    let lies: [(Lie<'_>, DropReason); 5] = [
        // A's key in C's record.
        (
            Box::new(|r| r.public_key = a.public_key),
            DropReason::RecordKeyMismatch,
        ),
        // A's mesh addresses (an address "collision" C made up).
        (
            Box::new(|r| {
                r.mesh_ipv4 = a.record.mesh_ipv4;
                r.mesh_ipv6 = a.record.mesh_ipv6;
            }),
            DropReason::BadMeshAddress,
        ),
        // An arbitrary address in the mesh subnet.
        (
            Box::new(|r| r.mesh_ipv4 = Ipv4Addr::from(u32::from(r.mesh_ipv4) ^ 1)),
            DropReason::BadMeshAddress,
        ),
        (
            Box::new(|r| r.mesh_ipv6 = Ipv6Addr::from(u128::from(r.mesh_ipv6) ^ 1)),
            DropReason::BadMeshAddress,
        ),
        // A counter its addresses were not derived with.
        (
            Box::new(|r| r.collision_counter = 2),
            DropReason::BadMeshAddress,
        ),
    ];
    for (lie, reason) in lies {
        let mut record = c.record.clone();
        lie(&mut record);
        let forged = forge(
            mesh(),
            &c.private_key,
            &b.public_key,
            &hello_from(&c, &b.public_key, open_challenge, record),
        );
        refused(&mut b, NOW, c.addr, &forged, reason);
    }
    // Nor can C say goodbye for A.
    let goodbye = forge(
        mesh(),
        &c.private_key,
        &b.public_key,
        &Message::Goodbye(Goodbye {
            sender: a.public_key,
            recipient: b.public_key,
            timestamp: NOW / 1000,
            nonce: [8; CHALLENGE_LEN],
            extensions: Vec::new(),
            mac: [0; 32],
        }),
    );
    refused(&mut b, NOW, c.addr, &goodbye, DropReason::BadMac);
    // Gossip: an entry under A's key with addresses not derived from it is removed, and a
    // gossiped record with routes does not even decode.
    let mut fake_a = c.record.clone();
    fake_a.public_key = a.public_key;
    fake_a.routes.clear();
    let gossip = c.exchange.gossip(
        &[GossipEntry {
            control: c.addr,
            record: fake_a,
        }],
        NOW,
        entropy(),
    );
    let handled = b.exchange.handle(NOW, c.addr, &gossip, entropy());
    assert!(matches!(&handled.event, Some(Event::Gossip { entries, .. }) if entries.is_empty()));
    assert_eq!(b.exchange.stats().get(DropReason::BadGossipEntry), 1);
    let mut with_route = encode_message(&Message::Gossip(wgmesh_exchange::Gossip {
        sender: c.public_key,
        timestamp: NOW / 1000,
        entries: vec![GossipEntry {
            control: c.addr,
            record: Record {
                routes: Vec::new(),
                ..a.record.clone()
            },
        }],
        extensions: Vec::new(),
    }))
    .unwrap();
    // The last byte is the entry's route count: claim a default route.
    *with_route.last_mut().unwrap() = 1;
    with_route.extend_from_slice(&[4, 0, 0, 0, 0, 0]);
    let sealed = seal_with_type(mesh(), MsgType::Gossip, &with_route);
    refused(&mut b, NOW, c.addr, &sealed, DropReason::Malformed);

    // Through all of it, C's honest record and challenge still work: nothing was consumed.
    let honest = forge(
        mesh(),
        &c.private_key,
        &b.public_key,
        &hello_from(&c, &b.public_key, open_challenge, c.record.clone()),
    );
    let handled = b.exchange.handle(NOW, c.addr, &honest, entropy());
    assert!(matches!(&handled.event, Some(Event::Verified { record, .. }) if *record == c.record));
}

#[test]
fn oversized_and_truncated_datagrams_change_nothing() {
    let (mut a, mut b) = (member(1), member(2));
    let t = handshake(&mut a, &mut b, NOW);
    let probe = a.exchange.probe(NOW, elsewhere(), entropy());
    // Every truncation of a genuine Probe and Hello.
    for datagram in [&probe, &t.hello_a] {
        for len in 0..datagram.len() {
            // Below the fixed overhead nothing is even looked at; above it the tag fails.
            let reason = if len < OVERHEAD {
                DropReason::TooShort
            } else {
                DropReason::BadAead
            };
            refused(&mut b, NOW, fresh_source(), &datagram[..len], reason);
        }
    }
    // Too large: what a 1500-byte MTU, a jumbo frame or the daemon's read buffer can deliver.
    for len in [MAX_DATAGRAM_LEN + 1, 1472, 1500, 9000, 65_507] {
        let mut big = probe.clone();
        big.resize(len, 0xa5);
        refused(&mut b, NOW, fresh_source(), &big, DropReason::TooLarge);
    }
    // A valid datagram with bytes appended fails the AEAD; exactly MAX_DATAGRAM_LEN is allowed
    // through the size check.
    let mut padded = probe.clone();
    padded.resize(MAX_DATAGRAM_LEN, 0);
    refused(&mut b, NOW, fresh_source(), &padded, DropReason::BadAead);
    // The untouched Probe still gets its answer.
    assert!(
        b.exchange
            .handle(NOW, a.addr, &probe, entropy())
            .reply
            .is_some()
    );
}

#[test]
fn a_flood_from_one_source_is_refused_before_any_crypto() {
    let (mut a, mut b, c) = (member(1), member(2), member(3));
    let flooder = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 66)), 4444);
    // Valid datagrams (a member's Probes) are as good as garbage once the bucket is empty.
    let mut sender = member(4);
    let burst = wgmesh_exchange::ExchangeConfig::default().rate_burst;
    let mut answered = 0;
    for _ in 0..burst {
        let probe = sender.exchange.probe(NOW, b.addr, entropy());
        if b.exchange
            .handle(NOW, flooder, &probe, entropy())
            .reply
            .is_some()
        {
            answered += 1;
        }
    }
    assert_eq!(answered, burst, "the burst itself is served");
    let opens = b.exchange.stats().aead_opens();
    let garbage = member_in(other_mesh(), 9)
        .exchange
        .probe(NOW, elsewhere(), entropy());
    let genuine = sender.exchange.probe(NOW, elsewhere(), entropy());
    for i in 0..10_000u32 {
        let datagram = if i % 2 == 0 { &garbage } else { &genuine };
        // Same /64 for IPv6 sources, same address for IPv4: the port does not matter.
        let from = SocketAddr::new(flooder.ip(), (i % 60_000) as u16 + 1);
        refused(&mut b, NOW, from, datagram, DropReason::RateLimited);
    }
    assert_eq!(
        b.exchange.stats().aead_opens(),
        opens,
        "a flooded datagram reached the AEAD"
    );
    assert_eq!(b.exchange.stats().get(DropReason::RateLimited), 10_000);
    // An IPv6 flooder is one source per /64, however it varies the low bits.
    let v6 = |low: u16| {
        SocketAddr::new(
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 7, 7, low, low, low, low)),
            1,
        )
    };
    for i in 0..(burst as u16) {
        b.exchange.handle(NOW, v6(i), &garbage, entropy());
    }
    let opens = b.exchange.stats().aead_opens();
    for i in 0..1_000u16 {
        refused(
            &mut b,
            NOW,
            v6(i.wrapping_add(1000)),
            &garbage,
            DropReason::RateLimited,
        );
    }
    assert_eq!(b.exchange.stats().aead_opens(), opens);
    // Members elsewhere are unaffected during the flood: A and C still complete handshakes.
    handshake(&mut a, &mut b, NOW);
    let mut c = c;
    handshake(&mut c, &mut b, NOW);
}
