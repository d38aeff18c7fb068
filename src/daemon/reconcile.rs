//! observe → diff → apply (DESIGN.md §6). Runs on a blocking thread: every step is a short
//! netlink or UAPI round trip.

use super::platform::configure_link;
use super::state::{LastPassCell, NodeInfo, Shared};
use crate::control::ReconcileCounters;
use crate::logging::RepeatLimiter;
use anyhow::Context as _;
use ipnet::IpNet;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use wgmesh_device::{
    DeviceOrigin, DeviceState, DeviceUpdate, PeerState, RouteChange, RouteControl as _,
    WireguardBackend, diff_device, diff_routes,
};
use wgmesh_linux::{InterfaceRoutes, Rtnl};
use wgmesh_mesh::{DeviceSettings, LocalView, accept_routes, desired_device};

/// Members unseen this long are removed (DESIGN.md §6 default).
const MEMBER_TTL: Duration = Duration::from_secs(600);

/// Link settings, re-applied when a restarted wireguard-go recreated the TUN device.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    pub interface: String,
    pub addresses: Vec<IpNet>,
    pub managed: Vec<IpNet>,
    pub mtu: u32,
}

/// What one pass changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub device_writes: usize,
    pub route_writes: usize,
}

pub struct Reconciler {
    pub backend: Box<dyn WireguardBackend>,
    pub rtnl: Arc<Rtnl>,
    pub routes: InterfaceRoutes,
    pub link: LinkConfig,
    pub settings: DeviceSettings,
    pub shared: Shared,
    pub node: NodeInfo,
    pub stats: ReconcileCounters,
    /// `<state-dir>/<iface>.peers.json` and what was last written to it.
    pub cache_path: Option<std::path::PathBuf>,
    cached: Vec<wgmesh_state::CachedPeer>,
    /// Until then, nothing is removed (see [`Reconciler::hold_removals`]).
    hold_removals_until: Option<Instant>,
    failures: RepeatLimiter,
    rejected_logged: Vec<(wgmesh_keys::PublicKey, IpNet)>,
    /// New peers whose handshake this end starts later, if none has happened by then.
    nudges: Vec<(wgmesh_keys::PublicKey, Instant)>,
    /// Where each pass is published, when something reads it (`--metrics-listen`).
    last_pass: Option<LastPassCell>,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler")
            .field("interface", &self.link.interface)
            .finish_non_exhaustive()
    }
}

use super::state::unix_ms;

impl Reconciler {
    pub fn new(
        backend: Box<dyn WireguardBackend>,
        rtnl: Arc<Rtnl>,
        routes: InterfaceRoutes,
        link: LinkConfig,
        settings: DeviceSettings,
        shared: Shared,
        node: NodeInfo,
    ) -> Self {
        Self {
            backend,
            rtnl,
            routes,
            link,
            settings,
            shared,
            node,
            stats: ReconcileCounters::default(),
            hold_removals_until: None,
            cache_path: None,
            cached: Vec::new(),
            failures: RepeatLimiter::new(Duration::from_secs(60)),
            rejected_logged: Vec::new(),
            nudges: Vec::new(),
            last_pass: None,
        }
    }

    /// Publishes every pass from now on into `cell`.
    pub fn publish_passes(&mut self, cell: LastPassCell) {
        self.last_pass = Some(cell);
    }

    /// Keeps peers and routes that are not (yet) desired for `grace`: after adopting a device
    /// the member table starts empty, and removing everything until discovery refills it would
    /// drop the tunnels `--keep-interface` kept.
    pub fn hold_removals(&mut self, grace: Duration) {
        self.hold_removals_until = Some(Instant::now() + grace);
    }

    fn holding_removals(&mut self) -> bool {
        match self.hold_removals_until {
            Some(until) if Instant::now() < until => true,
            Some(_) => {
                self.hold_removals_until = None;
                false
            }
            None => false,
        }
    }

    /// One pass. Errors are returned only when the device itself cannot be read; a failing
    /// peer or route is logged (rate-limited) and the rest proceeds.
    pub fn run_once(&mut self) -> anyhow::Result<Outcome> {
        let mut outcome = Outcome::default();
        if self.backend.ensure_device().context("WireGuard device")? == DeviceOrigin::Restarted {
            tracing::warn!(interface = %self.link.interface, "wireguard-go had stopped; restarted it, restoring peers");
            self.relink()?;
        }
        let own = self.shared.lock().own;
        let addresses = super::platform::interface_addresses(own.ipv4, own.ipv6).to_vec();
        if addresses != self.link.addresses {
            // Re-addressed after an IPv4 collision: the stale mesh address goes with it.
            self.link.addresses = addresses;
            self.relink()?;
        }
        let observed = self
            .backend
            .read()
            .context("reading the WireGuard device")?;
        let now = SystemTime::now();
        let connected = connected_networks(&self.link.interface);
        let (desired, accepted) = {
            let mut state = self.shared.lock();
            for peer in &observed.peers {
                let fresh = peer
                    .last_handshake
                    .and_then(|t| now.duration_since(t).ok())
                    .is_some_and(|age| age < Duration::from_secs(180));
                if fresh {
                    state.members.touch(&peer.config.public_key, unix_ms(now));
                }
            }
            for gone in state
                .members
                .expire(unix_ms(now), MEMBER_TTL.as_millis() as u64)
            {
                tracing::info!(peer = %gone.public_key.short(), mesh_ipv4 = %gone.mesh_ipv4, "member expired: unseen for too long");
            }
            let view = LocalView {
                accept_routes: self.node.accept_routes,
                mesh_prefixes: self.node.mesh_prefixes.clone(),
                connected,
                own_routes: state.advertised.clone(),
            };
            let accepted = accept_routes(&view, &state.members);
            let desired =
                desired_device(&self.settings, &state.members, &accepted, &view.connected);
            state.accepted = accepted.clone();
            (desired, accepted)
        };
        self.log_rejections(&accepted.rejected);
        let wanted_routes = accepted.all();
        let mut update = diff_device(&observed, &desired, now);
        let observed_by_key = observed.by_key();
        let own = self.settings.private_key.public_key();
        let nudged = nudge_handshakes(
            &own,
            &observed_by_key,
            &mut update,
            &mut self.nudges,
            Instant::now(),
        );
        self.follow_moved_members(&observed_by_key, &desired, &mut update);
        if std::mem::take(&mut self.shared.lock().refresh_endpoints) {
            for peer in &observed.peers {
                let Some(endpoint) = peer.config.endpoint else {
                    continue;
                };
                match update
                    .peers
                    .iter_mut()
                    .find(|p| p.public_key == peer.config.public_key)
                {
                    Some(change) if change.remove || change.endpoint.is_some() => {}
                    Some(change) => change.endpoint = Some(endpoint),
                    None => update.peers.push(wgmesh_device::PeerUpdate {
                        endpoint: Some(endpoint),
                        ..wgmesh_device::PeerUpdate::new(peer.config.public_key)
                    }),
                }
            }
        }
        let holding = self.holding_removals();
        if holding {
            update.peers.retain(|peer| !peer.remove);
        }
        if !update.is_empty() {
            outcome.device_writes = self.apply(&update);
        }
        if !nudged.is_empty() {
            outcome.device_writes += self.end_nudges(&nudged);
        }
        outcome.route_writes = self.sync_routes(&wanted_routes, holding);
        self.update_peer_cache(now);
        self.stats.runs += 1;
        self.stats.device_writes += outcome.device_writes as u64;
        self.stats.route_writes += outcome.route_writes as u64;
        if let Some(cell) = &self.last_pass {
            cell.publish(&observed, self.stats);
        }
        Ok(outcome)
    }

    /// Turns the nudge keepalive off again right after the write that turned it on: the
    /// keepalive, and the handshake it starts, left when keepalive turned on, and the device is
    /// steady as soon as the mesh is.
    fn end_nudges(&mut self, nudged: &[wgmesh_keys::PublicKey]) -> usize {
        tracing::debug!(
            peers = nudged.len(),
            "started WireGuard handshakes with new peers"
        );
        let reset = DeviceUpdate {
            peers: nudged
                .iter()
                .map(|key| wgmesh_device::PeerUpdate {
                    persistent_keepalive: Some(0),
                    ..wgmesh_device::PeerUpdate::new(*key)
                })
                .collect(),
            ..DeviceUpdate::default()
        };
        match self.backend.apply(&reset) {
            Ok(()) => 1,
            Err(err) => {
                // The next pass's diff turns it off instead.
                tracing::debug!(error = %err, "cannot end the handshake nudge yet");
                0
            }
        }
    }

    /// When a pending handshake nudge wants the next pass.
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.nudges.iter().map(|(_, at)| *at).min()
    }

    /// The diff keeps a recently handshook peer's endpoint (WireGuard roamed it there). A member
    /// that has since been verified from a new address has moved, and a handshake from before
    /// the move says nothing about its new endpoint: point WireGuard at the new one.
    fn follow_moved_members(
        &self,
        observed: &HashMap<wgmesh_keys::PublicKey, &PeerState>,
        desired: &wgmesh_device::DesiredDevice,
        update: &mut DeviceUpdate,
    ) {
        let state = self.shared.lock();
        for want in &desired.peers {
            let (Some(member), Some(current), Some(endpoint)) = (
                state.members.get(&want.public_key),
                observed.get(&want.public_key),
                want.endpoint,
            ) else {
                continue;
            };
            let handshake_ms = current.last_handshake.map_or(0, unix_ms);
            if member.moved_at_ms == 0
                || handshake_ms >= member.moved_at_ms
                || current.config.endpoint == Some(endpoint)
            {
                continue;
            }
            match update
                .peers
                .iter_mut()
                .find(|p| p.public_key == want.public_key)
            {
                Some(change) => change.endpoint = Some(endpoint),
                None => update.peers.push(wgmesh_device::PeerUpdate {
                    endpoint: Some(endpoint),
                    ..wgmesh_device::PeerUpdate::new(want.public_key)
                }),
            }
        }
    }

    /// Applies in one write; if the batch fails, peer by peer so one bad peer does not block
    /// the others.
    fn apply(&mut self, update: &DeviceUpdate) -> usize {
        log_update(update);
        match self.backend.apply(update) {
            Ok(()) => {
                self.failures.clear("device");
                return 1;
            }
            Err(err) => {
                tracing::debug!(error = %err, "batch apply failed; applying peer by peer");
            }
        }
        let mut writes = 0;
        let header = DeviceUpdate {
            private_key: update.private_key.clone(),
            listen_port: update.listen_port,
            peers: vec![],
        };
        if !header.is_empty() {
            match self.backend.apply(&header) {
                Ok(()) => writes += 1,
                Err(err) => self.fail("device", &err),
            }
        }
        for peer in &update.peers {
            let single = DeviceUpdate {
                peers: vec![peer.clone()],
                ..DeviceUpdate::default()
            };
            let key = format!("peer {}", peer.public_key.short());
            match self.backend.apply(&single) {
                Ok(()) => {
                    writes += 1;
                    self.failures.clear(&key);
                }
                Err(err) => self.fail(&key, &err),
            }
        }
        writes
    }

    fn sync_routes(&mut self, wanted: &[IpNet], keep_unwanted: bool) -> usize {
        let owned = match self.routes.owned_routes() {
            Ok(owned) => owned,
            Err(err) => {
                self.fail("route dump", &err);
                return 0;
            }
        };
        let mut writes = 0;
        let changes = diff_routes(&owned, wanted);
        for change in changes
            .into_iter()
            .filter(|c| !(keep_unwanted && matches!(c, RouteChange::Remove(_))))
        {
            let key = format!("{change:?}");
            let result = match change {
                RouteChange::Add(route) => self.routes.add_route(route),
                RouteChange::Remove(route) => self.routes.remove_route(route),
            };
            match result {
                Ok(()) => {
                    writes += 1;
                    self.failures.clear(&key);
                    match change {
                        RouteChange::Add(route) => tracing::info!(%route, "route installed"),
                        RouteChange::Remove(route) => tracing::info!(%route, "route removed"),
                    }
                }
                Err(err) => self.fail(&key, &err),
            }
        }
        writes
    }

    fn fail(&mut self, key: &str, err: &dyn std::fmt::Display) {
        if let Some(suppressed) = self.failures.should_log(key, Instant::now()) {
            tracing::warn!(what = key, error = %err, suppressed, "reconcile step failed");
        }
    }

    fn log_rejections(
        &mut self,
        rejected: &[(wgmesh_keys::PublicKey, IpNet, wgmesh_mesh::RejectReason)],
    ) {
        let now: Vec<(wgmesh_keys::PublicKey, IpNet)> =
            rejected.iter().map(|(k, r, _)| (*k, *r)).collect();
        for (key, route, reason) in rejected {
            if !self.rejected_logged.contains(&(*key, *route)) {
                tracing::warn!(peer = %key.short(), %route, %reason, "advertised route not installed");
            }
        }
        self.rejected_logged = now;
    }

    /// Seeds the cache with what was loaded at start, so entries of members not (yet) back are
    /// kept rather than dropped by the first write.
    pub fn set_peer_cache(
        &mut self,
        path: std::path::PathBuf,
        loaded: Vec<wgmesh_state::CachedPeer>,
    ) {
        self.cache_path = Some(path);
        self.cached = loaded;
    }

    /// Merges the members into the cache and writes it when an address changed. Entries unseen
    /// for a week are dropped; members that left stay, since they may come back.
    fn update_peer_cache(&mut self, now: SystemTime) {
        const CACHE_TTL_SECS: u64 = 7 * 24 * 3600;
        let Some(path) = self.cache_path.clone() else {
            return;
        };
        let now_s = unix_ms(now) / 1000;
        let mut next = self.cached.clone();
        for member in self.shared.lock().members.iter() {
            let entry = wgmesh_state::CachedPeer {
                public_key: member.public_key,
                mesh_ipv4: member.mesh_ipv4,
                mesh_ipv6: member.mesh_ipv6,
                control_addr: member.control_addr,
                endpoint: member.endpoint,
                last_seen_unix: member.last_seen_ms / 1000,
            };
            match next.iter_mut().find(|c| c.public_key == entry.public_key) {
                Some(existing) => *existing = entry,
                None => next.push(entry),
            }
        }
        next.retain(|c| now_s.saturating_sub(c.last_seen_unix) < CACHE_TTL_SECS);
        next.sort_by_key(|c| c.public_key);
        // Only addresses matter to a restart; last-seen times alone do not justify a write.
        let addresses = |c: &[wgmesh_state::CachedPeer]| {
            c.iter()
                .map(|p| (p.public_key, p.control_addr, p.endpoint))
                .collect::<Vec<_>>()
        };
        if addresses(&next) == addresses(&self.cached) {
            return;
        }
        match wgmesh_state::save_peer_cache(&path, &next) {
            Ok(()) => {
                self.failures.clear("peer cache");
                self.cached = next;
            }
            Err(err) => self.fail("peer cache", &err),
        }
    }

    /// After wireguard-go restarted: the TUN link is new, so addresses, MTU, up state and the
    /// route owner's interface index must be set again.
    fn relink(&mut self) -> anyhow::Result<()> {
        let index = configure_link(
            &self.rtnl,
            &self.link.interface,
            &self.link.addresses,
            &self.link.managed,
            self.link.mtu,
        )?;
        self.routes = InterfaceRoutes::new(self.rtnl.clone(), &self.link.interface, index);
        if self.node.relay {
            super::platform::enable_relay_forwarding(&self.link.interface)?;
        }
        Ok(())
    }

    pub fn read_device(&mut self) -> Option<DeviceState> {
        self.backend.read().ok()
    }

    /// Removes our routes, then the interface unless it is to be kept.
    pub fn shutdown(&mut self, keep_interface: bool) {
        if keep_interface {
            self.backend.detach();
            tracing::info!(interface = %self.link.interface, "keeping the interface, its peers and routes (--keep-interface)");
            return;
        }
        if let Ok(owned) = self.routes.owned_routes() {
            for route in owned {
                if let Err(err) = self.routes.remove_route(route) {
                    tracing::warn!(%route, error = %err, "cannot remove route");
                }
            }
        }
        if let Err(err) = self.backend.remove_device() {
            tracing::warn!(error = %err, "cannot remove the interface");
        }
    }
}

/// Keepalive interval a new peer gets for one write (see [`nudge_handshakes`]).
const NUDGE_KEEPALIVE_SECS: u16 = 25;

/// How long the end with the greater key waits for the other end's handshake before starting
/// one itself.
const NUDGE_FALLBACK: Duration = Duration::from_millis(500);

/// Starts the WireGuard handshake with a new peer from one end, so its tunnel is up before
/// traffic needs it. WireGuard sends a keepalive, and so a handshake, the moment a peer's
/// keepalive turns on; [`Reconciler::end_nudges`] turns it off again right after (a peer that
/// needs keepalive has its own and is not nudged). Returns the peers nudged. Both ends add each other within milliseconds of the exchange, and WireGuard copes
/// badly with both: an initiation that reaches an end not yet configured is dropped, and two
/// initiations that cross cancel each other; either way the tunnel waits for the 5 s rekey
/// timeout. So the end with the smaller key starts at once, and the other end only if no
/// handshake happened within [`NUDGE_FALLBACK`] (the first one arrived too early).
fn nudge_handshakes(
    own: &wgmesh_keys::PublicKey,
    observed: &HashMap<wgmesh_keys::PublicKey, &PeerState>,
    update: &mut DeviceUpdate,
    pending: &mut Vec<(wgmesh_keys::PublicKey, Instant)>,
    now: Instant,
) -> Vec<wgmesh_keys::PublicKey> {
    let mut nudged = Vec::new();
    let mut due = Vec::new();
    pending.retain(|(key, at)| {
        if *at > now {
            return true;
        }
        if observed
            .get(key)
            .is_some_and(|p| p.last_handshake.is_none())
        {
            due.push(*key);
        }
        false
    });
    for key in due {
        match update.peers.iter_mut().find(|p| p.public_key == key) {
            // Removed, or given a keepalive of its own (which starts a handshake anyway).
            Some(change) if change.remove || change.persistent_keepalive.unwrap_or(0) != 0 => {}
            Some(change) => {
                change.persistent_keepalive = Some(NUDGE_KEEPALIVE_SECS);
                nudged.push(key);
            }
            None => {
                update.peers.push(wgmesh_device::PeerUpdate {
                    persistent_keepalive: Some(NUDGE_KEEPALIVE_SECS),
                    ..wgmesh_device::PeerUpdate::new(key)
                });
                nudged.push(key);
            }
        }
    }
    for peer in &mut update.peers {
        let new = !peer.remove && !observed.contains_key(&peer.public_key);
        if !new || peer.persistent_keepalive.unwrap_or(0) != 0 {
            continue;
        }
        if *own < peer.public_key {
            peer.persistent_keepalive = Some(NUDGE_KEEPALIVE_SECS);
            nudged.push(peer.public_key);
        } else {
            pending.push((peer.public_key, now + NUDGE_FALLBACK));
        }
    }
    nudged
}

fn log_update(update: &DeviceUpdate) {
    for peer in &update.peers {
        if peer.remove {
            tracing::info!(peer = %peer.public_key.short(), "peer removed");
        } else if peer.replace_allowed_ips && peer.preshared_key.is_some() {
            tracing::info!(peer = %peer.public_key.short(), endpoint = ?peer.endpoint, allowed_ips = ?peer.allowed_ips, "peer added");
        } else if peer.endpoint.is_none()
            && peer.allowed_ips.is_empty()
            && !peer.replace_allowed_ips
            && peer.preshared_key.is_none()
        {
            tracing::debug!(peer = %peer.public_key.short(), keepalive = ?peer.persistent_keepalive, "peer keepalive set");
        } else {
            tracing::info!(peer = %peer.public_key.short(), endpoint = ?peer.endpoint, allowed_ips = ?peer.allowed_ips, "peer updated");
        }
    }
}

/// The networks directly connected to this host, except the mesh interface's own.
pub fn connected_networks(mesh_interface: &str) -> Vec<IpNet> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut nets = Vec::new();
    for ifaddr in addrs {
        if ifaddr.interface_name == mesh_interface {
            continue;
        }
        let (Some(addr), Some(mask)) = (ifaddr.address, ifaddr.netmask) else {
            continue;
        };
        let net = if let (Some(a), Some(m)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) {
            ipnet::Ipv4Net::with_netmask(a.ip(), m.ip())
                .ok()
                .map(IpNet::V4)
        } else if let (Some(a), Some(m)) = (addr.as_sockaddr_in6(), mask.as_sockaddr_in6()) {
            ipnet::Ipv6Net::with_netmask(a.ip(), m.ip())
                .ok()
                .map(IpNet::V6)
        } else {
            None
        };
        if let Some(net) = net.map(|n| n.trunc()) {
            // Loopback and link-local are not routes anyone advertises into a mesh.
            if !net.addr().is_loopback() && !nets.contains(&net) {
                nets.push(net);
            }
        }
    }
    nets
}

#[cfg(test)]
mod tests {
    use super::*;
    use wgmesh_device::{PeerConfig, PeerState, PeerUpdate};
    use wgmesh_keys::{PrivateKey, PublicKey};

    fn key(n: u8) -> PublicKey {
        PrivateKey::from_bytes_clamped([n; 32]).public_key()
    }

    fn keepalives(update: &DeviceUpdate) -> Vec<(PublicKey, Option<u16>)> {
        update
            .peers
            .iter()
            .map(|p| (p.public_key, p.persistent_keepalive))
            .collect()
    }

    #[test]
    fn the_smaller_key_starts_at_once_and_the_greater_only_if_nothing_happened() {
        let mut keys: Vec<PublicKey> = (1..=4).map(key).collect();
        keys.sort();
        let [smallest, middle, greater, greatest] = [keys[0], keys[1], keys[2], keys[3]];
        let own = middle;
        let observed = DeviceState {
            peers: vec![PeerState::new(PeerConfig::new(greatest))],
            ..DeviceState::default()
        };
        let mut pending = Vec::new();
        let t0 = Instant::now();
        let mut update = DeviceUpdate {
            peers: vec![
                // Known peer: untouched.
                PeerUpdate {
                    endpoint: Some(std::net::SocketAddr::from(([192, 0, 2, 1], 51820))),
                    ..PeerUpdate::new(greatest)
                },
                // New, greater key: this end starts at once.
                PeerUpdate::new(greater),
                // New, smaller key: the other end starts; this end waits.
                PeerUpdate::new(smallest),
            ],
            ..DeviceUpdate::default()
        };
        let nudged = nudge_handshakes(&own, &observed.by_key(), &mut update, &mut pending, t0);
        assert_eq!(nudged, [greater]);
        assert_eq!(
            keepalives(&update),
            [
                (greatest, None),
                (greater, Some(NUDGE_KEEPALIVE_SECS)),
                (smallest, None)
            ]
        );
        assert_eq!(pending, [(smallest, t0 + NUDGE_FALLBACK)]);

        // Before the fallback is due nothing happens; after it, only a peer still without a
        // handshake is nudged.
        let mut observed = observed;
        observed
            .peers
            .push(PeerState::new(PeerConfig::new(smallest)));
        let mut update = DeviceUpdate::default();
        nudge_handshakes(&own, &observed.by_key(), &mut update, &mut pending, t0);
        assert!(update.is_empty());
        assert_eq!(pending.len(), 1);
        let later = t0 + NUDGE_FALLBACK;
        let nudged = nudge_handshakes(&own, &observed.by_key(), &mut update, &mut pending, later);
        assert_eq!(nudged, [smallest]);
        assert_eq!(
            keepalives(&update),
            [(smallest, Some(NUDGE_KEEPALIVE_SECS))]
        );
        assert!(pending.is_empty());

        // A handshake in time: no fallback nudge.
        let mut update = DeviceUpdate {
            peers: vec![PeerUpdate::new(smallest)],
            ..DeviceUpdate::default()
        };
        let empty = DeviceState::default();
        nudge_handshakes(&own, &empty.by_key(), &mut update, &mut pending, t0);
        observed.peers[1].last_handshake = Some(std::time::SystemTime::now());
        let mut update = DeviceUpdate::default();
        nudge_handshakes(&own, &observed.by_key(), &mut update, &mut pending, later);
        assert!(update.is_empty() && pending.is_empty());
    }

    #[test]
    fn a_peer_that_needs_keepalive_keeps_its_own() {
        let mut pending = Vec::new();
        let mut update = DeviceUpdate {
            peers: vec![
                PeerUpdate {
                    persistent_keepalive: Some(15),
                    ..PeerUpdate::new(key(2))
                },
                PeerUpdate::remove(key(3)),
            ],
            ..DeviceUpdate::default()
        };
        let before = update.clone();
        nudge_handshakes(
            &key(1),
            &DeviceState::default().by_key(),
            &mut update,
            &mut pending,
            Instant::now(),
        );
        assert_eq!(update, before);
        assert!(pending.is_empty());
    }
}
