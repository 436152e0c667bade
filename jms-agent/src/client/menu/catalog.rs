//! The menu's rows, made once from `Response::Assets`, and the search
//! over them: whitespace-separated terms, each a case-insensitive
//! substring of the name, the address or a node path; every term must
//! match.

use jms_core::model::{Action, Protocol};
use jms_proto::ListedAsset;

/// One granted asset as the menu shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Stable number (1-based position in the daemon's name-ordered list):
    /// the same whatever the search.
    pub id: usize,
    pub name: String,
    pub address: String,
    /// Node paths, joined with ", ".
    pub nodes: String,
    /// Accounts she may log in with over ssh (`connect`), in the daemon's
    /// order; virtual ones (`@INPUT`, `@USER`, `@ANON`) included.
    pub accounts: Vec<Choice>,
    /// Lowercased name, address and nodes, for the search.
    haystack: String,
}

/// An account she may pick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// What goes before `@asset` (`root`, `@INPUT`).
    pub name: String,
    /// The login on the target, for real accounts.
    pub username: Option<String>,
}

impl Choice {
    /// What the account logs in as, for the engineer.
    pub fn describe(&self, user: &str) -> String {
        match (self.name.as_str(), &self.username) {
            (_, Some(username)) => username.clone(),
            ("@INPUT", None) => "you type username and password".into(),
            ("@USER", None) => format!("{user}, you type the password"),
            ("@ANON", None) => "no credential: the target asks".into(),
            (_, None) => String::new(),
        }
    }
}

/// Every row, in the daemon's order.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    entries: Vec<Entry>,
}

/// Control characters (an escape sequence in a name) shown as `?`.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

impl Catalog {
    pub fn new(assets: Vec<ListedAsset>) -> Catalog {
        let entries = assets
            .into_iter()
            .enumerate()
            .map(|(i, asset)| {
                let name = printable(&asset.name);
                let address = printable(&asset.address);
                let nodes = printable(&asset.nodes.join(", "));
                let accounts = asset
                    .accounts
                    .iter()
                    .filter(|a| {
                        a.protocols.contains(&Protocol::Ssh) && a.actions.contains(&Action::Connect)
                    })
                    .map(|a| Choice {
                        name: printable(&a.name),
                        username: a.username.as_deref().map(printable),
                    })
                    .collect();
                let haystack = format!("{name}\n{address}\n{nodes}").to_lowercase();
                Entry {
                    id: i + 1,
                    name,
                    address,
                    nodes,
                    accounts,
                    haystack,
                }
            })
            .collect();
        Catalog { entries }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The row at `index` (0-based).
    pub fn get(&self, index: usize) -> &Entry {
        &self.entries[index]
    }

    /// The row numbered `id`.
    pub fn by_id(&self, id: usize) -> Option<usize> {
        (1..=self.entries.len()).contains(&id).then(|| id - 1)
    }

    /// The row named exactly `name`.
    pub fn by_name(&self, name: &str) -> Option<usize> {
        self.entries.iter().position(|e| e.name == name)
    }

    /// Every row index.
    pub fn all(&self) -> Vec<u32> {
        (0..self.entries.len() as u32).collect()
    }

    /// The indices among `within` whose rows match every term of `query`.
    pub fn search(&self, within: &[u32], query: &Query) -> Vec<u32> {
        if query.terms.is_empty() {
            return within.to_vec();
        }
        within
            .iter()
            .copied()
            .filter(|&i| query.matches(&self.entries[i as usize]))
            .collect()
    }
}

/// A parsed search.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    terms: Vec<String>,
}

impl Query {
    pub fn new(text: &str) -> Query {
        Query {
            terms: text.split_whitespace().map(str::to_lowercase).collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    pub fn matches(&self, entry: &Entry) -> bool {
        self.terms
            .iter()
            .all(|t| entry.haystack.contains(t.as_str()))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use jms_proto::ListedAccount;

    pub fn account(name: &str, ssh: bool, connect: bool) -> ListedAccount {
        ListedAccount {
            name: name.into(),
            username: (!name.starts_with('@')).then(|| name.into()),
            protocols: if ssh {
                vec![Protocol::Ssh, Protocol::Sftp]
            } else {
                vec![Protocol::Sftp]
            },
            actions: if connect {
                vec![Action::Connect, Action::Upload]
            } else {
                vec![Action::Download]
            },
        }
    }

    pub fn asset(name: &str, address: &str, node: &str, accounts: &[&str]) -> ListedAsset {
        ListedAsset {
            name: name.into(),
            address: address.into(),
            nodes: vec![node.into()],
            accounts: accounts.iter().map(|a| account(a, true, true)).collect(),
        }
    }

    /// `n` assets `host-00001`… in nodes /Default/dc{i%7}, two accounts.
    pub fn many(n: usize) -> Vec<ListedAsset> {
        (1..=n)
            .map(|i| {
                asset(
                    &format!("host-{i:05}"),
                    &format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256),
                    &format!("/Default/dc{}", i % 7),
                    &["root", "@INPUT"],
                )
            })
            .collect()
    }

    fn names(catalog: &Catalog, rows: &[u32]) -> Vec<String> {
        rows.iter()
            .map(|&i| catalog.get(i as usize).name.clone())
            .collect()
    }

    #[test]
    fn search_matches_name_address_and_node_case_insensitively() {
        let catalog = Catalog::new(vec![
            asset("web01", "10.0.0.1", "/Default/prod/web", &["root"]),
            asset("web02", "10.0.0.2", "/Default/prod/web", &["root"]),
            asset("db01", "10.0.1.1", "/Default/prod/db", &["postgres"]),
            asset("Test-Box", "192.168.7.7", "/Default/test", &["root"]),
        ]);
        let all = catalog.all();
        let find = |q: &str| names(&catalog, &catalog.search(&all, &Query::new(q)));
        assert_eq!(find("web"), ["web01", "web02"]);
        assert_eq!(find("10.0.1."), ["db01"]);
        assert_eq!(find("/prod/db"), ["db01"]);
        assert_eq!(find("test-box"), ["Test-Box"], "case-insensitive");
        assert_eq!(find("PROD 01"), ["web01", "db01"], "every term must match");
        assert_eq!(find(""), ["web01", "web02", "db01", "Test-Box"]);
        assert!(find("nothing-like-it").is_empty());
        // Accounts are not searched: "postgres" names no asset.
        assert!(find("postgres").is_empty());
    }

    #[test]
    fn only_ssh_connect_accounts_are_offered() {
        let mut web = asset("web01", "10.0.0.1", "/D", &[]);
        web.accounts = vec![
            account("root", true, true),
            account("sftp-only", false, true),
            account("no-connect", true, false),
            account("@INPUT", true, true),
        ];
        let catalog = Catalog::new(vec![web]);
        let names: Vec<&str> = catalog
            .get(0)
            .accounts
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, ["root", "@INPUT"]);
        assert_eq!(catalog.get(0).accounts[0].describe("alice"), "root");
        assert!(catalog.get(0).accounts[1]
            .describe("alice")
            .contains("type"));
    }

    #[test]
    fn ids_are_stable_and_lookups_work() {
        let catalog = Catalog::new(many(30));
        assert_eq!(catalog.by_id(1), Some(0));
        assert_eq!(catalog.by_id(30), Some(29));
        assert_eq!(catalog.by_id(0), None);
        assert_eq!(catalog.by_id(31), None);
        assert_eq!(catalog.by_name("host-00007"), Some(6));
        assert_eq!(catalog.get(6).id, 7);
    }

    #[test]
    fn escape_sequences_in_names_are_neutralised() {
        let catalog = Catalog::new(vec![asset("evil\u{1b}[2J", "1.2.3.4\n", "/D", &["root"])]);
        assert_eq!(catalog.get(0).name, "evil?[2J");
        assert_eq!(catalog.get(0).address, "1.2.3.4?");
    }

    #[test]
    fn refining_a_search_within_its_results_equals_searching_all() {
        let catalog = Catalog::new(many(2_000));
        let all = catalog.all();
        let first = catalog.search(&all, &Query::new("dc3"));
        let refined = catalog.search(&first, &Query::new("dc3 host-001"));
        assert_eq!(refined, catalog.search(&all, &Query::new("dc3 host-001")));
        assert!(!refined.is_empty());
    }
}
