//! The physical plan: the logical graph expanded into chains, subtasks and channels.
//!
//! Consecutive operators joined by a forward edge of equal parallelism, where the upstream has
//! no other output and the downstream no other input, are **chained**: they run in one subtask
//! and hand batches to each other by a function call. Every other edge becomes, for each
//! upstream subtask, one partitioner feeding one input channel of each downstream subtask it
//! reaches (one for forward, all for the other exchanges).

use crate::exchange::{ExchangeKind, RouterContext};
use crate::flow::FlowConfig;
use crate::graph::{EdgeId, GraphError, JobGraph, OperatorId, OperatorKind};
use crate::key::KeyGroupRange;
use crate::layout::{JobLayout, SubtaskLayout};
use crate::operator::OperatorInfo;
use crate::partitioner::PartitionerCore;
use crate::subtask::{ChainedOperator, Head, SubtaskCore, SubtaskSpec};

/// Identifies a chain within its plan (its index).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChainId(pub usize);

/// One parallel instance of a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubtaskId {
    /// The chain it runs.
    pub chain: ChainId,
    /// Its index in `0..parallelism`.
    pub index: u32,
}

/// Operators that run together in one subtask.
#[derive(Clone, Debug)]
pub struct Chain {
    /// The operators, head first.
    pub operators: Vec<OperatorId>,
    /// The parallelism all of them share.
    pub parallelism: u32,
    /// The edges into the head, in graph order.
    pub inputs: Vec<EdgeId>,
    /// The edges out of the tail, in graph order.
    pub outputs: Vec<EdgeId>,
    /// The operators' names joined by `->`.
    pub name: String,
}

/// One input channel of a subtask: where its batches come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputChannel {
    /// The edge it belongs to.
    pub edge: EdgeId,
    /// The upstream subtask whose partitioner feeds it.
    pub upstream: SubtaskId,
}

/// Where a partitioner delivers one of its targets' batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelTarget {
    /// The downstream subtask.
    pub subtask: SubtaskId,
    /// The index of the input channel in that subtask.
    pub channel: usize,
}

/// Who sends on an input channel: a partitioner, named by its upstream subtask and output, and
/// the channel's index among that partitioner's targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelSender {
    /// The upstream subtask.
    pub upstream: SubtaskId,
    /// The index of the edge among the upstream chain's outputs.
    pub output: usize,
    /// The index of the channel among the partitioner's targets.
    pub target: usize,
}

/// A job graph expanded for execution.
#[derive(Clone, Debug)]
pub struct PhysicalPlan {
    /// The chains, upstream before downstream.
    pub chains: Vec<Chain>,
    chain_of: Vec<ChainId>,
    edge_ends: Vec<(ChainId, ChainId, ExchangeKind)>,
    /// For each edge between chains: the index of its first channel in the downstream subtask.
    input_offset: Vec<usize>,
    max_parallelism: u32,
}

impl PhysicalPlan {
    /// Validates a graph and expands it.
    pub fn new(graph: &JobGraph) -> Result<Self, GraphError> {
        graph.validate()?;
        let order = graph.topological_order()?;
        let chainable = |edge: EdgeId| {
            let e = &graph.edges[edge.0];
            e.exchange == ExchangeKind::Forward
                && graph.outputs(e.from).count() == 1
                && graph.inputs(e.to).count() == 1
        };
        let mut chains: Vec<Chain> = Vec::new();
        let mut chain_of = vec![ChainId(usize::MAX); graph.operators.len()];
        for id in order {
            let node = graph.operator(id);
            let inputs: Vec<EdgeId> = graph.inputs(id).collect();
            let chain = match inputs.as_slice() {
                [only] if chainable(*only) => {
                    let chain = chain_of[graph.edges[only.0].from.0];
                    let target = &mut chains[chain.0];
                    target.operators.push(id);
                    target.name = format!("{} -> {}", target.name, node.name);
                    chain
                }
                _ => {
                    chains.push(Chain {
                        operators: vec![id],
                        parallelism: node.parallelism,
                        inputs,
                        outputs: Vec::new(),
                        name: node.name.clone(),
                    });
                    ChainId(chains.len() - 1)
                }
            };
            chain_of[id.0] = chain;
        }
        for chain in &mut chains {
            let tail = *chain
                .operators
                .last()
                .expect("a chain has at least one operator");
            chain.outputs = graph
                .outputs(tail)
                .filter(|edge| chain_of[graph.edges[edge.0].to.0] != chain_of[tail.0])
                .collect();
        }
        let edge_ends: Vec<_> = graph
            .edges
            .iter()
            .map(|e| (chain_of[e.from.0], chain_of[e.to.0], e.exchange))
            .collect();
        let mut input_offset = vec![0; graph.edges.len()];
        for chain in &chains {
            let mut offset = 0;
            for edge in &chain.inputs {
                input_offset[edge.0] = offset;
                let (from, _, exchange) = edge_ends[edge.0];
                offset += match exchange {
                    ExchangeKind::Forward => 1,
                    _ => chains[from.0].parallelism as usize,
                };
            }
        }
        Ok(PhysicalPlan {
            chains,
            chain_of,
            edge_ends,
            input_offset,
            max_parallelism: graph.max_parallelism,
        })
    }

    /// The chain an operator runs in.
    pub fn chain_of(&self, operator: OperatorId) -> ChainId {
        self.chain_of[operator.0]
    }

    /// The chain with this id.
    pub fn chain(&self, id: ChainId) -> &Chain {
        &self.chains[id.0]
    }

    /// Every subtask, chain by chain.
    pub fn subtasks(&self) -> impl Iterator<Item = SubtaskId> + '_ {
        self.chains.iter().enumerate().flat_map(|(chain, spec)| {
            (0..spec.parallelism).map(move |index| SubtaskId {
                chain: ChainId(chain),
                index,
            })
        })
    }

    /// A subtask's position in [`PhysicalPlan::subtasks`]: how drivers and checkpoints number
    /// subtasks.
    pub fn position(&self, subtask: SubtaskId) -> usize {
        let before: u32 = self.chains[..subtask.chain.0]
            .iter()
            .map(|chain| chain.parallelism)
            .sum();
        (before + subtask.index) as usize
    }

    /// A subtask's input channels, indexed as the partitioners' targets name them.
    pub fn input_channels(&self, subtask: SubtaskId) -> Vec<InputChannel> {
        let mut channels = Vec::new();
        for &edge in &self.chain(subtask.chain).inputs {
            let (from, _, exchange) = self.edge_ends[edge.0];
            debug_assert_eq!(channels.len(), self.input_offset[edge.0]);
            match exchange {
                ExchangeKind::Forward => channels.push(InputChannel {
                    edge,
                    upstream: SubtaskId {
                        chain: from,
                        index: subtask.index,
                    },
                }),
                _ => channels.extend((0..self.chain(from).parallelism).map(|index| InputChannel {
                    edge,
                    upstream: SubtaskId { chain: from, index },
                })),
            }
        }
        channels
    }

    /// For each input channel of a subtask, the partitioner sending on it: the inverse of
    /// [`PhysicalPlan::targets`].
    pub fn channel_senders(&self, subtask: SubtaskId) -> Vec<ChannelSender> {
        self.input_channels(subtask)
            .into_iter()
            .map(|channel| {
                let (_, _, exchange) = self.edge_ends[channel.edge.0];
                let output = self
                    .chain(channel.upstream.chain)
                    .outputs
                    .iter()
                    .position(|&edge| edge == channel.edge)
                    .expect("an input channel's edge is an output of its upstream chain");
                let target = match exchange {
                    ExchangeKind::Forward => 0,
                    _ => subtask.index as usize,
                };
                ChannelSender {
                    upstream: channel.upstream,
                    output,
                    target,
                }
            })
            .collect()
    }

    /// The targets of the partitioner of `upstream` on `edge`, in target order.
    pub fn targets(&self, upstream: SubtaskId, edge: EdgeId) -> Vec<ChannelTarget> {
        let (_, to, exchange) = self.edge_ends[edge.0];
        let offset = self.input_offset[edge.0];
        match exchange {
            ExchangeKind::Forward => vec![ChannelTarget {
                subtask: SubtaskId {
                    chain: to,
                    index: upstream.index,
                },
                channel: offset,
            }],
            _ => (0..self.chain(to).parallelism)
                .map(|index| ChannelTarget {
                    subtask: SubtaskId { chain: to, index },
                    channel: offset + upstream.index as usize,
                })
                .collect(),
        }
    }

    /// Which operators each subtask runs, by uid: stored with every checkpoint, so that a job
    /// restoring it finds each operator's state whatever its new shape.
    pub fn layout(&self, graph: &JobGraph) -> JobLayout {
        let uids = graph.uids();
        let subtasks = self
            .subtasks()
            .map(|id| {
                let chain = self.chain(id.chain);
                let mut operators = chain.operators.iter().peekable();
                let source = operators
                    .next_if(|&&op| matches!(graph.operator(op).kind, OperatorKind::Source(_)))
                    .map(|&op| uids[op.0].clone());
                SubtaskLayout {
                    index: id.index,
                    parallelism: graph.operator(chain.operators[0]).parallelism,
                    source,
                    operators: operators.map(|&op| uids[op.0].clone()).collect(),
                }
            })
            .collect();
        JobLayout {
            max_parallelism: self.max_parallelism,
            subtasks,
        }
    }

    /// What an operator instance of a subtask is told about itself.
    pub fn operator_info(
        &self,
        graph: &JobGraph,
        operator: OperatorId,
        index: u32,
    ) -> OperatorInfo {
        let node = graph.operator(operator);
        OperatorInfo {
            job: graph.name.clone(),
            name: node.name.clone(),
            uid: graph.uids().swap_remove(operator.0),
            subtask: index,
            parallelism: node.parallelism,
            max_parallelism: self.max_parallelism,
            key_groups: KeyGroupRange::for_subtask(index, node.parallelism, self.max_parallelism),
            checkpointing: graph.checkpoint.interval_ms.is_some(),
            state_backend: graph.state_backend.clone(),
            allow_rewind: graph.allow_rewind,
        }
    }
}

/// Instantiating a plan: the same for every driver.
impl PhysicalPlan {
    /// Builds the state machine of one subtask: its head, its chained operator instances, and
    /// its outputs. A job with periodic checkpoints ends with a final checkpoint.
    pub fn build_subtask(&self, graph: &JobGraph, id: SubtaskId, flow: FlowConfig) -> SubtaskCore {
        let chain = self.chain(id.chain);
        let mut operators = chain.operators.iter();
        let head = match chain
            .operators
            .first()
            .map(|&op| (op, &graph.operator(op).kind))
        {
            Some((op, OperatorKind::Source(factory))) => {
                operators.next();
                Head::Source {
                    name: graph.operator(op).name.clone(),
                    source: factory(&self.operator_info(graph, op, id.index)),
                }
            }
            _ => Head::Inputs {
                channels: self.input_channels(id).len(),
            },
        };
        let chain_operators = operators
            .filter_map(|&op| match &graph.operator(op).kind {
                OperatorKind::Transform(factory) => Some(ChainedOperator {
                    name: graph.operator(op).name.clone(),
                    operator: factory(&self.operator_info(graph, op, id.index)),
                }),
                OperatorKind::Source(_) => None,
            })
            .collect();
        SubtaskCore::new(SubtaskSpec {
            head,
            chain: chain_operators,
            outputs: chain.outputs.len(),
            flow,
            checkpoint_mode: graph.checkpoint.mode,
            final_checkpoint: graph.checkpoint.interval_ms.is_some(),
            watermark_interval_ms: graph.watermark_interval_ms,
        })
    }

    /// Builds the partitioner of subtask `upstream` for its chain's `output`-th output edge,
    /// with its targets in the order the partitioner numbers them.
    pub fn build_partitioner(
        &self,
        graph: &JobGraph,
        upstream: SubtaskId,
        output: usize,
        flow: FlowConfig,
    ) -> (PartitionerCore, Vec<ChannelTarget>) {
        let edge_id = self.chain(upstream.chain).outputs[output];
        let edge = &graph.edges[edge_id.0];
        let targets = self.targets(upstream, edge_id);
        let name = format!(
            "{} -> {} ({:?} exchange)",
            graph.operator(edge.from).name,
            graph.operator(edge.to).name,
            edge.exchange
        );
        let router = (edge.router)(&RouterContext {
            upstream_subtask: upstream.index,
            max_parallelism: self.max_parallelism,
        });
        let core = PartitionerCore::new(name, router, targets.len(), flow);
        (core, targets)
    }
}
