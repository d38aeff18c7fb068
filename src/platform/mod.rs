//! The operating system under the daemon, chosen here and only here (as Firezone's
//! `bin-shared` does: `#[cfg(target_os = "linux")] mod linux; pub use linux as platform;`).
//! Everything else in `src/` is platform-free: no file outside this module names
//! `wgmesh_linux`, `nix` or `socket2` (`tests/dependency_policy.rs` checks).
//!
//! - [`posix`]: what every Unix gives the daemon (processes and signals, the effective user, the
//!   host name, the monotonic clock, open flags).
//! - `linux`: rtnetlink, the kernel and wireguard-go backends, the Linux
//!   [`wgmesh_device::Host`], interface addresses, and the control and relay sockets
//!   (`IP_PKTINFO`, forced buffer sizes).
//!
//! macOS is not wired in yet: `platform/macos` builds the `ifconfig`/`route` commands, but the
//! binary does not depend on it (issue 15).

mod posix;
pub use posix::*;

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::*;

#[cfg(not(target_os = "linux"))]
compile_error!("wgmesh's daemon runs on Linux only so far: the macOS platform is not wired in");
