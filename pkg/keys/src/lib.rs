//! WireGuard key material.
//!
//! [`PublicKey`] is freely printable (base64, as `wg` shows it). [`PrivateKey`] and
//! [`PresharedKey`] are zeroized on drop and their `Debug` prints only a redaction marker, so a
//! stray `{:?}` in a log line or a panic message can never leak them. They are encoded only
//! where a protocol demands it (hex on the wireguard-go UAPI socket, raw bytes on netlink).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use std::fmt;
use std::str::FromStr;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length in bytes of every WireGuard key.
pub const KEY_LEN: usize = 32;

/// Why a textual key could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("key is not valid base64")]
    Base64,
    #[error("key is not valid hex")]
    Hex,
    #[error("key must be {KEY_LEN} bytes, got {0}")]
    Length(usize),
}

/// A WireGuard (X25519) public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; KEY_LEN]);

impl PublicKey {
    pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let bytes = STANDARD.decode(text.trim()).map_err(|_| KeyError::Base64)?;
        Ok(Self(to_array(&bytes)?))
    }

    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let bytes = hex::decode(text.trim()).map_err(|_| KeyError::Hex)?;
        Ok(Self(to_array(&bytes)?))
    }

    /// The first characters of the base64 form: enough to tell peers apart in logs.
    pub fn short(&self) -> String {
        let mut text = self.to_base64();
        text.truncate(8);
        text
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_base64(s)
    }
}

impl serde::Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_base64())
    }
}

impl<'de> serde::Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::from_base64(&text).map_err(serde::de::Error::custom)
    }
}

fn to_array(bytes: &[u8]) -> Result<[u8; KEY_LEN], KeyError> {
    bytes.try_into().map_err(|_| KeyError::Length(bytes.len()))
}

/// How operators name a member in settings (`PREFIX@KEY` in `accept-routes`, `relays=`): the
/// start of its public key in base64, at least [`KeyPrefix::MIN_LEN`] characters. Eight
/// characters are 48 bits: grinding a key that matches someone else's prefix takes about 2⁴⁸
/// X25519 base-point multiplications.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyPrefix(String);

/// Why a key prefix was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyPrefixError {
    #[error("a key prefix needs at least 8 characters of the base64 public key, got {0}")]
    TooShort(usize),
    #[error("a key prefix has at most 44 characters (a whole base64 public key), got {0}")]
    TooLong(usize),
    #[error("a key prefix is base64 (A-Z, a-z, 0-9, + and /, = at the end); {0:?} is not")]
    NotBase64(char),
}

impl KeyPrefix {
    pub const MIN_LEN: usize = 8;

    pub fn matches(&self, key: &PublicKey) -> bool {
        key.to_base64().starts_with(&self.0)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for KeyPrefix {
    type Err = KeyPrefixError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let len = text.chars().count();
        if let Some(bad) = text
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=')))
        {
            return Err(KeyPrefixError::NotBase64(bad));
        }
        if len < Self::MIN_LEN {
            return Err(KeyPrefixError::TooShort(len));
        }
        if len > 44 {
            return Err(KeyPrefixError::TooLong(len));
        }
        Ok(Self(text.to_owned()))
    }
}

impl fmt::Display for KeyPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A WireGuard private key. Never printed; zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct PrivateKey([u8; KEY_LEN]);

impl PrivateKey {
    /// Wraps raw bytes, applying X25519 clamping so that the stored value is exactly what
    /// WireGuard itself would use.
    pub fn from_bytes_clamped(mut bytes: [u8; KEY_LEN]) -> Self {
        bytes[0] &= 248;
        bytes[31] &= 127;
        bytes[31] |= 64;
        let key = Self(bytes);
        bytes.zeroize();
        key
    }

    pub fn public_key(&self) -> PublicKey {
        let secret = x25519_dalek::StaticSecret::from(self.0);
        PublicKey(x25519_dalek::PublicKey::from(&secret).to_bytes())
    }

    /// X25519 Diffie-Hellman with a peer's public key.
    pub fn diffie_hellman(&self, peer: &PublicKey) -> SharedSecret {
        let secret = x25519_dalek::StaticSecret::from(self.0);
        SharedSecret(
            secret
                .diffie_hellman(&x25519_dalek::PublicKey::from(peer.0))
                .to_bytes(),
        )
    }

    /// Raw bytes, for netlink and for the exchange protocol's key proof.
    pub fn expose_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Hex, as the wireguard-go UAPI expects. Only for writing to the UAPI socket.
    pub fn expose_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

/// The output of an X25519 exchange. Never printed; zeroized on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SharedSecret([u8; KEY_LEN]);

impl SharedSecret {
    pub fn expose_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedSecret(<redacted>)")
    }
}

/// A WireGuard preshared key. Never printed; zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct PresharedKey([u8; KEY_LEN]);

impl PresharedKey {
    pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    pub fn expose_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Hex, as the wireguard-go UAPI expects. Only for writing to the UAPI socket.
    pub fn expose_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresharedKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn secrets_never_print() {
        let private = PrivateKey::from_bytes_clamped([7; 32]);
        let psk = PresharedKey::from_bytes([9; 32]);
        let printed = format!("{private:?} {psk:?}");
        assert!(!printed.contains("0707"), "{printed}");
        assert!(!printed.contains("0909"), "{printed}");
        assert!(printed.contains("redacted"));
    }

    #[test]
    fn key_prefixes_match_the_start_of_the_base64_key_and_refuse_short_or_foreign_text() {
        let key = PublicKey::from_bytes([7; 32]);
        let text = key.to_base64();
        let prefix: KeyPrefix = text[..8].parse().unwrap();
        assert!(prefix.matches(&key));
        assert!(!prefix.matches(&PublicKey::from_bytes([8; 32])));
        assert!(text.parse::<KeyPrefix>().unwrap().matches(&key));
        assert_eq!(
            "abcdefg".parse::<KeyPrefix>(),
            Err(KeyPrefixError::TooShort(7))
        );
        assert_eq!(
            "abcd efgh".parse::<KeyPrefix>(),
            Err(KeyPrefixError::NotBase64(' '))
        );
        assert_eq!(
            format!("{text}A").parse::<KeyPrefix>(),
            Err(KeyPrefixError::TooLong(45))
        );
    }

    #[test]
    fn clamping_follows_x25519() {
        let key = PrivateKey::from_bytes_clamped([0xff; 32]);
        assert_eq!(key.expose_bytes()[0], 0xf8);
        assert_eq!(key.expose_bytes()[31], 0x7f);
        let key = PrivateKey::from_bytes_clamped([0; 32]);
        assert_eq!(key.expose_bytes()[31], 0x40);
    }

    #[test]
    fn known_public_key() {
        // RFC 7748 §6.1: Alice's private key and public key.
        let private =
            hex::decode("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
                .unwrap();
        let key = PrivateKey::from_bytes_clamped(private.try_into().unwrap());
        assert_eq!(
            key.public_key().to_hex(),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
    }

    #[test]
    fn bad_text_is_named() {
        assert_eq!(PublicKey::from_base64("!!"), Err(KeyError::Base64));
        assert_eq!(PublicKey::from_base64("AAAA"), Err(KeyError::Length(3)));
        assert_eq!(PublicKey::from_hex("zz"), Err(KeyError::Hex));
    }

    proptest! {
        #[test]
        fn encodings_round_trip(bytes in any::<[u8; 32]>()) {
            let key = PublicKey::from_bytes(bytes);
            prop_assert_eq!(PublicKey::from_base64(&key.to_base64()).unwrap(), key);
            prop_assert_eq!(PublicKey::from_hex(&key.to_hex()).unwrap(), key);
            let json = serde_json::to_string(&key).unwrap();
            prop_assert_eq!(serde_json::from_str::<PublicKey>(&json).unwrap(), key);
        }
    }
}
