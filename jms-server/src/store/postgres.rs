//! The PostgreSQL backend (`jms-server --database postgres://…`): the same
//! statements as SQLite ([`super::tx`]) over a pool of `postgres` (the
//! synchronous rust-postgres client) connections kept by `r2d2`; see
//! docs/postgres.md for the choice.
//!
//! - Reads run in `REPEATABLE READ READ ONLY` transactions: one consistent
//!   snapshot, like a SQLite read transaction.
//! - A write transaction first takes the transaction-level advisory lock
//!   [`WRITE_LOCK`]: writes are serialised across every instance on the
//!   database, as SQLite's one writer serialises them in one process, and
//!   the lock goes with the transaction (commit, rollback or a dead
//!   connection). The exactly-once guarantees do not rest on it alone:
//!   event keys, nonces and tokens are unique keys (`ON CONFLICT DO
//!   NOTHING`), one-time links and tokens are conditional updates.
//! - [`Storage::write_unordered`] begins a write transaction without that
//!   lock, for the bastions' per-request writes (nonce, last contact,
//!   version held): exactly-once by their unique key or blind updates of
//!   one row, they need no order, and with 10,000 bastions polling they
//!   were the lock's queue (each commit waited for its WAL flush holding
//!   it; docs/postgres.md).
//! - Like every store call, these run on blocking threads
//!   (`spawn_blocking`), never on the async runtime's workers: the client
//!   drives its socket on a small runtime of its own.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use bytes::BytesMut;
use postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use postgres::{Client, NoTls, Statement};

use super::sql::{bad, pg_sql, Cell, Conn, Dialect, Row, Value};
use super::tx::Tx;
use super::{migrations, ReadTx, Result, Storage, StoreError, WriteTx};

/// The advisory lock every write transaction holds (`jms-wrt` in ASCII).
pub const WRITE_LOCK: i64 = 0x006a_6d73_2d77_7274;

/// Connections the pool keeps open at most (each instance).
const POOL_SIZE: u32 = 16;

/// How long a request waits for a free connection.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(10);

/// The PostgreSQL store.
pub struct PgStore {
    pool: r2d2::Pool<Manager>,
}

impl PgStore {
    /// Connects to `url` (`postgres://user:password@host:port/db`, or the
    /// key=value form) and applies the migrations the database lacks.
    pub fn open(url: &str) -> Result<PgStore> {
        let config: postgres::Config = url.parse()?;
        let pool = r2d2::Pool::builder()
            .max_size(POOL_SIZE)
            .min_idle(Some(1))
            .connection_timeout(CHECKOUT_TIMEOUT)
            // A broken connection is noticed on use (and dropped then);
            // no test query before every transaction.
            .test_on_check_out(false)
            .build(Manager { config })
            .map_err(|e| StoreError::Pool(e.to_string()))?;
        let store = PgStore { pool };
        let conn = store.conn()?;
        migrations::apply(&conn)?;
        drop(conn);
        Ok(store)
    }

    /// Runs `work` on a connection of the pool, outside any transaction.
    pub fn with_conn<T>(&self, work: impl FnOnce(&dyn Conn) -> Result<T>) -> Result<T> {
        let conn = self.conn()?;
        work(&conn)
    }

    fn conn(&self) -> Result<Held> {
        self.pool
            .get()
            .map(Held)
            .map_err(|e| StoreError::Pool(e.to_string()))
    }
}

impl Storage for PgStore {
    fn read(&self) -> Result<Box<dyn ReadTx + '_>> {
        let conn = self.conn()?;
        conn.batch("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")?;
        Ok(Box::new(Tx::begun(Box::new(conn))))
    }

    fn write(&self) -> Result<Box<dyn WriteTx + '_>> {
        let conn = self.conn()?;
        conn.batch("BEGIN")?;
        let locked = conn.exec(
            "SELECT pg_advisory_xact_lock(?1)",
            &[Value::Int(WRITE_LOCK)],
        );
        if let Err(e) = locked {
            let _ = conn.batch("ROLLBACK");
            return Err(e);
        }
        Ok(Box::new(Tx::begun(Box::new(conn))))
    }

    /// READ COMMITTED without [`WRITE_LOCK`]: a second insert of the same
    /// unique key waits for the first's transaction and then conflicts
    /// (or inserts if it rolled back), so `ON CONFLICT DO NOTHING` is
    /// still new to exactly one; an update of one row waits for that row
    /// only. Concurrent commits share their WAL flushes.
    fn write_unordered(&self) -> Result<Box<dyn WriteTx + '_>> {
        let conn = self.conn()?;
        conn.batch("BEGIN")?;
        Ok(Box::new(Tx::begun(Box::new(conn))))
    }
}

/// Opens the pool's connections.
struct Manager {
    config: postgres::Config,
}

/// One connection and its prepared statements (by their SQLite text).
pub struct PgConn {
    client: RefCell<Client>,
    statements: RefCell<HashMap<String, Statement>>,
}

/// Statements kept prepared per connection at most.
const STATEMENT_CACHE: usize = 256;

impl r2d2::ManageConnection for Manager {
    type Connection = PgConn;
    type Error = postgres::Error;

    fn connect(&self) -> std::result::Result<PgConn, postgres::Error> {
        let client = self.config.connect(NoTls)?;
        Ok(PgConn {
            client: RefCell::new(client),
            statements: RefCell::new(HashMap::new()),
        })
    }

    fn is_valid(&self, conn: &mut PgConn) -> std::result::Result<(), postgres::Error> {
        conn.client.get_mut().simple_query("").map(|_| ())
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        conn.client.get_mut().is_closed()
    }
}

/// A pooled connection, back in the pool when dropped.
struct Held(r2d2::PooledConnection<Manager>);

impl Held {
    fn statement(&self, sql: &str) -> Result<Statement> {
        if let Some(statement) = self.0.statements.borrow().get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.0.client.borrow_mut().prepare(&pg_sql(sql))?;
        let mut cache = self.0.statements.borrow_mut();
        if cache.len() >= STATEMENT_CACHE {
            cache.clear();
        }
        cache.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }
}

fn params<'v>(args: &'v [Value<'_>]) -> Vec<&'v (dyn ToSql + Sync)> {
    args.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

impl Conn for Held {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn exec(&self, sql: &str, args: &[Value<'_>]) -> Result<u64> {
        let statement = self.statement(sql)?;
        Ok(self
            .0
            .client
            .borrow_mut()
            .execute(&statement, &params(args))?)
    }

    fn query(
        &self,
        sql: &str,
        args: &[Value<'_>],
        each: &mut dyn FnMut(&dyn Row) -> Result<()>,
    ) -> Result<()> {
        let statement = self.statement(sql)?;
        let rows = self
            .0
            .client
            .borrow_mut()
            .query(&statement, &params(args))?;
        for row in &rows {
            each(&PgRow(row))?;
        }
        Ok(())
    }

    fn batch(&self, sql: &str) -> Result<()> {
        Ok(self.0.client.borrow_mut().batch_execute(sql)?)
    }
}

struct PgRow<'r>(&'r postgres::Row);

impl Row for PgRow<'_> {
    fn cell(&self, column: usize) -> Result<Cell<'_>> {
        let row = self.0;
        let Some(described) = row.columns().get(column) else {
            return Err(bad(column, "no such column"));
        };
        let cell = match *described.type_() {
            Type::INT8 => row.try_get::<_, Option<i64>>(column)?.map(Cell::Int),
            Type::INT4 => row
                .try_get::<_, Option<i32>>(column)?
                .map(|i| Cell::Int(i.into())),
            Type::INT2 => row
                .try_get::<_, Option<i16>>(column)?
                .map(|i| Cell::Int(i.into())),
            Type::BOOL => row.try_get::<_, Option<bool>>(column)?.map(Cell::Bool),
            Type::FLOAT8 => row.try_get::<_, Option<f64>>(column)?.map(Cell::Real),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
                row.try_get::<_, Option<&str>>(column)?.map(Cell::Text)
            }
            Type::BYTEA => row.try_get::<_, Option<&[u8]>>(column)?.map(Cell::Blob),
            ref other => return Err(bad(column, format!("unexpected type {other}"))),
        };
        Ok(cell.unwrap_or(Cell::Null))
    }
}

/// A value binds as the type PostgreSQL inferred for its parameter: an
/// integer or a boolean to an integer or boolean column alike (SQLite's
/// flags are integers in both schemas).
impl ToSql for Value<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let int = |i: i64, out: &mut BytesMut| match *ty {
            Type::INT8 => i.to_sql(ty, out),
            Type::INT4 => i32::try_from(i)?.to_sql(ty, out),
            Type::INT2 => i16::try_from(i)?.to_sql(ty, out),
            Type::BOOL => (i != 0).to_sql(ty, out),
            Type::TEXT | Type::VARCHAR => i.to_string().to_sql(ty, out),
            ref other => Err(format!("an integer cannot bind as {other}").into()),
        };
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => int(*i, out),
            Value::Bool(b) if *ty == Type::BOOL => b.to_sql(ty, out),
            Value::Bool(b) => int(i64::from(*b), out),
            Value::Text(t) => t.as_ref().to_sql(ty, out),
            Value::Blob(b) => b.as_ref().to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}
