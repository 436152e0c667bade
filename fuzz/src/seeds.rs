//! The seed corpus, made by the code's own encoders (`make_seeds` writes
//! it to fuzz/corpus/TARGET/): real frames, SFTP sessions, command lines,
//! the example policy, a signed bundle and delta, sync requests.

use jms_agent::daemon::session::sftp::codec;
use jms_proto::{write_frame, Request, Response};
use jms_sync::bundle;

type Seed = (&'static str, String, Vec<u8>);

fn frame_of<T: serde::Serialize>(message: &T) -> Vec<u8> {
    let mut out = Vec::new();
    write_frame(&mut out, message).expect("encodes");
    out
}

fn frames() -> Vec<Seed> {
    let requests = [
        r#"{"request":"user_status","user":"alice"}"#,
        r#"{"request":"authenticate","user":"alice","password":"pw","totp":"123456","rhost":"10.0.0.1","service":"sshd"}"#,
        r#"{"request":"account_check","user":"alice","rhost":null}"#,
        r#"{"request":"session_open","user":"alice","rhost":"10.0.0.1","tty":"ssh","pid":42}"#,
        r#"{"request":"authorized_keys","user":"kim"}"#,
        r#"{"request":"list_assets"}"#,
        r#"{"request":"open_session","command_line":"root@web01 uptime","pty":{"term":"xterm-256color","cols":80,"rows":24},"client":"10.0.0.1"}"#,
        r#"{"request":"resize","cols":132,"rows":50}"#,
        r#"{"request":"credentials","username":"deploy","password":"pw"}"#,
    ];
    let responses = [
        r#"{"response":"user_status","known":true,"needs_totp":false}"#,
        r#"{"response":"auth","result":{"outcome":"denied","reason":"locked"}}"#,
        r#"{"response":"keys","keys":["ssh-ed25519 AAAA alice"]}"#,
        r#"{"response":"session_ended","exit_status":0,"message":null}"#,
        r#"{"response":"error","message":"x"}"#,
    ];
    let mut seeds = Vec::new();
    let mut all = Vec::new();
    for (i, text) in requests.iter().enumerate() {
        let request: Request = serde_json::from_str(text).expect("a request");
        let frame = frame_of(&request);
        all.extend_from_slice(&frame);
        seeds.push(("frames", format!("request-{i}"), frame));
    }
    seeds.push(("frames", "requests-all".into(), all));
    for (i, text) in responses.iter().enumerate() {
        let response: Response = serde_json::from_str(text).expect("a response");
        seeds.push(("frames", format!("response-{i}"), frame_of(&response)));
    }
    seeds
}

fn command_lines() -> Vec<Seed> {
    let lines: &[&[u8]] = &[
        b"web01",
        b"root@web01 uptime; id",
        b"@INPUT@web01",
        b"/usr/lib/openssh/sftp-server -l INFO",
        b"internal-sftp",
        b"scp -t web01:/tmp/",
        b"scp -f root@web01:/etc/hosts",
        b"scp -r -p -t -- deploy@db01:'/srv/a b'",
        b"rsync --server -logDtpre.iLsfxCIvu . web01:/tmp/x",
        b"rsync --server --sender -vlogDtpre.iLsfxCIvu . root@web01:/var/log/",
        b"rsync --server -logDtpre.iLsfxCIvu --delete . web01:/srv/",
        b"share --write --ttl 10m",
        b"join 0123456789abcdef",
        b"-c\0web01 uptime\xffSSH_CONNECTION=10.0.0.1 5000 10.0.0.2 22\0TERM=xterm-256color",
        b"-c\0/usr/sbin/jms-agent\xffTERM=vt100",
        b"authorized-keys\0alice\0--socket\0/run/jms/agentd.sock",
    ];
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| ("command_line", format!("line-{i}"), l.to_vec()))
        .collect()
}

/// A client's SFTP session: INIT, REALPATH, the root listing, a file
/// opened, read, written, closed, stat, mkdir, rename, remove.
fn sftp_session(asset: &str) -> Vec<u8> {
    use codec::*;
    let file = format!("/{asset}/tmp/f").into_bytes();
    let dir = format!("/{asset}/tmp").into_bytes();
    let mut out = Vec::new();
    out.extend(Frame::new(FXP_INIT).u32(3).finish());
    out.extend(Frame::new(FXP_REALPATH).u32(1).string(b".").finish());
    out.extend(Frame::new(FXP_OPENDIR).u32(2).string(b"/").finish());
    out.extend(Frame::new(FXP_READDIR).u32(3).string(b"1").finish());
    out.extend(Frame::new(FXP_OPENDIR).u32(4).string(&dir).finish());
    out.extend(Frame::new(FXP_READDIR).u32(5).string(b"2").finish());
    out.extend(
        Frame::new(FXP_OPEN)
            .u32(6)
            .string(&file)
            .u32(FXF_READ)
            .u32(0)
            .finish(),
    );
    out.extend(
        Frame::new(FXP_READ)
            .u32(7)
            .string(b"3")
            .u64(0)
            .u32(4096)
            .finish(),
    );
    out.extend(Frame::new(FXP_CLOSE).u32(8).string(b"3").finish());
    out.extend(
        Frame::new(FXP_OPEN)
            .u32(9)
            .string(&file)
            .u32(FXF_WRITE | FXF_CREAT | FXF_TRUNC)
            .u32(0)
            .finish(),
    );
    out.extend(
        Frame::new(FXP_WRITE)
            .u32(10)
            .string(b"4")
            .u64(0)
            .string(b"hello")
            .finish(),
    );
    out.extend(Frame::new(FXP_FSTAT).u32(11).string(b"4").finish());
    out.extend(Frame::new(FXP_CLOSE).u32(12).string(b"4").finish());
    out.extend(Frame::new(FXP_STAT).u32(13).string(&file).finish());
    out.extend(
        Frame::new(FXP_SETSTAT)
            .u32(14)
            .string(&file)
            .raw(&attrs(5, 0o100600, 1_700_000_000))
            .finish(),
    );
    out.extend(Frame::new(FXP_MKDIR).u32(15).string(&dir).u32(0).finish());
    let to = format!("/{asset}/tmp/g").into_bytes();
    out.extend(
        Frame::new(FXP_RENAME)
            .u32(16)
            .string(&file)
            .string(&to)
            .finish(),
    );
    out.extend(Frame::new(FXP_REMOVE).u32(17).string(&to).finish());
    out.extend(Frame::new(FXP_RMDIR).u32(18).string(&dir).finish());
    out.extend(
        Frame::new(FXP_EXTENDED)
            .u32(19)
            .string(b"limits@openssh.com")
            .finish(),
    );
    out.extend(
        Frame::new(FXP_EXTENDED)
            .u32(20)
            .string(b"posix-rename@openssh.com")
            .string(&file)
            .string(&to)
            .finish(),
    );
    out
}

fn with_split(client: &[u8], replies: &[u8]) -> Vec<u8> {
    let mut out = (client.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(client);
    out.extend_from_slice(replies);
    out
}

fn sftp() -> Vec<Seed> {
    let mut seeds = Vec::new();
    for asset in ["web01", "db01", "deploy@web01", "pg@db01"] {
        let session = sftp_session(asset);
        seeds.push(("sftp_codec", format!("session-{asset}"), session.clone()));
        seeds.push((
            "sftp_proxy",
            format!("session-{asset}"),
            with_split(&session, &[]),
        ));
    }
    // A target answering with errors, short packets and a huge NAME count.
    let session = sftp_session("web01");
    let replies = [
        vec![codec::FXP_VERSION, 4, 0, 0, 0, 3],
        vec![codec::FXP_STATUS, 8, 0, 0, 0, 4, 0, 0, 0, 0],
        vec![codec::FXP_NAME, 4, 0xff, 0xff, 0xff, 0xff],
        vec![codec::FXP_HANDLE, 0],
        vec![codec::FXP_DATA, 4, 0x7f, 0xff, 0xff, 0xff],
    ]
    .concat();
    seeds.push((
        "sftp_proxy",
        "hostile-target".into(),
        with_split(&session, &replies),
    ));
    seeds
}

fn line_tracker() -> Vec<Seed> {
    fn chunks(parts: &[(bool, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (input, bytes) in parts {
            for piece in bytes.chunks(255) {
                out.push(u8::from(*input));
                out.push(piece.len() as u8);
                out.extend_from_slice(piece);
            }
        }
        out
    }
    let sessions: Vec<Vec<u8>> = vec![
        chunks(&[
            (false, b"\x1b]0;root@web01: ~\x07root@web01:~# "),
            (true, b"ls -l"),
            (false, b"ls -l"),
            (true, b"\r"),
            (false, b"\r\ntotal 0\r\nroot@web01:~# "),
        ]),
        chunks(&[
            (false, b"$ "),
            (true, b"rebo\x1b[Dx\x1b[C"),
            (false, b"rebo\x08x\x1b[K\x1b[1@o"),
            (true, b"\t"),
            (false, b"\x1b[2Cot"),
            (true, b"\r"),
        ]),
        chunks(&[
            (false, b"\x1b[?2004h$ \x1b[32mgit\x1b[0m status"),
            (true, b"\x15echo hi\x17there\x7f\r"),
            (false, b"\x1b[10D\x1b[5P\x1b[3X\x1b[2K\x1b[G$ "),
            (true, b"\x03"),
        ]),
        chunks(&[(false, b"\x1b[999C.\x1b[99@\x1b[50G#"), (true, b"x\r")]),
    ];
    sessions
        .into_iter()
        .enumerate()
        .map(|(i, s)| ("line_tracker", format!("session-{i}"), s))
        .collect()
}

fn policy() -> Vec<Seed> {
    let example = include_str!("../../examples/policy.yaml");
    let mut seeds = vec![
        (
            "policy",
            "example-yaml".into(),
            [b"\0", example.as_bytes()].concat(),
        ),
        (
            "policy",
            "sftp-yaml".into(),
            [b"\0", crate::SFTP_POLICY.as_bytes()].concat(),
        ),
    ];
    let doc = crate::base_bundle().policy;
    let json = serde_json::to_vec(&doc).expect("json");
    seeds.push((
        "policy",
        "sftp-json".into(),
        [b"\x01", json.as_slice()].concat(),
    ));
    seeds
}

fn bundles() -> Vec<Seed> {
    let base = crate::base_bundle();
    let mut full = base.clone();
    full.version = 6;
    let delta = crate::sample_delta();
    let delta_body = serde_json::to_vec(&delta).expect("json");
    let signed_delta = crate::envelope(bundle::DELTA_FORMAT, &delta_body);
    vec![
        (
            "bundle",
            "signed-full".into(),
            [
                &[0u8][..],
                &crate::envelope(bundle::FORMAT, &full.to_bytes()),
            ]
            .concat(),
        ),
        (
            "bundle",
            "signed-delta".into(),
            [&[0u8][..], &signed_delta].concat(),
        ),
        (
            "bundle",
            "full-body".into(),
            [&[1u8][..], &full.to_bytes()].concat(),
        ),
        (
            "bundle",
            "delta-body".into(),
            [&[2u8][..], &delta_body].concat(),
        ),
        (
            "bundle",
            "sealed".into(),
            [
                &[3u8][..],
                &bundle::seal_for(&[1u8; 32], b"plain").expect("sealed"),
            ]
            .concat(),
        ),
    ]
}

fn sync_requests() -> Vec<Seed> {
    // Fields cut at the raw byte 0xff.
    let raw = |parts: &[&str]| {
        let mut out = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                out.push(0xff);
            }
            out.extend_from_slice(p.as_bytes());
        }
        out
    };
    let bundle_get = [
        "GET",
        "/api/v1/sync/bundle",
        "since=0&transport=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        "",
        "1",
        "0",
        "0123456789abcdef0123456789abcdef",
        "",
    ];
    let events = [
        "POST",
        "/api/v1/sync/events",
        "",
        r#"{"events":[{"id":"x","event":"session_start","time":"2026-01-01T00:00:00Z"}]}"#,
        "1",
        "0",
        "fedcba9876543210fedcba9876543210",
        "",
    ];
    let mut seeds = Vec::new();
    for (name, parts) in [("bundle", bundle_get), ("events", events)] {
        // Signed here, enrolled id, current time.
        seeds.push((
            "sync_request",
            format!("{name}-signed"),
            [&[0b111u8][..], &raw(&parts)].concat(),
        ));
        // Unsigned, a made-up signature.
        let mut forged = parts;
        forged[7] = "00";
        seeds.push((
            "sync_request",
            format!("{name}-forged"),
            [&[0b110u8][..], &raw(&forged)].concat(),
        ));
    }
    seeds
}

/// Every seed: (target, file name, bytes).
pub fn all() -> Vec<Seed> {
    [
        frames(),
        command_lines(),
        sftp(),
        line_tracker(),
        policy(),
        bundles(),
        sync_requests(),
    ]
    .concat()
}
