//! The resumable recording upload: where an upload stands (the answer to
//! `GET` [`crate::paths::recording`]), the offset a chunk `PUT` answers
//! (also with a 409, where the server's copy ends), the completion request
//! (size and SHA-256 of the whole file), and the session ids a recording
//! file may be named after.

use serde::{Deserialize, Serialize};

/// Where an upload stands on the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadState {
    pub session: String,
    /// Bytes the server holds: the next chunk goes here.
    pub offset: u64,
    pub complete: bool,
    /// Of a complete recording.
    pub sha256: Option<String>,
}

/// The answer to a chunk (`200`, and `409` with an `error` beside it):
/// the bytes the server now holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offset {
    pub offset: u64,
}

/// `POST` [`crate::paths::recording_complete`]: the whole file's size and
/// hex SHA-256, which the server checks its copy against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompleteRequest {
    /// Total bytes of the recording.
    pub size: u64,
    /// Hex SHA-256 of the whole file.
    pub sha256: String,
}

/// Whether `id` is a session id the server takes for a recording (it
/// names the file): 1 to 128 letters, digits, `.`, `_` or `-`, not
/// starting with `.`.
pub fn is_recording_session_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// SHA-256 (hex) and size of a file, read in blocks (a session recording:
/// the bastion's upload and the server's check of it).
pub fn sha256_file(path: &std::path::Path) -> std::io::Result<(String, u64)> {
    sha256_reader(std::fs::File::open(path)?)
}

/// SHA-256 (hex) and size of everything `reader` yields, read in blocks
/// (a recording streamed back from object storage).
pub fn sha256_reader(mut reader: impl std::io::Read) -> std::io::Result<(String, u64)> {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buffer = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = match reader.read(&mut buffer) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            break;
        }
        context.update(&buffer[..n]);
        size += n as u64;
    }
    Ok((crate::bundle::hex(context.finish().as_ref()), size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_messages_round_trip() {
        let state = UploadState {
            session: "s1".into(),
            offset: 10,
            complete: true,
            sha256: Some("ab".into()),
        };
        let text = serde_json::to_string(&state).unwrap();
        assert_eq!(
            text,
            r#"{"session":"s1","offset":10,"complete":true,"sha256":"ab"}"#
        );
        assert_eq!(serde_json::from_str::<UploadState>(&text).unwrap(), state);
        let conflict: Offset =
            serde_json::from_str(r#"{"error": "held elsewhere", "offset": 4}"#).unwrap();
        assert_eq!(conflict.offset, 4);
        let complete = CompleteRequest {
            size: 3,
            sha256: "cd".into(),
        };
        let text = serde_json::to_string(&complete).unwrap();
        assert_eq!(text, r#"{"size":3,"sha256":"cd"}"#);
        assert_eq!(
            serde_json::from_str::<CompleteRequest>(&text).unwrap(),
            complete
        );
        assert!(
            serde_json::from_str::<CompleteRequest>(r#"{"size":3,"sha256":"cd","x":1}"#).is_err()
        );
    }

    #[test]
    fn recording_session_ids_are_file_names() {
        assert!(is_recording_session_id(
            "0b6f1c2e-aaaa-4bbb-8ccc-123456789abc"
        ));
        for bad in ["", ".hidden", "a/b", "..", &"x".repeat(129)] {
            assert!(!is_recording_session_id(bad), "{bad:?}");
        }
    }
}
