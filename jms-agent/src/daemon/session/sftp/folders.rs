//! The folders of the virtual root, from the grants.
//!
//! An account can be used over SFTP when a grant active now gives the user
//! protocol `sftp` and action `connect` on it, the asset offers sftp, and
//! the bastion holds its credential (a real account of the asset:
//! `@INPUT`, a typed `@USER` and `@ANON` need a prompt or a login an SFTP
//! stream cannot carry, so they are not offered here).
//!
//! Naming rule: an asset with one such account is the folder `/web01`; an
//! asset with several is one folder per account, `/root@web01`,
//! `/deploy@web01`, named by the account's name in the policy. The
//! `account@asset` spelling is always accepted, even when the plain one is
//! listed; the plain name of an asset with several accounts is refused
//! with the choices, as for `ssh bastion web01`.

pub use crate::wire::{Folder, Unresolved};
use chrono::{DateTime, Utc};
use jms_core::model::{Action, Protocol};
use jms_core::{AccountRef, GrantedAccount, Policy, Query};

use crate::daemon::session::transfer::AssetSpec;

fn usable(granted: &GrantedAccount<'_>) -> bool {
    matches!(granted.account, AccountRef::Real(_))
        && granted.protocols.contains(Protocol::Sftp)
        && granted.actions.contains(Action::Connect)
}

/// The root's folders now, in asset-name order: (folder name, folder).
pub fn list(policy: &Policy, user: &str, at: DateTime<Utc>) -> Vec<(String, Folder)> {
    let Ok(granted) = policy.list(user, at) else {
        return Vec::new();
    };
    let mut folders = Vec::new();
    for asset in granted.iter() {
        let accounts: Vec<&str> = asset
            .accounts
            .iter()
            .filter(|g| usable(g))
            .map(|g| g.account.name())
            .collect();
        let qualified = accounts.len() > 1;
        for account in accounts {
            let name = if qualified {
                format!("{account}@{}", asset.asset.name)
            } else {
                asset.asset.name.clone()
            };
            folders.push((
                name,
                Folder {
                    asset: asset.asset.name.clone(),
                    account: account.to_string(),
                },
            ));
        }
    }
    folders
}

/// The folder a name (`web01`, `root@web01`) stands for now.
pub fn resolve(
    policy: &Policy,
    user: &str,
    name: &str,
    at: DateTime<Utc>,
) -> Result<Folder, Unresolved> {
    let missing = || Unresolved::NoSuchAsset(name.to_string());
    let spec = AssetSpec::parse(name).ok_or_else(missing)?;
    let granted = policy
        .accounts(user, &spec.asset, at)
        .map_err(|_| missing())?;
    let accounts: Vec<&str> = granted
        .iter()
        .filter(|g| usable(g))
        .map(|g| g.account.name())
        .collect();
    let account = match (&spec.account, accounts.as_slice()) {
        (Some(wanted), _) => accounts.iter().find(|a| *a == wanted).ok_or_else(missing)?,
        (None, [only]) => only,
        (None, []) => return Err(missing()),
        (None, several) => {
            let choices: Vec<String> = several
                .iter()
                .map(|a| format!("{a}@{}", spec.asset))
                .collect();
            return Err(Unresolved::Ambiguous(format!(
                "{}: choose an account: {}",
                spec.asset,
                choices.join(" or ")
            )));
        }
    };
    Ok(Folder {
        asset: spec.asset.clone(),
        account: account.to_string(),
    })
}

/// Whether the user may do `action` in `folder` now; `Err` holds the
/// engine's reason.
pub fn check(
    policy: &Policy,
    user: &str,
    folder: &Folder,
    action: Action,
    at: DateTime<Utc>,
) -> Result<(), String> {
    let query = Query {
        user,
        asset: &folder.asset,
        account: Some(&folder.account),
        protocol: Some(Protocol::Sftp),
        action,
        at,
    };
    match policy.decide(&query) {
        Ok(decision) if decision.is_allow() => Ok(()),
        Ok(jms_core::Decision::Deny(reason)) => Err(reason),
        Ok(_) => Err(format!("{action} is not granted")),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jms_core::Format;
    use std::path::Path;

    const POLICY: &str = r#"
users:
  - {username: alice}
  - {username: bob}
assets:
  - name: web01
    address: 10.0.0.1
    protocols: [{name: ssh, port: 22}, {name: sftp, port: 22}]
    accounts:
      - {name: root, username: root, secret_type: password, secret: x}
      - {name: deploy, username: deploy, secret_type: password, secret: y}
  - name: db01
    address: 10.0.0.2
    protocols: [{name: ssh, port: 22}, {name: sftp, port: 22}]
    accounts:
      - {name: postgres, username: postgres, secret_type: password, secret: p}
  - name: ssh01
    address: 10.0.0.3
    protocols: [{name: ssh, port: 22}]
    accounts:
      - {name: root, username: root, secret_type: password, secret: x}
  - name: secret01
    address: 10.0.0.4
    protocols: [{name: sftp, port: 22}]
    accounts:
      - {name: root, username: root, secret_type: password, secret: x}
grants:
  - {name: a-web, users: [alice], assets: [web01], accounts: ["@ALL"], protocols: [all], actions: [connect, download]}
  - {name: a-db, users: [alice], assets: [db01], accounts: ["@ALL", "@INPUT"], protocols: [sftp], actions: [all]}
  - {name: a-ssh, users: [alice], assets: [ssh01], accounts: ["@ALL"], protocols: [all], actions: [all]}
  - {name: b-web, users: [bob], assets: [web01], accounts: [deploy], protocols: [sftp], actions: [connect, upload]}
  - {name: b-noconnect, users: [bob], assets: [db01], accounts: ["@ALL"], protocols: [sftp], actions: [upload]}
"#;

    fn policy() -> Policy {
        Policy::parse(POLICY, Format::Yaml, "t.yaml", Path::new(".")).expect("policy")
    }

    fn folder(asset: &str, account: &str) -> Folder {
        Folder {
            asset: asset.into(),
            account: account.into(),
        }
    }

    #[test]
    fn several_accounts_get_one_folder_each_and_one_account_the_plain_name() {
        let names: Vec<String> = list(&policy(), "alice", Utc::now())
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, vec!["db01", "root@web01", "deploy@web01"]);
        let names: Vec<String> = list(&policy(), "bob", Utc::now())
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            names,
            vec!["web01"],
            "bob has one sftp account on web01 and no connect on db01"
        );
    }

    #[test]
    fn names_resolve_to_folders() {
        let p = policy();
        let now = Utc::now();
        assert_eq!(
            resolve(&p, "alice", "db01", now),
            Ok(folder("db01", "postgres"))
        );
        assert_eq!(
            resolve(&p, "alice", "postgres@db01", now),
            Ok(folder("db01", "postgres"))
        );
        assert_eq!(
            resolve(&p, "alice", "root@web01", now),
            Ok(folder("web01", "root"))
        );
        assert_eq!(
            resolve(&p, "bob", "web01", now),
            Ok(folder("web01", "deploy"))
        );
        assert_eq!(
            resolve(&p, "bob", "deploy@web01", now),
            Ok(folder("web01", "deploy"))
        );
    }

    #[test]
    fn unusable_names_say_no_such_asset() {
        let p = policy();
        let now = Utc::now();
        for (user, name) in [
            ("alice", "ssh01"),
            ("alice", "secret01"),
            ("alice", "nope"),
            ("alice", "@INPUT@db01"),
            ("bob", "root@web01"),
            ("bob", "db01"),
            ("mallory", "web01"),
            ("alice", ""),
        ] {
            assert_eq!(
                resolve(&p, user, name, now),
                Err(Unresolved::NoSuchAsset(name.into())),
                "{user} must not reach {name:?} over sftp"
            );
        }
    }

    #[test]
    fn the_plain_name_of_several_accounts_lists_the_choices() {
        let err = resolve(&policy(), "alice", "web01", Utc::now()).unwrap_err();
        assert_eq!(
            err.message(),
            "web01: choose an account: root@web01 or deploy@web01"
        );
    }

    #[test]
    fn actions_are_checked_per_folder() {
        let p = policy();
        let now = Utc::now();
        assert_eq!(
            check(&p, "alice", &folder("web01", "root"), Action::Download, now),
            Ok(())
        );
        let denied = check(&p, "alice", &folder("web01", "root"), Action::Upload, now).unwrap_err();
        assert!(denied.contains("upload"), "{denied}");
        assert_eq!(
            check(&p, "bob", &folder("web01", "deploy"), Action::Upload, now),
            Ok(())
        );
        assert!(check(&p, "bob", &folder("web01", "deploy"), Action::Delete, now).is_err());
    }
}
