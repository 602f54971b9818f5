//! Sources: the typed trait, its type-erased form, and the built-in sources that need no I/O
//! (an iterator, and a parallel sequence of numbers).

use std::ops::Range;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::element::{Data, Record, Records, Timestamp};
use crate::error::{BoxError, OperatorError};

/// What a source says after a poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourcePoll {
    /// More records may be available right away.
    Ready,
    /// Nothing is available now; poll again later.
    Idle,
    /// The source has no more records: this poll's records are its last.
    Finished,
}

/// Collects what one poll of a source emits.
pub struct SourceOutput<T> {
    records: Vec<Record<T>>,
    max_records: usize,
    watermark: Option<Timestamp>,
}

impl<T> SourceOutput<T> {
    /// An empty output that accepts `max_records` records.
    pub fn new(max_records: usize) -> Self {
        SourceOutput {
            records: Vec::with_capacity(max_records),
            max_records,
            watermark: None,
        }
    }

    /// Emits a record without a timestamp.
    pub fn collect(&mut self, value: T) {
        self.records.push(Record::new(value));
    }

    /// Emits a record with an event timestamp.
    pub fn collect_with_timestamp(&mut self, value: T, timestamp: Timestamp) {
        self.records.push(Record::with_timestamp(value, timestamp));
    }

    /// Emits a watermark after this poll's records.
    pub fn emit_watermark(&mut self, watermark: Timestamp) {
        self.watermark = Some(self.watermark.map_or(watermark, |w| w.max(watermark)));
    }

    /// How many more records this poll may emit; a source should stop at zero.
    pub fn remaining(&self) -> usize {
        self.max_records.saturating_sub(self.records.len())
    }

    /// Whether this poll emitted a record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// A source of records: what built-ins and connectors implement.
pub trait Source: Send + 'static {
    /// The type of the records it emits.
    type Out: Data;

    /// Emits up to `out.remaining()` records.
    fn poll_next(&mut self, out: &mut SourceOutput<Self::Out>) -> Result<SourcePoll, BoxError>;

    /// Where the source stands, for a checkpoint: what [`Source::restore_position`] needs to
    /// resume right after the last record emitted. `None` means the source cannot resume (a
    /// restored job reads it again from the start).
    fn snapshot_position(&mut self) -> Result<Option<Vec<u8>>, BoxError> {
        Ok(None)
    }

    /// Resumes from a position taken by [`Source::snapshot_position`].
    fn restore_position(&mut self, _position: &[u8]) -> Result<(), BoxError> {
        Ok(())
    }
}

/// Encodes a source position with the snapshot encoding (bincode).
pub fn encode_position<P: Serialize>(position: &P) -> Result<Vec<u8>, BoxError> {
    Ok(bincode::serde::encode_to_vec(
        position,
        bincode::config::standard(),
    )?)
}

/// Decodes a source position written by [`encode_position`].
pub fn decode_position<P: DeserializeOwned>(bytes: &[u8]) -> Result<P, BoxError> {
    let (position, read) = bincode::serde::decode_from_slice(bytes, bincode::config::standard())?;
    if read != bytes.len() {
        return Err(format!(
            "a source position of {} bytes has {} bytes left over",
            bytes.len(),
            bytes.len() - read
        )
        .into());
    }
    Ok(position)
}

/// One poll's result, type-erased.
pub struct Polled {
    /// The records emitted, if any.
    pub records: Option<Records>,
    /// The watermark to emit after the records, if any.
    pub watermark: Option<Timestamp>,
    /// What the source said.
    pub status: SourcePoll,
}

/// The type-erased source a subtask drives.
pub trait AnySource: Send {
    /// Polls the source for up to `max_records` records.
    fn poll(&mut self, max_records: usize) -> Result<Polled, OperatorError>;
    /// See [`Source::snapshot_position`].
    fn snapshot_position(&mut self) -> Result<Option<Vec<u8>>, OperatorError>;
    /// See [`Source::restore_position`].
    fn restore_position(&mut self, position: &[u8]) -> Result<(), OperatorError>;
}

impl<S: Source> AnySource for S {
    fn poll(&mut self, max_records: usize) -> Result<Polled, OperatorError> {
        let mut out = SourceOutput::new(max_records);
        let status = self.poll_next(&mut out).map_err(OperatorError::Failed)?;
        Ok(Polled {
            records: (!out.records.is_empty()).then(|| Records::new(out.records)),
            watermark: out.watermark,
            status,
        })
    }

    fn snapshot_position(&mut self) -> Result<Option<Vec<u8>>, OperatorError> {
        Source::snapshot_position(self).map_err(OperatorError::Failed)
    }

    fn restore_position(&mut self, position: &[u8]) -> Result<(), OperatorError> {
        Source::restore_position(self, position).map_err(OperatorError::Failed)
    }
}

/// Emits the items of an iterator, in order, then finishes. Not parallel. It resumes by
/// skipping the items it had emitted, so the iterator must yield the same items every run.
pub struct IterSource<I: Iterator> {
    items: I,
    emitted: u64,
}

impl<I: Iterator> IterSource<I> {
    /// A source over the given iterator.
    pub fn new(items: impl IntoIterator<IntoIter = I>) -> Self {
        IterSource {
            items: items.into_iter(),
            emitted: 0,
        }
    }
}

impl<I> Source for IterSource<I>
where
    I: Iterator + Send + 'static,
    I::Item: Data,
{
    type Out = I::Item;

    fn poll_next(&mut self, out: &mut SourceOutput<I::Item>) -> Result<SourcePoll, BoxError> {
        while out.remaining() > 0 {
            match self.items.next() {
                Some(item) => {
                    out.collect(item);
                    self.emitted += 1;
                }
                None => return Ok(SourcePoll::Finished),
            }
        }
        Ok(SourcePoll::Ready)
    }

    fn snapshot_position(&mut self) -> Result<Option<Vec<u8>>, BoxError> {
        encode_position(&self.emitted).map(Some)
    }

    fn restore_position(&mut self, position: &[u8]) -> Result<(), BoxError> {
        let emitted: u64 = decode_position(position)?;
        for skipped in self.emitted..emitted {
            if self.items.next().is_none() {
                return Err(format!(
                    "the iterator ended after {skipped} items; the checkpoint had read {emitted}"
                )
                .into());
            }
        }
        self.emitted = self.emitted.max(emitted);
        Ok(())
    }
}

/// Emits the numbers of a range; subtask `i` of `p` emits the `i`-th of `p` contiguous slices.
pub struct SequenceSource {
    next: u64,
    end: u64,
}

impl SequenceSource {
    /// The slice of `range` that subtask `index` of `parallelism` emits.
    pub fn slice(range: Range<u64>, index: u32, parallelism: u32) -> Self {
        let length = u128::from(range.end.saturating_sub(range.start));
        let bound =
            |i: u32| range.start + (length * u128::from(i) / u128::from(parallelism)) as u64;
        SequenceSource {
            next: bound(index),
            end: bound(index + 1),
        }
    }
}

impl Source for SequenceSource {
    type Out = u64;

    fn poll_next(&mut self, out: &mut SourceOutput<u64>) -> Result<SourcePoll, BoxError> {
        let stop = self
            .end
            .min(self.next.saturating_add(out.remaining() as u64));
        out.records.extend((self.next..stop).map(Record::new));
        self.next = stop;
        Ok(if self.next == self.end {
            SourcePoll::Finished
        } else {
            SourcePoll::Ready
        })
    }

    fn snapshot_position(&mut self) -> Result<Option<Vec<u8>>, BoxError> {
        encode_position(&self.next).map(Some)
    }

    fn restore_position(&mut self, position: &[u8]) -> Result<(), BoxError> {
        let next: u64 = decode_position(position)?;
        if next > self.end {
            return Err(format!("position {next} is past this slice's end {}", self.end).into());
        }
        self.next = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(source: &mut dyn AnySource, max: usize) -> Vec<u64> {
        let mut all = Vec::new();
        loop {
            let polled = source.poll(max).unwrap();
            if let Some(records) = polled.records {
                all.extend(
                    records
                        .downcast::<u64>()
                        .unwrap()
                        .into_iter()
                        .map(|r| r.value),
                );
            }
            if polled.status == SourcePoll::Finished {
                return all;
            }
        }
    }

    #[test]
    fn sequence_slices_partition_the_range() {
        let mut all = Vec::new();
        for index in 0..3 {
            all.extend(drain(&mut SequenceSource::slice(5..15, index, 3), 4));
        }
        assert_eq!(all, (5..15).collect::<Vec<_>>());
    }

    #[test]
    fn sources_resume_from_their_position() {
        let mut sequence = SequenceSource::slice(0..100, 1, 2);
        sequence.poll(7).unwrap();
        let position = AnySource::snapshot_position(&mut sequence)
            .unwrap()
            .unwrap();
        let mut resumed = SequenceSource::slice(0..100, 1, 2);
        AnySource::restore_position(&mut resumed, &position).unwrap();
        assert_eq!(drain(&mut resumed, 10), (57..100).collect::<Vec<_>>());

        let mut items = IterSource::new(0u64..10);
        items.poll(3).unwrap();
        let position = AnySource::snapshot_position(&mut items).unwrap().unwrap();
        let mut resumed = IterSource::new(0u64..10);
        AnySource::restore_position(&mut resumed, &position).unwrap();
        assert_eq!(drain(&mut resumed, 4), (3..10).collect::<Vec<_>>());
        let mut shorter = IterSource::new(0u64..2);
        let error = AnySource::restore_position(&mut shorter, &position).unwrap_err();
        assert!(error.to_string().contains("ended after 2 items"), "{error}");
    }

    #[test]
    fn iterator_source_respects_the_batch_limit() {
        let mut source = IterSource::new(0u64..5);
        let first = source.poll(2).unwrap();
        assert_eq!(first.records.unwrap().len(), 2);
        assert_eq!(first.status, SourcePoll::Ready);
        assert_eq!(drain(&mut source, 2), vec![2, 3, 4]);
    }
}
