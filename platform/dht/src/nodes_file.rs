//! `<state-dir>/<iface>.dht-nodes.json`: DHT nodes seen in the last run, used as extra bootstrap
//! nodes at the next start so that a restart does not depend on the public routers.
//!
//! It is a cache: a missing or unreadable file only costs a slower bootstrap, so reading never
//! fails; the next save replaces a corrupt file.

use serde::{Deserialize, Serialize};
use std::net::SocketAddrV4;
use std::path::Path;

/// At most this many nodes are kept. mainline sends every query to *all* bootstrap nodes while
/// its routing table holds fewer close nodes than the bootstrap list is long, so a long list
/// costs traffic on every lookup; 16 survivors of the last run are plenty to rejoin.
pub const MAX_SAVED_NODES: usize = 16;

const FORMAT_VERSION: u64 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct NodesFile {
    version: u64,
    nodes: Vec<SocketAddrV4>,
}

/// Why the nodes file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum NodesFileError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a DHT nodes file: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("writing {0}")]
    Write(#[from] wgmesh_state::StateError),
}

/// Reads the saved nodes. A missing file is an empty list.
pub fn load(path: &Path) -> Result<Vec<SocketAddrV4>, NodesFileError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(NodesFileError::Io {
                path: path.display().to_string(),
                source,
            });
        }
    };
    let file: NodesFile = serde_json::from_str(&text).map_err(|err| NodesFileError::Corrupt {
        path: path.display().to_string(),
        reason: err.to_string(),
    })?;
    if file.version != FORMAT_VERSION {
        return Err(NodesFileError::Corrupt {
            path: path.display().to_string(),
            reason: format!("unsupported version {}", file.version),
        });
    }
    let mut nodes = file.nodes;
    nodes.truncate(MAX_SAVED_NODES);
    Ok(nodes)
}

/// Writes up to [`MAX_SAVED_NODES`] nodes atomically (temp + fsync + rename, mode 0600).
pub fn save(path: &Path, nodes: &[SocketAddrV4]) -> Result<(), NodesFileError> {
    let file = NodesFile {
        version: FORMAT_VERSION,
        nodes: nodes.iter().take(MAX_SAVED_NODES).copied().collect(),
    };
    let mut text = serde_json::to_string_pretty(&file).map_err(|err| NodesFileError::Corrupt {
        path: path.display().to_string(),
        reason: err.to_string(),
    })?;
    text.push('\n');
    wgmesh_state::atomic_write(path, text.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn round_trip_is_private_and_capped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wg0.dht-nodes.json");
        assert!(load(&path).unwrap().is_empty(), "missing file is empty");
        let nodes: Vec<SocketAddrV4> = (0..40)
            .map(|i| SocketAddrV4::new([192, 0, 2, i].into(), 6881))
            .collect();
        save(&path, &nodes).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load(&path).unwrap(), nodes[..MAX_SAVED_NODES]);
    }

    #[test]
    fn corrupt_file_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wg0.dht-nodes.json");
        std::fs::write(&path, "{not json").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("wg0.dht-nodes.json"), "{err}");
        std::fs::write(&path, r#"{"version":9,"nodes":[]}"#).unwrap();
        assert!(load(&path).is_err());
    }
}
