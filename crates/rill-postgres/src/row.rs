//! [`Row`]: the values a record becomes, one per column the sink writes, in order. Any type the
//! `postgres` client can send ([`ToSql`]) is a value: integers, floats, text, bytes, booleans,
//! `Option`s of them for NULL. The [`row!`](crate::row) macro builds one.

use postgres::types::ToSql;

/// A row to write.
#[derive(Default)]
pub struct Row {
    values: Vec<Box<dyn ToSql + Send + Sync>>,
}

impl Row {
    /// A row without values.
    pub fn new() -> Self {
        Row::default()
    }

    /// The row with `value` as its next column's.
    pub fn with(mut self, value: impl ToSql + Send + Sync + 'static) -> Self {
        self.values.push(Box::new(value));
        self
    }

    /// How many values it holds.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Its values, as the client sends them.
    pub(crate) fn values(&self) -> impl Iterator<Item = &(dyn ToSql + Sync)> {
        self.values
            .iter()
            .map(|value| &**value as &(dyn ToSql + Sync))
    }
}

impl std::fmt::Debug for Row {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.values).finish()
    }
}

/// A [`Row`] of the given values: `row![page.clone(), views]`.
#[macro_export]
macro_rules! row {
    ($($value:expr),* $(,)?) => {
        $crate::Row::new()$(.with($value))*
    };
}
