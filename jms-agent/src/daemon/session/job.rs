//! An account job in its worker (`jms-job`: jms-agentd re-executed like a
//! session worker, same unprivileged user and limits): push, verify or
//! rotate one account on one asset with OpenSSH's client, as sessions
//! connect ([`connect::open`]: host keys pinned or first-seen, secrets
//! through askpass or a 0600 key file, never in an argument).
//!
//! What runs on the target as the privileged account is a fixed remote
//! command, [`BOOT`], that reads a length-prefixed script from stdin and
//! runs it: [`STAGE1`] (as the privileged account: becomes root directly,
//! through `sudo -n`, or through `sudo -S` fed the account's password
//! from stdin) then [`STAGE2`] (as root: the operation). Every value —
//! usernames, shell, groups, the sudo rule, public keys and secrets —
//! travels as a line of data on stdin after the scripts, read with
//! `read -r` and only ever used quoted; a secret reaches only builtins
//! (`printf … | chpasswd`), never an argument, an environment variable or
//! the job's output.
//!
//! Jobs: push, verify, rotate, remove (the user, its home and its sudoers
//! snippet; never an account below uid 1000) and discover (users with a
//! login shell and their last login, host facts).
//!
//! A job may be a retry of one whose bastion was lost mid-way, so every
//! job finds out which secret is live rather than assuming: a rotation
//! re-applies its (same) new secret and logs in with it; the privileged
//! account rotating itself first logs in with the vault's secret, then
//! with the new one; a verification whose vault secret fails tries the
//! candidate the server sent (an earlier rotation's unsettled secret).

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use jms_core::model::{Secret, SecretType};
use jms_sync::job::{check_order, cut_detail, JobKind, JobOrder, JobReport, JobSecrets, JobStep};

use crate::daemon::session::connect::{self, Mode, Stdin};
use crate::daemon::target::{Credential, Target};

/// The remote command of every privileged step: reads a length, then that
/// many bytes of script, and runs them; the rest of stdin is the script's.
pub const BOOT: &str = r#"sh -c 'IFS= read -r n && s=$(head -c "$n") && eval "$s"'"#;

/// As the privileged account: become root and run the next script.
pub const STAGE1: &str = r#"
IFS= read -r pw || exit 90
BOOT='IFS= read -r n && s=$(head -c "$n") && eval "$s"'
if [ "$(id -u)" = 0 ]; then
    exec sh -c "$BOOT"
fi
if ! command -v sudo >/dev/null 2>&1; then
    echo "jms: $(id -un) is not root and the target has no sudo" >&2
    exit 91
fi
if sudo -n -k true 2>/dev/null; then
    exec sudo -n -k -- sh -c "$BOOT"
fi
if [ -z "$pw" ]; then
    echo "jms: sudo asks $(id -un) for a password and jms has none (its secret is a key)" >&2
    exit 92
fi
{ printf '%s\n' "$pw"; exec cat; } | sudo -S -p '' -k -- sh -c "$BOOT"
"#;

/// As root: one operation on one account, from eight data lines: op,
/// user, shell, groups (comma-separated), sudo rule, public key, whether
/// to set the password (1/0), password. Prints `changed: …` / `ok: …`.
pub const STAGE2: &str = r#"
set -u
umask 022
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
fail() { echo "jms: $*" >&2; exit 1; }
IFS= read -r op; IFS= read -r user; IFS= read -r shell; IFS= read -r groups
IFS= read -r rule; IFS= read -r key; IFS= read -r set_pw; IFS= read -r pw
case $user in ''|-*|*[!a-z0-9_-]*) fail "bad username";; esac
case $user in [a-z_]*) ;; *) fail "bad username";; esac
exists() { getent passwd -- "$user" >/dev/null 2>&1; }
home_of() { getent passwd -- "$user" | cut -d: -f6; }
set_password() {
    printf '%s:%s\n' "$user" "$1" | chpasswd || fail "the target refused the new password (chpasswd failed)"
}
safe_keys() {
    home=$(home_of)
    [ -n "$home" ] && [ -d "$home" ] || fail "$user has no home directory"
    [ -L "$home/.ssh" ] && fail "$home/.ssh is a symlink: refused"
    ak="$home/.ssh/authorized_keys"
    [ -L "$ak" ] && fail "$ak is a symlink: refused"
    if [ ! -d "$home/.ssh" ]; then
        mkdir -m 700 -- "$home/.ssh" || fail "cannot create $home/.ssh"
        chown -- "$user:$(id -g -- "$user")" "$home/.ssh"
    fi
    return 0
}
add_key() {
    safe_keys
    if [ -f "$ak" ] && grep -qxF -- "$1" "$ak"; then
        echo "ok: public key in place"
        return 0
    fi
    printf '%s\n' "$1" >>"$ak" || fail "cannot write $ak"
    chown -- "$user:$(id -g -- "$user")" "$ak"
    chmod 600 -- "$ak"
    echo "changed: public key installed"
}
remove_key() {
    safe_keys
    blob=$(printf '%s\n' "$1" | cut -d' ' -f2)
    [ -n "$blob" ] || return 0
    [ -f "$ak" ] || return 0
    if grep -qF -- "$blob" "$ak"; then
        tmp="$ak.jms-tmp"
        grep -vF -- "$blob" "$ak" >"$tmp"
        cat -- "$tmp" >"$ak" && rm -f -- "$tmp"
        echo "changed: public key removed"
    fi
}
case $op in
push)
    case $shell in /*) ;; *) fail "bad shell";; esac
    [ -x "$shell" ] || fail "shell $shell is not on the target"
    old_ifs=$IFS; IFS=,
    for g in $groups; do
        case $g in ''|-*|*[!a-z0-9_-]*) fail "bad group name";; esac
        if ! getent group -- "$g" >/dev/null 2>&1; then
            groupadd -- "$g" || fail "cannot create group $g"
            echo "changed: group $g created"
        fi
    done
    IFS=$old_ifs
    if ! exists; then
        if [ -n "$groups" ]; then
            useradd -m -s "$shell" -G "$groups" -- "$user" || fail "useradd failed"
        else
            useradd -m -s "$shell" -- "$user" || fail "useradd failed"
        fi
        # Not locked (useradd's `!`), so that key logins work; no password yet.
        usermod -p '*' -- "$user" || fail "usermod failed"
        echo "changed: user $user created (shell $shell)"
    else
        now=$(getent passwd -- "$user" | cut -d: -f7)
        if [ "$now" != "$shell" ]; then
            usermod -s "$shell" -- "$user" || fail "usermod -s failed"
            echo "changed: shell $shell"
        fi
        old_ifs=$IFS; IFS=,
        for g in $groups; do
            if ! id -nG -- "$user" | tr ' ' '\n' | grep -qx -- "$g"; then
                usermod -a -G "$g" -- "$user" || fail "cannot add $user to $g"
                echo "changed: $user added to group $g"
            fi
        done
        IFS=$old_ifs
        echo "ok: user $user exists"
    fi
    if [ "$set_pw" = 1 ]; then
        set_password "$pw"
        echo "changed: password set"
    fi
    if [ -n "$key" ]; then
        add_key "$key"
    fi
    f="/etc/sudoers.d/jms-$user"
    if [ -n "$rule" ]; then
        want=$(printf '%s ALL=(root) NOPASSWD: %s' "$user" "$rule")
        if [ -f "$f" ] && [ "$(cat -- "$f")" = "$want" ]; then
            echo "ok: sudoers snippet in place"
        else
            command -v visudo >/dev/null 2>&1 || fail "the target has no visudo (sudo is not installed)"
            [ -d /etc/sudoers.d ] || fail "the target has no /etc/sudoers.d"
            # A name with a dot: sudo's includedir skips it until it is renamed.
            tmp=$(mktemp /etc/sudoers.d/.jms-XXXXXX) || fail "mktemp failed"
            printf '%s\n' "$want" >"$tmp"
            chmod 0440 -- "$tmp"
            if ! out=$(visudo -c -q -f "$tmp" 2>&1); then
                rm -f -- "$tmp"
                fail "visudo refused the sudo rule, nothing was written: $(printf '%s' "$out" | sed "s|$tmp|the snippet|g" | head -c 400)"
            fi
            mv -f -- "$tmp" "$f" || fail "cannot put $f in place"
            echo "changed: sudoers snippet $f"
        fi
    elif [ -f "$f" ]; then
        rm -f -- "$f"
        echo "changed: sudoers snippet $f removed"
    fi
    ;;
password)
    exists || fail "no user $user on the target"
    set_password "$pw"
    echo "changed: password set"
    ;;
add_key)
    exists || fail "no user $user on the target"
    add_key "$key"
    ;;
remove_key)
    exists || fail "no user $user on the target"
    remove_key "$key"
    ;;
remove)
    if exists; then
        uid=$(id -u -- "$user")
        [ "$uid" -ge 1000 ] 2>/dev/null || fail "$user has uid $uid: jms removes only accounts with uid 1000 and above"
        userdel -r -- "$user" >/dev/null 2>&1
        if exists; then
            fail "userdel $user failed (is it logged in?)"
        fi
        echo "changed: user $user removed with its home"
    else
        echo "ok: no user $user on the target"
    fi
    f="/etc/sudoers.d/jms-$user"
    if [ -f "$f" ]; then
        rm -f -- "$f"
        echo "changed: sudoers snippet $f removed"
    fi
    ;;
discover)
    getent passwd | while IFS=: read -r name _ uid _ _ _ sh; do
        case $sh in ''|*/nologin|*/false|/bin/sync|/sbin/shutdown|/sbin/halt) continue;; esac
        last=never
        if command -v lastlog >/dev/null 2>&1; then
            last=$(lastlog -u "$name" 2>/dev/null | awk 'NR == 2 { $1 = ""; sub(/^ +/, ""); print }')
        fi
        printf 'user %s %s %s %s\n' "$name" "$uid" "$sh" "${last:-never}"
    done
    printf 'fact hostname %s\n' "$(cat /proc/sys/kernel/hostname)"
    printf 'fact os %s\n' "$(. /etc/os-release 2>/dev/null; echo "${PRETTY_NAME:-unknown}")"
    printf 'fact kernel %s\n' "$(uname -sr)"
    printf 'fact cpus %s\n' "$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo unknown)"
    printf 'fact memory_kib %s\n' "$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)"
    ;;
*) fail "unknown operation";;
esac
"#;

/// Longest output read from one target command.
const MAX_OUTPUT: usize = 64 * 1024;
/// How long one privileged step may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(120);

/// One operation for [`STAGE2`].
struct Operation<'a> {
    op: &'static str,
    shell: &'a str,
    groups: String,
    rule: &'a str,
    key: &'a str,
    password: Option<&'a Secret>,
}

impl Operation<'_> {
    fn only(op: &'static str) -> Operation<'static> {
        Operation {
            op,
            shell: "",
            groups: String::new(),
            rule: "",
            key: "",
            password: None,
        }
    }
}

/// Told each step as it ends.
type StepSink<'a> = Box<dyn FnMut(&JobStep) + 'a>;

/// What the job runs with.
pub struct Runner<'a> {
    pub order: &'a JobOrder,
    pub secrets: &'a JobSecrets,
    pub settings: &'a connect::Settings,
    steps: Vec<JobStep>,
    changed: bool,
    serial: u32,
    /// The privileged account's secret found live when it is not the
    /// vault's (a rotation of the privileged account itself).
    privileged_live: Option<Secret>,
    /// Told each step as it ends (the worker sends it to the monitor).
    on_step: Option<StepSink<'a>>,
}

fn credential(kind: SecretType, secret: &Secret) -> Credential {
    match kind {
        SecretType::Password => Credential::Password(secret.clone()),
        SecretType::SshKey => Credential::Key(secret.clone()),
    }
}

/// A line of data: one line, or refused.
fn line(text: &str) -> Result<&str, String> {
    if text.contains('\n') || text.contains('\r') || text.contains('\0') {
        Err("a value holds a line break".into())
    } else {
        Ok(text)
    }
}

impl<'a> Runner<'a> {
    pub fn new(
        order: &'a JobOrder,
        secrets: &'a JobSecrets,
        settings: &'a connect::Settings,
    ) -> Runner<'a> {
        Runner {
            order,
            secrets,
            settings,
            steps: Vec::new(),
            changed: false,
            serial: 0,
            privileged_live: None,
            on_step: None,
        }
    }

    /// Calls `on_step` with each step as it ends.
    pub fn on_step(mut self, on_step: impl FnMut(&JobStep) + 'a) -> Self {
        self.on_step = Some(Box::new(on_step));
        self
    }

    fn scratch_id(&mut self) -> String {
        self.serial += 1;
        format!("{}-{}", self.order.id, self.serial)
    }

    fn target(&self, username: &str, credential: Credential) -> Target {
        Target {
            asset: self.order.asset.name.clone(),
            address: self.order.asset.address.clone(),
            port: self.order.asset.port,
            host_keys: self.order.asset.host_keys.clone(),
            username: username.to_string(),
            credential,
        }
    }

    fn step(&mut self, name: &str, ok: bool, detail: &str) -> bool {
        // Defence in depth: no secret of this job is ever reported.
        let mut detail = cut_detail(detail);
        for secret in [
            self.secrets.privileged.as_ref(),
            self.secrets.current.as_ref(),
            self.secrets.new.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            for part in secret.expose().lines().filter(|l| l.len() >= 8) {
                if detail.contains(part) {
                    detail = detail.replace(part, "***");
                }
            }
            if !secret.expose().is_empty() && detail.contains(secret.expose()) {
                detail = detail.replace(secret.expose(), "***");
            }
        }
        let step = JobStep {
            name: name.to_string(),
            ok,
            detail,
        };
        if let Some(on_step) = self.on_step.as_mut() {
            on_step(&step);
        }
        self.steps.push(step);
        ok
    }

    /// Logs in as the managed account with `secret`.
    fn login(&mut self, name: &str, secret: &Secret) -> bool {
        let account = self.order.account.clone();
        let target = self.target(&account.username, credential(account.secret_type, secret));
        let id = self.scratch_id();
        let result = connect::open(
            self.settings,
            &id,
            &target,
            Mode::Exec {
                command: "true".into(),
                pty: None,
            },
            Stdin::Null,
        )
        .and_then(|mut connection| {
            let ready = connection.wait_ready();
            connection.kill();
            let _ = connection.wait();
            ready
        });
        match result {
            Ok(()) => self.step(name, true, &format!("logged in as {}", account.username)),
            Err(e) => self.step(name, false, &e.to_string()),
        }
    }

    /// Runs `operation` as root through the privileged account.
    fn privileged(&mut self, name: &str, operation: Operation<'_>) -> bool {
        match self.run_privileged(&operation) {
            Ok(out) => {
                if out.lines().any(|l| l.starts_with("changed:")) {
                    self.changed = true;
                }
                self.step(name, true, &out)
            }
            Err(e) => self.step(name, false, &e),
        }
    }

    fn run_privileged(&mut self, operation: &Operation<'_>) -> Result<String, String> {
        let Some(privileged) = self.order.privileged.clone() else {
            return Err("the asset has no privileged account".into());
        };
        let Some(secret) = self
            .privileged_live
            .clone()
            .or_else(|| self.secrets.privileged.clone())
        else {
            return Err("the privileged account has no secret".into());
        };
        let sudo_password = match privileged.secret_type {
            SecretType::Password => secret.expose().to_string(),
            SecretType::SshKey => String::new(),
        };
        let mut input = Vec::new();
        let mut chunk = |text: &str| {
            input.extend_from_slice(format!("{}\n", text.len()).as_bytes());
            input.extend_from_slice(text.as_bytes());
        };
        chunk(STAGE1);
        let mut data = String::new();
        data.push_str(line(&sudo_password)?);
        data.push('\n');
        let stage2_len = STAGE2.len();
        let mut rest = format!("{stage2_len}\n{STAGE2}");
        for value in [
            operation.op,
            &self.order.account.username,
            operation.shell,
            &operation.groups,
            operation.rule,
            operation.key,
            if operation.password.is_some() {
                "1"
            } else {
                "0"
            },
            operation.password.map(|p| p.expose()).unwrap_or(""),
        ] {
            rest.push_str(line(value)?);
            rest.push('\n');
        }
        data.push_str(&rest);
        input.extend_from_slice(data.as_bytes());
        let target = self.target(
            &privileged.username,
            credential(privileged.secret_type, &secret),
        );
        let id = self.scratch_id();
        let mut connection = connect::open(
            self.settings,
            &id,
            &target,
            Mode::Exec {
                command: BOOT.into(),
                pty: None,
            },
            Stdin::Pipe,
        )
        .map_err(|e| e.to_string())?;
        let (stdin, stdout, stderr) = connection
            .take_blocking_pipes()
            .ok_or("no pipes to the target")?;
        let writer = std::thread::spawn(move || {
            let mut stdin = std::fs::File::from(stdin);
            let _ = stdin.write_all(&input);
        });
        let read = |fd: OwnedFd| {
            std::thread::spawn(move || {
                let mut out = Vec::new();
                let _ = std::fs::File::from(fd)
                    .take(MAX_OUTPUT as u64)
                    .read_to_end(&mut out);
                out
            })
        };
        let (out, err) = (read(stdout), read(stderr));
        let started = Instant::now();
        while !out.is_finished() || !err.is_finished() {
            if started.elapsed() > STEP_TIMEOUT {
                connection.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = out.join().unwrap_or_default();
        let err = err.join().unwrap_or_default();
        let _ = writer.join();
        let ended = connection.wait();
        let out = String::from_utf8_lossy(&out).into_owned();
        let err = String::from_utf8_lossy(&err).into_owned();
        if let Some(error) = ended.error {
            return Err(error.to_string());
        }
        match ended.exit_status {
            Some(0) => Ok(out),
            status => {
                let said: Vec<&str> = err.lines().filter(|l| l.starts_with("jms: ")).collect();
                let said = if said.is_empty() {
                    err.trim().to_string()
                } else {
                    said.join("\n")
                };
                Err(format!(
                    "{}{said} (exit status {})",
                    if out.trim().is_empty() {
                        String::new()
                    } else {
                        format!("{}\n", out.trim())
                    },
                    status.map_or("none".into(), |s| s.to_string())
                ))
            }
        }
    }

    fn report(self, ok: bool, new_in_place: bool, error: Option<String>) -> JobReport {
        JobReport {
            ok,
            changed: self.changed,
            new_secret_in_place: new_in_place,
            steps: self.steps,
            error,
        }
    }

    fn failed_step(&self) -> Option<String> {
        self.steps
            .iter()
            .rev()
            .find(|s| !s.ok)
            .map(|s| format!("{}: {}", s.name, s.detail))
    }

    /// Runs the job to its report.
    pub fn run(mut self) -> JobReport {
        if let Err(e) = check_order(self.order) {
            return self.report(false, false, Some(e));
        }
        match self.order.action {
            JobKind::Verify => self.verify(),
            JobKind::Push => self.push(),
            JobKind::Rotate => self.rotate(),
            JobKind::Remove => {
                let ok = self.privileged("remove", Operation::only("remove"));
                let error = (!ok).then(|| self.failed_step()).flatten();
                self.report(ok, false, error)
            }
            JobKind::Discover => {
                let ok = self.privileged("discover", Operation::only("discover"));
                let error = (!ok).then(|| self.failed_step()).flatten();
                self.report(ok, false, error)
            }
        }
    }

    fn verify(mut self) -> JobReport {
        let Some(current) = self.secrets.current.clone() else {
            return self.report(false, false, Some("no secret to verify".into()));
        };
        if self.login("verify", &current) {
            return self.report(true, false, None);
        }
        let error = self.failed_step();
        // An earlier job's new secret whose outcome the server never
        // learnt (its bastion was lost): when it logs in, it is the live
        // one and the server commits it.
        if let Some(candidate) = self.secrets.new.clone() {
            if self.login("verify_pending", &candidate) {
                return self.report(true, true, None);
            }
        }
        self.report(false, false, error)
    }

    fn push(mut self) -> JobReport {
        let account = self.order.account.clone();
        // The secret to put in place: the vault's, or a new one.
        let (secret, generated) = match (&self.secrets.current, &self.secrets.new) {
            (Some(current), _) => (current.clone(), false),
            (None, Some(new)) => (new.clone(), true),
            (None, None) => return self.report(false, false, Some("no secret to push".into())),
        };
        let key = match account.secret_type {
            SecretType::SshKey => {
                let key = if generated {
                    account.new_public_key.clone()
                } else {
                    account.public_key.clone()
                };
                match key {
                    Some(key) => key,
                    None => return self.report(false, false, Some("no public key to push".into())),
                }
            }
            SecretType::Password => String::new(),
        };
        // A password that already works is left alone (idempotent).
        let set_password = account.secret_type == SecretType::Password
            && (generated || !self.login_quietly(&secret));
        let operation = Operation {
            op: "push",
            shell: account.shell.as_deref().unwrap_or("/bin/bash"),
            groups: account.groups.join(","),
            rule: account.sudo.as_deref().unwrap_or(""),
            key: &key,
            password: set_password.then_some(&secret),
        };
        if !self.privileged("apply", operation) {
            let error = self.failed_step();
            return self.report(false, false, error);
        }
        let ok = self.login("verify", &secret);
        let error = (!ok).then(|| self.failed_step()).flatten();
        self.report(ok, ok && generated, error)
    }

    /// Logs in without a step (push's check whether the password works).
    fn login_quietly(&mut self, secret: &Secret) -> bool {
        let ok = self.login("probe", secret);
        self.steps.pop();
        ok
    }

    fn rotate(mut self) -> JobReport {
        let account = self.order.account.clone();
        let Some(new) = self.secrets.new.clone() else {
            return self.report(false, false, Some("no new secret".into()));
        };
        let current = self.secrets.current.clone();
        let itself = self
            .order
            .privileged
            .as_ref()
            .is_some_and(|p| p.name == account.name);
        if itself {
            // The privileged account rotating itself: which of the vault's
            // secret and the new one logs in (an earlier attempt may have
            // applied the new one before its bastion was lost)?
            let Some(old) = self.secrets.privileged.clone() else {
                return self.report(
                    false,
                    false,
                    Some("the privileged account has no secret".into()),
                );
            };
            if !self.login("login", &old) {
                let error = self.failed_step();
                if self.login("verify_new", &new) {
                    // Applied by an earlier attempt: only the old key
                    // (if any) is left to take off.
                    self.privileged_live = Some(new.clone());
                    self.remove_old_key();
                    return self.report(true, true, None);
                }
                return self.report(false, false, error);
            }
        }
        match account.secret_type {
            SecretType::Password => {
                let apply = Operation {
                    password: Some(&new),
                    ..Operation::only("password")
                };
                if !self.privileged("apply", apply) {
                    let error = self.failed_step();
                    return self.report(false, false, error);
                }
                if self.login("verify_new", &new) {
                    return self.report(true, true, None);
                }
                let error = self.failed_step();
                // The new password does not log in: the old one goes back.
                if let Some(current) = current {
                    let back = Operation {
                        password: Some(&current),
                        ..Operation::only("password")
                    };
                    let mut back_ok = self.privileged("rollback", back);
                    if !back_ok && itself {
                        // The privileged account's password did change:
                        // the rollback logs in with the new one.
                        self.privileged_live = Some(new.clone());
                        let back = Operation {
                            password: Some(&current),
                            ..Operation::only("password")
                        };
                        back_ok = self.privileged("rollback", back);
                        self.privileged_live = None;
                    }
                    if back_ok {
                        self.login("verify_old", &current);
                    }
                }
                self.report(false, false, error)
            }
            SecretType::SshKey => {
                let Some(new_key) = account.new_public_key.clone() else {
                    return self.report(false, false, Some("no new public key".into()));
                };
                let add = Operation {
                    key: &new_key,
                    ..Operation::only("add_key")
                };
                if !self.privileged("apply", add) {
                    let error = self.failed_step();
                    return self.report(false, false, error);
                }
                if !self.login("verify_new", &new) {
                    let error = self.failed_step();
                    let remove = Operation {
                        key: &new_key,
                        ..Operation::only("remove_key")
                    };
                    self.privileged("rollback", remove);
                    return self.report(false, false, error);
                }
                // The new key works: the old one is taken off the target
                // (through the new one when the account rotates itself).
                if itself {
                    self.privileged_live = Some(new.clone());
                }
                self.remove_old_key();
                self.report(true, true, None)
            }
        }
    }

    /// Takes the vault's public key off the target (after a key rotation
    /// logged in with the new one).
    fn remove_old_key(&mut self) {
        let account = self.order.account.clone();
        if account.secret_type != SecretType::SshKey || account.public_key == account.new_public_key
        {
            return;
        }
        if let Some(old_key) = account.public_key {
            let remove = Operation {
                key: &old_key,
                ..Operation::only("remove_key")
            };
            self.privileged("remove_old", remove);
        }
    }
}

/// The job worker's start: like a session worker's (no new privileges,
/// its limits), then one [`crate::wire::JobStart`] in, one
/// [`JobReport`] out.
pub fn job_main() -> std::process::ExitCode {
    use std::os::fd::AsFd;
    use std::process::ExitCode;
    let _ = nix::sys::prctl::set_name(c"jms-job");
    if let Err(e) = super::confine("jms-job") {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    let stream = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => std::os::unix::net::UnixStream::from(fd),
        Err(e) => {
            eprintln!("jms-job: stdin: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (start, _) = match jms_proto::read_frame_with_fds_limited::<crate::wire::JobStart>(
        &stream,
        0,
        jms_proto::MAX_RESPONSE_FRAME,
    ) {
        Ok(read) => read,
        Err(e) => {
            eprintln!("jms-job: no start message: {e}");
            return ExitCode::FAILURE;
        }
    };
    let span = tracing::info_span!("job", id = %start.order.id);
    let _entered = span.enter();
    let settings = super::connect_settings(&start.settings);
    let report = Runner::new(&start.order, &start.secrets, &settings)
        .on_step(|step| {
            let _ = jms_proto::write_frame(&mut &stream, &crate::wire::FromJob::Step(step.clone()));
        })
        .run();
    match jms_proto::write_frame(&mut &stream, &crate::wire::FromJob::Report(report)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jms-job: the report did not go out: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scripts_parse_and_values_with_line_breaks_are_refused() {
        for script in [STAGE1, STAGE2] {
            let out = std::process::Command::new("sh")
                .args(["-n", "-c", script])
                .output()
                .expect("sh");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(line("a\nb").is_err());
        assert!(line("ok value").is_ok());
    }
}
