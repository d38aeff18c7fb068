//! Servers that stand in for the internet in test labs and benchmarks, run by the `wgmesh-lab`
//! tool (`src/bin/wgmesh-lab.rs`) inside a lab namespace. They open sockets and block, so they
//! live here rather than in the pure library crates under `pkg/` and `platform/`.
//!
//! - [`dht_testnet`]: a local BitTorrent mainline DHT (`wgmesh-lab dht-testnet`).
//! - [`stun_server`]: a minimal RFC 5389 Binding responder (`wgmesh-lab stun-server`).
//! - [`udp_bind`]: a local user trying to take a daemon's UDP port (`wgmesh-lab udp-bind`).
//! - [`wan_delay`]: a WAN cable with latency, for a kernel without `sch_netem`
//!   (`wgmesh-lab wan-delay`).

pub mod dht_testnet;
pub mod stun_server;
pub mod udp_bind;
pub mod wan_delay;
