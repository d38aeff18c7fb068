//! STUN (RFC 5389 Binding) and NAT classification for wgmesh, without IO.
//!
//! - Codec functions build and parse Binding messages: [`binding_request`],
//!   [`is_stun`] (the demultiplexer for the shared control socket), [`parse_binding_response`],
//!   [`binding_success_response`], [`parse_binding_request`].
//! - [`StunProbe`] is the client state machine: it hands out requests, accepts matching
//!   responses, and classifies the result as a [`NatType`] with a [`StunProbe::public_endpoint`].
//!
//! See `pkg/nat/README.md` for how the daemon wires this onto its control socket.

pub mod classify;
mod codec;
mod fingerprint;
mod probe;

pub use classify::{NatType, Observation};
pub use codec::{
    BindingResponse, HEADER_LEN, MAGIC_COOKIE, StunError, binding_request,
    binding_success_response, is_stun, parse_binding_request, parse_binding_response,
};
pub use probe::{
    MAX_ATTEMPTS_PER_ROUND, OBSERVATION_TTL_MS, REPROBE_INTERVAL_MS, RETRY_INTERVAL_MS, StunProbe,
    TRANSACTION_TIMEOUT_MS,
};
