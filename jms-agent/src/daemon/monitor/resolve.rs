//! From `[account@]asset` to a target and a login, with the grant engine:
//! which asset, which account, allowed for this protocol and action now,
//! and how to log in (vaulted password or key, typed credentials, nothing).
//!
//! Refusals are one line that names nothing the user cannot see: an asset
//! she has no grant for at all is "no such asset", exactly like an unknown
//! one; reasons about her own grants (expired, protocol or action not
//! granted) are hers to know.

use chrono::{DateTime, Utc};
use jms_core::model::{alias, Action, Protocol, SecretType};
use jms_core::{AccountRef, Decision, Policy, Query, QueryError};

use crate::daemon::target::{Credential, Login, Resolved, TargetSpec};

/// Resolves `spec` for `user` needing `protocol` and `action` at `at`;
/// `Err` is the line for the engineer.
pub fn resolve(
    policy: &Policy,
    user: &str,
    spec: &TargetSpec,
    protocol: Protocol,
    action: Action,
    at: DateTime<Utc>,
) -> Result<Resolved, String> {
    let no_such = || format!("no such asset: {}", spec.asset);
    let granted = match policy.accounts(user, &spec.asset, at) {
        Ok(granted) => granted,
        Err(QueryError::UnknownAsset(_)) | Err(QueryError::UnknownUser(_)) => return Err(no_such()),
    };
    let decide = |account: Option<&str>| {
        policy.decide(&Query {
            user,
            asset: &spec.asset,
            account,
            protocol: Some(protocol),
            action,
            at,
        })
    };
    let asset_name = &spec.asset;
    if granted.is_empty() {
        // Only a user with some grant naming this asset learns more.
        return match decide(spec.account.as_deref()) {
            Ok(Decision::Deny(reason))
                if !reason.starts_with("no grant gives") && !reason.contains(" is disabled") =>
            {
                Err(format!("{asset_name}: {reason}"))
            }
            _ => Err(no_such()),
        };
    }
    let usable = |g: &&jms_core::GrantedAccount<'_>| {
        g.protocols.contains(protocol) && g.actions.contains(action)
    };
    let chosen = match &spec.account {
        Some(name) => {
            let by_name: Vec<_> = granted
                .iter()
                .filter(|g| g.account.name() == name)
                .collect();
            let found = if by_name.is_empty() && !name.starts_with('@') {
                // `deploy@web01` may give the login name rather than the account's.
                let by_username: Vec<_> = granted
                    .iter()
                    .filter(|g| matches!(g.account, AccountRef::Real(a) if &a.username == name))
                    .collect();
                match by_username.as_slice() {
                    [one] => Some(*one),
                    [] => None,
                    _ => {
                        return Err(format!(
                            "{asset_name}: several accounts log in as {name}; choose one: {}",
                            choices(&by_username, asset_name)
                        ))
                    }
                }
            } else {
                by_name.first().copied()
            };
            match found {
                Some(g) => g,
                None => {
                    return Err(match decide(Some(name)) {
                        Ok(Decision::Deny(reason)) => format!("{asset_name}: {reason}"),
                        _ => format!("{asset_name}: no account {name} for you"),
                    })
                }
            }
        }
        None => {
            let candidates: Vec<_> = granted.iter().filter(usable).collect();
            match candidates.as_slice() {
                [one] => *one,
                [] => {
                    return Err(match decide(None) {
                        Ok(Decision::Deny(reason)) => format!("{asset_name}: {reason}"),
                        _ => format!("{asset_name}: no account allows {protocol} {action}"),
                    })
                }
                several => {
                    return Err(format!(
                        "{asset_name}: choose an account: {}",
                        choices(several, asset_name)
                    ))
                }
            }
        }
    };
    let account = chosen.account.name().to_string();
    match decide(Some(&account)) {
        Ok(Decision::Allow) => {}
        Ok(Decision::Deny(reason)) => return Err(format!("{asset_name}: {reason}")),
        Err(_) => return Err(no_such()),
    }
    let login = match chosen.account {
        AccountRef::Real(real) => match (&real.secret, real.secret_type) {
            (Some(secret), SecretType::Password) => Login::Vault {
                username: real.username.clone(),
                credential: Credential::Password(secret.clone()),
            },
            (Some(secret), SecretType::SshKey) => Login::Vault {
                username: real.username.clone(),
                credential: Credential::Key(secret.clone()),
            },
            (None, _) => Login::Ask {
                username: Some(real.username.clone()),
            },
        },
        AccountRef::Input => Login::Ask { username: None },
        AccountRef::SameName => Login::Ask {
            username: Some(user.to_string()),
        },
        AccountRef::Anon => Login::Anon {
            username: user.to_string(),
        },
    };
    let asset = policy.asset(asset_name).cloned().ok_or_else(no_such)?;
    Ok(Resolved {
        asset,
        account,
        login,
    })
}

/// `root@web01 or deploy@web01`, `a@x, b@x or c@x`.
fn choices(accounts: &[&jms_core::GrantedAccount<'_>], asset: &str) -> String {
    let names: Vec<String> = accounts
        .iter()
        .map(|g| format!("{}@{asset}", g.account.name()))
        .collect();
    match names.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// Is `name` one of the virtual account aliases?
pub fn is_alias(name: &str) -> bool {
    [alias::ALL, alias::INPUT, alias::USER, alias::ANON].contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = "\
users:
  - {username: alice, groups: [ops]}
  - {username: bob}
  - {username: carol}
user_groups: [{name: ops}]
nodes: [/Default/prod]
assets:
  - name: web01
    address: 127.0.0.2
    protocols: [{name: ssh, port: 2222}, {name: sftp, port: 2222}]
    nodes: [/Default/prod]
    accounts:
      - {name: root, username: root, secret_type: password, secret: rootpw}
      - {name: deploy, username: deploy, secret_type: ssh_key, secret: KEY}
  - name: db01
    address: 127.0.0.3
    protocols: [{name: ssh, port: 22}]
    accounts:
      - {name: dba, username: postgres, secret_type: password}
  - name: hidden
    address: 127.0.0.4
    protocols: [{name: ssh, port: 22}]
grants:
  - {name: ops-prod, user_groups: [ops], nodes: [/Default/prod], accounts: ['@ALL'], protocols: [all], actions: [all]}
  - {name: alice-db, users: [alice], assets: [db01], accounts: [dba, '@INPUT', '@ANON'], protocols: [ssh], actions: [connect]}
  - {name: bob-old, users: [bob], assets: [web01], accounts: [root], protocols: [all], actions: [all], date_expired: 2020-01-01}
  - {name: bob-sftp, users: [bob], assets: [db01], accounts: [dba], protocols: [sftp], actions: [all]}
  - {name: carol-upload, users: [carol], assets: [web01], accounts: [deploy], protocols: [ssh], actions: [upload]}
";

    fn policy() -> Policy {
        Policy::parse(
            POLICY,
            jms_core::Format::Yaml,
            "test",
            std::path::Path::new("."),
        )
        .unwrap()
    }

    fn run(user: &str, target: &str) -> Result<Resolved, String> {
        resolve(
            &policy(),
            user,
            &TargetSpec::parse(target).unwrap(),
            Protocol::Ssh,
            Action::Connect,
            Utc::now(),
        )
    }

    #[test]
    fn targets_parse_at_the_last_at() {
        assert_eq!(
            TargetSpec::parse("root@web01"),
            Some(TargetSpec {
                account: Some("root".into()),
                asset: "web01".into()
            })
        );
        assert_eq!(
            TargetSpec::parse("@INPUT@web01"),
            Some(TargetSpec {
                account: Some("@INPUT".into()),
                asset: "web01".into()
            })
        );
        assert_eq!(TargetSpec::parse("web01").unwrap().account, None);
        assert_eq!(TargetSpec::parse("@web01"), None);
        assert_eq!(TargetSpec::parse("root@"), None);
    }

    #[test]
    fn named_accounts_resolve_with_their_vaulted_secret() {
        let r = run("alice", "root@web01").unwrap();
        assert_eq!(r.account, "root");
        assert_eq!(r.port(), 2222);
        assert!(
            matches!(&r.login, Login::Vault { username, credential: Credential::Password(s) } if username == "root" && s.expose() == "rootpw")
        );
        let r = run("alice", "deploy@web01").unwrap();
        assert!(matches!(
            &r.login,
            Login::Vault {
                credential: Credential::Key(_),
                ..
            }
        ));
    }

    #[test]
    fn several_accounts_must_be_chosen() {
        assert_eq!(
            run("alice", "web01").unwrap_err(),
            "web01: choose an account: root@web01 or deploy@web01"
        );
        assert_eq!(
            run("alice", "db01").unwrap_err(),
            "db01: choose an account: dba@db01, @INPUT@db01 or @ANON@db01"
        );
    }

    #[test]
    fn virtual_accounts_and_secretless_accounts() {
        assert!(matches!(
            run("alice", "@INPUT@db01").unwrap().login,
            Login::Ask { username: None }
        ));
        assert!(
            matches!(run("alice", "@ANON@db01").unwrap().login, Login::Anon { ref username } if username == "alice")
        );
        assert!(
            matches!(run("alice", "dba@db01").unwrap().login, Login::Ask { username: Some(ref u) } if u == "postgres")
        );
        // The login name works in place of the account name.
        assert_eq!(run("alice", "postgres@db01").unwrap().account, "dba");
    }

    #[test]
    fn refusals_name_nothing_unseen() {
        assert_eq!(run("alice", "nosuch").unwrap_err(), "no such asset: nosuch");
        assert_eq!(run("alice", "hidden").unwrap_err(), "no such asset: hidden");
        assert_eq!(run("bob", "hidden").unwrap_err(), "no such asset: hidden");
        let expired = run("bob", "web01").unwrap_err();
        assert!(
            expired.starts_with("web01: ") && expired.contains("expired"),
            "{expired}"
        );
        let protocol = run("bob", "db01").unwrap_err();
        assert!(protocol.contains("ssh"), "{protocol}");
        let action = run("carol", "web01").unwrap_err();
        assert!(action.contains("connect"), "{action}");
        let unknown_account = run("alice", "nobody@web01").unwrap_err();
        assert!(unknown_account.starts_with("web01: "), "{unknown_account}");
    }
}
