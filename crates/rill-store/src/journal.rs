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
//! rest. It reads what fjall 3 writes (its trailer says `FJL` 3); a test in
//! `tests/it/directory.rs` pins it against journals fjall writes.

use std::ops::Range;
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::Xxh3;

/// A batch of a journal whose checksum fails: fjall refuses it, and with it the database.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "journal {} holds a damaged batch at bytes {}..{} (its checksum fails): the writes in it \
     are lost",
    journal.display(), bytes.start, bytes.end
)]
pub struct SkippedBatch {
    /// The journal file (in the original directory, also when a copy was opened).
    pub journal: PathBuf,
    /// Where the batch lies in the journal, from its start marker to the end of its end marker.
    pub bytes: Range<u64>,
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

/// A batch being read: where it starts, the items it still announces, their checksum so far.
struct OpenBatch {
    start: usize,
    items_left: u32,
    too_many_items: bool,
    checksum: Xxh3,
}

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

/// The complete batches of `journal` (a journal file's bytes) whose checksum or item count
/// fails, in file order, up to where fjall's replay would stop reading.
pub(crate) fn damaged_batches(journal: &[u8]) -> Vec<Range<usize>> {
    let mut damaged = Vec::new();
    let mut batch: Option<OpenBatch> = None;
    let mut at = 0;
    while let Some((tag, len)) = entry_at(journal, at) {
        let entry = &journal[at..at + len];
        match (tag, batch.as_mut()) {
            (TAG_START, None) => {
                let items = le_bytes::<4>(journal, at + 1).map_or(0, u32::from_le_bytes);
                batch = Some(OpenBatch {
                    start: at,
                    items_left: items,
                    too_many_items: false,
                    checksum: Xxh3::new(),
                });
            }
            (TAG_ITEM | TAG_CLEAR, Some(open)) => {
                open.checksum.update(entry);
                match open.items_left.checked_sub(1) {
                    Some(left) => open.items_left = left,
                    None => open.too_many_items = true,
                }
            }
            (TAG_END, Some(open)) => {
                let expected = le_bytes::<8>(journal, at + 1).map_or(0, u64::from_le_bytes);
                if open.checksum.digest() != expected || open.items_left > 0 || open.too_many_items
                {
                    damaged.push(open.start..at + len);
                }
                batch = None;
            }
            // A start inside a batch, an item or end outside one: fjall stops reading here.
            _ => break,
        }
        at += len;
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
            for range in &damaged {
                kept.extend_from_slice(&bytes[from..range.start]);
                from = range.end;
            }
            kept.extend_from_slice(&bytes[from..]);
            std::fs::write(&journal, &kept)?;
        }
        let name = journal
            .file_name()
            .map_or_else(|| journal.clone(), |name| named_in.join(name));
        found.extend(damaged.into_iter().map(|range| SkippedBatch {
            journal: name.clone(),
            bytes: range.start as u64..range.end as u64,
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
    fn only_complete_batches_whose_checksum_fails_are_damaged() {
        let good = batch(&[(b"k", b"value"), (b"k2", b"")], 0);
        let bad = batch(&[(b"k", b"value")], 1);
        let mut journal = [good.clone(), bad.clone(), good.clone()].concat();
        assert_eq!(
            damaged_batches(&journal),
            vec![good.len()..good.len() + bad.len()]
        );
        // Preallocated zeros, then an unfinished batch: where fjall stops, nothing damaged.
        journal.extend_from_slice(&[0; 64]);
        assert_eq!(damaged_batches(&journal).len(), 1);
        let unfinished = [good.clone(), good[..good.len() - 3].to_vec()].concat();
        assert_eq!(damaged_batches(&unfinished), Vec::<Range<usize>>::new());
    }

    proptest! {
        #[test]
        fn any_bytes_give_ordered_ranges_inside_them(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let damaged = damaged_batches(&bytes);
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
                vec![start..start + batches[target].len()]
            );
        }
    }
}
