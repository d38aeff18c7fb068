//! The node identity file `<state-dir>/<iface>.json`.
//!
//! It keeps the random node seed (the secret-independent half of the node key), the collision
//! counter, and for checking: the public key and the network id it was derived under. The seed is
//! key material, so the file is 0600 in a 0700 directory.

use crate::atomic::{StateError, atomic_write, check_mode, ensure_private_dir, io_error};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use wgmesh_derive::{MAX_COLLISION_COUNTER, MeshKeys, NodeSeed};
use wgmesh_keys::PublicKey;

/// The identity file format this build reads and writes.
pub const IDENTITY_VERSION: u64 = 1;

/// `<state-dir>/<iface>.json`.
pub fn identity_path(state_dir: &Path, interface: &str) -> PathBuf {
    state_dir.join(format!("{interface}.json"))
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityFile {
    version: u64,
    node_seed: String,
    public_key: String,
    collision_counter: u8,
    network_id: String,
}

/// A node's persistent identity.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    pub seed: NodeSeed,
    pub public_key: PublicKey,
    pub collision_counter: u8,
    path: PathBuf,
}

impl NodeIdentity {
    /// Loads the identity at `path`, or creates a new one if no file exists. Returns whether it
    /// was created. An existing file that cannot be used is an error and is left untouched.
    pub fn load_or_create(path: &Path, keys: &MeshKeys) -> Result<(Self, bool), StateError> {
        match Self::load(path, keys) {
            Ok(identity) => Ok((identity, false)),
            Err(StateError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Self::create(path, keys).map(|identity| (identity, true))
            }
            Err(err) => Err(err),
        }
    }

    /// Loads and checks an existing identity file.
    pub fn load(path: &Path, keys: &MeshKeys) -> Result<Self, StateError> {
        let meta = fs::metadata(path).map_err(io_error(path))?;
        check_mode(path, meta.permissions().mode(), 0o600)?;
        let text = fs::read_to_string(path).map_err(|err| match err.kind() {
            io::ErrorKind::InvalidData => corrupt(path, "not UTF-8 text"),
            _ => io_error(path)(err),
        })?;
        Self::parse(path, &text, keys)
    }

    fn parse(path: &Path, text: &str, keys: &MeshKeys) -> Result<Self, StateError> {
        // Read the version first so a future format is reported as such, not as corruption.
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|err| corrupt(path, &err.to_string()))?;
        match value.get("version").and_then(serde_json::Value::as_u64) {
            Some(IDENTITY_VERSION) => {}
            Some(found) => {
                return Err(StateError::UnsupportedVersion {
                    path: path.to_owned(),
                    found,
                    supported: IDENTITY_VERSION,
                });
            }
            None => return Err(corrupt(path, "missing numeric \"version\"")),
        }
        let file: IdentityFile =
            serde_json::from_value(value).map_err(|err| corrupt(path, &err.to_string()))?;
        let seed = NodeSeed::from_hex(&file.node_seed)
            .map_err(|err| corrupt(path, &format!("node_seed: {err}")))?;
        let stored = PublicKey::from_base64(&file.public_key)
            .map_err(|err| corrupt(path, &format!("public_key: {err}")))?;
        if file.collision_counter > MAX_COLLISION_COUNTER {
            return Err(corrupt(
                path,
                &format!(
                    "collision_counter {} exceeds {MAX_COLLISION_COUNTER}",
                    file.collision_counter
                ),
            ));
        }
        let derived = keys.node_public_key(&seed);
        let network_id = hex_string(&keys.network_id());
        if file.network_id != network_id {
            // The secret was rotated: the seed stays, the keypair follows the new secret
            // (DESIGN.md §3), and the counter restarts because the subnet changed too.
            let identity = Self {
                seed,
                public_key: derived,
                collision_counter: 0,
                path: path.to_owned(),
            };
            identity.save(keys)?;
            return Ok(identity);
        }
        if stored != derived {
            return Err(StateError::KeyMismatch {
                path: path.to_owned(),
                stored: stored.to_base64(),
                derived: derived.to_base64(),
            });
        }
        Ok(Self {
            seed,
            public_key: derived,
            collision_counter: file.collision_counter,
            path: path.to_owned(),
        })
    }

    fn create(path: &Path, keys: &MeshKeys) -> Result<Self, StateError> {
        if let Some(dir) = path.parent() {
            ensure_private_dir(dir)?;
        }
        let seed = NodeSeed::generate().map_err(|err| StateError::Io {
            path: path.to_owned(),
            source: io::Error::other(format!("no OS randomness for a node seed: {err}")),
        })?;
        let identity = Self {
            public_key: keys.node_public_key(&seed),
            seed,
            collision_counter: 0,
            path: path.to_owned(),
        };
        identity.save(keys)?;
        Ok(identity)
    }

    /// Persists a new collision counter (after an address collision was lost).
    pub fn set_collision_counter(
        &mut self,
        counter: u8,
        keys: &MeshKeys,
    ) -> Result<(), StateError> {
        let previous = self.collision_counter;
        self.collision_counter = counter;
        self.save(keys)
            .inspect_err(|_| self.collision_counter = previous)
    }

    fn save(&self, keys: &MeshKeys) -> Result<(), StateError> {
        let file = IdentityFile {
            version: IDENTITY_VERSION,
            node_seed: self.seed.to_hex(),
            public_key: self.public_key.to_base64(),
            collision_counter: self.collision_counter,
            network_id: hex_string(&keys.network_id()),
        };
        let mut text = serde_json::to_string_pretty(&file)
            .map_err(|err| corrupt(&self.path, &err.to_string()))?;
        text.push('\n');
        atomic_write(&self.path, text.as_bytes())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn corrupt(path: &Path, reason: &str) -> StateError {
    StateError::Corrupt {
        path: path.to_owned(),
        reason: reason.to_owned(),
    }
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;
    use wgmesh_derive::Secret;

    fn keys() -> &'static MeshKeys {
        static KEYS: OnceLock<MeshKeys> = OnceLock::new();
        KEYS.get_or_init(|| MeshKeys::derive(&Secret::parse("identity-test-secret-0123").unwrap()))
    }

    fn fresh() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/wg0.json");
        (dir, path)
    }

    #[test]
    fn created_once_then_loaded_unchanged() {
        let (_dir, path) = fresh();
        let (first, created) = NodeIdentity::load_or_create(&path, keys()).unwrap();
        assert!(created);
        let bytes = fs::read(&path).unwrap();
        let (second, created) = NodeIdentity::load_or_create(&path, keys()).unwrap();
        assert!(!created);
        assert_eq!(first.public_key, second.public_key);
        assert_eq!(first.seed, second.seed);
        assert_eq!(
            fs::read(&path).unwrap(),
            bytes,
            "loading must not rewrite the file"
        );
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
    }

    #[test]
    fn bad_files_are_named_and_never_replaced() {
        let (_dir, path) = fresh();
        NodeIdentity::load_or_create(&path, keys()).unwrap();
        let good = fs::read_to_string(&path).unwrap();
        let cases = [
            (
                good[..good.len() / 2].to_owned(),
                "not a valid identity file",
            ),
            ("{}".to_owned(), "missing numeric \"version\""),
            (
                good.replace("\"version\": 1", "\"version\": 7"),
                "format version 7",
            ),
            (
                good.replace("\"collision_counter\": 0", "\"collision_counter\": 99"),
                "exceeds 15",
            ),
            ("\u{0}\u{1}garbage".to_owned(), "not a valid identity file"),
            (
                good.replace("\"node_seed\": \"", "\"node_seed\": \"zz"),
                "node_seed",
            ),
        ];
        for (content, expected) in cases {
            fs::write(&path, &content).unwrap();
            let err = NodeIdentity::load_or_create(&path, keys())
                .unwrap_err()
                .to_string();
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert!(err.contains(expected), "expected {expected:?} in {err}");
            assert_eq!(
                fs::read_to_string(&path).unwrap(),
                content,
                "file was modified"
            );
        }
    }

    #[test]
    fn edited_public_key_is_refused() {
        let (_dir, path) = fresh();
        let (identity, _) = NodeIdentity::load_or_create(&path, keys()).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let edited = text.replace(
            &identity.public_key.to_base64(),
            &PublicKey::from_bytes([1; 32]).to_base64(),
        );
        fs::write(&path, &edited).unwrap();
        let err = NodeIdentity::load(&path, keys()).unwrap_err().to_string();
        assert!(err.contains("does not match"), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), edited);
    }

    #[test]
    fn loose_permissions_are_refused() {
        let (_dir, path) = fresh();
        let (identity, _) = NodeIdentity::load_or_create(&path, keys()).unwrap();
        let before = fs::read(&path).unwrap();
        // Like ssh with a private key: any group or other bit is refused, not warned about,
        // because the seed is the node's private key (docs/decisions.md).
        for mode in [0o644, 0o640, 0o604, 0o660, 0o602, 0o620] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let err = NodeIdentity::load_or_create(&path, keys())
                .unwrap_err()
                .to_string();
            let shown = path.display().to_string();
            assert!(
                err.contains(&format!("{mode:04o}"))
                    && err.contains("too open")
                    && err.contains(&format!("chmod 600 {shown}")),
                "{err}"
            );
            assert!(
                !err.contains(&identity.seed.to_hex()),
                "the error shows the seed"
            );
            assert_eq!(
                fs::read(&path).unwrap(),
                before,
                "a refused file was modified"
            );
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        NodeIdentity::load(&path, keys()).unwrap();
    }

    #[test]
    fn rotated_secret_keeps_seed_and_derives_new_key() {
        let (_dir, path) = fresh();
        let (mut old, _) = NodeIdentity::load_or_create(&path, keys()).unwrap();
        old.set_collision_counter(3, keys()).unwrap();
        let other = MeshKeys::derive(&Secret::parse("another-secret-0123456789").unwrap());
        let rotated = NodeIdentity::load(&path, &other).unwrap();
        assert_eq!(rotated.seed, old.seed);
        assert_eq!(rotated.public_key, other.node_public_key(&old.seed));
        assert_eq!(rotated.collision_counter, 0);
        assert_eq!(
            NodeIdentity::load(&path, &other).unwrap().public_key,
            rotated.public_key
        );
    }
}
