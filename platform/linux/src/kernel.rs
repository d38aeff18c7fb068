//! [`KernelBackend`]: the Linux kernel's WireGuard, over the "wireguard" generic netlink family
//! (devices created and deleted over rtnetlink).

use crate::netlink::{NetlinkSocket, Request};
use crate::rtnl::{Rtnl, is_errno};
use crate::wg_message::{
    MAX_SET_MESSAGE_LEN, device_state_from_dump, get_device_message, scrub_keys,
    set_device_messages,
};
use netlink_packet_generic::GenlMessage;
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_route::link::InfoKind;
use netlink_packet_wireguard::WireguardMessage;
use std::io;
use std::sync::Arc;
use wgmesh_device::{
    BackendError, BackendKind, DeviceOrigin, DeviceState, DeviceUpdate, WireguardBackend,
};

/// The generic netlink family the WireGuard module registers.
const WG_GENL_NAME: &str = "wireguard";
/// The rtnetlink link kind of a WireGuard device.
const WG_LINK_KIND: &str = "wireguard";
/// What a user reads when the kernel cannot do WireGuard.
const NO_MODULE: &str = "kernel has no WireGuard module";

/// A WireGuard device driven by the kernel module.
#[derive(Debug)]
pub struct KernelBackend {
    interface: String,
    rtnl: Arc<Rtnl>,
    /// Opened on first use: the family only exists once the module is loaded, which creating
    /// the first WireGuard link may do.
    genl: Option<Genl>,
}

/// A generic netlink socket and the id the kernel gave the "wireguard" family.
#[derive(Debug)]
struct Genl {
    socket: NetlinkSocket,
    family: u16,
}

impl KernelBackend {
    /// A backend for `interface`, sharing `rtnl` with the rest of the daemon.
    pub fn new(interface: &str, rtnl: Arc<Rtnl>) -> Self {
        Self {
            interface: interface.to_owned(),
            rtnl,
            genl: None,
        }
    }

    /// A backend with its own rtnetlink socket.
    pub fn open(interface: &str) -> io::Result<Self> {
        Ok(Self::new(interface, Arc::new(Rtnl::new()?)))
    }

    fn io_error(&self, operation: &'static str, source: io::Error) -> BackendError {
        BackendError::Io {
            interface: self.interface.clone(),
            operation,
            cause: source,
        }
    }

    fn unavailable(&self, reason: String) -> BackendError {
        BackendError::Unavailable {
            interface: self.interface.clone(),
            backend: BackendKind::Kernel,
            reason,
        }
    }

    fn genl(&mut self) -> Result<&mut Genl, BackendError> {
        let genl = match self.genl.take() {
            Some(genl) => genl,
            None => {
                let mut socket = NetlinkSocket::open(netlink_sys::protocols::NETLINK_GENERIC)
                    .map_err(|e| self.io_error("opening a generic netlink socket", e))?;
                let family = resolve_family(&mut socket)
                    .map_err(|e| self.io_error("resolving the wireguard netlink family", e))?
                    .ok_or_else(|| {
                        self.unavailable(format!(
                            "{NO_MODULE} (generic netlink family \"{WG_GENL_NAME}\" not found)"
                        ))
                    })?;
                Genl { socket, family }
            }
        };
        Ok(self.genl.insert(genl))
    }

    /// Sends one WireGuard message; the request and the replies are scrubbed of keys after.
    fn wireguard_request(
        &mut self,
        message: WireguardMessage,
        request: Request,
    ) -> Result<io::Result<Vec<WireguardMessage>>, BackendError> {
        let genl = self.genl()?;
        let mut message = GenlMessage::from_payload(message);
        message.set_resolved_family_id(genl.family);
        let (mut sent, replies) = genl.socket.exchange(message, request);
        scrub_keys(std::slice::from_mut(&mut sent.payload));
        Ok(replies.map(|replies| replies.into_iter().map(|reply| reply.payload).collect()))
    }

    /// Maps the errors of a WireGuard request: "not supported" means the device is not a
    /// WireGuard device, or the kernel cannot do WireGuard.
    fn wireguard_error(&self, operation: &'static str, error: io::Error) -> BackendError {
        if is_errno(&error, &[libc::EOPNOTSUPP]) {
            return self.unavailable(format!(
                "{operation}: the kernel does not handle this interface as WireGuard ({error})"
            ));
        }
        self.io_error(operation, error)
    }
}

impl WireguardBackend for KernelBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Kernel
    }

    fn interface(&self) -> &str {
        &self.interface
    }

    /// Adopts an existing WireGuard link as it is (peers and all), or creates one.
    fn ensure_device(&mut self) -> Result<DeviceOrigin, BackendError> {
        let existing = self
            .rtnl
            .link(&self.interface)
            .map_err(|e| self.io_error("looking up the interface", e))?;
        if let Some(link) = existing {
            return match link.kind.as_deref() {
                Some(WG_LINK_KIND) => Ok(DeviceOrigin::Adopted),
                other => Err(BackendError::Protocol {
                    interface: self.interface.clone(),
                    operation: "adopting the interface",
                    message: format!(
                        "a link of this name exists but is not a WireGuard device (kind {})",
                        other.unwrap_or("none")
                    ),
                }),
            };
        }
        match self.rtnl.create_link(&self.interface, InfoKind::Wireguard) {
            Ok(()) => {
                tracing::info!(interface = %self.interface, "created kernel WireGuard interface");
                Ok(DeviceOrigin::Created)
            }
            // Someone created it between our lookup and our create.
            Err(e) if is_errno(&e, &[libc::EEXIST]) => Ok(DeviceOrigin::Adopted),
            Err(e) if is_errno(&e, &[libc::EOPNOTSUPP]) => Err(self.unavailable(format!(
                "{NO_MODULE} (creating a link of kind {WG_LINK_KIND}: {e})"
            ))),
            Err(e) => Err(self.io_error("creating the interface", e)),
        }
    }

    fn read(&mut self) -> Result<DeviceState, BackendError> {
        let mut replies = self
            .wireguard_request(get_device_message(&self.interface), Request::Dump)?
            .map_err(|e| self.wireguard_error("reading the device", e))?;
        let state = device_state_from_dump(&replies);
        scrub_keys(&mut replies);
        state.map_err(|error| BackendError::Protocol {
            interface: self.interface.clone(),
            operation: "reading the device",
            message: error.to_string(),
        })
    }

    fn apply(&mut self, update: &DeviceUpdate) -> Result<(), BackendError> {
        let messages = set_device_messages(&self.interface, update, MAX_SET_MESSAGE_LEN);
        let count = messages.len();
        let mut messages = messages.into_iter();
        while let Some(message) = messages.next() {
            let result = self.wireguard_request(message, Request::Do(0));
            let outcome = match result {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(self.wireguard_error("setting the device", e)),
                Err(e) => Err(e),
            };
            if let Err(e) = outcome {
                // Later messages must not be applied without the earlier ones; drop them,
                // scrubbing their keys.
                let mut rest: Vec<WireguardMessage> = messages.collect();
                scrub_keys(&mut rest);
                return Err(e);
            }
        }
        if count > 0 {
            tracing::debug!(interface = %self.interface, messages = count, peers = update.peers.len(), "applied WireGuard update");
        }
        Ok(())
    }

    fn remove_device(&mut self) -> Result<(), BackendError> {
        let index = self
            .rtnl
            .link_index(&self.interface)
            .map_err(|e| self.io_error("looking up the interface", e))?;
        if let Some(index) = index {
            self.rtnl
                .delete_link(index)
                .map_err(|e| self.io_error("deleting the interface", e))?;
        }
        Ok(())
    }
}

/// Asks the generic netlink controller for the id of the "wireguard" family; `None` if the
/// family is not registered (the module is not loaded, or not built).
fn resolve_family(socket: &mut NetlinkSocket) -> io::Result<Option<u16>> {
    let request = GenlMessage::from_payload(GenlCtrl {
        cmd: GenlCtrlCmd::GetFamily,
        nlas: vec![GenlCtrlAttrs::FamilyName(WG_GENL_NAME.to_owned())],
    });
    match socket.request(request, Request::Do(0)) {
        Ok(replies) => Ok(replies.iter().find_map(|reply| {
            reply
                .payload
                .nlas
                .iter()
                .find_map(|attribute| match attribute {
                    GenlCtrlAttrs::FamilyId(id) => Some(*id),
                    _ => None,
                })
        })),
        Err(e) if is_errno(&e, &[libc::ENOENT]) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Why the kernel cannot drive WireGuard here, or `Ok` if it can.
///
/// First asks for the "wireguard" generic netlink family. If it is missing, the module may still
/// be loadable: creating a link of kind "wireguard" makes the kernel load it
/// (`request_module("rtnl-link-wireguard")`), so the probe creates a throwaway link, deletes it
/// and asks again. Needs `CAP_NET_ADMIN` for that second step; without it the answer is the
/// reason the link could not be created. Works in the caller's network namespace.
pub fn probe_kernel_wireguard() -> Result<(), KernelUnavailable> {
    let mut socket = NetlinkSocket::open(netlink_sys::protocols::NETLINK_GENERIC)
        .map_err(|cause| KernelUnavailable::Socket { cause })?;
    let found = |socket: &mut NetlinkSocket| {
        resolve_family(socket)
            .map(|family| family.is_some())
            .map_err(|cause| KernelUnavailable::FamilyQuery { cause })
    };
    if found(&mut socket)? {
        return Ok(());
    }
    let rtnl = Rtnl::new().map_err(|cause| KernelUnavailable::Rtnetlink { cause })?;
    // IFNAMSIZ is 16: "wgmprobe" plus a pid (at most 7 digits) fits.
    let name = format!("wgmprobe{}", std::process::id());
    match rtnl.create_link(&name, InfoKind::Wireguard) {
        Ok(()) => {
            if let Ok(Some(index)) = rtnl.link_index(&name) {
                let _ = rtnl.delete_link(index);
            }
        }
        Err(cause) if is_errno(&cause, &[libc::EOPNOTSUPP]) => {
            return Err(KernelUnavailable::NoModule { cause });
        }
        Err(cause) => return Err(KernelUnavailable::ProbeLink { name, cause }),
    }
    if found(&mut socket)? {
        Ok(())
    } else {
        Err(KernelUnavailable::FamilyMissing)
    }
}

/// Why the kernel cannot drive WireGuard here ([`probe_kernel_wireguard`]). Each io error keeps
/// its errno; it is part of the message (as in [`crate::NetlinkError`]), so a chain printed
/// with `{:#}` names it once.
#[derive(Debug, thiserror::Error)]
pub enum KernelUnavailable {
    #[error("cannot open a generic netlink socket: {cause}")]
    Socket { cause: io::Error },
    #[error("cannot query generic netlink families: {cause}")]
    FamilyQuery { cause: io::Error },
    #[error("{cause}")]
    Rtnetlink { cause: io::Error },
    #[error("{NO_MODULE} (creating a link of kind {WG_LINK_KIND}: {cause})")]
    NoModule { cause: io::Error },
    #[error("cannot create a probe WireGuard link {name}: {cause}")]
    ProbeLink { name: String, cause: io::Error },
    #[error("{NO_MODULE} (generic netlink family \"{WG_GENL_NAME}\" not found)")]
    FamilyMissing,
}

/// Whether the kernel WireGuard backend can be used here (for `--backend auto`); see
/// [`probe_kernel_wireguard`] for how, and for the reason when it cannot.
pub fn kernel_wireguard_available() -> bool {
    probe_kernel_wireguard().is_ok()
}
