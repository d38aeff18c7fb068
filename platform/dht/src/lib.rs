//! Rendezvous on the BitTorrent mainline DHT (DESIGN.md §8): every member announces its control
//! port under an infohash only holders of the secret can compute, one per hour, and looks up the
//! infohashes of hours `e-1, e, e+1` to find the others. What it yields are candidate control
//! addresses; membership is decided by the exchange protocol.
//!
//! - [`Rendezvous`]: what is published and looked up — [`PeerAnnounce`] (BEP 5, `--dht
//!   mainline`) or [`SignedItems`] (BEP 44, `--dht bep44`, its value sealed by [`items`]).
//! - [`schedule`]: when to announce and look up (pure, clock injected).
//! - [`candidates_from_dht`]: which of the peers a lookup returned are probed (pure, fuzzed).
//! - [`nodes_file`]: DHT nodes saved between runs.
//! - [`DhtRendezvous`]: the blocking service thread the daemon starts.

mod bootstrap;
mod candidates;
mod config;
pub mod items;
mod method;
pub mod nodes_file;
mod rendezvous;
pub mod schedule;
mod signed_items;

pub use candidates::{MAX_CANDIDATES_PER_ROUND, candidates_from_dht, is_probe_target};
pub use config::{DhtConfig, DhtError, DhtStatus, InfohashFn};
pub use method::{AnnounceError, CandidateStream, PeerAnnounce, Rendezvous, RoundFuture};
pub use rendezvous::{DhtHandle, DhtRendezvous, DhtStatusReader};
pub use schedule::Pacing;
pub use signed_items::SignedItems;
