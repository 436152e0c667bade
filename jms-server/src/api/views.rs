//! What reads return: the policy model's fields plus the server's own
//! (ids, uid/gid, times), with every secret replaced by `has_…: bool`.

use chrono::{DateTime, Utc};
use jms_core::model::{AssetProtocol, CommandFilter, Grant, SecretType, User, UserGroup};
use serde::Serialize;

use crate::store::{
    AccountRow, AssetRow, FilterRow, GrantRow, GroupRow, ListQuery, NodeRow, Page, UserRow,
};

/// One page of a list.
#[derive(Debug, Serialize)]
pub struct PageView<T> {
    pub items: Vec<T>,
    /// Rows matching the query in all.
    pub total: u64,
    pub limit: u32,
    pub offset: u64,
}

impl<T> PageView<T> {
    pub fn new<R>(page: Page<R>, query: &ListQuery, view: impl FnMut(R) -> T) -> Self {
        PageView {
            items: page.items.into_iter().map(view).collect(),
            total: page.total,
            limit: query.limit,
            offset: query.offset,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct UserView {
    #[serde(flatten)]
    pub user: User,
    pub uid: u32,
    pub has_password: bool,
    pub has_totp: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<UserRow> for UserView {
    fn from(row: UserRow) -> Self {
        UserView {
            user: row.user,
            uid: row.uid,
            has_password: row.password_hash.is_some(),
            has_totp: row.totp_secret.is_some(),
            created_at: row.stamps.created_at,
            updated_at: row.stamps.updated_at,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct GroupView {
    #[serde(flatten)]
    pub group: UserGroup,
    pub gid: u32,
    /// Usernames of the members.
    pub members: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl GroupView {
    pub fn new(row: GroupRow, members: Vec<String>) -> Self {
        GroupView {
            group: row.group,
            gid: row.gid,
            members,
            created_at: row.stamps.created_at,
            updated_at: row.stamps.updated_at,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct NodeView {
    pub id: i64,
    pub path: String,
    pub created_at: DateTime<Utc>,
}

impl From<NodeRow> for NodeView {
    fn from(row: NodeRow) -> Self {
        NodeView {
            id: row.id,
            path: row.path,
            created_at: row.created_at,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct AccountView {
    pub asset: String,
    pub name: String,
    pub username: String,
    pub secret_type: SecretType,
    pub privileged: bool,
    /// The secret itself is never returned.
    pub has_secret: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sudo: Option<String>,
    /// The last verification (a verify job, or a push's or rotation's
    /// login): its result and time; null when never verified.
    pub verified: Option<bool>,
    pub verified_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl AccountView {
    /// Adds the account's last verification from `checks`.
    pub fn with_check(
        mut self,
        checks: &std::collections::HashMap<(String, String), crate::store::AccountCheck>,
    ) -> AccountView {
        if let Some(check) = checks.get(&(self.asset.clone(), self.name.clone())) {
            self.verified = Some(check.ok);
            self.verified_at = Some(check.at);
        }
        self
    }
}

impl From<AccountRow> for AccountView {
    fn from(row: AccountRow) -> Self {
        AccountView {
            asset: row.asset,
            name: row.account.name,
            username: row.account.username,
            secret_type: row.account.secret_type,
            privileged: row.account.privileged,
            has_secret: row.secret.is_some(),
            shell: row.account.shell,
            groups: row.account.groups,
            sudo: row.account.sudo,
            verified: None,
            verified_at: None,
            created_at: row.stamps.created_at,
            updated_at: row.stamps.updated_at,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct AssetView {
    pub name: String,
    pub address: String,
    pub protocols: Vec<AssetProtocol>,
    pub nodes: Vec<String>,
    pub is_active: bool,
    pub host_keys: Vec<String>,
    /// Its account jobs run only on bastions of this zone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    pub accounts: Vec<AccountView>,
    /// What the last discovery found on it (hostname, OS, kernel, CPUs,
    /// memory); kept by the server, not in the policy.
    pub details: Option<crate::store::AssetFacts>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl AssetView {
    pub fn new(
        row: AssetRow,
        accounts: Vec<AccountRow>,
        details: Option<crate::store::AssetFacts>,
    ) -> Self {
        let asset = row.asset;
        AssetView {
            name: asset.name,
            address: asset.address,
            protocols: asset.protocols,
            nodes: asset.nodes,
            is_active: asset.is_active,
            host_keys: asset.host_keys,
            zone: asset.zone,
            accounts: accounts.into_iter().map(AccountView::from).collect(),
            details,
            created_at: row.stamps.created_at,
            updated_at: row.stamps.updated_at,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct GrantView {
    #[serde(flatten)]
    pub grant: Grant,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<GrantRow> for GrantView {
    fn from(row: GrantRow) -> Self {
        GrantView {
            grant: row.grant,
            created_at: row.stamps.created_at,
            updated_at: row.stamps.updated_at,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct FilterView {
    #[serde(flatten)]
    pub filter: CommandFilter,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<FilterRow> for FilterView {
    fn from(row: FilterRow) -> Self {
        FilterView {
            filter: row.filter,
            created_at: row.stamps.created_at,
            updated_at: row.stamps.updated_at,
        }
    }
}
