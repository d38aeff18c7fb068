//! Discovery sources (DESIGN.md §8): each yields candidate control addresses, which the exchange
//! task probes. Membership itself is decided by the exchange protocol, never by a source.

use std::net::SocketAddr;
use tokio::sync::mpsc::UnboundedReceiver;
use wgmesh_mesh::Source;

/// A source of candidate control addresses: LAN multicast, static seeds, the peer cache and the
/// DHT (`--dht mainline|bep44`). Most are polled, when the membership core says
/// (`wgmesh_membership::cadence`); the DHT finds candidates on its own thread and pushes them.
pub trait Discovery: Send + Sync {
    fn source(&self) -> Source;
    /// Addresses to probe now (a polled source).
    fn candidates(&mut self) -> Vec<SocketAddr> {
        Vec::new()
    }
    /// A source that finds candidates on its own hands over, once, the channel they arrive on;
    /// the exchange task then selects on it (an idle daemon is not woken to poll) and never
    /// polls the source.
    fn take_pushed(&mut self) -> Option<UnboundedReceiver<SocketAddr>> {
        None
    }
    /// Look harder (the mesh is forming, or a member is missing) or ease off (complete, stable).
    fn set_fast(&self, fast: bool) {
        let _ = fast;
    }
    /// Our addresses changed: publish them again.
    fn addresses_changed(&self) {}
    /// Stops the source; may block (joins a thread), so it is called off the runtime.
    fn stop(self: Box<Self>) {}
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

/// Which rendezvous runs on the DHT (`--dht`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DhtMethod {
    /// BEP 5: announce the control port under the hourly infohash, `get_peers` to find members.
    Mainline,
    /// BEP 44: a signed, sealed hourly item listing the members' control addresses.
    Bep44,
}

/// The DHT rendezvous (DESIGN.md §8): it runs on its own thread (its builder resolves DNS and
/// its client blocks) and pushes candidate control addresses through a channel.
#[derive(Debug)]
pub struct DhtDiscovery {
    handle: Option<wgmesh_dht::DhtHandle>,
    candidates: Option<UnboundedReceiver<SocketAddr>>,
    control_port: u16,
}

impl DhtDiscovery {
    /// Starts the rendezvous of `method`.
    pub fn start(
        method: DhtMethod,
        keys: &wgmesh_derive::MeshKeys,
        control_port: u16,
        bootstrap: Vec<String>,
        nodes_file: std::path::PathBuf,
    ) -> Result<Self, wgmesh_dht::DhtError> {
        let infohash = {
            let keys = keys.clone();
            move |hour| keys.dht_infohash(hour)
        };
        let rendezvous: Box<dyn wgmesh_dht::Rendezvous> = match method {
            DhtMethod::Bep44 => {
                let item_keys = keys.dht_item_keys();
                Box::new(wgmesh_dht::SignedItems::new(
                    infohash,
                    &item_keys.signing_seed,
                    &item_keys.seal,
                ))
            }
            DhtMethod::Mainline => Box::new(wgmesh_dht::PeerAnnounce::new(infohash)),
        };
        let mut config = wgmesh_dht::DhtConfig::with_rendezvous(rendezvous, control_port);
        config.bootstrap = bootstrap;
        config.nodes_file = Some(nodes_file);
        // What arrives is already filtered and bounded by `wgmesh_dht::candidates_from_dht`
        // (DHT answers are untrusted); `accept_loopback` stays off: no member is on our loopback.
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let handle = wgmesh_dht::DhtRendezvous::start_with(config, move |addr| {
            let _ = tx.send(addr);
        })?;
        Ok(Self {
            handle: Some(handle),
            candidates: Some(rx),
            control_port,
        })
    }

    /// The rendezvous' counters, for metrics.
    pub fn status_reader(&self) -> Option<wgmesh_dht::DhtStatusReader> {
        self.handle
            .as_ref()
            .map(wgmesh_dht::DhtHandle::status_reader)
    }
}

impl Discovery for DhtDiscovery {
    fn source(&self) -> Source {
        Source::Dht
    }

    fn take_pushed(&mut self) -> Option<UnboundedReceiver<SocketAddr>> {
        self.candidates.take()
    }

    fn set_fast(&self, fast: bool) {
        if let Some(handle) = &self.handle {
            handle.set_fast(fast);
        }
    }

    /// The DHT stores the address an announce comes from (BEP 5) or the one DHT nodes see us at
    /// (BEP 44): announce again from the new one.
    fn addresses_changed(&self) {
        if let Some(handle) = &self.handle {
            handle.set_announce_port(self.control_port);
        }
    }

    /// Joins the DHT thread, which saves the known nodes for the next start.
    fn stop(mut self: Box<Self>) {
        if let Some(handle) = self.handle.take() {
            handle.stop();
        }
    }
}
