//! TPM2_ActivateCredential (TPM 2.0 Part 3, 12.5) with the AK as the object and the EK as
//! the key: the TPM opens the credential only if it holds the EK it was made for and the AK
//! has the name it was made for.
//!
//! The EK refuses plain authorization (adminWithPolicy): it is used in a policy session that
//! runs TPM2_PolicySecret(TPM_RH_ENDORSEMENT) (PolicyA), and for H-3 then TPM2_PolicyOR over
//! PolicyA and PolicyC, which turns the session's digest into the EK's PolicyB. The AK is
//! authorized in an HMAC session salted to the EK that encrypts the TPM's answer, the secret.

use tss_esapi::attributes::SessionAttributesBuilder;
use tss_esapi::constants::response_code::Tss2ResponseCodeKind;
use tss_esapi::constants::SessionType;
use tss_esapi::handles::{AuthHandle, KeyHandle};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    Digest, DigestList, EncryptedSecret, IdObject, Nonce, SymmetricDefinition,
};
use zeroize::Zeroizing;

use super::ek::{certificate_spki, POLICY_A_SHA384, POLICY_C_SHA384};
use super::{AkTemplate, EkKind};
use crate::device::Tpm;
use crate::error::{response_kind, Error, Result};
use crate::policy;

impl Tpm {
    pub(crate) fn activate_credential_once(
        &mut self,
        ek: EkKind,
        ak: AkTemplate,
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let blob = IdObject::try_from(credential_blob.to_vec())
            .map_err(|_| malformed("credential blob", credential_blob.len()))?;
        let secret = EncryptedSecret::try_from(encrypted_secret.to_vec())
            .map_err(|_| malformed("encrypted secret", encrypted_secret.len()))?;

        let ak_handle = self.create_ak(ak)?;
        let ek_handle = match self.create_ek(ek) {
            Ok(handle) => handle,
            Err(e) => {
                self.flush_object(ak_handle);
                return Err(e);
            }
        };
        let result = self.activate_with(ek, ak_handle, ek_handle, blob, secret);
        self.flush_object(ak_handle);
        self.flush_object(ek_handle);
        match result {
            Err(Error::Tss { source, .. }) if refused_credential(source) => {
                Err(self.explain_refusal(ek, source))
            }
            other => other,
        }
    }

    fn activate_with(
        &mut self,
        ek: EkKind,
        ak_handle: KeyHandle,
        ek_handle: KeyHandle,
        blob: IdObject,
        secret: EncryptedSecret,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let session = self.ek_policy_session(ek)?;
        let sealed = match self.response_encryption(ek_handle) {
            Ok(sealed) => sealed,
            Err(e) => {
                policy::flush(&mut self.ctx, session);
                return Err(e);
            }
        };
        let activated = self.ctx.execute_with_sessions(
            (Some(sealed), Some(AuthSession::from(session)), None),
            |ctx| ctx.activate_credential(ak_handle, ek_handle, blob, secret),
        );
        match activated {
            Ok(digest) => {
                policy::forget(&mut self.ctx, session);
                forget(&mut self.ctx, sealed);
                Ok(Zeroizing::new(digest.value().to_vec()))
            }
            Err(e) => {
                policy::flush(&mut self.ctx, session);
                flush(&mut self.ctx, sealed);
                Err(tss_error("activating the credential", e))
            }
        }
    }

    /// The AK's authorization (its empty authValue) in an HMAC session salted to the EK,
    /// with response encryption: the secret leaves the TPM encrypted, so that it is not
    /// readable on the bus. Consumed by the command.
    fn response_encryption(&mut self, ek_handle: KeyHandle) -> Result<AuthSession> {
        let op = "starting a session salted to the EK";
        let session = self
            .ctx
            .start_auth_session(
                Some(ek_handle),
                None,
                None,
                SessionType::Hmac,
                SymmetricDefinition::AES_128_CFB,
                HashingAlgorithm::Sha256,
            )
            .map_err(|e| Error::tss(op, e))?
            .ok_or_else(|| Error::Unsupported("the TPM returned no session".into()))?;
        let (attributes, mask) = SessionAttributesBuilder::new()
            .with_encrypt(true)
            .with_continue_session(false)
            .build();
        if let Err(e) = self.ctx.tr_sess_set_attributes(session, attributes, mask) {
            flush(&mut self.ctx, session);
            return Err(Error::tss(op, e));
        }
        Ok(session)
    }

    /// A policy session in which the EK's authPolicy holds; consumed by the command it
    /// authorizes.
    fn ek_policy_session(&mut self, ek: EkKind) -> Result<PolicySession> {
        let op = "starting the EK's policy session";
        let session = self
            .ctx
            .start_auth_session(
                None,
                None,
                None,
                SessionType::Policy,
                SymmetricDefinition::Null,
                ek.name_alg(),
            )
            .map_err(|e| Error::tss(op, e))?
            .ok_or_else(|| Error::Unsupported("the TPM returned no session".into()))?;
        let session = PolicySession::try_from(session).map_err(|e| Error::tss(op, e))?;
        let result = self.run_ek_policy(ek, session);
        if result.is_err() {
            policy::flush(&mut self.ctx, session);
        }
        result.map(|()| session)
    }

    fn run_ek_policy(&mut self, ek: EkKind, session: PolicySession) -> Result<()> {
        let (attributes, mask) = SessionAttributesBuilder::new()
            .with_continue_session(false)
            .build();
        self.ctx
            .tr_sess_set_attributes(session.into(), attributes, mask)
            .map_err(|e| Error::tss("configuring the EK's policy session", e))?;

        // PolicyA: the endorsement hierarchy's (empty) password, shown in a password session.
        let secret = self
            .ctx
            .execute_with_session(Some(AuthSession::Password), |ctx| {
                ctx.policy_secret(
                    session,
                    AuthHandle::Endorsement,
                    Nonce::default(),
                    Digest::default(),
                    Nonce::default(),
                    None,
                )
            });
        secret.map_err(|e| match response_kind(e) {
            Some(Tss2ResponseCodeKind::AuthFail | Tss2ResponseCodeKind::BadAuth) => {
                Error::HierarchyPassword {
                    hierarchy: "endorsement",
                    given: false,
                }
            }
            _ => Error::tss("running TPM2_PolicySecret(TPM_RH_ENDORSEMENT)", e),
        })?;
        if ek != EkKind::EccP384 {
            return Ok(());
        }

        // PolicyB = PolicyOR(PolicyA, PolicyC), both SHA-384.
        let op = "running TPM2_PolicyOR for the EK's PolicyB";
        let mut branches = DigestList::new();
        for branch in [POLICY_A_SHA384, POLICY_C_SHA384] {
            let digest = Digest::try_from(branch.to_vec()).map_err(|e| Error::tss(op, e))?;
            branches.add(digest).map_err(|e| Error::tss(op, e))?;
        }
        self.ctx
            .execute_without_session(|ctx| ctx.policy_or(session, branches))
            .map_err(|e| Error::tss(op, e))
    }

    /// Says why the TPM refused the credential: an EK made from the standard template that
    /// is not the certificate's key means this TPM's EK does not follow the profile, else the
    /// credential was made for another EK or AK, or altered on the way.
    fn explain_refusal(&mut self, ek: EkKind, source: tss_esapi::Error) -> Error {
        tracing::debug!("TPM2_ActivateCredential refused the credential: {source}");
        let certificate = self.ek_certificates_once().ok().and_then(|certs| {
            certs
                .into_iter()
                .find(|(kind, _)| *kind == ek)
                .and_then(|(_, der)| certificate_spki(&der))
        });
        let made = self.ek_public_key_der_once(ek).ok();
        match (certificate, made) {
            (Some(certified), Some(made)) if certified != made => Error::Unsupported(format!(
                "the TPM could not open the credential: the {} EK this TPM makes from the \
                 standard template {} is not the key in its EK certificate, so this TPM's EK \
                 template is not the standard one and it cannot enrol with this EK",
                ek.describe(),
                ek.template_name(),
            )),
            _ => Error::Unsupported(format!(
                "the TPM could not open the credential: it was made for another TPM's {} EK \
                 or another attestation key, or it was altered on the way; enrol again",
                ek.describe()
            )),
        }
    }
}

/// Whether ActivateCredential's failure means the credential does not fit this EK and AK:
/// its HMAC (TPM_RC_INTEGRITY), the seed's decryption (TPM_RC_VALUE, TPM_RC_ECC_POINT,
/// TPM_RC_SCHEME) or its sizes (TPM_RC_SIZE).
fn refused_credential(source: tss_esapi::Error) -> bool {
    matches!(
        response_kind(source),
        Some(
            Tss2ResponseCodeKind::Integrity
                | Tss2ResponseCodeKind::Value
                | Tss2ResponseCodeKind::EccPoint
                | Tss2ResponseCodeKind::Size
                | Tss2ResponseCodeKind::Scheme
                | Tss2ResponseCodeKind::Insufficient
        )
    )
}

/// Keeps the TPM's code for [`refused_credential`] instead of `Error::tss`'s reading of
/// TPM_RC_INTEGRITY as a foreign key.
fn tss_error(op: &'static str, source: tss_esapi::Error) -> Error {
    match refused_credential(source) {
        true => Error::Tss { op, source },
        false => Error::tss(op, source),
    }
}

/// Flushes a session that will not be used.
fn flush(ctx: &mut tss_esapi::Context, session: AuthSession) {
    if let Some(handle) = session_handle(session) {
        let _ = ctx.flush_context(handle.into());
    }
}

/// Forgets a session the TPM flushed after the command it authorized.
fn forget(ctx: &mut tss_esapi::Context, session: AuthSession) {
    if let Some(handle) = session_handle(session) {
        let mut object = tss_esapi::handles::ObjectHandle::from(handle);
        let _ = ctx.tr_close(&mut object);
    }
}

fn session_handle(session: AuthSession) -> Option<tss_esapi::handles::SessionHandle> {
    match session {
        AuthSession::Password => None,
        other => Some(other.into()),
    }
}

fn malformed(what: &str, len: usize) -> Error {
    Error::Unsupported(format!(
        "the CA's {what} ({len} bytes) is too large for a TPM; the enrolment answer is malformed"
    ))
}
