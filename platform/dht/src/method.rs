//! What a member publishes on the DHT and how it finds the others: the [`Rendezvous`] trait and
//! its two implementations, chosen by `--dht`:
//!
//! - [`PeerAnnounce`] (`mainline`, BEP 5): `announce_peer` of the control port under the hourly
//!   infohash, `get_peers` to find the others. DHT nodes store the address the announce came
//!   from, so it needs no knowledge of our public address.
//! - [`crate::SignedItems`] (`bep44`, BEP 44): one mutable item per hour, signed with a key
//!   derived from the secret and sealed with another, listing the members' control addresses.
//!
//! The service thread ([`crate::DhtRendezvous`]) owns the DHT node and the schedule; a method
//! only turns "announce for this hour" and "look up this hour" into DHT queries.

use futures_lite::Stream;
use mainline::Id;
use mainline::async_dht::AsyncDht;
use std::future::Future;
use std::net::SocketAddrV4;
use std::pin::Pin;

/// A future borrowed from the method and the DHT for one round.
pub type RoundFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;
/// Control addresses in batches, as DHT nodes answer.
pub type CandidateStream<'a> = Pin<Box<dyn Stream<Item = Vec<SocketAddrV4>> + 'a>>;

/// A rendezvous protocol on the mainline DHT. Methods run on the DHT thread, inside one round;
/// they must not block (the round is driven by `futures_lite::future::block_on`).
pub trait Rendezvous: Send {
    /// The `--dht` value that selects it, for logs and status.
    fn name(&self) -> &'static str;
    /// Publishes our control port for the epoch hour `hour`; returns the control addresses it
    /// saw on the way (untrusted, filtered like a lookup's).
    fn announce<'a>(
        &'a self,
        dht: &'a AsyncDht,
        hour: u64,
        port: u16,
    ) -> RoundFuture<'a, Result<Vec<SocketAddrV4>, AnnounceError>>;
    /// The control addresses published for `hour`. Untrusted: the service filters them
    /// ([`crate::candidates_from_dht`]) before anything is probed.
    fn lookup<'a>(&'a self, dht: &'a AsyncDht, hour: u64) -> CandidateStream<'a>;
    /// Asked after each lookup round: our announcement is missing from what the lookup saw
    /// (another member's write replaced it), so announce again now.
    fn wants_reannounce(&self) -> bool {
        false
    }
}

/// Why an announce did not reach the DHT; the schedule retries.
#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    #[error(transparent)]
    Query(#[from] mainline::errors::PutQueryError),
    #[error(transparent)]
    Item(#[from] mainline::errors::PutMutableError),
    #[error("no DHT node has told us our public address yet")]
    NoPublicAddress,
    #[error("the hourly item changed under us {0} times in a row")]
    Contended(u32),
    #[error("no randomness for the item's nonce: {0}")]
    Random(#[source] getrandom::Error),
}

/// BEP 5: announce the control port under the hourly infohash; DHT nodes record the source
/// address of the announce with that port.
pub struct PeerAnnounce {
    infohash: crate::InfohashFn,
}

impl PeerAnnounce {
    /// `infohash` maps an epoch hour to the 20-byte infohash (`MeshKeys::dht_infohash`).
    pub fn new(infohash: impl Fn(u64) -> [u8; 20] + Send + 'static) -> Self {
        Self {
            infohash: Box::new(infohash),
        }
    }
}

impl std::fmt::Debug for PeerAnnounce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerAnnounce")
    }
}

impl Rendezvous for PeerAnnounce {
    fn name(&self) -> &'static str {
        "mainline"
    }

    fn announce<'a>(
        &'a self,
        dht: &'a AsyncDht,
        hour: u64,
        port: u16,
    ) -> RoundFuture<'a, Result<Vec<SocketAddrV4>, AnnounceError>> {
        let target = Id::from((self.infohash)(hour));
        Box::pin(async move {
            dht.announce_peer(target, Some(port)).await?;
            Ok(Vec::new())
        })
    }

    fn lookup<'a>(&'a self, dht: &'a AsyncDht, hour: u64) -> CandidateStream<'a> {
        Box::pin(dht.get_peers(Id::from((self.infohash)(hour))))
    }
}
