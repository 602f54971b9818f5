//! How the file sink names what it writes, and reads those names back.
//!
//! A transaction id (`<job>/<uid>/<subtask>/<sequence>`) becomes part of a file name escaped:
//! ASCII letters, digits and `_` stay, `/` becomes `-`, and every other byte is `%XX`. So an
//! escaped id holds no `.` and no `-` but those that were `/`, it never names a hidden file or
//! `..`, and it reads back unambiguously. Part `n` of transaction `id`, prepared for
//! checkpoint `c`, goes through three names:
//!
//! - `.part-<id>-<n>.inprogress` while its records are written (hidden: readers skip names
//!   starting with `.`);
//! - `.part-<id>-<n>-cp<c>.pending` once prepared (synced, still hidden);
//! - `part-<id>-<n>-cp<c>.<ext>` once committed (visible).
//!
//! Without checkpoints (a job that commits once, at its end) the `-cp<c>` is left out. A
//! committed name taken by an earlier run gets `-r<k>` before its extension. An
//! at-least-once sink writes visible files `part-<job>-<uid>-<subtask>-a<k>.<ext>` directly.
//! The commit marks of a writer's subtask live in `.rill-mark-<job>-<uid>-<subtask>`.

/// Escapes `text` for a file name (see the module docs).
pub(crate) fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => escaped.push(char::from(byte)),
            b'/' => escaped.push('-'),
            _ => escaped.push_str(&format!("%{byte:02X}")),
        }
    }
    escaped
}

/// The text `escaped` was made from, if [`escape`] made it.
pub(crate) fn unescape(escaped: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(escaped.len());
    let mut rest = escaped.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => bytes.push(byte),
            b'-' => bytes.push(b'/'),
            b'%' => {
                let hex = tail.get(..2)?;
                let hex = std::str::from_utf8(hex).ok()?;
                bytes.push(u8::from_str_radix(hex, 16).ok()?);
                rest = &tail[2..];
                continue;
            }
            _ => return None,
        }
        rest = tail;
    }
    String::from_utf8(bytes).ok()
}

/// Where a part file is in its transaction's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Being written: `.part-….inprogress`.
    InProgress,
    /// Prepared: `.part-….pending`.
    Pending,
}

impl Stage {
    fn suffix(self) -> &'static str {
        match self {
            Stage::InProgress => ".inprogress",
            Stage::Pending => ".pending",
        }
    }
}

/// A part file of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Part {
    /// The transaction's id, escaped.
    pub(crate) escaped_id: String,
    /// The part's number in its transaction, from 0.
    pub(crate) number: u32,
    /// The checkpoint it was prepared for, if the job checkpoints (not yet known in progress).
    pub(crate) checkpoint: Option<u64>,
}

impl Part {
    /// `<id>-<n>[-cp<c>]`.
    fn stem(&self) -> String {
        match self.checkpoint {
            Some(checkpoint) => format!("{}-{}-cp{checkpoint}", self.escaped_id, self.number),
            None => format!("{}-{}", self.escaped_id, self.number),
        }
    }

    /// Its hidden name at `stage`.
    pub(crate) fn hidden_name(&self, stage: Stage) -> String {
        format!(".part-{}{}", self.stem(), stage.suffix())
    }

    /// Its visible name, committed.
    pub(crate) fn committed_name(&self, extension: &str) -> String {
        format!("part-{}.{extension}", self.stem())
    }

    /// Its visible name, committed by the `rerun`th run that wrote it (see
    /// [`FileTarget`](super::FileTarget)'s commit).
    pub(crate) fn rerun_name(&self, rerun: u32, extension: &str) -> String {
        format!("part-{}-r{rerun}.{extension}", self.stem())
    }

    /// The part file a hidden name names, and its stage; `None` for any other name.
    pub(crate) fn parse_hidden(name: &str) -> Option<(Part, Stage)> {
        let rest = name.strip_prefix(".part-")?;
        let (stem, stage) = if let Some(stem) = rest.strip_suffix(Stage::Pending.suffix()) {
            (stem, Stage::Pending)
        } else {
            (
                rest.strip_suffix(Stage::InProgress.suffix())?,
                Stage::InProgress,
            )
        };
        // The checkpoint comes last, and an escaped id holds no `-cp<digits>` at its end (a
        // part number follows it): so the last `-cp` followed by digits only is ours.
        let (stem, checkpoint) = match stem.rsplit_once("-cp") {
            Some((before, digits)) if is_number(digits) => (before, Some(digits.parse().ok()?)),
            _ => (stem, None),
        };
        let (escaped_id, number) = stem.rsplit_once('-')?;
        if !is_number(number) || unescape(escaped_id).is_none() {
            return None;
        }
        if stage == Stage::InProgress && checkpoint.is_some() {
            return None;
        }
        let part = Part {
            escaped_id: escaped_id.to_owned(),
            number: number.parse().ok()?,
            checkpoint,
        };
        Some((part, stage))
    }
}

/// Whether `text` is a decimal number (digits only, at least one).
fn is_number(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit())
}

/// The name of an at-least-once file: the `number`th one of subtask `subtask` of `writer`
/// (`<job>/<uid>/`).
pub(crate) fn appended_name(writer: &str, subtask: u32, number: u64, extension: &str) -> String {
    format!("part-{}{subtask}-a{number}.{extension}", escape(writer))
}

/// The number of an at-least-once file of `writer`'s `subtask`, if `name` is one.
pub(crate) fn parse_appended(name: &str, writer: &str, subtask: u32) -> Option<u64> {
    let prefix = format!("part-{}{subtask}-a", escape(writer));
    let rest = name.strip_prefix(&prefix)?;
    let (number, _extension) = rest.split_once('.')?;
    is_number(number).then(|| number.parse().ok())?
}

/// The name of the commit mark file of `writer`'s `subtask`.
pub(crate) fn mark_name(writer: &str, subtask: u32) -> String {
    format!(".rill-mark-{}{subtask}", escape(writer))
}

/// Whether `name` is a commit mark file of `writer` (of any subtask).
pub(crate) fn is_mark_of(name: &str, writer: &str) -> bool {
    name.strip_prefix(".rill-mark-")
        .and_then(|rest| rest.strip_prefix(&escape(writer)))
        .is_some_and(is_number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_reads_back_and_makes_no_hidden_or_dotted_names() {
        for text in [
            "orders/enrich/0/12",
            "my-job/µ s/3/0",
            "../x/.",
            "",
            "a%2Fb",
        ] {
            let escaped = escape(text);
            assert!(
                !escaped.contains('.') && !escaped.contains('/'),
                "{escaped}"
            );
            assert_eq!(unescape(&escaped).as_deref(), Some(text), "{escaped}");
        }
        assert_eq!(escape("orders/enrich/0/12"), "orders-enrich-0-12");
        assert_eq!(escape("my-job/x y/"), "my%2Djob-x%20y-");
        assert_eq!(unescape("a.b"), None);
        assert_eq!(unescape("a%2"), None);
    }

    #[test]
    fn part_names_read_back_at_every_stage() {
        let part = Part {
            escaped_id: escape("cpu/cp7/0/3"),
            number: 2,
            checkpoint: None,
        };
        let in_progress = part.hidden_name(Stage::InProgress);
        assert_eq!(in_progress, ".part-cpu-cp7-0-3-2.inprogress");
        assert_eq!(
            Part::parse_hidden(&in_progress),
            Some((part.clone(), Stage::InProgress))
        );
        let prepared = Part {
            checkpoint: Some(41),
            ..part
        };
        let pending = prepared.hidden_name(Stage::Pending);
        assert_eq!(pending, ".part-cpu-cp7-0-3-2-cp41.pending");
        assert_eq!(
            Part::parse_hidden(&pending),
            Some((prepared.clone(), Stage::Pending))
        );
        assert_eq!(
            prepared.committed_name("jsonl"),
            "part-cpu-cp7-0-3-2-cp41.jsonl"
        );
        for other in [
            "part-cpu-cp7-0-3-2-cp41.jsonl",
            ".part-x.pending",
            ".part-x-1-cp.pending",
            ".part-x-1-cp4.inprogress",
            ".part-x.y-1.pending",
            ".rill-mark-x-0",
        ] {
            assert_eq!(Part::parse_hidden(other), None, "{other}");
        }
    }

    #[test]
    fn appended_and_mark_names_belong_to_their_writer() {
        let name = appended_name("j/u/", 3, 12, "csv");
        assert_eq!(name, "part-j-u-3-a12.csv");
        assert_eq!(parse_appended(&name, "j/u/", 3), Some(12));
        assert_eq!(parse_appended(&name, "j/u/", 1), None);
        assert_eq!(parse_appended("part-j-u-3-0-cp4.csv", "j/u/", 3), None);
        assert!(is_mark_of(&mark_name("j/u/", 3), "j/u/"));
        assert!(!is_mark_of(&mark_name("j/u/", 3), "j/"));
        assert!(!is_mark_of(".rill-mark-j-u-3.tmp", "j/u/"));
    }
}
