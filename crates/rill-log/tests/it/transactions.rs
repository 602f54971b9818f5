//! Transactions: staged records are invisible until commit, commits are atomic and
//! idempotent, aborts discard, and prepared transactions survive reopening.

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
