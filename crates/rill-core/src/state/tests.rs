//! Unit tests of the keyed state store: scoping, snapshots, rescaling, both backends.

use super::*;

struct Scope<'a> {
    key: String,
    store: &'a mut KeyedStateStore<String>,
}

impl KeyedStateAccess<String> for Scope<'_> {
    fn key_and_store(&mut self) -> (&String, &mut KeyedStateStore<String>) {
        (&self.key, self.store)
    }
}

#[test]
fn value_state_is_scoped_to_the_key() {
    let mut store = KeyedStateStore::new(128);
    let count = ValueState::<u64>::new("count");
    let mut a = Scope {
        key: "a".into(),
        store: &mut store,
    };
    assert_eq!(count.get(&mut a), None);
    count.set(&mut a, 1);
    count.set(&mut a, 2);
    let mut b = Scope {
        key: "b".into(),
        store: &mut store,
    };
    assert_eq!(count.get(&mut b), None);
    count.set(&mut b, 7);
    let mut a = Scope {
        key: "a".into(),
        store: &mut store,
    };
    assert_eq!(count.get(&mut a), Some(2));
    count.clear(&mut a);
    assert_eq!(count.get(&mut a), None);
}

#[test]
fn map_state_is_sorted_and_scoped() {
    let mut store = KeyedStateStore::new(128);
    let seen = MapState::<u32, String>::new("seen");
    let mut a = Scope {
        key: "a".into(),
        store: &mut store,
    };
    assert!(seen.is_empty(&mut a));
    seen.insert(&mut a, 3, "three".to_owned());
    seen.insert(&mut a, 1, "one".to_owned());
    assert_eq!(
        seen.entries(&mut a),
        vec![(1, "one".to_owned()), (3, "three".to_owned())]
    );
    assert_eq!(seen.remove(&mut a, &1), Some("one".to_owned()));
    let mut b = Scope {
        key: "b".into(),
        store: &mut store,
    };
    assert_eq!(seen.get(&mut b, &3), None);
    let mut a = Scope {
        key: "a".into(),
        store: &mut store,
    };
    assert_eq!(seen.get(&mut a, &3), Some("three".to_owned()));
    seen.clear(&mut a);
    assert!(seen.is_empty(&mut a));
}

#[test]
fn one_name_with_two_types_is_reported() {
    let mut store = KeyedStateStore::new(128);
    let mut scope = Scope {
        key: "a".into(),
        store: &mut store,
    };
    ValueState::<u64>::new("x").set(&mut scope, 1);
    ValueState::<String>::new("x").set(&mut scope, "y".into());
    let error = scope.check_state().unwrap_err();
    assert!(
        matches!(&error, StateError::Mismatch { table, .. } if table == "x"),
        "{error:?}"
    );
    assert!(error.to_string().contains("declared twice"), "{error}");
    assert_eq!(
        ValueState::<u64>::new("x").get(&mut scope),
        None,
        "a failed store reads nothing"
    );
}

fn scope<'s>(store: &'s mut KeyedStateStore<String>, key: &str) -> Scope<'s> {
    Scope {
        key: key.to_owned(),
        store,
    }
}

#[test]
fn a_snapshot_restores_every_table() {
    let count = ValueState::<u64>::new("count");
    let seen = MapState::<u32, String>::new("seen");
    let mut store = KeyedStateStore::new(128);
    for (i, key) in ["a", "b", "c", "a"].into_iter().enumerate() {
        let mut s = scope(&mut store, key);
        let n = count.get(&mut s).unwrap_or(0) + 1;
        count.set(&mut s, n);
        seen.insert(&mut s, i as u32, format!("{key}{i}"));
    }
    let snapshot = store.snapshot().unwrap();
    assert_eq!(
        snapshot.tables.keys().collect::<Vec<_>>(),
        ["count", "seen"]
    );

    let mut restored = KeyedStateStore::new(128);
    restored.restore(snapshot.clone());
    assert_eq!(
        restored.snapshot().unwrap(),
        snapshot,
        "untouched tables stay encoded"
    );
    let mut a = scope(&mut restored, "a");
    assert_eq!(count.get(&mut a), Some(2));
    assert_eq!(
        seen.entries(&mut a),
        vec![(0, "a0".to_owned()), (3, "a3".to_owned())]
    );
    assert_eq!(count.get(&mut scope(&mut restored, "c")), Some(1));
    assert_eq!(
        restored.snapshot().unwrap(),
        snapshot,
        "decoding changes nothing"
    );
}

#[test]
fn handles_find_their_tables_again_after_a_restore() {
    let first = ValueState::<u64>::new("first");
    let second = ValueState::<u64>::new("second");
    let mut store = KeyedStateStore::new(128);
    first.set(&mut scope(&mut store, "k"), 1);
    second.set(&mut scope(&mut store, "k"), 2);
    let snapshot = store.snapshot().unwrap();
    store.restore(snapshot);
    // Touch the tables in the other order: cached slots must not mix them up.
    assert_eq!(second.get(&mut scope(&mut store, "k")), Some(2));
    assert_eq!(first.get(&mut scope(&mut store, "k")), Some(1));
}

#[test]
fn rescaling_splits_and_merges_by_key_group() {
    let count = ValueState::<u64>::new("count");
    let keys: Vec<String> = (0..500).map(|i| format!("key{i}")).collect();
    let mut one = KeyedStateStore::new(128);
    for (i, key) in keys.iter().enumerate() {
        count.set(&mut scope(&mut one, key), i as u64);
    }
    let whole = one.snapshot().unwrap();
    // 1 -> 3: each subtask restores its key-group range and finds exactly its keys.
    let mut three: Vec<KeyedStateStore<String>> =
        (0..3).map(|_| KeyedStateStore::new(128)).collect();
    for (index, store) in three.iter_mut().enumerate() {
        store.restore(whole.select(KeyGroupRange::for_subtask(index as u32, 3, 128)));
    }
    for (i, key) in keys.iter().enumerate() {
        let owner =
            crate::key::subtask_for_key_group(crate::key::key_group_of(key, 128), 3, 128) as usize;
        for (index, store) in three.iter_mut().enumerate() {
            let found = count.get(&mut scope(store, key));
            assert_eq!(
                found,
                (index == owner).then_some(i as u64),
                "{key} in subtask {index}"
            );
        }
    }
    // 3 -> 1: merging the three snapshots gives back the whole.
    let mut merged = KeyedStateSnapshot::default();
    for store in &mut three {
        merged.merge(store.snapshot().unwrap());
    }
    assert_eq!(merged, whole);
}

#[test]
fn restoring_state_of_another_type_names_the_state_and_key_group() {
    let mut store = KeyedStateStore::new(128);
    ValueState::<String>::new("count").set(&mut scope(&mut store, "k"), "many".to_owned());
    let snapshot = store.snapshot().unwrap();
    let group = crate::key::key_group_of(&"k".to_owned(), 128);
    for external in [false, true] {
        let mut restored = if external {
            KeyedStateStore::external(128, Box::new(SortedTables::default()))
        } else {
            KeyedStateStore::new(128)
        };
        restored.restore(snapshot.clone());
        let count = ValueState::<u64>::new("count");
        assert_eq!(count.get(&mut scope(&mut restored, "k")), None);
        let error = restored.check().unwrap_err();
        assert!(
            matches!(&error, StateError::Decode { table, key_group, .. } if table == "count" && *key_group == group),
            "{error:?}"
        );
        assert!(
            error
                .to_string()
                .contains(&format!("state 'count' (key group {group})")),
            "{error}"
        );
        assert_eq!(
            restored.snapshot(),
            Err(error),
            "a failed store has no snapshot"
        );
    }
}

#[test]
fn garbage_in_a_restored_chunk_fails_preloading_with_the_state_and_key_group() {
    let mut snapshot = KeyedStateSnapshot::default();
    snapshot
        .tables
        .entry("count".to_owned())
        .or_default()
        .insert(7, vec![0xff, 0x13, 0x37, 0x00, 0x42]);
    let mut store = KeyedStateStore::<String>::new(16);
    store.restore(snapshot);
    let error = store.preload(&ValueState::<u64>::new("count")).unwrap_err();
    assert!(
        matches!(&error, StateError::Decode { table, key_group: 7, .. } if table == "count"),
        "{error:?}"
    );
    assert_eq!(store.failure(), Some(&error), "recorded");
}

/// External tables in a sorted map: what a disk backend keeps, without the disk.
#[derive(Default)]
struct SortedTables(BTreeMap<(String, u32, Vec<u8>), Vec<u8>>);

impl StateTables for SortedTables {
    fn get(
        &mut self,
        table: &str,
        key_group: u32,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self
            .0
            .get(&(table.to_owned(), key_group, key.to_vec()))
            .cloned())
    }

    fn put(
        &mut self,
        table: &str,
        key_group: u32,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), StateError> {
        self.0
            .insert((table.to_owned(), key_group, key.to_vec()), value.to_vec());
        Ok(())
    }

    fn delete(&mut self, table: &str, key_group: u32, key: &[u8]) -> Result<(), StateError> {
        self.0.remove(&(table.to_owned(), key_group, key.to_vec()));
        Ok(())
    }

    fn freeze(&mut self) -> Result<Box<dyn FrozenTables>, StateError> {
        Ok(Box::new(SortedTables(self.0.clone())))
    }
}

impl FrozenTables for SortedTables {
    fn scan(&mut self, visit: &mut EntryVisitor<'_>) -> Result<(), StateError> {
        for ((table, group, key), value) in &self.0 {
            visit(table, *group, key, value);
        }
        Ok(())
    }
}

/// Writes counts and map entries for 200 keys, deleting some.
fn fill(store: &mut KeyedStateStore<String>) {
    let count = ValueState::<u64>::new("count");
    let seen = MapState::<u32, String>::new("seen");
    for n in 0..200u32 {
        let mut scope = Scope {
            key: format!("key{}", n % 50),
            store,
        };
        let next = count.get(&mut scope).unwrap_or(0) + 1;
        count.set(&mut scope, next);
        seen.insert(&mut scope, n, format!("v{n}"));
        if n % 7 == 0 {
            seen.remove(&mut scope, &n);
        }
    }
    let mut gone = Scope {
        key: "key3".into(),
        store,
    };
    count.clear(&mut gone);
    seen.clear(&mut gone);
}

/// A key, its count and its map entries.
type KeyContents = (String, Option<u64>, Vec<(u32, String)>);

/// What the store holds for every key, read through the handles.
fn contents(store: &mut KeyedStateStore<String>) -> Vec<KeyContents> {
    let count = ValueState::<u64>::new("count");
    let seen = MapState::<u32, String>::new("seen");
    (0..50)
        .map(|k| {
            let mut scope = Scope {
                key: format!("key{k}"),
                store,
            };
            (
                format!("key{k}"),
                count.get(&mut scope),
                seen.entries(&mut scope),
            )
        })
        .collect()
}

#[test]
fn external_tables_hold_the_same_state_and_snapshots_move_between_backends() {
    let mut memory = KeyedStateStore::new(16);
    fill(&mut memory);
    let mut external = KeyedStateStore::external(16, Box::new(SortedTables::default()));
    fill(&mut external);
    let expected = contents(&mut memory);
    assert_eq!(contents(&mut external), expected);
    assert_eq!(expected[3], ("key3".to_owned(), None, Vec::new()));

    let mut from_external = KeyedStateStore::new(16);
    from_external.restore(external.snapshot().unwrap());
    assert_eq!(contents(&mut from_external), expected, "external -> memory");
    let mut to_external = KeyedStateStore::external(16, Box::new(SortedTables::default()));
    to_external.restore(memory.snapshot().unwrap());
    assert_eq!(contents(&mut to_external), expected, "memory -> external");
    let resnapshot = to_external.snapshot().unwrap();
    assert_eq!(
        resnapshot,
        external.snapshot().unwrap(),
        "an external store's snapshot depends on its content only"
    );
}

/// Sums and counts `u64`s; the result is the mean.
struct Mean;

impl AggregateFunction for Mean {
    type In = u64;
    type Acc = (u64, u64);
    type Out = f64;

    fn create_accumulator(&self) -> (u64, u64) {
        (0, 0)
    }

    fn add(&self, value: u64, accumulator: &mut (u64, u64)) {
        accumulator.0 += value;
        accumulator.1 += 1;
    }

    fn result(&self, &(sum, count): &(u64, u64)) -> f64 {
        sum as f64 / count as f64
    }

    fn merge(&self, a: (u64, u64), b: (u64, u64)) -> (u64, u64) {
        (a.0 + b.0, a.1 + b.1)
    }
}

/// The list, reducing and aggregating handles of one operator.
struct Handles {
    list: ListState<u64>,
    max: ReducingState<u64>,
    mean: AggregatingState<Mean>,
}

fn handles() -> Handles {
    Handles {
        list: ListState::new("list"),
        max: ReducingState::new("max", u64::max),
        mean: AggregatingState::new("mean", Mean),
    }
}

/// Adds `value` to every handle, under `key` and, if given, in a namespace.
fn add(store: &mut KeyedStateStore<String>, key: &str, namespace: Option<u32>, value: u64) {
    let h = handles();
    let mut scope = scope(store, key);
    match namespace {
        Some(namespace) => {
            let mut scoped = InNamespace::new(&mut scope, &namespace).unwrap();
            h.list.add(&mut scoped, value);
            h.max.add(&mut scoped, value);
            h.mean.add(&mut scoped, value);
        }
        None => {
            h.list.add(&mut scope, value);
            h.max.add(&mut scope, value);
            h.mean.add(&mut scope, value);
        }
    }
}

/// What the handles hold under `key`, in `namespace`.
fn read_handles(
    store: &mut KeyedStateStore<String>,
    key: &str,
    namespace: u32,
) -> (Vec<u64>, Option<u64>, Option<f64>) {
    let h = handles();
    let mut scope = scope(store, key);
    let mut scoped = InNamespace::new(&mut scope, &namespace).unwrap();
    (
        h.list.get(&mut scoped),
        h.max.get(&mut scoped),
        h.mean.get(&mut scoped),
    )
}

#[test]
fn list_reducing_and_aggregating_state_keep_their_values_per_key() {
    let mut store = KeyedStateStore::new(128);
    for (key, value) in [("a", 3), ("b", 10), ("a", 7), ("a", 2)] {
        add(&mut store, key, None, value);
    }
    let h = handles();
    let mut a = scope(&mut store, "a");
    assert_eq!(h.list.get(&mut a), vec![3, 7, 2]);
    assert_eq!(h.max.get(&mut a), Some(7));
    assert_eq!(h.mean.get(&mut a), Some(4.0));
    h.list.update(&mut a, vec![1]);
    h.list.add_all(&mut a, vec![5, 6]);
    assert_eq!(h.list.get(&mut a), vec![1, 5, 6]);
    h.list.clear(&mut a);
    h.max.clear(&mut a);
    h.mean.clear(&mut a);
    assert_eq!(
        (h.list.get(&mut a), h.max.get(&mut a), h.mean.get(&mut a)),
        (Vec::new(), None, None)
    );
    let mut b = scope(&mut store, "b");
    assert_eq!(h.list.get(&mut b), vec![10]);
    assert_eq!(h.max.get(&mut b), Some(10));
}

/// Adds values for three keys in four namespaces each.
fn fill_namespaces(store: &mut KeyedStateStore<String>) {
    for key in ["a", "b", "c"] {
        for namespace in 0..4u32 {
            for value in 0..=namespace as u64 {
                add(store, key, Some(namespace), value * 10);
            }
        }
    }
}

#[test]
fn namespaces_scope_state_within_a_key_in_both_backends_and_across_them() {
    let mut memory = KeyedStateStore::new(16);
    fill_namespaces(&mut memory);
    let mut external = KeyedStateStore::external(16, Box::new(SortedTables::default()));
    fill_namespaces(&mut external);
    let expected = (vec![0, 10, 20], Some(20), Some(10.0));
    assert_eq!(read_handles(&mut memory, "b", 2), expected);
    assert_eq!(read_handles(&mut external, "b", 2), expected);
    assert_eq!(read_handles(&mut memory, "b", 9), (Vec::new(), None, None));

    // A namespace's state restores into the other backend, at another parallelism.
    let from_memory = memory.snapshot().unwrap();
    let from_external = external.snapshot().unwrap();
    for (snapshot, into_external) in [(from_memory, true), (from_external, false)] {
        let mut parts: Vec<KeyedStateStore<String>> = (0..2)
            .map(|index| {
                let mut store = if into_external {
                    KeyedStateStore::external(16, Box::new(SortedTables::default()))
                } else {
                    KeyedStateStore::new(16)
                };
                store.restore(snapshot.select(KeyGroupRange::for_subtask(index, 2, 16)));
                store
            })
            .collect();
        for key in ["a", "b", "c"] {
            let owner = crate::key::subtask_for_key_group(key_group_of(key, 16), 2, 16);
            let part = &mut parts[owner as usize];
            assert_eq!(read_handles(part, key, 2), expected, "{key}");
            assert_eq!(read_handles(part, key, 0), (vec![0], Some(0), Some(0.0)));
        }
    }
}

#[test]
fn one_state_in_and_out_of_namespaces_is_reported() {
    let mut store = KeyedStateStore::new(128);
    add(&mut store, "a", None, 1);
    add(&mut store, "a", Some(1), 1);
    let error = store.check().unwrap_err();
    assert!(
        error
            .to_string()
            .contains("used both in and out of namespaces"),
        "{error}"
    );
}

#[test]
fn tables_frozen_at_the_barrier_snapshot_as_they_were_then() {
    for external in [false, true] {
        frozen_tables_snapshot_as_they_were(external);
    }
}

fn frozen_tables_snapshot_as_they_were(external: bool) {
    let count = ValueState::<u64>::new("count");
    let mut store = if external {
        KeyedStateStore::external(16, Box::new(SortedTables::default()))
    } else {
        KeyedStateStore::new(16)
    };
    count.set(&mut scope(&mut store, "a"), 1);
    let (mut snapshot, deferred) = store.snapshot_deferred().unwrap();
    let deferred = deferred.expect("tables are encoded later");
    // The operator writes on before the frozen tables are read.
    count.set(&mut scope(&mut store, "a"), 2);
    count.set(&mut scope(&mut store, "b"), 5);
    let copy = deferred.clone();
    deferred.complete(&mut snapshot).unwrap();
    let mut again = KeyedStateSnapshot::default();
    copy.complete(&mut again).unwrap();
    assert_eq!(again, snapshot, "a clone gets the same state, encoded once");

    let mut restored = KeyedStateStore::new(16);
    restored.restore(snapshot);
    assert_eq!(count.get(&mut scope(&mut restored, "a")), Some(1));
    assert_eq!(count.get(&mut scope(&mut restored, "b")), None);
    let mut now = KeyedStateStore::new(16);
    now.restore(store.snapshot().unwrap());
    assert_eq!(count.get(&mut scope(&mut now, "a")), Some(2));
    assert_eq!(count.get(&mut scope(&mut now, "b")), Some(5));
}

/// External tables on a disk that fails: the first `healthy` accesses work (and keep
/// nothing), every later one fails naming the state and key group; `calls` counts them all.
struct FailingDisk {
    healthy: usize,
    calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl FailingDisk {
    fn access(&mut self, table: &str, key_group: u32) -> Result<(), StateError> {
        let call = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if call < self.healthy {
            return Ok(());
        }
        Err(StateError::Backend {
            table: table.to_owned(),
            key_group: Some(key_group),
            reason: "input/output error".to_owned(),
        })
    }
}

impl StateTables for FailingDisk {
    fn get(
        &mut self,
        table: &str,
        key_group: u32,
        _key: &[u8],
    ) -> Result<Option<Vec<u8>>, StateError> {
        self.access(table, key_group).map(|()| None)
    }

    fn put(
        &mut self,
        table: &str,
        key_group: u32,
        _key: &[u8],
        _value: &[u8],
    ) -> Result<(), StateError> {
        self.access(table, key_group)
    }

    fn delete(&mut self, table: &str, key_group: u32, _key: &[u8]) -> Result<(), StateError> {
        self.access(table, key_group)
    }

    fn freeze(&mut self) -> Result<Box<dyn FrozenTables>, StateError> {
        Ok(Box::new(SortedTables::default()))
    }
}

#[test]
fn a_failing_backend_is_recorded_once_and_left_alone_afterwards() {
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let disk = FailingDisk {
        healthy: 2,
        calls: calls.clone(),
    };
    let mut store = KeyedStateStore::external(128, Box::new(disk));
    let count = ValueState::<u64>::new("count");
    count.set(&mut scope(&mut store, "a"), 1);
    assert_eq!(count.get(&mut scope(&mut store, "a")), None);
    assert_eq!(store.failure(), None, "two healthy accesses");
    // The third access fails: an update reads (and fails), so it neither writes nor sees a value.
    let seen = count.update(&mut scope(&mut store, "b"), |value| {
        *value = Some(7);
        value.is_some()
    });
    assert!(seen, "the update ran over no value");
    let group = crate::key::key_group_of(&"b".to_owned(), 128);
    let expected = StateError::Backend {
        table: "count".to_owned(),
        key_group: Some(group),
        reason: "input/output error".to_owned(),
    };
    assert_eq!(store.failure(), Some(&expected));
    assert_eq!(
        expected.to_string(),
        format!(
            "the state backend failed on state 'count' (key group {group}): input/output error"
        )
    );
    // Failed: nothing touches the tables any more, and the first failure stays the cause.
    count.set(&mut scope(&mut store, "c"), 3);
    assert_eq!(count.get(&mut scope(&mut store, "c")), None);
    ListState::<u64>::new("list").add(&mut scope(&mut store, "c"), 1);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert_eq!(scope(&mut store, "c").check_state(), Err(expected.clone()));
    assert_eq!(store.snapshot(), Err(expected));
}

#[test]
fn a_restored_value_read_as_a_huge_length_is_a_decode_error_not_an_allocation() {
    // A number where the job now keeps a string: its encoding reads as a string of 2^60 bytes.
    let mut store = KeyedStateStore::new(128);
    ValueState::<u64>::new("name").set(&mut scope(&mut store, "k"), 1 << 60);
    let snapshot = store.snapshot().unwrap();
    let mut restored = KeyedStateStore::new(128);
    restored.restore(snapshot);
    let name = ValueState::<String>::new("name");
    assert_eq!(name.get(&mut scope(&mut restored, "k")), None);
    assert!(
        matches!(restored.failure(), Some(StateError::Decode { table, .. }) if table == "name"),
        "{:?}",
        restored.failure()
    );
}
