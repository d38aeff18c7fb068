//! Reading BSD `ifconfig utunN` output: the up flag, the MTU and the addresses, so that
//! configuring the interface again adds nothing that is already there.
//!
//! ```text
//! utun7: flags=8051<UP,POINTOPOINT,RUNNING,MULTICAST> mtu 1420
//!         inet 10.42.3.4 --> 10.42.3.4 netmask 0xffff0000
//!         inet6 fe80::5c1:2ff:fe03:405%utun7 prefixlen 64 scopeid 0x14
//!         inet6 fd42::3:4 prefixlen 64
//! ```

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::net::{Ipv4Addr, Ipv6Addr};

/// What `ifconfig utunN` says about the interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceStatus {
    pub up: bool,
    pub mtu: Option<u32>,
    /// Every address with its prefix (link-local ones included, without their scope).
    pub addresses: Vec<IpNet>,
}

/// Parses the block of `interface` in `ifconfig` output (one interface or `-a`). Lines that do
/// not parse are skipped; an absent interface gives the default (down, no MTU, no addresses).
pub fn parse_ifconfig(text: &str, interface: &str) -> InterfaceStatus {
    let mut status = InterfaceStatus::default();
    let mut inside = false;
    for line in text.lines() {
        if !line.starts_with(char::is_whitespace) {
            inside = line
                .split_once(':')
                .is_some_and(|(name, _)| name == interface);
            if inside {
                parse_header(line, &mut status);
            }
            continue;
        }
        if !inside {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let address = match words.as_slice() {
            ["inet", address, rest @ ..] => parse_inet(address, rest),
            ["inet6", address, rest @ ..] => parse_inet6(address, rest),
            _ => None,
        };
        status.addresses.extend(address);
    }
    status
}

fn parse_header(line: &str, status: &mut InterfaceStatus) {
    let mut words = line.split_whitespace();
    while let Some(word) = words.next() {
        if let Some(flags) = word.strip_prefix("flags=") {
            // `8051<UP,…>`: bit 0 of the hex word is IFF_UP.
            let hex = flags.split('<').next().unwrap_or_default();
            status.up = u32::from_str_radix(hex, 16).is_ok_and(|f| f & 1 == 1);
        } else if word == "mtu" {
            status.mtu = words.next().and_then(|m| m.parse().ok());
        }
    }
}

/// `inet A --> D netmask 0xffff0000` or `inet A netmask 0xffffff00 broadcast B`.
fn parse_inet(address: &str, rest: &[&str]) -> Option<IpNet> {
    let address: Ipv4Addr = address.parse().ok()?;
    let mask = rest
        .windows(2)
        .find(|pair| pair[0] == "netmask")
        .and_then(|pair| u32::from_str_radix(pair[1].trim_start_matches("0x"), 16).ok())
        .unwrap_or(u32::MAX);
    // A non-contiguous mask is not something we set; count its leading ones.
    let prefix = u8::try_from(mask.leading_ones()).ok()?;
    Ipv4Net::new(address, prefix).ok().map(IpNet::V4)
}

/// `inet6 A%utun7 prefixlen 64 scopeid 0x14`.
fn parse_inet6(address: &str, rest: &[&str]) -> Option<IpNet> {
    let address = address.split_once('%').map_or(address, |(a, _)| a);
    let address: Ipv6Addr = address.parse().ok()?;
    let prefix = rest
        .windows(2)
        .find(|pair| pair[0] == "prefixlen")
        .and_then(|pair| pair[1].parse().ok())
        .unwrap_or(128);
    Ipv6Net::new(address, prefix).ok().map(IpNet::V6)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shaped after macOS 14 output; not captured on a Mac here.
    const CONFIGURED: &str = "\
utun7: flags=8051<UP,POINTOPOINT,RUNNING,MULTICAST> mtu 1420
\tinet 10.42.3.4 --> 10.42.3.4 netmask 0xffff0000
\tinet6 fe80::5c1:2ff:fe03:405%utun7 prefixlen 64 scopeid 0x14
\tinet6 fd42::3:4 prefixlen 64
\tnd6 options=201<PERFORMNUD,DAD>
en0: flags=8863<UP,BROADCAST,SMART,RUNNING,SIMPLEX,MULTICAST> mtu 1500
\tinet 192.168.1.20 netmask 0xffffff00 broadcast 192.168.1.255
";

    #[test]
    fn reads_flags_mtu_and_addresses_of_one_interface() {
        let status = parse_ifconfig(CONFIGURED, "utun7");
        assert!(status.up);
        assert_eq!(status.mtu, Some(1420));
        let want: Vec<IpNet> = ["10.42.3.4/16", "fe80::5c1:2ff:fe03:405/64", "fd42::3:4/64"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(status.addresses, want);
        assert_eq!(
            parse_ifconfig(CONFIGURED, "en0").addresses,
            ["192.168.1.20/24".parse::<IpNet>().unwrap()]
        );
    }

    #[test]
    fn a_fresh_utun_is_down_and_bare_and_a_missing_one_is_default() {
        let fresh = "utun7: flags=8010<POINTOPOINT,MULTICAST> mtu 1500\n";
        let status = parse_ifconfig(fresh, "utun7");
        assert!(!status.up);
        assert_eq!(status.mtu, Some(1500));
        assert!(status.addresses.is_empty());
        assert_eq!(parse_ifconfig(fresh, "utun8"), InterfaceStatus::default());
        assert_eq!(
            parse_ifconfig("garbage\n\tinet x\n", "garbage"),
            InterfaceStatus::default()
        );
    }
}
