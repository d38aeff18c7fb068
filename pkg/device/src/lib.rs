//! The WireGuard device as wgmesh sees it.
//!
//! - [`model`]: what a device holds ([`DeviceState`]) and what we want it to hold ([`DesiredDevice`]).
//! - [`diff`]: the pure, minimal change from one to the other ([`DeviceUpdate`]), in the style of
//!   innernet's `PeerDiff`: a peer that handshook recently keeps the endpoint WireGuard roamed it to.
//! - [`host`]: the [`Host`] around the interface (addresses, connected networks, link events),
//!   with a [`FakeHost`]; [`route`]: [`RouteControl`] with a [`FakeRoutes`].
//! - [`backend`]: the traits the platform crates implement (kernel netlink, wireguard-go UAPI) and a
//!   [`FakeBackend`] that applies updates in memory and counts writes, for unit tests.

pub mod backend;
pub mod diff;
pub mod host;
pub mod model;
pub mod route;

pub use backend::{BackendError, BackendKind, DeviceOrigin, FakeBackend, WireguardBackend};
pub use diff::{ROAMING_GRACE, diff_device};
pub use host::{FakeHost, Host, HostAddress, HostError, InterfaceConfig};
pub use model::{DesiredDevice, DeviceState, DeviceUpdate, PeerConfig, PeerState, PeerUpdate};
pub use route::{FakeRoutes, RouteChange, RouteControl, diff_routes};
