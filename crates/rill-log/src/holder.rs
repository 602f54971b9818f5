//! Which process holds a log open, so that a process refused by the log's lock can say who
//! has it. Whoever opens a log for writing records itself in the file `holder` of the log's
//! directory: one line, `<pid> <program>`. The file is a hint for that message only: nothing
//! reads it otherwise, a missing or garbled one just makes the message say less, and failing
//! to write it does not fail the open.

use std::path::Path;

/// The file a log's holder is recorded in.
const HOLDER_FILE: &str = "holder";

/// Records this process as the holder of the log at `path`.
pub(crate) fn record(path: &Path) {
    let program = std::env::args()
        .next()
        .and_then(|program| {
            Path::new(&program)
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    let line = format!("{} {program}\n", std::process::id());
    if let Err(error) = std::fs::write(path.join(HOLDER_FILE), line) {
        tracing::debug!(path = %path.display(), %error, "cannot record the log's holder");
    }
}

/// Who holds the log at `path`, as recorded: `process 1234 (wordcount)`.
pub(crate) fn describe(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path.join(HOLDER_FILE)).ok()?;
    let (pid, program) = text.trim_end().split_once(' ')?;
    let pid: u32 = pid.parse().ok()?;
    let program: String = program
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    Some(if program.is_empty() {
        format!("process {pid}")
    } else {
        format!("process {pid} ({program})")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_is_described_by_pid_and_program_and_garbage_says_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(describe(dir.path()), None);
        record(dir.path());
        let described = describe(dir.path()).unwrap();
        assert!(
            described.starts_with(&format!("process {} (", std::process::id())),
            "{described}"
        );
        std::fs::write(dir.path().join(HOLDER_FILE), "not a pid\u{1b}").unwrap();
        assert_eq!(describe(dir.path()), None);
    }
}
