//! The master key and everything the network shares, plus each node's own key.

use crate::secret::Secret;
use ipnet::{Ipv4Net, Ipv6Net};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use wgmesh_keys::{PresharedKey, PrivateKey, PublicKey};
use zeroize::{Zeroize, ZeroizeOnDrop};

const ARGON2_SALT: &[u8] = b"wgmesh/v1/argon2id";
const ARGON2_M_KIB: u32 = 65_536;
const ARGON2_T: u32 = 3;
const ARGON2_P: u32 = 1;
const CONTROL_PORT_BASE: u16 = 51_821;
const CONTROL_PORT_SPAN: u16 = 1_000;

/// The purposes of BLAKE3 sub-keys; each becomes the context `"wgmesh v1 " + purpose`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Purpose {
    NetworkId,
    ExchangeKey,
    PresharedKey,
    Ipv4Subnet,
    Ipv6Prefix,
    Ipv4Host,
    Ipv6Host,
    ControlPort,
    LanGroup,
    DhtInfohash,
    DhtItemSigning,
    DhtItemSeal,
    NodeKey,
}

impl Purpose {
    fn context(self) -> &'static str {
        match self {
            Self::NetworkId => "wgmesh v1 network id",
            Self::ExchangeKey => "wgmesh v1 exchange key",
            Self::PresharedKey => "wgmesh v1 preshared key",
            Self::Ipv4Subnet => "wgmesh v1 ipv4 subnet",
            Self::Ipv6Prefix => "wgmesh v1 ipv6 prefix",
            Self::Ipv4Host => "wgmesh v1 ipv4 host",
            Self::Ipv6Host => "wgmesh v1 ipv6 host",
            Self::ControlPort => "wgmesh v1 control port",
            Self::LanGroup => "wgmesh v1 lan group",
            Self::DhtInfohash => "wgmesh v1 dht infohash",
            Self::DhtItemSigning => "wgmesh v1 dht item signing",
            Self::DhtItemSeal => "wgmesh v1 dht item seal",
            Self::NodeKey => "wgmesh v1 node key",
        }
    }
}

/// Everything derived from the shared secret. Holds key material: never printed, zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MeshKeys {
    master: [u8; 32],
}

impl MeshKeys {
    /// Runs Argon2id over the secret (the slow step: ~64 MiB, three passes) and keeps the master
    /// key. Every other value is a cheap BLAKE3 derivation from it.
    #[expect(
        clippy::expect_used,
        reason = "the parameters are protocol constants and a secret is at least 16 bytes: Argon2 accepts them"
    )]
    pub fn derive(secret: &Secret) -> Self {
        let params = argon2::Params::new(ARGON2_M_KIB, ARGON2_T, ARGON2_P, Some(32))
            .expect("protocol constants are valid Argon2 parameters");
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut master = [0u8; 32];
        argon
            .hash_password_into(secret.key_material(), ARGON2_SALT, &mut master)
            .expect("token length >= 16 and salt length 18 are valid");
        Self { master }
    }

    pub(crate) fn subkey(&self, purpose: Purpose) -> [u8; 32] {
        blake3::derive_key(purpose.context(), &self.master)
    }

    /// Identifies the network; safe to show (it is a one-way function of the master key).
    pub fn network_id(&self) -> [u8; 32] {
        self.subkey(Purpose::NetworkId)
    }

    /// The key that gates the exchange protocol.
    pub fn exchange_key(&self) -> [u8; 32] {
        self.subkey(Purpose::ExchangeKey)
    }

    pub fn preshared_key(&self) -> PresharedKey {
        PresharedKey::from_bytes(self.subkey(Purpose::PresharedKey))
    }

    /// `10.X.0.0/16` with `X = K(ipv4 subnet)[0]`.
    pub fn ipv4_subnet(&self) -> Ipv4Net {
        let x = self.subkey(Purpose::Ipv4Subnet)[0];
        Ipv4Net::new_assert(Ipv4Addr::new(10, x, 0, 0), 16)
    }

    /// `fd` ‖ `K(ipv6 prefix)[0..7]`, a /64 unique local prefix.
    pub fn ipv6_prefix(&self) -> Ipv6Net {
        let k = self.subkey(Purpose::Ipv6Prefix);
        let mut octets = [0u8; 16];
        octets[0] = 0xfd;
        octets[1..8].copy_from_slice(&k[0..7]);
        Ipv6Net::new_assert(Ipv6Addr::from(octets), 64)
    }

    /// Default control port: `51821 + u16(K(control port)[0..2]) % 1000`.
    pub fn control_port(&self) -> u16 {
        let k = self.subkey(Purpose::ControlPort);
        CONTROL_PORT_BASE + u16::from_be_bytes([k[0], k[1]]) % CONTROL_PORT_SPAN
    }

    /// LAN multicast group `239.192.K[0].K[1]` (organisation-local scope, RFC 2365).
    pub fn lan_group(&self) -> Ipv4Addr {
        let k = self.subkey(Purpose::LanGroup);
        Ipv4Addr::new(239, 192, k[0], k[1])
    }

    /// The DHT infohash for the hour `epoch_hour = unix_time / 3600`.
    pub fn dht_infohash(&self, epoch_hour: u64) -> [u8; 20] {
        let key = self.subkey(Purpose::DhtInfohash);
        let hash = blake3::keyed_hash(&key, &epoch_hour.to_be_bytes());
        let mut out = [0u8; 20];
        out.copy_from_slice(&hash.as_bytes()[..20]);
        out
    }

    /// The keys of the BEP 44 rendezvous (`--dht bep44`): every member signs the hourly item with
    /// the same Ed25519 key (only holders of the secret can write it) and seals its contents
    /// with the same AEAD key (DHT nodes that store it cannot read the members' addresses).
    pub fn dht_item_keys(&self) -> DhtItemKeys {
        DhtItemKeys {
            signing_seed: self.subkey(Purpose::DhtItemSigning),
            seal: self.subkey(Purpose::DhtItemSeal),
        }
    }

    /// The node's WireGuard private key: `keyed_hash(K(node key), seed)`, clamped.
    pub fn node_private_key(&self, seed: &NodeSeed) -> PrivateKey {
        let key = self.subkey(Purpose::NodeKey);
        PrivateKey::from_bytes_clamped(*blake3::keyed_hash(&key, &seed.0).as_bytes())
    }

    pub fn node_public_key(&self, seed: &NodeSeed) -> PublicKey {
        self.node_private_key(seed).public_key()
    }
}

impl fmt::Debug for MeshKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MeshKeys(<redacted>)")
    }
}

/// Key material of the BEP 44 rendezvous; never printed, zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct DhtItemKeys {
    /// The Ed25519 signing key's seed: `K(dht item signing)`.
    pub signing_seed: [u8; 32],
    /// The ChaCha20-Poly1305 key of the item's contents: `K(dht item seal)`.
    pub seal: [u8; 32],
}

impl fmt::Debug for DhtItemKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DhtItemKeys(<redacted>)")
    }
}

/// Why a node seed could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SeedError {
    #[error("node seed must be 64 hex characters (32 bytes), got {0} characters")]
    Length(usize),
    #[error("node seed is not valid hex")]
    NotHex,
}

/// The 32 random bytes a node keeps in its identity file; with the secret they fix its key.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct NodeSeed([u8; 32]);

impl NodeSeed {
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        Ok(Self(bytes))
    }

    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn from_hex(text: &str) -> Result<Self, SeedError> {
        let text = text.trim();
        if text.len() != 64 {
            return Err(SeedError::Length(text.len()));
        }
        // `from_str_radix` alone would also accept a sign ("+5"), so check the digits first.
        if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(SeedError::NotHex);
        }
        let mut bytes = [0u8; 32];
        for (i, chunk) in text.as_bytes().chunks(2).enumerate() {
            let pair = std::str::from_utf8(chunk).map_err(|_| SeedError::NotHex)?;
            bytes[i] = u8::from_str_radix(pair, 16).map_err(|_| SeedError::NotHex)?;
        }
        Ok(Self(bytes))
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for NodeSeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeSeed(<redacted>)")
    }
}
