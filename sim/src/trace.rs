//! The trace of a run: every step the world takes, hashed so that two runs of one seed can be
//! compared, and printed step by step when asked (`--trace`).
//!
//! The hash covers what decides a run — the virtual time, the kind of each step and the ids
//! it names — not the text, so that a run not being printed pays nothing for formatting. The
//! runner extends it, once the run is over, with what the run left: the committed output
//! record by record, the transactions still open and the final checkpoint's bytes.

use xxhash_rust::xxh3::Xxh3;

/// The trace of one run.
pub struct Trace {
    hasher: Xxh3,
    printing: bool,
}

impl Trace {
    /// A trace that prints each step if `printing`.
    pub fn new(printing: bool) -> Self {
        Trace {
            hasher: Xxh3::new(),
            printing,
        }
    }

    /// Records one step: `kind` and `ids` go into the hash; `text` is built only to print.
    pub fn step(&mut self, now_us: u64, kind: u8, ids: [u64; 3], text: impl FnOnce() -> String) {
        self.hasher.update(&now_us.to_le_bytes());
        self.hasher.update(&[kind]);
        for id in ids {
            self.hasher.update(&id.to_le_bytes());
        }
        if self.printing {
            println!("{:>10.3} ms  {}", now_us as f64 / 1000.0, text());
        }
    }

    /// Whether steps are printed.
    pub fn is_printing(&self) -> bool {
        self.printing
    }

    /// The hash of every step so far.
    pub fn hash(&self) -> u64 {
        self.hasher.digest()
    }
}
