//! Integration tests of rill-core: the plan, and the subtask and partitioner state machines run
//! together by a small deterministic driver ([`driver::Driver`]).

mod driver;
mod failures;
mod flow_control;
mod pipeline;
mod plan;
mod support;
mod watermarks;
