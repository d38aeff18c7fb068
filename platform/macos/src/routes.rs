//! Reading BSD `netstat -rn` output.
//!
//! macOS abbreviates IPv4 destinations: trailing zero octets are dropped (`10.42/16` is
//! 10.42.0.0/16) and a destination without a prefix length has the length its octet count
//! implies (`127` is 127.0.0.0/8, `192.168.1` is /24, four octets a host). IPv6 destinations may
//! carry a scope (`fe80::%utun7/64`). Lines that do not parse are skipped: this output is for
//! finding our own routes, never for deciding about anyone else's.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::net::{Ipv4Addr, Ipv6Addr};

/// The destinations routed through `interface` (the `Netif` column), from `netstat -rn -f inet`
/// or `-f inet6` output. Host routes come back as /32 or /128.
pub fn parse_netstat_routes(text: &str, interface: &str) -> Vec<IpNet> {
    let mut in_table = false;
    let mut routes = Vec::new();
    for line in text.lines() {
        let mut columns = line.split_whitespace();
        let Some(destination) = columns.next() else {
            in_table = false;
            continue;
        };
        if destination == "Destination" {
            in_table = true;
            continue;
        }
        if !in_table {
            continue;
        }
        let netif = columns.nth(2);
        if netif != Some(interface) {
            continue;
        }
        if let Some(net) = parse_destination(destination) {
            routes.push(net);
        }
    }
    routes.sort();
    routes.dedup();
    routes
}

fn parse_destination(text: &str) -> Option<IpNet> {
    if text == "default" {
        return None;
    }
    let (address, prefix) = match text.split_once('/') {
        Some((address, prefix)) => (address, Some(prefix.parse::<u8>().ok()?)),
        None => (text, None),
    };
    if address.contains(':') {
        let address = address.split_once('%').map_or(address, |(a, _)| a);
        let address: Ipv6Addr = address.parse().ok()?;
        return Ipv6Net::new(address, prefix.unwrap_or(128))
            .ok()
            .map(|net| IpNet::V6(net.trunc()));
    }
    let mut octets = [0u8; 4];
    let mut count = 0;
    for part in address.split('.') {
        *octets.get_mut(count)? = part.parse().ok()?;
        count += 1;
    }
    let implied = u8::try_from(count * 8).ok()?;
    Ipv4Net::new(Ipv4Addr::from(octets), prefix.unwrap_or(implied))
        .ok()
        .map(|net| IpNet::V4(net.trunc()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shaped after macOS 14 output (`netstat -rn -f inet`); not captured on a Mac here.
    const INET: &str = "Routing tables

Internet:
Destination        Gateway            Flags               Netif Expire
default            192.168.1.1        UGScg                 en0
10.42/16           10.42.3.4          UGSc                utun7
10.42.3.4          10.42.3.4          UH                  utun7
127                127.0.0.1          UCS                   lo0
169.254            link#6             UCS                   en0      !
192.168.1          link#6             UCS                   en0      !
192.168.50/24      utun7              USc                 utun7
198.51.100.7/32    utun7              USc                 utun7
";

    const INET6: &str = "Routing tables

Internet6:
Destination                             Gateway                                 Flags               Netif Expire
default                                 fe80::%utun0                            UGcIg               utun0
::1                                     ::1                                     UHL                   lo0
fd42::/64                               fe80::1%utun7                           UGcI                utun7
fd42::3:4                               link#20                                 UHL                   lo0
fd99::/64                               utun7                                   USc                 utun7
fe80::%utun7/64                         fe80::1%utun7                           UcI                 utun7
";

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn finds_our_ipv4_routes() {
        assert_eq!(
            parse_netstat_routes(INET, "utun7"),
            nets(&[
                "10.42.0.0/16",
                "10.42.3.4/32",
                "192.168.50.0/24",
                "198.51.100.7/32"
            ])
        );
        assert_eq!(
            parse_netstat_routes(INET, "en0"),
            nets(&["169.254.0.0/16", "192.168.1.0/24"])
        );
    }

    #[test]
    fn finds_our_ipv6_routes() {
        assert_eq!(
            parse_netstat_routes(INET6, "utun7"),
            nets(&["fd42::/64", "fd99::/64", "fe80::/64"])
        );
    }

    #[test]
    fn garbage_is_skipped() {
        assert!(parse_netstat_routes("", "utun7").is_empty());
        assert!(
            parse_netstat_routes(
                "Destination Gateway Flags Netif\n1.2.3.4.5 x y utun7\n300/8 x y utun7\n10/99 x y utun7\n",
                "utun7"
            )
            .is_empty()
        );
    }
}
