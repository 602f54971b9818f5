//! The messages the runtime's actors exchange. They carry data only; every decision about them
//! is made by the core state machines. What actors tell the job master carries the attempt
//! (0, then one more per restart) they belong to, so that news from a stopped attempt is
//! ignored.

use actix::{Addr, Message};
use rill_core::Batch;
use rill_core::TaskError;
use rill_core::checkpoint::{CheckpointId, DeclineReason, SubtaskSnapshot};
use rill_core::coordinator::{CheckpointMetadata, RetainedCheckpoint};
use rill_core::plan::SubtaskId;
use tokio::sync::oneshot;

use crate::coordinator::CoordinatorActor;
use crate::job::JobError;
use crate::partitioner::PartitionerActor;
use crate::subtask::SubtaskActor;

/// A batch for input channel `channel` of a subtask.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct DeliverBatch {
    pub channel: usize,
    pub batch: Batch,
}

/// Credits from the partitioner of a subtask's output `output`.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct OutputCredit {
    pub output: usize,
    pub credits: u32,
}

/// A batch from the partitioner's upstream subtask.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct PartitionBatch(pub Batch);

/// Credits from the input channel of the partitioner's target `target`.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct TargetCredit {
    pub target: usize,
    pub credits: u32,
}

/// Where a subtask's messages go: the partitioners of its outputs, and for each input channel
/// the partitioner feeding it with the target index the channel has there.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct WireSubtask {
    pub outputs: Vec<Addr<PartitionerActor>>,
    pub inputs: Vec<(Addr<PartitionerActor>, usize)>,
    pub coordinator: Addr<CoordinatorActor>,
}

/// Where a partitioner's messages go: its upstream subtask, and each target's subtask with the
/// input channel index there.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct WirePartitioner {
    pub upstream: Addr<SubtaskActor>,
    pub targets: Vec<(Addr<SubtaskActor>, usize)>,
}

/// Every actor is wired: start working.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Start;

/// Stop now: the job is over, or its attempt failed. The actor handles nothing after it, and
/// says so on `stopped`, if given: the job master waits for that before it starts the next
/// attempt. (Sent with `do_send`, so it is delivered whether or not anyone waits.)
#[derive(Message, Default)]
#[rtype(result = "()")]
pub(crate) struct Shutdown {
    pub stopped: Option<oneshot::Sender<()>>,
}

/// A subtask has emitted end of input and handed over all its output.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SubtaskFinished {
    pub attempt: u32,
    pub subtask: SubtaskId,
}

/// A subtask or partitioner failed.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct TaskFailed {
    pub attempt: u32,
    pub subtask: SubtaskId,
    pub error: TaskError,
}

/// An actor stopped before the job ended.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ActorLost {
    pub attempt: u32,
    pub subtask: SubtaskId,
    pub what: &'static str,
}

/// The application asked to cancel the job.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Cancel;

/// The application asks for a savepoint; with `stop`, the job stops once it is complete.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct RequestSavepoint {
    pub stop: bool,
    pub reply: oneshot::Sender<Result<CheckpointMetadata, JobError>>,
}

/// Take a savepoint as soon as possible (sent to the coordinator).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct TriggerSavepoint;

/// The savepoint in progress was aborted.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SavepointFailed {
    pub attempt: u32,
    pub reason: String,
}

/// Start a checkpoint (sent to source subtasks).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct TriggerCheckpoint(pub CheckpointId);

/// A subtask's snapshot for a checkpoint; `subtask` is its index in the plan's order.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Acknowledge {
    pub checkpoint: CheckpointId,
    pub subtask: usize,
    pub snapshot: SubtaskSnapshot,
}

/// A checkpoint is complete (sent to every subtask); `last` says it is the job's final one.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct NotifyCheckpointComplete {
    pub checkpoint: CheckpointId,
    pub last: bool,
}

/// A subtask's input ended; `subtask` is its index in the plan's order.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SubtaskEnded {
    pub subtask: usize,
}

/// A subtask cannot take part in a checkpoint.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Decline {
    pub checkpoint: CheckpointId,
    pub reason: DeclineReason,
}

/// An attempt's coordinator completed a checkpoint (and has told every subtask).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct CheckpointCompleted {
    pub attempt: u32,
    pub checkpoint: RetainedCheckpoint,
}

/// Stops the checkpoint coordinator of an attempt the job master replaces. It answers on
/// `reply` with the newest checkpoint it completed: the master may not have heard of it yet
/// (the notice travels after the subtasks' completion notices), but sinks may have committed
/// it, so the next attempt must restore from it.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct StopCoordinator {
    pub reply: oneshot::Sender<Option<RetainedCheckpoint>>,
}

/// Too many checkpoints failed: the job must fail.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct CheckpointingFailed {
    pub attempt: u32,
    pub reason: String,
}
