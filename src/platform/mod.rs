//! The operating system under the daemon, chosen here and only here (as Firezone's
//! `bin-shared` does: `#[cfg(target_os = "linux")] mod linux; pub use linux as platform;`).
//! Everything else in `src/` is platform-free: no file outside this module names
//! `wgmesh_linux`, `wgmesh_macos`, `nix` or `socket2` (`tests/dependency_policy.rs` checks).
//!
//! - [`posix`]: what every Unix gives the daemon (processes and signals, the effective user, the
//!   host name, the monotonic clock, open flags, `$PATH` lookup).
//! - [`addresses`]: the mesh interface's own addresses. (The host's addresses, networks and
//!   link events are the `OsHost`'s, behind `wgmesh_device::Host`.)
//! - [`sockets`]: the control socket (`IP_PKTINFO`), relay ports, a free listen port.
//! - `os`, one of:
//!   - `linux`: rtnetlink, the kernel and wireguard-go backends, [`Platform`], `LinuxHost`,
//!     forced buffer sizes;
//!   - `macos`: wireguard-go on a utun, `ifconfig`/`route`/`netstat`, PF_ROUTE events and
//!     launchd, from `platform/macos` (`wgmesh-macos`).
//!
//! Each `os` module provides the same items: [`Platform`] (`open`, `select_backend`, `host`,
//! `routes`), [`OsHost`], [`OsRoutes`], `remove_kept_interface`, `force_buffer`, the default
//! directories and the [`ServiceManager`]. `RUSTFLAGS="--cfg wgmesh_check_macos"` selects the
//! macOS module on Linux, so its code runs in tests here (no Mac exists to run it);
//! `scripts/check-darwin.sh` compiles the real darwin build.

mod addresses;
mod posix;
mod sockets;

pub use addresses::*;
pub use posix::*;
pub use sockets::*;

#[cfg(all(target_os = "linux", not(wgmesh_check_macos)))]
#[path = "linux.rs"]
mod os;

#[cfg(any(target_os = "macos", wgmesh_check_macos))]
#[path = "macos.rs"]
mod os;

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
compile_error!("wgmesh runs on Linux and macOS only");

pub use os::{
    DEFAULT_CONFIG_DIR, DEFAULT_RUNTIME_DIR, DEFAULT_SERVICE_DIR, DEFAULT_STATE_DIR, OsHost,
    OsRoutes, Platform, SERVICE_MANAGER, process_is_zombie, remove_kept_interface,
    unix_socket_address,
};

/// What runs the daemon as a service on this OS (`install-service`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[expect(dead_code, reason = "each OS constructs only its own service manager")]
pub enum ServiceManager {
    Systemd,
    Launchd,
}

/// The launchd job of one interface (`install-service` on macOS); plain text, built anywhere.
pub use wgmesh_macos::{LOG_DIR as LAUNCHD_LOG_DIR, launchd_label, launchd_plist};
