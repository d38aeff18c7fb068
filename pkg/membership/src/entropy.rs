//! Randomness for the exchange's nonces and challenges, from a seed the shell provides once.
//!
//! The core reads no OS randomness: the same seed and the same inputs give the same datagrams,
//! which is what lets the simulator replay a failing scenario. Each draw is BLAKE3 keyed by the
//! seed over a counter (a PRF), so draws never repeat and cannot be predicted without the seed.

use wgmesh_exchange::{ENTROPY_LEN, Entropy};

pub struct EntropySource {
    seed: [u8; 32],
    counter: u64,
}

impl std::fmt::Debug for EntropySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The seed stays out of logs: it would let a reader predict our challenges.
        f.debug_struct("EntropySource")
            .field("draws", &self.counter)
            .finish_non_exhaustive()
    }
}

impl EntropySource {
    pub fn new(seed: [u8; 32]) -> Self {
        Self { seed, counter: 0 }
    }

    pub fn next_entropy(&mut self) -> Entropy {
        let mut hasher = blake3::Hasher::new_keyed(&self.seed);
        hasher.update(&self.counter.to_le_bytes());
        self.counter = self.counter.wrapping_add(1);
        let mut bytes = [0u8; ENTROPY_LEN];
        hasher.finalize_xof().fill(&mut bytes);
        Entropy::from_bytes(bytes)
    }

    /// A random number from the same stream (shuffles and random choices).
    pub fn next_u64(&mut self) -> u64 {
        let nonce = self.next_entropy().nonce;
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&nonce[..8]);
        u64::from_le_bytes(bytes)
    }

    /// A random index below `n` (0 for an empty range), for shuffles and random choices.
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_draws_and_no_repeats() {
        let mut a = EntropySource::new([7; 32]);
        let mut b = EntropySource::new([7; 32]);
        let first = a.next_entropy();
        assert_eq!(first.nonce, b.next_entropy().nonce);
        assert_ne!(first.nonce, a.next_entropy().nonce);
        let mut c = EntropySource::new([8; 32]);
        assert_ne!(first.nonce, c.next_entropy().nonce);
    }
}
