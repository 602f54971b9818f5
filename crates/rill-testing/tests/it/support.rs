//! What the tests share: the generated events' key, the state store, and the events split
//! into the two inputs of a join.

use rill_core::state::KeyedStateStore;
use rill_core::two_input::Either;
use rill_testing::Input;
use rill_testing::properties::MAX_PARALLELISM;
use rill_testing::strategies::KeyedEvent;

pub fn key_of(event: &KeyedEvent) -> u32 {
    event.key
}

/// An in-memory keyed state store over the properties' key groups.
pub fn store() -> KeyedStateStore<u32> {
    KeyedStateStore::new(MAX_PARALLELISM)
}

/// The generated events as the two inputs of a join: even values first, odd values second.
pub fn two_inputs(inputs: Vec<Input<KeyedEvent>>) -> Vec<Input<Either<KeyedEvent, KeyedEvent>>> {
    inputs
        .into_iter()
        .map(|input| match input {
            Input::Record(event, at) if event.value.is_multiple_of(2) => {
                Input::Record(Either::Left(event), at)
            }
            Input::Record(event, at) => Input::Record(Either::Right(event), at),
            Input::Watermark(at) => Input::Watermark(at),
            Input::ProcessingTime(at) => Input::ProcessingTime(at),
        })
        .collect()
}

/// The key of a join's record, from either input.
pub fn either_key(input: &Either<KeyedEvent, KeyedEvent>) -> u32 {
    match input {
        Either::Left(event) | Either::Right(event) => event.key,
    }
}
