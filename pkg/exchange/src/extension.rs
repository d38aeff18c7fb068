//! The extension block: optional fields after a message's fixed part (before the MAC in a Hello
//! or Goodbye), the way fields are added without splitting a mixed fleet (docs/exchange-protocol.md,
//! "Extensions" and "Compatibility").
//!
//! `kind (1) | length (1) | value`, repeated up to the end of the block. The previous release's
//! decoder refused any byte after the fixed part, so what it sends and accepts has an empty block.
//! This decoder keeps every field, in order, so a message re-encodes to the same bytes, and only
//! a field it does not know whose kind has [`EXT_CRITICAL`] set makes it refuse the message.

use crate::codec::{DecodeError, EncodeError};

/// `kind | length`.
pub const EXTENSION_HEADER_LEN: usize = 2;
/// At most this many extension fields per message.
pub const MAX_EXTENSIONS: usize = 16;
/// Extension kinds with this bit set must be understood: a decoder that does not know such a
/// kind refuses the message. Others are skipped by decoders that do not know them.
pub const EXT_CRITICAL: u8 = 0x80;
/// Extension kind: the sender's software version (`crate::info`).
pub const EXT_VERSION: u8 = 1;
/// Extension kind: the sender's name (`crate::info`).
pub const EXT_NAME: u8 = 2;
/// Extension kind (Gossip only): a digest of the sender's member table, for anti-entropy (read
/// by the membership core, `wgmesh_membership::digest`).
pub const EXT_DIGEST: u8 = 3;
/// Extension kind (Gossip only): members the sender's failure detector found dead, as 32-byte
/// keys; receivers probe them at once rather than wait for their own turn.
pub const EXT_SUSPECT: u8 = 4;
/// Kinds this decoder understands.
const KNOWN_EXTENSIONS: [u8; 2] = [EXT_VERSION, EXT_NAME];
/// The largest extension block this release sends (version and name, see `crate::info`).
pub const MAX_OWN_EXTENSIONS_LEN: usize =
    2 * EXTENSION_HEADER_LEN + crate::info::MAX_VERSION_LEN + wgmesh_names::MAX_NAME_LEN;

/// One extension field: `kind (1) | length (1) | value (length)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    pub kind: u8,
    /// At most 255 bytes.
    pub value: Vec<u8>,
}

/// Appends an extension block (nothing for none: the previous release's layout).
pub(crate) fn encode_extensions(
    extensions: &[Extension],
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    if extensions.len() > MAX_EXTENSIONS {
        return Err(EncodeError::TooManyExtensions(extensions.len()));
    }
    for extension in extensions {
        let len =
            u8::try_from(extension.value.len()).map_err(|_| EncodeError::ExtensionTooLong {
                kind: extension.kind,
                len: extension.value.len(),
            })?;
        out.push(extension.kind);
        out.push(len);
        out.extend_from_slice(&extension.value);
    }
    Ok(())
}

/// Decodes a whole block (the caller has cut it out of the message).
pub(crate) fn decode_block(mut block: &[u8]) -> Result<Vec<Extension>, DecodeError> {
    let mut extensions = Vec::new();
    while let Some((&kind, rest)) = block.split_first() {
        if extensions.len() == MAX_EXTENSIONS {
            return Err(DecodeError::TooManyExtensions);
        }
        let (&len, rest) = rest.split_first().ok_or(DecodeError::Truncated)?;
        let len = usize::from(len);
        if rest.len() < len {
            return Err(DecodeError::Truncated);
        }
        let (value, rest) = rest.split_at(len);
        block = rest;
        if kind & EXT_CRITICAL != 0 && !KNOWN_EXTENSIONS.contains(&kind) {
            return Err(DecodeError::UnknownCriticalExtension(kind));
        }
        extensions.push(Extension {
            kind,
            value: value.to_vec(),
        });
    }
    Ok(extensions)
}
