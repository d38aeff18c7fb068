//! Shared fixtures: the mesh keys (Argon2 runs once per test binary), members, deterministic
//! entropy, and a hand-rolled message forger for the attack tests.

#![allow(dead_code, reason = "each test binary uses a different subset")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test fixtures: a failure here is a test failure"
)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use wgmesh_derive::{MeshAddresses, MeshKeys, NodeSeed, Secret};
use wgmesh_exchange::{
    CHALLENGE_LEN, ENTROPY_LEN, Endpoint, EndpointKind, Entropy, Event, Exchange, ExchangeConfig,
    Hello, MAC_LEN, Message, MsgType, Record, encode_message, seal,
};
use wgmesh_keys::{PrivateKey, PublicKey};

pub const NOW: u64 = 1_750_000_000_000;

pub fn mesh() -> &'static MeshKeys {
    static KEYS: OnceLock<MeshKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        MeshKeys::derive(&Secret::parse("wgmesh://v1/exchange-test-secret-one").unwrap())
    })
}

pub fn other_mesh() -> &'static MeshKeys {
    static KEYS: OnceLock<MeshKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        MeshKeys::derive(&Secret::parse("wgmesh://v1/exchange-test-secret-two").unwrap())
    })
}

/// Distinct random-looking bytes for every call, reproducible across runs.
pub fn entropy() -> Entropy {
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut bytes = [0u8; ENTROPY_LEN];
    bytes[..ENTROPY_LEN - 8]
        .copy_from_slice(&blake3::hash(&n.to_be_bytes()).as_bytes()[..ENTROPY_LEN - 8]);
    bytes[ENTROPY_LEN - 8..].copy_from_slice(&n.to_be_bytes());
    Entropy::from_bytes(bytes)
}

pub fn private_key(keys: &MeshKeys, id: u8) -> PrivateKey {
    keys.node_private_key(&NodeSeed::from_bytes([id; 32]))
}

pub fn record_for(keys: &MeshKeys, public_key: PublicKey, id: u8) -> Record {
    let addresses = MeshAddresses::derive(keys, &public_key, 0);
    Record {
        public_key,
        collision_counter: 0,
        mesh_ipv4: addresses.ipv4,
        mesh_ipv6: addresses.ipv6,
        endpoints: vec![Endpoint {
            kind: EndpointKind::Lan,
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 168, 1, id)), 51820),
        }],
        listen_port: 51820,
        routes: vec![format!("172.16.{id}.0/24").parse().unwrap()],
        flags: 0,
        timestamp: NOW / 1000,
    }
}

pub struct Member {
    pub exchange: Exchange,
    pub private_key: PrivateKey,
    pub public_key: PublicKey,
    pub record: Record,
    pub addr: SocketAddr,
}

pub fn member_in(keys: &MeshKeys, id: u8) -> Member {
    let private_key = private_key(keys, id);
    let public_key = private_key.public_key();
    let record = record_for(keys, public_key, id);
    let exchange = Exchange::new(
        keys,
        private_key.clone(),
        record.clone(),
        ExchangeConfig::default(),
    )
    .unwrap();
    // As the exchange announces it (with FLAG_EXTENSIONS).
    let record = exchange.record().clone();
    Member {
        exchange,
        private_key,
        public_key,
        record,
        addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, id)), 51900),
    }
}

pub fn member(id: u8) -> Member {
    member_in(mesh(), id)
}

/// The documented proof MAC, computed independently of the crate.
pub fn mac(
    keys: &MeshKeys,
    sender: &PrivateKey,
    recipient: &PublicKey,
    transcript: &[u8],
) -> [u8; 32] {
    let shared = sender.diffie_hellman(recipient);
    let mut input = Vec::new();
    input.extend_from_slice(shared.expose_bytes());
    input.extend_from_slice(&keys.exchange_key());
    let key = blake3::derive_key("wgmesh v1 exchange proof", &input);
    *blake3::keyed_hash(&key, transcript).as_bytes()
}

/// Seals a message under the mesh key with the header type of the message.
pub fn seal_message(keys: &MeshKeys, message: &Message) -> Vec<u8> {
    seal_with_type(keys, message.msg_type(), &encode_message(message).unwrap())
}

pub fn seal_with_type(keys: &MeshKeys, msg_type: MsgType, plaintext: &[u8]) -> Vec<u8> {
    seal(&keys.exchange_key(), msg_type, &entropy().nonce, plaintext).unwrap()
}

/// Encodes `message`, fills its MAC (the last field) as `signer` would, and seals it.
pub fn forge(
    keys: &MeshKeys,
    signer: &PrivateKey,
    recipient: &PublicKey,
    message: &Message,
) -> Vec<u8> {
    let mut plaintext = encode_message(message).unwrap();
    let split = plaintext.len() - MAC_LEN;
    let mac = mac(keys, signer, recipient, &plaintext[..split]);
    plaintext[split..].copy_from_slice(&mac);
    seal_with_type(keys, message.msg_type(), &plaintext)
}

/// The datagrams of one handshake started by `a`: three, or four on first contact, when `b`
/// answered the Probe before it knew that `a` accepts extensions and `a` asked once more.
pub struct Transcript {
    pub probe: Vec<u8>,
    pub hello_b: Vec<u8>,
    pub hello_a: Vec<u8>,
    pub hello_b_again: Option<Vec<u8>>,
}

/// The record and source of a `Verified` event (whatever it says about version and name).
pub fn verified(event: &Option<Event>) -> Option<(&Record, SocketAddr)> {
    match event {
        Some(Event::Verified { record, from, .. }) => Some((record, *from)),
        _ => None,
    }
}

pub fn handshake(a: &mut Member, b: &mut Member, now: u64) -> Transcript {
    let probe = a.exchange.probe(now, b.addr, entropy());
    let at_b = b.exchange.handle(now, a.addr, &probe, entropy());
    assert_eq!(at_b.dropped, None);
    assert_eq!(at_b.event, None, "a Probe changes nothing but gets a reply");
    let hello_b = at_b.reply.expect("B answers the probe");

    let at_a = a.exchange.handle(now, b.addr, &hello_b, entropy());
    assert_eq!(at_a.dropped, None);
    assert_eq!(verified(&at_a.event), Some((b.exchange.record(), b.addr)));
    let hello_a = at_a.reply.expect("A answers B's challenge");

    let at_b = b.exchange.handle(now, a.addr, &hello_a, entropy());
    assert_eq!(at_b.dropped, None);
    assert_eq!(verified(&at_b.event), Some((a.exchange.record(), a.addr)));
    let hello_b_again = at_b.reply;
    if let Some(again) = &hello_b_again {
        let at_a = a.exchange.handle(now, b.addr, again, entropy());
        assert_eq!(at_a.dropped, None);
        assert_eq!(verified(&at_a.event), Some((b.exchange.record(), b.addr)));
        assert_eq!(at_a.reply, None, "the handshake ends after four messages");
    }
    Transcript {
        probe,
        hello_b,
        hello_a,
        hello_b_again,
    }
}

/// A Hello from `m` to `to` answering `echo`, with no challenge and an all-zero MAC (for
/// [`forge`] or a test to fill in).
pub fn hello_from(
    m: &Member,
    to: &PublicKey,
    echo: [u8; CHALLENGE_LEN],
    record: Record,
) -> Message {
    Message::Hello(Hello {
        sender: m.public_key,
        recipient: *to,
        timestamp: NOW / 1000,
        echo,
        challenge: [0; CHALLENGE_LEN],
        record,
        extensions: Vec::new(),
        mac: [0; 32],
    })
}

/// An address no test member is at, for Probes whose destination does not matter to a test.
pub fn elsewhere() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 250)), 51900)
}
