//! `make demo`: a whole jms scene on loopback, built from the end-to-end
//! harness — a central jms-server holding the demo policy (applied with
//! `jmsctl policy apply`) and an audit web admin, a target host (sshd on
//! 127.0.0.2 with accounts root and deploy), and a bastion sshd wired with
//! pam_jms, nss_jms and jms-agent in a private mount namespace, whose
//! jms-agentd enrolled with the server and follows its policy. Prints the
//! `ssh` lines to try and the audit web's address and login; Ctrl-C stops
//! everything and leaves nothing behind.

use std::fs::File;
use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jms_e2e::central::Central;
use jms_e2e::secrets::django_hash;
use jms_e2e::target::{DEPLOY_PASSWORD, ROOT_PASSWORD};
use jms_e2e::{BastionBuilder, Target};
use signal_hook::consts::{SIGINT, SIGTERM};

const ALICE_PASSWORD: &str = "alice-demo-pw";
const BOB_PASSWORD: &str = "bob-demo-pw";
const ADMIN_PASSWORD: &str = "demo-admin-pw";

fn policy(target: &Target) -> String {
    let (address, port) = (target.address(), target.port());
    let alice = django_hash(ALICE_PASSWORD, "demo-salt-alice");
    let bob = django_hash(BOB_PASSWORD, "demo-salt-bob");
    format!(
        r#"users:
  - {{username: alice, name: Alice Liu, groups: [ops], password_hash: '{alice}'}}
  - {{username: bob, name: Bob Chen, groups: [dev], password_hash: '{bob}'}}
user_groups: [{{name: ops}}, {{name: dev}}]
nodes: [/Default/prod/web, /Default/test]
assets:
  - name: web01
    address: {address}
    protocols: [{{name: ssh, port: {port}}}, {{name: sftp, port: {port}}}]
    nodes: [/Default/prod/web]
    accounts:
      - {{name: deploy, username: deploy, secret_type: password, secret: "{DEPLOY_PASSWORD}"}}
      - {{name: root, username: root, secret_type: password, secret: "{ROOT_PASSWORD}", privileged: true}}
  - name: test01
    address: {address}
    protocols: [{{name: ssh, port: {port}}}]
    nodes: [/Default/test]
grants:
  - {{name: ops-prod, user_groups: [ops], nodes: [/Default/prod], accounts: ["@ALL"], protocols: [all], actions: [connect, upload, download]}}
  - {{name: ops-test, user_groups: [ops], nodes: [/Default/test], accounts: ["@INPUT"], protocols: [ssh], actions: [connect]}}
  - {{name: dev-web01, user_groups: [dev], assets: [web01], accounts: [deploy], protocols: [ssh], actions: [connect]}}
command_filters:
  - {{name: no-rm-root, priority: 10, action: deny, rules: ['^\s*rm\s+-rf\s+/\s*$', '^\s*(shutdown|reboot|halt)\b'], users: ["@ALL"], assets: ["@ALL"], accounts: ["@ALL"]}}
"#
    )
}

/// Takes the one-demo-per-machine lock (`JMS_DEMO_LOCK`, set by
/// scripts/demo) and writes this pid in it; exits with a message when another
/// demo holds it. The lock goes with the process, however it ends.
fn take_demo_lock() -> Option<File> {
    let path = std::env::var_os("JMS_DEMO_LOCK")?;
    let mut file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .expect("opening the demo lock file");
    if file.try_lock().is_err() {
        let holder = std::fs::read_to_string(&path).unwrap_or_default();
        eprintln!(
            "demo: a demo is already running (pid {}); Ctrl-C it first",
            holder.trim()
        );
        std::process::exit(1);
    }
    file.set_len(0).expect("emptying the demo lock file");
    write!(file, "{}", std::process::id()).expect("writing the demo lock file");
    Some(file)
}

/// How long since scripts/demo started (it passes the start time), or since
/// this process started.
fn since_start(process_start: Instant) -> Duration {
    let script_start = std::env::var("JMS_DEMO_STARTED_NS")
        .ok()
        .and_then(|ns| ns.parse::<u128>().ok());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    match script_start {
        Some(start) if start <= now => Duration::from_nanos((now - start) as u64),
        _ => process_start.elapsed(),
    }
}

fn main() {
    let process_start = Instant::now();
    let _lock = take_demo_lock();
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).expect("signal handlers");
    eprintln!("starting the target host and the bastion…");
    let target = Target::start();
    let bastion = BastionBuilder::new().start();
    eprintln!("starting the central server, applying the demo policy, enrolling the bastion…");
    let central = Central::start();
    let policy_file = bastion.dir().join("demo-policy.yaml");
    std::fs::write(&policy_file, policy(&target)).expect("writing the demo policy");
    central
        .jmsctl(&["policy", "apply", &policy_file.to_string_lossy()])
        .assert_success("jmsctl policy apply should load the demo policy");
    central.attach(&bastion, &central.url);
    let admin = central.jmsctl_with(
        &[
            "admin",
            "add",
            "demo",
            "--password-stdin",
            "--data",
            &central.data_dir().to_string_lossy(),
        ],
        format!("{ADMIN_PASSWORD}\n").as_bytes(),
    );
    admin.assert_success("jmsctl admin add should make the demo web admin");
    let port = bastion.port();
    println!(
        "\njms demo is up (Ctrl-C stops it and removes everything):\n\
         \x20 bastion  127.0.0.1:{port}   (sshd + pam_jms + nss_jms + jms-agent, jms-agentd)\n\
         \x20 target   web01 = {address}:{tport}   (sshd with accounts root and deploy)\n\n\
         Try, as alice (password {ALICE_PASSWORD}):\n\
         \x20 ssh -t -p {port} alice@127.0.0.1                        # the menu\n\
         \x20 ssh -t -p {port} alice@127.0.0.1 root@web01             # straight to the target\n\
         \x20 ssh -p {port} alice@127.0.0.1 'deploy@web01 uptime; id'  # a command\n\
         \x20 scp -P {port} README.md alice@127.0.0.1:deploy@web01:/tmp/\n\
         \x20 sftp -P {port} alice@127.0.0.1\n\
         and as bob (password {BOB_PASSWORD}), who may only connect to web01 as deploy.\n\
         (Add -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null to skip the host key prompt.)\n\
         Recordings and the audit spool: {state}\n\
         Each session runs in a worker process of its own, as the unprivileged jms-session user of the\n\
         bastion's namespace (never root, never the engineer): ps -o uid,pid,args --ppid {agentd}\n\n\
         Central server {url}, over TLS with its own CA {ca} (the bastion pinned it at\n\
         enrollment and talks to it with a client certificate; the policy lives here now; try\n\
         `jmsctl --server {url} --ca {ca} user list` with JMS_TOKEN={token}).\n\
         Engineers' portal: {url}/ (the browser must trust {ca}) — login alice / {ALICE_PASSWORD}\n\
         (no TOTP code: leave it empty); her granted assets, a terminal and files on each.\n\
         Audit web: {url}/web/ (the browser must trust {ca}) — login demo / {ADMIN_PASSWORD}\n\
         and a code from this TOTP secret:\n{admin}\n\n\
         Up in {total:.1} s ({scene:.1} s for the scene itself; the rest was packages and the build).",
        address = target.address(),
        tport = target.port(),
        state = bastion.dir().join("state").display(),
        agentd = bastion
            .agentd_pid()
            .map_or("(agentd's pid)".to_owned(), |p| p.to_string()),
        url = central.url,
        ca = central
            .ca_file()
            .map_or("(none)".to_owned(), |p| p.display().to_string()),
        token = central.token(),
        admin = admin.stdout.trim_end(),
        total = since_start(process_start).as_secs_f64(),
        scene = process_start.elapsed().as_secs_f64(),
    );
    let _ = signals.forever().next();
    eprintln!("stopping…");
    drop(bastion);
    drop(central);
    drop(target);
    std::thread::sleep(Duration::from_millis(100));
    eprintln!("stopped; nothing left behind");
}
