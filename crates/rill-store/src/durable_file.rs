//! Writing a small file (a directory's marker) so that after a crash it is either there whole
//! or not there at all: written beside under a temporary name, synced, renamed into place, and
//! the directory synced so that the rename is durable too. The checkpoint store and the event
//! log mark their directories with it.

use std::io::Write;
use std::path::Path;

/// Writes `contents` to `dir/name` atomically and durably, through `dir/<name>.tmp`.
pub fn write_durably(dir: &Path, name: &str, contents: &[u8]) -> std::io::Result<()> {
    let temporary = dir.join(format!("{name}.tmp"));
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&temporary, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_written_whole_and_the_temporary_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        write_durably(dir.path(), "MARK", b"first").unwrap();
        write_durably(dir.path(), "MARK", b"second").unwrap();
        assert_eq!(std::fs::read(dir.path().join("MARK")).unwrap(), b"second");
        assert!(!dir.path().join("MARK.tmp").exists());
    }
}
