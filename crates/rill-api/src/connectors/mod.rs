//! Sources and sinks that connect a job to the world: the embedded event log, stdout, and
//! memory (for tests); and how a connector names its server in errors (`address`).

pub mod address;
pub mod collect;
pub mod log;
pub mod stdout;
