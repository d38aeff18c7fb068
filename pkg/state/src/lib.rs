//! Files wgmesh keeps between runs (DESIGN.md §4). Every write is atomic and every read failure
//! names the file; a file we cannot read is reported, never replaced.

mod atomic;
mod identity;
mod peer_cache;

pub use atomic::{
    StateError, atomic_write, atomic_write_mode, create_new_file, ensure_private_dir,
};
pub use identity::{IDENTITY_VERSION, NodeIdentity, identity_path};
pub use peer_cache::{
    CacheLoad, CachedPeer, MAX_CACHED_PEERS, PEER_CACHE_VERSION, load_peer_cache, peer_cache_path,
    save_peer_cache,
};
