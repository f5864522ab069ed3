//! TPM handles that appear as a key file's `parent` (TPM 2.0 Part 2, 7.4 TPM_RH, and the
//! handle ranges of 7.2 TPM_HT).
//!
//! A hierarchy parent means the key's parent is a primary key created on the fly under that
//! hierarchy from the storage-key template; a persistent parent is a key already stored in
//! the TPM at that handle.

/// The storage (owner) hierarchy, TPM_RH_OWNER.
pub const OWNER: u32 = 0x4000_0001;
/// The null hierarchy, TPM_RH_NULL.
pub const NULL: u32 = 0x4000_0007;
/// The endorsement hierarchy, TPM_RH_ENDORSEMENT.
pub const ENDORSEMENT: u32 = 0x4000_000B;
/// The platform hierarchy, TPM_RH_PLATFORM.
pub const PLATFORM: u32 = 0x4000_000C;

/// Is `h` one of the four hierarchies?
pub fn is_hierarchy(h: u32) -> bool {
    matches!(h, OWNER | NULL | ENDORSEMENT | PLATFORM)
}

/// Is `h` a persistent object handle (TPM_HT_PERSISTENT, 0x81xxxxxx)?
pub fn is_persistent(h: u32) -> bool {
    h >> 24 == 0x81
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_handles() {
        for h in [OWNER, NULL, ENDORSEMENT, PLATFORM] {
            assert!(is_hierarchy(h), "{h:#x}");
            assert!(!is_persistent(h), "{h:#x}");
        }
        for h in [0x8100_0000, 0x8100_0001, 0x81FF_FFFF] {
            assert!(is_persistent(h), "{h:#x}");
            assert!(!is_hierarchy(h), "{h:#x}");
        }
        for h in [0, 0x4000_0000, 0x4000_000A, 0x8000_0001, 0x8200_0000] {
            assert!(!is_hierarchy(h) && !is_persistent(h), "{h:#x}");
        }
    }
}
