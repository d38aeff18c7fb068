//! wireguard-go through its UAPI socket: the userspace WireGuard backend.
//!
//! - [`protocol`]: the pure text codec — `set=1` requests from a [`wgmesh_device::DeviceUpdate`],
//!   `get=1` answers into a normalised [`wgmesh_device::DeviceState`]. No IO; fuzzed and
//!   property-tested.
//! - [`client`]: [`UapiClient`], one request per connection to `<socket_dir>/<iface>.sock`.
//! - [`backend`]: [`UserspaceBackend`], which spawns and supervises `wireguard-go -f <iface>` (or
//!   adopts one left running) and implements [`wgmesh_device::WireguardBackend`].

pub mod backend;
pub mod child;
pub mod client;
pub mod protocol;

pub use backend::{
    ChildOutput, DEFAULT_WIREGUARD_GO, UserspaceBackend, UserspaceConfig, UserspaceUnavailable,
    userspace_available,
};
pub use client::{
    DEFAULT_IO_TIMEOUT, DEFAULT_SOCKET_DIR, SET_TIMEOUT_PER_PEER, UapiClient, socket_path,
};
pub use protocol::{
    MAX_RESPONSE_LEN, UapiError, parse_errno, parse_get_response, render_get_response,
    render_set_request,
};
