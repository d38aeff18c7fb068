//! BEP 44 rendezvous (`--dht bep44`): one mutable item per epoch hour, at the DHT target
//! `SHA-1(public key ‖ salt)` with the hour's infohash as salt. Every member holds the same
//! signing key (derived from the secret), so every member can rewrite the item, and nobody else.
//!
//! - **Announce:** read the most recent item, [`items::merge`] our entry in, write it back with
//!   `seq + 1` and the read `seq` as compare-and-swap. A conflicting write from another member
//!   makes the put fail; we read again and retry a few times, then leave it to the schedule.
//! - **Lookup:** every copy of the item that any DHT node returns is opened and its entries
//!   delivered, older copies included: two members that raced each other's writes are both in
//!   one of the copies.
//! - **Lost writes:** two members that read the same item and write at once can both succeed,
//!   on different nodes. Each reads the item back after writing and merges again if the newest
//!   copy lost its entry; a member that later finds its entry in no copy during a lookup writes
//!   again too.
//! - **Our address:** unlike `announce_peer`, a stored value cannot carry "the address this came
//!   from", so we write the public IPv4 address DHT nodes report seeing us at (BEP 42's `ip`
//!   field, [`mainline::Info::public_address`]) with our control port. Like BEP 5 announces, this
//!   assumes the NAT keeps the control port; the exchange learns the real mapping later.

use crate::items::{self, Entry};
use crate::method::{AnnounceError, CandidateStream, Rendezvous, RoundFuture};
use futures_lite::StreamExt as _;
use mainline::async_dht::AsyncDht;
use mainline::errors::PutMutableError;
use mainline::{MutableItem, SigningKey};
use std::net::SocketAddrV4;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Read-modify-write attempts per announce before the schedule's retry takes over.
const WRITE_ATTEMPTS: u32 = 3;

/// The BEP 44 rendezvous. Holds key material: never printed.
pub struct SignedItems {
    infohash: crate::InfohashFn,
    signing: SigningKey,
    public_key: [u8; 32],
    seal: [u8; 32],
    /// The hour and address of our last successful write.
    written: Mutex<Option<(u64, SocketAddrV4)>>,
    /// Whether the current lookup round has seen our entry in any copy of that hour's item.
    seen_own: AtomicBool,
}

impl SignedItems {
    /// `infohash` gives each hour's salt (`MeshKeys::dht_infohash`); the keys come from
    /// `MeshKeys::dht_item_keys`.
    pub fn new(
        infohash: impl Fn(u64) -> [u8; 20] + Send + 'static,
        signing_seed: &[u8; 32],
        seal: &[u8; 32],
    ) -> Self {
        let signing = SigningKey::from_bytes(signing_seed);
        let public_key = signing.verifying_key().to_bytes();
        Self {
            infohash: Box::new(infohash),
            signing,
            public_key,
            seal: *seal,
            written: Mutex::new(None),
            seen_own: AtomicBool::new(true),
        }
    }

    fn written(&self) -> Option<(u64, SocketAddrV4)> {
        *self.written.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn open(&self, hour: u64, salt: &[u8], item: &MutableItem) -> Vec<SocketAddrV4> {
        match items::open(&self.seal, salt, item.value()) {
            Ok(entries) => {
                let addrs: Vec<SocketAddrV4> =
                    entries.into_iter().map(|entry| entry.addr).collect();
                if let Some((written_hour, own)) = self.written()
                    && written_hour == hour
                    && addrs.contains(&own)
                {
                    self.seen_own.store(true, Ordering::Relaxed);
                }
                addrs
            }
            Err(err) => {
                tracing::debug!(%err, seq = item.seq(), "ignoring a DHT item");
                Vec::new()
            }
        }
    }

    /// One read-modify-write: the addresses the item held, or `None` when another member's
    /// write got in between.
    async fn write_once(
        &self,
        dht: &AsyncDht,
        salt: &[u8],
        own: Entry,
    ) -> Result<Option<Vec<SocketAddrV4>>, AnnounceError> {
        let current = dht
            .get_mutable_most_recent(&self.public_key, Some(salt))
            .await;
        let (existing, seq, cas) = match &current {
            Some(item) => (
                items::open(&self.seal, salt, item.value()).unwrap_or_default(),
                item.seq().saturating_add(1),
                Some(item.seq()),
            ),
            None => (Vec::new(), 1, None),
        };
        let mut nonce = [0u8; 12];
        // A repeated nonce under one key would leak the XOR of two plaintexts: never write
        // without a fresh one.
        getrandom::fill(&mut nonce).map_err(AnnounceError::Random)?;
        let value = items::seal(&self.seal, salt, nonce, &items::merge(&existing, own));
        let item = MutableItem::new(self.signing.clone(), &value, seq, Some(salt));
        match dht.put_mutable(item, cas).await {
            Ok(_) => Ok(Some(existing.iter().map(|entry| entry.addr).collect())),
            Err(PutMutableError::Concurrency(err)) => {
                tracing::debug!(%err, seq, "DHT item changed under us; reading it again");
                Ok(None)
            }
            Err(err) => Err(err.into()),
        }
    }
}

impl std::fmt::Debug for SignedItems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignedItems(<keys redacted>)")
    }
}

fn unix_minute() -> u32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    u32::try_from(secs / 60).unwrap_or(u32::MAX)
}

impl Rendezvous for SignedItems {
    fn name(&self) -> &'static str {
        "bep44"
    }

    fn announce<'a>(
        &'a self,
        dht: &'a AsyncDht,
        hour: u64,
        port: u16,
    ) -> RoundFuture<'a, Result<Vec<SocketAddrV4>, AnnounceError>> {
        Box::pin(async move {
            // DHT nodes tell us our address in their answers; mainline settles on it when its
            // first query (the bootstrap) ends, which may still be running in the first round.
            let mut public = dht.info().await.public_address();
            if public.is_none() {
                dht.bootstrapped().await;
                public = dht.info().await.public_address();
            }
            let Some(public) = public else {
                return Err(AnnounceError::NoPublicAddress);
            };
            let own = Entry {
                addr: SocketAddrV4::new(*public.ip(), port),
                unix_minute: unix_minute(),
            };
            let salt = (self.infohash)(hour);
            let mut seen = Vec::new();
            for _ in 0..WRITE_ATTEMPTS {
                let Some(held) = self.write_once(dht, &salt, own).await? else {
                    continue;
                };
                seen.extend(held);
                // Two members that read the same item and wrote at once both "succeed", on
                // different nodes: read back, and merge again if the newest copy lost us.
                let back = dht
                    .get_mutable_most_recent(&self.public_key, Some(&salt))
                    .await
                    .map(|item| self.open(hour, &salt, &item))
                    .unwrap_or_default();
                let kept = back.contains(&own.addr);
                seen.extend(back);
                if kept {
                    *self.written.lock().unwrap_or_else(PoisonError::into_inner) =
                        Some((hour, own.addr));
                    return Ok(seen);
                }
                tracing::debug!("the DHT item lost our entry to a concurrent write; merging again");
            }
            Err(AnnounceError::Contended(WRITE_ATTEMPTS))
        })
    }

    fn lookup<'a>(&'a self, dht: &'a AsyncDht, hour: u64) -> CandidateStream<'a> {
        let salt = (self.infohash)(hour);
        if self
            .written()
            .is_some_and(|(written_hour, _)| written_hour == hour)
        {
            self.seen_own.store(false, Ordering::Relaxed);
        }
        let stream = dht.get_mutable(&self.public_key, Some(&salt), None);
        Box::pin(stream.map(move |item| self.open(hour, &salt, &item)))
    }

    /// Concurrent writers can replace each other's entries (BEP 44 has no merge: the last
    /// accepted write wins on each DHT node). A member whose entry is in no copy writes again,
    /// which merges it back; the lookup pacing bounds how often.
    fn wants_reannounce(&self) -> bool {
        !self.seen_own.swap(true, Ordering::Relaxed)
    }
}
