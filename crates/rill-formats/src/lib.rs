//! Records to and from bytes with serde, for Rill's connectors: a [`Format`] (JSON, CSV with or
//! without a header, bincode) that a connector is given per source or sink, the
//! [`DecodeError`] that names a record that does not decode — its bytes, shortened, and where
//! it was (a file and byte offset, a partition and offset) when the connector says — and
//! [`OnDecodeError`], the policy for such records: fail the job, or skip them, counted and
//! logged.
//!
//! # Why these crates
//! - **serde_json** for JSON: the standard implementation, which every serde user already has.
//! - **csv** (BurntSushi's) for CSV: it handles quoting properly (delimiters, quotes and line
//!   breaks inside quoted fields, doubled quotes), maps records to structs through serde by
//!   position or by header name, and is the crate the Rust ecosystem reads CSV with.
//! - **bincode** for a compact binary form, with the configuration Rill already writes its
//!   checkpoints and source positions with (`bincode::config::standard()`, through serde).
//!
//! # Layout
//! - [`format`](mod@format): [`Format`] and [`FormatKind`]: decode and encode one record;
//! - [`error`]: [`DecodeError`] and [`EncodeError`];
//! - [`policy`]: [`OnDecodeError`] and [`DecodeErrors`], which applies it and counts.

pub mod error;
pub mod format;
pub mod policy;

pub use error::{DecodeError, EncodeError};
pub use format::{Format, FormatKind};
pub use policy::{DecodeErrors, OnDecodeError};
