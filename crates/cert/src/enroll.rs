//! Enrolment, once per device (docs/protocol.md, "Enrolment"): the EK certificate from NV,
//! the attestation key, `POST /v1/enroll`, TPM2_ActivateCredential on the CA's challenge,
//! `POST /v1/enroll/activate`, and the record of it in [`crate::state`].
//!
//! [`enroll`] runs the whole flow; [`choose_ek`], [`request`] and [`activate`] are its
//! steps, for callers that drive it one request at a time.

use std::path::Path;

use ssh_tpm_attest::b64;
use ssh_tpm_attest::ekcert::EkCertificate;
use ssh_tpm_attest::protocol::{
    ActivateRequest, ActivateResponse, EnrollChallenge, EnrollRequest, SessionResponse,
};
use ssh_tpm_attest::tpm::Public;
use ssh_tpm_tpm::{AkTemplate, EkKind, Tpm};

use crate::certfile::now;
use crate::client::CaClient;
use crate::error::{Error, Result};
use crate::login::{self, IdToken, LoginOptions};
use crate::state::{self, Enrolment};

/// Which EK certificates may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EkFamily {
    /// RSA 2048 only.
    Rsa,
    /// ECC only: NIST P-384, else P-256.
    Ecc,
}

/// Choices of an enrolment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnrollOptions {
    /// Which EK family; `None` prefers RSA 2048, then P-384, then P-256.
    pub ek: Option<EkFamily>,
    /// The attestation key (tests use a variant to enrol a second AK).
    pub ak: AkTemplate,
}

impl Default for EnrollOptions {
    fn default() -> Self {
        EnrollOptions {
            ek: None,
            ak: AkTemplate::Standard,
        }
    }
}

/// The EK chosen for enrolment, with its certificate.
#[derive(Debug, Clone)]
pub struct ChosenEk {
    /// Its kind (template and NV index).
    pub kind: EkKind,
    /// Its certificate.
    pub certificate: EkCertificate,
}

impl ChosenEk {
    /// The device id the CA will compute from the certificate.
    pub fn device_id(&self) -> String {
        self.certificate.device_id()
    }
}

/// The EK kinds tried for `family`, in order of preference.
fn preference(family: Option<EkFamily>) -> &'static [EkKind] {
    match family {
        None => &[EkKind::Rsa2048, EkKind::EccP384, EkKind::EccP256],
        Some(EkFamily::Rsa) => &[EkKind::Rsa2048],
        Some(EkFamily::Ecc) => &[EkKind::EccP384, EkKind::EccP256],
    }
}

/// Reads the TPM's EK certificates and picks one (RSA 2048 first unless `family` says
/// otherwise), after checking that the TPM makes the EK the certificate names: the CA
/// encrypts its challenge to the certificate's key, so a mismatch would fail later, less
/// clearly.
pub fn choose_ek(tpm: &mut Tpm, family: Option<EkFamily>) -> Result<ChosenEk> {
    let certificates = tpm.ek_certificates()?;
    let wanted = preference(family);
    let found = wanted
        .iter()
        .find_map(|kind| certificates.iter().find(|(k, _)| k == kind));
    let Some((kind, der)) = found else {
        let have: Vec<&str> = certificates.iter().map(|(k, _)| k.describe()).collect();
        return Err(Error::Usage(match (have.is_empty(), family) {
            (true, _) => "this TPM holds no EK certificate in NV, so the CA cannot tell it is a \
                          real TPM; ask your administrator (some TPMs need the certificate \
                          provisioned from the vendor)"
                .into(),
            (false, _) => format!(
                "this TPM has no EK certificate of that kind (it has {}); choose another with --ek",
                have.join(", ")
            ),
        }));
    };
    let certificate = EkCertificate::from_der(der).map_err(|e| {
        Error::Usage(format!(
            "the TPM's {} EK certificate does not parse: {e}",
            kind.describe()
        ))
    })?;
    let ek_spki = tpm.ek_public_key_der(*kind)?;
    if ek_spki != certificate.spki_der() {
        return Err(Error::Usage(format!(
            "the TPM's {} EK (template {}) is not the key its certificate names, so the CA's \
             challenge could not be answered; try the other kind with --ek",
            kind.describe(),
            kind.template_name()
        )));
    }
    Ok(ChosenEk {
        kind: *kind,
        certificate,
    })
}

/// The `POST /v1/enroll` body: the EK certificate and the public area of the AK `ak`.
pub fn request(
    tpm: &mut Tpm,
    ek: &ChosenEk,
    ak: AkTemplate,
    session: &SessionResponse,
    token: &IdToken,
) -> Result<EnrollRequest> {
    let ak_public = tpm.attestation_key_public(ak)?;
    Ok(EnrollRequest {
        session_id: session.session_id.clone(),
        id_token: token.as_str().to_string(),
        ek_cert: b64::encode(ek.certificate.der()),
        ak_public: b64::encode(&ak_public),
    })
}

/// Answers the CA's challenge: TPM2_ActivateCredential with the EK and the AK, and the
/// `POST /v1/enroll/activate` body carrying the secret.
pub fn activate(
    tpm: &mut Tpm,
    ek: &ChosenEk,
    ak: AkTemplate,
    challenge: &EnrollChallenge,
) -> Result<ActivateRequest> {
    let blob = b64::decode(&challenge.credential_blob).map_err(|e| bad_challenge(&e))?;
    let secret = b64::decode(&challenge.encrypted_secret).map_err(|e| bad_challenge(&e))?;
    let opened = tpm.activate_credential(ek.kind, ak, &blob, &secret)?;
    Ok(ActivateRequest {
        challenge_id: challenge.challenge_id.clone(),
        secret: b64::encode(&opened),
    })
}

fn bad_challenge(e: &ssh_tpm_attest::Error) -> Error {
    Error::BadAnswer {
        what: "the CA".into(),
        reason: format!("its enrolment challenge does not decode: {e}"),
    }
}

/// Checks the CA's confirmation against what this side computes: the device id from the
/// EK certificate and the AK's name.
pub fn check_confirmation(
    tpm: &mut Tpm,
    ek: &ChosenEk,
    ak: AkTemplate,
    answer: &ActivateResponse,
) -> Result<()> {
    let device_id = ek.device_id();
    if answer.device_id != device_id {
        return Err(Error::BadAnswer {
            what: "the CA".into(),
            reason: format!(
                "it enrolled device {} but this TPM is device {device_id}",
                answer.device_id
            ),
        });
    }
    let ak_public = tpm.attestation_key_public(ak)?;
    let name = Public::decode(&ak_public)?.name();
    if b64::decode(&answer.ak_name).ok().as_deref() != Some(&name[..]) {
        return Err(Error::BadAnswer {
            what: "the CA".into(),
            reason: "it pinned another attestation key than this TPM's".into(),
        });
    }
    Ok(())
}

/// The whole enrolment: session, login, EK and AK, challenge, activation. Writes the
/// record to `state_path` and returns it.
pub fn enroll(
    tpm: &mut Tpm,
    ca: &CaClient,
    login_options: &LoginOptions,
    options: &EnrollOptions,
    state_path: &Path,
) -> Result<Enrolment> {
    // The record's place and the TPM first: no point logging in when either would fail.
    state::check_writable(state_path)?;
    let ek = choose_ek(tpm, options.ek)?;
    let info = ca.info()?;
    let session = ca.session()?;
    let token = login::authorize(&info, &session.oidc_nonce, login_options)?;

    let challenge = ca.enroll(&request(tpm, &ek, options.ak, &session, &token)?)?;
    let answer = ca.activate(&activate(tpm, &ek, options.ak, &challenge)?)?;
    check_confirmation(tpm, &ek, options.ak, &answer)?;

    let enrolment = Enrolment {
        ca_url: ca.url().to_string(),
        device_id: answer.device_id,
        ek: state::ek_name(ek.kind).to_string(),
        enrolled_at: now(),
    };
    state::save(state_path, &enrolment)?;
    Ok(enrolment)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsa_is_preferred_then_the_larger_curve() {
        assert_eq!(preference(None)[0], EkKind::Rsa2048);
        assert_eq!(
            preference(Some(EkFamily::Ecc)),
            &[EkKind::EccP384, EkKind::EccP256]
        );
        assert_eq!(preference(Some(EkFamily::Rsa)), &[EkKind::Rsa2048]);
    }
}
