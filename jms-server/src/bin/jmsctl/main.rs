//! `jmsctl`: the administrator's command line. For now it works offline on
//! policy files: `jmsctl eval` answers grant questions and `jmsctl policy
//! check` validates a file. Exit codes: 0 allow / ok, 1 deny, 2 bad input.

mod eval;
mod hash_password;
mod policy;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "jmsctl",
    version,
    about = "Administer jms: policy, grants, audit"
)]
struct Cli {
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
    /// Work with policy files.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
}

/// What a command concluded, mapped to the exit code.
pub enum Outcome {
    /// Allowed, or the command succeeded.
    Ok,
    /// A grant question was denied.
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
    let result = match cli.command {
        Command::Eval(args) => eval::run(args),
        Command::Policy(command) => policy::run(command),
        Command::HashPassword(args) => hash_password::run(args),
    };
    match result {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Deny) => ExitCode::from(1),
        Err(e) => {
            // One line, whatever the cause chain looks like.
            let message = format!("{e:#}").replace('\n', " ");
            eprintln!("jmsctl: {message}");
            ExitCode::from(2)
        }
    }
}
