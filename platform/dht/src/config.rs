//! What the daemon configures, what can go wrong at start, and what it can observe.

use crate::method::{PeerAnnounce, Rendezvous};
use crate::schedule::Pacing;
use std::fmt;
use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::time::Duration;

/// Maps an epoch hour to the 20-byte infohash announced and looked up for it. The daemon passes
/// `move |hour| keys.dht_infohash(hour)` (DESIGN.md §3).
pub type InfohashFn = Box<dyn Fn(u64) -> [u8; 20] + Send>;

/// Everything the rendezvous thread needs. Build with [`DhtConfig::new`] and set fields.
pub struct DhtConfig {
    /// How members publish and find each other on the DHT (`--dht mainline|bep44`).
    pub rendezvous: Box<dyn Rendezvous>,
    /// The control port announced (explicitly: DHT nodes store `source IP : this port`).
    pub announce_port: u16,
    /// Bootstrap nodes as `HOST:PORT`, resolved on the DHT thread. Empty means mainline's public
    /// routers ([`mainline::DEFAULT_BOOTSTRAP_NODES`]). To run without the DHT, don't start it.
    pub bootstrap: Vec<String>,
    /// Local address of the DHT socket. `None`: all IPv4 interfaces, port 6881 if free, else
    /// an ephemeral port. Port 0: an ephemeral port.
    pub bind: Option<SocketAddrV4>,
    /// Where DHT nodes are kept between runs (`<state-dir>/<iface>.dht-nodes.json`). They are
    /// used as extra bootstrap nodes, so a restart does not depend on the public routers.
    pub nodes_file: Option<PathBuf>,
    /// Lookup and announce intervals.
    pub pacing: Pacing,
    /// How long mainline waits for one DHT node's answer (its default is 2 s).
    pub request_timeout: Duration,
    /// Deliver loopback candidates (`127.0.0.0/8`). Off by default: only a DHT on this host can
    /// name a member there, so from the internet it is a hostile answer aimed at local services.
    /// Tests and examples with a testnet on 127.0.0.1 turn it on.
    pub accept_loopback: bool,
}

impl DhtConfig {
    /// BEP 5 announces under `infohash(hour)` ([`PeerAnnounce`]); otherwise as
    /// [`DhtConfig::with_rendezvous`].
    pub fn new(infohash: impl Fn(u64) -> [u8; 20] + Send + 'static, announce_port: u16) -> Self {
        Self::with_rendezvous(Box::new(PeerAnnounce::new(infohash)), announce_port)
    }

    /// Defaults: public bootstrap routers, any local address, no nodes file, default pacing, no
    /// loopback candidates.
    pub fn with_rendezvous(rendezvous: Box<dyn Rendezvous>, announce_port: u16) -> Self {
        Self {
            rendezvous,
            announce_port,
            bootstrap: Vec::new(),
            bind: None,
            nodes_file: None,
            pacing: Pacing::default(),
            request_timeout: mainline::DEFAULT_REQUEST_TIMEOUT,
            accept_loopback: false,
        }
    }
}

impl fmt::Debug for DhtConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DhtConfig")
            .field("rendezvous", &self.rendezvous.name())
            .field("announce_port", &self.announce_port)
            .field("bootstrap", &self.bootstrap)
            .field("bind", &self.bind)
            .field("nodes_file", &self.nodes_file)
            .field("pacing", &self.pacing)
            .field("request_timeout", &self.request_timeout)
            .field("accept_loopback", &self.accept_loopback)
            .finish_non_exhaustive()
    }
}

/// Why the rendezvous could not start.
#[derive(Debug, thiserror::Error)]
pub enum DhtError {
    #[error("cannot start the DHT thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// A snapshot of the rendezvous state, for `wgmesh status` and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DhtStatus {
    /// The rendezvous method (`mainline` or `bep44`).
    pub method: &'static str,
    /// The DHT socket's local address, once bound.
    pub local_addr: Option<SocketAddrV4>,
    /// Whether the last announce reached at least one DHT node.
    pub announced: bool,
    /// Lookup rounds completed.
    pub lookups: u64,
    /// Announces that reached at least one DHT node, and announces that reached none.
    pub announces_ok: u64,
    pub announces_failed: u64,
    /// Fast pacing is on.
    pub fast: bool,
}
