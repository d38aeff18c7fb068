//! Device state and updates, independent of how they reach the device.

use ipnet::IpNet;
use std::net::SocketAddr;
use std::time::SystemTime;
use wgmesh_keys::{PresharedKey, PrivateKey, PublicKey};

/// A peer's configuration, as desired or as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub public_key: PublicKey,
    pub preshared_key: Option<PresharedKey>,
    pub endpoint: Option<SocketAddr>,
    /// Kept sorted and deduplicated (see [`PeerConfig::normalise`]) so that comparing two lists
    /// is comparing two sets.
    pub allowed_ips: Vec<IpNet>,
    /// Seconds; `None` means off.
    pub persistent_keepalive: Option<u16>,
}

impl PeerConfig {
    pub fn new(public_key: PublicKey) -> Self {
        Self {
            public_key,
            preshared_key: None,
            endpoint: None,
            allowed_ips: Vec::new(),
            persistent_keepalive: None,
        }
    }

    /// Sorts and deduplicates allowed IPs and truncates host bits, so equal sets compare equal.
    pub fn normalise(&mut self) {
        for net in &mut self.allowed_ips {
            *net = net.trunc();
        }
        self.allowed_ips.sort();
        self.allowed_ips.dedup();
        if self.persistent_keepalive == Some(0) {
            self.persistent_keepalive = None;
        }
    }
}

/// A peer as the device reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerState {
    pub config: PeerConfig,
    pub last_handshake: Option<SystemTime>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

impl PeerState {
    pub fn new(config: PeerConfig) -> Self {
        Self {
            config,
            last_handshake: None,
            rx_bytes: 0,
            tx_bytes: 0,
        }
    }
}

/// What the device holds now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceState {
    pub private_key: Option<PrivateKey>,
    pub listen_port: u16,
    pub peers: Vec<PeerState>,
}

impl DeviceState {
    /// One peer, by linear search: for a single lookup. Callers that look up every peer use
    /// [`DeviceState::by_key`], which keeps a pass over 10,000 peers linear.
    pub fn peer(&self, key: &PublicKey) -> Option<&PeerState> {
        self.peers.iter().find(|p| p.config.public_key == *key)
    }

    /// The peers indexed by public key.
    pub fn by_key(&self) -> std::collections::HashMap<PublicKey, &PeerState> {
        self.peers
            .iter()
            .map(|p| (p.config.public_key, p))
            .collect()
    }

    /// Normalises every peer; backends call this on what they read.
    pub fn normalise(&mut self) {
        for peer in &mut self.peers {
            peer.config.normalise();
        }
        self.peers.sort_by_key(|p| p.config.public_key);
    }

    /// The semantics of an update, shared by the fake backend and the diff's property tests:
    /// applying `update` to a device in state `self` leaves it in the returned state.
    pub fn apply(&mut self, update: &DeviceUpdate) {
        if let Some(key) = &update.private_key {
            self.private_key = Some(key.clone());
        }
        if let Some(port) = update.listen_port {
            self.listen_port = port;
        }
        for change in &update.peers {
            let position = self
                .peers
                .iter()
                .position(|p| p.config.public_key == change.public_key);
            if change.remove {
                if let Some(i) = position {
                    self.peers.remove(i);
                }
                continue;
            }
            let index = position.unwrap_or_else(|| {
                self.peers
                    .push(PeerState::new(PeerConfig::new(change.public_key)));
                self.peers.len() - 1
            });
            let peer = &mut self.peers[index].config;
            if let Some(psk) = &change.preshared_key {
                peer.preshared_key = Some(psk.clone());
            }
            if let Some(endpoint) = change.endpoint {
                peer.endpoint = Some(endpoint);
            }
            if let Some(keepalive) = change.persistent_keepalive {
                peer.persistent_keepalive = (keepalive != 0).then_some(keepalive);
            }
            if change.replace_allowed_ips {
                peer.allowed_ips.clear();
            }
            peer.allowed_ips.extend(change.allowed_ips.iter().copied());
            peer.normalise();
        }
        self.normalise();
    }
}

/// What wgmesh wants the device to hold. Peers not listed here are removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredDevice {
    pub private_key: PrivateKey,
    pub listen_port: u16,
    pub peers: Vec<PeerConfig>,
}

/// One peer's change. Field meanings follow WireGuard's own `set` operation (as in `wg set`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerUpdate {
    pub public_key: PublicKey,
    pub remove: bool,
    pub preshared_key: Option<PresharedKey>,
    pub endpoint: Option<SocketAddr>,
    /// `Some(0)` turns keepalive off.
    pub persistent_keepalive: Option<u16>,
    /// Replace the allowed IPs with `allowed_ips` instead of adding to them.
    pub replace_allowed_ips: bool,
    pub allowed_ips: Vec<IpNet>,
}

impl PeerUpdate {
    pub fn new(public_key: PublicKey) -> Self {
        Self {
            public_key,
            remove: false,
            preshared_key: None,
            endpoint: None,
            persistent_keepalive: None,
            replace_allowed_ips: false,
            allowed_ips: Vec::new(),
        }
    }

    pub fn remove(public_key: PublicKey) -> Self {
        Self {
            remove: true,
            ..Self::new(public_key)
        }
    }

    /// Whether applying this changes nothing.
    pub fn is_noop(&self) -> bool {
        !self.remove
            && self.preshared_key.is_none()
            && self.endpoint.is_none()
            && self.persistent_keepalive.is_none()
            && !self.replace_allowed_ips
            && self.allowed_ips.is_empty()
    }
}

/// A set of changes to apply in one write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceUpdate {
    pub private_key: Option<PrivateKey>,
    pub listen_port: Option<u16>,
    pub peers: Vec<PeerUpdate>,
}

impl DeviceUpdate {
    pub fn is_empty(&self) -> bool {
        self.private_key.is_none() && self.listen_port.is_none() && self.peers.is_empty()
    }
}
