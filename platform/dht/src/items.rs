//! The sealed member list inside a BEP 44 item (`--dht bep44`), as pure functions.
//!
//! Layout of the item's value (at most 1,000 bytes, BEP 44's limit):
//!
//! ```text
//! version (1 byte, = 1) ‖ nonce (12) ‖ ChaCha20-Poly1305(seal key, nonce, entries, aad = salt)
//! entry = IPv4 (4) ‖ control port (2, big-endian) ‖ unix minute it was written (4, big-endian)
//! ```
//!
//! With [`MAX_ENTRIES`] entries the value is 669 bytes. The salt (the hour's infohash) is the
//! associated data, so an item copied to another hour does not open. Only holders of the secret
//! can read it or (with the signing key) write it; DHT nodes see ciphertext and its length.

use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use std::net::{Ipv4Addr, SocketAddrV4};

/// Entries kept per hourly item, newest first. A member needs to find only one other member
/// (gossip brings the rest), so a mesh larger than this still forms.
pub const MAX_ENTRIES: usize = 64;
/// Entries older than this are dropped when the item is rewritten: a member re-announces every
/// 15 minutes, and an item only lives its hour anyway.
pub const ENTRY_LIFETIME_MINUTES: u32 = 90;
const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const ENTRY_LEN: usize = 10;
/// BEP 44's limit on a value.
pub const MAX_VALUE_LEN: usize = 1000;

/// One member's control address and when it was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub addr: SocketAddrV4,
    pub unix_minute: u32,
}

/// Why a value did not open. Any member can write the item, so a value that does not open is
/// replaced at the next announce, never trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ItemError {
    #[error("item value of {0} bytes is shorter than its header and tag")]
    Short(usize),
    #[error("item value of {0} bytes is over BEP 44's 1,000-byte limit")]
    Long(usize),
    #[error("item version {0} is not supported")]
    Version(u8),
    #[error("item does not open with this mesh's key (another mesh, or tampered)")]
    Seal,
    #[error("item holds {0} bytes of entries, not a whole number of 10-byte entries")]
    Entries(usize),
}

/// Seals `entries` (at most [`MAX_ENTRIES`] are written) under `key`, bound to `salt`.
pub fn seal(key: &[u8; 32], salt: &[u8], nonce: [u8; NONCE_LEN], entries: &[Entry]) -> Vec<u8> {
    let mut plain = Vec::with_capacity(entries.len().min(MAX_ENTRIES) * ENTRY_LEN);
    for entry in entries.iter().take(MAX_ENTRIES) {
        plain.extend_from_slice(&entry.addr.ip().octets());
        plain.extend_from_slice(&entry.addr.port().to_be_bytes());
        plain.extend_from_slice(&entry.unix_minute.to_be_bytes());
    }
    let cipher = ChaCha20Poly1305::new(Key::from_slice(key));
    let sealed = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &plain,
                aad: salt,
            },
        )
        .unwrap_or_default();
    let mut value = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
    value.push(VERSION);
    value.extend_from_slice(&nonce);
    value.extend_from_slice(&sealed);
    value
}

/// Opens a value written by [`seal`].
pub fn open(key: &[u8; 32], salt: &[u8], value: &[u8]) -> Result<Vec<Entry>, ItemError> {
    if value.len() < 1 + NONCE_LEN + TAG_LEN {
        return Err(ItemError::Short(value.len()));
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(ItemError::Long(value.len()));
    }
    let (version, rest) = value.split_at(1);
    if version[0] != VERSION {
        return Err(ItemError::Version(version[0]));
    }
    let (nonce, sealed) = rest.split_at(NONCE_LEN);
    let cipher = ChaCha20Poly1305::new(Key::from_slice(key));
    let plain = cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: sealed,
                aad: salt,
            },
        )
        .map_err(|_| ItemError::Seal)?;
    if plain.len() % ENTRY_LEN != 0 {
        return Err(ItemError::Entries(plain.len()));
    }
    Ok(plain
        .chunks_exact(ENTRY_LEN)
        .map(|chunk| Entry {
            addr: SocketAddrV4::new(
                Ipv4Addr::new(chunk[0], chunk[1], chunk[2], chunk[3]),
                u16::from_be_bytes([chunk[4], chunk[5]]),
            ),
            unix_minute: u32::from_be_bytes([chunk[6], chunk[7], chunk[8], chunk[9]]),
        })
        .collect())
}

/// The entries to write back: ours (replacing any older entry for the same address), then the
/// others newest first, without stale or future-dated ones, at most [`MAX_ENTRIES`].
pub fn merge(existing: &[Entry], own: Entry) -> Vec<Entry> {
    let fresh = |entry: &&Entry| {
        entry.addr != own.addr
            && entry.unix_minute <= own.unix_minute.saturating_add(ENTRY_LIFETIME_MINUTES)
            && entry.unix_minute.saturating_add(ENTRY_LIFETIME_MINUTES) >= own.unix_minute
    };
    let mut others: Vec<Entry> = existing.iter().filter(fresh).copied().collect();
    others.sort_by(|a, b| b.unix_minute.cmp(&a.unix_minute).then(a.addr.cmp(&b.addr)));
    others.dedup_by_key(|entry| entry.addr);
    let mut merged = Vec::with_capacity(MAX_ENTRIES);
    merged.push(own);
    merged.extend(others.into_iter().take(MAX_ENTRIES - 1));
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: [u8; 32] = [7; 32];
    const SALT: &[u8] = b"hour-salt-20-bytes!!";

    fn entry(last: u8, port: u16, minute: u32) -> Entry {
        Entry {
            addr: SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, last), port),
            unix_minute: minute,
        }
    }

    #[test]
    fn round_trip_and_size_limit() {
        let entries: Vec<Entry> = (0..100).map(|i| entry(i, 51_821, 1_000)).collect();
        let value = seal(&KEY, SALT, [1; 12], &entries);
        assert_eq!(value.len(), 1 + 12 + MAX_ENTRIES * 10 + 16);
        assert!(value.len() <= MAX_VALUE_LEN);
        assert_eq!(open(&KEY, SALT, &value).unwrap(), entries[..MAX_ENTRIES]);
        let empty = seal(&KEY, SALT, [1; 12], &[]);
        assert_eq!(open(&KEY, SALT, &empty).unwrap(), []);
    }

    #[test]
    fn wrong_key_salt_or_tampering_do_not_open() {
        let value = seal(&KEY, SALT, [2; 12], &[entry(1, 5, 9)]);
        assert_eq!(open(&[8; 32], SALT, &value), Err(ItemError::Seal));
        assert_eq!(open(&KEY, b"another hour", &value), Err(ItemError::Seal));
        let mut tampered = value.clone();
        tampered[14] ^= 1;
        assert_eq!(open(&KEY, SALT, &tampered), Err(ItemError::Seal));
        let mut version = value.clone();
        version[0] = 2;
        assert_eq!(open(&KEY, SALT, &version), Err(ItemError::Version(2)));
        assert_eq!(open(&KEY, SALT, &value[..20]), Err(ItemError::Short(20)));
        assert_eq!(open(&KEY, SALT, &[0; 1001]), Err(ItemError::Long(1001)));
    }

    #[test]
    fn merge_puts_ours_first_and_drops_stale_and_repeats() {
        let own = entry(1, 40_000, 10_000);
        let existing = [
            entry(1, 40_000, 9_000),  // our old entry
            entry(2, 40_000, 9_990),  // fresh
            entry(3, 40_000, 8_000),  // stale
            entry(4, 40_000, 20_000), // dated in the future
            entry(2, 40_000, 9_950),  // an older copy of 2
            entry(5, 40_000, 9_995),
        ];
        assert_eq!(
            merge(&existing, own),
            [own, entry(5, 40_000, 9_995), entry(2, 40_000, 9_990)]
        );
        let crowd: Vec<Entry> = (0..200u32)
            .map(|i| {
                entry(
                    u8::try_from(i % 250).unwrap(),
                    1_000 + u16::try_from(i).unwrap(),
                    10_000 - i % 60,
                )
            })
            .collect();
        let merged = merge(&crowd, own);
        assert_eq!(merged.len(), MAX_ENTRIES);
        assert_eq!(merged[0], own);
        assert!(
            merged[1..]
                .windows(2)
                .all(|w| w[0].unix_minute >= w[1].unix_minute)
        );
    }

    proptest! {
        #[test]
        fn open_never_panics(value in proptest::collection::vec(any::<u8>(), 0..1100)) {
            let _ = open(&KEY, SALT, &value);
        }
    }
}
