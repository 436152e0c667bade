//! Password checks of public endpoints (the audit web's login, with its
//! PBKDF2 decoy for unknown names) run on a small pool of threads of their
//! own, never on the runtime's blocking pool that store and sync requests
//! use: a flood of login attempts costs at most these threads, and attempts
//! beyond the pool's queue are answered "busy, try later" at once instead of
//! waiting in line.

use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Mutex;

/// Threads of the default pool: one per CPU, at most 4.
fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
        .clamp(1, 4)
}

/// Checks that may wait for a thread of the default pool.
pub const DEFAULT_QUEUE: usize = 16;

type Job = Box<dyn FnOnce() + Send>;

/// The pool is full (or gone): answer "try later".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many password checks at once: try again in a moment")]
pub struct Busy;

/// A fixed set of threads fed through a bounded queue.
pub struct HashPool {
    jobs: SyncSender<Job>,
}

impl HashPool {
    /// `threads` workers (named `jms-hash-N`) and room for `queue` waiting
    /// jobs. The threads end when the pool is dropped.
    pub fn new(threads: usize, queue: usize) -> HashPool {
        let (jobs, inbox) = mpsc::sync_channel::<Job>(queue);
        let inbox = std::sync::Arc::new(Mutex::new(inbox));
        for n in 0..threads.max(1) {
            let inbox = inbox.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("jms-hash-{n}"))
                .spawn(move || loop {
                    let job = {
                        let inbox = inbox.lock().unwrap_or_else(|p| p.into_inner());
                        inbox.recv()
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                });
            if let Err(e) = spawned {
                tracing::error!("cannot start a password-check thread: {e}");
            }
        }
        HashPool { jobs }
    }

    /// A pool sized for this machine.
    pub fn with_defaults() -> HashPool {
        HashPool::new(default_threads(), DEFAULT_QUEUE)
    }

    /// Hands `work` to the pool now and returns the future of its result;
    /// [`Busy`] (at once) when the queue is full.
    pub fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> impl std::future::Future<Output = Result<T, Busy>> + Send + 'static {
        let (done, result) = tokio::sync::oneshot::channel();
        let span = tracing::Span::current();
        let job: Job = Box::new(move || {
            let _ = done.send(span.in_scope(work));
        });
        let submitted = match self.jobs.try_send(job) {
            Ok(()) => Ok(result),
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => Err(Busy),
        };
        async move { submitted?.await.map_err(|_| Busy) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    #[tokio::test]
    async fn jobs_beyond_the_queue_are_refused_at_once() {
        let pool = HashPool::new(1, 1);
        let (release, gate) = channel::<()>();
        let (started, running) = channel::<()>();
        let gate = Mutex::new(gate);
        // One job holds the only thread...
        let first = pool.run(move || {
            started.send(()).unwrap();
            gate.lock().unwrap().recv().unwrap();
            1
        });
        let first = tokio::spawn(first);
        running.recv().unwrap();
        // ...one waits in the queue, and the next is refused.
        let second = tokio::spawn(pool.run(|| 2));
        assert_eq!(pool.run(|| 3).await, Err(Busy), "beyond thread + queue");
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap(), Ok(1));
        assert_eq!(second.await.unwrap(), Ok(2));
        assert_eq!(pool.run(|| 4).await, Ok(4), "the pool works again");
    }
}
