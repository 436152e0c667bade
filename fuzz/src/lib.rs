//! The fuzz targets' bodies, one function per target (fuzz_targets/*.rs
//! are one-line wrappers), so a target and its regression replay run the
//! same code. Each function takes the fuzzer's bytes, feeds them to one
//! parser of untrusted input the way jms does, and panics only when an
//! invariant below is broken (libFuzzer reports the panic as a crash).
//! See README.md for what each target asserts.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use jms_agent::daemon::session::commands::{Filters, LineTracker, Submitted, Verdict};
use jms_agent::daemon::session::sftp::codec;
use jms_agent::daemon::session::sftp::{
    self, PolicyFolders, SftpContext, Upstream, UpstreamError, UpstreamStreams,
};
use jms_agent::daemon::session::stdin_check::StdinLines;
use jms_agent::daemon::session::transfer::{self, TransferEvent, TransferLog};
use jms_agent::daemon::session::{classify, Wanted};
use jms_agent::daemon::target::TargetSpec;
use jms_core::model::{FilterAction, PolicyDocument};
use jms_core::{Format, Policy};
use jms_sync::bundle::{self, Bundle, Delta, UnixIds};
use ring::signature::{Ed25519KeyPair, KeyPair};

pub mod seeds;

/// Splits `data` at the first `sep`: the part before and the rest.
fn cut(data: &[u8], sep: u8) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == sep) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

// ---- 1. agentd socket frames ------------------------------------------------

/// `frames`: the bytes as a stream of frames read by the daemon
/// (`read_frame` of a [`jms_proto::Request`], and `read_frame_with_fds`
/// through a real socket pair) and by a client (`read_response` of a
/// [`jms_proto::Response`]). Asserts: no panic, every decoded message
/// re-encodes and decodes to the same message, a decoded request came from
/// a frame within `MAX_FRAME`.
pub fn frames(data: &[u8]) {
    use jms_proto::{
        read_frame, read_frame_with_fds, read_response, write_frame, Request, Response, MAX_FRAME,
    };
    let mut input = data;
    for _ in 0..64 {
        let before = input.len();
        match read_frame::<Request>(&mut input) {
            Ok(request) => {
                assert!(
                    before - input.len() <= 4 + MAX_FRAME,
                    "request over MAX_FRAME"
                );
                let mut again = Vec::new();
                write_frame(&mut again, &request).expect("a decoded request re-encodes");
                let back: Request = read_frame(&mut again.as_slice()).expect("round trip");
                assert_eq!(format!("{back:?}"), format!("{request:?}"));
            }
            Err(_) => break,
        }
    }
    let mut input = data;
    for _ in 0..64 {
        match read_response::<Response>(&mut input) {
            Ok(response) => {
                let mut again = Vec::new();
                write_frame(&mut again, &response).expect("a decoded response re-encodes");
                let back: Response = read_response(&mut again.as_slice()).expect("round trip");
                assert_eq!(format!("{back:?}"), format!("{response:?}"));
            }
            Err(_) => break,
        }
    }
    // The daemon's own path: a socket, the length prefix by recvmsg.
    if data.len() <= 128 * 1024 {
        let (mut writer, reader) = UnixStream::pair().expect("socketpair");
        writer
            .set_write_timeout(Some(std::time::Duration::from_secs(1)))
            .ok();
        reader
            .set_read_timeout(Some(std::time::Duration::from_secs(1)))
            .ok();
        let sent = writer.write(data).unwrap_or(0);
        drop(writer);
        for _ in 0..64 {
            match read_frame_with_fds::<Request>(&reader) {
                Ok((_, fds)) => assert!(fds.is_empty(), "descriptors out of nowhere"),
                Err(_) => break,
            }
        }
        let _ = sent;
    }
}

// ---- 2. command lines --------------------------------------------------------

/// `command_line`: the bytes as `SSH_ORIGINAL_COMMAND` read by the daemon
/// (`classify`: sftp subsystem, scp/rsync, share/join, `[account@]asset
/// [command]`; then the target form and the transfer parser), and by the
/// agent (`invocation::parse` with argv/env cut from the same bytes).
/// Asserts: no panic; the target of a target request holds no space and
/// parses to a non-empty asset; a transfer's asset and account are
/// non-empty and hold no `@`, `:` or `/`.
pub fn command_line(data: &[u8]) {
    let line = String::from_utf8_lossy(data);
    match classify(&line) {
        Wanted::Target { target, command } => {
            assert!(!target.contains(' '), "target {target:?} holds a space");
            if let Some(spec) = TargetSpec::parse(&target) {
                assert!(!spec.asset.is_empty());
                if let Some(account) = &spec.account {
                    assert!(!account.is_empty());
                }
            }
            if let Some(command) = command {
                assert!(!command.trim().is_empty());
            }
        }
        Wanted::Transfer(text) => {
            let parsed = transfer::parse(&text).expect("classified as a transfer");
            if let Ok(t) = parsed {
                let spec = &t.target;
                assert!(!spec.asset.is_empty(), "empty asset in {text:?}");
                for bad in ['@', ':', '/'] {
                    assert!(
                        !spec.asset.contains(bad),
                        "asset {:?} of {text:?}",
                        spec.asset
                    );
                }
                if let Some(account) = &spec.account {
                    assert!(!account.is_empty() && !account.contains(':'));
                }
                for path in &t.paths {
                    assert!(
                        !path.chars().any(|c| c.is_control() && c != '\t'),
                        "a control character in the path {path:?} of {text:?}"
                    );
                }
                let _ = (t.required_actions(), t.protocol());
            }
        }
        Wanted::Sftp => assert!(sftp::is_subsystem_command(line.trim_start())),
        Wanted::Share(_) | Wanted::Join(_) | Wanted::Nothing => {}
    }
    let _ = TargetSpec::parse(&line);
    let _ = transfer::parse(&line);
    // The agent: argv and environment cut from the bytes at NULs, `=`
    // between a variable's name and value.
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;
    let (argv, env) = cut(data, 0xff);
    let args: Vec<OsString> = argv
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| OsString::from_vec(a.to_vec()))
        .collect();
    let env: Vec<(OsString, OsString)> = env
        .split(|&b| b == 0)
        .map(|pair| {
            let (k, v) = cut(pair, b'=');
            (
                OsString::from_vec(k.to_vec()),
                OsString::from_vec(v.to_vec()),
            )
        })
        .collect();
    if let jms_agent::client::invocation::Parsed::Session(invocation) =
        jms_agent::client::invocation::parse(&args, &env)
    {
        assert!(invocation.term.len() <= 64, "TERM passed on unchecked");
        if let Some(client) = &invocation.client {
            assert!(client.parse::<std::net::IpAddr>().is_ok());
        }
        if let Some(command) = &invocation.command {
            assert!(!command.trim().is_empty());
        }
    }
}

// ---- 3. SFTP codec -------------------------------------------------------------

/// `sftp_codec`: the bytes as a stream of SFTP frames, each read field by
/// field as the proxy reads requests (strings, u32/u64, ATTRS). Asserts:
/// no panic, `read_frame` honours its limit, reads never go backwards or
/// past the frame.
pub fn sftp_codec(data: &[u8]) {
    let mut input = data;
    let mut frame = Vec::new();
    for _ in 0..256 {
        match codec::read_frame_into(&mut input, 64 * 1024, &mut frame) {
            Ok(true) => {}
            _ => break,
        }
        assert!(frame.len() >= 5 && frame.len() <= 4 + 64 * 1024);
        let _ = (codec::frame_type(&frame), codec::frame_id(&frame));
        let _ = (codec::status_code(&frame), codec::status_message(&frame));
        let mut fields = codec::Fields::of_frame(&frame, frame.first() != Some(&1));
        let recipe = frame.get(5).copied().unwrap_or(0);
        for step in 0..8 {
            let before = fields.position();
            let ok = match (recipe >> step) & 3 {
                0 => fields.string().is_ok(),
                1 => fields.u32().is_ok(),
                2 => fields.u64().is_ok(),
                _ => fields.skip_attrs().is_ok(),
            };
            assert!(fields.position() >= before && fields.position() <= frame.len());
            if !ok {
                break;
            }
        }
        let _ = fields.rest();
        let mut patched = frame.clone();
        codec::set_frame_id(&mut patched, 0xdead_beef);
        assert_eq!(patched.len(), frame.len());
    }
}

// ---- 3b. SFTP proxy ------------------------------------------------------------

/// The proxy's policy: alice may use web01 (all actions) and db01, two
/// accounts (connect, download); bob, no grant, sees an empty root.
const SFTP_POLICY: &str = r#"
users: [{username: alice}, {username: bob}]
assets:
  - name: web01
    address: 127.0.0.1
    protocols: [{name: ssh, port: 22}, {name: sftp, port: 22}]
    accounts: [{name: deploy, username: deploy, secret_type: password, secret: x}]
  - name: db01
    address: 127.0.0.1
    protocols: [{name: sftp, port: 22}]
    accounts:
      - {name: root, username: root, secret_type: password, secret: x}
      - {name: pg, username: postgres, secret_type: password, secret: x}
grants:
  - {name: a-web, users: [alice], assets: [web01], accounts: ["@ALL"], protocols: [sftp], actions: [all]}
  - {name: a-db, users: [alice], assets: [db01], accounts: ["@ALL"], protocols: [sftp], actions: [connect, download]}
"#;

struct NoLog;
impl TransferLog for NoLog {
    fn record(&self, event: TransferEvent) {
        let _ = format!("{event:?}");
    }
}

/// A target's SFTP server in memory: each request gets exactly one reply,
/// with the request's id; the reply is the next one the fuzzer scripted
/// (its type and body) or, when the script is used up, a plausible one.
struct FakeTargets {
    script: Mutex<Vec<(u8, Vec<u8>)>>,
}

/// Shuts a socket down when dropped (its peer sees EOF only then, not
/// when one of several descriptors closes): the proxy's writer, so the
/// target sees the end of the requests, and the guard, so the proxy's
/// reader ends.
struct Shut(UnixStream, std::net::Shutdown);
impl Drop for Shut {
    fn drop(&mut self) {
        let _ = self.0.shutdown(self.1);
    }
}
impl Write for Shut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl Upstream for FakeTargets {
    fn open(&self, asset: &str, _account: &str) -> Result<UpstreamStreams, UpstreamError> {
        if asset == "db01" && self.script.lock().unwrap().len() % 7 == 3 {
            return Err(UpstreamError("db01: cannot connect".into()));
        }
        let (proxy_side, mut server) =
            UnixStream::pair().map_err(|e| UpstreamError(e.to_string()))?;
        let script: Vec<(u8, Vec<u8>)> = std::mem::take(&mut *self.script.lock().unwrap());
        std::thread::spawn(move || {
            let mut script = script.into_iter();
            while let Ok(Some(request)) = codec::read_frame(&mut server, 4 * 1024 * 1024) {
                let kind = codec::frame_type(&request);
                let id = codec::frame_id(&request);
                // INIT has no id; every other reply carries the request's,
                // so no request waits for an answer that never comes (the
                // proxy waits PROBE_TIMEOUT, 60 s, for an unanswered probe).
                let reply = match script.next() {
                    Some((reply, body)) if kind == codec::FXP_INIT => {
                        codec::Frame::new(reply).raw(&body).finish()
                    }
                    Some((reply, body)) => codec::Frame::new(reply).u32(id).raw(&body).finish(),
                    None => plausible(kind, id),
                };
                if server.write_all(&reply).is_err() {
                    break;
                }
            }
        });
        let clone = || {
            proxy_side
                .try_clone()
                .map_err(|e| UpstreamError(e.to_string()))
        };
        let reader = clone()?;
        let guard = Shut(clone()?, std::net::Shutdown::Both);
        Ok(UpstreamStreams {
            writer: Box::new(Shut(proxy_side, std::net::Shutdown::Write)),
            reader: Box::new(reader),
            guard: Box::new(guard),
        })
    }
}

/// What a well-behaved sftp-server would answer.
fn plausible(kind: u8, id: u32) -> Vec<u8> {
    use codec::*;
    match kind {
        FXP_INIT => Frame::new(FXP_VERSION).u32(3).finish(),
        FXP_OPEN | FXP_OPENDIR => Frame::new(FXP_HANDLE).u32(id).string(b"h1").finish(),
        FXP_READ => Frame::new(FXP_DATA).u32(id).string(b"data").finish(),
        FXP_READDIR | FXP_REALPATH | FXP_READLINK => Frame::new(FXP_NAME)
            .u32(id)
            .u32(1)
            .string(b"f")
            .string(b"-rw-r--r-- 1 0 0 4 Jan 1 00:00 f")
            .raw(&attrs(4, 0o100644, 0))
            .finish(),
        FXP_STAT | FXP_LSTAT | FXP_FSTAT => Frame::new(FXP_ATTRS)
            .u32(id)
            .raw(&attrs(4, 0o100644, 0))
            .finish(),
        FXP_EXTENDED => Frame::new(FXP_EXTENDED_REPLY).u32(id).u64(1 << 18).finish(),
        _ => status(id, FX_OK, ""),
    }
}

fn sftp_policy() -> Arc<Policy> {
    static POLICY: OnceLock<Arc<Policy>> = OnceLock::new();
    POLICY
        .get_or_init(|| {
            Arc::new(
                Policy::parse(
                    SFTP_POLICY,
                    Format::Yaml,
                    "fuzz.yaml",
                    Path::new("/nonexistent"),
                )
                .expect("the fuzz policy checks"),
            )
        })
        .clone()
}

/// `sftp_proxy`: the SFTP proxy (`sftp::serve`) on an engineer's stream
/// and hostile targets. Input: a u16 (big-endian) length, then that many
/// bytes of the engineer's stream (her SFTP packets), then the targets'
/// scripted replies as `type u8 | length u8 | body`. Asserts: no panic, no
/// hang (libFuzzer's -timeout), bounded memory (-rss_limit_mb), the
/// session ends when her stream ends.
pub fn sftp_proxy(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let split = u16::from_be_bytes([data[0], data[1]]) as usize;
    let rest = &data[2..];
    let (client, mut replies) = rest.split_at(split.min(rest.len()).min(60_000));
    let mut script = Vec::new();
    while replies.len() >= 2 {
        let (kind, len) = (replies[0], replies[1] as usize);
        let body = &replies[2..(2 + len).min(replies.len())];
        script.push((kind, body.to_vec()));
        replies = &replies[2 + body.len()..];
    }
    let (input, mut feed) = std::io::pipe().expect("pipe");
    feed.write_all(client)
        .expect("the client's bytes fit in the pipe");
    drop(feed);
    let output = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .expect("/dev/null");
    let policy = sftp_policy();
    let policy_fn = move || policy.clone();
    let targets = FakeTargets {
        script: Mutex::new(script),
    };
    let user = if client.len() % 5 == 4 {
        "bob"
    } else {
        "alice"
    };
    let folders = PolicyFolders {
        user,
        policy: &policy_fn,
    };
    let ctx = SftpContext {
        user,
        folders: &folders,
        upstream: &targets,
        log: &NoLog,
    };
    let _ = sftp::serve(&ctx, input.into(), output.into());
}

// ---- 4. command reconstruction and screen model ----------------------------

/// Longest line the screen model may hold beyond the bytes it was fed: a
/// screen is at most a few thousand columns wide.
pub const LINE_SLACK: usize = 64 * 1024;

/// `line_tracker`: arbitrary interleavings of target output and engineer
/// input through [`LineTracker`], as the relay drives it, and the same
/// input through the exec stdin checker ([`StdinLines`]). The bytes are
/// chunks `tag | length | bytes`: tag bit 0 picks output (target) or input
/// (engineer); bit 1 refuses the next submitted line. Asserts: no panic, no
/// hang, and the reconstructed line never holds more characters than the
/// bytes fed so far plus [`LINE_SLACK`] (a count in a CSI sequence must not
/// grow it); a line the stdin checker judges is bounded the same way and
/// what it forwards is never more than it was fed.
pub fn line_tracker(data: &[u8]) {
    let mut tracker = LineTracker::default();
    let mut stdin = StdinLines::default();
    let deny_all = Filters::none().with_default(FilterAction::Deny);
    let filters = [Filters::none(), deny_all];
    let mut rest = data;
    let mut fed = 0usize;
    let mut forwarded = 0usize;
    while rest.len() >= 2 {
        let (tag, len) = (rest[0], rest[1] as usize);
        let chunk = &rest[2..(2 + len).min(rest.len())];
        rest = &rest[2 + chunk.len()..];
        fed += chunk.len();
        if tag & 1 == 0 {
            tracker.output(chunk);
        } else {
            let mut input = chunk;
            while !input.is_empty() {
                let step = tracker.step(input);
                assert!(step.consumed >= 1 && step.consumed <= input.len());
                input = &input[step.consumed..];
                if let Some(enter) = step.enter {
                    let _ = tracker.echoes(&enter.typed);
                    if let Submitted::Line(line) = tracker.submitted(&enter) {
                        assert!(line.command.chars().count() <= fed + LINE_SLACK);
                        if tag & 2 != 0 {
                            tracker.refused();
                        }
                    }
                }
            }
            let judge = &filters[usize::from(tag & 4 != 0)];
            let mut log = |line: &str, _: &Verdict| {
                assert!(line.chars().count() <= fed + LINE_SLACK);
            };
            let checked = stdin.feed(chunk, judge, &mut log);
            forwarded += checked.forward.len();
            assert!(
                forwarded <= fed,
                "the stdin checker forwarded more than it got"
            );
        }
        let shown = tracker.echoed_command().chars().count();
        assert!(
            shown <= fed + LINE_SLACK,
            "the screen line holds {shown} characters after {fed} bytes"
        );
    }
}

// ---- 5. policy files -----------------------------------------------------------

/// Clears every `secret_file` (a policy names files the *admin* chose;
/// the fuzzer must not read /dev/zero).
fn without_secret_files(doc: &mut PolicyDocument) -> bool {
    let mut had = false;
    for asset in &mut doc.assets {
        for account in &mut asset.accounts {
            had |= account.secret_file.take().is_some();
        }
    }
    had
}

/// `policy`: the bytes as a policy file, YAML or JSON (first byte's low
/// bit), through `Policy::parse` (typed parse, then the entity-by-entity
/// parse for errors, then every check and the grant index). Asserts: no
/// panic; a text the typed parse refuses is refused by `Policy::parse`
/// too, but for an empty (null) document; a policy that checks answers its summary and group members.
pub fn policy(data: &[u8]) {
    let Some((&first, text)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let format = if first & 1 == 0 {
        Format::Yaml
    } else {
        Format::Json
    };
    let typed = match format {
        Format::Json => serde_json::from_str::<PolicyDocument>(text).map_err(|e| e.to_string()),
        Format::Yaml => serde_yaml_ng::from_str::<PolicyDocument>(text).map_err(|e| e.to_string()),
    };
    let base = Path::new("/nonexistent");
    let checked = match typed {
        Ok(mut doc) => {
            if without_secret_files(&mut doc) {
                Policy::from_document(doc, "fuzz", base)
            } else {
                Policy::parse(text, format, "fuzz", base)
            }
        }
        Err(_) => {
            // The one text the typed parse refuses and the file parse
            // takes: an empty (null) document, read as the empty policy.
            let result = Policy::parse(text, format, "fuzz", base);
            if let Ok(policy) = &result {
                assert_eq!(
                    policy.doc.to_document(),
                    PolicyDocument::default(),
                    "a text serde refuses checked as a non-empty policy"
                );
            }
            result
        }
    };
    if let Ok(policy) = checked {
        let _ = policy.summary();
        let _ = policy.group_members();
        let now = chrono::Utc::now();
        for user in policy.doc.users.iter().take(4) {
            let _ = sftp::folders::list(&policy, &user.username, now);
        }
    }
}

// ---- 6. bundles and deltas -------------------------------------------------------

/// The server key the fuzzed bundles are signed with (fixed, so a crash
/// reproduces).
fn server_key() -> &'static Ed25519KeyPair {
    static KEY: OnceLock<Ed25519KeyPair> = OnceLock::new();
    KEY.get_or_init(|| Ed25519KeyPair::from_seed_unchecked(&[7u8; 32]).expect("seed"))
}

/// The signed form of `body`: what the server sends (`bundle.rs`'s
/// envelope), signed with [`server_key`].
pub fn envelope(format: u8, body: &[u8]) -> Vec<u8> {
    let key = server_key();
    let context = if format == bundle::DELTA_FORMAT {
        bundle::DELTA_SIGN_CONTEXT
    } else {
        bundle::SIGN_CONTEXT
    };
    let mut message = context.to_vec();
    message.extend_from_slice(body);
    let mut out = bundle::MAGIC.to_vec();
    out.push(format);
    out.extend_from_slice(key.public_key().as_ref());
    out.extend_from_slice(key.sign(&message).as_ref());
    out.extend_from_slice(body);
    out
}

/// A real bundle at version 5: the SFTP policy, made by the code's own
/// types.
pub fn base_bundle() -> Bundle {
    let key = server_key();
    Bundle {
        version: 5,
        issued_at: chrono::DateTime::from_timestamp(1_700_000_000, 0).expect("time"),
        server_id: bundle::server_id(key.public_key().as_ref()),
        policy: sftp_policy().doc.to_document(),
        settings: serde_json::json!({"session": {"idle_timeout": "30m"}}),
        ids: UnixIds::default(),
    }
}

/// What the bastion does with a verified bundle: check its policy.
fn check_like_the_bastion(mut doc: PolicyDocument) {
    without_secret_files(&mut doc);
    if let Ok(policy) = Policy::from_document(doc, "bundle", Path::new("/nonexistent")) {
        let _ = policy.summary();
    }
}

/// `bundle`: first byte picks the mode, the rest is
/// - 0: a signed form as received (envelope checks: length, magic,
///   format, pinned key, signature) for `verify` and `verify_delta`;
/// - 1: a full bundle's JSON body, signed here, then `verify` and the
///   bastion's policy check;
/// - 2: a delta's JSON body, signed here, then `verify_delta`, `apply` to
///   a real bundle at version 5, and the policy check;
/// - 3: a sealed transport blob for `TransportKey::open`.
///
/// Asserts: no panic; nothing but the pinned key's signature is accepted;
/// a verified bundle is newer than the one held; an applied delta leaves
/// the bundle at its `to_version`.
pub fn bundle(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let pinned = server_key().public_key().as_ref().to_vec();
    match mode % 4 {
        0 => {
            for have in [0, 5] {
                if let Ok(b) = bundle::verify(rest, &pinned, have) {
                    assert!(b.version > have);
                    assert!(rest.len() > 101 && rest[5..37] == pinned[..]);
                }
                if let Ok(d) = bundle::verify_delta(rest, &pinned, have) {
                    assert!(d.from_version == have && d.to_version > have);
                }
            }
            let _ = bundle::format_of(rest);
        }
        1 => {
            let signed = envelope(bundle::FORMAT, rest);
            if let Ok(b) = bundle::verify(&signed, &pinned, 5) {
                assert!(b.version > 5);
                check_like_the_bastion(b.policy);
            }
            // Never as a delta: the formats and contexts differ.
            assert!(bundle::verify_delta(&signed, &pinned, 5).is_err());
        }
        2 => {
            let signed = envelope(bundle::DELTA_FORMAT, rest);
            assert!(bundle::verify(&signed, &pinned, 0).is_err());
            if let Ok(delta) = bundle::verify_delta(&signed, &pinned, 5) {
                let mut base = base_bundle();
                let _ = (delta.len(), delta.is_empty());
                if delta.apply(&mut base).is_ok() {
                    assert_eq!(base.version, delta.to_version);
                    check_like_the_bastion(base.policy);
                }
            }
        }
        _ => {
            let _ = bundle::TransportKey::generate().open(rest);
        }
    }
}

/// A real delta body (for the seed corpus): version 5 to 6.
pub fn sample_delta() -> Delta {
    let key = server_key();
    let upsert = PolicyDocument {
        users: sftp_policy().doc.users.to_vec(),
        ..Default::default()
    };
    Delta {
        from_version: 5,
        to_version: 6,
        issued_at: chrono::DateTime::from_timestamp(1_700_000_100, 0).expect("time"),
        server_id: bundle::server_id(key.public_key().as_ref()),
        upsert,
        accounts: Vec::new(),
        remove: vec![bundle::Removal {
            kind: bundle::EntityKind::Asset,
            name: "db01".into(),
        }],
        settings: serde_json::json!({}),
        ids: UnixIds::default(),
    }
}

// ---- 7. sync request verification --------------------------------------------------

/// The bastion's key in the sync target.
fn bastion_key() -> &'static Ed25519KeyPair {
    static KEY: OnceLock<Ed25519KeyPair> = OnceLock::new();
    KEY.get_or_init(|| Ed25519KeyPair::from_seed_unchecked(&[9u8; 32]).expect("seed"))
}

/// The server's sync service, the enrolled bastion's id, the data directory.
type SyncServer = (
    std::sync::Arc<jms_server::sync::SyncService>,
    i64,
    tempfile::TempDir,
);

/// A server with one enrolled bastion (id returned), its store on tmpfs.
fn sync_server() -> &'static SyncServer {
    static SERVER: OnceLock<SyncServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let dir = if Path::new("/dev/shm").is_dir() {
            tempfile::tempdir_in("/dev/shm")
        } else {
            tempfile::tempdir()
        }
        .expect("temp dir");
        let admin = jms_server::Services::open(dir.path())
            .expect("server store")
            .sync;
        let (token, _) = admin
            .create_enroll_token("fuzz", std::time::Duration::from_secs(3600), None)
            .expect("token");
        let public = bundle::hex(bastion_key().public_key().as_ref());
        let request = jms_sync::enroll::EnrollRequest {
            token: token.clone(),
            bastion_name: "fuzzbastion".into(),
            public_key: public,
            ssh_host_keys: Vec::new(),
            ssh_address: None,
        };
        let id = admin.enroll(&token, &request).expect("enroll");
        (admin, id, dir)
    })
}

/// `sync_request`: the server's check of a bastion's signed request
/// (`SyncService::authenticate_bastion`). The first byte holds flags, the rest
/// is cut at 0xff into method, path, query, body, bastion id, timestamp,
/// nonce and signature. Flags: bit 0 signs the request here with the
/// enrolled bastion's key (so the fuzzer gets past the signature), bit 1
/// puts the enrolled id, bit 2 a current timestamp (plus the given one
/// as an offset). Asserts: a request is accepted only when it carries the
/// enrolled bastion's signature over exactly its fields, and never twice
/// (the nonce).
pub fn sync_request(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (server, id, _) = sync_server();
    let mut parts: Vec<String> = rest
        .split(|&b| b == 0xff)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    parts.resize(8, String::new());
    let [method, path, query, body, mut bastion, mut timestamp, nonce, mut signature] =
        <[String; 8]>::try_from(parts).expect("eight parts");
    if flags & 2 != 0 {
        bastion = id.to_string();
    }
    if flags & 4 != 0 {
        let offset: i64 = timestamp.trim().parse().unwrap_or(0);
        timestamp = (chrono::Utc::now().timestamp().saturating_add(offset % 600)).to_string();
    }
    let mut signed_here = false;
    if flags & 1 != 0 {
        if let Ok(ts) = timestamp.parse::<i64>() {
            let message =
                bundle::request_message(&method, &path, &query, ts, &nonce, body.as_bytes());
            signature = bundle::hex(bastion_key().sign(&message).as_ref());
            signed_here = true;
        }
    }
    let request = jms_server::sync::SignedRequest {
        method: &method,
        path: &path,
        query: &query,
        body: body.as_bytes(),
        bastion: (flags & 8 == 0).then_some(bastion.as_str()),
        timestamp: (flags & 16 == 0).then_some(timestamp.as_str()),
        nonce: (flags & 32 == 0).then_some(nonce.as_str()),
        signature: (flags & 64 == 0).then_some(signature.as_str()),
    };
    if let Ok(row) = server.authenticate_bastion(&request) {
        assert!(
            signed_here,
            "a request accepted without the bastion's signature"
        );
        assert_eq!(row.id, *id);
        assert!(
            server.authenticate_bastion(&request).is_err(),
            "a replayed request accepted"
        );
    }
}
