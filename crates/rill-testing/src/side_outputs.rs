//! Side-output values the properties can compare.
//!
//! Operators with side outputs emit [`Tagged`] values, whose side values are type-erased: the
//! properties, which compare outputs by their `Debug` rendering, would see only a side value's
//! tag and type, and miss a wrong value. [`ShowSideOutputs`] wraps such an operator — every
//! call goes to it unchanged — and emits [`Shown`] values instead, with the values of the side
//! outputs it was told about rendered:
//!
//! ```
//! # use std::sync::Arc;
//! # use rill_core::side_output::OutputTag;
//! # use rill_core::state::KeyedStateStore;
//! # use rill_core::window::{ReduceWindow, WindowAssigner, WindowOperator};
//! use rill_testing::properties::assert_checkpoint_transparent;
//! use rill_testing::side_outputs::ShowSideOutputs;
//! use rill_testing::strategies::{EventStream, KeyedEvent, keyed_events};
//!
//! let late = OutputTag::<KeyedEvent>::new("late");
//! let latest = |a: KeyedEvent, b: KeyedEvent| if b.value > a.value { b } else { a };
//! let window = || {
//!     WindowOperator::new(
//!         ReduceWindow::new(Arc::new(latest)),
//!         WindowAssigner::Tumbling { size: 10, offset: 0 },
//!         0,
//!         late.clone(),
//!         Arc::new(|event: &KeyedEvent| event.key),
//!         KeyedStateStore::new(128),
//!     )
//! };
//! let events = keyed_events(EventStream { late_percent: 20, ..EventStream::default() });
//! // Late records are compared too, not only counted.
//! assert_checkpoint_transparent(|| ShowSideOutputs::new(window()).show(&late), events);
//! ```

use std::fmt;

use rill_core::checkpoint::CheckpointId;
use rill_core::element::{Data, Record, Timestamp};
use rill_core::error::BoxError;
use rill_core::operator::{OneInputOperator, OperatorSnapshot};
use rill_core::side_output::{OutputTag, SideOutputTypeMismatch, SideValue, Tagged};

/// Renders the values of one side output; fails if a value has another type than its tag's.
type Render = Box<dyn Fn(SideValue) -> Result<String, SideOutputTypeMismatch> + Send>;

/// An operator with side outputs, whose side-output values it shows: it emits [`Shown`]
/// values, main values as they are and side values rendered with `Debug` for the side outputs
/// [`ShowSideOutputs::show`] named (others as their tag and type).
pub struct ShowSideOutputs<O> {
    operator: O,
    shown: Vec<(String, Render)>,
}

/// A value of an operator with side outputs, with its side-output value rendered.
#[derive(Clone, PartialEq, Eq)]
pub enum Shown<T> {
    /// A value of the main output.
    Main(T),
    /// A value of the side output `tag`, rendered.
    Side {
        /// The side output's id.
        tag: String,
        /// The value's `Debug` rendering, or its type if the side output is not shown.
        value: String,
    },
}

impl<T: fmt::Debug> fmt::Debug for Shown<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shown::Main(value) => value.fmt(f),
            Shown::Side { tag, value } => write!(f, "side output '{tag}': {value}"),
        }
    }
}

impl<O, T> ShowSideOutputs<O>
where
    O: OneInputOperator<Out = Tagged<T>>,
    T: Data,
{
    /// Wraps `operator`; no side output is shown yet.
    pub fn new(operator: O) -> Self {
        ShowSideOutputs {
            operator,
            shown: Vec::new(),
        }
    }

    /// Shows the values of the side output `tag` names.
    pub fn show<S: Data + fmt::Debug>(mut self, tag: &OutputTag<S>) -> Self {
        let render = |side: SideValue| side.downcast::<S>().map(|value| format!("{value:?}"));
        self.shown.push((tag.id().to_owned(), Box::new(render)));
        self
    }

    /// The operator it wraps, to inspect it.
    pub fn operator(&self) -> &O {
        &self.operator
    }

    /// `records` with their side values rendered, appended to `out`.
    fn show_all(
        &self,
        records: Vec<Record<Tagged<T>>>,
        out: &mut Vec<Record<Shown<T>>>,
    ) -> Result<(), BoxError> {
        out.reserve(records.len());
        for record in records {
            let timestamp = record.timestamp();
            let shown = match record.value {
                Tagged::Main(value) => Shown::Main(value),
                Tagged::Side(side) => {
                    let tag = side.tag().to_owned();
                    let value = match self.shown.iter().find(|(id, _)| *id == tag) {
                        Some((_, render)) => render(*side)?,
                        None => format!("{side:?}"),
                    };
                    Shown::Side { tag, value }
                }
            };
            out.push(Record::with_optional_timestamp(shown, timestamp));
        }
        Ok(())
    }

    /// Calls the operator with an output buffer of its own, then shows what it emitted.
    fn call(
        &mut self,
        out: &mut Vec<Record<Shown<T>>>,
        call: impl FnOnce(&mut O, &mut Vec<Record<Tagged<T>>>) -> Result<(), BoxError>,
    ) -> Result<(), BoxError> {
        let mut emitted = Vec::new();
        call(&mut self.operator, &mut emitted)?;
        self.show_all(emitted, out)
    }
}

impl<O, T> OneInputOperator for ShowSideOutputs<O>
where
    O: OneInputOperator<Out = Tagged<T>>,
    T: Data,
{
    type In = O::In;
    type Out = Shown<T>;

    fn process_batch(
        &mut self,
        input: Vec<Record<O::In>>,
        out: &mut Vec<Record<Shown<T>>>,
    ) -> Result<(), BoxError> {
        self.call(out, |operator, emitted| {
            operator.process_batch(input, emitted)
        })
    }

    fn on_watermark(
        &mut self,
        watermark: Timestamp,
        out: &mut Vec<Record<Shown<T>>>,
    ) -> Result<(), BoxError> {
        self.call(out, |operator, emitted| {
            operator.on_watermark(watermark, emitted)
        })
    }

    fn on_processing_time(
        &mut self,
        now: Timestamp,
        out: &mut Vec<Record<Shown<T>>>,
    ) -> Result<(), BoxError> {
        self.call(out, |operator, emitted| {
            operator.on_processing_time(now, emitted)
        })
    }

    fn end_of_input(&mut self, out: &mut Vec<Record<Shown<T>>>) -> Result<(), BoxError> {
        self.call(out, |operator, emitted| operator.end_of_input(emitted))
    }

    fn snapshot_state(&mut self, checkpoint: CheckpointId) -> Result<OperatorSnapshot, BoxError> {
        self.operator.snapshot_state(checkpoint)
    }

    fn restore_state(&mut self, snapshot: OperatorSnapshot) -> Result<(), BoxError> {
        self.operator.restore_state(snapshot)
    }

    fn notify_checkpoint_complete(&mut self, checkpoint: CheckpointId) -> Result<(), BoxError> {
        self.operator.notify_checkpoint_complete(checkpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends every record's value to the main output and its double to the side outputs
    /// "double" (shown) and "hidden" (not).
    #[derive(Default)]
    struct Doubles;

    impl OneInputOperator for Doubles {
        type In = u32;
        type Out = Tagged<u32>;

        fn process_batch(
            &mut self,
            input: Vec<Record<u32>>,
            out: &mut Vec<Record<Tagged<u32>>>,
        ) -> Result<(), BoxError> {
            for record in input {
                let value = record.value;
                out.push(record.replace(Tagged::Main(value)));
                out.push(record.replace(Tagged::side(&OutputTag::new("double"), 2 * value)));
                out.push(record.replace(Tagged::side(&OutputTag::new("hidden"), 2 * value)));
            }
            Ok(())
        }
    }

    fn run(
        operator: &mut ShowSideOutputs<Doubles>,
        values: &[u32],
    ) -> Result<Vec<Record<Shown<u32>>>, BoxError> {
        let input = values
            .iter()
            .map(|&value| Record::with_timestamp(value, Timestamp(i64::from(value))))
            .collect();
        let mut out = Vec::new();
        operator.process_batch(input, &mut out)?;
        Ok(out)
    }

    #[test]
    fn shown_side_outputs_render_their_values_keeping_order_and_timestamps() {
        let mut operator = ShowSideOutputs::new(Doubles).show(&OutputTag::<u32>::new("double"));
        let out = run(&mut operator, &[3]).unwrap();
        let rendered: Vec<String> = out.iter().map(|r| format!("{:?}", r.value)).collect();
        assert_eq!(
            rendered,
            [
                "3",
                "side output 'double': 6",
                "side output 'hidden': SideValue(hidden: u32)"
            ]
        );
        assert!(out.iter().all(|r| r.timestamp() == Some(Timestamp(3))));
    }

    #[test]
    fn a_side_output_shown_with_another_type_is_an_error_naming_it() {
        let mut operator = ShowSideOutputs::new(Doubles).show(&OutputTag::<String>::new("double"));
        let error = run(&mut operator, &[1]).unwrap_err().to_string();
        assert!(
            error.contains("'double'") && error.contains("u32"),
            "{error}"
        );
    }
}
