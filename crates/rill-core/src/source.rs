//! Sources: the typed trait, its type-erased form, and the built-in sources that need no I/O
//! (an iterator, and a parallel sequence of numbers).

use std::ops::Range;

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
}

/// Emits the items of an iterator, in order, then finishes. Not parallel.
pub struct IterSource<I: Iterator> {
    items: I,
}

impl<I: Iterator> IterSource<I> {
    /// A source over the given iterator.
    pub fn new(items: impl IntoIterator<IntoIter = I>) -> Self {
        IterSource {
            items: items.into_iter(),
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
                Some(item) => out.collect(item),
                None => return Ok(SourcePoll::Finished),
            }
        }
        Ok(SourcePoll::Ready)
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
    fn iterator_source_respects_the_batch_limit() {
        let mut source = IterSource::new(0u64..5);
        let first = source.poll(2).unwrap();
        assert_eq!(first.records.unwrap().len(), 2);
        assert_eq!(first.status, SourcePoll::Ready);
        assert_eq!(drain(&mut source, 2), vec![2, 3, 4]);
    }
}
