//! The exchange protocol on the control port, and the discovery sources that feed it candidate
//! addresses (DESIGN.md §8). The pure protocol is `wgmesh_exchange::Exchange`; this is its
//! socket, its clock and its randomness.

use super::discovery::Discovery;
use super::nat::{NatView, NatWatch};
use super::relay_io::{AllocateError, RelayServer};
use super::state::{MeshState, NodeInfo, OwnAddresses, Shared, now_ms};
use crate::platform::recv_with_destination;
use std::net::{Ipv4Addr, SocketAddr};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use wgmesh_derive::{MeshAddresses, MeshKeys};
use wgmesh_device::{Host, HostAddress};
use wgmesh_exchange::{Endpoint, EndpointKind, Exchange, MemberInfo, Record, RefusalReason};
use wgmesh_keys::PublicKey;
use wgmesh_membership::{Collision, Config as MembershipConfig, Event as CoreEvent, Membership};
use wgmesh_mesh::{Member, MemberChange, Source};
use wgmesh_names::MemberName;
use wgmesh_relay::{Refused, Side};
use wgmesh_state::NodeIdentity;

/// What a relay tells a member whose pair it did not allocate.
fn refusal_reason(err: &AllocateError) -> RefusalReason {
    match err {
        AllocateError::Refused(Refused::MemberQuota { .. }) => RefusalReason::MemberQuota,
        AllocateError::Refused(Refused::RelayFull { .. }) => RefusalReason::RelayFull,
        _ => RefusalReason::Other,
    }
}

/// Largest datagram the protocol produces; bigger ones are read truncated and dropped.
const MAX_DATAGRAM: usize = 1500;

/// Requests from other tasks.
#[derive(Debug)]
pub enum Command {
    /// Our record changed (reload): announce it to every member.
    Announce(Box<Record>),
    /// Say goodbye to every member, then report back.
    Goodbye(oneshot::Sender<()>),
    /// The STUN servers, resolved.
    StunServers(Vec<SocketAddr>),
    /// The operator changed which members may relay for us (reload).
    SetRelays(wgmesh_mesh::RelaySetting),
}

/// The core's allow-list for a `relays` setting (`any`: none).
pub fn relay_allow_list(
    setting: &wgmesh_mesh::RelaySetting,
) -> Option<wgmesh_membership::relay::RelayAllowList> {
    match setting {
        wgmesh_mesh::RelaySetting::Any => None,
        wgmesh_mesh::RelaySetting::Only(keys) => {
            Some(wgmesh_membership::relay::RelayAllowList::new(keys.clone()))
        }
    }
}

/// Our record: key, addresses, candidate endpoints (the STUN-mapped one first, then LAN
/// addresses), advertised routes.
pub fn own_record(node: &NodeInfo, state: &MeshState) -> Record {
    let own = &state.own;
    let stun = state.public_endpoint.map(|public| Endpoint {
        kind: EndpointKind::Stun,
        // The mapping STUN saw is the control port's; with a port-preserving NAT the WireGuard
        // port maps to itself on the same public address.
        addr: SocketAddr::new(public.ip(), node.listen_port),
    });
    // The control socket and the LAN group are IPv4: so are the LAN endpoints.
    let lan = state
        .underlay
        .iter()
        .filter(|address| address.ip.is_ipv4())
        .map(|address| Endpoint {
            kind: EndpointKind::Lan,
            addr: SocketAddr::new(address.ip, node.listen_port),
        });
    let endpoints = stun
        .into_iter()
        .chain(lan)
        .take(wgmesh_exchange::MAX_ENDPOINTS)
        .collect();
    let advertised = &state.advertised;
    Record {
        public_key: node.public_key,
        collision_counter: own.collision_counter,
        mesh_ipv4: own.ipv4,
        mesh_ipv6: own.ipv6,
        endpoints,
        listen_port: node.listen_port,
        routes: advertised.to_vec(),
        flags: if node.relay {
            wgmesh_exchange::FLAG_RELAY
        } else {
            0
        },
        timestamp: now_ms() / 1000,
    }
}

/// The name to announce when neither `--name` nor the reload file sets one: the system host
/// name's first label, sanitised (`Web-01.example.com` → `web-01`); none if nothing usable.
pub fn default_name() -> Option<MemberName> {
    let host = crate::platform::host_name()?;
    let name = MemberName::from_host_name(&host);
    if name.is_none() {
        tracing::warn!(%host, "the host name gives no usable member name; announcing none (set one with --name)");
    }
    name
}

/// Our version and name, as the exchange announces them.
pub fn own_info(state: &MeshState) -> MemberInfo {
    MemberInfo::new(crate::VERSION, state.own_name.clone())
}

/// The exchange task: the control socket, the clock and the channels around the membership
/// core (`wgmesh_membership::Membership`), which makes every membership decision. This loop only
/// moves datagrams, timers and events, and does what the core asks (log, mirror members into the
/// shared table, persist a new collision counter, poll a discovery source).
pub struct ExchangeTask {
    socket: UdpSocket,
    core: Membership,
    shared: Shared,
    node: NodeInfo,
    discovery: Vec<Box<dyn Discovery>>,
    commands: mpsc::Receiver<Command>,
    reconcile: mpsc::Sender<()>,
    /// Kept to persist a new collision counter.
    identity: NodeIdentity,
    keys: MeshKeys,
    /// The host's addresses and connected networks (a handle of its own: the reconciler's
    /// configures the interface, this one only reads).
    host: Box<dyn Host + Sync>,
    nat: NatWatch,
    /// The LAN group, when LAN discovery is on (rejoined when addresses change).
    lan_group: Option<std::net::Ipv4Addr>,
    /// Candidates pushed by sources that find them on their own (the DHT thread).
    pushed: Vec<(Source, mpsc::UnboundedReceiver<SocketAddr>)>,
    /// Link and address changes on the host (from rtnetlink).
    link_events: mpsc::Receiver<()>,
    /// `--relay`: the relayed pairs' ports (the core verifies who asks; this allocates).
    relay: Option<RelayServer>,
}

/// Everything the exchange task is built from.
#[derive(Debug)]
pub struct ExchangeParts {
    pub socket: UdpSocket,
    pub exchange: Exchange,
    pub shared: Shared,
    pub node: NodeInfo,
    pub discovery: Vec<Box<dyn Discovery>>,
    pub commands: mpsc::Receiver<Command>,
    pub reconcile: mpsc::Sender<()>,
    pub identity: NodeIdentity,
    pub keys: MeshKeys,
    pub host: Box<dyn Host + Sync>,
    pub nat: NatWatch,
    pub lan_group: Option<std::net::Ipv4Addr>,
    pub link_events: mpsc::Receiver<()>,
    /// We were in a mesh at this address before (the peer cache names members): incumbent.
    pub established: bool,
    /// Which members may relay for us (`None`: any).
    pub relays: Option<wgmesh_membership::relay::RelayAllowList>,
    /// `--relay`: the relayed pairs' ports.
    pub relay: Option<RelayServer>,
}

impl std::fmt::Debug for dyn Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("source", &self.source())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ExchangeTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExchangeTask")
            .field("core", &self.core)
            .finish_non_exhaustive()
    }
}

/// The next candidate any pushing source delivers; pending forever when there is none.
async fn recv_pushed(
    pushed: &mut [(Source, mpsc::UnboundedReceiver<SocketAddr>)],
) -> (Source, SocketAddr) {
    std::future::poll_fn(|cx| {
        for (source, candidates) in pushed.iter_mut() {
            if let std::task::Poll::Ready(Some(addr)) = candidates.poll_recv(cx) {
                return std::task::Poll::Ready((*source, addr));
            }
        }
        // A closed channel stays silent; the open ones have registered the waker.
        std::task::Poll::Pending
    })
    .await
}

/// The IPv4 addresses among the host's, with their interfaces: where the LAN group is joined
/// and beacons are sent.
pub fn lan_ipv4(addresses: &[HostAddress]) -> Vec<(String, Ipv4Addr)> {
    addresses
        .iter()
        .filter_map(|address| match address.ip {
            std::net::IpAddr::V4(ip) => Some((address.interface.clone(), ip)),
            std::net::IpAddr::V6(_) => None,
        })
        .collect()
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

impl ExchangeTask {
    /// Builds the task; the core's randomness is seeded from the OS once, here.
    pub fn new(parts: ExchangeParts) -> std::io::Result<Self> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(std::io::Error::other)?;
        let start = now();
        let config = MembershipConfig {
            control_port: parts.node.control_port,
            mesh_prefixes: parts.node.mesh_prefixes.clone(),
            lan_discovery: parts.lan_group.is_some(),
            dht: parts.discovery.iter().any(|d| d.source() == Source::Dht),
            established: parts.established,
            relays: parts.relays,
            relay_tiebreak_key: parts.keys.network_id(),
            max_members: wgmesh_membership::MAX_MEMBERS,
        };
        let mut core = Membership::new(config, parts.exchange, seed, start);
        let mut discovery = parts.discovery;
        let mut pushed = Vec::new();
        for source in &mut discovery {
            match source.take_pushed() {
                Some(candidates) => pushed.push((source.source(), candidates)),
                None => core.add_discovery(source.source(), start),
            }
        }
        core.set_connected_networks(parts.host.connected_networks());
        Ok(Self {
            socket: parts.socket,
            core,
            shared: parts.shared,
            node: parts.node,
            discovery,
            commands: parts.commands,
            reconcile: parts.reconcile,
            identity: parts.identity,
            keys: parts.keys,
            host: parts.host,
            nat: parts.nat,
            lan_group: parts.lan_group,
            pushed,
            link_events: parts.link_events,
            relay: parts.relay,
        })
    }

    pub async fn run(mut self, cancel: CancellationToken) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            self.drain().await;
            // The core's next deadline, and STUN's (the NAT watch is still its own clock).
            let core_deadline = self
                .core
                .poll_timeout()
                .map(|(at, _)| tokio::time::Instant::from_std(at));
            let wake = core_deadline.map_or(self.nat.next_deadline(), |t| {
                t.min(self.nat.next_deadline())
            });
            tokio::select! {
                () = cancel.cancelled() => break,
                received = self.socket.async_io(tokio::io::Interest::READABLE, || {
                    recv_with_destination(&self.socket, &mut buf, self.lan_group)
                }) => match received {
                    Ok((len, from, to_group)) => self.on_datagram(&buf[..len], from, to_group).await,
                    Err(err) => tracing::debug!(error = %err, "control socket receive failed"),
                },
                Some(()) = self.link_events.recv() => self.nat.link_event(tokio::time::Instant::now()),
                (source, addr) = recv_pushed(&mut self.pushed) => {
                    self.core.handle_candidates(now_ms(), source, &[addr]);
                }
                command = self.commands.recv() => match command {
                    Some(Command::Announce(record)) => {
                        let info = own_info(&self.shared.lock());
                        if let Err(err) = self.core.set_record(now(), now_ms(), *record, info) {
                            tracing::error!(error = %err, "cannot announce our record");
                        }
                    }
                    Some(Command::SetRelays(setting)) => {
                        self.core.set_relays(relay_allow_list(&setting));
                    }
                    Some(Command::Goodbye(done)) => {
                        self.core.goodbye_all(now_ms());
                        self.drain().await;
                        let _ = done.send(());
                    }
                    Some(Command::StunServers(servers)) => self.nat.set_servers(servers),
                    None => break,
                },
                () = tokio::time::sleep_until(wake) => {
                    let now_tokio = tokio::time::Instant::now();
                    self.forget_expired();
                    let silent = std::mem::take(&mut self.shared.lock().silent_tunnels);
                    for key in silent {
                        tracing::info!(peer = %key.short(), "no WireGuard handshake on the direct path; asking a relay");
                        self.core.handle_tunnel_failed(now_tokio.into_std(), now_ms(), key);
                    }
                    self.core.handle_timeout(now_tokio.into_std(), now_ms());
                    if self.nat.address_check_due(now_tokio) {
                        let addresses = self.host.addresses();
                        if self.nat.addresses_read(now_tokio, &addresses) {
                            self.on_addresses_changed(addresses).await;
                        }
                    }
                    for (server, request) in self.nat.due_requests(now_tokio) {
                        self.send(&request, server).await;
                    }
                }
            }
        }
        // Stopping may join a thread (the DHT saves its known nodes for the next start).
        let sources = std::mem::take(&mut self.discovery);
        let _ =
            tokio::task::spawn_blocking(move || sources.into_iter().for_each(|s| s.stop())).await;
    }

    /// Members the reconciler's failure detector expired are forgotten by the core too.
    fn forget_expired(&mut self) {
        let state = self.shared.lock();
        self.core
            .retain_members(|key| state.members.get(key).is_some());
    }

    /// Sends what the core queued and acts on its events, until both are empty (acting on an
    /// event may queue more).
    async fn drain(&mut self) {
        loop {
            while let Some(transmit) = self.core.poll_transmit() {
                if transmit.dst.ip().is_multicast() {
                    self.send_multicast(&transmit.payload, transmit.dst).await;
                } else {
                    self.send(&transmit.payload, transmit.dst).await;
                }
            }
            let Some(event) = self.core.poll_event() else {
                return;
            };
            self.on_event(event).await;
        }
    }

    async fn on_event(&mut self, event: CoreEvent) {
        match event {
            CoreEvent::Member {
                member,
                change,
                from,
            } => self.on_member(*member, change, from),
            CoreEvent::Renamed { key, old, new } => {
                let show = |name: &Option<MemberName>| name.as_ref().map(ToString::to_string);
                tracing::info!(peer = %key.short(), old = ?show(&old), new = ?show(&new), "member renamed");
            }
            CoreEvent::DirectPath { key, relay, from } => {
                tracing::info!(peer = %key.short(), relay = %relay.short(), %from, "direct path found; no longer relayed");
            }
            CoreEvent::DirectPathLost { key, relay } => {
                tracing::info!(peer = %key.short(), relay = %relay.short(), "direct path lost; relaying");
            }
            CoreEvent::Relayed { member, relay } => {
                tracing::info!(peer = %member.public_key.short(), mesh_ipv4 = %member.mesh_ipv4, relay = %relay.short(), "no direct path; relaying");
                let mut shared = self.shared.lock();
                shared.on_trial.insert(member.public_key);
                shared.members.upsert(*member);
                drop(shared);
                let _ = self.reconcile.try_send(());
            }
            CoreEvent::Evicted { key, mesh_ipv4 } => {
                self.forget_relayed(&key);
                self.shared.lock().on_trial.remove(&key);
                if self.shared.lock().members.remove(&key).is_some() {
                    tracing::info!(peer = %key.short(), %mesh_ipv4, "member evicted to keep the member table within its cap (a suspect, or a newcomer on trial)");
                }
                let _ = self.reconcile.try_send(());
            }
            CoreEvent::RelayUnproven { key, mesh_ipv4 } => {
                self.shared.lock().on_trial.remove(&key);
                if self.shared.lock().members.remove(&key).is_some() {
                    tracing::info!(peer = %key.short(), %mesh_ipv4, "relayed member withdrawn: it proved no key possession through the relay in time");
                }
                let _ = self.reconcile.try_send(());
            }
            CoreEvent::RelayAsked {
                asker,
                asker_ip,
                peer,
                peer_ip,
            } => {
                let ports = match &self.relay {
                    None => Err(RefusalReason::NotARelay),
                    Some(relay) => relay
                        .allocate(Side::new(asker, asker_ip), Side::new(peer, peer_ip))
                        .map(|ports| (ports.asker, ports.peer))
                        .map_err(|err| {
                            tracing::debug!(asker = %asker.short(), peer = %peer.short(), error = %err, "relay pair refused");
                            refusal_reason(&err)
                        }),
                };
                self.core.relay_allocated(now_ms(), asker, peer, ports);
            }
            CoreEvent::Unreachable { key } => {
                tracing::debug!(peer = %key.short(), "unreachable directly and no member offers to relay");
            }
            CoreEvent::Contested {
                key,
                holder,
                mesh_ipv4,
            } => {
                tracing::warn!(peer = %key.short(), holder = %holder.short(), %mesh_ipv4, "member not installed: it claims an address another member already holds here (the incumbent keeps it)");
                let mut state = self.shared.lock();
                if state.contested.len() < 1_024 {
                    state.contested.insert(key, (mesh_ipv4, holder));
                }
            }
            CoreEvent::Suspect { key, mesh_ipv4 } => {
                tracing::info!(peer = %key.short(), %mesh_ipv4, timeout_secs = wgmesh_membership::liveness::SUSPECT_TIMEOUT.as_secs(), "member suspected: it answered none of our probes; removed unless it answers within the timeout");
            }
            CoreEvent::Cleared { key } => {
                tracing::info!(peer = %key.short(), "suspected member answered again");
            }
            CoreEvent::Failed { key, mesh_ipv4 } => {
                self.forget_relayed(&key);
                if self.shared.lock().members.remove(&key).is_some() {
                    tracing::info!(peer = %key.short(), %mesh_ipv4, "member failed: it answered no probe while suspected");
                }
                let _ = self.reconcile.try_send(());
            }
            CoreEvent::Left { key, mesh_ipv4 } => {
                self.forget_relayed(&key);
                self.shared.lock().on_trial.remove(&key);
                if self.shared.lock().members.remove(&key).is_some()
                    && let Some(mesh_ipv4) = mesh_ipv4
                {
                    tracing::info!(peer = %key.short(), %mesh_ipv4, "member said goodbye");
                }
                let _ = self.reconcile.try_send(());
            }
            CoreEvent::Collision {
                peer,
                mesh_ipv4,
                outcome,
            } => self.on_collision(peer, mesh_ipv4, outcome),
            CoreEvent::ClockSkew { from, offset_secs } => self.warn_clock_skew(from, offset_secs),
            CoreEvent::PollDiscovery(source) => {
                let candidates: Vec<SocketAddr> = self
                    .discovery
                    .iter_mut()
                    .filter(|d| d.source() == source)
                    .flat_map(|d| d.candidates())
                    .collect();
                self.core.handle_candidates(now_ms(), source, &candidates);
            }
            CoreEvent::DhtFast(fast) => {
                for source in self.discovery.iter().filter(|d| d.source() == Source::Dht) {
                    source.set_fast(fast);
                }
            }
        }
    }

    /// A member left the mesh: the pairs we relay for it are released at once.
    fn forget_relayed(&self, key: &PublicKey) {
        if let Some(relay) = &self.relay {
            relay.forget(key);
        }
    }

    /// Mirrors a verified member into the table the reconciler reads.
    fn on_member(&mut self, member: Member, change: MemberChange, from: SocketAddr) {
        let key = member.public_key;
        // Installed: no longer contested (it re-addressed, or the holder left), and proven.
        self.shared.lock().contested.remove(&key);
        self.shared.lock().on_trial.remove(&key);
        let routes = member.routes.clone();
        let (name, version, mesh_ipv4, source) = (
            member.name.as_ref().map(ToString::to_string),
            member.version.clone(),
            member.mesh_ipv4,
            member.source,
        );
        let mirrored = self.shared.lock().members.upsert(member);
        // The reconciler's table may have expired a member the core still knew: that is a join.
        let change = if mirrored == MemberChange::New {
            MemberChange::New
        } else {
            change
        };
        match change {
            MemberChange::New => {
                tracing::info!(peer = %key.short(), name = name.unwrap_or_default(), version = version.unwrap_or_default(), %mesh_ipv4, %from, source = source.as_str(), "member joined");
                let _ = self.reconcile.try_send(());
            }
            MemberChange::Updated => {
                tracing::info!(peer = %key.short(), %from, ?routes, "member updated");
                let _ = self.reconcile.try_send(());
            }
            MemberChange::Refreshed => {}
        }
    }

    /// The core decided who moves after an IPv4 collision (DESIGN.md §3); when it is us,
    /// persist the new counter first, then announce the new address.
    fn on_collision(&mut self, peer: PublicKey, mesh_ipv4: Ipv4Addr, outcome: Collision) {
        let next = match outcome {
            Collision::OtherMoves => {
                tracing::info!(peer = %peer.short(), %mesh_ipv4, "IPv4 collision; the other member re-addresses");
                return;
            }
            Collision::Held => {
                tracing::warn!(peer = %peer.short(), %mesh_ipv4, "IPv4 collision; we moved less than 10 minutes ago, so we keep the address and the other member is not installed");
                return;
            }
            Collision::Exhausted => {
                tracing::error!(peer = %peer.short(), "IPv4 collision and no collision counter left; keeping the address");
                return;
            }
            Collision::WeMove { counter } => counter,
        };
        if let Err(err) = self.identity.set_collision_counter(next, &self.keys) {
            tracing::error!(error = %err, "cannot persist the new collision counter; keeping the address");
            return;
        }
        let addresses = MeshAddresses::derive(&self.keys, &self.node.public_key, next);
        let own = OwnAddresses {
            ipv4: addresses.ipv4,
            ipv6: addresses.ipv6,
            collision_counter: next,
        };
        let record = {
            let mut state = self.shared.lock();
            let old = state.own.ipv4;
            state.own = own;
            tracing::warn!(peer = %peer.short(), old = %old, new = %own.ipv4, counter = next, "IPv4 collision: re-addressed");
            own_record(&self.node, &state)
        };
        if let Err(err) = self.core.handle_readdressed(now(), now_ms(), record) {
            tracing::error!(error = %err, "cannot announce the new address");
        }
        let _ = self.reconcile.try_send(());
    }

    /// Sends to the group once per LAN interface: without a default route the kernel would not
    /// know where a multicast datagram goes.
    async fn send_multicast(&self, datagram: &[u8], group: SocketAddr) {
        let interfaces = lan_ipv4(&self.shared.lock().underlay);
        for (name, ip) in interfaces {
            if let Err(err) = crate::platform::set_multicast_interface(&self.socket, ip) {
                tracing::debug!(interface = %name, error = %err, "cannot select multicast interface");
                continue;
            }
            if let Err(err) = self.socket.send_to(datagram, group).await {
                tracing::debug!(interface = %name, error = %err, "LAN beacon failed");
            }
        }
    }

    /// Sends one datagram. `ENOBUFS` (the device queue or the neighbour queue was full for a
    /// moment, as when a whole LAN answers one beacon) is retried twice, a few milliseconds
    /// apart: the exchange retries nothing itself, and a lost answer costs a discovery round.
    async fn send(&self, datagram: &[u8], to: SocketAddr) {
        for attempt in 0..3u64 {
            match self.socket.send_to(datagram, to).await {
                Ok(_) => return,
                Err(err) if crate::platform::is_no_buffer_space(&err) && attempt < 2 => {
                    tokio::time::sleep(std::time::Duration::from_millis(5 * (attempt + 1))).await;
                }
                Err(err) => {
                    tracing::debug!(%to, error = %err, "send failed");
                    return;
                }
            }
        }
    }

    async fn on_datagram(&mut self, datagram: &[u8], from: SocketAddr, to_group: bool) {
        // STUN shares the socket; its first two bits are 00, ours ("WGM1") are 01.
        if wgmesh_nat::is_stun(datagram) {
            if let Some(view) = self.nat.on_stun(from, datagram) {
                tracing::info!(nat = %view.nat_type, public = ?view.public_endpoint, "NAT mapping learned");
                self.announce_changed_endpoints(view);
            }
            return;
        }
        self.forget_expired();
        if to_group {
            self.core
                .handle_group_datagram(now(), now_ms(), from, datagram);
        } else {
            self.core.handle_datagram(now(), now_ms(), from, datagram);
        }
        self.shared.lock().exchange = self.core.exchange_stats().clone();
    }

    /// A message sealed under the mesh key came with a timestamp outside the window: the sender
    /// (or we) has a wrong clock and cannot join until NTP fixes it. Rate-limited per source.
    fn warn_clock_skew(&self, from: SocketAddr, offset_secs: i64) {
        let suppressed = self.shared.lock().clock_skew.observe(
            from.ip(),
            offset_secs,
            std::time::Instant::now(),
        );
        let Some(suppressed) = suppressed else { return };
        // The same count as `status --json` shows under exchange.dropped.stale_timestamp.
        let stale_drops = self
            .core
            .exchange_stats()
            .get(wgmesh_exchange::DropReason::StaleTimestamp);
        let window = self.core.exchange().config().timestamp_window_secs;
        let direction = if offset_secs > 0 {
            "ahead of"
        } else {
            "behind"
        };
        tracing::warn!(
            from = %from.ip(),
            clock_offset_secs = offset_secs,
            window_secs = window,
            stale_drops,
            suppressed,
            "exchange messages from {} are dropped: its clock is {} s {direction} ours, outside the \
             ±{window} s window; check NTP (e.g. `timedatectl`, `chronyc tracking`) on both hosts",
            from.ip(),
            offset_secs.unsigned_abs(),
        );
    }

    /// Our underlay addresses changed (a laptop moved networks): the core punches towards every
    /// member and rediscovers; here the LAN group is rejoined on the new interfaces, WireGuard's
    /// pinned source addresses are cleared, and every member hears our new endpoints.
    async fn on_addresses_changed(&mut self, addresses: Vec<HostAddress>) {
        tracing::info!(addresses = ?addresses.iter().map(|a| a.ip).collect::<Vec<_>>(), "host addresses changed; re-announcing");
        self.shared.lock().underlay.clone_from(&addresses);
        if let Some(servers) = self.nat.unresolved() {
            let resolved = super::nat::resolve(servers).await;
            self.nat.set_servers(resolved);
        }
        self.core
            .set_connected_networks(self.host.connected_networks());
        self.core.handle_addresses_changed(now());
        self.shared.lock().refresh_endpoints = true;
        let _ = self.reconcile.try_send(());
        if let Some(group) = self.lan_group {
            for (name, ip) in lan_ipv4(&addresses) {
                if let Err(err) = crate::platform::join_multicast(&self.socket, group, ip) {
                    tracing::debug!(interface = %name, error = %err, "cannot join the LAN group");
                }
            }
        }
        let view = self.nat.view().clone();
        self.announce_changed_endpoints(view);
        for source in &self.discovery {
            source.addresses_changed();
        }
    }

    /// Records the NAT view, rebuilds our record with the new endpoints and pushes it.
    fn announce_changed_endpoints(&mut self, view: NatView) {
        let (record, info) = {
            let mut state = self.shared.lock();
            state.nat_type = view.nat_type;
            state.public_endpoint = view.public_endpoint;
            (own_record(&self.node, &state), own_info(&state))
        };
        if let Err(err) = self.core.set_record(now(), now_ms(), record, info) {
            tracing::error!(error = %err, "cannot announce new endpoints");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wgmesh_device::BackendKind;

    #[test]
    fn our_record_lists_the_stun_mapping_then_the_hosts_ipv4_addresses() {
        let own = OwnAddresses {
            ipv4: Ipv4Addr::new(10, 1, 0, 100),
            ipv6: "fd00::100".parse().unwrap(),
            collision_counter: 0,
        };
        let shared = Shared::new(own, Vec::new());
        let node = NodeInfo {
            interface: "wgtest0".to_owned(),
            backend: BackendKind::Userspace,
            public_key: wgmesh_keys::PrivateKey::from_bytes_clamped([1; 32]).public_key(),
            listen_port: 51820,
            control_port: 51900,
            mesh_prefixes: vec!["10.1.0.0/16".parse().unwrap(), "fd00::/64".parse().unwrap()],
            relay: false,
        };
        let host = |interface: &str, ip: &str| HostAddress {
            interface: interface.to_owned(),
            ip: ip.parse().unwrap(),
        };
        {
            let mut state = shared.lock();
            state.underlay = vec![
                host("eth0", "192.168.1.20"),
                host("eth0", "2001:db8::20"),
                host("eth1", "172.16.0.2"),
            ];
            state.public_endpoint = Some("198.51.100.7:40000".parse().unwrap());
        }
        let record = own_record(&node, &shared.lock());
        let endpoints: Vec<String> = record
            .endpoints
            .iter()
            .map(|e| format!("{:?} {}", e.kind, e.addr))
            .collect();
        // STUN saw the control port's mapping; WireGuard's port is announced on that address.
        assert_eq!(
            endpoints,
            [
                "Stun 198.51.100.7:51820",
                "Lan 192.168.1.20:51820",
                "Lan 172.16.0.2:51820"
            ]
        );
        assert_eq!(
            lan_ipv4(&shared.lock().underlay),
            [
                ("eth0".to_owned(), Ipv4Addr::new(192, 168, 1, 20)),
                ("eth1".to_owned(), Ipv4Addr::new(172, 16, 0, 2))
            ]
        );
    }
}
