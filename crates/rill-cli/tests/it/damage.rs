//! `rill log check` and `rill log salvage` on a log with a flipped byte in its journal: the
//! damage is reported by topic, partition and offsets, nothing in the log changes, and the
//! intact records of every topic are copied into a new log.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::{failed, ok, rill};

/// Every file under `dir` with its content.
fn contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(contents(&path));
        } else {
            found.insert(path.clone(), std::fs::read(&path).unwrap());
        }
    }
    found
}

fn lines(range: std::ops::RangeInclusive<u32>, prefix: &str) -> String {
    range.map(|i| format!("{prefix}{i}\n")).collect()
}

#[test]
fn a_flipped_byte_is_checked_by_topic_and_offsets_and_the_rest_salvaged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(rill(&data, &["log", "create", "a"], ""));
    ok(rill(
        &data,
        &["log", "create", "b", "--partitions", "2"],
        "",
    ));
    ok(rill(&data, &["log", "produce", "a"], &lines(1..=20, "a-")));
    let to_b1 = ["log", "produce", "b", "--partition", "1"];
    ok(rill(&data, &to_b1, &lines(0..=29, "b-")));
    ok(rill(&data, &to_b1, &lines(30..=39, "b-value-")));
    ok(rill(&data, &to_b1, &lines(40..=59, "b-")));
    let intact = ok(rill(&data, &["log", "check"], ""));
    assert!(!intact.contains("DAMAGED"), "{intact}");

    let journal = contents(&data)
        .into_iter()
        .find(|(_, bytes)| bytes.windows(10).any(|window| window == b"b-value-35"))
        .unwrap()
        .0;
    let mut bytes = std::fs::read(&journal).unwrap();
    let at = bytes
        .windows(10)
        .position(|window| window == b"b-value-35")
        .unwrap();
    bytes[at + 9] ^= 0x01;
    std::fs::write(&journal, &bytes).unwrap();
    let before = contents(&data);

    let output = rill(&data, &["log", "check"], "");
    let report = String::from_utf8(output.stdout.clone()).unwrap();
    let error = failed(output);
    assert!(error.contains("is damaged"), "{error}");
    assert!(
        report.contains("holds a damaged batch") && report.contains(&journal.display().to_string()),
        "{report}"
    );
    assert!(
        report.contains("topic 'a' partition 0: end offset 20, 20 record(s) intact"),
        "{report}"
    );
    assert!(
        report.contains("topic 'b' partition 1: end offset 60, 50 record(s) intact: offsets 0 to 29, offsets 40 to 59")
            && report.contains("DAMAGED offsets 30 to 39"),
        "{report}"
    );
    assert!(contents(&data) == before, "check changes nothing");

    let refused = failed(rill(&data, &["log", "consume", "a"], ""));
    assert!(refused.contains("rill log salvage"), "{refused}");

    let saved = dir.path().join("saved");
    let output = rill(
        &data,
        &["log", "salvage", "--to", saved.to_str().unwrap()],
        "",
    );
    let summary = String::from_utf8_lossy(&output.stderr).into_owned();
    ok(output);
    assert!(
        summary.contains("copied 70 record(s) of 2 topic(s)"),
        "{summary}"
    );
    assert!(
        contents(&data) == before,
        "salvage changes nothing in the damaged log"
    );
    assert!(!ok(rill(&saved, &["log", "check"], "")).contains("DAMAGED"));
    assert_eq!(
        ok(rill(&saved, &["log", "consume", "a"], "")),
        lines(1..=20, "a-")
    );
    let b = ok(rill(
        &saved,
        &["log", "consume", "b", "--partition", "1"],
        "",
    ));
    assert_eq!(b, lines(0..=29, "b-") + &lines(40..=59, "b-"));
    let again = failed(rill(
        &data,
        &["log", "salvage", "--to", saved.to_str().unwrap()],
        "",
    ));
    assert!(again.contains("is not empty"), "{again}");
}
