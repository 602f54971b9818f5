//! fjall's journal files, read as fjall replays them, to find the batches it would refuse.
//!
//! fjall (3.x) writes each atomic batch to its journal as a start marker (item count, sequence
//! number), its items (a put or delete each) and an end marker holding the xxh3 checksum of the
//! items' bytes and a trailer. On open it replays the journals: where the framing breaks (an
//! unknown tag, a short read: an unfinished write) it cuts the journal silently (see
//! [`crate::fjall_storage`]), but a complete batch whose checksum fails — one flipped byte in a
//! value — makes the whole database refuse to open. This module reads that framing to find such
//! batches, so that an open that fails can name the file and bytes at fault, and a read-only
//! open can leave the batch out of its copy and report it ([`SkippedBatch`]), reading all the
//! rest. Where the framing itself breaks (a flipped length) but intact batches follow, fjall
//! would cut them off with it; a read-only open leaves out only the broken stretch, up to the
//! next intact batch. It reads what fjall 3 writes (its trailer says `FJL` 3); tests in
//! `tests/it/directory.rs` (and `rill-log`'s `tests/it/damage.rs`) pin it against journals
//! fjall writes. A journal is read whole into memory: fjall keeps at most 512 MiB of journals
//! by default before it flushes them into tables.

use std::ops::Range;
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::Xxh3;

/// A damaged stretch of a journal, which a read-only open leaves out of its copy.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "journal {} holds a damaged batch at bytes {}..{} ({cause}): the writes in it are lost",
    journal.display(), bytes.start, bytes.end
)]
pub struct SkippedBatch {
    /// The journal file (in the original directory, also when a copy was opened).
    pub journal: PathBuf,
    /// Where the damage lies in the journal: from a batch's start marker to the end of its end
    /// marker, or to the start of the next intact batch.
    pub bytes: Range<u64>,
    /// What is wrong there.
    pub cause: JournalDamage,
}

/// What is wrong with a damaged stretch of a journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JournalDamage {
    /// A complete batch whose checksum or item count fails: fjall refuses the database.
    #[error("its checksum fails; fjall refuses to open the database")]
    Checksum,
    /// The framing breaks, and an intact batch follows: opening for writing cuts the journal
    /// here, dropping the intact batches after it too.
    #[error(
        "its framing breaks; opening for writing cuts the journal here, dropping the intact \
         batches after it"
    )]
    Framing,
}

/// The end marker's trailer: fjall's magic bytes, format 3.
const TRAILER: [u8; 4] = [b'F', b'J', b'L', 3];
const TAG_START: u8 = 1;
const TAG_ITEM: u8 = 2;
const TAG_END: u8 = 3;
const TAG_CLEAR: u8 = 4;
/// A start marker: tag, item count (u32), sequence number (u64).
const START_BYTES: usize = 1 + 4 + 8;
/// An item before its key and value: tag, value type, compression, key space (u64), key length
/// (u16), value length (u32), stored value length (u32).
const ITEM_HEADER_BYTES: usize = 1 + 1 + 1 + 8 + 2 + 4 + 4;
/// An end marker: tag, checksum (u64), trailer.
const END_BYTES: usize = 1 + 8 + TRAILER.len();
/// A clear marker: tag, key space (u64).
const CLEAR_BYTES: usize = 1 + 8;

/// Reads a little-endian unsigned integer of `N` bytes at `at`, if the journal holds it.
fn le_bytes<const N: usize>(journal: &[u8], at: usize) -> Option<[u8; N]> {
    journal.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// The length of the entry at `at` and its tag, or `None` where fjall's replay stops reading.
fn entry_at(journal: &[u8], at: usize) -> Option<(u8, usize)> {
    let tag = *journal.get(at)?;
    let len = match tag {
        TAG_START => START_BYTES,
        TAG_ITEM => {
            let key = u16::from_le_bytes(le_bytes(journal, at + 11)?);
            let stored_value = u32::from_le_bytes(le_bytes(journal, at + 17)?);
            ITEM_HEADER_BYTES + usize::from(key) + usize::try_from(stored_value).ok()?
        }
        TAG_END => {
            if le_bytes::<4>(journal, at + 9)? != TRAILER {
                return None;
            }
            END_BYTES
        }
        TAG_CLEAR => CLEAR_BYTES,
        _ => return None,
    };
    (at.checked_add(len)? <= journal.len()).then_some((tag, len))
}

/// Whether the batch at `at` is intact, and where it ends; `None` where its framing breaks (an
/// unknown tag, a length past the end, a start marker inside it, no end marker), where fjall's
/// replay stops reading and cuts the journal.
fn batch_at(journal: &[u8], at: usize) -> Option<(usize, bool)> {
    let (TAG_START, start_len) = entry_at(journal, at)? else {
        return None;
    };
    let announced = u32::from_le_bytes(le_bytes(journal, at + 1)?);
    let mut items = 0u32;
    let mut checksum = Xxh3::new();
    let mut next = at + start_len;
    loop {
        let (tag, len) = entry_at(journal, next)?;
        match tag {
            TAG_ITEM | TAG_CLEAR => {
                checksum.update(&journal[next..next + len]);
                items = items.saturating_add(1);
            }
            TAG_END => {
                let expected = u64::from_le_bytes(le_bytes(journal, next + 1)?);
                let intact = checksum.digest() == expected && items == announced;
                return Some((next + len, intact));
            }
            _ => return None,
        }
        next += len;
    }
}

/// The damaged stretches of `journal` (a journal file's bytes), in file order: complete
/// batches whose checksum or item count fails, which make fjall refuse the database; and
/// stretches where the framing breaks but an intact batch follows, where fjall would cut the
/// journal and drop that batch and all after it. A break that no intact batch follows (an
/// unfinished last write, the preallocated zeros) is where fjall's replay ends: not listed.
pub(crate) fn damaged_batches(journal: &[u8]) -> Vec<(Range<usize>, JournalDamage)> {
    let mut damaged = Vec::new();
    let mut at = 0;
    while at < journal.len() {
        match batch_at(journal, at) {
            Some((end, true)) => at = end,
            Some((end, false)) => {
                damaged.push((at..end, JournalDamage::Checksum));
                at = end;
            }
            None => {
                let next_intact = (at + 1..journal.len()).find(|&next| {
                    journal[next] == TAG_START && matches!(batch_at(journal, next), Some((_, true)))
                });
                let Some(next) = next_intact else {
                    break;
                };
                damaged.push((at..next, JournalDamage::Framing));
                at = next;
            }
        }
    }
    damaged
}

/// The journals (`*.jnl`) directly in `dir`, in name order.
pub(crate) fn journals(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let mut journals = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "jnl") {
            journals.push(path);
        }
    }
    journals.sort();
    Ok(journals)
}

/// What [`damaged_in`] does with the damaged batches it finds.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnDamage {
    /// Only reports them.
    Report,
    /// Rewrites each journal without them (fjall then replays the batches before and after).
    LeaveOut,
}

/// The damaged batches of every journal in `dir`, named as if they were in `named_in`.
pub(crate) fn damaged_in(
    dir: &Path,
    named_in: &Path,
    on_damage: OnDamage,
) -> std::io::Result<Vec<SkippedBatch>> {
    let mut found = Vec::new();
    for journal in journals(dir)? {
        let bytes = std::fs::read(&journal)?;
        let damaged = damaged_batches(&bytes);
        if damaged.is_empty() {
            continue;
        }
        if on_damage == OnDamage::LeaveOut {
            let mut kept = Vec::with_capacity(bytes.len());
            let mut from = 0;
            for (range, _) in &damaged {
                kept.extend_from_slice(&bytes[from..range.start]);
                from = range.end;
            }
            kept.extend_from_slice(&bytes[from..]);
            std::fs::write(&journal, &kept)?;
        }
        let name = journal
            .file_name()
            .map_or_else(|| journal.clone(), |name| named_in.join(name));
        found.extend(damaged.into_iter().map(|(range, cause)| SkippedBatch {
            journal: name.clone(),
            bytes: range.start as u64..range.end as u64,
            cause,
        }));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A batch as fjall frames it, of puts of `items` (key, value) into key space 7.
    fn batch(items: &[(&[u8], &[u8])], checksum_delta: u64) -> Vec<u8> {
        let mut bytes = vec![TAG_START];
        bytes.extend_from_slice(&(items.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&42u64.to_le_bytes());
        let mut checksum = Xxh3::new();
        for (key, value) in items {
            let mut item = vec![TAG_ITEM, 0, 0];
            item.extend_from_slice(&7u64.to_le_bytes());
            item.extend_from_slice(&(key.len() as u16).to_le_bytes());
            item.extend_from_slice(&(value.len() as u32).to_le_bytes());
            item.extend_from_slice(&(value.len() as u32).to_le_bytes());
            item.extend_from_slice(key);
            item.extend_from_slice(value);
            checksum.update(&item);
            bytes.extend_from_slice(&item);
        }
        bytes.push(TAG_END);
        bytes.extend_from_slice(&(checksum.digest() ^ checksum_delta).to_le_bytes());
        bytes.extend_from_slice(&TRAILER);
        bytes
    }

    #[test]
    fn complete_batches_whose_checksum_fails_are_damaged_and_an_unfinished_end_is_not() {
        let good = batch(&[(b"k", b"value"), (b"k2", b"")], 0);
        let bad = batch(&[(b"k", b"value")], 1);
        let mut journal = [good.clone(), bad.clone(), good.clone()].concat();
        let expected = vec![(good.len()..good.len() + bad.len(), JournalDamage::Checksum)];
        assert_eq!(damaged_batches(&journal), expected);
        // Preallocated zeros, then an unfinished batch: where fjall stops, nothing damaged.
        journal.extend_from_slice(&[0; 64]);
        assert_eq!(damaged_batches(&journal), expected);
        let unfinished = [good.clone(), good[..good.len() - 3].to_vec()].concat();
        assert_eq!(damaged_batches(&unfinished), vec![]);
    }

    #[test]
    fn a_broken_frame_followed_by_an_intact_batch_is_damaged_up_to_it() {
        let good = batch(&[(b"k", b"value"), (b"k2", b"")], 0);
        let mut broken = good.clone();
        // The first item's key length.
        broken[START_BYTES + 11] = 0xff;
        let journal = [good.clone(), broken, good.clone(), vec![0; 64]].concat();
        assert_eq!(
            damaged_batches(&journal),
            vec![(good.len()..2 * good.len(), JournalDamage::Framing)]
        );
    }

    proptest! {
        #[test]
        fn any_bytes_give_ordered_ranges_inside_them(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let damaged: Vec<Range<usize>> =
                damaged_batches(&bytes).into_iter().map(|(range, _)| range).collect();
            prop_assert!(damaged.iter().all(|range| range.start < range.end && range.end <= bytes.len()));
            prop_assert!(damaged.windows(2).all(|pair| pair[0].end <= pair[1].start));
        }

        #[test]
        fn a_flipped_byte_in_a_value_damages_exactly_its_batch(
            values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..40), 1..6),
            which in any::<prop::sample::Index>(),
            at in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let batches: Vec<Vec<u8>> = values.iter().map(|value| batch(&[(b"key", value)], 0)).collect();
            let target = which.index(batches.len());
            let start: usize = batches[..target].iter().map(Vec::len).sum();
            let value = &values[target];
            // The value ends where the end marker starts.
            let value_start = start + batches[target].len() - END_BYTES - value.len();
            let mut journal = batches.concat();
            journal[value_start + at.index(value.len())] ^= 1 << bit;
            prop_assert_eq!(
                damaged_batches(&journal),
                vec![(start..start + batches[target].len(), JournalDamage::Checksum)]
            );
        }
    }
}
