//! The host's own addresses and connected networks, through `getifaddrs` (any Unix), and the
//! mesh interface's addresses.

use ipnet::IpNet;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The interface's addresses: the member's IPv4 in the /16 and IPv6 in the /64, so the kernel
/// routes the whole mesh prefixes through the interface.
pub fn interface_addresses(ipv4: Ipv4Addr, ipv6: Ipv6Addr) -> [IpNet; 2] {
    [
        IpNet::new(ipv4.into(), 16).unwrap_or_else(|_| unreachable!("16 is a valid IPv4 prefix")),
        IpNet::new(ipv6.into(), 64).unwrap_or_else(|_| unreachable!("64 is a valid IPv6 prefix")),
    ]
}

/// IPv4 addresses of the host's interfaces that can carry mesh traffic (not loopback, not the
/// mesh interface itself), with their interface names.
pub fn lan_addresses(mesh_interface: &str) -> Vec<(String, std::net::Ipv4Addr)> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter(|a| a.interface_name != mesh_interface)
        .filter_map(|a| {
            let ip = a.address?.as_sockaddr_in()?.ip();
            (!ip.is_loopback() && !ip.is_unspecified()).then_some((a.interface_name, ip))
        })
        .collect()
}

/// The networks directly connected to this host, except the mesh interface's own.
pub fn connected_networks(mesh_interface: &str) -> Vec<IpNet> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut nets = Vec::new();
    for ifaddr in addrs {
        if ifaddr.interface_name == mesh_interface {
            continue;
        }
        let (Some(addr), Some(mask)) = (ifaddr.address, ifaddr.netmask) else {
            continue;
        };
        let net = if let (Some(a), Some(m)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) {
            ipnet::Ipv4Net::with_netmask(a.ip(), m.ip())
                .ok()
                .map(IpNet::V4)
        } else if let (Some(a), Some(m)) = (addr.as_sockaddr_in6(), mask.as_sockaddr_in6()) {
            ipnet::Ipv6Net::with_netmask(a.ip(), m.ip())
                .ok()
                .map(IpNet::V6)
        } else {
            None
        };
        if let Some(net) = net.map(|n| n.trunc()) {
            // Loopback and link-local are not routes anyone advertises into a mesh.
            if !net.addr().is_loopback() && !nets.contains(&net) {
                nets.push(net);
            }
        }
    }
    nets
}
