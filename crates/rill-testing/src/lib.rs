//! Test harnesses, proptest strategies and ready-made properties for Rill operators: feed an
//! operator exactly the input you want, control its clocks, read every output, and check that
//! it survives a checkpoint and a rescale — without starting a runtime.
//!
//! - [`harness`]: [`OperatorHarness`] drives one operator instance as a subtask does (the same
//!   operator code, behind the same interface); [`KeyedInstances`] runs several instances of a
//!   keyed operator restored from a snapshot, as a rescaled job;
//! - [`strategies`]: keyed event streams with bounded disorder, consistent watermarks and
//!   late records; checkpoint cut points, and rescales (where, and to how many instances);
//! - [`properties`]: checkpoint transparency (stopped and restored once or several times),
//!   rescale invariance (key groups split and merged over instances), key-order independence;
//! - [`side_outputs`]: [`side_outputs::ShowSideOutputs`], so that the properties compare the
//!   values of an operator's side outputs too.
//!
//! The guide — property-testing a deduplication operator — is this crate's README.

#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

pub mod harness;
pub mod properties;
pub mod side_outputs;
pub mod strategies;

pub use harness::{HarnessError, KeyedInstances, OperatorHarness, PendingSnapshot, Snapshot};

use rill_core::element::Timestamp;

/// One step of an operator's input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input<T> {
    /// A record with its event time.
    Record(T, Timestamp),
    /// The watermark moves to this time.
    Watermark(Timestamp),
    /// Processing time moves to this time.
    ProcessingTime(Timestamp),
}
