//! The traits platform crates implement, and an in-memory fake.

use crate::model::{DeviceState, DeviceUpdate};
use std::fmt;

/// Which WireGuard implementation drives the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// The Linux kernel module, over generic netlink.
    Kernel,
    /// wireguard-go, over its UAPI socket.
    Userspace,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Kernel => "kernel",
            Self::Userspace => "userspace",
        })
    }
}

/// Whether [`WireguardBackend::ensure_device`] found the device or made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceOrigin {
    Created,
    /// The device existed (e.g. left by `--keep-interface`); its peers were kept.
    Adopted,
    /// A supervised userspace process had died and was restarted; its peers are gone and the
    /// next reconcile restores them.
    Restarted,
}

/// A backend failure, with the interface and the operation it concerns.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{interface}: {backend} WireGuard backend is unavailable: {reason}")]
    Unavailable {
        interface: String,
        backend: BackendKind,
        reason: String,
    },
    /// The io error is part of the message, not a `source`: a chain printed with `{:#}` would
    /// otherwise name it twice.
    #[error("{interface}: {operation}: {cause}")]
    Io {
        interface: String,
        operation: &'static str,
        cause: std::io::Error,
    },
    #[error("{interface}: {operation}: {message}")]
    Protocol {
        interface: String,
        operation: &'static str,
        message: String,
    },
}

/// A WireGuard device, driven by some implementation.
///
/// Calls are blocking and short (a netlink round trip or a UAPI exchange); async callers run them
/// on a blocking thread.
pub trait WireguardBackend: Send {
    fn kind(&self) -> BackendKind;
    fn interface(&self) -> &str;
    /// Makes sure the device exists (creating it, or restarting a dead userspace process).
    /// Never flushes an existing device's peers.
    fn ensure_device(&mut self) -> Result<DeviceOrigin, BackendError>;
    /// Reads the device, normalised (see [`DeviceState::normalise`]).
    fn read(&mut self) -> Result<DeviceState, BackendError>;
    /// Applies `update` in as few writes as the transport allows.
    fn apply(&mut self, update: &DeviceUpdate) -> Result<(), BackendError>;
    /// Removes the device (and stops a supervised process).
    fn remove_device(&mut self) -> Result<(), BackendError>;
    /// Leaves the device running when the backend is dropped (`--keep-interface`), so the next
    /// daemon adopts it. Kernel devices outlive the process anyway.
    fn detach(&mut self) {}
}

/// The daemon picks its backend at run time.
impl<B: WireguardBackend + ?Sized> WireguardBackend for Box<B> {
    fn kind(&self) -> BackendKind {
        (**self).kind()
    }

    fn interface(&self) -> &str {
        (**self).interface()
    }

    fn ensure_device(&mut self) -> Result<DeviceOrigin, BackendError> {
        (**self).ensure_device()
    }

    fn read(&mut self) -> Result<DeviceState, BackendError> {
        (**self).read()
    }

    fn apply(&mut self, update: &DeviceUpdate) -> Result<(), BackendError> {
        (**self).apply(update)
    }

    fn remove_device(&mut self) -> Result<(), BackendError> {
        (**self).remove_device()
    }

    fn detach(&mut self) {
        (**self).detach();
    }
}

/// An in-memory backend that counts writes, for unit tests of the logic above the device.
#[derive(Debug, Default)]
pub struct FakeBackend {
    pub interface: String,
    pub state: Option<DeviceState>,
    pub writes: usize,
    pub reads: usize,
    /// The next [`WireguardBackend::ensure_device`] acts as if a userspace process had died:
    /// the device comes back empty and reports [`DeviceOrigin::Restarted`].
    pub restart_next: bool,
    /// Writes that touch one of these peers fail (one bad peer among good ones).
    pub failing_peers: Vec<wgmesh_keys::PublicKey>,
}

impl FakeBackend {
    pub fn new(interface: &str) -> Self {
        Self {
            interface: interface.to_owned(),
            ..Self::default()
        }
    }

    fn missing(&self) -> BackendError {
        BackendError::Protocol {
            interface: self.interface.clone(),
            operation: "fake device",
            message: "device does not exist".to_owned(),
        }
    }
}

impl WireguardBackend for FakeBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Userspace
    }

    fn interface(&self) -> &str {
        &self.interface
    }

    fn ensure_device(&mut self) -> Result<DeviceOrigin, BackendError> {
        if std::mem::take(&mut self.restart_next) {
            self.state = Some(DeviceState::default());
            return Ok(DeviceOrigin::Restarted);
        }
        if self.state.is_some() {
            return Ok(DeviceOrigin::Adopted);
        }
        self.state = Some(DeviceState::default());
        Ok(DeviceOrigin::Created)
    }

    fn read(&mut self) -> Result<DeviceState, BackendError> {
        self.reads += 1;
        self.state.clone().ok_or_else(|| self.missing())
    }

    fn apply(&mut self, update: &DeviceUpdate) -> Result<(), BackendError> {
        let missing = self.missing();
        if let Some(peer) = update
            .peers
            .iter()
            .find(|p| self.failing_peers.contains(&p.public_key))
        {
            return Err(BackendError::Protocol {
                interface: self.interface.clone(),
                operation: "fake write",
                message: format!("peer {} refused", peer.public_key.short()),
            });
        }
        let state = self.state.as_mut().ok_or(missing)?;
        state.apply(update);
        self.writes += 1;
        Ok(())
    }

    fn remove_device(&mut self) -> Result<(), BackendError> {
        self.state = None;
        Ok(())
    }
}
