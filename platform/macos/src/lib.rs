//! The macOS backend: wireguard-go on a utun, configured with `ifconfig` and `route`, watched
//! through a PF_ROUTE socket, run by launchd.
//!
//! macOS has no netlink: wg-quick's darwin backend (wireguard-tools `src/wg-quick/darwin.bash`)
//! drives `wireguard-go`, `ifconfig`, `route` and `netstat`, and so do we. The crate is split so
//! that almost all of it builds and runs on Linux:
//!
//! - [`commands`]: pure builders returning a [`CommandLine`] for each tool invocation;
//! - [`runner`]: [`Runner`] spawns them for real (any Unix; the tests run it against fake tools);
//! - [`backend`]: [`MacosBackend`], a supervised `wireguard-go -f utun` driven over UAPI;
//! - [`host`]: [`MacosHost`], addresses/MTU/up via `ifconfig`, connected networks and default
//!   gateways from `netstat`, link and address events;
//! - [`route_control`]: [`MacosRoutes`], the static routes through our utun;
//! - [`ifconfig`], [`routes`]: pure parsers of `ifconfig utunN` and `netstat -rn` output;
//! - [`route_socket`]: the pure PF_ROUTE message parser, and (`cfg(target_os = "macos")` only)
//!   the socket that feeds it;
//! - [`launchd`]: the launchd job for one interface.
//!
//! A utun interface cannot be named: wireguard-go is started with the name `utun`, the kernel
//! picks the next free `utunN`, and wireguard-go writes the real name into the file named by
//! `WG_TUN_NAME_FILE` (tun_darwin.go does this only when the requested name is exactly `utun`;
//! wg-quick uses `/var/run/wireguard/<name>.name`). Its UAPI socket is then
//! `/var/run/wireguard/utunN.sock`. The daemon keeps calling the interface by its mesh name
//! (`wg0`); every part of this crate finds the kernel's `utunN` through that name file, the way
//! wg-quick's `get_real_interface` does, so a restarted wireguard-go on a new utun is followed.

pub mod backend;
pub mod commands;
pub mod host;
pub mod ifconfig;
pub mod launchd;
pub mod route_control;
pub mod route_socket;
pub mod routes;
pub mod runner;
mod utun;

pub use backend::{MacosBackend, MacosBackendConfig};
pub use commands::{CommandLine, TUN_NAME_FILE_ENV, UTUN_REQUEST};
pub use host::MacosHost;
pub use launchd::{LAUNCHD_LABEL_PREFIX, LOG_DIR, launchd_label, launchd_plist};
pub use route_control::MacosRoutes;
pub use route_socket::{RouteEvent, RouteEventKind, RouteMessageError, parse_route_message};
pub use routes::{parse_connected_networks, parse_default_gateways, parse_netstat_routes};
pub use runner::Runner;
pub use utun::{Utun, name_file_path, read_utun};

use std::path::PathBuf;

/// Where wireguard-go puts `utunN.sock` and wg-quick (and we) put `<name>.name`.
pub const RUN_DIR: &str = "/var/run/wireguard";
/// wgmesh's state directory on macOS (Homebrew's prefix for /var/lib).
pub const STATE_DIR: &str = "/usr/local/var/lib/wgmesh";

/// A failure of the macOS plumbing, with the interface, path, command or errno it concerns.
#[derive(Debug, thiserror::Error)]
pub enum MacosError {
    #[error("{0:?} is not a utun interface name")]
    BadInterface(String),
    #[error("{0:?} is not a valid interface name ([A-Za-z0-9_.-], 1 to 15 characters)")]
    BadInterfaceName(String),
    /// A tool exited non-zero; `stderr` is what it said.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} not found in {search_path}")]
    ProgramNotFound {
        program: String,
        search_path: String,
    },
    /// A file wgmesh or wireguard-go keeps in the run directory.
    #[error("{interface}: {operation} {}: {source}", path.display())]
    File {
        interface: String,
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// wireguard-go did not report its utun in time.
    #[error("{interface}: wireguard-go wrote no utun name to {} within {timeout:?}", path.display())]
    NameFileTimeout {
        interface: String,
        path: PathBuf,
        timeout: std::time::Duration,
    },
    /// A system call failed (the PF_ROUTE socket, `if_nametoindex`).
    #[error("{interface}: {operation}: {errno}")]
    Sys {
        interface: String,
        operation: &'static str,
        errno: nix::errno::Errno,
    },
}

impl From<MacosError> for std::io::Error {
    /// For [`wgmesh_device::RouteControl`], whose methods return io errors. A failed syscall
    /// keeps its errno.
    fn from(error: MacosError) -> Self {
        match error {
            MacosError::Sys { errno, .. } => std::io::Error::from_raw_os_error(errno as i32),
            MacosError::File { ref source, .. } => std::io::Error::new(source.kind(), error),
            other => std::io::Error::other(other),
        }
    }
}
