//! The outer layer, the secret gate: `magic | type | nonce | XChaCha20-Poly1305(plaintext)` under
//! `K(exchange key)`, with the 29-byte header as associated data. Without the secret a datagram can
//! be neither read nor forged, and the type byte cannot be changed in flight.
//!
//! XChaCha20's 192-bit nonce is drawn at random for every datagram: every member encrypts under the
//! same key with no shared counter, and 2^96-bit nonces would make random collisions plausible over
//! a long-lived mesh, while 2^192 never collides.

use crate::codec::MsgType;
use chacha20poly1305::aead::{Aead, AeadInPlace, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// Every datagram starts with these four bytes (protocol v1).
pub const MAGIC: [u8; 4] = *b"WGM1";
/// Length of the XChaCha20 nonce.
pub const NONCE_LEN: usize = 24;
/// `magic | type | nonce`.
pub const HEADER_LEN: usize = MAGIC.len() + 1 + NONCE_LEN;
/// Length of the Poly1305 tag.
pub const TAG_LEN: usize = 16;
/// No datagram of the protocol is larger: it must pass any path without IP fragmentation.
pub const MAX_DATAGRAM_LEN: usize = 1200;
/// Header and tag around an empty plaintext.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;

/// Why a datagram could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("datagram of {0} bytes exceeds {MAX_DATAGRAM_LEN}")]
    TooLarge(usize),
    #[error("datagram of {0} bytes is shorter than header and tag")]
    TooShort(usize),
    #[error("bad magic")]
    BadMagic,
    #[error("unknown message type {0}")]
    UnknownType(u8),
    #[error("authentication failed")]
    BadAead,
}

/// Why a datagram could not be sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("sealed datagram would be {0} bytes, more than {MAX_DATAGRAM_LEN}")]
    TooLarge(usize),
}

/// The AEAD under the exchange key. Kept alive by the state machine so the key schedule runs once.
pub(crate) struct Gate {
    cipher: XChaCha20Poly1305,
}

impl Gate {
    pub(crate) fn new(exchange_key: &[u8; 32]) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(exchange_key.into()),
        }
    }

    pub(crate) fn seal(
        &self,
        msg_type: MsgType,
        nonce: &[u8; NONCE_LEN],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        let total = OVERHEAD + plaintext.len();
        if total > MAX_DATAGRAM_LEN {
            return Err(SealError::TooLarge(total));
        }
        let header = header(msg_type, nonce);
        let mut datagram = Vec::with_capacity(total);
        datagram.extend_from_slice(&header);
        datagram.extend_from_slice(plaintext);
        let tag = self
            .cipher
            .encrypt_in_place_detached(
                XNonce::from_slice(nonce),
                &header,
                &mut datagram[HEADER_LEN..],
            )
            // Encryption fails only for plaintexts near 2^38 bytes; ours are below 1200.
            .map_err(|_| SealError::TooLarge(total))?;
        datagram.extend_from_slice(&tag);
        Ok(datagram)
    }

    pub(crate) fn open(&self, datagram: &[u8]) -> Result<(MsgType, Vec<u8>), OpenError> {
        let msg_type = precheck(datagram)?;
        let (header, ciphertext) = datagram.split_at(HEADER_LEN);
        let nonce = &header[MAGIC.len() + 1..];
        let plaintext = self
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: header,
                },
            )
            .map_err(|_| OpenError::BadAead)?;
        Ok((msg_type, plaintext))
    }
}

/// The cheap checks (length, magic, type), done before the AEAD is touched.
pub(crate) fn precheck(datagram: &[u8]) -> Result<MsgType, OpenError> {
    if datagram.len() > MAX_DATAGRAM_LEN {
        return Err(OpenError::TooLarge(datagram.len()));
    }
    if datagram.len() < OVERHEAD {
        return Err(OpenError::TooShort(datagram.len()));
    }
    if datagram[..MAGIC.len()] != MAGIC {
        return Err(OpenError::BadMagic);
    }
    let type_byte = datagram[MAGIC.len()];
    MsgType::from_wire(type_byte).ok_or(OpenError::UnknownType(type_byte))
}

fn header(msg_type: MsgType, nonce: &[u8; NONCE_LEN]) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[..MAGIC.len()].copy_from_slice(&MAGIC);
    header[MAGIC.len()] = msg_type.to_wire();
    header[MAGIC.len() + 1..].copy_from_slice(nonce);
    header
}

/// Opens a datagram under `exchange_key`: the plaintext and the (authenticated) header type.
pub fn open(exchange_key: &[u8; 32], datagram: &[u8]) -> Result<(MsgType, Vec<u8>), OpenError> {
    Gate::new(exchange_key).open(datagram)
}

/// Seals a plaintext under `exchange_key` with the given nonce.
pub fn seal(
    exchange_key: &[u8; 32],
    msg_type: MsgType,
    nonce: &[u8; NONCE_LEN],
    plaintext: &[u8],
) -> Result<Vec<u8>, SealError> {
    Gate::new(exchange_key).seal(msg_type, nonce, plaintext)
}
