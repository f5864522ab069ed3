//! Issuance (docs/protocol.md, "Certificates"): the checks in the protocol's order, stopping
//! at the first failure, then a certificate that is recorded with its evidence before it is
//! returned.

use ssh_key::{HashAlg, PublicKey};
use ssh_tpm_attest::checks::{check_certify, check_pcr_policy, check_quote, PcrPolicy};
use ssh_tpm_attest::protocol::{CertificateRequest, CertificateResponse};
use ssh_tpm_attest::tpm::Public;
use ssh_tpm_attest::{b64, derive, Refusal};

use crate::authority::{refuse, Authority, Context, Failure};
use crate::certificate::{self, CertificateSpec};
use crate::enroll::decode_field;
use crate::store::{Issuance, StoreError};

/// Draws of a fresh serial before giving up (a collision among 2^64 values is already rare).
const SERIAL_ATTEMPTS: usize = 5;

impl Authority {
    /// `POST /v1/certificates`.
    ///
    /// # Errors
    ///
    /// The first check that fails, as a [`Failure`].
    pub async fn issue(
        &self,
        req: &CertificateRequest,
        ctx: &mut Context,
    ) -> Result<CertificateResponse, Failure> {
        // Session, token, device, compliance.
        let session = self.use_session(&req.session_id).await?;
        let identity = self.identify(&req.id_token, &session, ctx).await?;
        ctx.device_id = Some(req.device_id.clone());
        let device = self
            .inventory_device(&req.device_id, &identity.user)
            .await?;
        let Some(pinned) = &device.ak else {
            return Err(refuse(
                Refusal::DeviceNotEnrolled,
                "no AK is pinned to the device; enrol it first",
            ));
        };
        self.compliance.check(&device.id).await?;

        // The evidence is bound to this session and this SSH key.
        let ssh_key = PublicKey::from_openssh(&req.ssh_public_key).map_err(|e| {
            refuse(
                Refusal::BadRequest,
                format!("ssh_public_key is not an OpenSSH public key (TYPE BASE64 COMMENT): {e}"),
            )
        })?;
        let key_blob = ssh_key
            .to_bytes()
            .map_err(|e| Failure::Internal(format!("cannot encode the SSH key: {e}")))?;
        let qualifying_data = derive::qualifying_data(&session.id, &session.nonce, &key_blob);
        let ak = Public::decode(&pinned.public)
            .map_err(|e| Failure::Internal(format!("the pinned AK cannot be read: {e}")))?;

        // Boot state.
        let pcrs = check_quote(&ak, &req.quote, &qualifying_data)?;
        if let Some(policy) = &device.pcr_policy {
            let policy: PcrPolicy = serde_json::from_str(policy).map_err(|e| {
                Failure::Internal(format!("the device's PCR policy cannot be read: {e}"))
            })?;
            check_pcr_policy(&pcrs, &policy)?;
        }

        // The key.
        let key_public = decode_field(&req.key_public, "key_public")?;
        check_certify(&ak, &req.certify, &key_public, &ssh_key, &qualifying_data)?;

        // The certificate.
        let principals = certificate::principals(
            &identity.user,
            &identity.groups,
            &self.config.oidc.group_principals,
        );
        let evidence = serde_json::json!({
            "session_id": session.id,
            "ak_name": b64::encode(&pinned.name),
            "key_public": req.key_public,
            "quote": {
                "attest": req.quote.attest,
                "signature": req.quote.signature,
                "pcrs": {"sha256": pcrs},
            },
            "pcr_policy": device.pcr_policy.is_some(),
            "certify": {"attest": req.certify.attest, "signature": req.certify.signature},
            "token": identity.evidence,
        });
        let fingerprint = ssh_key.fingerprint(HashAlg::Sha256).to_string();

        for _ in 0..SERIAL_ATTEMPTS {
            let now = crate::now();
            let spec = CertificateSpec {
                key: &ssh_key,
                user: &identity.user,
                device_id: &device.id,
                principals: &principals,
                serial: certificate::random_serial(),
                now,
                validity: self.config.certificate_validity,
            };
            let cert = certificate::sign(&self.ca_key, &spec)
                .map_err(|e| Failure::Internal(format!("signing failed: {e}")))?;
            let text = cert
                .to_openssh()
                .map_err(|e| Failure::Internal(format!("cannot encode the certificate: {e}")))?;
            let issuance = Issuance {
                serial: cert.serial(),
                device_id: device.id.clone(),
                user: identity.user.clone(),
                key_fingerprint: fingerprint.clone(),
                principals: principals.clone(),
                issued_at: now,
                valid_after: cert.valid_after(),
                valid_before: cert.valid_before(),
                certificate: text.clone(),
                evidence: evidence.clone(),
            };
            match self.store.record_issuance(&issuance).await {
                Ok(()) => {
                    tracing::info!(
                        serial = issuance.serial,
                        user = issuance.user,
                        device = issuance.device_id,
                        key = issuance.key_fingerprint,
                        valid_before = issuance.valid_before,
                        "certificate issued"
                    );
                    return Ok(CertificateResponse {
                        certificate: text,
                        serial: issuance.serial,
                        valid_after: issuance.valid_after,
                        valid_before: issuance.valid_before,
                    });
                }
                Err(StoreError::SerialTaken(serial)) => {
                    tracing::warn!(serial, "serial already used; drawing another");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Failure::Internal(
            "no unused serial found; the random source may be broken".into(),
        ))
    }
}
