//! `jmsctl`: the administrator's command line.
//!
//! Offline, on policy files: `jmsctl eval` answers grant questions, `jmsctl
//! policy check` validates a file, `jmsctl hash-password` makes a password
//! hash. Against a server (`--server URL` or `JMS_SERVER`; the token from
//! `JMS_TOKEN` or `~/.config/jms/token`, mode 0600; the server's CA from
//! `--ca`, `JMS_CA` or `~/.config/jms/ca.pem`, trusted alone): `user`, `group`,
//! `node`, `asset`, `account`, `grant`, `filter` (add, list, and
//! show/set/delete/edit: see [`manage`]), account jobs (`account
//! push|verify|rotate`, `job list|show`: see [`jobs`]), `settings`, `policy export`,
//! `policy apply`, `bastion token create|list|show|revoke`, and the audit
//! trail: `session list|show`, `command search`, `recording get`.
//! `completion SHELL` prints a shell completion script.
//! On the server's data directory (`--data DIR`): `admin add|list|remove`
//! (the audit web's logins).
//!
//! Exit codes: 0 allow / ok; 1 deny, or refused by (or unreachable) server;
//! 2 bad input. Errors are one line on stderr.

mod admin;
mod audit;
mod bastion;
mod entities;
mod eval;
mod hash_password;
mod jobs;
mod mail;
mod manage;
mod policy;
mod remote;
mod settings;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use jms_server::client::ClientError;

#[derive(Parser)]
#[command(
    name = "jmsctl",
    version,
    about = "Administer jms: policy, grants, audit"
)]
struct Cli {
    #[command(flatten)]
    server: remote::ServerArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Decide one grant question, or list what a user is granted.
    Eval(eval::EvalArgs),
    /// Hash a password (read from the terminal or stdin, never argv) for
    /// a user's `password_hash`.
    HashPassword(hash_password::HashPasswordArgs),
    /// Policy files (check) and the server's whole policy (export, apply).
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Users on the server.
    #[command(subcommand)]
    User(entities::UserCommand),
    /// User groups on the server.
    #[command(subcommand)]
    Group(entities::GroupCommand),
    /// Nodes of the asset tree on the server.
    #[command(subcommand)]
    Node(entities::NodeCommand),
    /// Assets on the server.
    #[command(subcommand)]
    Asset(entities::AssetCommand),
    /// Accounts of assets on the server (secrets are write-only).
    #[command(subcommand)]
    Account(entities::AccountCommand),
    /// Account jobs (push, verify, rotate): their history and output.
    #[command(subcommand)]
    Job(jobs::JobCommand),
    /// Scheduled account plans (rotate, verify, push, discover).
    #[command(subcommand)]
    Plan(jobs::PlanCommand),
    /// Grants on the server.
    #[command(subcommand)]
    Grant(entities::GrantCommand),
    /// Command filters on the server.
    #[command(subcommand)]
    Filter(entities::FilterCommand),
    /// System settings on the server.
    #[command(subcommand)]
    Settings(settings::SettingsCommand),
    /// Bastions: enrollment tokens.
    #[command(subcommand)]
    Bastion(bastion::BastionCommand),
    /// Audit web admins (password + TOTP), on the server's data directory.
    Admin(admin::AdminArgs),
    /// Sessions recorded by the bastions.
    #[command(subcommand)]
    Session(audit::SessionCommand),
    /// Commands typed or run in sessions.
    #[command(subcommand, name = "command")]
    Commands(audit::CommandCommand),
    /// Session recordings (asciicast v2).
    #[command(subcommand)]
    Recording(audit::RecordingCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// What a command concluded, mapped to the exit code.
pub enum Outcome {
    /// Allowed, or the command succeeded.
    Ok,
    /// A grant question was denied, or an account job failed.
    Deny,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // clap's first paragraph, on one line; usage hints dropped.
            let rendered = e.to_string();
            let paragraph: Vec<&str> = rendered
                .lines()
                .take_while(|line| !line.trim().is_empty())
                .map(str::trim)
                .collect();
            eprintln!(
                "jmsctl: {}",
                paragraph.join(" ").trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
    };
    let server = &cli.server;
    let result = match cli.command {
        Command::Eval(args) => eval::run(args),
        Command::Policy(command) => policy::run(server, command),
        Command::HashPassword(args) => hash_password::run(args),
        Command::User(command) => entities::user(server, command),
        Command::Group(command) => entities::group(server, command),
        Command::Node(command) => entities::node(server, command),
        Command::Asset(command) => entities::asset(server, command),
        Command::Account(command) => entities::account(server, command),
        Command::Job(command) => jobs::job(server, command),
        Command::Plan(command) => jobs::plan(server, command),
        Command::Grant(command) => entities::grant(server, command),
        Command::Filter(command) => entities::filter(server, command),
        Command::Settings(command) => settings::run(server, command),
        Command::Bastion(command) => bastion::run(server, command),
        Command::Admin(args) => admin::run(args),
        Command::Session(command) => audit::session(server, command),
        Command::Commands(command) => audit::command(server, command),
        Command::Recording(command) => audit::recording(server, command),
        Command::Completion { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "jmsctl", &mut std::io::stdout());
            Ok(Outcome::Ok)
        }
    };
    match result {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Deny) => ExitCode::from(1),
        Err(e) => {
            // One line, whatever the cause chain looks like.
            let message = format!("{e:#}").replace('\n', " ");
            eprintln!("jmsctl: {message}");
            // The server said no (or could not be asked): 1. Anything
            // wrong on this side (arguments, files, token): 2.
            let from_server = matches!(
                e.downcast_ref::<ClientError>(),
                Some(
                    ClientError::Refused { .. }
                        | ClientError::Unreachable { .. }
                        | ClientError::Protocol { .. }
                )
            );
            ExitCode::from(if from_server { 1 } else { 2 })
        }
    }
}
