//! observe → plan → apply (DESIGN.md §6): the pure plan is [`wgmesh_mesh::plan`]; this module
//! reads the device, the routes and the host, and applies the plan. It is generic over the
//! WireGuard backend, the route control and the [`Host`], so its unit tests run on fakes. Runs
//! on a blocking thread: every step is a short netlink or UAPI round trip.

use super::state::{LastPassCell, NodeInfo, Shared};
use crate::control::ReconcileCounters;
use crate::logging::RepeatLimiter;
use anyhow::Context as _;
use ipnet::IpNet;
use std::time::{Duration, Instant, SystemTime};
use wgmesh_device::{
    DeviceOrigin, DeviceUpdate, Host, InterfaceConfig, ROAMING_GRACE, RouteChange, RouteControl,
    WireguardBackend,
};
use wgmesh_mesh::DeviceSettings;
use wgmesh_mesh::plan::{Now, Observed, PeerDiff, PendingNudge, PlanState, plan};

/// Members unconfirmed this long are removed (DESIGN.md §6 default). The membership core's
/// failure detector removes a silent member much sooner (after its failed probes); this is the
/// backstop, stretched to three probe rounds in a mesh large enough that a round (one member
/// per `PROBE_INTERVAL`) takes longer.
const MEMBER_TTL: Duration = Duration::from_secs(600);

pub fn member_ttl(members: usize) -> Duration {
    let round = wgmesh_membership::liveness::PROBE_INTERVAL
        .saturating_mul(u32::try_from(members).unwrap_or(u32::MAX));
    MEMBER_TTL.max(round.saturating_mul(3))
}

/// What one pass changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub device_writes: usize,
    pub route_writes: usize,
}

/// Keeps one WireGuard device and its routes reconciled with the member table.
/// A direct member whose WireGuard peer has had no handshake for this long is reported as a
/// silent tunnel: the handshake nudges (2 + 4 + 8 s) have all been tried by then.
pub const SILENT_TUNNEL_AFTER: Duration = Duration::from_secs(20);

pub struct Reconciler<B, R, H> {
    pub backend: B,
    pub routes: R,
    pub host: H,
    /// Re-applied when a restarted wireguard-go recreated the TUN device, or re-addressed.
    pub link: InterfaceConfig,
    pub settings: DeviceSettings,
    pub shared: Shared,
    pub node: NodeInfo,
    pub stats: ReconcileCounters,
    /// `<state-dir>/<iface>.peers.json` and what was last written to it.
    pub cache_path: Option<std::path::PathBuf>,
    cached: Vec<wgmesh_state::CachedPeer>,
    /// Until then, nothing is removed (see [`Reconciler::hold_removals`]).
    hold_removals_until: Option<Instant>,
    /// A step of the last pass failed (a route, a peer, the peer cache): the loop retries soon
    /// rather than at the next safety pass.
    steps_failed: bool,
    /// When an endpoint write held back by a recent handshake becomes allowed.
    revisit_at: Option<Instant>,
    failures: RepeatLimiter,
    rejected_logged: Vec<(wgmesh_keys::PublicKey, IpNet)>,
    /// New peers whose handshake this end starts later, if none has happened by then.
    nudges: Vec<PendingNudge>,
    /// Direct peers without a handshake yet: since when, and whether reported (see
    /// [`SILENT_TUNNEL_AFTER`]).
    silent_since: std::collections::HashMap<wgmesh_keys::PublicKey, (Instant, bool)>,
    /// Ours, derived once from the private key.
    own_key: wgmesh_keys::PublicKey,
    /// Where each pass is published for `status` and metrics.
    last_pass: LastPassCell,
}

impl<B, R, H> std::fmt::Debug for Reconciler<B, R, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler")
            .field("interface", &self.link.interface)
            .finish_non_exhaustive()
    }
}

use super::state::unix_ms;

impl<B: WireguardBackend, R: RouteControl, H: Host> Reconciler<B, R, H> {
    pub fn new(
        backend: B,
        routes: R,
        host: H,
        link: InterfaceConfig,
        settings: DeviceSettings,
        shared: Shared,
        node: NodeInfo,
    ) -> Self {
        let own_key = settings.private_key.public_key();
        Self {
            own_key,
            backend,
            routes,
            host,
            link,
            settings,
            shared,
            node,
            stats: ReconcileCounters::default(),
            hold_removals_until: None,
            steps_failed: false,
            revisit_at: None,
            cache_path: None,
            cached: Vec::new(),
            failures: RepeatLimiter::new(Duration::from_secs(60)),
            rejected_logged: Vec::new(),
            nudges: Vec::new(),
            silent_since: std::collections::HashMap::new(),
            last_pass: LastPassCell::default(),
        }
    }

    /// Where every pass is published: readers never wait for a pass.
    pub fn last_pass(&self) -> LastPassCell {
        self.last_pass.clone()
    }

    /// Keeps peers and routes that are not (yet) desired for `grace`: after adopting a device
    /// the member table starts empty, and removing everything until discovery refills it would
    /// drop the tunnels `--keep-interface` kept.
    pub fn hold_removals(&mut self, grace: Duration) {
        self.hold_removals_until = Some(Instant::now() + grace);
    }

    /// One pass. Errors are returned only when the device itself cannot be read; a failing
    /// peer or route is logged (rate-limited) and the rest proceeds.
    pub fn run_once(&mut self) -> anyhow::Result<Outcome> {
        let mut outcome = Outcome::default();
        self.steps_failed = false;
        if self
            .hold_removals_until
            .is_some_and(|until| until <= Instant::now())
        {
            // Over: it must not keep asking for passes (next_wakeup).
            self.hold_removals_until = None;
        }
        if self.backend.ensure_device().context("WireGuard device")? == DeviceOrigin::Restarted {
            tracing::warn!(interface = %self.link.interface, "wireguard-go had stopped; restarted it, restoring peers");
            self.relink()?;
        }
        let own = self.shared.lock().own;
        let addresses = crate::platform::interface_addresses(own.ipv4, own.ipv6).to_vec();
        if addresses != self.link.addresses {
            // Re-addressed after an IPv4 collision: the stale mesh address goes with it.
            self.link.addresses = addresses;
            self.relink()?;
        }
        let observed = Observed {
            device: self
                .backend
                .read()
                .context("reading the WireGuard device")?,
            connected: self.host.connected_networks(),
            gateways: self.host.default_gateways(),
            routes: match self.routes.owned_routes() {
                Ok(owned) => Some(owned),
                Err(err) => {
                    self.fail("route dump", &err);
                    None
                }
            },
        };
        let now = Now {
            wall: SystemTime::now(),
            mono: Instant::now(),
        };
        let plan = {
            let mut state = self.shared.lock();
            Self::find_silent_tunnels(
                &mut self.silent_since,
                &observed.device.peers,
                &mut state,
                now.mono,
            );
            // A WireGuard session is proof of life too (the same window that keeps a roamed
            // endpoint).
            for peer in &observed.device.peers {
                let fresh = peer
                    .last_handshake
                    .and_then(|t| now.wall.duration_since(t).ok())
                    .is_some_and(|age| age < ROAMING_GRACE);
                if fresh {
                    state
                        .members
                        .touch(&peer.config.public_key, unix_ms(now.wall));
                }
            }
            let ttl = member_ttl(state.members.len());
            for gone in state
                .members
                .expire(unix_ms(now.wall), ttl.as_millis() as u64)
            {
                tracing::info!(peer = %gone.public_key.short(), mesh_ipv4 = %gone.mesh_ipv4, "member expired: unseen for too long");
            }
            let refresh_endpoints = std::mem::take(&mut state.refresh_endpoints);
            let plan = plan(
                &observed,
                &PlanState {
                    settings: &self.settings,
                    own_key: self.own_key,
                    members: &state.members,
                    route_policy: &state.route_policy,
                    servers: &state.servers,
                    mesh_prefixes: &self.node.mesh_prefixes,
                    advertised: &state.advertised,
                    refresh_endpoints,
                    hold_removals_until: self.hold_removals_until,
                    pending_nudges: &self.nudges,
                },
                now,
            );
            state.accepted = plan.accepted.clone();
            plan
        };
        self.log_rejections(&plan.accepted.rejected);
        self.nudges.clone_from(&plan.pending_nudges);
        self.revisit_at = plan.revisit_at;
        if let Some(update) = plan.device_update() {
            for diff in &plan.peers {
                log_diff(diff);
            }
            outcome.device_writes = self.apply(&update);
        }
        if let Some(reset) = plan.end_nudges() {
            outcome.device_writes += self.end_nudges(&reset);
        }
        outcome.route_writes = self.apply_routes(&plan.routes);
        self.update_peer_cache(now.wall);
        self.stats.runs += 1;
        self.stats.device_writes += outcome.device_writes as u64;
        self.stats.route_writes += outcome.route_writes as u64;
        self.last_pass.publish(&observed.device, self.stats);
        Ok(outcome)
    }

    /// Direct members whose WireGuard peer has had no handshake for [`SILENT_TUNNEL_AFTER`]
    /// are reported once, for the exchange task to fall back to a relay: our control datagrams
    /// reach them, but WireGuard's do not (its port met a conntrack clash the control port did
    /// not, say), and nothing else would notice.
    fn find_silent_tunnels(
        silent_since: &mut std::collections::HashMap<wgmesh_keys::PublicKey, (Instant, bool)>,
        peers: &[wgmesh_device::PeerState],
        state: &mut super::state::MeshState,
        now: Instant,
    ) {
        let silent: Vec<wgmesh_keys::PublicKey> = peers
            .iter()
            .filter(|p| p.last_handshake.is_none())
            .map(|p| p.config.public_key)
            .filter(|key| {
                state
                    .members
                    .get(key)
                    .is_some_and(|m| m.relay_via.is_none() && !state.on_trial.contains(key))
            })
            .collect();
        silent_since.retain(|key, _| silent.contains(key));
        for key in silent {
            let (since, reported) = silent_since.entry(key).or_insert((now, false));
            if !*reported && now.duration_since(*since) >= SILENT_TUNNEL_AFTER {
                *reported = true;
                if state.silent_tunnels.len() < 1_024 {
                    state.silent_tunnels.push(key);
                }
            }
        }
    }

    /// Turns the nudge keepalive off again right after the write that turned it on (see
    /// [`wgmesh_mesh::Plan::end_nudges`]).
    fn end_nudges(&mut self, reset: &DeviceUpdate) -> usize {
        tracing::debug!(
            peers = reset.peers.len(),
            "started WireGuard handshakes with new peers"
        );
        match self.backend.apply(reset) {
            Ok(()) => 1,
            Err(err) => {
                // The next pass's plan turns it off instead.
                tracing::debug!(error = %err, "cannot end the handshake nudge yet");
                0
            }
        }
    }

    /// Whether a step of the last pass failed (retried like a failed pass).
    pub fn steps_failed(&self) -> bool {
        self.steps_failed
    }

    /// When a pending handshake nudge, or the end of the removal hold, wants the next pass.
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.nudges
            .iter()
            .map(|n| n.due)
            .chain(self.hold_removals_until)
            .chain(self.revisit_at)
            .min()
    }

    /// Applies in one write; if the batch fails, peer by peer so one bad peer does not block
    /// the others.
    fn apply(&mut self, update: &DeviceUpdate) -> usize {
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

    fn apply_routes(&mut self, changes: &[RouteChange]) -> usize {
        let mut writes = 0;
        for &change in changes {
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
        self.steps_failed = true;
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
        let shared = self.shared.lock();
        // Only members that proved their key to us: a gossiped record on trial through a relay
        // could name anything.
        for member in shared
            .members
            .iter()
            .filter(|m| !shared.on_trial.contains(&m.public_key))
        {
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
        drop(shared);
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
        let index = self.host.configure_interface(&self.link)?;
        self.routes.bind_interface(index);
        Ok(())
    }

    /// Reads the device between passes and publishes it, so `status` shows current
    /// handshakes and counters without waiting for the next pass.
    pub fn refresh_snapshot(&mut self) {
        if let Ok(device) = self.backend.read() {
            self.last_pass.publish_device(&device);
        }
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

/// Logs one peer change with what it was and what it becomes.
fn log_diff(diff: &PeerDiff) {
    let peer = diff.public_key.short();
    match (&diff.old, &diff.new) {
        (None, Some(new)) => {
            tracing::info!(%peer, endpoint = ?new.endpoint, allowed_ips = ?new.allowed_ips, keepalive = ?new.persistent_keepalive, "peer added");
        }
        (Some(old), None) => {
            tracing::info!(%peer, endpoint = ?old.endpoint, allowed_ips = ?old.allowed_ips, "peer removed");
        }
        (Some(old), Some(new)) if old == new => match diff.endpoint {
            Some(why) => {
                tracing::debug!(%peer, endpoint = ?new.endpoint, why = why.as_str(), "peer endpoint re-set");
            }
            None if diff.restart => {
                tracing::debug!(%peer, "handshake restarted (the peer re-created: none completed)");
            }
            None => tracing::debug!(%peer, "handshake nudged"),
        },
        (Some(old), Some(new)) => {
            let endpoint = diff.endpoint.map(|why| {
                format!(
                    "{} -> {} ({})",
                    show(old.endpoint),
                    show(new.endpoint),
                    why.as_str()
                )
            });
            let allowed_ips = (old.allowed_ips != new.allowed_ips)
                .then(|| format!("{:?} -> {:?}", old.allowed_ips, new.allowed_ips));
            let keepalive = (old.persistent_keepalive != new.persistent_keepalive).then(|| {
                format!(
                    "{:?} -> {:?}",
                    old.persistent_keepalive, new.persistent_keepalive
                )
            });
            let psk = old.preshared_key != new.preshared_key;
            tracing::info!(%peer, endpoint, allowed_ips, keepalive, preshared_key_changed = psk, "peer updated");
        }
        (None, None) => {}
    }
}

fn show(endpoint: Option<std::net::SocketAddr>) -> String {
    endpoint.map_or_else(|| "none".to_owned(), |e| e.to_string())
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
