//! The host around the mesh interface: its addresses and MTU, the networks the host is directly
//! connected to, and notices when links or addresses change. Linux implements it over rtnetlink
//! (in the daemon); the macOS port implements the same trait.

use ipnet::IpNet;
use std::net::IpAddr;

/// What the mesh interface should look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceConfig {
    pub interface: String,
    /// The member's IPv4 in the mesh /16 and IPv6 in the /64, so the kernel routes the whole
    /// mesh prefixes through the interface.
    pub addresses: Vec<IpNet>,
    /// Other addresses inside these prefixes are stale and removed (the old IPv4 after a
    /// collision moved us); anyone else's addresses are left alone.
    pub managed: Vec<IpNet>,
    pub mtu: u32,
}

/// A host operation that failed, with the interface and the operation.
#[derive(Debug, thiserror::Error)]
#[error("{interface}: {operation}: {message}")]
pub struct HostError {
    pub interface: String,
    pub operation: &'static str,
    pub message: String,
}

/// One of the host's own underlay addresses, with the interface that holds it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostAddress {
    pub interface: String,
    pub ip: IpAddr,
}

impl HostAddress {
    /// The addresses among `entries` (interface name, address, as `getifaddrs` lists them) that
    /// can carry mesh traffic: not the mesh interface's (`mesh_interface`, the kernel's name for
    /// it), not loopback, unspecified or IPv6 link-local (unusable without a scope). Sorted, each
    /// once.
    pub fn underlay(
        entries: impl IntoIterator<Item = (String, IpAddr)>,
        mesh_interface: &str,
    ) -> Vec<Self> {
        let mut addresses: Vec<Self> = entries
            .into_iter()
            .filter(|(interface, ip)| {
                interface != mesh_interface
                    && !ip.is_loopback()
                    && !ip.is_unspecified()
                    && !matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local())
            })
            .map(|(interface, ip)| Self { interface, ip })
            .collect();
        addresses.sort();
        addresses.dedup();
        addresses
    }
}

/// Everything the daemon needs from the OS beyond the WireGuard device and its routes: the mesh
/// interface's configuration, the host's addresses and networks, and notices when they change.
/// Calls are blocking and short. The reconciler holds one instance (it configures the interface);
/// the exchange task holds another and only reads.
pub trait Host: Send + std::fmt::Debug {
    /// Sets addresses, MTU and up state, idempotently; returns the interface index. Called at
    /// start, after re-addressing, and when the link was recreated (a restarted wireguard-go
    /// makes a new TUN device, which has none of the old one's settings).
    fn configure_interface(&mut self, config: &InterfaceConfig) -> Result<u32, HostError>;
    /// The host's own addresses that can carry mesh traffic: every interface's, except
    /// loopback, unspecified and the mesh interface's own (on macOS, its utun's). Sorted.
    fn addresses(&self) -> Vec<HostAddress>;
    /// The networks this host is directly connected to, except the mesh interface's own.
    fn connected_networks(&self) -> Vec<IpNet>;
    /// The next hops of this host's default routes (no route from a member may cover one).
    fn default_gateways(&self) -> Vec<IpAddr>;
    /// Calls `on_change` after every batch of link or address changes, until it returns
    /// `false`. The notice carries no content: the receiver re-reads what it needs.
    fn watch_links_and_addresses(
        &self,
        on_change: Box<dyn FnMut() -> bool + Send>,
    ) -> Result<(), HostError>;
}

/// An in-memory host for unit tests: records every interface configuration.
#[derive(Debug, Default)]
pub struct FakeHost {
    pub addresses: Vec<HostAddress>,
    pub connected: Vec<IpNet>,
    pub gateways: Vec<IpAddr>,
    /// Every configuration applied, in order.
    pub configured: Vec<InterfaceConfig>,
    /// The index the next configuration reports (a recreated link gets a new one).
    pub index: u32,
}

impl Host for FakeHost {
    fn configure_interface(&mut self, config: &InterfaceConfig) -> Result<u32, HostError> {
        self.configured.push(config.clone());
        Ok(self.index)
    }

    fn addresses(&self) -> Vec<HostAddress> {
        self.addresses.clone()
    }

    fn connected_networks(&self) -> Vec<IpNet> {
        self.connected.clone()
    }

    fn default_gateways(&self) -> Vec<IpAddr> {
        self.gateways.clone()
    }

    fn watch_links_and_addresses(
        &self,
        _on_change: Box<dyn FnMut() -> bool + Send>,
    ) -> Result<(), HostError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn underlay_addresses_leave_out_the_mesh_interface_loopback_and_link_local() {
        let entries = [
            ("eth0", "192.168.1.20"),
            ("wg0", "10.42.0.7"),
            ("lo", "127.0.0.1"),
            ("lo", "::1"),
            ("eth0", "fe80::1"),
            ("eth0", "2001:db8::20"),
            ("eth1", "0.0.0.0"),
            ("eth1", "172.16.0.2"),
            ("eth0", "192.168.1.20"),
        ]
        .map(|(name, ip)| (name.to_owned(), ip.parse::<IpAddr>().unwrap()));
        let kept: Vec<String> = HostAddress::underlay(entries, "wg0")
            .into_iter()
            .map(|a| format!("{} {}", a.interface, a.ip))
            .collect();
        assert_eq!(
            kept,
            ["eth0 192.168.1.20", "eth0 2001:db8::20", "eth1 172.16.0.2"]
        );
    }
}
