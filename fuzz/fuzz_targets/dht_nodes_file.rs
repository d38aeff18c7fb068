//! `<state-dir>/<iface>.dht-nodes.json`, the DHT bootstrap cache wgmesh itself reads (the DHT's
//! own messages are parsed inside the mainline crate). A cache: any content is a list of at most
//! MAX_SAVED_NODES nodes or an error, never a panic, and reading never changes the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::sync::OnceLock;
use wgmesh_dht::nodes_file::{MAX_SAVED_NODES, load};

fn dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("wgmesh-fuzz-dht")
            .tempdir()
            .unwrap_or_else(|err| panic!("tempdir: {err}"));
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700))
            .unwrap_or_else(|err| panic!("chmod: {err}"));
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let path = dir().path().join("wg0.dht-nodes.json");
    fs::write(&path, data).unwrap_or_else(|err| panic!("write: {err}"));
    if let Ok(nodes) = load(&path) {
        assert!(nodes.len() <= MAX_SAVED_NODES);
    }
    assert_eq!(
        fs::read(&path).ok().as_deref(),
        Some(data),
        "a load changed the file"
    );
});
