//! What the daemon's tasks share: the member table, our advertised routes, the last reload.

use crate::control::{ExchangeCounters, PeerReport, ReconcileCounters, ReloadReport, StatusReport};
use crate::logging::RepeatLimiter;
use ipnet::IpNet;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::UNIX_EPOCH;
use wgmesh_device::{BackendKind, DeviceState, PeerConfig, PeerState};
use wgmesh_keys::PublicKey;
use wgmesh_mesh::{AcceptedRoutes, MemberTable};
use wgmesh_names::MemberName;

/// Facts fixed at startup.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub interface: String,
    pub backend: BackendKind,
    pub public_key: PublicKey,
    pub listen_port: u16,
    pub control_port: u16,
    pub mesh_prefixes: Vec<IpNet>,
    pub relay: bool,
}

/// Our own mesh addresses; they change only when an IPv4 collision makes us re-address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnAddresses {
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
    pub collision_counter: u8,
}

/// Mutable state behind one lock; every holder keeps it for microseconds (no IO under it).
#[derive(Debug)]
pub struct MeshState {
    pub own: OwnAddresses,
    /// Our public mapping as STUN reports it, when there is one to advertise.
    pub public_endpoint: Option<std::net::SocketAddr>,
    /// Set when the host's own addresses changed: the next reconcile re-sets every peer's
    /// endpoint, which clears the source address WireGuard pinned for it (its "sticky socket"
    /// would keep sending from an address the host no longer has).
    pub refresh_endpoints: bool,
    /// Members reached directly whose WireGuard tunnel never completed a handshake (found by the
    /// reconciler, taken by the exchange task): their direct path carries our control datagrams
    /// but not WireGuard's, as when only WireGuard's port met a conntrack clash.
    pub silent_tunnels: Vec<PublicKey>,
    /// "disabled", "unknown", "open", "port-preserving NAT", ... (see `wgmesh_nat::NatType`).
    pub nat_type: String,
    pub members: MemberTable,
    pub advertised: Vec<IpNet>,
    /// Which advertised routes are accepted (`accept-routes`, reloadable).
    pub route_policy: wgmesh_mesh::RoutePolicy,
    /// Members heard of by gossip and routed through a relay on trial, until their own proof
    /// arrives (`wgmesh_membership::Event::Relayed`): never written to the peer cache.
    pub on_trial: std::collections::BTreeSet<PublicKey>,
    /// Which members may relay for us (`relays`, reloadable).
    pub relays: wgmesh_mesh::RelaySetting,
    /// Configured servers (STUN, DHT bootstrap, `--peer` seeds) as resolved: no accepted route
    /// may cover one.
    pub servers: Vec<wgmesh_mesh::Protected>,
    pub accepted: AcceptedRoutes,
    pub clock_skew: ClockSkew,
    /// The exchange's drop counters, copied after every datagram for `status`.
    pub exchange: wgmesh_exchange::DropCounters,
    /// The name we announce (`--name`, the reload key `name=`, or the system host name).
    pub own_name: Option<MemberName>,
    /// Members refused because another member holds their address (key → (address, holder)).
    pub contested: std::collections::BTreeMap<PublicKey, (std::net::Ipv4Addr, PublicKey)>,
    /// The host's own addresses as its `Host` last reported them (read at start and when they
    /// change): our record's LAN endpoints and the interfaces the LAN group is joined on.
    pub underlay: Vec<wgmesh_device::HostAddress>,
}

/// Exchange messages refused because the sender's clock is outside the timestamp window
/// (DESIGN.md §8): a member with a wrong clock can never join, and only the operator can fix
/// that, so each source is named in a warning, at most once per [`CLOCK_WARNING_INTERVAL`].
/// (The drops themselves are counted with the others, in [`MeshState::exchange`].)
#[derive(Debug)]
pub struct ClockSkew {
    /// The sender's clock minus ours, in seconds, for the last refused message.
    pub last_offset_secs: Option<i64>,
    warnings: RepeatLimiter,
}

/// Members keep probing every few seconds while they fail; one warning per source this often.
pub const CLOCK_WARNING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(300);

/// Sources warned about individually. A captured datagram replayed after the window from
/// spoofed addresses is stale too, so the table is bounded: further sources share one entry.
const MAX_WARNED_SOURCES: usize = 64;

impl Default for ClockSkew {
    fn default() -> Self {
        Self {
            last_offset_secs: None,
            warnings: RepeatLimiter::new(CLOCK_WARNING_INTERVAL),
        }
    }
}

impl ClockSkew {
    /// Notes a refused message from `source`; `Some(suppressed)` when it is to be logged.
    pub fn observe(
        &mut self,
        source: std::net::IpAddr,
        offset_secs: i64,
        now: std::time::Instant,
    ) -> Option<u64> {
        self.last_offset_secs = Some(offset_secs);
        let mut key = source.to_string();
        if self.warnings.tracked() >= MAX_WARNED_SOURCES - 1 && !self.warnings.tracks(&key) {
            key = "other sources".to_owned();
        }
        self.warnings.should_log(&key, now)
    }
}

#[derive(Debug, Clone)]
pub struct Shared(Arc<Mutex<MeshState>>);

impl Shared {
    pub fn new(own: OwnAddresses, advertised: Vec<IpNet>) -> Self {
        Self(Arc::new(Mutex::new(MeshState {
            own,
            public_endpoint: None,
            refresh_endpoints: false,
            silent_tunnels: Vec::new(),
            nat_type: "unknown".to_owned(),
            members: MemberTable::default(),
            advertised,
            route_policy: wgmesh_mesh::RoutePolicy::default(),
            relays: wgmesh_mesh::RelaySetting::default(),
            on_trial: std::collections::BTreeSet::new(),
            servers: Vec::new(),
            accepted: AcceptedRoutes::default(),
            exchange: wgmesh_exchange::DropCounters::default(),
            clock_skew: ClockSkew::default(),
            own_name: None,
            contested: std::collections::BTreeMap::new(),
            underlay: Vec::new(),
        })))
    }

    pub fn lock(&self) -> MutexGuard<'_, MeshState> {
        // Holders do no IO and cannot leave the table half-updated, so a poisoned lock (a panic
        // elsewhere) still guards consistent data.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What the last reconcile pass read from the device and the totals after it, published for
/// readers that must never wait for a pass (`wgmesh status`, metrics scrapes): a pass can take
/// seconds (a wireguard-go restart), this lock is held only to copy.
#[derive(Debug, Clone, Default)]
pub struct LastPass {
    /// The device as the pass read it, without the private key and the preshared keys.
    pub device: Option<DeviceState>,
    pub stats: ReconcileCounters,
}

#[derive(Debug, Clone, Default)]
pub struct LastPassCell(Arc<Mutex<LastPass>>);

impl LastPassCell {
    pub fn read(&self) -> LastPass {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Publishes a pass: what it read and the totals after it.
    pub fn publish(&self, observed: &DeviceState, stats: ReconcileCounters) {
        let device = without_keys(observed);
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = LastPass {
            device: Some(device),
            stats,
        };
    }

    /// Replaces the device only (a read between passes, for `status`); the totals stay.
    pub fn publish_device(&self, observed: &DeviceState) {
        let device = without_keys(observed);
        self.0.lock().unwrap_or_else(PoisonError::into_inner).device = Some(device);
    }
}

/// The device without the private key and the preshared keys.
fn without_keys(observed: &DeviceState) -> DeviceState {
    DeviceState {
        private_key: None,
        listen_port: observed.listen_port,
        peers: observed
            .peers
            .iter()
            .map(|peer| PeerState {
                config: PeerConfig {
                    public_key: peer.config.public_key,
                    preshared_key: None,
                    endpoint: peer.config.endpoint,
                    allowed_ips: peer.config.allowed_ips.clone(),
                    persistent_keepalive: peer.config.persistent_keepalive,
                },
                last_handshake: peer.last_handshake,
                rx_bytes: peer.rx_bytes,
                tx_bytes: peer.tx_bytes,
            })
            .collect(),
    }
}

/// Builds `status --json` from the node, the mesh state and a fresh device read.
pub fn status_report(
    node: &NodeInfo,
    state: &MeshState,
    device: Option<&DeviceState>,
    reload: ReloadReport,
    reconcile: ReconcileCounters,
) -> StatusReport {
    let naming = state
        .members
        .naming(state.own_name.as_ref().map(|name| (node.public_key, name)));
    let peers = state
        .members
        .iter()
        .map(|member| {
            let observed = device.and_then(|d| d.peer(&member.public_key));
            let named = naming.get(&member.public_key);
            PeerReport {
                version: member.version.clone(),
                name: named.map(|n| n.display().to_owned()),
                name_contested: named.is_some_and(|n| n.contested),
                public_key: member.public_key.to_base64(),
                mesh_ipv4: member.mesh_ipv4.to_string(),
                mesh_ipv6: member.mesh_ipv6.to_string(),
                endpoint: observed
                    .and_then(|p| p.config.endpoint)
                    .or(member.endpoint)
                    .map(|e| e.to_string()),
                last_handshake_unix: observed
                    .and_then(|p| p.last_handshake)
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map(|d| d.as_secs()),
                rx_bytes: observed.map_or(0, |p| p.rx_bytes),
                tx_bytes: observed.map_or(0, |p| p.tx_bytes),
                source: member.source.as_str().to_owned(),
                relayed_via: member.relay_via.map(|k| k.to_base64()),
                routes: state
                    .accepted
                    .routes_of(&member.public_key)
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            }
        })
        .collect();
    StatusReport {
        interface: node.interface.clone(),
        backend: node.backend.to_string(),
        public_key: node.public_key.to_base64(),
        mesh_ipv4: state.own.ipv4.to_string(),
        mesh_ipv6: state.own.ipv6.to_string(),
        listen_port: node.listen_port,
        control_port: node.control_port,
        advertised_routes: state.advertised.iter().map(ToString::to_string).collect(),
        peers,
        nat_type: state.nat_type.clone(),
        public_endpoint: state.public_endpoint.map(|e| e.to_string()),
        pid: std::process::id(),
        reload,
        reconcile,
        exchange: ExchangeCounters {
            aead_opens: state.exchange.aead_opens(),
            dropped: state
                .exchange
                .iter()
                .map(|(reason, count)| (reason.as_str().to_owned(), count))
                .collect(),
            last_clock_offset_secs: state.clock_skew.last_offset_secs,
        },
        version: Some(crate::VERSION.to_owned()),
        name: state.own_name.as_ref().map(ToString::to_string),
        contested: state
            .contested
            .iter()
            .map(|(key, (ip, holder))| crate::control::ContestedReport {
                public_key: key.to_base64(),
                mesh_ipv4: ip.to_string(),
                holder: holder.to_base64(),
            })
            .collect(),
        accept_routes: Some(state.route_policy.to_string()),
        relays: Some(state.relays.to_string()),
        refused_routes: state
            .accepted
            .rejected
            .iter()
            .map(|(key, route, reason)| crate::control::RefusedRouteReport {
                public_key: key.to_base64(),
                route: route.to_string(),
                reason: reason.code().to_owned(),
                detail: reason.to_string(),
            })
            .collect(),
        relay_pairs: Vec::new(),
    }
}

/// Wall-clock milliseconds now (protocol timestamps and budgets; never for timeouts).
pub fn now_ms() -> u64 {
    unix_ms(std::time::SystemTime::now())
}

/// Milliseconds since the Unix epoch (0 for a clock before it).
pub fn unix_ms(time: std::time::SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;
    use std::time::{Duration, Instant};

    #[test]
    fn a_published_pass_keeps_no_key_material() {
        let key = wgmesh_keys::PrivateKey::from_bytes_clamped([7; 32]);
        let mut peer = PeerState::new(PeerConfig::new(key.public_key()));
        peer.config.preshared_key = Some(wgmesh_keys::PresharedKey::from_bytes([9; 32]));
        peer.rx_bytes = 10;
        peer.last_handshake = Some(std::time::SystemTime::now());
        let observed = DeviceState {
            private_key: Some(key),
            listen_port: 51820,
            peers: vec![peer.clone()],
        };
        let cell = LastPassCell::default();
        assert!(cell.read().device.is_none());
        let stats = ReconcileCounters {
            runs: 1,
            device_writes: 2,
            route_writes: 3,
        };
        cell.publish(&observed, stats);
        let mut later = observed.clone();
        later.peers[0].rx_bytes = 20;
        cell.publish_device(&later);
        peer.rx_bytes = 20;
        let pass = cell.read();
        assert_eq!(pass.stats, stats);
        let device = pass.device.unwrap();
        assert!(device.private_key.is_none());
        assert!(device.peers[0].config.preshared_key.is_none());
        peer.config.preshared_key = None;
        assert_eq!(device.peers, vec![peer]);
    }

    #[test]
    fn clock_skew_warns_once_per_source_per_interval() {
        let mut skew = ClockSkew::default();
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let start = Instant::now();
        assert_eq!(skew.observe(a, 300, start), Some(0));
        assert_eq!(skew.observe(a, 301, start + Duration::from_secs(5)), None);
        assert_eq!(
            skew.observe(b, -300, start + Duration::from_secs(6)),
            Some(0)
        );
        assert_eq!(
            skew.observe(a, 302, start + CLOCK_WARNING_INTERVAL),
            Some(1)
        );
        assert_eq!(skew.last_offset_secs, Some(302));
    }

    #[test]
    fn clock_skew_warnings_from_many_sources_are_bounded() {
        let mut skew = ClockSkew::default();
        let now = Instant::now();
        let logged = (0..1000u32)
            .filter(|i| {
                let source = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
                skew.observe(source, -3600, now).is_some()
            })
            .count();
        // One per tracked source (the last slot is the shared one), then silence.
        assert_eq!(logged, MAX_WARNED_SOURCES);
        assert_eq!(skew.warnings.tracked(), MAX_WARNED_SOURCES);
    }
}
