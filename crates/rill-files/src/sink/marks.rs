//! The file sink's commit marks: for each subtask of a writer, a small hidden file
//! `.rill-mark-<job>-<uid>-<subtask>` holding the newest checkpoint whose output that subtask
//! committed. A writer's mark ([`committed_checkpoint`](super::FileTarget)) is the largest of
//! its subtasks'.
//!
//! **The rule.** A commit writes its subtask's mark *before* it renames its part files into
//! view, and the mark never goes back except by a rewind. So whatever a reader can see, the
//! marks cover: a crash between the two leaves the mark ahead of the visible files, never
//! behind (the restored job commits the pending files again, idempotently). Ahead is the safe
//! side — a start from a checkpoint older than the mark is refused, and the only output such a
//! start would not write twice is that of the interrupted commit. The committed files carry
//! their checkpoint in their names too (for people and tools), but the marks do not depend on
//! them: files moved out of the directory by whoever consumes them take no mark with them.
//! A rewind the job was allowed lowers every mark of the writer above the point it starts from
//! (or deletes them, starting from none).
//!
//! Each mark is written whole or not at all: into a temporary file, synced, renamed over the
//! mark; the caller syncs the directory. Its content is one header line and the checkpoint.

use std::fs;
use std::io::Write as _;
use std::path::Path;

use crate::error::FileSinkError;

/// The first line of every mark file: what it is, and its format's version.
const HEADER: &str = "rill-files commit mark v1";

/// The largest a mark file may be: anything longer is not one.
const MARK_BYTES_MAX: u64 = 128;

/// The checkpoint in the mark file `path`, if it exists.
pub(crate) fn read(path: &Path) -> Result<Option<u64>, FileSinkError> {
    let damaged = |reason: String| FileSinkError::Mark {
        path: path.to_owned(),
        reason,
    };
    let size = match fs::metadata(path) {
        Ok(metadata) => metadata.len(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(FileSinkError::io("read the commit mark", path)(error)),
    };
    if size > MARK_BYTES_MAX {
        return Err(damaged(format!(
            "{size} bytes, more than a mark's {MARK_BYTES_MAX}"
        )));
    }
    let text = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(FileSinkError::io("read the commit mark", path)(error)),
    };
    let text = String::from_utf8(text).map_err(|_| damaged("not UTF-8".to_owned()))?;
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return Err(damaged(format!("its first line is not '{HEADER}'")));
    }
    let checkpoint = lines
        .next()
        .and_then(|line| line.parse::<u64>().ok())
        .ok_or_else(|| damaged("its second line is not a checkpoint number".to_owned()))?;
    if lines.next().is_some() {
        return Err(damaged("more than two lines".to_owned()));
    }
    Ok(Some(checkpoint))
}

/// Writes `checkpoint` into the mark file `path`, whole or not at all, through the temporary
/// file `temporary` (which no other writer uses). The directory is the caller's to sync.
pub(crate) fn write(path: &Path, temporary: &Path, checkpoint: u64) -> Result<(), FileSinkError> {
    let mut file = fs::File::create(temporary).map_err(FileSinkError::io(
        "create the commit mark's temporary file",
        temporary,
    ))?;
    file.write_all(format!("{HEADER}\n{checkpoint}\n").as_bytes())
        .map_err(FileSinkError::io(
            "write the commit mark's temporary file",
            temporary,
        ))?;
    file.sync_all().map_err(FileSinkError::io(
        "sync the commit mark's temporary file",
        temporary,
    ))?;
    drop(file);
    fs::rename(temporary, path).map_err(FileSinkError::io("put the commit mark in place", path))
}

/// Deletes the mark file `path`, if it exists. The directory is the caller's to sync.
pub(crate) fn remove(path: &Path) -> Result<(), FileSinkError> {
    super::target::unless_gone(fs::remove_file(path), "delete the commit mark", path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_mark_reads_back_and_damage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".rill-mark-j-u-0");
        let temporary = dir.path().join(".rill-mark-j-u-0.tmp");
        assert_eq!(read(&path).unwrap(), None);
        write(&path, &temporary, 17).unwrap();
        assert_eq!(read(&path).unwrap(), Some(17));
        assert!(!temporary.exists());
        for damaged in [
            "",
            "rill-files commit mark v1\n",
            "x\n3\n",
            "rill-files commit mark v1\n3\n4\n",
        ] {
            fs::write(&path, damaged).unwrap();
            let error = read(&path).unwrap_err().to_string();
            assert!(
                error.contains(".rill-mark-j-u-0") && error.contains("damaged"),
                "{error}"
            );
        }
        remove(&path).unwrap();
        remove(&path).unwrap();
        assert_eq!(read(&path).unwrap(), None);
    }
}
