//! Finding an example's binary, for the tests that run an example as a child process (and
//! kill it). Shared by the integration tests of `rill` and `rill-files` (included there by
//! path): `CARGO_PKG_NAME` is the package of whichever test includes it.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

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
