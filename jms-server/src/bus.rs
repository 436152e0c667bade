//! Signals between jms-server instances that share one PostgreSQL
//! database, over PostgreSQL's own `LISTEN`/`NOTIFY` (channel
//! [`CHANNEL`]): a committed policy version (long-polls on every instance
//! wake), orders for bastions (kill, watch: the bastion may poll another
//! instance), account jobs given to a bastion (its poll wakes and reads
//! the job from the database) and watched sessions' output (the bastion may push to another
//! instance than the watcher's).
//!
//! - One SQLite instance has no peers: [`Bus::local`] sends nothing.
//! - Sending never blocks the caller: a thread of the bus sends, on a
//!   connection of its own; another listens on one more and hands each
//!   signal from another instance to the subscribers (`Services` wires
//!   them). An instance ignores its own signals.
//! - A notification carries at most [`MAX_PAYLOAD`] bytes: callers split
//!   what may be larger (live output); a larger one is dropped (logged).
//! - Delivery is what `NOTIFY` gives: to every instance listening at the
//!   time, none when the listener is reconnecting. Nothing depends on it
//!   alone: a bastion's next poll reads the policy version from the
//!   database, a lost order is asked again (watchers refresh).

use std::sync::mpsc;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use jms_sync::control::Order;
use jms_sync::live::LiveBatch;
use serde::{Deserialize, Serialize};

use crate::store::Kind;

/// The notification channel.
pub const CHANNEL: &str = "jms_bus";

/// The largest payload sent (PostgreSQL's limit is 8000 bytes).
pub const MAX_PAYLOAD: usize = 7900;

/// What one instance tells the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "signal", rename_all = "snake_case")]
pub enum Signal {
    /// The policy version `version` was committed; what it changed when
    /// that fits (else the others serve full bundles to older bastions).
    Version {
        version: u64,
        changed: Option<Vec<(Kind, String)>>,
    },
    /// An order for `bastion`.
    Order { bastion: String, order: Order },
    /// An account job was given to `bastion` (started or retried): its
    /// control poll, on whichever instance it waits, reads the job's order
    /// from the database now.
    Jobs { bastion: String },
    /// Someone watches `session` (of `bastion`) on the sending instance:
    /// output pushed elsewhere is forwarded for a while.
    Watching { bastion: String, session: String },
    /// Output of a watched session, pushed to the sending instance.
    Output {
        bastion: String,
        session: String,
        batch: LiveBatch,
    },
    /// A web login of `name` failed on the sending instance (the lockout
    /// counts it everywhere).
    LoginFailed { name: String },
    /// A web login of `name` succeeded (its failures are forgotten).
    LoginSucceeded { name: String },
    /// An engineer's portal login of `name` failed at `at` (Unix seconds)
    /// on the sending instance: the others count it in their lockout.
    PortalLoginFailed { name: String, at: i64 },
    /// An engineer's portal login of `name` succeeded: her failures are
    /// forgotten, and the TOTP step she used is never accepted again.
    PortalLoginSucceeded {
        name: String,
        totp_step: Option<i64>,
    },
    /// An admin lifted `name`'s portal lockout.
    PortalUnlocked { name: String },
    /// A portal session of `name` ended (sign-out, or she may no longer
    /// log in): where she holds no live session any more, her file
    /// manager's SFTP sessions close.
    PortalSignedOut { name: String },
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    /// The sending instance.
    from: u64,
    #[serde(flatten)]
    signal: Signal,
}

type Handler = Arc<dyn Fn(&Signal) + Send + Sync>;

/// The bus of one instance.
pub struct Bus {
    id: u64,
    sender: Mutex<Option<mpsc::Sender<String>>>,
    handlers: Mutex<Vec<Handler>>,
}

impl Bus {
    /// No peers (SQLite): nothing is sent.
    pub fn local() -> Arc<Bus> {
        Arc::new(Bus {
            id: 0,
            sender: Mutex::new(None),
            handlers: Mutex::new(Vec::new()),
        })
    }

    /// The bus over the PostgreSQL database at `url`: starts its sending
    /// and listening threads (they stop once the bus is dropped).
    pub fn postgres(url: &str) -> crate::store::Result<Arc<Bus>> {
        let config: postgres::Config = url.parse()?;
        let mut id = [0u8; 8];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id)
            .map_err(|_| crate::store::StoreError::Pool("no randomness".into()))?;
        let (sender, outbox) = mpsc::channel::<String>();
        let bus = Arc::new(Bus {
            id: u64::from_le_bytes(id),
            sender: Mutex::new(Some(sender)),
            handlers: Mutex::new(Vec::new()),
        });
        // Listening before this returns: nothing sent after start-up is
        // missed.
        let listener = connect_listener(&config)?;
        let weak = Arc::downgrade(&bus);
        let listen_config = config.clone();
        std::thread::Builder::new()
            .name("jms-bus-listen".into())
            .spawn(move || listen(listener, listen_config, weak))
            .map_err(|e| crate::store::StoreError::Pool(e.to_string()))?;
        std::thread::Builder::new()
            .name("jms-bus-send".into())
            .spawn(move || send(config, outbox))
            .map_err(|e| crate::store::StoreError::Pool(e.to_string()))?;
        Ok(bus)
    }

    /// Tells the other instances (never blocks).
    pub fn publish(&self, signal: Signal) {
        let sender = self.sender.lock().unwrap_or_else(|e| e.into_inner());
        let Some(sender) = sender.as_ref() else {
            return;
        };
        let payload = match serde_json::to_string(&Envelope {
            from: self.id,
            signal,
        }) {
            Ok(payload) => payload,
            Err(e) => {
                tracing::warn!(error = %e, "bus: signal not encoded");
                return;
            }
        };
        if payload.len() > MAX_PAYLOAD {
            tracing::warn!(bytes = payload.len(), "bus: signal too large, not sent");
            return;
        }
        let _ = sender.send(payload);
    }

    /// Whether other instances may be listening (PostgreSQL).
    pub fn shared(&self) -> bool {
        self.sender
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Calls `handler` with every signal from another instance (on the
    /// bus's thread: it must not block).
    pub fn subscribe(&self, handler: impl Fn(&Signal) + Send + Sync + 'static) {
        self.handlers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::new(handler));
    }

    fn deliver(&self, payload: &str) {
        let envelope: Envelope = match serde_json::from_str(payload) {
            Ok(envelope) => envelope,
            Err(e) => {
                tracing::warn!(error = %e, "bus: unreadable signal ignored");
                return;
            }
        };
        if envelope.from == self.id {
            return;
        }
        let handlers = self
            .handlers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for handler in handlers {
            handler(&envelope.signal);
        }
    }
}

fn connect_listener(config: &postgres::Config) -> crate::store::Result<postgres::Client> {
    let mut client = config.connect(postgres::NoTls)?;
    client.batch_execute(&format!("LISTEN {CHANNEL}"))?;
    Ok(client)
}

/// The listening thread: hands notifications to the bus while it lives;
/// reconnects (every second) when the connection breaks.
fn listen(mut client: postgres::Client, config: postgres::Config, bus: Weak<Bus>) {
    loop {
        let broken = loop {
            let mut batch = Vec::new();
            {
                let mut notifications = client.notifications();
                let mut iter = notifications.timeout_iter(Duration::from_millis(500));
                loop {
                    match fallible_next(&mut iter) {
                        Ok(Some(n)) => batch.push(n.payload().to_string()),
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "bus: listener connection lost");
                            break;
                        }
                    }
                }
            }
            let Some(bus) = bus.upgrade() else {
                return;
            };
            for payload in &batch {
                bus.deliver(payload);
            }
            if client.is_closed() {
                break true;
            }
        };
        if broken {
            loop {
                if bus.upgrade().is_none() {
                    return;
                }
                std::thread::sleep(Duration::from_secs(1));
                match connect_listener(&config) {
                    Ok(new) => {
                        client = new;
                        tracing::info!("bus: listening again");
                        break;
                    }
                    Err(e) => tracing::warn!(error = %e, "bus: cannot listen yet"),
                }
            }
        }
    }
}

fn fallible_next(
    iter: &mut impl postgres::fallible_iterator::FallibleIterator<
        Item = postgres::Notification,
        Error = postgres::Error,
    >,
) -> Result<Option<postgres::Notification>, postgres::Error> {
    iter.next()
}

/// The sending thread: one `pg_notify` per signal, in order; stops when
/// the bus (its sender) is dropped.
fn send(config: postgres::Config, outbox: mpsc::Receiver<String>) {
    let mut client: Option<postgres::Client> = None;
    while let Ok(payload) = outbox.recv() {
        for _ in 0..2 {
            if client.as_ref().is_none_or(postgres::Client::is_closed) {
                client = config
                    .connect(postgres::NoTls)
                    .map_err(|e| tracing::warn!(error = %e, "bus: cannot connect to send"))
                    .ok();
            }
            let Some(c) = client.as_mut() else {
                break;
            };
            match c.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload]) {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "bus: signal not sent");
                    client = None;
                }
            }
        }
    }
}
