//! PINs the user already typed, kept for the agent's life so that each signature does not
//! prompt again. Zeroized when dropped, locked in memory where the system allows, never
//! logged. `--no-cache` turns it off; remove-all and lock empty it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use ssh_tpm_tpm::Pin;

/// PINs by their key's slot: the SHA-256 of its key file (see `AgentKey::pin_slot`), so
/// that a key file rewritten with another PIN does not get the old one.
#[derive(Debug)]
pub struct PinCache {
    enabled: bool,
    pins: Mutex<HashMap<Vec<u8>, Pin>>,
    /// Counts [`PinCache::clear`]s, so that a PIN typed before a lock or remove-all is
    /// recognised as such when its prompt returns.
    epoch: AtomicU64,
}

impl PinCache {
    /// A cache that keeps PINs only when `enabled`.
    pub fn new(enabled: bool) -> Self {
        PinCache {
            enabled,
            pins: Mutex::new(HashMap::new()),
            epoch: AtomicU64::new(0),
        }
    }

    /// Changes whenever the cache is cleared.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// The PIN kept for `key`, if any.
    pub fn get(&self, key: &[u8]) -> Option<Pin> {
        self.lock().get(key).cloned()
    }

    /// Keeps `pin` for `key` (a PIN the TPM just accepted).
    pub fn put(&self, key: &[u8], pin: Pin) {
        if !self.enabled || pin.is_empty() {
            return;
        }
        if let Err(e) = pin.lock_in_memory() {
            tracing::debug!("cached PIN stays swappable: {e}");
        }
        self.lock().insert(key.to_vec(), pin);
    }

    /// Drops the PIN of one key (it was wrong, or the key went away).
    pub fn forget(&self, key: &[u8]) {
        self.lock().remove(key);
    }

    /// Keeps only the PINs whose slot `keep` accepts.
    pub fn retain(&self, keep: impl Fn(&[u8]) -> bool) {
        self.lock().retain(|slot, _| keep(slot));
    }

    /// Drops every PIN.
    pub fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Pin>> {
        self.pins.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_forgets_and_can_be_off() {
        let cache = PinCache::new(true);
        cache.put(b"k1", Pin::from("1234".to_string()));
        assert_eq!(
            cache.get(b"k1").map(|p| p.expose().to_vec()),
            Some(b"1234".to_vec())
        );
        cache.forget(b"k1");
        assert!(cache.get(b"k1").is_none());
        cache.put(b"k2", Pin::from("5678".to_string()));
        let before = cache.epoch();
        cache.clear();
        assert!(cache.get(b"k2").is_none());
        assert_ne!(cache.epoch(), before);

        cache.put(b"k3", Pin::from("1111".to_string()));
        cache.put(b"k4", Pin::from("2222".to_string()));
        cache.retain(|slot| slot == b"k4");
        assert!(cache.get(b"k3").is_none());
        assert!(cache.get(b"k4").is_some());

        let off = PinCache::new(false);
        off.put(b"k1", Pin::from("1234".to_string()));
        assert!(off.get(b"k1").is_none());
    }
}
