//! Randomness for the exchange's nonces and challenges, from a seed the shell provides once.
//!
//! The core reads no OS randomness: the same seed and the same inputs give the same datagrams,
//! which is what lets the simulator replay a failing scenario. The draws are BLAKE3's extendable
//! output keyed by the seed (a PRF stream): they cannot be predicted without the seed, and the
//! stream is read a block of [`BUFFER_LEN`] bytes at a time (one keyed hash per datagram's
//! nonce cost more than sealing the datagram did).

use wgmesh_exchange::{ENTROPY_LEN, Entropy};

/// Bytes taken from the keyed stream at a time.
const BUFFER_LEN: usize = 1_024;

pub struct EntropySource {
    stream: blake3::OutputReader,
    buffer: Box<[u8; BUFFER_LEN]>,
    /// How much of `buffer` has been handed out.
    used: usize,
    draws: u64,
}

impl std::fmt::Debug for EntropySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The seed stays out of logs: it would let a reader predict our challenges.
        f.debug_struct("EntropySource")
            .field("draws", &self.draws)
            .finish_non_exhaustive()
    }
}

impl EntropySource {
    pub fn new(seed: [u8; 32]) -> Self {
        let stream = blake3::Hasher::new_keyed(&seed)
            .update(b"wgmesh membership entropy v1")
            .finalize_xof();
        Self {
            stream,
            buffer: Box::new([0; BUFFER_LEN]),
            used: BUFFER_LEN,
            draws: 0,
        }
    }

    /// The next `N` bytes of the stream.
    fn take<const N: usize>(&mut self) -> [u8; N] {
        const { assert!(N <= BUFFER_LEN) };
        if BUFFER_LEN - self.used < N {
            self.stream.fill(&mut self.buffer[..]);
            self.used = 0;
        }
        let mut bytes = [0u8; N];
        bytes.copy_from_slice(&self.buffer[self.used..self.used + N]);
        // Handed-out bytes do not stay behind in memory.
        self.buffer[self.used..self.used + N].fill(0);
        self.used += N;
        self.draws = self.draws.wrapping_add(1);
        bytes
    }

    pub fn next_entropy(&mut self) -> Entropy {
        Entropy::from_bytes(self.take::<ENTROPY_LEN>())
    }

    /// A random number from the same stream (shuffles and random choices).
    pub fn next_u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take::<8>())
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
