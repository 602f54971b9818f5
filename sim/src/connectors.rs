//! The simulated log as a job's sources and sinks.
//!
//! [`SimLog`] keeps the contract of `rill-core`'s log source and two-phase-commit sink
//! ([`rill_core::log_connector`]), so simulated jobs run the connector code real jobs run
//! (broken on purpose there, with `plant_defect`, when a scenario asks for it).
//! [`SimConnectors`] hands a job those connectors the way a user writes a custom connector of
//! their own: a reader for `StreamEnv::from_source` and a writer for `DataStream::sink_with`.
//! The writer is `rill-core`'s two-phase-commit writer, whose target is the log's output topic
//! or, when a scenario asks for it ([`SinkOutput`]), the model of a database with prepared
//! transactions ([`SimDatabase`]) that stands for PostgreSQL, or the model of a directory of
//! part files ([`SimDirectory`]) that stands for `rill-files`' sink.
//! The catalog's jobs and a user's own job (see [`crate::user`]) take them alike.

use std::sync::Arc;

use rill_api::{DataStream, SinkHandle, StreamEnv};
use rill_core::Data;
use rill_core::defects::Defect;
use rill_core::log_connector::{ConnectorLog, LogReader, LogTarget};
use rill_core::operator::OperatorInfo;
use rill_core::time::WatermarkStrategy;
use rill_core::transactional::{CommitMark, TransactionalTarget, TransactionalWriter};

use crate::broker::{BrokerError, BrokerSession, SimBroker};
use crate::database::{DatabaseError, DatabaseSession, SimDatabase};
use crate::files::{FilesError, FilesSession, SimDirectory};
use crate::log::{LogRecord, SimLog, SimLogError};

/// The topic every simulated job writes.
pub const OUTPUT_TOPIC: &str = "out";

/// The partition the simulated sink writes: the output topic has one.
const OUTPUT_PARTITION: u32 = 0;

impl ConnectorLog for SimLog {
    type Record = LogRecord;
    type Produced = LogRecord;
    type Error = SimLogError;

    /// Where the input *will* end: the simulator's producer may still be appending it, and a
    /// bounded source reads until then.
    fn end_offsets(&self, topic: &str) -> Result<Vec<u64>, SimLogError> {
        self.stop_offsets(topic)
    }

    fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: (usize, usize),
    ) -> Result<Vec<LogRecord>, SimLogError> {
        SimLog::read(self, topic, partition, from, max)
    }

    fn timestamp(record: &LogRecord) -> i64 {
        record.timestamp
    }

    fn bytes(record: &LogRecord) -> usize {
        record.value.len()
    }

    fn append(&self, topic: &str, records: Vec<LogRecord>) -> Result<(), SimLogError> {
        SimLog::append(self, topic, OUTPUT_PARTITION, records)
    }

    fn stage(&self, id: &str, topic: &str, records: Vec<LogRecord>) -> Result<(), SimLogError> {
        SimLog::stage(self, id, topic, records)
    }

    fn prepare(&self, id: &str) -> Result<(), SimLogError> {
        SimLog::prepare(self, id)
    }

    fn commit(&self, id: &str, mark: Option<CommitMark<'_>>) -> Result<(), SimLogError> {
        SimLog::commit(self, id, mark)
    }

    fn rewind_commit_mark(&self, writer: &str, to: Option<u64>) -> Result<(), SimLogError> {
        SimLog::rewind_commit_mark(self, writer, to)
    }

    fn committed_checkpoint(&self, writer: &str) -> Result<Option<u64>, SimLogError> {
        SimLog::committed_checkpoint(self, writer)
    }

    fn abort(&self, id: &str) -> Result<(), SimLogError> {
        SimLog::abort(self, id)
    }

    fn open_transactions(&self, prefix: &str) -> Result<Vec<String>, SimLogError> {
        SimLog::open_transactions(self, prefix)
    }

    fn flush(&self) -> Result<(), SimLogError> {
        SimLog::flush(self)
    }
}

/// The simulated log's sources and sinks for one run of a job: bounded readers of its input
/// topics and the writer of [`OUTPUT_TOPIC`] (transactional in an exactly-once run, appending
/// in an at-least-once one), each with the run's broken component planted.
#[derive(Clone)]
pub struct SimConnectors {
    log: SimLog,
    /// Where the sinks write.
    output: SinkOutput,
    exactly_once: bool,
    defect: Option<Defect>,
}

impl SimConnectors {
    /// The connectors of `log`, whose sinks write `output`; the writer commits per checkpoint
    /// if `exactly_once`, and every reader and writer is built with `defect` planted.
    pub fn new(
        log: &SimLog,
        output: &SinkOutput,
        exactly_once: bool,
        defect: Option<Defect>,
    ) -> Self {
        SimConnectors {
            log: log.clone(),
            output: output.clone(),
            exactly_once,
            defect,
        }
    }

    /// What `StreamEnv::from_source` takes to read `topic` to the end of the input, each
    /// record decoded by `decode`: partition `p` goes to subtask `p % parallelism`.
    pub fn reader<T: Data>(
        &self,
        topic: &str,
        decode: impl Fn(&LogRecord) -> T + Send + Sync + 'static,
    ) -> impl Fn(u32, u32) -> LogReader<SimLog, T> + Send + Sync + 'static {
        self.reader_with(topic, decode, None)
    }

    /// Like [`SimConnectors::reader`], with the records' timestamps as event time and
    /// watermarks by `strategy`, generated per partition.
    pub fn timed_reader<T: Data>(
        &self,
        topic: &str,
        decode: impl Fn(&LogRecord) -> T + Send + Sync + 'static,
        strategy: WatermarkStrategy,
    ) -> impl Fn(u32, u32) -> LogReader<SimLog, T> + Send + Sync + 'static {
        self.reader_with(topic, decode, Some(strategy))
    }

    fn reader_with<T: Data>(
        &self,
        topic: &str,
        decode: impl Fn(&LogRecord) -> T + Send + Sync + 'static,
        watermarks: Option<WatermarkStrategy>,
    ) -> impl Fn(u32, u32) -> LogReader<SimLog, T> + Send + Sync + 'static {
        let (log, topic, defect) = (self.log.clone(), topic.to_owned(), self.defect);
        let decode = Arc::new(move |record: LogRecord| decode(&record));
        move |subtask, parallelism| {
            let mut reader = LogReader::new(
                &log,
                &topic,
                (subtask, parallelism),
                (true, 0),
                decode.clone(),
            );
            if let Some(strategy) = watermarks.clone() {
                reader = reader.with_watermarks(strategy);
            }
            if let Some(defect) = defect {
                reader.plant_defect(defect);
            }
            reader
        }
    }

    /// What `DataStream::sink_with` takes to write the output topic (or the model), each
    /// value encoded by `encode`; its transactions are named `<job>/<uid>/<subtask>/<sequence>`.
    pub fn writer<T: Data>(
        &self,
        encode: impl Fn(&T) -> Vec<u8> + Send + Sync + 'static,
    ) -> impl Fn(&OperatorInfo) -> TransactionalWriter<SimTarget, T> + Send + Sync + 'static {
        let (log, output) = (self.log.clone(), self.output.clone());
        let (exactly_once, defect) = (self.exactly_once, self.defect);
        let encode = Arc::new(move |value: &T| LogRecord {
            value: encode(value).into(),
            timestamp: 0,
        });
        move |info| {
            let target = match &output {
                SinkOutput::Log => SimTarget::Log(LogTarget::new(&log, OUTPUT_TOPIC)),
                SinkOutput::Database(database) => SimTarget::Database(database.session()),
                SinkOutput::Files(directory) => SimTarget::Files(directory.session()),
                SinkOutput::Broker(broker) => SimTarget::Broker(broker.session()),
            };
            let mut writer = TransactionalWriter::new(target, info, encode.clone(), exactly_once);
            if let Some(defect) = defect {
                writer.plant_defect(defect);
            }
            writer
        }
    }

    /// A parallel source `name` reading `topic` with [`SimConnectors::reader`].
    pub fn source<T: Data>(
        &self,
        env: &StreamEnv,
        name: &str,
        topic: &str,
        decode: impl Fn(&LogRecord) -> T + Send + Sync + 'static,
    ) -> DataStream<T> {
        env.from_source(name, true, self.reader(topic, decode))
    }

    /// The sink `name` writing `stream` to the output topic with [`SimConnectors::writer`].
    pub fn sink<T: Data>(
        &self,
        stream: DataStream<T>,
        name: &str,
        encode: impl Fn(&T) -> Vec<u8> + Send + Sync + 'static,
    ) -> SinkHandle {
        stream.sink_with(name, self.writer(encode))
    }
}

/// Where a run's sinks write: the log's output topic, or the model of another system, which
/// the run's attempts share.
#[derive(Clone, Debug, Default)]
pub enum SinkOutput {
    /// The log's output topic.
    #[default]
    Log,
    /// The database with prepared transactions.
    Database(SimDatabase),
    /// The directory of part files.
    Files(SimDirectory),
    /// The broker with a duplicate window.
    Broker(SimBroker),
}

impl SinkOutput {
    /// The transactions the model holds open (none for the log, which lists its own).
    pub fn open_transactions(&self) -> Vec<String> {
        match self {
            SinkOutput::Log => Vec::new(),
            SinkOutput::Database(database) => database.prepared(),
            SinkOutput::Files(directory) => directory.open(),
            SinkOutput::Broker(broker) => broker.staged(),
        }
    }

    /// The model's committed records, in commit order; `None` for the log (read its output
    /// topic as its disk holds it).
    pub fn committed(&self) -> Option<Vec<LogRecord>> {
        match self {
            SinkOutput::Log => None,
            SinkOutput::Database(database) => Some(database.with_committed(<[LogRecord]>::to_vec)),
            SinkOutput::Files(directory) => Some(directory.with_committed(<[LogRecord]>::to_vec)),
            SinkOutput::Broker(broker) => Some(broker.with_published(<[LogRecord]>::to_vec)),
        }
    }
}

/// What a simulated sink writes: the output topic of the log, the database, or the directory.
pub enum SimTarget {
    /// The log's output topic.
    Log(LogTarget<SimLog>),
    /// The database's table.
    Database(DatabaseSession),
    /// The directory's part files.
    Files(FilesSession),
    /// The broker's stream.
    Broker(BrokerSession),
}

/// What a simulated sink's target cannot do.
#[derive(Debug, thiserror::Error)]
pub enum SimTargetError {
    /// The log's.
    #[error(transparent)]
    Log(#[from] SimLogError),
    /// The database's.
    #[error(transparent)]
    Database(#[from] DatabaseError),
    /// The directory's.
    #[error(transparent)]
    Files(#[from] FilesError),
    /// The broker's.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// Calls `$call` on whichever target `$target` is, converting its error.
macro_rules! dispatch {
    ($target:expr, $call:ident($($arg:expr),*)) => {
        match $target {
            SimTarget::Log(log) => log.$call($($arg),*).map_err(SimTargetError::from),
            SimTarget::Database(database) => database.$call($($arg),*).map_err(SimTargetError::from),
            SimTarget::Files(directory) => directory.$call($($arg),*).map_err(SimTargetError::from),
            SimTarget::Broker(broker) => broker.$call($($arg),*).map_err(SimTargetError::from),
        }
    };
}

impl TransactionalTarget for SimTarget {
    type Produced = LogRecord;
    type Error = SimTargetError;

    fn describe(&self) -> String {
        match self {
            SimTarget::Log(log) => log.describe(),
            SimTarget::Database(database) => database.describe(),
            SimTarget::Files(directory) => directory.describe(),
            SimTarget::Broker(broker) => broker.describe(),
        }
    }

    fn append(&mut self, records: Vec<LogRecord>) -> Result<(), SimTargetError> {
        dispatch!(self, append(records))
    }

    fn stage(&mut self, id: &str, records: Vec<LogRecord>) -> Result<(), SimTargetError> {
        dispatch!(self, stage(id, records))
    }

    fn prepare(&mut self, id: &str, mark: Option<CommitMark<'_>>) -> Result<(), SimTargetError> {
        dispatch!(self, prepare(id, mark))
    }

    fn commit(&mut self, id: &str, mark: Option<CommitMark<'_>>) -> Result<(), SimTargetError> {
        dispatch!(self, commit(id, mark))
    }

    fn abort(&mut self, id: &str) -> Result<(), SimTargetError> {
        dispatch!(self, abort(id))
    }

    fn open_transactions(&mut self, prefix: &str) -> Result<Vec<String>, SimTargetError> {
        dispatch!(self, open_transactions(prefix))
    }

    fn committed_checkpoint(&mut self, writer: &str) -> Result<Option<u64>, SimTargetError> {
        dispatch!(self, committed_checkpoint(writer))
    }

    fn rewind_commit_mark(&mut self, writer: &str, to: Option<u64>) -> Result<(), SimTargetError> {
        dispatch!(self, rewind_commit_mark(writer, to))
    }

    fn flush(&mut self) -> Result<(), SimTargetError> {
        dispatch!(self, flush())
    }
}
