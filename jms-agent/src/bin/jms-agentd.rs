//! jms-agentd: the privileged bastion daemon. Loads the policy, publishes
//! the NSS cache, keeps the private login state and answers PAM and
//! jms-agent on its socket. SIGHUP reloads the policy (keeping the last good
//! one on error); SIGTERM stops it.
//!
//! The policy comes from a local file (`policy` / `--policy`) or, with a
//! `[central]` table, from the central server: `jms-agentd enroll --server
//! URL --token T` once, then a poll thread pulls signed bundles and upload
//! threads send the event spool and the finished recordings.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use anyhow::{bail, Context, Result};
use clap::Parser;
use jms_agent::daemon::config::{AgentdConfig, Effective, DEFAULT_CONFIG_PATH};
use jms_agent::daemon::monitor::central::{self, CentralClient};
use jms_agent::daemon::monitor::handlers::Daemon;
use jms_agent::daemon::monitor::policy_source::{Central, LocalFile, PolicySource, Update};
use jms_agent::daemon::monitor::state::StateFile;
use jms_agent::daemon::monitor::{
    enroll, open_sessions, publish, server, spool, upload, worker_user,
};
use jms_agent::daemon::session::{self, connect};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tracing::{error, info};

#[derive(Parser)]
#[command(name = "jms-agentd", version, about = "jms bastion daemon")]
struct Args {
    /// Configuration file.
    #[arg(long, default_value = DEFAULT_CONFIG_PATH, global = true)]
    config: PathBuf,
    /// Policy file (overrides `policy` and `[central]` in the configuration).
    #[arg(long)]
    policy: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Enroll this bastion with the central server (one-time token from
    /// `jmsctl bastion token create`, which names the server's CA: a
    /// server with another CA is refused); then set `[central] server`
    /// and start.
    Enroll {
        /// The server's origin (https://HOST:PORT).
        #[arg(long)]
        server: String,
        /// The one-time enrollment token.
        #[arg(long)]
        token: String,
        /// This bastion's name on the server (default: the host name).
        #[arg(long)]
        name: Option<String>,
    },
    /// Get a new TLS client certificate from the server (over the current
    /// one, before it expires); restart jms-agentd to use it.
    RenewCert,
}

fn main() -> std::process::ExitCode {
    // ssh runs this binary as its SSH_ASKPASS helper, through a link named
    // `jms-askpass` (see session::connect); `jms-agentd askpass` does the same.
    let argv0 = std::env::args_os().next().unwrap_or_default();
    if std::path::Path::new(&argv0).file_name() == Some(std::ffi::OsStr::new(connect::ASKPASS_NAME))
    {
        return connect::askpass_main();
    }
    // A session worker: started by the monitor, never by hand.
    if std::path::Path::new(&argv0).file_name()
        == Some(std::ffi::OsStr::new(jms_agent::wire::WORKER_NAME))
    {
        init_logging();
        return session::worker_main();
    }
    // An account job's worker: likewise.
    if std::path::Path::new(&argv0).file_name()
        == Some(std::ffi::OsStr::new(jms_agent::wire::JOB_WORKER_NAME))
    {
        init_logging();
        return session::job::job_main();
    }
    if std::env::args_os().nth(1).is_some_and(|a| a == "askpass") {
        return connect::askpass_main_with(std::env::args().nth(2).unwrap_or_default());
    }
    init_logging();
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("JMS_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
}

fn run(args: Args) -> Result<()> {
    let mut config = AgentdConfig::load(&args.config)?;
    if let Some(Command::RenewCert) = args.command {
        let central = config
            .central
            .as_ref()
            .context("no [central] in the configuration: nothing to renew")?;
        let client = CentralClient::new(&config.state_dir, central)?;
        client.renew_client_cert(&config.state_dir)?;
        println!(
            "new client certificate in {}",
            config.state_dir.join(enroll::CLIENT_CERT_FILE).display()
        );
        return Ok(());
    }
    if let Some(Command::Enroll {
        server,
        token,
        name,
    }) = args.command
    {
        return enroll_main(&config, &server, &token, name);
    }
    let explicit_file = args.policy.is_some();
    if let Some(policy) = args.policy {
        config.policy = Some(policy);
    }
    prepare_state_dir(&config)?;
    // Sessions run in workers as this user (before anything else: a
    // missing user stops the daemon with the line that says so).
    let worker = worker_user::worker_user(&config)?;
    worker_user::prepare_dirs(&config, worker)?;
    #[allow(clippy::type_complexity)]
    let (source, central): (
        Arc<dyn PolicySource>,
        Option<(Arc<Central>, Arc<CentralClient>)>,
    ) = match (config.policy.clone(), config.central.clone()) {
        (Some(_), Some(_)) if !explicit_file => bail!(
            "{}: both `policy` and `[central]` are set: keep one",
            args.config.display()
        ),
        (Some(path), _) => (Arc::new(LocalFile { path }), None),
        (None, Some(central)) => {
            // One client (identity, pinned CA, client certificate) for
            // every exchange with the server.
            let client = Arc::new(CentralClient::new(&config.state_dir, &central)?);
            let central = Arc::new(Central::new(&config.state_dir, central, client.clone()));
            (central.clone(), Some((central, client)))
        }
        (None, None) => bail!(
            "no policy: set `policy` or `[central]` in {} or pass --policy",
            args.config.display()
        ),
    };
    let policy = source
        .load()
        .with_context(|| format!("policy from {}", source.describe()))?;
    let publisher = publish::Publisher::default();
    let users_by_uid = publisher.publish(&policy, &config, source.ids().as_ref())?;
    info!(
        source = source.describe(),
        users = policy.doc.users.len(),
        "policy loaded, NSS cache written"
    );

    let keys_uid = match nix::unistd::User::from_name(&config.authorized_keys_user) {
        Ok(Some(user)) => Some(user.uid.as_raw()),
        _ => {
            info!(
                user = config.authorized_keys_user,
                "authorized_keys_user does not exist: only root may ask for keys"
            );
            None
        }
    };
    let daemon = Arc::new(Daemon {
        timezone: config.timezone()?,
        effective: RwLock::new(Arc::new(Effective::resolve(
            &config,
            source.settings().as_ref(),
        ))),
        keys_uid,
        state: Mutex::new(StateFile::load(&config.state_dir)?),
        policy: RwLock::new(Arc::new(policy)),
        users_by_uid: RwLock::new(users_by_uid),
        publisher,
        live: Default::default(),
        tickets: Default::default(),
        worker,
        config,
    });
    open_sessions::close_leftovers(&daemon.config, |body| spool::record(&daemon.config, body));
    let listener = server::bind(&daemon.config.socket)?;
    watch_signals(Arc::clone(&daemon), Arc::clone(&source))?;
    if let Some((central, client)) = central {
        let poll = Arc::clone(&central);
        let daemon_for_poll = Arc::clone(&daemon);
        std::thread::Builder::new()
            .name("policy-poll".into())
            .spawn(move || {
                poll.run(&|update| {
                    if let Update::Apply(policy, why) = update {
                        daemon_for_poll.apply_policy(*policy, poll.as_ref(), why);
                    }
                })
            })
            .context("starting the poll thread")?;
        // Sealed spool segments go to the server (see daemon::monitor::upload).
        if let Some(spool) = spool::global(&daemon.config) {
            std::thread::Builder::new()
                .name("event-upload".into())
                .spawn(move || loop {
                    upload::round(spool, &|events| central.post_events(events));
                    std::thread::sleep(central.poll_interval());
                })
                .context("starting the event upload thread")?;
        }
        // The server's orders for live sessions (see daemon::monitor::live).
        if let Some(config) = daemon.config.central.clone() {
            let (daemon, client) = (Arc::clone(&daemon), client.clone());
            std::thread::Builder::new()
                .name("live-control".into())
                .spawn(move || {
                    jms_agent::daemon::monitor::control::run_control(daemon, config, client)
                })
                .context("starting the live control thread")?;
        }
        // The client certificate is renewed before it ends.
        if let Some(central) = &daemon.config.central {
            if client.identity().tls.is_some() {
                let (client, state_dir) = (client.clone(), daemon.config.state_dir.clone());
                let before = std::time::Duration::from_secs(central.renew_cert_before_days * 86400);
                std::thread::Builder::new()
                    .name("cert-renewal".into())
                    .spawn(move || central::run_cert_renewal(client, state_dir, before))
                    .context("starting the certificate renewal thread")?;
            }
        }
        // Finished recordings go to the server (see daemon::monitor::upload).
        if let Some(central) = &daemon.config.central {
            let recordings =
                upload::RecordingUploader::new(daemon.config.recordings_dir(), central, client);
            std::thread::Builder::new()
                .name("recording-upload".into())
                .spawn(move || recordings.run())
                .context("starting the recording upload thread")?;
        }
    }
    // Grants and users also expire with time: live sessions are checked
    // against the policy in force every so often, besides at each swap.
    {
        let daemon = Arc::clone(&daemon);
        std::thread::Builder::new()
            .name("live-revoke".into())
            .spawn(move || loop {
                std::thread::sleep(jms_agent::daemon::monitor::live::RECHECK_EVERY);
                daemon.live.revoke(&daemon.current_policy());
            })
            .context("starting the live session check thread")?;
    }
    info!(socket = %daemon.config.socket.display(), "serving");
    server::serve(listener, daemon)
}

/// Creates the state dir 0700, or refuses one that others can enter.
fn prepare_state_dir(config: &AgentdConfig) -> Result<()> {
    let dir = &config.state_dir;
    if !dir.exists() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let meta = std::fs::metadata(dir)?;
    // Group x: the session workers' group may reach their directories in it.
    if meta.mode() & 0o067 != 0 {
        bail!(
            "state dir {} has mode {:o}: it must be 0700 (chmod 700)",
            dir.display(),
            meta.mode() & 0o7777
        );
    }
    Ok(())
}

/// `jms-agentd enroll`: key pair, registration, pinned server key.
fn enroll_main(
    config: &AgentdConfig,
    server: &str,
    token: &str,
    name: Option<String>,
) -> Result<()> {
    prepare_state_dir(config)?;
    let name = match name {
        Some(name) => name,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .context("reading the host name (or pass --name)")?
            .trim()
            .to_string(),
    };
    let enrollment = enroll::enroll(&config.state_dir, server, token, &name, &config.sshd)?;
    info!(
        bastion_id = enrollment.bastion_id,
        bastion = enrollment.bastion_name,
        server_key = enrollment.server_id,
        "enrolled: set `[central] server = {:?}` and start jms-agentd",
        enrollment.server
    );
    println!(
        "enrolled as bastion {} ({}); server key {}",
        enrollment.bastion_id, enrollment.bastion_name, enrollment.server_id
    );
    Ok(())
}

fn watch_signals(daemon: Arc<Daemon>, source: Arc<dyn PolicySource>) -> Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([SIGHUP, SIGINT, SIGTERM])?;
    std::thread::spawn(move || {
        for signal in signals.forever() {
            if signal == SIGHUP {
                reload(&daemon, source.as_ref());
                continue;
            }
            info!(signal, "stopping");
            let _ = std::fs::remove_file(&daemon.config.socket);
            std::process::exit(0);
        }
    });
    Ok(())
}

fn reload(daemon: &Daemon, source: &dyn PolicySource) {
    match source.load() {
        Ok(policy) => daemon.apply_policy(policy, source, "reloaded"),
        Err(e) => error!("reload failed, keeping the last good policy: {e:#}"),
    }
}
