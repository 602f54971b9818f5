//! Pieces the tests share.

use rill::prelude::*;

/// Counts each word and emits `(word, count so far)`; the count lives in keyed state.
#[derive(Clone)]
pub struct Counter {
    count: ValueState<u64>,
}

impl Counter {
    pub fn new() -> Self {
        Counter {
            count: ValueState::new("count"),
        }
    }
}

impl KeyedProcessFunction for Counter {
    type Key = String;
    type In = String;
    type Out = (String, u64);

    fn process(
        &mut self,
        word: String,
        ctx: &mut KeyedContext<'_, String, (String, u64)>,
    ) -> Result<(), BoxError> {
        let count = self.count.get(ctx).unwrap_or(0) + 1;
        self.count.set(ctx, count);
        ctx.emit((word, count));
        Ok(())
    }
}
