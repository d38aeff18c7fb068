//! [`UserspaceBackend`]: a wireguard-go process we supervise (or adopt), driven over UAPI.
//!
//! Lifecycle facts about wireguard-go (checked against Debian's v0.0.20220316 on Linux):
//! - `wireguard-go -f IFACE` creates the TUN link and `<socket_dir>/IFACE.sock` and serves UAPI
//!   until it exits. A fresh device has no key, no peers and a random listen port.
//! - It exits on its own when its TUN link is deleted (`ip link del IFACE`) or when its socket
//!   file is unlinked (it watches the file with inotify on Linux, kqueue on the BSDs/macOS). On
//!   exit it removes the socket; the kernel removes the TUN link when the fd closes.
//! - After `kill -9` the socket file stays behind, refusing connections; the link is gone.
//!
//! So an adopted device (no child of ours) is removed by unlinking its socket, which needs no
//! pid, no `ip` binary and works on macOS too.

use crate::client::{DEFAULT_IO_TIMEOUT, DEFAULT_SOCKET_DIR, UapiClient};
use crate::protocol::UapiError;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use wgmesh_device::{
    BackendError, BackendKind, DeviceOrigin, DeviceState, DeviceUpdate, WireguardBackend,
};

/// Debian's path; `--wireguard-go PATH` overrides it.
pub const DEFAULT_WIREGUARD_GO: &str = "/usr/bin/wireguard-go";

/// Where the supervised process's stdout and stderr go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildOutput {
    /// Each line becomes a `tracing` event on the `wireguard_go` target. A process that outlives
    /// the daemon (see [`UserspaceBackend::detach`]) would then write into a closed pipe, and a
    /// Go program dies of SIGPIPE on a broken stdout/stderr — so a daemon started with
    /// `--keep-interface` should choose [`ChildOutput::Null`] or [`ChildOutput::File`].
    Log,
    Null,
    /// Appended to this file (created 0600).
    File(PathBuf),
}

/// How to run wireguard-go for one interface.
#[derive(Debug, Clone)]
pub struct UserspaceConfig {
    pub interface: String,
    pub wireguard_go: PathBuf,
    pub socket_dir: PathBuf,
    /// How long a fresh process may take to answer on its socket.
    pub start_timeout: Duration,
    /// How long SIGTERM gets before SIGKILL, and an unlinked socket before giving up.
    pub stop_timeout: Duration,
    pub io_timeout: Duration,
    pub output: ChildOutput,
    /// wireguard-go's `LOG_LEVEL` (`error`, `verbose` or `silent`).
    pub log_level: String,
}

impl UserspaceConfig {
    pub fn new(interface: &str) -> Self {
        Self {
            interface: interface.to_owned(),
            wireguard_go: PathBuf::from(DEFAULT_WIREGUARD_GO),
            socket_dir: PathBuf::from(DEFAULT_SOCKET_DIR),
            start_timeout: Duration::from_secs(5),
            stop_timeout: Duration::from_secs(3),
            io_timeout: DEFAULT_IO_TIMEOUT,
            output: ChildOutput::Log,
            log_level: "error".to_owned(),
        }
    }
}

/// Why the userspace backend cannot run here ([`userspace_available`]).
#[derive(Debug, thiserror::Error)]
pub enum UserspaceUnavailable {
    /// The wireguard-go binary cannot be read (missing, or a directory on the way is not ours
    /// to search); the io error keeps its errno.
    #[error("{}: {source}", path.display())]
    Binary {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not an executable file", path.display())]
    NotExecutable { path: std::path::PathBuf },
    #[error("{} does not exist (no TUN support)", path.display())]
    NoTun { path: std::path::PathBuf },
}

/// Checks that the userspace backend can run here: the binary is an executable file and the
/// TUN device node exists (on Linux). For `--backend auto|userspace`.
pub fn userspace_available(wireguard_go: &Path) -> Result<(), UserspaceUnavailable> {
    let metadata =
        std::fs::metadata(wireguard_go).map_err(|source| UserspaceUnavailable::Binary {
            path: wireguard_go.to_owned(),
            source,
        })?;
    if !metadata.is_file() || metadata.permissions().mode() & 0o111 == 0 {
        return Err(UserspaceUnavailable::NotExecutable {
            path: wireguard_go.to_owned(),
        });
    }
    let tun = Path::new("/dev/net/tun");
    if cfg!(target_os = "linux") && !tun.exists() {
        return Err(UserspaceUnavailable::NoTun {
            path: tun.to_owned(),
        });
    }
    Ok(())
}

/// A wireguard-go device: spawned and supervised by us, or adopted from a previous run.
///
/// Dropping the backend stops a process it spawned, unless [`detach`](Self::detach) was called.
#[derive(Debug)]
pub struct UserspaceBackend {
    config: UserspaceConfig,
    client: UapiClient,
    child: Option<Child>,
    /// Set once the device has existed under this backend: a later fresh start is a restart.
    had_device: bool,
    detached: bool,
    restarts: crate::child::RestartBackoff,
}

impl UserspaceBackend {
    pub fn new(config: UserspaceConfig) -> Self {
        let client =
            UapiClient::new(&config.socket_dir, &config.interface).with_timeout(config.io_timeout);
        Self {
            config,
            client,
            child: None,
            had_device: false,
            detached: false,
            restarts: crate::child::RestartBackoff::default(),
        }
    }

    pub fn client(&self) -> &UapiClient {
        &self.client
    }

    /// The pid of the wireguard-go we spawned, if it is ours and we still hold it.
    pub fn child_pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Lets the process outlive us (`--keep-interface`): it is no longer stopped on drop and
    /// [`remove_device`](WireguardBackend::remove_device) is then the only way to stop it.
    /// The next daemon run adopts it through its socket.
    pub fn detach(&mut self) {
        self.detached = true;
    }

    fn error(&self, operation: &'static str, error: UapiError) -> BackendError {
        match error {
            UapiError::Io { source, .. } => BackendError::Io {
                interface: self.config.interface.clone(),
                operation,
                cause: source,
            },
            other => BackendError::Protocol {
                interface: self.config.interface.clone(),
                operation,
                message: other.to_string(),
            },
        }
    }

    fn io_error(&self, operation: &'static str, source: std::io::Error) -> BackendError {
        BackendError::Io {
            interface: self.config.interface.clone(),
            operation,
            cause: source,
        }
    }

    fn protocol_error(&self, operation: &'static str, message: String) -> BackendError {
        BackendError::Protocol {
            interface: self.config.interface.clone(),
            operation,
            message,
        }
    }

    /// Reaps our child if it has exited; returns whether it had.
    fn child_exited(&mut self) -> bool {
        crate::child::reap_if_exited(&mut self.child, &self.config.interface)
    }

    fn spawn(&mut self) -> Result<(), BackendError> {
        let config = &self.config;
        let mut command = Command::new(&config.wireguard_go);
        command
            .arg("-f")
            .arg(&config.interface)
            // Our environment may hold the mesh secret (clap reads flags from env); the child
            // gets nothing of it. Keys only ever reach it over the socket.
            .env_clear()
            .env("LOG_LEVEL", &config.log_level)
            .stdin(Stdio::null())
            // Its own process group: Ctrl-C on the daemon's terminal does not reach it, and
            // it can outlive the daemon.
            .process_group(0);
        let (stdout, stderr) = config
            .output
            .stdio()
            .map_err(|e| self.io_error("open wireguard-go log", e))?;
        command.stdout(stdout).stderr(stderr);
        let mut child = command
            .spawn()
            .map_err(|e| self.io_error("spawn wireguard-go", e))?;
        tracing::info!(interface = %config.interface, pid = child.id(), "started wireguard-go");
        crate::child::forward_output(&config.interface, &mut child);
        self.child = Some(child);
        Ok(())
    }

    /// Waits until the fresh process answers, or fails if it exits or stays silent.
    fn wait_until_answering(&mut self) -> Result<(), BackendError> {
        let deadline = Instant::now() + self.config.start_timeout;
        loop {
            if self.client.is_alive() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                let hint = if link_exists(&self.config.interface) == Some(true) {
                    " (an interface of that name exists without a wireguard-go socket)"
                } else {
                    ""
                };
                return Err(self.protocol_error(
                    "start wireguard-go",
                    format!("exited with {status} before its socket answered{hint}"),
                ));
            }
            if Instant::now() >= deadline {
                self.stop_child()?;
                return Err(self.protocol_error(
                    "start wireguard-go",
                    format!(
                        "{} did not answer within {:?}",
                        self.client.socket().display(),
                        self.config.start_timeout
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, a bounded wait, then SIGKILL. Our child only.
    fn stop_child(&mut self) -> Result<(), BackendError> {
        let Some(child) = self.child.take() else {
            return Ok(());
        };
        crate::child::stop(child, &self.config.interface, self.config.stop_timeout)
            .map_err(|e| self.io_error("wait for wireguard-go", e))
    }

    /// Removes a socket nobody answers on, so the next wireguard-go can bind it.
    fn remove_stale_socket(&self) -> Result<(), BackendError> {
        match std::fs::remove_file(self.client.socket()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io_error("remove stale UAPI socket", e)),
        }
    }

    /// Waits (bounded) until the interface is gone from our network namespace.
    fn wait_link_gone(&self) -> Result<(), BackendError> {
        let deadline = Instant::now() + self.config.stop_timeout;
        while link_exists(&self.config.interface) == Some(true) {
            if Instant::now() >= deadline {
                return Err(self.protocol_error(
                    "remove device",
                    "the interface still exists after wireguard-go was told to exit".to_owned(),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl WireguardBackend for UserspaceBackend {
    fn detach(&mut self) {
        UserspaceBackend::detach(self);
    }

    fn kind(&self) -> BackendKind {
        BackendKind::Userspace
    }

    fn interface(&self) -> &str {
        &self.config.interface
    }

    fn ensure_device(&mut self) -> Result<DeviceOrigin, BackendError> {
        let died = self.child_exited();
        if !died && self.client.is_alive() {
            if self.child.is_none() && link_exists(&self.config.interface) == Some(false) {
                // /var/run/wireguard is shared by all network namespaces.
                return Err(self.protocol_error(
                    "adopt device",
                    format!(
                        "{} answers, but the interface is not in this network namespace",
                        self.client.socket().display()
                    ),
                ));
            }
            if !self.had_device && self.child.is_none() {
                tracing::info!(interface = %self.config.interface, "adopted running wireguard-go");
            }
            self.had_device = true;
            return Ok(DeviceOrigin::Adopted);
        }
        // Dead, or alive but not answering (hung): replace it.
        self.stop_child()?;
        if self.had_device
            && let Err(wait) = self
                .restarts
                .may_restart(&self.config.interface, Instant::now())
        {
            return Err(self.protocol_error("restart wireguard-go", wait.to_string()));
        }
        self.remove_stale_socket()?;
        self.spawn()?;
        self.restarts.started(Instant::now());
        self.wait_until_answering()?;
        let origin = if self.had_device || died {
            tracing::warn!(interface = %self.config.interface, "restarted wireguard-go; its peers will be re-applied");
            DeviceOrigin::Restarted
        } else {
            DeviceOrigin::Created
        };
        self.had_device = true;
        Ok(origin)
    }

    fn read(&mut self) -> Result<DeviceState, BackendError> {
        self.client.get().map_err(|e| self.error("read device", e))
    }

    fn apply(&mut self, update: &DeviceUpdate) -> Result<(), BackendError> {
        if update.is_empty() {
            return Ok(());
        }
        self.client
            .set(update)
            .map_err(|e| self.error("apply update", e))
    }

    fn remove_device(&mut self) -> Result<(), BackendError> {
        if self.child.is_some() {
            self.stop_child()?;
        } else if self.client.is_alive() {
            // Adopted: unlinking its socket makes wireguard-go exit (see the module docs).
            tracing::info!(interface = %self.config.interface, "asking adopted wireguard-go to exit");
        }
        self.remove_stale_socket()?;
        self.had_device = false;
        self.wait_link_gone()
    }
}

impl Drop for UserspaceBackend {
    fn drop(&mut self) {
        if !self.detached
            && let Err(error) = self.stop_child()
        {
            tracing::warn!(%error, "stopping wireguard-go on drop");
        }
    }
}

/// Whether `interface` exists in this process's network namespace, if that can be known.
/// `/proc/self/net/dev` follows the calling process's namespace (unlike `/sys/class/net`, which
/// follows the sysfs mount). On macOS the socket is the only evidence: `None`.
fn link_exists(interface: &str) -> Option<bool> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    let table = std::fs::read_to_string("/proc/self/net/dev").ok()?;
    Some(table.lines().skip(2).any(|row| {
        row.split_once(':')
            .is_some_and(|(name, _)| name.trim() == interface)
    }))
}
