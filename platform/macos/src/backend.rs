//! [`MacosBackend`]: `wireguard-go -f utun` supervised by us (or adopted), driven over UAPI.
//!
//! The sequence follows wg-quick's darwin `add_if`/`get_real_interface`/`del_if`:
//! `WG_TUN_NAME_FILE=<run_dir>/<name>.name wireguard-go -f utun`, wait until wireguard-go wrote
//! `utunN` into the name file, then talk UAPI on `<run_dir>/utunN.sock`. Removing the device
//! stops the process and removes the socket and the name file.
//!
//! An adopted wireguard-go (left by `--keep-interface`, not our child) is stopped by unlinking
//! its socket: wireguard-go watches the file (kqueue on macOS) and exits when it goes, taking
//! the utun with it.

use crate::commands::start_wireguard_go;
use crate::{MacosError, RUN_DIR, Runner, Utun, name_file_path, read_utun};
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};
use wgmesh_device::{
    BackendError, BackendKind, DeviceOrigin, DeviceState, DeviceUpdate, WireguardBackend,
};
use wgmesh_uapi::child::RestartBackoff;
use wgmesh_uapi::{ChildOutput, DEFAULT_IO_TIMEOUT, UapiClient, UapiError};

/// How wireguard-go runs for one mesh interface.
#[derive(Debug, Clone)]
pub struct MacosBackendConfig {
    /// The mesh's name for the interface (`wg0`); the kernel's is `utunN`.
    pub interface: String,
    /// Looked up in the runner's search path unless it contains a `/`.
    pub wireguard_go: PathBuf,
    /// Where the name file and wireguard-go's socket live ([`RUN_DIR`] on macOS).
    pub run_dir: PathBuf,
    /// Bound on the wait for the name file, and then for the socket to answer.
    pub start_timeout: Duration,
    /// How long SIGTERM gets before SIGKILL.
    pub stop_timeout: Duration,
    pub io_timeout: Duration,
    pub output: ChildOutput,
    /// wireguard-go's `LOG_LEVEL` (`error`, `verbose` or `silent`).
    pub log_level: String,
}

impl MacosBackendConfig {
    pub fn new(interface: &str) -> Self {
        Self {
            interface: interface.to_owned(),
            wireguard_go: PathBuf::from("wireguard-go"),
            run_dir: PathBuf::from(RUN_DIR),
            start_timeout: Duration::from_secs(5),
            stop_timeout: Duration::from_secs(3),
            io_timeout: DEFAULT_IO_TIMEOUT,
            output: ChildOutput::Log,
            log_level: "error".to_owned(),
        }
    }
}

/// A wireguard-go device on a utun. Dropping it stops a process it spawned, unless
/// [`detach`](WireguardBackend::detach) was called.
#[derive(Debug)]
pub struct MacosBackend {
    config: MacosBackendConfig,
    runner: Runner,
    child: Option<Child>,
    /// The utun of the running device, once known.
    utun: Option<Utun>,
    had_device: bool,
    detached: bool,
    /// A wireguard-go that keeps exiting is restarted at once, then after 2 s, 4 s, ... (as on
    /// Linux).
    restarts: RestartBackoff,
}

impl MacosBackend {
    pub fn new(config: MacosBackendConfig, runner: Runner) -> Self {
        Self {
            config,
            runner,
            child: None,
            utun: None,
            had_device: false,
            detached: false,
            restarts: RestartBackoff::default(),
        }
    }

    /// The kernel's name for the interface (`utunN`), once the device was started or adopted.
    pub fn utun(&self) -> Option<&Utun> {
        self.utun.as_ref()
    }

    /// The pid of the wireguard-go we spawned, if we hold one.
    pub fn child_pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn client(&self, utun: &Utun) -> UapiClient {
        UapiClient::new(&self.config.run_dir, utun.as_str()).with_timeout(self.config.io_timeout)
    }

    fn connected(&self) -> Result<UapiClient, BackendError> {
        let utun = self.utun.as_ref().ok_or_else(|| {
            self.protocol_error("find utun", "the device was not started".to_owned())
        })?;
        Ok(self.client(utun))
    }

    fn uapi_error(&self, operation: &'static str, error: UapiError) -> BackendError {
        match error {
            UapiError::Io { source, .. } => self.io_error(operation, source),
            other => self.protocol_error(operation, other.to_string()),
        }
    }

    fn io_error(&self, operation: &'static str, cause: std::io::Error) -> BackendError {
        BackendError::Io {
            interface: self.config.interface.clone(),
            operation,
            cause,
        }
    }

    fn protocol_error(&self, operation: &'static str, message: String) -> BackendError {
        BackendError::Protocol {
            interface: self.config.interface.clone(),
            operation,
            message,
        }
    }

    fn macos_error(&self, operation: &'static str, error: MacosError) -> BackendError {
        self.protocol_error(operation, error.to_string())
    }

    /// The utun a live wireguard-go serves for our interface, if one answers (wg-quick's
    /// `get_real_interface`, with a UAPI `get` instead of its mtime comparison).
    fn live_utun(&self) -> Option<Utun> {
        let utun = read_utun(&self.config.run_dir, &self.config.interface).ok()?;
        self.client(&utun).is_alive().then_some(utun)
    }

    /// Reaps our child if it has exited; returns whether it had.
    fn child_exited(&mut self) -> bool {
        wgmesh_uapi::child::reap_if_exited(&mut self.child, &self.config.interface)
    }

    fn spawn(&mut self) -> Result<(), BackendError> {
        let name_file = name_file_path(&self.config.run_dir, &self.config.interface);
        let mut command = start_wireguard_go(&self.config.wireguard_go, &name_file);
        command
            .env
            .push(("LOG_LEVEL".into(), self.config.log_level.clone().into()));
        let (stdout, stderr) = self
            .config
            .output
            .stdio()
            .map_err(|e| self.io_error("open wireguard-go log", e))?;
        let mut child = self
            .runner
            .spawn(&command, stdout, stderr)
            .map_err(|e| self.macos_error("start wireguard-go", e))?;
        tracing::info!(interface = %self.config.interface, pid = child.id(), "started wireguard-go");
        wgmesh_uapi::child::forward_output(&self.config.interface, &mut child);
        self.child = Some(child);
        Ok(())
    }

    /// Fails if our fresh child has already exited.
    fn check_child_alive(&mut self, waiting_for: &str) -> Result<(), BackendError> {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            self.child = None;
            return Err(self.protocol_error(
                "start wireguard-go",
                format!("exited with {status} before {waiting_for}"),
            ));
        }
        Ok(())
    }

    /// Waits (bounded) for the name file, then for the socket to answer.
    fn wait_until_serving(&mut self) -> Result<Utun, BackendError> {
        let deadline = Instant::now() + self.config.start_timeout;
        let name_file = name_file_path(&self.config.run_dir, &self.config.interface);
        let utun = loop {
            if let Ok(utun) = read_utun(&self.config.run_dir, &self.config.interface) {
                break utun;
            }
            self.check_child_alive("it reported its utun")?;
            if Instant::now() >= deadline {
                self.stop_child()?;
                let timeout = MacosError::NameFileTimeout {
                    interface: self.config.interface.clone(),
                    path: name_file,
                    timeout: self.config.start_timeout,
                };
                return Err(self.macos_error("start wireguard-go", timeout));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let client = self.client(&utun);
        loop {
            if client.is_alive() {
                return Ok(utun);
            }
            self.check_child_alive("its socket answered")?;
            if Instant::now() >= deadline {
                self.stop_child()?;
                return Err(self.protocol_error(
                    "start wireguard-go",
                    format!(
                        "{} did not answer within {:?}",
                        client.socket().display(),
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
        wgmesh_uapi::child::stop(child, &self.config.interface, self.config.stop_timeout)
            .map_err(|e| self.io_error("wait for wireguard-go", e))
    }

    /// darwin.bash `del_if`: removes `utunN.sock` (when known) and `<name>.name`. Missing files
    /// are fine.
    fn remove_files(&self, utun: Option<&Utun>) -> Result<(), BackendError> {
        let socket = utun.map(|u| self.client(u).socket().to_owned());
        let name = name_file_path(&self.config.run_dir, &self.config.interface);
        for path in socket.into_iter().chain([name]) {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    let error = MacosError::File {
                        interface: self.config.interface.clone(),
                        operation: "remove",
                        path,
                        source,
                    };
                    return Err(self.macos_error("remove device", error));
                }
            }
        }
        Ok(())
    }

    fn ensure_run_dir(&self) -> Result<(), BackendError> {
        std::fs::create_dir_all(&self.config.run_dir).map_err(|source| {
            let error = MacosError::File {
                interface: self.config.interface.clone(),
                operation: "create",
                path: self.config.run_dir.clone(),
                source,
            };
            self.macos_error("start wireguard-go", error)
        })
    }
}

impl WireguardBackend for MacosBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Userspace
    }

    fn interface(&self) -> &str {
        &self.config.interface
    }

    fn ensure_device(&mut self) -> Result<DeviceOrigin, BackendError> {
        let died = self.child_exited();
        if !died && let Some(utun) = self.live_utun() {
            if !self.had_device && self.child.is_none() {
                tracing::info!(interface = %self.config.interface, %utun, "adopted running wireguard-go");
            }
            self.utun = Some(utun);
            self.had_device = true;
            return Ok(DeviceOrigin::Adopted);
        }
        // Dead, or alive but not answering (hung): replace it. The old utun's socket and the
        // name file go first, so the name we wait for is the new process's.
        self.stop_child()?;
        let stale = self
            .utun
            .take()
            .or_else(|| read_utun(&self.config.run_dir, &self.config.interface).ok());
        self.remove_files(stale.as_ref())?;
        if self.had_device
            && let Err(wait) = self
                .restarts
                .may_restart(&self.config.interface, Instant::now())
        {
            return Err(self.protocol_error("restart wireguard-go", wait.to_string()));
        }
        self.ensure_run_dir()?;
        self.spawn()?;
        self.restarts.started(Instant::now());
        let utun = self.wait_until_serving()?;
        tracing::info!(interface = %self.config.interface, %utun, "wireguard-go serves the interface");
        self.utun = Some(utun);
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
        self.connected()?
            .get()
            .map_err(|e| self.uapi_error("read device", e))
    }

    fn apply(&mut self, update: &DeviceUpdate) -> Result<(), BackendError> {
        if update.is_empty() {
            return Ok(());
        }
        self.connected()?
            .set(update)
            .map_err(|e| self.uapi_error("apply update", e))
    }

    fn remove_device(&mut self) -> Result<(), BackendError> {
        let utun = self
            .utun
            .take()
            .or_else(|| read_utun(&self.config.run_dir, &self.config.interface).ok());
        if self.child.is_some() {
            self.stop_child()?;
        } else if utun.is_some() {
            tracing::info!(interface = %self.config.interface, "asking adopted wireguard-go to exit");
        }
        self.had_device = false;
        self.remove_files(utun.as_ref())
    }

    fn detach(&mut self) {
        self.detached = true;
    }
}

impl Drop for MacosBackend {
    fn drop(&mut self) {
        if !self.detached
            && let Err(error) = self.stop_child()
        {
            tracing::warn!(%error, "stopping wireguard-go on drop");
        }
    }
}
