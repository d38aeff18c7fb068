//! The exchange protocol on the control port, and the discovery sources that feed it candidate
//! addresses (DESIGN.md §8). The pure protocol is `wgmesh_exchange::Exchange`; this is its
//! socket, its clock and its randomness.

use super::discovery::{DhtLink, Discovery};
use super::nat::{NatView, NatWatch};
use super::state::{MeshState, NodeInfo, OwnAddresses, Shared};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use wgmesh_derive::{MeshAddresses, MeshKeys};
use wgmesh_exchange::{
    Endpoint, EndpointKind, Entropy, Event, Exchange, GossipEntry, MemberInfo, PeerInfo, Record,
};
use wgmesh_keys::PublicKey;
use wgmesh_mesh::{Member, MemberChange, Source};
use wgmesh_names::MemberName;
use wgmesh_state::NodeIdentity;

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
}

pub fn now_ms() -> u64 {
    super::state::unix_ms(SystemTime::now())
}

fn entropy() -> Option<Entropy> {
    match Entropy::from_os() {
        Ok(entropy) => Some(entropy),
        Err(err) => {
            tracing::error!(error = %err, "no OS randomness; cannot send");
            None
        }
    }
}

/// IPv4 addresses of the host's interfaces that can carry mesh traffic (not loopback, not the
/// mesh interface itself), with their interface names.
pub fn lan_addresses(mesh_interface: &str) -> Vec<(String, Ipv4Addr)> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter(|a| a.interface_name != mesh_interface)
        .filter_map(|a| {
            let ip = a.address?.as_sockaddr_in()?.ip();
            (!ip.is_loopback() && !ip.is_unspecified()).then_some((a.interface_name, ip))
        })
        .collect()
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
    let lan = lan_addresses(&node.interface)
        .into_iter()
        .map(|(_, ip)| Endpoint {
            kind: EndpointKind::Lan,
            addr: SocketAddr::from((ip, node.listen_port)),
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
    let host = nix::unistd::gethostname().ok()?;
    let name = MemberName::from_host_name(&host.to_string_lossy());
    if name.is_none() {
        tracing::warn!(host = %host.to_string_lossy(), "the host name gives no usable member name; announcing none (set one with --name)");
    }
    name
}

/// Our version and name, as the exchange announces them.
pub fn own_info(state: &MeshState) -> MemberInfo {
    MemberInfo::new(crate::VERSION, state.own_name.clone())
}

/// Binds the control socket: all IPv4 addresses, joined to the LAN group on every interface.
///
/// Exclusively: no `SO_REUSEADDR` (and no `SO_REUSEPORT`). With either, a local user of any uid
/// could bind the same port on `127.0.0.1`, the LAN address, the group or the wildcard beside
/// the daemon and receive its datagrams (Linux delivers to the most specific, then the newest
/// socket). Multicast needs no sharing: the one socket bound to the wildcard receives the group's
/// datagrams on every interface it joined. Two daemons on one host therefore need different
/// control ports (the derived port differs per secret; `--control-port` for the rest).
pub fn bind_control(
    port: u16,
    group: Option<Ipv4Addr>,
    mesh_interface: &str,
) -> std::io::Result<UdpSocket> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    socket.set_nonblocking(true)?;
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    socket.bind(&addr.into()).map_err(|err| {
        if err.kind() == std::io::ErrorKind::AddrInUse {
            std::io::Error::new(
                err.kind(),
                format!(
                    "{err}: another process holds UDP port {port} (another wgmesh on this host? give one of them --control-port)"
                ),
            )
        } else {
            err
        }
    })?;
    if let Some(group) = group {
        socket.set_multicast_loop_v4(false)?;
        socket.set_multicast_ttl_v4(1)?;
        for (name, ip) in lan_addresses(mesh_interface) {
            if let Err(err) = socket.join_multicast_v4(&group, &ip) {
                tracing::debug!(interface = %name, error = %err, "cannot join the LAN group");
            }
        }
    }
    UdpSocket::from_std(socket.into())
}

/// The exchange task: receives datagrams, probes candidates, records verified members.
pub struct ExchangeTask {
    pub socket: UdpSocket,
    pub exchange: Exchange,
    pub shared: Shared,
    pub node: NodeInfo,
    pub discovery: Vec<Box<dyn Discovery>>,
    pub commands: mpsc::Receiver<Command>,
    pub reconcile: mpsc::Sender<()>,
    /// Kept to persist a new collision counter.
    pub identity: NodeIdentity,
    pub keys: MeshKeys,
    /// Which source an address was probed from, to tell status how a member was found.
    pub probed: HashMap<IpAddr, Source>,
    pub nat: NatWatch,
    /// The LAN group, when LAN discovery is on (rejoined when addresses change).
    pub lan_group: Option<std::net::Ipv4Addr>,
    /// The DHT rendezvous, when enabled (re-announced when addresses change).
    pub dht: Option<DhtLink>,
    /// Candidates from the DHT thread.
    pub dht_candidates: Option<mpsc::UnboundedReceiver<SocketAddr>>,
    /// When the member table last gained a member; the DHT looks up fast until it has been
    /// stable for a while.
    pub last_join: tokio::time::Instant,
    /// Members at the last refresh; fewer now means one went missing.
    pub members_seen: usize,
    /// Repeated probes to addresses learned second-hand: both sides start punching when gossip
    /// reaches them, and the first datagrams of each side usually hit the other's NAT before its
    /// own outbound mapping exists.
    pub punches: Vec<(tokio::time::Instant, SocketAddr)>,
    /// Link and address changes on the host (from rtnetlink).
    pub link_events: mpsc::Receiver<()>,
    /// Members we heard of only through gossip and could not reach directly yet: after
    /// [`RELAY_AFTER`] they are reached through a member that offers to relay.
    pub second_hand: HashMap<PublicKey, (GossipEntry, tokio::time::Instant)>,
}

impl std::fmt::Debug for ExchangeTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExchangeTask")
            .field("exchange", &self.exchange)
            .finish_non_exhaustive()
    }
}

/// How long a member heard of through gossip gets to answer directly before its traffic goes
/// through a relay.
const RELAY_AFTER: Duration = Duration::from_secs(6);

/// When to probe a gossiped address again (ms after the first probe).
const PUNCH_RETRIES: [u64; 4] = [500, 1_000, 2_000, 4_000];

/// The mesh counts as stable (slow DHT lookups) once no member has joined for this long.
const DHT_SETTLE: Duration = Duration::from_secs(60);

async fn recv_candidate(
    rx: &mut Option<mpsc::UnboundedReceiver<SocketAddr>>,
) -> Option<SocketAddr> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// How often each member is probed directly, refreshing its record and last-seen time. Far
/// below the 10-minute expiry, so one or two lost datagrams never expire a live member.
const MEMBER_REFRESH: Duration = Duration::from_secs(60);

impl ExchangeTask {
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let start = tokio::time::Instant::now();
        let mut next_poll: Vec<tokio::time::Instant> = vec![start; self.discovery.len()];
        let mut next_refresh = start + MEMBER_REFRESH;
        loop {
            let soonest = next_poll
                .iter()
                .copied()
                .min()
                .unwrap_or(next_refresh)
                .min(next_refresh)
                .min(self.nat.next_deadline())
                .min(
                    self.punches
                        .iter()
                        .map(|(t, _)| *t)
                        .min()
                        .unwrap_or(next_refresh),
                )
                .min(
                    self.second_hand
                        .values()
                        .map(|(_, since)| *since + RELAY_AFTER)
                        .min()
                        .unwrap_or(next_refresh),
                );
            tokio::select! {
                () = cancel.cancelled() => break,
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((len, from)) => self.on_datagram(&buf[..len], from).await,
                    Err(err) => tracing::debug!(error = %err, "control socket receive failed"),
                },
                Some(()) = self.link_events.recv() => self.nat.link_event(tokio::time::Instant::now()),
                Some(addr) = recv_candidate(&mut self.dht_candidates) => {
                    self.probe(addr, Some(Source::Dht)).await;
                }
                command = self.commands.recv() => match command {
                    Some(Command::Announce(record)) => {
                        if let Err(err) = self.exchange.set_record(*record) {
                            tracing::error!(error = %err, "cannot announce our record");
                        }
                        let info = own_info(&self.shared.lock());
                        self.exchange.set_info(info);
                        self.probe_members().await;
                    }
                    Some(Command::Goodbye(done)) => {
                        self.goodbye_all().await;
                        let _ = done.send(());
                    }
                    Some(Command::StunServers(servers)) => self.nat.set_servers(servers),
                    None => break,
                },
                () = tokio::time::sleep_until(soonest) => {
                    let now = tokio::time::Instant::now();
                    let members = self.shared.lock().members.len();
                    let mut due = Vec::new();
                    for (discovery, next) in self.discovery.iter_mut().zip(next_poll.iter_mut()) {
                        if *next <= now {
                            due.push((discovery.source(), discovery.candidates()));
                            *next = now + discovery.interval(members);
                        }
                    }
                    for (source, candidates) in due {
                        for addr in candidates {
                            self.probe(addr, Some(source)).await;
                        }
                    }
                    if next_refresh <= now {
                        self.probe_members().await;
                        next_refresh = now + MEMBER_REFRESH;
                        if let Some(dht) = &self.dht {
                            // Fast while forming, and again when a member went missing (it may
                            // be back at a new address), until the mesh has been stable a while.
                            let members = self.shared.lock().members.len();
                            if members < self.members_seen {
                                self.last_join = now;
                            }
                            self.members_seen = members;
                            dht.set_fast(members == 0 || now.duration_since(self.last_join) < DHT_SETTLE);
                        }
                    }
                    if self.nat.addresses_changed(now) {
                        self.on_addresses_changed().await;
                        // Rediscover at once on the new network.
                        next_poll.iter_mut().for_each(|t| *t = now);
                    }
                    let due: Vec<SocketAddr> =
                        self.punches.iter().filter(|(t, _)| *t <= now).map(|(_, a)| *a).collect();
                    self.punches.retain(|(t, _)| *t > now);
                    for addr in due {
                        let source = (!self.is_mesh_address(addr.ip())).then_some(Source::Gossip);
                        self.probe(addr, source).await;
                    }
                    self.relay_unreachable(now).await;
                    for (server, request) in self.nat.due_requests(now) {
                        self.send(&request, server).await;
                    }
                }
            }
        }
        if let Some(dht) = self.dht.take() {
            // Stopping joins the DHT thread, which saves the known nodes for the next start.
            let _ = tokio::task::spawn_blocking(move || dht.stop()).await;
        }
    }

    /// Whether `ip` is a mesh address: traffic from or to it goes through the tunnels.
    fn is_mesh_address(&self, ip: IpAddr) -> bool {
        self.node.mesh_prefixes.iter().any(|net| net.contains(&ip))
    }

    /// A member's control port reached through its tunnel.
    fn tunnel_addr(&self, mesh_ipv4: std::net::Ipv4Addr) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(mesh_ipv4), self.node.control_port)
    }

    /// Probes `addr` again after each delay (milliseconds from now).
    fn schedule_probes(&mut self, addr: SocketAddr, delays_ms: &[u64]) {
        let now = tokio::time::Instant::now();
        self.punches.extend(
            delays_ms
                .iter()
                .map(|ms| (now + Duration::from_millis(*ms), addr)),
        );
    }

    /// Probes `addr`; `source` (if any) is how the address was discovered, reported for the
    /// member that answers. Refresh probes to known members pass `None`.
    async fn probe(&mut self, addr: SocketAddr, source: Option<Source>) {
        let Some(entropy) = entropy() else { return };
        let datagram = self.exchange.probe(now_ms(), entropy);
        if addr.ip().is_multicast() {
            self.send_multicast(&datagram, addr).await;
        } else {
            if let Some(source) = source {
                self.probed.entry(addr.ip()).or_insert(source);
            }
            self.send(&datagram, addr).await;
        }
    }

    /// Sends to the group once per LAN interface: without a default route the kernel would not
    /// know where a multicast datagram goes.
    async fn send_multicast(&self, datagram: &[u8], group: SocketAddr) {
        let sock = socket2::SockRef::from(&self.socket);
        for (name, ip) in lan_addresses(&self.node.interface) {
            if let Err(err) = sock.set_multicast_if_v4(&ip) {
                tracing::debug!(interface = %name, error = %err, "cannot select multicast interface");
                continue;
            }
            if let Err(err) = self.socket.send_to(datagram, group).await {
                tracing::debug!(interface = %name, error = %err, "LAN beacon failed");
            }
        }
    }

    async fn send(&self, datagram: &[u8], to: SocketAddr) {
        if let Err(err) = self.socket.send_to(datagram, to).await {
            tracing::debug!(%to, error = %err, "send failed");
        }
    }

    async fn probe_members(&mut self) {
        let targets: Vec<SocketAddr> = self
            .shared
            .lock()
            .members
            .iter()
            .flat_map(|m| {
                // A relayed member is probed directly (is a direct path there now?) and through
                // the tunnel (which keeps it verified and its routes current).
                let inside = m
                    .relay_via
                    .map(|_| SocketAddr::new(IpAddr::V4(m.mesh_ipv4), self.node.control_port));
                m.control_addr.into_iter().chain(inside)
            })
            .collect();
        for addr in targets {
            self.probe(addr, None).await;
        }
    }

    async fn goodbye_all(&mut self) {
        let targets: Vec<_> = self
            .shared
            .lock()
            .members
            .iter()
            .filter_map(|m| m.control_addr.map(|a| (m.public_key, a)))
            .collect();
        for (key, addr) in targets {
            let Some(entropy) = entropy() else { return };
            match self.exchange.goodbye(&key, now_ms(), entropy) {
                Ok(datagram) => self.send(&datagram, addr).await,
                Err(err) => tracing::debug!(error = %err, "cannot build goodbye"),
            }
        }
    }

    async fn on_datagram(&mut self, datagram: &[u8], from: SocketAddr) {
        // STUN shares the socket; its first two bits are 00, ours ("WGM1") are 01.
        if wgmesh_nat::is_stun(datagram) {
            if let Some(view) = self.nat.on_stun(from, datagram) {
                tracing::info!(nat = %view.nat_type, public = ?view.public_endpoint, "NAT mapping learned");
                self.announce_changed_endpoints(view).await;
            }
            return;
        }
        let Some(entropy) = entropy() else { return };
        let handled = self.exchange.handle(now_ms(), from, datagram, entropy);
        self.shared.lock().exchange = self.exchange.stats().clone();
        if let Some(reason) = handled.dropped {
            tracing::trace!(%from, ?reason, "dropped control datagram");
        }
        if let Some(offset) = handled.clock_offset_secs {
            self.warn_clock_skew(from, offset);
        }
        if let Some(reply) = &handled.reply {
            self.send(reply, from).await;
        }
        match handled.event {
            Some(Event::Verified { record, from, info }) => {
                self.on_verified(record, from, info).await;
            }
            Some(Event::Goodbye { key }) => {
                if let Some(gone) = self.shared.lock().members.remove(&key) {
                    tracing::info!(peer = %key.short(), mesh_ipv4 = %gone.mesh_ipv4, "member said goodbye");
                }
                let _ = self.reconcile.try_send(());
            }
            Some(Event::Gossip {
                sender,
                from,
                entries,
            }) => self.on_gossip(sender, from, entries).await,
            None => {}
        }
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
            .exchange
            .stats()
            .get(wgmesh_exchange::DropReason::StaleTimestamp);
        let window = self.exchange.config().timestamp_window_secs;
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

    async fn on_verified(&mut self, record: Record, from: SocketAddr, info: PeerInfo) {
        let own = self.shared.lock().own;
        if record.mesh_ipv4 == own.ipv4 {
            self.on_collision(&record).await;
            if record.public_key > self.node.public_key {
                // It re-addresses itself (DESIGN.md §3); until then it is not installed, or its
                // /32 would shadow ours.
                return;
            }
        }
        // Not probed by address: found by our LAN beacon if it sits on our LAN, otherwise it
        // contacted us first (found by its own discovery, not ours).
        let source = self.probed.get(&from.ip()).copied().unwrap_or_else(|| {
            let on_lan = self.lan_group.is_some()
                && super::reconcile::connected_networks(&self.node.interface)
                    .iter()
                    .any(|net| net.contains(&from.ip()));
            if on_lan { Source::Lan } else { Source::Inbound }
        });
        // An exchange that came through the tunnel (from a mesh address) says nothing about the
        // member's underlay: keep what we know, or we would point WireGuard at itself.
        let through_tunnel = self.is_mesh_address(from.ip());
        let (endpoint, control_addr, relay_via) = if through_tunnel {
            let state = self.shared.lock();
            let known = state.members.get(&record.public_key);
            let relay_via = match known {
                Some(m) => m.relay_via,
                None => state
                    .members
                    .iter()
                    .find(|m| m.relay_offered && m.relay_via.is_none())
                    .map(|m| m.public_key),
            };
            if known.is_none() && relay_via.is_none() {
                return;
            }
            (
                known.and_then(|m| m.endpoint),
                known.and_then(|m| m.control_addr).or(Some(from)),
                relay_via,
            )
        } else {
            // The address its exchange reached us from is on a path that works; WireGuard
            // listens on the same host at its own port.
            if let Some(via) = self
                .shared
                .lock()
                .members
                .get(&record.public_key)
                .and_then(|m| m.relay_via)
            {
                tracing::info!(peer = %record.public_key.short(), relay = %via.short(), %from, "direct path found; no longer relayed");
            }
            (
                Some(SocketAddr::new(from.ip(), record.listen_port)),
                Some(from),
                None,
            )
        };
        self.second_hand.remove(&record.public_key);
        let known = self
            .shared
            .lock()
            .members
            .get(&record.public_key)
            .map(|m| MemberInfo {
                version: m.version.clone(),
                name: m.name.clone(),
            });
        let said = info.merge(known.clone());
        if let Some(old) = known.filter(|k| k.name.is_some() && k.name != said.name) {
            let show = |name: &Option<MemberName>| name.as_ref().map(ToString::to_string);
            tracing::info!(peer = %record.public_key.short(), old = ?show(&old.name), new = ?show(&said.name), "member renamed");
        }
        let name_for_log = said.name.as_ref().map(ToString::to_string);
        let version_for_log = said.version.clone();
        let member = Member {
            public_key: record.public_key,
            mesh_ipv4: record.mesh_ipv4,
            mesh_ipv6: record.mesh_ipv6,
            collision_counter: record.collision_counter,
            endpoint,
            control_addr,
            routes: record.routes.clone(),
            source,
            relay_offered: record.relay_offered(),
            last_seen_ms: now_ms(),
            moved_at_ms: 0,
            relay_via,
            name: said.name,
            version: said.version,
            name_claim: 0,
        };
        let change = self.shared.lock().members.upsert(member);
        match change {
            MemberChange::New => {
                tracing::info!(peer = %record.public_key.short(), name = name_for_log.unwrap_or_default(), version = version_for_log.unwrap_or_default(), mesh_ipv4 = %record.mesh_ipv4, %from, source = source.as_str(), "member joined");
                self.last_join = tokio::time::Instant::now();
                let _ = self.reconcile.try_send(());
                self.gossip_about_newcomer(&record.public_key).await;
            }
            MemberChange::Updated => {
                tracing::info!(peer = %record.public_key.short(), %from, routes = ?record.routes, "member updated");
                let _ = self.reconcile.try_send(());
                // It may have moved: the others learn its new address from us.
                self.gossip_about_newcomer(&record.public_key).await;
                let moved = self
                    .shared
                    .lock()
                    .members
                    .get(&record.public_key)
                    .is_some_and(|m| {
                        m.moved_at_ms != 0 && now_ms().saturating_sub(m.moved_at_ms) < 5_000
                    });
                if moved && !through_tunnel {
                    // Our NAT only lets its packets in once we have sent to its new address:
                    // after the reconcile points WireGuard there, send through the tunnel.
                    self.schedule_probes(self.tunnel_addr(record.mesh_ipv4), &[300, 1_000]);
                }
            }
            MemberChange::Refreshed => {}
        }
    }

    /// Members heard of through gossip that did not answer directly within [`RELAY_AFTER`] are
    /// reached through a member offering to relay (both behind endpoint-dependent NAT, so no
    /// hole can be punched). Their underlay control address stays known, so the periodic member
    /// probe keeps trying the direct path; the first direct exchange ends the relaying.
    async fn relay_unreachable(&mut self, now: tokio::time::Instant) {
        let due: Vec<PublicKey> = self
            .second_hand
            .iter()
            .filter(|(_, (_, since))| *since + RELAY_AFTER <= now)
            .map(|(key, _)| *key)
            .collect();
        for key in due {
            let Some((entry, _)) = self.second_hand.remove(&key) else {
                continue;
            };
            let relay = {
                let state = self.shared.lock();
                if state.members.get(&key).is_some() {
                    continue;
                }
                state
                    .members
                    .iter()
                    .find(|m| m.relay_offered && m.relay_via.is_none())
                    .map(|m| m.public_key)
            };
            let Some(relay) = relay else {
                tracing::debug!(peer = %key.short(), "unreachable directly and no member offers to relay");
                continue;
            };
            let record = &entry.record;
            let member = Member {
                public_key: key,
                mesh_ipv4: record.mesh_ipv4,
                mesh_ipv6: record.mesh_ipv6,
                collision_counter: record.collision_counter,
                endpoint: record.endpoints.first().map(|e| e.addr),
                control_addr: Some(entry.control),
                routes: Vec::new(),
                source: Source::Gossip,
                relay_offered: record.relay_offered(),
                last_seen_ms: now_ms(),
                moved_at_ms: 0,
                relay_via: Some(relay),
                // Gossip is second-hand: a name is only taken from the member itself.
                name: None,
                version: None,
                name_claim: 0,
            };
            self.shared.lock().members.upsert(member);
            tracing::info!(peer = %key.short(), mesh_ipv4 = %record.mesh_ipv4, relay = %relay.short(), "no direct path; relaying");
            let _ = self.reconcile.try_send(());
            // An exchange inside the tunnel, through the relay, brings its routes (DESIGN.md §8).
            self.schedule_probes(self.tunnel_addr(record.mesh_ipv4), &[300, 1_000, 2_000]);
        }
    }

    /// Our underlay addresses changed (a laptop moved networks): rejoin the LAN group on the new
    /// interfaces, tell every member our new endpoints; STUN starts over on its own.
    async fn on_addresses_changed(&mut self) {
        tracing::info!("host addresses changed; re-announcing");
        if let Some(servers) = self.nat.unresolved() {
            let resolved = super::nat::resolve(servers).await;
            self.nat.set_servers(resolved);
        }
        // Punch towards every member from the new address: their NATs only let us in once
        // their side has sent to us too, which gossip through a reachable member triggers.
        let members: Vec<SocketAddr> = self
            .shared
            .lock()
            .members
            .iter()
            .filter_map(|m| m.control_addr)
            .collect();
        for addr in members {
            self.schedule_probes(addr, &PUNCH_RETRIES);
        }
        // And through the tunnels: a datagram to a member's mesh address makes WireGuard send
        // from our new address at once, so the member roams its endpoint to us and our NAT
        // opens for its answer, instead of both waiting for the next keepalive (up to 25 s).
        let inside: Vec<SocketAddr> = {
            let mut state = self.shared.lock();
            state.refresh_endpoints = true;
            state
                .members
                .iter()
                .map(|m| self.tunnel_addr(m.mesh_ipv4))
                .collect()
        };
        let _ = self.reconcile.try_send(());
        // After the reconcile above has unpinned WireGuard's source addresses.
        for addr in inside {
            self.schedule_probes(addr, &[300, 1_000]);
        }
        if let Some(group) = self.lan_group {
            for (name, ip) in lan_addresses(&self.node.interface) {
                if let Err(err) =
                    socket2::SockRef::from(&self.socket).join_multicast_v4(&group, &ip)
                {
                    tracing::debug!(interface = %name, error = %err, "cannot join the LAN group");
                }
            }
        }
        let view = self.nat.view().clone();
        self.announce_changed_endpoints(view).await;
        if let Some(dht) = &self.dht {
            dht.reannounce();
        }
    }

    /// Records the NAT view, rebuilds our record with the new endpoints and pushes it.
    async fn announce_changed_endpoints(&mut self, view: NatView) {
        let record = {
            let mut state = self.shared.lock();
            state.nat_type = view.nat_type;
            state.public_endpoint = view.public_endpoint;
            own_record(&self.node, &state)
        };
        if let Err(err) = self.exchange.set_record(record) {
            tracing::error!(error = %err, "cannot announce new endpoints");
        }
        self.probe_members().await;
    }

    /// Two members derived the same IPv4. The one with the greater public key moves to the next
    /// collision counter, persists it and re-announces (DESIGN.md §3).
    async fn on_collision(&mut self, other: &Record) {
        if other.public_key > self.node.public_key {
            tracing::info!(peer = %other.public_key.short(), mesh_ipv4 = %other.mesh_ipv4, "IPv4 collision; the other member re-addresses");
            return;
        }
        let next = self.identity.collision_counter + 1;
        if next > wgmesh_derive::MAX_COLLISION_COUNTER {
            tracing::error!(peer = %other.public_key.short(), "IPv4 collision and no collision counter left; keeping the address");
            return;
        }
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
            tracing::warn!(peer = %other.public_key.short(), old = %old, new = %own.ipv4, counter = next, "IPv4 collision: re-addressed");
            own_record(&self.node, &state)
        };
        if let Err(err) = self.exchange.set_record(record) {
            tracing::error!(error = %err, "cannot announce the new address");
        }
        let _ = self.reconcile.try_send(());
        self.probe_members().await;
        // The member we collided with is not in our table (it was not installed): tell it too.
        if let Some(addr) = self.probed_addr_of(other) {
            self.probe(addr, None).await;
        }
    }

    fn probed_addr_of(&self, record: &Record) -> Option<SocketAddr> {
        record
            .endpoints
            .first()
            .map(|e| SocketAddr::new(e.addr.ip(), self.node.control_port))
    }

    /// What we know of `member`, as a gossip entry.
    fn gossip_entry(member: &Member) -> Option<GossipEntry> {
        let control = member.control_addr?;
        let endpoint = member.endpoint?;
        Some(GossipEntry {
            control,
            record: Record {
                public_key: member.public_key,
                collision_counter: member.collision_counter,
                mesh_ipv4: member.mesh_ipv4,
                mesh_ipv6: member.mesh_ipv6,
                endpoints: vec![Endpoint {
                    kind: EndpointKind::Observed,
                    addr: endpoint,
                }],
                listen_port: endpoint.port(),
                routes: Vec::new(),
                flags: if member.relay_offered {
                    wgmesh_exchange::FLAG_RELAY
                } else {
                    0
                },
                timestamp: member.last_seen_ms / 1000,
            },
        })
    }

    /// Tells a newcomer about everyone we know, and everyone about the newcomer, so a mesh
    /// converges even where each member found only one other (DESIGN.md §8).
    async fn gossip_about_newcomer(&mut self, newcomer: &PublicKey) {
        let (others, about_newcomer): (Vec<(SocketAddr, GossipEntry)>, Option<GossipEntry>) = {
            let state = self.shared.lock();
            let others = state
                .members
                .iter()
                .filter(|m| m.public_key != *newcomer)
                .filter_map(|m| Some((m.control_addr?, Self::gossip_entry(m)?)))
                .collect();
            (
                others,
                state.members.get(newcomer).and_then(Self::gossip_entry),
            )
        };
        let Some(about_newcomer) = about_newcomer else {
            return;
        };
        let newcomer_addr = about_newcomer.control;
        let entries: Vec<GossipEntry> = others.iter().map(|(_, e)| e.clone()).collect();
        for chunk in entries.chunks(wgmesh_exchange::MAX_GOSSIP_ENTRIES) {
            let Some(entropy) = entropy() else { return };
            let datagram = self.exchange.gossip(chunk, now_ms(), entropy);
            self.send(&datagram, newcomer_addr).await;
        }
        for (addr, _) in &others {
            let Some(entropy) = entropy() else { return };
            let datagram =
                self.exchange
                    .gossip(std::slice::from_ref(&about_newcomer), now_ms(), entropy);
            self.send(&datagram, *addr).await;
        }
    }

    /// Gossip from a verified member: probe every member it names that we do not know yet.
    /// Gossip from anyone else is ignored (the secret gate alone is not membership).
    async fn on_gossip(&mut self, sender: PublicKey, from: SocketAddr, entries: Vec<GossipEntry>) {
        let unknown: Vec<SocketAddr> = {
            let state = self.shared.lock();
            if state
                .members
                .get(&sender)
                .is_none_or(|m| m.control_addr.map(|a| a.ip()) != Some(from.ip()))
            {
                tracing::debug!(%from, "gossip from a non-member ignored");
                return;
            }
            entries
                .iter()
                // Unknown members, and known ones seen at a new address (they moved).
                .filter(|e| {
                    state
                        .members
                        .get(&e.record.public_key)
                        .is_none_or(|m| m.control_addr != Some(e.control))
                })
                .map(|e| e.control)
                .collect()
        };
        let now = tokio::time::Instant::now();
        {
            let state = self.shared.lock();
            for entry in &entries {
                if state.members.get(&entry.record.public_key).is_none() {
                    self.second_hand
                        .entry(entry.record.public_key)
                        .or_insert((entry.clone(), now));
                }
            }
        }
        for addr in unknown {
            tracing::debug!(%addr, "probing a member learned by gossip");
            self.probe(addr, Some(Source::Gossip)).await;
            if !self.punches.iter().any(|(_, a)| *a == addr) {
                self.schedule_probes(addr, &PUNCH_RETRIES);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No other socket, whatever options it sets, can bind the control port beside the daemon:
    /// not the wildcard, not loopback, not the LAN group. (A local user of another uid is
    /// `tests/local_user_lab.rs`.)
    #[tokio::test]
    async fn nothing_binds_beside_the_control_socket() {
        let group = Ipv4Addr::new(239, 192, 77, 78);
        // No group membership: joining would send IGMP reports on the build host's networks.
        let control = bind_control(0, None, "none").unwrap();
        let port = control.local_addr().unwrap().port();
        for ip in [Ipv4Addr::UNSPECIFIED, Ipv4Addr::LOCALHOST, group] {
            let other =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
            other.set_reuse_address(true).unwrap();
            other.set_reuse_port(true).unwrap();
            let err = other
                .bind(&SocketAddr::from((ip, port)).into())
                .expect_err("bound beside the control socket");
            assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{ip}: {err}");
        }
    }

    #[tokio::test]
    async fn a_taken_control_port_is_reported_with_the_fix() {
        let holder = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        let port = holder.local_addr().unwrap().port();
        let err = bind_control(port, None, "none").unwrap_err().to_string();
        assert!(
            err.contains(&format!("UDP port {port}")) && err.contains("--control-port"),
            "{err}"
        );
    }
}
