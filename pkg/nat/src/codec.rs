//! STUN message codec (RFC 5389 §6, §15): just enough for Binding.
//!
//! Every function takes a datagram and returns a value; nothing here touches a socket. Decoders
//! index only within bounds they have checked, walk at most one attribute per 4 bytes of a
//! datagram, and allocate nothing proportional to input except a bounded error reason.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::fingerprint::fingerprint;

/// The fixed value at offset 4 of every RFC 5389 message; RFC 3489 had random bytes there.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Size of the STUN message header.
pub const HEADER_LEN: usize = 20;

/// A Binding request (method 0x001, class request).
pub(crate) const BINDING_REQUEST: u16 = 0x0001;
/// A Binding success response.
pub(crate) const BINDING_SUCCESS: u16 = 0x0101;
/// A Binding error response.
pub(crate) const BINDING_ERROR: u16 = 0x0111;

pub(crate) const ATTR_MAPPED_ADDRESS: u16 = 0x0001;
pub(crate) const ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;
pub(crate) const ATTR_ERROR_CODE: u16 = 0x0009;
pub(crate) const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
/// XOR-MAPPED-ADDRESS as numbered in pre-RFC drafts; some old servers still send it.
pub(crate) const ATTR_XOR_MAPPED_ADDRESS_OLD: u16 = 0x8020;
pub(crate) const ATTR_FINGERPRINT: u16 = 0x8028;

/// Comprehension-required attributes (type < 0x8000) that a Binding response may carry and that
/// we understand well enough to ignore. RFC 3489 servers add 0x0002..=0x0005 (RESPONSE-ADDRESS,
/// CHANGE-REQUEST, SOURCE-ADDRESS, CHANGED-ADDRESS); rejecting those would lose usable answers.
const KNOWN_REQUIRED: [u16; 11] = [
    ATTR_MAPPED_ADDRESS,
    0x0002,
    0x0003,
    0x0004,
    0x0005,
    0x0006, // USERNAME
    ATTR_MESSAGE_INTEGRITY,
    ATTR_ERROR_CODE,
    0x000A, // UNKNOWN-ATTRIBUTES
    0x0014, // REALM
    0x0015, // NONCE
];

/// ERROR-CODE reason phrases are at most 763 bytes (RFC 5389 §15.6); we keep less.
const MAX_REASON_LEN: usize = 128;

/// Why a datagram is not a usable Binding success response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StunError {
    /// Fails [`is_stun`]: another protocol, or a truncated/garbled STUN message.
    #[error("not a STUN message")]
    NotStun,
    /// A STUN message, but a request, an indication, or another method's response.
    #[error("STUN message type {message_type:#06x} is not a Binding response")]
    NotBindingResponse {
        /// The 14-bit message type as read from the header.
        message_type: u16,
    },
    /// The server answered with a Binding error response.
    #[error("STUN error response {code}: {reason}")]
    ErrorResponse {
        /// The error code (300..=699), 0 if the response carried no ERROR-CODE.
        code: u16,
        /// The reason phrase, lossily decoded and truncated.
        reason: String,
    },
    /// An attribute runs past the message end or has an impossible length or value.
    #[error("malformed STUN attribute {attr_type:#06x}: {problem}")]
    MalformedAttribute {
        /// The attribute type.
        attr_type: u16,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A comprehension-required attribute we do not know; RFC 5389 §7.3.3 says discard.
    #[error("unknown comprehension-required STUN attribute {0:#06x}")]
    UnknownRequiredAttribute(u16),
    /// FINGERPRINT present but wrong (or not the last attribute).
    #[error("STUN FINGERPRINT mismatch")]
    BadFingerprint,
    /// A success response without XOR-MAPPED-ADDRESS or MAPPED-ADDRESS.
    #[error("STUN Binding response carries no mapped address")]
    NoMappedAddress,
}

/// A decoded Binding success response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BindingResponse {
    /// Echo of the request's transaction id; match it against what you sent.
    pub transaction_id: [u8; 12],
    /// Our address as the server saw it (the "server-reflexive" address).
    pub mapped: SocketAddr,
}

/// A Binding request with no attributes: the 20-byte header only.
///
/// FINGERPRINT is left out: it only helps when several protocols share a port without other
/// framing, and our exchange datagrams are already told apart by the first two bits and the
/// magic cookie (see [`is_stun`]). Servers must accept a request without it.
pub fn binding_request(transaction_id: [u8; 12]) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[0..2].copy_from_slice(&BINDING_REQUEST.to_be_bytes());
    // Message length 0: bytes 2..4 stay zero.
    out[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    out[8..20].copy_from_slice(&transaction_id);
    out
}

/// Whether `datagram` is framed as an RFC 5389 STUN message: at least a header, first two bits
/// zero, the magic cookie at offset 4, and a length field that is a multiple of 4 and matches
/// the datagram exactly.
///
/// This is the demultiplexer for the shared control socket: wgmesh exchange datagrams begin
/// with `b"WGM1"`, whose first byte 0x57 has top bits `01`, so they can never pass.
pub fn is_stun(datagram: &[u8]) -> bool {
    let Some(header) = datagram.get(..HEADER_LEN) else {
        return false;
    };
    let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
    header[0] & 0xC0 == 0
        && header[4..8] == MAGIC_COOKIE.to_be_bytes()
        && length & 3 == 0
        && HEADER_LEN + length == datagram.len()
}

/// The transaction id of a well-formed Binding request, for a server. Other attributes are
/// ignored (a full server would answer unknown comprehension-required ones with error 420);
/// a FINGERPRINT, if present, must be correct.
pub fn parse_binding_request(datagram: &[u8]) -> Option<[u8; 12]> {
    let header = Header::parse(datagram)?;
    if header.message_type != BINDING_REQUEST {
        return None;
    }
    for attr in Attributes::new(datagram) {
        let attr = attr.ok()?;
        if attr.attr_type == ATTR_FINGERPRINT {
            check_fingerprint(datagram, &attr).ok()?;
        }
    }
    Some(header.transaction_id)
}

/// Decode a Binding success response: XOR-MAPPED-ADDRESS preferred, then the pre-RFC 0x8020
/// form, then plain MAPPED-ADDRESS (RFC 3489 servers). Error responses become
/// [`StunError::ErrorResponse`]. Attributes after MESSAGE-INTEGRITY other than FINGERPRINT are
/// ignored as §15.4 requires; MESSAGE-INTEGRITY itself is not checked (no credentials in use).
pub fn parse_binding_response(datagram: &[u8]) -> Result<BindingResponse, StunError> {
    let header = Header::parse(datagram).ok_or(StunError::NotStun)?;
    let txid = header.transaction_id;
    let is_error = match header.message_type {
        BINDING_SUCCESS => false,
        BINDING_ERROR => true,
        message_type => return Err(StunError::NotBindingResponse { message_type }),
    };

    let mut xor_mapped = None;
    let mut old_xor_mapped = None;
    let mut mapped = None;
    let mut error = None;
    let mut after_integrity = false;
    for attr in Attributes::new(datagram) {
        let attr = attr?;
        if attr.attr_type == ATTR_FINGERPRINT {
            check_fingerprint(datagram, &attr)?;
            continue;
        }
        if after_integrity {
            continue;
        }
        match attr.attr_type {
            ATTR_XOR_MAPPED_ADDRESS => {
                xor_mapped.get_or_insert(decode_address(&attr, Some(&txid))?);
            }
            ATTR_XOR_MAPPED_ADDRESS_OLD => {
                old_xor_mapped.get_or_insert(decode_address(&attr, Some(&txid))?);
            }
            ATTR_MAPPED_ADDRESS => {
                mapped.get_or_insert(decode_address(&attr, None)?);
            }
            ATTR_ERROR_CODE => {
                error.get_or_insert(decode_error_code(&attr)?);
            }
            ATTR_MESSAGE_INTEGRITY => after_integrity = true,
            t if t < 0x8000 && !KNOWN_REQUIRED.contains(&t) => {
                return Err(StunError::UnknownRequiredAttribute(t));
            }
            _ => {}
        }
    }

    if is_error {
        let (code, reason) = error.unwrap_or((0, String::new()));
        return Err(StunError::ErrorResponse { code, reason });
    }
    let mapped = xor_mapped
        .or(old_xor_mapped)
        .or(mapped)
        .ok_or(StunError::NoMappedAddress)?;
    Ok(BindingResponse {
        transaction_id: txid,
        mapped,
    })
}

/// A Binding success response carrying XOR-MAPPED-ADDRESS of `mapped`, then FINGERPRINT.
pub fn binding_success_response(transaction_id: [u8; 12], mapped: SocketAddr) -> Vec<u8> {
    let mut builder = MessageBuilder::new(BINDING_SUCCESS, transaction_id);
    builder.attribute(
        ATTR_XOR_MAPPED_ADDRESS,
        &encode_address(mapped, Some(&transaction_id)),
    );
    builder.finish(true)
}

/// The fixed header fields of a message that passed [`is_stun`].
struct Header {
    message_type: u16,
    transaction_id: [u8; 12],
}

impl Header {
    fn parse(datagram: &[u8]) -> Option<Header> {
        if !is_stun(datagram) {
            return None;
        }
        let mut transaction_id = [0u8; 12];
        transaction_id.copy_from_slice(datagram.get(8..HEADER_LEN)?);
        Some(Header {
            message_type: u16::from_be_bytes([datagram[0], datagram[1]]),
            transaction_id,
        })
    }
}

/// One attribute: its type, where it starts in the datagram, and its (unpadded) value.
struct Attribute<'a> {
    attr_type: u16,
    offset: usize,
    value: &'a [u8],
}

/// Iterates the attributes of a message that passed [`is_stun`]; yields one error and stops if an
/// attribute overruns the message.
struct Attributes<'a> {
    datagram: &'a [u8],
    offset: usize,
}

impl<'a> Attributes<'a> {
    fn new(datagram: &'a [u8]) -> Self {
        Attributes {
            datagram,
            offset: HEADER_LEN,
        }
    }
}

impl<'a> Iterator for Attributes<'a> {
    type Item = Result<Attribute<'a>, StunError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.datagram.get(self.offset..)?;
        if rest.is_empty() {
            return None;
        }
        let offset = self.offset;
        // Whatever happens below, never revisit this position.
        self.offset = self.datagram.len();
        let Some(tl) = rest.get(..4) else {
            return Some(Err(StunError::MalformedAttribute {
                attr_type: 0,
                problem: "truncated attribute header",
            }));
        };
        let attr_type = u16::from_be_bytes([tl[0], tl[1]]);
        let len = usize::from(u16::from_be_bytes([tl[2], tl[3]]));
        let padded = (len + 3) & !3;
        let Some(value) = rest.get(4..4 + len) else {
            return Some(Err(StunError::MalformedAttribute {
                attr_type,
                problem: "value runs past the message end",
            }));
        };
        // is_stun guarantees the message length is a multiple of 4, so padding fits too.
        self.offset = offset + 4 + padded;
        Some(Ok(Attribute {
            attr_type,
            offset,
            value,
        }))
    }
}

/// FINGERPRINT must be the last attribute and match the CRC over everything before it.
fn check_fingerprint(datagram: &[u8], attr: &Attribute<'_>) -> Result<(), StunError> {
    let is_last = attr.offset + 8 == datagram.len();
    let value: [u8; 4] = attr
        .value
        .try_into()
        .map_err(|_| StunError::BadFingerprint)?;
    let prefix = datagram
        .get(..attr.offset)
        .ok_or(StunError::BadFingerprint)?;
    if is_last && u32::from_be_bytes(value) == fingerprint(prefix) {
        Ok(())
    } else {
        Err(StunError::BadFingerprint)
    }
}

/// MAPPED-ADDRESS layout (§15.1); with `xor_txid`, the XOR-MAPPED-ADDRESS obfuscation (§15.2):
/// port XOR the cookie's top 16 bits, IPv4 XOR the cookie, IPv6 XOR cookie ‖ transaction id.
fn decode_address(
    attr: &Attribute<'_>,
    xor_txid: Option<&[u8; 12]>,
) -> Result<SocketAddr, StunError> {
    let malformed = |problem| StunError::MalformedAttribute {
        attr_type: attr.attr_type,
        problem,
    };
    let v = attr.value;
    let pad = xor_pad(xor_txid);
    let (port, addr) = match (v.len(), v.get(1)) {
        (8, Some(0x01)) => {
            let mut octets = [0u8; 4];
            for (i, o) in octets.iter_mut().enumerate() {
                *o = v[4 + i] ^ pad[i];
            }
            (
                u16::from_be_bytes([v[2], v[3]]),
                IpAddr::V4(Ipv4Addr::from(octets)),
            )
        }
        (20, Some(0x02)) => {
            let mut octets = [0u8; 16];
            for (i, o) in octets.iter_mut().enumerate() {
                *o = v[4 + i] ^ pad[i];
            }
            (
                u16::from_be_bytes([v[2], v[3]]),
                IpAddr::V6(Ipv6Addr::from(octets)),
            )
        }
        (8 | 20, _) => return Err(malformed("unknown address family")),
        _ => return Err(malformed("address length is neither 8 nor 20")),
    };
    let port_pad = u16::from_be_bytes([pad[0], pad[1]]);
    Ok(SocketAddr::new(addr, port ^ port_pad))
}

/// The inverse of [`decode_address`].
fn encode_address(addr: SocketAddr, xor_txid: Option<&[u8; 12]>) -> Vec<u8> {
    let pad = xor_pad(xor_txid);
    let port = addr.port() ^ u16::from_be_bytes([pad[0], pad[1]]);
    let (family, octets): (u8, Vec<u8>) = match addr.ip() {
        IpAddr::V4(ip) => (0x01, ip.octets().to_vec()),
        IpAddr::V6(ip) => (0x02, ip.octets().to_vec()),
    };
    let mut value = vec![0, family];
    value.extend_from_slice(&port.to_be_bytes());
    value.extend(octets.iter().zip(pad).map(|(o, p)| o ^ p));
    value
}

/// Cookie ‖ transaction id for XOR addresses, zeros for plain ones.
fn xor_pad(xor_txid: Option<&[u8; 12]>) -> [u8; 16] {
    let mut pad = [0u8; 16];
    if let Some(txid) = xor_txid {
        pad[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        pad[4..].copy_from_slice(txid);
    }
    pad
}

/// ERROR-CODE (§15.6): 2 reserved bytes, class (hundreds) in 3 bits, number (0..99), reason.
fn decode_error_code(attr: &Attribute<'_>) -> Result<(u16, String), StunError> {
    let v = attr.value;
    if v.len() < 4 {
        return Err(StunError::MalformedAttribute {
            attr_type: attr.attr_type,
            problem: "ERROR-CODE shorter than 4 bytes",
        });
    }
    let code = u16::from(v[2] & 0x07) * 100 + u16::from(v[3]);
    let reason_bytes = &v[4..v.len().min(4 + MAX_REASON_LEN)];
    Ok((code, String::from_utf8_lossy(reason_bytes).into_owned()))
}

/// Builds a message attribute by attribute; the server side and tests use it.
pub(crate) struct MessageBuilder {
    bytes: Vec<u8>,
}

impl MessageBuilder {
    pub(crate) fn new(message_type: u16, transaction_id: [u8; 12]) -> Self {
        let mut bytes = Vec::with_capacity(64);
        bytes.extend_from_slice(&message_type.to_be_bytes());
        bytes.extend_from_slice(&[0, 0]);
        bytes.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        bytes.extend_from_slice(&transaction_id);
        MessageBuilder { bytes }
    }

    /// Appends one attribute, zero-padded to 4 bytes. Values longer than 65535 bytes cannot
    /// be expressed; callers only pass small fixed values.
    pub(crate) fn attribute(&mut self, attr_type: u16, value: &[u8]) {
        let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
        self.bytes.extend_from_slice(&attr_type.to_be_bytes());
        self.bytes.extend_from_slice(&len.to_be_bytes());
        self.bytes.extend_from_slice(&value[..usize::from(len)]);
        while self.bytes.len() & 3 != 0 {
            self.bytes.push(0);
        }
    }

    /// Fixes the length field and, if asked, appends FINGERPRINT.
    pub(crate) fn finish(mut self, with_fingerprint: bool) -> Vec<u8> {
        let extra = if with_fingerprint { 8 } else { 0 };
        self.set_length(self.bytes.len() - HEADER_LEN + extra);
        if with_fingerprint {
            let crc = fingerprint(&self.bytes);
            self.bytes
                .extend_from_slice(&ATTR_FINGERPRINT.to_be_bytes());
            self.bytes.extend_from_slice(&4u16.to_be_bytes());
            self.bytes.extend_from_slice(&crc.to_be_bytes());
        }
        self.bytes
    }

    fn set_length(&mut self, length: usize) {
        let length = u16::try_from(length).unwrap_or(u16::MAX);
        self.bytes[2..4].copy_from_slice(&length.to_be_bytes());
    }
}

#[cfg(test)]
mod tests;
