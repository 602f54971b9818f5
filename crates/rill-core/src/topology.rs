//! How a deployed job is wired, in the terms every driver uses: subtasks by position, each
//! with its role, the channels its partitioners feed, and who feeds each of its input
//! channels.
//!
//! The runtime builds actors from it, the simulator links, the core's test driver queues; none
//! of them works the wiring out from the plan on its own, and none finds an operator by name:
//! a subtask's role (a source, a terminal subtask where sinks run) comes from the graph's
//! structure.

use crate::graph::{JobGraph, OperatorKind};
use crate::plan::{PhysicalPlan, SubtaskId};

/// Where an input channel's batches come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelSource {
    /// The position of the upstream subtask.
    pub upstream: usize,
    /// Which of its outputs (and so which of its partitioners).
    pub output: usize,
    /// The channel's index among that partitioner's targets.
    pub target: usize,
}

/// One subtask of a deployed job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubtaskWiring {
    /// The subtask.
    pub id: SubtaskId,
    /// `'chain' #index`, for messages.
    pub name: String,
    /// Its chain starts with a source: the coordinator triggers checkpoints here.
    pub is_source: bool,
    /// Its chain has no output edge: the job's results leave here (its sinks run here).
    pub is_terminal: bool,
    /// The names of the operators it runs, head first.
    pub operators: Vec<String>,
    /// For each output (each partitioner), the channels it feeds, in target order:
    /// (position of the downstream subtask, input channel there).
    pub outputs: Vec<Vec<(usize, usize)>>,
    /// For each input channel, in channel order, who feeds it.
    pub inputs: Vec<ChannelSource>,
}

/// Every subtask of a job, by position (the order checkpoints number them in).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    /// The subtasks, by position.
    pub subtasks: Vec<SubtaskWiring>,
}

impl Topology {
    /// The wiring of `plan`, planned from `graph`.
    pub fn new(plan: &PhysicalPlan, graph: &JobGraph) -> Self {
        let subtasks = plan
            .subtasks()
            .map(|id| {
                let chain = plan.chain(id.chain);
                let head = graph.operator(chain.operators[0]);
                SubtaskWiring {
                    id,
                    name: format!("'{}' #{}", chain.name, id.index),
                    is_source: matches!(head.kind, OperatorKind::Source(_)),
                    is_terminal: chain.outputs.is_empty(),
                    operators: chain
                        .operators
                        .iter()
                        .map(|&operator| graph.operator(operator).name.clone())
                        .collect(),
                    outputs: chain
                        .outputs
                        .iter()
                        .map(|&edge| {
                            plan.targets(id, edge)
                                .iter()
                                .map(|target| (plan.position(target.subtask), target.channel))
                                .collect()
                        })
                        .collect(),
                    inputs: plan
                        .channel_senders(id)
                        .into_iter()
                        .map(|sender| ChannelSource {
                            upstream: plan.position(sender.upstream),
                            output: sender.output,
                            target: sender.target,
                        })
                        .collect(),
                }
            })
            .collect();
        Topology { subtasks }
    }

    /// How many subtasks there are.
    pub fn len(&self) -> usize {
        self.subtasks.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.subtasks.is_empty()
    }

    /// The subtask at `position`.
    pub fn subtask(&self, position: usize) -> &SubtaskWiring {
        &self.subtasks[position]
    }
}
