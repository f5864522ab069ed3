//! PINs and other authorization values: zeroized on drop, never printed.

use std::fmt;

use zeroize::Zeroizing;

/// A key's PIN (its TPM userAuth). `Debug` shows only whether it is empty.
#[derive(Clone, Default)]
pub struct Pin(Zeroizing<Vec<u8>>);

impl Pin {
    /// Wraps the bytes of a PIN; the caller's copy should be zeroized by the caller.
    pub fn new(bytes: Vec<u8>) -> Self {
        Pin(Zeroizing::new(bytes))
    }

    /// The empty PIN, for keys created without one.
    pub fn empty() -> Self {
        Pin::default()
    }

    /// Whether no PIN was given.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The PIN bytes, to hand to the TPM.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Asks the kernel to keep this PIN's memory out of swap, for PINs that are kept
    /// (the agent's cache). Best effort: without the privilege or the rlimit, it stays
    /// swappable, and the failure is returned for the caller to log.
    pub fn lock_in_memory(&self) -> std::io::Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        // SAFETY: mlock(2) neither reads nor writes the range; it only pins the pages that
        // hold this live buffer. Locks are never undone here, so no other buffer sharing a
        // page can lose its lock through us.
        #[allow(unsafe_code)]
        let locked = unsafe { rustix::mm::mlock(self.0.as_ptr() as *mut _, self.0.len()) };
        locked.map_err(std::io::Error::from)
    }
}

impl From<String> for Pin {
    fn from(text: String) -> Self {
        Pin::new(text.into_bytes())
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            f.write_str("Pin(empty)")
        } else {
            f.write_str("Pin(<redacted>)")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_pin() {
        let pin = Pin::from("hunter2".to_string());
        let shown = format!("{pin:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(shown, "Pin(<redacted>)");
        assert_eq!(format!("{:?}", Pin::empty()), "Pin(empty)");
    }
}
