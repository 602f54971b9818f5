//! Simulated durable storage that knows written from synced.
//!
//! A [`Journaled`] state is what one store (the event log, the checkpoint store) keeps on a
//! disk: every change is applied at once to the *live* state the process reads, and kept in a
//! journal, with what undoes it, until the store syncs. A crash of the process keeps
//! everything written (the OS has it); a crash of the machine keeps the synced state plus,
//! depending on the fault, nothing, all, or a prefix of what was not yet synced — and the
//! write after that prefix may be torn. That is fjall's model: a journal replayed up to the
//! last intact entry, whose writes reach the disk in order.
//!
//! The durable state is not kept beside the live one: it is the live state with the unsynced
//! writes undone, newest first. So a write costs one change and its undo, a sync only forgets
//! the journal, and a crash undoes what it loses.

use rand::Rng;

/// A state kept in a journal: it applies operations, returning what undoes them, and knows
/// what a torn one leaves.
pub trait Durable: Clone {
    /// One change.
    type Op: Clone;

    /// Applies a change; returns the change that undoes it.
    fn apply(&mut self, op: Self::Op) -> Self::Op;

    /// What a write torn by a crash leaves, if anything (atomic operations leave nothing).
    fn torn(op: &Self::Op, rng: &mut impl Rng) -> Option<Self::Op>;
}

/// What a machine crash does to the writes that were not synced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnsyncedFate {
    /// All of them survive (the process crashed, the OS did not).
    Kept,
    /// None of them survives.
    Lost,
    /// A random prefix survives, in order.
    RandomPrefix,
    /// A random prefix survives and the write after it (at the latest the last) is torn.
    Torn,
}

/// What a crash did to a store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrashDamage {
    /// Unsynced writes that survived.
    pub kept: usize,
    /// Unsynced writes that were lost.
    pub lost: usize,
    /// Whether a write survived torn.
    pub torn: bool,
}

/// A store's state with its journal.
#[derive(Clone, Debug)]
pub struct Journaled<S: Durable> {
    live: S,
    /// The writes since the last sync, oldest first, each with what undoes it.
    unsynced: Vec<(S::Op, S::Op)>,
}

impl<S: Durable> Journaled<S> {
    /// A store whose state is `state`, all of it durable.
    pub fn new(state: S) -> Self {
        Journaled {
            live: state,
            unsynced: Vec::new(),
        }
    }

    /// What the process sees: every write.
    pub fn live(&self) -> &S {
        &self.live
    }

    /// What survives any crash: the synced writes.
    pub fn durable(&self) -> S {
        let mut durable = self.live.clone();
        for (_, undo) in self.unsynced.iter().rev() {
            durable.apply(undo.clone());
        }
        durable
    }

    /// Whether every write is durable (none since the last sync or crash).
    pub fn is_synced(&self) -> bool {
        self.unsynced.is_empty()
    }

    /// Writes a change (not yet durable).
    pub fn write(&mut self, op: S::Op) {
        let undo = self.live.apply(op.clone());
        self.unsynced.push((op, undo));
    }

    /// Makes every write so far durable.
    pub fn sync(&mut self) {
        self.unsynced.clear();
    }

    /// A crash: the live state becomes what the disk kept.
    pub fn crash(&mut self, fate: UnsyncedFate, rng: &mut impl Rng) -> CrashDamage {
        let total = self.unsynced.len();
        let kept = match fate {
            UnsyncedFate::Kept => total,
            UnsyncedFate::Lost => 0,
            UnsyncedFate::RandomPrefix => rng.random_range(0..=total),
            // Some write is always torn: the last one at the latest.
            UnsyncedFate::Torn => rng.random_range(0..total.max(1)).min(total),
        };
        let mut damage = CrashDamage {
            kept,
            lost: total - kept,
            torn: false,
        };
        let lost = self.unsynced.split_off(kept);
        let first_lost = lost.first().map(|(op, _)| op.clone());
        for (_, undo) in lost.into_iter().rev() {
            self.live.apply(undo);
        }
        if fate == UnsyncedFate::Torn
            && let Some(torn) = first_lost.and_then(|op| S::torn(&op, rng))
        {
            self.live.apply(torn);
            damage.torn = true;
        }
        self.unsynced.clear();
        damage
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[derive(Clone, Default, Debug, PartialEq)]
    struct Bytes(Vec<u8>);

    /// Appends bytes; undone by truncating back.
    #[derive(Clone, Debug)]
    enum Op {
        Append(Vec<u8>),
        TruncateTo(usize),
    }

    impl Durable for Bytes {
        type Op = Op;

        fn apply(&mut self, op: Op) -> Op {
            let before = self.0.len();
            match op {
                Op::Append(bytes) => self.0.extend(bytes),
                Op::TruncateTo(len) => self.0.truncate(len),
            }
            Op::TruncateTo(before)
        }

        fn torn(op: &Op, _rng: &mut impl Rng) -> Option<Op> {
            match op {
                Op::Append(bytes) => Some(Op::Append(bytes[..bytes.len() / 2].to_vec())),
                Op::TruncateTo(_) => None,
            }
        }
    }

    #[test]
    fn only_synced_writes_survive_a_crash_that_loses_the_rest() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut store = Journaled::new(Bytes::default());
        store.write(Op::Append(vec![1]));
        store.sync();
        store.write(Op::Append(vec![2]));
        assert_eq!(store.live().0, vec![1, 2]);
        assert_eq!(store.durable().0, vec![1]);
        let damage = store.crash(UnsyncedFate::Lost, &mut rng);
        assert_eq!(store.live().0, vec![1]);
        assert_eq!((damage.kept, damage.lost), (0, 1));
    }

    #[test]
    fn a_process_crash_keeps_every_write() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut store = Journaled::new(Bytes::default());
        store.write(Op::Append(vec![1]));
        store.crash(UnsyncedFate::Kept, &mut rng);
        assert_eq!(store.durable().0, vec![1]);
    }

    #[test]
    fn a_torn_crash_keeps_a_prefix_then_part_of_one_write() {
        for seed in 0..20 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut store = Journaled::new(Bytes::default());
            store.write(Op::Append(vec![1, 1]));
            store.write(Op::Append(vec![2, 2]));
            let damage = store.crash(UnsyncedFate::Torn, &mut rng);
            let expected: Vec<u8> = match (damage.kept, damage.torn) {
                (0, true) => vec![1],
                (1, true) => vec![1, 1, 2],
                other => panic!("unexpected damage {other:?}"),
            };
            assert_eq!(store.live().0, expected);
        }
    }
}
