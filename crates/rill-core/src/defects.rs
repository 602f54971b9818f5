//! Components broken on purpose, planted in the shipped code for the simulator to catch.
//!
//! A checker that cannot fail proves nothing: every property the simulator checks has a
//! scenario that runs the job with one of these defects and must see the property violated.
//! The defects live in the code users run — a switch in a core, off unless planted — so that
//! a scenario catching one shows that the simulator sees a bug *there*, not in a copy.
//! The switches are compiled only with the `defects` feature, which the simulator enables.

use serde::Deserialize;

/// A component broken on purpose; scenario files name it in kebab case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Defect {
    /// The source ignores the offsets it is restored with and reads from the start.
    SourceForgetsOffsets,
    /// The source restores each partition's offset one record ahead: it skips a record.
    SourceRestoresOneAhead,
    /// The source restores each partition's offset one record behind: it reads a record again.
    SourceRestoresOneBehind,
    /// The sink commits each transaction at pre-commit, before its checkpoint completes.
    SinkCommitsAtPreCommit,
    /// The sink never flushes: an at-least-once sink's appends (and any sink's commits) stay
    /// unsynced, lost in a crash of the machine.
    SinkSkipsFlush,
    /// Restored, the sink takes the newest transaction its checkpoint prepared for one still in
    /// flight and aborts it, though its checkpoint completed.
    SinkAbortsCommittedOnRestore,
    /// Restored, the sink commits what its subtask left open instead of aborting it: the
    /// transactions of checkpoints that never completed.
    SinkCommitsLeftoversOnRestore,
    /// Restored after a rescale, the sink aborts what its own subtask left open but not what
    /// the subtasks it takes over left: their transactions stay open.
    SinkLeavesTakenOverOpen,
    /// Starting, the sink does not compare its commit mark with where the job starts: a job
    /// that falls back behind what the sink committed writes that output again.
    SinkIgnoresCommitMark,
    /// The event log's `prepare` does not sync: a prepared transaction, with its staged
    /// records, is lost in a crash of the machine unless something else synced the log first —
    /// though the checkpoint that lists it completed.
    LogPrepareSkipsSync,
    /// The event log's commit moves each piece in two writes: the records into the topic,
    /// then the deletion of their staged copies — so that a crash between the two leaves
    /// records both in the topic and staged, and committing again appends them twice.
    LogCommitMovesInTwoWrites,
    /// The coordinator completes a checkpoint once the first snapshot is persisted.
    CoordinatorCompletesEarly,
    /// A stopping coordinator reports that it has stopped while a write to the checkpoint
    /// store is still running: the master picks the checkpoint to restore from, and the write
    /// lands after.
    CoordinatorStopsBeforeWrites,
    /// The checkpoint store's `latest` passes over the newest checkpoint when there are two or
    /// more: a resubmitted job restores from the one before.
    StoreLatestSkipsNewest,
    /// The checkpoint store's `discard` deletes the snapshots of every newer checkpoint with
    /// those of the one it discards (a scan without its end): retention deletes the newest
    /// checkpoint's snapshots under its intact metadata.
    StoreDiscardOverreaches,
    /// Subtasks with several inputs snapshot without aligning barriers.
    SubtaskSkipsAlignment,
    /// A subtask's watermark-drift limit holds input channels back while barriers align, so
    /// that a channel that has not delivered its barrier can wait for one that has.
    DriftHoldsAligningChannels,
    /// A subtask's minimum rule passes over input channels that have sent no watermark since
    /// it started or was restored: a slow channel no longer holds the watermark back, and its
    /// records arrive late.
    WatermarkSkipsSilentChannels,
    /// Partitioners lose some of the credits they owe upstream.
    PartitionerLeaksCredits,
    /// The job master restores a failed attempt from the newest checkpoint it had heard of,
    /// not the newest its coordinator completed before it stopped.
    MasterIgnoresLateCompletions,
    /// Restoring, a subtask's key-group range ends one group late where its parallelism
    /// divides the key groups evenly: it also takes the first key group of the next subtask,
    /// a copy of state that is not its own.
    KeyGroupRangeOffByOne,
    /// Window operators drop their pending timers when they are restored, so restored windows
    /// never fire.
    WindowDropsTimers,
    /// Event-time timers (of window operators and keyed process functions) fire when the
    /// watermark is one ms short of them.
    EventTimersFireEarly,
    /// Keyed process functions (the timer job's, the interval join) drop their pending timers
    /// when they are restored, so timers registered before the checkpoint never fire.
    ProcessDropsTimers,
}

impl Defect {
    /// Every broken component, for listings and for the check that each is caught.
    pub const ALL: [Defect; 24] = [
        Defect::SourceForgetsOffsets,
        Defect::SourceRestoresOneAhead,
        Defect::SourceRestoresOneBehind,
        Defect::SinkCommitsAtPreCommit,
        Defect::SinkSkipsFlush,
        Defect::SinkAbortsCommittedOnRestore,
        Defect::SinkCommitsLeftoversOnRestore,
        Defect::SinkLeavesTakenOverOpen,
        Defect::SinkIgnoresCommitMark,
        Defect::LogPrepareSkipsSync,
        Defect::LogCommitMovesInTwoWrites,
        Defect::CoordinatorCompletesEarly,
        Defect::CoordinatorStopsBeforeWrites,
        Defect::StoreLatestSkipsNewest,
        Defect::StoreDiscardOverreaches,
        Defect::SubtaskSkipsAlignment,
        Defect::DriftHoldsAligningChannels,
        Defect::PartitionerLeaksCredits,
        Defect::MasterIgnoresLateCompletions,
        Defect::KeyGroupRangeOffByOne,
        Defect::WatermarkSkipsSilentChannels,
        Defect::WindowDropsTimers,
        Defect::ProcessDropsTimers,
        Defect::EventTimersFireEarly,
    ];

    /// The defect's name in scenario files.
    pub fn name(self) -> &'static str {
        match self {
            Defect::SourceForgetsOffsets => "source-forgets-offsets",
            Defect::SourceRestoresOneAhead => "source-restores-one-ahead",
            Defect::SourceRestoresOneBehind => "source-restores-one-behind",
            Defect::SinkCommitsAtPreCommit => "sink-commits-at-pre-commit",
            Defect::SinkSkipsFlush => "sink-skips-flush",
            Defect::SinkAbortsCommittedOnRestore => "sink-aborts-committed-on-restore",
            Defect::SinkCommitsLeftoversOnRestore => "sink-commits-leftovers-on-restore",
            Defect::SinkLeavesTakenOverOpen => "sink-leaves-taken-over-open",
            Defect::SinkIgnoresCommitMark => "sink-ignores-commit-mark",
            Defect::LogPrepareSkipsSync => "log-prepare-skips-sync",
            Defect::LogCommitMovesInTwoWrites => "log-commit-moves-in-two-writes",
            Defect::CoordinatorCompletesEarly => "coordinator-completes-early",
            Defect::CoordinatorStopsBeforeWrites => "coordinator-stops-before-writes",
            Defect::StoreLatestSkipsNewest => "store-latest-skips-newest",
            Defect::StoreDiscardOverreaches => "store-discard-overreaches",
            Defect::SubtaskSkipsAlignment => "subtask-skips-alignment",
            Defect::DriftHoldsAligningChannels => "drift-holds-aligning-channels",
            Defect::PartitionerLeaksCredits => "partitioner-leaks-credits",
            Defect::WatermarkSkipsSilentChannels => "watermark-skips-silent-channels",
            Defect::MasterIgnoresLateCompletions => "master-ignores-late-completions",
            Defect::KeyGroupRangeOffByOne => "key-group-range-off-by-one",
            Defect::WindowDropsTimers => "window-drops-timers",
            Defect::ProcessDropsTimers => "process-drops-timers",
            Defect::EventTimersFireEarly => "event-timers-fire-early",
        }
    }
}
