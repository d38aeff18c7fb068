//! macOS: wireguard-go on a utun (there is no kernel WireGuard), `ifconfig`/`route`/`netstat` for
//! the link and its routes, PF_ROUTE events, launchd, all from `platform/macos`
//! (`wgmesh-macos`). The daemon keeps calling the interface by its mesh name (`wg0`); the crate
//! finds the kernel's `utunN` through wireguard-go's name file, as wg-quick does.
//!
//! Compiled for darwin (`scripts/check-darwin.sh`), never linked or run on a Mac (no macOS SDK
//! or Mac here). `RUSTFLAGS="--cfg wgmesh_check_macos"` also selects this module on Linux, where
//! `tests/macos_lab.rs` runs it in a mesh, with macOS's tools played over iproute2;
//! `platform/macos/tests/fake_tools.rs` runs the backend against recording fake tools.

use crate::daemon::config::BackendPreference;
use anyhow::{Context as _, anyhow, bail};
use std::path::Path;
use wgmesh_device::{InterfaceConfig, WireguardBackend};
use wgmesh_macos::{MacosBackend, MacosBackendConfig, MacosHost, MacosRoutes, Runner};
use wgmesh_uapi::ChildOutput;

/// The host's [`wgmesh_device::Host`] implementation.
pub type OsHost = MacosHost;
/// The host's [`wgmesh_device::RouteControl`] implementation: the static routes through our utun.
pub type OsRoutes = MacosRoutes;

/// Default `--state-dir` (Homebrew's prefix for `/var/lib`) and `--runtime-dir`.
pub const DEFAULT_STATE_DIR: &str = wgmesh_macos::STATE_DIR;
pub const DEFAULT_RUNTIME_DIR: &str = "/var/run/wgmesh";
/// Default `install-service --unit-dir` and `--config-dir`.
pub const DEFAULT_SERVICE_DIR: &str = "/Library/LaunchDaemons";
pub const DEFAULT_CONFIG_DIR: &str = "/usr/local/etc/wgmesh";
/// What runs the daemon as a service (`install-service`).
pub const SERVICE_MANAGER: super::ServiceManager = super::ServiceManager::Launchd;

/// The OS handles the daemon's interface setup shares: the process runner for the tools.
#[derive(Debug)]
pub struct Platform {
    runner: Runner,
}

impl Platform {
    pub fn open() -> anyhow::Result<Self> {
        Ok(Self {
            runner: Runner::system(),
        })
    }

    /// wireguard-go, whatever `auto` would prefer elsewhere; `--backend kernel` is an error.
    pub fn select_backend(
        &self,
        choice: BackendPreference,
        interface: &str,
        wireguard_go: &Path,
        child_output: ChildOutput,
        verbose: bool,
    ) -> anyhow::Result<Box<dyn WireguardBackend>> {
        if choice == BackendPreference::Kernel {
            bail!(
                "--backend kernel: macOS has no kernel WireGuard; use wireguard-go (--backend userspace or auto)"
            );
        }
        let wireguard_go = self
            .runner
            .resolve(wireguard_go.as_os_str())
            .context("--backend userspace: wireguard-go cannot run")?;
        wgmesh_uapi::userspace_available(&wireguard_go)
            .map_err(|reason| anyhow!("--backend userspace: wireguard-go cannot run: {reason}"))?;
        let mut config = MacosBackendConfig::new(interface);
        config.wireguard_go = wireguard_go;
        config.output = child_output;
        if verbose {
            "verbose".clone_into(&mut config.log_level);
        }
        Ok(Box::new(MacosBackend::new(config, self.runner.clone())))
    }

    pub fn host(&self, interface: &str) -> OsHost {
        MacosHost::new(interface, self.runner.clone(), super::interface_ips)
    }

    /// The route control of the interface `link` configured. Routes follow the utun through
    /// the name file, so the index is not needed here; the mesh prefixes' routes are the
    /// host's (a utun gets none from its addresses), not the route control's to remove.
    pub fn routes(&self, link: &InterfaceConfig, _index: u32) -> OsRoutes {
        MacosRoutes::new(&link.interface, self.runner.clone())
            .with_interface_prefixes(&link.managed)
    }
}

/// Stops the wireguard-go a `--keep-interface` daemon left running (`wgmesh down` with no
/// daemon): its socket is unlinked, which makes it exit and take the utun and its routes along
/// (wg-quick's `del_if`). `Ok(false)` if no name file says it runs.
pub fn remove_kept_interface(interface: &str) -> anyhow::Result<bool> {
    let run_dir = Path::new(wgmesh_macos::RUN_DIR);
    if wgmesh_macos::read_utun(run_dir, interface).is_err() {
        return Ok(false);
    }
    let mut backend = MacosBackend::new(MacosBackendConfig::new(interface), Runner::system());
    backend
        .remove_device()
        .with_context(|| format!("cannot remove interface {interface}"))?;
    Ok(true)
}

/// macOS has no way past `kern.ipc.maxsockbuf` from a process: the caller uses the plain option.
pub fn force_buffer(
    _socket: &socket2::Socket,
    _buffer: super::Buffer,
    _size: usize,
) -> std::io::Result<()> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

/// Whether process `pid` has exited and waits for its parent to reap it. macOS has no `/proc` to
/// say so cheaply; a zombie counts as running until reaped, which launchd does at once.
pub fn process_is_zombie(_pid: i32) -> bool {
    false
}

/// The address of a Unix datagram socket named as `$NOTIFY_SOCKET` names it. macOS has no
/// abstract namespace, so `@name` is an error (launchd sets no `NOTIFY_SOCKET` anyway).
pub fn unix_socket_address(
    target: &std::ffi::OsStr,
) -> std::io::Result<std::os::unix::net::SocketAddr> {
    use std::os::unix::ffi::OsStrExt as _;
    if target.as_bytes().starts_with(b"@") {
        return Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "abstract socket names are Linux-only",
        ));
    }
    std::os::unix::net::SocketAddr::from_pathname(target)
}
