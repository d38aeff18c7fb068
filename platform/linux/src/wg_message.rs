//! WireGuard generic netlink messages, as plain values: a [`DeviceUpdate`] becomes a list of
//! `WG_CMD_SET_DEVICE` messages, a `WG_CMD_GET_DEVICE` dump becomes a [`DeviceState`]. No IO
//! here, so all of it is tested without root.

use ipnet::IpNet;
use netlink_packet_core::Emitable;
use netlink_packet_wireguard::{
    WireguardAddressFamily, WireguardAllowedIp, WireguardAllowedIpAttr, WireguardAttribute,
    WireguardCmd, WireguardMessage, WireguardPeer, WireguardPeerAttribute, WireguardPeerFlags,
};
use std::net::IpAddr;
use std::time::{Duration, SystemTime};
use wgmesh_device::{DeviceState, DeviceUpdate, PeerConfig, PeerState, PeerUpdate};
use wgmesh_keys::{PresharedKey, PrivateKey, PublicKey};

/// Largest `WG_CMD_SET_DEVICE` message we send, netlink and genetlink headers included.
///
/// `wg(8)` builds its messages in a libmnl buffer of `MNL_SOCKET_BUFFER_SIZE` (the page size
/// capped at 8 KiB, so 4 KiB on x86) and starts a new message whenever the next peer or allowed
/// IP would not fit. We do the same with the same budget: the kernel would accept more, but a
/// message this size is far from every limit (socket buffers, `nlmsg_len`, attribute lengths).
pub const MAX_SET_MESSAGE_LEN: usize = 4096;

/// `struct nlmsghdr` + `struct genlmsghdr`.
const HEADERS_LEN: usize = 16 + 4;
/// `struct nlattr`.
const NLA_HEADER_LEN: usize = 4;

/// Splits `update` into `WG_CMD_SET_DEVICE` messages of at most `max_len` bytes each.
///
/// The first message carries the device attributes (private key, listen port). Peers follow in
/// order; when a peer's allowed IPs do not fit, the peer is continued in the next message with
/// only its public key and the remaining allowed IPs, so `WGPEER_F_REPLACE_ALLOWEDIPS` (and every
/// other per-peer setting) is sent once, with the first chunk — exactly what `wg setconf` does.
/// An empty update yields no message.
pub fn set_device_messages(
    interface: &str,
    update: &DeviceUpdate,
    max_len: usize,
) -> Vec<WireguardMessage> {
    let mut builder = SetBuilder::new(interface, max_len);
    if let Some(key) = &update.private_key {
        builder.push_device(WireguardAttribute::PrivateKey(*key.expose_bytes()));
    }
    if let Some(port) = update.listen_port {
        builder.push_device(WireguardAttribute::ListenPort(port));
    }
    for peer in &update.peers {
        builder.push_peer(peer);
    }
    builder.finish()
}

struct SetBuilder<'a> {
    interface: &'a str,
    max_len: usize,
    messages: Vec<WireguardMessage>,
    attributes: Vec<WireguardAttribute>,
    peers: Vec<WireguardPeer>,
    /// Bytes used by `attributes` and `peers` (with the peers nest header once there are peers).
    used: usize,
}

impl<'a> SetBuilder<'a> {
    fn new(interface: &'a str, max_len: usize) -> Self {
        let mut builder = Self {
            interface,
            max_len,
            messages: Vec::new(),
            attributes: Vec::new(),
            peers: Vec::new(),
            used: 0,
        };
        builder.start_message();
        builder
    }

    fn start_message(&mut self) {
        let name = WireguardAttribute::IfName(self.interface.to_owned());
        self.used = HEADERS_LEN + name.buffer_len();
        self.attributes = vec![name];
        self.peers = Vec::new();
    }

    fn flush(&mut self) {
        let mut attributes = std::mem::take(&mut self.attributes);
        let peers = std::mem::take(&mut self.peers);
        if !peers.is_empty() {
            attributes.push(WireguardAttribute::Peers(peers));
        }
        // A message with only the interface name would be a no-op.
        if attributes.len() > 1 {
            self.messages.push(WireguardMessage {
                cmd: WireguardCmd::SetDevice,
                attributes,
            });
        }
        self.start_message();
    }

    fn push_device(&mut self, attribute: WireguardAttribute) {
        self.used += attribute.buffer_len();
        self.attributes.push(attribute);
    }

    /// Bytes still free in the current message for one more peer.
    fn room(&self) -> usize {
        let nest = if self.peers.is_empty() {
            NLA_HEADER_LEN
        } else {
            0
        };
        self.max_len.saturating_sub(self.used + nest)
    }

    fn push_peer(&mut self, peer: &PeerUpdate) {
        let key = WireguardPeerAttribute::PublicKey(*peer.public_key.as_bytes());
        let settings = peer_settings(peer);
        let ips: Vec<WireguardAllowedIp> = if peer.remove {
            Vec::new()
        } else {
            peer.allowed_ips.iter().map(allowed_ip).collect()
        };
        let mut remaining = ips.as_slice();
        let mut first = true;
        loop {
            let mut attributes = vec![key.clone()];
            if first {
                attributes.extend(settings.iter().cloned());
            }
            let fixed = NLA_HEADER_LEN + attributes.as_slice().buffer_len();
            let needed = fixed
                + remaining
                    .first()
                    .map_or(0, |ip| NLA_HEADER_LEN + ip.buffer_len());
            if needed > self.room() && !self.peers.is_empty() {
                self.flush();
            }
            let room = self.room();
            let mut len = fixed;
            let mut count = 0;
            if !remaining.is_empty() {
                len += NLA_HEADER_LEN;
                // At least one allowed IP per chunk, so a chunk always makes progress.
                while count < remaining.len()
                    && (count == 0 || len + remaining[count].buffer_len() <= room)
                {
                    len += remaining[count].buffer_len();
                    count += 1;
                }
                attributes.push(WireguardPeerAttribute::AllowedIps(
                    remaining[..count].to_vec(),
                ));
            }
            if self.peers.is_empty() {
                self.used += NLA_HEADER_LEN;
            }
            self.used += len;
            self.peers.push(WireguardPeer(attributes));
            remaining = &remaining[count..];
            first = false;
            if remaining.is_empty() {
                break;
            }
            self.flush();
        }
    }

    fn finish(mut self) -> Vec<WireguardMessage> {
        self.flush();
        self.messages
    }
}

/// Everything about a peer except its key and allowed IPs: sent with its first chunk only.
fn peer_settings(peer: &PeerUpdate) -> Vec<WireguardPeerAttribute> {
    let mut attributes = Vec::new();
    if peer.remove {
        attributes.push(WireguardPeerAttribute::Flags(WireguardPeerFlags::RemoveMe));
        return attributes;
    }
    if peer.replace_allowed_ips {
        attributes.push(WireguardPeerAttribute::Flags(
            WireguardPeerFlags::ReplaceAllowedIps,
        ));
    }
    if let Some(psk) = &peer.preshared_key {
        attributes.push(WireguardPeerAttribute::PresharedKey(*psk.expose_bytes()));
    }
    if let Some(endpoint) = peer.endpoint {
        attributes.push(WireguardPeerAttribute::Endpoint(endpoint));
    }
    if let Some(keepalive) = peer.persistent_keepalive {
        attributes.push(WireguardPeerAttribute::PersistentKeepalive(keepalive));
    }
    attributes
}

fn allowed_ip(net: &IpNet) -> WireguardAllowedIp {
    let net = net.trunc();
    let family = match net {
        IpNet::V4(_) => WireguardAddressFamily::Ipv4,
        IpNet::V6(_) => WireguardAddressFamily::Ipv6,
    };
    WireguardAllowedIp(vec![
        WireguardAllowedIpAttr::Family(family),
        WireguardAllowedIpAttr::IpAddr(net.addr()),
        WireguardAllowedIpAttr::Cidr(net.prefix_len()),
    ])
}

/// The `WG_CMD_GET_DEVICE` dump request for `interface`.
pub fn get_device_message(interface: &str) -> WireguardMessage {
    WireguardMessage {
        cmd: WireguardCmd::GetDevice,
        attributes: vec![WireguardAttribute::IfName(interface.to_owned())],
    }
}

/// Folds the messages of a `WG_CMD_GET_DEVICE` dump into one normalised [`DeviceState`].
///
/// The kernel fills each message up to its buffer and carries on in the next one; a peer whose
/// allowed IPs did not fit appears again at the start of the next message (public key plus the
/// rest of its allowed IPs), so peers are merged by public key. Zero values mean "unset" in the
/// kernel's answer: an all-zero preshared key, a keepalive of 0, a handshake time of 0.
/// What is wrong with a `WG_CMD_GET_DEVICE` dump ([`device_state_from_dump`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DumpError {
    #[error("a peer in the WireGuard dump has no public key")]
    PeerWithoutKey,
    #[error("peer {peer}: allowed IP without address or mask")]
    AllowedIpIncomplete { peer: String },
    #[error("peer {peer}: allowed IP {address}/{cidr} is invalid")]
    AllowedIpInvalid {
        peer: String,
        address: IpAddr,
        cidr: u8,
    },
}

pub fn device_state_from_dump(messages: &[WireguardMessage]) -> Result<DeviceState, DumpError> {
    let mut state = DeviceState::default();
    for message in messages {
        for attribute in &message.attributes {
            match attribute {
                WireguardAttribute::PrivateKey(bytes) if *bytes != [0; 32] => {
                    state.private_key = Some(PrivateKey::from_bytes_clamped(*bytes));
                }
                WireguardAttribute::ListenPort(port) => state.listen_port = *port,
                WireguardAttribute::Peers(peers) => {
                    for peer in peers {
                        merge_peer(&mut state.peers, peer)?;
                    }
                }
                _ => {}
            }
        }
    }
    state.normalise();
    Ok(state)
}

fn merge_peer(peers: &mut Vec<PeerState>, peer: &WireguardPeer) -> Result<(), DumpError> {
    let key = peer
        .iter()
        .find_map(|a| match a {
            WireguardPeerAttribute::PublicKey(key) => Some(PublicKey::from_bytes(*key)),
            _ => None,
        })
        .ok_or(DumpError::PeerWithoutKey)?;
    let index = match peers.iter().position(|p| p.config.public_key == key) {
        Some(index) => index,
        None => {
            peers.push(PeerState::new(PeerConfig::new(key)));
            peers.len() - 1
        }
    };
    let state = &mut peers[index];
    for attribute in peer.iter() {
        match attribute {
            WireguardPeerAttribute::PresharedKey(bytes) => {
                state.config.preshared_key =
                    (*bytes != [0; 32]).then(|| PresharedKey::from_bytes(*bytes));
            }
            WireguardPeerAttribute::Endpoint(endpoint) => state.config.endpoint = Some(*endpoint),
            WireguardPeerAttribute::PersistentKeepalive(seconds) => {
                state.config.persistent_keepalive = (*seconds != 0).then_some(*seconds);
            }
            WireguardPeerAttribute::LastHandshake(time) => {
                state.last_handshake = handshake_time(time.seconds, time.nano_seconds);
            }
            WireguardPeerAttribute::RxBytes(bytes) => state.rx_bytes = *bytes,
            WireguardPeerAttribute::TxBytes(bytes) => state.tx_bytes = *bytes,
            WireguardPeerAttribute::AllowedIps(ips) => {
                for ip in ips {
                    state
                        .config
                        .allowed_ips
                        .push(parse_allowed_ip(ip, &key.short())?);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// `None` for the kernel's "never" (zero); clamps nonsense negative values to "never" too.
fn handshake_time(seconds: i64, nanos: i64) -> Option<SystemTime> {
    if seconds == 0 && nanos == 0 {
        return None;
    }
    let seconds = u64::try_from(seconds).ok()?;
    let nanos = u32::try_from(nanos).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(seconds, nanos))
}

fn parse_allowed_ip(ip: &WireguardAllowedIp, peer: &str) -> Result<IpNet, DumpError> {
    let mut address: Option<IpAddr> = None;
    let mut cidr: Option<u8> = None;
    for attribute in ip.iter() {
        match attribute {
            WireguardAllowedIpAttr::IpAddr(a) => address = Some(*a),
            WireguardAllowedIpAttr::Cidr(c) => cidr = Some(*c),
            _ => {}
        }
    }
    let (Some(address), Some(cidr)) = (address, cidr) else {
        return Err(DumpError::AllowedIpIncomplete {
            peer: peer.to_owned(),
        });
    };
    IpNet::new(address, cidr).map_err(|_| DumpError::AllowedIpInvalid {
        peer: peer.to_owned(),
        address,
        cidr,
    })
}

/// Overwrites key material inside messages once they are serialised or parsed. Best effort: the
/// netlink types are not `Zeroize`, but this leaves no key in the buffers we own.
pub fn scrub_keys(messages: &mut [WireguardMessage]) {
    for message in messages {
        for attribute in &mut message.attributes {
            match attribute {
                WireguardAttribute::PrivateKey(bytes) => *bytes = [0; 32],
                WireguardAttribute::Peers(peers) => {
                    for peer in peers {
                        for attribute in &mut peer.0 {
                            if let WireguardPeerAttribute::PresharedKey(bytes) = attribute {
                                *bytes = [0; 32];
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
#[path = "wg_message_tests.rs"]
mod tests;
