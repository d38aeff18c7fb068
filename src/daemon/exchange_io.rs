//! The exchange protocol on the control port, and the discovery sources that feed it candidate
//! addresses (DESIGN.md §8). The pure protocol is `wgmesh_exchange::Exchange`; this is its
//! socket, its clock and its randomness.

use super::state::{NodeInfo, Shared};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use wgmesh_exchange::{Endpoint, EndpointKind, Entropy, Event, Exchange, Record};
use wgmesh_mesh::{Member, MemberChange, Source};

/// Largest datagram the protocol produces; bigger ones are read truncated and dropped.
const MAX_DATAGRAM: usize = 1500;

/// A source of candidate control addresses (LAN multicast, static seeds; later the DHT and the
/// peer cache). Polled by the exchange task on the source's own schedule.
pub trait Discovery: Send + Sync {
    fn source(&self) -> Source;
    /// Addresses to probe now.
    fn candidates(&mut self) -> Vec<SocketAddr>;
    /// How long until the next poll, given how many members are known.
    fn interval(&self, members: usize) -> Duration;
}

/// LAN multicast on the secret-derived group: the probe itself is the (encrypted) beacon.
#[derive(Debug)]
pub struct LanDiscovery {
    pub group: SocketAddr,
    polls: u32,
}

impl LanDiscovery {
    pub fn new(group: SocketAddr) -> Self {
        Self { group, polls: 0 }
    }
}

impl Discovery for LanDiscovery {
    fn source(&self) -> Source {
        Source::Lan
    }

    fn candidates(&mut self) -> Vec<SocketAddr> {
        self.polls = self.polls.saturating_add(1);
        vec![self.group]
    }

    /// Fast while starting (a lost first beacon costs a second, not a minute), then slow: a
    /// newcomer announces itself, so the steady mesh only needs beacons to notice partitions heal.
    fn interval(&self, _members: usize) -> Duration {
        if self.polls < 5 {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(30)
        }
    }
}

/// Operator-given `--peer HOST:PORT` seeds, resolved on every poll (DNS may change).
#[derive(Debug)]
pub struct StaticDiscovery {
    pub seeds: Vec<String>,
    polls: u32,
}

impl StaticDiscovery {
    pub fn new(seeds: Vec<String>) -> Self {
        Self { seeds, polls: 0 }
    }
}

impl Discovery for StaticDiscovery {
    fn source(&self) -> Source {
        Source::Static
    }

    fn candidates(&mut self) -> Vec<SocketAddr> {
        self.polls = self.polls.saturating_add(1);
        use std::net::ToSocketAddrs as _;
        self.seeds
            .iter()
            .flat_map(|seed| match seed.to_socket_addrs() {
                Ok(addrs) => addrs.collect::<Vec<_>>(),
                Err(err) => {
                    tracing::debug!(%seed, error = %err, "cannot resolve static peer");
                    Vec::new()
                }
            })
            .collect()
    }

    fn interval(&self, _members: usize) -> Duration {
        if self.polls < 5 {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(30)
        }
    }
}

/// Requests from other tasks.
#[derive(Debug)]
pub enum Command {
    /// Our record changed (reload): announce it to every member.
    Announce(Box<Record>),
    /// Say goodbye to every member, then report back.
    Goodbye(oneshot::Sender<()>),
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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

/// Our record: key, addresses, LAN endpoints, advertised routes.
pub fn own_record(node: &NodeInfo, advertised: &[ipnet::IpNet]) -> Record {
    let endpoints = lan_addresses(&node.interface)
        .into_iter()
        .take(wgmesh_exchange::MAX_ENDPOINTS)
        .map(|(_, ip)| Endpoint {
            kind: EndpointKind::Lan,
            addr: SocketAddr::from((ip, node.listen_port)),
        })
        .collect();
    Record {
        public_key: node.public_key,
        collision_counter: node.collision_counter,
        mesh_ipv4: node.mesh_ipv4,
        mesh_ipv6: node.mesh_ipv6,
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

/// Binds the control socket: all IPv4 addresses, joined to the LAN group on every interface.
pub fn bind_control(
    port: u16,
    group: Option<Ipv4Addr>,
    mesh_interface: &str,
) -> std::io::Result<UdpSocket> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    // Several daemons (on different interfaces, or in tests) may share a host; the group
    // membership needs the port bound by each of them.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).into())?;
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
    /// Which source an address was probed from, to tell status how a member was found.
    probed: HashMap<IpAddr, Source>,
}

impl std::fmt::Debug for ExchangeTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExchangeTask")
            .field("exchange", &self.exchange)
            .finish_non_exhaustive()
    }
}

/// How often each member is probed directly, refreshing its record and last-seen time. Far
/// below the 10-minute expiry, so one or two lost datagrams never expire a live member.
const MEMBER_REFRESH: Duration = Duration::from_secs(60);

impl ExchangeTask {
    pub fn new(
        socket: UdpSocket,
        exchange: Exchange,
        shared: Shared,
        node: NodeInfo,
        discovery: Vec<Box<dyn Discovery>>,
        commands: mpsc::Receiver<Command>,
        reconcile: mpsc::Sender<()>,
    ) -> Self {
        Self {
            socket,
            exchange,
            shared,
            node,
            discovery,
            commands,
            reconcile,
            probed: HashMap::new(),
        }
    }

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
                .min(next_refresh);
            tokio::select! {
                () = cancel.cancelled() => break,
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((len, from)) => self.on_datagram(&buf[..len], from).await,
                    Err(err) => tracing::debug!(error = %err, "control socket receive failed"),
                },
                command = self.commands.recv() => match command {
                    Some(Command::Announce(record)) => {
                        if let Err(err) = self.exchange.set_record(*record) {
                            tracing::error!(error = %err, "cannot announce our record");
                        }
                        self.probe_members().await;
                    }
                    Some(Command::Goodbye(done)) => {
                        self.goodbye_all().await;
                        let _ = done.send(());
                    }
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
                    }
                }
            }
        }
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
            .filter_map(|m| m.control_addr)
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
        let Some(entropy) = entropy() else { return };
        let handled = self.exchange.handle(now_ms(), from, datagram, entropy);
        if let Some(reason) = handled.dropped {
            tracing::trace!(%from, ?reason, "dropped control datagram");
        }
        if let Some(reply) = &handled.reply {
            self.send(reply, from).await;
        }
        match handled.event {
            Some(Event::Verified { record, from }) => self.on_verified(record, from),
            Some(Event::Goodbye { key }) => {
                if let Some(gone) = self.shared.lock().members.remove(&key) {
                    tracing::info!(peer = %key.short(), mesh_ipv4 = %gone.mesh_ipv4, "member said goodbye");
                }
                let _ = self.reconcile.try_send(());
            }
            None => {}
        }
    }

    fn on_verified(&mut self, record: Record, from: SocketAddr) {
        let source = self.probed.get(&from.ip()).copied().unwrap_or(Source::Lan);
        let member = Member {
            public_key: record.public_key,
            mesh_ipv4: record.mesh_ipv4,
            mesh_ipv6: record.mesh_ipv6,
            collision_counter: record.collision_counter,
            // The address its exchange reached us from is on a path that works; WireGuard
            // listens on the same host at its own port.
            endpoint: Some(SocketAddr::new(from.ip(), record.listen_port)),
            control_addr: Some(from),
            routes: record.routes.clone(),
            source,
            relay_offered: record.relay_offered(),
            last_seen_ms: now_ms(),
        };
        let change = self.shared.lock().members.upsert(member);
        match change {
            MemberChange::New => {
                tracing::info!(peer = %record.public_key.short(), mesh_ipv4 = %record.mesh_ipv4, %from, source = source.as_str(), "member joined");
                let _ = self.reconcile.try_send(());
            }
            MemberChange::Updated => {
                tracing::info!(peer = %record.public_key.short(), routes = ?record.routes, "member updated");
                let _ = self.reconcile.try_send(());
            }
            MemberChange::Refreshed => {}
        }
    }
}
