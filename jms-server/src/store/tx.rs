//! Every statement of the store, written once for both backends over
//! [`super::sql::Conn`]: the policy rows, tokens, settings, the sync
//! half (enrollment, nonces, events and their audit projection in
//! [`super::audit`]), jobs, fleet, links and web admins.

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};
use jms_core::model::{Account, Asset, CommandFilter, Grant, Timestamp, User, UserGroup};
use jms_core::nss_cache::DEFAULT_PRIMARY_GROUP;
use jms_core::uids::{DEFAULT_FIRST_ID, DEFAULT_LAST_ID};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::sql::{args, bad, Conn, Row, Value};
use super::{audit, CommandQuery, CommandRecord, RecordingRow, SessionQuery, SessionRecord};
use super::{
    AccountRow, AssetRow, BastionRow, EnrollTokenRow, FilterRow, GrantRow, GroupRow, ListQuery,
    NewEvent, NewOpLogEntry, NodeRow, OpLogEntry, Page, ReadTx, Result, Scope, Snapshot, Stamps,
    StoreError, StoredSettings, TokenRow, UserRow, WebAdminRow, WebSessionRow, WriteTx,
};
use super::{PasswordTokenRow, Purpose, TransferQuery, TransferRecord};
use super::{PortalSessionLimits, PortalSessionRow};

/// A transaction on either backend; rolled back on drop unless committed.
pub struct Tx<'a> {
    conn: Box<dyn Conn + 'a>,
    open: bool,
}

impl<'a> Tx<'a> {
    /// A transaction the backend began on `conn`.
    pub fn begun(conn: Box<dyn Conn + 'a>) -> Tx<'a> {
        Tx { conn, open: true }
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.open {
            let _ = self.conn.batch("ROLLBACK");
        }
    }
}

// ---- value conversions ------------------------------------------------

fn now() -> String {
    time_text(Utc::now())
}

fn time_text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn json<T: DeserializeOwned>(row: &dyn Row, column: usize) -> Result<T> {
    let text: String = row.get(column)?;
    serde_json::from_str(&text).map_err(|e| bad(column, format!("bad JSON: {e}")))
}

fn to_json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("model values serialise")
}

/// A unit enum as its serde name (`ssh_key`, `deny`).
fn enum_text<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) => text,
        _ => unreachable!("unit enums serialise as strings"),
    }
}

fn enum_value<T: DeserializeOwned>(row: &dyn Row, column: usize) -> Result<T> {
    let text: String = row.get(column)?;
    serde_json::from_value(serde_json::Value::String(text.clone()))
        .map_err(|_| bad(column, format!("unknown value `{text}`")))
}

fn time(row: &dyn Row, column: usize) -> Result<DateTime<Utc>> {
    let text: String = row.get(column)?;
    DateTime::parse_from_rfc3339(&text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| bad(column, format!("bad time `{text}`: {e}")))
}

fn stamps(row: &dyn Row, created: usize) -> Result<Stamps> {
    Ok(Stamps {
        created_at: time(row, created)?,
        updated_at: time(row, created + 1)?,
    })
}

fn timestamp(row: &dyn Row, column: usize) -> Result<Option<Timestamp>> {
    let text: Option<String> = row.get(column)?;
    text.map(|t| Timestamp::parse(&t).map_err(|e| bad(column, e)))
        .transpose()
}

fn timestamp_text(value: &Option<Timestamp>) -> Option<String> {
    value.as_ref().map(Timestamp::to_string)
}

use super::audit::like_pattern;

// ---- row mapping --------------------------------------------------------

const USER_COLUMNS: &str = "id, username, uid, name, email, is_active, date_expired, \
     public_keys, login_acl, password_hash, totp_secret, created_at, updated_at";

fn user_row(row: &dyn Row) -> Result<UserRow> {
    Ok(UserRow {
        id: row.get(0)?,
        uid: row.get(2)?,
        user: User {
            username: row.get(1)?,
            name: row.get(3)?,
            email: row.get(4)?,
            is_active: row.get(5)?,
            date_expired: timestamp(row, 6)?,
            groups: Vec::new(),
            public_keys: json(row, 7)?,
            password_hash: None,
            totp_secret: None,
            login_acl: json(row, 8)?,
        },
        password_hash: row.get(9)?,
        totp_secret: row.get(10)?,
        stamps: stamps(row, 11)?,
    })
}

const GROUP_COLUMNS: &str = "id, name, gid, comment, created_at, updated_at";

fn group_row(row: &dyn Row) -> Result<GroupRow> {
    Ok(GroupRow {
        id: row.get(0)?,
        gid: row.get(2)?,
        group: UserGroup {
            name: row.get(1)?,
            comment: row.get(3)?,
        },
        stamps: stamps(row, 4)?,
    })
}

const NODE_COLUMNS: &str = "id, path, created_at";

fn node_row(row: &dyn Row) -> Result<NodeRow> {
    Ok(NodeRow {
        id: row.get(0)?,
        path: row.get(1)?,
        created_at: time(row, 2)?,
    })
}

const ASSET_COLUMNS: &str =
    "id, name, address, protocols, nodes, is_active, host_keys, created_at, updated_at, zone";

fn asset_row(row: &dyn Row) -> Result<AssetRow> {
    Ok(AssetRow {
        id: row.get(0)?,
        asset: Asset {
            name: row.get(1)?,
            address: row.get(2)?,
            protocols: json(row, 3)?,
            nodes: json(row, 4)?,
            is_active: row.get(5)?,
            accounts: Vec::new(),
            host_keys: json(row, 6)?,
            zone: row.get(9)?,
        },
        stamps: stamps(row, 7)?,
    })
}

const ACCOUNT_TABLE: &str = "accounts a JOIN assets s ON s.id = a.asset_id";
const ACCOUNT_COLUMNS: &str = "a.id, s.name, a.name, a.username, a.secret_type, a.secret, \
     a.privileged, a.created_at, a.updated_at, a.shell, a.groups, a.sudo";

fn account_row(row: &dyn Row) -> Result<AccountRow> {
    Ok(AccountRow {
        id: row.get(0)?,
        asset: row.get(1)?,
        account: Account {
            name: row.get(2)?,
            username: row.get(3)?,
            secret_type: enum_value(row, 4)?,
            secret: None,
            secret_file: None,
            privileged: row.get(6)?,
            shell: row.get(9)?,
            groups: row
                .get::<Option<String>>(10)?
                .and_then(|g| serde_json::from_str(&g).ok())
                .unwrap_or_default(),
            sudo: row.get(11)?,
        },
        secret: row.get(5)?,
        stamps: stamps(row, 7)?,
    })
}

const GRANT_COLUMNS: &str = "id, name, users, user_groups, assets, nodes, accounts, protocols, \
     actions, date_start, date_expired, is_active, comment, created_at, updated_at";

fn grant_row(row: &dyn Row) -> Result<GrantRow> {
    Ok(GrantRow {
        id: row.get(0)?,
        grant: Grant {
            name: row.get(1)?,
            users: json(row, 2)?,
            user_groups: json(row, 3)?,
            assets: json(row, 4)?,
            nodes: json(row, 5)?,
            accounts: json(row, 6)?,
            protocols: json(row, 7)?,
            actions: json(row, 8)?,
            date_start: timestamp(row, 9)?,
            date_expired: timestamp(row, 10)?,
            is_active: row.get(11)?,
            comment: row.get(12)?,
        },
        stamps: stamps(row, 13)?,
    })
}

const FILTER_COLUMNS: &str = "id, name, priority, action, rules, users, user_groups, assets, \
     nodes, accounts, is_active, created_at, updated_at";

fn filter_row(row: &dyn Row) -> Result<FilterRow> {
    Ok(FilterRow {
        id: row.get(0)?,
        filter: CommandFilter {
            name: row.get(1)?,
            priority: row.get(2)?,
            action: enum_value(row, 3)?,
            rules: json(row, 4)?,
            users: json(row, 5)?,
            user_groups: json(row, 6)?,
            assets: json(row, 7)?,
            nodes: json(row, 8)?,
            accounts: json(row, 9)?,
            is_active: row.get(10)?,
        },
        stamps: stamps(row, 11)?,
    })
}

const OPLOG_COLUMNS: &str = "id, at, actor, action, kind, name, fields, version";

fn oplog_row(row: &dyn Row) -> Result<OpLogEntry> {
    Ok(OpLogEntry {
        id: row.get(0)?,
        at: time(row, 1)?,
        actor: row.get(2)?,
        action: row.get(3)?,
        kind: row.get(4)?,
        name: row.get(5)?,
        fields: json(row, 6)?,
        version: row.get(7)?,
    })
}

/// What a paged list selects.
struct Listing<'s> {
    table: &'s str,
    columns: &'s str,
    /// Columns `q` is matched against.
    search: &'s [&'s str],
    /// An extra `column = value` condition.
    scope: Option<(&'s str, &'s str)>,
    order: &'s str,
}

const WEB_ADMIN_COLUMNS: &str =
    "id, username, password_hash, totp_secret, totp_last_step, created_at, last_login_at, role";

fn web_admin_row(row: &dyn Row) -> Result<WebAdminRow> {
    let last_login: Option<String> = row.get(6)?;
    Ok(WebAdminRow {
        id: row.get(0)?,
        username: row.get(1)?,
        password_hash: row.get(2)?,
        totp_secret: row.get(3)?,
        totp_last_step: row.get(4)?,
        created_at: time(row, 5)?,
        last_login_at: match last_login {
            Some(_) => Some(time(row, 6)?),
            None => None,
        },
        role: row
            .get::<String>(7)?
            .parse::<Scope>()
            .map_err(|e| bad(7, e))?,
    })
}

impl Tx<'_> {
    fn page<T>(
        &self,
        listing: Listing<'_>,
        query: &ListQuery,
        map: impl FnMut(&dyn Row) -> Result<T>,
    ) -> Result<Page<T>> {
        let mut conditions = Vec::new();
        let mut params: Vec<Value<'_>> = Vec::new();
        if let Some(q) = query.q.as_deref() {
            params.push(Value::Text(like_pattern(q).into()));
            let any: Vec<String> = listing
                .search
                .iter()
                .map(|c| format!("{c} LIKE ?1 ESCAPE '\\'"))
                .collect();
            conditions.push(format!("({})", any.join(" OR ")));
        }
        if let Some((column, value)) = &listing.scope {
            params.push(Value::Text((*value).into()));
            conditions.push(format!("{column} = ?{}", params.len()));
        }
        let filter = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        let total: u64 = self.conn.value(
            &format!("SELECT COUNT(*) FROM {} {filter}", listing.table),
            &params,
        )?;
        let n = params.len();
        params.push(Value::Int(i64::from(query.limit)));
        params.push(Value::Int(i64::try_from(query.offset).unwrap_or(i64::MAX)));
        let sql = format!(
            "SELECT {} FROM {} {filter} ORDER BY {} LIMIT ?{} OFFSET ?{}",
            listing.columns,
            listing.table,
            listing.order,
            n + 1,
            n + 2
        );
        let items = self.conn.all(&sql, &params, map)?;
        Ok(Page { items, total })
    }

    fn one<T>(
        &self,
        sql: &str,
        args: &[Value<'_>],
        map: impl FnOnce(&dyn Row) -> Result<T>,
    ) -> Result<Option<T>> {
        self.conn.one(sql, args, map)
    }

    /// Runs a write (each backend keeps its statements prepared: a policy
    /// apply runs the same few statements for every entity).
    fn exec(&self, sql: &str, args: &[Value<'_>]) -> Result<usize> {
        Ok(self.conn.exec(sql, args)? as usize)
    }

    fn all<T>(&self, sql: &str, map: impl FnMut(&dyn Row) -> Result<T>) -> Result<Vec<T>> {
        self.conn.all(sql, args![], map)
    }

    /// Inserts a row and returns its id.
    fn insert(&self, sql: &str, args: &[Value<'_>]) -> Result<i64> {
        self.conn.value(&format!("{sql} RETURNING id"), args)
    }

    fn groups_of(&self, user_id: i64) -> Result<Vec<String>> {
        self.conn.all(
            "SELECT g.name FROM user_group_members m JOIN user_groups g ON g.id = m.group_id \
             WHERE m.user_id = ?1 ORDER BY m.position",
            args![user_id],
            |row| row.get(0),
        )
    }

    fn with_groups(&self, mut row: UserRow) -> Result<UserRow> {
        row.user.groups = self.groups_of(row.id)?;
        Ok(row)
    }

    /// The uid/gid of `name`: its old one, or the next never-used one.
    fn unix_id(&self, kind: &'static str, name: &str) -> Result<u32> {
        if let Some(id) = self.one(
            "SELECT id FROM unix_ids WHERE kind = ?1 AND name = ?2",
            args![kind, name],
            |row| row.get(0),
        )? {
            return Ok(id);
        }
        let next: u32 = self.conn.value(
            "SELECT COALESCE(MAX(id) + 1, ?2) FROM unix_ids WHERE kind = ?1",
            args![kind, DEFAULT_FIRST_ID],
        )?;
        if next > DEFAULT_LAST_ID {
            return Err(StoreError::IdsExhausted {
                kind,
                name: name.to_string(),
            });
        }
        self.exec(
            "INSERT INTO unix_ids (kind, id, name, assigned_at) VALUES (?1, ?2, ?3, ?4)",
            args![kind, next, name, now()],
        )?;
        Ok(next)
    }

    fn id_of(&self, table: &str, key: &str, value: &str) -> Result<Option<i64>> {
        self.one(
            &format!("SELECT id FROM {table} WHERE {key} = ?1"),
            args![value],
            |row| row.get(0),
        )
    }

    fn asset_id(&self, asset: &str) -> Result<i64> {
        self.id_of("assets", "name", asset)?
            .ok_or_else(|| StoreError::Corrupt {
                table: "accounts",
                message: format!("account of unknown asset `{asset}`"),
            })
    }
}

impl ReadTx for Tx<'_> {
    fn policy_version(&self) -> Result<u64> {
        self.conn
            .value("SELECT version FROM policy_state WHERE id = 1", args![])
    }

    fn primary_group_gid(&self) -> Result<Option<u32>> {
        self.one(
            "SELECT id FROM unix_ids WHERE kind = 'gid' AND name = ?1",
            args![DEFAULT_PRIMARY_GROUP],
            |row| row.get(0),
        )
    }

    fn snapshot(&self) -> Result<Snapshot> {
        let mut members: HashMap<i64, Vec<String>> = HashMap::new();
        let pairs: Vec<(i64, String)> = self.all(
            "SELECT m.user_id, g.name FROM user_group_members m \
             JOIN user_groups g ON g.id = m.group_id ORDER BY m.user_id, m.position",
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        for (user, group) in pairs {
            members.entry(user).or_default().push(group);
        }
        let mut users: Vec<UserRow> = self.all(
            &format!("SELECT {USER_COLUMNS} FROM users ORDER BY id"),
            user_row,
        )?;
        for row in &mut users {
            row.user.groups = members.remove(&row.id).unwrap_or_default();
        }
        Ok(Snapshot {
            groups: self.all(
                &format!("SELECT {GROUP_COLUMNS} FROM user_groups ORDER BY id"),
                group_row,
            )?,
            users,
            nodes: self.all(
                &format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY id"),
                node_row,
            )?,
            assets: self.all(
                &format!("SELECT {ASSET_COLUMNS} FROM assets ORDER BY id"),
                asset_row,
            )?,
            accounts: self.all(
                &format!("SELECT {ACCOUNT_COLUMNS} FROM {ACCOUNT_TABLE} ORDER BY a.id"),
                account_row,
            )?,
            grants: self.all(
                &format!("SELECT {GRANT_COLUMNS} FROM grants ORDER BY id"),
                grant_row,
            )?,
            filters: self.all(
                &format!("SELECT {FILTER_COLUMNS} FROM command_filters ORDER BY id"),
                filter_row,
            )?,
        })
    }

    fn users(&self, query: &ListQuery) -> Result<Page<UserRow>> {
        let page = self.page(
            Listing {
                table: "users",
                columns: USER_COLUMNS,
                search: &["username", "name", "email"],
                scope: None,
                order: "id",
            },
            query,
            user_row,
        )?;
        Ok(Page {
            items: page
                .items
                .into_iter()
                .map(|row| self.with_groups(row))
                .collect::<Result<_>>()?,
            total: page.total,
        })
    }

    fn user(&self, username: &str) -> Result<Option<UserRow>> {
        self.one(
            &format!("SELECT {USER_COLUMNS} FROM users WHERE username = ?1"),
            args![username],
            user_row,
        )?
        .map(|row| self.with_groups(row))
        .transpose()
    }

    fn groups(&self, query: &ListQuery) -> Result<Page<GroupRow>> {
        self.page(
            Listing {
                table: "user_groups",
                columns: GROUP_COLUMNS,
                search: &["name", "comment"],
                scope: None,
                order: "id",
            },
            query,
            group_row,
        )
    }

    fn group(&self, name: &str) -> Result<Option<GroupRow>> {
        self.one(
            &format!("SELECT {GROUP_COLUMNS} FROM user_groups WHERE name = ?1"),
            args![name],
            group_row,
        )
    }

    fn group_members(&self, name: &str) -> Result<Vec<String>> {
        self.conn.all(
            "SELECT u.username FROM user_group_members m \
             JOIN users u ON u.id = m.user_id JOIN user_groups g ON g.id = m.group_id \
             WHERE g.name = ?1 ORDER BY u.id",
            args![name],
            |row| row.get(0),
        )
    }

    fn nodes(&self, query: &ListQuery) -> Result<Page<NodeRow>> {
        self.page(
            Listing {
                table: "nodes",
                columns: NODE_COLUMNS,
                search: &["path"],
                scope: None,
                order: "id",
            },
            query,
            node_row,
        )
    }

    fn node(&self, id: i64) -> Result<Option<NodeRow>> {
        self.one(
            &format!("SELECT {NODE_COLUMNS} FROM nodes WHERE id = ?1"),
            args![id],
            node_row,
        )
    }

    fn node_by_path(&self, path: &str) -> Result<Option<NodeRow>> {
        self.one(
            &format!("SELECT {NODE_COLUMNS} FROM nodes WHERE path = ?1"),
            args![path],
            node_row,
        )
    }

    fn assets(&self, query: &ListQuery) -> Result<Page<AssetRow>> {
        self.page(
            Listing {
                table: "assets",
                columns: ASSET_COLUMNS,
                search: &["name", "address"],
                scope: None,
                order: "id",
            },
            query,
            asset_row,
        )
    }

    fn asset(&self, name: &str) -> Result<Option<AssetRow>> {
        self.one(
            &format!("SELECT {ASSET_COLUMNS} FROM assets WHERE name = ?1"),
            args![name],
            asset_row,
        )
    }

    fn accounts(&self, asset: Option<&str>, query: &ListQuery) -> Result<Page<AccountRow>> {
        self.page(
            Listing {
                table: ACCOUNT_TABLE,
                columns: ACCOUNT_COLUMNS,
                search: &["a.name", "a.username", "s.name"],
                scope: asset.map(|name| ("s.name", name)),
                order: "a.id",
            },
            query,
            account_row,
        )
    }

    fn account(&self, asset: &str, name: &str) -> Result<Option<AccountRow>> {
        self.one(
            &format!(
                "SELECT {ACCOUNT_COLUMNS} FROM {ACCOUNT_TABLE} WHERE s.name = ?1 AND a.name = ?2"
            ),
            args![asset, name],
            account_row,
        )
    }

    fn grants(&self, query: &ListQuery) -> Result<Page<GrantRow>> {
        self.page(
            Listing {
                table: "grants",
                columns: GRANT_COLUMNS,
                search: &["name", "comment"],
                scope: None,
                order: "id",
            },
            query,
            grant_row,
        )
    }

    fn grant(&self, name: &str) -> Result<Option<GrantRow>> {
        self.one(
            &format!("SELECT {GRANT_COLUMNS} FROM grants WHERE name = ?1"),
            args![name],
            grant_row,
        )
    }

    fn filters(&self, query: &ListQuery) -> Result<Page<FilterRow>> {
        self.page(
            Listing {
                table: "command_filters",
                columns: FILTER_COLUMNS,
                search: &["name"],
                scope: None,
                order: "id",
            },
            query,
            filter_row,
        )
    }

    fn filter(&self, name: &str) -> Result<Option<FilterRow>> {
        self.one(
            &format!("SELECT {FILTER_COLUMNS} FROM command_filters WHERE name = ?1"),
            args![name],
            filter_row,
        )
    }

    fn settings(&self) -> Result<StoredSettings> {
        let document: Option<String> = self
            .one(
                "SELECT value FROM settings WHERE key = 'system'",
                args![],
                |row| row.get(0),
            )?
            .flatten();
        let document = document
            .map(|text| {
                serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
                    table: "settings",
                    message: e.to_string(),
                })
            })
            .transpose()?;
        let mail_password = self
            .one(
                "SELECT sealed FROM settings WHERE key = 'mail.password'",
                args![],
                |row| row.get(0),
            )?
            .flatten();
        Ok(StoredSettings {
            document,
            mail_password,
        })
    }

    fn oplog(&self, query: &ListQuery) -> Result<Page<OpLogEntry>> {
        self.page(
            Listing {
                table: "oplog",
                columns: OPLOG_COLUMNS,
                search: &["actor", "action", "kind", "name"],
                scope: None,
                order: "id DESC",
            },
            query,
            oplog_row,
        )
    }

    fn token_by_hash(&self, sha256: &[u8]) -> Result<Option<TokenRow>> {
        self.one(
            "SELECT id, name, scope, created_at FROM api_tokens \
             WHERE token_sha256 = ?1 AND revoked_at IS NULL",
            args![sha256],
            |row| {
                let scope: String = row.get(2)?;
                Ok(TokenRow {
                    id: row.get(0)?,
                    name: row.get(1)?,
                    scope: scope.parse::<Scope>().map_err(|e| bad(2, e))?,
                    created_at: time(row, 3)?,
                })
            },
        )
    }

    fn bastion(&self, id: i64) -> Result<Option<BastionRow>> {
        let row = self.one(
            "SELECT id, name, public_key, revoked_at IS NOT NULL FROM bastions \
             WHERE id = ?1 AND public_key IS NOT NULL",
            args![id],
            |row| {
                Ok((
                    row.get::<i64>(0)?,
                    row.get::<String>(1)?,
                    row.get::<String>(2)?,
                    row.get::<bool>(3)?,
                ))
            },
        )?;
        row.map(|(id, name, key, revoked)| {
            let public_key = jms_sync::bundle::unhex(&key).ok_or(StoreError::Corrupt {
                table: "bastions",
                message: format!("bastion {id}: public_key is not hex"),
            })?;
            Ok(BastionRow {
                id,
                name,
                public_key,
                revoked,
            })
        })
        .transpose()
    }

    fn bastion_sshd(&self, id: i64) -> Result<Option<super::fleet::BastionSshd>> {
        super::fleet::sshd(&*self.conn, id)
    }

    fn bastions(&self) -> Result<Vec<super::BastionInfo>> {
        super::fleet::bastions(&*self.conn)
    }

    fn bastion_by_name(&self, name: &str) -> Result<Option<super::BastionInfo>> {
        super::fleet::bastion_by_name(&*self.conn, name)
    }

    fn jobs(&self, asset: Option<&str>, limit: usize) -> Result<Vec<super::JobRow>> {
        super::jobs::jobs(&*self.conn, asset, limit)
    }

    fn job(&self, id: &str) -> Result<Option<super::JobRow>> {
        super::jobs::job(&*self.conn, id)
    }

    fn account_checks(&self) -> Result<Vec<super::AccountCheck>> {
        super::jobs::account_checks(&*self.conn)
    }

    fn plans(&self) -> Result<Vec<super::PlanRow>> {
        super::plans::plans(&*self.conn)
    }

    fn plan(&self, name: &str) -> Result<Option<super::PlanRow>> {
        super::plans::plan(&*self.conn, name)
    }

    fn due_plans(&self, now: DateTime<Utc>) -> Result<Vec<super::PlanRow>> {
        super::plans::due_plans(&*self.conn, now)
    }

    fn asset_facts(&self, asset: &str) -> Result<Option<super::AssetFacts>> {
        super::jobs::asset_facts(&*self.conn, asset)
    }

    fn job_events(&self, id: &str) -> Result<Vec<super::JobEvent>> {
        super::jobs::job_events(&*self.conn, id)
    }

    fn running_jobs(&self) -> Result<Vec<super::JobRow>> {
        super::jobs::running_jobs(&*self.conn)
    }

    fn undelivered_jobs(&self, bastion: &str, limit: usize) -> Result<Vec<super::JobRow>> {
        super::jobs::undelivered_jobs(&*self.conn, bastion, limit)
    }

    fn delivered_jobs(&self, bastion: &str) -> Result<u64> {
        super::jobs::delivered_jobs(&*self.conn, bastion)
    }

    fn unsettled_job(&self, asset: &str, account: &str) -> Result<Option<super::JobRow>> {
        super::jobs::unsettled_job(&*self.conn, asset, account)
    }

    fn secret_history_count(&self, asset: &str, account: &str) -> Result<u64> {
        super::jobs::secret_history_count(&*self.conn, asset, account)
    }

    fn enroll_token(&self, sha256: &[u8]) -> Result<Option<EnrollTokenRow>> {
        self.one(
            "SELECT id, expires_at, used_at, replaces FROM enroll_tokens WHERE token_sha256 = ?1",
            args![sha256],
            |row| {
                let used: Option<String> = row.get(2)?;
                Ok(EnrollTokenRow {
                    id: row.get(0)?,
                    expires_at: time(row, 1)?,
                    used_at: match used {
                        Some(_) => Some(time(row, 2)?),
                        None => None,
                    },
                    replaces: row.get(3)?,
                })
            },
        )
    }

    fn count_events(&self, bastion_id: Option<i64>) -> Result<u64> {
        Ok(match bastion_id {
            Some(id) => self.conn.value(
                "SELECT COUNT(*) FROM events WHERE bastion_id = ?1",
                args![id],
            )?,
            None => self.conn.value("SELECT COUNT(*) FROM events", args![])?,
        })
    }

    fn sessions(&self, query: &SessionQuery) -> Result<Page<SessionRecord>> {
        audit::sessions(&*self.conn, query)
    }

    fn session(&self, id: &str) -> Result<Option<SessionRecord>> {
        audit::session(&*self.conn, id)
    }

    fn commands(&self, query: &CommandQuery, oldest_first: bool) -> Result<Page<CommandRecord>> {
        audit::commands(&*self.conn, query, oldest_first)
    }

    fn transfers(&self, query: &TransferQuery, oldest_first: bool) -> Result<Page<TransferRecord>> {
        audit::transfers(&*self.conn, query, oldest_first)
    }

    fn recording(&self, session: &str) -> Result<Option<RecordingRow>> {
        audit::recording(&*self.conn, session)
    }

    fn password_token(&self, sha256: &[u8]) -> Result<Option<PasswordTokenRow>> {
        self.one(
            "SELECT t.id, t.user_id, u.username, t.purpose, t.created_at, t.expires_at, \
             t.used_at, t.revoked_at \
             FROM password_tokens t JOIN users u ON u.id = t.user_id \
             WHERE t.token_sha256 = ?1",
            args![sha256],
            |row| {
                let purpose: String = row.get(3)?;
                let optional_time = |column| -> Result<Option<DateTime<Utc>>> {
                    let text: Option<String> = row.get(column)?;
                    text.map(|_| time(row, column)).transpose()
                };
                Ok(PasswordTokenRow {
                    id: row.get(0)?,
                    user_id: row.get(1)?,
                    username: row.get(2)?,
                    purpose: Purpose::parse(&purpose)
                        .ok_or_else(|| bad(3, format!("unknown purpose `{purpose}`")))?,
                    created_at: time(row, 4)?,
                    expires_at: time(row, 5)?,
                    used_at: optional_time(6)?,
                    revoked_at: optional_time(7)?,
                })
            },
        )
    }

    fn web_admins(&self) -> Result<Vec<WebAdminRow>> {
        let sql = format!("SELECT {WEB_ADMIN_COLUMNS} FROM web_admins ORDER BY username");
        self.all(&sql, web_admin_row)
    }

    fn web_admin(&self, username: &str) -> Result<Option<WebAdminRow>> {
        let sql = format!("SELECT {WEB_ADMIN_COLUMNS} FROM web_admins WHERE username = ?1");
        self.one(&sql, args![username], web_admin_row)
    }

    fn web_session(&self, sha256: &[u8]) -> Result<Option<WebSessionRow>> {
        self.one(
            "SELECT s.admin_id, a.username, s.created_at, s.expires_at, s.last_seen_at, a.role \
             FROM web_sessions s JOIN web_admins a ON a.id = s.admin_id \
             WHERE s.token_sha256 = ?1",
            args![sha256],
            |row| {
                Ok(WebSessionRow {
                    admin_id: row.get(0)?,
                    username: row.get(1)?,
                    created_at: time(row, 2)?,
                    expires_at: time(row, 3)?,
                    last_seen_at: time(row, 4)?,
                    role: row
                        .get::<String>(5)?
                        .parse::<Scope>()
                        .map_err(|e| bad(5, e))?,
                })
            },
        )
    }

    fn portal_session(&self, sha256: &[u8]) -> Result<Option<PortalSessionRow>> {
        self.one(
            "SELECT username, created_at, expires_at, last_seen_at \
             FROM portal_sessions WHERE token_sha256 = ?1",
            args![sha256],
            |row| {
                Ok(PortalSessionRow {
                    username: row.get(0)?,
                    created_at: time(row, 1)?,
                    expires_at: time(row, 2)?,
                    last_seen_at: time(row, 3)?,
                })
            },
        )
    }

    fn live_portal_sessions(
        &self,
        username: &str,
        now: DateTime<Utc>,
        idle_since: DateTime<Utc>,
    ) -> Result<u64> {
        self.conn.value(
            "SELECT COUNT(*) FROM portal_sessions \
             WHERE username = ?1 AND expires_at > ?2 AND last_seen_at >= ?3",
            args![username, time_text(now), time_text(idle_since)],
        )
    }
}

impl WriteTx for Tx<'_> {
    fn put_user(
        &mut self,
        user: &User,
        password_hash: Option<&[u8]>,
        totp_secret: Option<&[u8]>,
    ) -> Result<()> {
        let at = now();
        let id = match self.id_of("users", "username", &user.username)? {
            Some(id) => {
                self.exec(
                    "UPDATE users SET name = ?2, email = ?3, is_active = ?4, date_expired = ?5, \
                     public_keys = ?6, login_acl = ?7, password_hash = ?8, totp_secret = ?9, \
                     updated_at = ?10 WHERE id = ?1",
                    args![
                        id,
                        user.name,
                        user.email,
                        user.is_active,
                        timestamp_text(&user.date_expired),
                        to_json(&user.public_keys),
                        to_json(&user.login_acl),
                        password_hash,
                        totp_secret,
                        at
                    ],
                )?;
                id
            }
            None => {
                let uid = self.unix_id("uid", &user.username)?;
                self.insert(
                    "INSERT INTO users (username, uid, name, email, is_active, date_expired, \
                     public_keys, login_acl, password_hash, totp_secret, created_at, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11)",
                    args![
                        user.username,
                        uid,
                        user.name,
                        user.email,
                        user.is_active,
                        timestamp_text(&user.date_expired),
                        to_json(&user.public_keys),
                        to_json(&user.login_acl),
                        password_hash,
                        totp_secret,
                        at
                    ],
                )?
            }
        };
        self.exec(
            "DELETE FROM user_group_members WHERE user_id = ?1",
            args![id],
        )?;
        for (position, group) in user.groups.iter().enumerate() {
            let added = self.exec(
                "INSERT INTO user_group_members (user_id, group_id, position) \
                 SELECT CAST(?1 AS INTEGER), id, CAST(?3 AS INTEGER) FROM user_groups WHERE name = ?2",
                args![id, group, position as i64],
            )?;
            if added != 1 {
                return Err(StoreError::Corrupt {
                    table: "user_group_members",
                    message: format!("user `{}`: unknown group `{group}`", user.username),
                });
            }
        }
        Ok(())
    }

    fn delete_user(&mut self, username: &str) -> Result<()> {
        self.exec("DELETE FROM users WHERE username = ?1", args![username])?;
        Ok(())
    }

    fn put_group(&mut self, group: &UserGroup) -> Result<()> {
        let at = now();
        if self.id_of("user_groups", "name", &group.name)?.is_some() {
            self.exec(
                "UPDATE user_groups SET comment = ?2, updated_at = ?3 WHERE name = ?1",
                args![group.name, group.comment, at],
            )?;
        } else {
            let gid = self.unix_id("gid", &group.name)?;
            self.exec(
                "INSERT INTO user_groups (name, gid, comment, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?4)",
                args![group.name, gid, group.comment, at],
            )?;
        }
        Ok(())
    }

    fn delete_group(&mut self, name: &str) -> Result<()> {
        self.exec("DELETE FROM user_groups WHERE name = ?1", args![name])?;
        Ok(())
    }

    fn put_node(&mut self, path: &str) -> Result<()> {
        self.exec(
            "INSERT INTO nodes (path, created_at) VALUES (?1, ?2) ON CONFLICT (path) DO NOTHING",
            args![path, now()],
        )?;
        Ok(())
    }

    fn delete_node(&mut self, path: &str) -> Result<()> {
        self.exec("DELETE FROM nodes WHERE path = ?1", args![path])?;
        Ok(())
    }

    fn put_asset(&mut self, asset: &Asset) -> Result<()> {
        self.exec(
            "INSERT INTO assets (name, address, protocols, nodes, is_active, host_keys, \
             created_at, updated_at, zone) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8) \
             ON CONFLICT (name) DO UPDATE SET address = excluded.address, \
             protocols = excluded.protocols, nodes = excluded.nodes, \
             is_active = excluded.is_active, host_keys = excluded.host_keys, \
             updated_at = excluded.updated_at, zone = excluded.zone",
            args![
                asset.name,
                asset.address,
                to_json(&asset.protocols),
                to_json(&asset.nodes),
                asset.is_active,
                to_json(&asset.host_keys),
                now(),
                asset.zone
            ],
        )?;
        Ok(())
    }

    fn delete_asset(&mut self, name: &str) -> Result<()> {
        self.exec("DELETE FROM assets WHERE name = ?1", args![name])?;
        Ok(())
    }

    fn put_account(&mut self, asset: &str, account: &Account, secret: Option<&[u8]>) -> Result<()> {
        let asset_id = self.asset_id(asset)?;
        self.exec(
            "INSERT INTO accounts (asset_id, name, username, secret_type, secret, privileged, \
             created_at, updated_at, shell, groups, sudo) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, ?9, ?10) \
             ON CONFLICT (asset_id, name) DO UPDATE SET username = excluded.username, \
             secret_type = excluded.secret_type, secret = excluded.secret, \
             privileged = excluded.privileged, updated_at = excluded.updated_at, \
             shell = excluded.shell, groups = excluded.groups, sudo = excluded.sudo",
            args![
                asset_id,
                account.name,
                account.username,
                enum_text(&account.secret_type),
                secret,
                account.privileged,
                now(),
                account.shell,
                (!account.groups.is_empty())
                    .then(|| serde_json::to_string(&account.groups).unwrap_or_default()),
                account.sudo
            ],
        )?;
        Ok(())
    }

    fn delete_account(&mut self, asset: &str, name: &str) -> Result<()> {
        self.exec(
            "DELETE FROM accounts WHERE name = ?2 \
             AND asset_id = (SELECT id FROM assets WHERE name = ?1)",
            args![asset, name],
        )?;
        Ok(())
    }

    fn put_grant(&mut self, grant: &Grant) -> Result<()> {
        self.exec(
            "INSERT INTO grants (name, users, user_groups, assets, nodes, accounts, protocols, \
             actions, date_start, date_expired, is_active, comment, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13) \
             ON CONFLICT (name) DO UPDATE SET users = excluded.users, \
             user_groups = excluded.user_groups, assets = excluded.assets, \
             nodes = excluded.nodes, accounts = excluded.accounts, \
             protocols = excluded.protocols, actions = excluded.actions, \
             date_start = excluded.date_start, date_expired = excluded.date_expired, \
             is_active = excluded.is_active, comment = excluded.comment, \
             updated_at = excluded.updated_at",
            args![
                grant.name,
                to_json(&grant.users),
                to_json(&grant.user_groups),
                to_json(&grant.assets),
                to_json(&grant.nodes),
                to_json(&grant.accounts),
                to_json(&grant.protocols),
                to_json(&grant.actions),
                timestamp_text(&grant.date_start),
                timestamp_text(&grant.date_expired),
                grant.is_active,
                grant.comment,
                now()
            ],
        )?;
        Ok(())
    }

    fn delete_grant(&mut self, name: &str) -> Result<()> {
        self.exec("DELETE FROM grants WHERE name = ?1", args![name])?;
        Ok(())
    }

    fn put_filter(&mut self, filter: &CommandFilter) -> Result<()> {
        self.exec(
            "INSERT INTO command_filters (name, priority, action, rules, users, user_groups, \
             assets, nodes, accounts, is_active, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11) \
             ON CONFLICT (name) DO UPDATE SET priority = excluded.priority, \
             action = excluded.action, rules = excluded.rules, users = excluded.users, \
             user_groups = excluded.user_groups, assets = excluded.assets, \
             nodes = excluded.nodes, accounts = excluded.accounts, \
             is_active = excluded.is_active, updated_at = excluded.updated_at",
            args![
                filter.name,
                filter.priority,
                enum_text(&filter.action),
                to_json(&filter.rules),
                to_json(&filter.users),
                to_json(&filter.user_groups),
                to_json(&filter.assets),
                to_json(&filter.nodes),
                to_json(&filter.accounts),
                filter.is_active,
                now()
            ],
        )?;
        Ok(())
    }

    fn delete_filter(&mut self, name: &str) -> Result<()> {
        self.exec("DELETE FROM command_filters WHERE name = ?1", args![name])?;
        Ok(())
    }

    fn bump_version(&mut self) -> Result<u64> {
        self.exec(
            "UPDATE policy_state SET version = version + 1 WHERE id = 1",
            args![],
        )?;
        self.policy_version()
    }

    fn append_oplog(&mut self, entry: &NewOpLogEntry) -> Result<()> {
        self.exec(
            "INSERT INTO oplog (at, actor, action, kind, name, fields, version) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            args![
                now(),
                entry.actor,
                entry.action,
                entry.kind,
                entry.name,
                to_json(&entry.fields),
                entry.version
            ],
        )?;
        Ok(())
    }

    fn put_settings(
        &mut self,
        document: &serde_json::Value,
        mail_password: Option<&[u8]>,
    ) -> Result<()> {
        self.exec(
            "INSERT INTO settings (key, value) VALUES ('system', ?1) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            args![to_json(document)],
        )?;
        match mail_password {
            Some(sealed) => self.exec(
                "INSERT INTO settings (key, sealed) VALUES ('mail.password', ?1) \
                 ON CONFLICT (key) DO UPDATE SET sealed = excluded.sealed",
                args![sealed],
            )?,
            None => self.exec("DELETE FROM settings WHERE key = 'mail.password'", args![])?,
        };
        Ok(())
    }

    fn insert_token(&mut self, name: &str, scope: Scope, sha256: &[u8]) -> Result<i64> {
        self.insert(
            "INSERT INTO api_tokens (name, token_sha256, scope, created_at) \
             VALUES (?1, ?2, ?3, ?4)",
            args![name, sha256, scope.as_str(), now()],
        )
    }

    fn insert_enroll_token(
        &mut self,
        sha256: &[u8],
        expires_at: DateTime<Utc>,
        replaces: Option<&str>,
    ) -> Result<i64> {
        self.insert(
            "INSERT INTO enroll_tokens (token_sha256, created_at, expires_at, replaces) \
             VALUES (?1, ?2, ?3, ?4)",
            args![sha256, now(), time_text(expires_at), replaces],
        )
    }

    fn use_enroll_token(&mut self, id: i64, bastion_id: i64) -> Result<()> {
        self.exec(
            "UPDATE enroll_tokens SET used_at = ?2, bastion_id = ?3 WHERE id = ?1",
            args![id, now(), bastion_id],
        )?;
        Ok(())
    }

    fn put_bastion(&mut self, name: &str, public_key: &[u8], replace: bool) -> Result<Option<i64>> {
        let key = jms_sync::bundle::hex(public_key);
        let at = now();
        let written = if replace {
            self.exec(
                "INSERT INTO bastions (name, public_key, enrolled_at, created_at) VALUES (?1, ?2, ?3, ?3) \
                 ON CONFLICT (name) DO UPDATE SET public_key = excluded.public_key, \
                 enrolled_at = excluded.enrolled_at, policy_version = NULL, revoked_at = NULL",
                args![name, key, at],
            )?
        } else {
            self.exec(
                "INSERT INTO bastions (name, public_key, enrolled_at, created_at) VALUES (?1, ?2, ?3, ?3) \
                 ON CONFLICT (name) DO NOTHING",
                args![name, key, at],
            )?
        };
        if written == 0 {
            return Ok(None);
        }
        Ok(Some(
            self.id_of("bastions", "name", name)?
                .expect("the bastion was just written"),
        ))
    }

    fn set_bastion_sshd(
        &mut self,
        id: i64,
        address: Option<&str>,
        host_keys: &[String],
    ) -> Result<()> {
        super::fleet::set_sshd(&*self.conn, id, address, host_keys)
    }

    fn touch_bastion(&mut self, id: i64, policy_version: Option<u64>) -> Result<()> {
        self.exec(
            "UPDATE bastions SET last_seen_at = ?2, \
             policy_version = COALESCE(?3, policy_version) WHERE id = ?1",
            args![id, now(), policy_version],
        )?;
        Ok(())
    }

    fn revoke_bastion(&mut self, name: &str) -> Result<bool> {
        super::fleet::revoke(&*self.conn, name, &now())
    }

    fn set_bastion_zone(&mut self, name: &str, zone: Option<&str>) -> Result<bool> {
        super::fleet::set_zone(&*self.conn, name, zone)
    }

    fn insert_job(&mut self, job: &super::JobRow) -> Result<()> {
        super::jobs::insert_job(&*self.conn, job)
    }

    fn finish_job(
        &mut self,
        id: &str,
        status: super::JobStatus,
        changed: bool,
        steps: &[jms_sync::job::JobStep],
        error: Option<&str>,
    ) -> Result<bool> {
        super::jobs::finish_job(&*self.conn, id, status, changed, steps, error)
    }

    fn claim_job_retry(&mut self, id: &str, attempt: u32, bastion: &str) -> Result<bool> {
        super::jobs::claim_retry(&*self.conn, id, attempt, bastion)
    }

    fn claim_job_delivery(&mut self, id: &str, attempt: u32, bastion: &str) -> Result<bool> {
        super::jobs::claim_delivery(&*self.conn, id, attempt, bastion)
    }

    fn settle_job_secrets(&mut self, id: &str, account: Option<(&str, &str)>) -> Result<()> {
        super::jobs::settle_secrets(&*self.conn, id, account)
    }

    fn insert_plan(&mut self, plan: &super::PlanRow) -> Result<bool> {
        super::plans::insert_plan(&*self.conn, plan)
    }

    fn delete_plan(&mut self, name: &str) -> Result<bool> {
        super::plans::delete_plan(&*self.conn, name)
    }

    fn claim_plan(
        &mut self,
        name: &str,
        due: DateTime<Utc>,
        next: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        super::plans::claim_plan(&*self.conn, name, due, next, now)
    }

    fn plan_ran(&mut self, name: &str, jobs: &[String], error: Option<&str>) -> Result<()> {
        super::plans::plan_ran(&*self.conn, name, jobs, error)
    }

    fn put_asset_facts(&mut self, asset: &str, facts: &super::AssetFacts) -> Result<()> {
        super::jobs::put_asset_facts(&*self.conn, asset, facts)
    }

    fn put_account_check(&mut self, check: &super::AccountCheck) -> Result<()> {
        super::jobs::put_account_check(&*self.conn, check)
    }

    fn add_secret_history(
        &mut self,
        asset: &str,
        account: &str,
        sealed: &[u8],
        job: Option<&str>,
    ) -> Result<()> {
        super::jobs::add_secret_history(&*self.conn, asset, account, sealed, job)
    }

    fn note_bastion(
        &mut self,
        id: i64,
        address: Option<&str>,
        report: Option<&jms_sync::fleet::StatusReport>,
    ) -> Result<()> {
        super::fleet::note(&*self.conn, id, address, report, &now())
    }

    fn remember_nonce(
        &mut self,
        bastion_id: i64,
        nonce: &str,
        now: i64,
        forget_before: i64,
    ) -> Result<bool> {
        // Only this bastion's nonces past the window (the timestamp check
        // refuses their requests anyway), by its index (migration 16):
        // a row or two each request, none another bastion's request
        // touches, so concurrent requests do not queue on one another.
        self.exec(
            "DELETE FROM sync_nonces WHERE bastion_id = ?1 AND seen_at < ?2",
            args![bastion_id, forget_before],
        )?;
        let added = self.exec(
            "INSERT INTO sync_nonces (bastion_id, nonce, seen_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT DO NOTHING",
            args![bastion_id, nonce, now],
        )?;
        Ok(added == 1)
    }

    fn local_source(&mut self, name: &str) -> Result<i64> {
        self.exec(
            "INSERT INTO bastions (name, created_at) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
            args![name, now()],
        )?;
        Ok(self
            .id_of("bastions", "name", name)?
            .expect("the source was just written"))
    }

    fn store_events(&mut self, bastion_id: i64, events: &[NewEvent<'_>]) -> Result<usize> {
        audit::store_events(&*self.conn, bastion_id, events)
    }

    fn put_recording(&mut self, row: &RecordingRow) -> Result<()> {
        audit::put_recording(&*self.conn, row)
    }

    fn delete_recording(&mut self, session: &str) -> Result<()> {
        audit::delete_recording(&*self.conn, session)
    }

    fn insert_password_token(
        &mut self,
        user_id: i64,
        purpose: Purpose,
        sha256: &[u8],
        expires_at: DateTime<Utc>,
    ) -> Result<i64> {
        let at = now();
        self.exec(
            "UPDATE password_tokens SET revoked_at = ?2 \
             WHERE user_id = ?1 AND used_at IS NULL AND revoked_at IS NULL",
            args![user_id, at],
        )?;
        self.insert(
            "INSERT INTO password_tokens (user_id, token_sha256, purpose, created_at, expires_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            args![user_id, sha256, purpose.as_str(), at, time_text(expires_at)],
        )
    }

    fn use_password_token(&mut self, id: i64) -> Result<bool> {
        let at = now();
        let changed = self.exec(
            "UPDATE password_tokens SET used_at = ?2 WHERE id = ?1 \
             AND used_at IS NULL AND revoked_at IS NULL AND expires_at > ?2",
            args![id, at],
        )?;
        Ok(changed == 1)
    }

    fn revoke_password_token(&mut self, id: i64) -> Result<()> {
        self.exec(
            "UPDATE password_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            args![id, now()],
        )?;
        Ok(())
    }

    fn insert_web_admin(
        &mut self,
        username: &str,
        password_hash: &[u8],
        totp_secret: &[u8],
        role: Scope,
    ) -> Result<i64> {
        self.insert(
            "INSERT INTO web_admins (username, password_hash, totp_secret, created_at, role) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            args![username, password_hash, totp_secret, now(), role.as_str()],
        )
    }

    fn delete_web_admin(&mut self, username: &str) -> Result<bool> {
        let deleted = self.exec(
            "DELETE FROM web_admins WHERE username = ?1",
            args![username],
        )?;
        Ok(deleted == 1)
    }

    fn record_web_login(&mut self, admin_id: i64, totp_step: i64) -> Result<()> {
        self.exec(
            "UPDATE web_admins SET totp_last_step = ?2, last_login_at = ?3 WHERE id = ?1",
            args![admin_id, totp_step, now()],
        )?;
        Ok(())
    }

    fn insert_web_session(
        &mut self,
        sha256: &[u8],
        admin_id: i64,
        expires_at: DateTime<Utc>,
        remote_addr: Option<&str>,
    ) -> Result<()> {
        let at = now();
        self.exec(
            "INSERT INTO web_sessions \
             (token_sha256, admin_id, created_at, expires_at, last_seen_at, remote_addr) \
             VALUES (?1, ?2, ?3, ?4, ?3, ?5)",
            args![sha256, admin_id, at, time_text(expires_at), remote_addr],
        )?;
        Ok(())
    }

    fn touch_web_session(&mut self, sha256: &[u8]) -> Result<()> {
        self.exec(
            "UPDATE web_sessions SET last_seen_at = ?2 WHERE token_sha256 = ?1",
            args![sha256, now()],
        )?;
        Ok(())
    }

    fn delete_web_session(&mut self, sha256: &[u8]) -> Result<()> {
        self.exec(
            "DELETE FROM web_sessions WHERE token_sha256 = ?1",
            args![sha256],
        )?;
        Ok(())
    }

    fn delete_expired_web_sessions(&mut self, now: DateTime<Utc>) -> Result<u64> {
        let deleted = self.exec(
            "DELETE FROM web_sessions WHERE expires_at < ?1",
            args![time_text(now)],
        )?;
        Ok(deleted as u64)
    }

    fn insert_portal_session(
        &mut self,
        sha256: &[u8],
        username: &str,
        expires_at: DateTime<Utc>,
        limits: PortalSessionLimits,
    ) -> Result<()> {
        let at = now();
        self.exec(
            "DELETE FROM portal_sessions WHERE expires_at <= ?1 OR last_seen_at < ?2",
            args![at, time_text(limits.idle_since)],
        )?;
        // Room for the new one: her oldest, then everyone's least
        // recently used, past the bounds.
        self.exec(
            "DELETE FROM portal_sessions WHERE username = ?1 AND created_at <= \
             (SELECT created_at FROM portal_sessions WHERE username = ?1 \
              ORDER BY created_at DESC LIMIT 1 OFFSET ?2)",
            args![username, limits.per_user.saturating_sub(1) as i64],
        )?;
        self.exec(
            "DELETE FROM portal_sessions WHERE last_seen_at <= \
             (SELECT last_seen_at FROM portal_sessions \
              ORDER BY last_seen_at DESC LIMIT 1 OFFSET ?1)",
            args![limits.total.saturating_sub(1) as i64],
        )?;
        self.exec(
            "INSERT INTO portal_sessions \
             (token_sha256, username, created_at, expires_at, last_seen_at) \
             VALUES (?1, ?2, ?3, ?4, ?3)",
            args![sha256, username, at, time_text(expires_at)],
        )?;
        Ok(())
    }

    fn touch_portal_session(&mut self, sha256: &[u8]) -> Result<()> {
        self.exec(
            "UPDATE portal_sessions SET last_seen_at = ?2 WHERE token_sha256 = ?1",
            args![sha256, now()],
        )?;
        Ok(())
    }

    fn delete_portal_session(&mut self, sha256: &[u8]) -> Result<Option<String>> {
        let username = self.one(
            "SELECT username FROM portal_sessions WHERE token_sha256 = ?1",
            args![sha256],
            |row| row.get::<String>(0),
        )?;
        self.exec(
            "DELETE FROM portal_sessions WHERE token_sha256 = ?1",
            args![sha256],
        )?;
        Ok(username)
    }

    fn rate_limit_hit(
        &mut self,
        limiter: &str,
        subject: &str,
        max: u64,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.exec(
            "DELETE FROM rate_limit_hits WHERE limiter = ?1 AND at < ?2",
            args![limiter, time_text(since)],
        )?;
        let hits: u64 = self.conn.value(
            "SELECT COUNT(*) FROM rate_limit_hits WHERE limiter = ?1 AND subject = ?2",
            args![limiter, subject],
        )?;
        if hits >= max {
            return Ok(false);
        }
        self.exec(
            "INSERT INTO rate_limit_hits (limiter, subject, at) VALUES (?1, ?2, ?3)",
            args![limiter, subject, time_text(now)],
        )?;
        Ok(true)
    }

    fn commit(mut self: Box<Self>) -> Result<()> {
        self.conn.batch("COMMIT")?;
        self.open = false;
        Ok(())
    }
}
