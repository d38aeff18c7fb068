//! Prometheus metrics of a wgmesh daemon (`wgmesh up --metrics-listen ADDR`).
//!
//! - [`MeshSnapshot`]: what the daemon reports at scrape time (members, per-peer traffic and
//!   handshake age, exchange drops, reconcile writes, DHT and relay use). The daemon builds it
//!   from the data `wgmesh status` shows; nothing here reads a device or takes a daemon lock.
//! - [`MeshMetrics`]: the registry (`prometheus-client`): a collector that encodes a fresh
//!   snapshot on every scrape, the reconcile-duration histogram and the build info, in either
//!   exposition format ([`Format`]).
//! - [`http`]: the small HTTP/1.1 exchange that serves `GET /metrics`. Parsing and responses are
//!   pure; the daemon's task only moves bytes, with the size and time bounds given here.

pub mod http;
mod registry;
mod snapshot;

pub use registry::{Format, MeshMetrics, RECONCILE_BUCKETS, SnapshotSource};
pub use snapshot::{DhtTotals, MeshSnapshot, PeerSample, ReconcileTotals};
