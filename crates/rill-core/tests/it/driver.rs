//! A deterministic test driver in the style of quinn-proto's test `Pair`: it expands a
//! `JobGraph` into one `SubtaskCore` per subtask and one `PartitionerCore` per (subtask, output
//! edge), and carries their messages until nothing moves.
//!
//! Every message travels on a FIFO link (subtask -> partitioner, partitioner -> input channel,
//! and the credits back on each). A seeded RNG picks which link delivers next, or which
//! runnable subtask steps next, so different seeds explore different interleavings while every
//! link stays FIFO. The driver can withhold delivery to a subtask, and it tracks how many
//! batches each channel holds (sent and not yet credited back), so tests can check the credit
//! bound.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rill_core::flow::FlowConfig;
use rill_core::graph::{JobGraph, OperatorId};
use rill_core::partitioner::{PartitionerCore, PartitionerTransmit};
use rill_core::plan::{PhysicalPlan, SubtaskId};
use rill_core::subtask::{Step, SubtaskCore, SubtaskTransmit};
use rill_core::topology::Topology;
use rill_core::{Batch, TaskError};

/// How many times in a row the driver wakes idle sources that then produce nothing, before it
/// calls the job quiet.
const IDLE_ROUNDS: u32 = 50;

/// A FIFO path a message takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Link {
    /// A subtask's output batches, to the partitioner of that output.
    ToPartitioner(usize),
    /// A partitioner's batches, to one input channel of a subtask.
    ToChannel { subtask: usize, channel: usize },
    /// An input channel's credits, back to the partitioner target feeding it.
    CreditToPartitioner { partitioner: usize, target: usize },
    /// A partitioner's credits, back to its upstream subtask's output.
    CreditToSubtask(usize),
}

enum Message {
    Batch(Batch),
    Credit(u32),
}

#[derive(Clone, Copy, Debug, Hash)]
enum Action {
    Deliver(Link),
    Step(usize),
}

/// The batches a channel holds now, and the most it ever held.
#[derive(Clone, Copy, Debug, Default)]
pub struct Load {
    now: u32,
    pub max: u32,
}

impl Load {
    fn add(&mut self, n: u32) {
        self.now += n;
        self.max = self.max.max(self.now);
    }

    fn sub(&mut self, n: u32) {
        self.now = self
            .now
            .checked_sub(n)
            .expect("a channel returned more credits than it received batches");
    }
}

struct Subtask {
    id: SubtaskId,
    core: SubtaskCore,
    /// Whether a step may do something (it got input or credit since it last blocked).
    runnable: bool,
    /// Whether its last step found its source idle.
    idle: bool,
    /// For each input channel: the partitioner and target that feed it.
    senders: Vec<(usize, usize)>,
    /// For each output: its partitioner.
    outputs: Vec<usize>,
}

struct Partitioner {
    core: PartitionerCore,
    upstream: usize,
    output: usize,
    /// For each target: (subtask, input channel).
    targets: Vec<(usize, usize)>,
    /// Batches from the upstream subtask not yet credited back.
    upstream_load: Load,
}

/// What a run came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Whether every subtask finished.
    pub finished: bool,
}

/// Runs the cores of one job.
pub struct Driver {
    pub plan: PhysicalPlan,
    subtasks: Vec<Subtask>,
    partitioners: Vec<Partitioner>,
    links: BTreeMap<Link, VecDeque<Message>>,
    /// Per (subtask, input channel): batches the partitioner sent, minus credits returned.
    channel_load: BTreeMap<(usize, usize), Load>,
    held: BTreeSet<usize>,
    rng: StdRng,
    trace: DefaultHasher,
}

impl Driver {
    /// Plans `graph` and builds its cores; the seed decides the interleaving.
    pub fn new(graph: &JobGraph, flow: FlowConfig, seed: u64) -> Self {
        let plan = PhysicalPlan::new(graph).expect("the test graph is valid");
        let topology = Topology::new(&plan, graph);
        let mut partitioners = Vec::new();
        let mut partitioner_of = BTreeMap::new();
        for (upstream, wiring) in topology.subtasks.iter().enumerate() {
            for (output, targets) in wiring.outputs.iter().enumerate() {
                let (core, _) = plan.build_partitioner(graph, wiring.id, output, flow);
                partitioner_of.insert((upstream, output), partitioners.len());
                partitioners.push(Partitioner {
                    core,
                    upstream,
                    output,
                    targets: targets.clone(),
                    upstream_load: Load::default(),
                });
            }
        }
        let subtasks = topology
            .subtasks
            .iter()
            .enumerate()
            .map(|(index, wiring)| Subtask {
                id: wiring.id,
                core: plan.build_subtask(graph, wiring.id, flow),
                runnable: true,
                idle: false,
                senders: wiring
                    .inputs
                    .iter()
                    .map(|source| {
                        let partitioner = partitioner_of[&(source.upstream, source.output)];
                        (partitioner, source.target)
                    })
                    .collect(),
                outputs: (0..wiring.outputs.len())
                    .map(|output| partitioner_of[&(index, output)])
                    .collect(),
            })
            .collect();
        Driver {
            plan,
            subtasks,
            partitioners,
            links: BTreeMap::new(),
            channel_load: BTreeMap::new(),
            held: BTreeSet::new(),
            rng: StdRng::seed_from_u64(seed),
            trace: DefaultHasher::new(),
        }
    }

    /// The driver's index of subtask `index` of the chain running `operator`.
    fn subtask_of(&self, operator: OperatorId, index: u32) -> usize {
        let chain = self.plan.chain_of(operator);
        self.subtasks
            .iter()
            .position(|s| s.id.chain == chain && s.id.index == index)
            .expect("the operator has such a subtask")
    }

    /// Withholds every message to subtask `index` of `operator`'s chain.
    pub fn hold(&mut self, operator: OperatorId, index: u32) {
        let subtask = self.subtask_of(operator, index);
        self.held.insert(subtask);
    }

    /// Delivers to every subtask again.
    pub fn release_all(&mut self) {
        self.held.clear();
    }

    /// Whether every subtask has finished.
    pub fn all_finished(&self) -> bool {
        self.subtasks.iter().all(|s| s.core.is_finished())
    }

    /// Whether every partitioner has handed over everything it received.
    pub fn partitioners_idle(&self) -> bool {
        self.partitioners.iter().all(|p| p.core.is_idle())
    }

    /// The most batches any input channel held at once (sent and not credited back).
    pub fn max_channel_load(&self) -> u32 {
        self.channel_load.values().map(|l| l.max).max().unwrap_or(0)
    }

    /// The most batches any subtask output had handed its partitioner and not got credit for.
    pub fn max_output_load(&self) -> u32 {
        self.partitioners
            .iter()
            .map(|p| p.upstream_load.max)
            .max()
            .unwrap_or(0)
    }

    /// A hash of every choice made so far: equal runs have equal traces.
    pub fn trace(&self) -> u64 {
        self.trace.finish()
    }

    /// Steps subtask `index` of `operator`'s chain once, whether or not it has work, and sends
    /// what it transmits.
    pub fn force_step(&mut self, operator: OperatorId, index: u32) -> Result<Step, TaskError> {
        let subtask = self.subtask_of(operator, index);
        let step = self.subtasks[subtask].core.step()?;
        self.drain_subtask(subtask);
        Ok(step)
    }

    /// Runs until every subtask has finished or nothing can move; a failure stops the run.
    pub fn run(&mut self) -> Result<Outcome, TaskError> {
        let mut idle_rounds = 0;
        loop {
            let mut actions: Vec<Action> = self
                .links
                .iter()
                .filter(|(link, queue)| {
                    !queue.is_empty() && !self.held.contains(&self.recipient(**link))
                })
                .map(|(&link, _)| Action::Deliver(link))
                .collect();
            actions.extend(
                (0..self.subtasks.len())
                    .filter(|&s| self.subtasks[s].runnable)
                    .map(Action::Step),
            );
            if actions.is_empty() {
                let idle: Vec<usize> = (0..self.subtasks.len())
                    .filter(|&s| self.subtasks[s].idle)
                    .collect();
                if idle.is_empty() || idle_rounds == IDLE_ROUNDS {
                    return Ok(Outcome {
                        finished: self.all_finished(),
                    });
                }
                idle_rounds += 1;
                for s in idle {
                    self.subtasks[s].runnable = true;
                }
                continue;
            }
            let action = actions[self.rng.random_range(0..actions.len())];
            action.hash(&mut self.trace);
            if self.perform(action)? {
                idle_rounds = 0;
            }
        }
    }

    /// Which subtask a link's messages go to, for holding; partitioners are never held.
    fn recipient(&self, link: Link) -> usize {
        match link {
            Link::ToChannel { subtask, .. } => subtask,
            Link::CreditToSubtask(p) => self.partitioners[p].upstream,
            Link::ToPartitioner(_) | Link::CreditToPartitioner { .. } => usize::MAX,
        }
    }

    /// Performs one action; returns whether it did something other than find a source idle.
    fn perform(&mut self, action: Action) -> Result<bool, TaskError> {
        match action {
            Action::Step(s) => {
                let subtask = &mut self.subtasks[s];
                let step = subtask.core.step()?;
                subtask.runnable = step == Step::Progress;
                subtask.idle = step == Step::Idle;
                self.drain_subtask(s);
                Ok(step != Step::Idle)
            }
            Action::Deliver(link) => {
                let message = self
                    .links
                    .get_mut(&link)
                    .and_then(VecDeque::pop_front)
                    .expect("only non-empty links are chosen");
                match (link, message) {
                    (Link::ToPartitioner(p), Message::Batch(batch)) => {
                        self.partitioners[p].core.handle_batch(batch)?;
                        self.drain_partitioner(p);
                    }
                    (Link::ToChannel { subtask, channel }, Message::Batch(batch)) => {
                        self.subtasks[subtask].core.handle_batch(channel, batch);
                        self.subtasks[subtask].runnable = true;
                    }
                    (
                        Link::CreditToPartitioner {
                            partitioner,
                            target,
                        },
                        Message::Credit(n),
                    ) => {
                        self.partitioners[partitioner].core.handle_credit(target, n);
                        self.drain_partitioner(partitioner);
                    }
                    (Link::CreditToSubtask(p), Message::Credit(n)) => {
                        let (upstream, output) =
                            (self.partitioners[p].upstream, self.partitioners[p].output);
                        self.subtasks[upstream].core.handle_credit(output, n);
                        self.subtasks[upstream].runnable = true;
                        self.drain_subtask(upstream);
                    }
                    (link, _) => unreachable!("wrong kind of message on {link:?}"),
                }
                Ok(true)
            }
        }
    }

    fn send(&mut self, link: Link, message: Message) {
        self.links.entry(link).or_default().push_back(message);
    }

    fn drain_subtask(&mut self, s: usize) {
        while let Some(transmit) = self.subtasks[s].core.poll_transmit() {
            match transmit {
                SubtaskTransmit::Batch { output, batch } => {
                    let p = self.subtasks[s].outputs[output];
                    self.partitioners[p].upstream_load.add(1);
                    self.send(Link::ToPartitioner(p), Message::Batch(batch));
                }
                SubtaskTransmit::Credit { input, credits } => {
                    let (partitioner, target) = self.subtasks[s].senders[input];
                    self.load(s, input).sub(credits);
                    let link = Link::CreditToPartitioner {
                        partitioner,
                        target,
                    };
                    self.send(link, Message::Credit(credits));
                }
                // No checkpoints here: there is no coordinator to tell.
                SubtaskTransmit::Ended => {}
                other => panic!("no checkpoint was triggered, yet subtask {s} sent {other:?}"),
            }
        }
    }

    fn drain_partitioner(&mut self, p: usize) {
        while let Some(transmit) = self.partitioners[p].core.poll_transmit() {
            match transmit {
                PartitionerTransmit::Batch { target, batch } => {
                    let (subtask, channel) = self.partitioners[p].targets[target];
                    self.load(subtask, channel).add(1);
                    self.send(Link::ToChannel { subtask, channel }, Message::Batch(batch));
                }
                PartitionerTransmit::UpstreamCredit(n) => {
                    self.partitioners[p].upstream_load.sub(n);
                    self.send(Link::CreditToSubtask(p), Message::Credit(n));
                }
            }
        }
    }

    fn load(&mut self, subtask: usize, channel: usize) -> &mut Load {
        self.channel_load.entry((subtask, channel)).or_default()
    }
}
