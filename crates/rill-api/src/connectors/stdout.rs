//! A sink that prints values to stdout, one per line.

use std::fmt::Display;
use std::io::Write;

use rill_core::operator::Sink;
use rill_core::{BoxError, Data, Record};

/// Prints each value with `Display`; when the sink runs in parallel, subtask `i` prefixes its
/// lines with `i+1> `.
pub(crate) struct StdoutSink<T> {
    prefix: String,
    values: std::marker::PhantomData<fn(T)>,
}

impl<T> StdoutSink<T> {
    pub(crate) fn new(subtask: u32, parallelism: u32) -> Self {
        StdoutSink {
            prefix: if parallelism > 1 {
                format!("{}> ", subtask + 1)
            } else {
                String::new()
            },
            values: std::marker::PhantomData,
        }
    }
}

impl<T: Data + Display> Sink for StdoutSink<T> {
    type In = T;

    fn write_batch(&mut self, records: Vec<Record<T>>) -> Result<(), BoxError> {
        let mut out = std::io::stdout().lock();
        for record in records {
            writeln!(out, "{}{}", self.prefix, record.value)
                .map_err(|error| format!("cannot write to stdout: {error}"))?;
        }
        out.flush()
            .map_err(|error| format!("cannot write to stdout: {error}"))?;
        Ok(())
    }
}
