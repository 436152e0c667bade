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

/// (user, browser address, asset, account): the ticket of a session is
/// bound to the browser's address, so another address gets its own.
type SessionKey = (String, Option<IpAddr>, String, String);

type OpenSessions = HashMap<SessionKey, (Arc<SftpSession>, Instant)>;

/// SFTP sessions open at most, all engineers together.
pub const MAX_OPEN: usize = 1000;
/// SFTP sessions one engineer may hold open at once.
pub const MAX_PER_USER: usize = 16;

/// The open SFTP sessions.
#[derive(Default)]
pub struct FileSessions {
    opener: Mutex<Option<Arc<dyn SftpOpener>>>,
    open: Arc<Mutex<OpenSessions>>,
    /// The task that closes idle sessions, started on first use.
    reaper: std::sync::OnceLock<()>,
}

fn sweep(open: &mut OpenSessions, now: Instant) {
    open.retain(|_, (_, used)| now.duration_since(*used) < IDLE);
}

impl FileSessions {
    /// Sets how SFTP sessions are opened (the server's bastion client).
    pub fn set_opener(&self, opener: Arc<dyn SftpOpener>) {
        *self.opener.lock().unwrap_or_else(|p| p.into_inner()) = Some(opener);
    }

    fn open_sessions(&self) -> std::sync::MutexGuard<'_, OpenSessions> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes idle sessions every minute, even when nobody asks for one.
    fn start_reaper(&self) {
        self.reaper.get_or_init(|| {
            let open = Arc::downgrade(&self.open);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    let Some(open) = open.upgrade() else { return };
                    sweep(
                        &mut open.lock().unwrap_or_else(|p| p.into_inner()),
                        Instant::now(),
                    );
                }
            });
        });
    }

    /// `user`'s open session on `account@asset` from `client`, or a new
    /// one; the one line that says why there is none.
    pub async fn session(
        &self,
        user: &str,
        client: Option<IpAddr>,
        asset: &str,
        account: &str,
    ) -> Result<Arc<SftpSession>, String> {
        self.start_reaper();
        let key = (
            user.to_string(),
            client,
            asset.to_string(),
            account.to_string(),
        );
        {
            let mut open = self.open_sessions();
            let now = Instant::now();
            sweep(&mut open, now);
            if let Some((session, used)) = open.get_mut(&key) {
                *used = now;
                return Ok(session.clone());
            }
            let mine = open.keys().filter(|k| k.0 == user).count();
            if mine >= MAX_PER_USER || open.len() >= MAX_OPEN {
                return Err(
                    "too many file manager sessions are open: close some tabs and try again in a few minutes"
                        .into(),
                );
            }
        }
        let opener = self
            .opener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| "the file manager has no bastion to reach".to_string())?;
        // Opened without holding the map: connecting may take seconds.
        let stream = opener.open(user, client, asset, account).await?;
        let session = SftpSession::new(stream)
            .await
            .map_err(|e| format!("the bastion's SFTP did not start: {e}"))?;
        let mut open = self.open_sessions();
        let entry = open
            .entry(key)
            .or_insert_with(|| (Arc::new(session), Instant::now()));
        entry.1 = Instant::now();
        Ok(entry.0.clone())
    }

    /// Forgets `user`'s sessions on `account@asset` after one failed (the
    /// next request opens a new one).
    pub fn forget(&self, user: &str, asset: &str, account: &str) {
        self.open_sessions()
            .retain(|k, _| !(k.0 == user && k.2 == asset && k.3 == account));
    }

    /// Closes every session of `user` (she signed out).
    pub fn close_user(&self, user: &str) {
        self.open_sessions().retain(|k, _| k.0 != user);
    }
}

/// The stream of an SFTP channel, holding its connection open.
struct ChannelSftp {
    stream: russh::ChannelStream<russh::client::Msg>,
    /// Dropping the connection would end the channel.
    _connection: crate::bastion_ssh::Connection,
}

impl AsyncRead for ChannelSftp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ChannelSftp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Opens SFTP sessions through the server's SSH client to a bastion
/// ([`crate::bastion_ssh`]): a one-time ticket for the target as the
/// engineer's password, the `sftp` subsystem, and this connection bound to
/// the target by the bastion.
pub struct BastionSftp {
    sync: Arc<crate::sync::SyncService>,
}

impl BastionSftp {
    pub fn new(sync: Arc<crate::sync::SyncService>) -> BastionSftp {
        BastionSftp { sync }
    }
}

impl SftpOpener for BastionSftp {
    fn open(&self, user: &str, client: Option<IpAddr>, asset: &str, account: &str) -> Opened {
        let sync = self.sync.clone();
        let (user, asset, account) = (user.to_string(), asset.to_string(), account.to_string());
        Box::pin(async move {
            let client = client.ok_or("the browser's address is unknown")?;
            let picked = crate::bastion_ssh::web_bastion(sync.clone())
                .await
                .map_err(|e| e.to_string())?;
            let login = crate::bastion_ssh::WebLogin {
                user,
                bastion_id: picked,
                asset,
                account,
                client,
            };
            let connection = crate::bastion_ssh::connect(sync, &login)
                .await
                .map_err(|e| e.to_string())?;
            let channel = connection.open_sftp().await.map_err(|e| e.to_string())?;
            let stream: Box<dyn SftpStream> = Box::new(ChannelSftp {
                stream: channel.into_stream(),
                _connection: connection,
            });
            Ok(stream)
        })
    }
}
