//! A thread that owns the [`Tpm`] (tss-esapi's context is not `Send`) and runs jobs for
//! other threads, one at a time, as the TPM itself would.

use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::device::Tpm;
use crate::error::{Error, Result};
use crate::target::TpmTarget;

type Job = Box<dyn FnOnce(&mut Tpm) + Send>;

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
        let thread = std::thread::Builder::new()
            .name("tpm".into())
            .spawn(move || {
                let mut tpm = match Tpm::open(&target) {
                    Ok(mut tpm) => {
                        setup(&mut tpm);
                        let _ = ready.send(Ok(()));
                        tpm
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                for job in inbox {
                    if tpm.is_broken() {
                        // The request that saw the failure has failed; this one reconnects.
                        match reopen(tpm, &target) {
                            Some(mut fresh) => {
                                setup(&mut fresh);
                                tpm = fresh;
                            }
                            None => return,
                        }
                    }
                    job(&mut tpm);
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

    /// Queues `job`; `done` receives its result on the TPM thread.
    pub fn submit<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Tpm) -> T + Send + 'static,
        done: impl FnOnce(T) + Send + 'static,
    ) -> Result<()> {
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| Error::Unsupported("the TPM thread has stopped".into()))?;
        jobs.send(Box::new(move |tpm| done(job(tpm))))
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

/// Closes a broken connection and opens a new one, retrying while the TPM is away. Gives
/// up (ending the thread, so requests fail with "the TPM thread has stopped") only when
/// the TPM cannot be opened for a minute.
fn reopen(broken: Tpm, target: &TpmTarget) -> Option<Tpm> {
    drop(broken);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match Tpm::open(target) {
            Ok(tpm) => {
                tracing::info!("reconnected to the TPM");
                return Some(tpm);
            }
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::debug!("TPM not back yet: {e}");
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
            Err(e) => {
                tracing::error!("cannot reconnect to the TPM: {e}");
                return None;
            }
        }
    }
}

impl Drop for TpmService {
    fn drop(&mut self) {
        self.stop();
    }
}
