//! The logical job graph: operators with their parallelism, and the edges between them, each
//! with an exchange. [`crate::plan`] expands it into subtasks and channels.

use std::sync::Arc;

use crate::coordinator::CheckpointConfig;
use crate::exchange::{ExchangeKind, RouterFactory};
use crate::key::{DEFAULT_MAX_PARALLELISM, MAX_MAX_PARALLELISM};
use crate::operator::{Operator, OperatorInfo};
use crate::restart::RestartStrategy;
use crate::source::AnySource;
use crate::state::StateBackend;
use crate::time::DEFAULT_WATERMARK_INTERVAL_MS;

/// Identifies an operator within its graph (its index).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OperatorId(pub usize);

/// Identifies an edge within its graph (its index).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EdgeId(pub usize);

/// Builds a source instance for one subtask.
pub type SourceFactory = Arc<dyn Fn(&OperatorInfo) -> Box<dyn AnySource> + Send + Sync>;

/// Builds an operator instance for one subtask.
pub type OperatorFactory = Arc<dyn Fn(&OperatorInfo) -> Box<dyn Operator> + Send + Sync>;

/// What an operator is.
#[derive(Clone)]
pub enum OperatorKind {
    /// It produces records and has no input.
    Source(SourceFactory),
    /// It consumes records from its input edges.
    Transform(OperatorFactory),
}

/// One operator of the logical graph.
#[derive(Clone)]
pub struct OperatorNode {
    /// Its name, used in errors and logs.
    pub name: String,
    /// Its stable id: what its state is stored under in checkpoints and savepoints, so that
    /// a changed job (operators added, renamed, reordered) still finds it. Without one, the
    /// operator's name stands in, with `#2`, `#3`, … added to the second, third, … operator
    /// of the same name.
    pub uid: Option<String>,
    /// How many subtasks run it.
    pub parallelism: u32,
    /// How to build its instances.
    pub kind: OperatorKind,
}

/// A data dependency between two operators.
#[derive(Clone)]
pub struct Edge {
    /// The upstream operator.
    pub from: OperatorId,
    /// The downstream operator.
    pub to: OperatorId,
    /// How records are split among the downstream subtasks.
    pub exchange: ExchangeKind,
    /// Builds the router for each partitioner on this edge.
    pub router: RouterFactory,
}

/// A job as the user described it.
#[derive(Clone)]
pub struct JobGraph {
    /// The job's name.
    pub name: String,
    /// The number of key groups.
    pub max_parallelism: u32,
    /// When and how the job checkpoints.
    pub checkpoint: CheckpointConfig,
    /// Whether and when the job restarts after a task failure.
    pub restart: RestartStrategy,
    /// Where keyed state lives.
    pub state_backend: StateBackend,
    /// Whether the job may start from a point behind what its sinks already committed (an
    /// older checkpoint, or none): output since that point is then written again. Off, such a
    /// start is refused by the sinks that know what they committed.
    pub allow_rewind: bool,
    /// How often, in milliseconds of processing time, sources emit the watermarks of periodic
    /// generators ([`crate::time`]); 0 turns periodic emission off.
    pub watermark_interval_ms: u64,
    /// The operators, indexed by [`OperatorId`].
    pub operators: Vec<OperatorNode>,
    /// The edges, indexed by [`EdgeId`].
    pub edges: Vec<Edge>,
}

/// A graph that cannot run, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GraphError {
    /// The graph has no source.
    #[error("job '{0}' has no source")]
    NoSource(String),
    /// An operator's parallelism is out of range.
    #[error(
        "operator '{operator}' has parallelism {parallelism}; it must be between 1 and the max parallelism {max}"
    )]
    BadParallelism {
        /// The operator.
        operator: String,
        /// Its parallelism.
        parallelism: u32,
        /// The job's max parallelism.
        max: u32,
    },
    /// The max parallelism is out of range.
    #[error("max parallelism {0} must be between 1 and {MAX_MAX_PARALLELISM}")]
    BadMaxParallelism(u32),
    /// A checkpoint setting is out of range.
    #[error("checkpoint setting {setting} = {value}: {reason}")]
    BadCheckpointConfig {
        /// The setting (a field of `CheckpointConfig`).
        setting: &'static str,
        /// Its value.
        value: u64,
        /// What it must be.
        reason: &'static str,
    },
    /// A forward edge joins operators of different parallelism.
    #[error(
        "forward edge '{from}' -> '{to}' joins parallelism {from_parallelism} to {to_parallelism}; use rebalance"
    )]
    ForwardParallelismMismatch {
        /// The upstream operator.
        from: String,
        /// The downstream operator.
        to: String,
        /// The upstream parallelism.
        from_parallelism: u32,
        /// The downstream parallelism.
        to_parallelism: u32,
    },
    /// An edge points at a missing operator or into a source.
    #[error("edge {0} is invalid: {1}")]
    BadEdge(usize, &'static str),
    /// A non-source operator has no input.
    #[error("operator '{0}' has no input")]
    NoInput(String),
    /// The edges form a cycle.
    #[error("the graph has a cycle through operator '{0}'")]
    Cycle(String),
    /// Two operators have the same uid.
    #[error("operators '{first}' and '{second}' have the same uid '{uid}'; uids must be unique")]
    DuplicateUid {
        /// The uid.
        uid: String,
        /// The first operator with it.
        first: String,
        /// The second.
        second: String,
    },
}

impl JobGraph {
    /// An empty graph with the default max parallelism.
    pub fn new(name: impl Into<String>) -> Self {
        JobGraph {
            name: name.into(),
            max_parallelism: DEFAULT_MAX_PARALLELISM,
            checkpoint: CheckpointConfig::default(),
            restart: RestartStrategy::None,
            state_backend: StateBackend::Memory,
            allow_rewind: false,
            watermark_interval_ms: DEFAULT_WATERMARK_INTERVAL_MS,
            operators: Vec::new(),
            edges: Vec::new(),
        }
    }

    /// Adds an operator; returns its id.
    pub fn add_operator(&mut self, node: OperatorNode) -> OperatorId {
        self.operators.push(node);
        OperatorId(self.operators.len() - 1)
    }

    /// Adds an edge; returns its id.
    pub fn add_edge(&mut self, edge: Edge) -> EdgeId {
        self.edges.push(edge);
        EdgeId(self.edges.len() - 1)
    }

    /// The operator with this id.
    pub fn operator(&self, id: OperatorId) -> &OperatorNode {
        &self.operators[id.0]
    }

    /// Every operator's uid, indexed by [`OperatorId`]: its own, or one made from its name.
    pub fn uids(&self) -> Vec<String> {
        let mut seen: std::collections::BTreeMap<&str, usize> = Default::default();
        self.operators
            .iter()
            .map(|node| match &node.uid {
                Some(uid) => uid.clone(),
                None => {
                    let count = seen.entry(node.name.as_str()).or_default();
                    *count += 1;
                    if *count == 1 {
                        node.name.clone()
                    } else {
                        format!("{}#{count}", node.name)
                    }
                }
            })
            .collect()
    }

    /// The edges out of an operator, in insertion order.
    pub fn outputs(&self, id: OperatorId) -> impl Iterator<Item = EdgeId> + '_ {
        (0..self.edges.len())
            .map(EdgeId)
            .filter(move |e| self.edges[e.0].from == id)
    }

    /// The edges into an operator, in insertion order.
    pub fn inputs(&self, id: OperatorId) -> impl Iterator<Item = EdgeId> + '_ {
        (0..self.edges.len())
            .map(EdgeId)
            .filter(move |e| self.edges[e.0].to == id)
    }

    /// Checks that the checkpoint settings are in range.
    fn validate_checkpoint_config(&self) -> Result<(), GraphError> {
        let config = &self.checkpoint;
        let bad = |setting, value, reason| {
            Err(GraphError::BadCheckpointConfig {
                setting,
                value,
                reason,
            })
        };
        if config.interval_ms == Some(0) {
            return bad(
                "interval_ms",
                0,
                "must be at least 1 ms (leave it unset to checkpoint only on request)",
            );
        }
        if config.timeout_ms == 0 {
            return bad("timeout_ms", 0, "must be at least 1 ms");
        }
        if config.max_concurrent == 0 {
            return bad("max_concurrent", 0, "at least 1 checkpoint must be allowed");
        }
        if config.retained == 0 {
            return bad(
                "retained",
                0,
                "at least the newest checkpoint is kept: recovery needs it",
            );
        }
        Ok(())
    }

    /// Checks that the graph can run.
    pub fn validate(&self) -> Result<(), GraphError> {
        let max = self.max_parallelism;
        if max == 0 || max > MAX_MAX_PARALLELISM {
            return Err(GraphError::BadMaxParallelism(max));
        }
        self.validate_checkpoint_config()?;
        for node in &self.operators {
            if node.parallelism == 0 || node.parallelism > max {
                return Err(GraphError::BadParallelism {
                    operator: node.name.clone(),
                    parallelism: node.parallelism,
                    max,
                });
            }
        }
        let mut owners: std::collections::BTreeMap<String, &str> = Default::default();
        for (uid, node) in self.uids().into_iter().zip(&self.operators) {
            if let Some(first) = owners.insert(uid.clone(), &node.name) {
                return Err(GraphError::DuplicateUid {
                    uid,
                    first: first.to_owned(),
                    second: node.name.clone(),
                });
            }
        }
        for (index, edge) in self.edges.iter().enumerate() {
            let (Some(from), Some(to)) = (
                self.operators.get(edge.from.0),
                self.operators.get(edge.to.0),
            ) else {
                return Err(GraphError::BadEdge(
                    index,
                    "it names an operator that does not exist",
                ));
            };
            if matches!(to.kind, OperatorKind::Source(_)) {
                return Err(GraphError::BadEdge(index, "it leads into a source"));
            }
            if edge.exchange == ExchangeKind::Forward && from.parallelism != to.parallelism {
                return Err(GraphError::ForwardParallelismMismatch {
                    from: from.name.clone(),
                    to: to.name.clone(),
                    from_parallelism: from.parallelism,
                    to_parallelism: to.parallelism,
                });
            }
        }
        let mut has_source = false;
        for (index, node) in self.operators.iter().enumerate() {
            let id = OperatorId(index);
            match node.kind {
                OperatorKind::Source(_) => has_source = true,
                OperatorKind::Transform(_) if self.inputs(id).next().is_none() => {
                    return Err(GraphError::NoInput(node.name.clone()));
                }
                OperatorKind::Transform(_) => {}
            }
        }
        if !has_source {
            return Err(GraphError::NoSource(self.name.clone()));
        }
        self.topological_order().map(|_| ())
    }

    /// The operators in an order where every edge goes forward (Kahn's algorithm).
    pub fn topological_order(&self) -> Result<Vec<OperatorId>, GraphError> {
        let mut pending_inputs: Vec<usize> = (0..self.operators.len())
            .map(|i| self.inputs(OperatorId(i)).count())
            .collect();
        let mut ready: Vec<OperatorId> = (0..self.operators.len())
            .filter(|&i| pending_inputs[i] == 0)
            .map(OperatorId)
            .rev()
            .collect();
        let mut order = Vec::with_capacity(self.operators.len());
        while let Some(id) = ready.pop() {
            order.push(id);
            for edge in self.outputs(id) {
                let to = self.edges[edge.0].to;
                pending_inputs[to.0] -= 1;
                if pending_inputs[to.0] == 0 {
                    ready.push(to);
                }
            }
        }
        match pending_inputs.iter().position(|&n| n > 0) {
            Some(stuck) => Err(GraphError::Cycle(self.operators[stuck].name.clone())),
            None => Ok(order),
        }
    }
}
