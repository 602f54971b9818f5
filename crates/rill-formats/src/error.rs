//! The errors of decoding and encoding a record. A [`DecodeError`] says what a user needs to
//! find the record in their data: the format, why it does not decode, the record itself
//! (its first bytes, escaped, and its length), and — when the connector gives it with
//! [`DecodeError::at`] — the split (a file, a partition) and the offset it was read at.

use std::fmt;

/// The bytes of a record a [`DecodeError`] keeps and shows: enough to recognise it, not so
/// many that a huge record floods the log.
pub const PREVIEW_BYTES: usize = 64;

/// Where a record was read: the connector's split and the offset in it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Location {
    /// The split, as the user knows it: `file 'a.jsonl'`, `partition 2 of topic 'orders'`.
    split: String,
    offset: u64,
    /// What the offset counts: `byte` in a file, `offset` in a log.
    unit: &'static str,
}

/// A record that does not decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    format: &'static str,
    reason: String,
    /// The record's first [`PREVIEW_BYTES`] bytes.
    preview: Vec<u8>,
    length: usize,
    location: Option<Location>,
}

impl DecodeError {
    /// `record`, in `format` (its name, as [`crate::FormatKind::name`] gives it), does not
    /// decode, for `reason`.
    pub fn new(format: &'static str, record: &[u8], reason: impl fmt::Display) -> Self {
        DecodeError {
            format,
            reason: reason.to_string(),
            preview: record[..record.len().min(PREVIEW_BYTES)].to_vec(),
            length: record.len(),
            location: None,
        }
    }

    /// The record was read at `offset` (a record offset) of `split`, which names it as the
    /// user knows it (`partition 2 of topic 'orders'`).
    #[must_use]
    pub fn at(self, split: impl Into<String>, offset: u64) -> Self {
        self.located(split.into(), offset, "offset")
    }

    /// The record was read at byte `byte` of `split` (`file 'a.jsonl'`).
    #[must_use]
    pub fn at_byte(self, split: impl Into<String>, byte: u64) -> Self {
        self.located(split.into(), byte, "byte")
    }

    fn located(mut self, split: String, offset: u64, unit: &'static str) -> Self {
        self.location = Some(Location {
            split,
            offset,
            unit,
        });
        self
    }

    /// The format's name.
    pub fn format(&self) -> &'static str {
        self.format
    }

    /// Why the record does not decode.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The record's length in bytes.
    pub fn record_length(&self) -> usize {
        self.length
    }

    /// The split the record was read from and its offset there, if the connector said.
    pub fn location(&self) -> Option<(&str, u64)> {
        self.location
            .as_ref()
            .map(|location| (location.split.as_str(), location.offset))
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a {} record does not decode", self.format)?;
        if let Some(Location {
            split,
            offset,
            unit,
        }) = &self.location
        {
            write!(f, " at {unit} {offset} of {split}")?;
        }
        write!(
            f,
            ": {}; the record ({} bytes): \"",
            self.reason, self.length
        )?;
        // Escaped, so that a record's line breaks and control bytes do not break the message.
        for c in String::from_utf8_lossy(&self.preview).chars() {
            write!(f, "{}", c.escape_debug())?;
        }
        if self.length > self.preview.len() {
            write!(f, "…")?;
        }
        write!(f, "\"")
    }
}

impl std::error::Error for DecodeError {}

/// A value that cannot be encoded in a format (a map key CSV cannot write, say).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a value cannot be encoded as {format}: {reason}")]
pub struct EncodeError {
    /// The format's name.
    pub format: &'static str,
    /// Why.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_names_the_format_the_place_the_reason_and_the_record_shortened() {
        let record = format!("{{\"id\": 1,\n{}}}", "x".repeat(100));
        let error = DecodeError::new("JSON", record.as_bytes(), "expected `:` at line 2")
            .at_byte("file 'events/a.jsonl'", 1_234);
        let message = error.to_string();
        assert_eq!(
            message,
            format!(
                "a JSON record does not decode at byte 1234 of file 'events/a.jsonl': expected \
                 `:` at line 2; the record (111 bytes): \"{{\\\"id\\\": 1,\\n{}…\"",
                "x".repeat(54)
            )
        );
        assert_eq!(error.location(), Some(("file 'events/a.jsonl'", 1_234)));
        assert_eq!(error.record_length(), 111);
    }

    #[test]
    fn a_short_record_without_a_place_is_shown_whole() {
        let error = DecodeError::new("CSV", b"a,\xff", "invalid UTF-8").at("partition 2", 7);
        assert_eq!(
            error.to_string(),
            "a CSV record does not decode at offset 7 of partition 2: invalid UTF-8; the record \
             (3 bytes): \"a,\u{fffd}\""
        );
        let bare = DecodeError::new("bincode", b"", "empty");
        assert_eq!(
            bare.to_string(),
            "a bincode record does not decode: empty; the record (0 bytes): \"\""
        );
    }
}
