//! Fixtures laid out as xnu's `bsd/net/route.h` and `bsd/net/if.h` define the structures
//! (native-endian; every Mac is little-endian).

use super::*;
use proptest::prelude::*;

/// The common `msglen, version, type` prefix.
fn prefix(message: &mut [u8], message_type: u8) {
    let len = u16::try_from(message.len()).unwrap();
    message[0..2].copy_from_slice(&len.to_ne_bytes());
    message[2] = RTM_VERSION;
    message[3] = message_type;
}

/// `struct rt_msghdr` (92 bytes) followed by the sockaddrs.
fn rt_msghdr(message_type: u8, index: u16, addrs: i32, sockaddrs: &[u8]) -> Vec<u8> {
    let mut m = vec![0u8; RT_MSGHDR_LEN];
    m[4..6].copy_from_slice(&index.to_ne_bytes()); // rtm_index
    // 6..8: padding before the int-aligned rtm_flags.
    m[8..12].copy_from_slice(&0x0801_i32.to_ne_bytes()); // rtm_flags: RTF_UP | RTF_STATIC
    m[12..16].copy_from_slice(&addrs.to_ne_bytes()); // rtm_addrs
    m[16..20].copy_from_slice(&4242_i32.to_ne_bytes()); // rtm_pid
    // 20: seq, 24: errno, 28: use, 32: inits, 36..92: rt_metrics (14 × u32).
    m.extend_from_slice(sockaddrs);
    prefix(&mut m, message_type);
    m
}

/// `struct ifa_msghdr` (20 bytes) followed by the sockaddrs.
fn ifa_msghdr(message_type: u8, index: u16, addrs: i32, sockaddrs: &[u8]) -> Vec<u8> {
    let mut m = vec![0u8; IFA_MSGHDR_LEN];
    m[4..8].copy_from_slice(&addrs.to_ne_bytes()); // ifam_addrs
    m[8..12].copy_from_slice(&0_i32.to_ne_bytes()); // ifam_flags
    m[12..14].copy_from_slice(&index.to_ne_bytes()); // ifam_index
    // 14..16 padding, 16..20 ifam_metric.
    m.extend_from_slice(sockaddrs);
    prefix(&mut m, message_type);
    m
}

/// `struct if_msghdr` (112 bytes: 16 of header, 96 of `if_data`).
fn if_msghdr(index: u16, flags: i32) -> Vec<u8> {
    let mut m = vec![0u8; IF_MSGHDR_LEN];
    m[8..12].copy_from_slice(&flags.to_ne_bytes()); // ifm_flags
    m[12..14].copy_from_slice(&index.to_ne_bytes()); // ifm_index
    m[16 + 8..16 + 12].copy_from_slice(&1420_u32.to_ne_bytes()); // if_data.ifi_mtu
    prefix(&mut m, RTM_IFINFO);
    m
}

/// `sockaddr_in`: len 16, AF_INET, port, address, 8 zero bytes.
fn sin(address: [u8; 4]) -> Vec<u8> {
    let mut sa = vec![16, 2, 0, 0];
    sa.extend_from_slice(&address);
    sa.extend_from_slice(&[0; 8]);
    sa
}

/// `sockaddr_in6`: len 28, AF_INET6 (30), port, flowinfo, address, scope id.
fn sin6(address: &str) -> Vec<u8> {
    let address: Ipv6Addr = address.parse().unwrap();
    let mut sa = vec![28, 30, 0, 0, 0, 0, 0, 0];
    sa.extend_from_slice(&address.octets());
    sa.extend_from_slice(&[0; 4]);
    sa
}

/// `sockaddr_dl` naming `name`: len 20, AF_LINK, index, type, nlen, alen, slen, data[12].
fn sdl(index: u16, name: &str) -> Vec<u8> {
    let mut sa = vec![20, 18];
    sa.extend_from_slice(&index.to_ne_bytes());
    sa.extend_from_slice(&[1, u8::try_from(name.len()).unwrap(), 0, 0]);
    let mut data = [0u8; 12];
    data[..name.len()].copy_from_slice(name.as_bytes());
    sa.extend_from_slice(&data);
    sa
}

/// A literal RTM_NEWADDR as xnu sends it for `ifconfig utun7 inet 10.42.3.4/16 10.42.3.4
/// alias`: ifa_msghdr, then NETMASK (truncated to 8 bytes, family 0), IFP, IFA and BRD.
#[rustfmt::skip]
const NEWADDR_UTUN7: [u8; 80] = [
    80, 0, 5, 0x0c,          // ifam_msglen = 80, ifam_version = 5, ifam_type = RTM_NEWADDR
    0xb4, 0, 0, 0,           // ifam_addrs = NETMASK | IFP | IFA | BRD
    0, 0, 0, 0,              // ifam_flags
    20, 0, 0, 0,             // ifam_index = 20, padding
    0, 0, 0, 0,              // ifam_metric
    8, 0, 0, 0, 255, 255, 0, 0, // RTA_NETMASK: sa_len 8, family 0, 255.255.0.0
    20, 18, 20, 0, 1, 5, 0, 0, b'u', b't', b'u', b'n', b'7', 0, 0, 0, 0, 0, 0, 0, // RTA_IFP
    16, 2, 0, 0, 10, 42, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0, // RTA_IFA: 10.42.3.4
    16, 2, 0, 0, 10, 42, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0, // RTA_BRD: the p-p destination
];

#[test]
#[cfg(target_endian = "little")]
fn a_new_address_message_gives_the_address_prefix_and_interface() {
    assert_eq!(
        parse_route_message(&NEWADDR_UTUN7),
        Ok(RouteEvent::Address {
            added: true,
            index: 20,
            address: Some("10.42.3.4/16".parse().unwrap()),
            interface: Some("utun7".to_owned()),
        })
    );
    let built = ifa_msghdr(
        RTM_NEWADDR,
        20,
        RTA_NETMASK | RTA_IFP | RTA_IFA | 0x80,
        &[
            &[8u8, 0, 0, 0, 255, 255, 0, 0][..],
            &sdl(20, "utun7"),
            &sin([10, 42, 3, 4]),
            &sin([10, 42, 3, 4]),
        ]
        .concat(),
    );
    assert_eq!(built, NEWADDR_UTUN7);
}

#[test]
fn a_deleted_ipv6_address() {
    let message = ifa_msghdr(
        RTM_DELADDR,
        20,
        RTA_NETMASK | RTA_IFA,
        &[sin6("ffff:ffff:ffff:ffff::"), sin6("fd42::3:4")].concat(),
    );
    assert_eq!(
        parse_route_message(&message),
        Ok(RouteEvent::Address {
            added: false,
            index: 20,
            address: Some("fd42::3:4/64".parse().unwrap()),
            interface: None,
        })
    );
}

#[test]
fn route_add_delete_and_change() {
    // `route add -inet 192.168.50.0/24 -interface utun7`: DST, GATEWAY (the link), NETMASK
    // truncated to 7 bytes and padded to 8.
    let sockaddrs = [
        sin([192, 168, 50, 0]),
        sdl(20, "utun7"),
        vec![7, 0, 0, 0, 255, 255, 255, 0],
    ]
    .concat();
    let add = rt_msghdr(RTM_ADD, 20, RTA_DST | RTA_GATEWAY | RTA_NETMASK, &sockaddrs);
    assert_eq!(add.len(), 92 + 16 + 20 + 8);
    assert_eq!(
        parse_route_message(&add),
        Ok(RouteEvent::Route {
            kind: RouteEventKind::Add,
            index: 20,
            destination: Some("192.168.50.0/24".parse().unwrap()),
            gateway: None,
        })
    );
    let v6 = [
        sin6("fd99::"),
        sin6("fe80::1"),
        sin6("ffff:ffff:ffff:ffff::"),
    ]
    .concat();
    let delete = rt_msghdr(RTM_DELETE, 0, RTA_DST | RTA_GATEWAY | RTA_NETMASK, &v6);
    assert_eq!(
        parse_route_message(&delete),
        Ok(RouteEvent::Route {
            kind: RouteEventKind::Delete,
            index: 0,
            destination: Some("fd99::/64".parse().unwrap()),
            gateway: Some("fe80::1".parse().unwrap()),
        })
    );
    // No netmask: a host route.
    let change = rt_msghdr(RTM_CHANGE, 4, RTA_DST, &sin([198, 51, 100, 7]));
    assert!(matches!(
        parse_route_message(&change),
        Ok(RouteEvent::Route { kind: RouteEventKind::Change, destination: Some(d), .. })
            if d == "198.51.100.7/32".parse::<IpNet>().unwrap()
    ));
    assert!(!parse_route_message(&change).unwrap().is_link_or_address());
}

#[test]
fn link_up_and_down() {
    assert_eq!(
        parse_route_message(&if_msghdr(20, 0x8051)),
        Ok(RouteEvent::Link {
            index: 20,
            up: true,
            running: true
        })
    );
    let down = parse_route_message(&if_msghdr(20, 0x8010)).unwrap();
    assert_eq!(
        down,
        RouteEvent::Link {
            index: 20,
            up: false,
            running: false
        }
    );
    assert!(down.is_link_or_address());
}

#[test]
fn other_types_are_reported_as_such() {
    let get = rt_msghdr(0x4, 0, 0, &[]);
    assert_eq!(
        parse_route_message(&get),
        Ok(RouteEvent::Other { message_type: 4 })
    );
}

#[test]
fn short_and_malformed_messages_are_typed_errors() {
    assert_eq!(
        parse_route_message(&[4, 0, 5]),
        Err(RouteMessageError::Short { len: 3, need: 4 })
    );
    let mut add = rt_msghdr(RTM_ADD, 0, RTA_DST, &sin([10, 0, 0, 0]));
    add[2] = 4;
    assert_eq!(
        parse_route_message(&add),
        Err(RouteMessageError::Version(4))
    );
    // The header says more than was read.
    let whole = rt_msghdr(RTM_ADD, 0, RTA_DST, &sin([10, 0, 0, 0]));
    assert_eq!(
        parse_route_message(&whole[..100]),
        Err(RouteMessageError::Length {
            declared: 108,
            available: 100
        })
    );
    // A header cut short by its own msglen.
    let mut cut = whole[..40].to_vec();
    prefix(&mut cut, RTM_ADD);
    assert_eq!(
        parse_route_message(&cut),
        Err(RouteMessageError::Short { len: 40, need: 92 })
    );
    // RTA_GATEWAY announced but no bytes for it.
    let missing = rt_msghdr(RTM_ADD, 0, RTA_DST | RTA_GATEWAY, &sin([10, 0, 0, 0]));
    assert_eq!(
        parse_route_message(&missing),
        Err(RouteMessageError::Sockaddr {
            bit: RTA_GATEWAY,
            offset: 108
        })
    );
    // A sockaddr whose sa_len runs past the end.
    let mut long = sin([10, 0, 0, 0]);
    long[0] = 200;
    let overrun = ifa_msghdr(RTM_NEWADDR, 0, RTA_IFA, &long);
    assert_eq!(
        parse_route_message(&overrun),
        Err(RouteMessageError::Sockaddr {
            bit: RTA_IFA,
            offset: 20
        })
    );
}

#[test]
fn an_empty_sockaddr_takes_four_bytes() {
    // xnu's ROUNDUP32(0) is 4: an empty NETMASK slot, then the IFA.
    let message = ifa_msghdr(
        RTM_NEWADDR,
        1,
        RTA_NETMASK | RTA_IFA,
        &[&[0u8, 0, 0, 0][..], &sin([10, 1, 2, 3])].concat(),
    );
    assert!(matches!(
        parse_route_message(&message),
        Ok(RouteEvent::Address { address: Some(a), .. }) if a == "10.1.2.3/0".parse::<IpNet>().unwrap()
    ));
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = parse_route_message(&bytes);
    }

    #[test]
    fn random_bodies_behind_a_valid_prefix_never_panic(
        message_type in prop_oneof![Just(RTM_ADD), Just(RTM_DELETE), Just(RTM_CHANGE),
            Just(RTM_NEWADDR), Just(RTM_DELADDR), Just(RTM_IFINFO), any::<u8>()],
        mut bytes in proptest::collection::vec(any::<u8>(), 4..400),
    ) {
        prefix(&mut bytes, message_type);
        let _ = parse_route_message(&bytes);
    }
}
