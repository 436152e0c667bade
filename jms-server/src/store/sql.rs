//! The one SQL layer both backends run: values, rows and a connection
//! trait that SQLite ([`super::sqlite`]) and PostgreSQL
//! ([`super::postgres`]) implement, so that every statement and every
//! projection is written once ([`super::tx`]).
//!
//! Statements are written in the SQLite spelling (`?1` parameters, `LIKE`
//! case-insensitive); [`pg_sql`] turns them into PostgreSQL's (`$1`,
//! `ILIKE`, `LEAST`/`GREATEST` for the two-argument `MIN`/`MAX`). Column
//! types mirror each other (SQLite `INTEGER` is PostgreSQL `BIGINT`, `BLOB`
//! is `BYTEA`, times are RFC 3339 text in both), and a [`Value`] adapts to
//! the parameter type PostgreSQL infers, so a Rust `bool` binds to an
//! integer flag column in both.

use std::borrow::Cow;

use super::{Result, StoreError};

/// Which SQL a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A statement parameter.
#[derive(Debug, Clone)]
pub enum Value<'a> {
    Null,
    Int(i64),
    Bool(bool),
    Text(Cow<'a, str>),
    Blob(Cow<'a, [u8]>),
}

/// Something that binds as a [`Value`].
pub trait Arg {
    fn value(&self) -> Value<'_>;
}

macro_rules! int_arg {
    ($($t:ty),*) => {$(
        impl Arg for $t {
            fn value(&self) -> Value<'_> {
                Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
            }
        }
    )*};
}
int_arg!(i64, i32, u32, u64, usize, u8);

impl Arg for bool {
    fn value(&self) -> Value<'_> {
        Value::Bool(*self)
    }
}
impl Arg for str {
    fn value(&self) -> Value<'_> {
        Value::Text(Cow::Borrowed(self))
    }
}
impl Arg for String {
    fn value(&self) -> Value<'_> {
        Value::Text(Cow::Borrowed(self))
    }
}
impl Arg for Cow<'_, str> {
    fn value(&self) -> Value<'_> {
        Value::Text(Cow::Borrowed(self))
    }
}
impl Arg for [u8] {
    fn value(&self) -> Value<'_> {
        Value::Blob(Cow::Borrowed(self))
    }
}
impl Arg for Vec<u8> {
    fn value(&self) -> Value<'_> {
        Value::Blob(Cow::Borrowed(self))
    }
}
impl<T: Arg + ?Sized> Arg for &T {
    fn value(&self) -> Value<'_> {
        (**self).value()
    }
}
impl<T: Arg> Arg for Option<T> {
    fn value(&self) -> Value<'_> {
        match self {
            Some(v) => v.value(),
            None => Value::Null,
        }
    }
}
impl Arg for Value<'_> {
    fn value(&self) -> Value<'_> {
        match self {
            Value::Null => Value::Null,
            Value::Int(i) => Value::Int(*i),
            Value::Bool(b) => Value::Bool(*b),
            Value::Text(t) => Value::Text(Cow::Borrowed(t)),
            Value::Blob(b) => Value::Blob(Cow::Borrowed(b)),
        }
    }
}

impl Value<'_> {
    /// An owned copy.
    pub fn owned(&self) -> Value<'static> {
        match self {
            Value::Null => Value::Null,
            Value::Int(i) => Value::Int(*i),
            Value::Bool(b) => Value::Bool(*b),
            Value::Text(t) => Value::Text(Cow::Owned(t.to_string())),
            Value::Blob(b) => Value::Blob(Cow::Owned(b.to_vec())),
        }
    }
}

/// Statement parameters: `args![a, b, c]`.
macro_rules! args {
    () => { &[] as &[$crate::store::sql::Value<'_>] };
    ($($x:expr),+ $(,)?) => {
        &[$($crate::store::sql::Arg::value(&$x)),+] as &[$crate::store::sql::Value<'_>]
    };
}
pub(crate) use args;

/// One column of a result row, as either backend gives it.
#[derive(Debug, Clone, Copy)]
pub enum Cell<'r> {
    Null,
    Int(i64),
    Real(f64),
    Bool(bool),
    Text(&'r str),
    Blob(&'r [u8]),
}

/// A result row.
pub trait Row {
    fn cell(&self, column: usize) -> Result<Cell<'_>>;
}

impl dyn Row + '_ {
    /// Column `column` as a `T`.
    pub fn get<T: Column>(&self, column: usize) -> Result<T> {
        T::from_cell(self.cell(column)?).map_err(|message| bad(column, message))
    }
}

/// A corrupt column.
pub fn bad(column: usize, message: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        table: "row",
        message: format!("column {column}: {message}"),
    }
}

/// A Rust type a column converts to.
pub trait Column: Sized {
    fn from_cell(cell: Cell<'_>) -> std::result::Result<Self, String>;
}

fn int(cell: Cell<'_>) -> std::result::Result<i64, String> {
    match cell {
        Cell::Int(i) => Ok(i),
        Cell::Bool(b) => Ok(i64::from(b)),
        other => Err(format!("expected an integer, got {other:?}")),
    }
}

impl Column for i64 {
    fn from_cell(cell: Cell<'_>) -> std::result::Result<Self, String> {
        int(cell)
    }
}
macro_rules! int_column {
    ($($t:ty),*) => {$(
        impl Column for $t {
            fn from_cell(cell: Cell<'_>) -> std::result::Result<Self, String> {
                let i = int(cell)?;
                <$t>::try_from(i).map_err(|_| format!("{i} out of range"))
            }
        }
    )*};
}
int_column!(i32, u32, u64, u8);

impl Column for bool {
    fn from_cell(cell: Cell<'_>) -> std::result::Result<Self, String> {
        match cell {
            Cell::Bool(b) => Ok(b),
            Cell::Int(i) => Ok(i != 0),
            other => Err(format!("expected a boolean, got {other:?}")),
        }
    }
}
impl Column for String {
    fn from_cell(cell: Cell<'_>) -> std::result::Result<Self, String> {
        match cell {
            Cell::Text(t) => Ok(t.to_string()),
            other => Err(format!("expected text, got {other:?}")),
        }
    }
}
impl Column for Vec<u8> {
    fn from_cell(cell: Cell<'_>) -> std::result::Result<Self, String> {
        match cell {
            Cell::Blob(b) => Ok(b.to_vec()),
            other => Err(format!("expected bytes, got {other:?}")),
        }
    }
}
impl<T: Column> Column for Option<T> {
    fn from_cell(cell: Cell<'_>) -> std::result::Result<Self, String> {
        match cell {
            Cell::Null => Ok(None),
            other => T::from_cell(other).map(Some),
        }
    }
}

/// A connection inside a transaction.
pub trait Conn {
    fn dialect(&self) -> Dialect;
    /// Runs one statement; returns how many rows it changed.
    fn exec(&self, sql: &str, args: &[Value<'_>]) -> Result<u64>;
    /// Runs a query and hands each row to `each`.
    fn query(
        &self,
        sql: &str,
        args: &[Value<'_>],
        each: &mut dyn FnMut(&dyn Row) -> Result<()>,
    ) -> Result<()>;
    /// Runs statements without parameters (`;`-separated).
    fn batch(&self, sql: &str) -> Result<()>;
}

impl dyn Conn + '_ {
    /// Every row, mapped.
    pub fn all<T>(
        &self,
        sql: &str,
        args: &[Value<'_>],
        mut map: impl FnMut(&dyn Row) -> Result<T>,
    ) -> Result<Vec<T>> {
        let mut rows = Vec::new();
        self.query(sql, args, &mut |row| {
            rows.push(map(row)?);
            Ok(())
        })?;
        Ok(rows)
    }

    /// The first row, mapped, if any.
    pub fn one<T>(
        &self,
        sql: &str,
        args: &[Value<'_>],
        map: impl FnOnce(&dyn Row) -> Result<T>,
    ) -> Result<Option<T>> {
        let mut map = Some(map);
        let mut found = None;
        self.query(sql, args, &mut |row| {
            if let Some(map) = map.take() {
                found = Some(map(row)?);
            }
            Ok(())
        })?;
        Ok(found)
    }

    /// The first column of the one row a query returns.
    pub fn value<T: Column>(&self, sql: &str, args: &[Value<'_>]) -> Result<T> {
        self.one(sql, args, |row| row.get(0))?
            .ok_or_else(|| bad(0, format!("no row from `{sql}`")))
    }
}

/// A statement in SQLite's spelling as PostgreSQL's: `?N` parameters
/// become `$N`, `LIKE` becomes `ILIKE` (SQLite's LIKE ignores case), the
/// two-argument scalar `MIN(a, b)`/`MAX(a, b)` on a row's own columns
/// become `LEAST`/`GREATEST`. Quoted text is left as is.
pub fn pg_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut chars = sql.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
            out.push(c);
        } else if !quoted && c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out.replace(" LIKE ", " ILIKE ")
        .replace("MIN(sessions.", "LEAST(sessions.")
        .replace("MAX(sessions.", "GREATEST(sessions.")
}

/// A migration's DDL in SQLite's spelling as PostgreSQL's: row ids are
/// identity columns, integers are `BIGINT`, blobs `BYTEA`.
pub fn pg_ddl(sql: &str) -> String {
    sql.replace(
        "INTEGER PRIMARY KEY",
        "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
    )
    .replace(" INTEGER", " BIGINT")
    .replace(" BLOB", " BYTEA")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_translate_to_postgres() {
        assert_eq!(
            pg_sql("SELECT a FROM t WHERE b LIKE ?1 ESCAPE '\\' AND c = '?2' AND d = ?12"),
            "SELECT a FROM t WHERE b ILIKE $1 ESCAPE '\\' AND c = '?2' AND d = $12"
        );
        assert_eq!(
            pg_ddl("id INTEGER PRIMARY KEY, n INTEGER NOT NULL, b BLOB"),
            "id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, n BIGINT NOT NULL, b BYTEA"
        );
    }
}
