//! The interactive menu (`ssh -tt bastion`), driven through a scripted
//! terminal that reads the screen as a person sees it: the list holds
//! exactly the granted assets, search and picking work, q quits cleanly,
//! 3,000 assets page in 80×24, resizes redraw; and (with a real target
//! host) a pick opens the session and its end comes back to the menu.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use jms_e2e::fixture::{self, Keys};
use jms_e2e::target::{Target, DEPLOY_PASSWORD, ROOT_PASSWORD};
use jms_e2e::terminal::{Screen, Terminal};
use jms_e2e::Bastion;

const SHOWS: Duration = Duration::from_secs(15);

const PAGE_DOWN: &[u8] = b"\x1b[6~";
const PAGE_UP: &[u8] = b"\x1b[5~";
const END: &[u8] = b"\x1b[F";
const HOME: &[u8] = b"\x1b[H";
const ESC: &[u8] = b"\x1b";
const CTRL_U: &[u8] = b"\x15";

/// The standard users plus `assets` (YAML list items) and `grants`.
fn policy(keys: &Keys, nodes: &[&str], assets: &str, grants: &str) -> String {
    let mut p = fixture::standard_policy(keys);
    p.push_str("nodes:\n");
    for node in nodes {
        let _ = writeln!(p, "  - {node}");
    }
    let _ = write!(p, "assets:\n{assets}grants:\n{grants}");
    p
}

fn asset(name: &str, address: &str, port: u16, node: &str, accounts: &[(&str, &str)]) -> String {
    let accounts: Vec<String> = accounts
        .iter()
        .map(|(name, secret)| {
            format!(
                "{{name: {name}, username: {name}, secret_type: password, secret: \"{secret}\"}}"
            )
        })
        .collect();
    format!(
        "  - {{name: {name}, address: {address}, protocols: [{{name: ssh, port: {port}}}], nodes: [{node}], accounts: [{}]}}\n",
        accounts.join(", ")
    )
}

/// alice (group ops) is granted everything under /Default/prod (all
/// accounts and @INPUT); dev01 and vault01 are someone else's.
fn small_scene() -> (Bastion, Keys) {
    let (builder, keys) = fixture::standard();
    let assets = [
        asset(
            "web01",
            "10.1.0.1",
            22,
            "/Default/prod/web",
            &[("root", "x"), ("deploy", "x")],
        ),
        asset(
            "web02",
            "10.1.0.2",
            22,
            "/Default/prod/web",
            &[("root", "x")],
        ),
        asset(
            "db01",
            "10.1.1.1",
            22,
            "/Default/prod/db",
            &[("postgres", "x")],
        ),
        asset("dev01", "10.2.0.1", 22, "/Default/dev", &[("root", "x")]),
        asset(
            "vault01",
            "10.3.0.1",
            22,
            "/Default/secret",
            &[("root", "x")],
        ),
    ]
    .concat();
    let grants = "  - {name: ops-prod, user_groups: [ops], nodes: [/Default/prod], accounts: [\"@ALL\", \"@INPUT\"], protocols: [ssh], actions: [connect]}\n\
                  \x20 - {name: dev-dev, user_groups: [dev], nodes: [/Default/dev], accounts: [\"@ALL\"], protocols: [ssh], actions: [connect]}\n";
    let policy = policy(
        &keys,
        &[
            "/Default/prod/web",
            "/Default/prod/db",
            "/Default/dev",
            "/Default/secret",
        ],
        &assets,
        grants,
    );
    (builder.policy(&policy).start(), keys)
}

fn menu_up(terminal: &mut Terminal) -> Screen {
    terminal.wait_for("the menu's prompt", SHOWS, |s| {
        s.rows.last().is_some_and(|r| r.starts_with("Opt>"))
    })
}

/// The asset rows on screen: (id, name) of rows that start with an ID.
fn listed(screen: &Screen) -> Vec<(usize, String)> {
    screen.rows[2..screen.rows.len().saturating_sub(2)]
        .iter()
        .filter_map(|row| {
            let mut words = row.trim_start_matches('>').split_whitespace();
            let id = words.next()?.parse().ok()?;
            Some((id, words.next()?.to_owned()))
        })
        .collect()
}

#[track_caller]
fn assert_quits(terminal: &mut Terminal) {
    terminal.type_slowly("q\r");
    let status = terminal.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "q should end the menu and the ssh session with status 0, got {status:?}; screen:\n{}",
        terminal.screen()
    );
    let screen = terminal.screen();
    assert!(
        !screen.alternate,
        "the menu should leave the alternate screen on exit:\n{screen}"
    );
}

#[test]
fn menu_lists_exactly_the_granted_assets_searches_and_quits_with_q() {
    let (bastion, keys) = small_scene();
    let mut terminal = bastion.ssh_terminal("alice", &keys.alice, &[], None, (100, 24));
    let screen = menu_up(&mut terminal);
    assert!(
        screen.alternate,
        "the menu draws on the alternate screen:\n{screen}"
    );
    assert!(
        screen.rows[0].contains("alice") && screen.rows[0].contains("3 assets"),
        "the title names the user and the count:\n{screen}"
    );
    let names: Vec<String> = listed(&screen).into_iter().map(|(_, n)| n).collect();
    assert_eq!(
        names,
        ["db01", "web01", "web02"],
        "exactly alice's granted assets, in name order:\n{screen}"
    );
    let web01 = screen
        .rows
        .iter()
        .find(|r| r.contains("web01"))
        .expect("web01's row");
    for part in ["10.1.0.1", "/Default/prod/web", "root", "deploy", "@INPUT"] {
        assert!(
            web01.contains(part),
            "web01's row should show {part}: {web01:?}"
        );
    }
    assert!(!screen.contains("dev01") && !screen.contains("vault01"));

    // Type to search: live, by name, address or node.
    terminal.type_slowly("web");
    let screen = terminal.wait_for("the search for web", SHOWS, |s| {
        listed(s).len() == 2 && s.rows[0].contains("search “web”: 2")
    });
    assert_eq!(
        listed(&screen)
            .into_iter()
            .map(|(_, n)| n)
            .collect::<Vec<_>>(),
        ["web01", "web02"],
        "{screen}"
    );
    terminal.send(CTRL_U);
    terminal.type_slowly("/prod/db");
    let screen = terminal.wait_for("the search for /prod/db", SHOWS, |s| listed(s).len() == 1);
    assert_eq!(listed(&screen)[0].1, "db01", "{screen}");
    terminal.send(CTRL_U);
    terminal.type_slowly("10.1.0.2");
    let screen = terminal.wait_for("the search by address", SHOWS, |s| listed(s).len() == 1);
    assert_eq!(listed(&screen)[0].1, "web02", "{screen}");
    terminal.send(CTRL_U);
    terminal.type_slowly("dev01");
    terminal.wait_for_text("No asset matches “dev01”.", SHOWS);

    // An asset she is not granted cannot be picked by name either.
    terminal.type_slowly("\r");
    terminal.wait_for_text("no asset matches “dev01”", SHOWS);

    // Several accounts: the choice, and Esc goes back.
    terminal.send(CTRL_U);
    terminal.type_slowly("web01\r");
    let screen = terminal.wait_for_text("choose an account", SHOWS);
    for account in ["root", "deploy", "@INPUT"] {
        assert!(
            screen.contains(account),
            "the choice offers {account}:\n{screen}"
        );
    }
    assert!(screen
        .rows
        .last()
        .is_some_and(|r| r.starts_with("Account>")));
    terminal.send(ESC);
    terminal.wait_for("back to the list", SHOWS, |s| listed(s).len() == 3);
    assert_quits(&mut terminal);
}

/// 3,000 assets `host-00001`… in nodes /Default/dc0…dc6, granted to ops.
fn big_scene(count: usize) -> (Bastion, Keys) {
    let (builder, keys) = fixture::standard();
    let mut assets = String::new();
    for i in 1..=count {
        assets.push_str(&asset(
            &format!("host-{i:05}"),
            &format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256),
            22,
            &format!("/Default/dc{}", i % 7),
            &[("root", "x")],
        ));
    }
    let nodes: Vec<String> = (0..7).map(|i| format!("/Default/dc{i}")).collect();
    let nodes: Vec<&str> = nodes.iter().map(String::as_str).collect();
    let grants = "  - {name: ops-all, user_groups: [ops], nodes: [/Default], accounts: [\"@ALL\"], protocols: [ssh], actions: [connect]}\n";
    let policy = policy(&keys, &nodes, &assets, grants);
    (builder.policy(&policy).start(), keys)
}

fn ids(screen: &Screen) -> Vec<usize> {
    listed(screen).into_iter().map(|(id, _)| id).collect()
}

#[test]
fn menu_pages_3000_assets_in_80x24_and_redraws_on_resize() {
    let (bastion, keys) = big_scene(3_000);
    let started = Instant::now();
    let mut terminal = bastion.ssh_terminal("alice", &keys.alice, &[], None, (80, 24));
    let screen = menu_up(&mut terminal);
    eprintln!(
        "login to a painted menu of 3,000 assets: {:?}",
        started.elapsed()
    );
    assert!(screen.rows[0].contains("3000 assets"), "{screen}");
    assert_eq!(
        ids(&screen),
        (1..=20).collect::<Vec<_>>(),
        "the first page:\n{screen}"
    );
    assert!(screen.rows[22].contains("Page 1/150"), "{screen}");
    assert_eq!(
        screen.highlighted,
        [2],
        "the first row is highlighted:\n{screen}"
    );
    assert!(
        screen.rows.iter().all(|r| r.chars().count() <= 80),
        "nothing wider than the terminal:\n{screen}"
    );

    terminal.send(PAGE_DOWN);
    let screen = terminal.wait_for("page 2", SHOWS, |s| s.rows[22].contains("Page 2/150"));
    assert_eq!(ids(&screen), (21..=40).collect::<Vec<_>>(), "{screen}");
    terminal.type_slowly("n\r");
    let screen = terminal.wait_for("page 3 by n", SHOWS, |s| s.rows[22].contains("Page 3/150"));
    assert_eq!(ids(&screen)[0], 41, "{screen}");
    terminal.type_slowly("p\r");
    terminal.wait_for("page 2 by p", SHOWS, |s| s.rows[22].contains("Page 2/150"));
    terminal.send(PAGE_UP);
    terminal.wait_for("page 1 by PgUp", SHOWS, |s| {
        s.rows[22].contains("Page 1/150")
    });
    terminal.send(END);
    let screen = terminal.wait_for("the last page", SHOWS, |s| {
        s.rows[22].contains("Page 150/150")
    });
    assert_eq!(ids(&screen).last(), Some(&3000), "{screen}");

    // A number jumps to its page and highlights it.
    terminal.type_slowly("1234");
    let screen = terminal.wait_for("asset 1234 highlighted", SHOWS, |s| {
        s.highlighted
            .iter()
            .any(|&r| s.rows[r].contains("host-01234"))
    });
    assert!(screen.rows[22].contains("Page 62/150"), "{screen}");
    terminal.send(CTRL_U);
    terminal.send(HOME);
    terminal.wait_for("page 1 by Home", SHOWS, |s| {
        s.rows[22].contains("Page 1/150")
    });

    // A bigger window: a longer page, the prompt on the last row.
    terminal.resize(120, 40);
    let screen = terminal.wait_for("a redraw for 120×40", SHOWS, |s| {
        s.rows[38].contains("Page ") && s.rows[38].contains("/84")
    });
    assert!(screen.rows[39].starts_with("Opt>"), "{screen}");
    assert_eq!(ids(&screen).len(), 36, "36 rows fit 40 lines:\n{screen}");
    assert!(screen.rows[0].contains("3000 assets"), "{screen}");
    // Smaller again: nothing of the big screen is left behind.
    terminal.resize(60, 12);
    let screen = terminal.wait_for("a redraw for 60×12", SHOWS, |s| {
        s.rows.len() == 12 && s.rows[11].starts_with("Opt>") && s.rows[10].contains("/375")
    });
    assert_eq!(ids(&screen).len(), 8, "{screen}");
    assert!(
        screen.rows.iter().all(|r| r.chars().count() <= 60),
        "{screen}"
    );

    // A search narrows the 3,000 and pages within the result.
    terminal.type_slowly("dc3\r");
    let screen = terminal.wait_for("the committed search", SHOWS, |s| {
        s.contains("429 assets match")
    });
    assert!(
        listed(&screen).iter().all(|(id, _)| id % 7 == 3),
        "only /Default/dc3 assets:\n{screen}"
    );
    terminal.resize(80, 24);
    terminal.wait_for("the search's page in 80×24", SHOWS, |s| {
        s.rows.len() == 24 && ids(s).len() == 20 && s.rows[23].starts_with("Opt>")
    });
    terminal.send(PAGE_DOWN);
    terminal.wait_for("the search's pages", SHOWS, |s| {
        s.rows[22].contains("Page 2/22")
    });
    assert_quits(&mut terminal);
}

#[test]
fn menu_opens_the_picked_session_and_comes_back_after_it() {
    let target = Target::start();
    let (builder, keys) = fixture::standard();
    let assets = asset(
        "web01",
        target.address(),
        target.port(),
        "/Default/prod/web",
        &[("root", ROOT_PASSWORD), ("deploy", DEPLOY_PASSWORD)],
    ) + &asset(
        "web02",
        "10.1.0.2",
        22,
        "/Default/prod/web",
        &[("root", "x")],
    );
    let grants = "  - {name: ops-prod, user_groups: [ops], nodes: [/Default/prod], accounts: [\"@ALL\", \"@INPUT\"], protocols: [ssh], actions: [connect]}\n";
    let policy = policy(&keys, &["/Default/prod/web"], &assets, grants);
    let bastion = builder.policy(&policy).start();
    let mut terminal = bastion.ssh_terminal("alice", &keys.alice, &[], None, (80, 24));
    menu_up(&mut terminal);

    // By number, then the account by number: deploy is the 2nd.
    terminal.type_slowly("1\r");
    terminal.wait_for_text("choose an account", SHOWS);
    terminal.type_slowly("2\r");
    terminal.wait_for("the target's shell", Duration::from_secs(30), |s| {
        !s.alternate && s.contains("$")
    });
    terminal.type_slowly("echo jms-$((6*7)) $(id -un); stty size\r");
    terminal.wait_for_text("jms-42 deploy", Duration::from_secs(20));
    terminal.wait_for_text("24 80", SHOWS);
    // The window follows a resize during the session.
    terminal.resize(100, 30);
    std::thread::sleep(Duration::from_millis(300));
    terminal.type_slowly("stty size\r");
    terminal.wait_for_text("30 100", SHOWS);
    terminal.type_slowly("exit\r");
    let screen = terminal.wait_for("the menu after the session", Duration::from_secs(20), |s| {
        s.alternate && s.rows.last().is_some_and(|r| r.starts_with("Opt>"))
    });
    assert!(
        screen.contains("session to deploy@web01 ended"),
        "the menu says how the session ended:\n{screen}"
    );
    assert_eq!(screen.rows.len(), 30, "the menu uses the new size");

    // @INPUT: the agent asks username and password on the terminal.
    terminal.type_slowly("@INPUT@web01\r");
    terminal.wait_for_text("Username:", Duration::from_secs(30));
    terminal.type_slowly("root\r");
    terminal.wait_for_text("Password:", SHOWS);
    terminal.type_slowly(&format!("{ROOT_PASSWORD}\r"));
    terminal.wait_for("the target's root shell", Duration::from_secs(30), |s| {
        !s.alternate && s.contains("#")
    });
    let screen = terminal.screen();
    assert!(
        !screen.contains(ROOT_PASSWORD),
        "the typed password must not echo:\n{screen}"
    );
    terminal.type_slowly("echo typed-$((7*6)); exit\r");
    terminal.wait_for("the menu again", Duration::from_secs(20), |s| {
        s.alternate && s.contains("session to @INPUT@web01 ended")
    });
    assert!(
        terminal.transcript().contains("typed-42"),
        "the typed credentials opened root's shell on the target:\n{}",
        terminal.transcript()
    );
    assert_quits(&mut terminal);
}
