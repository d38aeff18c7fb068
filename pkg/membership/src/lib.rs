//! The membership core of wgmesh: a sans-IO state machine (DESIGN.md §8, STYLE.md "functional
//! core, imperative shell").
//!
//! [`Membership`] owns the exchange protocol ([`wgmesh_exchange::Exchange`]), the member table,
//! where each member was found, tunnel versus underlay paths, gossip, hole punching, second-hand
//! members and relay choice, and the discovery and DHT cadences. It never touches a socket, reads
//! a clock or asks the OS for randomness: the shell passes monotonic time (`now`) and wall-clock
//! time (`wall_ms`, used only for protocol timestamps) with every input, and a seed once. The
//! same seed and inputs give the same transmits and events.
//!
//! Driving it, as Firezone's `snownet::Node`:
//! - inputs: [`Membership::handle_datagram`], [`Membership::handle_timeout`],
//!   [`Membership::handle_candidates`], [`Membership::set_record`],
//!   [`Membership::handle_addresses_changed`], [`Membership::handle_readdressed`],
//!   [`Membership::goodbye_all`];
//! - outputs: [`Membership::poll_transmit`], [`Membership::poll_event`],
//!   [`Membership::poll_timeout`].
//!
//! One concept per module: [`announce`] (our record changed), [`budget`] (probes others asked for), [`cadence`] (discovery and DHT pace), [`digest`] (anti-entropy), [`direct`] (coordinated direct attempts of relayed pairs),
//! [`found`] (how a member was found), [`gossip`], [`liveness`] (the failure detector), [`path`] (tunnel versus underlay), [`punch`] (repeated probes), [`relay`] (second-hand members, relay
//! choice), [`entropy`], [`event`] (what the shell is asked to do), and [`node`] tying them
//! together.

pub mod announce;
pub mod budget;
pub mod cadence;
pub mod digest;
pub mod direct;
pub mod entropy;
pub mod event;
pub mod found;
pub mod gossip;
pub mod liveness;
pub mod node;
pub mod path;
pub mod punch;
pub mod relay;

pub use event::{Collision, Event, TimerReason, Transmit};
pub use node::{
    Config, DHT_REVIEW, ESTABLISH_AFTER, MAX_MEMBERS, MOVE_COOLDOWN, Membership, TableSizes,
};
