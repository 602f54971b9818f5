//! Keys, their stable hash, and key groups.
//!
//! A key is hashed with [`StableHasher`] (xxh3 over a little-endian encoding of the key's
//! `Hash` writes), so that a key maps to the same key group on every run and every machine.
//! Key groups (`0..max_parallelism`) are the unit in which keyed state is assigned to subtasks
//! and, later, redistributed on rescale: subtask `i` of `p` owns one contiguous
//! [`KeyGroupRange`].

use std::hash::{Hash, Hasher};
use std::ops::RangeInclusive;

use serde::Serialize;
use serde::de::DeserializeOwned;

use xxhash_rust::xxh3::{Xxh3Default, xxh3_64};

/// The default number of key groups, and so the largest parallelism a keyed operator can have.
pub const DEFAULT_MAX_PARALLELISM: u32 = 128;

/// The largest max parallelism we accept: key groups are `u16`-sized in snapshots to come.
pub const MAX_MAX_PARALLELISM: u32 = 32_768;

/// The bounds a key must meet: hashable and comparable for routing and state lookup, owned,
/// sendable and clonable like any [`Data`](crate::Data), and serializable for state snapshots.
pub trait Key: Hash + Eq + Clone + Send + Serialize + DeserializeOwned + 'static {}
impl<K: Hash + Eq + Clone + Send + Serialize + DeserializeOwned + 'static> Key for K {}

/// A `Hasher` whose result does not depend on the run, the process or the machine.
///
/// `std`'s integer writes use native-endian bytes and `usize` has the machine's width; this
/// hasher encodes every integer as little-endian and `usize`/`isize` as 64 bits, then hashes the
/// bytes with xxh3 (a specified, portable function). Keys up to [`INLINE_BYTES_MAX`] bytes are
/// gathered on the stack and hashed in one call; longer ones stream. Both give xxh3 of the
/// concatenated bytes.
#[derive(Clone)]
pub struct StableHasher {
    inline: [u8; INLINE_BYTES_MAX],
    inline_len: usize,
    streaming: Option<Box<Xxh3Default>>,
}

/// The key size up to which [`StableHasher`] hashes in one call, without a streaming state.
pub const INLINE_BYTES_MAX: usize = 64;

impl Default for StableHasher {
    #[inline]
    fn default() -> Self {
        StableHasher {
            inline: [0; INLINE_BYTES_MAX],
            inline_len: 0,
            streaming: None,
        }
    }
}

impl StableHasher {
    /// A hasher with the fixed default seed.
    pub fn new() -> Self {
        Self::default()
    }
}

macro_rules! write_le {
    ($($method:ident: $ty:ty),* $(,)?) => {
        $(#[inline]
        fn $method(&mut self, value: $ty) {
            self.write(&value.to_le_bytes());
        })*
    };
}

impl Hasher for StableHasher {
    #[inline]
    fn finish(&self) -> u64 {
        match &self.streaming {
            Some(state) => state.digest(),
            None => xxh3_64(&self.inline[..self.inline_len]),
        }
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        if let Some(state) = &mut self.streaming {
            state.update(bytes);
        } else if let Some(free) = self
            .inline
            .get_mut(self.inline_len..self.inline_len + bytes.len())
        {
            free.copy_from_slice(bytes);
            self.inline_len += bytes.len();
        } else {
            let mut state = Box::new(Xxh3Default::new());
            state.update(&self.inline[..self.inline_len]);
            state.update(bytes);
            self.streaming = Some(state);
        }
    }

    write_le!(
        write_u16: u16, write_u32: u32, write_u64: u64, write_u128: u128,
        write_i8: i8, write_i16: i16, write_i32: i32, write_i64: i64, write_i128: i128,
    );

    #[inline]
    fn write_u8(&mut self, value: u8) {
        self.write(&[value]);
    }

    #[inline]
    fn write_usize(&mut self, value: usize) {
        self.write_u64(value as u64);
    }

    #[inline]
    fn write_isize(&mut self, value: isize) {
        self.write_i64(value as i64);
    }
}

/// The stable 64-bit hash of a key.
#[inline]
pub fn stable_hash<K: Hash + ?Sized>(key: &K) -> u64 {
    let mut hasher = StableHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

/// The key group (in `0..max_parallelism`) a key belongs to.
///
/// The hash is scaled into the range by a multiply and a shift (the high bits of
/// `hash * max_parallelism`) rather than a modulo: as uniform for a good hash, and it costs no
/// division on the per-record path.
#[inline]
pub fn key_group_of<K: Hash + ?Sized>(key: &K, max_parallelism: u32) -> u32 {
    key_group_of_hash(stable_hash(key), max_parallelism)
}

/// The key group of a key whose [`stable_hash`] is `hash`. Larger hashes never fall into
/// smaller key groups.
#[inline]
pub fn key_group_of_hash(hash: u64, max_parallelism: u32) -> u32 {
    debug_assert!(max_parallelism > 0);
    ((u128::from(hash) * u128::from(max_parallelism)) >> 64) as u32
}

/// The subtask (in `0..parallelism`) that owns a key group.
pub fn subtask_for_key_group(key_group: u32, parallelism: u32, max_parallelism: u32) -> u32 {
    debug_assert!(key_group < max_parallelism && parallelism <= max_parallelism);
    (u64::from(key_group) * u64::from(parallelism) / u64::from(max_parallelism)) as u32
}

/// A contiguous range of key groups, both ends included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyGroupRange {
    /// The first key group of the range.
    pub start: u32,
    /// The last key group of the range.
    pub end: u32,
}

impl KeyGroupRange {
    /// The key groups subtask `index` of `parallelism` owns: the inverse of
    /// [`subtask_for_key_group`].
    pub fn for_subtask(index: u32, parallelism: u32, max_parallelism: u32) -> Self {
        debug_assert!(index < parallelism && parallelism <= max_parallelism);
        let (index, parallelism, max) = (
            u64::from(index),
            u64::from(parallelism),
            u64::from(max_parallelism),
        );
        let start = (index * max).div_ceil(parallelism);
        let end = ((index + 1) * max - 1) / parallelism;
        KeyGroupRange {
            start: start as u32,
            end: end as u32,
        }
    }

    /// Whether the range holds a key group.
    pub fn contains(&self, key_group: u32) -> bool {
        (self.start..=self.end).contains(&key_group)
    }

    /// The key groups of the range.
    pub fn iter(&self) -> RangeInclusive<u32> {
        self.start..=self.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn stable_hash_is_fixed() {
        // Pinned values: if these change, every key moves to another key group and every
        // savepoint taken before the change restores state into the wrong subtasks.
        assert_eq!(stable_hash(&42u64), 0xd5a6_f8c8_38df_27c8);
        assert_eq!(
            stable_hash(&42u64),
            xxhash_rust::xxh3::xxh3_64(&42u64.to_le_bytes())
        );
        assert_eq!(stable_hash("rill"), stable_hash(&String::from("rill")));
        assert_eq!(stable_hash(&7usize), stable_hash(&7u64));
    }

    #[test]
    fn long_keys_hash_like_short_ones() {
        let long = "k".repeat(3 * INLINE_BYTES_MAX);
        let mut expected = long.as_bytes().to_vec();
        expected.push(0xff); // `str`'s `Hash` ends with this separator byte.
        assert_eq!(stable_hash(long.as_str()), xxh3_64(&expected));
        let mut pieces = StableHasher::new();
        for chunk in expected.chunks(7) {
            pieces.write(chunk);
        }
        assert_eq!(pieces.finish(), xxh3_64(&expected));
    }

    proptest! {
        #[test]
        fn key_group_ranges_are_contiguous_and_cover_all(
            max in 1u32..2048,
            parallelism_seed in 1u32..2048,
        ) {
            let parallelism = 1 + parallelism_seed % max;
            let mut next = 0;
            for index in 0..parallelism {
                let range = KeyGroupRange::for_subtask(index, parallelism, max);
                prop_assert_eq!(range.start, next, "ranges must be contiguous");
                prop_assert!(range.end >= range.start, "no subtask is left without key groups");
                for group in range.iter() {
                    prop_assert_eq!(subtask_for_key_group(group, parallelism, max), index);
                }
                next = range.end + 1;
            }
            prop_assert_eq!(next, max, "ranges must cover 0..max");
        }

        #[test]
        fn a_key_always_reaches_the_same_group(key in any::<String>(), max in 1u32..1024) {
            let group = key_group_of(&key, max);
            prop_assert!(group < max);
            prop_assert_eq!(group, key_group_of(&key.clone(), max));
        }
    }
}
