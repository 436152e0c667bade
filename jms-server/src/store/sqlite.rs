//! The SQLite backend: one file `jms.db` in the data directory, WAL mode,
//! one writer connection (writes are serialised) and a small pool of reader
//! connections (readers never wait for the writer).

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ToSql};

use super::sql::{Cell, Conn, Dialect, Row, Value};
use super::tx::Tx;
use super::{migrations, ReadTx, Result, Storage, StoreError, WriteTx};

/// Readers kept open between requests.
const POOL_SIZE: usize = 8;

/// How often the checkpointer copies the WAL into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// WAL pages past which the writer checkpoints on commit itself (the
/// checkpointer fell behind); SQLite's default is 1000.
const WRITER_CHECKPOINT_PAGES: i64 = 16_000;

/// The SQLite store.
pub struct SqliteStore {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    /// Dropped with the store, last: the checkpointer stops and its
    /// connection is closed before the drop returns.
    _checkpointer: Option<Checkpointer>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies the
    /// migrations it lacks.
    ///
    /// WAL checkpoints run on a thread of their own ([`checkpointer`]), off
    /// the commits: a commit (an event upload, a policy apply) only
    /// appends to the WAL and syncs it.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        let conn = connect(path)?;
        migrations::apply(&conn)?;
        conn.pragma_update(None, "wal_autocheckpoint", WRITER_CHECKPOINT_PAGES)?;
        Ok(SqliteStore {
            path: path.to_path_buf(),
            writer: Mutex::new(conn),
            readers: Mutex::new(Vec::new()),
            _checkpointer: checkpointer(path),
        })
    }

    fn reader(&self) -> Result<Connection> {
        let pooled = lock(&self.readers).pop();
        match pooled {
            Some(conn) => Ok(conn),
            None => connect(&self.path),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic inside a transaction rolled it back (Tx's Drop): the
    // connection is still usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The checkpointer thread; dropping it stops the thread and waits for it
/// (so that a dropped store has closed every connection, and SQLite has
/// removed the WAL, by the time the drop returns).
struct Checkpointer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A thread that checkpoints the WAL every [`CHECKPOINT_EVERY`] (PASSIVE:
/// it never waits for or blocks a reader or the writer) until the
/// returned [`Checkpointer`] is dropped. `None` (logged) when it cannot
/// start: the writer then checkpoints on commit past
/// [`WRITER_CHECKPOINT_PAGES`].
fn checkpointer(path: &Path) -> Option<Checkpointer> {
    let conn = match connect(path) {
        Ok(conn) => conn,
        Err(e) => {
            tracing::warn!(error = %e, "no WAL checkpointer: commits checkpoint");
            return None;
        }
    };
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("jms-checkpoint".into())
        .spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(CHECKPOINT_EVERY)
            {
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(error = %e, "WAL checkpoint failed");
                }
            }
        });
    match spawned {
        Ok(thread) => Some(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        }),
        Err(e) => {
            tracing::warn!(error = %e, "no WAL checkpointer: commits checkpoint");
            None
        }
    }
}

fn connect(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Io {
            path: path.display().to_string(),
            message: format!("cannot switch to WAL mode (got {mode})"),
        });
    }
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    // The write path's statements stay prepared (a policy apply and an
    // event upload run a dozen or so, thousands of times).
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

impl Storage for SqliteStore {
    fn read(&self) -> Result<Box<dyn ReadTx + '_>> {
        let conn = Held::Reader {
            store: self,
            conn: Some(self.reader()?),
        };
        conn.execute_batch("BEGIN")?;
        Ok(Box::new(Tx::begun(Box::new(conn))))
    }

    fn write(&self) -> Result<Box<dyn WriteTx + '_>> {
        let conn = Held::Writer(lock(&self.writer));
        conn.execute_batch("BEGIN IMMEDIATE")?;
        Ok(Box::new(Tx::begun(Box::new(conn))))
    }
}

/// A connection held for one transaction.
enum Held<'a> {
    Writer(MutexGuard<'a, Connection>),
    Reader {
        store: &'a SqliteStore,
        conn: Option<Connection>,
    },
}

impl Deref for Held<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        match self {
            Held::Writer(guard) => guard,
            Held::Reader { conn, .. } => conn.as_ref().expect("held until drop"),
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Held::Reader { store, conn } = self {
            if let Some(conn) = conn.take() {
                let mut pool = lock(&store.readers);
                if pool.len() < POOL_SIZE {
                    pool.push(conn);
                }
            }
        }
    }
}

impl Conn for Held<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn exec(&self, sql: &str, args: &[Value<'_>]) -> Result<u64> {
        (**self).exec(sql, args)
    }

    fn query(
        &self,
        sql: &str,
        args: &[Value<'_>],
        each: &mut dyn FnMut(&dyn Row) -> Result<()>,
    ) -> Result<()> {
        (**self).query(sql, args, each)
    }

    fn batch(&self, sql: &str) -> Result<()> {
        (**self).batch(sql)
    }
}

impl Conn for Connection {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn exec(&self, sql: &str, args: &[Value<'_>]) -> Result<u64> {
        let mut stmt = self.prepare_cached(sql)?;
        Ok(stmt.execute(rusqlite::params_from_iter(args.iter()))? as u64)
    }

    fn query(
        &self,
        sql: &str,
        args: &[Value<'_>],
        each: &mut dyn FnMut(&dyn Row) -> Result<()>,
    ) -> Result<()> {
        let mut stmt = self.prepare_cached(sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(args.iter()))?;
        while let Some(row) = rows.next()? {
            each(&SqliteRow(row))?;
        }
        Ok(())
    }

    fn batch(&self, sql: &str) -> Result<()> {
        Ok(self.execute_batch(sql)?)
    }
}

impl ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(i) => ValueRef::Integer(*i),
            Value::Bool(b) => ValueRef::Integer(i64::from(*b)),
            Value::Text(t) => ValueRef::Text(t.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

struct SqliteRow<'r, 's>(&'r rusqlite::Row<'s>);

impl Row for SqliteRow<'_, '_> {
    fn cell(&self, column: usize) -> Result<Cell<'_>> {
        Ok(match self.0.get_ref(column)? {
            ValueRef::Null => Cell::Null,
            ValueRef::Integer(i) => Cell::Int(i),
            ValueRef::Real(f) => Cell::Real(f),
            ValueRef::Text(t) => {
                Cell::Text(std::str::from_utf8(t).map_err(|e| StoreError::Corrupt {
                    table: "row",
                    message: format!("column {column}: {e}"),
                })?)
            }
            ValueRef::Blob(b) => Cell::Blob(b),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A commit leaves its pages in the WAL; the store's checkpointer, not
    /// the commit, copies them into the database file (read here with the
    /// WAL ignored). Before it, a small write stayed in the WAL until 1000
    /// pages piled up and some commit paid for the checkpoint.
    #[test]
    fn the_checkpointer_copies_commits_into_the_database_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jms.db");
        let store = SqliteStore::open(&path).unwrap();
        let mut tx = store.write().unwrap();
        let id = tx
            .put_bastion("checkpointed", &[9; 32], false)
            .unwrap()
            .unwrap();
        tx.commit().unwrap();
        let in_file = || {
            let file = Connection::open_with_flags(
                format!("file:{}?immutable=1", path.display()),
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
            )
            .unwrap();
            file.query_row(
                "SELECT COUNT(*) FROM bastions WHERE name = 'checkpointed'",
                [],
                |row| row.get::<_, i64>(0),
            )
            .unwrap_or(0)
        };
        // Polled (not timed): the checkpointer runs every half second.
        let mut copied = false;
        for _ in 0..600 {
            if in_file() == 1 {
                copied = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(copied, "the commit never reached the database file");
        // Still readable and writable through the store.
        assert!(store.read().unwrap().bastion(id).unwrap().is_some());
        drop(store);
    }
}
