//! Extensions and rolling upgrades (docs/exchange-protocol.md, "Compatibility"): what the
//! previous release sent still decodes, unknown extensions are skipped, members exchange version
//! and name only with members that accept them, and a member of the previous release (whose
//! decoder refuses any byte between a Hello's record and its MAC) never receives one.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failure is a test failure"
)]

mod common;

use common::*;
use wgmesh_exchange::{
    CHALLENGE_LEN, DecodeError, DropReason, EXT_CRITICAL, EXT_NAME, EXT_VERSION, Event, Extension,
    FLAG_EXTENSIONS, MAX_EXTENSIONS, MemberInfo, MemberName, Message, MsgType, PeerInfo,
    decode_message, encode_message, open,
};

fn info(version: &str, name: &str) -> MemberInfo {
    MemberInfo::new(version, Some(MemberName::parse(name).unwrap()))
}

fn decoded(datagram: &[u8]) -> Message {
    let (_, plaintext) = open(&mesh().exchange_key(), datagram).unwrap();
    decode_message(&plaintext).unwrap()
}

fn extensions_of(datagram: &[u8]) -> Vec<Extension> {
    match decoded(datagram) {
        Message::Probe(m) => m.extensions,
        Message::Hello(m) => m.extensions,
        Message::Goodbye(m) => m.extensions,
        Message::Gossip(m) => m.extensions,
    }
}

fn peer_info(event: &Option<Event>) -> PeerInfo {
    match event {
        Some(Event::Verified { info, .. }) => info.clone(),
        other => panic!("expected a Verified event, got {other:?}"),
    }
}

/// The seeds in fuzz/corpus were written by the previous release's encoder (commit 3a6cad8):
/// they decode, carry no extensions, and re-encode to the same bytes.
#[test]
fn messages_of_the_previous_release_still_decode() {
    let seeds: [(&str, &[u8], MsgType); 5] = [
        (
            "probe",
            include_bytes!("../../../fuzz/corpus/exchange_decode/probe.bin"),
            MsgType::Probe,
        ),
        (
            "hello",
            include_bytes!("../../../fuzz/corpus/exchange_decode/hello.bin"),
            MsgType::Hello,
        ),
        (
            "hello-no-challenge",
            include_bytes!("../../../fuzz/corpus/exchange_decode/hello-no-challenge.bin"),
            MsgType::Hello,
        ),
        (
            "goodbye",
            include_bytes!("../../../fuzz/corpus/exchange_decode/goodbye.bin"),
            MsgType::Goodbye,
        ),
        (
            "gossip",
            include_bytes!("../../../fuzz/corpus/exchange_decode/gossip.bin"),
            MsgType::Gossip,
        ),
    ];
    for (name, bytes, msg_type) in seeds {
        let message = decode_message(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(message.msg_type(), msg_type, "{name}");
        assert_eq!(encode_message(&message).unwrap(), bytes, "{name}");
        let no_extensions = match &message {
            Message::Probe(m) => m.extensions.is_empty(),
            Message::Hello(m) => m.extensions.is_empty() && m.record.flags & FLAG_EXTENSIONS == 0,
            Message::Goodbye(m) => m.extensions.is_empty(),
            Message::Gossip(m) => m.extensions.is_empty(),
        };
        assert!(no_extensions, "{name}: {message:?}");
    }
}

#[test]
fn unknown_extensions_are_skipped_and_unknown_critical_ones_refused() {
    let probe = include_bytes!("../../../fuzz/corpus/exchange_decode/probe.bin");
    let hello = include_bytes!("../../../fuzz/corpus/exchange_decode/hello.bin");
    let future = [100u8, 3, b'x', b'y', b'z', 9, 0];
    // After a Probe's fixed part...
    let mut extended = probe.to_vec();
    extended.extend_from_slice(&future);
    let Message::Probe(m) = decode_message(&extended).unwrap() else {
        panic!("not a Probe")
    };
    assert_eq!(
        m.extensions,
        [
            Extension {
                kind: 100,
                value: b"xyz".to_vec()
            },
            Extension {
                kind: 9,
                value: Vec::new()
            }
        ]
    );
    assert_eq!(
        encode_message(&Message::Probe(m)).unwrap(),
        extended,
        "kept in order"
    );
    // ... and between a Hello's record and its MAC.
    let split = hello.len() - 32;
    let mut extended = hello[..split].to_vec();
    extended.extend_from_slice(&future);
    extended.extend_from_slice(&hello[split..]);
    let Message::Hello(m) = decode_message(&extended).unwrap() else {
        panic!("not a Hello")
    };
    assert_eq!(m.extensions.len(), 2);
    assert_eq!(m.mac.as_slice(), &hello[split..]);

    // Framing errors and bounds.
    let with = |tail: &[u8]| {
        let mut bytes = probe.to_vec();
        bytes.extend_from_slice(tail);
        decode_message(&bytes)
    };
    assert_eq!(with(&[9]), Err(DecodeError::Truncated));
    assert_eq!(with(&[9, 4, 1, 2]), Err(DecodeError::Truncated));
    assert_eq!(
        with(&[EXT_CRITICAL | 5, 0]),
        Err(DecodeError::UnknownCriticalExtension(0x85))
    );
    assert!(with(&[EXT_VERSION, 1, b'1', EXT_NAME, 0]).is_ok());
    assert!(with(&[9, 0].repeat(MAX_EXTENSIONS)).is_ok());
    assert_eq!(
        with(&[9, 0].repeat(MAX_EXTENSIONS + 1)),
        Err(DecodeError::TooManyExtensions)
    );
    // A Hello too short for its MAC after the record.
    assert_eq!(
        decode_message(&hello[..split + 31]),
        Err(DecodeError::Truncated)
    );
}

#[test]
fn members_exchange_version_and_name_once_both_accept_extensions() {
    let (mut a, mut b) = (member(1), member(2));
    a.exchange.set_info(info("0.2.0", "alpha"));
    b.exchange.set_info(info("0.2.1", "bravo"));
    assert_ne!(
        a.record.flags & FLAG_EXTENSIONS,
        0,
        "announced by every record"
    );

    // First contact, step by step: neither knows the other yet.
    let probe = a.exchange.probe(NOW, b.addr, entropy());
    assert!(
        extensions_of(&probe).is_empty(),
        "Probes never carry extensions"
    );
    let hello_b = b
        .exchange
        .handle(NOW, a.addr, &probe, entropy())
        .reply
        .unwrap();
    assert!(extensions_of(&hello_b).is_empty(), "B does not know A yet");
    let at_a = a.exchange.handle(NOW, b.addr, &hello_b, entropy());
    assert_eq!(peer_info(&at_a.event), PeerInfo::NotSent);
    let hello_a = at_a.reply.unwrap();
    assert_eq!(
        extensions_of(&hello_a),
        info("0.2.0", "alpha").to_extensions()
    );
    let Message::Hello(m) = decoded(&hello_a) else {
        panic!()
    };
    assert_ne!(m.challenge, [0; CHALLENGE_LEN], "A asks B once more");
    let at_b = b.exchange.handle(NOW, a.addr, &hello_a, entropy());
    assert_eq!(
        peer_info(&at_b.event),
        PeerInfo::Sent(info("0.2.0", "alpha"))
    );
    let again = at_b.reply.unwrap();
    let at_a = a.exchange.handle(NOW, b.addr, &again, entropy());
    assert_eq!(
        peer_info(&at_a.event),
        PeerInfo::Sent(info("0.2.1", "bravo"))
    );
    assert_eq!(at_a.reply, None);

    // From now on three messages, each Hello carrying the sender's fields.
    let t = handshake(&mut b, &mut a, NOW + 60_000);
    assert!(t.hello_b_again.is_none());
    assert_eq!(
        extensions_of(&t.hello_b),
        info("0.2.0", "alpha").to_extensions()
    );
    assert_eq!(
        extensions_of(&t.hello_a),
        info("0.2.1", "bravo").to_extensions()
    );

    // A rename reaches the other side with the next exchange.
    a.exchange.set_info(info("0.2.0", "alpha-2"));
    let probe = b.exchange.probe(NOW + 61_000, a.addr, entropy());
    let hello_a = a
        .exchange
        .handle(NOW + 61_000, b.addr, &probe, entropy())
        .reply
        .unwrap();
    let at_b = b.exchange.handle(NOW + 61_000, a.addr, &hello_a, entropy());
    assert_eq!(
        peer_info(&at_b.event),
        PeerInfo::Sent(info("0.2.0", "alpha-2"))
    );
}

/// A member of the previous release: its record lacks FLAG_EXTENSIONS and its decoder refuses
/// anything after a Hello's record but the MAC. Every Hello it gets must have that layout.
#[test]
fn a_member_of_the_previous_release_never_gets_an_extension() {
    let (mut new, old) = (member(1), member(2));
    new.exchange.set_info(info("0.2.0", "new"));
    let mut old_record = old.record.clone();
    old_record.flags &= !FLAG_EXTENSIONS;
    for round in 0..2u64 {
        let now = NOW + round * 60_000;
        // The new member probes the old one, which answers with its (flagless) record.
        let _ = new.exchange.probe(now, old.addr, entropy());
        let probe = new.exchange.probe(now, old.addr, entropy());
        let Message::Probe(p) = decoded(&probe) else {
            panic!()
        };
        let answer = forge(
            mesh(),
            &old.private_key,
            &new.public_key,
            &hello_with_challenge(&old, &new.public_key, p.challenge, old_record.clone()),
        );
        let at_new = new.exchange.handle(now, old.addr, &answer, entropy());
        assert_eq!(peer_info(&at_new.event), PeerInfo::Legacy, "round {round}");
        let reply = at_new.reply.expect("answers the old member's challenge");
        assert!(extensions_of(&reply).is_empty(), "round {round}");
        let Message::Hello(m) = decoded(&reply) else {
            panic!()
        };
        assert_eq!(
            m.challenge, [0; CHALLENGE_LEN],
            "three messages, as the old release expects"
        );

        // The old member probes the new one: the answer has the old layout too.
        let old_probe = seal_message(
            mesh(),
            &Message::Probe(wgmesh_exchange::Probe {
                sender: old.public_key,
                timestamp: now / 1000,
                challenge: [round as u8 + 1; CHALLENGE_LEN],
                extensions: Vec::new(),
            }),
        );
        let reply = new
            .exchange
            .handle(now, old.addr, &old_probe, entropy())
            .reply
            .unwrap();
        assert!(extensions_of(&reply).is_empty(), "round {round}");
    }
}

/// A member that says goodbye may come back as the previous release (a downgrade): until its
/// record says otherwise it gets no extensions.
#[test]
fn goodbye_forgets_that_a_member_accepts_extensions() {
    let (mut a, mut b) = (member(1), member(2));
    a.exchange.set_info(info("0.2.0", "alpha"));
    handshake(&mut a, &mut b, NOW);
    let probe = b.exchange.probe(NOW + 1_000, a.addr, entropy());
    let hello = a
        .exchange
        .handle(NOW + 1_000, b.addr, &probe, entropy())
        .reply
        .unwrap();
    assert!(!extensions_of(&hello).is_empty());
    let goodbye = b
        .exchange
        .goodbye(&a.public_key, NOW + 2_000, entropy())
        .unwrap();
    let handled = a.exchange.handle(NOW + 2_000, b.addr, &goodbye, entropy());
    assert!(matches!(handled.event, Some(Event::Goodbye { .. })));
    let probe = b.exchange.probe(NOW + 3_000, a.addr, entropy());
    let hello = a
        .exchange
        .handle(NOW + 3_000, b.addr, &probe, entropy())
        .reply
        .unwrap();
    assert!(extensions_of(&hello).is_empty());
}

#[test]
fn a_hello_with_an_unknown_critical_extension_is_dropped() {
    let (mut a, b) = (member(1), member(2));
    let probe = a.exchange.probe(NOW, b.addr, entropy());
    let Message::Probe(p) = decoded(&probe) else {
        panic!()
    };
    let mut hello = hello_with_challenge(&b, &a.public_key, p.challenge, b.record.clone());
    if let Message::Hello(h) = &mut hello {
        h.extensions = vec![Extension {
            kind: EXT_CRITICAL | 7,
            value: vec![1],
        }];
    }
    let datagram = forge(mesh(), &b.private_key, &a.public_key, &hello);
    let handled = a.exchange.handle(NOW, b.addr, &datagram, entropy());
    assert_eq!(handled.dropped, Some(DropReason::Malformed));
}

/// A Hello from `m` answering `echo`, asking for an answer (challenge set).
fn hello_with_challenge(
    m: &Member,
    to: &wgmesh_keys::PublicKey,
    echo: [u8; CHALLENGE_LEN],
    record: wgmesh_exchange::Record,
) -> Message {
    let mut hello = hello_from(m, to, echo, record);
    if let Message::Hello(h) = &mut hello {
        h.challenge = [0x5a; CHALLENGE_LEN];
    }
    hello
}

/// Our own fields are bounded whatever the caller sets, so a Hello always fits its datagram.
#[test]
fn an_oversized_version_of_our_own_is_cut_to_the_bound() {
    let (mut a, mut b) = (member(1), member(2));
    a.exchange.set_info(MemberInfo {
        version: Some("v".repeat(300)),
        name: None,
    });
    assert_eq!(
        a.exchange.info().version.as_deref().map(str::len),
        Some(wgmesh_exchange::MAX_VERSION_LEN)
    );
    handshake(&mut a, &mut b, NOW);
    handshake(&mut b, &mut a, NOW + 1_000);
}
