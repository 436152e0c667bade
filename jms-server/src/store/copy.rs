//! `jms-server migrate --from DIR --to postgres://…`: every row of a
//! SQLite store copied into an empty PostgreSQL one in one transaction,
//! then read back from both and compared row for row.
//!
//! Both databases are first brought to the same (the latest) migration;
//! tables are copied parents first (their foreign keys), with their ids,
//! and PostgreSQL's identity columns then continue after the highest one.

use std::collections::BTreeSet;
use std::path::Path;

use super::sql::{args, Cell, Conn, Row, Value};
use super::{PgStore, Result, SqliteStore, StoreError};

/// One table's rows in both databases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    pub table: String,
    pub rows: u64,
}

/// A cell as both databases give it back.
#[derive(Debug, Clone, PartialEq)]
enum Owned {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl Owned {
    fn of(cell: Cell<'_>) -> Owned {
        match cell {
            Cell::Null => Owned::Null,
            Cell::Int(i) => Owned::Int(i),
            Cell::Bool(b) => Owned::Int(i64::from(b)),
            Cell::Real(f) => Owned::Real(f),
            Cell::Text(t) => Owned::Text(t.to_string()),
            Cell::Blob(b) => Owned::Blob(b.to_vec()),
        }
    }

    fn value(&self) -> Value<'_> {
        match self {
            Owned::Null => Value::Null,
            Owned::Int(i) => Value::Int(*i),
            // No column of the schema is REAL.
            Owned::Real(f) => Value::Text(f.to_string().into()),
            Owned::Text(t) => Value::Text(t.as_str().into()),
            Owned::Blob(b) => Value::Blob(b.as_slice().into()),
        }
    }
}

fn rows(conn: &dyn Conn, sql: &str, width: usize) -> Result<Vec<Vec<Owned>>> {
    conn.all(sql, args![], |row: &dyn Row| {
        (0..width).map(|i| Ok(Owned::of(row.cell(i)?))).collect()
    })
}

/// The tables of the SQLite store, parents before children.
fn tables(sqlite: &rusqlite::Connection) -> Result<Vec<(String, Vec<String>)>> {
    let names: Vec<String> = (sqlite as &dyn Conn).all(
        "SELECT name FROM sqlite_master WHERE type = 'table' \
         AND name NOT LIKE 'sqlite_%' AND name <> 'schema_migrations' ORDER BY name",
        args![],
        |row| row.get(0),
    )?;
    let mut tables = Vec::new();
    for name in &names {
        let columns: Vec<String> = (sqlite as &dyn Conn).all(
            &format!("SELECT name FROM pragma_table_info('{name}') ORDER BY cid"),
            args![],
            |row| row.get(0),
        )?;
        let parents: BTreeSet<String> = (sqlite as &dyn Conn)
            .all(
                &format!("SELECT \"table\" FROM pragma_foreign_key_list('{name}')"),
                args![],
                |row| row.get::<String>(0),
            )?
            .into_iter()
            .filter(|parent| parent != name)
            .collect();
        tables.push((name.clone(), columns, parents));
    }
    let mut ordered: Vec<(String, Vec<String>)> = Vec::new();
    while !tables.is_empty() {
        let before = tables.len();
        tables.retain(|(name, columns, parents)| {
            let ready = parents.iter().all(|p| ordered.iter().any(|(o, _)| o == p));
            if ready {
                ordered.push((name.clone(), columns.clone()));
            }
            !ready
        });
        if tables.len() == before {
            return Err(StoreError::Corrupt {
                table: "sqlite_master",
                message: "foreign keys in a circle".into(),
            });
        }
    }
    Ok(ordered)
}

/// Copies the SQLite store at `from` (a `jms.db`) into the empty
/// PostgreSQL database at `to`, then compares every row; returns each
/// table's row count. Refused when the PostgreSQL store holds data.
pub fn sqlite_to_postgres(from: &Path, to: &str) -> Result<Vec<Copied>> {
    if !from.is_file() {
        return Err(StoreError::Io {
            path: from.display().to_string(),
            message: "no SQLite database here".into(),
        });
    }
    // Both at the latest migration.
    drop(SqliteStore::open(from)?);
    let pg = PgStore::open(to)?;
    let sqlite = rusqlite::Connection::open(from)?;
    sqlite.execute_batch("BEGIN")?;
    let source: &dyn Conn = &sqlite;
    let tables = tables(&sqlite)?;
    pg.with_conn(|target| {
        target.batch("BEGIN ISOLATION LEVEL SERIALIZABLE")?;
        target.exec(
            "SELECT pg_advisory_xact_lock(?1)",
            args![super::postgres::WRITE_LOCK],
        )?;
        let result = (|| {
            // Empty but for what the migrations write themselves.
            for (table, _) in &tables {
                let n: i64 = target.value(&format!("SELECT COUNT(*) FROM {table}"), args![])?;
                let seeded = matches!(table.as_str(), "policy_state" | "unix_ids");
                if n > 0 && !seeded {
                    return Err(StoreError::Io {
                        path: "the PostgreSQL database".into(),
                        message: format!("table {table} is not empty: migrate into a new database"),
                    });
                }
            }
            target.batch("DELETE FROM policy_state; DELETE FROM unix_ids")?;
            let mut copied = Vec::new();
            for (table, columns) in &tables {
                let list = columns.join(", ");
                let marks: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
                let insert = format!("INSERT INTO {table} ({list}) VALUES ({})", marks.join(", "));
                let all = rows(
                    source,
                    &format!("SELECT {list} FROM {table}"),
                    columns.len(),
                )?;
                for row in &all {
                    let values: Vec<Value<'_>> = row.iter().map(Owned::value).collect();
                    target.exec(&insert, &values)?;
                }
                // Identity columns continue after the copied ids (text
                // ids, as sessions', have no sequence).
                let sequence: Option<String> = if columns.iter().any(|c| c == "id") {
                    target.value(
                        &format!("SELECT pg_get_serial_sequence('{table}', 'id')"),
                        args![],
                    )?
                } else {
                    None
                };
                if let Some(sequence) = sequence {
                    target.exec(
                        &format!(
                            "SELECT setval(CAST(?1 AS TEXT)::regclass, \
                             (SELECT COALESCE(MAX(id), 0) + 1 FROM {table}), false)"
                        ),
                        args![sequence],
                    )?;
                }
                copied.push(Copied {
                    table: table.clone(),
                    rows: all.len() as u64,
                });
            }
            // Row for row, in the same order on both sides.
            for (table, columns) in &tables {
                let list = columns.join(", ");
                let order: Vec<String> = (1..=columns.len()).map(|i| i.to_string()).collect();
                let sql = format!("SELECT {list} FROM {table} ORDER BY {}", order.join(", "));
                let (mut a, mut b) = (
                    rows(source, &sql, columns.len())?,
                    rows(target, &sql, columns.len())?,
                );
                // Text sorts by byte in SQLite, by collation in PostgreSQL.
                let key = |r: &Vec<Owned>| format!("{r:?}");
                a.sort_by_key(key);
                b.sort_by_key(key);
                if a != b {
                    return Err(StoreError::Corrupt {
                        table: "migrate",
                        message: format!("table {table}: the copy differs from the source"),
                    });
                }
            }
            Ok(copied)
        })();
        match result {
            Ok(copied) => {
                target.batch("COMMIT")?;
                Ok(copied)
            }
            Err(e) => {
                let _ = target.batch("ROLLBACK");
                Err(e)
            }
        }
    })
}
