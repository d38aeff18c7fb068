//! Discovery sources (DESIGN.md §8): each yields candidate control addresses, which the exchange
//! task probes. Membership itself is decided by the exchange protocol, never by a source.

use std::net::SocketAddr;
use std::time::Duration;
use wgmesh_mesh::Source;

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

/// The peer cache: members seen in earlier runs, probed first on start so a restart rejoins
/// before (or without) any other source. Only useful while starting, so it falls silent after.
#[derive(Debug)]
pub struct CacheDiscovery {
    pub addrs: Vec<SocketAddr>,
    polls: u32,
}

impl CacheDiscovery {
    pub fn new(addrs: Vec<SocketAddr>) -> Self {
        Self { addrs, polls: 0 }
    }
}

/// Polls of the cache: once a second for ten seconds.
const CACHE_POLLS: u32 = 10;

impl Discovery for CacheDiscovery {
    fn source(&self) -> Source {
        Source::Cache
    }

    fn candidates(&mut self) -> Vec<SocketAddr> {
        self.polls = self.polls.saturating_add(1);
        if self.polls > CACHE_POLLS {
            Vec::new()
        } else {
            self.addrs.clone()
        }
    }

    fn interval(&self, _members: usize) -> Duration {
        if self.polls < CACHE_POLLS {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(3600)
        }
    }
}

/// The mainline DHT rendezvous (DESIGN.md §8): it runs on its own thread (its builder resolves
/// DNS and its client blocks) and hands candidate control addresses to the exchange task through
/// a channel the task selects on, so an idle daemon is not woken to poll it.
#[derive(Debug)]
pub struct DhtLink {
    handle: wgmesh_dht::DhtHandle,
    control_port: u16,
}

impl DhtLink {
    pub fn start(
        keys: &wgmesh_derive::MeshKeys,
        control_port: u16,
        bootstrap: Vec<String>,
        nodes_file: std::path::PathBuf,
    ) -> Result<(Self, tokio::sync::mpsc::UnboundedReceiver<SocketAddr>), wgmesh_dht::DhtError>
    {
        let keys = keys.clone();
        let mut config =
            wgmesh_dht::DhtConfig::new(move |hour| keys.dht_infohash(hour), control_port);
        config.bootstrap = bootstrap;
        config.nodes_file = Some(nodes_file);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let handle = wgmesh_dht::DhtRendezvous::start_with(config, move |addr| {
            let _ = tx.send(addr);
        })?;
        Ok((
            Self {
                handle,
                control_port,
            },
            rx,
        ))
    }

    /// Announce again now (our public address may have changed).
    pub fn reannounce(&self) {
        self.handle.set_announce_port(self.control_port);
    }

    /// Fast lookups while the mesh is forming or a member is missing; slow once it is stable.
    pub fn set_fast(&self, fast: bool) {
        self.handle.set_fast(fast);
    }

    pub fn stop(self) {
        self.handle.stop();
    }
}
