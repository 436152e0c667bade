//! Account jobs, the monitor's side: each job the server orders
//! (`jms_sync::control::Order::Job`, its secrets opened from the control
//! answer) runs in a worker of its own (`jms-job`, the session workers'
//! user and limits: `crate::daemon::session::job`), which gets the order
//! and the secrets over its socketpair and answers with the typed report.
//! The worker sends each step as it ends ([`FromJob::Step`]), which the
//! monitor spools as a `job_step` audit event (uploaded like a session's,
//! so the server's audit keeps what reached the target even when the
//! report is lost), then the report. The monitor never runs anything on a
//! target itself; it passes the report on to the server
//! (`control::run_control`).

use std::time::Duration;

use jms_proto::{read_frame_with_fds_limited, write_frame, MAX_FRAME};
use jms_sync::job::{cut_detail, JobOrder, JobReport, JobSecrets, MAX_STEPS};
use tracing::{info, warn};

use crate::daemon::events::EventBody;
use crate::daemon::monitor::handlers::Daemon;
use crate::daemon::monitor::spool;
use crate::daemon::monitor::workers;
use crate::wire::{FromJob, JobStart, JOB_WORKER_NAME};

/// How long a job worker may take (its steps have their own timeouts).
const JOB_WAIT: Duration = Duration::from_secs(600);

fn failed(error: String) -> JobReport {
    JobReport {
        ok: false,
        changed: false,
        new_secret_in_place: false,
        steps: Vec::new(),
        error: Some(error),
    }
}

/// Runs `order` in a job worker; its report (a failed one when the
/// worker could not start, died, or said something malformed).
pub fn run(daemon: &Daemon, order: JobOrder, secrets: JobSecrets) -> JobReport {
    let id = order.id.clone();
    info!(event = "account_job_start", job = %id, kind = order.action.as_str(),
        asset = %order.asset.name, account = %order.account.name);
    let mut worker = match workers::spawn(daemon, false, JOB_WORKER_NAME) {
        Ok(worker) => worker,
        Err(e) => {
            tracing::error!(
                alarm = "worker_start_failed",
                error = format!("{e:#}"),
                "no job worker"
            );
            return failed("no job worker could be started on the bastion".into());
        }
    };
    let (kind, asset, attempt) = (order.action, order.asset.name.clone(), order.attempt);
    let account = order.account.name.clone();
    let start = JobStart {
        order,
        secrets,
        settings: workers::session_settings(daemon),
    };
    if let Err(e) = write_frame(&mut &worker.channel_stream, &start) {
        warn!(job = %id, "the job worker did not take its job: {e}");
    }
    drop(start);
    let _ = worker.channel_stream.set_read_timeout(Some(JOB_WAIT));
    let deadline = std::time::Instant::now() + JOB_WAIT;
    let mut steps = 0usize;
    // Each step as it ends becomes an audit event (at most MAX_STEPS of
    // them: the worker's bytes are not trusted), then the report.
    let read = loop {
        match read_frame_with_fds_limited::<FromJob>(&worker.channel_stream, 0, MAX_FRAME) {
            Ok((FromJob::Step(step), _)) => {
                steps += 1;
                if steps <= MAX_STEPS {
                    spool::record(
                        &daemon.config,
                        EventBody::JobStep {
                            job: id.clone(),
                            kind: kind.as_str().to_string(),
                            asset: asset.clone(),
                            account: account.clone(),
                            attempt,
                            step: step.name,
                            ok: step.ok,
                            detail: cut_detail(&step.detail),
                        },
                    );
                }
                if std::time::Instant::now() > deadline {
                    break Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into());
                }
            }
            Ok((FromJob::Report(report), fds)) => break Ok((report, fds)),
            Err(e) => break Err(e),
        }
    };
    let died = worker.finish(read.is_ok());
    let report = match read {
        Ok((report, _)) => match report.check() {
            Ok(()) => report,
            Err(e) => failed(format!("the job worker's report was refused: {e}")),
        },
        Err(e) => failed(match died {
            Some(reason) => format!("the job worker ended without a report: {reason}"),
            None => format!("the job worker's report did not come: {e}"),
        }),
    };
    info!(event = "account_job_done", job = %id, ok = report.ok, changed = report.changed);
    report
}
