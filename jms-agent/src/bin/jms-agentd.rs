//! jms-agentd: the privileged bastion daemon. Loads the policy, publishes
//! the NSS cache, keeps the private login state and answers PAM and
//! jms-agent on its socket. SIGHUP reloads the policy (keeping the last good
//! one on error); SIGTERM stops it.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use anyhow::{bail, Context, Result};
use clap::Parser;
use jms_agent::daemon::config::{AgentdConfig, DEFAULT_CONFIG_PATH};
use jms_agent::daemon::handlers::Daemon;
use jms_agent::daemon::policy_source::{LocalFile, PolicySource};
use jms_agent::daemon::session::connect;
use jms_agent::daemon::state::StateFile;
use jms_agent::daemon::{publish, server};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tracing::{error, info};

#[derive(Parser)]
#[command(name = "jms-agentd", version, about = "jms bastion daemon")]
struct Args {
    /// Configuration file.
    #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Policy file (overrides `policy` in the configuration).
    #[arg(long)]
    policy: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    // ssh runs this binary as its SSH_ASKPASS helper, through a link named
    // `jms-askpass` (see session::connect); `jms-agentd askpass` does the same.
    let argv0 = std::env::args_os().next().unwrap_or_default();
    if std::path::Path::new(&argv0).file_name() == Some(std::ffi::OsStr::new(connect::ASKPASS_NAME))
    {
        return connect::askpass_main();
    }
    if std::env::args_os().nth(1).is_some_and(|a| a == "askpass") {
        return connect::askpass_main_with(std::env::args().nth(2).unwrap_or_default());
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("JMS_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    let mut config = AgentdConfig::load(&args.config)?;
    if let Some(policy) = args.policy {
        config.policy = Some(policy);
    }
    let Some(policy_path) = config.policy.clone() else {
        bail!(
            "no policy: set `policy` in {} or pass --policy",
            args.config.display()
        );
    };
    prepare_state_dir(&config)?;
    let source = LocalFile { path: policy_path };
    let policy = source
        .load()
        .with_context(|| format!("policy from {}", source.describe()))?;
    let published = publish::publish(&policy, &config)?;
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
        lockout: config.lockout.policy(),
        keys_uid,
        state: Mutex::new(StateFile::load(&config.state_dir)?),
        policy: RwLock::new(Arc::new(policy)),
        users_by_uid: RwLock::new(publish::users_by_uid(&published)),
        config,
    });
    let listener = server::bind(&daemon.config.socket)?;
    watch_signals(Arc::clone(&daemon), source)?;
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
    if meta.mode() & 0o077 != 0 {
        bail!(
            "state dir {} has mode {:o}: it must be 0700 (chmod 700)",
            dir.display(),
            meta.mode() & 0o7777
        );
    }
    Ok(())
}

fn watch_signals(daemon: Arc<Daemon>, source: LocalFile) -> Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([SIGHUP, SIGINT, SIGTERM])?;
    std::thread::spawn(move || {
        for signal in signals.forever() {
            if signal == SIGHUP {
                reload(&daemon, &source);
                continue;
            }
            info!(signal, "stopping");
            let _ = std::fs::remove_file(&daemon.config.socket);
            std::process::exit(0);
        }
    });
    Ok(())
}

fn reload(daemon: &Daemon, source: &LocalFile) {
    let loaded = source.load().and_then(|policy| {
        let published = publish::publish(&policy, &daemon.config)?;
        Ok((policy, published))
    });
    match loaded {
        Ok((policy, published)) => {
            *daemon
                .users_by_uid
                .write()
                .unwrap_or_else(|e| e.into_inner()) = publish::users_by_uid(&published);
            info!(users = policy.doc.users.len(), "policy reloaded");
            *daemon.policy.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
        }
        Err(e) => error!("reload failed, keeping the last good policy: {e:#}"),
    }
}
