//! Protocol v1 derivation (DESIGN.md §3): from one shared secret every host derives the same
//! network, and from its own node seed its own WireGuard identity and mesh addresses.
//!
//! Pure functions over values; no IO besides the OS random source used by [`Secret::generate`]
//! and [`NodeSeed::generate`].

mod address;
mod mesh;
mod secret;

pub use address::{MAX_COLLISION_COUNTER, MeshAddresses, mesh_ipv4, mesh_ipv6};
pub use mesh::{DhtItemKeys, MeshKeys, NodeSeed, SeedError};
pub use secret::{Secret, SecretError, SecretStrength};
