//! What one scrape reports: plain values, built by the daemon from its own state.

/// The daemon's state at scrape time. Totals are the daemon's own counters since it started
/// (the same numbers `wgmesh status --json` shows), never values made up for metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MeshSnapshot {
    /// Verified members in the member table.
    pub members: u64,
    /// One entry per member.
    pub peers: Vec<PeerSample>,
    /// Dropped control-port datagrams per reason (`wgmesh_exchange::DropReason::as_str`),
    /// every reason listed, zeros included, so a rate over a new reason starts from 0.
    pub exchange_drops: Vec<(&'static str, u64)>,
    /// Control-port datagrams that cost an AEAD open.
    pub exchange_aead_opens: u64,
    pub reconcile: ReconcileTotals,
    /// `None` when the DHT is off (`--dht-bootstrap none`, or it could not start).
    pub dht: Option<DhtTotals>,
    /// Members whose traffic goes through a relaying member.
    pub relayed_peers: u64,
    /// Whether this node offers to relay (`--relay`).
    pub relay_offered: bool,
}

/// One member, labelled as `wgmesh status` shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerSample {
    /// The key prefix `wgmesh status` prints (first 8 base64 characters): enough to tell peers
    /// apart, and never more of a key than the status table shows.
    pub peer: String,
    /// The member's name, once members exchange names; becomes a `name` label.
    pub name: Option<String>,
    /// Seconds since the last WireGuard handshake; `None` before the first one (no sample).
    pub handshake_age_seconds: Option<f64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

impl PeerSample {
    /// The label set of the per-peer metrics.
    pub(crate) fn labels(&self) -> Vec<(&'static str, String)> {
        let mut labels = vec![("peer", self.peer.clone())];
        if let Some(name) = &self.name {
            labels.push(("name", name.clone()));
        }
        labels
    }
}

/// Reconcile totals since the daemon started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReconcileTotals {
    /// Writes to the WireGuard device (one batch counts once).
    pub device_writes: u64,
    /// Routes added or removed.
    pub route_writes: u64,
}

/// The DHT rendezvous' totals since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DhtTotals {
    /// Lookup rounds completed (each queries the three hourly infohashes).
    pub lookups: u64,
    /// Announces that reached at least one DHT node.
    pub announces_ok: u64,
    /// Announces that reached none.
    pub announces_failed: u64,
}
