//! Sources and sinks that connect a job to the world: the embedded event log, stdout, and
//! memory (for tests).

pub mod collect;
pub mod log;
pub mod stdout;
