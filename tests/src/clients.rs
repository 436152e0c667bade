//! The clients a test drives against a [`Bastion`]: `getent` and
//! `pamtester` inside its namespace, and real `ssh` logins from the host
//! over loopback (password through sshpass, keys, and keyboard-interactive
//! with several prompts through an SSH_ASKPASS helper).

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::bastion::{write, Bastion, ClientKey};
use crate::run::{self, Outcome, COMMAND_TIMEOUT};

/// Options every test client passes to ssh: no configuration file, no
/// known-hosts bookkeeping, no agent, only the keys given, quiet, bounded.
pub const CLIENT_OPTIONS: &[&str] = &[
    "-F",
    "/dev/null",
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "GlobalKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "ConnectTimeout=10",
    "-o",
    "IdentityAgent=none",
    "-o",
    "IdentitiesOnly=yes",
];

/// The prompt pam_jms sends first (every user).
pub const PASSWORD_PROMPT: &str = "Password:";
/// The prompt pam_jms sends for a user with TOTP.
pub const CODE_PROMPT: &str = "Verification code:";

/// What pamtester is asked: the user, the operations in order, PAM_RHOST,
/// and the answers to the prompts in order.
#[derive(Debug, Clone)]
pub struct Pam<'a> {
    pub user: &'a str,
    pub operations: &'a [&'a str],
    pub rhost: Option<&'a str>,
    pub answers: Vec<(&'a str, &'a str)>,
}

impl<'a> Pam<'a> {
    /// `authenticate` then `acct_mgmt`, from 127.0.0.1, answering the
    /// password prompt.
    pub fn login(user: &'a str, password: &'a str) -> Self {
        Pam {
            user,
            operations: &["authenticate", "acct_mgmt"],
            rhost: Some("127.0.0.1"),
            answers: vec![(PASSWORD_PROMPT, password)],
        }
    }

    /// Only `authenticate`, answering the password prompt.
    pub fn authenticate(user: &'a str, password: &'a str) -> Self {
        Pam {
            operations: &["authenticate"],
            ..Pam::login(user, password)
        }
    }

    /// Only `acct_mgmt` (what sshd runs after a key login): no prompt.
    pub fn acct_mgmt(user: &'a str) -> Self {
        Pam {
            user,
            operations: &["acct_mgmt"],
            rhost: Some("127.0.0.1"),
            answers: Vec::new(),
        }
    }

    /// Adds an answer to the TOTP prompt.
    pub fn code(mut self, code: &'a str) -> Self {
        self.answers.push((CODE_PROMPT, code));
        self
    }

    pub fn rhost(mut self, rhost: &'a str) -> Self {
        self.rhost = Some(rhost);
        self
    }
}

/// How `ssh` authenticates with a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordMethod {
    /// The `password` method: exactly one secret.
    Password,
    /// `keyboard-interactive`: the server's PAM prompts.
    KeyboardInteractive,
}

/// An ssh login through the askpass helper: what ssh did and which prompts
/// the server sent.
#[derive(Debug, Clone)]
pub struct PromptedLogin {
    pub outcome: Outcome,
    pub prompts: Vec<String>,
}

impl Bastion {
    /// `getent ARGS…` in the namespace.
    pub fn getent(&self, args: &[&str]) -> Outcome {
        let mut all = vec!["getent"];
        all.extend_from_slice(args);
        self.ns_run(&all)
    }

    /// `getent ARGS…` in the namespace as an unprivileged uid (nobody), as
    /// sshd's session and the agent look users up.
    pub fn getent_unprivileged(&self, args: &[&str]) -> Outcome {
        let mut all = vec!["getent"];
        all.extend_from_slice(args);
        self.ns_run_as(65534, 65534, &all)
    }

    /// `ARGS…` in the namespace as `uid`/`gid` with no supplementary groups.
    pub fn ns_run_as(&self, uid: u32, gid: u32, args: &[&str]) -> Outcome {
        let (reuid, regid) = (format!("--reuid={uid}"), format!("--regid={gid}"));
        let mut all = vec!["setpriv", &reuid, &regid, "--clear-groups"];
        all.extend_from_slice(args);
        self.ns_run(&all)
    }

    /// `pamtester [-I rhost=…] sshd USER OPS…` in the namespace, answering
    /// its prompts in order.
    pub fn pamtester(&self, pam: &Pam<'_>) -> Outcome {
        let mut cmd = self.ns_command("pamtester");
        Self::pamtester_args(&mut cmd, pam);
        run::run_answering(&mut cmd, &pam.answers, COMMAND_TIMEOUT)
    }

    /// [`Bastion::pamtester`] in a session of its own (`setsid`), as sshd
    /// runs each connection: the scheduler then weighs it as a group of
    /// its own (autogroup), not together with the caller's other children.
    pub fn pamtester_in_own_session(&self, pam: &Pam<'_>) -> Outcome {
        let mut cmd = Command::new("setsid");
        cmd.args(["--wait", "nsenter", "--target"])
            .arg(self.sshd_pid().to_string())
            .args(["--mount", "--", "pamtester"]);
        Self::pamtester_args(&mut cmd, pam);
        run::run_answering(&mut cmd, &pam.answers, COMMAND_TIMEOUT)
    }

    fn pamtester_args(cmd: &mut Command, pam: &Pam<'_>) {
        cmd.arg("-v");
        if let Some(rhost) = pam.rhost {
            cmd.arg("-I").arg(format!("rhost={rhost}"));
        }
        cmd.arg("sshd").arg(pam.user).args(pam.operations);
    }

    /// The common ssh client options: loopback, this bastion's port, no
    /// user or system config, no host key checks, no agent.
    /// A client command (ssh, scp, sftp, rsync) with no agent, askpass or
    /// display from the test's environment.
    pub fn ssh_command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_remove("SSH_AUTH_SOCK")
            .env_remove("SSH_ASKPASS")
            .env_remove("DISPLAY");
        cmd
    }

    /// The options and destination of every client here (`-p PORT …
    /// -l USER 127.0.0.1`), for a test that runs its own client.
    pub fn ssh_args(&self, user: &str) -> Vec<String> {
        let port = self.port().to_string();
        let specific = [
            "-p",
            &port,
            "-o",
            "NumberOfPasswordPrompts=1",
            "-l",
            user,
            "127.0.0.1",
        ];
        CLIENT_OPTIONS
            .iter()
            .chain(&specific)
            .map(|s| s.to_string())
            .collect()
    }

    /// `ssh USER@127.0.0.1 [COMMAND]` with a password given by sshpass
    /// (through its environment, never argv).
    pub fn ssh_password(
        &self,
        user: &str,
        password: &str,
        method: PasswordMethod,
        command: Option<&str>,
    ) -> Outcome {
        self.ssh_password_from("127.0.0.1", user, password, method, command)
    }

    /// Like [`Bastion::ssh_password`], from source address `source` (any
    /// 127.0.0.0/8 address works on loopback).
    pub fn ssh_password_from(
        &self,
        source: &str,
        user: &str,
        password: &str,
        method: PasswordMethod,
        command: Option<&str>,
    ) -> Outcome {
        let preferred = match method {
            PasswordMethod::Password => "password",
            PasswordMethod::KeyboardInteractive => "keyboard-interactive",
        };
        let mut cmd = self.ssh_command("sshpass");
        cmd.env("SSHPASS", password).args(["-e", "ssh"]).args([
            "-o",
            &format!("PreferredAuthentications={preferred}"),
            "-o",
            "PubkeyAuthentication=no",
            "-b",
            source,
        ]);
        cmd.args(self.ssh_args(user));
        cmd.args(command);
        run::run(&mut cmd, b"", COMMAND_TIMEOUT)
    }

    /// `ssh -i KEY USER@127.0.0.1 [COMMAND]`, public key only.
    pub fn ssh_key(&self, user: &str, key: &ClientKey, command: Option<&str>) -> Outcome {
        self.ssh_key_with(user, key, &[], command)
    }

    /// Like [`Bastion::ssh_key`] with extra ssh options (`-W host:port`…).
    pub fn ssh_key_with(
        &self,
        user: &str,
        key: &ClientKey,
        extra: &[&str],
        command: Option<&str>,
    ) -> Outcome {
        let mut cmd = self.ssh_command("ssh");
        cmd.args([
            "-o",
            "PreferredAuthentications=publickey",
            "-o",
            "BatchMode=yes",
            "-i",
        ])
        .arg(&key.private)
        .args(extra);
        cmd.args(self.ssh_args(user));
        cmd.args(command);
        run::run(&mut cmd, b"", COMMAND_TIMEOUT)
    }

    /// A keyboard-interactive login answering "Password:" with `password`
    /// and "Verification code:" with `code` (SSH_ASKPASS_REQUIRE=force and
    /// `harness/askpass.sh`), recording the prompts the server sent.
    pub fn ssh_prompted(
        &self,
        user: &str,
        password: &str,
        code: &str,
        command: Option<&str>,
    ) -> PromptedLogin {
        let helper = self.dir().join("askpass.sh");
        if !helper.exists() {
            let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("harness/askpass.sh");
            fs::copy(&source, &helper).expect("copy askpass.sh");
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&helper, fs::Permissions::from_mode(0o755))
                .expect("askpass.sh mode");
        }
        let prompt_log = self.dir().join("prompts.log");
        write(&prompt_log, "");
        let mut cmd = self.ssh_command("ssh");
        cmd.env("SSH_ASKPASS", &helper)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("DISPLAY", ":0")
            .env("JMS_E2E_PROMPT_LOG", &prompt_log)
            .env("JMS_E2E_PASSWORD", password)
            .env("JMS_E2E_CODE", code)
            .args([
                "-o",
                "PreferredAuthentications=keyboard-interactive",
                "-o",
                "PubkeyAuthentication=no",
            ]);
        cmd.args(self.ssh_args(user));
        cmd.args(command);
        let outcome = run::run(&mut cmd, b"", COMMAND_TIMEOUT);
        let prompts = fs::read_to_string(&prompt_log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        PromptedLogin { outcome, prompts }
    }
}
