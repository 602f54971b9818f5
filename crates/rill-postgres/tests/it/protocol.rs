//! The sink's two-phase commit across a crash, driven step by step as the runtime drives it:
//! what a checkpoint prepared is committed once on restore, what was staged but not prepared
//! dies with the process, a prepared transaction no completed checkpoint owns is rolled back,
//! and a restore from behind what the table holds is refused.

use rill_postgres::{PostgresSink, row};

use crate::{fresh_table, prepared, rows, word_sink};
use rill::core::Record;
use rill::core::checkpoint::CheckpointId;
use rill::core::operator::{OperatorInfo, Sink};

/// Subtask 0 of 1 of sink `sink` of job `job`, in a job that checkpoints.
fn info(job: &str) -> OperatorInfo {
    OperatorInfo::of_subtask(job, "sink", 0, 1)
}

fn batch(words: &[&str]) -> Vec<Record<(String, i64)>> {
    words
        .iter()
        .map(|word| Record::new(((*word).to_owned(), 1)))
        .collect()
}

fn expected(words: &[&str]) -> Vec<(String, i64)> {
    let mut rows: Vec<(String, i64)> = words.iter().map(|word| ((*word).to_owned(), 1)).collect();
    rows.sort();
    rows
}

#[test]
fn a_crash_between_prepare_and_commit_commits_once_on_restore() {
    let table = fresh_table("protocol", "word text NOT NULL, n bigint NOT NULL");
    let job = format!("protocol-{table}");
    let sink = word_sink(&table);

    let mut first = sink.writer(&info(&job));
    first.start_fresh().unwrap();
    first.write_batch(batch(&["a", "b"])).unwrap();
    first.pre_commit(CheckpointId(1)).unwrap();
    first.commit(CheckpointId(1)).unwrap();
    first.write_batch(batch(&["c"])).unwrap();
    let second_state = first.pre_commit(CheckpointId(2)).unwrap().unwrap();
    first.write_batch(batch(&["d"])).unwrap();
    assert_eq!(
        rows(&table),
        expected(&["a", "b"]),
        "checkpoint 2 is not complete"
    );
    // The process dies: checkpoint 2's transaction stays prepared, "d" was only staged.
    drop(first);
    assert_eq!(
        prepared(&format!("{job}/")),
        vec![format!("{job}/sink/0/1")]
    );

    let mut restored = sink.writer(&info(&job));
    restored.restore(vec![second_state.clone()]).unwrap();
    assert_eq!(rows(&table), expected(&["a", "b", "c"]));

    // It fails again after preparing checkpoint 3, which never completes: a restore from
    // checkpoint 2 rolls that transaction back, and commits nothing twice.
    restored.write_batch(batch(&["e"])).unwrap();
    restored.pre_commit(CheckpointId(3)).unwrap();
    drop(restored);
    let mut again = sink.writer(&info(&job));
    again.restore(vec![second_state]).unwrap();
    assert_eq!(rows(&table), expected(&["a", "b", "c"]));
    assert_eq!(prepared(&format!("{job}/")), Vec::<String>::new());
}

#[test]
fn a_restore_from_behind_the_table_is_refused_with_both_checkpoints() {
    let table = fresh_table("protocol", "word text NOT NULL, n bigint NOT NULL");
    let job = format!("protocol-{table}");
    let sink = word_sink(&table);
    let mut writer = sink.writer(&info(&job));
    writer.start_fresh().unwrap();
    let mut states = Vec::new();
    for checkpoint in 1..=3 {
        writer.write_batch(batch(&["x"])).unwrap();
        states.push(
            writer
                .pre_commit(CheckpointId(checkpoint))
                .unwrap()
                .unwrap(),
        );
        writer.commit(CheckpointId(checkpoint)).unwrap();
    }
    drop(writer);
    let error = sink
        .writer(&info(&job))
        .restore(vec![states[0].clone()])
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(&format!("PostgreSQL table '{table}'"))
            && error.contains("committed the output of checkpoint 3")
            && error.contains("starts from checkpoint 1"),
        "{error}"
    );
    let fresh = sink
        .writer(&info(&job))
        .start_fresh()
        .unwrap_err()
        .to_string();
    assert!(fresh.contains("starts from no checkpoint"), "{fresh}");

    let mut allowed = info(&job);
    allowed.allow_rewind = true;
    sink.writer(&allowed)
        .restore(vec![states[0].clone()])
        .expect("a rewind the job allows");
    sink.writer(&info(&job))
        .restore(vec![states[0].clone()])
        .expect("after the rewind, checkpoint 1 is where the table stands");
}

/// An upsert sink of `(word, n)` into `table`, keyed by `word`.
fn upsert_sink(table: &str) -> PostgresSink<(String, i64)> {
    PostgresSink::upsert(
        &crate::config(),
        table,
        &["word", "n"],
        &["word"],
        |(word, n): &(String, i64)| row![word.clone(), *n],
    )
    .unwrap()
}

fn batch_of(values: &[(&str, i64)]) -> Vec<Record<(String, i64)>> {
    values
        .iter()
        .map(|(word, n)| Record::new(((*word).to_owned(), *n)))
        .collect()
}

#[test]
fn upserts_of_one_key_in_consecutive_checkpoints_never_wait_and_apply_once_across_a_crash() {
    let table = fresh_table("upserts", "word text PRIMARY KEY, n bigint NOT NULL");
    let job = format!("upserts-{table}");
    let sink = upsert_sink(&table);
    let mut first = sink.writer(&info(&job));
    first.start_fresh().unwrap();
    // Checkpoint 1's transaction stays prepared while checkpoint 2 writes the same key: with
    // rows locked in the table, this would wait for a commit that cannot come first.
    first.write_batch(batch_of(&[("a", 1), ("b", 1)])).unwrap();
    first.pre_commit(CheckpointId(1)).unwrap();
    first.write_batch(batch_of(&[("a", 2), ("a", 3)])).unwrap();
    first.pre_commit(CheckpointId(2)).unwrap();
    assert_eq!(
        rows(&table),
        Vec::<(String, i64)>::new(),
        "nothing complete yet"
    );
    first.commit(CheckpointId(2)).unwrap();
    assert_eq!(
        rows(&table),
        vec![("a".to_owned(), 3), ("b".to_owned(), 1)],
        "the last row of each key"
    );
    first.write_batch(batch_of(&[("b", 7)])).unwrap();
    let third = first.pre_commit(CheckpointId(3)).unwrap().unwrap();
    drop(first);

    let mut restored = sink.writer(&info(&job));
    restored.restore(vec![third.clone()]).unwrap();
    restored.restore(vec![third]).unwrap();
    assert_eq!(rows(&table), vec![("a".to_owned(), 3), ("b".to_owned(), 7)]);
    let staged: i64 = crate::client()
        .query_one(&format!("SELECT count(*) FROM rill_staged_{table}"), &[])
        .unwrap()
        .get(0);
    assert_eq!(staged, 0, "applied rows leave the staging table");
    assert_eq!(prepared(&format!("{job}/")), Vec::<String>::new());
}

#[test]
fn an_upsert_key_without_a_unique_constraint_is_refused_naming_the_table() {
    let table = fresh_table("upserts", "word text NOT NULL, n bigint NOT NULL");
    let error = PostgresSink::upsert(
        &crate::config(),
        &table,
        &["word", "n"],
        &["word"],
        |(word, n): &(String, i64)| row![word.clone(), *n],
    )
    .err()
    .map(|error| error.to_string())
    .unwrap_or_default();
    assert!(
        error.contains(&table) && error.contains("ON CONFLICT"),
        "{error}"
    );
    let not_written = PostgresSink::upsert(
        &crate::config(),
        &table,
        &["word", "n"],
        &["id"],
        |(word, n): &(String, i64)| row![word.clone(), *n],
    )
    .err()
    .map(|error| error.to_string())
    .unwrap_or_default();
    assert!(
        not_written.contains("must be one or more of the columns written"),
        "{not_written}"
    );
}
