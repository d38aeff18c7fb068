//! [`Membership`]: the exchange, the member table and every schedule around them, driven by
//! datagrams, timeouts and the shell's inputs, drained through `poll_*`.

use crate::announce::Announcements;
use crate::budget::ProbeBudget;
use crate::cadence::{DhtCadence, DiscoverySchedule};
use crate::digest::{DIGEST_INTERVAL, Digest, MAX_REPAIR_ENTRIES, bucket_of};
use crate::direct::DirectAttempts;
use crate::entropy::EntropySource;
use crate::event::{Collision, Event, TimerReason, Transmit};
use crate::found::FoundBy;
use crate::gossip;
use crate::liveness::{self, Liveness};
use crate::path::member_path;
use crate::punch::{NamedBy, PUNCH_RETRIES, PunchSchedule, TUNNEL_RETRIES};
use crate::relay::{self, RelayAllowList, RelayPolicy, RelayTrials, SecondHand};
use ipnet::IpNet;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use wgmesh_exchange::{
    DropCounters, EXT_DIGEST, EXT_PUNCH, EXT_RELAY_ASK, EXT_RELAY_GRANT, EXT_RELAY_REFUSED,
    EXT_SUSPECT, Exchange, Extension, GossipEntry, MemberInfo, PeerInfo, Record, RecordError,
};
use wgmesh_keys::PublicKey;
use wgmesh_mesh::{Member, MemberChange, MemberTable, Source};

mod relaying;

/// How often the DHT's pace is reviewed (fast while the mesh changes, slow once it is stable).
pub const DHT_REVIEW: Duration = Duration::from_secs(60);
/// A digest repair goes to the same address at most once per this long.
const REPAIR_COOLDOWN: Duration = Duration::from_secs(10);
/// At most this many repair destinations are remembered for their cooldown.
const MAX_REPAIRED: usize = 1_024;
/// A known member named in gossip is probed when the gossiping member heard from it this much
/// more recently than we did (our record of it may be stale). Entries carry whole seconds.
const STALE_AFTER_MS: u64 = 1_000;
/// A member that moved within this long is also probed through its tunnel.
const MOVED_RECENTLY_MS: u64 = 5_000;
/// At most this many datagrams wait to be sent; the shell drains them after every input, so
/// the bound only matters to a shell that stops draining.
pub const MAX_QUEUED_TRANSMITS: usize = 65_536;
/// At most this many events wait, likewise.
pub const MAX_QUEUED_EVENTS: usize = 65_536;

/// Facts fixed at start.
#[derive(Debug, Clone)]
pub struct Config {
    /// The control port every member listens on (inside the tunnels too).
    pub control_port: u16,
    /// The mesh prefixes: a datagram from one of them came through a tunnel.
    pub mesh_prefixes: Vec<IpNet>,
    /// Whether LAN discovery is on (members on our networks count as found by it).
    pub lan_discovery: bool,
    /// Whether the DHT rendezvous runs (the core then paces its lookups).
    pub dht: bool,
    /// Our mesh address was already in use in a mesh before this start (the peer cache names
    /// members we met there): we are its incumbent from the first moment (see
    /// [`Membership::is_established`]).
    pub established: bool,
    /// The operator's relay allow-list (`relays=KEY,...`, parsed by
    /// [`RelayAllowList::parse`]): only members whose key matches a listed prefix are chosen as
    /// relays. `None`: any member offering to relay may be chosen (see [`crate::relay`]).
    pub relays: Option<RelayAllowList>,
    /// Mesh-wide key for relay choice's tiebreak hash, the same on every member (the daemon
    /// passes `MeshKeys::network_id()`): both ends of a relayed pair must rank relays alike.
    pub relay_tiebreak_key: [u8; 32],
    /// The member table's cap ([`MAX_MEMBERS`] unless a test wants a small one). Past it a new
    /// member takes the place of a suspect (the least recently verified first) or is refused:
    /// members that keep answering our probes are never pushed out.
    pub max_members: usize,
}

/// The member table's default cap: the size past which docs/scaling.md says a full mesh stops
/// being comfortable on a small host, and the rate limiter's source table (4,096).
pub const MAX_MEMBERS: usize = 4_096;

/// A node holds its address as incumbent once it has kept it this long with members verified.
pub const ESTABLISH_AFTER: Duration = Duration::from_secs(60);
/// A node re-addresses after a collision at most once per this long.
pub const MOVE_COOLDOWN: Duration = Duration::from_secs(600);
/// A known member's beacons go unanswered once it has been a member this long.
const BEACON_QUIET_AFTER: Duration = Duration::from_secs(60);
/// Before that, a known member's beacon is answered at most once per this long. A starting node
/// beacons once a second for five seconds; answering each of them made every member of a
/// forming mesh of N send 5 × N Hellos (and take as many completing ones), most of the
/// formation's traffic. One answer repairs a lost completing Hello as well as five.
const BEACON_REPLY_INTERVAL: Duration = Duration::from_secs(10);
/// Bound on the beacon-answer times kept (pruned to the live ones past it).
const MAX_BEACON_REPLIES: usize = 4_096;
/// At most this many contested members are remembered (to report each once); past it those
/// older than [`CONTESTED_TTL`] are forgotten, then the oldest (it may be reported again).
const MAX_CONTESTED: usize = 1_024;
const CONTESTED_TTL: Duration = Duration::from_secs(600);
/// A stranger whose Probe we answered has this long to send the Hello that completes the
/// handshake; if it does not (lost on the way), we probe it ourselves, once.
const PROBE_BACK_AFTER: Duration = Duration::from_secs(2);
/// At most this many strangers wait for their completing Hello.
const MAX_PROBE_BACK: usize = 256;

/// The membership core. See the crate documentation.
#[derive(Debug)]
pub struct Membership {
    config: Config,
    exchange: Exchange,
    entropy: EntropySource,
    members: MemberTable,
    found: FoundBy,
    punches: PunchSchedule,
    second_hand: SecondHand,
    /// Second-hand members routed through a relay until their own proof comes.
    trials: RelayTrials,
    /// When to ask our relays again for the pairs they carry (`None`: nothing is relayed).
    next_relay_refresh: Option<Instant>,
    /// The direct attempts we lead for relayed members ([`crate::direct`]).
    direct: DirectAttempts,
    discovery: DiscoverySchedule,
    dht: DhtCadence,
    next_dht_review: Instant,
    liveness: Liveness,
    announcements: Announcements,
    next_digest: Instant,
    probe_budget: ProbeBudget,
    /// Answers to our LAN-group Probe from outside the connected networks, not believed.
    unproven_group_answers: u64,
    /// When each member was first verified (its beacons are answered for a minute after).
    member_since: HashMap<PublicKey, Instant>,
    /// When we last answered each key's beacon ([`BEACON_REPLY_INTERVAL`]).
    beacon_replies: HashMap<PublicKey, Instant>,
    /// Strangers whose Probe we answered, awaiting the Hello that completes the handshake.
    probe_back: std::collections::BTreeMap<PublicKey, (SocketAddr, Instant)>,
    /// When each address was last sent a digest repair (the cooldown).
    repaired: HashMap<SocketAddr, Instant>,
    /// Networks our LAN beacon reaches.
    connected: Vec<IpNet>,
    /// Where the member we collided with answers, to tell it our new address once we have one.
    collided_with: Option<SocketAddr>,
    /// Address ownership (issue 13): when we took our current address, whether a member was
    /// verified since, whether we came up as its incumbent, and when we last moved.
    address_since: Instant,
    verified_on_address: bool,
    incumbent_at_start: bool,
    last_move: Option<Instant>,
    /// Members refused because another member already holds their address (reported once).
    contested: std::collections::BTreeMap<PublicKey, Instant>,
    /// When each member last proved its key (a verified exchange, not a WireGuard handshake):
    /// the eviction order past [`Config::max_members`].
    verified_at: HashMap<PublicKey, Instant>,
    /// When each member last answered on its direct (underlay) path: a relay's offer for a
    /// member reached directly is taken only after this went quiet ([`relaying`]).
    direct_at: HashMap<PublicKey, Instant>,
    /// Members reached directly whose WireGuard tunnel the shell found silent
    /// ([`Membership::handle_tunnel_failed`]): a relay's grant for them is taken.
    silent_tunnels: std::collections::BTreeSet<PublicKey>,
    /// New members refused because the table was full of members that keep answering.
    members_refused: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl Membership {
    pub fn new(config: Config, exchange: Exchange, seed: [u8; 32], now: Instant) -> Self {
        let incumbent_at_start = config.established;
        Self {
            config,
            exchange,
            entropy: EntropySource::new(seed),
            members: MemberTable::default(),
            found: FoundBy::default(),
            punches: PunchSchedule::default(),
            second_hand: SecondHand::default(),
            trials: RelayTrials::default(),
            next_relay_refresh: None,
            direct: DirectAttempts::default(),
            discovery: DiscoverySchedule::default(),
            dht: DhtCadence::new(now),
            next_dht_review: now + DHT_REVIEW,
            liveness: Liveness::new(now),
            announcements: Announcements::default(),
            next_digest: now + DIGEST_INTERVAL,
            repaired: HashMap::new(),
            probe_budget: ProbeBudget::default(),
            unproven_group_answers: 0,
            probe_back: std::collections::BTreeMap::new(),
            member_since: HashMap::new(),
            beacon_replies: HashMap::new(),
            connected: Vec::new(),
            collided_with: None,
            address_since: now,
            verified_on_address: false,
            incumbent_at_start,
            last_move: None,
            contested: std::collections::BTreeMap::new(),
            verified_at: HashMap::new(),
            direct_at: HashMap::new(),
            silent_tunnels: std::collections::BTreeSet::new(),
            members_refused: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    // ---- Inputs ----

    /// A polled discovery source (LAN, static seeds, peer cache), first polled at `now`.
    pub fn add_discovery(&mut self, source: Source, now: Instant) {
        self.discovery.add(source, now);
    }

    /// The networks directly connected to this host (members there count as found on the LAN).
    pub fn set_connected_networks(&mut self, networks: Vec<IpNet>) {
        self.connected = networks;
    }

    /// Candidate control addresses from a discovery source: each is probed.
    pub fn handle_candidates(&mut self, wall_ms: u64, source: Source, candidates: &[SocketAddr]) {
        // A relayed member's direct addresses are probed only in its coordinated attempts
        // (crate::direct): an uncoordinated probe there can only confirm the conntrack entries
        // that keep the pair relayed.
        let relayed: Vec<SocketAddr> = if self.members.iter().any(|m| m.relay_via.is_some()) {
            self.members
                .iter()
                .filter(|m| m.relay_via.is_some())
                .flat_map(|m| self.direct_targets(m))
                .collect()
        } else {
            Vec::new()
        };
        for addr in candidates.iter().filter(|a| !relayed.contains(a)) {
            self.probe(wall_ms, *addr, Some(source));
        }
    }

    /// A datagram arrived on the control port (STUN excluded: it is the shell's).
    pub fn handle_datagram(&mut self, now: Instant, wall_ms: u64, from: SocketAddr, bytes: &[u8]) {
        self.handle_received(now, wall_ms, from, bytes, false);
    }

    /// A datagram arrived addressed to the LAN group (a beacon). A known member's beacon from
    /// the address we know it at is left unanswered: it asks "who is there", and we are there
    /// already. Answering every beacon made each member send 2(N−1) datagrams per beacon round.
    pub fn handle_group_datagram(
        &mut self,
        now: Instant,
        wall_ms: u64,
        from: SocketAddr,
        bytes: &[u8],
    ) {
        self.handle_received(now, wall_ms, from, bytes, true);
    }

    fn handle_received(
        &mut self,
        now: Instant,
        wall_ms: u64,
        from: SocketAddr,
        bytes: &[u8],
        to_group: bool,
    ) {
        let entropy = self.entropy.next_entropy();
        let handled = self.exchange.handle(wall_ms, from, bytes, entropy);
        if let Some(offset_secs) = handled.clock_offset_secs {
            self.push_event(Event::ClockSkew { from, offset_secs });
        }
        // Only once the membership is a minute old: while a mesh forms, a lost final Hello can
        // leave us holding a member that does not hold us, and answering its beacons is what
        // repairs that.
        let known_beacon = to_group
            && handled.probed_by.is_some_and(|key| {
                let known_here = self
                    .members
                    .get(&key)
                    .is_some_and(|m| m.control_addr.map(|a| a.ip()) == Some(from.ip()));
                let settled = self
                    .member_since
                    .get(&key)
                    .is_some_and(|at| now.saturating_duration_since(*at) >= BEACON_QUIET_AFTER);
                let answered_lately = self
                    .beacon_replies
                    .get(&key)
                    .is_some_and(|at| now.saturating_duration_since(*at) < BEACON_REPLY_INTERVAL);
                known_here && (settled || answered_lately)
            });
        if to_group
            && !known_beacon
            && handled.reply.is_some()
            && let Some(key) = handled.probed_by
        {
            if self.beacon_replies.len() >= MAX_BEACON_REPLIES {
                self.beacon_replies
                    .retain(|_, at| now.saturating_duration_since(*at) < BEACON_REPLY_INTERVAL);
            }
            if self.beacon_replies.len() < MAX_BEACON_REPLIES {
                self.beacon_replies.insert(key, now);
            }
        }
        if let Some(reply) = handled.reply
            && !known_beacon
        {
            self.send(from, reply);
            if let Some(key) = handled.probed_by
                && self.members.get(&key).is_none()
                && self.probe_back.len() < MAX_PROBE_BACK
            {
                // If its completing Hello is lost, it holds us and we do not hold it, and
                // nothing periodic repairs that soon: ask it ourselves (see handle_timeout).
                self.probe_back
                    .entry(key)
                    .or_insert((from, now + PROBE_BACK_AFTER));
            }
        }
        match handled.event {
            Some(wgmesh_exchange::Event::Verified {
                record,
                from,
                info,
                address_proven,
            }) => {
                // An answer to our LAN-group Probe proves the key, not its source address: the
                // beacon reached only this segment, so a source elsewhere is a spoof (an insider
                // aiming our WireGuard handshakes at a third party). On the segment it is believed
                // (docs/exchange-protocol.md, "Return routability").
                if address_proven || self.connected.iter().any(|net| net.contains(&from.ip())) {
                    self.on_verified(now, wall_ms, record, from, info);
                } else {
                    self.unproven_group_answers += 1;
                }
            }
            Some(wgmesh_exchange::Event::Goodbye { key }) => {
                self.liveness.forget(&key);
                self.trials.end(&key);
                let gone = self.members.remove(&key);
                self.push_event(Event::Left {
                    key,
                    mesh_ipv4: gone.map(|m| m.mesh_ipv4),
                });
            }
            Some(wgmesh_exchange::Event::Gossip {
                sender,
                from,
                entries,
                extensions,
            }) => self.on_gossip(now, wall_ms, sender, from, &entries, &extensions),
            None => {}
        }
    }

    /// Runs whatever is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant, wall_ms: u64) {
        let jitter = self.entropy.next_u64();
        for source in self.discovery.due(now, self.members.len(), jitter) {
            self.push_event(Event::PollDiscovery(source));
        }
        if self.config.dht && self.next_dht_review <= now {
            self.next_dht_review = now + DHT_REVIEW;
            if let Some(fast) = self.dht.review(now, self.members.len()) {
                self.push_event(Event::DhtFast(fast));
            }
        }
        self.check_liveness(now, wall_ms);
        let due: Vec<(PublicKey, SocketAddr)> = self
            .probe_back
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(key, (addr, _))| (*key, *addr))
            .collect();
        for (key, addr) in due {
            self.probe_back.remove(&key);
            // Budgeted like any address a third party could have named (a Probe's source can
            // be forged by anyone holding the secret).
            if self.members.get(&key).is_none() && self.probe_budget.allow(wall_ms, addr.ip()) {
                self.probe(wall_ms, addr, None);
            }
        }
        for key in self.announcements.take_due(now) {
            if let Some(member) = self.members.get(&key) {
                let addr =
                    underlay_addr(member).unwrap_or_else(|| self.tunnel_addr(member.mesh_ipv4));
                self.probe(wall_ms, addr, None);
            }
        }
        if self.next_digest <= now {
            self.next_digest = now + DIGEST_INTERVAL;
            self.send_digest(wall_ms);
        }
        for (addr, by) in self.punches.take_due(now) {
            let named = by == NamedBy::Gossip && !self.is_mesh_address(addr.ip());
            self.probe(wall_ms, addr, named.then_some(Source::Gossip));
        }
        self.relay_unreachable(now, wall_ms);
        self.refresh_relays(now, wall_ms);
        self.attempt_direct(now, wall_ms);
    }

    /// The shell found that WireGuard never completed a handshake with `key`, a member we reach
    /// directly: the direct path carries our control datagrams but not WireGuard's (only its
    /// port met a conntrack clash, say). Ask a relay for the pair, as for a suspect.
    pub fn handle_tunnel_failed(&mut self, now: Instant, wall_ms: u64, key: PublicKey) {
        if self.members.get(&key).is_none_or(|m| m.relay_via.is_some()) {
            return;
        }
        if self.silent_tunnels.len() >= self.config.max_members {
            return;
        }
        self.silent_tunnels.insert(key);
        if let Some(relay) = self.choose_relay(&key) {
            self.ask_relay(now, wall_ms, &relay, key);
        }
    }

    /// The operator's relay allow-list changed (a reload of `relays=`): later relay choices
    /// follow it. Members already relayed keep their relay until their path changes.
    pub fn set_relays(&mut self, relays: Option<RelayAllowList>) {
        self.config.relays = relays;
    }

    /// Our record changed (reload, new endpoints): announce it to every member.
    pub fn set_record(
        &mut self,
        now: Instant,
        wall_ms: u64,
        record: Record,
        info: MemberInfo,
    ) -> Result<(), RecordError> {
        self.exchange.set_info(info);
        let result = self.exchange.set_record(record);
        self.announce(now, wall_ms);
        result
    }

    /// Probes every member so each fetches our new record, and asks again those that do not
    /// answer ([`crate::announce`]).
    fn announce(&mut self, now: Instant, wall_ms: u64) {
        self.probe_members(wall_ms);
        let keys: Vec<PublicKey> = self.members.iter().map(|m| m.public_key).collect();
        self.announcements.start(keys, now);
    }

    /// We re-addressed after a collision ([`Collision::WeMove`]) and the shell persisted it:
    /// announce the new record, to the member we collided with too (it is not in our table).
    pub fn handle_readdressed(
        &mut self,
        now: Instant,
        wall_ms: u64,
        record: Record,
    ) -> Result<(), RecordError> {
        let result = self.exchange.set_record(record);
        self.address_since = now;
        self.verified_on_address = false;
        self.incumbent_at_start = false;
        self.announce(now, wall_ms);
        if let Some(addr) = self.collided_with.take() {
            self.probe(wall_ms, addr, None);
        }
        result
    }

    /// The host's underlay addresses changed (a laptop moved networks). The shell rejoins the
    /// LAN group and then announces our new endpoints with [`Self::set_record`].
    pub fn handle_addresses_changed(&mut self, now: Instant) {
        // Punch towards every member from the new address: their NATs only let us in once their
        // side has sent to us too, which gossip through a reachable member triggers.
        let members: Vec<SocketAddr> = self.members.iter().filter_map(underlay_addr).collect();
        for addr in members {
            self.punches.schedule_member(now, addr, &PUNCH_RETRIES);
        }
        // And through the tunnels: a datagram to a member's mesh address makes WireGuard send
        // from our new address at once, so the member roams its endpoint to us and our NAT opens
        // for its answer, instead of both waiting for the next keepalive (up to 25 s). Delayed
        // until the reconcile has unpinned WireGuard's source addresses.
        let inside: Vec<SocketAddr> = self
            .members
            .iter()
            .map(|m| self.tunnel_addr(m.mesh_ipv4))
            .collect();
        for addr in inside {
            self.punches.schedule(now, addr, &TUNNEL_RETRIES);
        }
        self.discovery.rediscover(now);
    }

    /// Says goodbye to every member.
    pub fn goodbye_all(&mut self, wall_ms: u64) {
        let targets: Vec<(PublicKey, SocketAddr)> = self
            .members
            .iter()
            .filter_map(|m| self.send_addr(m).map(|a| (m.public_key, a)))
            .collect();
        for (key, addr) in targets {
            let entropy = self.entropy.next_entropy();
            // A weak key cannot be in the table (its exchange would not verify); nothing to say.
            if let Ok(datagram) = self.exchange.goodbye(&key, wall_ms, entropy) {
                self.send(addr, datagram);
            }
        }
    }

    /// Members the daemon's failure detector removed (unseen too long): forgotten here too, so
    /// they are no longer probed and count as new when they come back.
    pub fn retain_members(&mut self, mut keep: impl FnMut(&PublicKey) -> bool) {
        let gone: Vec<PublicKey> = self
            .members
            .iter()
            .map(|m| m.public_key)
            .filter(|k| !keep(k))
            .collect();
        for key in gone {
            self.liveness.forget(&key);
            self.members.remove(&key);
        }
    }

    // ---- Outputs ----

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`Self::handle_timeout`] next, and why.
    pub fn poll_timeout(&self) -> Option<(Instant, TimerReason)> {
        let candidates = [
            self.discovery
                .next_deadline()
                .map(|(t, s)| (t, TimerReason::Discovery(s))),
            self.config
                .dht
                .then_some((self.next_dht_review, TimerReason::DhtReview)),
            Some((self.liveness.next_deadline(), TimerReason::Liveness)),
            Some((self.next_digest, TimerReason::Digest)),
            self.announcements
                .next_deadline()
                .map(|t| (t, TimerReason::Announce)),
            self.probe_back
                .values()
                .map(|(_, at)| *at)
                .min()
                .map(|t| (t, TimerReason::Punch)),
            self.punches
                .next_deadline()
                .map(|t| (t, TimerReason::Punch)),
            self.second_hand
                .next_deadline()
                .map(|t| (t, TimerReason::Relay)),
            self.trials.next_deadline().map(|t| (t, TimerReason::Relay)),
            self.next_relay_refresh.map(|t| (t, TimerReason::Relay)),
            self.direct.next_deadline().map(|t| (t, TimerReason::Relay)),
        ];
        candidates.into_iter().flatten().min_by_key(|(t, _)| *t)
    }

    // ---- Views ----

    pub fn members(&self) -> &MemberTable {
        &self.members
    }

    /// A second-hand member on trial through a relay, as the shell installs it once the relay
    /// granted a port (its own /32 and /128 only, until its proof comes through the tunnel; see
    /// [`crate::relay`]).
    pub fn relay_trial(&self, key: &PublicKey) -> Option<&Member> {
        self.trials.get(key).map(|t| &t.member)
    }

    /// The relay for a pair of us and `peer` ([`relay::choose_relay`]).
    fn choose_relay(&self, peer: &PublicKey) -> Option<PublicKey> {
        let policy = RelayPolicy {
            allow: self.config.relays.as_ref(),
            tiebreak_key: &self.config.relay_tiebreak_key,
        };
        relay::choose_relay(
            &self.members,
            self.exchange.public_key(),
            peer,
            policy,
            // A relay of the previous release cannot carry a pair end to end.
            |key| self.liveness.is_suspect(key) || !self.exchange.accepts_extensions(key),
        )
    }

    /// Whether our failure detector suspects this member (see [`crate::liveness`]).
    pub fn is_suspect(&self, key: &PublicKey) -> bool {
        self.liveness.is_suspect(key)
    }

    /// See [`Exchange::learn_shared_secret`].
    #[cfg(feature = "test-support")]
    pub fn learn_shared_secret(&mut self, peer: &PublicKey, shared: &wgmesh_keys::SharedSecret) {
        self.exchange.learn_shared_secret(peer, shared);
    }

    /// Answers to our LAN-group Probe that came from outside the connected networks, refused.
    pub fn unproven_group_answers(&self) -> u64 {
        self.unproven_group_answers
    }

    pub fn exchange(&self) -> &Exchange {
        &self.exchange
    }

    /// Probes to addresses named by gossip or the DHT refused by the budget so far.
    pub fn probes_refused(&self) -> u64 {
        self.probe_budget.refused()
    }

    pub fn exchange_stats(&self) -> &DropCounters {
        self.exchange.stats()
    }

    /// Sizes of the bounded internal tables, for tests and metrics.
    pub fn table_sizes(&self) -> TableSizes {
        TableSizes {
            members: self.members.len(),
            probed: self.found.len(),
            punches: self.punches.len(),
            second_hand: self.second_hand.len(),
            relay_trials: self.trials.len(),
            contested: self.contested.len(),
            beacon_replies: self.beacon_replies.len(),
            liveness: self.liveness.len(),
            announcements: self.announcements.len(),
            repaired: self.repaired.len(),
            budget: self.probe_budget.len(),
            probe_back: self.probe_back.len(),
            transmits: self.transmits.len(),
            events: self.events.len(),
        }
    }

    // ---- Decisions ----

    /// Whether `ip` is a mesh address: traffic from or to it goes through the tunnels.
    fn is_mesh_address(&self, ip: IpAddr) -> bool {
        self.config
            .mesh_prefixes
            .iter()
            .any(|net| net.contains(&ip))
    }

    /// A member's control port reached through its tunnel.
    fn tunnel_addr(&self, mesh_ipv4: Ipv4Addr) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(mesh_ipv4), self.config.control_port)
    }

    fn send(&mut self, dst: SocketAddr, payload: Vec<u8>) {
        if self.transmits.len() < MAX_QUEUED_TRANSMITS {
            self.transmits.push_back(Transmit { dst, payload });
        }
    }

    fn push_event(&mut self, event: Event) {
        if self.events.len() < MAX_QUEUED_EVENTS {
            self.events.push_back(event);
        }
    }

    /// Probes `addr`; `source` (if any) is how the address was discovered, reported for the
    /// member that answers. Refresh probes to known members pass `None`.
    fn probe(&mut self, wall_ms: u64, addr: SocketAddr, source: Option<Source>) {
        // Addresses a third party named (gossip, the DHT) are probed within a budget, so no
        // one can aim our probes at a victim (crate::budget).
        if matches!(source, Some(Source::Gossip | Source::Dht))
            && !self.probe_budget.allow(wall_ms, addr.ip())
        {
            return;
        }
        let entropy = self.entropy.next_entropy();

        let datagram = self.exchange.probe(wall_ms, addr, entropy);
        if let Some(source) = source
            && !addr.ip().is_multicast()
        {
            self.found.probed(addr.ip(), source, wall_ms);
        }
        self.send(addr, datagram);
    }

    fn probe_members(&mut self, wall_ms: u64) {
        let targets: Vec<SocketAddr> = self
            .members
            .iter()
            .flat_map(|m| {
                // A relayed member is probed directly (is a direct path there now?) and through
                // the tunnel (which keeps it verified and its routes current).
                let inside = m.relay_via.map(|_| self.tunnel_addr(m.mesh_ipv4));
                underlay_addr(m).into_iter().chain(inside)
            })
            .collect();
        for addr in targets {
            self.probe(wall_ms, addr, None);
        }
    }

    /// Room for one more member: below the cap, or by evicting one. Eviction order: members
    /// never verified here first (none today: second-hand records are trials, not members),
    /// then suspects (they failed our own probes), the least recently verified first. A member
    /// that keeps answering is never evicted, so identities created by grinding can take free
    /// places but never push out members that keep proving themselves.
    fn make_room(&mut self) -> bool {
        if self.members.len() < self.config.max_members {
            return true;
        }
        let victim = self
            .members
            .iter()
            .map(|m| (m.public_key, self.verified_at.get(&m.public_key).copied()))
            .filter(|(key, at)| at.is_none() || self.liveness.is_suspect(key))
            .min_by_key(|(key, at)| (at.is_some(), *at, *key))
            .map(|(key, _)| key);
        let Some(victim) = victim else {
            return false;
        };
        self.liveness.forget(&victim);
        self.verified_at.remove(&victim);
        if let Some(gone) = self.members.remove(&victim) {
            self.push_event(Event::Evicted {
                key: victim,
                mesh_ipv4: gone.mesh_ipv4,
            });
        }
        self.members.len() < self.config.max_members
    }

    /// When `key` last proved its key to us (a verified exchange; not a WireGuard handshake).
    /// The peer cache should prefer members proven most recently.
    pub fn last_verified(&self, key: &PublicKey) -> Option<Instant> {
        self.verified_at
            .get(key)
            .copied()
            .filter(|_| self.members.get(key).is_some())
    }

    /// New members refused so far because the table was full of members that keep answering.
    pub fn members_refused(&self) -> u64 {
        self.members_refused
    }

    /// Whether we are the incumbent of our address: we came up with it from a previous run in a
    /// mesh, or have held it for [`ESTABLISH_AFTER`] with members verified meanwhile.
    pub fn is_established(&self, now: Instant) -> bool {
        self.incumbent_at_start
            || (self.verified_on_address
                && now.saturating_duration_since(self.address_since) >= ESTABLISH_AFTER)
    }

    /// Another member claims our IPv4 (issue 13, "address ownership"). Key order decides
    /// nothing, so a ground key wins nothing: an incumbent keeps its address and the claimant
    /// is not installed; a node that is not yet incumbent moves to its next collision counter,
    /// at most once per [`MOVE_COOLDOWN`]. Two nodes that start together both move.
    fn on_collision(&mut self, now: Instant, other: &Record) -> Collision {
        let own = self.exchange.record();
        let next = own.collision_counter + 1;
        let outcome = if self.is_established(now) {
            Collision::OtherMoves
        } else if self
            .last_move
            .is_some_and(|at| now.saturating_duration_since(at) < MOVE_COOLDOWN)
        {
            Collision::Held
        } else if next > wgmesh_derive::MAX_COLLISION_COUNTER {
            Collision::Exhausted
        } else {
            self.collided_with = other
                .endpoints
                .first()
                .map(|e| SocketAddr::new(e.addr.ip(), self.config.control_port));
            self.last_move = Some(now);
            Collision::WeMove { counter: next }
        };
        self.push_event(Event::Collision {
            peer: other.public_key,
            mesh_ipv4: other.mesh_ipv4,
            outcome,
        });
        outcome
    }

    fn on_verified(
        &mut self,
        now: Instant,
        wall_ms: u64,
        record: Record,
        from: SocketAddr,
        info: PeerInfo,
    ) {
        if self.liveness.answered(&record.public_key, now) {
            self.push_event(Event::Cleared {
                key: record.public_key,
            });
        }
        self.announcements.answered(&record.public_key);
        self.probe_back.remove(&record.public_key);
        if record.mesh_ipv4 == self.exchange.record().mesh_ipv4
            && matches!(
                self.on_collision(now, &record),
                Collision::OtherMoves | Collision::Held | Collision::Exhausted
            )
        {
            // Not installed while it claims our address: its /32 would shadow ours.
            return;
        }
        self.verified_on_address = true;
        if let Some(holder) =
            self.address_holder(&record.public_key, record.mesh_ipv4, record.mesh_ipv6)
        {
            // Another member already holds this address here: the incumbent keeps it, whatever
            // the keys, so a member that ground a colliding key never gets its traffic.
            if !self.contested.contains_key(&record.public_key) {
                if self.contested.len() >= MAX_CONTESTED {
                    self.contested
                        .retain(|_, at| now.saturating_duration_since(*at) < CONTESTED_TTL);
                }
                if self.contested.len() >= MAX_CONTESTED
                    && let Some(oldest) = self
                        .contested
                        .iter()
                        .min_by_key(|(_, at)| **at)
                        .map(|(k, _)| *k)
                {
                    self.contested.remove(&oldest);
                }
                self.contested.insert(record.public_key, now);
                self.push_event(Event::Contested {
                    key: record.public_key,
                    holder,
                    mesh_ipv4: record.mesh_ipv4,
                });
            }
            return;
        }
        self.contested.remove(&record.public_key);
        if self.members.get(&record.public_key).is_none() && !self.make_room() {
            // Full of members that keep answering: a newcomer (a flood of ground identities,
            // say) waits; whatever a trial installed for it is withdrawn.
            self.members_refused += 1;
            if let Some(trial) = self.trials.end(&record.public_key) {
                self.push_event(Event::Evicted {
                    key: record.public_key,
                    mesh_ipv4: trial.member.mesh_ipv4,
                });
            }
            return;
        }
        let lan: &[IpNet] = if self.config.lan_discovery {
            &self.connected
        } else {
            &[]
        };
        let source = self.found.source_of(from.ip(), lan);
        let known = self.members.get(&record.public_key);
        let through_tunnel = self.is_mesh_address(from.ip());
        // A member first heard of through the tunnel is on trial through a relay (its proof
        // just came); otherwise it takes the relay we would choose for it.
        let relay_for_new = match self.trials.get(&record.public_key) {
            Some(trial) => Some((trial.relay, trial.member.relay_endpoint)),
            None if through_tunnel && known.is_none() => self
                .choose_relay(&record.public_key)
                .map(|relay| (relay, None)),
            None => None,
        };
        // A member on trial is known by its gossiped underlay addresses: an exchange through
        // the tunnel keeps them (the direct path is retried there).
        let on_trial = self.trials.get(&record.public_key).map(|t| &t.member);
        let Some(path) = member_path(
            known.or(on_trial),
            relay_for_new,
            from,
            record.listen_port,
            through_tunnel,
        ) else {
            return;
        };
        let trial_relay = self.trials.end(&record.public_key).map(|t| t.relay);
        let relayed_before = known.and_then(|m| m.relay_via).or(trial_relay);
        if !through_tunnel && let Some(relay) = relayed_before {
            self.push_event(Event::DirectPath {
                key: record.public_key,
                relay,
                from,
            });
            // WireGuard's first datagrams on the new path must also leave both ends before
            // the other's arrive (crate::direct): both ends get here within a millisecond,
            // so each sends through the tunnel as soon as the reconcile may have pointed
            // WireGuard at the direct address, rather than whenever traffic happens to flow.
            let inside = self.tunnel_addr(record.mesh_ipv4);
            self.punches
                .schedule_member(now, inside, &crate::punch::DIRECT_SWITCH_PROBES);
        }
        self.second_hand.answered(&record.public_key);
        let known = self.members.get(&record.public_key).map(|m| MemberInfo {
            version: m.version.clone(),
            name: m.name.clone(),
        });
        let said = info.merge(known.clone());
        if let Some(old) = known.filter(|k| k.name.is_some() && k.name != said.name) {
            self.push_event(Event::Renamed {
                key: record.public_key,
                old: old.name,
                new: said.name.clone(),
            });
        }
        let member = Member {
            public_key: record.public_key,
            mesh_ipv4: record.mesh_ipv4,
            mesh_ipv6: record.mesh_ipv6,
            collision_counter: record.collision_counter,
            endpoint: path.endpoint,
            control_addr: path.control_addr,
            routes: record.routes.clone(),
            source,
            relay_offered: record.relay_offered(),
            last_seen_ms: wall_ms,
            moved_at_ms: 0,
            relay_via: path.relay_via,
            relay_endpoint: path.relay_endpoint,
            name: said.name,
            version: said.version,
            name_claim: 0,
        };
        let change = self.members.upsert(member);
        self.verified_at.insert(record.public_key, now);
        if !through_tunnel {
            self.direct_at.insert(record.public_key, now);
        }
        if let Some(member) = self.members.get(&record.public_key) {
            self.push_event(Event::Member {
                member: Box::new(member.clone()),
                change,
                from,
            });
        }
        match change {
            MemberChange::New => {
                self.member_since.insert(record.public_key, now);
                // Entries of members gone since, pruned when they are half the map (a prune
                // per join made forming a mesh cubic in its size).
                if self.member_since.len() > 2 * self.members.len() {
                    self.member_since
                        .retain(|key, _| self.members.get(key).is_some());
                }
                if self.verified_at.len() > 2 * self.members.len() {
                    self.verified_at
                        .retain(|key, _| self.members.get(key).is_some());
                }
                if self.direct_at.len() > 2 * self.members.len() {
                    self.direct_at
                        .retain(|key, _| self.members.get(key).is_some());
                }
                self.dht.joined(now);
                self.gossip_about(wall_ms, &record.public_key);
            }
            MemberChange::Updated => {
                // It may have moved: the others learn its new address from us.
                self.gossip_about(wall_ms, &record.public_key);
                let moved = self.members.get(&record.public_key).is_some_and(|m| {
                    m.moved_at_ms != 0 && wall_ms.saturating_sub(m.moved_at_ms) < MOVED_RECENTLY_MS
                });
                if moved && !through_tunnel {
                    // Our NAT only lets its packets in once we have sent to its new address:
                    // after the reconcile points WireGuard there, send through the tunnel.
                    let inside = self.tunnel_addr(record.mesh_ipv4);
                    self.punches.schedule(now, inside, &TUNNEL_RETRIES);
                }
            }
            MemberChange::Refreshed => {}
        }
    }

    /// Tells a newcomer about everyone we know, and everyone about the newcomer.
    fn gossip_about(&mut self, wall_ms: u64, newcomer: &PublicKey) {
        // Infection-style, bounded: a few members hear of the newcomer from us (each that
        // verifies it tells a few more), and the newcomer hears of a few members (digests fill
        // in the rest). Telling everyone everything made a mesh forming at once send O(N³)
        // gossip, which overflowed receive buffers past 25 nodes.
        let Some(newcomer_member) = self.members.get(newcomer) else {
            return;
        };
        let Some((about, newcomer_addr)) =
            gossip::gossip_entry(newcomer_member).zip(self.send_addr(newcomer_member))
        else {
            return;
        };
        let others = gossip::Others::new(&self.members, newcomer);
        let entropy = &mut self.entropy;
        let entries: Vec<GossipEntry> =
            gossip::sample_positions(others.len(), MAX_REPAIR_ENTRIES, |n| entropy.below(n))
                .into_iter()
                .filter_map(|position| others.get(position))
                .filter_map(gossip::gossip_entry)
                .collect();
        for chunk in entries.chunks(wgmesh_exchange::MAX_GOSSIP_ENTRIES) {
            let entropy = self.entropy.next_entropy();
            let datagram = self.exchange.gossip(chunk, wall_ms, entropy);
            self.send(newcomer_addr, datagram);
        }
        let others = gossip::Others::new(&self.members, newcomer);
        let entropy = &mut self.entropy;
        let told: Vec<SocketAddr> =
            gossip::sample_positions(others.len(), gossip::FANOUT, |n| entropy.below(n))
                .into_iter()
                .filter_map(|position| self.send_addr(others.get(position)?))
                .collect();
        for addr in told {
            let entropy = self.entropy.next_entropy();
            let datagram = self
                .exchange
                .gossip(std::slice::from_ref(&about), wall_ms, entropy);
            self.send(addr, datagram);
        }
    }

    /// Gossip from a verified member: probe every member it names that we do not know yet.
    /// Gossip from anyone else is ignored (the secret gate alone is not membership).
    fn on_gossip(
        &mut self,
        now: Instant,
        wall_ms: u64,
        sender: PublicKey,
        from: SocketAddr,
        entries: &[GossipEntry],
        extensions: &[Extension],
    ) {
        if !gossip::from_member(&self.members, &sender, from) {
            return;
        }
        for extension in extensions {
            match extension.kind {
                EXT_DIGEST => {
                    if let Some(digest) = Digest::decode(&extension.value) {
                        self.on_digest(now, wall_ms, sender, from, &digest);
                    }
                }
                EXT_RELAY_ASK | EXT_RELAY_GRANT | EXT_RELAY_REFUSED | EXT_PUNCH => {
                    self.on_relay_extension(now, wall_ms, sender, from, extension, entries);
                }
                EXT_SUSPECT => {
                    for key in extension.value.chunks_exact(32) {
                        let mut bytes = [0u8; 32];
                        bytes.copy_from_slice(key);
                        let key = PublicKey::from_bytes(bytes);
                        if self.members.get(&key).is_some() {
                            self.liveness.hint(key, now);
                        }
                    }
                }
                _ => {}
            }
        }
        // Known members the sender heard from much more recently: our record of them may be
        // stale (a missed route change), so ask them directly.
        let stale: Vec<SocketAddr> = entries
            .iter()
            .filter_map(|e| {
                let known = self
                    .members
                    .get(&e.record.public_key)
                    .filter(|m| m.relay_via.is_none())?;
                let theirs = e.record.timestamp.saturating_mul(1000);
                (known.control_addr == Some(e.control)
                    && theirs > known.last_seen_ms.saturating_add(STALE_AFTER_MS))
                .then_some(e.control)
            })
            .collect();
        for addr in stale {
            self.probe(wall_ms, addr, None);
        }
        let unknown = gossip::worth_probing(&self.members, entries);
        for entry in entries {
            if self.members.get(&entry.record.public_key).is_none() {
                self.second_hand.heard_of(entry, now);
            }
        }
        for addr in unknown {
            self.probe(wall_ms, addr, Some(Source::Gossip));
            if !self.punches.is_pending(addr) {
                self.punches.schedule(now, addr, &PUNCH_RETRIES);
            }
        }
    }

    /// Runs the failure detector: the probe of this interval, retries, and verdicts.
    fn check_liveness(&mut self, now: Instant, wall_ms: u64) {
        let members = &self.members;
        let entropy = &mut self.entropy;
        let actions = self.liveness.due(
            now,
            |key| members.get(key).is_some(),
            || {
                // A new round: every member once, in a fresh random order (Fisher–Yates).
                let mut keys: Vec<PublicKey> = members.iter().map(|m| m.public_key).collect();
                for i in (1..keys.len()).rev() {
                    let j = entropy.below(i + 1);
                    keys.swap(i, j);
                }
                keys
            },
        );
        let mut suspects = Vec::new();
        let mut lost_direct = Vec::new();
        for action in actions {
            match action {
                liveness::Action::Probe { key, attempt } => {
                    let Some(member) = self.members.get(&key) else {
                        continue;
                    };
                    // Later attempts go through the tunnel too: a second path, as SWIM's
                    // indirect probe. A relayed member only through the tunnel.
                    let inside = (attempt > 1 || member.relay_via.is_some())
                        .then(|| self.tunnel_addr(member.mesh_ipv4));
                    let targets: Vec<SocketAddr> =
                        underlay_addr(member).into_iter().chain(inside).collect();
                    for addr in targets {
                        self.probe(wall_ms, addr, None);
                    }
                    if attempt > 1 {
                        self.probe_witness(wall_ms, &key);
                    }
                }
                liveness::Action::Suspect(key) => {
                    if let Some(member) = self.members.get(&key) {
                        if member.relay_via.is_none() {
                            lost_direct.push(key);
                        }
                        self.push_event(Event::Suspect {
                            key,
                            mesh_ipv4: member.mesh_ipv4,
                        });
                        suspects.push(key);
                    }
                }
                liveness::Action::Recheck(key) => {
                    let Some(member) = self.members.get(&key) else {
                        continue;
                    };
                    let inside = self.tunnel_addr(member.mesh_ipv4);
                    let targets: Vec<SocketAddr> =
                        underlay_addr(member).into_iter().chain([inside]).collect();
                    for addr in targets {
                        self.probe(wall_ms, addr, None);
                    }
                }
                liveness::Action::Failed(key) => {
                    self.liveness.forget(&key);
                    if let Some(gone) = self.members.remove(&key) {
                        self.push_event(Event::Failed {
                            key,
                            mesh_ipv4: gone.mesh_ipv4,
                        });
                    }
                }
            }
        }
        if !suspects.is_empty() {
            self.announce_suspects(wall_ms, &suspects);
        }
        // A member reached directly that stopped answering there may only have lost its direct
        // path (a NAT that changed): ask a relay for the pair, which answers only if it still
        // reaches the member itself ([`relaying`]).
        for key in lost_direct {
            if let Some(relay) = self.choose_relay(&key) {
                self.ask_relay(now, wall_ms, &relay, key);
            }
        }
    }

    /// Probes a random member other than `suspect`: its answer shows we are connected, which a
    /// failure verdict needs (see [`crate::liveness`]).
    fn probe_witness(&mut self, wall_ms: u64, suspect: &PublicKey) {
        let others: Vec<SocketAddr> = self
            .members
            .iter()
            .filter(|m| m.public_key != *suspect)
            .filter_map(|m| self.send_addr(m))
            .collect();
        if others.is_empty() {
            return;
        }
        let witness = others[self.entropy.below(others.len())];
        self.probe(wall_ms, witness, None);
    }

    /// Tells every member that speaks extensions which members failed our probes, so each
    /// probes them at once (and removes them only if they fail its probes too).
    fn announce_suspects(&mut self, wall_ms: u64, failed: &[PublicKey]) {
        let value: Vec<u8> = failed
            .iter()
            .take(u8::MAX as usize / 32)
            .flat_map(|k| *k.as_bytes())
            .collect();
        for addr in self.extension_speakers() {
            let extension = Extension {
                kind: EXT_SUSPECT,
                value: value.clone(),
            };
            self.send_extension(wall_ms, addr, extension);
        }
    }

    /// Control addresses of the members that accept extension fields (the previous release
    /// refuses them).
    fn extension_speakers(&self) -> Vec<SocketAddr> {
        self.members
            .iter()
            .filter(|m| self.exchange.accepts_extensions(&m.public_key))
            .filter_map(|m| self.send_addr(m))
            .collect()
    }

    /// An entry-less Gossip carrying one extension field.
    fn send_extension(&mut self, wall_ms: u64, to: SocketAddr, extension: Extension) {
        let entropy = self.entropy.next_entropy();
        let datagram = self
            .exchange
            .gossip_with(&[], vec![extension], wall_ms, entropy);
        self.send(to, datagram);
    }

    /// Ourselves, as the other members hold us (for the digest).
    fn own_member(&self) -> Member {
        let record = self.exchange.record();
        Member {
            public_key: record.public_key,
            mesh_ipv4: record.mesh_ipv4,
            mesh_ipv6: record.mesh_ipv6,
            collision_counter: record.collision_counter,
            endpoint: None,
            control_addr: None,
            routes: record.routes.clone(),
            source: Source::Lan,
            relay_offered: record.relay_offered(),
            last_seen_ms: 0,
            moved_at_ms: 0,
            relay_via: None,
            relay_endpoint: None,
            name: None,
            version: None,
            name_claim: 0,
        }
    }

    /// Sends our digest to one member chosen at random (among those that speak extensions).
    fn send_digest(&mut self, wall_ms: u64) {
        let targets = self.extension_speakers();
        if targets.is_empty() {
            return;
        }
        let to = targets[self.entropy.below(targets.len())];
        self.send_digest_to(wall_ms, to, false);
    }

    fn send_digest_to(&mut self, wall_ms: u64, to: SocketAddr, answer: bool) {
        let digest = Digest::of(&self.own_member(), &self.members, answer);
        let extension = Extension {
            kind: EXT_DIGEST,
            value: digest.encode(),
        };
        self.send_extension(wall_ms, to, extension);
    }

    /// A member's digest: where our tables differ, send our side (bounded) and, unless it was
    /// an answer, our digest so it sends its side.
    fn on_digest(
        &mut self,
        now: Instant,
        wall_ms: u64,
        sender: PublicKey,
        from: SocketAddr,
        theirs: &Digest,
    ) {
        let ours = Digest::of(&self.own_member(), &self.members, false);
        let differing = ours.differing(theirs);
        if differing.is_empty() {
            return;
        }
        let cooled = self
            .repaired
            .get(&from)
            .is_none_or(|at| now.duration_since(*at) >= REPAIR_COOLDOWN);
        if !cooled {
            return;
        }
        self.repaired
            .retain(|_, at| now.duration_since(*at) < REPAIR_COOLDOWN);
        if self.repaired.len() >= MAX_REPAIRED {
            return;
        }
        self.repaired.insert(from, now);
        // Our own record differs at the sender: it learns it best from a Hello of ours.
        if differing.contains(&bucket_of(self.exchange.public_key())) {
            self.probe(wall_ms, from, None);
        }
        // Start at a random differing bucket, so repeated repairs cover them all.
        let start = self.entropy.below(differing.len());
        let mut entries: Vec<GossipEntry> = Vec::new();
        for i in 0..differing.len() {
            let bucket = differing[(start + i) % differing.len()];
            entries.extend(
                self.members
                    .iter()
                    .filter(|m| m.public_key != sender && bucket_of(&m.public_key) == bucket)
                    .filter_map(gossip::gossip_entry),
            );
            if entries.len() >= MAX_REPAIR_ENTRIES {
                break;
            }
        }
        entries.truncate(MAX_REPAIR_ENTRIES);
        for chunk in entries.chunks(wgmesh_exchange::MAX_GOSSIP_ENTRIES) {
            let entropy = self.entropy.next_entropy();
            let datagram = self.exchange.gossip(chunk, wall_ms, entropy);
            self.send(from, datagram);
        }
        if !theirs.answer {
            self.send_digest_to(wall_ms, from, true);
        }
    }

    /// The member other than `key` that holds `ipv4` or `ipv6`, if any.
    fn address_holder(
        &self,
        key: &PublicKey,
        ipv4: Ipv4Addr,
        ipv6: std::net::Ipv6Addr,
    ) -> Option<PublicKey> {
        self.members.address_holder(key, ipv4, ipv6)
    }

    /// Members heard of through gossip that did not answer directly in time get a trial through
    /// a member offering to relay: we ask the relay for a port pair ([`relaying`]), and once it
    /// grants one the member is installed as its own peer behind that port, its own addresses
    /// only, so that its proof can come through the tunnel ([`crate::relay`]). A trial that
    /// brings none is withdrawn.
    fn relay_unreachable(&mut self, now: Instant, wall_ms: u64) {
        for trial in self.trials.take_expired(now) {
            if trial.member.relay_endpoint.is_some() {
                self.push_event(Event::RelayUnproven {
                    key: trial.member.public_key,
                    mesh_ipv4: trial.member.mesh_ipv4,
                });
            }
        }
        for entry in self.second_hand.take_due(now) {
            let key = entry.record.public_key;
            if self.members.get(&key).is_some()
                || !self.trials.may_start(&key, now)
                || self.second_hand_address_taken(&entry)
            {
                continue;
            }
            let Some(relay) = self.choose_relay(&key) else {
                self.push_event(Event::Unreachable { key });
                continue;
            };
            let member = relay::relayed_member(&entry, relay, wall_ms);
            self.trials.start(member, relay, now);
            self.ask_relay(now, wall_ms, &relay, key);
        }
    }

    /// Whether a second-hand record claims an address that is ours, a member's or another
    /// trial's: such a claim never displaces the holder.
    fn second_hand_address_taken(&self, entry: &GossipEntry) -> bool {
        let record = &entry.record;
        record.mesh_ipv4 == self.exchange.record().mesh_ipv4
            || self
                .address_holder(&record.public_key, record.mesh_ipv4, record.mesh_ipv6)
                .is_some()
            || self
                .trials
                .holds_address(record.mesh_ipv4, record.mesh_ipv6)
    }
}

/// Sizes of the core's bounded tables.
impl Membership {
    /// Where datagrams for a member go: its control address, or through the tunnel if it is
    /// relayed (its direct address waits for a coordinated attempt, [`crate::direct`]).
    fn send_addr(&self, member: &Member) -> Option<SocketAddr> {
        match member.relay_via {
            Some(_) => Some(self.tunnel_addr(member.mesh_ipv4)),
            None => member.control_addr,
        }
    }
}

/// Where a member is probed on the underlay: its control address, unless it is relayed (a
/// relayed member's direct address is probed only in coordinated attempts, [`crate::direct`]).
fn underlay_addr(member: &Member) -> Option<SocketAddr> {
    member.control_addr.filter(|_| member.relay_via.is_none())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableSizes {
    pub members: usize,
    pub probed: usize,
    pub punches: usize,
    pub second_hand: usize,
    pub relay_trials: usize,
    pub contested: usize,
    pub beacon_replies: usize,
    pub liveness: usize,
    pub announcements: usize,
    pub repaired: usize,
    pub budget: usize,
    pub probe_back: usize,
    pub transmits: usize,
    pub events: usize,
}
