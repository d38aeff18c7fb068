//! The identity file `<state-dir>/<iface>.json`. Contract (NodeIdentity::load_or_create): a file
//! that cannot be used is an error and is left untouched. A file with another network_id is a
//! secret rotation and is rewritten on success, so only the failure path is checked for that.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::fs;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::OnceLock;
use wgmesh_derive::{MeshKeys, Secret};
use wgmesh_state::NodeIdentity;

fn keys() -> &'static MeshKeys {
    static KEYS: OnceLock<MeshKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let secret = Secret::parse("wgmesh://v1/fuzzing-mesh-secret-not-a-real-one")
            .unwrap_or_else(|err| panic!("fixture secret: {err}"));
        MeshKeys::derive(&secret)
    })
}

/// A 0700 directory for this process, removed when the process exits normally.
fn dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("wgmesh-fuzz-identity")
            .tempdir()
            .unwrap_or_else(|err| panic!("tempdir: {err}"));
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700))
            .unwrap_or_else(|err| panic!("chmod: {err}"));
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let keys = keys();
    let path: PathBuf = dir().path().join("wg0.json");
    let _ = fs::remove_file(&path);
    {
        use std::io::Write;
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap_or_else(|err| panic!("create: {err}"));
        file.write_all(data)
            .unwrap_or_else(|err| panic!("write: {err}"));
    }
    match NodeIdentity::load(&path, keys) {
        Ok(identity) => {
            // Whatever loads must describe a key derived from its own seed.
            assert_eq!(identity.public_key, keys.node_public_key(&identity.seed));
        }
        Err(_) => {
            let after = fs::read(&path)
                .unwrap_or_else(|err| panic!("file gone after a failed load: {err}"));
            assert_eq!(after, data, "a failed load changed the identity file");
            let mode = fs::metadata(&path).map(|m| m.permissions().mode() & 0o777);
            assert_eq!(
                mode.ok(),
                Some(0o600),
                "a failed load changed the file mode"
            );
        }
    }
});
