//! Side outputs: streams besides an operator's main output, each typed by an [`OutputTag`].
//!
//! A process function (or a window operator, for its late data) emits main values and side
//! values into one stream of [`Tagged`] values; [`SelectMain`] and [`SelectSide`], chained
//! right behind it, split that stream into the main output and each side output. This keeps a
//! side output an ordinary edge of the job graph — it has its own exchange, parallelism and
//! consumers, and barriers and watermarks reach it like any stream — at the cost of one
//! wrapping per emitted value. A side value is boxed, so a `Tagged<T>` is barely larger than
//! a `T` and the main path stays cheap.

use std::any::Any;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::element::{Data, Record, Timestamp};
use crate::error::BoxError;
use crate::operator::OneInputOperator;

/// Names a side output and the type of its values. Tags with equal ids name the same output.
pub struct OutputTag<T> {
    id: Arc<str>,
    values: PhantomData<fn() -> T>,
}

impl<T> OutputTag<T> {
    /// The tag of the side output `id`.
    pub fn new(id: &str) -> Self {
        OutputTag {
            id: Arc::from(id),
            values: PhantomData,
        }
    }

    /// The side output's id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl<T> Clone for OutputTag<T> {
    fn clone(&self) -> Self {
        OutputTag {
            id: Arc::clone(&self.id),
            values: PhantomData,
        }
    }
}

impl<T> fmt::Debug for OutputTag<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OutputTag<{}>({})", std::any::type_name::<T>(), self.id)
    }
}

/// Object-safe view of a side value of any `Data` type.
trait AnyValue: Send {
    fn clone_boxed(&self) -> Box<dyn AnyValue>;
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
    fn type_name(&self) -> &'static str;
}

impl<T: Data> AnyValue for T {
    fn clone_boxed(&self) -> Box<dyn AnyValue> {
        Box::new(self.clone())
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }

    fn type_name(&self) -> &'static str {
        std::any::type_name::<T>()
    }
}

/// A value for a side output, with the id of its tag.
pub struct SideValue {
    tag: Arc<str>,
    value: Box<dyn AnyValue>,
}

impl SideValue {
    /// A value for the side output `tag` names.
    pub fn new<S: Data>(tag: &OutputTag<S>, value: S) -> Self {
        SideValue {
            tag: Arc::clone(&tag.id),
            value: Box::new(value),
        }
    }

    /// The id of the side output the value is for.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The value, if it has type `S`.
    pub fn downcast<S: Data>(self) -> Result<S, SideOutputTypeMismatch> {
        let found = self.value.type_name();
        match self.value.into_any().downcast::<S>() {
            Ok(value) => Ok(*value),
            Err(_) => Err(SideOutputTypeMismatch {
                tag: self.tag.to_string(),
                expected: std::any::type_name::<S>(),
                found,
            }),
        }
    }
}

impl Clone for SideValue {
    fn clone(&self) -> Self {
        SideValue {
            tag: Arc::clone(&self.tag),
            value: self.value.clone_boxed(),
        }
    }
}

impl fmt::Debug for SideValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SideValue({}: {})", self.tag, self.value.type_name())
    }
}

/// Two tags with one id were used with different value types.
#[derive(Debug, thiserror::Error)]
#[error("side output '{tag}' carries values of type {found}, but is read as {expected}")]
pub struct SideOutputTypeMismatch {
    /// The side output's id.
    pub tag: String,
    /// The type the reader's tag names.
    pub expected: &'static str,
    /// The type that was emitted.
    pub found: &'static str,
}

/// A main-output value or a side-output value: what operators with side outputs emit.
#[derive(Clone, Debug)]
pub enum Tagged<T> {
    /// A value of the main output.
    Main(T),
    /// A value of a side output.
    Side(Box<SideValue>),
}

impl<T> Tagged<T> {
    /// A value for the side output `tag` names.
    pub fn side<S: Data>(tag: &OutputTag<S>, value: S) -> Self {
        Tagged::Side(Box::new(SideValue::new(tag, value)))
    }
}

/// Where a process function's values go — the main output and side outputs — each stamped
/// with the timestamp of the record (or event-time timer) being processed unless given one:
/// what the contexts of process functions emit through.
pub(crate) struct Emitter<'a, O> {
    timestamp: Option<Timestamp>,
    out: &'a mut Vec<Record<Tagged<O>>>,
}

impl<'a, O: Data> Emitter<'a, O> {
    /// Emits onto `out`, stamping with `timestamp`.
    pub(crate) fn new(out: &'a mut Vec<Record<Tagged<O>>>, timestamp: Option<Timestamp>) -> Self {
        Emitter { timestamp, out }
    }

    /// The event timestamp of the record being processed, if it has one; in an event-time
    /// timer, the timer's time.
    pub(crate) fn timestamp(&self) -> Option<Timestamp> {
        self.timestamp
    }

    /// Emits a value with the input record's timestamp (an event-time timer's time).
    pub(crate) fn emit(&mut self, value: O) {
        self.out.push(Record::with_optional_timestamp(
            Tagged::Main(value),
            self.timestamp,
        ));
    }

    /// Emits a value with the given timestamp.
    pub(crate) fn emit_with_timestamp(&mut self, value: O, timestamp: Timestamp) {
        self.out
            .push(Record::with_timestamp(Tagged::Main(value), timestamp));
    }

    /// Emits a value to the side output `tag` names, with the input record's timestamp.
    pub(crate) fn output<S: Data>(&mut self, tag: &OutputTag<S>, value: S) {
        self.out.push(Record::with_optional_timestamp(
            Tagged::side(tag, value),
            self.timestamp,
        ));
    }
}

/// Keeps the main-output values of a tagged stream.
pub struct SelectMain<T>(PhantomData<fn() -> T>);

impl<T> Default for SelectMain<T> {
    fn default() -> Self {
        SelectMain(PhantomData)
    }
}

impl<T: Data> OneInputOperator for SelectMain<T> {
    type In = Tagged<T>;
    type Out = T;

    fn process_batch(
        &mut self,
        input: Vec<Record<Tagged<T>>>,
        out: &mut Vec<Record<T>>,
    ) -> Result<(), BoxError> {
        out.reserve(input.len());
        for record in input {
            let timestamp = record.timestamp();
            if let Tagged::Main(value) = record.value {
                out.push(Record::with_optional_timestamp(value, timestamp));
            }
        }
        Ok(())
    }
}

/// Keeps the values of one side output of a tagged stream.
pub struct SelectSide<T, S> {
    tag: OutputTag<S>,
    main: PhantomData<fn() -> T>,
}

impl<T, S> SelectSide<T, S> {
    /// Selects the side output `tag` names.
    pub fn new(tag: OutputTag<S>) -> Self {
        SelectSide {
            tag,
            main: PhantomData,
        }
    }
}

impl<T: Data, S: Data> OneInputOperator for SelectSide<T, S> {
    type In = Tagged<T>;
    type Out = S;

    fn process_batch(
        &mut self,
        input: Vec<Record<Tagged<T>>>,
        out: &mut Vec<Record<S>>,
    ) -> Result<(), BoxError> {
        for record in input {
            let timestamp = record.timestamp();
            if let Tagged::Side(side) = record.value
                && side.tag() == self.tag.id()
            {
                out.push(Record::with_optional_timestamp(
                    side.downcast::<S>()?,
                    timestamp,
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::element::Timestamp;

    fn tagged_input() -> Vec<Record<Tagged<u32>>> {
        let late = OutputTag::<String>::new("late");
        let alerts = OutputTag::<(u8, u8)>::new("alerts");
        vec![
            Record::with_timestamp(Tagged::Main(1), Timestamp(10)),
            Record::with_timestamp(Tagged::side(&late, "x".to_owned()), Timestamp(11)),
            Record::with_timestamp(Tagged::side(&alerts, (1, 2)), Timestamp(12)),
            Record::with_timestamp(Tagged::Main(2), Timestamp(13)),
            Record::with_timestamp(Tagged::side(&late, "y".to_owned()), Timestamp(14)),
        ]
    }

    #[test]
    fn selectors_split_main_and_each_side_output_keeping_timestamps() {
        let mut main = Vec::new();
        SelectMain::default()
            .process_batch(tagged_input(), &mut main)
            .unwrap();
        assert_eq!(
            main,
            vec![
                Record::with_timestamp(1, Timestamp(10)),
                Record::with_timestamp(2, Timestamp(13))
            ]
        );
        let mut late = Vec::new();
        SelectSide::<u32, String>::new(OutputTag::new("late"))
            .process_batch(tagged_input(), &mut late)
            .unwrap();
        assert_eq!(
            late,
            vec![
                Record::with_timestamp("x".to_owned(), Timestamp(11)),
                Record::with_timestamp("y".to_owned(), Timestamp(14))
            ]
        );
    }

    #[test]
    fn a_tag_read_with_another_type_is_an_error_naming_both() {
        let mut out = Vec::new();
        let error = SelectSide::<u32, u64>::new(OutputTag::new("alerts"))
            .process_batch(tagged_input(), &mut out)
            .unwrap_err();
        let message = error.to_string();
        assert!(message.contains("'alerts'"), "{message}");
        assert!(
            message.contains("(u8, u8)") && message.contains("u64"),
            "{message}"
        );
    }
}
