//! One reconcile pass as a pure function (DESIGN.md §6: observe → plan → apply).
//!
//! [`plan`] takes what the device and the routing table hold ([`Observed`]), what the mesh wants
//! ([`PlanState`]: members, settings, pending handshake nudges, the removal hold) and the time, and
//! returns the exact changes ([`Plan`]). Each peer change is a [`PeerDiff`] that carries the old and
//! the new configuration (innernet's `PeerDiff`), so the daemon logs exactly what changed and tests
//! compare whole values. The daemon applies the plan and feeds the pending nudges back in.
//!
//! Rules the plan encodes:
//! - A peer that handshook within [`ROAMING_GRACE`] keeps its endpoint: WireGuard roamed it
//!   there from authenticated traffic. The one exception is [`EndpointWrite::Moved`]: the member
//!   was verified from a new address after that handshake (it moved networks, or a relayed
//!   member's direct path answered a probe), so the handshake says nothing about the new path.
//! - A host whose own addresses changed re-writes every kept peer's endpoint unchanged
//!   ([`EndpointWrite::Refresh`]): the write clears the source address WireGuard pinned.
//! - New peers get their first handshake started from one end ([`NUDGE_KEEPALIVE_SECS`]), again
//!   while none completes ([`NUDGE_RETRY`]).
//! - While the removal hold lasts (after adopting a device), nothing is removed.

use crate::{
    AcceptedRoutes, DeviceSettings, LocalView, MemberTable, Protected, ProtectedKind, RoutePolicy,
    accept_routes, desired_device,
};
use ipnet::IpNet;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wgmesh_device::{
    DeviceState, DeviceUpdate, PeerConfig, PeerState, PeerUpdate, ROAMING_GRACE, RouteChange,
    diff_routes,
};
use wgmesh_keys::{PrivateKey, PublicKey};

/// Keepalive interval a new peer gets for one write: WireGuard sends a keepalive, and so starts
/// a handshake, the moment a peer's keepalive turns on. [`Plan::end_nudges`] turns it off again.
pub const NUDGE_KEEPALIVE_SECS: u16 = 25;

/// How long the end with the greater key waits for the other end's handshake before starting
/// one itself. Both ends add each other within milliseconds of the exchange; an initiation that
/// reaches an end not yet configured is dropped. So the smaller key starts at once and the
/// greater only if nothing happened by then.
pub const NUDGE_FALLBACK: Duration = Duration::from_millis(500);

/// While a new peer still has no handshake, the end with the smaller key starts one again, first
/// this long after its first nudge, then after twice as long each time, [`NUDGE_RETRIES`] times.
///
/// Why again: two initiations that cross (the greater key's fallback sent before the smaller
/// key's initiation arrived, as on a loaded host) each replace the other end's initiator state,
/// so neither response is accepted; and WireGuard's own retry 5 s later is skipped, without
/// re-arming, because each end sent a response within those 5 s (wireguard-go's
/// `SendHandshakeInitiation` and the kernel's `wg_packet_send_handshake_initiation` both return
/// early then). Such a pair stayed without a handshake until traffic flowed: 1–2 pairs in each
/// 50-node formation on 2 cores. The same 5 s rule would hold back a plain nudge, so a retry
/// re-creates the peer ([`PeerDiff::restart`]): a peer that never had a handshake has no session
/// to lose.
pub const NUDGE_RETRY: Duration = Duration::from_secs(2);

/// Handshake restarts after the first nudge (2 + 4 + 8 + 16 + 32 s: then traffic, or a
/// liveness probe through the tunnel, starts the handshake).
pub const NUDGE_RETRIES: u8 = 5;

/// How long after the previous nudge the restart with `retries_left` (see [`PendingNudge`]) is
/// due: 2 s for the first, doubling.
fn retry_after(retries_left: u8) -> Duration {
    let done = u32::from(NUDGE_RETRIES.saturating_sub(retries_left));
    NUDGE_RETRY.saturating_mul(1 << done.min(16))
}

/// The time of a pass: wall clock for handshake ages and member times (Unix), monotonic for
/// the daemon's own deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub wall: SystemTime,
    pub mono: Instant,
}

/// What the pass read from the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub device: DeviceState,
    /// The routes carrying wgmesh's route protocol number; `None` when they could not be read,
    /// and then no route change is planned.
    pub routes: Option<Vec<IpNet>>,
    /// The host's directly connected networks, except the mesh interface's own.
    pub connected: Vec<IpNet>,
    /// The host's default gateways (no accepted route may cover one).
    pub gateways: Vec<std::net::IpAddr>,
}

/// A new peer whose handshake this end starts later, if none has happened by then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingNudge {
    pub peer: PublicKey,
    pub due: Instant,
    /// 0: the greater key's one fallback nudge ([`NUDGE_FALLBACK`]). From 1: a restart by the
    /// smaller key ([`NUDGE_RETRY`]), with `retries_left - 1` more to follow while no handshake
    /// happens.
    pub retries_left: u8,
}

/// What the mesh wants, and the reconciler's own memory between passes.
#[derive(Debug, Clone, Copy)]
pub struct PlanState<'a> {
    pub settings: &'a DeviceSettings,
    /// This host's public key (the nudge order compares it with peers').
    pub own_key: PublicKey,
    pub members: &'a MemberTable,
    pub route_policy: &'a RoutePolicy,
    /// Configured servers (STUN, DHT, `--peer` seeds) no accepted route may cover.
    pub servers: &'a [Protected],
    pub mesh_prefixes: &'a [IpNet],
    /// The routes this host advertises (never accepted from others).
    pub advertised: &'a [IpNet],
    /// The host's addresses changed since the last pass (see [`EndpointWrite::Refresh`]).
    pub refresh_endpoints: bool,
    /// Until then nothing is removed: after adopting a device the member table starts empty,
    /// and removing everything until discovery refills it would drop the tunnels
    /// `--keep-interface` kept.
    pub hold_removals_until: Option<Instant>,
    /// From the previous plan's [`Plan::pending_nudges`].
    pub pending_nudges: &'a [PendingNudge],
}

/// Why a kept peer's endpoint is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointWrite {
    /// Discovery knows another endpoint and no handshake within [`ROAMING_GRACE`] vouches for
    /// the current one.
    NoRecentHandshake,
    /// The member was verified from a new address after the last handshake: it moved, or a
    /// relayed member's direct path answered. The only case that overrides a recent handshake.
    Moved,
    /// The same endpoint, written again because the host's addresses changed.
    Refresh,
}

impl EndpointWrite {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoRecentHandshake => "no recent handshake",
            Self::Moved => "member moved",
            Self::Refresh => "host addresses changed",
        }
    }
}

/// One peer's change: `old` is what the device holds (`None`: added), `new` what it holds
/// after the change (`None`: removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerDiff {
    pub public_key: PublicKey,
    pub old: Option<PeerConfig>,
    pub new: Option<PeerConfig>,
    /// Set when a kept peer's endpoint is written (an added peer's always is).
    pub endpoint: Option<EndpointWrite>,
    /// This write also starts a handshake (see [`NUDGE_KEEPALIVE_SECS`]).
    pub nudge: bool,
    /// The peer is removed and added again first, so that WireGuard forgets the handshake it
    /// sent or answered less than 5 s ago and the nudge starts a new one at once (see
    /// [`NUDGE_RETRY`]). Only for a peer that never had a handshake.
    pub restart: bool,
}

impl PeerDiff {
    /// The write that makes the change, in WireGuard's `set` terms.
    pub fn update(&self) -> PeerUpdate {
        let key = self.public_key;
        let Some(new) = &self.new else {
            return PeerUpdate::remove(key);
        };
        let nudge = self.nudge.then_some(NUDGE_KEEPALIVE_SECS);
        let (Some(old), false) = (&self.old, self.restart) else {
            return PeerUpdate {
                preshared_key: new.preshared_key.clone(),
                endpoint: new.endpoint,
                persistent_keepalive: nudge.or(new.persistent_keepalive),
                replace_allowed_ips: true,
                allowed_ips: new.allowed_ips.clone(),
                ..PeerUpdate::new(key)
            };
        };
        let mut update = PeerUpdate::new(key);
        if new.preshared_key != old.preshared_key {
            update.preshared_key = new.preshared_key.clone();
        }
        if self.endpoint.is_some() {
            update.endpoint = new.endpoint;
        }
        if new.persistent_keepalive != old.persistent_keepalive {
            update.persistent_keepalive = Some(new.persistent_keepalive.unwrap_or(0));
        }
        if nudge.is_some() {
            update.persistent_keepalive = nudge;
        }
        if new.allowed_ips != old.allowed_ips {
            update.replace_allowed_ips = true;
            update.allowed_ips = new.allowed_ips.clone();
        }
        update
    }
}

/// Everything one pass changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub private_key: Option<PrivateKey>,
    pub listen_port: Option<u16>,
    /// Removals first, then additions and changes, each in key order.
    pub peers: Vec<PeerDiff>,
    pub routes: Vec<RouteChange>,
    /// The routes accepted from members (and the ones rejected, with reasons).
    pub accepted: AcceptedRoutes,
    /// For the next pass's [`PlanState::pending_nudges`].
    pub pending_nudges: Vec<PendingNudge>,
    /// Peer and route removals left out because of the removal hold.
    pub held_removals: usize,
    /// When an endpoint write held back by a recent handshake becomes allowed (the handshake
    /// ages past [`ROAMING_GRACE`]): the next pass is due then, not at the safety timer.
    pub revisit_at: Option<Instant>,
}

impl Plan {
    /// Whether the pass writes nothing.
    pub fn is_empty(&self) -> bool {
        self.private_key.is_none()
            && self.listen_port.is_none()
            && self.peers.is_empty()
            && self.routes.is_empty()
    }

    /// The device write, or `None` when the device is as it should be.
    pub fn device_update(&self) -> Option<DeviceUpdate> {
        let update = DeviceUpdate {
            private_key: self.private_key.clone(),
            listen_port: self.listen_port,
            peers: self
                .peers
                .iter()
                .flat_map(|diff| {
                    let restart = diff.restart.then(|| PeerUpdate::remove(diff.public_key));
                    restart.into_iter().chain([diff.update()])
                })
                .collect(),
        };
        (!update.is_empty()).then_some(update)
    }

    /// The write right after [`Plan::device_update`] that turns the nudge keepalives off again:
    /// the keepalive, and the handshake it starts, left when it turned on, so the device is
    /// steady as soon as the mesh is.
    pub fn end_nudges(&self) -> Option<DeviceUpdate> {
        let peers: Vec<PeerUpdate> = self
            .peers
            .iter()
            .filter(|diff| diff.nudge)
            .map(|diff| PeerUpdate {
                persistent_keepalive: Some(0),
                ..PeerUpdate::new(diff.public_key)
            })
            .collect();
        (!peers.is_empty()).then(|| DeviceUpdate {
            peers,
            ..DeviceUpdate::default()
        })
    }

    /// When a pending nudge, or a held-back endpoint write, wants a pass of its own.
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.pending_nudges
            .iter()
            .map(|n| n.due)
            .chain(self.revisit_at)
            .min()
    }
}

/// What the route filter knows of this host in this pass.
pub fn local_view(observed: &Observed, state: &PlanState<'_>) -> LocalView {
    LocalView {
        policy: state.route_policy.clone(),
        mesh_prefixes: state.mesh_prefixes.to_vec(),
        connected: observed.connected.clone(),
        own_routes: state.advertised.to_vec(),
        protected: protected_addresses(observed, state),
    }
}

/// The addresses no accepted route may cover: the endpoint this host uses for each peer (the
/// device's, and the one discovery knows), the gateways and the configured servers. A member's
/// other candidate addresses do not count, so common subnets stay advertisable.
fn protected_addresses(observed: &Observed, state: &PlanState<'_>) -> Vec<Protected> {
    let in_device = observed
        .device
        .peers
        .iter()
        .filter_map(|p| Some((p.config.public_key, p.config.endpoint?)));
    let known = state
        .members
        .iter()
        .filter_map(|m| Some((m.public_key, m.endpoint?)));
    let mut protected: Vec<Protected> = in_device
        .chain(known)
        .map(|(key, endpoint)| Protected {
            addr: endpoint.ip(),
            what: ProtectedKind::PeerEndpoint(key),
        })
        .chain(observed.gateways.iter().map(|&addr| Protected {
            addr,
            what: ProtectedKind::Gateway,
        }))
        .chain(state.servers.iter().copied())
        .collect();
    protected.dedup();
    protected
}

/// Computes one pass: the desired device and routes from the members, then the minimal change
/// from `observed` to them under the rules in the module documentation.
pub fn plan(observed: &Observed, state: &PlanState<'_>, now: Now) -> Plan {
    let view = local_view(observed, state);
    let accepted = accept_routes(&view, state.members);
    let desired = desired_device(state.settings, state.members, &accepted, &view.connected);
    let holding = state
        .hold_removals_until
        .is_some_and(|until| now.mono < until);
    let device = &observed.device;
    let mut plan = Plan {
        private_key: (device.private_key.as_ref() != Some(&desired.private_key))
            .then(|| desired.private_key.clone()),
        listen_port: (device.listen_port != desired.listen_port).then_some(desired.listen_port),
        ..Plan::default()
    };

    let wanted: HashSet<PublicKey> = desired.peers.iter().map(|p| p.public_key).collect();
    let mut removals: Vec<&PeerState> = device
        .peers
        .iter()
        .filter(|p| !wanted.contains(&p.config.public_key))
        .collect();
    removals.sort_by_key(|p| p.config.public_key);
    if holding {
        plan.held_removals += removals.len();
    } else {
        plan.peers.extend(removals.into_iter().map(|p| PeerDiff {
            public_key: p.config.public_key,
            old: Some(normalised(&p.config)),
            new: None,
            endpoint: None,
            nudge: false,
            restart: false,
        }));
    }

    let mut due = HashMap::new();
    for pending in state.pending_nudges {
        if pending.due <= now.mono {
            due.insert(pending.peer, pending.retries_left);
        } else {
            plan.pending_nudges.push(*pending);
        }
    }
    let current = device.by_key();
    let mut changes: Vec<PeerDiff> = Vec::new();
    for want in &desired.peers {
        let diff = match current.get(&want.public_key) {
            None => {
                let mut nudge = false;
                // A peer with a keepalive of its own starts its handshake from it anyway.
                if want.persistent_keepalive.is_none() {
                    let first = if state.own_key < want.public_key {
                        nudge = true;
                        PendingNudge {
                            peer: want.public_key,
                            due: now.mono + retry_after(NUDGE_RETRIES),
                            retries_left: NUDGE_RETRIES,
                        }
                    } else {
                        PendingNudge {
                            peer: want.public_key,
                            due: now.mono + NUDGE_FALLBACK,
                            retries_left: 0,
                        }
                    };
                    plan.pending_nudges.push(first);
                }
                Some(PeerDiff {
                    public_key: want.public_key,
                    old: None,
                    new: Some(want.clone()),
                    endpoint: None,
                    nudge,
                    restart: false,
                })
            }
            Some(current) => {
                let diff = change_peer(current, want, state, &due, now, &mut plan.revisit_at);
                if let Some(retries_left) = due.get(&want.public_key)
                    && diff.as_ref().is_some_and(|d| d.restart)
                    && *retries_left > 1
                {
                    plan.pending_nudges.push(PendingNudge {
                        peer: want.public_key,
                        due: now.mono + retry_after(retries_left - 1),
                        retries_left: retries_left - 1,
                    });
                }
                diff
            }
        };
        changes.extend(diff);
    }
    changes.sort_by_key(|d| d.public_key);
    plan.peers.extend(changes);

    if let Some(owned) = &observed.routes {
        for change in diff_routes(owned, &accepted.all()) {
            if holding && matches!(change, RouteChange::Remove(_)) {
                plan.held_removals += 1;
            } else {
                plan.routes.push(change);
            }
        }
    }
    plan.accepted = accepted;
    plan
}

/// The change to a peer the device already holds, if any.
fn change_peer(
    current: &PeerState,
    want: &PeerConfig,
    state: &PlanState<'_>,
    due_nudges: &HashMap<PublicKey, u8>,
    now: Now,
    revisit_at: &mut Option<Instant>,
) -> Option<PeerDiff> {
    let old = normalised(&current.config);
    let mut new = want.clone();
    // WireGuard has no "unset" for these: an endpoint or PSK the desired state lacks stays.
    if new.preshared_key.is_none() {
        new.preshared_key.clone_from(&old.preshared_key);
    }
    let recent_handshake = current.last_handshake.filter(|at| {
        now.wall
            .duration_since(*at)
            .is_ok_and(|age| age < ROAMING_GRACE)
    });
    let mut endpoint = match want.endpoint {
        None => {
            new.endpoint = old.endpoint;
            None
        }
        Some(wanted) if Some(wanted) == old.endpoint => None,
        Some(_) => match recent_handshake {
            None => Some(EndpointWrite::NoRecentHandshake),
            Some(at) if moved_since(state.members, &want.public_key, at) => {
                Some(EndpointWrite::Moved)
            }
            Some(at) => {
                new.endpoint = old.endpoint;
                let age = now.wall.duration_since(at).unwrap_or_default();
                let allowed = now.mono + ROAMING_GRACE.saturating_sub(age);
                *revisit_at = Some(revisit_at.map_or(allowed, |t| t.min(allowed)));
                None
            }
        },
    };
    if endpoint.is_none() && state.refresh_endpoints && new.endpoint.is_some() {
        endpoint = Some(EndpointWrite::Refresh);
    }
    let (nudge, restart) = match due_nudges.get(&want.public_key) {
        Some(_) if current.last_handshake.is_some() || new.persistent_keepalive.is_some() => {
            (false, false)
        }
        // The greater key's fallback: not if the other end's initiation already arrived (this
        // end answered it; a second initiation now would cross the handshake in progress).
        Some(0) => (current.rx_bytes == 0, false),
        Some(_) => (true, true),
        None => (false, false),
    };
    (old != new || endpoint.is_some() || nudge).then(|| PeerDiff {
        public_key: want.public_key,
        old: Some(old),
        new: Some(new),
        endpoint,
        nudge,
        restart,
    })
}

/// Whether the member was verified from a new address after the handshake at `handshake`.
fn moved_since(members: &MemberTable, key: &PublicKey, handshake: SystemTime) -> bool {
    let handshake_ms = handshake
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    members
        .get(key)
        .is_some_and(|m| m.moved_at_ms != 0 && m.moved_at_ms > handshake_ms)
}

fn normalised(config: &PeerConfig) -> PeerConfig {
    let mut config = config.clone();
    config.normalise();
    config
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
