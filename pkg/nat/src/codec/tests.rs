use std::net::SocketAddr;

use proptest::prelude::*;

use super::*;

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s
        .bytes()
        .filter(u8::is_ascii_hexdigit)
        .map(|b| match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => b - b'A' + 10,
        })
        .collect();
    digits.chunks(2).map(|p| p[0] << 4 | p[1]).collect()
}

const TXID_5769: [u8; 12] = [
    0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
];

/// RFC 5769 §2.2: IPv4 success response with SOFTWARE, MESSAGE-INTEGRITY and FINGERPRINT.
#[test]
fn rfc5769_ipv4_response() {
    let msg = hex("0101003c 2112a442 b7e7a701 bc34d686 fa87dfae
         8022000b 74657374 20766563 746f7220
         00200008 0001a147 e112a643
         00080014 2b91f599 fd9e90c3 8c7489f9 2af9ba53 f06be7d7
         80280004 c07d4c96");
    assert!(is_stun(&msg));
    let resp = parse_binding_response(&msg).expect("valid vector");
    assert_eq!(resp.transaction_id, TXID_5769);
    assert_eq!(
        resp.mapped,
        "192.0.2.1:32853".parse::<SocketAddr>().expect("addr")
    );
}

/// RFC 5769 §2.3: IPv6 success response.
#[test]
fn rfc5769_ipv6_response() {
    let msg = hex("01010048 2112a442 b7e7a701 bc34d686 fa87dfae
         8022000b 74657374 20766563 746f7220
         00200014 0002a147 0113a9fa a5d3f179 bc25f4b5 bed2b9d9
         00080014 a382954e 4be67bf1 1784c97c 8292c275 bfe3ed41
         80280004 c8fb0b4c");
    let resp = parse_binding_response(&msg).expect("valid vector");
    assert_eq!(resp.transaction_id, TXID_5769);
    assert_eq!(
        resp.mapped,
        "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
            .parse::<SocketAddr>()
            .expect("addr")
    );
}

#[test]
fn corrupted_fingerprint_is_rejected() {
    let mut msg = binding_success_response([7; 12], "198.51.100.7:4000".parse().expect("addr"));
    let last = msg.len() - 1;
    msg[last] ^= 1;
    assert_eq!(parse_binding_response(&msg), Err(StunError::BadFingerprint));
}

#[test]
fn request_layout() {
    let req = binding_request([9; 12]);
    assert_eq!(&req[..8], &[0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42]);
    assert!(is_stun(&req));
    assert_eq!(parse_binding_request(&req), Some([9; 12]));
    // A request is not a response.
    assert_eq!(
        parse_binding_response(&req),
        Err(StunError::NotBindingResponse { message_type: 1 })
    );
    // And a response is not a request.
    let resp = binding_success_response([9; 12], "1.2.3.4:5".parse().expect("addr"));
    assert_eq!(parse_binding_request(&resp), None);
}

#[test]
fn exchange_datagrams_are_not_stun() {
    let mut dgram = b"WGM1".to_vec();
    dgram.extend_from_slice(&[0; 60]);
    assert!(!is_stun(&dgram));
    // Even with a cookie and a consistent length, the first two bits give it away.
    let mut forged = binding_request([1; 12]).to_vec();
    forged[..4].copy_from_slice(b"WGM1");
    forged[2..4].copy_from_slice(&[0, 0]);
    assert!(!is_stun(&forged));
}

#[test]
fn framing_checks() {
    let req = binding_request([3; 12]);
    assert!(!is_stun(&req[..19]));
    let mut bad_cookie = req;
    bad_cookie[5] ^= 1;
    assert!(!is_stun(&bad_cookie));
    let mut long = req.to_vec();
    long.extend_from_slice(&[0; 4]); // length field still says 0
    assert!(!is_stun(&long));
    let mut odd = req.to_vec();
    odd.extend_from_slice(&[0; 2]);
    odd[3] = 2;
    assert!(!is_stun(&odd));
}

#[test]
fn mapped_address_fallback_for_rfc3489_servers() {
    let txid = [4; 12];
    let addr: SocketAddr = "203.0.113.9:61000".parse().expect("addr");
    let mut b = MessageBuilder::new(BINDING_SUCCESS, txid);
    b.attribute(
        0x0004,
        &encode_address("9.9.9.9:3478".parse().expect("addr"), None),
    );
    b.attribute(ATTR_MAPPED_ADDRESS, &encode_address(addr, None));
    let msg = b.finish(false);
    assert_eq!(parse_binding_response(&msg).expect("ok").mapped, addr);
}

#[test]
fn xor_mapped_wins_over_mapped() {
    let txid = [5; 12];
    let real: SocketAddr = "203.0.113.9:61000".parse().expect("addr");
    let mut b = MessageBuilder::new(BINDING_SUCCESS, txid);
    // A NAT ALG may rewrite the plain MAPPED-ADDRESS; the XOR form survives it.
    b.attribute(
        ATTR_MAPPED_ADDRESS,
        &encode_address("10.0.0.5:1".parse().expect("addr"), None),
    );
    b.attribute(ATTR_XOR_MAPPED_ADDRESS, &encode_address(real, Some(&txid)));
    let msg = b.finish(true);
    assert_eq!(parse_binding_response(&msg).expect("ok").mapped, real);
}

#[test]
fn error_response() {
    let mut b = MessageBuilder::new(BINDING_ERROR, [6; 12]);
    b.attribute(ATTR_ERROR_CODE, &[0, 0, 4, 20, b'U', b'n', b'k']);
    let msg = b.finish(false);
    assert_eq!(
        parse_binding_response(&msg),
        Err(StunError::ErrorResponse {
            code: 420,
            reason: "Unk".to_owned()
        })
    );
}

#[test]
fn unknown_required_attribute_is_rejected_optional_ignored() {
    let txid = [8; 12];
    let addr: SocketAddr = "192.0.2.1:1".parse().expect("addr");
    let mut b = MessageBuilder::new(BINDING_SUCCESS, txid);
    b.attribute(0x802b, &[1, 2, 3]); // RESPONSE-ORIGIN-like, optional
    b.attribute(ATTR_XOR_MAPPED_ADDRESS, &encode_address(addr, Some(&txid)));
    assert_eq!(
        parse_binding_response(&b.finish(false)).expect("ok").mapped,
        addr
    );

    let mut b = MessageBuilder::new(BINDING_SUCCESS, txid);
    b.attribute(0x0042, &[]);
    b.attribute(ATTR_XOR_MAPPED_ADDRESS, &encode_address(addr, Some(&txid)));
    assert_eq!(
        parse_binding_response(&b.finish(false)),
        Err(StunError::UnknownRequiredAttribute(0x0042))
    );
}

#[test]
fn malformed_attributes() {
    let txid = [2; 12];
    let mut b = MessageBuilder::new(BINDING_SUCCESS, txid);
    b.attribute(ATTR_XOR_MAPPED_ADDRESS, &[0, 3, 0, 0, 1, 2, 3, 4]);
    assert!(matches!(
        parse_binding_response(&b.finish(false)),
        Err(StunError::MalformedAttribute {
            attr_type: 0x0020,
            ..
        })
    ));
    let mut b = MessageBuilder::new(BINDING_SUCCESS, txid);
    b.attribute(ATTR_XOR_MAPPED_ADDRESS, &[0, 1, 0, 0]);
    assert!(matches!(
        parse_binding_response(&b.finish(false)),
        Err(StunError::MalformedAttribute { .. })
    ));
    // Attribute length claims more than the message holds.
    let mut msg = MessageBuilder::new(BINDING_SUCCESS, txid);
    msg.attribute(ATTR_XOR_MAPPED_ADDRESS, &[0; 8]);
    let mut msg = msg.finish(false);
    msg[23] = 200;
    assert!(matches!(
        parse_binding_response(&msg),
        Err(StunError::MalformedAttribute { .. })
    ));
    // No address at all.
    let msg = MessageBuilder::new(BINDING_SUCCESS, txid).finish(true);
    assert_eq!(
        parse_binding_response(&msg),
        Err(StunError::NoMappedAddress)
    );
}

fn any_socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
    ]
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = is_stun(&bytes);
        let _ = parse_binding_request(&bytes);
        let _ = parse_binding_response(&bytes);
    }

    /// Arbitrary attribute soup behind a valid header, so the attribute walker gets exercised.
    #[test]
    fn framed_garbage_never_panics(
        message_type in prop_oneof![Just(BINDING_SUCCESS), Just(BINDING_ERROR), any::<u16>()],
        txid in any::<[u8; 12]>(),
        words in proptest::collection::vec(any::<[u8; 4]>(), 0..40),
    ) {
        let mut msg = MessageBuilder::new(message_type & 0x3fff, txid).finish(false);
        for w in &words {
            msg.extend_from_slice(w);
        }
        let len = u16::try_from(msg.len() - HEADER_LEN).unwrap_or(0);
        msg[2..4].copy_from_slice(&len.to_be_bytes());
        prop_assert!(is_stun(&msg));
        let _ = parse_binding_response(&msg);
        let _ = parse_binding_request(&msg);
    }

    #[test]
    fn response_round_trip(txid in any::<[u8; 12]>(), mapped in any_socket_addr()) {
        let msg = binding_success_response(txid, mapped);
        prop_assert!(is_stun(&msg));
        let resp = parse_binding_response(&msg);
        prop_assert_eq!(resp, Ok(BindingResponse { transaction_id: txid, mapped }));
    }

    #[test]
    fn request_round_trip(txid in any::<[u8; 12]>()) {
        prop_assert_eq!(parse_binding_request(&binding_request(txid)), Some(txid));
    }
}
