//! Notices key files (`*.tpm`), public keys and certificates (`*.pub`) appearing, changing or
//! going away under the key directory while the agent runs, through Linux inotify(7).
//!
//! Every directory under the key directory is watched, as the keys are searched recursively.
//! Changes come in bursts (an editor or `ssh-keygen` writes, renames, chmods), so they are
//! reported once the directory has been quiet for [`DEBOUNCE`].

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use tokio::io::unix::AsyncFd;

/// How long the directory must be quiet before a change is reported.
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// The events that can change what the agent serves.
const INTERESTING: WatchFlags = WatchFlags::CLOSE_WRITE
    .union(WatchFlags::CREATE)
    .union(WatchFlags::DELETE)
    .union(WatchFlags::MOVED_FROM)
    .union(WatchFlags::MOVED_TO)
    .union(WatchFlags::ATTRIB)
    .union(WatchFlags::DELETE_SELF)
    .union(WatchFlags::ONLYDIR);

/// An inotify instance watching a key directory and its subdirectories.
pub struct KeyDirWatch {
    fd: AsyncFd<OwnedFd>,
    dir: PathBuf,
}

impl KeyDirWatch {
    /// Starts watching `dir` and every directory below it. Must run inside a Tokio runtime.
    pub fn new(dir: &Path) -> io::Result<Self> {
        let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?;
        inotify::add_watch(&fd, dir, INTERESTING)?;
        // SAFETY: `fd` is an open inotify descriptor that the `AsyncFd` owns from here on; an
        // `OwnedFd` always returns that same descriptor and closes it only when dropped.
        #[allow(unsafe_code)]
        let fd = unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?;
        let watch = KeyDirWatch {
            fd,
            dir: dir.to_path_buf(),
        };
        watch.watch_subdirectories(dir);
        Ok(watch)
    }

    /// Waits for a change to a key, public key or certificate file (or to a directory that
    /// may hold some), then until things have been quiet for [`DEBOUNCE`].
    pub async fn changed(&mut self) -> io::Result<()> {
        while !self.read_events().await? {}
        loop {
            match tokio::time::timeout(DEBOUNCE, self.read_events()).await {
                Err(_quiet) => break,
                Ok(result) => {
                    result?;
                }
            }
        }
        // Directories created meanwhile need watches of their own.
        self.watch_subdirectories(&self.dir.clone());
        Ok(())
    }

    /// Reads the events that are ready, waiting for at least one; true when one matters.
    async fn read_events(&mut self) -> io::Result<bool> {
        let mut guard = self.fd.readable().await?;
        let mut buffer = [MaybeUninit::<u8>::uninit(); 4096];
        let mut reader = inotify::Reader::new(guard.get_inner(), &mut buffer);
        let mut relevant = false;
        loop {
            match reader.next() {
                Ok(event) => relevant |= matters(&event),
                Err(rustix::io::Errno::AGAIN) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        guard.clear_ready();
        Ok(relevant)
    }

    /// Adds watches for the directories below `dir`; ones already watched keep their watch.
    fn watch_subdirectories(&self, dir: &Path) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            // Symbolic links to directories are not followed, as the key search does not.
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                let path = entry.path();
                if let Err(e) = inotify::add_watch(self.fd.get_ref(), &path, INTERESTING) {
                    tracing::warn!(dir = %path.display(), "cannot watch for key changes: {e}");
                }
                self.watch_subdirectories(&path);
            }
        }
    }
}

/// Whether an event may change the keys served: one about a directory, a `*.tpm` or a
/// `*.pub` file (certificates are `NAME-cert.pub`), or the overflow of the event queue.
fn matters(event: &inotify::Event<'_>) -> bool {
    let flags = event.events();
    if flags.intersects(ReadFlags::ISDIR | ReadFlags::QUEUE_OVERFLOW | ReadFlags::DELETE_SELF) {
        return true;
    }
    event.file_name().is_some_and(|name| {
        let name = name.to_bytes();
        name.ends_with(b".tpm") || name.ends_with(b".pub")
    })
}
