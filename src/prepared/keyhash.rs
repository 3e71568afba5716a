//! Hashing of pooler-wide statement keys (128 bits of SHA-256) for the per-server maps that
//! every prepared transaction looks up: a folded multiply of the key with a random per-process
//! seed, about ten instructions where SipHash takes over a hundred. The seed keeps a client that
//! picks statement texts from aiming their keys at one bucket (the fold mixes every key bit
//! into the low bits the table indexes by, so collisions cannot be found without the seed).

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
        self.hash = fold((key as u64) ^ s0, ((key >> 64) as u64) ^ s1 ^ self.hash);
    }

    /// Not used by u128 keys; kept correct for any other input, 8 bytes at a time.
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

    #[test]
    fn keys_that_share_low_bits_spread_over_buckets() {
        let build = KeyHash::default();
        // Keys equal in their low 64 bits, and keys equal but for one high bit: a hash that
        // passed the low bits through would put each group in one bucket.
        let hashes: std::collections::HashSet<u64> = (0..256u128)
            .map(|i| build.hash_one((i << 64) | 0xdead_beef))
            .chain((0..64u32).map(|b| build.hash_one(1u128 << (64 + b))))
            .map(|h| h & 0xff)
            .collect();
        assert!(hashes.len() > 150, "only {} of 256 buckets used", hashes.len());
        assert_eq!(
            build.hash_one(42u128),
            KeyHash::default().hash_one(42u128),
            "one seed per process"
        );
    }
}
