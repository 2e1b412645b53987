//! The seam between the store's queries and the engine that runs them.
//!
//! Every query in the store is written once, in the SQL that SQLite and
//! PostgreSQL share, against [`Sql`]: a connection (or a transaction) that
//! executes a statement with positional parameters (`?1`, `?2`, ...) and
//! returns rows of plain values. Each engine implements [`Sql`] in its own
//! module; the few places where the dialects differ ask [`Sql::engine`].
//!
//! The surface mirrors the parts of rusqlite the store used before it had a
//! second engine (`prepare_cached`, `query_row`, `query_map`, `optional`),
//! so the queries read as they did.

use std::fmt;

use super::{StoreError, StoreResult};

/// Which database runs the queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Embedded SQLite, one controller.
    Sqlite,
    /// PostgreSQL, several controllers.
    Postgres,
}

impl Engine {
    /// The column type of bytes, for a `CAST` (SQLite would read `BYTEA`
    /// as a number).
    pub fn bytes_type(self) -> &'static str {
        match self {
            Self::Sqlite => "BLOB",
            Self::Postgres => "BYTEA",
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        })
    }
}

/// A parameter of a statement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// SQL NULL.
    Null,
    /// A 64-bit integer (booleans are 0 and 1).
    Int(i64),
    /// A double.
    Real(f64),
    /// Text.
    Text(&'a str),
    /// Bytes.
    Blob(&'a [u8]),
}

/// A value read from a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Datum {
    /// SQL NULL.
    Null,
    /// An integer of any width.
    Int(i64),
    /// A double.
    Real(f64),
    /// Text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

impl Datum {
    /// The value, to bind it again (a row copied from one store to another).
    pub fn as_value(&self) -> Value<'_> {
        match self {
            Self::Null => Value::Null,
            Self::Int(v) => Value::Int(*v),
            Self::Real(v) => Value::Real(*v),
            Self::Text(v) => Value::Text(v),
            Self::Blob(v) => Value::Blob(v),
        }
    }
}

/// Something that can be bound as a parameter.
pub trait ToValue {
    /// The parameter.
    fn to_value(&self) -> Value<'_>;
}

macro_rules! int_to_value {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn to_value(&self) -> Value<'_> {
                Value::Int(i64::from(*self))
            }
        }
    )*};
}
int_to_value!(i64, i32, u32, i16, u16, u8, i8, bool);

impl ToValue for u64 {
    fn to_value(&self) -> Value<'_> {
        Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}

impl ToValue for usize {
    fn to_value(&self) -> Value<'_> {
        Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}

impl ToValue for f64 {
    fn to_value(&self) -> Value<'_> {
        Value::Real(*self)
    }
}

impl ToValue for str {
    fn to_value(&self) -> Value<'_> {
        Value::Text(self)
    }
}

impl ToValue for String {
    fn to_value(&self) -> Value<'_> {
        Value::Text(self)
    }
}

impl ToValue for [u8] {
    fn to_value(&self) -> Value<'_> {
        Value::Blob(self)
    }
}

impl ToValue for Vec<u8> {
    fn to_value(&self) -> Value<'_> {
        Value::Blob(self)
    }
}

impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value<'_> {
        self.as_ref().map_or(Value::Null, ToValue::to_value)
    }
}

impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value<'_> {
        (**self).to_value()
    }
}

impl ToValue for Value<'_> {
    fn to_value(&self) -> Value<'_> {
        *self
    }
}

/// The parameters of one statement.
pub trait Params {
    /// Them, in order: `values()[0]` binds `?1`.
    fn values(&self) -> Vec<Value<'_>>;
}

impl Params for () {
    fn values(&self) -> Vec<Value<'_>> {
        Vec::new()
    }
}

impl<T: ToValue, const N: usize> Params for [T; N] {
    fn values(&self) -> Vec<Value<'_>> {
        self.iter().map(ToValue::to_value).collect()
    }
}

impl<T: ToValue> Params for [T] {
    fn values(&self) -> Vec<Value<'_>> {
        self.iter().map(ToValue::to_value).collect()
    }
}

impl<T: ToValue> Params for Vec<T> {
    fn values(&self) -> Vec<Value<'_>> {
        self.iter().map(ToValue::to_value).collect()
    }
}

impl<P: Params + ?Sized> Params for &P {
    fn values(&self) -> Vec<Value<'_>> {
        (**self).values()
    }
}

/// The parameters of a statement, of mixed types: `params![id, now, 1]`.
#[macro_export]
macro_rules! params {
    () => { () };
    ($($x:expr),+ $(,)?) => {
        [$(&($x) as &dyn $crate::store::sql::ToValue),+]
    };
}
pub use crate::params;

/// A value that can be read from a column.
pub trait FromDatum: Sized {
    /// Converts; `column` names the column in the error.
    fn from_datum(datum: &Datum, column: usize) -> StoreResult<Self>;
}

fn mismatch(datum: &Datum, column: usize, wanted: &str) -> StoreError {
    StoreError::Corrupt(format!("column {column}: wanted {wanted}, found {datum:?}"))
}

impl FromDatum for i64 {
    fn from_datum(datum: &Datum, column: usize) -> StoreResult<Self> {
        match datum {
            Datum::Int(v) => Ok(*v),
            other => Err(mismatch(other, column, "an integer")),
        }
    }
}

macro_rules! narrow_from_datum {
    ($($t:ty),*) => {$(
        impl FromDatum for $t {
            fn from_datum(datum: &Datum, column: usize) -> StoreResult<Self> {
                let wide = i64::from_datum(datum, column)?;
                <$t>::try_from(wide).map_err(|_| mismatch(datum, column, stringify!($t)))
            }
        }
    )*};
}
narrow_from_datum!(i32, u32, u64, usize, i16, u16, u8);

impl FromDatum for bool {
    fn from_datum(datum: &Datum, column: usize) -> StoreResult<Self> {
        Ok(i64::from_datum(datum, column)? != 0)
    }
}

impl FromDatum for f64 {
    fn from_datum(datum: &Datum, column: usize) -> StoreResult<Self> {
        match datum {
            Datum::Real(v) => Ok(*v),
            Datum::Int(v) => Ok(*v as f64),
            other => Err(mismatch(other, column, "a number")),
        }
    }
}

impl FromDatum for String {
    fn from_datum(datum: &Datum, column: usize) -> StoreResult<Self> {
        match datum {
            Datum::Text(v) => Ok(v.clone()),
            other => Err(mismatch(other, column, "text")),
        }
    }
}

impl FromDatum for Vec<u8> {
    fn from_datum(datum: &Datum, column: usize) -> StoreResult<Self> {
        match datum {
            Datum::Blob(v) => Ok(v.clone()),
            other => Err(mismatch(other, column, "bytes")),
        }
    }
}

impl<T: FromDatum> FromDatum for Option<T> {
    fn from_datum(datum: &Datum, column: usize) -> StoreResult<Self> {
        match datum {
            Datum::Null => Ok(None),
            other => T::from_datum(other, column).map(Some),
        }
    }
}

/// A column's position (a trait of one implementation, so that a literal
/// `0` is taken as a `usize`).
pub trait RowIndex {
    /// The position, from 0.
    fn index(self) -> usize;
}

impl RowIndex for usize {
    fn index(self) -> usize {
        self
    }
}

/// One row of a result.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    values: &'a [Datum],
}

impl Row<'_> {
    /// Column `index` (from 0) as a `T`. The first type parameter is there
    /// so that calls read as rusqlite's: `row.get::<_, i64>(0)`.
    pub fn get<I: RowIndex, T: FromDatum>(&self, index: I) -> StoreResult<T> {
        let index = index.index();
        let datum = self
            .values
            .get(index)
            .ok_or_else(|| StoreError::Corrupt(format!("no column {index} in a row of {}", self.values.len())))?;
        T::from_datum(datum, index)
    }
}

/// A connection or transaction of either engine.
pub trait Sql {
    /// The engine, for the few queries whose dialects differ.
    fn engine(&self) -> Engine;
    /// Runs one statement; the number of rows it changed.
    fn execute_values(&self, sql: &str, params: &[Value<'_>]) -> StoreResult<usize>;
    /// Runs one query; its rows.
    fn query_values(&self, sql: &str, params: &[Value<'_>]) -> StoreResult<Vec<Vec<Datum>>>;
    /// Runs statements without parameters, separated by `;`.
    fn execute_batch(&self, sql: &str) -> StoreResult<()>;
}

impl<'c> dyn Sql + 'c {
    /// A statement to run (engines cache what they prepare).
    pub fn prepare_cached<'s>(&'s self, sql: &str) -> StoreResult<Statement<'s, 'c>> {
        Ok(Statement {
            conn: self,
            sql: sql.to_owned(),
        })
    }

    /// Same as [`prepare_cached`](Self::prepare_cached).
    pub fn prepare<'s>(&'s self, sql: &str) -> StoreResult<Statement<'s, 'c>> {
        self.prepare_cached(sql)
    }

    /// Runs one statement; the number of rows it changed.
    pub fn execute(&self, sql: &str, params: impl Params) -> StoreResult<usize> {
        self.execute_values(sql, &params.values())
    }

    /// The first row of a query, mapped; [`StoreError::NoRows`] if none.
    pub fn query_row<T>(
        &self,
        sql: &str,
        params: impl Params,
        f: impl FnOnce(&Row<'_>) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let rows = self.query_values(sql, &params.values())?;
        let first = rows.first().ok_or(StoreError::NoRows)?;
        f(&Row { values: first })
    }
}

/// A statement bound to a connection.
pub struct Statement<'s, 'c> {
    conn: &'s (dyn Sql + 'c),
    sql: String,
}

impl Statement<'_, '_> {
    /// Runs it; the number of rows it changed.
    pub fn execute(&mut self, params: impl Params) -> StoreResult<usize> {
        self.conn.execute_values(&self.sql, &params.values())
    }

    /// Its first row, mapped; [`StoreError::NoRows`] if none.
    pub fn query_row<T>(&mut self, params: impl Params, f: impl FnOnce(&Row<'_>) -> StoreResult<T>) -> StoreResult<T> {
        self.conn.query_row(&self.sql, params, f)
    }

    /// Every row, mapped.
    pub fn query_map<T>(
        &mut self,
        params: impl Params,
        mut f: impl FnMut(&Row<'_>) -> StoreResult<T>,
    ) -> StoreResult<std::vec::IntoIter<StoreResult<T>>> {
        let rows = self.conn.query_values(&self.sql, &params.values())?;
        let mapped: Vec<StoreResult<T>> = rows.iter().map(|values| f(&Row { values })).collect();
        Ok(mapped.into_iter())
    }
}

/// `.optional()` on a single-row answer: no row is `None`, not an error.
pub trait OptionalExtension<T> {
    /// The row if there was one.
    fn optional(self) -> StoreResult<Option<T>>;
}

impl<T> OptionalExtension<T> for StoreResult<T> {
    fn optional(self) -> StoreResult<Option<T>> {
        match self {
            Ok(value) => Ok(Some(value)),
            Err(StoreError::NoRows) => Ok(None),
            Err(error) => Err(error),
        }
    }
}

/// `count` numbered placeholders from `?first`, for an `IN (...)` list:
/// `placeholders(5, 3)` is `?5, ?6, ?7`.
pub fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("?{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `CAST(?first AS types[0]), CAST(?first+1 AS types[1]), ...`: numbered
/// placeholders with their types, for a VALUES row (PostgreSQL cannot tell
/// a VALUES column's type from its use).
pub fn typed_placeholders(first: usize, types: &[&str]) -> String {
    types
        .iter()
        .enumerate()
        .map(|(i, kind)| format!("CAST(?{} AS {kind})", first + i))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Most rows of a list one statement takes (see [`pieces`]).
pub const ROWS_PER_STATEMENT: usize = 64;

/// One statement's share of a list: its `rows`, written for `shape` rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// Indexes into the list.
    pub rows: std::ops::Range<usize>,
    /// Rows the statement is written for: `rows.len()` rounded up to a
    /// power of two.
    pub shape: usize,
}

impl Piece {
    /// The list's indexes for the statement's `shape` rows: `rows`, then
    /// the last of them repeated.
    pub fn indexes(&self) -> impl Iterator<Item = usize> + use<> {
        let last = self.rows.end - 1;
        self.rows
            .clone()
            .chain(std::iter::repeat_n(last, self.shape - self.rows.len()))
    }
}

/// How to cut a list of `count` rows into statements of at most `most`
/// rows each (`most` a power of two). Each statement is written for a
/// power of two of rows and padded with repeats of its last (a repeat in an
/// `IN` list, an `UPDATE ... FROM (VALUES ...)` or an `INSERT ... ON
/// CONFLICT DO NOTHING` changes nothing), so a statement cache keyed on the
/// text holds a few shapes whatever the counts, and a report of 50 rows is
/// one statement.
pub fn pieces(count: usize, most: usize) -> impl Iterator<Item = Piece> {
    debug_assert!(most.is_power_of_two());
    (0..count).step_by(most.max(1)).map(move |start| {
        let rows = start..(start + most).min(count);
        let shape = rows.len().next_power_of_two();
        Piece { rows, shape }
    })
}

/// Rewrites `?N` placeholders as PostgreSQL's `$N`, leaving quoted text and
/// identifiers alone.
pub fn dollar_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quote: Option<char> = None;
    for c in sql.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == '?' => {
                out.push('$');
                continue;
            }
            None => {}
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_placeholders_number_and_cast_each_column() {
        assert_eq!(
            typed_placeholders(4, &["TEXT", "BIGINT"]),
            "CAST(?4 AS TEXT), CAST(?5 AS BIGINT)"
        );
        assert_eq!(placeholders(5, 3), "?5, ?6, ?7");
    }

    #[test]
    fn placeholders_become_dollars_outside_quotes() {
        assert_eq!(
            dollar_placeholders("SELECT a FROM t WHERE b = ?1 AND c = '?2' AND \"d?\" = ?12"),
            "SELECT a FROM t WHERE b = $1 AND c = '?2' AND \"d?\" = $12"
        );
    }

    #[test]
    fn pieces_are_full_statements_then_one_padded_to_a_power_of_two() {
        let cut = |count, most| pieces(count, most).map(|p| (p.rows.len(), p.shape)).collect::<Vec<_>>();
        assert_eq!(cut(50, 64), vec![(50, 64)]);
        assert_eq!(cut(64, 64), vec![(64, 64)]);
        assert_eq!(cut(130, 64), vec![(64, 64), (64, 64), (2, 2)]);
        assert_eq!(cut(3, 64), vec![(3, 4)]);
        assert!(cut(0, 64).is_empty());
        for count in 0..300 {
            let all: Vec<usize> = pieces(count, 32).flat_map(|p| p.rows).collect();
            assert_eq!(all, (0..count).collect::<Vec<_>>(), "{count}: every row once, in order");
            assert!(pieces(count, 32).all(|p| p.shape >= p.rows.len() && p.shape.is_power_of_two() && p.shape <= 32));
        }
    }

    #[test]
    fn a_piece_pads_with_its_last_row() {
        let piece = Piece { rows: 64..67, shape: 4 };
        assert_eq!(piece.indexes().collect::<Vec<_>>(), vec![64, 65, 66, 66]);
    }

    #[test]
    fn placeholders_number_from_the_first() {
        assert_eq!(placeholders(5, 3), "?5, ?6, ?7");
        assert_eq!(placeholders(1, 0), "");
    }

    #[test]
    fn params_of_mixed_types_bind_in_order() {
        let name = String::from("x");
        let bytes = vec![1u8, 2];
        let p = params![name, 7i64, true, None::<i64>, bytes, "lit"];
        assert_eq!(
            p.values(),
            vec![
                Value::Text("x"),
                Value::Int(7),
                Value::Int(1),
                Value::Null,
                Value::Blob(&[1, 2]),
                Value::Text("lit")
            ]
        );
    }

    #[test]
    fn a_column_of_the_wrong_type_names_the_column() {
        let row = Row {
            values: &[Datum::Int(1), Datum::Text("a".into())],
        };
        assert_eq!(row.get::<_, i64>(0).unwrap(), 1);
        let error = row.get::<_, i64>(1).unwrap_err().to_string();
        assert!(error.contains("column 1"), "{error}");
        assert!(row.get::<_, u32>(0).is_ok());
        assert_eq!(row.get::<_, Option<String>>(1).unwrap(), Some("a".into()));
    }
}
