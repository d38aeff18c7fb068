//! The exchange state machine, fed a sequence of datagrams (see `fixture/mesh.rs` for the input
//! framing). Raw steps exercise the pre-crypto checks (rate limit, framing, the AEAD gate); sealed
//! steps are encrypted under the mesh key, with optional fix-ups of the fields a mutator cannot
//! guess (timestamp, member keys, challenge echo, proof MAC), so the fuzzer explores everything
//! behind the secret gate: what a member, or anyone holding a leaked secret, can send.
//!
//! The mesh keys (Argon2id) are derived once per process; the `Exchange` is rebuilt for every
//! input, so a crash reproduces from its input alone.
#![no_main]

#[path = "../fixture/mesh.rs"]
mod fixture;

use fixture::*;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use wgmesh_exchange::{
    DropReason, ENTROPY_LEN, Entropy, Event, Exchange, ExchangeConfig, MAC_LEN, MAX_DATAGRAM_LEN,
    MsgType, NONCE_LEN, seal,
};
use wgmesh_keys::{PrivateKey, PublicKey};

struct Fixture {
    exchange_key: [u8; 32],
    target_key: PublicKey,
    signers: Vec<(PrivateKey, PublicKey)>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| Fixture {
        exchange_key: mesh().exchange_key(),
        target_key: public_key(TARGET_ID),
        signers: SIGNER_IDS
            .iter()
            .map(|&id| (private_key(id), public_key(id)))
            .collect(),
    })
}

/// Deterministic, distinct randomness per step (the state machine takes it as an argument).
fn entropy(step: usize) -> Entropy {
    let hash = blake3::hash(&(step as u64).to_be_bytes());
    let mut bytes = [0u8; ENTROPY_LEN];
    bytes[..32].copy_from_slice(hash.as_bytes());
    bytes[32..].copy_from_slice(&blake3::hash(hash.as_bytes()).as_bytes()[..ENTROPY_LEN - 32]);
    Entropy::from_bytes(bytes)
}

fn put(plaintext: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(slot) = plaintext.get_mut(at..at + bytes.len()) {
        slot.copy_from_slice(bytes);
    }
}

fuzz_target!(|data: &[u8]| {
    let fx = fixture();
    let mut exchange = Exchange::new(
        mesh(),
        private_key(TARGET_ID),
        record_for(TARGET_ID),
        ExchangeConfig::default(),
    )
    .unwrap_or_else(|err| panic!("fixture record: {err}"));
    let debug = std::env::var_os("WGMESH_FUZZ_DEBUG").is_some();

    let mut now = NOW;
    // The last challenge token the target may have issued (a Probe's, or a Hello reply's).
    let mut last_token = [0u8; 16];
    for (i, step) in parse_steps(data).into_iter().take(64).enumerate() {
        now = now.saturating_add(u64::from(step.dt_ms));
        let entropy = entropy(i);
        let token = entropy.token;
        let from = source(step.src);
        let datagram = match step.op {
            OP_RAW => step.payload.to_vec(),
            OP_SEALED => {
                let mut plaintext = step.payload.to_vec();
                let msg_type = plaintext.first().copied().and_then(MsgType::from_wire);
                let (signer_private, signer_public) =
                    &fx.signers[usize::from(step.signer) % fx.signers.len()];
                if step.fix & FIX_SENDER != 0 {
                    put(&mut plaintext, SENDER_AT, signer_public.as_bytes());
                }
                // Only Hello and Goodbye name a recipient and carry a MAC.
                let addressed = matches!(msg_type, Some(MsgType::Hello | MsgType::Goodbye));
                if step.fix & FIX_RECIPIENT != 0 && addressed {
                    put(&mut plaintext, RECIPIENT_AT, fx.target_key.as_bytes());
                }
                if step.fix & FIX_TIMESTAMP != 0 {
                    put(
                        &mut plaintext,
                        timestamp_at(msg_type),
                        &(now / 1000).to_be_bytes(),
                    );
                }
                if step.fix & FIX_ECHO != 0 && msg_type == Some(MsgType::Hello) {
                    put(&mut plaintext, ECHO_AT, &last_token);
                }
                if step.fix & FIX_MAC != 0 && addressed && plaintext.len() >= MAC_LEN {
                    let split = plaintext.len() - MAC_LEN;
                    let mac = mac(signer_private, &fx.target_key, &plaintext[..split]);
                    plaintext[split..].copy_from_slice(&mac);
                }
                let header = if step.fix & FIX_HEADER != 0 {
                    MsgType::from_wire(step.signer % 4 + 1)
                } else {
                    msg_type
                }
                .unwrap_or(MsgType::Probe);
                let mut nonce = [0u8; NONCE_LEN];
                nonce.copy_from_slice(&entropy.nonce);
                match seal(&fx.exchange_key, header, &nonce, &plaintext) {
                    Ok(datagram) => datagram,
                    // Too long to be a datagram: nothing the network could deliver.
                    Err(_) => continue,
                }
            }
            OP_PROBE => {
                let probe = exchange.probe(now, from, entropy);
                assert!(probe.len() <= MAX_DATAGRAM_LEN);
                last_token = token;
                continue;
            }
            _ => {
                now = now.saturating_add(u64::from(step.dt_ms) * 1000);
                continue;
            }
        };
        // Datagram drops only: a bad entry inside an accepted Gossip is counted separately.
        let datagram_drops =
            |e: &Exchange| e.stats().total() - e.stats().get(DropReason::BadGossipEntry);
        let dropped_before = datagram_drops(&exchange);
        let handled = exchange.handle(now, from, &datagram, entropy);
        if debug {
            eprintln!("step {i}: {handled:?}");
        }
        // Invariants the daemon relies on.
        if let Some(reply) = &handled.reply {
            assert!(
                reply.len() <= MAX_DATAGRAM_LEN,
                "reply exceeds the datagram bound"
            );
            // A reply may carry our challenge; answers to it must be able to echo it.
            last_token = token;
        }
        match handled.dropped {
            Some(_) => {
                assert!(handled.reply.is_none() && handled.event.is_none());
                assert_eq!(
                    datagram_drops(&exchange),
                    dropped_before + 1,
                    "drop not counted"
                );
            }
            None => assert_eq!(datagram_drops(&exchange), dropped_before, "drop counted"),
        }
        match &handled.event {
            Some(Event::Verified { record, .. }) => {
                assert_ne!(
                    record.public_key, fx.target_key,
                    "accepted a record claiming our key"
                );
            }
            Some(Event::Gossip { entries, .. }) => {
                assert!(entries.iter().all(|e| e.record.public_key != fx.target_key));
                assert!(entries.iter().all(|e| e.record.routes.is_empty()));
            }
            _ => {}
        }
    }
});
