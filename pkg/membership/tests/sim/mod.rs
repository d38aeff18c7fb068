//! A deterministic simulated network of membership cores (issue 11, item 3): latency, loss,
//! duplication, reordering (random latency), partitions, and per-node clock skew. Every node is
//! a real [`Membership`] with a real [`Exchange`]; only the wire is simulated.
//!
//! Addressing: node `i` sits at `172.16.(i / 250).(i % 250 + 1)`, all on one LAN segment that
//! carries the multicast group. A datagram to a mesh address goes through the "tunnel" when both
//! ends hold each other as members (WireGuard would have the peer configured) and arrives from
//! the sender's mesh address.

#![allow(dead_code, reason = "each test binary uses a different subset")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test fixtures: a failure here is a test failure"
)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use wgmesh_derive::{MeshAddresses, MeshKeys, NodeSeed, Secret};
use wgmesh_exchange::{Endpoint, EndpointKind, Exchange, ExchangeConfig, MemberInfo, Record};
use wgmesh_keys::{PrivateKey, PublicKey};
use wgmesh_membership::{Config, Event, Membership, Transmit};
use wgmesh_mesh::Source;

/// Wall-clock time at the start of every simulation (Unix ms).
pub const WALL_START: u64 = 1_750_000_000_000;
pub const LISTEN_PORT: u16 = 51820;

pub fn keys() -> &'static MeshKeys {
    static KEYS: OnceLock<MeshKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        MeshKeys::derive(&Secret::parse("wgmesh://v1/membership-sim-secret").unwrap())
    })
}

/// The network's behaviour, all probabilities in per mille.
#[derive(Debug, Clone, Copy)]
pub struct NetConfig {
    pub latency_min_ms: u64,
    pub latency_max_ms: u64,
    pub loss_permille: u32,
    pub duplicate_permille: u32,
    /// A node's socket receive buffer, in datagrams: `None` is unbounded. With a bound, a node
    /// takes [`NetConfig::service_us`] per datagram and drops arrivals while its buffer is full,
    /// as the kernel does (`RcvbufErrors`).
    pub rx_capacity: Option<u32>,
    pub service_us: u64,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            latency_min_ms: 1,
            latency_max_ms: 20,
            loss_permille: 0,
            duplicate_permille: 0,
            rx_capacity: None,
            service_us: 0,
        }
    }
}

/// A small deterministic generator (SplitMix64): the whole simulation is a function of its seed.
#[derive(Debug, Clone)]
pub struct SimRng(u64);

impl SimRng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    pub fn permille(&mut self, p: u32) -> bool {
        self.below(1000) < u64::from(p)
    }
}

pub struct SimNode {
    pub core: Membership,
    /// An insider that never gives up an address (ignores the core's `WeMove`).
    pub hostile: bool,
    pub addr: SocketAddr,
    pub public_key: PublicKey,
    /// Its private key, for [`Sim::introduce_all`] to compute each pair's X25519 once.
    private_key: PrivateKey,
    pub mesh_ipv4: Ipv4Addr,
    pub alive: bool,
    /// Nodes in different partitions cannot reach each other.
    pub partition: u8,
    /// This node's wall clock minus the true one.
    pub skew_ms: i64,
    /// Datagrams sent, per simulated minute (index = minute).
    pub sent_per_minute: Vec<u64>,
    /// When its receive buffer will have drained (with [`NetConfig::rx_capacity`]).
    pub rx_busy_until: Instant,
    /// Datagrams dropped because its receive buffer was full.
    pub rx_overflows: u64,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: Instant,
    seq: u64,
    to: usize,
    from: SocketAddr,
    bytes: Vec<u8>,
    /// Already in the receiver's socket buffer (its turn comes at `at`).
    admitted: bool,
    /// Sent to the LAN group (the receiver's socket sees the group as destination).
    to_group: bool,
}

pub struct Sim {
    pub start: Instant,
    pub now: Instant,
    pub nodes: Vec<SimNode>,
    pub net: NetConfig,
    pub rng: SimRng,
    by_underlay: HashMap<IpAddr, usize>,
    by_mesh: HashMap<IpAddr, usize>,
    /// The relay ports each relay's shell allocated, by (relay, pair's keys in order): the
    /// lower key's port first.
    relay_ports: HashMap<(usize, PublicKey, PublicKey), (u16, u16)>,
    queue: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    control_port: u16,
    group: SocketAddr,
    pub delivered: u64,
    /// Datagrams sent to each destination IP (including ones no node owns).
    pub sent_to: HashMap<IpAddr, u64>,
    /// Every (time, node, event) in order: the trace two equal runs must share.
    pub trace: Vec<(u64, usize, String)>,
    pub record_trace: bool,
    /// With `record_trace`: every (elapsed, sender, destination) of a datagram sent.
    pub sends: Vec<(Duration, usize, SocketAddr)>,
    /// Simulated minutes in which a node joined (their datagram budget is a formation budget).
    pub join_minutes: std::collections::BTreeSet<usize>,
    /// Nodes that took an input in the last step: the per-step invariants look at these.
    pub dirty: Vec<usize>,
    blocked: std::collections::BTreeSet<(usize, usize)>,
    /// Each live node's next deadline, earliest first. An entry is stale unless it equals
    /// `next_timer` of its node: a node's deadline moves only when it takes an input, and then
    /// it is pushed again, so finding the next timer costs O(log N), not N `poll_timeout`s.
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    next_timer: Vec<Option<Instant>>,
}

#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub seed: [u8; 32],
    pub skew_ms: i64,
    /// Offers to relay.
    pub relay: bool,
    /// LAN discovery on (else the node only probes what it is given).
    pub lan: bool,
    /// The operator's relay allow-list.
    pub relays: Option<wgmesh_membership::relay::RelayAllowList>,
    /// The member table's cap.
    pub max_members: usize,
}

impl NodeOptions {
    pub fn new(seed: [u8; 32]) -> Self {
        Self {
            seed,
            skew_ms: 0,
            relay: false,
            lan: true,
            relays: None,
            max_members: wgmesh_membership::MAX_MEMBERS,
        }
    }
}

pub fn underlay(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(172, 16, (i / 250) as u8, (i % 250 + 1) as u8)
}

impl Sim {
    pub fn new(seed: u64, net: NetConfig) -> Self {
        let keys = keys();
        let start = Instant::now();
        Self {
            start,
            now: start,
            nodes: Vec::new(),
            net,
            rng: SimRng::new(seed),
            by_underlay: HashMap::new(),
            by_mesh: HashMap::new(),
            relay_ports: HashMap::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            control_port: keys.control_port(),
            group: SocketAddr::from((keys.lan_group(), keys.control_port())),
            delivered: 0,
            sent_to: HashMap::new(),
            trace: Vec::new(),
            record_trace: false,
            sends: Vec::new(),
            join_minutes: std::collections::BTreeSet::new(),
            dirty: Vec::new(),
            timers: BinaryHeap::new(),
            next_timer: Vec::new(),
            blocked: std::collections::BTreeSet::new(),
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.now.duration_since(self.start)
    }

    fn wall(&self, node: usize) -> u64 {
        let true_wall = WALL_START + self.elapsed().as_millis() as u64;
        true_wall.saturating_add_signed(self.nodes[node].skew_ms)
    }

    /// Adds a node (LAN discovery on) started now; returns its index.
    pub fn add_node(&mut self, skew_ms: i64) -> usize {
        let seed = self.next_node_seed();
        self.add_node_with(NodeOptions {
            skew_ms,
            ..NodeOptions::new(seed)
        })
    }

    pub fn next_node_seed(&mut self) -> [u8; 32] {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&(self.nodes.len() as u64).to_le_bytes());
        seed[8..16].copy_from_slice(&self.rng.next_u64().to_le_bytes());
        seed
    }

    /// A node seed whose mesh IPv4 (at counter 0) no node here holds: for scenarios that are
    /// about something other than address collisions (those have their own tests), so large
    /// that a birthday collision in the /16 is likely (1,000 nodes: about 7).
    pub fn next_node_seed_unique_address(&mut self) -> [u8; 32] {
        loop {
            let seed = self.next_node_seed();
            let private_key = keys().node_private_key(&NodeSeed::from_bytes(seed));
            let ipv4 = MeshAddresses::derive(keys(), &private_key.public_key(), 0).ipv4;
            if !self.by_mesh.contains_key(&IpAddr::V4(ipv4)) {
                return seed;
            }
        }
    }

    /// Adds a node started now; returns its index.
    pub fn add_node_with(&mut self, options: NodeOptions) -> usize {
        let keys = keys();
        let i = self.nodes.len();
        let skew_ms = options.skew_ms;
        let private_key = keys.node_private_key(&NodeSeed::from_bytes(options.seed));
        let public_key = private_key.public_key();
        let addresses = MeshAddresses::derive(keys, &public_key, 0);
        let ip = underlay(i);
        self.mark_change();
        let record = Record {
            public_key,
            collision_counter: 0,
            mesh_ipv4: addresses.ipv4,
            mesh_ipv6: addresses.ipv6,
            endpoints: vec![Endpoint {
                kind: EndpointKind::Lan,
                addr: SocketAddr::from((ip, LISTEN_PORT)),
            }],
            listen_port: LISTEN_PORT,
            routes: Vec::new(),
            flags: if options.relay {
                wgmesh_exchange::FLAG_RELAY
            } else {
                0
            },
            timestamp: WALL_START / 1000,
        };
        let mut exchange =
            Exchange::new(keys, private_key.clone(), record, ExchangeConfig::default()).unwrap();
        exchange.set_info(MemberInfo::new("sim", None));
        let config = Config {
            control_port: self.control_port,
            mesh_prefixes: vec![
                ipnet::IpNet::V4(keys.ipv4_subnet()),
                ipnet::IpNet::V6(keys.ipv6_prefix()),
            ],
            lan_discovery: options.lan,
            dht: false,
            established: false,
            relays: options.relays.clone(),
            relay_tiebreak_key: keys.network_id(),
            max_members: options.max_members,
        };
        let mut core_seed = [0u8; 32];
        core_seed[..8].copy_from_slice(&self.rng.next_u64().to_le_bytes());
        let mut core = Membership::new(config, exchange, core_seed, self.now);
        if options.lan {
            core.add_discovery(Source::Lan, self.now);
        }
        core.set_connected_networks(vec!["172.16.0.0/16".parse().unwrap()]);
        self.by_underlay.insert(IpAddr::V4(ip), i);
        self.by_mesh.insert(IpAddr::V4(addresses.ipv4), i);
        self.nodes.push(SimNode {
            core,
            hostile: false,
            addr: SocketAddr::from((ip, self.control_port)),
            private_key,
            public_key,
            mesh_ipv4: addresses.ipv4,
            alive: true,
            partition: 0,
            skew_ms,
            sent_per_minute: Vec::new(),
            rx_busy_until: self.now,
            rx_overflows: 0,
        });
        i
    }

    pub fn can_reach(&self, a: usize, b: usize) -> bool {
        a != b
            && self.nodes[a].alive
            && self.nodes[b].alive
            && self.nodes[a].partition == self.nodes[b].partition
            && !self.blocked.contains(&(a.min(b), a.max(b)))
    }

    /// The membership changes now (a join, a healed partition): this minute and the next get
    /// the formation budget, since the gossip a change sets off can spill over a minute's end.
    pub fn mark_change(&mut self) {
        let minute = (self.elapsed().as_secs() / 60) as usize;
        self.join_minutes.insert(minute);
        self.join_minutes.insert(minute + 1);
    }

    /// No direct path between `a` and `b` (both behind endpoint-dependent NAT, say).
    pub fn unblock(&mut self, a: usize, b: usize) {
        self.blocked.remove(&(a.min(b), a.max(b)));
    }

    pub fn block(&mut self, a: usize, b: usize) {
        self.blocked.insert((a.min(b), a.max(b)));
    }

    /// Node `at`'s shell reports that WireGuard never completed a handshake with node `with`.
    pub fn tunnel_failed(&mut self, at: usize, with: usize) {
        let wall = self.wall(at);
        let now = self.now;
        let key = self.nodes[with].public_key;
        self.nodes[at].core.handle_tunnel_failed(now, wall, key);
    }

    /// Hands `bytes` to node `to` as if from `from`, now.
    pub fn inject(&mut self, to: usize, from: SocketAddr, bytes: &[u8]) {
        let wall = self.wall(to);
        let now = self.now;
        self.nodes[to].core.handle_datagram(now, wall, from, bytes);
    }

    /// Drains node `i`'s events, keeping them (transmits are sent as usual).
    /// Gossip crafted by node `from` (its own exchange seals `entries` and `extensions`, with
    /// a nonce drawn from `round`) delivered straight to node `to`; returns `to`'s events.
    pub fn inject_gossip(
        &mut self,
        from: usize,
        to: usize,
        entries: &[wgmesh_exchange::GossipEntry],
        extensions: Vec<wgmesh_exchange::Extension>,
        round: u8,
    ) -> Vec<Event> {
        let wall = self.wall_of(from);
        let gossip = self.nodes[from].core.exchange().gossip_with(
            entries,
            extensions,
            wall,
            wgmesh_exchange::Entropy::from_bytes([round; wgmesh_exchange::ENTROPY_LEN]),
        );
        let source = self.nodes[from].addr;
        self.inject(to, source, &gossip);
        self.events_of(to)
    }

    pub fn events_of(&mut self, i: usize) -> Vec<Event> {
        let mut events = Vec::new();
        loop {
            while let Some(transmit) = self.nodes[i].core.poll_transmit() {
                self.route(i, transmit);
            }
            let Some(event) = self.nodes[i].core.poll_event() else {
                return events;
            };
            events.push(event);
        }
    }

    /// What the daemon does for [`wgmesh_membership::Collision::WeMove`]: take the next
    /// counter's addresses and announce them.
    pub fn readdress(&mut self, i: usize, counter: u8) {
        let keys = keys();
        let node = &mut self.nodes[i];
        let addresses = MeshAddresses::derive(keys, &node.public_key, counter);
        let mut record = node.core.exchange().record().clone();
        record.collision_counter = counter;
        record.mesh_ipv4 = addresses.ipv4;
        record.mesh_ipv6 = addresses.ipv6;
        self.by_mesh.remove(&IpAddr::V4(node.mesh_ipv4));
        node.mesh_ipv4 = addresses.ipv4;
        self.by_mesh.insert(IpAddr::V4(addresses.ipv4), i);
        let wall = self.wall(i);
        let now = self.now;
        self.nodes[i]
            .core
            .handle_readdressed(now, wall, record)
            .unwrap();
    }

    /// What the daemon does after a reload that changed the advertised routes.
    pub fn set_routes(&mut self, i: usize, routes: Vec<ipnet::IpNet>) {
        let mut record = self.nodes[i].core.exchange().record().clone();
        record.routes = routes;
        record.timestamp = self.wall(i) / 1000;
        let wall = self.wall(i);
        let now = self.now;
        let info = self.nodes[i].core.exchange().info().clone();
        self.nodes[i]
            .core
            .set_record(now, wall, record, info)
            .unwrap();
        self.drain(i);
    }

    pub fn group(&self) -> SocketAddr {
        self.group
    }

    pub fn wall_of(&self, i: usize) -> u64 {
        self.wall(i)
    }

    fn enqueue(&mut self, to: usize, from: SocketAddr, bytes: Vec<u8>) {
        self.enqueue_to(to, from, bytes, false);
    }

    fn enqueue_to(&mut self, to: usize, from: SocketAddr, bytes: Vec<u8>, to_group: bool) {
        if self.rng.permille(self.net.loss_permille) {
            return;
        }
        let copies = if self.rng.permille(self.net.duplicate_permille) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let span = self
                .net
                .latency_max_ms
                .saturating_sub(self.net.latency_min_ms)
                + 1;
            let latency = self.net.latency_min_ms + self.rng.below(span);
            self.seq += 1;
            self.queue.push(Reverse(InFlight {
                at: self.now + Duration::from_millis(latency),
                seq: self.seq,
                to,
                from,
                bytes: bytes.clone(),
                admitted: false,
                to_group,
            }));
        }
    }

    fn route(&mut self, sender: usize, transmit: Transmit) {
        let minute = (self.elapsed().as_secs() / 60) as usize;
        let counts = &mut self.nodes[sender].sent_per_minute;
        if counts.len() <= minute {
            counts.resize(minute + 1, 0);
        }
        counts[minute] += 1;
        *self.sent_to.entry(transmit.dst.ip()).or_default() += 1;
        if self.record_trace {
            let at = self.elapsed();
            self.sends.push((at, sender, transmit.dst));
        }
        let from = self.nodes[sender].addr;
        if transmit.dst == self.group {
            for to in 0..self.nodes.len() {
                if self.can_reach(sender, to) {
                    self.enqueue_to(to, from, transmit.payload.clone(), true);
                }
            }
        } else if let Some(&to) = self.by_underlay.get(&transmit.dst.ip()) {
            if self.can_reach(sender, to) {
                self.enqueue(to, from, transmit.payload);
            }
        } else if let Some(&to) = self.by_mesh.get(&transmit.dst.ip())
            && self.tunnel_delivers(sender, to)
        {
            let from = SocketAddr::from((self.nodes[sender].mesh_ipv4, self.control_port));
            self.enqueue(to, from, transmit.payload);
        }
    }

    /// How `holder`'s WireGuard reaches `other`'s mesh addresses: `Some(None)` as a direct peer,
    /// `Some(Some((relay, port)))` through the port `relay` granted for the pair (a relayed
    /// member, or one on trial), `None` not at all (a relayed member without a port yet).
    pub fn path_to(&self, holder: usize, other: usize) -> Option<Option<(PublicKey, SocketAddr)>> {
        let core = &self.nodes[holder].core;
        let key = self.nodes[other].public_key;
        let member = core
            .members()
            .get(&key)
            .or_else(|| core.relay_trial(&key))?;
        match (member.relay_via, member.relay_endpoint) {
            (None, _) => Some(None),
            (Some(relay), Some(port)) => Some(Some((relay, port))),
            (Some(_), None) => None,
        }
    }

    /// Whether a datagram from `a` to `b`'s mesh address arrives. Directly: both hold the
    /// other as a direct peer and reach each other. Through a relay (TURN-style: it forwards the
    /// pair's WireGuard datagrams between the two ports it allocated for the pair): each end's
    /// endpoint for the other is its own port of the same allocation, and the relay reaches
    /// both.
    fn tunnel_delivers(&self, a: usize, b: usize) -> bool {
        match (self.path_to(a, b), self.path_to(b, a)) {
            (Some(None), Some(None)) => self.can_reach(a, b),
            (Some(Some((relay, port_a))), Some(Some((relay_back, port_b))))
                if relay == relay_back =>
            {
                let Some(r) = self.nodes.iter().position(|n| n.public_key == relay) else {
                    return false;
                };
                let (key_a, key_b) = (self.nodes[a].public_key, self.nodes[b].public_key);
                let allocated = self
                    .relay_ports
                    .get(&(r, key_a.min(key_b), key_a.max(key_b)));
                let expected = allocated.map(|&(low, high)| {
                    if key_a < key_b {
                        (low, high)
                    } else {
                        (high, low)
                    }
                });
                let relay_ip = self.nodes[r].addr.ip();
                expected == Some((port_a.port(), port_b.port()))
                    && port_a.ip() == relay_ip
                    && port_b.ip() == relay_ip
                    && self.nodes[r].alive
                    && self.can_reach(a, r)
                    && self.can_reach(r, b)
            }
            _ => false,
        }
    }

    /// Drains a node: sends its transmits, answers its discovery polls.
    fn drain(&mut self, i: usize) {
        loop {
            while let Some(transmit) = self.nodes[i].core.poll_transmit() {
                if self.nodes[i].alive {
                    self.route(i, transmit);
                }
            }
            let Some(event) = self.nodes[i].core.poll_event() else {
                return;
            };
            if self.record_trace {
                self.trace
                    .push((self.elapsed().as_millis() as u64, i, format!("{event:?}")));
            }
            match event {
                Event::PollDiscovery(source) => {
                    let wall = self.wall(i);
                    let group = self.group;
                    self.nodes[i].core.handle_candidates(wall, source, &[group]);
                }
                Event::Collision {
                    outcome: wgmesh_membership::Collision::WeMove { counter },
                    ..
                } if !self.nodes[i].hostile => self.readdress(i, counter),
                Event::RelayAsked { asker, peer, .. } => {
                    // The relay's shell: one port per member of the pair, the same pair the
                    // same ports (the lower key's first).
                    let pair = (i, asker.min(peer), asker.max(peer));
                    let next = 40_000 + 2 * self.relay_ports.len() as u16;
                    let (low, high) = *self.relay_ports.entry(pair).or_insert((next, next + 1));
                    let ports = if asker < peer {
                        (low, high)
                    } else {
                        (high, low)
                    };
                    let wall = self.wall(i);
                    self.nodes[i]
                        .core
                        .relay_allocated(wall, asker, peer, Ok(ports));
                }
                _ => {}
            }
        }
    }

    /// Makes every pair of live nodes members of each other through the real exchange, as fast
    /// as that can be done: each pair runs Probe, Hello and completing Hello (real cryptography),
    /// delivered directly with no time passing. Everything else those joins send (gossip about
    /// the newcomer, to third parties) is dropped, since every pair is introduced anyway, and
    /// their events are dropped too. Pairs go in the rounds of a round-robin tournament, so each
    /// node meets the others in a fixed order, and the disjoint pairs of a round run on two
    /// threads: the result is the same however the threads interleave.
    ///
    /// For a mesh too large to form through the simulated network in a test's time (1,000
    /// members: some 10⁷ datagrams), whose steady state is what is measured.
    pub fn introduce_all(&mut self) {
        let n = self.nodes.len();
        let m = n + n % 2;
        let now = self.now;
        let walls: Vec<u64> = (0..n).map(|i| self.wall(i)).collect();
        for round in 0..m.saturating_sub(1) {
            // The circle method: node m − 1 stays, the others rotate.
            let pairs: Vec<(usize, usize)> = (0..m / 2)
                .map(|k| {
                    let a = if k == 0 { m - 1 } else { (round + k) % (m - 1) };
                    let b = (round + m - 1 - k) % (m - 1);
                    (a.min(b), a.max(b))
                })
                .filter(|&(a, b)| b < n && self.nodes[a].alive && self.nodes[b].alive)
                .collect();
            let mut slots: Vec<Option<&mut SimNode>> = self.nodes.iter_mut().map(Some).collect();
            let mut work: Vec<(&mut SimNode, &mut SimNode, u64, u64)> = pairs
                .iter()
                .map(|&(a, b)| {
                    let first = slots[a].take().unwrap();
                    let second = slots[b].take().unwrap();
                    (first, second, walls[a], walls[b])
                })
                .collect();
            let half = work.len() / 2;
            let (left, right) = work.split_at_mut(half);
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    for (a, b, wall_a, wall_b) in left.iter_mut() {
                        introduce(a, b, now, *wall_a, *wall_b);
                    }
                });
                for (a, b, wall_a, wall_b) in right.iter_mut() {
                    introduce(a, b, now, *wall_a, *wall_b);
                }
            });
        }
    }

    /// Files node `i`'s current deadline in the timer heap (none while it is down).
    fn reschedule(&mut self, i: usize) {
        if self.next_timer.len() < self.nodes.len() {
            self.next_timer.resize(self.nodes.len(), None);
        }
        let node = &self.nodes[i];
        let at = if node.alive {
            node.core.poll_timeout().map(|(t, _)| t)
        } else {
            None
        };
        if at != self.next_timer[i] {
            self.next_timer[i] = at;
            if let Some(at) = at {
                self.timers.push(Reverse((at, i)));
            }
        }
    }

    /// The earliest live deadline, dropping stale heap entries on the way.
    fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(&Reverse((at, i))) = self.timers.peek() {
            if self.next_timer.get(i) == Some(&Some(at)) && self.nodes[i].alive {
                return Some(at);
            }
            self.timers.pop();
        }
        None
    }

    /// Runs until `until` (elapsed time), calling `check` after every step.
    pub fn run_until(&mut self, until: Duration, mut check: impl FnMut(&Sim)) {
        let end = self.start + until;
        // Anything may have changed since the last run (nodes added, killed, partitioned).
        self.timers.clear();
        self.next_timer = vec![None; self.nodes.len()];
        self.dirty = (0..self.nodes.len()).collect();
        loop {
            for i in std::mem::take(&mut self.dirty) {
                self.drain(i);
                self.reschedule(i);
                self.dirty.push(i);
            }
            check(self);
            self.dirty.clear();
            let next_timer = self.next_deadline();
            let next_packet = self.queue.peek().map(|Reverse(p)| p.at);
            let next = match (next_timer, next_packet) {
                (Some(t), Some(p)) => t.min(p),
                (Some(t), None) => t,
                (None, Some(p)) => p,
                (None, None) => break,
            };
            if next > end {
                break;
            }
            self.now = self.now.max(next);
            // Packets first, in order, then every node whose timer is due.
            while self.queue.peek().is_some_and(|Reverse(p)| p.at <= self.now) {
                let Some(Reverse(packet)) = self.queue.pop() else {
                    break;
                };
                if !self.nodes[packet.to].alive {
                    continue;
                }
                if let (Some(capacity), false) = (self.net.rx_capacity, packet.admitted) {
                    // Arrives at the socket: queued behind what the node has not read yet.
                    let service = Duration::from_micros(self.net.service_us.max(1));
                    let node = &mut self.nodes[packet.to];
                    let backlog = node.rx_busy_until.saturating_duration_since(self.now);
                    if backlog.as_nanos() / service.as_nanos() >= u128::from(capacity) {
                        node.rx_overflows += 1;
                        continue;
                    }
                    node.rx_busy_until = node.rx_busy_until.max(self.now) + service;
                    let at = node.rx_busy_until;
                    self.queue.push(Reverse(InFlight {
                        at,
                        admitted: true,
                        ..packet
                    }));
                    continue;
                }
                self.delivered += 1;
                let wall = self.wall(packet.to);
                let now = self.now;
                let core = &mut self.nodes[packet.to].core;
                if packet.to_group {
                    core.handle_group_datagram(now, wall, packet.from, &packet.bytes);
                } else {
                    core.handle_datagram(now, wall, packet.from, &packet.bytes);
                }
                self.drain(packet.to);
                self.dirty.push(packet.to);
            }
            // Due timers in index order (as a scan of all nodes would take them), each node at
            // most once per step. A node that took a datagram above may have a new deadline
            // that its heap entry does not show yet, so it is asked afresh.
            let mut due = Vec::new();
            while let Some(&Reverse((at, i))) = self.timers.peek() {
                if at > self.now {
                    break;
                }
                self.timers.pop();
                if self.next_timer[i] == Some(at) {
                    self.next_timer[i] = None;
                    due.push(i);
                }
            }
            for &i in &self.dirty {
                if self.nodes[i].alive
                    && self.nodes[i]
                        .core
                        .poll_timeout()
                        .is_some_and(|(t, _)| t <= self.now)
                {
                    self.next_timer[i] = None;
                    due.push(i);
                }
            }
            due.sort_unstable();
            due.dedup();
            for i in due {
                if self.nodes[i].alive
                    && self.nodes[i]
                        .core
                        .poll_timeout()
                        .is_some_and(|(t, _)| t <= self.now)
                {
                    let wall = self.wall(i);
                    let now = self.now;
                    self.nodes[i].core.handle_timeout(now, wall);
                    self.dirty.push(i);
                } else {
                    // Its deadline moved on meanwhile: file it again.
                    self.reschedule(i);
                }
            }
        }
        self.now = self.now.max(end);
    }

    /// Pairs of live, mutually reachable nodes that are not mutual members.
    pub fn missing_pairs(&self) -> Vec<(usize, usize)> {
        let mut missing = Vec::new();
        for a in 0..self.nodes.len() {
            for b in (a + 1)..self.nodes.len() {
                if !self.can_reach(a, b) {
                    continue;
                }
                let ab = self.nodes[a]
                    .core
                    .members()
                    .get(&self.nodes[b].public_key)
                    .is_some();
                let ba = self.nodes[b]
                    .core
                    .members()
                    .get(&self.nodes[a].public_key)
                    .is_some();
                if !(ab && ba) {
                    missing.push((a, b));
                }
            }
        }
        missing
    }

    /// No node holds two members with the same mesh address, nor one with its own.
    pub fn address_conflicts(&self, nodes: &[usize]) -> Vec<String> {
        let mut conflicts = Vec::new();
        for &i in nodes {
            let node = &self.nodes[i];
            let mut seen: BTreeMap<Ipv4Addr, PublicKey> = BTreeMap::new();
            for member in node.core.members().iter() {
                if member.mesh_ipv4 == node.core.exchange().record().mesh_ipv4 {
                    conflicts.push(format!("node {i} holds a member with its own address"));
                }
                if let Some(other) = seen.insert(member.mesh_ipv4, member.public_key)
                    && other != member.public_key
                {
                    conflicts.push(format!("node {i}: {} held twice", member.mesh_ipv4));
                }
            }
        }
        conflicts
    }
}

/// One pair's exchange for [`Sim::introduce_all`]: `a` probes `b`, and the two trade datagrams
/// until neither has one for the other.
fn introduce(a: &mut SimNode, b: &mut SimNode, now: Instant, wall_a: u64, wall_b: u64) {
    // Both ends would compute the same X25519 (DH(a, B) = DH(b, A)): once is enough here, and
    // at 1,000 members those half a million are most of the scenario's CPU time.
    let shared = a.private_key.diffie_hellman(&b.public_key);
    a.core.learn_shared_secret(&b.public_key, &shared);
    b.core.learn_shared_secret(&a.public_key, &shared);
    a.core.handle_candidates(wall_a, Source::Static, &[b.addr]);
    while hand_over(a, b, now, wall_b) | hand_over(b, a, now, wall_a) {}
}

/// Delivers what `from` has for `to`, drops the rest of its output; whether anything went.
fn hand_over(from: &mut SimNode, to: &mut SimNode, now: Instant, wall_to: u64) -> bool {
    let mut delivered = false;
    while from.core.poll_event().is_some() {}
    while let Some(transmit) = from.core.poll_transmit() {
        if transmit.dst == to.addr {
            to.core
                .handle_datagram(now, wall_to, from.addr, &transmit.payload);
            delivered = true;
        }
    }
    while from.core.poll_event().is_some() {}
    delivered
}
