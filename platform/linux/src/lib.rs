//! Linux platform code: kernel WireGuard over generic netlink, and links, addresses and routes
//! over rtnetlink. Everything is synchronous (blocking sockets); async callers use
//! `spawn_blocking` or a dedicated thread. No `ip` or `wg` processes are spawned.
//!
//! - [`KernelBackend`]: [`wgmesh_device::WireguardBackend`] for the kernel module;
//!   [`kernel_wireguard_available`] / [`probe_kernel_wireguard`] for `--backend auto`.
//! - [`Rtnl`]: one shared rtnetlink socket; links (index, MTU, up, delete) and addresses.
//! - [`InterfaceRoutes`]: [`wgmesh_device::RouteControl`] for one interface, owning exactly
//!   the routes tagged with [`ROUTE_PROTOCOL`].
//! - [`wg_message`]: the pure WireGuard message building and parsing behind the backend.
//!
//! Every socket belongs to the network namespace of the thread that opened it.

mod events;
mod kernel;
mod netlink;
mod route;
mod rtnl;
pub mod wg_message;

pub use events::watch_links_and_addresses;
pub use kernel::{
    KernelBackend, KernelUnavailable, kernel_wireguard_available, probe_kernel_wireguard,
};
pub use netlink::{NetlinkError, error_errno};
pub use route::{InterfaceRoutes, ROUTE_PROTOCOL, delete_route_message, route_message};
pub use rtnl::{AddressChanges, LinkStatus, Rtnl};
