//! Golden files: the checkpoint formats written by earlier versions keep decoding, and a
//! change to a format without a version bump fails here.
//!
//! `tests/golden/<kind>-v<N>.bin` holds a fixed value sealed at format version N. Every
//! version this build reads must decode to that value; the file of the current version must
//! also equal what this build writes. When an encoding changes: bump the kind's
//! `current_version` in `rill_core::codec`, keep reading the old one, and write the new file
//! with `RILL_BLESS_GOLDEN=1 cargo nextest run -p rill-store golden`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rill_core::checkpoint::{CheckpointId, SubtaskSnapshot};
use rill_core::codec::{Envelope, Kind};
use rill_core::coordinator::CheckpointMetadata;
use rill_core::layout::{JobLayout, SubtaskLayout};
use rill_core::operator::OperatorSnapshot;
use rill_core::state::KeyedStateSnapshot;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn golden_path(kind: &str, version: u16) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{kind}-v{version}.bin"))
}

fn layout() -> JobLayout {
    JobLayout {
        max_parallelism: 128,
        subtasks: vec![
            SubtaskLayout {
                index: 0,
                parallelism: 1,
                source: Some("lines".to_owned()),
                operators: vec!["split".to_owned()],
            },
            SubtaskLayout {
                index: 0,
                parallelism: 1,
                source: None,
                operators: vec!["count".to_owned(), "sink".to_owned()],
            },
        ],
    }
}

fn metadata() -> CheckpointMetadata {
    CheckpointMetadata {
        checkpoint: CheckpointId(42),
        savepoint: true,
        triggered_at_ms: 1_764_756_000_000,
        acknowledged_at_ms: 1_764_756_000_250,
        subtasks: 2,
        state_bytes: 4_096,
        layout: layout(),
    }
}

fn snapshot() -> SubtaskSnapshot {
    let mut groups = BTreeMap::new();
    groups.insert(3, vec![1, 2, 3]);
    groups.insert(127, vec![0xff; 5]);
    let mut tables = BTreeMap::new();
    tables.insert("reduce".to_owned(), groups);
    SubtaskSnapshot {
        source_positions: vec![vec![9, 8, 7]],
        operators: vec![
            OperatorSnapshot {
                keyed: KeyedStateSnapshot { tables },
                operator: vec![b"txn-1".to_vec()],
                deferred: None,
            },
            OperatorSnapshot::default(),
        ],
    }
}

/// Checks every golden file of `kind` against `value`.
fn check<T>(kind: Kind, name: &str, value: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let current = kind.current_version();
    let sealed = Envelope::seal(kind, value).expect("encodes");
    if std::env::var_os("RILL_BLESS_GOLDEN").is_some() {
        std::fs::write(golden_path(name, current), &sealed).expect("golden file written");
    }
    for version in 1..=current {
        let path = golden_path(name, version);
        let bytes =
            std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        let decoded: T = Envelope::open(kind, &bytes)
            .unwrap_or_else(|error| panic!("{} no longer decodes: {error}", path.display()));
        assert_eq!(&decoded, value, "{} decodes differently", path.display());
        if version == current {
            assert!(
                bytes == sealed,
                "the encoding of {} changed without a version bump: bump its current_version \
                 in rill_core::codec, keep reading version {version}, and bless a new golden file",
                kind.name()
            );
        }
    }
}

#[test]
fn checkpoint_metadata_of_every_version_decodes() {
    check(Kind::CheckpointMetadata, "checkpoint-metadata", &metadata());
}

#[test]
fn subtask_snapshots_of_every_version_decode() {
    check(Kind::SubtaskSnapshot, "subtask-snapshot", &snapshot());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1_000))]

    /// What a fuzzer would do to the checkpoint decoders: arbitrary bytes, and golden files
    /// with bytes changed, cut or appended, never make them panic, and damaged bytes are never
    /// read as a value.
    #[test]
    fn checkpoint_decoders_never_panic_on_damaged_bytes(
        arbitrary in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
        at in 0usize..512,
        xor in 1u8..=255,
        cut in 0usize..512,
        tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..8),
    ) {
        let _ = Envelope::open::<SubtaskSnapshot>(Kind::SubtaskSnapshot, &arbitrary);
        let _ = Envelope::open::<CheckpointMetadata>(Kind::CheckpointMetadata, &arbitrary);
        let _ = rill_core::codec::decode::<SubtaskSnapshot>(&arbitrary);
        let _ = rill_core::codec::decode::<CheckpointMetadata>(&arbitrary);
        for (kind, name) in [
            (Kind::SubtaskSnapshot, "subtask-snapshot"),
            (Kind::CheckpointMetadata, "checkpoint-metadata"),
        ] {
            let golden = std::fs::read(golden_path(name, 1)).expect("golden file");
            let mut flipped = golden.clone();
            let at = at % flipped.len();
            flipped[at] ^= xor;
            let mut cut_short = golden.clone();
            cut_short.truncate(cut % golden.len());
            let mut longer = golden.clone();
            longer.extend_from_slice(&tail);
            for damaged in [flipped, cut_short, longer].iter().filter(|d| **d != golden) {
                proptest::prop_assert!(
                    Envelope::open::<SubtaskSnapshot>(kind, damaged).is_err()
                        && Envelope::open::<CheckpointMetadata>(kind, damaged).is_err()
                );
            }
        }
    }
}
