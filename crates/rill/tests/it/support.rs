//! Pieces the tests share.

use std::path::{Path, PathBuf};

use rill::prelude::*;

/// The example binary `name`, built beside the test binaries (`target/<profile>/examples/`).
/// `cargo test` builds an example there unless the example is a test itself (`test = true`, as
/// `dashboard` is): then it is built here.
pub fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let binary = profile_dir.join("examples").join(name);
    if !binary.exists() {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "rill", "--example", name])
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

/// Counts each word and emits `(word, count so far)`; the count lives in keyed state.
#[derive(Clone)]
pub struct Counter {
    count: ValueState<u64>,
}

impl Counter {
    pub fn new() -> Self {
        Counter {
            count: ValueState::new("count"),
        }
    }
}

impl KeyedProcessFunction for Counter {
    type Key = String;
    type In = String;
    type Out = (String, u64);

    fn process(
        &mut self,
        word: String,
        ctx: &mut KeyedContext<'_, String, (String, u64)>,
    ) -> Result<(), BoxError> {
        let count = self.count.get(ctx).unwrap_or(0) + 1;
        self.count.set(ctx, count);
        ctx.emit((word, count));
        Ok(())
    }
}
