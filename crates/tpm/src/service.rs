//! A thread that owns the [`Tpm`] (tss-esapi's context is not `Send`) and runs jobs for
//! other threads, one at a time, as the TPM itself would.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::device::Tpm;
use crate::error::{Error, Result};
use crate::target::TpmTarget;

/// How long a request waits for a lost TPM to come back before it fails with
/// [`Error::ConnectionLost`]. The thread goes on: the next request tries again.
const RECONNECT_PATIENCE: Duration = Duration::from_secs(3);
/// The pause between two attempts to open the TPM again.
const RECONNECT_PAUSE: Duration = Duration::from_millis(250);

/// A job gets the TPM, or the reason there is none right now.
type Job = Box<dyn FnOnce(Result<&mut Tpm>) + Send>;

/// Handle to the TPM thread. Dropping every clone's sender ends the thread, which closes
/// the TPM in order; [`TpmService::shutdown`] waits for that.
pub struct TpmService {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl TpmService {
    /// Opens the TPM on a new thread and returns once it is open (or failed to open).
    pub fn start(target: TpmTarget) -> Result<Self> {
        Self::start_with(target, |_| {})
    }

    /// As [`TpmService::start`], running `setup` on the TPM after each open, reconnections
    /// included (for settings such as [`Tpm::set_owner_password`]).
    pub fn start_with(
        target: TpmTarget,
        setup: impl Fn(&mut Tpm) + Send + 'static,
    ) -> Result<Self> {
        let (jobs, inbox) = mpsc::channel::<Job>();
        let (ready, opened) = mpsc::channel::<Result<()>>();
        let open = move || {
            let mut tpm = Tpm::open(&target)?;
            setup(&mut tpm);
            Ok(tpm)
        };
        let thread = std::thread::Builder::new()
            .name("tpm".into())
            .spawn(move || {
                let mut connection = match Connection::open(open, RECONNECT_PATIENCE) {
                    Ok(connection) => {
                        let _ = ready.send(Ok(()));
                        connection
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                for job in inbox {
                    job(connection.tpm());
                }
            })
            .map_err(|e| Error::io("cannot start the TPM thread", e))?;
        match opened.recv() {
            Ok(Ok(())) => Ok(TpmService {
                jobs: Some(jobs),
                thread: Some(thread),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Unsupported(
                "the TPM thread stopped while opening".into(),
            )),
        }
    }

    /// A service with no TPM behind it: every job is refused as if the TPM thread had
    /// stopped. For exercising what comes before the TPM (protocol tests, fuzzing).
    pub fn without_tpm() -> Self {
        TpmService {
            jobs: None,
            thread: None,
        }
    }

    /// Queues `job`; `done` receives its result on the TPM thread, or the error that kept
    /// the job from running ([`Error::ConnectionLost`] while the TPM is away).
    pub fn submit<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Tpm) -> Result<T> + Send + 'static,
        done: impl FnOnce(Result<T>) + Send + 'static,
    ) -> Result<()> {
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| Error::Unsupported("the TPM thread has stopped".into()))?;
        jobs.send(Box::new(move |tpm: Result<&mut Tpm>| {
            done(tpm.and_then(job))
        }))
        .map_err(|_| Error::Unsupported("the TPM thread has stopped".into()))
    }

    /// Runs `job` and waits for its result (for callers that may block).
    pub fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Tpm) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = mpsc::channel();
        self.submit(job, move |result| {
            let _ = tx.send(result);
        })?;
        rx.recv()
            .map_err(|_| Error::Unsupported("the TPM thread stopped mid-request".into()))?
    }

    /// Stops taking jobs, lets queued ones finish, and closes the TPM.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for TpmService {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The TPM as the thread holds it: open, or lost and opened again by the next job.
struct Connection<O> {
    open: O,
    tpm: Option<Tpm>,
    /// How long one job waits for the TPM to come back.
    patience: Duration,
    /// When a reconnection last failed. The jobs queued right behind it try once each, so
    /// that a backlog of requests does not wait out the patience one after another.
    gave_up_at: Option<Instant>,
}

impl<O: FnMut() -> Result<Tpm>> Connection<O> {
    /// Opens the TPM the first time; failing, the service does not start.
    fn open(mut open: O, patience: Duration) -> Result<Self> {
        let tpm = open()?;
        Ok(Connection {
            open,
            tpm: Some(tpm),
            patience,
            gave_up_at: None,
        })
    }

    /// The open TPM for the next job. A connection that broke is closed and opened anew,
    /// retrying for a while; when the TPM is still away, the job fails with
    /// [`Error::ConnectionLost`] and the next one tries again.
    fn tpm(&mut self) -> Result<&mut Tpm> {
        let tpm = match self.tpm.take() {
            Some(tpm) if !tpm.is_broken() => tpm,
            // The request that saw the failure has failed; this one reconnects. The broken
            // connection closes (and an embedded swtpm stops) before the new one opens.
            broken => {
                drop(broken);
                self.reopen()?
            }
        };
        Ok(self.tpm.insert(tpm))
    }

    fn reopen(&mut self) -> Result<Tpm> {
        let just_failed = self
            .gave_up_at
            .is_some_and(|at| at.elapsed() < self.patience);
        let deadline = Instant::now()
            + if just_failed {
                Duration::ZERO
            } else {
                self.patience
            };
        loop {
            let error = match (self.open)() {
                Ok(tpm) => {
                    tracing::info!("reconnected to the TPM");
                    self.gave_up_at = None;
                    return Ok(tpm);
                }
                Err(e) => e,
            };
            if Instant::now() + RECONNECT_PAUSE < deadline {
                tracing::debug!("TPM not back yet: {error}");
                std::thread::sleep(RECONNECT_PAUSE);
                continue;
            }
            if self.gave_up_at.is_none() {
                tracing::warn!("cannot reconnect to the TPM: {error}; each request tries again");
            } else {
                tracing::debug!("TPM still away: {error}");
            }
            self.gave_up_at = Some(Instant::now());
            return Err(Error::ConnectionLost {
                op: "a reconnection attempt",
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// A connection that broke, to a TPM that does not come back; `tries` counts the opens.
    fn lost(tries: &Cell<u32>, patience: Duration) -> Connection<impl FnMut() -> Result<Tpm> + '_> {
        let open = move || {
            tries.set(tries.get() + 1);
            Err(Error::Unsupported("no TPM here".into()))
        };
        Connection {
            open,
            tpm: None,
            patience,
            gave_up_at: None,
        }
    }

    /// Each job during an outage fails within the patience, with the error that says the
    /// next request reconnects; and the next one does try again, however long the outage.
    #[test]
    fn an_outage_fails_each_job_quickly_and_never_gives_up() {
        let tries = Cell::new(0);
        let patience = Duration::from_millis(600);
        let mut connection = lost(&tries, patience);

        let started = Instant::now();
        let first = connection.tpm().err();
        let waited = started.elapsed();
        assert!(
            matches!(first, Some(Error::ConnectionLost { .. })),
            "{first:?}"
        );
        assert!(
            waited >= Duration::from_millis(500),
            "gave up after {waited:?}"
        );
        assert!(waited < Duration::from_millis(1500), "waited {waited:?}");
        assert!(tries.get() >= 2, "{} tries", tries.get());
        let text = first.map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("the next request reconnects"), "{text}");

        // Queued right behind: one try each, no second wait.
        let before = tries.get();
        let started = Instant::now();
        assert!(connection.tpm().is_err());
        assert!(started.elapsed() < Duration::from_millis(200));
        assert_eq!(tries.get(), before + 1);

        // Later requests, past any limit, still try (with patience again).
        for _ in 0..3 {
            std::thread::sleep(patience);
            let before = tries.get();
            assert!(matches!(
                connection.tpm(),
                Err(Error::ConnectionLost { .. })
            ));
            assert!(tries.get() >= before + 2, "{} -> {}", before, tries.get());
        }
    }
}
