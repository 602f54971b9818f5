//! rill-testing on Rill's own operators: the built-ins under the ready-made properties, and the
//! broken operators the properties must catch.

mod builtins;
mod catches;
mod support;
