//! The `wordcount` example as a child process, killed with SIGKILL at random moments and
//! started again each time: its committed output must be exactly what one run without
//! failures commits — for every word the counts 1, 2, …, n, nothing lost and nothing twice —
//! whichever state backend (memory or fjall) each run keeps its counts in.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rill::prelude::*;

use crate::example_process::example_binary;

const WORDS: usize = 300_000;
const WORDS_PER_LINE: usize = 10;
const VOCABULARY: usize = 2_000;
const KILLS: usize = 6;

/// Starts a run with its counts in `state_backend`; the receiver gets each checkpoint the run
/// completes, from the `checkpoint <n> complete` lines it prints for that on stdout
/// (`--print-checkpoints`). Its errors go to stderr.
fn start(binary: &Path, data: &Path, state_backend: &str) -> (Child, Receiver<u64>) {
    let mut child = Command::new(binary)
        .arg("--data-dir")
        .arg(data)
        .args(["--parallelism", "2", "--bounded"])
        .args(["--state-backend", state_backend])
        .args(["--checkpoint-interval-ms", "20"])
        .arg("--print-checkpoints")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (completed, completions) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let checkpoint = line
                .strip_prefix("checkpoint ")
                .and_then(|rest| rest.strip_suffix(" complete"))
                .and_then(|id| id.parse().ok());
            match checkpoint {
                Some(checkpoint) => {
                    let _ = completed.send(checkpoint);
                }
                None => eprintln!("wordcount printed an unexpected line: {line}"),
            }
        }
    });
    (child, completions)
}

/// Fills topic `lines` with random words; returns each word's true count.
fn fill_input(data: &Path, rng: &mut StdRng) -> BTreeMap<String, u64> {
    let log = EventLog::open_or_create(data).unwrap();
    log.create_topic("lines", 3).unwrap();
    log.create_topic("counts", 2).unwrap();
    let mut reference = BTreeMap::new();
    let mut lines = Vec::with_capacity(WORDS / WORDS_PER_LINE);
    for _ in 0..WORDS / WORDS_PER_LINE {
        let words: Vec<String> = (0..WORDS_PER_LINE)
            .map(|_| format!("w{}", rng.random_range(0..VOCABULARY)))
            .collect();
        for word in &words {
            *reference.entry(word.clone()).or_insert(0) += 1;
        }
        lines.push(ProducerRecord::new(words.join(" ")));
    }
    log.append_batch("lines", lines).unwrap();
    log.flush().unwrap();
    reference
}

fn committed_records(data: &Path) -> u64 {
    let log = EventLog::open(data).unwrap();
    log.end_offsets("counts").unwrap().iter().sum()
}

#[test]
fn wordcount_killed_with_sigkill_again_and_again_commits_every_count_exactly_once() {
    let binary = example_binary("wordcount");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let reference = fill_input(&data, &mut rng);

    // Kills that came after some counts were committed and before all were.
    let mut killed_mid_run = 0;
    let started = Instant::now();
    for _ in 0..KILLS {
        // Runs keep their counts in memory or on disk at random: a checkpoint restores into
        // either, and a killed run's leftover working copy must not leak into the next.
        let backend = if rng.random_bool(0.5) {
            "fjall"
        } else {
            "memory"
        };
        let (mut child, completions) = start(&binary, &data, backend);
        // Once the run has completed a checkpoint, kill it a random moment later: before,
        // while or after it commits, aligns or writes the next checkpoint. (A run whose output
        // closes before has ended by itself.)
        match completions.recv_timeout(Duration::from_secs(60)) {
            Ok(_) | Err(RecvTimeoutError::Disconnected) => {}
            Err(RecvTimeoutError::Timeout) => {
                child.kill().unwrap();
                panic!("the run completed no checkpoint within a minute");
            }
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(0..200)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            child.wait().unwrap();
            let committed = committed_records(&data);
            eprintln!(
                "killed with {committed} of {WORDS} counts committed ({:?})",
                started.elapsed()
            );
            if committed > 0 && committed < WORDS as u64 {
                killed_mid_run += 1;
            }
        }
    }
    assert!(
        killed_mid_run > 0,
        "no kill came in the middle of a run: adjust the input size or the kill times"
    );
    // The last run goes to the end (bounded), with a generous limit.
    let (mut last, _completions) = start(&binary, &data, "fjall");
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(status) = last.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the last run did not end");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        status.success(),
        "the last run failed (its errors are above)"
    );

    let log = EventLog::open(&data).unwrap();
    assert!(
        log.transactions("").unwrap().is_empty(),
        "no transaction is left open"
    );
    let mut counts: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (partition, end) in log.end_offsets("counts").unwrap().into_iter().enumerate() {
        for record in log
            .read("counts", partition as u32, 0, end as usize)
            .unwrap()
        {
            let text = String::from_utf8(record.value).unwrap();
            let (word, count) = text.split_once('\t').unwrap();
            counts
                .entry(word.to_owned())
                .or_default()
                .push(count.parse().unwrap());
        }
    }
    assert_eq!(counts.len(), reference.len(), "every word has counts");
    for (word, mut seen) in counts {
        seen.sort_unstable();
        assert_eq!(
            seen,
            (1..=reference[&word]).collect::<Vec<_>>(),
            "the committed counts of '{word}' after {killed_mid_run} kill(s)"
        );
    }
}
