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
