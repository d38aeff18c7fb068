//! The host around the mesh interface: its addresses and MTU, the networks the host is directly
//! connected to, and notices when links or addresses change. Linux implements it over rtnetlink
//! (in the daemon); the macOS port implements the same trait.

use ipnet::IpNet;

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

/// The host facts and changes a reconciler needs. Calls are blocking and short.
pub trait Host: Send {
    /// Sets addresses, MTU and up state, idempotently; returns the interface index. Called at
    /// start, after re-addressing, and when the link was recreated (a restarted wireguard-go
    /// makes a new TUN device, which has none of the old one's settings).
    fn configure_interface(&mut self, config: &InterfaceConfig) -> Result<u32, HostError>;
    /// The networks this host is directly connected to, except the mesh interface's own.
    fn connected_networks(&self) -> Vec<IpNet>;
    /// The next hops of this host's default routes (no route from a member may cover one).
    fn default_gateways(&self) -> Vec<std::net::IpAddr>;
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
    pub connected: Vec<IpNet>,
    pub gateways: Vec<std::net::IpAddr>,
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

    fn connected_networks(&self) -> Vec<IpNet> {
        self.connected.clone()
    }

    fn default_gateways(&self) -> Vec<std::net::IpAddr> {
        self.gateways.clone()
    }

    fn watch_links_and_addresses(
        &self,
        _on_change: Box<dyn FnMut() -> bool + Send>,
    ) -> Result<(), HostError> {
        Ok(())
    }
}
