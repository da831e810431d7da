//! The hash of the engine's service and operation tables.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

/// The hash of the service and operation tables: one multiply-rotate per 8 bytes, seeded per
/// engine. SipHash (std's default) cost a third of the per-span time; the tables hold only the
/// operations rules name plus at most `max_operations` others, which bounds what colliding
/// names sent on purpose could cost.
#[derive(Debug, Clone, Copy)]
pub(super) struct Seeded(u64);

impl Seeded {
    pub(super) fn random() -> Self {
        Self(std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64))
    }
}

impl BuildHasher for Seeded {
    type Hasher = WordHasher;

    fn build_hasher(&self) -> WordHasher {
        WordHasher(self.0)
    }
}

/// See [`Seeded`].
#[derive(Debug, Clone, Copy)]
pub(super) struct WordHasher(u64);

const K: u64 = 0xf135_7aea_2e62_a9c5;

impl WordHasher {
    #[inline]
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(K);
    }
}

impl Hasher for WordHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.mix(u64::from(i));
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.mix(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // The table takes its bucket from the low bits and a tag from the top 7: mix both.
        let h = self.0 ^ (self.0 >> 29);
        h.wrapping_mul(K).rotate_left(26)
    }
}

pub(super) type FastMap<V> = HashMap<Box<str>, V, Seeded>;
