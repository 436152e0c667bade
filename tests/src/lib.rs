//! jms end-to-end harness: a real OpenSSH sshd with the freshly built
//! `pam_jms.so`, `libnss_jms.so.2` and `jms-agentd`, in a private mount
//! namespace, driven by real clients (`getent`, `pamtester`, `ssh`).
//!
//! - [`preflight`]: root, system tools and built artifacts, or a loud failure.
//! - [`agentd`]: a bare jms-agentd enrolled to a server, without sshd
//!   (the sync path's own tests).
//! - [`central`]: a jms-server for the bastion, `jmsctl` against it, and a
//!   proxy that can hand agentd forged bundles.
//! - [`bastion`]: [`BastionBuilder`] writes the test's sshd_config,
//!   nsswitch.conf, pam.d/sshd, agentd.toml and policy into a temp dir, and
//!   `harness/bastion-ns.sh` (run under `unshare -m`) mounts them over the
//!   host's paths, starts jms-agentd and becomes sshd; [`Bastion`] tears it
//!   all down on drop and prints the logs of a failing test.
//! - `config`: the text of those files.
//! - [`clients`]: `getent`/`pamtester` inside the namespace, `ssh` from the host.
//! - [`fixture`]: the standard policy (one user per account rule) and its secrets.
//! - [`secrets`]: Django password hashes and TOTP codes, independent of jms-core.
//! - [`run`]: commands with deadlines, prompt answering, readable failures.
//! - [`terminal`]: a program on a pty of a given size, read through a
//!   terminal emulator (the menu tests).
//! - [`procfs`]: /proc status fields, children, a bastion's session workers.
//! - [`plain`]: a plain sshd without jms (the benchmarks' baselines).
//! - [`browser`]: headless Chromium driven through chromedriver
//!   (WebDriver), with screenshots kept under `target/test-artifacts/`.
//! - [`mail`]: a loopback SMTP server catching what jms-server mails.
//! - [`pg`]: the PostgreSQL of the tests (a private cluster) and `psql`.
//! - [`s3`]: a real S3-compatible server (s3s-fs, SigV4 checked) for
//!   recordings in object storage.
//! - [`target`]: a target host (a real sshd on 127.0.0.2 with its own
//!   accounts, in its own mount namespace) for the session tests.
//!
//! The host's /etc is never changed; all traffic stays on 127.0.0.1.

pub mod agentd;
pub mod bastion;
pub mod browser;
pub mod central;
pub mod clients;
mod config;
pub mod fixture;
pub mod mail;
pub mod namespace;
pub mod pg;
pub mod plain;
pub mod preflight;
pub mod procfs;
pub mod report;
pub mod run;
pub mod s3;
pub mod secrets;
pub mod target;
pub mod terminal;

pub use bastion::{Bastion, BastionBuilder, ClientKey, Lockout, AGENT_IN_NS, JMS_USERS_GROUP};
pub use clients::{Pam, PasswordMethod, PromptedLogin};
pub use config::{packaged_max_startups, packaged_sshd_load_lines, WORKER_ID, WORKER_USER};
pub use run::Outcome;
pub use target::Target;
