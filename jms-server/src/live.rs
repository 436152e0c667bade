//! Live sessions on the server side: orders for bastions and the output of
//! watched sessions, in memory (nothing here survives a restart, nor needs
//! to: a bastion asks again, a watcher reconnects).
//!
//! - Orders: per bastion, a queue the bastion's control long-poll
//!   (`GET /api/v1/sync/control`) empties; queuing wakes the waiting poll
//!   at once ([`tokio::sync::Notify`]). Account jobs are not queued here:
//!   their orders are in the database (`crate::jobs`), and a job given to
//!   a bastion only wakes its poll ([`LiveHub::jobs_for`]), on every
//!   instance.
//! - Streams: per watched session, its watchers (each an SSE response
//!   reading a channel), the terminal size and the last 64 KiB of output
//!   (a new watcher starts with them). The first watcher queues a `watch`
//!   order; the bastion then pushes batches (`POST /api/v1/sync/live/…`)
//!   and is told to stop once nobody watches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use jms_sync::live::{LiveBatch, OutputEvent};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};

use crate::store::Store;

/// Output kept for a new watcher.
const TAIL_CHARS: usize = 64 * 1024;
/// Events a watcher may lag behind before it is dropped.
const WATCHER_BACKLOG: usize = 4096;
/// Orders kept for a bastion that does not ask for them.
const MAX_QUEUED: usize = 256;
/// A stream with no push for this long is asked for again.
const STALE_STREAM: Duration = Duration::from_secs(10);

/// An order for a bastion: the sync contract's.
pub use jms_sync::control::Order;

/// What a watcher receives.
#[derive(Debug, Clone, PartialEq)]
pub enum LiveEvent {
    /// The terminal's size and what it shows (the recent output).
    Header { cols: u16, rows: u16, init: String },
    /// Output, `time` seconds into the stream.
    Output { time: f64, data: String },
    /// The session is over.
    End { reason: String },
}

impl LiveEvent {
    /// The SSE data line: asciicast-style, as the asciinema player's
    /// eventsource driver reads it (`End` is sent as its own event type).
    pub fn data(&self) -> Value {
        match self {
            LiveEvent::Header { cols, rows, init } => {
                json!({"cols": cols, "rows": rows, "time": 0, "init": init})
            }
            LiveEvent::Output { time, data } => json!([time, "o", data]),
            LiveEvent::End { reason } => json!({"reason": reason}),
        }
    }
}

struct Stream {
    bastion: String,
    watchers: Vec<mpsc::Sender<LiveEvent>>,
    size: (u16, u16),
    tail: String,
    /// When the bastion last pushed (or was asked to).
    touched: Instant,
    /// Seconds into the stream of the last output (for new watchers'
    /// relative clock: the bastion's stream restarts at zero).
    offset: f64,
    /// Someone watches on another instance until then: output pushed
    /// here is forwarded over the bus.
    remote_until: Option<Instant>,
}

impl Stream {
    fn new(bastion: &str) -> Stream {
        Stream {
            bastion: bastion.to_string(),
            watchers: Vec::new(),
            size: (80, 24),
            tail: String::new(),
            touched: Instant::now(),
            offset: 0.0,
            remote_until: None,
        }
    }

    fn watched_elsewhere(&self) -> bool {
        self.remote_until
            .is_some_and(|until| Instant::now() < until)
    }
}

#[derive(Default)]
struct Hub {
    orders: HashMap<String, Vec<Order>>,
    /// Bastions given an account job since their poll last returned here.
    nudged: std::collections::HashSet<String>,
    wakers: HashMap<String, Arc<Notify>>,
    streams: HashMap<String, Stream>,
}

/// The server's live state in memory (one per server, in [`LiveService`]).
#[derive(Default)]
pub struct LiveHub {
    hub: Mutex<Hub>,
    /// Other instances on one PostgreSQL (orders, watches, output).
    bus: std::sync::OnceLock<Arc<crate::bus::Bus>>,
}

/// What a bastion's push gets back.
#[derive(Debug, PartialEq, Eq)]
pub enum PushAnswer {
    Watching,
    NobodyWatches,
}

fn trim_tail(tail: &mut String) {
    if tail.len() > TAIL_CHARS {
        let mut cut = tail.len() - TAIL_CHARS;
        while !tail.is_char_boundary(cut) {
            cut += 1;
        }
        tail.drain(..cut);
    }
}

impl LiveHub {
    fn hub(&self) -> MutexGuard<'_, Hub> {
        self.hub.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn waker(hub: &mut Hub, bastion: &str) -> Arc<Notify> {
        Arc::clone(hub.wakers.entry(bastion.to_string()).or_default())
    }

    /// Tells other instances from now on (orders, watches, output).
    pub fn set_bus(&self, bus: Arc<crate::bus::Bus>) {
        let _ = self.bus.set(bus);
    }

    /// The bus to the other instances, once set.
    pub fn bus(&self) -> Option<Arc<crate::bus::Bus>> {
        self.bus.get().cloned()
    }

    fn publish(&self, signal: crate::bus::Signal) {
        if let Some(bus) = self.bus.get() {
            bus.publish(signal);
        }
    }

    /// Queues `order` for `bastion` and wakes its control poll, here and
    /// on every other instance (the bastion polls one of them; kill,
    /// watch and unlock are idempotent on the bastion). Account jobs do
    /// not come here ([`Self::jobs_for`]).
    pub fn order(&self, bastion: &str, order: Order) {
        self.publish(crate::bus::Signal::Order {
            bastion: bastion.to_string(),
            order: order.clone(),
        });
        self.order_here(bastion, order);
    }

    /// Wakes `bastion`'s control poll, here and on every other instance,
    /// to read the account jobs given to it from the database.
    pub fn jobs_for(&self, bastion: &str) {
        self.publish(crate::bus::Signal::Jobs {
            bastion: bastion.to_string(),
        });
        self.nudge_here(bastion);
    }

    /// Wakes `bastion`'s control poll here (it returns even with no order
    /// queued, and reads its jobs).
    pub fn nudge_here(&self, bastion: &str) {
        let mut hub = self.hub();
        hub.nudged.insert(bastion.to_string());
        Self::waker(&mut hub, bastion).notify_one();
    }

    /// Queues an order another instance was given.
    pub fn order_here(&self, bastion: &str, order: Order) {
        let mut hub = self.hub();
        let queue = hub.orders.entry(bastion.to_string()).or_default();
        // A bastion that never asks (an older agentd) holds only the last few.
        if queue.len() >= MAX_QUEUED {
            queue.remove(0);
        }
        queue.push(order);
        Self::waker(&mut hub, bastion).notify_one();
    }

    /// `bastion`'s orders; waits up to `wait` for one when there is none
    /// (or until it is given an account job: then with none).
    pub async fn take_orders(&self, bastion: &str, wait: Duration) -> Vec<Order> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let waker = {
                let mut hub = self.hub();
                let nudged = hub.nudged.remove(bastion);
                if let Some(orders) = hub.orders.remove(bastion) {
                    if !orders.is_empty() || nudged {
                        return orders;
                    }
                }
                if nudged {
                    return Vec::new();
                }
                Self::waker(&mut hub, bastion)
            };
            // notify_one keeps a permit: an order queued between the check
            // and the wait is not missed.
            if tokio::time::timeout_at(deadline, waker.notified())
                .await
                .is_err()
            {
                return Vec::new();
            }
        }
    }

    /// A new watcher of `session` (served by `bastion`): the header to
    /// show first and the channel the rest arrives on. Asks the bastion to
    /// stream when nobody did yet (or its stream went quiet).
    pub fn watch(&self, bastion: &str, session: &str) -> mpsc::Receiver<LiveEvent> {
        let (tx, rx) = mpsc::channel(WATCHER_BACKLOG);
        let mut hub = self.hub();
        let ask = match hub.streams.get_mut(session) {
            Some(stream) => {
                let _ = tx.try_send(LiveEvent::Header {
                    cols: stream.size.0,
                    rows: stream.size.1,
                    init: stream.tail.clone(),
                });
                stream.watchers.retain(|w| !w.is_closed());
                stream.watchers.push(tx);
                let stale = stream.touched.elapsed() > STALE_STREAM;
                if stale {
                    stream.touched = Instant::now();
                }
                stale
            }
            None => {
                let mut stream = Stream::new(bastion);
                stream.watchers.push(tx);
                hub.streams.insert(session.to_string(), stream);
                true
            }
        };
        drop(hub);
        self.publish(crate::bus::Signal::Watching {
            bastion: bastion.to_string(),
            session: session.to_string(),
        });
        if ask {
            self.order(
                bastion,
                Order::Watch {
                    session: session.to_string(),
                },
            );
        }
        rx
    }

    /// Asks the bastion again for a watched stream that went quiet (its
    /// stream broke off, or the bastion restarted); watchers call it now
    /// and then.
    pub fn refresh(&self, session: &str) {
        let mut hub = self.hub();
        let Some(stream) = hub.streams.get_mut(session) else {
            return;
        };
        if !stream.watchers.is_empty() {
            // Still watched here: other instances keep forwarding.
            self.publish(crate::bus::Signal::Watching {
                bastion: stream.bastion.clone(),
                session: session.to_string(),
            });
        }
        if stream.touched.elapsed() <= STALE_STREAM {
            return;
        }
        stream.touched = Instant::now();
        let bastion = stream.bastion.clone();
        drop(hub);
        self.order(
            &bastion,
            Order::Watch {
                session: session.to_string(),
            },
        );
    }

    /// Another instance's watcher of `session`: output pushed here is
    /// forwarded to it for a while (its watchers refresh it).
    pub fn watched_elsewhere(&self, bastion: &str, session: &str) {
        let mut hub = self.hub();
        // Streams only watched elsewhere, whose bastion never pushed here
        // and whose watchers stopped saying so, go.
        hub.streams.retain(|_, s| {
            !s.watchers.is_empty() || s.watched_elsewhere() || s.touched.elapsed() < STALE_STREAM
        });
        let stream = hub
            .streams
            .entry(session.to_string())
            .or_insert_with(|| Stream::new(bastion));
        if stream.bastion == bastion {
            stream.remote_until = Some(Instant::now() + 3 * STALE_STREAM);
        }
    }

    /// A batch from `bastion` for `session` (see `api::live`), for the
    /// watchers here and, through the bus, elsewhere.
    pub fn push(&self, bastion: &str, session: &str, batch: LiveBatch) -> PushAnswer {
        let forward = {
            let hub = self.hub();
            hub.streams
                .get(session)
                .is_some_and(|s| s.bastion == bastion && s.watched_elsewhere())
        };
        if forward {
            for part in split_batch(&batch) {
                self.publish(crate::bus::Signal::Output {
                    bastion: bastion.to_string(),
                    session: session.to_string(),
                    batch: part,
                });
            }
        }
        self.push_here(bastion, session, batch)
    }

    /// A batch for the watchers here (pushed here, or forwarded by the
    /// instance it was pushed to).
    pub fn push_here(&self, bastion: &str, session: &str, batch: LiveBatch) -> PushAnswer {
        let mut hub = self.hub();
        let Some(stream) = hub.streams.get_mut(session) else {
            return PushAnswer::NobodyWatches;
        };
        if stream.bastion != bastion {
            return PushAnswer::NobodyWatches;
        }
        stream.touched = Instant::now();
        let mut events = Vec::new();
        if let (Some((cols, rows)), Some(init)) = (batch.terminal_size(), batch.init) {
            stream.size = (cols, rows);
            stream.tail = init;
            trim_tail(&mut stream.tail);
            stream.offset = 0.0;
            events.push(LiveEvent::Header {
                cols,
                rows,
                init: stream.tail.clone(),
            });
        }
        for OutputEvent(time, _, data) in batch.events {
            stream.tail.push_str(&data);
            trim_tail(&mut stream.tail);
            stream.offset = time;
            events.push(LiveEvent::Output { time, data });
        }
        let ended = batch.ended;
        if ended {
            events.push(LiveEvent::End {
                reason: batch.reason,
            });
        }
        // A closed watcher (gone) or a full one (lagging too far) goes.
        stream
            .watchers
            .retain(|w| !w.is_closed() && events.iter().all(|e| w.try_send(e.clone()).is_ok()));
        if ended || (stream.watchers.is_empty() && !stream.watched_elsewhere()) {
            hub.streams.remove(session);
            return PushAnswer::NobodyWatches;
        }
        PushAnswer::Watching
    }
}

/// `batch` in parts that each fit in one bus signal: the header's screen
/// cut to its last few kilobytes, long output split.
fn split_batch(batch: &LiveBatch) -> Vec<LiveBatch> {
    /// Bytes of output per part (JSON may escape each to six).
    const PART: usize = 1000;
    let mut parts = Vec::new();
    let mut first = LiveBatch {
        events: Vec::new(),
        ended: false,
        reason: String::new(),
        ..batch.clone()
    };
    if let Some(init) = first.init.as_mut() {
        let mut cut = init.len().saturating_sub(PART);
        while !init.is_char_boundary(cut) {
            cut += 1;
        }
        init.drain(..cut);
    }
    let mut current = first;
    let mut size = 0;
    for OutputEvent(time, kind, data) in &batch.events {
        let mut rest = data.as_str();
        loop {
            let mut cut = rest.len().min(PART);
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            let (piece, after) = rest.split_at(cut);
            if size + piece.len() > PART && (size > 0 || current.init.is_some()) {
                parts.push(std::mem::replace(
                    &mut current,
                    LiveBatch {
                        events: Vec::new(),
                        ..Default::default()
                    },
                ));
                size = 0;
            }
            current
                .events
                .push(OutputEvent(*time, *kind, piece.to_string()));
            size += piece.len();
            rest = after;
            if rest.is_empty() {
                break;
            }
        }
    }
    current.ended = batch.ended;
    current.reason = batch.reason.clone();
    parts.push(current);
    parts
}

// ---- the admin's side ---------------------------------------------------------

/// The live service: the hub of orders and watched streams, and the
/// admin's orders (kill, unlock), checked against the store and logged.
pub struct LiveService {
    hub: LiveHub,
    store: Store,
}

impl LiveService {
    pub fn new(store: Store) -> LiveService {
        LiveService {
            hub: LiveHub::default(),
            store,
        }
    }

    /// Orders for bastions and watched sessions' output.
    pub fn hub(&self) -> &LiveHub {
        &self.hub
    }

    /// The bastion serving `session`, while it is online: 404 unknown,
    /// 409 over (or never started).
    pub fn live_bastion(&self, session: &str) -> Result<String, crate::error::AdminError> {
        use crate::error::AdminError;
        let Some(record) = self.store.read()?.session(session)? else {
            return Err(AdminError::NotFound(format!("no session `{session}`")));
        };
        if record.denied || record.ended_at.is_some() {
            return Err(AdminError::Conflict(format!(
                "session `{session}` has already ended"
            )));
        }
        record.bastion.ok_or_else(|| {
            AdminError::Conflict(format!("session `{session}`: no bastion is known for it"))
        })
    }

    /// Orders every enrolled bastion (not revoked) to lift `user`'s
    /// lockout at its next control poll; logged as done by `actor`.
    /// Returns the bastions ordered. (Orders live in memory: a bastion
    /// that does not poll before the server restarts keeps the lock until
    /// it runs out.)
    pub fn unlock_user(
        &self,
        actor: &str,
        user: &str,
    ) -> Result<Vec<String>, crate::error::AdminError> {
        let mut tx = self.store.write()?;
        if tx.user(user)?.is_none() {
            return Err(crate::error::AdminError::NotFound(format!(
                "user `{user}` not found"
            )));
        }
        let bastions: Vec<String> = tx
            .bastions()?
            .into_iter()
            .filter(|b| b.revoked_at.is_none())
            .map(|b| b.name)
            .collect();
        let version = tx.policy_version()?;
        tx.append_oplog(&crate::store::NewOpLogEntry {
            actor: actor.to_string(),
            action: "unlock".to_string(),
            kind: "user".to_string(),
            name: user.to_string(),
            fields: Vec::new(),
            version,
        })?;
        tx.commit()?;
        for bastion in &bastions {
            self.hub.order(
                bastion,
                Order::Unlock {
                    user: user.to_string(),
                },
            );
        }
        tracing::info!(
            event = "user_unlock",
            user,
            actor,
            bastions = bastions.len(),
            "unlock ordered"
        );
        Ok(bastions)
    }

    /// Orders the bastion serving `session` to end it; logged as done by
    /// `actor`. Returns the bastion's name.
    pub fn kill_session(
        &self,
        actor: &str,
        session: &str,
        reason: &str,
    ) -> Result<String, crate::error::AdminError> {
        let bastion = self.live_bastion(session)?;
        let mut tx = self.store.write()?;
        let version = tx.policy_version()?;
        tx.append_oplog(&crate::store::NewOpLogEntry {
            actor: actor.to_string(),
            action: "kill".to_string(),
            kind: "session".to_string(),
            name: session.to_string(),
            fields: if reason.is_empty() {
                Vec::new()
            } else {
                vec![format!("reason: {reason}")]
            },
            version,
        })?;
        tx.commit()?;
        self.hub.order(
            &bastion,
            Order::Kill {
                session: session.to_string(),
                reason: reason.to_string(),
            },
        );
        tracing::info!(event = "session_kill", session, bastion = %bastion, actor, "kill ordered");
        Ok(bastion)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_order_wakes_the_waiting_poll_and_is_taken_once() {
        let hub = Arc::new(LiveHub::default());
        let waiting = {
            let hub = Arc::clone(&hub);
            tokio::spawn(async move { hub.take_orders("b1", Duration::from_secs(30)).await })
        };
        tokio::task::yield_now().await;
        hub.order(
            "b1",
            Order::Kill {
                session: "s1".into(),
                reason: "r".into(),
            },
        );
        let orders = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("woken before its wait ran out")
            .unwrap();
        assert_eq!(orders.len(), 1);
        assert!(hub
            .take_orders("b1", Duration::from_millis(10))
            .await
            .is_empty());
        assert!(hub
            .take_orders("b2", Duration::from_millis(10))
            .await
            .is_empty());
    }

    #[tokio::test]
    async fn watchers_get_the_header_and_output_and_the_bastion_is_told_when_nobody_watches() {
        let hub = LiveHub::default();
        let mut rx = hub.watch("b1", "s1");
        assert_eq!(
            hub.take_orders("b1", Duration::ZERO).await,
            vec![Order::Watch {
                session: "s1".into()
            }]
        );
        let mut batch = LiveBatch::start(100, 30, "hello ".into());
        batch.events.push(OutputEvent::output(0.5, "world".into()));
        assert_eq!(hub.push("b1", "s1", batch.clone()), PushAnswer::Watching);
        assert_eq!(
            hub.push("b2", "s1", batch),
            PushAnswer::NobodyWatches,
            "another bastion's push"
        );
        assert_eq!(
            rx.recv().await,
            Some(LiveEvent::Header {
                cols: 100,
                rows: 30,
                init: "hello ".into()
            })
        );
        assert_eq!(
            rx.recv().await,
            Some(LiveEvent::Output {
                time: 0.5,
                data: "world".into()
            })
        );
        // A second watcher starts from the tail, without a new order.
        let mut late = hub.watch("b1", "s1");
        assert!(hub.take_orders("b1", Duration::ZERO).await.is_empty());
        assert!(
            matches!(late.recv().await, Some(LiveEvent::Header { init, .. }) if init == "hello world")
        );
        drop(rx);
        drop(late);
        assert_eq!(
            hub.push("b1", "s1", LiveBatch::default()),
            PushAnswer::NobodyWatches
        );
    }
}
