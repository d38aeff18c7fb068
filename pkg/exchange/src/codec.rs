//! The fixed-layout binary codec of the messages inside the AEAD. Hand-written and bounded: every
//! length is checked before it is used, the decoder never allocates more than the bounds allow,
//! and returns an error (never panics) on any input.
//!
//! All integers are big-endian. The first byte of every plaintext is the message type, so the MAC
//! transcript of a Hello can never be mistaken for that of a Goodbye.
//!
//! Every message is `fixed part | extension block | mac (Hello and Goodbye)`; the block (see
//! `crate::extension`) is empty in what the previous release sent and accepts.

use crate::extension::{self, Extension, encode_extensions};
use crate::record::{Endpoint, EndpointKind, MAX_ENDPOINTS, MAX_ROUTES, Record};
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use wgmesh_keys::{KEY_LEN, PublicKey};

/// Length of challenges, echoes and Goodbye nonces.
pub const CHALLENGE_LEN: usize = 16;
/// Length of the key-possession MAC.
pub const MAC_LEN: usize = 32;

/// `type | sender | timestamp | challenge`.
pub const PROBE_LEN: usize = 1 + KEY_LEN + 8 + CHALLENGE_LEN;
/// `type | sender | recipient | timestamp | nonce | mac`.
pub const GOODBYE_LEN: usize = 1 + 2 * KEY_LEN + 8 + CHALLENGE_LEN + MAC_LEN;
/// A record without endpoints or routes:
/// `public_key | counter | ipv4 | ipv6 | listen_port | flags | timestamp | n_endpoints | n_routes`.
pub const RECORD_FIXED_LEN: usize = KEY_LEN + 1 + 4 + 16 + 2 + 1 + 8 + 1 + 1;
/// `kind | family | address (4 or 16) | port`.
pub const MAX_ENDPOINT_LEN: usize = 1 + 1 + 16 + 2;
/// `family | address (4 or 16) | prefix length`.
pub const MAX_ROUTE_LEN: usize = 1 + 16 + 1;
/// The largest legal record.
pub const MAX_RECORD_LEN: usize =
    RECORD_FIXED_LEN + MAX_ENDPOINTS * MAX_ENDPOINT_LEN + MAX_ROUTES * MAX_ROUTE_LEN;
/// `type | sender | recipient | timestamp | echo | challenge`, then the record, then the mac.
pub const HELLO_FIXED_LEN: usize = 1 + 2 * KEY_LEN + 8 + 2 * CHALLENGE_LEN + MAC_LEN;
/// The largest Hello plaintext this release sends.
pub const MAX_HELLO_LEN: usize =
    HELLO_FIXED_LEN + MAX_RECORD_LEN + extension::MAX_OWN_EXTENSIONS_LEN;
/// Gossip carries at most this many second-hand entries per datagram.
pub const MAX_GOSSIP_ENTRIES: usize = 6;
/// A gossiped record carries at most this many endpoints and no routes: routes from a member
/// apply only after a direct exchange with it (DESIGN.md §8 point 4).
pub const MAX_GOSSIP_ENDPOINTS: usize = 4;
/// `control address | record (no routes, few endpoints)`.
pub const MAX_GOSSIP_ENTRY_LEN: usize =
    (1 + 16 + 2) + RECORD_FIXED_LEN + MAX_GOSSIP_ENDPOINTS * MAX_ENDPOINT_LEN;
/// `type | sender | timestamp | n_entries | entries`.
pub const MAX_GOSSIP_LEN: usize = 1 + KEY_LEN + 8 + 1 + MAX_GOSSIP_ENTRIES * MAX_GOSSIP_ENTRY_LEN;

const FAMILY_V4: u8 = 4;
const FAMILY_V6: u8 = 6;

/// The message type: the header's type byte and the first plaintext byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MsgType {
    Probe,
    Hello,
    Goodbye,
    Gossip,
}

impl MsgType {
    pub const fn to_wire(self) -> u8 {
        match self {
            Self::Probe => 1,
            Self::Hello => 2,
            Self::Goodbye => 3,
            Self::Gossip => 4,
        }
    }

    pub const fn from_wire(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::Probe),
            2 => Some(Self::Hello),
            3 => Some(Self::Goodbye),
            4 => Some(Self::Gossip),
            _ => None,
        }
    }
}

/// "Who is there? Prove yourself." Sent without knowing the recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub sender: PublicKey,
    pub timestamp: u64,
    /// Never all-zero.
    pub challenge: [u8; CHALLENGE_LEN],
    /// Sent to unknown recipients (the previous release among them), so this release sends none.
    pub extensions: Vec<Extension>,
}

/// A member's record with proof that the sender holds the private key of `sender`, bound to the
/// recipient's fresh challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub sender: PublicKey,
    pub recipient: PublicKey,
    pub timestamp: u64,
    /// The recipient's challenge being answered. Never all-zero.
    pub echo: [u8; CHALLENGE_LEN],
    /// A challenge for the recipient to answer, or all-zero when no answer is wanted.
    pub challenge: [u8; CHALLENGE_LEN],
    pub record: Record,
    /// Between the record and the MAC, so the MAC covers them. Only sent to members whose record
    /// has [`crate::FLAG_EXTENSIONS`].
    pub extensions: Vec<Extension>,
    /// Keyed BLAKE3 over every plaintext byte before it (see `proof`).
    pub mac: [u8; MAC_LEN],
}

/// The sender is leaving the mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Goodbye {
    pub sender: PublicKey,
    pub recipient: PublicKey,
    pub timestamp: u64,
    /// Random; (sender, nonce) is remembered so a replay changes nothing.
    pub nonce: [u8; CHALLENGE_LEN],
    pub extensions: Vec<Extension>,
    pub mac: [u8; MAC_LEN],
}

/// One member as another member knows it: second-hand, so only as trustworthy as WireGuard's own
/// key authentication makes it (no routes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GossipEntry {
    /// The address the member's exchange protocol answered the gossiping member from.
    pub control: SocketAddr,
    /// Its record, without routes and with at most [`MAX_GOSSIP_ENDPOINTS`] endpoints.
    pub record: Record,
}

/// What a member knows about other members, so a mesh converges even where each member found
/// only one other. Authenticated by the secret gate only; receivers verify each entry's mesh
/// addresses and act on it only by probing the member or installing it without routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gossip {
    pub sender: PublicKey,
    pub timestamp: u64,
    pub entries: Vec<GossipEntry>,
    pub extensions: Vec<Extension>,
}

/// A decoded plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Probe(Probe),
    Hello(Hello),
    Goodbye(Goodbye),
    Gossip(Gossip),
}

impl Message {
    pub fn msg_type(&self) -> MsgType {
        match self {
            Self::Probe(_) => MsgType::Probe,
            Self::Hello(_) => MsgType::Hello,
            Self::Goodbye(_) => MsgType::Goodbye,
            Self::Gossip(_) => MsgType::Gossip,
        }
    }

    pub fn sender(&self) -> &PublicKey {
        match self {
            Self::Probe(m) => &m.sender,
            Self::Hello(m) => &m.sender,
            Self::Goodbye(m) => &m.sender,
            Self::Gossip(m) => &m.sender,
        }
    }

    pub fn timestamp(&self) -> u64 {
        match self {
            Self::Probe(m) => m.timestamp,
            Self::Hello(m) => m.timestamp,
            Self::Goodbye(m) => m.timestamp,
            Self::Gossip(m) => m.timestamp,
        }
    }
}

/// Why a message or record could not be encoded. Only our own records can cause this.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("record has {0} endpoints; at most {MAX_ENDPOINTS} are allowed")]
    TooManyEndpoints(usize),
    #[error("record has {0} routes; at most {MAX_ROUTES} are allowed")]
    TooManyRoutes(usize),
    #[error("route {0} has host bits set; advertise its network instead")]
    NonCanonicalRoute(IpNet),
    #[error("a challenge must not be all-zero")]
    ZeroChallenge,
    #[error("gossip has {0} entries; at most {MAX_GOSSIP_ENTRIES} fit a datagram")]
    TooManyGossipEntries(usize),
    #[error("a gossiped record must carry no routes and at most {MAX_GOSSIP_ENDPOINTS} endpoints")]
    GossipRecordTooBig,
    #[error("{0} extensions; at most {max} are allowed", max = extension::MAX_EXTENSIONS)]
    TooManyExtensions(usize),
    #[error("extension {kind} is {len} bytes; at most 255 are allowed")]
    ExtensionTooLong { kind: u8, len: usize },
}

/// Why a plaintext was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message is empty")]
    Empty,
    #[error("unknown message type {0}")]
    UnknownType(u8),
    #[error("message ends early")]
    Truncated,
    #[error("{0} bytes after the end of the message")]
    TrailingBytes(usize),
    #[error("unknown address family {0}")]
    UnknownFamily(u8),
    #[error("unknown endpoint kind {0}")]
    UnknownEndpointKind(u8),
    #[error("{0} endpoints; at most {MAX_ENDPOINTS} are allowed")]
    TooManyEndpoints(u8),
    #[error("{0} routes; at most {MAX_ROUTES} are allowed")]
    TooManyRoutes(u8),
    #[error("prefix length {0} is too long for its address family")]
    BadPrefixLength(u8),
    #[error("route has host bits set")]
    NonCanonicalRoute,
    #[error("a challenge or echo that must be set is all-zero")]
    ZeroChallenge,
    #[error("{0} gossip entries; at most {MAX_GOSSIP_ENTRIES} are allowed")]
    TooManyGossipEntries(u8),
    #[error("a gossiped record carries routes or too many endpoints")]
    GossipRecordTooBig,
    #[error("more than {max} extensions", max = extension::MAX_EXTENSIONS)]
    TooManyExtensions,
    #[error("unknown critical extension {0}")]
    UnknownCriticalExtension(u8),
}

/// Encodes a message. The MAC field is written as given; see [`crate::proof`] for computing it.
pub fn encode_message(message: &Message) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(MAX_HELLO_LEN);
    out.push(message.msg_type().to_wire());
    match message {
        Message::Probe(m) => {
            if m.challenge == [0; CHALLENGE_LEN] {
                return Err(EncodeError::ZeroChallenge);
            }
            out.extend_from_slice(m.sender.as_bytes());
            out.extend_from_slice(&m.timestamp.to_be_bytes());
            out.extend_from_slice(&m.challenge);
            encode_extensions(&m.extensions, &mut out)?;
        }
        Message::Hello(m) => {
            if m.echo == [0; CHALLENGE_LEN] {
                return Err(EncodeError::ZeroChallenge);
            }
            out.extend_from_slice(m.sender.as_bytes());
            out.extend_from_slice(m.recipient.as_bytes());
            out.extend_from_slice(&m.timestamp.to_be_bytes());
            out.extend_from_slice(&m.echo);
            out.extend_from_slice(&m.challenge);
            encode_record(&m.record, &mut out)?;
            encode_extensions(&m.extensions, &mut out)?;
            out.extend_from_slice(&m.mac);
        }
        Message::Goodbye(m) => {
            out.extend_from_slice(m.sender.as_bytes());
            out.extend_from_slice(m.recipient.as_bytes());
            out.extend_from_slice(&m.timestamp.to_be_bytes());
            out.extend_from_slice(&m.nonce);
            encode_extensions(&m.extensions, &mut out)?;
            out.extend_from_slice(&m.mac);
        }
        Message::Gossip(m) => {
            if m.entries.len() > MAX_GOSSIP_ENTRIES {
                return Err(EncodeError::TooManyGossipEntries(m.entries.len()));
            }
            out.extend_from_slice(m.sender.as_bytes());
            out.extend_from_slice(&m.timestamp.to_be_bytes());
            out.push(m.entries.len() as u8);
            for entry in &m.entries {
                if !entry.record.routes.is_empty()
                    || entry.record.endpoints.len() > MAX_GOSSIP_ENDPOINTS
                {
                    return Err(EncodeError::GossipRecordTooBig);
                }
                encode_ip(entry.control.ip(), &mut out);
                out.extend_from_slice(&entry.control.port().to_be_bytes());
                encode_record(&entry.record, &mut out)?;
            }
            encode_extensions(&m.extensions, &mut out)?;
        }
    }
    Ok(out)
}

/// Checks a record against the bounds without encoding it.
pub fn check_record(record: &Record) -> Result<(), EncodeError> {
    if record.endpoints.len() > MAX_ENDPOINTS {
        return Err(EncodeError::TooManyEndpoints(record.endpoints.len()));
    }
    if record.routes.len() > MAX_ROUTES {
        return Err(EncodeError::TooManyRoutes(record.routes.len()));
    }
    if let Some(route) = record.routes.iter().find(|r| r.trunc() != **r) {
        return Err(EncodeError::NonCanonicalRoute(*route));
    }
    Ok(())
}

/// Appends the encoding of a record.
pub fn encode_record(record: &Record, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    check_record(record)?;
    out.extend_from_slice(record.public_key.as_bytes());
    out.push(record.collision_counter);
    out.extend_from_slice(&record.mesh_ipv4.octets());
    out.extend_from_slice(&record.mesh_ipv6.octets());
    out.extend_from_slice(&record.listen_port.to_be_bytes());
    out.push(record.flags);
    out.extend_from_slice(&record.timestamp.to_be_bytes());
    // Both counts were bounded above, so the casts cannot truncate.
    out.push(record.endpoints.len() as u8);
    for endpoint in &record.endpoints {
        out.push(endpoint.kind.to_wire());
        encode_ip(endpoint.addr.ip(), out);
        out.extend_from_slice(&endpoint.addr.port().to_be_bytes());
    }
    out.push(record.routes.len() as u8);
    for route in &record.routes {
        encode_ip(route.addr(), out);
        out.push(route.prefix_len());
    }
    Ok(())
}

fn encode_ip(ip: IpAddr, out: &mut Vec<u8>) {
    match ip {
        IpAddr::V4(v4) => {
            out.push(FAMILY_V4);
            out.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out.push(FAMILY_V6);
            out.extend_from_slice(&v6.octets());
        }
    }
}

/// Decodes a plaintext (type byte first). Total: returns an error for every input it refuses.
pub fn decode_message(plaintext: &[u8]) -> Result<Message, DecodeError> {
    let (&type_byte, body) = plaintext.split_first().ok_or(DecodeError::Empty)?;
    let msg_type = MsgType::from_wire(type_byte).ok_or(DecodeError::UnknownType(type_byte))?;
    let mut r = Reader { rest: body };
    let message = match msg_type {
        MsgType::Probe => {
            let sender = r.key()?;
            let timestamp = r.u64()?;
            let challenge = r.array()?;
            if challenge == [0; CHALLENGE_LEN] {
                return Err(DecodeError::ZeroChallenge);
            }
            Message::Probe(Probe {
                sender,
                timestamp,
                challenge,
                extensions: r.extensions_then(0)?,
            })
        }
        MsgType::Hello => {
            let sender = r.key()?;
            let recipient = r.key()?;
            let timestamp = r.u64()?;
            let echo = r.array()?;
            if echo == [0; CHALLENGE_LEN] {
                return Err(DecodeError::ZeroChallenge);
            }
            let challenge = r.array()?;
            let record = decode_record(&mut r)?;
            let extensions = r.extensions_then(MAC_LEN)?;
            let mac = r.array()?;
            Message::Hello(Hello {
                sender,
                recipient,
                timestamp,
                echo,
                challenge,
                record,
                extensions,
                mac,
            })
        }
        MsgType::Goodbye => Message::Goodbye(Goodbye {
            sender: r.key()?,
            recipient: r.key()?,
            timestamp: r.u64()?,
            nonce: r.array()?,
            extensions: r.extensions_then(MAC_LEN)?,
            mac: r.array()?,
        }),
        MsgType::Gossip => {
            let sender = r.key()?;
            let timestamp = r.u64()?;
            let count = r.u8()?;
            if usize::from(count) > MAX_GOSSIP_ENTRIES {
                return Err(DecodeError::TooManyGossipEntries(count));
            }
            let mut entries = Vec::with_capacity(usize::from(count));
            for _ in 0..count {
                let ip = r.ip()?;
                let port = r.u16()?;
                let record = decode_record(&mut r)?;
                if !record.routes.is_empty() || record.endpoints.len() > MAX_GOSSIP_ENDPOINTS {
                    return Err(DecodeError::GossipRecordTooBig);
                }
                entries.push(GossipEntry {
                    control: SocketAddr::new(ip, port),
                    record,
                });
            }
            Message::Gossip(Gossip {
                sender,
                timestamp,
                entries,
                extensions: r.extensions_then(0)?,
            })
        }
    };
    // Unreachable for a well-formed reader (the extension block runs to the end or the MAC),
    // kept so no future field can be left unread silently.
    if !r.rest.is_empty() {
        return Err(DecodeError::TrailingBytes(r.rest.len()));
    }
    Ok(message)
}

/// Decodes a record on its own (the inverse of [`encode_record`]), refusing trailing bytes.
pub fn decode_record_exact(bytes: &[u8]) -> Result<Record, DecodeError> {
    let mut r = Reader { rest: bytes };
    let record = decode_record(&mut r)?;
    if !r.rest.is_empty() {
        return Err(DecodeError::TrailingBytes(r.rest.len()));
    }
    Ok(record)
}

fn decode_record(r: &mut Reader<'_>) -> Result<Record, DecodeError> {
    let public_key = r.key()?;
    let collision_counter = r.u8()?;
    let mesh_ipv4 = Ipv4Addr::from(r.array::<4>()?);
    let mesh_ipv6 = Ipv6Addr::from(r.array::<16>()?);
    let listen_port = r.u16()?;
    let flags = r.u8()?;
    let timestamp = r.u64()?;

    let n_endpoints = r.u8()?;
    if usize::from(n_endpoints) > MAX_ENDPOINTS {
        return Err(DecodeError::TooManyEndpoints(n_endpoints));
    }
    let mut endpoints = Vec::with_capacity(usize::from(n_endpoints));
    for _ in 0..n_endpoints {
        let kind_byte = r.u8()?;
        let kind = EndpointKind::from_wire(kind_byte)
            .ok_or(DecodeError::UnknownEndpointKind(kind_byte))?;
        let ip = r.ip()?;
        let port = r.u16()?;
        endpoints.push(Endpoint {
            kind,
            addr: SocketAddr::new(ip, port),
        });
    }

    let n_routes = r.u8()?;
    if usize::from(n_routes) > MAX_ROUTES {
        return Err(DecodeError::TooManyRoutes(n_routes));
    }
    let mut routes = Vec::with_capacity(usize::from(n_routes));
    for _ in 0..n_routes {
        let ip = r.ip()?;
        let prefix = r.u8()?;
        let net = IpNet::new(ip, prefix).map_err(|_| DecodeError::BadPrefixLength(prefix))?;
        if net.trunc() != net {
            return Err(DecodeError::NonCanonicalRoute);
        }
        routes.push(net);
    }

    Ok(Record {
        public_key,
        collision_counter,
        mesh_ipv4,
        mesh_ipv6,
        endpoints,
        listen_port,
        routes,
        flags,
        timestamp,
    })
}

/// A cursor that only ever hands out bytes it has checked are there.
struct Reader<'a> {
    rest: &'a [u8],
}

impl Reader<'_> {
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, tail) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or(DecodeError::Truncated)?;
        self.rest = tail;
        Ok(*head)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// The extension block: every byte up to the last `tail` (the MAC, read next).
    fn extensions_then(&mut self, tail: usize) -> Result<Vec<Extension>, DecodeError> {
        let block_len = self
            .rest
            .len()
            .checked_sub(tail)
            .ok_or(DecodeError::Truncated)?;
        let (block, after) = self.rest.split_at(block_len);
        self.rest = after;
        extension::decode_block(block)
    }

    fn key(&mut self) -> Result<PublicKey, DecodeError> {
        Ok(PublicKey::from_bytes(self.array()?))
    }

    fn ip(&mut self) -> Result<IpAddr, DecodeError> {
        match self.u8()? {
            FAMILY_V4 => Ok(IpAddr::V4(Ipv4Addr::from(self.array::<4>()?))),
            FAMILY_V6 => Ok(IpAddr::V6(Ipv6Addr::from(self.array::<16>()?))),
            other => Err(DecodeError::UnknownFamily(other)),
        }
    }
}
