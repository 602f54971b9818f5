//! Simulated durable storage that knows written from synced.
//!
//! A [`Journaled`] state is what one store (the event log, the checkpoint store) keeps on a
//! disk: every change is an operation appended to a journal, applied at once to the *live*
//! state the process reads, and to the *durable* state only when the store syncs. A crash
//! of the process keeps everything written (the OS has it); a crash of the machine keeps the
//! durable state plus, depending on the fault, nothing, all, or a prefix of what was not yet
//! synced — and the last operation of that prefix may be torn. That is fjall's model: a
//! journal replayed up to the last intact entry, whose writes reach the disk in order.

use rand::Rng;

/// A state kept in a journal: it applies operations, and knows what a torn one leaves.
pub trait Durable: Clone {
    /// One change.
    type Op: Clone;

    /// Applies a change.
    fn apply(&mut self, op: Self::Op);

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
    durable: S,
    live: S,
    unsynced: Vec<S::Op>,
}

impl<S: Durable> Journaled<S> {
    /// A store whose state is `state`, all of it durable.
    pub fn new(state: S) -> Self {
        Journaled {
            durable: state.clone(),
            live: state,
            unsynced: Vec::new(),
        }
    }

    /// What the process sees: every write.
    pub fn live(&self) -> &S {
        &self.live
    }

    /// What survives any crash: the synced writes.
    pub fn durable(&self) -> &S {
        &self.durable
    }

    /// Writes a change (not yet durable).
    pub fn write(&mut self, op: S::Op) {
        self.live.apply(op.clone());
        self.unsynced.push(op);
    }

    /// Makes every write so far durable.
    pub fn sync(&mut self) {
        for op in self.unsynced.drain(..) {
            self.durable.apply(op);
        }
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
        let mut ops = self.unsynced.drain(..);
        for op in ops.by_ref().take(kept) {
            self.durable.apply(op);
        }
        if fate == UnsyncedFate::Torn
            && let Some(torn) = ops.next().and_then(|op| S::torn(&op, rng))
        {
            self.durable.apply(torn);
            damage.torn = true;
        }
        drop(ops);
        self.live = self.durable.clone();
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

    impl Durable for Bytes {
        type Op = Vec<u8>;

        fn apply(&mut self, op: Vec<u8>) {
            self.0.extend(op);
        }

        fn torn(op: &Vec<u8>, _rng: &mut impl Rng) -> Option<Vec<u8>> {
            Some(op[..op.len() / 2].to_vec())
        }
    }

    #[test]
    fn only_synced_writes_survive_a_crash_that_loses_the_rest() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut store = Journaled::new(Bytes::default());
        store.write(vec![1]);
        store.sync();
        store.write(vec![2]);
        assert_eq!(store.live().0, vec![1, 2]);
        let damage = store.crash(UnsyncedFate::Lost, &mut rng);
        assert_eq!(store.live().0, vec![1]);
        assert_eq!((damage.kept, damage.lost), (0, 1));
    }

    #[test]
    fn a_process_crash_keeps_every_write() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut store = Journaled::new(Bytes::default());
        store.write(vec![1]);
        store.crash(UnsyncedFate::Kept, &mut rng);
        assert_eq!(store.durable().0, vec![1]);
    }

    #[test]
    fn a_torn_crash_keeps_a_prefix_then_part_of_one_write() {
        for seed in 0..20 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut store = Journaled::new(Bytes::default());
            store.write(vec![1, 1]);
            store.write(vec![2, 2]);
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
