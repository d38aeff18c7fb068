//! The peer cache `<state-dir>/<iface>.peers.json`. Contract: a file that does not parse is moved
//! aside intact (to `*.json.corrupt`), never trusted and never silently lost.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::sync::OnceLock;
use wgmesh_state::{CacheLoad, MAX_CACHED_PEERS, load_peer_cache};

fn dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("wgmesh-fuzz-peers")
            .tempdir()
            .unwrap_or_else(|err| panic!("tempdir: {err}"));
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700))
            .unwrap_or_else(|err| panic!("chmod: {err}"));
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let path = dir().path().join("wg0.peers.json");
    let _ = fs::remove_file(dir().path().join("wg0.peers.json.corrupt"));
    fs::write(&path, data).unwrap_or_else(|err| panic!("write: {err}"));
    match load_peer_cache(&path) {
        Ok(CacheLoad::Loaded(peers)) => {
            assert!(peers.len() <= MAX_CACHED_PEERS);
            assert_eq!(
                fs::read(&path).ok().as_deref(),
                Some(data),
                "a load changed the cache"
            );
        }
        Ok(CacheLoad::MovedAside { to, .. }) => {
            assert!(!path.exists(), "a bad cache was not moved");
            let moved = fs::read(&to).unwrap_or_else(|err| panic!("moved file unreadable: {err}"));
            assert_eq!(
                moved, data,
                "the moved-aside cache differs from the original"
            );
        }
        Ok(CacheLoad::Missing) => panic!("the cache file exists but was reported missing"),
        Err(err) => panic!("load failed on a readable file: {err}"),
    }
});
