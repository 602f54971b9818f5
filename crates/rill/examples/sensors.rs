//! Running averages per sensor, from an in-memory collection to stdout: a keyed process
//! function with value state, and no event log.
//!
//! ```text
//! cargo run -p rill --example sensors
//! ```

use rill::prelude::*;

/// Emits each sensor's average reading so far, as a line of text.
#[derive(Clone)]
struct RunningAverage {
    sum_and_count: ValueState<(f64, u64)>,
}

impl KeyedProcessFunction for RunningAverage {
    type Key = String;
    type In = (String, f64);
    type Out = String;

    fn process(
        &mut self,
        (sensor, reading): (String, f64),
        ctx: &mut KeyedContext<'_, String, String>,
    ) -> Result<(), BoxError> {
        let (sum, count) = self.sum_and_count.get(ctx).unwrap_or((0.0, 0));
        let (sum, count) = (sum + reading, count + 1);
        self.sum_and_count.set(ctx, (sum, count));
        ctx.emit(format!(
            "{sensor}: {:.2} after {count} readings",
            sum / count as f64
        ));
        Ok(())
    }
}

fn main() -> Result<(), RillError> {
    let readings = vec![
        ("kitchen".to_string(), 21.5f64),
        ("garage".to_string(), 9.0),
        ("kitchen".to_string(), 22.5),
        ("garage".to_string(), 11.0),
        ("kitchen".to_string(), 23.5),
    ];
    let env = StreamEnv::new();
    env.from_iter(readings)
        .filter(|(_, reading)| reading.is_finite())
        .key_by(|(sensor, _): &(String, f64)| sensor.clone())
        .process(RunningAverage {
            sum_and_count: ValueState::new("sum_and_count"),
        })
        .print();
    env.execute("sensors")?;
    Ok(())
}
