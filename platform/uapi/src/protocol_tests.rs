use super::*;
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use wgmesh_device::PeerUpdate;

/// Captured from Debian's wireguard-go v0.0.20220316 (`get=1` after a `wg set` with three
/// peers: PSK + IPv6 endpoint + keepalive, plain IPv4 endpoint, bare key). Throwaway keys.
const CAPTURED_GET: &str = "private_key=500f1114c32a4842d1429db3cd663f72cb09dd9eb27253bbc7862b6ef4043e73\n\
listen_port=51999\n\
public_key=dcff2b3e8da2b976c8b3a40289c98524af7242c3d48de50d843ff359fd33f558\n\
preshared_key=40bb115323f51fdded193450537016e7596dab0a8c6431985be340f3067da6af\n\
protocol_version=1\n\
endpoint=[2001:db8::1]:51820\n\
last_handshake_time_sec=0\n\
last_handshake_time_nsec=0\n\
tx_bytes=148\n\
rx_bytes=0\n\
persistent_keepalive_interval=25\n\
allowed_ip=10.1.0.2/32\n\
allowed_ip=fd00::2/128\n\
public_key=0d630f1a0ccbea428cbfd42cb0a60c9a9497896212cd1efc4a95a53da743e50e\n\
preshared_key=0000000000000000000000000000000000000000000000000000000000000000\n\
protocol_version=1\n\
endpoint=192.0.2.3:51820\n\
last_handshake_time_sec=0\n\
last_handshake_time_nsec=0\n\
tx_bytes=148\n\
rx_bytes=0\n\
persistent_keepalive_interval=0\n\
allowed_ip=10.1.0.3/32\n\
public_key=e58ff6476c10c2995bae3a5fb8aac1d9457b29753fd2865baf2eb967e02cc82c\n\
preshared_key=0000000000000000000000000000000000000000000000000000000000000000\n\
protocol_version=1\n\
last_handshake_time_sec=0\n\
last_handshake_time_nsec=0\n\
tx_bytes=0\n\
rx_bytes=0\n\
persistent_keepalive_interval=0\n\
errno=0\n\n";

/// Captured from the same wireguard-go: a fresh device that was never configured.
const CAPTURED_EMPTY: &str = "listen_port=38729\nerrno=0\n\n";

fn public(hex: &str) -> PublicKey {
    PublicKey::from_hex(hex).unwrap()
}

#[test]
fn parses_a_captured_response() {
    let state = parse_get_response(CAPTURED_GET).unwrap();
    let private = state.private_key.as_ref().unwrap();
    assert_eq!(
        private.expose_hex(),
        "500f1114c32a4842d1429db3cd663f72cb09dd9eb27253bbc7862b6ef4043e73"
    );
    assert_eq!(state.listen_port, 51999);
    assert_eq!(state.peers.len(), 3);
    // normalise() sorts peers by key.
    let first = &state.peers[0];
    assert_eq!(
        first.config.public_key,
        public("0d630f1a0ccbea428cbfd42cb0a60c9a9497896212cd1efc4a95a53da743e50e")
    );
    assert_eq!(first.config.preshared_key, None, "all-zero PSK means none");
    assert_eq!(
        first.config.endpoint,
        Some("192.0.2.3:51820".parse().unwrap())
    );
    assert_eq!(first.config.persistent_keepalive, None);
    assert_eq!(first.last_handshake, None);
    assert_eq!(first.tx_bytes, 148);

    let with_psk = state
        .peer(&public(
            "dcff2b3e8da2b976c8b3a40289c98524af7242c3d48de50d843ff359fd33f558",
        ))
        .unwrap();
    assert_eq!(
        with_psk.config.preshared_key.as_ref().unwrap().expose_hex(),
        "40bb115323f51fdded193450537016e7596dab0a8c6431985be340f3067da6af"
    );
    assert_eq!(
        with_psk.config.endpoint,
        Some("[2001:db8::1]:51820".parse().unwrap())
    );
    assert_eq!(with_psk.config.persistent_keepalive, Some(25));
    assert_eq!(
        with_psk.config.allowed_ips,
        vec![
            "10.1.0.2/32".parse::<IpNet>().unwrap(),
            "fd00::2/128".parse().unwrap()
        ]
    );
    let bare = state
        .peer(&public(
            "e58ff6476c10c2995bae3a5fb8aac1d9457b29753fd2865baf2eb967e02cc82c",
        ))
        .unwrap();
    assert_eq!(bare.config.endpoint, None);
    assert!(bare.config.allowed_ips.is_empty());
}

#[test]
fn parses_a_fresh_device() {
    let state = parse_get_response(CAPTURED_EMPTY).unwrap();
    assert_eq!(state.private_key, None);
    assert_eq!(state.listen_port, 38729);
    assert!(state.peers.is_empty());
}

#[test]
fn handshake_time_and_unknown_keys() {
    let text = "listen_port=1\nfwmark=51820\nfuture_device_key=x\n\
public_key=0d630f1a0ccbea428cbfd42cb0a60c9a9497896212cd1efc4a95a53da743e50e\n\
protocol_version=1\nfuture_peer_key=y\n\
last_handshake_time_sec=1700000000\nlast_handshake_time_nsec=123456789\n\
rx_bytes=18446744073709551615\nerrno=0\n\n";
    let state = parse_get_response(text).unwrap();
    let peer = &state.peers[0];
    assert_eq!(
        peer.last_handshake,
        Some(SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789))
    );
    assert_eq!(peer.rx_bytes, u64::MAX);
}

#[test]
fn errno_answers() {
    assert!(parse_errno("errno=0\n\n").is_ok());
    assert!(parse_errno("errno=0").is_ok(), "stripped terminator");
    // Captured: wireguard-go's answer to `set=1` with a bad private key.
    let err = parse_errno("errno=-22\n\n").unwrap_err();
    assert!(matches!(err, UapiError::Errno { errno: -22 }), "{err}");
    assert!(err.to_string().contains("errno=-22"), "{err}");
    assert!(matches!(parse_errno(""), Err(UapiError::MissingErrno)));
    assert!(matches!(
        parse_errno("listen_port=1\nerrno=0\n\n"),
        Err(UapiError::Malformed { .. })
    ));
    assert!(matches!(
        parse_get_response("listen_port=1\nerrno=-5\n\n"),
        Err(UapiError::Errno { errno: -5 })
    ));
}

#[test]
fn rejects_broken_responses() {
    for text in [
        "",
        "listen_port=1\n\n",
        "listen_port=1\nerrno=0\nlisten_port=2\n\n",
        "allowed_ip=10.0.0.0/8\nerrno=0\n\n",
        "listen_port=70000\nerrno=0\n\n",
        "listen_port=+1\nerrno=0\n\n",
        "private_key=abcd\nerrno=0\n\n",
        "garbage\nerrno=0\n\n",
        "public_key=0d630f1a0ccbea428cbfd42cb0a60c9a9497896212cd1efc4a95a53da743e50e\nendpoint=nowhere\nerrno=0\n\n",
        "public_key=0d630f1a0ccbea428cbfd42cb0a60c9a9497896212cd1efc4a95a53da743e50e\nlast_handshake_time_nsec=1000000000\nerrno=0\n\n",
        "public_key=0d630f1a0ccbea428cbfd42cb0a60c9a9497896212cd1efc4a95a53da743e50e\nlast_handshake_time_sec=18446744073709551615\nerrno=0\n\n",
    ] {
        assert!(parse_get_response(text).is_err(), "accepted {text:?}");
    }
}

#[test]
fn errors_never_quote_key_material() {
    let secret = "500f1114c32a4842d1429db3cd663f72cb09dd9eb27253bbc7862b6ef4043e73";
    for text in [
        format!("{secret}\nerrno=0\n\n"),
        format!("private_key={secret}0\nerrno=0\n\n"),
        format!("errno=0\n{secret}=1\n\n"),
        format!("errno=0\nprivate_key={secret}\n\n"),
    ] {
        let err = parse_get_response(&text).unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(&secret[..16]), "{shown}");
    }
}

#[test]
fn endpoint_with_zone() {
    let endpoint = parse_endpoint(1, "[fe80::1%eth0]:51820").unwrap();
    assert_eq!(endpoint, "[fe80::1]:51820".parse().unwrap());
    let endpoint = parse_endpoint(1, "[fe80::1%3]:51820").unwrap();
    assert_eq!(
        endpoint,
        SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 51820, 0, 3))
    );
}

#[test]
fn renders_a_set_request() {
    let private = PrivateKey::from_bytes_clamped([1; 32]);
    let psk = PresharedKey::from_bytes([0xab; 32]);
    let update = DeviceUpdate {
        private_key: Some(private.clone()),
        listen_port: Some(51820),
        peers: vec![
            PeerUpdate::remove(PublicKey::from_bytes([2; 32])),
            PeerUpdate {
                preshared_key: Some(psk.clone()),
                endpoint: Some("[2001:db8::7]:51821".parse().unwrap()),
                persistent_keepalive: Some(0),
                replace_allowed_ips: true,
                allowed_ips: vec![
                    "10.9.0.3/32".parse().unwrap(),
                    "fd00:9::3/128".parse().unwrap(),
                ],
                ..PeerUpdate::new(PublicKey::from_bytes([3; 32]))
            },
            PeerUpdate {
                endpoint: Some("192.0.2.9:4000".parse().unwrap()),
                ..PeerUpdate::new(PublicKey::from_bytes([4; 32]))
            },
        ],
    };
    let expected = format!(
        "set=1\nprivate_key={}\nlisten_port=51820\n\
public_key={}\nremove=true\n\
public_key={}\npreshared_key={}\nendpoint=[2001:db8::7]:51821\npersistent_keepalive_interval=0\n\
replace_allowed_ips=true\nallowed_ip=10.9.0.3/32\nallowed_ip=fd00:9::3/128\n\
public_key={}\nendpoint=192.0.2.9:4000\n\n",
        private.expose_hex(),
        "02".repeat(32),
        "03".repeat(32),
        "ab".repeat(32),
        "04".repeat(32),
    );
    assert_eq!(render_set_request(&update).as_str(), expected);
    assert_eq!(
        render_set_request(&DeviceUpdate::default()).as_str(),
        "set=1\n\n"
    );
}

fn arb_net() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        (any::<u32>(), 0u8..=32).prop_map(|(a, len)| IpNet::new(
            IpAddr::V4(Ipv4Addr::from(a)),
            len
        )
        .unwrap()),
        (any::<u128>(), 0u8..=128).prop_map(|(a, len)| IpNet::new(
            IpAddr::V6(Ipv6Addr::from(a)),
            len
        )
        .unwrap()),
    ]
}

fn arb_endpoint() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<u32>(), any::<u16>())
            .prop_map(|(a, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port)),
        (any::<u128>(), any::<u16>())
            .prop_map(|(a, port)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)), port)),
    ]
}

fn arb_peer() -> impl Strategy<Value = PeerState> {
    (
        any::<[u8; 32]>(),
        proptest::option::of(any::<[u8; 32]>()),
        proptest::option::of(arb_endpoint()),
        proptest::collection::vec(arb_net(), 0..4),
        proptest::option::of(1u16..),
        proptest::option::of((1u64..=4_000_000_000, 0u32..1_000_000_000)),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(|(key, psk, endpoint, ips, keepalive, handshake, rx, tx)| {
            let mut config = PeerConfig {
                // An all-zero PSK is how the protocol says "none".
                preshared_key: psk.filter(|b| *b != [0; 32]).map(PresharedKey::from_bytes),
                endpoint,
                allowed_ips: ips,
                persistent_keepalive: keepalive,
                ..PeerConfig::new(PublicKey::from_bytes(key))
            };
            config.normalise();
            PeerState {
                config,
                last_handshake: handshake
                    .map(|(s, n)| SystemTime::UNIX_EPOCH + Duration::new(s, n)),
                rx_bytes: rx,
                tx_bytes: tx,
            }
        })
}

fn arb_state() -> impl Strategy<Value = DeviceState> {
    (
        proptest::option::of(any::<[u8; 32]>()),
        any::<u16>(),
        proptest::collection::vec(arb_peer(), 0..6),
    )
        .prop_map(|(private, port, peers)| {
            let mut state = DeviceState {
                private_key: private.map(PrivateKey::from_bytes_clamped),
                listen_port: port,
                peers,
            };
            state.normalise();
            state
        })
}

/// Lines built from the protocol's own vocabulary reach deeper than random text.
fn arb_protocol_text() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("private_key"),
        Just("listen_port"),
        Just("public_key"),
        Just("preshared_key"),
        Just("endpoint"),
        Just("last_handshake_time_sec"),
        Just("last_handshake_time_nsec"),
        Just("rx_bytes"),
        Just("tx_bytes"),
        Just("persistent_keepalive_interval"),
        Just("allowed_ip"),
        Just("errno"),
        Just("protocol_version"),
        Just(""),
    ];
    let value = prop_oneof![
        "[0-9a-f]{64}",
        "[0-9]{1,25}",
        "-?[0-9]{1,3}",
        "\\[[0-9a-f:%a-z]{0,40}\\]:[0-9]{0,6}",
        "[0-9.]{0,16}(/[0-9]{0,3})?",
        ".{0,20}",
    ];
    proptest::collection::vec((key, value, any::<bool>()), 0..30).prop_map(|lines| {
        lines
            .into_iter()
            .map(|(k, v, eq)| format!("{k}{}{v}\n", if eq { "=" } else { "" }))
            .collect()
    })
}

proptest! {
    #[test]
    fn render_then_parse_is_identity(state in arb_state()) {
        let text = render_get_response(&state);
        let parsed = parse_get_response(&text).unwrap();
        prop_assert_eq!(parsed, state);
    }

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,400}") {
        let _ = parse_get_response(&text);
        let _ = parse_errno(&text);
    }

    #[test]
    fn protocol_shaped_text_never_panics(text in arb_protocol_text()) {
        let _ = parse_get_response(&text);
        let _ = parse_errno(&text);
    }

    /// What wireguard-go would hold after a set, read back, is what the update meant.
    #[test]
    fn set_request_mirrors_the_update_semantics(state in arb_state(), other in arb_state()) {
        let update = wgmesh_device::diff_device(
            &state,
            &wgmesh_device::DesiredDevice {
                private_key: other.private_key.clone().unwrap_or_else(|| PrivateKey::from_bytes_clamped([5; 32])),
                listen_port: other.listen_port,
                peers: other.peers.iter().map(|p| p.config.clone()).collect(),
            },
            SystemTime::UNIX_EPOCH,
        );
        let request = render_set_request(&update);
        prop_assert!(request.starts_with("set=1\n") && request.ends_with("\n\n"));
        // Exactly one blank line: the terminator.
        prop_assert_eq!(request.matches("\n\n").count(), 1);
        prop_assert_eq!(request.matches("public_key=").count(), update.peers.len());
    }
}
