//! Hashing of pooler-wide statement keys (128 bits of SHA-256) for the per-server maps that
//! every prepared transaction looks up, and of clients' statement names: two folded multiplies
//! of the key with a random per-process seed, about fifteen instructions where SipHash takes
//! over a hundred. One fold is not enough: with one half of the key fixed, the low bits it gives
//! barely move. The seed keeps a client that picks statement texts or names from aiming them at
//! one bucket (the fold mixes every key bit into the low bits the table indexes by, so
//! collisions cannot be found without the seed).

use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

/// The seed, drawn once per process.
fn seed() -> [u64; 2] {
    static SEED: OnceLock<[u64; 2]> = OnceLock::new();
    *SEED.get_or_init(rand::random)
}

/// The `BuildHasher` of maps keyed by statement keys.
#[derive(Debug, Clone, Copy)]
pub struct KeyHash([u64; 2]);

impl Default for KeyHash {
    fn default() -> KeyHash {
        KeyHash(seed())
    }
}

impl BuildHasher for KeyHash {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher { seed: self.0, hash: 0 }
    }
}

pub struct KeyHasher {
    seed: [u64; 2],
    hash: u64,
}

/// An odd constant with bits spread evenly (the 64-bit golden ratio).
const MIX: u64 = 0x9e37_79b9_7f4a_7c15;

/// The high and low halves of a full 64 × 64 multiply, folded together.
#[inline]
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

impl Hasher for KeyHasher {
    #[inline]
    fn write_u128(&mut self, key: u128) {
        let [s0, s1] = self.seed;
        let h = fold((key as u64) ^ s0, ((key >> 64) as u64) ^ s1 ^ self.hash);
        // The second fold spreads every bit of `h` over the low bits the table indexes by.
        self.hash = fold(h ^ s1, MIX);
    }

    /// Byte strings (clients' statement names), 8 bytes at a time, each word with its length.
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u128(u128::from(u64::from_le_bytes(word)) | (u128::from(chunk.len() as u64) << 64));
        }
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Buckets of 256 used by 320 structured keys: keys equal in their low 64 bits, and keys
    /// equal but for one high bit. A hash that passed either half through would put each group
    /// in one bucket; a random function fills about 183.
    fn buckets_used(build: KeyHash) -> usize {
        let hashes: std::collections::HashSet<u64> = (0..256u128)
            .map(|i| build.hash_one((i << 64) | 0xdead_beef))
            .chain((0..64u32).map(|b| build.hash_one(1u128 << (64 + b))))
            .map(|h| h & 0xff)
            .collect();
        hashes.len()
    }

    #[test]
    fn keys_that_share_low_bits_spread_over_buckets() {
        // Seeds from a fixed sequence (a splitmix walk), so the test sees the same 2,000 seeds
        // on every run (a single fold left some random seeds weak: CI drew one).
        let mut state = 0u64;
        let mut next = || {
            state = state.wrapping_add(MIX);
            let z = (state ^ (state >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z ^ (z >> 31)
        };
        let seeds: Vec<[u64; 2]> = (0..2000).map(|_| [next(), next()]).collect();
        let worst = seeds.iter().map(|&s| buckets_used(KeyHash(s))).min().unwrap_or(0);
        assert!(worst > 150, "only {worst} of 256 buckets used for some seed");
    }

    #[test]
    fn one_seed_per_process() {
        let build = KeyHash::default();
        assert_eq!(
            build.hash_one(42u128),
            KeyHash::default().hash_one(42u128),
            "one seed per process"
        );
    }
}
