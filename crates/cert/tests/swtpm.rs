//! The client's TPM steps on a swtpm manufactured with EK certificates, checked by the CA's
//! own code (ssh-tpm-attest): a certificate request passes the quote and certification
//! checks, one made with another AK does not, and an enrolment challenge made with
//! MakeCredential to the EK certificate is answered.

#![allow(clippy::unwrap_used)]

#[path = "../../tpm/tests/ek_swtpm/mod.rs"]
mod ek_swtpm;

use ek_swtpm::Swtpm;
use ssh_key::PublicKey;
use ssh_tpm_attest::protocol::{ActivateResponse, EnrollChallenge, SessionResponse};
use ssh_tpm_attest::tpm::Public;
use ssh_tpm_attest::{b64, checks, credential, derive, Refusal};
use ssh_tpm_cert::enroll::{self, EkFamily};
use ssh_tpm_cert::renew;
use ssh_tpm_cert::IdToken;
use ssh_tpm_tpm::{AkTemplate, EkKind, KeySpec, Pin, Tpm, TpmTarget};

fn open(swtpm: &Swtpm) -> Tpm {
    Tpm::open(&TpmTarget::Tcti(swtpm.tcti())).unwrap()
}

fn session() -> SessionResponse {
    SessionResponse {
        session_id: "session-1".into(),
        nonce: b64::encode(&[7u8; 32]),
        expires_at: 4_000_000_000,
        oidc_nonce: derive::oidc_nonce("session-1", &[7u8; 32]),
    }
}

#[test]
fn certificate_requests_pass_the_cas_checks() {
    let swtpm = Swtpm::start();
    let mut tpm = open(&swtpm);
    let pin = Pin::from("1234".to_string());
    let mut with_pin = tpm.create_key(KeySpec::EcdsaP256, &pin).unwrap();
    with_pin.description = Some("alice@laptop".into());
    let without_pin = tpm.create_key(KeySpec::Rsa2048, &Pin::empty()).unwrap();
    let ak = Public::decode(&tpm.attestation_key_public(AkTemplate::Standard).unwrap()).unwrap();
    let token = IdToken::from_raw("header.payload.signature");
    let session = session();

    for (key, pin) in [(&with_pin, &pin), (&without_pin, &Pin::empty())] {
        let request = renew::request(&mut tpm, key, pin, &session, &token, "ab12").unwrap();
        assert_eq!(request.session_id, "session-1");
        assert_eq!(request.id_token, "header.payload.signature");
        assert_eq!(request.device_id, "ab12");

        // The fields decode, and the CA's checks accept them over the same qualifying data.
        let ssh_key = PublicKey::from_openssh(&request.ssh_public_key).unwrap();
        let key_public = b64::decode(&request.key_public).unwrap();
        assert_eq!(key_public, key.pubkey[2..]);
        let qualifying =
            derive::qualifying_data("session-1", &[7u8; 32], &ssh_key.to_bytes().unwrap());
        let pcrs = checks::check_quote(&ak, &request.quote, &qualifying).unwrap();
        assert_eq!(
            pcrs.0.keys().copied().collect::<Vec<_>>(),
            (0..=7).collect::<Vec<_>>()
        );
        checks::check_certify(&ak, &request.certify, &key_public, &ssh_key, &qualifying).unwrap();

        // Another session's qualifying data does not fit.
        let other = derive::qualifying_data("session-2", &[7u8; 32], &ssh_key.to_bytes().unwrap());
        let refused = checks::check_quote(&ak, &request.quote, &other).unwrap_err();
        assert_eq!(refused.refusal, Refusal::QuoteInvalid);
    }
    assert_eq!(
        PublicKey::from_openssh(
            &renew::request(&mut tpm, &with_pin, &pin, &session, &token, "x")
                .unwrap()
                .ssh_public_key
        )
        .unwrap()
        .comment(),
        "alice@laptop"
    );

    // Signed by an AK the CA did not pin: refused.
    let request = renew::request_with(
        &mut tpm,
        &without_pin,
        &Pin::empty(),
        &session,
        &token,
        "ab12",
        AkTemplate::Variant(3),
        &renew::BOOT_PCRS,
    )
    .unwrap();
    let ssh_key = PublicKey::from_openssh(&request.ssh_public_key).unwrap();
    let qualifying = derive::qualifying_data("session-1", &[7u8; 32], &ssh_key.to_bytes().unwrap());
    let refused = checks::check_quote(&ak, &request.quote, &qualifying).unwrap_err();
    assert_eq!(refused.refusal, Refusal::QuoteInvalid);

    // A wrong PIN is the TPM's error, before anything reaches the CA.
    let wrong = renew::request(
        &mut tpm,
        &with_pin,
        &Pin::from("0000".to_string()),
        &session,
        &token,
        "ab12",
    );
    assert!(
        matches!(
            wrong,
            Err(ssh_tpm_cert::Error::Tpm(
                ssh_tpm_tpm::Error::WrongPin { .. }
            ))
        ),
        "{wrong:?}"
    );
}

#[test]
fn enrolment_answers_a_make_credential_challenge() {
    let swtpm = Swtpm::start();
    let mut tpm = open(&swtpm);

    for (family, kind) in [
        (None, EkKind::Rsa2048),
        (Some(EkFamily::Ecc), EkKind::EccP384),
    ] {
        let ek = enroll::choose_ek(&mut tpm, family).unwrap();
        assert_eq!(ek.kind, kind);
        let request = enroll::request(
            &mut tpm,
            &ek,
            AkTemplate::Standard,
            &session(),
            &IdToken::from_raw("t"),
        )
        .unwrap();
        assert_eq!(b64::decode(&request.ek_cert).unwrap(), ek.certificate.der());

        // The CA's side: AK checks, then MakeCredential to the certificate's key.
        let ak = Public::decode(&b64::decode(&request.ak_public).unwrap()).unwrap();
        checks::check_ak_public(&ak).unwrap();
        let secret = [0x5a; 32];
        let ek_key = ek.certificate.public_key().unwrap();
        let (blob, encrypted) =
            credential::make_credential(&ek_key, &ak.name(), &secret, &mut rand_core::OsRng)
                .unwrap();
        let challenge = EnrollChallenge {
            challenge_id: "c1".into(),
            credential_blob: b64::encode(&blob),
            encrypted_secret: b64::encode(&encrypted),
        };
        let answer = enroll::activate(&mut tpm, &ek, AkTemplate::Standard, &challenge).unwrap();
        assert_eq!(answer.challenge_id, "c1");
        assert_eq!(b64::decode(&answer.secret).unwrap(), secret);

        // The CA's confirmation is checked against this TPM.
        let mut confirmed = ActivateResponse {
            device_id: ek.device_id(),
            ak_name: b64::encode(&ak.name()),
        };
        enroll::check_confirmation(&mut tpm, &ek, AkTemplate::Standard, &confirmed).unwrap();
        confirmed.device_id = "00".repeat(32);
        assert!(
            enroll::check_confirmation(&mut tpm, &ek, AkTemplate::Standard, &confirmed).is_err()
        );
        assert_eq!(
            renew::current_device_id(&mut tpm, kind).unwrap(),
            ek.device_id()
        );
    }

    // RSA only, asked for by name.
    assert_eq!(
        enroll::choose_ek(&mut tpm, Some(EkFamily::Rsa))
            .unwrap()
            .kind,
        EkKind::Rsa2048
    );
}

/// Signs the `.pub` file `public` with a fresh ssh-keygen CA, valid for `validity`.
fn sign(dir: &std::path::Path, public: &std::path::Path, validity: &str) -> String {
    let ca = dir.join("ca");
    let run = |cmd: &mut std::process::Command| {
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    if !ca.exists() {
        run(std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&ca));
    }
    run(std::process::Command::new("ssh-keygen")
        .args(["-q", "-s"])
        .arg(&ca)
        .args(["-I", "id", "-n", "alice", "-V", validity])
        .arg(public));
    let cert = dir.join("id-cert.pub");
    let line = std::fs::read_to_string(&cert).unwrap();
    std::fs::remove_file(cert).unwrap();
    line
}

#[test]
fn renew_asks_nothing_while_the_certificate_is_good_and_keeps_it_when_the_ca_fails() {
    let swtpm = Swtpm::start();
    let mut tpm = open(&swtpm);
    let dir = tempfile::tempdir().unwrap();
    let key = tpm.create_key(KeySpec::EcdsaP256, &Pin::empty()).unwrap();
    let key_path = dir.path().join("id.tpm");
    std::fs::write(&key_path, key.to_pem()).unwrap();
    let public = PublicKey::new(renew::ssh_key_data(&key).unwrap(), "alice@laptop");
    let public_path = dir.path().join("id.pub");
    std::fs::write(&public_path, public.to_openssh().unwrap()).unwrap();
    let cert_path = dir.path().join("id-cert.pub");

    let ek = enroll::choose_ek(&mut tpm, None).unwrap();
    let enrolment = ssh_tpm_cert::state::Enrolment {
        ca_url: "http://127.0.0.1:9/".into(),
        device_id: ek.device_id(),
        ek: ssh_tpm_cert::state::ek_name(ek.kind).into(),
        enrolled_at: 0,
    };
    // Port 9 (discard) is closed here: any request fails.
    let ca = ssh_tpm_cert::CaClient::new(&enrolment.ca_url, &Default::default()).unwrap();
    let mut no_pin = || -> ssh_tpm_cert::Result<Pin> { panic!("no PIN may be asked") };
    let options = renew::RenewOptions::default();

    let good = sign(dir.path(), &public_path, "-5m:+16h");
    std::fs::write(&cert_path, &good).unwrap();
    let outcome = renew::renew(&mut tpm, &ca, &enrolment, &key_path, &mut no_pin, &options);
    assert!(
        matches!(outcome, Ok(renew::Outcome::StillGood { .. })),
        "{outcome:?}"
    );

    // Due, or forced: the CA is asked, fails, and the old certificate stays.
    let late = sign(dir.path(), &public_path, "-15h:+30m");
    std::fs::write(&cert_path, &late).unwrap();
    let error = renew::renew(&mut tpm, &ca, &enrolment, &key_path, &mut no_pin, &options)
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("cannot reach the CA at http://127.0.0.1:9/"),
        "{error}"
    );
    assert_eq!(std::fs::read_to_string(&cert_path).unwrap(), late);

    std::fs::write(&cert_path, &good).unwrap();
    let forced = renew::RenewOptions {
        force: true,
        ..renew::RenewOptions::default()
    };
    let error = renew::renew(&mut tpm, &ca, &enrolment, &key_path, &mut no_pin, &forced);
    assert!(
        matches!(error, Err(ssh_tpm_cert::Error::Unreachable { .. })),
        "{error:?}"
    );
    assert_eq!(std::fs::read_to_string(&cert_path).unwrap(), good);

    // Another TPM's enrolment: refused before the CA is asked.
    let other = ssh_tpm_cert::state::Enrolment {
        device_id: "00".repeat(32),
        ..enrolment
    };
    let error = renew::renew(&mut tpm, &ca, &other, &key_path, &mut no_pin, &forced)
        .unwrap_err()
        .to_string();
    assert!(error.contains("not the enrolled"), "{error}");
}

/// A CA stand-in on a loopback port that answers `GET /v1/info` (naming an identity
/// provider on a closed port, so that a login fails at once) and `POST /v1/sessions`, as
/// many times as asked, and counts the requests.
fn info_and_session_ca() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let mut length = 0;
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).unwrap();
                if header.trim().is_empty() {
                    break;
                }
                if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
            }
            reader.read_exact(&mut vec![0; length]).unwrap();
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let session = session();
            let body = if line.starts_with("GET /v1/info ") {
                r#"{"issuer":"http://127.0.0.1:9","client_id":"ssh-tpm","scopes":["openid"],
                   "ca_public_key":"ssh-ed25519 AAAA ca","default_validity_secs":57600}"#
                    .to_string()
            } else {
                format!(
                    r#"{{"session_id":"{}","nonce":"{}","expires_at":4000000000,
                       "oidc_nonce":"{}"}}"#,
                    session.session_id, session.nonce, session.oidc_nonce
                )
            };
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, count)
}

/// The TPM loads and certifies the key before the login: a wrong PIN, or a key file whose
/// private part this TPM cannot load, fails without a browser (the provider named by the
/// CA is unreachable, so a login would fail with another message).
#[test]
fn renew_fails_on_the_key_before_the_login() {
    let swtpm = Swtpm::start();
    let mut tpm = open(&swtpm);
    let dir = tempfile::tempdir().unwrap();
    let (url, requests) = info_and_session_ca();
    let ek = enroll::choose_ek(&mut tpm, None).unwrap();
    let enrolment = ssh_tpm_cert::state::Enrolment {
        ca_url: url.clone(),
        device_id: ek.device_id(),
        ek: ssh_tpm_cert::state::ek_name(ek.kind).into(),
        enrolled_at: 0,
    };
    let ca = ssh_tpm_cert::CaClient::new(&url, &Default::default()).unwrap();
    let options = renew::RenewOptions {
        hand_to_agent: false,
        ..renew::RenewOptions::default()
    };

    // A PIN key, and the wrong PIN.
    let key = tpm
        .create_key(KeySpec::EcdsaP256, &Pin::from("1234".to_string()))
        .unwrap();
    let key_path = dir.path().join("pin.tpm");
    std::fs::write(&key_path, key.to_pem()).unwrap();
    let mut wrong = || Ok(Pin::from("0000".to_string()));
    let error =
        renew::renew(&mut tpm, &ca, &enrolment, &key_path, &mut wrong, &options).unwrap_err();
    assert!(
        matches!(
            error,
            ssh_tpm_cert::Error::Tpm(ssh_tpm_tpm::Error::WrongPin { .. })
        ),
        "{error}"
    );

    // A private part damaged in transit: the TPM refuses to load it.
    let mut damaged = tpm.create_key(KeySpec::EcdsaP256, &Pin::empty()).unwrap();
    let last = damaged.privkey.len() - 1;
    damaged.privkey[last] ^= 0xff;
    let key_path = dir.path().join("damaged.tpm");
    std::fs::write(&key_path, damaged.to_pem()).unwrap();
    let mut no_pin = || -> ssh_tpm_cert::Result<Pin> { panic!("no PIN may be asked") };
    let error =
        renew::renew(&mut tpm, &ca, &enrolment, &key_path, &mut no_pin, &options).unwrap_err();
    assert!(matches!(error, ssh_tpm_cert::Error::Tpm(_)), "{error}");
    assert!(!error.to_string().contains("identity provider"), "{error}");

    // Each attempt asked the CA for its info and a session, and went no further.
    assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 4);

    // A good key does get to the login, which fails at the closed provider.
    let good = tpm.create_key(KeySpec::EcdsaP256, &Pin::empty()).unwrap();
    let key_path = dir.path().join("good.tpm");
    std::fs::write(&key_path, good.to_pem()).unwrap();
    let error = renew::renew(&mut tpm, &ca, &enrolment, &key_path, &mut no_pin, &options)
        .unwrap_err()
        .to_string();
    assert!(error.contains("identity provider"), "{error}");
}
