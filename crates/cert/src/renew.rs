//! Certificate renewal (docs/protocol.md, "Certificates"): TPM2_Certify of the SSH key and
//! TPM2_Quote of the boot PCRs, both by the AK over the session's qualifying data, sent
//! with the ID token to `POST /v1/certificates`; the answer is written as `NAME-cert.pub`
//! and handed to the agent.
//!
//! [`request`] builds the request body from a session and a token; [`plan`] reads and checks
//! a key and decides whether it is due; [`renew_due`] renews it; [`renew`] does both.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ssh_key::public::KeyData;
use ssh_key::{Certificate, PublicKey};
use ssh_tpm_attest::b64;
use ssh_tpm_attest::derive::qualifying_data;
use ssh_tpm_attest::protocol::{
    CertificateRequest, CertificateResponse, Evidence, QuoteEvidence, SessionResponse,
};
use ssh_tpm_attest::tpm::Public;
use ssh_tpm_keyfile::TpmKey;
use ssh_tpm_tpm::{pin_need, AkTemplate, EkKind, Pin, PinNeed, Tpm};

use crate::agent::{self, Handover};
use crate::certfile::{self, now};
use crate::client::CaClient;
use crate::error::{Error, Result};
use crate::login::{self, IdToken, LoginOptions};
use crate::state::Enrolment;

/// The PCRs quoted: SHA-256 bank, 0–7 (firmware, boot loader, Secure Boot state).
pub const BOOT_PCRS: [u8; 8] = [0, 1, 2, 3, 4, 5, 6, 7];

/// The key's `TPMT_PUBLIC` (the file holds it as a `TPM2B_PUBLIC`, with its size).
pub fn key_public_area(key: &TpmKey) -> Result<&[u8]> {
    let bytes = &key.pubkey;
    let size = bytes
        .get(..2)
        .map(|s| usize::from(u16::from_be_bytes([s[0], s[1]])));
    match size {
        Some(size) if size + 2 == bytes.len() && size > 0 => Ok(&bytes[2..]),
        _ => Err(Error::Usage(
            "the key file's public area is malformed; is it a TPM key file?".into(),
        )),
    }
}

/// The key's SSH public key, read from its TPM public area.
pub fn ssh_key_data(key: &TpmKey) -> Result<KeyData> {
    let public = ssh_tpm_tpm::decode_public(&key.pubkey)?;
    Ok(ssh_tpm_tpm::ssh_public_key(&public)?)
}

/// The `POST /v1/certificates` body for `key`: certified and quoted by the standard AK
/// over the qualifying data of `session`, with the ID token and `device_id`.
pub fn request(
    tpm: &mut Tpm,
    key: &TpmKey,
    pin: &Pin,
    session: &SessionResponse,
    token: &IdToken,
    device_id: &str,
) -> Result<CertificateRequest> {
    request_with(
        tpm,
        key,
        pin,
        session,
        token,
        device_id,
        AkTemplate::Standard,
        &BOOT_PCRS,
    )
}

/// [`request`] with the AK and the PCRs chosen (tests provoke refusals with others).
#[allow(clippy::too_many_arguments)]
pub fn request_with(
    tpm: &mut Tpm,
    key: &TpmKey,
    pin: &Pin,
    session: &SessionResponse,
    token: &IdToken,
    device_id: &str,
    ak: AkTemplate,
    pcrs: &[u8],
) -> Result<CertificateRequest> {
    let key_public = key_public_area(key)?;
    let comment = key.description.clone().unwrap_or_default();
    let ssh_key = PublicKey::new(ssh_key_data(key)?, comment);
    let blob = ssh_key
        .to_bytes()
        .map_err(|e| Error::Usage(format!("cannot encode the SSH key: {e}")))?;
    let nonce = b64::decode(&session.nonce).map_err(|e| Error::BadAnswer {
        what: "the CA".into(),
        reason: format!("its session nonce does not decode: {e}"),
    })?;
    let data = qualifying_data(&session.session_id, &nonce, &blob);

    let certify = tpm.certify_key(key, pin, ak, &data)?;
    let quote = tpm.quote(ak, &data, pcrs)?;

    let values = quote
        .pcrs
        .iter()
        .map(|(index, value)| (index.to_string(), hex(value)))
        .collect();
    Ok(CertificateRequest {
        session_id: session.session_id.clone(),
        id_token: token.as_str().to_string(),
        device_id: device_id.to_string(),
        ssh_public_key: ssh_key
            .to_openssh()
            .map_err(|e| Error::Usage(format!("cannot encode the SSH key: {e}")))?,
        key_public: b64::encode(key_public),
        certify: Evidence {
            attest: b64::encode(&certify.attest),
            signature: b64::encode(&certify.signature),
        },
        quote: QuoteEvidence {
            attest: b64::encode(&quote.attestation.attest),
            signature: b64::encode(&quote.attestation.signature),
            pcrs: BTreeMap::from([("sha256".to_string(), values)]),
        },
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The device id of this TPM's EK certificate of `kind`, to check it is the enrolled one.
pub fn current_device_id(tpm: &mut Tpm, kind: EkKind) -> Result<String> {
    let certificates = tpm.ek_certificates()?;
    let (_, der) = certificates
        .iter()
        .find(|(k, _)| *k == kind)
        .ok_or_else(|| {
            Error::Usage(format!(
                "this TPM has no {} EK certificate, unlike the enrolled one; run `ssh-tpm-cert \
                 enroll` again",
                kind.describe()
            ))
        })?;
    Ok(ssh_tpm_attest::ekcert::EkCertificate::from_der(der)?.device_id())
}

/// How a renewal goes.
#[derive(Debug, Clone)]
pub struct RenewOptions {
    /// Renew even when the certificate has time left.
    pub force: bool,
    /// Hand the new certificate to the agent at `SSH_TPM_AUTH_SOCK`/`SSH_AUTH_SOCK`.
    pub hand_to_agent: bool,
    /// The login.
    pub login: LoginOptions,
}

impl Default for RenewOptions {
    fn default() -> Self {
        RenewOptions {
            force: false,
            hand_to_agent: true,
            login: LoginOptions::default(),
        }
    }
}

/// What a renewal did.
#[derive(Debug)]
pub enum Outcome {
    /// The certificate had more than a third of its life left; nothing was asked.
    StillGood {
        /// The certificate file.
        path: PathBuf,
        /// Until when it is valid, Unix seconds.
        valid_before: u64,
    },
    /// A new certificate was written.
    Renewed {
        /// The certificate file.
        path: PathBuf,
        /// Why it was renewed.
        reason: String,
        /// The new certificate.
        certificate: Box<Certificate>,
        /// The CA's answer.
        response: CertificateResponse,
        /// Who logged in.
        user: String,
        /// What the agent made of it; `None` when not asked.
        handover: Option<Handover>,
    },
}

/// A key whose certificate is to be renewed, read from its file and checked: what
/// [`renew_due`] needs.
#[derive(Debug)]
pub struct DueKey {
    /// The key file, `NAME.tpm`.
    pub key_path: PathBuf,
    /// Its contents.
    pub key: TpmKey,
    /// Its SSH public key.
    pub key_data: KeyData,
    /// The certificate file, `NAME-cert.pub`.
    pub cert_path: PathBuf,
    /// Why it is renewed, in words.
    pub reason: String,
}

/// What [`plan`] found.
#[derive(Debug)]
pub enum Plan {
    /// Nothing to do: [`Outcome::StillGood`].
    StillGood(Outcome),
    /// The certificate is due (or `--force`): renew with [`renew_due`].
    Due(Box<DueKey>),
}

/// Reads the key file `key_path` and its certificate, and decides whether to renew:
/// when the certificate is missing, for another key, or has less than a third of its life
/// left (or `force`). A key that is due is checked first, so that nothing is asked of the
/// CA or the user for a key the CA would refuse: it must parse, and be born in the TPM
/// and unable to leave it (sensitiveDataOrigin, fixedTPM, fixedParent).
pub fn plan(key_path: &Path, force: bool) -> Result<Plan> {
    let key_path = certfile::key_path(key_path);
    let key = read_key(&key_path)?;
    let key_data = ssh_key_data(&key).map_err(|e| {
        Error::Usage(format!(
            "{}: the key's public area does not decode ({e}); is it a key file made by \
             ssh-tpm-keygen?",
            key_path.display()
        ))
    })?;
    let cert_path = certfile::cert_path(&key_path);

    let reason = match certfile::renewal_reason(&cert_path, &key_data, now()) {
        Some(reason) => reason,
        None if force => "of --force".to_string(),
        None => {
            let valid_before = certfile::read(&cert_path)?
                .map(|c| c.valid_before())
                .unwrap_or_default();
            return Ok(Plan::StillGood(Outcome::StillGood {
                path: cert_path,
                valid_before,
            }));
        }
    };
    check_born_in_tpm(&key_path, &key)?;
    Ok(Plan::Due(Box::new(DueKey {
        key_path,
        key,
        key_data,
        cert_path,
        reason,
    })))
}

/// Refuses, naming the file, a key the CA would refuse with `key_not_tpm_generated`.
pub fn check_born_in_tpm(key_path: &Path, key: &TpmKey) -> Result<()> {
    let area =
        key_public_area(key).map_err(|e| Error::Usage(format!("{}: {e}", key_path.display())))?;
    let public = Public::decode(area).map_err(|e| {
        Error::Usage(format!(
            "{}: the key's public area does not decode ({}); is it a key file made by \
             ssh-tpm-keygen?",
            key_path.display(),
            e.reason()
        ))
    })?;
    let attributes = public.attributes;
    if !attributes.sensitive_data_origin() {
        return Err(Error::Usage(format!(
            "{} was imported into the TPM, not created in it (sensitiveDataOrigin is clear); \
             the CA certifies only keys born in the TPM: make one with ssh-tpm-keygen",
            key_path.display()
        )));
    }
    if !attributes.fixed_tpm() || !attributes.fixed_parent() {
        return Err(Error::Usage(format!(
            "{} can be duplicated out of the TPM (fixedTPM or fixedParent is clear); the CA \
             certifies only keys that cannot leave the TPM: make one with ssh-tpm-keygen",
            key_path.display()
        )));
    }
    Ok(())
}

/// Renews the certificate of the key file `key_path` when [`plan`] says it is due. `pin`
/// is asked only when a renewal happens and the key needs one. The old certificate stays
/// in place unless a new one arrived whole.
pub fn renew(
    tpm: &mut Tpm,
    ca: &CaClient,
    enrolment: &Enrolment,
    key_path: &Path,
    pin: &mut dyn FnMut() -> Result<Pin>,
    options: &RenewOptions,
) -> Result<Outcome> {
    match plan(key_path, options.force)? {
        Plan::StillGood(outcome) => Ok(outcome),
        Plan::Due(due) => renew_due(tpm, ca, enrolment, &due, pin, options),
    }
}

/// Renews the certificate of `due`. Everything that can fail on this side comes before the
/// login: the TPM must be the enrolled device, the PIN right, and the TPM must load and
/// certify the key (over the CA session's data, made before the login). Each call logs in
/// once: the ID token's nonce is bound to the CA session, and a session serves one
/// certificate.
pub fn renew_due(
    tpm: &mut Tpm,
    ca: &CaClient,
    enrolment: &Enrolment,
    due: &DueKey,
    pin: &mut dyn FnMut() -> Result<Pin>,
    options: &RenewOptions,
) -> Result<Outcome> {
    let key = &due.key;
    let device_id = current_device_id(tpm, enrolment.ek_kind()?)?;
    if device_id != enrolment.device_id {
        return Err(Error::Usage(format!(
            "this TPM is device {device_id}, not the enrolled {}; run `ssh-tpm-cert enroll` \
             again",
            enrolment.device_id
        )));
    }
    let first_pin = match pin_need(key) {
        PinNeed::None | PinNeed::TryEmptyFirst => Pin::empty(),
        PinNeed::Required => pin()?,
    };

    // The evidence does not cover the token, which is filled in after the login.
    let info = ca.info()?;
    let session = ca.session()?;
    let no_token = IdToken::from_raw(String::new());
    let mut body = match request(tpm, key, &first_pin, &session, &no_token, &device_id) {
        // A noDA key whose file says it has a PIN: the empty one was refused, so ask.
        Err(Error::Tpm(ssh_tpm_tpm::Error::WrongPin { .. }))
            if pin_need(key) == PinNeed::TryEmptyFirst =>
        {
            request(tpm, key, &pin()?, &session, &no_token, &device_id)?
        }
        other => other?,
    };

    let token = login::authorize(&info, &session.oidc_nonce, &options.login)?;
    body.id_token = token.as_str().to_string();
    let response = ca.certificate(&body)?;

    check_issuer(&response, &info.ca_public_key)?;
    let certificate = certfile::install(&due.cert_path, &response.certificate, &due.key_data)?;
    let handover = options
        .hand_to_agent
        .then(|| agent::hand_over(&due.key_path, key, &response.certificate));
    Ok(Outcome::Renewed {
        path: due.cert_path.clone(),
        reason: due.reason.clone(),
        certificate: Box::new(certificate),
        response,
        user: token.who().to_string(),
        handover,
    })
}

/// Refuses a certificate not signed by the key the CA publishes in `/v1/info`.
fn check_issuer(response: &CertificateResponse, ca_public_key: &str) -> Result<()> {
    let bad = |reason: String| Error::BadAnswer {
        what: "the CA".into(),
        reason,
    };
    let cert = certfile::parse(&response.certificate)
        .map_err(|e| bad(format!("the certificate does not parse: {e}")))?;
    let ca_key = PublicKey::from_openssh(ca_public_key.trim())
        .map_err(|e| bad(format!("its public key in /v1/info does not parse: {e}")))?;
    if cert.signature_key() != ca_key.key_data() {
        return Err(bad(
            "the certificate is signed by another key than the CA's; the old one was kept".into(),
        ));
    }
    Ok(())
}

/// Reads a TPM key file.
pub fn read_key(path: &Path) -> Result<TpmKey> {
    let bytes =
        std::fs::read(path).map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
    TpmKey::from_bytes(&bytes).map_err(|e| Error::Usage(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_areas_lose_their_size_only_when_it_fits() {
        let mut key = TpmKey::new_loadable(0x8100_0001, vec![0, 3, 1, 2, 3], vec![0, 0], true);
        assert_eq!(key_public_area(&key).expect("fits"), &[1, 2, 3]);
        key.pubkey = vec![0, 4, 1, 2, 3];
        assert!(key_public_area(&key).is_err());
        key.pubkey = vec![0];
        assert!(key_public_area(&key).is_err());
    }

    #[test]
    fn pcr_values_are_lowercase_hex() {
        assert_eq!(hex(&[0x00, 0xab, 0x0f]), "00ab0f");
    }
}
