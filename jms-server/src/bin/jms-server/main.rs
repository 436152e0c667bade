//! `jms-server`: the central server.
//!
//! - `jms-server --data DIR [--listen ADDR:PORT]` serves the admin API
//!   (plain HTTP: put it on loopback behind a TLS proxy, or on a trusted
//!   network); the first line on stdout is `listening on http://ADDR`
//!   (with the real port when given port 0).
//! - `jms-server token create --data DIR --scope admin|operator|auditor [--name N]`
//!   prints a new API token once (only its SHA-256 is stored).
//!
//! Exit codes: 0 ok, 2 bad arguments or unusable data directory, 1 the
//! server failed while running.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use jms_server::store::Scope;
use jms_server::Services;

#[derive(Parser)]
#[command(
    name = "jms-server",
    version,
    about = "jms central server: store and admin API"
)]
struct Cli {
    /// Data directory (database, key file); created 0700 if absent.
    #[arg(long, value_name = "DIR", global = true, env = "JMS_SERVER_DATA")]
    data: Option<PathBuf>,
    /// Address to listen on (port 0: any free port).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8420")]
    listen: SocketAddr,
    /// A bastion silent (no sync request) this long raises the alarm
    /// `bastion_silent` in the log and shows `silent` in the fleet.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration, env = "JMS_BASTION_SILENT_AFTER")]
    bastion_silent_after: std::time::Duration,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it (shown once).
    Create {
        /// `auditor` (reads; `read` is the same), `operator` (also policy
        /// writes) or `admin` (also settings, tokens, bastions).
        #[arg(long, value_parser = parse_scope)]
        scope: Scope,
        /// A name for the operation log (`ci`, `alice-laptop`).
        #[arg(long, default_value = "token")]
        name: String,
    },
}

fn parse_scope(text: &str) -> std::result::Result<Scope, String> {
    text.parse()
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let first = e.to_string();
            let line = first.lines().next().unwrap_or("bad arguments");
            eprintln!("jms-server: {}", line.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    let Some(data) = cli.data.clone() else {
        eprintln!("jms-server: give the data directory with --data DIR");
        return ExitCode::from(2);
    };
    let services = match Services::open(&data) {
        Ok(services) => services,
        Err(e) => {
            eprintln!("jms-server: {}: {e}", data.display());
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Some(Command::Token(TokenCommand::Create { scope, name })) => {
            create_token(&services, &name, scope)
        }
        None => {
            services
                .fleet
                .set_bastion_silent_after(cli.bastion_silent_after);
            serve(services, cli.listen)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jms-server: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::from(1)
        }
    }
}

fn create_token(services: &Services, name: &str, scope: Scope) -> Result<()> {
    let actor = format!("jms-server token create (uid {})", nix_uid());
    let (id, token) = services.tokens.create_token(&actor, name, scope)?;
    println!("{token}");
    eprintln!(
        "token {id} ({name}, {}) created; it is shown only this once",
        scope.as_str()
    );
    Ok(())
}

fn nix_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    // The owner of /proc/self is the caller's uid; no libc call needed.
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}

fn serve(services: Services, listen: SocketAddr) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let bound = listener.local_addr().context("local address")?;
        if !bound.ip().is_loopback() {
            tracing::warn!(%bound, "plain HTTP on a non-loopback address: put a TLS proxy in front");
        }
        println!("listening on http://{bound}");
        std::io::stdout().flush().ok();
        tokio::spawn(jms_server::fleet::watch(services.fleet.clone()));
        let app = jms_server::app::router(&services);
        // The peer address reaches handlers (rate limits by source IP).
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
            .with_graceful_shutdown(shutdown())
            .await
            .context("serving")
    })
}

async fn shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
}
