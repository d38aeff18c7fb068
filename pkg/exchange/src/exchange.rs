//! The state machine: datagrams in, datagrams and membership events out. No sockets, no clock,
//! no ambient randomness: the shell passes `now`, the source address and fresh random bytes.

use crate::challenge::{Challenges, Issuer, canonical};
use crate::codec::{
    self, CHALLENGE_LEN, EncodeError, Goodbye, Gossip, GossipEntry, Hello, MAC_LEN,
    MAX_GOSSIP_ENDPOINTS, MAX_GOSSIP_ENTRIES, Message, Probe,
};
use crate::extension::Extension;
use crate::info::{ExtensionPeers, MemberInfo, PeerInfo};
use crate::limiter::RateLimiter;
use crate::order::Order;
use crate::proof;
use crate::record::{FLAG_EXTENSIONS, Record};
use crate::replay::{CacheFull, Kind, MemberReplay, ReplayCache};
use crate::seal::{Gate, NONCE_LEN, OpenError};
use crate::verified::VerifiedPeers;
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use wgmesh_derive::{MeshAddresses, MeshKeys};
use wgmesh_keys::{PrivateKey, PublicKey};
use zeroize::Zeroizing;

/// Unix time in milliseconds.
pub type Millis = u64;

/// Tunables. The defaults are the protocol's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeConfig {
    /// Messages whose timestamp is further than this from `now` are dropped.
    pub timestamp_window_secs: u64,
    /// How long a challenge we issued can be answered.
    pub challenge_lifetime_ms: u64,
    /// Bound on challenges awaiting an answer, in each of the three tables (those in our own
    /// Probes, in our answers to members, in our answers to strangers).
    pub max_outstanding_challenges: usize,
    /// Bound on the strangers' replay cache (senders we have not verified; members have a
    /// partition of their own, with a quota each).
    pub replay_cache_capacity: usize,
    /// Sustained datagrams per second per source (IPv4 address or IPv6 /64), and per verified
    /// member in the members' table.
    pub rate_per_second: u32,
    /// Burst per source (and per member).
    pub rate_burst: u32,
    /// Bound on the number of sources tracked by the strangers' rate limiter.
    pub max_rate_sources: usize,
}

impl Default for ExchangeConfig {
    fn default() -> Self {
        Self {
            timestamp_window_secs: 120,
            challenge_lifetime_ms: 30_000,
            max_outstanding_challenges: 1_024,
            replay_cache_capacity: 8_192,
            rate_per_second: 20,
            rate_burst: 40,
            max_rate_sources: 4_096,
        }
    }
}

/// Fresh random bytes for one call: the AEAD nonce of the datagram it produces, and a challenge
/// (or Goodbye nonce). Passed in so the state machine stays deterministic under test.
#[derive(Clone)]
pub struct Entropy {
    pub nonce: [u8; NONCE_LEN],
    pub token: [u8; CHALLENGE_LEN],
}

/// Bytes of randomness in one [`Entropy`].
pub const ENTROPY_LEN: usize = NONCE_LEN + CHALLENGE_LEN;

impl Entropy {
    pub fn from_bytes(bytes: [u8; ENTROPY_LEN]) -> Self {
        let mut nonce = [0u8; NONCE_LEN];
        let mut token = [0u8; CHALLENGE_LEN];
        nonce.copy_from_slice(&bytes[..NONCE_LEN]);
        token.copy_from_slice(&bytes[NONCE_LEN..]);
        Self { nonce, token }
    }

    /// From the operating system's random source.
    pub fn from_os() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; ENTROPY_LEN];
        getrandom::fill(&mut bytes)?;
        Ok(Self::from_bytes(bytes))
    }

    /// The token as a challenge: never all-zero, because zero means "no challenge".
    fn challenge(&self) -> [u8; CHALLENGE_LEN] {
        let mut challenge = self.token;
        if challenge == [0; CHALLENGE_LEN] {
            challenge[0] = 1;
        }
        challenge
    }
}

impl fmt::Debug for Entropy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Entropy(<redacted>)")
    }
}

/// Why a datagram was dropped. Every drop is counted under exactly one reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The source exceeded its token bucket; no crypto was done.
    RateLimited,
    TooLarge,
    TooShort,
    BadMagic,
    UnknownType,
    /// Not sealed under our exchange key: another mesh, or a forgery.
    BadAead,
    /// The plaintext did not decode (bounds, lengths, unknown values).
    Malformed,
    /// The authenticated header type differs from the plaintext's.
    TypeMismatch,
    /// Claims to come from our own key (a reflection or a loop).
    FromSelf,
    /// Timestamp outside the window.
    StaleTimestamp,
    /// A Hello or Goodbye addressed to another member.
    NotForUs,
    /// Already acted upon.
    Replay,
    /// A Hello answering no live challenge of ours (expired, consumed, or never issued).
    UnknownChallenge,
    /// The sender's key is a low-order point; no proof is possible.
    WeakKey,
    /// The key-possession MAC did not verify.
    BadMac,
    /// The record's public key is not the sender's.
    RecordKeyMismatch,
    /// The record's mesh addresses are not derived from its key and counter.
    BadMeshAddress,
    /// The replay cache is full of live entries; refused rather than risk a replay.
    ReplayCacheFull,
    /// One entry of a Gossip named us or had addresses not derived from its key (the rest of the
    /// datagram is still used).
    BadGossipEntry,
    /// A verified Hello or Goodbye older than one already accepted from the same member (a
    /// withheld message delivered late).
    Superseded,
    /// A Hello answering a challenge we sent to another address (issue 13, return
    /// routability): an address is believed only once it answered a challenge sent to it.
    AddressMismatch,
}

impl DropReason {
    pub const ALL: [Self; 21] = [
        Self::RateLimited,
        Self::TooLarge,
        Self::TooShort,
        Self::BadMagic,
        Self::UnknownType,
        Self::BadAead,
        Self::Malformed,
        Self::TypeMismatch,
        Self::FromSelf,
        Self::StaleTimestamp,
        Self::NotForUs,
        Self::Replay,
        Self::UnknownChallenge,
        Self::WeakKey,
        Self::BadMac,
        Self::RecordKeyMismatch,
        Self::BadMeshAddress,
        Self::ReplayCacheFull,
        Self::BadGossipEntry,
        Self::Superseded,
        Self::AddressMismatch,
    ];

    /// A stable name for metrics and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::TooLarge => "too_large",
            Self::TooShort => "too_short",
            Self::BadMagic => "bad_magic",
            Self::UnknownType => "unknown_type",
            Self::BadAead => "bad_aead",
            Self::Malformed => "malformed",
            Self::TypeMismatch => "type_mismatch",
            Self::FromSelf => "from_self",
            Self::StaleTimestamp => "stale_timestamp",
            Self::NotForUs => "not_for_us",
            Self::Replay => "replay",
            Self::UnknownChallenge => "unknown_challenge",
            Self::WeakKey => "weak_key",
            Self::BadMac => "bad_mac",
            Self::RecordKeyMismatch => "record_key_mismatch",
            Self::BadMeshAddress => "bad_mesh_address",
            Self::ReplayCacheFull => "replay_cache_full",
            Self::BadGossipEntry => "bad_gossip_entry",
            Self::Superseded => "superseded",
            Self::AddressMismatch => "address_mismatch",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<OpenError> for DropReason {
    fn from(error: OpenError) -> Self {
        match error {
            OpenError::TooLarge(_) => Self::TooLarge,
            OpenError::TooShort(_) => Self::TooShort,
            OpenError::BadMagic => Self::BadMagic,
            OpenError::UnknownType(_) => Self::UnknownType,
            OpenError::BadAead => Self::BadAead,
        }
    }
}

/// Counts of dropped datagrams per reason, and of datagrams that cost an AEAD open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropCounters {
    counts: [u64; DropReason::ALL.len()],
    aead_opens: u64,
}

impl DropCounters {
    pub fn get(&self, reason: DropReason) -> u64 {
        self.counts[reason.index()]
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Datagrams that passed the rate limiter and the cheap header checks and were handed to
    /// the AEAD (whether or not they opened).
    pub fn aead_opens(&self) -> u64 {
        self.aead_opens
    }

    /// Non-zero counters, for metrics.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL
            .iter()
            .map(|&reason| (reason, self.get(reason)))
            .filter(|&(_, count)| count > 0)
    }

    fn count(&mut self, reason: DropReason) {
        let slot = &mut self.counts[reason.index()];
        *slot = slot.saturating_add(1);
    }
}

/// What the shell learns from a datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A member proved its key and sent this record. `from` is the observed source address, a
    /// candidate endpoint in its own right (NAT mapping as seen from here). `info` is what it
    /// said about its version and name, covered by the same proof.
    Verified {
        record: Record,
        from: SocketAddr,
        info: PeerInfo,
        /// `from` answered a challenge sent to it. `false` for an answer to our LAN-group Probe:
        /// the source is only a claim, which the shell believes only on a directly connected
        /// network (docs/exchange-protocol.md, "Return routability").
        address_proven: bool,
    },
    /// A member announced it is leaving.
    Goodbye { key: PublicKey },
    /// A member told us about others. Entries whose mesh addresses do not derive from their key,
    /// or that name us, were removed. `sender` is a claim: the shell acts only on gossip from a
    /// member it has verified, and only by probing or installing peers without routes.
    Gossip {
        sender: PublicKey,
        from: SocketAddr,
        entries: Vec<GossipEntry>,
        /// The message's extension fields (a member table digest, failure hints), for the
        /// membership core to read.
        extensions: Vec<Extension>,
    },
}

/// The outcome of [`Exchange::handle`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Handled {
    /// A datagram to send back to the source address.
    pub reply: Option<Vec<u8>>,
    pub event: Option<Event>,
    /// Set when the datagram was dropped (and counted).
    pub dropped: Option<DropReason>,
    /// For a [`DropReason::StaleTimestamp`] drop: the sender's timestamp minus ours, in seconds
    /// (positive when its clock is ahead). The datagram opened under the mesh key, so this is a
    /// member's clock (or a replay of one): the shell tells the operator to check NTP.
    pub clock_offset_secs: Option<i64>,
    /// For an answered Probe: who sent it (a claim until its Hello verifies). The membership
    /// core uses it to leave a known member's LAN beacon unanswered.
    pub probed_by: Option<PublicKey>,
}

/// A drop and, for a stale timestamp, how far off the sender's clock was.
struct Dropped {
    reason: DropReason,
    clock_offset_secs: Option<i64>,
}

impl From<DropReason> for Dropped {
    fn from(reason: DropReason) -> Self {
        Self {
            reason,
            clock_offset_secs: None,
        }
    }
}

impl From<OpenError> for Dropped {
    fn from(error: OpenError) -> Self {
        DropReason::from(error).into()
    }
}

/// Why our own record cannot be announced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error("record names key {record}, but our key is {ours}")]
    KeyMismatch { record: String, ours: String },
    #[error("record's mesh addresses are not derived from our key and counter {0}")]
    BadMeshAddress(u8),
}

/// Why a message to a specific member cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeError {
    #[error("key {0} is a low-order point; no shared secret exists")]
    WeakPeerKey(String),
}

/// Opens per second (and burst) for datagrams from verified members' proven addresses, all
/// members together: a few milliseconds of CPU a second at most, however much garbage is spoofed
/// from their addresses.
const MEMBER_OPENS_PER_SECOND: u32 = 5_000;
const MEMBER_OPENS_BURST: u32 = 10_000;

/// MAC keys cached (see `Exchange::mac_key`).
const MAX_CACHED_MAC_KEYS: usize = 4_096;

/// One member's side of the exchange protocol.
pub struct Exchange {
    keys: MeshKeys,
    private_key: PrivateKey,
    public_key: PublicKey,
    exchange_key: Zeroizing<[u8; 32]>,
    /// MAC keys per peer (one X25519 each, instead of one per message): a member's probe round
    /// costs three of them otherwise. Bounded; `None` caches a low-order key.
    mac_keys: HashMap<PublicKey, Option<Zeroizing<[u8; 32]>>>,
    gate: Gate,
    record: Record,
    /// Our version and name, sent to members that accept extensions.
    info: MemberInfo,
    /// Members whose latest verified record has [`FLAG_EXTENSIONS`].
    extension_peers: ExtensionPeers,
    config: ExchangeConfig,
    challenges: Challenges,
    /// The strangers' replay cache: senders not in `verified`.
    replay: ReplayCache,
    /// The members' replay cache: a quota per member.
    member_replay: MemberReplay,
    /// Members that proved their key from an address we sent a challenge to.
    verified: VerifiedPeers,
    order: Order,
    /// Per source, for everything but what `expects` lets through.
    limiter: RateLimiter,
    /// Per verified member, for its datagrams from an address it was proven at.
    member_limiter: RateLimiter<PublicKey>,
    /// Per address we await an answer from, before the AEAD: a table of its own, so strangers
    /// filling theirs cannot keep a member that moved out.
    awaited_limiter: RateLimiter,
    /// Before the AEAD, for datagrams from verified members' proven addresses, all together:
    /// spoofed garbage from a member's address costs one open, within this ceiling; past it,
    /// such addresses are limited like strangers'.
    member_opens: RateLimiter<()>,
    drops: DropCounters,
}

impl fmt::Debug for Exchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exchange")
            .field("public_key", &self.public_key)
            .field("config", &self.config)
            .field("drops", &self.drops)
            .finish_non_exhaustive()
    }
}

impl Exchange {
    /// `record` must be ours: our public key, and mesh addresses derived from it. Its
    /// [`FLAG_EXTENSIONS`] bit is set here: this decoder accepts extensions, whatever the caller
    /// built.
    pub fn new(
        keys: &MeshKeys,
        private_key: PrivateKey,
        mut record: Record,
        config: ExchangeConfig,
    ) -> Result<Self, RecordError> {
        let public_key = private_key.public_key();
        check_own_record(keys, &public_key, &record)?;
        record.flags |= FLAG_EXTENSIONS;
        let exchange_key = Zeroizing::new(keys.exchange_key());
        Ok(Self {
            keys: keys.clone(),
            gate: Gate::new(&exchange_key),
            exchange_key,
            mac_keys: HashMap::new(),
            private_key,
            public_key,
            record,
            info: MemberInfo::default(),
            extension_peers: ExtensionPeers::default(),
            challenges: Challenges::new(
                config.max_outstanding_challenges,
                config.challenge_lifetime_ms,
            ),
            replay: ReplayCache::new(config.replay_cache_capacity),
            member_replay: MemberReplay::default(),
            verified: VerifiedPeers::default(),
            order: Order::new(config.replay_cache_capacity),
            limiter: RateLimiter::new(
                config.rate_per_second,
                config.rate_burst,
                config.max_rate_sources,
            ),
            member_limiter: RateLimiter::new(
                config.rate_per_second,
                config.rate_burst,
                crate::verified::MAX_VERIFIED,
            ),
            awaited_limiter: RateLimiter::new(
                config.rate_per_second,
                config.rate_burst,
                3 * config.max_outstanding_challenges,
            ),
            member_opens: RateLimiter::new(MEMBER_OPENS_PER_SECOND, MEMBER_OPENS_BURST, 1),
            config,
            drops: DropCounters::default(),
        })
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    pub fn record(&self) -> &Record {
        &self.record
    }

    /// Replaces our record (after a reload, new endpoints, a re-address). To push it, probe the
    /// members again: each answers with a Hello that asks for ours.
    pub fn set_record(&mut self, mut record: Record) -> Result<(), RecordError> {
        check_own_record(&self.keys, &self.public_key, &record)?;
        record.flags |= FLAG_EXTENSIONS;
        self.record = record;
        Ok(())
    }

    /// Replaces our version and name (at start, after a reload). Like a new record, it reaches
    /// members with the next exchange: probe them to push it. The version is bounded here like a
    /// received one, so every Hello we build fits its datagram (a name is bounded by its type).
    pub fn set_info(&mut self, mut info: MemberInfo) {
        info.version = info
            .version
            .and_then(|v| crate::info::sanitize_version(v.as_bytes()));
        self.info = info;
    }

    pub fn info(&self) -> &MemberInfo {
        &self.info
    }

    pub fn config(&self) -> &ExchangeConfig {
        &self.config
    }

    pub fn stats(&self) -> &DropCounters {
        &self.drops
    }

    /// A Probe to send to `to`, a candidate address or the LAN group. Its challenge stays
    /// answerable for `challenge_lifetime_ms`, by any member, once. An answer is believed only
    /// from `to` (return routability); an answer to a Probe sent to a multicast group proves
    /// the sender's key but not its address, and is met with a challenge sent to that address.
    pub fn probe(&mut self, now: Millis, to: SocketAddr, entropy: Entropy) -> Vec<u8> {
        let challenge = entropy.challenge();
        self.challenges
            .issue(now, Issuer::OwnProbe, challenge, None, to);
        let probe = Message::Probe(Probe {
            sender: self.public_key,
            timestamp: now / 1000,
            challenge,
            // Probes go to whoever listens, the previous release included: no extensions.
            extensions: Vec::new(),
        });
        self.seal(&probe, &entropy.nonce)
    }

    /// A Goodbye for the member `to` (one per member: the MAC is pairwise).
    pub fn goodbye(
        &mut self,
        to: &PublicKey,
        now: Millis,
        entropy: Entropy,
    ) -> Result<Vec<u8>, ExchangeError> {
        let key = self
            .mac_key(to)
            .ok_or_else(|| ExchangeError::WeakPeerKey(to.short()))?;
        let mut goodbye = Goodbye {
            sender: self.public_key,
            recipient: *to,
            timestamp: now / 1000,
            nonce: entropy.token,
            extensions: Vec::new(),
            mac: [0; MAC_LEN],
        };
        let plaintext = encode_infallible(&Message::Goodbye(goodbye.clone()));
        goodbye.mac = proof::compute(&key, transcript(&plaintext));
        Ok(self.seal(&Message::Goodbye(goodbye), &entropy.nonce))
    }

    /// A Gossip datagram carrying `entries` (at most [`MAX_GOSSIP_ENTRIES`]; routes are stripped
    /// and endpoints trimmed to [`MAX_GOSSIP_ENDPOINTS`] here).
    pub fn gossip(&self, entries: &[GossipEntry], now: Millis, entropy: Entropy) -> Vec<u8> {
        self.gossip_with(entries, Vec::new(), now, entropy)
    }

    /// Whether the member with `key` accepts extension fields (its latest verified record says
    /// so): only such members may be sent [`Self::gossip_with`] extensions, since the previous
    /// release refuses any byte after a message's fixed part.
    pub fn accepts_extensions(&self, key: &PublicKey) -> bool {
        self.extension_peers.accepts(key)
    }

    /// [`Self::gossip`] with extension fields (the caller checked
    /// [`Self::accepts_extensions`] for the recipient).
    pub fn gossip_with(
        &self,
        entries: &[GossipEntry],
        extensions: Vec<Extension>,
        now: Millis,
        entropy: Entropy,
    ) -> Vec<u8> {
        let entries = entries
            .iter()
            .take(MAX_GOSSIP_ENTRIES)
            .map(|entry| {
                let mut entry = entry.clone();
                entry.record.routes.clear();
                entry.record.endpoints.truncate(MAX_GOSSIP_ENDPOINTS);
                entry
            })
            .collect();
        let gossip = Message::Gossip(Gossip {
            sender: self.public_key,
            timestamp: now / 1000,
            entries,
            extensions,
        });
        self.seal(&gossip, &entropy.nonce)
    }

    fn on_gossip(&mut self, from: SocketAddr, gossip: Gossip) -> Handled {
        let entries: Vec<GossipEntry> = gossip
            .entries
            .into_iter()
            .filter(|entry| {
                let record = &entry.record;
                let claimed = MeshAddresses {
                    ipv4: record.mesh_ipv4,
                    ipv6: record.mesh_ipv6,
                };
                let valid = record.public_key != self.public_key
                    && claimed.verify(&self.keys, &record.public_key, record.collision_counter);
                if !valid {
                    self.drops.count(DropReason::BadGossipEntry);
                }
                valid
            })
            .collect();
        Handled {
            event: Some(Event::Gossip {
                sender: gossip.sender,
                from,
                entries,
                extensions: gossip.extensions,
            }),
            ..Handled::default()
        }
    }

    /// The MAC key shared with `peer` (see `proof`), from the cache when we have it.
    fn mac_key(&mut self, peer: &PublicKey) -> Option<Zeroizing<[u8; 32]>> {
        if let Some(cached) = self.mac_keys.get(peer) {
            return cached.clone();
        }
        let key = proof::mac_key(&self.private_key, peer, &self.exchange_key);
        self.cache_mac_key(peer, key.clone());
        key
    }

    fn cache_mac_key(&mut self, peer: &PublicKey, key: Option<Zeroizing<[u8; 32]>>) {
        if self.mac_keys.len() >= MAX_CACHED_MAC_KEYS {
            // Any one: a forgotten key only costs one X25519 later.
            if let Some(evict) = self.mac_keys.keys().next().copied() {
                self.mac_keys.remove(&evict);
            }
        }
        self.mac_keys.insert(*peer, key);
    }

    /// Takes the X25519 secret shared with `peer` from a caller that computed it already, so
    /// the exchange need not: `DH(a, B) = DH(b, A)`, and a simulator that runs both ends of a
    /// pair computes it once for both. A wrong secret only makes the pair's proofs fail.
    #[cfg(feature = "test-support")]
    pub fn learn_shared_secret(&mut self, peer: &PublicKey, shared: &wgmesh_keys::SharedSecret) {
        let key = proof::from_shared(shared, &self.exchange_key);
        self.cache_mac_key(peer, key);
    }

    /// Processes one received datagram. Never panics; a dropped datagram is counted in
    /// [`Exchange::stats`] and named in [`Handled::dropped`].
    pub fn handle(
        &mut self,
        now: Millis,
        from: SocketAddr,
        datagram: &[u8],
        entropy: Entropy,
    ) -> Handled {
        match self.handle_inner(now, from, datagram, &entropy) {
            Ok(handled) => handled,
            Err(Dropped {
                reason,
                clock_offset_secs,
            }) => {
                self.drops.count(reason);
                Handled {
                    dropped: Some(reason),
                    clock_offset_secs,
                    ..Handled::default()
                }
            }
        }
    }

    fn handle_inner(
        &mut self,
        now: Millis,
        from: SocketAddr,
        datagram: &[u8],
        entropy: &Entropy,
    ) -> Result<Handled, Dropped> {
        let source = canonical(from);
        // A verified member's address is not limited per source before the AEAD: spoofed
        // garbage from it would drain the bucket (and a table full of spoofed sources would keep
        // it out); all such addresses together share a ceiling of opens instead, and what opens
        // is limited per member below. An address we await an answer from has a bucket in a
        // table of its own.
        let member_address = self.verified.at(&source).is_some();
        let awaited = !member_address && self.challenges.awaits_answer_from(now, source);
        let allowed = if member_address {
            self.member_opens.allow_key(now, ()) || self.limiter.allow(now, from.ip())
        } else if awaited {
            self.awaited_limiter.allow(now, from.ip())
        } else {
            self.limiter.allow(now, from.ip())
        };
        if !allowed {
            return Err(DropReason::RateLimited.into());
        }
        let expected = member_address || awaited;
        crate::seal::precheck(datagram)?;
        self.drops.aead_opens += 1;
        let (header_type, plaintext) = self.gate.open(datagram)?;
        let message = codec::decode_message(&plaintext).map_err(|_| DropReason::Malformed)?;
        if message.msg_type() != header_type {
            return Err(DropReason::TypeMismatch.into());
        }
        if *message.sender() == self.public_key {
            return Err(DropReason::FromSelf.into());
        }
        if !self.fresh(now, message.timestamp()) {
            return Err(Dropped {
                reason: DropReason::StaleTimestamp,
                clock_offset_secs: Some(clock_offset_secs(now, message.timestamp())),
            });
        }
        if expected && !self.admit_expected(now, source, &message) {
            return Err(DropReason::RateLimited.into());
        }
        let handled = match message {
            Message::Probe(probe) => self.on_probe(now, from, &probe, entropy),
            Message::Hello(hello) => self.on_hello(now, from, &hello, &plaintext, entropy),
            Message::Goodbye(goodbye) => self.on_goodbye(now, &goodbye, &plaintext),
            Message::Gossip(gossip) => Ok(self.on_gossip(from, gossip)),
        };
        handled.map_err(Dropped::from)
    }

    /// Answers with our record and a challenge of our own, so the prober proves itself too.
    fn on_probe(
        &mut self,
        now: Millis,
        from: SocketAddr,
        probe: &Probe,
        entropy: &Entropy,
    ) -> Result<Handled, DropReason> {
        if self.seen(now, &probe.sender, &probe.challenge) {
            return Err(DropReason::Replay);
        }
        let key = self.mac_key(&probe.sender).ok_or(DropReason::WeakKey)?;
        // The sender key of a Probe is a claim: it counts as a member's only from an address
        // that member was proven at, and then only against its quota for Probes.
        let member = self.verified.proven_at(&probe.sender, &canonical(from));
        // A replayed Probe would make us send a Hello (ten times its size) to whatever source
        // address the replayer forged; remembering Probes bounds that to once per capture.
        let expiry = self.replay_expiry(now, probe.timestamp);
        self.remember(
            now,
            member,
            probe.sender,
            Kind::Claimed,
            probe.challenge,
            expiry,
        )
        .map_err(|_| DropReason::ReplayCacheFull)?;
        let challenge = entropy.challenge();
        let issuer = if member {
            Issuer::ToMember
        } else {
            Issuer::ToStranger
        };
        self.challenges
            .issue(now, issuer, challenge, Some(probe.sender), from);
        let reply = self.hello(now, &key, probe.sender, probe.challenge, challenge, entropy);
        Ok(Handled {
            reply: Some(reply),
            probed_by: Some(probe.sender),
            ..Handled::default()
        })
    }

    fn on_hello(
        &mut self,
        now: Millis,
        from: SocketAddr,
        hello: &Hello,
        plaintext: &[u8],
        entropy: &Entropy,
    ) -> Result<Handled, DropReason> {
        if hello.recipient != self.public_key {
            return Err(DropReason::NotForUs);
        }
        if self.seen(now, &hello.sender, &hello.echo) {
            return Err(DropReason::Replay);
        }
        let Some(answer) = self
            .challenges
            .answerable(now, &hello.echo, &hello.sender, from)
        else {
            return Err(DropReason::UnknownChallenge);
        };
        // Return routability: a challenge sent to one address is answered from there (a NAT
        // maps the answer to the address we sent to). Refused before any crypto, and the
        // challenge stays live, so a spoofed answer cannot burn the real one.
        if !answer.routable && !answer.to_group {
            return Err(DropReason::AddressMismatch);
        }
        let key = self.mac_key(&hello.sender).ok_or(DropReason::WeakKey)?;
        if !proof::verify(&key, transcript(plaintext), &hello.mac) {
            return Err(DropReason::BadMac);
        }
        let record = &hello.record;
        if record.public_key != hello.sender {
            return Err(DropReason::RecordKeyMismatch);
        }
        let claimed = MeshAddresses {
            ipv4: record.mesh_ipv4,
            ipv6: record.mesh_ipv6,
        };
        if !claimed.verify(&self.keys, &hello.sender, record.collision_counter) {
            return Err(DropReason::BadMeshAddress);
        }
        if self
            .order
            .hello_is_superseded(now, &hello.sender, record.timestamp, hello.timestamp)
        {
            return Err(DropReason::Superseded);
        }

        // A failed MAC above consumed nothing, so an insider racing a bogus answer cannot burn
        // another member's handshake.
        let expiry = self.replay_expiry(now, hello.timestamp);
        let member = self.verified.is_member(&hello.sender);
        // An answer to our LAN-group Probe has no single destination to come from: it is
        // believed from its source, as before (the remaining gap of return routability, see
        // docs/exchange-protocol.md; a four-message exchange for it cost formation under loss).
        if answer.to_group {
            // The other members may still answer it: the replay cache is what refuses a second
            // answer from this one, so a full partition refuses.
            self.remember(now, member, hello.sender, Kind::Proven, hello.echo, expiry)
                .map_err(|_| DropReason::ReplayCacheFull)?;
        } else {
            // Answered from where it went: one host listens there, so the challenge is
            // consumed, which defeats replays; the cache entry only lets a replay be counted as
            // one, so a full cache is not a reason to refuse.
            self.challenges.consume(answer.issuer, &hello.echo);
            let _ = self.remember(now, member, hello.sender, Kind::Proven, hello.echo, expiry);
        }
        let member = if answer.routable {
            let member_replay = &self.member_replay;
            let (tracked, evicted) =
                self.verified
                    .note(now, hello.sender, canonical(from), |key| {
                        !member_replay.has_live(now, key)
                    });
            if let Some(evicted) = evicted {
                self.member_replay.forget(&evicted);
            }
            tracked
        } else {
            member
        };
        self.order
            .hello(now, hello.sender, record.timestamp, hello.timestamp, expiry);
        let info = self.note_extensions(hello);
        let reply = (hello.challenge != [0; CHALLENGE_LEN]).then(|| {
            // It accepts extensions but answered our Probe before it knew we do, so it sent no
            // version or name: our answer (which carries ours) asks for its Hello once more. Only
            // for an answer to a Probe, so a handshake ends after at most four messages.
            let challenge = if answer.open && info == PeerInfo::NotSent {
                let challenge = entropy.challenge();
                self.challenges
                    .issue(now, issuer_for(member), challenge, Some(hello.sender), from);
                challenge
            } else {
                [0; CHALLENGE_LEN]
            };
            self.hello(now, &key, hello.sender, hello.challenge, challenge, entropy)
        });
        Ok(Handled {
            reply,
            event: Some(Event::Verified {
                record: hello.record.clone(),
                from,
                info,
                address_proven: !answer.to_group,
            }),
            dropped: None,
            clock_offset_secs: None,
            probed_by: None,
        })
    }

    fn on_goodbye(
        &mut self,
        now: Millis,
        goodbye: &Goodbye,
        plaintext: &[u8],
    ) -> Result<Handled, DropReason> {
        if goodbye.recipient != self.public_key {
            return Err(DropReason::NotForUs);
        }
        if self.seen(now, &goodbye.sender, &goodbye.nonce) {
            return Err(DropReason::Replay);
        }
        let key = self.mac_key(&goodbye.sender).ok_or(DropReason::WeakKey)?;
        if !proof::verify(&key, transcript(plaintext), &goodbye.mac) {
            return Err(DropReason::BadMac);
        }
        if self
            .order
            .goodbye_is_superseded(now, &goodbye.sender, goodbye.timestamp)
        {
            return Err(DropReason::Superseded);
        }
        // Here the cache is the only replay defence, so a full cache refuses the Goodbye.
        let expiry = self.replay_expiry(now, goodbye.timestamp);
        let member = self.verified.is_member(&goodbye.sender);
        self.remember(
            now,
            member,
            goodbye.sender,
            Kind::Proven,
            goodbye.nonce,
            expiry,
        )
        .map_err(|_| DropReason::ReplayCacheFull)?;
        self.order
            .goodbye(now, goodbye.sender, goodbye.timestamp, expiry);
        // It may come back as an older release (a downgrade): do not send it extensions before
        // its new record says it accepts them.
        self.extension_peers.forget(&goodbye.sender);
        Ok(Handled {
            event: Some(Event::Goodbye {
                key: goodbye.sender,
            }),
            ..Handled::default()
        })
    }

    /// Whether `token` from `sender` was acted upon already (in either partition).
    fn seen(&self, now: Millis, sender: &PublicKey, token: &[u8; CHALLENGE_LEN]) -> bool {
        self.replay.contains(now, sender, token) || self.member_replay.contains(now, sender, token)
    }

    /// Remembers `token` from `sender` in the members' partition (under its quota of `kind`)
    /// or the strangers'. Either refuses when full of live entries (fail closed), each for its
    /// own senders only.
    fn remember(
        &mut self,
        now: Millis,
        member: bool,
        sender: PublicKey,
        kind: Kind,
        token: [u8; CHALLENGE_LEN],
        expiry: Millis,
    ) -> Result<(), CacheFull> {
        if member {
            self.member_replay.insert(now, sender, kind, token, expiry)
        } else {
            self.replay.insert(now, sender, token, expiry)
        }
    }

    /// A datagram from an address `handle_inner` let past the per-source limiter (a verified
    /// member's, or one we await an answer from), now that it opened: whether to process it.
    /// A member's datagrams from where it was proven count against its own bucket. A Hello
    /// from a member is authenticated before it changes anything and its MAC key is cached; a
    /// Hello from anyone else costs an X25519 only if it answers a live challenge, and those
    /// are charged to the source like a stranger's. Everything else is a stranger's.
    fn admit_expected(&mut self, now: Millis, source: SocketAddr, message: &Message) -> bool {
        let sender = *message.sender();
        match message {
            Message::Hello(hello) => {
                self.verified.is_member(&sender)
                    || self
                        .challenges
                        .answerable(now, &hello.echo, &sender, source)
                        .is_none()
                    || self.limiter.allow(now, source.ip())
            }
            _ if self.verified.proven_at(&sender, &source) => {
                self.member_limiter.allow_key(now, sender)
            }
            _ => self.limiter.allow(now, source.ip()),
        }
    }

    /// Remembers whether a verified member accepts extensions (its latest record says so), and
    /// reads what its Hello said about itself.
    fn note_extensions(&mut self, hello: &Hello) -> PeerInfo {
        let accepts = hello.record.accepts_extensions();
        self.extension_peers.observe(hello.sender, accepts);
        if !accepts {
            return PeerInfo::Legacy;
        }
        if hello.extensions.is_empty() {
            PeerInfo::NotSent
        } else {
            PeerInfo::Sent(MemberInfo::from_extensions(&hello.extensions))
        }
    }

    fn hello(
        &self,
        now: Millis,
        key: &[u8; 32],
        recipient: PublicKey,
        echo: [u8; CHALLENGE_LEN],
        challenge: [u8; CHALLENGE_LEN],
        entropy: &Entropy,
    ) -> Vec<u8> {
        let mut hello = Hello {
            sender: self.public_key,
            recipient,
            timestamp: now / 1000,
            echo,
            challenge,
            record: self.record.clone(),
            // Only to members known to accept them: the previous release refuses a Hello with
            // any byte between the record and the MAC.
            extensions: if self.extension_peers.accepts(&recipient) {
                self.info.to_extensions()
            } else {
                Vec::new()
            },
            mac: [0; MAC_LEN],
        };
        let plaintext = encode_infallible(&Message::Hello(hello.clone()));
        hello.mac = proof::compute(key, transcript(&plaintext));
        self.seal(&Message::Hello(hello), &entropy.nonce)
    }

    #[expect(
        clippy::expect_used,
        reason = "our messages are bounded by MAX_HELLO_LEN, which fits a datagram"
    )]
    fn seal(&self, message: &Message, nonce: &[u8; NONCE_LEN]) -> Vec<u8> {
        let plaintext = encode_infallible(message);
        self.gate
            .seal(message.msg_type(), nonce, &plaintext)
            .expect("the largest legal message fits a datagram (see MAX_HELLO_LEN)")
    }

    /// `|timestamp - now| <= window`, in whole seconds.
    fn fresh(&self, now: Millis, timestamp: u64) -> bool {
        (now / 1000).abs_diff(timestamp) <= self.config.timestamp_window_secs
    }

    /// A message stamped `timestamp` passes the window until `timestamp + window`; remember it
    /// at least that long (and at least a window from now).
    fn replay_expiry(&self, now: Millis, timestamp: u64) -> Millis {
        let window_ms = self.config.timestamp_window_secs.saturating_mul(1000);
        timestamp
            .saturating_mul(1000)
            .max(now)
            .saturating_add(window_ms)
            .saturating_add(1000)
    }
}

/// The table for a challenge to `peer` (a verified member or not).
fn issuer_for(member: bool) -> Issuer {
    if member {
        Issuer::ToMember
    } else {
        Issuer::ToStranger
    }
}

/// `timestamp - now` in whole seconds, saturating at the ends of `i64`.
fn clock_offset_secs(now: Millis, timestamp: u64) -> i64 {
    let now = i128::from(now / 1000);
    let offset = i128::from(timestamp) - now;
    i64::try_from(offset).unwrap_or(if offset < 0 { i64::MIN } else { i64::MAX })
}

/// The MAC covers every plaintext byte before it; the MAC is always the last field.
fn transcript(plaintext: &[u8]) -> &[u8] {
    &plaintext[..plaintext.len().saturating_sub(MAC_LEN)]
}

/// Our own messages: the record was checked by `check_own_record` and challenges and echoes we
/// put in are never zero, so encoding cannot fail.
#[expect(
    clippy::expect_used,
    reason = "our record is checked when set and our challenges and echoes are never zero"
)]
fn encode_infallible(message: &Message) -> Vec<u8> {
    codec::encode_message(message).expect("our record is checked when set; echoes are non-zero")
}

fn check_own_record(
    keys: &MeshKeys,
    public_key: &PublicKey,
    record: &Record,
) -> Result<(), RecordError> {
    codec::check_record(record)?;
    if record.public_key != *public_key {
        return Err(RecordError::KeyMismatch {
            record: record.public_key.short(),
            ours: public_key.short(),
        });
    }
    let claimed = MeshAddresses {
        ipv4: record.mesh_ipv4,
        ipv6: record.mesh_ipv6,
    };
    if !claimed.verify(keys, public_key, record.collision_counter) {
        return Err(RecordError::BadMeshAddress(record.collision_counter));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_reasons_are_indexed_in_order() {
        for (i, reason) in DropReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i, "{reason}");
        }
    }

    #[test]
    fn clock_offsets_are_signed_seconds_and_saturate() {
        assert_eq!(clock_offset_secs(1_000_999, 1_300), 300);
        assert_eq!(clock_offset_secs(1_000_000, 700), -300);
        assert_eq!(clock_offset_secs(0, u64::MAX), i64::MAX);
        assert_eq!(clock_offset_secs(u64::MAX, 0), -((u64::MAX / 1000) as i64));
    }

    #[test]
    fn zero_entropy_still_gives_a_challenge() {
        let entropy = Entropy::from_bytes([0; ENTROPY_LEN]);
        assert_ne!(entropy.challenge(), [0; CHALLENGE_LEN]);
        assert!(!format!("{entropy:?}").contains('0'));
    }
}
