//! Property tests: the codec round-trips every valid record and message, and no input, however
//! hostile, makes the decoder or the state machine panic.

mod common;

use common::*;
use ipnet::IpNet;
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use wgmesh_exchange::{
    DecodeError, Endpoint, EndpointKind, Hello, MAX_DATAGRAM_LEN, MAX_ENDPOINTS,
    MAX_HELLO_DATAGRAM_LEN, MAX_ROUTES, Message, MsgType, Probe, Record, decode_message,
    decode_record_exact, encode_message, encode_record,
};
use wgmesh_keys::PublicKey;

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        any::<[u8; 16]>().prop_map(|b| IpAddr::V6(Ipv6Addr::from(b))),
    ]
}

fn endpoint() -> impl Strategy<Value = Endpoint> {
    let kind = prop_oneof![
        Just(EndpointKind::Lan),
        Just(EndpointKind::Stun),
        Just(EndpointKind::Observed),
        Just(EndpointKind::Static),
    ];
    (kind, ip(), any::<u16>()).prop_map(|(kind, ip, port)| Endpoint {
        kind,
        addr: SocketAddr::new(ip, port),
    })
}

fn route() -> impl Strategy<Value = IpNet> {
    (ip(), any::<u8>()).prop_map(|(ip, len)| {
        let max = if ip.is_ipv4() { 33 } else { 129 };
        IpNet::new_assert(ip, len % max).trunc()
    })
}

fn record() -> impl Strategy<Value = Record> {
    (
        any::<[u8; 32]>(),
        any::<u8>(),
        any::<[u8; 4]>(),
        any::<[u8; 16]>(),
        prop::collection::vec(endpoint(), 0..=MAX_ENDPOINTS),
        any::<u16>(),
        prop::collection::vec(route(), 0..=MAX_ROUTES),
        any::<u8>(),
        any::<u64>(),
    )
        .prop_map(
            |(key, counter, v4, v6, endpoints, listen_port, routes, flags, timestamp)| Record {
                public_key: PublicKey::from_bytes(key),
                collision_counter: counter,
                mesh_ipv4: Ipv4Addr::from(v4),
                mesh_ipv6: Ipv6Addr::from(v6),
                endpoints,
                listen_port,
                routes,
                flags,
                timestamp,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn records_round_trip(record in record()) {
        let mut bytes = Vec::new();
        encode_record(&record, &mut bytes).unwrap();
        prop_assert_eq!(decode_record_exact(&bytes).unwrap(), record);
    }

    #[test]
    fn hellos_round_trip_and_fit_a_datagram(
        record in record(),
        keys in any::<([u8; 32], [u8; 32])>(),
        timestamp in any::<u64>(),
        echo in any::<[u8; 16]>().prop_filter("non-zero", |e| *e != [0; 16]),
        challenge in any::<[u8; 16]>(),
        mac in any::<[u8; 32]>(),
    ) {
        let message = Message::Hello(Hello {
            sender: PublicKey::from_bytes(keys.0),
            recipient: PublicKey::from_bytes(keys.1),
            timestamp,
            echo,
            challenge,
            record,
            extensions: Vec::new(),
            mac,
        });
        let bytes = encode_message(&message).unwrap();
        prop_assert!(bytes.len() + wgmesh_exchange::OVERHEAD <= MAX_HELLO_DATAGRAM_LEN);
        prop_assert_eq!(decode_message(&bytes).unwrap(), message);
    }

    /// Unknown (non-critical) extensions survive decoding, in order: the codec stays canonical.
    #[test]
    fn hellos_with_extensions_round_trip(
        record in record(),
        extensions in prop::collection::vec(
            (0u8..0x80, prop::collection::vec(any::<u8>(), 0..40)),
            0..=wgmesh_exchange::MAX_EXTENSIONS,
        ),
    ) {
        let message = Message::Hello(Hello {
            sender: record.public_key,
            recipient: record.public_key,
            timestamp: 1,
            echo: [1; 16],
            challenge: [0; 16],
            record,
            extensions: extensions
                .into_iter()
                .map(|(kind, value)| wgmesh_exchange::Extension { kind, value })
                .collect(),
            mac: [2; 32],
        });
        let bytes = encode_message(&message).unwrap();
        prop_assert_eq!(decode_message(&bytes).unwrap(), message);
    }

    #[test]
    fn every_prefix_of_a_valid_message_is_refused(record in record()) {
        let message = Message::Hello(Hello {
            sender: record.public_key,
            recipient: record.public_key,
            timestamp: 1,
            echo: [1; 16],
            challenge: [0; 16],
            record,
            extensions: Vec::new(),
            mac: [2; 32],
        });
        let bytes = encode_message(&message).unwrap();
        for len in 0..bytes.len() {
            prop_assert!(decode_message(&bytes[..len]).is_err());
        }
    }

    #[test]
    fn decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..1300)) {
        let _ = decode_message(&bytes);
        let _ = decode_record_exact(&bytes);
    }

    #[test]
    fn decoder_never_panics_on_mutated_messages(
        record in record(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut bytes = encode_message(&Message::Hello(Hello {
            sender: record.public_key,
            recipient: record.public_key,
            timestamp: 1,
            echo: [1; 16],
            challenge: [0; 16],
            record,
            extensions: Vec::new(),
            mac: [2; 32],
        }))
        .unwrap();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        let _ = decode_message(&bytes);
    }

    #[test]
    fn handle_never_panics_on_arbitrary_datagrams(
        bytes in prop::collection::vec(any::<u8>(), 0..1300),
        header in any::<bool>(),
    ) {
        let mut b = member(2);
        let mut datagram = bytes;
        if header && datagram.len() >= 5 {
            datagram[..4].copy_from_slice(b"WGM1");
            datagram[4] = 1 + datagram[4] % 3;
        }
        let handled = b.exchange.handle(NOW, b.addr, &datagram, entropy());
        prop_assert!(handled.dropped.is_some());
        prop_assert_eq!(b.exchange.stats().total(), 1);
    }

    /// Arbitrary plaintexts sealed under the real key: they pass the AEAD and hit the decoder and
    /// every check behind it.
    #[test]
    fn handle_never_panics_on_authenticated_garbage(
        plaintext in prop::collection::vec(any::<u8>(), 0..(MAX_DATAGRAM_LEN - wgmesh_exchange::OVERHEAD)),
        type_byte in 1u8..=3,
    ) {
        let mut b = member(2);
        let msg_type = MsgType::from_wire(type_byte).unwrap();
        let datagram = seal_with_type(mesh(), msg_type, &plaintext);
        let handled = b.exchange.handle(NOW, b.addr, &datagram, entropy());
        prop_assert!(handled.event.is_none());
    }

    /// Well-formed but unsolicited messages with arbitrary fields reach every check; none is
    /// accepted, none panics.
    #[test]
    fn handle_refuses_arbitrary_authenticated_messages(
        record in record(),
        sender in prop_oneof![Just(None), any::<[u8; 32]>().prop_map(Some)],
        timestamp_offset in -200i64..200,
        echo in any::<[u8; 16]>().prop_filter("non-zero", |e| *e != [0; 16]),
        as_goodbye in any::<bool>(),
    ) {
        let mut b = member(2);
        let a = member(1);
        let sender = sender.map_or(a.public_key, PublicKey::from_bytes);
        let timestamp = (NOW / 1000).saturating_add_signed(timestamp_offset);
        let message = if as_goodbye {
            Message::Goodbye(wgmesh_exchange::Goodbye {
                sender, recipient: b.public_key, timestamp, nonce: echo, extensions: Vec::new(), mac: [0; 32],
            })
        } else {
            Message::Hello(Hello {
                sender, recipient: b.public_key, timestamp, echo, challenge: echo, record, extensions: Vec::new(), mac: [0; 32],
            })
        };
        let datagram = forge(mesh(), &a.private_key, &b.public_key, &message);
        let handled = b.exchange.handle(NOW, a.addr, &datagram, entropy());
        if as_goodbye && sender == a.public_key && timestamp_offset.abs() <= 120 {
            prop_assert!(handled.event.is_some());
        } else {
            prop_assert!(handled.event.is_none());
            prop_assert!(handled.dropped.is_some());
        }
    }

    #[test]
    fn zero_probe_challenges_are_refused(sender in any::<[u8; 32]>(), timestamp in any::<u64>()) {
        let probe = Probe { sender: PublicKey::from_bytes(sender), timestamp, challenge: [0; 16], extensions: Vec::new() };
        prop_assert!(encode_message(&Message::Probe(probe.clone())).is_err());
        let mut bytes = vec![MsgType::Probe.to_wire()];
        bytes.extend_from_slice(&sender);
        bytes.extend_from_slice(&timestamp.to_be_bytes());
        bytes.extend_from_slice(&[0; 16]);
        prop_assert_eq!(decode_message(&bytes), Err(DecodeError::ZeroChallenge));
    }
}

#[test]
fn bounds_are_enforced_on_encode_and_decode() {
    let a = member(1);
    let mut record = a.record.clone();
    record.endpoints = vec![record.endpoints[0]; MAX_ENDPOINTS + 1];
    assert!(encode_record(&record, &mut Vec::new()).is_err());
    let mut record = a.record.clone();
    record.routes = vec![record.routes[0]; MAX_ROUTES + 1];
    assert!(encode_record(&record, &mut Vec::new()).is_err());

    // Hand-built encodings claiming too many entries are refused before anything is read.
    let mut bytes = Vec::new();
    let mut empty = a.record.clone();
    empty.endpoints.clear();
    empty.routes.clear();
    encode_record(&empty, &mut bytes).unwrap();
    let n_endpoints_at = bytes.len() - 2;
    let mut too_many = bytes.clone();
    too_many[n_endpoints_at] = (MAX_ENDPOINTS + 1) as u8;
    assert_eq!(
        decode_record_exact(&too_many),
        Err(DecodeError::TooManyEndpoints(9))
    );
    let mut too_many = bytes.clone();
    too_many[n_endpoints_at + 1] = (MAX_ROUTES + 1) as u8;
    assert_eq!(
        decode_record_exact(&too_many),
        Err(DecodeError::TooManyRoutes(33))
    );
    // A route with host bits, a prefix too long, an unknown family, an unknown endpoint kind.
    let with = |tail: &[u8], n_endpoints: u8, n_routes: u8| {
        let mut b = bytes[..n_endpoints_at].to_vec();
        b.push(n_endpoints);
        if n_endpoints == 0 {
            b.push(n_routes);
        }
        b.extend_from_slice(tail);
        decode_record_exact(&b)
    };
    assert_eq!(
        with(&[4, 10, 1, 2, 3, 16], 0, 1),
        Err(DecodeError::NonCanonicalRoute)
    );
    assert_eq!(
        with(&[4, 10, 0, 0, 0, 33], 0, 1),
        Err(DecodeError::BadPrefixLength(33))
    );
    assert_eq!(
        with(&[5, 10, 0, 0, 0, 8], 0, 1),
        Err(DecodeError::UnknownFamily(5))
    );
    assert_eq!(
        with(&[4, 4, 10, 0, 0, 1, 0, 80, 0], 1, 0),
        Err(DecodeError::UnknownEndpointKind(4))
    );
    assert!(with(&[0, 4, 10, 0, 0, 1, 0, 80, 0], 1, 0).is_ok());
}
