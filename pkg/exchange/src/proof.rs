//! Proof of possession of a WireGuard static key: a MAC keyed by the static-static X25519 secret.
//!
//! `key = BLAKE3.derive_key("wgmesh v1 exchange proof", DH(sender, recipient) ‖ K(exchange key))`,
//! `mac = BLAKE3.keyed_hash(key, transcript)` where the transcript is every plaintext byte before
//! the MAC (type byte, both keys, timestamp, the recipient's challenge, the record).
//!
//! Only the holders of the two private keys can compute the DH; the recipient knows it did not
//! send the message, so a valid MAC proves the sender holds its private key. Mixing in the
//! exchange key keeps the proof inside this mesh. No handshake state or ephemeral keys are needed,
//! which keeps the state machine small; the cost (no forward secrecy for the record, and key
//! compromise impersonation: whoever steals B's private key can pose as anyone *to B*) is
//! acceptable because records are not secret from members and a stolen key already owns that node.

use crate::codec::MAC_LEN;
use wgmesh_keys::{PrivateKey, PublicKey, SharedSecret};
use zeroize::Zeroizing;

const PROOF_CONTEXT: &str = "wgmesh v1 exchange proof";

/// The MAC key shared by us and `peer`, or `None` when the peer's key is a low-order point: then
/// X25519 yields all zeros, the "shared" secret is known to everyone, and the proof would be void.
pub(crate) fn mac_key(
    private_key: &PrivateKey,
    peer: &PublicKey,
    exchange_key: &[u8; 32],
) -> Option<Zeroizing<[u8; 32]>> {
    from_shared(&private_key.diffie_hellman(peer), exchange_key)
}

/// The MAC key from the X25519 secret shared with a peer (see [`mac_key`]).
pub(crate) fn from_shared(
    shared: &SharedSecret,
    exchange_key: &[u8; 32],
) -> Option<Zeroizing<[u8; 32]>> {
    // Not constant-time, but it only reveals whether the result is all-zero, which any observer
    // can compute from the public key alone.
    if shared.expose_bytes().iter().all(|&b| b == 0) {
        return None;
    }
    let mut input = Zeroizing::new([0u8; 64]);
    input[..32].copy_from_slice(shared.expose_bytes());
    input[32..].copy_from_slice(exchange_key);
    Some(Zeroizing::new(blake3::derive_key(PROOF_CONTEXT, &*input)))
}

pub(crate) fn compute(key: &[u8; 32], transcript: &[u8]) -> [u8; MAC_LEN] {
    *blake3::keyed_hash(key, transcript).as_bytes()
}

/// Constant-time comparison (`blake3::Hash`'s equality is).
pub(crate) fn verify(key: &[u8; 32], transcript: &[u8], mac: &[u8; MAC_LEN]) -> bool {
    blake3::keyed_hash(key, transcript) == blake3::Hash::from_bytes(*mac)
}
