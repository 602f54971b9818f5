//! The PostgreSQL sink against a real server (`cargo xtask services` starts one; set
//! `RILL_POSTGRES_URL` for another): jobs writing tables exactly-once, the two-phase-commit
//! protocol across a crash, refusals, and clear errors. A missing server fails every test
//! with how to start it; none is skipped.

#![allow(clippy::unwrap_used)]

mod protocol;

use std::sync::atomic::{AtomicU32, Ordering};

use postgres::{Client, NoTls};
use rill::prelude::*;
use rill_postgres::{PostgresSink, PostgresSinkExt, row};

/// The server the tests use.
pub fn config() -> String {
    std::env::var("RILL_POSTGRES_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 port=15432 user=rill dbname=rill".to_owned())
}

/// A session with the server, for setting up tables and reading them back.
pub fn client() -> Client {
    let config = config();
    Client::connect(&config, NoTls).unwrap_or_else(|error| {
        panic!(
            "no PostgreSQL at '{config}' ({error}): start the test servers with \
             `cargo xtask services`, or point RILL_POSTGRES_URL at one"
        )
    })
}

/// A fresh table `name_<pid>_<n>` with `columns` (SQL column definitions); returns its name.
pub fn fresh_table(name: &str, columns: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let table = format!(
        "{name}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    client()
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} ({columns})"
        ))
        .unwrap();
    table
}

/// The table's `(word, n)` rows, sorted.
pub fn rows(table: &str) -> Vec<(String, i64)> {
    let mut rows: Vec<(String, i64)> = client()
        .query(&format!("SELECT word, n FROM {table}"), &[])
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    rows.sort();
    rows
}

/// The prepared transactions whose id starts with `prefix`.
pub fn prepared(prefix: &str) -> Vec<String> {
    client()
        .query(
            "SELECT gid FROM pg_prepared_xacts WHERE starts_with(gid, $1)",
            &[&prefix],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// An exactly-once sink of `(word, n)` into `table`'s columns `word` and `n`.
pub fn word_sink(table: &str) -> PostgresSink<(String, i64)> {
    PostgresSink::new(
        &config(),
        table,
        &["word", "n"],
        |(word, n): &(String, i64)| row![word.clone(), *n],
    )
    .unwrap()
}

#[test]
fn a_job_writes_every_row_once_and_leaves_no_transaction_open() {
    let table = fresh_table("words", "word text NOT NULL, n bigint NOT NULL");
    let expected: Vec<(String, i64)> = (0..5_000).map(|i| (format!("w{i}"), i)).collect();
    let env = StreamEnv::new();
    env.set_parallelism(2);
    env.enable_checkpointing(std::time::Duration::from_millis(20));
    env.from_iter(expected.clone())
        .rebalance()
        .sink_to_postgres(word_sink(&table));
    let job = format!("pg-{table}");
    env.execute(&job).unwrap();
    let mut expected = expected;
    expected.sort();
    assert_eq!(rows(&table), expected);
    assert_eq!(prepared(&format!("{job}/")), Vec::<String>::new());
}

#[test]
fn an_upsert_job_leaves_each_keys_latest_count() {
    let table = fresh_table("latest", "word text PRIMARY KEY, n bigint NOT NULL");
    let env = StreamEnv::new();
    env.set_parallelism(2);
    env.enable_checkpointing(std::time::Duration::from_millis(20));
    let words: Vec<String> = (0..4_000).map(|i| format!("w{}", i % 13)).collect();
    let sink = PostgresSink::upsert(
        &config(),
        &table,
        &["word", "n"],
        &["word"],
        |(word, n): &(String, i64)| row![word.clone(), *n],
    )
    .unwrap();
    env.from_iter(words)
        .map(|word: String| (word, 1_i64))
        .key_by(|(word, _): &(String, i64)| word.clone())
        .reduce(|(word, a), (_, b)| (word, a + b))
        .sink_to_postgres(sink);
    env.execute(&format!("pg-{table}")).unwrap();
    let expected: Vec<(String, i64)> = {
        let mut counts: Vec<(String, i64)> = (0..13)
            .map(|w| (format!("w{w}"), 4_000 / 13 + i64::from(w < 4_000 % 13)))
            .collect();
        counts.sort();
        counts
    };
    assert_eq!(rows(&table), expected);
}

#[test]
fn at_least_once_copies_without_prepared_transactions() {
    let table = fresh_table("words", "word text NOT NULL, n bigint NOT NULL");
    let env = StreamEnv::new();
    env.from_iter(vec![("a".to_owned(), 1), ("b".to_owned(), 2)])
        .sink_to_postgres(word_sink(&table).at_least_once());
    env.execute(&format!("pg-{table}")).unwrap();
    assert_eq!(rows(&table), vec![("a".to_owned(), 1), ("b".to_owned(), 2)]);
}

#[test]
fn a_missing_table_or_column_is_named() {
    let table = fresh_table("words", "word text NOT NULL, n bigint NOT NULL");
    let make = |table: &str, columns: &[&str]| {
        PostgresSink::new(&config(), table, columns, |_: &String| row![1_i64])
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default()
    };
    let missing_column = make(&table, &["word", "count"]);
    assert!(
        missing_column.contains(&table) && missing_column.contains("\"count\" does not exist"),
        "{missing_column}"
    );
    let missing_table = make("no_such_table", &["word"]);
    assert!(
        missing_table.contains("no_such_table") && missing_table.contains("does not exist"),
        "{missing_table}"
    );
    let not_a_name = make("words; DROP TABLE x", &["word"]);
    assert!(not_a_name.contains("not a table name"), "{not_a_name}");
}

#[test]
fn a_row_of_the_wrong_width_fails_the_job_with_the_table_named() {
    let table = fresh_table("words", "word text NOT NULL, n bigint NOT NULL");
    let sink = PostgresSink::new(&config(), &table, &["word", "n"], |word: &String| {
        row![word.clone()]
    })
    .unwrap();
    let env = StreamEnv::new();
    env.from_iter(vec!["a".to_owned()])
        .sink_to_postgres(sink.at_least_once());
    let error = env.execute(&format!("pg-{table}")).unwrap_err();
    let error = format!("{error:#}");
    assert!(
        error.contains("a row of 1 values") && error.contains(&table),
        "{error}"
    );
}

#[test]
fn a_server_that_is_not_there_is_named_without_its_password() {
    let error = PostgresSink::new(
        "host=127.0.0.1 port=1 user=rill password=secret dbname=rill connect_timeout=2",
        "t",
        &["x"],
        |_: &String| row![1_i64],
    )
    .err()
    .map(|error| error.to_string())
    .unwrap_or_default();
    assert!(
        error.contains("cannot connect to PostgreSQL with 'host=127.0.0.1 port=1 user=rill")
            && !error.contains("secret"),
        "{error}"
    );
}
