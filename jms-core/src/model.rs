//! The domain model as it appears in a policy file: users, groups, nodes,
//! assets with their accounts, grants and command filters.
//!
//! These types are what serde reads (YAML or JSON, same schema) and what the
//! central server exports. They carry names, not ids; `crate::policy` checks
//! every reference and `crate::engine` compiles them into indexes.

use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;

use chrono::{DateTime, NaiveDate, NaiveTime, Utc, Weekday};
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A whole policy document: the top level of a policy file.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDocument {
    #[serde(default)]
    pub users: Vec<User>,
    #[serde(default)]
    pub user_groups: Vec<UserGroup>,
    /// Node paths such as `/Default/prod/web`; parents are implied.
    #[serde(default)]
    pub nodes: Vec<String>,
    #[serde(default)]
    pub assets: Vec<Asset>,
    #[serde(default)]
    pub grants: Vec<Grant>,
    #[serde(default)]
    pub command_filters: Vec<CommandFilter>,
    /// Scheduled account jobs, kept by the server (bastions never get
    /// them). Absent: `policy apply` leaves the server's plans as they
    /// are; present (even empty): it makes them equal to these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plans: Option<Vec<Plan>>,
}

/// A scheduled account job: `kind` (rotate, verify, push, discover) on
/// every asset of `node` (and below), or on `asset` (only `account` of it
/// when given), every `every_days` days or on the five-field `cron`
/// expression (UTC). The server checks it when the policy is applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub name: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every_days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
}

fn yes() -> bool {
    true
}

fn is_true(value: &bool) -> bool {
    *value
}

/// A person who logs in to the bastion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub username: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub is_active: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_expired: Option<Timestamp>,
    /// Names of the user groups she belongs to.
    #[serde(default)]
    pub groups: Vec<String>,
    /// OpenSSH public keys (`ssh-ed25519 AAAA… comment`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub public_keys: Vec<String>,
    /// Django/JumpServer format `pbkdf2_sha256$ITER$SALT$HASH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<Secret>,
    /// Base32 TOTP secret (RFC 6238); present once she enrolled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp_secret: Option<Secret>,
    #[serde(default, skip_serializing_if = "LoginAcl::is_empty")]
    pub login_acl: LoginAcl,
}

/// Where and when a user may log in to the bastion.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginAcl {
    /// When not empty, logins only from these networks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_from: Vec<IpNet>,
    /// Logins never from these networks (wins over `allow_from`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny_from: Vec<IpNet>,
    /// When not empty, logins only inside one of these weekly windows, in
    /// the bastion's configured time zone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub time_windows: Vec<TimeWindow>,
}

impl LoginAcl {
    pub fn is_empty(&self) -> bool {
        self == &LoginAcl::default()
    }
}

/// A weekly window: on these days, from `from` (inclusive) to `to` (exclusive).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeWindow {
    pub days: Vec<Weekday>,
    #[serde(with = "hour_minute")]
    pub from: NaiveTime,
    #[serde(with = "hour_minute")]
    pub to: NaiveTime,
}

mod hour_minute {
    use chrono::NaiveTime;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(time: &NaiveTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&time.format("%H:%M").to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveTime, D::Error> {
        let text = String::deserialize(d)?;
        if text == "24:00" {
            return Ok(NaiveTime::from_hms_nano_opt(23, 59, 59, 999_999_999).expect("valid"));
        }
        NaiveTime::parse_from_str(&text, "%H:%M")
            .map_err(|_| serde::de::Error::custom(format!("bad time `{text}`: expected HH:MM")))
    }
}

/// A group of users; a grant on a group is a grant on each member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserGroup {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comment: String,
}

/// A host reachable from the bastion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Asset {
    pub name: String,
    pub address: String,
    pub protocols: Vec<AssetProtocol>,
    /// Node paths the asset sits in.
    #[serde(default)]
    pub nodes: Vec<String>,
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub is_active: bool,
    #[serde(default)]
    pub accounts: Vec<Account>,
    /// Pinned SSH host keys (`ssh-ed25519 AAAA…`); when empty, the bastion
    /// trusts the first key it sees and refuses any other afterwards.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_keys: Vec<String>,
    /// The network zone it sits in: its account jobs run only on bastions
    /// an admin put in the same zone; none: any bastion runs them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

impl Asset {
    pub fn offers(&self, protocol: Protocol) -> bool {
        self.protocols.iter().any(|p| p.name == protocol)
    }
}

/// Longest zone label.
pub const MAX_ZONE: usize = 64;

/// A zone label (an asset's, a bastion's): 1-64 of `a-z A-Z 0-9 _ . -`.
pub fn check_zone(zone: &str) -> Result<(), String> {
    let ok = !zone.is_empty()
        && zone.len() <= MAX_ZONE
        && zone
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bad zone {zone:?}: use 1-{MAX_ZONE} of a-z A-Z 0-9 _ . -"
        ))
    }
}

/// A protocol an asset speaks, on a port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetProtocol {
    pub name: Protocol,
    pub port: u16,
}

/// A login on an asset; its secret never leaves the bastion daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    pub name: String,
    pub username: String,
    pub secret_type: SecretType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
    /// File holding the secret, relative to the policy file; read at load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    #[serde(default)]
    pub privileged: bool,
    /// Login shell when jms pushes the account (`/bin/bash` if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
    /// Supplementary groups when jms pushes the account.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// What it may run as root through sudo, as a sudoers command list
    /// (`/usr/bin/systemctl restart nginx`); pushed as a sudoers snippet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sudo: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretType {
    Password,
    SshKey,
}

/// Who × what × as whom × how × which actions × when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub name: String,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub user_groups: Vec<String>,
    #[serde(default)]
    pub assets: Vec<String>,
    #[serde(default)]
    pub nodes: Vec<String>,
    /// `@ALL`, `@INPUT`, `@USER`, `@ANON` or account names.
    pub accounts: Vec<String>,
    pub protocols: Vec<ProtocolChoice>,
    pub actions: Vec<ActionChoice>,
    /// Start of the window; absent means "since always" (the central
    /// server fills in the creation time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_start: Option<Timestamp>,
    /// End of the window (exclusive); absent means never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_expired: Option<Timestamp>,
    #[serde(default = "yes")]
    pub is_active: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comment: String,
}

/// A protocol the bastion serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Ssh,
    Sftp,
}

impl Protocol {
    pub const ALL: [Protocol; 2] = [Protocol::Ssh, Protocol::Sftp];

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Ssh => "ssh",
            Protocol::Sftp => "sftp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Protocol::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown protocol `{s}` (expected ssh or sftp)"))
    }
}

/// One entry of a grant's `protocols`: `all` or a protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProtocolChoice {
    All,
    Ssh,
    Sftp,
}

/// What a user may do on an asset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Connect,
    Upload,
    Download,
    Delete,
    Copy,
    Paste,
    Share,
}

impl Action {
    pub const ALL: [Action; 7] = [
        Action::Connect,
        Action::Upload,
        Action::Download,
        Action::Delete,
        Action::Copy,
        Action::Paste,
        Action::Share,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Connect => "connect",
            Action::Upload => "upload",
            Action::Download => "download",
            Action::Delete => "delete",
            Action::Copy => "copy",
            Action::Paste => "paste",
            Action::Share => "share",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Action {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Action::ALL.into_iter().find(|a| a.as_str() == s).ok_or_else(|| {
            format!(
                "unknown action `{s}` (expected connect, upload, download, delete, copy, paste or share)"
            )
        })
    }
}

/// One entry of a grant's `actions`: `all` or an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionChoice {
    All,
    Connect,
    Upload,
    Download,
    Delete,
    Copy,
    Paste,
    Share,
}

/// A protocol or an action: something a [`FlagSet`] holds.
pub trait Flag: Copy + 'static {
    /// Every value, in display order.
    const EVERY: &'static [Self];
    fn bit(self) -> u8;
}

impl Flag for Protocol {
    const EVERY: &'static [Self] = &Protocol::ALL;
    fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl Flag for Action {
    const EVERY: &'static [Self] = &Action::ALL;
    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// An entry of a grant's list: `all`, or one flag.
pub trait Choice<T: Flag>: Copy {
    /// `None` for `all`.
    fn flag(self) -> Option<T>;
}

impl Choice<Protocol> for ProtocolChoice {
    fn flag(self) -> Option<Protocol> {
        match self {
            ProtocolChoice::All => None,
            ProtocolChoice::Ssh => Some(Protocol::Ssh),
            ProtocolChoice::Sftp => Some(Protocol::Sftp),
        }
    }
}

impl Choice<Action> for ActionChoice {
    fn flag(self) -> Option<Action> {
        match self {
            ActionChoice::All => None,
            ActionChoice::Connect => Some(Action::Connect),
            ActionChoice::Upload => Some(Action::Upload),
            ActionChoice::Download => Some(Action::Download),
            ActionChoice::Delete => Some(Action::Delete),
            ActionChoice::Copy => Some(Action::Copy),
            ActionChoice::Paste => Some(Action::Paste),
            ActionChoice::Share => Some(Action::Share),
        }
    }
}

/// A set of protocols or actions, as a bit set.
pub struct FlagSet<T>(u8, PhantomData<T>);

/// Protocols granted or offered.
pub type ProtocolSet = FlagSet<Protocol>;
/// Actions granted.
pub type ActionSet = FlagSet<Action>;

impl<T: Flag> FlagSet<T> {
    pub const EMPTY: FlagSet<T> = FlagSet(0, PhantomData);

    /// The set a grant's list names (`all` names every flag).
    pub fn from_choices<C: Choice<T>>(choices: &[C]) -> Self {
        let mut set = Self::EMPTY;
        for choice in choices {
            match choice.flag() {
                Some(flag) => set.insert(flag),
                None => T::EVERY.iter().for_each(|f| set.insert(*f)),
            }
        }
        set
    }

    pub fn insert(&mut self, flag: T) {
        self.0 |= flag.bit();
    }
    pub fn contains(self, flag: T) -> bool {
        self.0 & flag.bit() != 0
    }
    pub fn union(self, other: Self) -> Self {
        FlagSet(self.0 | other.0, PhantomData)
    }
    pub fn intersection(self, other: Self) -> Self {
        FlagSet(self.0 & other.0, PhantomData)
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn iter(self) -> impl Iterator<Item = T> {
        T::EVERY.iter().copied().filter(move |f| self.contains(*f))
    }
}

impl ProtocolSet {
    /// The protocols an asset offers.
    pub fn of_asset(asset: &Asset) -> Self {
        let mut set = Self::EMPTY;
        asset.protocols.iter().for_each(|p| set.insert(p.name));
        set
    }
}

// Written out because derives would require `T` itself to be Copy, Eq, ….
impl<T> Clone for FlagSet<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for FlagSet<T> {}
impl<T> Default for FlagSet<T> {
    fn default() -> Self {
        FlagSet(0, PhantomData)
    }
}
impl<T> PartialEq for FlagSet<T> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl<T> Eq for FlagSet<T> {}
impl<T> std::hash::Hash for FlagSet<T> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}
impl<T: Flag + fmt::Debug> fmt::Debug for FlagSet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// Regex rules that deny (or explicitly allow) commands typed on assets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandFilter {
    pub name: String,
    /// 1 (checked first) to 100 (checked last).
    #[serde(default = "default_priority")]
    pub priority: u8,
    pub action: FilterAction,
    /// Regular expressions (Rust `regex` syntax) matched against the command.
    pub rules: Vec<String>,
    /// User names, or `@ALL` for every user.
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub user_groups: Vec<String>,
    /// Asset names, or `@ALL` for every asset.
    #[serde(default)]
    pub assets: Vec<String>,
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Account names, or `@ALL`.
    pub accounts: Vec<String>,
    #[serde(default = "yes")]
    pub is_active: bool,
}

fn default_priority() -> u8 {
    50
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FilterAction {
    Deny,
    Allow,
}

/// What happens to the standard input of an exec without a terminal whose
/// command is a shell or interpreter (`printf 'reboot\n' | ssh bastion
/// 'web01 sh'`): the bastion setting `exec_stdin` (agentd.toml
/// `[sessions]`, the server's `audit` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecStdin {
    /// Each line is checked against the command filters (and logged)
    /// before it is forwarded; a refused line ends the input.
    #[default]
    Check,
    /// Such an exec is refused.
    Refuse,
    /// Forwarded unchecked, as any exec's input.
    Pass,
}

/// What a bastion does when its audit store (event spool, recordings)
/// cannot take more: `refuse` new sessions (and end one whose recording
/// stops), or `continue` unaudited with an alarm. Setting `audit.on_failure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditOnFailure {
    #[default]
    Refuse,
    Continue,
}

/// A secret string (password hash, TOTP seed, account secret).
///
/// `Debug` and `Display` never show it, so it cannot leak through logs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret itself; call only where it is used, never to log.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A point in time, read as RFC 3339 (`2027-12-31T00:00:00Z`) or as a bare
/// date (`2027-12-31`, meaning midnight UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub DateTime<Utc>);

impl Timestamp {
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Ok(at) = DateTime::parse_from_rfc3339(text) {
            return Ok(Timestamp(at.with_timezone(&Utc)));
        }
        if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
            return Ok(Timestamp(day.and_time(NaiveTime::MIN).and_utc()));
        }
        Err(format!(
            "bad date `{text}`: expected RFC 3339 like 2027-12-31T00:00:00Z or a date like 2027-12-31"
        ))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}",
            self.0.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Timestamp::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Account names with a special meaning in a grant's `accounts`.
pub mod alias {
    /// Every account on the asset.
    pub const ALL: &str = "@ALL";
    /// The user types username and password at connect time.
    pub const INPUT: &str = "@INPUT";
    /// The account whose username is the bastion user's name.
    pub const USER: &str = "@USER";
    /// No credential injected.
    pub const ANON: &str = "@ANON";
}

/// The kinds of policy entities a delta names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    Group,
    User,
    Node,
    Asset,
    Account,
    Grant,
    Filter,
}
