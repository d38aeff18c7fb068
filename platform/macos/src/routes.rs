//! Reading BSD `netstat -rn` output: our routes, the host's connected networks and its default
//! gateways.
//!
//! macOS abbreviates IPv4 destinations: trailing zero octets are dropped (`10.42/16` is
//! 10.42.0.0/16) and a destination without a prefix length has the length its octet count
//! implies (`127` is 127.0.0.0/8, `192.168.1` is /24, four octets a host). IPv6 destinations may
//! carry a scope (`fe80::%utun7/64`). Lines that do not parse are skipped: this output is for
//! finding our own routes, never for deciding about anyone else's.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One row of a `netstat -rn` table: `Destination Gateway Flags Netif [Expire]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Row<'a> {
    destination: &'a str,
    gateway: &'a str,
    flags: &'a str,
    netif: &'a str,
}

/// The rows of every table in `text` (after each `Destination` header line).
fn rows(text: &str) -> impl Iterator<Item = Row<'_>> {
    let mut in_table = false;
    text.lines().filter_map(move |line| {
        let mut columns = line.split_whitespace();
        let Some(destination) = columns.next() else {
            in_table = false;
            return None;
        };
        if destination == "Destination" {
            in_table = true;
            return None;
        }
        if !in_table {
            return None;
        }
        Some(Row {
            destination,
            gateway: columns.next()?,
            flags: columns.next()?,
            netif: columns.next()?,
        })
    })
}

fn sorted(mut routes: Vec<IpNet>) -> Vec<IpNet> {
    routes.sort();
    routes.dedup();
    routes
}

/// The destinations routed through `interface` (the `Netif` column), from `netstat -rn -f inet`
/// or `-f inet6` output. Host routes come back as /32 or /128.
pub fn parse_netstat_routes(text: &str, interface: &str) -> Vec<IpNet> {
    sorted(
        rows(text)
            .filter(|row| row.netif == interface)
            .filter_map(|row| parse_destination(row.destination))
            .collect(),
    )
}

/// The routes wgmesh owns on `utun`: those through it whose gateway is the interface itself.
///
/// macOS routes carry no protocol number to mark them as ours (Linux uses one). A route added
/// with `route add … -interface utunN` gets the interface's link address as its gateway, which
/// netstat prints as the interface name (`192.168.50/24  utun7  USc  utun7`); the routes the
/// kernel makes for the interface's own addresses have an IP, `link#N` or `fe80::…%utunN`
/// gateway instead. And nothing but our wireguard-go uses our utun. So "owned" is: Netif and
/// Gateway both our utun.
pub fn parse_owned_routes(text: &str, utun: &str) -> Vec<IpNet> {
    sorted(
        rows(text)
            .filter(|row| row.netif == utun && row.gateway == utun)
            .filter_map(|row| parse_destination(row.destination))
            .collect(),
    )
}

/// The networks this host is directly connected to, except through `exclude` (our utun):
/// interface routes (gateway `link#N`, no G or H flag), without link-local, loopback and
/// multicast ones.
pub fn parse_connected_networks(text: &str, exclude: &str) -> Vec<IpNet> {
    sorted(
        rows(text)
            .filter(|row| row.netif != exclude && !row.netif.starts_with("lo"))
            .filter(|row| row.gateway.starts_with("link#"))
            .filter(|row| !row.flags.contains('G') && !row.flags.contains('H'))
            .filter_map(|row| parse_destination(row.destination))
            .filter(|net| !is_special(net))
            .collect(),
    )
}

/// The next hops of the default routes (darwin.bash `collect_gateways`: destination `default`,
/// gateway not `link#…`), except those through `exclude`. Scopes (`fe80::1%en0`) are dropped.
pub fn parse_default_gateways(text: &str, exclude: &str) -> Vec<IpAddr> {
    let mut gateways: Vec<IpAddr> = rows(text)
        .filter(|row| row.destination == "default" && row.netif != exclude)
        .filter_map(|row| {
            let gateway = row.gateway.split_once('%').map_or(row.gateway, |(a, _)| a);
            gateway.parse().ok()
        })
        .collect();
    gateways.sort();
    gateways.dedup();
    gateways
}

fn is_special(net: &IpNet) -> bool {
    match net {
        IpNet::V4(net) => {
            let a = net.addr();
            a.is_link_local() || a.is_loopback() || a.is_multicast() || a.is_broadcast()
        }
        IpNet::V6(net) => {
            let a = net.addr();
            a.is_loopback() || a.is_multicast() || a.is_unicast_link_local()
        }
    }
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
    fn owned_routes_are_the_ones_whose_gateway_is_our_utun() {
        assert_eq!(
            parse_owned_routes(INET, "utun7"),
            nets(&["192.168.50.0/24", "198.51.100.7/32"])
        );
        assert_eq!(parse_owned_routes(INET6, "utun7"), nets(&["fd99::/64"]));
        assert!(parse_owned_routes(INET, "utun8").is_empty());
    }

    #[test]
    fn connected_networks_skip_our_utun_loopback_and_link_local() {
        assert_eq!(
            parse_connected_networks(INET, "utun7"),
            nets(&["192.168.1.0/24"])
        );
        assert!(parse_connected_networks(INET6, "utun7").is_empty());
    }

    #[test]
    fn default_gateways_are_addresses_without_scope() {
        let gateways = parse_default_gateways(INET, "utun7");
        assert_eq!(gateways, ["192.168.1.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(
            parse_default_gateways(INET6, "utun7"),
            ["fe80::".parse::<IpAddr>().unwrap()]
        );
        assert!(parse_default_gateways(INET6, "utun0").is_empty());
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
