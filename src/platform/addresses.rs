//! The mesh interface's addresses. (The host's own addresses and networks are its
//! [`wgmesh_device::Host`]'s to report.)

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::net::{Ipv4Addr, Ipv6Addr};

/// The interface's addresses: the member's IPv4 in the /16 and IPv6 in the /64, so the kernel
/// routes the whole mesh prefixes through the interface.
pub fn interface_addresses(ipv4: Ipv4Addr, ipv6: Ipv6Addr) -> [IpNet; 2] {
    [
        IpNet::V4(Ipv4Net::new_assert(ipv4, 16)),
        IpNet::V6(Ipv6Net::new_assert(ipv6, 64)),
    ]
}
