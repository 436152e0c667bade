//! The worker's end of the monitor channel (`crate::wire`): asks answered
//! in order, events for the spool, live notes; a reader thread applies the
//! monitor's orders (end, notice, a joiner's keys, a watcher's pipe, new
//! limits) to the session's live state.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};

use jms_proto::{read_frame_with_fds_limited, write_frame_with_fds, MAX_RESPONSE_FRAME};
use tracing::warn;

use crate::daemon::events::EventBody;
use crate::daemon::live_session::LiveSession;
use crate::daemon::session::relay::Limits;
use crate::wire::{Answer, Ask, FromWorker, Register, ToWorker, WireLimits};

/// The monitor as a session worker sees it.
pub struct Link {
    writer: Mutex<UnixStream>,
    /// Held across one ask and its answer.
    asking: Mutex<Receiver<(Answer, Vec<OwnedFd>)>>,
    state: Arc<Mutex<Orders>>,
}

/// What the reader thread applies orders to.
#[derive(Default)]
struct Orders {
    live: Option<Arc<LiveSession>>,
    /// An end order that came before the session was live.
    end: Option<String>,
    limits: WireLimits,
}

impl Link {
    /// Starts the reader thread on `stream`.
    pub fn new(stream: UnixStream, limits: WireLimits) -> std::io::Result<Link> {
        let reader = stream.try_clone()?;
        let (answers, asking) = mpsc::channel();
        let state = Arc::new(Mutex::new(Orders {
            limits,
            ..Orders::default()
        }));
        let orders = Arc::clone(&state);
        std::thread::Builder::new()
            .name("monitor-link".into())
            .spawn(move || read_orders(reader, answers, orders))?;
        Ok(Link {
            writer: Mutex::new(stream),
            asking: Mutex::new(asking),
            state,
        })
    }

    fn orders(&self) -> std::sync::MutexGuard<'_, Orders> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends one message; false when the monitor is gone.
    pub fn send(&self, message: &FromWorker) -> bool {
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        write_frame_with_fds(&writer, message, &[]).is_ok()
    }

    /// Asks the monitor; `None` when it is gone.
    pub fn ask_with_fds(&self, ask: Ask) -> Option<(Answer, Vec<OwnedFd>)> {
        let asking = self.asking.lock().unwrap_or_else(|e| e.into_inner());
        if !self.send(&FromWorker::Ask(ask)) {
            return None;
        }
        asking.recv().ok()
    }

    pub fn ask(&self, ask: Ask) -> Option<Answer> {
        self.ask_with_fds(ask).map(|(answer, _)| answer)
    }

    /// Spools one event (through the monitor); false when the monitor is
    /// gone and the event was not spooled.
    pub fn event(&self, body: EventBody) -> bool {
        let recorded = matches!(self.ask(Ask::Record(body)), Some(Answer::Recorded));
        if !recorded {
            warn!("the monitor is gone: an event was not spooled");
        }
        recorded
    }

    /// Registers the live session: the monitor's orders reach it from now.
    pub fn register(&self, register: Register, live: Arc<LiveSession>) {
        {
            let mut orders = self.orders();
            if let Some(line) = orders.end.take() {
                live.end(line);
            }
            orders.live = Some(live);
        }
        self.send(&FromWorker::Register(register));
    }

    /// The idle and length limits in force.
    pub fn limits(&self) -> Limits {
        self.orders().limits.limits()
    }
}

fn read_orders(
    stream: UnixStream,
    answers: Sender<(Answer, Vec<OwnedFd>)>,
    state: Arc<Mutex<Orders>>,
) {
    let live = || state.lock().unwrap_or_else(|e| e.into_inner()).live.clone();
    loop {
        let (order, mut fds) = match read_frame_with_fds_limited::<ToWorker>(
            &stream,
            jms_proto::MAX_ANY_FDS,
            MAX_RESPONSE_FRAME,
        ) {
            Ok(read) => read,
            Err(e) => {
                // The monitor is gone (or spoke nonsense): the session ends.
                if !matches!(e, jms_proto::FrameError::Closed) {
                    warn!(error = %e, "the monitor channel failed");
                }
                let line = "jms: the bastion daemon stopped; the session was ended".to_string();
                match live() {
                    Some(live) => live.end(line),
                    None => state.lock().unwrap_or_else(|e| e.into_inner()).end = Some(line),
                }
                return;
            }
        };
        match order {
            ToWorker::Answer(answer) => {
                if answers.send((*answer, fds)).is_err() {
                    return;
                }
            }
            ToWorker::End(line) => match live() {
                Some(live) => live.end(line),
                None => state.lock().unwrap_or_else(|e| e.into_inner()).end = Some(line),
            },
            ToWorker::Notice(line) => {
                if let Some(live) = live() {
                    live.notice(line);
                }
            }
            ToWorker::Input { joiner, data } => {
                if let Some(live) = live() {
                    if !live.input(&joiner, &data) {
                        // The session's queue is full: these keys are dropped.
                        live.notice(format!(
                            "{joiner}'s keys were dropped (the session is busy)"
                        ));
                    }
                }
            }
            ToWorker::Tap => {
                if let (Some(live), Some(pipe)) = (live(), fds.pop()) {
                    live.add_tap(pipe);
                }
            }
            ToWorker::Settings(limits) => {
                state.lock().unwrap_or_else(|e| e.into_inner()).limits = limits;
            }
        }
    }
}
