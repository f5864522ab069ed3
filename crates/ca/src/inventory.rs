//! The device inventory commands: add a device by its EK certificate, list, retire, and set
//! the allowed PCR values.

use std::collections::BTreeMap;

use ssh_tpm_attest::checks::PcrPolicy;
use ssh_tpm_attest::ekcert::{EkCertificate, TrustAnchors};

use crate::error::CaError;
use crate::store::{Device, DeviceStatus, Store};

/// The result of `device add`.
#[derive(Debug, Clone)]
pub struct Added {
    /// The new device's id.
    pub device_id: String,
    /// Why the EK certificate does not chain to a configured root, if it does not.
    pub untrusted: Option<String>,
}

/// Reads an EK certificate file, DER or PEM.
///
/// # Errors
///
/// [`CaError::Usage`] when it is neither.
pub fn read_ek_cert(bytes: &[u8]) -> Result<EkCertificate, CaError> {
    let der = if bytes.starts_with(b"-----BEGIN") {
        let (_label, der) = pem_rfc7468::decode_vec(bytes)
            .map_err(|e| CaError::Usage(format!("the EK certificate PEM cannot be read: {e}")))?;
        der
    } else {
        bytes.to_vec()
    };
    let cert = EkCertificate::from_der(&der).map_err(|e| {
        CaError::Usage(format!(
            "{}; give the EK certificate in DER or PEM, as `tpm2_nvread 0x01c00002` (RSA) or \
             0x01c0000a (ECC) reads it from the TPM",
            e.reason()
        ))
    })?;
    // A manufacturer's CA certificate or some other certificate given by mistake would be
    // added as a device no TPM can ever enrol.
    match cert.not_an_ek() {
        None => Ok(cert),
        Some(why) => Err(CaError::Usage(format!(
            "this is not an EK certificate: {why}; read the device's own from its TPM with \
             `tpm2_nvread 0x01c00002 -o ek.der` (RSA EK; 0x01c0000a for ECC P-256, 0x01c00016 \
             for P-384)"
        ))),
    }
}

/// Parses `INDEX=HEX` arguments into a policy; the same index may be given several times.
///
/// # Errors
///
/// [`CaError::Usage`] for an index outside 0–23 or a value that is not 32 bytes of hex.
pub fn parse_pcrs(args: &[String]) -> Result<PcrPolicy, CaError> {
    let mut map: BTreeMap<u8, Vec<Vec<u8>>> = BTreeMap::new();
    for arg in args {
        let usage = || {
            CaError::Usage(format!(
                "--pcr {arg}: expected INDEX=HEX with INDEX 0-23 and a SHA-256 value \
                 (64 hex digits)"
            ))
        };
        let (index, hex) = arg.split_once('=').ok_or_else(usage)?;
        let index: u8 = index.trim().parse().map_err(|_| usage())?;
        if index > 23 {
            return Err(usage());
        }
        let value = hex_decode(hex.trim())
            .filter(|v| v.len() == 32)
            .ok_or_else(usage)?;
        let values = map.entry(index).or_default();
        if !values.contains(&value) {
            values.push(value);
        }
    }
    Ok(PcrPolicy(map))
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn policy_json(policy: &PcrPolicy) -> Result<Option<String>, CaError> {
    if policy.0.is_empty() {
        return Ok(None);
    }
    serde_json::to_string(policy)
        .map(Some)
        .map_err(|e| CaError::Usage(format!("cannot encode the PCR policy: {e}")))
}

/// `device add`: adds the device whose EK certificate is `ek_cert`, assigned to `user`.
///
/// The certificate is checked against `anchors`; one that does not chain is still added (the
/// caller warns), since enrolment refuses it anyway until the right root is configured.
///
/// # Errors
///
/// [`CaError::Store`] when the device exists already.
pub async fn add(
    store: &dyn Store,
    ek_cert: &EkCertificate,
    anchors: &TrustAnchors,
    user: &str,
    name: Option<&str>,
    pcrs: &PcrPolicy,
) -> Result<Added, CaError> {
    if user.is_empty() {
        return Err(CaError::Usage("--user must not be empty".into()));
    }
    let untrusted = ek_cert.verify_chain(anchors).err().map(|e| e.to_string());
    let device = Device {
        id: ek_cert.device_id(),
        ek_cert: ek_cert.der().to_vec(),
        user: user.to_owned(),
        name: name.map(str::to_owned),
        status: DeviceStatus::Active,
        ak: None,
        pcr_policy: policy_json(pcrs)?,
        created_at: crate::now(),
        enrolled_at: None,
        retired_at: None,
    };
    store.add_device(&device).await?;
    Ok(Added {
        device_id: device.id,
        untrusted,
    })
}

/// `device list`: one line per device.
///
/// # Errors
///
/// [`CaError::Store`].
pub async fn list(store: &dyn Store) -> Result<String, CaError> {
    let devices = store.devices().await?;
    let mut out = String::new();
    for d in devices {
        let policy = match &d.pcr_policy {
            Some(p) => serde_json::from_str::<PcrPolicy>(p)
                .map(|p| format!("pcrs {:?}", p.0.keys().collect::<Vec<_>>()))
                .unwrap_or_else(|_| "unreadable policy".into()),
            None => "no pcr policy".into(),
        };
        out.push_str(&format!(
            "{}  {:<7}  user={}  name={}  {}  {}\n",
            d.id,
            d.status.as_str(),
            d.user,
            d.name.as_deref().unwrap_or("-"),
            if d.ak.is_some() {
                "enrolled"
            } else {
                "not-enrolled"
            },
            policy
        ));
    }
    Ok(out)
}

/// `device retire ID`.
///
/// # Errors
///
/// [`CaError::Usage`] when there is no such device.
pub async fn retire(store: &dyn Store, id: &str) -> Result<(), CaError> {
    if store.retire_device(id, crate::now()).await? {
        Ok(())
    } else {
        Err(no_such_device(id))
    }
}

/// `device policy ID --pcr ...` (no `--pcr` clears the policy).
///
/// # Errors
///
/// [`CaError::Usage`] when there is no such device.
pub async fn set_policy(store: &dyn Store, id: &str, pcrs: &PcrPolicy) -> Result<(), CaError> {
    let json = policy_json(pcrs)?;
    if store.set_pcr_policy(id, json.as_deref()).await? {
        Ok(())
    } else {
        Err(no_such_device(id))
    }
}

fn no_such_device(id: &str) -> CaError {
    CaError::Usage(format!(
        "no device {id} in the inventory; `ssh-tpm-ca device list` shows them"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../attest/tests/fixtures");

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{FIXTURES}/{name}")).unwrap()
    }

    fn openssl(args: &[&str]) {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl is needed for this test (Debian: openssl)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn refusal(bytes: &[u8]) -> String {
        read_ek_cert(bytes).unwrap_err().to_string()
    }

    #[test]
    fn swtpm_ek_certificates_are_accepted() {
        for name in ["ek-rsa.der", "ek-p384.der"] {
            let cert = read_ek_cert(&fixture(name)).unwrap();
            let id = String::from_utf8(fixture(&name.replace(".der", ".device-id"))).unwrap();
            assert_eq!(cert.device_id(), id.trim());
        }
    }

    #[test]
    fn ca_self_issued_and_signing_certificates_are_not_ek_certificates() {
        let hint = "; read the device's own from its TPM with `tpm2_nvread 0x01c00002 -o ek.der`";
        let e = refusal(&fixture("ca-root.pem"));
        assert!(
            e.starts_with(
                "this is not an EK certificate: it is a CA certificate (basicConstraints CA:TRUE)"
            ),
            "{e}"
        );
        assert!(e.contains(hint), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        // Self-signed, without CA:TRUE.
        let (own, own_key) = (path("own.pem"), path("own.key"));
        let mut args = vec!["req", "-x509", "-subj", "/CN=laptop", "-keyout"];
        args.extend([own_key.as_str(), "-out", &own, "-addext"]);
        args.extend(["basicConstraints=critical,CA:FALSE"]);
        args.extend(ec);
        openssl(&args);
        let e = refusal(&std::fs::read(&own).unwrap());
        assert!(
            e.starts_with("this is not an EK certificate: it is self-issued"),
            "{e}"
        );

        // Issued by a CA, for signatures only.
        let (ca, ca_key) = (path("ca.pem"), path("ca.key"));
        let mut args = vec!["req", "-x509", "-subj", "/CN=some CA", "-keyout", &ca_key];
        args.extend(["-out", &ca]);
        args.extend(ec);
        openssl(&args);
        let (csr, leaf, leaf_key) = (path("leaf.csr"), path("leaf.pem"), path("leaf.key"));
        let mut args = vec!["req", "-new", "-subj", "/CN=leaf", "-keyout"];
        args.extend([leaf_key.as_str(), "-out", &csr]);
        args.extend(ec);
        openssl(&args);
        let ext = path("leaf.ext");
        std::fs::write(&ext, "keyUsage=critical,digitalSignature\n").unwrap();
        openssl(&[
            "x509", "-req", "-in", &csr, "-CA", &ca, "-CAkey", &ca_key, "-days", "1", "-extfile",
            &ext, "-out", &leaf,
        ]);
        let e = refusal(&std::fs::read(&leaf).unwrap());
        assert!(
            e.starts_with(
                "this is not an EK certificate: its key usage allows neither keyEncipherment \
                 nor keyAgreement"
            ),
            "{e}"
        );
    }

    #[test]
    fn pcr_arguments() {
        let a = "a".repeat(64);
        let b = "B".repeat(64);
        let p = parse_pcrs(&[format!("0={a}"), format!("0={b}"), format!("7={a}")]).unwrap();
        assert_eq!(p.0[&0], vec![vec![0xaa; 32], vec![0xbb; 32]]);
        assert_eq!(p.0[&7], vec![vec![0xaa; 32]]);
        for bad in [
            "24=".to_owned() + &a,
            "x=".to_owned() + &a,
            "0=abcd".into(),
            a.clone(),
        ] {
            assert!(parse_pcrs(std::slice::from_ref(&bad)).is_err(), "{bad}");
        }
        assert_eq!(policy_json(&PcrPolicy::default()).unwrap(), None);
        let json = policy_json(&p).unwrap().unwrap();
        assert_eq!(serde_json::from_str::<PcrPolicy>(&json).unwrap(), p);
    }
}
