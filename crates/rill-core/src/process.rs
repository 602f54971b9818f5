//! Process functions on streams that are not keyed (Flink's `ProcessFunction`): a function
//! called for every record with its context — the record's timestamp, the operator's current
//! watermark and processing time — that emits to the main output and to side outputs.
//!
//! As in Flink, keyed state and timers need a keyed stream
//! ([`crate::keyed::KeyedProcessFunction`]); a process function here keeps no state across
//! failures beyond what its fields hold, which are not checkpointed.

use crate::element::{Data, Record, Timestamp};
use crate::error::BoxError;
use crate::operator::OneInputOperator;
use crate::side_output::{Emitter, OutputTag, Tagged};

/// What a process function sees while it processes one record.
pub struct ProcessContext<'a, O> {
    watermark: Timestamp,
    processing_time: Timestamp,
    emitter: Emitter<'a, O>,
}

impl<O: Data> ProcessContext<'_, O> {
    /// The record's event timestamp, if it has one.
    pub fn timestamp(&self) -> Option<Timestamp> {
        self.emitter.timestamp()
    }

    /// Emits a value with the input record's timestamp.
    pub fn emit(&mut self, value: O) {
        self.emitter.emit(value);
    }

    /// Emits a value with the given timestamp.
    pub fn emit_with_timestamp(&mut self, value: O, timestamp: Timestamp) {
        self.emitter.emit_with_timestamp(value, timestamp);
    }

    /// Emits a value to the side output `tag` names, with the input record's timestamp.
    pub fn output<S: Data>(&mut self, tag: &OutputTag<S>, value: S) {
        self.emitter.output(tag, value);
    }

    /// The operator's input watermark: no record with an earlier timestamp is expected
    /// (`Timestamp::MIN` before the first watermark).
    pub fn current_watermark(&self) -> Timestamp {
        self.watermark
    }

    /// Processing time as the driver last reported it (the simulator's is virtual).
    pub fn current_processing_time(&self) -> Timestamp {
        self.processing_time
    }
}

/// A function called for every record of a stream that is not keyed. Each subtask gets its
/// own clone.
pub trait ProcessFunction: Clone + Send + 'static {
    /// The type of the records it consumes.
    type In: Data;
    /// The type of the records it emits to the main output.
    type Out: Data;

    /// Processes one record; what it emits goes through `ctx`.
    fn process(
        &mut self,
        value: Self::In,
        ctx: &mut ProcessContext<'_, Self::Out>,
    ) -> Result<(), BoxError>;
}

/// The operator that runs a [`ProcessFunction`]: it emits [`Tagged`] values, which a selector
/// behind it splits into the main output and the side outputs.
pub struct ProcessOperator<P> {
    function: P,
    watermark: Timestamp,
    processing_time: Timestamp,
}

impl<P: ProcessFunction> ProcessOperator<P> {
    /// The operator of `function`.
    pub fn new(function: P) -> Self {
        ProcessOperator {
            function,
            watermark: Timestamp::MIN,
            processing_time: Timestamp::MIN,
        }
    }
}

impl<P: ProcessFunction> OneInputOperator for ProcessOperator<P> {
    type In = P::In;
    type Out = Tagged<P::Out>;

    fn process_batch(
        &mut self,
        input: Vec<Record<P::In>>,
        out: &mut Vec<Record<Tagged<P::Out>>>,
    ) -> Result<(), BoxError> {
        for record in input {
            let mut ctx = ProcessContext {
                watermark: self.watermark,
                processing_time: self.processing_time,
                emitter: Emitter::new(&mut *out, record.timestamp()),
            };
            self.function.process(record.value, &mut ctx)?;
        }
        Ok(())
    }

    fn on_watermark(
        &mut self,
        watermark: Timestamp,
        _out: &mut Vec<Record<Tagged<P::Out>>>,
    ) -> Result<(), BoxError> {
        self.watermark = watermark;
        Ok(())
    }

    fn on_processing_time(
        &mut self,
        now: Timestamp,
        _out: &mut Vec<Record<Tagged<P::Out>>>,
    ) -> Result<(), BoxError> {
        self.processing_time = now;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Passes even values on with the watermark seen, sends odd ones to a side output, and
    /// fails on zero.
    #[derive(Clone)]
    struct Split(OutputTag<u32>);

    impl ProcessFunction for Split {
        type In = u32;
        type Out = (u32, Timestamp);

        fn process(
            &mut self,
            value: u32,
            ctx: &mut ProcessContext<'_, Self::Out>,
        ) -> Result<(), BoxError> {
            if value == 0 {
                return Err("zero is refused".into());
            }
            if value.is_multiple_of(2) {
                let watermark = ctx.current_watermark();
                ctx.emit((value, watermark));
            } else {
                ctx.output(&self.0, value);
            }
            Ok(())
        }
    }

    #[test]
    fn records_reach_the_function_with_their_timestamp_and_the_watermark_and_go_to_either_output() {
        let mut operator = ProcessOperator::new(Split(OutputTag::new("odd")));
        let mut out = Vec::new();
        operator
            .process_batch(vec![Record::with_timestamp(2, Timestamp(5))], &mut out)
            .unwrap();
        operator.on_watermark(Timestamp(40), &mut out).unwrap();
        operator
            .process_batch(
                vec![
                    Record::with_timestamp(4, Timestamp(50)),
                    Record::with_timestamp(7, Timestamp(60)),
                    Record::new(8),
                ],
                &mut out,
            )
            .unwrap();
        let seen: Vec<(String, Option<Timestamp>)> = out
            .iter()
            .map(|record| {
                let what = match &record.value {
                    Tagged::Main(main) => format!("main {main:?}"),
                    Tagged::Side(side) => {
                        let value = side.as_ref().clone().downcast::<u32>().unwrap();
                        format!("side {} {value}", side.tag())
                    }
                };
                (what, record.timestamp())
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                (
                    format!("main {:?}", (2, Timestamp::MIN)),
                    Some(Timestamp(5))
                ),
                (
                    format!("main {:?}", (4, Timestamp(40))),
                    Some(Timestamp(50))
                ),
                ("side odd 7".to_owned(), Some(Timestamp(60))),
                (format!("main {:?}", (8, Timestamp(40))), None),
            ]
        );
        let error = operator
            .process_batch(vec![Record::new(0)], &mut out)
            .unwrap_err();
        assert!(error.to_string().contains("zero is refused"), "{error}");
    }
}
