//! Discovery sources (DESIGN.md §8): each yields candidate control addresses, which the exchange
//! task probes. Membership itself is decided by the exchange protocol, never by a source.

use std::net::SocketAddr;
use wgmesh_mesh::Source;

/// A source of candidate control addresses (LAN multicast, static seeds, the peer cache). When
/// each is polled is the membership core's decision (`wgmesh_membership::cadence`).
pub trait Discovery: Send + Sync {
    fn source(&self) -> Source;
    /// Addresses to probe now.
    fn candidates(&mut self) -> Vec<SocketAddr>;
}

/// LAN multicast on the secret-derived group: the probe itself is the (encrypted) beacon.
#[derive(Debug)]
pub struct LanDiscovery {
    pub group: SocketAddr,
}

impl LanDiscovery {
    pub fn new(group: SocketAddr) -> Self {
        Self { group }
    }
}

impl Discovery for LanDiscovery {
    fn source(&self) -> Source {
        Source::Lan
    }

    fn candidates(&mut self) -> Vec<SocketAddr> {
        vec![self.group]
    }
}

/// Operator-given `--peer HOST:PORT` seeds. Literal addresses are used as they are; host names
/// are resolved on a helper thread at every poll (DNS may change, and a resolver can hang), and
/// the latest answers are used, so the exchange task never blocks on DNS.
#[derive(Debug)]
pub struct StaticDiscovery {
    literal: Vec<SocketAddr>,
    names: Vec<String>,
    resolved: std::sync::Arc<std::sync::Mutex<Vec<SocketAddr>>>,
}

impl StaticDiscovery {
    pub fn new(seeds: Vec<String>) -> Self {
        let (literal, names): (Vec<_>, Vec<_>) = seeds
            .into_iter()
            .partition(|seed| seed.parse::<SocketAddr>().is_ok());
        Self {
            literal: literal.iter().filter_map(|s| s.parse().ok()).collect(),
            names,
            resolved: std::sync::Arc::default(),
        }
    }

    fn resolve_in_background(&self) {
        if self.names.is_empty() {
            return;
        }
        let names = self.names.clone();
        let resolved = std::sync::Arc::clone(&self.resolved);
        let spawned = std::thread::Builder::new()
            .name("wgmesh-resolve".to_owned())
            .spawn(move || {
                use std::net::ToSocketAddrs as _;
                let addrs: Vec<SocketAddr> = names
                .iter()
                .flat_map(|name| match name.to_socket_addrs() {
                    Ok(addrs) => addrs.collect::<Vec<_>>(),
                    Err(err) => {
                        tracing::debug!(seed = %name, error = %err, "cannot resolve static peer");
                        Vec::new()
                    }
                })
                .collect();
                *resolved
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = addrs;
            });
        if let Err(err) = spawned {
            tracing::debug!(error = %err, "cannot start a resolver thread");
        }
    }
}

impl Discovery for StaticDiscovery {
    fn source(&self) -> Source {
        Source::Static
    }

    fn candidates(&mut self) -> Vec<SocketAddr> {
        self.resolve_in_background();
        let resolved = self
            .resolved
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        self.literal.iter().copied().chain(resolved).collect()
    }
}

/// The peer cache: members seen in earlier runs, probed first on start so a restart rejoins
/// before (or without) any other source. The core polls it only while starting.
#[derive(Debug)]
pub struct CacheDiscovery {
    pub addrs: Vec<SocketAddr>,
}

impl CacheDiscovery {
    pub fn new(addrs: Vec<SocketAddr>) -> Self {
        Self { addrs }
    }
}

impl Discovery for CacheDiscovery {
    fn source(&self) -> Source {
        Source::Cache
    }

    fn candidates(&mut self) -> Vec<SocketAddr> {
        self.addrs.clone()
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
        // What arrives is already filtered and bounded by `wgmesh_dht::candidates_from_dht`
        // (DHT answers are untrusted); `accept_loopback` stays off: no member is on our loopback.
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

    /// The rendezvous' counters, for metrics.
    pub fn status_reader(&self) -> wgmesh_dht::DhtStatusReader {
        self.handle.status_reader()
    }

    /// Fast lookups while the mesh is forming or a member is missing; slow once it is stable.
    pub fn set_fast(&self, fast: bool) {
        self.handle.set_fast(fast);
    }

    pub fn stop(self) {
        self.handle.stop();
    }
}
