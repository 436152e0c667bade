//! The web file manager's SFTP sessions: each one the engineer's own
//! session on a bastion (opened by the server's SSH client to the bastion,
//! [`SftpOpener`]), kept per engineer and account while used, closed after
//! [`IDLE`] without a request.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use russh_sftp::client::SftpSession;
use tokio::io::{AsyncRead, AsyncWrite};

/// An SFTP session unused this long is closed.
pub const IDLE: Duration = Duration::from_secs(5 * 60);

/// A byte stream to a bastion's SFTP subsystem.
pub trait SftpStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> SftpStream for T {}

/// What opening an SFTP stream returns: the stream, or the one line that
/// says why not.
pub type Opened = Pin<Box<dyn Future<Output = Result<Box<dyn SftpStream>, String>> + Send>>;

/// Opens the engineer's SFTP subsystem on a bastion, as herself (the
/// server's SSH client to the bastion).
pub trait SftpOpener: Send + Sync + 'static {
    /// Opens `user`'s SFTP session for `account` on `asset`, from the
    /// browser at `client`.
    fn open(&self, user: &str, client: Option<IpAddr>, asset: &str, account: &str) -> Opened;
}

/// (user, asset, account).
type SessionKey = (String, String, String);

/// The open SFTP sessions, by (user, asset, account).
#[derive(Default)]
pub struct FileSessions {
    opener: Mutex<Option<Arc<dyn SftpOpener>>>,
    open: tokio::sync::Mutex<HashMap<SessionKey, (Arc<SftpSession>, Instant)>>,
}

impl FileSessions {
    /// Sets how SFTP sessions are opened (the server's bastion client).
    pub fn set_opener(&self, opener: Arc<dyn SftpOpener>) {
        *self.opener.lock().unwrap_or_else(|p| p.into_inner()) = Some(opener);
    }

    /// `user`'s open session on `account@asset`, or a new one; the one
    /// line that says why there is none.
    pub async fn session(
        &self,
        user: &str,
        client: Option<IpAddr>,
        asset: &str,
        account: &str,
    ) -> Result<Arc<SftpSession>, String> {
        let key = (user.to_string(), asset.to_string(), account.to_string());
        let mut open = self.open.lock().await;
        let now = Instant::now();
        open.retain(|_, (_, used)| now.duration_since(*used) < IDLE);
        if let Some((session, used)) = open.get_mut(&key) {
            *used = now;
            return Ok(session.clone());
        }
        let opener = self
            .opener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| "the file manager has no bastion to reach".to_string())?;
        let stream = opener.open(user, client, asset, account).await?;
        let session = SftpSession::new(stream)
            .await
            .map_err(|e| format!("the bastion's SFTP did not start: {e}"))?;
        let session = Arc::new(session);
        open.insert(key, (session.clone(), now));
        Ok(session)
    }

    /// Forgets a session that failed (the next request opens a new one).
    pub async fn forget(&self, user: &str, asset: &str, account: &str) {
        self.open
            .lock()
            .await
            .remove(&(user.to_string(), asset.to_string(), account.to_string()));
    }
}
