//! TPM command and response frames as they cross the swtpm data socket: the 10-byte header
//! (TPM 2.0 Part 1, 18.3 and 18.4: tag u16, size u32, code u32, big-endian) and the names
//! of the command codes a benchmark meets (TPM 2.0 Part 2, 6.5.2 TPM_CC).

/// Length of a command or response header.
pub const HEADER_LEN: usize = 10;
/// Largest frame accepted; swtpm's own buffer is 4 KiB, so this is generous.
pub const MAX_FRAME: usize = 64 * 1024;

/// TPM_CC_Sign (Part 2, 6.5.2).
pub const CC_SIGN: u32 = 0x0000_015D;

/// The header of a command (`code` is a TPM_CC) or a response (`code` is a TPM_RC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub tag: u16,
    pub size: u32,
    pub code: u32,
}

/// Why a header cannot start a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame tag {0:#06x} is neither TPM_ST_NO_SESSIONS nor TPM_ST_SESSIONS")]
    Tag(u16),
    #[error("frame size {0} is shorter than its header or over {MAX_FRAME} bytes")]
    Size(u32),
}

impl Header {
    /// Reads a header. Commands carry TPM_ST_NO_SESSIONS (0x8001) or TPM_ST_SESSIONS
    /// (0x8002); responses may also carry the TPM 1.2 tag 0x00C4 for a few early errors.
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> Result<Self, FrameError> {
        let header = Header {
            tag: u16::from_be_bytes([bytes[0], bytes[1]]),
            size: u32::from_be_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]),
            code: u32::from_be_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]),
        };
        if !matches!(header.tag, 0x8001 | 0x8002 | 0x00C4) {
            return Err(FrameError::Tag(header.tag));
        }
        if (header.size as usize) < HEADER_LEN || header.size as usize > MAX_FRAME {
            return Err(FrameError::Size(header.size));
        }
        Ok(header)
    }

    /// Bytes that follow the header.
    pub fn body_len(&self) -> usize {
        self.size as usize - HEADER_LEN
    }
}

/// The name of a TPM_CC, without the `TPM2_` prefix; unknown codes are shown in hex.
pub fn command_name(code: u32) -> String {
    let name = match code {
        0x0120 => "EvictControl",
        0x0121 => "HierarchyControl",
        0x0126 => "Clear",
        0x0129 => "HierarchyChangeAuth",
        0x012A => "NV_DefineSpace",
        0x0131 => "CreatePrimary",
        0x0137 => "NV_Write",
        0x0139 => "DictionaryAttackLockReset",
        0x013A => "DictionaryAttackParameters",
        0x0143 => "SelfTest",
        0x0144 => "Startup",
        0x0145 => "Shutdown",
        0x0146 => "StirRandom",
        0x014E => "NV_Read",
        0x0150 => "ObjectChangeAuth",
        0x0151 => "PolicySecret",
        0x0153 => "Create",
        0x0155 => "HMAC",
        0x0156 => "Import",
        0x0157 => "Load",
        0x0159 => "RSA_Decrypt",
        CC_SIGN => "Sign",
        0x015E => "Unseal",
        0x0161 => "ContextLoad",
        0x0162 => "ContextSave",
        0x0164 => "EncryptDecrypt",
        0x0165 => "FlushContext",
        0x0167 => "LoadExternal",
        0x0169 => "NV_ReadPublic",
        0x016B => "PolicyAuthValue",
        0x016C => "PolicyCommandCode",
        0x0171 => "PolicyOR",
        0x0173 => "ReadPublic",
        0x0174 => "RSA_Encrypt",
        0x0176 => "StartAuthSession",
        0x0177 => "VerifySignature",
        0x017A => "GetCapability",
        0x017B => "GetRandom",
        0x017C => "GetTestResult",
        0x017D => "Hash",
        0x017E => "PCR_Read",
        0x0180 => "PolicyRestart",
        0x0189 => "PolicyGetDigest",
        0x018A => "TestParms",
        0x018C => "PolicyPassword",
        0x0191 => "CreateLoaded",
        0x0193 => "EncryptDecrypt2",
        _ => return format!("CC_{code:#x}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tss_esapi::constants::tss;

    fn header(bytes: [u8; HEADER_LEN]) -> Result<Header, FrameError> {
        Header::parse(&bytes)
    }

    #[test]
    fn reads_a_sign_command_header() {
        // TPM2_Sign with one session, 0x5e bytes long.
        let parsed = header([0x80, 0x02, 0, 0, 0, 0x5e, 0, 0, 0x01, 0x5d]).expect("valid");
        assert_eq!(
            parsed,
            Header {
                tag: 0x8002,
                size: 0x5e,
                code: CC_SIGN
            }
        );
        assert_eq!(parsed.body_len(), 0x5e - 10);
        assert_eq!(command_name(parsed.code), "Sign");
    }

    #[test]
    fn reads_a_bare_response_header() {
        // TPM_RC_INITIALIZE to a second TPM2_Startup: header only, no body.
        let parsed = header([0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x01, 0x00]).expect("valid");
        assert_eq!(parsed.code, 0x100);
        assert_eq!(parsed.body_len(), 0);
    }

    #[test]
    fn refuses_garbage() {
        assert_eq!(
            header([0x12, 0x34, 0, 0, 0, 10, 0, 0, 0, 0]),
            Err(FrameError::Tag(0x1234))
        );
        assert_eq!(
            header([0x80, 0x01, 0, 0, 0, 9, 0, 0, 0, 0]),
            Err(FrameError::Size(9))
        );
        assert_eq!(
            header([0x80, 0x01, 0x7f, 0, 0, 0, 0, 0, 0, 0]),
            Err(FrameError::Size(0x7f00_0000))
        );
    }

    #[test]
    fn names_agree_with_tpm2_tss() {
        for (code, name) in [
            (tss::TPM2_CC_Sign, "Sign"),
            (tss::TPM2_CC_Load, "Load"),
            (tss::TPM2_CC_CreatePrimary, "CreatePrimary"),
            (tss::TPM2_CC_StartAuthSession, "StartAuthSession"),
            (tss::TPM2_CC_FlushContext, "FlushContext"),
            (tss::TPM2_CC_ContextLoad, "ContextLoad"),
            (tss::TPM2_CC_ContextSave, "ContextSave"),
            (tss::TPM2_CC_Startup, "Startup"),
            (tss::TPM2_CC_Shutdown, "Shutdown"),
            (tss::TPM2_CC_RSA_Decrypt, "RSA_Decrypt"),
            (tss::TPM2_CC_ReadPublic, "ReadPublic"),
            (tss::TPM2_CC_GetCapability, "GetCapability"),
            (tss::TPM2_CC_TestParms, "TestParms"),
            (tss::TPM2_CC_Create, "Create"),
            (tss::TPM2_CC_EncryptDecrypt2, "EncryptDecrypt2"),
            (tss::TPM2_CC_CreateLoaded, "CreateLoaded"),
        ] {
            assert_eq!(command_name(code), name);
        }
        assert_eq!(command_name(0x1_0000), "CC_0x10000");
    }
}
