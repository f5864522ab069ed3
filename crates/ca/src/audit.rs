//! `ssh-tpm-ca audit` and `ssh-tpm-ca krl`: the audit log read back (every issuance with its
//! evidence, every refusal with its reason), and a KRL of what retired devices still hold.

use std::path::Path;

use serde_json::{json, Value};

use crate::error::CaError;
use crate::store::{Issuance, RefusalRecord, Store};

/// The audit log as one JSON document: `{"issuances": [...], "refusals": [...]}`.
///
/// # Errors
///
/// [`CaError::Store`].
pub async fn audit_json(store: &dyn Store) -> Result<Value, CaError> {
    let issuances: Vec<Value> = store.issuances().await?.iter().map(issuance_json).collect();
    let refusals: Vec<Value> = store.refusals().await?.iter().map(refusal_json).collect();
    Ok(json!({"issuances": issuances, "refusals": refusals}))
}

fn issuance_json(i: &Issuance) -> Value {
    json!({
        "serial": i.serial,
        "user": i.user,
        "device_id": i.device_id,
        "key_fingerprint": i.key_fingerprint,
        "principals": i.principals,
        "issued_at": i.issued_at,
        "valid_after": i.valid_after,
        "valid_before": i.valid_before,
        "certificate": i.certificate,
        "evidence": i.evidence,
    })
}

fn refusal_json(r: &RefusalRecord) -> Value {
    json!({
        "at": r.at,
        "endpoint": r.endpoint,
        "code": r.code,
        "detail": r.detail,
        "user": r.user,
        "device_id": r.device_id,
    })
}

/// A one-line summary of an issuance's evidence.
fn evidence_summary(evidence: &Value) -> String {
    let pcrs = evidence
        .pointer("/quote/pcrs/sha256")
        .and_then(Value::as_object)
        .map_or(0, |m| m.len());
    let policy = if evidence.get("pcr_policy") == Some(&Value::Bool(true)) {
        "policy enforced"
    } else {
        "no pcr policy"
    };
    let sub = evidence
        .pointer("/token/sub")
        .and_then(Value::as_str)
        .unwrap_or("-");
    format!(
        "quote of {pcrs} sha256 PCRs ({policy}), key certified by the pinned AK, token sub={sub}"
    )
}

/// The audit log as text, one line per entry, oldest first.
///
/// # Errors
///
/// [`CaError::Store`].
pub async fn audit_text(store: &dyn Store) -> Result<String, CaError> {
    let mut out = String::from("# issuances\n");
    for i in store.issuances().await? {
        out.push_str(&format!(
            "serial={} user={} device={} key={} principals={} valid={}..{} evidence: {}\n",
            i.serial,
            i.user,
            i.device_id,
            i.key_fingerprint,
            i.principals.join(","),
            i.valid_after,
            i.valid_before,
            evidence_summary(&i.evidence)
        ));
    }
    out.push_str("# refusals\n");
    for r in store.refusals().await? {
        out.push_str(&format!(
            "at={} {} code={} user={} device={} detail: {}\n",
            r.at,
            r.endpoint,
            r.code,
            r.user.as_deref().unwrap_or("-"),
            r.device_id.as_deref().unwrap_or("-"),
            r.detail
        ));
    }
    Ok(out)
}

/// Writes a KRL revoking the still-valid certificates of retired devices and `extra` serials;
/// returns the serials revoked.
///
/// # Errors
///
/// [`CaError::Usage`] for serial 0, which the CA never issues and OpenSSH refuses in a KRL;
/// [`CaError::Store`] or [`CaError::Io`].
pub async fn write_krl(
    store: &dyn Store,
    ca: &ssh_key::PublicKey,
    extra: &[u64],
    out: &Path,
) -> Result<Vec<u64>, CaError> {
    if extra.contains(&0) {
        return Err(CaError::Usage(
            "--serial 0: the CA never issues serial 0, and OpenSSH rejects a KRL that lists it \
             (sshd would then refuse every login); `ssh-tpm-ca audit` shows the serials"
                .into(),
        ));
    }
    let now = crate::now();
    let mut serials = store.live_serials_of_retired(now).await?;
    serials.extend_from_slice(extra);
    serials.sort_unstable();
    serials.dedup();
    let krl = crate::krl::encode(ca, &serials, now, now, "ssh-tpm-ca")
        .map_err(|e| CaError::Setup(e.to_string()))?;

    // sshd never reads a half-written list.
    ssh_tpm_keyfile::atomic::write_atomic(out, &krl, 0o644)
        .map_err(|e| CaError::io("cannot write", out, e))?;
    Ok(serials)
}
