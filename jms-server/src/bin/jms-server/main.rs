//! `jms-server`: the central server.
//!
//! - `jms-server --data DIR [--listen ADDR:PORT]` serves the sync API,
//!   the admin API and the web over TLS with its own CA (made in DIR at
//!   first start, see `jms_server::tls`) or the admin's certificate
//!   (`--tls-cert/--tls-key/--tls-ca`); plain HTTP only with
//!   `--insecure-http` (a TLS-terminating proxy in front). The first line
//!   on stdout is `listening on https://ADDR` (`http://` when insecure),
//!   with the real port when given port 0.
//! - `jms-server tls rotate --data DIR [--tls-name N]...` issues a new
//!   server certificate from the CA; a running server reads it on SIGHUP.
//! - `jms-server tls ca-hash --data DIR` prints the pin enrollment tokens
//!   carry (the SHA-256 of the CA certificate).
//! - `jms-server token create --data DIR --scope admin|operator|auditor [--name N]`
//!   prints a new API token once (only its SHA-256 is stored).
//!
//! Exit codes: 0 ok, 2 bad arguments or unusable data directory, 1 the
//! server failed while running.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use jms_server::recordings::{S3Config, S3Storage};
use jms_server::store::Scope;
use jms_server::tls::{Peer, ServerCertSource, ServerTls, TlsListener, TlsShared};
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
    /// The database: `postgres://USER:PASSWORD@HOST:PORT/DB` (several
    /// instances may share it; each needs the same key files in its
    /// --data). Default: SQLite, `jms.db` in --data.
    #[arg(long, value_name = "URL", global = true, env = "JMS_DATABASE", value_parser = parse_database)]
    database: Option<String>,
    /// Address to listen on (port 0: any free port).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8420")]
    listen: SocketAddr,
    /// A bastion silent (no sync request) this long raises the alarm
    /// `bastion_silent` in the log and shows `silent` in the fleet.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration, env = "JMS_BASTION_SILENT_AFTER")]
    bastion_silent_after: std::time::Duration,
    /// An account job with no report from its bastion this long (or
    /// whose bastion went silent) is handed to another online bastion.
    #[arg(long, value_name = "DURATION", default_value = "3m", value_parser = humantime::parse_duration, env = "JMS_JOB_ATTEMPT_TIMEOUT")]
    job_attempt_timeout: std::time::Duration,
    /// How many account jobs one bastion holds at once (running or
    /// queued on it); the rest wait on the server and go out as it
    /// reports, their attempt clock not yet started. Keep it at most the
    /// bastions' `[sessions] max_parallel_jobs`.
    #[arg(long, value_name = "N", default_value_t = jms_server::jobs::DEFAULT_PER_BASTION, env = "JMS_JOBS_PER_BASTION")]
    jobs_per_bastion: u64,
    /// A name (DNS or IP address) the server certificate it issues itself
    /// is for; repeatable. Default: the listen address (or the host name
    /// when listening on all addresses), localhost and 127.0.0.1.
    #[arg(long = "tls-name", value_name = "NAME", global = true)]
    tls_names: Vec<String>,
    /// The admin's server certificate chain (PEM) instead of one issued
    /// by the server's own CA; with --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key", env = "JMS_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The key of --tls-cert (PEM, mode 0600).
    #[arg(long, value_name = "FILE", requires = "tls_cert", env = "JMS_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// The CA that issued --tls-cert (PEM): bastions pin it (default: the
    /// last certificate of the chain).
    #[arg(long, value_name = "FILE", requires = "tls_cert", env = "JMS_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// Plain HTTP, for a TLS-terminating proxy in front: bastions cannot
    /// pin the server, no client certificates (only the request
    /// signatures authenticate bastions).
    #[arg(long, conflicts_with = "tls_cert", env = "JMS_INSECURE_HTTP")]
    insecure_http: bool,
    /// The time zone of the users' login time windows on the engineers'
    /// portal (the bastions' `timezone`): an IANA name such as
    /// `Asia/Shanghai`.
    #[arg(long, value_name = "ZONE", default_value = "UTC", value_parser = parse_timezone, env = "JMS_TIMEZONE")]
    timezone: chrono_tz::Tz,
    /// Where recordings go: `s3://BUCKET[/PREFIX]` for an S3-compatible
    /// object store (endpoint and credentials from JMS_S3_ENDPOINT,
    /// JMS_S3_ACCESS_KEY_ID, JMS_S3_SECRET_ACCESS_KEY, JMS_S3_REGION...;
    /// docs/ha.md). Default: DIR/recordings on the local disk.
    #[arg(long, value_name = "URL", global = true, env = "JMS_RECORDINGS")]
    recordings: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The server's TLS certificate.
    #[command(subcommand)]
    Tls(TlsCommand),
    /// Copy a SQLite store into an empty PostgreSQL database, then compare
    /// every row (the server must be stopped; the key files stay in DIR:
    /// give them to every instance).
    Migrate {
        /// The data directory whose `jms.db` is copied.
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
        /// The PostgreSQL database (`postgres://…`), empty.
        #[arg(long, value_name = "URL", value_parser = parse_database)]
        to: String,
    },
}

#[derive(Subcommand)]
enum TlsCommand {
    /// Issue a new server certificate from the CA (for --tls-name, or the
    /// names of the default); `kill -HUP` the running server to use it.
    Rotate,
    /// Print the SHA-256 of the CA certificate (what tokens carry).
    CaHash,
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

fn parse_database(text: &str) -> std::result::Result<String, String> {
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        Ok(text.to_string())
    } else {
        Err("expected a postgres:// URL (SQLite is the default: leave --database out)".into())
    }
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
    if let Some(Command::Migrate { from, to }) = &cli.command {
        return match migrate(from, to) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!(
                    "jms-server: migrate: {}",
                    format!("{e:#}").replace('\n', " ")
                );
                ExitCode::from(1)
            }
        };
    }
    let Some(data) = cli.data.clone() else {
        eprintln!("jms-server: give the data directory with --data DIR");
        return ExitCode::from(2);
    };
    let mut services = match Services::open_with(&data, cli.database.as_deref()) {
        Ok(services) => services,
        Err(e) => {
            eprintln!("jms-server: {}: {e}", data.display());
            return ExitCode::from(2);
        }
    };
    services.portal.set_timezone(cli.timezone);
    if let Some(url) = cli.recordings.as_deref().filter(|u| !u.is_empty()) {
        let storage =
            S3Config::from_env(url, |name| std::env::var(name).ok()).and_then(S3Storage::new);
        match storage {
            Ok(storage) => {
                services.recordings = Arc::new(services.recordings.stored_in(Box::new(storage)));
            }
            Err(e) => {
                eprintln!("jms-server: --recordings: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let result = match cli.command {
        Some(Command::Token(TokenCommand::Create { scope, name })) => {
            create_token(&services, &name, scope)
        }
        Some(Command::Migrate { .. }) => unreachable!("handled before the data directory"),
        Some(Command::Tls(TlsCommand::Rotate)) => rotate(&data, &tls_names(&cli)),
        Some(Command::Tls(TlsCommand::CaHash)) => jms_server::tls::Authority::load_or_create(&data)
            .map(|ca| println!("{}", ca.ca_hash()))
            .map_err(Into::into),
        None => {
            services
                .fleet
                .set_bastion_silent_after(cli.bastion_silent_after);
            services.jobs.set_attempt_timeout(cli.job_attempt_timeout);
            services.jobs.set_jobs_per_bastion(cli.jobs_per_bastion);
            let tls = if cli.insecure_http {
                None
            } else {
                let source = match (&cli.tls_cert, &cli.tls_key) {
                    (Some(cert), Some(key)) => ServerCertSource::Given {
                        cert: cert.clone(),
                        key: key.clone(),
                        ca: cli.tls_ca.clone(),
                    },
                    _ => ServerCertSource::Own,
                };
                match ServerTls::setup(&data, source, &tls_names(&cli)) {
                    Ok(tls) => Some(tls),
                    Err(e) => {
                        eprintln!("jms-server: TLS: {e}");
                        return ExitCode::from(2);
                    }
                }
            };
            serve(services, cli.listen, tls)
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

fn migrate(from: &std::path::Path, to: &str) -> Result<()> {
    let db = from.join(jms_server::services::DB_FILE);
    let copied = jms_server::store::copy::sqlite_to_postgres(&db, to)?;
    let mut total = 0;
    for table in &copied {
        println!("{}\t{}", table.table, table.rows);
        total += table.rows;
    }
    eprintln!(
        "copied {total} rows of {} tables into PostgreSQL and compared them row for row: identical",
        copied.len()
    );
    Ok(())
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

/// The names of the server certificate: `--tls-name`, or the listen
/// address (the host name for an unspecified one), localhost, 127.0.0.1.
fn tls_names(cli: &Cli) -> Vec<String> {
    if !cli.tls_names.is_empty() {
        return cli.tls_names.clone();
    }
    let mut names = Vec::new();
    let ip = cli.listen.ip();
    if ip.is_unspecified() {
        if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            names.push(host.trim().to_string());
        }
    } else {
        names.push(ip.to_string());
    }
    for name in ["localhost", "127.0.0.1"] {
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    names.retain(|n| !n.is_empty());
    names
}

fn rotate(data: &std::path::Path, names: &[String]) -> Result<()> {
    let authority = jms_server::tls::Authority::load_or_create(data)?;
    jms_server::tls::write_own_server_cert(&authority, data, names)?;
    let (cert, _) = jms_server::tls::own_server_paths(data);
    eprintln!(
        "issued a new server certificate for {} in {}; send the running server SIGHUP (systemctl reload jms-server) to use it",
        names.join(", "),
        cert.display()
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

fn serve(services: Services, listen: SocketAddr, tls: Option<ServerTls>) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info".into())
                // The PostgreSQL client logs statement parameters (token
                // hashes, sealed secrets) at debug: never.
                .add_directive("tokio_postgres=info".parse().expect("a directive"))
                .add_directive("postgres=info".parse().expect("a directive")),
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
        tokio::spawn(jms_server::fleet::watch(services.fleet.clone()));
        tokio::spawn(jms_server::jobs::watch(services.jobs.clone()));
        let app = jms_server::app::router(&services);
        let Some(tls) = tls else {
            if !bound.ip().is_loopback() {
                tracing::warn!(%bound, "plain HTTP (--insecure-http) on a non-loopback address: put a TLS proxy in front");
            }
            println!("listening on http://{bound}");
            std::io::stdout().flush().ok();
            let app = app.layer(axum::middleware::from_fn(|request, next| {
                jms_server::tls::transport_layer(None, request, next)
            }));
            // The peer address reaches handlers (rate limits by source IP).
            return axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown())
            .await
            .context("serving");
        };
        tracing::info!(ca_sha256 = tls.cert.pin(), "serving over TLS");
        println!("listening on https://{bound}");
        std::io::stdout().flush().ok();
        let shared = Arc::new(TlsShared {
            authority: tls.authority.clone(),
            cert: tls.cert.clone(),
        });
        tokio::spawn(reload_on_hangup(tls.cert.clone()));
        let app = app.layer(axum::middleware::from_fn(move |request, next| {
            jms_server::tls::transport_layer(Some(shared.clone()), request, next)
        }));
        let listener = TlsListener::new(listener, tls.config.clone()).context("TLS listener")?;
        axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
            .with_graceful_shutdown(shutdown())
            .await
            .context("serving")
    })
}

/// SIGHUP: read the server certificate again (after `jms-server tls rotate`).
async fn reload_on_hangup(cert: Arc<jms_server::tls::Reloadable>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hangup.recv().await.is_some() {
        match cert.reload() {
            Ok(()) => tracing::info!("server certificate read again"),
            Err(e) => {
                tracing::error!(error = %e, "server certificate not reloaded; the old one stays")
            }
        }
    }
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

/// `--timezone`: an IANA time zone name.
fn parse_timezone(text: &str) -> Result<chrono_tz::Tz, String> {
    text.parse()
        .map_err(|_| format!("`{text}` is not an IANA time zone name (like UTC or Asia/Shanghai)"))
}
