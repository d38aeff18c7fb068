//! Issue 13, item 4: an insider (it holds the secret, so it can seal any message and make keys
//! at will) and an outsider spoofing source addresses, against a member's refreshes and against
//! return routability. Each test failed on the release before these defences.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failure is a test failure"
)]

mod common;

use common::*;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use wgmesh_exchange::{CHALLENGE_LEN, DropReason, Event, Exchange, ExchangeConfig, Message, Probe};
use wgmesh_keys::PublicKey;

/// A valid Probe (sealed under the mesh key) claiming a fresh random key, stamped as late as the
/// window allows so that its replay entry lives as long as possible: what an insider floods.
fn random_key_probe(n: u32, now: u64) -> Vec<u8> {
    let digest = blake3::hash(&[b"insider key".as_slice(), &n.to_be_bytes()].concat());
    let mut challenge = [0u8; CHALLENGE_LEN];
    challenge.copy_from_slice(&digest.as_bytes()[..CHALLENGE_LEN]);
    challenge[0] |= 1;
    seal_message(
        mesh(),
        &Message::Probe(Probe {
            sender: PublicKey::from_bytes(*digest.as_bytes()),
            timestamp: now / 1000 + 120,
            challenge,
            extensions: Vec::new(),
        }),
    )
}

/// A distinct spoofed source per `n`.
fn spoofed(n: u32) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x6400_0000 | n)), 40_000)
}

/// B with a small strangers' replay cache (the default is 8,192: the attack is the same).
fn victim_with_small_cache(id: u8) -> Member {
    let mut m = member(id);
    let config = ExchangeConfig {
        replay_cache_capacity: 256,
        ..ExchangeConfig::default()
    };
    m.exchange = Exchange::new(mesh(), m.private_key.clone(), m.record.clone(), config).unwrap();
    m
}

fn is_verified(handled: &wgmesh_exchange::Handled) -> bool {
    matches!(handled.event, Some(Event::Verified { .. }))
}

#[test]
fn random_key_probes_fill_only_the_strangers_replay_partition() {
    let (mut a, mut b) = (member(1), victim_with_small_cache(2));
    handshake(&mut a, &mut b, NOW);
    // The insider's flood: more Probes with fresh keys than the strangers' cache holds, each
    // from its own spoofed source (so the per-source limiter never sees a second one).
    let flood = 1_000;
    let mut full = 0;
    for n in 0..flood {
        let handled = b
            .exchange
            .handle(NOW, spoofed(n), &random_key_probe(n, NOW), entropy());
        full += u32::from(handled.dropped == Some(DropReason::ReplayCacheFull));
    }
    assert!(full > 0, "the strangers' share is exhausted (fail closed)");
    let later = NOW + 5_000;
    // A member's Probe is still answered, and its answer to B's Probe still verifies...
    handshake(&mut a, &mut b, later);
    let t = handshake(&mut b, &mut a, later + 1_000);
    assert!(!t.hello_a.is_empty());
    // ...and its Goodbye is still accepted, once.
    let bye = later + 2_000;
    let goodbye = a.exchange.goodbye(&b.public_key, bye, entropy()).unwrap();
    let handled = b.exchange.handle(bye, a.addr, &goodbye, entropy());
    assert!(
        matches!(handled.event, Some(Event::Goodbye { .. })),
        "{handled:?}"
    );
    let replay = b.exchange.handle(bye, a.addr, &goodbye, entropy());
    assert_eq!(replay.dropped, Some(DropReason::Replay));
    // Strangers are still refused while their share is full of live entries.
    let stranger = b.exchange.handle(
        later,
        spoofed(flood),
        &random_key_probe(flood, later),
        entropy(),
    );
    assert_eq!(stranger.dropped, Some(DropReason::ReplayCacheFull));
}

#[test]
fn random_key_probes_do_not_push_out_the_challenges_of_our_own_probes() {
    let (mut a, mut b) = (member(1), member(2));
    handshake(&mut a, &mut b, NOW);
    // B probes A; before A's answer arrives, the insider makes B issue 2,000 challenges (its tables hold 1,024).
    let probe = b.exchange.probe(NOW, a.addr, entropy());
    let answer = a
        .exchange
        .handle(NOW, b.addr, &probe, entropy())
        .reply
        .unwrap();
    for n in 0..2_000 {
        b.exchange
            .handle(NOW, spoofed(n), &random_key_probe(n, NOW), entropy());
    }
    let handled = b.exchange.handle(NOW + 50, a.addr, &answer, entropy());
    assert!(is_verified(&handled), "{handled:?}");
}

#[test]
fn spoofed_garbage_from_a_members_address_does_not_lock_it_out() {
    let (mut a, mut b) = (member(1), member(2));
    handshake(&mut a, &mut b, NOW);
    // An outsider floods B with garbage (another mesh's datagrams) from A's address.
    let garbage = member_in(other_mesh(), 9)
        .exchange
        .probe(NOW, b.addr, entropy());
    for _ in 0..10_000 {
        let handled = b.exchange.handle(NOW, a.addr, &garbage, entropy());
        assert!(handled.reply.is_none() && handled.event.is_none());
    }
    // A's Probe is answered and its answers verify, at the same instant.
    handshake(&mut a, &mut b, NOW);
    handshake(&mut b, &mut a, NOW);
    // The garbage cost one AEAD open each, within a ceiling for all members' addresses
    // together (10,000 at once, 5,000 a second): past it, A's address is limited like a
    // stranger's, so a bigger flood costs no more opens.
    let opens = b.exchange.stats().aead_opens();
    for _ in 0..20_000 {
        b.exchange.handle(NOW, a.addr, &garbage, entropy());
    }
    let more = b.exchange.stats().aead_opens() - opens;
    assert!(more <= 40, "{more} more opens past the ceiling");
}

#[test]
fn a_limiter_full_of_spoofed_sources_does_not_keep_members_out() {
    let (mut a, mut b) = (member(1), member(2));
    handshake(&mut a, &mut b, NOW);
    // 82k datagrams/s from 4,096 spoofed sources: every bucket stays busy.
    let garbage = member_in(other_mesh(), 9)
        .exchange
        .probe(NOW, b.addr, entropy());
    for n in 0..(ExchangeConfig::default().max_rate_sources as u32 + 100) {
        b.exchange.handle(NOW, spoofed(n), &garbage, entropy());
    }
    let newcomer = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 77)), 1);
    assert_eq!(
        b.exchange
            .handle(NOW, newcomer, &garbage, entropy())
            .dropped,
        Some(DropReason::RateLimited),
        "new sources are the strangers' share"
    );
    // A, verified at its address, is served...
    handshake(&mut a, &mut b, NOW);
    handshake(&mut b, &mut a, NOW);
    // ...and so is its answer from a new address B probes it at (a member that moved).
    let moved = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 99)), 51900);
    let probe = b.exchange.probe(NOW, moved, entropy());
    let answer = a
        .exchange
        .handle(NOW, b.addr, &probe, entropy())
        .reply
        .unwrap();
    let handled = b.exchange.handle(NOW, moved, &answer, entropy());
    assert!(is_verified(&handled), "{handled:?}");
}

/// Return routability: an insider that received our challenge answers it from a spoofed
/// source (a victim's address, to make members send there), with its own valid key.
#[test]
fn a_hello_is_believed_only_from_the_address_its_challenge_was_sent_to() {
    let (mut a, mut insider) = (member(1), member(3));
    let victim = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)), 53);
    // 1. The insider probes A from its own address; A's Hello (challenge C) goes there; the
    // insider answers C from the victim's address.
    let probe = insider.exchange.probe(NOW, a.addr, entropy());
    let hello_a = a
        .exchange
        .handle(NOW, insider.addr, &probe, entropy())
        .reply
        .unwrap();
    let answer = insider
        .exchange
        .handle(NOW, a.addr, &hello_a, entropy())
        .reply
        .unwrap();
    let spoofed_answer = a.exchange.handle(NOW, victim, &answer, entropy());
    assert_eq!(spoofed_answer.dropped, Some(DropReason::AddressMismatch));
    assert_eq!(spoofed_answer.event, None);
    assert_eq!(spoofed_answer.reply, None);
    // The challenge was not burnt: from where it went, the answer verifies.
    let genuine = a.exchange.handle(NOW, insider.addr, &answer, entropy());
    assert_eq!(
        verified(&genuine.event),
        Some((insider.exchange.record(), insider.addr))
    );
    // 2. A probes the insider at its address (a refresh); the insider answers from the victim's.
    let probe = a.exchange.probe(NOW + 1_000, insider.addr, entropy());
    let answer = insider
        .exchange
        .handle(NOW + 1_000, a.addr, &probe, entropy())
        .reply
        .unwrap();
    let spoofed_answer = a.exchange.handle(NOW + 1_000, victim, &answer, entropy());
    assert_eq!(spoofed_answer.dropped, Some(DropReason::AddressMismatch));
    assert_eq!(spoofed_answer.event, None);
    assert_eq!(spoofed_answer.reply, None);
}
