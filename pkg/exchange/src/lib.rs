//! The membership exchange protocol (DESIGN.md §8, docs/exchange-protocol.md) as a pure, sans-IO
//! state machine.
//!
//! A datagram is `magic | type | nonce | XChaCha20-Poly1305(message)` under `K(exchange key)`:
//! only holders of the secret can read or forge one. Inside, a `Probe` asks "who is there", a
//! `Hello` carries a member's [`Record`] with a MAC keyed by the static-static X25519 secret and
//! bound to the recipient's fresh challenge (proof of possession of the WireGuard key), and a
//! `Goodbye` announces departure. Messages may carry extension fields (a Hello carries the
//! sender's version and name, [`MemberInfo`]) that older decoders never see. [`Exchange`] takes datagrams, `now` and random bytes, and
//! returns replies and [`Event`]s; the daemon owns the socket and the clock.

mod challenge;
mod codec;
mod exchange;
mod extension;
mod info;
mod limiter;
mod order;
mod proof;
mod record;
mod relay_ext;
mod replay;
mod seal;
mod verified;

pub use codec::{
    CHALLENGE_LEN, DecodeError, EncodeError, GOODBYE_LEN, Goodbye, Gossip, GossipEntry, Hello,
    MAC_LEN, MAX_GOSSIP_ENDPOINTS, MAX_GOSSIP_ENTRIES, MAX_GOSSIP_LEN, MAX_HELLO_LEN,
    MAX_RECORD_LEN, Message, MsgType, PROBE_LEN, Probe, decode_message, decode_record_exact,
    encode_message, encode_record,
};
pub use exchange::{
    DropCounters, DropReason, ENTROPY_LEN, Entropy, Event, Exchange, ExchangeConfig, ExchangeError,
    Handled, Millis, RecordError,
};
pub use extension::{
    EXT_CRITICAL, EXT_DIGEST, EXT_NAME, EXT_SUSPECT, EXT_VERSION, EXTENSION_HEADER_LEN, Extension,
    MAX_EXTENSIONS, MAX_OWN_EXTENSIONS_LEN,
};
pub use info::{MAX_VERSION_LEN, MemberInfo, PeerInfo, sanitize_version};
pub use record::{
    Endpoint, EndpointKind, FLAG_EXTENSIONS, FLAG_RELAY, MAX_ENDPOINTS, MAX_ROUTES, Record,
};
pub use relay_ext::{
    EXT_PUNCH, EXT_RELAY_ASK, EXT_RELAY_GRANT, EXT_RELAY_REFUSED, GrantRole, Punch, RefusalReason,
    RelayAsk, RelayGrant, RelayRefused,
};
pub use seal::{
    HEADER_LEN, MAGIC, MAX_DATAGRAM_LEN, NONCE_LEN, OVERHEAD, OpenError, SealError, TAG_LEN, open,
    seal,
};
pub use wgmesh_names::{MAX_NAME_LEN, MemberName};

/// The largest datagram the protocol produces: a Hello with a record at every bound.
pub const MAX_HELLO_DATAGRAM_LEN: usize = OVERHEAD + MAX_HELLO_LEN;
const _: () = assert!(MAX_HELLO_DATAGRAM_LEN <= MAX_DATAGRAM_LEN);
/// The largest Gossip datagram.
pub const MAX_GOSSIP_DATAGRAM_LEN: usize = OVERHEAD + MAX_GOSSIP_LEN;
const _: () = assert!(MAX_GOSSIP_DATAGRAM_LEN <= MAX_DATAGRAM_LEN);
