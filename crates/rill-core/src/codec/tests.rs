//! The envelope: what it accepts, what it rejects and says so, and that no bytes make it
//! panic (arbitrary and mutated inputs, as a fuzzer would give).

use proptest::prelude::*;

use super::*;

fn sealed() -> Vec<u8> {
    Envelope::seal(
        Kind::SubtaskSnapshot,
        &(7u32, "state".to_owned(), vec![1u8, 2, 3]),
    )
    .expect("encodes")
}

#[test]
fn a_sealed_value_opens_as_it_was() {
    let opened: (u32, String, Vec<u8>) =
        Envelope::open(Kind::SubtaskSnapshot, &sealed()).expect("intact");
    assert_eq!(opened, (7, "state".to_owned(), vec![1, 2, 3]));
}

#[test]
fn every_truncation_is_refused_as_torn() {
    let bytes = sealed();
    for cut in 0..bytes.len() {
        let error = Envelope::unwrap(Kind::SubtaskSnapshot, &bytes[..cut]).unwrap_err();
        assert!(
            matches!(
                error,
                CodecError::TooShort { .. } | CodecError::LengthMismatch { .. }
            ),
            "cut at {cut}: {error}"
        );
    }
}

#[test]
fn every_flipped_bit_is_refused() {
    let bytes = sealed();
    for at in 0..bytes.len() {
        for bit in 0..8 {
            let mut damaged = bytes.clone();
            damaged[at] ^= 1 << bit;
            assert!(
                Envelope::unwrap(Kind::SubtaskSnapshot, &damaged).is_err(),
                "bit {bit} of byte {at}"
            );
        }
    }
}

#[test]
fn the_wrong_structure_and_a_newer_or_dropped_format_say_what_they_are() {
    let bytes = sealed();
    let wrong = Envelope::unwrap(Kind::CheckpointMetadata, &bytes).unwrap_err();
    assert_eq!(
        wrong.to_string(),
        "holds subtask snapshot where checkpoint metadata was expected"
    );
    let newer = Envelope::wrap(Kind::SubtaskSnapshot, 9, b"future");
    let error = Envelope::unwrap(Kind::SubtaskSnapshot, &newer).unwrap_err();
    assert!(
        matches!(
            error,
            CodecError::UnknownVersion {
                found: 9,
                supported: 1,
                ..
            }
        ),
        "{error}"
    );
    let dropped = Envelope::wrap(Kind::LogRecord, 1, b"one record");
    let error = Envelope::unwrap(Kind::LogRecord, &dropped).unwrap_err();
    assert!(
        matches!(
            error,
            CodecError::UnknownVersion {
                found: 1,
                oldest: 2,
                ..
            }
        ) && error.to_string().contains("an older Rill"),
        "{error}"
    );
    let foreign = b"{\"not\": \"rill\"} and some more bytes than a header".to_vec();
    assert!(matches!(
        Envelope::unwrap(Kind::SubtaskSnapshot, &foreign),
        Err(CodecError::BadMagic { .. })
    ));
}

#[test]
fn an_intact_envelope_around_another_payload_is_a_payload_error() {
    let bytes = Envelope::wrap(Kind::SubtaskSnapshot, 1, &[0xff; 3]);
    let error =
        Envelope::open::<(u32, String, Vec<u8>)>(Kind::SubtaskSnapshot, &bytes).unwrap_err();
    assert!(matches!(error, CodecError::Payload(_)), "{error}");
}

#[test]
fn a_length_prefix_beyond_any_stored_value_is_refused_not_allocated() {
    // A string whose prefix (bincode's varint: 253, then a little-endian u64) declares
    // 2^62 bytes: allocating it first aborted the process (found by
    // `arbitrary_bytes_never_panic`).
    let mut bytes = vec![253];
    bytes.extend_from_slice(&(1u64 << 62).to_le_bytes());
    bytes.extend_from_slice(b"tail");
    let error = decode::<String>(&bytes).unwrap_err();
    assert!(matches!(error, CodecError::Payload(_)), "{error}");
    let error = decode::<(u32, String, Vec<u8>)>(&[0, 253, 0, 0, 0, 0, 0, 0, 0, 0x40]).unwrap_err();
    assert!(matches!(error, CodecError::Payload(_)), "{error}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = Envelope::open::<(u32, String, Vec<u8>)>(Kind::SubtaskSnapshot, &bytes);
        let _ = decode::<(u32, String, Vec<u8>)>(&bytes);
    }

    #[test]
    fn mutated_envelopes_never_panic_and_damage_is_never_read_as_a_value(
        at in 0usize..64,
        xor in 1u8..=255,
        cut in 0usize..64,
    ) {
        let mut bytes = sealed();
        let at = at % bytes.len();
        bytes[at] ^= xor;
        let cut = bytes.len() - cut % bytes.len();
        bytes.truncate(cut);
        prop_assert!(Envelope::open::<(u32, String, Vec<u8>)>(Kind::SubtaskSnapshot, &bytes).is_err());
    }
}
