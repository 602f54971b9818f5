//! Transactions: staged records are invisible until commit, commits are idempotent and
//! atomic piece by piece (a commit cut short is finished by the next, never aborted), aborts
//! discard, and prepared transactions survive reopening.

use rill_log::{LogError, ProducerRecord};

use super::{fresh, values};

fn texts(values: &[&str]) -> Vec<ProducerRecord> {
    values.iter().map(|v| ProducerRecord::new(*v)).collect()
}

#[test]
fn staged_records_appear_only_when_committed_and_only_once() {
    let (_dir, log) = fresh();
    log.create_topic("out", 1).unwrap();
    log.append("out", ProducerRecord::new("before")).unwrap();
    log.stage("job/sink/0/1", "out", &texts(&["a", "b"]))
        .unwrap();
    log.stage("job/sink/0/1", "out", &texts(&["c"])).unwrap();
    assert_eq!(values(&log, "out", 0), ["before"], "read committed");
    let staged: Vec<Vec<u8>> = log
        .staged("job/sink/0/1")
        .unwrap()
        .into_iter()
        .map(|r| r.value)
        .collect();
    assert_eq!(staged, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    log.prepare("job/sink/0/1").unwrap();
    let open = log.transactions("job/sink/").unwrap();
    assert_eq!(open.len(), 1);
    assert!(open[0].prepared && open[0].records == 3 && open[0].topic == "out");

    assert_eq!(log.commit("job/sink/0/1").unwrap(), 3);
    assert_eq!(values(&log, "out", 0), ["before", "a", "b", "c"]);
    assert_eq!(
        log.commit("job/sink/0/1").unwrap(),
        0,
        "a second commit adds nothing"
    );
    assert_eq!(values(&log, "out", 0), ["before", "a", "b", "c"]);
    assert!(log.transactions("").unwrap().is_empty());
    assert!(log.staged("job/sink/0/1").unwrap().is_empty());
}

#[test]
fn aborted_transactions_leave_nothing() {
    let (_dir, log) = fresh();
    log.create_topic("out", 2).unwrap();
    log.stage("t/1", "out", &texts(&["x", "y"])).unwrap();
    log.stage("t/10", "out", &texts(&["z"])).unwrap();
    assert_eq!(log.abort("t/1").unwrap(), 2);
    assert_eq!(log.abort("t/1").unwrap(), 0);
    assert_eq!(
        log.staged("t/10").unwrap().len(),
        1,
        "an id that extends another is a different transaction"
    );
    assert_eq!(log.commit("t/10").unwrap(), 1);
    assert_eq!(log.end_offsets("out").unwrap().iter().sum::<u64>(), 1);
}

#[test]
fn keyed_and_partitioned_records_keep_their_partitions_through_staging() {
    let (_dir, log) = fresh();
    log.create_topic("out", 4).unwrap();
    let records = vec![
        ProducerRecord::new("p3").with_partition(3),
        ProducerRecord::new("keyed").with_key("k"),
    ];
    log.stage("t", "out", &records).unwrap();
    log.commit("t").unwrap();
    assert_eq!(values(&log, "out", 3), ["p3"]);
    let keyed = rill_log::partition_for_key(b"k", 4);
    assert!(values(&log, "out", keyed).contains(&"keyed".to_owned()));
}

#[test]
fn prepared_transactions_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    {
        let log = rill_log::EventLog::open_or_create(&path).unwrap();
        log.create_topic("out", 1).unwrap();
        log.stage("t", "out", &texts(&["kept"])).unwrap();
        log.prepare("t").unwrap();
    }
    let log = rill_log::EventLog::open(&path).unwrap();
    assert!(log.transactions("t").unwrap()[0].prepared);
    assert_eq!(log.commit("t").unwrap(), 1);
    assert_eq!(values(&log, "out", 0), ["kept"]);
}

#[test]
fn bad_transaction_requests_are_refused_with_the_reason() {
    let (_dir, log) = fresh();
    log.create_topic("a", 1).unwrap();
    log.create_topic("b", 1).unwrap();
    assert!(matches!(
        log.stage("", "a", &texts(&["x"])),
        Err(LogError::InvalidTransactionId(_))
    ));
    assert!(matches!(
        log.stage("bad\0id", "a", &texts(&["x"])),
        Err(LogError::InvalidTransactionId(_))
    ));
    assert!(matches!(
        log.stage("t", "missing", &texts(&["x"])),
        Err(LogError::UnknownTopic(_))
    ));
    assert!(matches!(
        log.prepare("t"),
        Err(LogError::UnknownTransaction(_))
    ));
    log.stage("t", "a", &texts(&["x"])).unwrap();
    let error = log.stage("t", "b", &texts(&["y"])).unwrap_err();
    assert!(error.to_string().contains("open for topic 'a'"), "{error}");
    let error = log
        .stage("t", "a", &[ProducerRecord::new("p").with_partition(5)])
        .unwrap_err();
    assert!(matches!(
        error,
        LogError::UnknownPartition { partition: 5, .. }
    ));
    log.prepare("t").unwrap();
    let error = log.stage("t", "a", &texts(&["late"])).unwrap_err();
    assert!(error.to_string().contains("prepared already"), "{error}");
    assert_eq!(
        log.commit("t").unwrap(),
        1,
        "refused requests staged nothing"
    );
}

/// The storage of a log whose writes fail from the `fail_at`-th on (counting from 0), as if
/// the process died there: a commit is cut short between two of its pieces.
struct FailingWrites {
    inner: rill_store::FjallStorage,
    writes: std::sync::atomic::AtomicUsize,
    fail_at: usize,
}

impl rill_core::storage::Storage for FailingWrites {
    fn write(
        &self,
        ops: Vec<rill_core::storage::WriteOp>,
        durability: rill_core::storage::Durability,
    ) -> Result<(), rill_core::storage::StorageError> {
        let count = self
            .writes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if count >= self.fail_at {
            return Err(rill_core::storage::StorageError::new("the process died"));
        }
        self.inner.write(ops, durability)
    }

    fn get(
        &self,
        space: &'static str,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, rill_core::storage::StorageError> {
        self.inner.get(space, key)
    }

    fn contains(
        &self,
        space: &'static str,
        key: &[u8],
    ) -> Result<bool, rill_core::storage::StorageError> {
        self.inner.contains(space, key)
    }

    fn scan(
        &self,
        space: &'static str,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
    ) -> Result<Vec<rill_core::storage::Entry>, rill_core::storage::StorageError> {
        self.inner.scan(space, prefix, from, limit)
    }

    fn keys(
        &self,
        space: &'static str,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, rill_core::storage::StorageError> {
        self.inner.keys(space, prefix, from, limit)
    }

    fn last_key(
        &self,
        space: &'static str,
        prefix: &[u8],
    ) -> Result<Option<Vec<u8>>, rill_core::storage::StorageError> {
        self.inner.last_key(space, prefix)
    }
}

/// A transaction of ten stages (ten staged entries) for topic `out`, committed in pieces of
/// three entries.
fn ten_stages(log: &rill_log::EventLog) {
    log.set_commit_piece_entries(std::num::NonZeroUsize::new(3).unwrap());
    log.create_topic("out", 1).unwrap();
    for stage in 0..10 {
        let records: Vec<String> = (0..5).map(|i| format!("{stage}.{i}")).collect();
        let refs: Vec<&str> = records.iter().map(String::as_str).collect();
        log.stage("job/sink/0/7", "out", &texts(&refs)).unwrap();
    }
    log.prepare("job/sink/0/7").unwrap();
}

fn all_fifty() -> Vec<String> {
    (0..10)
        .flat_map(|stage| (0..5).map(move |i| format!("{stage}.{i}")))
        .collect()
}

#[test]
fn a_large_transaction_commits_in_pieces_every_record_once_in_order() {
    let (_dir, log) = fresh();
    ten_stages(&log);
    assert_eq!(log.commit("job/sink/0/7").unwrap(), 50);
    assert_eq!(values(&log, "out", 0), all_fifty());
    assert!(log.transactions("").unwrap().is_empty());
    assert_eq!(log.commit("job/sink/0/7").unwrap(), 0);
}

#[test]
fn a_commit_cut_short_between_pieces_cannot_be_aborted_and_committing_again_moves_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let open = |fail_at| {
        let failing = FailingWrites {
            inner: super::fjall_in(dir.path()),
            writes: std::sync::atomic::AtomicUsize::new(0),
            fail_at,
        };
        let log =
            rill_log::EventLog::on(std::sync::Arc::new(failing), dir.path().to_path_buf()).unwrap();
        log.set_commit_piece_entries(std::num::NonZeroUsize::new(3).unwrap());
        log
    };
    {
        let log = open(usize::MAX);
        ten_stages(&log);
    }
    {
        // Two pieces (six stages, 30 records) go in; the third write fails.
        let log = open(2);
        let error = log.commit("job/sink/0/7").unwrap_err();
        assert!(error.to_string().contains("the process died"), "{error}");
    }
    let log = open(usize::MAX);
    let moved: Vec<String> = all_fifty().into_iter().take(30).collect();
    assert_eq!(values(&log, "out", 0), moved, "the first pieces are in");
    let refused = log.abort("job/sink/0/7").unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("cut short with 30 of its 50 records"),
        "{refused}"
    );
    assert_eq!(
        log.staged("job/sink/0/7").unwrap().len(),
        20,
        "the rest is staged, as it was"
    );
    assert_eq!(log.commit("job/sink/0/7").unwrap(), 20);
    assert_eq!(values(&log, "out", 0), all_fifty());
    assert!(log.transactions("").unwrap().is_empty());
}

#[test]
fn a_damaged_staged_entry_anywhere_refuses_the_commit_before_anything_moves() {
    use rill_core::storage::Storage;
    let (_dir, log, storage) = super::damageable();
    ten_stages(&log);
    // Damage the last staged entry: the fourth piece's, past the first pieces.
    let last = storage
        .keys("rill.staged", b"job/sink/0/7\0", &[], usize::MAX)
        .unwrap()
        .pop()
        .unwrap();
    super::flip_value(&storage, "rill.staged", last);
    let error = log.commit("job/sink/0/7").unwrap_err();
    assert!(error.to_string().contains("job/sink/0/7"), "{error}");
    assert!(values(&log, "out", 0).is_empty(), "nothing moved");
}
