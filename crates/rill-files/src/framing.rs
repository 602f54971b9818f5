//! Where a record of a file ends: at a line break, or — for CSV — at a line break outside
//! quotes (a quoted field may hold line breaks; with CSV's doubled quotes, a line break is
//! inside a field exactly when the record so far holds an odd number of quotes).
//!
//! A record is read from a `BufRead` of bounded capacity into one buffer, once; a record
//! longer than the limit is not kept whole (its first bytes are, for the error), but read past
//! to its end, so that memory stays bounded by the limit whatever the file holds.

use std::io::{self, BufRead};

/// How records are framed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Framing {
    /// Line breaks inside double quotes belong to the record (CSV).
    pub(crate) quoted: bool,
    /// The longest record kept, in bytes, its line break not counted.
    pub(crate) max_record_bytes: usize,
}

/// What [`read_record`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framed {
    /// A record, now in the buffer without its line break; `consumed` bytes of the file, its
    /// line break included.
    Record { consumed: u64 },
    /// A record longer than the limit: the buffer holds its first bytes only.
    TooLong { consumed: u64 },
    /// The end of the file, and no record before it.
    End,
}

/// Reads the next record into `record` (cleared first). The last record of a file may lack
/// its line break.
pub(crate) fn read_record(
    reader: &mut impl BufRead,
    framing: Framing,
    record: &mut Vec<u8>,
) -> io::Result<Framed> {
    record.clear();
    let mut consumed = 0u64;
    let mut in_quotes = false;
    // Up to two bytes past the limit: a line break is not counted. At least the bytes an
    // error shows of a record too long.
    let keep = framing
        .max_record_bytes
        .saturating_add(2)
        .max(rill_formats::error::PREVIEW_BYTES);
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        if available.is_empty() {
            break;
        }
        let end = record_end(available, framing.quoted, &mut in_quotes);
        let take = end.map_or(available.len(), |at| at + 1);
        let room = keep.saturating_sub(record.len()).min(take);
        record.extend_from_slice(&available[..room]);
        reader.consume(take);
        consumed += take as u64;
        if end.is_some() {
            break;
        }
    }
    if consumed == 0 {
        return Ok(Framed::End);
    }
    // Bytes were dropped: the record is too long, whatever its kept bytes end with.
    let cut = (record.len() as u64) < consumed;
    if !cut && record.last() == Some(&b'\n') {
        record.pop();
        if record.last() == Some(&b'\r') {
            record.pop();
        }
    }
    if cut || record.len() > framing.max_record_bytes {
        record.truncate(rill_formats::error::PREVIEW_BYTES);
        return Ok(Framed::TooLong { consumed });
    }
    Ok(Framed::Record { consumed })
}

/// The index of the line break that ends the record in `bytes`, if any; `in_quotes` carries
/// the quoting state across calls.
fn record_end(bytes: &[u8], quoted: bool, in_quotes: &mut bool) -> Option<usize> {
    if !quoted {
        return bytes.iter().position(|&b| b == b'\n');
    }
    for (index, &byte) in bytes.iter().enumerate() {
        match byte {
            b'"' => *in_quotes = !*in_quotes,
            b'\n' if !*in_quotes => return Some(index),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::io::BufReader;

    use super::*;

    /// Every framed result of `text`, read through a buffer of `capacity` bytes.
    fn frame(text: &str, quoted: bool, max: usize, capacity: usize) -> Vec<(Framed, String)> {
        let mut reader = BufReader::with_capacity(capacity, text.as_bytes());
        let framing = Framing {
            quoted,
            max_record_bytes: max,
        };
        let mut record = Vec::new();
        let mut all = Vec::new();
        loop {
            let framed = read_record(&mut reader, framing, &mut record).unwrap();
            all.push((framed, String::from_utf8_lossy(&record).into_owned()));
            if framed == Framed::End {
                return all;
            }
        }
    }

    fn record(consumed: u64, text: &str) -> (Framed, String) {
        (Framed::Record { consumed }, text.to_owned())
    }

    #[test]
    fn lines_end_at_line_breaks_and_the_last_may_lack_one() {
        for capacity in [1, 3, 64] {
            assert_eq!(
                frame("ab\r\n\nc d\nlast", false, 100, capacity),
                [
                    record(4, "ab"),
                    record(1, ""),
                    record(4, "c d"),
                    record(4, "last"),
                    (Framed::End, String::new()),
                ],
                "through a buffer of {capacity} bytes"
            );
        }
    }

    #[test]
    fn csv_line_breaks_inside_quotes_belong_to_the_record() {
        let text = "1,\"two\nlines\",\"a \"\"quote\"\"\"\n2,\"x\"\n";
        for capacity in [1, 5, 64] {
            assert_eq!(
                frame(text, true, 100, capacity),
                [
                    record(28, "1,\"two\nlines\",\"a \"\"quote\"\"\""),
                    record(6, "2,\"x\""),
                    (Framed::End, String::new()),
                ]
            );
        }
        assert_eq!(
            frame("a,\"b\nc\"\n", false, 100, 8)[0],
            record(5, "a,\"b"),
            "unquoted framing ends at the first line break"
        );
    }

    #[test]
    fn a_record_over_the_limit_is_read_past_keeping_its_first_bytes() {
        let long = "x".repeat(200);
        let text = format!("ok\n{long}\nafter");
        let framed = frame(&text, false, 10, 16);
        assert_eq!(framed[0], record(3, "ok"));
        assert_eq!(
            framed[1],
            (
                Framed::TooLong { consumed: 201 },
                "x".repeat(rill_formats::error::PREVIEW_BYTES)
            )
        );
        assert_eq!(framed[2], record(5, "after"));
        assert_eq!(
            frame("0123456789\n", false, 10, 4)[0],
            record(11, "0123456789"),
            "a record of exactly the limit is kept"
        );
        assert_eq!(
            frame("0123456789\r\n", false, 10, 4)[0],
            record(12, "0123456789"),
            "so is one with a CRLF"
        );
    }
}
