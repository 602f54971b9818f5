//! [`Format`]: how a connector turns one record's bytes into a value and back, with serde.
//!
//! A record is what the connector frames: a line of a file, a log record's value, a message.
//! The format never sees more than one: framing (where a line ends, with CSV's quoted line
//! breaks) is the connector's. JSON and bincode are self-describing enough on their own; CSV
//! maps fields to a struct by position, or — with a header — by the names the header gives,
//! which the connector reads from the first record of each file or stream and hands to
//! [`Format::read_header`].

use std::fmt;
use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{DecodeError, EncodeError};

/// Which format a [`Format`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormatKind {
    /// JSON (one value per record: JSON lines in a file).
    Json,
    /// CSV: one record, fields by position or by header name.
    Csv,
    /// bincode's standard configuration, as Rill's checkpoints use it.
    Bincode,
}

impl FormatKind {
    /// The format's name, as messages show it.
    pub fn name(self) -> &'static str {
        match self {
            FormatKind::Json => "JSON",
            FormatKind::Csv => "CSV",
            FormatKind::Bincode => "bincode",
        }
    }
}

/// The header of a CSV format.
#[derive(Clone, Debug)]
enum Header {
    /// Fields map to a struct by position.
    None,
    /// The first record of each file or stream names the fields; not read yet.
    FirstRecord,
    /// The names the first record gave.
    Read(csv::StringRecord),
}

/// How records of type `T` are decoded from bytes and encoded to bytes.
pub struct Format<T> {
    kind: FormatKind,
    header: Header,
    values: PhantomData<fn() -> T>,
}

impl<T> Clone for Format<T> {
    fn clone(&self) -> Self {
        Format {
            kind: self.kind,
            header: self.header.clone(),
            values: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Format<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Format")
            .field("kind", &self.kind)
            .field("header", &self.header)
            .field("values", &std::any::type_name::<T>())
            .finish()
    }
}

impl<T> Format<T> {
    fn new(kind: FormatKind, header: Header) -> Self {
        Format {
            kind,
            header,
            values: PhantomData,
        }
    }

    /// JSON, by `serde_json`.
    pub fn json() -> Self {
        Self::new(FormatKind::Json, Header::None)
    }

    /// bincode's standard configuration, through serde: compact, and not self-describing (a
    /// reader must know the type the writer wrote).
    pub fn bincode() -> Self {
        Self::new(FormatKind::Bincode, Header::None)
    }

    /// CSV without a header: a record's fields map to the value's by position (a struct's in
    /// declaration order, a tuple's in order).
    pub fn csv() -> Self {
        Self::new(FormatKind::Csv, Header::None)
    }

    /// CSV whose first record names the fields: the fields of the records after it map to a
    /// struct's by those names, in whatever order the header gives them. The connector reads
    /// that first record with [`Format::read_header`].
    pub fn csv_with_header() -> Self {
        Self::new(FormatKind::Csv, Header::FirstRecord)
    }

    /// Which format this is.
    pub fn kind(&self) -> FormatKind {
        self.kind
    }

    /// Whether the next record is a header to give [`Format::read_header`]: a CSV format with
    /// a header that has not read it.
    pub fn awaits_header(&self) -> bool {
        matches!(self.header, Header::FirstRecord)
    }

    /// The format that decodes the records after the header `record`.
    pub fn read_header(&self, record: &[u8]) -> Result<Self, DecodeError> {
        let header = csv_record(record).map_err(|reason| self.error(record, reason))?;
        Ok(Self::new(self.kind, Header::Read(header)))
    }

    fn error(&self, record: &[u8], reason: impl fmt::Display) -> DecodeError {
        DecodeError::new(self.kind.name(), record, reason)
    }
}

impl<T: DeserializeOwned> Format<T> {
    /// Decodes one record.
    pub fn decode(&self, bytes: &[u8]) -> Result<T, DecodeError> {
        match self.kind {
            FormatKind::Json => serde_json::from_slice(bytes).map_err(|e| self.error(bytes, e)),
            FormatKind::Bincode => {
                let (value, read) =
                    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
                        .map_err(|e| self.error(bytes, e))?;
                if read != bytes.len() {
                    let reason = format!("{} bytes left over after the value", bytes.len() - read);
                    return Err(self.error(bytes, reason));
                }
                Ok(value)
            }
            FormatKind::Csv => {
                let record = csv_record(bytes).map_err(|reason| self.error(bytes, reason))?;
                let header = match &self.header {
                    Header::None => None,
                    Header::Read(header) => Some(header),
                    Header::FirstRecord => {
                        return Err(self.error(bytes, "the CSV header has not been read"));
                    }
                };
                record
                    .deserialize(header)
                    .map_err(|error| match error.kind() {
                        // Its own position would be in this one record, which misleads: the
                        // connector gives the record's place.
                        csv::ErrorKind::Deserialize { err, .. } => self.error(bytes, err),
                        _ => self.error(bytes, error),
                    })
            }
        }
    }
}

impl<T: Serialize> Format<T> {
    /// Encodes one record: for JSON and CSV without a line break after it (framing is the
    /// connector's), for CSV without a header.
    pub fn encode(&self, value: &T) -> Result<Vec<u8>, EncodeError> {
        let error = |reason: &dyn fmt::Display| EncodeError {
            format: self.kind.name(),
            reason: reason.to_string(),
        };
        match self.kind {
            FormatKind::Json => serde_json::to_vec(value).map_err(|e| error(&e)),
            FormatKind::Bincode => {
                bincode::serde::encode_to_vec(value, bincode::config::standard())
                    .map_err(|e| error(&e))
            }
            FormatKind::Csv => {
                let mut writer = csv::WriterBuilder::new()
                    .has_headers(false)
                    .from_writer(Vec::new());
                writer.serialize(value).map_err(|e| error(&e))?;
                let mut bytes = writer.into_inner().map_err(|e| error(e.error()))?;
                if bytes.last() == Some(&b'\n') {
                    bytes.pop();
                }
                if bytes.last() == Some(&b'\r') {
                    bytes.pop();
                }
                Ok(bytes)
            }
        }
    }
}

/// The one CSV record in `bytes` (a line break after it is allowed; quoted ones inside it are
/// part of its fields).
fn csv_record(bytes: &[u8]) -> Result<csv::StringRecord, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let mut record = csv::StringRecord::new();
    if !reader.read_record(&mut record).map_err(|e| e.to_string())? {
        return Err("it holds no CSV record".to_owned());
    }
    let mut next = csv::StringRecord::new();
    if reader.read_record(&mut next).map_err(|e| e.to_string())? {
        return Err("it holds more than one CSV record".to_owned());
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Order {
        id: u64,
        item: String,
        price: f64,
    }

    fn order() -> Order {
        Order {
            id: 7,
            item: "tea, \"green\"\nloose".to_owned(),
            price: 3.5,
        }
    }

    #[test]
    fn every_format_decodes_what_it_encodes() {
        for format in [Format::json(), Format::bincode(), Format::csv()] {
            let bytes = format.encode(&order()).unwrap();
            assert_eq!(format.decode(&bytes).unwrap(), order(), "{format:?}");
        }
    }

    #[test]
    fn json_and_csv_read_what_people_write() {
        let json = Format::<Order>::json();
        let decoded = json
            .decode(br#"{"item": "tea", "price": 2, "id": 1}"#)
            .unwrap();
        assert_eq!(decoded.item, "tea");
        let csv = Format::<Order>::csv();
        assert_eq!(
            csv.encode(&order()).unwrap(),
            b"7,\"tea, \"\"green\"\"\nloose\",3.5",
            "quotes doubled, the field with a delimiter, quote or line break quoted"
        );
        assert_eq!(csv.decode(b"1,tea,2\r\n").unwrap().price, 2.0);
        let by_position = Format::<(String, u32)>::csv();
        assert_eq!(
            by_position.decode(b"a,1").unwrap(),
            ("a".to_owned(), 1),
            "a tuple by position"
        );
    }

    #[test]
    fn a_csv_header_maps_fields_by_name() {
        let format = Format::<Order>::csv_with_header();
        assert!(format.awaits_header());
        let error = format.decode(b"1,tea,2").unwrap_err();
        assert!(error.reason().contains("header"), "{error}");
        let read = format.read_header(b"price,id,item\n").unwrap();
        assert!(!read.awaits_header());
        assert_eq!(
            read.decode(b"2.5,3,tea").unwrap(),
            Order {
                id: 3,
                item: "tea".to_owned(),
                price: 2.5,
            }
        );
        let error = read.decode(b"2.5,three,tea").unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("a CSV record does not decode: field 1: invalid"),
            "{error}"
        );
    }

    #[test]
    fn bytes_that_do_not_decode_are_errors_naming_the_format() {
        let cases: [(Format<Order>, &[u8]); 4] = [
            (Format::json(), b"{\"id\": 1"),
            (Format::csv(), b"1,tea"),
            (Format::csv(), b"1,tea,2\n2,coffee,3\n"),
            (Format::bincode(), b"\x07"),
        ];
        for (format, bytes) in cases {
            let error = format.decode(bytes).unwrap_err();
            assert_eq!(error.format(), format.kind().name());
            assert_eq!(error.record_length(), bytes.len());
        }
        let mut bytes = Format::bincode().encode(&order()).unwrap();
        bytes.push(0);
        let error = Format::<Order>::bincode().decode(&bytes).unwrap_err();
        assert_eq!(error.reason(), "1 bytes left over after the value");
        let error = Format::<Order>::csv().decode(b"").unwrap_err();
        assert_eq!(error.reason(), "it holds no CSV record");
    }

    #[test]
    fn a_value_csv_cannot_write_is_an_encode_error() {
        let map = std::collections::BTreeMap::from([("a", 1)]);
        let error = Format::csv().encode(&map).unwrap_err();
        assert_eq!(error.format, "CSV");
    }
}
