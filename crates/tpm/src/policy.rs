//! Key policies: what the TPM must be shown before a key signs (TPM 2.0 key-file draft,
//! "Key Policy Specification"; TPM 2.0 Part 3, 23 Enhanced Authorization), and whether a key
//! needs a PIN at all.
//!
//! A key file's `policy` lists TPM policy commands, to be run in order in a policy session;
//! that session then authorizes TPM2_Sign. Two commands are implemented:
//! - TPM2_PolicyPCR (0x17F): the key signs only while the selected PCRs hold the values it
//!   was bound to.
//! - TPM2_PolicyAuthValue (0x16B): the key's PIN is needed as well. It is proven by the
//!   session's HMAC, and the session is salted to the parent, so the PIN never crosses the
//!   bus.
//!
//! - TPM2_PolicyAuthorize (0x16A), for signed policies (the draft's "Signed Policy
//!   Specification"): the key's policy starts with PolicyAuthorize naming an authority key,
//!   and `authPolicy` lists policies that authority signed. They are tried in order; the
//!   first that passes authorizes the key.
//!
//! Any other command is refused with an error that names the command, before the TPM is
//! asked anything: skipping a step would only end in the TPM's TPM_RC_POLICY_FAIL, which says
//! nothing about why.

use sha2::Digest as _;
use ssh_tpm_keyfile::{TpmKey, TpmPolicy};
use tss_esapi::attributes::SessionAttributesBuilder;
use tss_esapi::constants::SessionType;
use tss_esapi::handles::{KeyHandle, ObjectHandle, SessionHandle};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::PolicySession;
use tss_esapi::structures::{Digest, Nonce, PcrSelectionList, Signature, SymmetricDefinition};
use tss_esapi::traits::UnMarshall;
use tss_esapi::tss2_esys::{TPML_PCR_SELECTION, TPMS_PCR_SELECTION};
use tss_esapi::Context;

use crate::device::Tpm;
use crate::error::{Error, Result};
use crate::public::decode_public;

/// TPM_CC_PolicyAuthorize (TPM 2.0 Part 2, 6.5.2).
pub const CC_POLICY_AUTHORIZE: u32 = 0x0000_016A;
/// TPM_CC_PolicyAuthValue.
pub const CC_POLICY_AUTH_VALUE: u32 = 0x0000_016B;
/// TPM_CC_PolicyPCR.
pub const CC_POLICY_PCR: u32 = 0x0000_017F;
/// TPM_CC_PolicyPassword.
pub const CC_POLICY_PASSWORD: u32 = 0x0000_018C;

/// Most PCR banks one TPML_PCR_SELECTION may list (HASH_COUNT in the reference TPM, and
/// the size of tss-esapi's list).
const MAX_PCR_BANKS: usize = 16;

/// Longest pcrSelect bitmap tss-esapi takes (32 PCRs; PC Client TPMs have 24).
const MAX_PCR_SELECT: usize = 4;

/// Whether a key needs a PIN, as far as its file and public area tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinNeed {
    /// No PIN: `emptyAuth` is TRUE, or the key's policy never checks its authValue.
    None,
    /// The file says the key has a PIN, but the key is exempt from dictionary-attack
    /// counting (`noDA`): an empty authorization costs nothing when it is wrong, so it may
    /// be tried before asking. tpm2-tools 5.x's `tpm2_encodeobject` writes `emptyAuth`
    /// FALSE for keys without a password; this makes its `noDA` keys work unprompted.
    TryEmptyFirst,
    /// A PIN is needed, and an empty one must never be sent: each refusal would count
    /// against the TPM's dictionary-attack limit.
    Required,
}

/// Whether `key` needs a PIN. See [`PinNeed`].
pub fn pin_need(key: &TpmKey) -> PinNeed {
    let signed = key.auth_policy.iter().flat_map(|a| a.policy.iter());
    let checks_auth_value = key.policy.is_empty()
        || key
            .policy
            .iter()
            .chain(signed)
            .any(|p| matches!(p.command_code, CC_POLICY_AUTH_VALUE | CC_POLICY_PASSWORD));
    if key.empty_auth || !checks_auth_value {
        return PinNeed::None;
    }
    let no_da = decode_public(&key.pubkey).is_ok_and(|p| p.object_attributes().no_da());
    if no_da {
        PinNeed::TryEmptyFirst
    } else {
        PinNeed::Required
    }
}

/// One PCR bank of a TPML_PCR_SELECTION: the bank's hash and the selected-PCR bitmap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrBank {
    pub hash: u16,
    pub select: Vec<u8>,
}

/// A policy command this code can run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyStep {
    /// TPM2_PolicyPCR. An empty `digest` lets the TPM take the current PCR values; the
    /// policy digest then still only matches the key's if they are the values it was
    /// bound to.
    Pcr {
        banks: Vec<PcrBank>,
        digest: Vec<u8>,
    },
    /// TPM2_PolicyAuthValue (also run for TPM2_PolicyPassword, which the draft allows:
    /// both leave the same policy digest, and this one keeps the PIN off the bus).
    AuthValue,
    /// TPM2_PolicyAuthorize: the policy digest so far, signed by the authority `key_sign`,
    /// is replaced by one naming the authority. `key_sign` is a TPM2B_PUBLIC, `signature` a
    /// TPMT_SIGNATURE over H(approvedPolicy || policyRef) (TPM 2.0 Part 3, 23.16).
    Authorize {
        key_sign: Vec<u8>,
        policy_ref: Vec<u8>,
        signature: Vec<u8>,
    },
}

/// One of the signed policies in `authPolicy`; its steps end with PolicyAuthorize.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedPolicy {
    pub name: Option<String>,
    pub steps: Vec<PolicyStep>,
}

/// A key's policy, checked and decoded: the signed policies to try in order (none when the
/// key has no `authPolicy`), then the steps to run after whichever passes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPolicy {
    pub signed: Vec<SignedPolicy>,
    pub steps: Vec<PolicyStep>,
}

impl KeyPolicy {
    /// The policy of `key`, or `None` when it has none and is authorized by its PIN alone.
    ///
    /// # Errors
    ///
    /// A command this code does not run, parameters that cannot be read, or signed policies
    /// laid out other than the draft says; each error names the command code.
    pub fn of_key(key: &TpmKey) -> Result<Option<Self>> {
        if key.policy.is_empty() && key.auth_policy.is_empty() {
            return Ok(None);
        }
        let digest_size = decode_public(&key.pubkey)
            .ok()
            .and_then(|p| digest_size(p.name_hashing_algorithm()));
        let decode = |policies: &[TpmPolicy]| {
            policies
                .iter()
                .map(|p| PolicyStep::decode(p, digest_size))
                .collect::<Result<Vec<_>>>()
        };
        if key.auth_policy.is_empty() {
            return Ok(Some(KeyPolicy {
                signed: Vec::new(),
                steps: decode(&key.policy)?,
            }));
        }

        // Signed policies: `policy` starts with a PolicyAuthorize whose signature is empty;
        // it only names the authority, and the signed policies carry the signatures.
        let rest = match key.policy.split_first() {
            Some((first, rest)) if first.command_code == CC_POLICY_AUTHORIZE => rest,
            _ => {
                return Err(malformed_signed(
                    "`policy` does not start with TPM2_PolicyAuthorize",
                ))
            }
        };
        let signed = key
            .auth_policy
            .iter()
            .map(|auth| {
                let steps = decode(&auth.policy)?;
                match steps.last() {
                    Some(PolicyStep::Authorize { .. }) => Ok(SignedPolicy {
                        name: auth.name.clone(),
                        steps,
                    }),
                    _ => Err(malformed_signed(
                        "a policy in `authPolicy` does not end with TPM2_PolicyAuthorize",
                    )),
                }
            })
            .collect::<Result<_>>()?;
        Ok(Some(KeyPolicy {
            signed,
            steps: decode(rest)?,
        }))
    }

    /// Starts a policy session salted to `salt_key` for a key whose name algorithm is
    /// `name_alg`, and runs the policy in it: each signed policy in turn until one passes,
    /// then the key's own steps. The session is not continued: TPM2_Sign consumes it. On
    /// failure it is flushed here, and the first signed policy's error is returned (the
    /// draft asks writers to put the likeliest first).
    pub(crate) fn start(
        &self,
        tpm: &mut Tpm,
        salt_key: KeyHandle,
        name_alg: HashingAlgorithm,
    ) -> Result<PolicySession> {
        if self.signed.is_empty() {
            return self.attempt(tpm, salt_key, name_alg, &[]);
        }
        let mut first_error = None;
        for signed in &self.signed {
            match self.attempt(tpm, salt_key, name_alg, &signed.steps) {
                Ok(session) => return Ok(session),
                Err(e @ Error::ConnectionLost { .. }) => return Err(e),
                Err(e) => {
                    let name = signed.name.as_deref().unwrap_or("(unnamed)");
                    tracing::debug!(policy = name, "signed policy did not pass: {e}");
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or(Error::PolicyMismatch))
    }

    /// One try: a new session, the `signed` steps, then the key's own steps.
    fn attempt(
        &self,
        tpm: &mut Tpm,
        salt_key: KeyHandle,
        name_alg: HashingAlgorithm,
        signed: &[PolicyStep],
    ) -> Result<PolicySession> {
        let session = tpm
            .ctx
            .start_auth_session(
                Some(salt_key),
                None,
                None,
                SessionType::Policy,
                SymmetricDefinition::AES_128_CFB,
                name_alg,
            )
            .map_err(|e| Error::tss("starting a policy session", e))?
            .ok_or_else(|| Error::Unsupported("the TPM returned no session".into()))?;
        let policy = PolicySession::try_from(session)
            .map_err(|e| Error::tss("starting a policy session", e))?;
        let (attributes, mask) = SessionAttributesBuilder::new()
            .with_continue_session(false)
            .build();
        let mut result = tpm
            .ctx
            .tr_sess_set_attributes(session, attributes, mask)
            .map_err(|e| Error::tss("configuring the policy session", e));
        for step in signed.iter().chain(&self.steps) {
            if result.is_err() {
                break;
            }
            result = step.run(tpm, policy);
        }
        if result.is_err() {
            flush(&mut tpm.ctx, policy);
        }
        result.map(|()| policy)
    }
}

impl PolicyStep {
    /// Decodes one TPMPolicy. `digest_size` is the key's name-algorithm digest size, when
    /// known; openssl_tpm2_engine's PolicyPCR encoding needs it.
    pub fn decode(policy: &TpmPolicy, digest_size: Option<usize>) -> Result<Self> {
        match policy.command_code {
            CC_POLICY_AUTH_VALUE | CC_POLICY_PASSWORD if policy.command_policy.is_empty() => {
                Ok(PolicyStep::AuthValue)
            }
            CC_POLICY_AUTH_VALUE | CC_POLICY_PASSWORD => Err(Error::Unsupported(format!(
                "the key's policy has {} (command code {:#010x}) with {} bytes of parameters; \
                 the command takes none, so the key file is malformed",
                command_name(policy.command_code),
                policy.command_code,
                policy.command_policy.len()
            ))),
            CC_POLICY_PCR => decode_policy_pcr(&policy.command_policy, digest_size),
            CC_POLICY_AUTHORIZE => decode_policy_authorize(&policy.command_policy),
            other => Err(unsupported(other, "this policy command")),
        }
    }

    /// Runs the step in the policy session `policy`.
    fn run(&self, tpm: &mut Tpm, policy: PolicySession) -> Result<()> {
        match self {
            PolicyStep::Pcr { banks, digest } => {
                let selection = pcr_selection_list(banks)?;
                let digest = Digest::try_from(digest.clone())
                    .map_err(|e| Error::tss("reading the key's PCR policy", e))?;
                tpm.ctx
                    .execute_without_session(|ctx| ctx.policy_pcr(policy, digest, selection))
                    .map_err(pcr_failed)
            }
            PolicyStep::AuthValue => tpm
                .ctx
                .execute_without_session(|ctx| ctx.policy_auth_value(policy))
                .map_err(|e| Error::tss("running TPM2_PolicyAuthValue", e)),
            PolicyStep::Authorize {
                key_sign,
                policy_ref,
                signature,
            } => authorize(tpm, policy, key_sign, policy_ref, signature),
        }
    }
}

/// TPM2_PolicyAuthorize: takes the session's digest as approvedPolicy, checks the
/// authority's signature over H(approvedPolicy || policyRef) with TPM2_VerifySignature
/// (the authority's key loaded with TPM2_LoadExternal under the owner hierarchy, as a ticket
/// from the null hierarchy would not do), and hands the ticket to PolicyAuthorize.
fn authorize(
    tpm: &mut Tpm,
    policy: PolicySession,
    key_sign: &[u8],
    policy_ref: &[u8],
    signature: &[u8],
) -> Result<()> {
    let op = "running TPM2_PolicyAuthorize";
    let public = decode_public(key_sign)?;
    let signature = Signature::unmarshall(signature).map_err(|e| Error::tss(op, e))?;
    let approved = tpm
        .ctx
        .execute_without_session(|ctx| ctx.policy_get_digest(policy))
        .map_err(|e| Error::tss(op, e))?;
    let a_hash = authorization_hash(&signature, approved.value(), policy_ref)?;
    let authority = tpm
        .with_room(|ctx| {
            ctx.execute_without_session(|ctx| {
                ctx.load_external_public(public.clone(), Hierarchy::Owner)
            })
        })
        .map_err(|e| Error::tss(op, e))?;

    let ctx = &mut tpm.ctx;
    let result = ctx.tr_get_name(authority.into()).and_then(|name| {
        let ticket = ctx.execute_without_session(|ctx| {
            ctx.verify_signature(authority, a_hash, signature.clone())
        })?;
        let policy_ref = Nonce::try_from(policy_ref.to_vec())?;
        ctx.execute_without_session(|ctx| {
            ctx.policy_authorize(policy, approved.clone(), policy_ref, &name, ticket)
        })
    });
    let _ = ctx.flush_context(authority.into());
    result.map_err(|e| {
        use tss_esapi::constants::response_code::Tss2ResponseCodeKind;
        match crate::error::response_kind(e) {
            Some(Tss2ResponseCodeKind::Signature) => Error::PolicyFailed {
                command: "TPM2_PolicyAuthorize",
                reason: "the authority's signature is not over the policy this TPM's state \
                         produced",
            },
            _ => Error::tss(op, e),
        }
    })
}

/// aHash = H(approvedPolicy || policyRef), H being the signature's hash.
fn authorization_hash(signature: &Signature, approved: &[u8], policy_ref: &[u8]) -> Result<Digest> {
    let hash = match signature {
        Signature::RsaSsa(s) | Signature::RsaPss(s) => s.hashing_algorithm(),
        Signature::EcDsa(s) | Signature::EcDaa(s) | Signature::Sm2(s) | Signature::EcSchnorr(s) => {
            s.hashing_algorithm()
        }
        _ => HashingAlgorithm::Null,
    };
    let data = [approved, policy_ref].concat();
    let bytes = match hash {
        HashingAlgorithm::Sha256 => sha2::Sha256::digest(&data).to_vec(),
        HashingAlgorithm::Sha384 => sha2::Sha384::digest(&data).to_vec(),
        HashingAlgorithm::Sha512 => sha2::Sha512::digest(&data).to_vec(),
        other => {
            return Err(Error::Unsupported(format!(
                "the signed policy's signature uses {other:?}; TPM2_PolicyAuthorize \
                 (command code {CC_POLICY_AUTHORIZE:#010x}) is supported with SHA-256, \
                 SHA-384 and SHA-512 signatures"
            )))
        }
    };
    Digest::try_from(bytes).map_err(|e| Error::tss("running TPM2_PolicyAuthorize", e))
}

/// Decodes PolicyAuthorize's commandPolicy as the draft lays it out: TPM2B_PUBLIC keySign,
/// TPM2B_DIGEST policyRef, TPMT_SIGNATURE policySignature. The signature may be empty or
/// TPM_ALG_NULL in the `policy` of a key with signed policies; such a step is never run.
fn decode_policy_authorize(body: &[u8]) -> Result<PolicyStep> {
    let malformed = || {
        Error::Unsupported(format!(
            "the key's TPM2_PolicyAuthorize (command code {CC_POLICY_AUTHORIZE:#010x}) has \
             parameters that are not TPM2B_PUBLIC + TPM2B_DIGEST + TPMT_SIGNATURE ({} bytes); \
             the key file is malformed",
            body.len()
        ))
    };
    let mut r = Bytes(body);
    let key_size = usize::from(r.u16().ok_or_else(malformed)?);
    let key_body = r.take(key_size).ok_or_else(malformed)?;
    let key_sign = [&(key_size as u16).to_be_bytes()[..], key_body].concat();
    decode_public(&key_sign).map_err(|_| malformed())?;
    let ref_size = usize::from(r.u16().ok_or_else(malformed)?);
    let policy_ref = r.take(ref_size).ok_or_else(malformed)?.to_vec();
    let signature = r.0.to_vec();
    if signature.len() > 2 {
        Signature::unmarshall(&signature).map_err(|_| malformed())?;
    }
    Ok(PolicyStep::Authorize {
        key_sign,
        policy_ref,
        signature,
    })
}

/// The error for signed policies laid out other than the draft says.
fn malformed_signed(why: &str) -> Error {
    Error::Unsupported(format!(
        "the key's signed policies are malformed: {why} (key-file draft, \"Signed Policy \
         Specification\"); TPM2_PolicyAuthorize is command code {CC_POLICY_AUTHORIZE:#010x}"
    ))
}

/// Decodes PolicyPCR's commandPolicy. Two layouts exist in the wild:
/// - the draft's ("the fully marshalled, TPM ordered, command body"), used by GRUB and
///   systemd-style writers: TPM2B_DIGEST pcrDigest, then TPML_PCR_SELECTION pcrs;
/// - openssl_tpm2_engine's: TPML_PCR_SELECTION pcrs, then pcrDigest as bare bytes of the
///   key's name-algorithm digest size.
///
/// For well-formed input only one parses: the draft's starts with a 2-byte digest size,
/// which in the engine's layout is the high half of a bank count that must be 1 to 16.
fn decode_policy_pcr(body: &[u8], digest_size: Option<usize>) -> Result<PolicyStep> {
    if let Some(step) = draft_policy_pcr(body) {
        return Ok(step);
    }
    if let Some(step) = digest_size.and_then(|size| engine_policy_pcr(body, size)) {
        return Ok(step);
    }
    Err(Error::Unsupported(format!(
        "the key's TPM2_PolicyPCR (command code {CC_POLICY_PCR:#010x}) has parameters that \
         are neither TPM2B_DIGEST + TPML_PCR_SELECTION nor TPML_PCR_SELECTION + digest \
         ({} bytes); the key file is malformed",
        body.len()
    )))
}

fn draft_policy_pcr(body: &[u8]) -> Option<PolicyStep> {
    let mut r = Bytes(body);
    let size = usize::from(r.u16()?);
    let digest = r.take(size)?.to_vec();
    let banks = pcr_selection(&mut r)?;
    r.0.is_empty().then_some(PolicyStep::Pcr { banks, digest })
}

fn engine_policy_pcr(body: &[u8], digest_size: usize) -> Option<PolicyStep> {
    let mut r = Bytes(body);
    let banks = pcr_selection(&mut r)?;
    if banks.is_empty() || r.0.len() != digest_size {
        return None;
    }
    Some(PolicyStep::Pcr {
        banks,
        digest: r.0.to_vec(),
    })
}

/// Reads a TPML_PCR_SELECTION (TPM 2.0 Part 2, 10.9.7): a u32 count, then per bank a
/// TPMI_ALG_HASH, a u8 sizeofSelect and that many bitmap bytes.
fn pcr_selection(r: &mut Bytes<'_>) -> Option<Vec<PcrBank>> {
    let count = usize::try_from(r.u32()?).ok()?;
    if count > MAX_PCR_BANKS {
        return None;
    }
    let mut banks = Vec::with_capacity(count);
    for _ in 0..count {
        let hash = r.u16()?;
        let size = usize::from(r.u8()?);
        if size == 0 || size > MAX_PCR_SELECT {
            return None;
        }
        banks.push(PcrBank {
            hash,
            select: r.take(size)?.to_vec(),
        });
    }
    Some(banks)
}

/// The banks as tss-esapi's list, through the ESYS structure it converts from.
fn pcr_selection_list(banks: &[PcrBank]) -> Result<PcrSelectionList> {
    let mut list = TPML_PCR_SELECTION {
        count: banks.len() as u32,
        ..Default::default()
    };
    for (slot, bank) in list.pcrSelections.iter_mut().zip(banks) {
        let mut select = [0u8; MAX_PCR_SELECT];
        select[..bank.select.len()].copy_from_slice(&bank.select);
        *slot = TPMS_PCR_SELECTION {
            hash: bank.hash,
            sizeofSelect: bank.select.len() as u8,
            pcrSelect: select,
        };
    }
    PcrSelectionList::try_from(list).map_err(|_| {
        Error::Unsupported(format!(
            "the key's TPM2_PolicyPCR (command code {CC_POLICY_PCR:#010x}) selects PCR \
             banks this TPM stack does not know"
        ))
    })
}

/// TPM2_PolicyPCR failed: TPM_RC_VALUE means the PCRs differ from the policy's digest.
fn pcr_failed(error: tss_esapi::Error) -> Error {
    use tss_esapi::constants::response_code::Tss2ResponseCodeKind;
    match crate::error::response_kind(error) {
        Some(Tss2ResponseCodeKind::Value) => Error::PolicyFailed {
            command: "TPM2_PolicyPCR",
            reason: "the selected PCRs no longer hold the values the key was bound to",
        },
        _ => Error::tss("running TPM2_PolicyPCR", error),
    }
}

/// Flushes a policy session that will not be used.
pub(crate) fn flush(ctx: &mut Context, session: PolicySession) {
    let handle = SessionHandle::from(session);
    let _ = ctx.flush_context(ObjectHandle::from(handle));
}

/// Forgets a policy session the TPM has already flushed (a command without
/// continueSession consumed it); no TPM command is sent.
pub(crate) fn forget(ctx: &mut Context, session: PolicySession) {
    let mut handle = ObjectHandle::from(SessionHandle::from(session));
    let _ = ctx.tr_close(&mut handle);
}

/// Digest size of a name algorithm, in bytes.
fn digest_size(alg: HashingAlgorithm) -> Option<usize> {
    match alg {
        HashingAlgorithm::Sha1 => Some(20),
        HashingAlgorithm::Sha256 | HashingAlgorithm::Sm3_256 | HashingAlgorithm::Sha3_256 => {
            Some(32)
        }
        HashingAlgorithm::Sha384 | HashingAlgorithm::Sha3_384 => Some(48),
        HashingAlgorithm::Sha512 | HashingAlgorithm::Sha3_512 => Some(64),
        _ => None,
    }
}

fn unsupported(code: u32, what: &str) -> Error {
    Error::UnsupportedPolicy {
        code,
        name: command_name(code),
        what: what.to_owned(),
    }
}

/// The name of a policy command code (TPM 2.0 Part 2, 6.5.2), for messages.
pub fn command_name(code: u32) -> &'static str {
    match code {
        0x0000_0153 => "TPM2_PolicyNV",
        0x0000_0160 => "TPM2_PolicySigned",
        0x0000_0161 => "TPM2_PolicySecret",
        0x0000_016A => "TPM2_PolicyAuthorize",
        0x0000_016B => "TPM2_PolicyAuthValue",
        0x0000_016C => "TPM2_PolicyCommandCode",
        0x0000_016D => "TPM2_PolicyCounterTimer",
        0x0000_016E => "TPM2_PolicyCpHash",
        0x0000_016F => "TPM2_PolicyLocality",
        0x0000_0170 => "TPM2_PolicyNameHash",
        0x0000_0171 => "TPM2_PolicyOR",
        0x0000_0172 => "TPM2_PolicyTicket",
        0x0000_017F => "TPM2_PolicyPCR",
        0x0000_0187 => "TPM2_PolicyPhysicalPresence",
        0x0000_0188 => "TPM2_PolicyDuplicationSelect",
        0x0000_018C => "TPM2_PolicyPassword",
        0x0000_018F => "TPM2_PolicyNvWritten",
        0x0000_0190 => "TPM2_PolicyTemplate",
        0x0000_0192 => "TPM2_PolicyAuthorizeNV",
        _ => "an unknown command",
    }
}

/// A cursor over big-endian TPM marshalling.
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Refines the error of a TPM2_Sign that failed: an empty authorization tried on a `noDA`
/// key ([`PinNeed::TryEmptyFirst`]) that the TPM refused means "ask for the PIN", and a
/// policy session the TPM rejected says so.
pub(crate) fn sign_error(key: &TpmKey, pin: &crate::Pin, error: Error) -> Error {
    use tss_esapi::constants::response_code::Tss2ResponseCodeKind;
    match error {
        Error::WrongPin { .. } if pin.is_empty() && !key.empty_auth => Error::PinRequired,
        Error::Tss { source, .. }
            if crate::error::response_kind(source) == Some(Tss2ResponseCodeKind::PolicyFail) =>
        {
            Error::PolicyMismatch
        }
        other => other,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn vector(name: &str) -> TpmKey {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../keyfile/tests/fixtures/interop"
        );
        let bytes = std::fs::read(format!("{dir}/{name}.tpm")).unwrap();
        TpmKey::from_bytes(&bytes).unwrap()
    }

    fn policy(command_code: u32, command_policy: &[u8]) -> TpmPolicy {
        TpmPolicy {
            command_code,
            command_policy: command_policy.to_vec(),
        }
    }

    /// sha256 bank, PCR 16 selected.
    const PCRS: [u8; 10] = [0, 0, 0, 1, 0x00, 0x0B, 3, 0x00, 0x00, 0x01];

    fn pcr16() -> Vec<PcrBank> {
        vec![PcrBank {
            hash: 0x000B,
            select: vec![0, 0, 1],
        }]
    }

    #[test]
    fn policy_pcr_reads_the_drafts_and_the_engines_layout() {
        let digest = [0xAB; 32];
        let draft = [&[0x00, 0x20][..], &digest, &PCRS].concat();
        let engine = [&PCRS[..], &digest].concat();
        let expected = PolicyStep::Pcr {
            banks: pcr16(),
            digest: digest.to_vec(),
        };
        for body in [draft, engine] {
            let step = PolicyStep::decode(&policy(CC_POLICY_PCR, &body), Some(32)).unwrap();
            assert_eq!(step, expected, "{body:02X?}");
        }

        // An empty pcrDigest (the TPM takes the current PCRs) exists only in the draft's.
        let empty = [&[0x00, 0x00][..], &PCRS].concat();
        let step = PolicyStep::decode(&policy(CC_POLICY_PCR, &empty), Some(32)).unwrap();
        assert_eq!(
            step,
            PolicyStep::Pcr {
                banks: pcr16(),
                digest: vec![]
            }
        );
    }

    #[test]
    fn malformed_policy_pcr_is_refused_with_its_command_code() {
        let digest = [0xAB; 32];
        let cases: [Vec<u8>; 4] = [
            vec![],
            [&PCRS[..], &digest[..31]].concat(), // engine layout, digest one byte short
            [&[0x00, 0x20][..], &digest, &PCRS, &[0]].concat(), // a trailing byte
            [&[0, 0, 0, 17][..], &digest].concat(), // 17 banks
        ];
        for body in cases {
            let err = PolicyStep::decode(&policy(CC_POLICY_PCR, &body), Some(32)).unwrap_err();
            assert!(err.to_string().contains("0x0000017f"), "{err}");
        }
    }

    #[test]
    fn auth_value_and_password_run_as_policy_auth_value() {
        for code in [CC_POLICY_AUTH_VALUE, CC_POLICY_PASSWORD] {
            let step = PolicyStep::decode(&policy(code, &[]), None).unwrap();
            assert_eq!(step, PolicyStep::AuthValue);
            let err = PolicyStep::decode(&policy(code, &[1]), None).unwrap_err();
            assert!(err.to_string().contains("takes none"), "{err}");
        }
    }

    #[test]
    fn unknown_commands_and_signed_policies_are_named() {
        let err = PolicyStep::decode(&policy(0x16F, &[1]), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the key's policy uses TPM2_PolicyLocality (command code 0x0000016f): this \
             policy command is not supported, so the key cannot be used here"
        );
        let err = PolicyStep::decode(&policy(0x1234, &[]), None).unwrap_err();
        assert!(err
            .to_string()
            .contains("an unknown command (command code 0x00001234)"));

        let err = KeyPolicy::of_key(&vector("refused-authpolicy")).unwrap_err();
        assert!(
            err.to_string().contains(
                "TPM2_PolicyAuthorize (command code 0x0000016a) has parameters that are not \
                 TPM2B_PUBLIC + TPM2B_DIGEST + TPMT_SIGNATURE"
            ),
            "{err}"
        );
    }

    #[test]
    fn vectors_decode_to_their_steps() {
        assert_eq!(KeyPolicy::of_key(&vector("ossl-p256-owner")).unwrap(), None);
        let engine = KeyPolicy::of_key(&vector("engine-p256-rsaparent-pcr-auth"))
            .unwrap()
            .unwrap();
        assert!(matches!(
            engine.steps[..],
            [PolicyStep::Pcr { .. }, PolicyStep::AuthValue]
        ));
        let draft = KeyPolicy::of_key(&vector("draft-p384-owner-pcr"))
            .unwrap()
            .unwrap();
        assert_eq!(
            engine.steps[0], draft.steps[0],
            "both layouts, one PolicyPCR"
        );

        // Signed: policy [0] (PolicyAuthorize with a TPM_ALG_NULL signature) only names the
        // authority; the one signed policy is PolicyPCR, then the signed PolicyAuthorize.
        let signed = KeyPolicy::of_key(&vector("signed-p256-owner-authpolicy"))
            .unwrap()
            .unwrap();
        assert!(signed.steps.is_empty());
        assert_eq!(signed.signed.len(), 1);
        assert_eq!(signed.signed[0].name.as_deref(), Some("pcr16 at start-up"));
        assert_eq!(signed.signed[0].steps[0], draft.steps[0]);
        let PolicyStep::Authorize { signature, .. } = &signed.signed[0].steps[1] else {
            panic!("the signed policy ends with PolicyAuthorize");
        };
        assert_eq!(
            signature[..4],
            [0x00, 0x14, 0x00, 0x0B],
            "RSASSA with SHA-256"
        );
    }

    #[test]
    fn signed_policies_must_be_laid_out_as_the_draft_says() {
        // authPolicy, but policy does not start with PolicyAuthorize.
        let mut key = vector("signed-p256-owner-authpolicy");
        key.policy.clear();
        let err = KeyPolicy::of_key(&key).unwrap_err();
        assert!(err
            .to_string()
            .contains("does not start with TPM2_PolicyAuthorize"));

        // A signed policy that does not end with PolicyAuthorize.
        let mut key = vector("signed-p256-owner-authpolicy");
        key.auth_policy[0].policy.pop();
        let err = KeyPolicy::of_key(&key).unwrap_err();
        assert!(err
            .to_string()
            .contains("does not end with TPM2_PolicyAuthorize"));
    }

    #[test]
    fn pin_need_follows_empty_auth_policy_and_no_da() {
        assert_eq!(pin_need(&vector("ossl-p256-owner")), PinNeed::None);
        assert_eq!(pin_need(&vector("ossl-p256-owner-auth")), PinNeed::Required);
        // tpm2_encodeobject without -p: FALSE; the DA key must not get an empty try.
        assert_eq!(
            pin_need(&vector("tools-p256-persistent")),
            PinNeed::Required
        );
        assert_eq!(
            pin_need(&vector("tools-p256-persistent-noda")),
            PinNeed::TryEmptyFirst
        );
        // A policy without PolicyAuthValue never checks the PIN, whatever emptyAuth says.
        let mut pcr_only = vector("draft-p384-owner-pcr");
        pcr_only.empty_auth = false;
        assert_eq!(pin_need(&pcr_only), PinNeed::None);
        assert_eq!(
            pin_need(&vector("engine-p256-rsaparent-pcr-auth")),
            PinNeed::Required
        );
        // PolicyAuthValue inside a signed policy counts too.
        let mut signed = vector("signed-p256-owner-authpolicy");
        signed.empty_auth = false;
        assert_eq!(pin_need(&signed), PinNeed::None);
        signed.auth_policy[0]
            .policy
            .insert(0, policy(CC_POLICY_AUTH_VALUE, &[]));
        assert_eq!(pin_need(&signed), PinNeed::TryEmptyFirst, "the key is noDA");
    }
}
