//! Enrolment (docs/protocol.md, "Enrolment"): the CA proves that an AK lives in the TPM whose
//! EK certificate the inventory knows, with MakeCredential, and pins the AK to the device.

use rand_core::{OsRng, RngCore as _};
use sha2::{Digest as _, Sha256};
use ssh_tpm_attest::checks::check_ak_public;
use ssh_tpm_attest::credential::make_credential;
use ssh_tpm_attest::ekcert::EkCertificate;
use ssh_tpm_attest::protocol::{ActivateRequest, ActivateResponse, EnrollChallenge, EnrollRequest};
use ssh_tpm_attest::tpm::Public;
use ssh_tpm_attest::{b64, Refusal};
use zeroize::Zeroizing;

use crate::authority::{refuse, Authority, Context, Failure};
use crate::store::{Activation, Challenge, Device, DeviceStatus, PinnedAk};

/// Decodes a b64 field or refuses with `bad_request`.
pub(crate) fn decode_field(text: &str, field: &str) -> Result<Vec<u8>, Failure> {
    b64::decode(text).map_err(|_| {
        refuse(
            Refusal::BadRequest,
            format!("{field} is not unpadded base64url"),
        )
    })
}

impl Authority {
    /// `POST /v1/enroll`: checks session, token, EK chain, inventory and AK, then answers with
    /// a MakeCredential challenge.
    ///
    /// # Errors
    ///
    /// The first check that fails, as a [`Failure`].
    pub async fn enroll(
        &self,
        req: &EnrollRequest,
        ctx: &mut Context,
    ) -> Result<EnrollChallenge, Failure> {
        let session = self.use_session(&req.session_id).await?;
        let identity = self.identify(&req.id_token, &session, ctx).await?;

        // The EK certificate, trusted through the manufacturer's chain.
        let der = decode_field(&req.ek_cert, "ek_cert")?;
        let ek_cert = EkCertificate::from_der(&der).map_err(|e| {
            let detail = if der.starts_with(b"-----BEGIN") {
                "ek_cert is PEM; send the DER bytes of the certificate".to_owned()
            } else {
                format!("ek_cert: {}", e.reason())
            };
            refuse(Refusal::BadRequest, detail)
        })?;
        let device_id = ek_cert.device_id();
        ctx.device_id = Some(device_id.clone());
        ek_cert
            .verify_chain(&self.anchors)
            .map_err(|e| refuse(Refusal::EkUntrusted, e.to_string()))?;

        // The inventory.
        let device = self.inventory_device(&device_id, &identity.user).await?;

        // The AK.
        let ak_bytes = decode_field(&req.ak_public, "ak_public")?;
        let ak = Public::decode(&ak_bytes).map_err(|e| {
            refuse(
                Refusal::AkInvalid,
                format!("ak_public is not a usable TPMT_PUBLIC: {}", e.reason()),
            )
        })?;
        check_ak_public(&ak)?;
        let ak_name = ak.name();

        // The challenge, from the EK in the certificate (never from the client).
        let ek = ek_cert
            .public_key()
            .map_err(|e| refuse(Refusal::EkUntrusted, format!("the EK cannot be used: {e}")))?;
        let mut secret = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(secret.as_mut());
        let (blob, encrypted_secret) = make_credential(&ek, &ak_name, secret.as_ref(), &mut OsRng)
            .map_err(|e| Failure::Internal(format!("MakeCredential failed: {e}")))?;

        let mut id = [0u8; 18];
        OsRng.fill_bytes(&mut id);
        let now = crate::now();
        let challenge = Challenge {
            id: b64::encode(&id),
            device_id: device.id.clone(),
            user: identity.user.clone(),
            secret_hash: Sha256::digest(secret.as_ref()).into(),
            ak: PinnedAk {
                public: ak_bytes,
                name: ak_name,
            },
            created_at: now,
            expires_at: now + self.config.session_lifetime.as_secs(),
        };
        self.store.create_challenge(&challenge).await?;
        tracing::info!(
            user = identity.user,
            device = device.id,
            "enrolment challenge sent"
        );
        Ok(EnrollChallenge {
            challenge_id: challenge.id,
            credential_blob: b64::encode(&blob),
            encrypted_secret: b64::encode(&encrypted_secret),
        })
    }

    /// `POST /v1/enroll/activate`: the secret back from the TPM pins the AK.
    ///
    /// # Errors
    ///
    /// `challenge_failed` for a wrong, unknown, used or late answer; `device_retired` when
    /// the device was retired meanwhile.
    pub async fn activate(
        &self,
        req: &ActivateRequest,
        ctx: &mut Context,
    ) -> Result<ActivateResponse, Failure> {
        let secret = Zeroizing::new(decode_field(&req.secret, "secret")?);
        let hash: [u8; 32] = Sha256::digest(secret.as_slice()).into();
        let failed = |detail: &str| refuse(Refusal::ChallengeFailed, detail);
        match self
            .store
            .activate(&req.challenge_id, &hash, crate::now())
            .await?
        {
            Activation::Activated {
                device_id,
                user,
                ak_name,
            } => {
                tracing::info!(user, device = device_id, "device enrolled; AK pinned");
                ctx.user = Some(user);
                ctx.device_id = Some(device_id.clone());
                Ok(ActivateResponse {
                    device_id,
                    ak_name: b64::encode(&ak_name),
                })
            }
            Activation::Unknown => Err(failed("no such challenge; enrol again")),
            Activation::Used => Err(failed("the challenge was already answered; enrol again")),
            Activation::Expired => Err(failed("the answer came too late; enrol again")),
            Activation::WrongSecret => Err(failed(
                "the secret is wrong: the AK is not in the TPM that holds this EK",
            )),
            Activation::DeviceInactive => Err(refuse(
                Refusal::DeviceRetired,
                "the device was retired or reassigned during enrolment",
            )),
        }
    }

    /// The device with this id, active and assigned to `user`; counts the request against
    /// the device's rate limit.
    pub(crate) async fn inventory_device(
        &self,
        device_id: &str,
        user: &str,
    ) -> Result<Device, Failure> {
        let device = self.store.device(device_id).await?.ok_or_else(|| {
            refuse(
                Refusal::DeviceUnknown,
                format!("device {device_id} is not in the inventory"),
            )
        })?;
        self.limit_device(device_id)?;
        if device.status == DeviceStatus::Retired {
            return Err(refuse(Refusal::DeviceRetired, "the device was retired"));
        }
        if device.user != user {
            return Err(refuse(
                Refusal::DeviceWrongUser,
                format!("the device is assigned to another user, not {user}"),
            ));
        }
        Ok(device)
    }
}
