use super::*;
use crate::netlink::{Request, serialize};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_generic::GenlMessage;
use netlink_packet_wireguard::WireguardTimeSpec;
use std::net::SocketAddr;

const FAMILY: u16 = 0x1a;

fn key(n: u16) -> PublicKey {
    let mut bytes = [0u8; 32];
    bytes[..2].copy_from_slice(&n.to_be_bytes());
    bytes[31] = 0x5a;
    PublicKey::from_bytes(bytes)
}

fn net(text: &str) -> IpNet {
    text.parse().unwrap()
}

/// Serialises `message` as the kernel would receive it, and parses it back.
fn round_trip(message: &WireguardMessage) -> (usize, WireguardMessage) {
    let mut genl = GenlMessage::from_payload(message.clone());
    genl.set_resolved_family_id(FAMILY);
    let bytes = serialize(genl, Request::Do(0), 1);
    let parsed = NetlinkMessage::<GenlMessage<WireguardMessage>>::deserialize(&bytes).unwrap();
    assert_eq!(parsed.header.message_type, FAMILY);
    let NetlinkPayload::InnerMessage(genl) = parsed.payload else {
        panic!("not a generic netlink message");
    };
    (bytes.len(), genl.payload)
}

/// What the kernel does with one WG_CMD_SET_DEVICE message (drivers/net/wireguard/netlink.c).
fn kernel_apply(state: &mut DeviceState, message: &WireguardMessage) {
    for attribute in &message.attributes {
        match attribute {
            WireguardAttribute::PrivateKey(k) => {
                state.private_key = Some(PrivateKey::from_bytes_clamped(*k));
            }
            WireguardAttribute::ListenPort(p) => state.listen_port = *p,
            WireguardAttribute::Peers(peers) => {
                for peer in peers {
                    let mut key = None;
                    let mut flags = WireguardPeerFlags::empty();
                    for a in peer.iter() {
                        match a {
                            WireguardPeerAttribute::PublicKey(k) => {
                                key = Some(PublicKey::from_bytes(*k));
                            }
                            WireguardPeerAttribute::Flags(f) => flags = *f,
                            _ => {}
                        }
                    }
                    let key = key.unwrap();
                    let position = state.peers.iter().position(|p| p.config.public_key == key);
                    if flags.contains(WireguardPeerFlags::RemoveMe) {
                        if let Some(i) = position {
                            state.peers.remove(i);
                        }
                        continue;
                    }
                    let index = position.unwrap_or_else(|| {
                        state.peers.push(PeerState::new(PeerConfig::new(key)));
                        state.peers.len() - 1
                    });
                    let config = &mut state.peers[index].config;
                    if flags.contains(WireguardPeerFlags::ReplaceAllowedIps) {
                        config.allowed_ips.clear();
                    }
                    for a in peer.iter() {
                        match a {
                            WireguardPeerAttribute::PresharedKey(k) => {
                                config.preshared_key =
                                    (*k != [0; 32]).then(|| PresharedKey::from_bytes(*k));
                            }
                            WireguardPeerAttribute::Endpoint(e) => config.endpoint = Some(*e),
                            WireguardPeerAttribute::PersistentKeepalive(k) => {
                                config.persistent_keepalive = (*k != 0).then_some(*k);
                            }
                            WireguardPeerAttribute::AllowedIps(ips) => {
                                for ip in ips {
                                    config
                                        .allowed_ips
                                        .push(parse_allowed_ip(ip, "test").unwrap());
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
            _ => {}
        }
    }
    state.normalise();
}

fn check_split(initial: &DeviceState, update: &DeviceUpdate) -> Vec<WireguardMessage> {
    let messages = set_device_messages("wgm-test0", update, MAX_SET_MESSAGE_LEN);
    let mut kernel = initial.clone();
    for message in &messages {
        let (len, parsed) = round_trip(message);
        assert!(len <= MAX_SET_MESSAGE_LEN, "message of {len} bytes");
        assert_eq!(&parsed, message);
        assert_eq!(
            parsed.attributes.first(),
            Some(&WireguardAttribute::IfName("wgm-test0".to_owned()))
        );
        kernel_apply(&mut kernel, &parsed);
    }
    let mut expected = initial.clone();
    expected.apply(update);
    assert_eq!(kernel, expected);
    messages
}

#[test]
fn small_set_message_bytes() {
    let update = DeviceUpdate {
        listen_port: Some(51820),
        ..DeviceUpdate::default()
    };
    let messages = set_device_messages("wg0", &update, MAX_SET_MESSAGE_LEN);
    assert_eq!(messages.len(), 1);
    let mut genl = GenlMessage::from_payload(messages[0].clone());
    genl.set_resolved_family_id(FAMILY);
    let bytes = serialize(genl, Request::Do(0), 1);
    #[rustfmt::skip]
    let expected: &[u8] = &[
        // nlmsghdr: length 36, family 0x1a, REQUEST|ACK, seq 1, port 0
        36, 0, 0, 0, 0x1a, 0, 5, 0, 1, 0, 0, 0, 0, 0, 0, 0,
        // genlmsghdr: WG_CMD_SET_DEVICE, version 1
        1, 1, 0, 0,
        // WGDEVICE_A_IFNAME "wg0"
        8, 0, 2, 0, b'w', b'g', b'0', 0,
        // WGDEVICE_A_LISTEN_PORT 51820 (host order), padded
        6, 0, 6, 0, 0x6c, 0xca, 0, 0,
    ];
    assert_eq!(bytes, expected);
}

#[test]
fn empty_update_sends_nothing() {
    assert!(set_device_messages("wg0", &DeviceUpdate::default(), MAX_SET_MESSAGE_LEN).is_empty());
}

#[test]
fn many_peers_are_split_across_messages() {
    let endpoint: SocketAddr = "192.0.2.1:51820".parse().unwrap();
    let endpoint6: SocketAddr = "[2001:db8::1]:51821".parse().unwrap();
    let mut initial = DeviceState::default();
    initial
        .peers
        .push(PeerState::new(PeerConfig::new(key(9999))));
    let mut update = DeviceUpdate {
        private_key: Some(PrivateKey::from_bytes_clamped([3; 32])),
        listen_port: Some(40000),
        peers: vec![PeerUpdate::remove(key(9999))],
    };
    for n in 0..300u16 {
        let [hi, lo] = n.to_be_bytes();
        update.peers.push(PeerUpdate {
            preshared_key: (n % 3 == 0).then(|| PresharedKey::from_bytes([7; 32])),
            endpoint: Some(if n % 2 == 0 { endpoint } else { endpoint6 }),
            persistent_keepalive: Some(25),
            replace_allowed_ips: true,
            allowed_ips: vec![
                net(&format!("10.7.{hi}.{lo}/32")),
                net(&format!("fd00:7::{n:x}/128")),
            ],
            ..PeerUpdate::new(key(n))
        });
    }
    let messages = check_split(&initial, &update);
    assert!(messages.len() > 5, "{} messages", messages.len());
    // Device attributes only in the first message.
    for (i, message) in messages.iter().enumerate() {
        let has_device = message
            .attributes
            .iter()
            .any(|a| matches!(a, WireguardAttribute::PrivateKey(_)));
        assert_eq!(has_device, i == 0);
    }
}

#[test]
fn one_peer_with_many_allowed_ips_is_split_with_replace_only_first() {
    let mut initial = DeviceState::default();
    let mut old = PeerState::new(PeerConfig::new(key(1)));
    old.config.allowed_ips = vec![net("192.168.0.0/16")];
    initial.peers.push(old);
    let update = DeviceUpdate {
        peers: vec![PeerUpdate {
            replace_allowed_ips: true,
            endpoint: Some("198.51.100.7:1234".parse().unwrap()),
            allowed_ips: (0..1000u16)
                .map(|n| {
                    let [hi, lo] = n.to_be_bytes();
                    net(&format!("10.{hi}.{lo}.0/24"))
                })
                .collect(),
            ..PeerUpdate::new(key(1))
        }],
        ..DeviceUpdate::default()
    };
    let messages = check_split(&initial, &update);
    assert!(messages.len() > 3, "{} messages", messages.len());
    let mut replace_flags = 0;
    let mut endpoints = 0;
    for message in &messages {
        for attribute in &message.attributes {
            if let WireguardAttribute::Peers(peers) = attribute {
                for peer in peers {
                    for a in peer.iter() {
                        match a {
                            WireguardPeerAttribute::Flags(f)
                                if f.contains(WireguardPeerFlags::ReplaceAllowedIps) =>
                            {
                                replace_flags += 1;
                            }
                            WireguardPeerAttribute::Endpoint(_) => endpoints += 1,
                            _ => {}
                        }
                    }
                }
            }
        }
    }
    assert_eq!(replace_flags, 1);
    assert_eq!(endpoints, 1);
    // The flag is in the very first chunk.
    let WireguardAttribute::Peers(first) = &messages[0].attributes[1] else {
        panic!("first message has no peers");
    };
    assert!(
        first[0]
            .iter()
            .any(|a| matches!(a, WireguardPeerAttribute::Flags(_)))
    );
}

#[test]
fn get_dump_with_split_peer_merges() {
    let a = key(1);
    let b = key(2);
    let endpoint: SocketAddr = "203.0.113.5:51820".parse().unwrap();
    let first = WireguardMessage {
        cmd: WireguardCmd::GetDevice,
        attributes: vec![
            WireguardAttribute::IfIndex(4),
            WireguardAttribute::IfName("wg0".to_owned()),
            WireguardAttribute::PrivateKey([5; 32]),
            WireguardAttribute::ListenPort(51820),
            WireguardAttribute::Peers(vec![WireguardPeer(vec![
                WireguardPeerAttribute::PublicKey(*a.as_bytes()),
                WireguardPeerAttribute::PresharedKey([0; 32]),
                WireguardPeerAttribute::Endpoint(endpoint),
                WireguardPeerAttribute::PersistentKeepalive(0),
                WireguardPeerAttribute::LastHandshake(WireguardTimeSpec {
                    seconds: 1_700_000_000,
                    nano_seconds: 5,
                }),
                WireguardPeerAttribute::RxBytes(100),
                WireguardPeerAttribute::TxBytes(200),
                WireguardPeerAttribute::ProtocolVersion(1),
                WireguardPeerAttribute::AllowedIps(vec![
                    allowed_ip(&net("10.0.0.2/32")),
                    allowed_ip(&net("fd00::2/128")),
                ]),
            ])]),
        ],
    };
    let second = WireguardMessage {
        cmd: WireguardCmd::GetDevice,
        attributes: vec![WireguardAttribute::Peers(vec![
            // The kernel continues peer A: key and the allowed IPs that did not fit.
            WireguardPeer(vec![
                WireguardPeerAttribute::PublicKey(*a.as_bytes()),
                WireguardPeerAttribute::AllowedIps(vec![allowed_ip(&net("10.9.0.0/16"))]),
            ]),
            WireguardPeer(vec![
                WireguardPeerAttribute::PublicKey(*b.as_bytes()),
                WireguardPeerAttribute::PresharedKey([8; 32]),
                WireguardPeerAttribute::PersistentKeepalive(25),
                WireguardPeerAttribute::LastHandshake(WireguardTimeSpec::default()),
            ]),
        ])],
    };
    let dump: Vec<WireguardMessage> = [first, second].iter().map(|m| round_trip(m).1).collect();
    let state = device_state_from_dump(&dump).unwrap();
    assert_eq!(state.listen_port, 51820);
    assert_eq!(
        state.private_key,
        Some(PrivateKey::from_bytes_clamped([5; 32]))
    );
    assert_eq!(state.peers.len(), 2);
    let pa = state.peer(&a).unwrap();
    assert_eq!(
        pa.config.allowed_ips,
        vec![net("10.0.0.2/32"), net("10.9.0.0/16"), net("fd00::2/128")]
    );
    assert_eq!(pa.config.preshared_key, None);
    assert_eq!(pa.config.persistent_keepalive, None);
    assert_eq!(pa.config.endpoint, Some(endpoint));
    assert_eq!(
        pa.last_handshake,
        Some(SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 5))
    );
    assert_eq!((pa.rx_bytes, pa.tx_bytes), (100, 200));
    let pb = state.peer(&b).unwrap();
    assert_eq!(
        pb.config.preshared_key,
        Some(PresharedKey::from_bytes([8; 32]))
    );
    assert_eq!(pb.config.persistent_keepalive, Some(25));
    assert_eq!(pb.last_handshake, None);
    assert!(pb.config.allowed_ips.is_empty());
}

#[test]
fn scrub_removes_keys() {
    let update = DeviceUpdate {
        private_key: Some(PrivateKey::from_bytes_clamped([0x11; 32])),
        peers: vec![PeerUpdate {
            preshared_key: Some(PresharedKey::from_bytes([0x22; 32])),
            ..PeerUpdate::new(key(3))
        }],
        ..DeviceUpdate::default()
    };
    let mut messages = set_device_messages("wg0", &update, MAX_SET_MESSAGE_LEN);
    scrub_keys(&mut messages);
    let printed = format!("{messages:?}");
    assert!(!printed.contains("17, 17, 17"), "{printed}");
    assert!(!printed.contains("34, 34, 34"), "{printed}");
}

#[test]
fn a_malformed_dump_is_a_typed_error_naming_the_peer() {
    let dump = |peer: Vec<WireguardPeerAttribute>| {
        vec![WireguardMessage {
            cmd: WireguardCmd::GetDevice,
            attributes: vec![WireguardAttribute::Peers(vec![WireguardPeer(peer)])],
        }]
    };
    assert_eq!(
        device_state_from_dump(&dump(vec![WireguardPeerAttribute::RxBytes(1)])).unwrap_err(),
        DumpError::PeerWithoutKey
    );
    let a = key(1);
    let incomplete = WireguardAllowedIp(vec![WireguardAllowedIpAttr::Cidr(24)]);
    let err = device_state_from_dump(&dump(vec![
        WireguardPeerAttribute::PublicKey(*a.as_bytes()),
        WireguardPeerAttribute::AllowedIps(vec![incomplete]),
    ]))
    .unwrap_err();
    assert_eq!(err, DumpError::AllowedIpIncomplete { peer: a.short() });
    assert!(err.to_string().contains(&a.short()), "{err}");
}
