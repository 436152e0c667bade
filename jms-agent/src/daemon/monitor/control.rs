//! The central server's orders for this bastion's live sessions.
//!
//! - [`run_control`]: the signed long-poll `GET /api/v1/sync/control` for
//!   the server's orders (`kill`, `watch`, `unlock`), believed only when
//!   the server signed the answer for that request (a forged or replayed
//!   order is ignored, with an alarm), carried out on the registry
//!   (`monitor::live`); an account job (`job`) runs in a worker of its
//!   own (`monitor::jobs`) with the secrets the answer carries sealed to
//!   the poll's fresh transport key, and its report goes to the server
//!   (`POST /api/v1/sync/jobs/{job}`); `[sessions] max_parallel_jobs`
//!   runner threads take the jobs in the order they came
//!   ([`job_runners`]), so that many run at once and the others wait;
//!   [`stream_to_server`] pushes a watched session's
//!   output (`POST /api/v1/sync/live/{session}`) in batches every 200 ms
//!   until the server says nobody watches.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use jms_sync::live::{LiveAnswer, LiveBatch, OutputEvent};
use jms_sync::queries::ControlQuery;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags};
use serde_json::Value;
use tracing::{info, warn};

use crate::daemon::config::CentralConfig;
use crate::daemon::live_session::LiveSession;
use crate::daemon::monitor::central::CentralClient;
use crate::daemon::monitor::enroll::Call;
use crate::daemon::monitor::handlers::Daemon;

/// How often a watched session's output goes to the server.
const PUSH_EVERY: Duration = Duration::from_millis(200);
/// A push with nothing new, so the server can say nobody watches.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// How long a finished stream waits for its session's end reason.
const END_REASON_WAIT: Duration = Duration::from_secs(5);
/// Seconds the server may hold a control request.
const CONTROL_WAIT_SECS: u64 = 25;

pub use jms_sync::control::{parse_orders, Order};

/// A signed JSON exchange with the central server, over the bastion's
/// one client.
struct Central {
    client: Arc<CentralClient>,
    timeout: Duration,
}

impl Central {
    fn new(client: Arc<CentralClient>, config: &CentralConfig) -> Central {
        Central {
            client,
            timeout: Duration::from_secs(config.timeout_secs.max(1)),
        }
    }

    fn call<B: serde::Serialize>(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &str,
        body: Option<&B>,
        wait: Duration,
    ) -> anyhow::Result<Value> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()?
            .unwrap_or_default();
        // Only an answer the server signed for this request is believed.
        let call = Call {
            timeout: Some(wait + self.timeout),
            ..Call::new(method, path, query)
        };
        let answer = self.client.call(call, body)?;
        if !answer.status.is_success() {
            return Err(answer.refusal(path));
        }
        Ok(answer.json())
    }
}

/// The control thread: waits for the server's orders and carries them out.
pub fn run_control(daemon: Arc<Daemon>, config: CentralConfig, client: Arc<CentralClient>) {
    let central = Arc::new(Central::new(client, &config));
    let jobs = job_runners(&daemon, &central, daemon.config.sessions.max_parallel_jobs);
    let retry = Duration::from_secs(config.poll_interval_secs.max(1));
    loop {
        // Each poll carries the bastion's report (`jmsctl bastion list`).
        let report = jms_sync::fleet::StatusReport {
            agent: env!("CARGO_PKG_VERSION").to_string(),
            sessions: crate::daemon::monitor::open_sessions::count(&daemon.config),
            backlog: crate::daemon::monitor::spool::backlog(&daemon.config),
        };
        // A fresh key per poll: a job's secrets are sealed to it.
        let transport = jms_sync::bundle::TransportKey::generate();
        let answer = central.call(
            reqwest::Method::GET,
            jms_sync::paths::CONTROL,
            &jms_sync::queries::encode(&ControlQuery::new(
                CONTROL_WAIT_SECS,
                report,
                transport.public_hex(),
            )),
            None::<&()>,
            Duration::from_secs(CONTROL_WAIT_SECS),
        );
        let (orders, mut secrets) = match answer {
            Ok(answer) => {
                let secrets = match jms_sync::control::open_secrets(&answer, transport) {
                    Ok(secrets) => secrets,
                    Err(e) => {
                        warn!(alarm = "job_secrets_unreadable", "control poll: {e}");
                        Default::default()
                    }
                };
                (parse_orders(&answer), secrets)
            }
            Err(e) => {
                warn!("control poll: {e:#}");
                std::thread::sleep(retry);
                continue;
            }
        };
        for order in orders {
            match order {
                Order::Job(job) => {
                    let secrets = secrets.remove(&job.id);
                    if jobs.send((*job, secrets)).is_err() {
                        warn!("no account job runner is left: the job waits for its retry");
                    }
                }
                Order::Unlock { user } => {
                    let lifted = daemon.unlock(&user);
                    info!(event = "user_unlock_order", user = %user, lifted, "lockout lifted by the server's order");
                }
                Order::Kill { session, reason } => {
                    let found = daemon.live.kill(&session, &reason);
                    info!(event = "session_kill_order", session = %session, reason = %reason, found);
                }
                Order::Watch { session } => {
                    let Some(live) = daemon.live.get(&session) else {
                        // Over already (its end not yet uploaded): the
                        // watchers are told instead of waiting.
                        let central = Arc::clone(&central);
                        let _ = std::thread::Builder::new()
                            .name("live-stream".into())
                            .spawn(move || {
                                let body = LiveBatch::end(
                                    "the session is not running on its bastion".into(),
                                );
                                let path = jms_sync::paths::live(&session);
                                let _ = central.call(
                                    reqwest::Method::POST,
                                    &path,
                                    "",
                                    Some(&body),
                                    Duration::ZERO,
                                );
                            });
                        continue;
                    };
                    if !live.begin_stream() {
                        continue;
                    }
                    let central = Arc::clone(&central);
                    let spawned = std::thread::Builder::new()
                        .name("live-stream".into())
                        .spawn(move || stream_to_server(&central, &live));
                    if let Err(e) = spawned {
                        warn!("cannot start a live stream: {e}");
                    }
                }
            }
        }
    }
}

/// A job order and its secrets, queued for a runner.
type QueuedJob = (jms_sync::job::JobOrder, Option<jms_sync::job::JobSecrets>);

/// Starts `max` (at least one) threads that run the queued account jobs
/// one at a time each, in the order they were queued: at most `max` jobs
/// run at once (a big plan neither floods the bastion's CPU nor opens
/// more connections than a target's sshd takes at once, `MaxStartups`);
/// the rest wait in the queue. The sender queues a job.
fn job_runners(
    daemon: &Arc<Daemon>,
    central: &Arc<Central>,
    max: usize,
) -> mpsc::Sender<QueuedJob> {
    let daemon = Arc::clone(daemon);
    let central = Arc::clone(central);
    runners(max, move |(job, secrets)| {
        run_job(&daemon, &central, job, secrets)
    })
}

/// `max` (at least one) threads taking `T`s from one queue in order and
/// running `work` on each; the sender queues one.
fn runners<T: Send + 'static>(
    max: usize,
    work: impl Fn(T) + Send + Sync + 'static,
) -> mpsc::Sender<T> {
    let (tx, rx) = mpsc::channel::<T>();
    let rx = Arc::new(Mutex::new(rx));
    let work = Arc::new(work);
    for i in 0..max.max(1) {
        let rx = Arc::clone(&rx);
        let work = Arc::clone(&work);
        let spawned = std::thread::Builder::new()
            .name(format!("account-job-{i}"))
            .spawn(move || loop {
                // The lock is held only while taking the next one.
                let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                match next {
                    Ok(item) => work(item),
                    Err(_) => return,
                }
            });
        if let Err(e) = spawned {
            warn!("cannot start an account job runner: {e}");
        }
    }
    tx
}

/// Runs one account job and reports it to the server (a few tries: the
/// server keeps the job's new secret until the report comes).
fn run_job(
    daemon: &Daemon,
    central: &Central,
    job: jms_sync::job::JobOrder,
    secrets: Option<jms_sync::job::JobSecrets>,
) {
    let id = job.id.clone();
    let report = match secrets {
        Some(secrets) => crate::daemon::monitor::jobs::run(daemon, job, secrets),
        None => jms_sync::job::JobReport {
            ok: false,
            changed: false,
            new_secret_in_place: false,
            steps: Vec::new(),
            error: Some("the job's secrets did not come with it".into()),
        },
    };
    let path = jms_sync::paths::job(&id);
    for attempt in 0..5u32 {
        match central.call(
            reqwest::Method::POST,
            &path,
            "",
            Some(&report),
            Duration::ZERO,
        ) {
            Ok(_) => return,
            Err(e) => {
                warn!(job = %id, attempt, "job report: {e:#}");
                std::thread::sleep(Duration::from_secs(2 << attempt));
            }
        }
    }
}

/// Splits `bytes` into the longest UTF-8 text and the incomplete tail (a
/// character cut between two reads); invalid bytes become U+FFFD.
fn utf8_prefix(bytes: &mut Vec<u8>) -> String {
    let keep = match std::str::from_utf8(bytes) {
        Ok(_) => 0,
        Err(e) if e.error_len().is_none() => bytes.len() - e.valid_up_to(),
        Err(_) => 0,
    };
    let rest = bytes.split_off(bytes.len() - keep);
    let text = String::from_utf8_lossy(bytes).into_owned();
    *bytes = rest;
    text
}

/// Streams `live` to the server for as long as anyone watches; a watch
/// order that came while a stream was stopping starts it again.
fn stream_to_server(central: &Central, live: &LiveSession) {
    loop {
        let ended = stream_once(central, live);
        if live.stream_stopped(ended) {
            continue;
        }
        return;
    }
}

/// Pushes `live`'s output to the server until nobody watches (false) or
/// it ends (true).
fn stream_once(central: &Central, live: &LiveSession) -> bool {
    let Some(tap) = live.tap() else { return true };
    let path = jms_sync::paths::live(&live.id);
    let started = Instant::now();
    let mut pending = tap.recent;
    let first = LiveBatch::start(tap.size.0, tap.size.1, utf8_prefix(&mut pending));
    let push = |body: &LiveBatch| -> bool {
        match central.call(reqwest::Method::POST, &path, "", Some(body), Duration::ZERO) {
            Ok(answer) => serde_json::from_value::<LiveAnswer>(answer).is_ok_and(|a| a.watching),
            Err(e) => {
                warn!(session = %live.id, "live push: {e:#}");
                false
            }
        }
    };
    if !push(&first) {
        return false;
    }
    let mut events: Vec<OutputEvent> = Vec::new();
    let mut last_push = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    let mut open = true;
    while open {
        let deadline = last_push
            + if events.is_empty() {
                HEARTBEAT
            } else {
                PUSH_EVERY
            };
        let wait = deadline.saturating_duration_since(Instant::now());
        // SAFETY: the tap's pipe is open for this whole function.
        let fd = unsafe { BorrowedFd::borrow_raw(tap.pipe.as_raw_fd()) };
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        let _ = poll(
            &mut fds,
            crate::daemon::session::connect::poll_timeout(wait),
        );
        loop {
            match nix::unistd::read(tap.pipe.as_raw_fd(), &mut buf) {
                Ok(0) => {
                    open = false;
                    break;
                }
                Ok(n) => pending.extend_from_slice(&buf[..n]),
                Err(Errno::EINTR) => continue,
                Err(_) => break,
            }
        }
        if !pending.is_empty() {
            let text = utf8_prefix(&mut pending);
            if !text.is_empty() {
                events.push(OutputEvent::output(started.elapsed().as_secs_f64(), text));
            }
        }
        if !open || Instant::now() >= deadline {
            let batch = LiveBatch {
                events: std::mem::take(&mut events),
                ..LiveBatch::default()
            };
            if !push(&batch) && open {
                info!(session = %live.id, "nobody watches any more: live stream stopped");
                return false;
            }
            last_push = Instant::now();
        }
    }
    let reason = live.wait_ended(END_REASON_WAIT).unwrap_or_default();
    push(&LiveBatch::end(reason));
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_cut_between_reads_waits_for_its_rest() {
        let mut bytes = "ab\u{e9}".as_bytes().to_vec();
        let last = bytes.pop().unwrap();
        assert_eq!(utf8_prefix(&mut bytes), "ab");
        bytes.push(last);
        assert_eq!(utf8_prefix(&mut bytes), "\u{e9}");
        assert!(bytes.is_empty());
    }

    /// Jobs queued faster than they run: never more than `max` at once
    /// (before, each job got a thread of its own at once), every one run;
    /// 0 runners is read as one.
    #[test]
    fn at_most_max_jobs_run_at_once_and_every_queued_one_runs() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        for (max, bound) in [(3, 3), (0, 1)] {
            let running = Arc::new(AtomicUsize::new(0));
            let most = Arc::new(AtomicUsize::new(0));
            let (done_tx, done_rx) = mpsc::channel();
            let tx = {
                let (running, most) = (Arc::clone(&running), Arc::clone(&most));
                let done_tx = Mutex::new(done_tx);
                runners(max, move |n: usize| {
                    let now = running.fetch_add(1, SeqCst) + 1;
                    most.fetch_max(now, SeqCst);
                    std::thread::sleep(Duration::from_millis(5));
                    running.fetch_sub(1, SeqCst);
                    let _ = done_tx.lock().unwrap().send(n);
                })
            };
            for n in 0..20 {
                tx.send(n).unwrap();
            }
            let mut done: Vec<usize> = (0..20)
                .map(|_| done_rx.recv_timeout(Duration::from_secs(30)).unwrap())
                .collect();
            done.sort_unstable();
            assert_eq!(done, (0..20).collect::<Vec<_>>());
            let most = most.load(SeqCst);
            assert!(
                (1..=bound).contains(&most),
                "{most} jobs ran at once with max {max}"
            );
        }
    }
}
