//! Jobs built with `StreamEnv` and `DataStream` from in-memory sources: results against a
//! reference computed here, exchanges, unions, chaining, failures and configuration errors.

use std::collections::BTreeMap;

use rill::error::BuildError;
use rill::prelude::*;
use rill::runtime::JobError;

use crate::support::Counter;

fn words() -> Vec<String> {
    (0..2_000u32)
        .map(|i| format!("w{} w{} w{}", i % 13, (i * 7) % 29, i % 3))
        .collect()
}

fn reference_counts(lines: &[String]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for word in lines.iter().flat_map(|l| l.split_whitespace()) {
        *counts.entry(word.to_owned()).or_insert(0) += 1;
    }
    counts
}

#[test]
fn word_count_equals_the_reference_at_every_parallelism() {
    let lines = words();
    let reference = reference_counts(&lines);
    for parallelism in [1, 2, 4] {
        let env = StreamEnv::new();
        env.set_parallelism(parallelism);
        let updates = env
            .from_iter(lines.clone())
            .flat_map(|line: String| {
                line.split_whitespace()
                    .map(String::from)
                    .collect::<Vec<_>>()
            })
            .key_by(|word: &String| word.clone())
            .process(Counter::new())
            .collect();
        env.execute("wordcount").unwrap();
        let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for (word, count) in updates.take() {
            seen.entry(word).or_default().push(count);
        }
        assert_eq!(seen.len(), reference.len(), "parallelism {parallelism}");
        for (word, counts) in seen {
            let n = reference[&word];
            assert_eq!(
                counts,
                (1..=n).collect::<Vec<_>>(),
                "updates of '{word}' at parallelism {parallelism}"
            );
        }
    }
}

#[test]
fn reduce_keeps_a_running_result_per_key() {
    let env = StreamEnv::new();
    env.set_parallelism(3);
    let sums = env
        .from_sequence(0..30_000)
        .map(|i| (i % 10, i))
        .key_by(|(k, _): &(u64, u64)| *k)
        .reduce(|(k, a), (_, b)| (k, a + b))
        .collect();
    env.execute("sums").unwrap();
    let mut last: BTreeMap<u64, u64> = BTreeMap::new();
    let updates = sums.take();
    assert_eq!(updates.len(), 30_000);
    for (key, sum) in updates {
        let previous = last.insert(key, sum).unwrap_or(0);
        assert!(
            sum >= previous,
            "a running sum of non-negative values never shrinks"
        );
    }
    for key in 0..10 {
        let expected: u64 = (0..30_000u64).filter(|i| i % 10 == key).sum();
        assert_eq!(last[&key], expected);
    }
}

#[test]
fn union_rebalance_and_broadcast_deliver_everything() {
    let env = StreamEnv::new();
    let evens = env.from_iter((0..1_000u64).step_by(2).collect::<Vec<_>>());
    let odds = env.from_iter((1..1_000u64).step_by(2).collect::<Vec<_>>());
    let all = evens
        .union([odds])
        .rebalance()
        .map(|x| x * 10)
        .set_parallelism(3)
        .collect();
    let env_broadcast = env.clone();
    let copies = env_broadcast
        .from_iter(vec![1u32, 2, 3])
        .broadcast()
        .map(|x| x)
        .set_parallelism(4)
        .collect();
    env.execute("exchanges").unwrap();
    let mut all = all.take();
    all.sort_unstable();
    assert_eq!(all, (0..1_000u64).map(|x| x * 10).collect::<Vec<_>>());
    let mut copies = copies.take();
    copies.sort_unstable();
    assert_eq!(
        copies,
        vec![1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3],
        "each of 4 subtasks sees every value"
    );
}

#[test]
fn one_stream_can_feed_several_operators() {
    let env = StreamEnv::new();
    env.set_parallelism(2);
    let numbers = env.from_sequence(0..1_000);
    let evens = numbers.clone().filter(|n| n % 2 == 0).collect();
    let odds = numbers.filter(|n| n % 2 == 1).map(|n| n * 10).collect();
    env.execute("fan-out").unwrap();
    let (mut evens, mut odds) = (evens.take(), odds.take());
    evens.sort_unstable();
    odds.sort_unstable();
    assert_eq!(evens, (0..1_000).step_by(2).collect::<Vec<u64>>());
    assert_eq!(
        odds,
        (1..1_000).step_by(2).map(|n| n * 10).collect::<Vec<u64>>()
    );
}

#[test]
fn a_job_can_run_twice() {
    let env = StreamEnv::new();
    let out = env.from_iter(vec![1u8, 2, 3]).map(|x| x + 1).collect();
    env.execute("first").unwrap();
    env.execute("second").unwrap();
    assert_eq!(out.take(), vec![2, 3, 4, 2, 3, 4]);
}

#[test]
fn a_panicking_user_function_fails_the_job_with_its_name() {
    let env = StreamEnv::new();
    env.set_parallelism(2);
    env.from_sequence(0..100_000)
        .map(|i| {
            if i == 77_777 {
                panic!("cannot handle {i}")
            } else {
                i
            }
        })
        .name("fragile")
        .filter(|i| i % 2 == 0)
        .collect();
    let error = env.execute("doomed").unwrap_err();
    let Some(JobError::TaskFailed {
        job,
        subtask,
        error,
        ..
    }) = error.job_error()
    else {
        panic!("expected a task failure, got {error}");
    };
    assert_eq!(job, "doomed");
    assert_eq!(error.operator, "fragile");
    assert_eq!(*subtask, 1);
    assert!(error.to_string().contains("cannot handle 77777"), "{error}");
}

#[test]
fn a_panic_names_its_job_and_subtask_before_rusts_message() {
    // The panic hook writes to the process's stderr, so the job runs in a child process: this
    // test binary, asked to run this test with the variable set.
    if std::env::var_os("RILL_TEST_PANICKING_CHILD").is_some() {
        let env = StreamEnv::new();
        env.from_sequence(0..10)
            .map(|i| {
                if i == 7 {
                    panic!("cannot handle {i}")
                } else {
                    i
                }
            })
            .name("fragile")
            .collect();
        assert!(env.execute("doomed").is_err());
        return;
    }
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "api::a_panic_names_its_job_and_subtask_before_rusts_message",
        ])
        .arg("--nocapture")
        .env("RILL_TEST_PANICKING_CHILD", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let context = stderr
        .find("rill: a panic in job 'doomed', subtask 0 of 1 (")
        .unwrap_or_else(|| panic!("no line naming the subtask: {stderr}"));
    let rust = stderr
        .find("panicked at")
        .unwrap_or_else(|| panic!("no panic message: {stderr}"));
    assert!(context < rust, "{stderr}");
    assert!(stderr[context..rust].contains("fragile"), "{stderr}");
}

#[test]
fn a_failing_process_function_fails_the_job() {
    #[derive(Clone)]
    struct Picky;
    impl KeyedProcessFunction for Picky {
        type Key = u64;
        type In = u64;
        type Out = u64;
        fn process(
            &mut self,
            value: u64,
            ctx: &mut KeyedContext<'_, u64, u64>,
        ) -> Result<(), BoxError> {
            if value == 500 {
                return Err(format!("value {value} is not allowed").into());
            }
            ctx.emit(value);
            Ok(())
        }
    }
    let env = StreamEnv::new();
    env.from_sequence(0..1_000)
        .key_by(|v: &u64| *v)
        .process(Picky)
        .name("picky")
        .collect();
    let error = env.execute("picky job").unwrap_err().to_string();
    assert!(
        error.contains("operator 'picky' failed: value 500 is not allowed"),
        "{error}"
    );
}

#[test]
fn a_failed_jobs_error_prints_its_message_and_causes_in_debug_form() {
    /// A reading that is not a number, caused by the parse error.
    #[derive(Debug)]
    struct BadReading(std::num::ParseIntError);
    impl std::fmt::Display for BadReading {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("the reading is not a number")
        }
    }
    impl std::error::Error for BadReading {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
    #[derive(Clone)]
    struct Parse;
    impl KeyedProcessFunction for Parse {
        type Key = u8;
        type In = (u8, String);
        type Out = u64;
        fn process(
            &mut self,
            (_, text): (u8, String),
            ctx: &mut KeyedContext<'_, u8, u64>,
        ) -> Result<(), BoxError> {
            ctx.emit(text.parse().map_err(BadReading)?);
            Ok(())
        }
    }
    let env = StreamEnv::new();
    env.from_iter(vec![(1u8, "12".to_owned()), (1, "x3".to_owned())])
        .key_by(|(sensor, _): &(u8, String)| *sensor)
        .process(Parse)
        .name("parse")
        .collect();
    let error = env.execute("readings").unwrap_err();
    // What `main` returning `Result<(), RillError>` prints after "Error: ".
    let printed = format!("{error:?}");
    assert_eq!(
        printed,
        "job 'readings' failed in subtask 0 of 1 (parse -> parse (main output) -> collect): \
         operator 'parse' failed: the reading is not a number\ncaused by: invalid digit found in string"
    );
    let Some(job_error) = error.job_error() else {
        panic!("expected a task failure, got {error}");
    };
    assert_eq!(format!("{job_error:?}"), printed);
}

#[test]
fn a_build_error_prints_its_message_in_debug_form() {
    let env = StreamEnv::new();
    env.from_iter(vec![1]).set_parallelism(2).collect();
    let Err(error) = env.job_graph("bad") else {
        panic!("a non-parallel source at parallelism 2 must not build");
    };
    assert_eq!(format!("{error:?}"), error.to_string());
    assert!(format!("{error:?}").starts_with("source '"), "{error:?}");
}

#[test]
fn a_non_parallel_source_refuses_parallelism() {
    let env = StreamEnv::new();
    env.from_iter(vec![1]).set_parallelism(2).collect();
    let error = env.execute("bad").unwrap_err();
    assert!(
        matches!(
            error.build_error(),
            Some(BuildError::NonParallelSource { parallelism: 2, .. })
        ),
        "{error}"
    );
}

#[test]
fn an_empty_job_is_refused() {
    let error = StreamEnv::new().execute("empty").unwrap_err();
    assert_eq!(error.to_string(), "job 'empty' has no source");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_can_be_awaited_and_cancelled_from_async_code() {
    let env = StreamEnv::new();
    let out = env.from_sequence(0..10_000).map(|x| x * 2).collect();
    env.execute_async("awaited").unwrap().join().await.unwrap();
    assert_eq!(out.len(), 10_000);

    struct Forever;
    impl Source for Forever {
        type Out = u8;
        fn poll_next(&mut self, _out: &mut SourceOutput<u8>) -> Result<SourcePoll, BoxError> {
            Ok(SourcePoll::Idle)
        }
    }
    let env = StreamEnv::new();
    env.from_source("forever", false, |_, _| Forever).collect();
    let job = env.execute_async("forever").unwrap();
    job.cancel();
    let error = job.join().await.unwrap_err();
    assert!(
        matches!(error.job_error(), Some(JobError::Cancelled(_))),
        "{error}"
    );
}
