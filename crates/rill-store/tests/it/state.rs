//! The fjall keyed-state backend through the same handles operators use: it holds what the
//! in-memory backend holds, its snapshots restore into either backend at another parallelism,
//! and it leaves nothing behind.

use rill_core::key::KeyGroupRange;
use rill_core::operator::OperatorInfo;
use rill_core::state::{KeyedStateAccess, KeyedStateStore, MapState, StateError, ValueState};
use rill_store::{FjallStateBackend, StoreError};

const MAX_PARALLELISM: u32 = 32;

struct Scope<'a> {
    key: u64,
    store: &'a mut KeyedStateStore<u64>,
}

impl KeyedStateAccess<u64> for Scope<'_> {
    fn key_and_store(&mut self) -> (&u64, &mut KeyedStateStore<u64>) {
        (&self.key, self.store)
    }
}

fn count() -> ValueState<u64> {
    ValueState::new("count")
}

fn tags() -> MapState<String, u32> {
    MapState::new("tags")
}

/// Counts every key up to its number, tags the odd ones, then clears every tenth key.
fn fill(store: &mut KeyedStateStore<u64>, keys: u64) {
    let (count, tags) = (count(), tags());
    for key in 0..keys {
        let scope = &mut Scope { key, store };
        for _ in 0..key % 5 + 1 {
            let next = count.get(scope).unwrap_or(0) + 1;
            count.set(scope, next);
        }
        if key % 2 == 1 {
            tags.insert(scope, format!("odd-{key}"), key as u32);
            tags.insert(scope, "odd".to_owned(), 1);
        }
        if key % 10 == 0 {
            count.clear(scope);
            tags.clear(scope);
        }
    }
}

/// What every key in `keys` holds.
fn read(store: &mut KeyedStateStore<u64>, keys: impl Iterator<Item = u64>) -> Vec<String> {
    let (count, tags) = (count(), tags());
    keys.map(|key| {
        let scope = &mut Scope { key, store };
        format!("{key}: {:?} {:?}", count.get(scope), tags.entries(scope))
    })
    .collect()
}

#[test]
fn fjall_state_holds_what_memory_holds_and_rescales_through_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let backend = FjallStateBackend::open(dir.path().join("state")).unwrap();
    let mut memory = KeyedStateStore::new(MAX_PARALLELISM);
    let mut on_disk =
        KeyedStateStore::external(MAX_PARALLELISM, Box::new(backend.tables().unwrap()));
    fill(&mut memory, 2_000);
    fill(&mut on_disk, 2_000);
    let expected = read(&mut memory, 0..2_000);
    assert_eq!(read(&mut on_disk, 0..2_000), expected);
    assert_eq!(expected[10], "10: None []");

    let snapshot = on_disk.snapshot().unwrap();
    let mut in_memory = KeyedStateStore::new(MAX_PARALLELISM);
    in_memory.restore(snapshot.clone());
    assert_eq!(read(&mut in_memory, 0..2_000), expected, "fjall -> memory");

    // Restore at parallelism 3, each part into a fresh fjall instance, and read back the keys
    // each one owns.
    let mut restored = Vec::new();
    for index in 0..3 {
        let range = KeyGroupRange::for_subtask(index, 3, MAX_PARALLELISM);
        let mut part =
            KeyedStateStore::external(MAX_PARALLELISM, Box::new(backend.tables().unwrap()));
        part.restore(snapshot.select(range));
        let owned = (0..2_000u64)
            .filter(|key| range.contains(rill_core::key::key_group_of(key, MAX_PARALLELISM)));
        restored.extend(read(&mut part, owned));
    }
    restored.sort_by_key(|line| {
        line.split(':')
            .next()
            .and_then(|key| key.parse::<u64>().ok())
    });
    assert_eq!(restored, expected);
}

#[test]
fn opening_wipes_what_an_earlier_run_left_and_dropping_removes_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state");
    // What a killed run leaves behind: its marked working copy, no longer locked.
    std::fs::create_dir_all(path.join("db")).unwrap();
    std::fs::write(path.join("RILL_STATE_WORKING_COPY"), b"").unwrap();
    std::fs::write(path.join("db/leftover"), b"from a killed run").unwrap();

    let backend = FjallStateBackend::open(&path).unwrap();
    assert!(
        !path.join("db/leftover").exists(),
        "the working copy starts empty"
    );
    let mut store = KeyedStateStore::external(MAX_PARALLELISM, Box::new(backend.tables().unwrap()));
    fill(&mut store, 100);
    assert_eq!(
        read(&mut store, 5..6),
        ["5: Some(1) [(\"odd\", 1), (\"odd-5\", 5)]"]
    );
    drop(store);
    drop(backend);
    assert!(!path.exists(), "a dropped backend removes its directory");
}

#[test]
fn a_directory_that_is_not_a_working_copy_or_is_in_use_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("precious"), b"an event log, say").unwrap();
    let error = FjallStateBackend::open(dir.path()).err().unwrap();
    assert!(matches!(error, StoreError::NotAWorkingCopy(_)), "{error}");
    assert!(dir.path().join("precious").exists());

    let path = dir.path().join("state");
    let open = FjallStateBackend::open(&path).unwrap();
    let error = FjallStateBackend::open(&path).err().unwrap();
    assert!(matches!(error, StoreError::Locked(_)), "{error}");
    let mut store = KeyedStateStore::external(MAX_PARALLELISM, Box::new(open.tables().unwrap()));
    fill(&mut store, 10);
    assert_eq!(
        read(&mut store, 1..2),
        ["1: Some(2) [(\"odd\", 1), (\"odd-1\", 1)]"]
    );
}

#[test]
fn a_working_copy_lost_under_a_running_backend_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state");
    let backend = FjallStateBackend::open(&path).unwrap();
    // Someone removes the directory and leaves a file in its place.
    std::fs::remove_dir_all(&path).unwrap();
    std::fs::write(&path, b"not a directory").unwrap();
    let error = backend.tables().err().unwrap();
    assert!(
        matches!(&error, StateError::Open { reason } if reason.contains("keyspace 'state-0'")),
        "{error:?}"
    );
    let mut store = KeyedStateStore::for_operator(&OperatorInfo {
        job: "job".to_owned(),
        name: "count".to_owned(),
        uid: "count".to_owned(),
        subtask: 0,
        parallelism: 1,
        max_parallelism: MAX_PARALLELISM,
        key_groups: KeyGroupRange::for_subtask(0, 1, MAX_PARALLELISM),
        checkpointing: false,
        state_backend: backend.backend(),
        allow_rewind: false,
    });
    assert!(matches!(store.check(), Err(StateError::Open { .. })));
    assert_eq!(
        read(&mut store, 1..2),
        ["1: None []"],
        "a failed store reads nothing"
    );
}

struct TextScope<'a> {
    key: String,
    store: &'a mut KeyedStateStore<String>,
}

impl KeyedStateAccess<String> for TextScope<'_> {
    fn key_and_store(&mut self) -> (&String, &mut KeyedStateStore<String>) {
        (&self.key, self.store)
    }
}

#[test]
fn keys_longer_than_fjall_takes_are_kept_read_snapshotted_and_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let backend = FjallStateBackend::open(dir.path().join("state")).unwrap();
    let mut on_disk =
        KeyedStateStore::<String>::external(MAX_PARALLELISM, Box::new(backend.tables().unwrap()));
    let count = count();
    let keys: Vec<String> = [10, 65_530, 65_536, 200_000]
        .iter()
        .flat_map(|&len| ["a", "b"].map(|fill| fill.repeat(len)))
        .collect();
    for (index, key) in keys.iter().enumerate() {
        let scope = &mut TextScope {
            key: key.clone(),
            store: &mut on_disk,
        };
        count.set(scope, index as u64);
    }
    on_disk.check().unwrap();
    let read = |store: &mut KeyedStateStore<String>| -> Vec<Option<u64>> {
        keys.iter()
            .map(|key| {
                count.get(&mut TextScope {
                    key: key.clone(),
                    store,
                })
            })
            .collect()
    };
    let expected: Vec<Option<u64>> = (0..keys.len() as u64).map(Some).collect();
    assert_eq!(read(&mut on_disk), expected);

    let snapshot = on_disk.snapshot().unwrap();
    let mut in_memory = KeyedStateStore::<String>::new(MAX_PARALLELISM);
    in_memory.restore(snapshot.clone());
    assert_eq!(read(&mut in_memory), expected, "fjall -> memory");
    let mut again =
        KeyedStateStore::<String>::external(MAX_PARALLELISM, Box::new(backend.tables().unwrap()));
    again.restore(snapshot);
    assert_eq!(read(&mut again), expected, "fjall -> fjall");

    count.clear(&mut TextScope {
        key: keys[7].clone(),
        store: &mut on_disk,
    });
    assert_eq!(read(&mut on_disk)[7], None, "a long key is cleared");
    assert_eq!(read(&mut on_disk)[6], Some(6));
    on_disk.check().unwrap();
}
