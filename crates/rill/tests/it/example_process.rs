//! Running an example as a child process: finding its binary, and killing it with SIGKILL
//! again and again before letting it finish. Shared by the integration tests of `rill` and
//! `rill-files` (included there by path): `CARGO_PKG_NAME` is the package of whichever test
//! includes it.

#![allow(clippy::unwrap_used)]

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;

/// The example binary `name` of the package under test, built beside the test binaries
/// (`target/<profile>/examples/`).
/// `cargo test` builds an example there unless the example is a test itself (`test = true`, as
/// `dashboard` is): then it is built here.
pub fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let binary = profile_dir.join("examples").join(name);
    if !binary.exists() {
        let status = std::process::Command::new(env!("CARGO"))
            .args([
                "build",
                "--quiet",
                "-p",
                env!("CARGO_PKG_NAME"),
                "--example",
                name,
            ])
            .status()
            .unwrap();
        assert!(
            status.success(),
            "cannot build the example {name}: {status}"
        );
    }
    assert!(
        binary.exists(),
        "{} is missing after building it: is CARGO_TARGET_DIR another than the tests'?",
        binary.display()
    );
    binary
}

/// Starts `command` (an example) with warnings logged to the test's stderr and its stdout
/// dropped.
pub fn spawn(command: &mut Command) -> Child {
    command
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// How long the last, unkilled run of an example may take.
const FINISH_TIMEOUT: Duration = Duration::from_secs(300);

/// Starts the example `name` with `start`, and kills each run with SIGKILL after a random while
/// in `kill_after_ms` (while it reads, writes, prepares or commits), `kills` times; then lets
/// a last run finish, and checks that it succeeded. A run that finishes before its kill is the
/// last. Returns how many runs were killed.
pub fn kill_and_restart(
    name: &str,
    mut start: impl FnMut() -> Child,
    kills: usize,
    kill_after_ms: Range<u64>,
    rng: &mut impl Rng,
) -> usize {
    let mut killed = 0;
    loop {
        let mut child = start();
        if killed < kills {
            std::thread::sleep(Duration::from_millis(
                rng.random_range(kill_after_ms.clone()),
            ));
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap();
                child.wait().unwrap();
                killed += 1;
                continue;
            }
        }
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > FINISH_TIMEOUT {
                child.kill().unwrap();
                panic!("{name} did not finish within {FINISH_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "{name} failed: {status}");
        return killed;
    }
}
