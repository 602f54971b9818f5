//! Copying what is intact of a damaged log into a new one (`rill log salvage`).
//!
//! [`EventLog::salvage_into`] walks every partition of every readable topic as
//! [`EventLog::check`] does, and appends each intact record, with its key and timestamp, to the
//! same partition of the same topic of another log. Appends get dense offsets, so a record
//! keeps its offset unless damaged or missing offsets come before it in its partition; then it
//! moves down by as many. Open transactions (output not yet committed) and commit marks are not
//! copied: a job whose sink wrote to the damaged log finds no mark in the new one, and the
//! offsets its checkpoints recorded no longer match where a partition lost records.

use crate::check::LogCheck;
use crate::error::LogError;
use crate::log::EventLog;
use crate::record::ProducerRecord;

/// Records appended to the new log per batch, at most.
const SALVAGE_BATCH_RECORDS: usize = 1024;

impl EventLog {
    /// Copies every intact record of this log (best opened with
    /// [`EventLog::open_read_only`]) into `target`, topic by topic (created with the same
    /// partitions; one that exists in `target` already is an error), partition by partition in
    /// offset order, and makes it durable. Returns what was read: the intact offset ranges
    /// (copied) and the damaged ones (skipped) of each partition, and the transactions and
    /// commit marks (not copied). See [the module](crate::salvage) for what changes.
    pub fn salvage_into(&self, target: &EventLog) -> Result<LogCheck, LogError> {
        let mut partitions = Vec::new();
        for info in self.topics() {
            let handle = self.topic_handle(&info.name)?;
            target.create_topic(&info.name, info.partitions)?;
            for partition in 0..info.partitions {
                let mut batch = Vec::with_capacity(SALVAGE_BATCH_RECORDS);
                let check = self.check_partition(&handle, partition, |records| {
                    batch.extend(records.into_iter().map(|record| ProducerRecord {
                        key: record.key,
                        value: record.value,
                        timestamp: Some(record.timestamp),
                        partition: Some(partition),
                    }));
                    if batch.len() >= SALVAGE_BATCH_RECORDS {
                        target.append_batch(&info.name, std::mem::take(&mut batch))?;
                    }
                    Ok::<(), LogError>(())
                })?;
                target.append_batch(&info.name, batch)?;
                partitions.push(check);
            }
        }
        target.flush()?;
        Ok(self.check_the_rest(partitions))
    }
}
