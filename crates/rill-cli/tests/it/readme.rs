//! README's shell blocks, run as a reader would run them: in order, in one fresh directory,
//! with the `rill` binary this package builds first on the `PATH`.
//!
//! The convention (README's "Tests" section says it too): a block fenced as ```` ```sh ```` is
//! run by this test and must succeed as written; a block that cannot run here — it builds with
//! cargo, runs an example, or needs something only a longer session makes — is fenced as
//! ```` ```sh,no-test ````. Shell blocks under any other name are refused, so that none is
//! skipped by accident. The Rust blocks are `rill`'s doc tests.

use std::path::Path;
use std::process::Command;

/// A fenced block of README: its info string (` ```sh,no-test ` gives `sh,no-test`), the line
/// it starts on, and its text.
struct Block {
    info: String,
    line: usize,
    text: String,
}

fn fenced_blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (index, line) in markdown.lines().enumerate() {
        match (open.take(), line.trim_start().strip_prefix("```")) {
            (None, Some(info)) => {
                open = Some(Block {
                    info: info.trim().to_owned(),
                    line: index + 1,
                    text: String::new(),
                })
            }
            (Some(block), Some(_)) => blocks.push(block),
            (Some(mut block), None) => {
                block.text.push_str(line);
                block.text.push('\n');
                open = Some(block);
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "README ends inside a fenced block");
    blocks
}

/// The shell blocks README asks to be run, in order; panics on a shell block fenced otherwise.
fn runnable_shell_blocks(markdown: &str) -> Vec<Block> {
    let mut runnable = Vec::new();
    for block in fenced_blocks(markdown) {
        let mut words = block.info.split(',').map(str::trim);
        let language = words.next().unwrap_or_default();
        let rest: Vec<&str> = words.collect();
        let shell = ["sh", "bash", "shell", "console", "shell-session"].contains(&language);
        match (shell, language, rest.as_slice()) {
            (false, ..) => {}
            (true, "sh", []) => runnable.push(block),
            (true, "sh", ["no-test"]) => {}
            (true, ..) => panic!(
                "README line {}: a shell block is fenced ```sh (run by this test) or \
                 ```sh,no-test, not ```{}",
                block.line, block.info
            ),
        }
    }
    runnable
}

#[test]
fn readme_shell_blocks_run_in_order() {
    let readme_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    let blocks = runnable_shell_blocks(&readme);
    assert!(
        blocks.iter().any(|block| block.text.contains("rill log")),
        "README has no runnable block using the rill CLI: is every block marked no-test?"
    );

    let rill = Path::new(env!("CARGO_BIN_EXE_rill"));
    let bin_dir = rill.parent().unwrap();
    let path = std::env::join_paths(std::iter::once(bin_dir.to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for block in blocks {
        // -e: stop at the first failing command; -x: show each command before it runs.
        let output = Command::new("sh")
            .args(["-e", "-x", "-c", &block.text])
            .current_dir(dir.path())
            .env("PATH", &path)
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "README's shell block at line {} failed ({}):\n{}\n--- stdout\n{}--- stderr\n{}",
            block.line,
            output.status,
            block.text,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
    }
}

#[test]
fn only_plain_sh_blocks_run_and_other_shell_fences_are_refused() {
    let markdown = "```sh\nrill log list\n```\n\n```sh,no-test\ncargo build\n```\n\n\
                    ```rust\nlet x = 1;\n```\n";
    let runnable = runnable_shell_blocks(markdown);
    assert_eq!(runnable.len(), 1);
    assert_eq!(runnable[0].text, "rill log list\n");
    assert_eq!(runnable[0].line, 1);

    let refused =
        std::panic::catch_unwind(|| runnable_shell_blocks("```bash\nrill log list\n```\n"));
    assert!(
        refused.is_err(),
        "a ```bash block must be refused, not skipped"
    );
}
