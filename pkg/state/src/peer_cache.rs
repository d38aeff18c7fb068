//! The peer cache `<state-dir>/<iface>.peers.json`: members last seen, so a restart can reach
//! them before any discovery source answers. A cache, not a source of truth: entries are only
//! candidates to probe, and a file that cannot be read is moved aside, never trusted.

use crate::atomic::{StateError, atomic_write, io_error};
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use wgmesh_keys::PublicKey;

/// The cache format this build reads and writes.
pub const PEER_CACHE_VERSION: u64 = 1;
/// Bound on cached entries (the most recently seen are kept).
pub const MAX_CACHED_PEERS: usize = 1024;

/// `<state-dir>/<iface>.peers.json`.
pub fn peer_cache_path(state_dir: &Path, interface: &str) -> PathBuf {
    state_dir.join(format!("{interface}.peers.json"))
}

/// One cached member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CachedPeer {
    pub public_key: PublicKey,
    pub mesh_ipv4: Ipv4Addr,
    pub mesh_ipv6: Ipv6Addr,
    pub control_addr: Option<SocketAddr>,
    pub endpoint: Option<SocketAddr>,
    pub last_seen_unix: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheFile {
    version: u64,
    peers: Vec<CachedPeer>,
}

/// What loading found.
#[derive(Debug)]
pub enum CacheLoad {
    Loaded(Vec<CachedPeer>),
    Missing,
    /// Unreadable; moved to the given path so it is neither trusted nor silently lost.
    MovedAside {
        to: PathBuf,
        reason: String,
    },
}

/// Loads the cache. Never fails the daemon: a bad file is moved aside and reported.
pub fn load_peer_cache(path: &Path) -> Result<CacheLoad, StateError> {
    let text = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(CacheLoad::Missing),
        Err(err) => return Err(io_error(path)(err)),
    };
    match parse(&text) {
        Ok(peers) => Ok(CacheLoad::Loaded(peers)),
        Err(reason) => {
            let to = path.with_extension("json.corrupt");
            std::fs::rename(path, &to).map_err(io_error(path))?;
            Ok(CacheLoad::MovedAside { to, reason })
        }
    }
}

fn parse(bytes: &[u8]) -> Result<Vec<CachedPeer>, String> {
    let file: CacheFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if file.version != PEER_CACHE_VERSION {
        return Err(format!(
            "format version {} is not {PEER_CACHE_VERSION}",
            file.version
        ));
    }
    let mut peers = file.peers;
    peers.truncate(MAX_CACHED_PEERS);
    Ok(peers)
}

/// Writes the cache atomically (0600), keeping the most recently seen entries.
pub fn save_peer_cache(path: &Path, peers: &[CachedPeer]) -> Result<(), StateError> {
    let mut peers = peers.to_vec();
    peers.sort_by(|a, b| {
        b.last_seen_unix
            .cmp(&a.last_seen_unix)
            .then(a.public_key.cmp(&b.public_key))
    });
    peers.truncate(MAX_CACHED_PEERS);
    let file = CacheFile {
        version: PEER_CACHE_VERSION,
        peers,
    };
    let mut text = serde_json::to_string_pretty(&file).map_err(|err| StateError::Io {
        path: path.to_owned(),
        source: std::io::Error::other(err),
    })?;
    text.push('\n');
    atomic_write(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8, seen: u64) -> CachedPeer {
        CachedPeer {
            public_key: PublicKey::from_bytes([n; 32]),
            mesh_ipv4: Ipv4Addr::new(10, 1, 0, n),
            mesh_ipv6: "fd00::1".parse().unwrap(),
            control_addr: Some(SocketAddr::from(([192, 0, 2, n], 52000))),
            endpoint: None,
            last_seen_unix: seen,
        }
    }

    #[test]
    fn round_trip_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = peer_cache_path(dir.path(), "wg0");
        assert!(matches!(
            load_peer_cache(&path).unwrap(),
            CacheLoad::Missing
        ));
        save_peer_cache(&path, &[peer(1, 10), peer(2, 20)]).unwrap();
        match load_peer_cache(&path).unwrap() {
            CacheLoad::Loaded(peers) => assert_eq!(peers, vec![peer(2, 20), peer(1, 10)]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_corrupt_cache_is_moved_aside_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let path = peer_cache_path(dir.path(), "wg0");
        std::fs::write(&path, "{\"version\": 1, \"peers\": [{").unwrap();
        match load_peer_cache(&path).unwrap() {
            CacheLoad::MovedAside { to, .. } => {
                assert!(!path.exists());
                assert_eq!(
                    std::fs::read_to_string(to).unwrap(),
                    "{\"version\": 1, \"peers\": [{"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
