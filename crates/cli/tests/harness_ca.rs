//! Checks of the CA tests' harness itself (tests/support/ca.rs): the OpenID provider and its
//! scripted browser, the compliance fake, the manufactured TPM and the sshd trusting a user CA.
//! When these fail, the CA tests' failures say nothing about the CA.

mod support;

use std::fs;
use std::time::{Duration, Instant};

use support::ca::{
    http_get, http_request, jwt_claims, plain_key, sign_user_cert, unix_now, AuthRequest, CaSshd,
    ComplianceAnswer, ComplianceFake, Idp, IdpAccount, ManufacturedTpm, SshAgent,
};
use support::{assert_ok, current_user, describe, run, stdout, tempdir, tool};

const CLIENT: &str = "ssh-tpm";

fn alice() -> IdpAccount {
    IdpAccount::new("alice", "correct horse").groups(&["dev", "ops"])
}

// ---------------------------------------------------------------------------------------------
// OpenID provider

/// Discovery names the issuer the provider printed, on 127.0.0.1, with PKCE S256 and the
/// scopes the CA asks for.
#[test]
fn idp_discovery_names_its_issuer() {
    let idp = Idp::start(&[CLIENT], &[alice()]);
    assert!(
        idp.issuer().starts_with("http://127.0.0.1:"),
        "{}",
        idp.issuer()
    );

    let discovery = idp.discovery();
    assert_eq!(discovery["issuer"], idp.issuer());
    assert_eq!(
        discovery["token_endpoint"],
        format!("{}/token", idp.issuer())
    );
    assert_eq!(
        discovery["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    let scopes = discovery["scopes_supported"].to_string();
    for scope in ["openid", "email", "groups"] {
        assert!(scopes.contains(scope), "{scope} missing from {scopes}");
    }
    let jwks = http_get(discovery["jwks_uri"].as_str().expect("jwks_uri")).expect("GET jwks");
    assert_eq!(jwks.json()["keys"][0]["kty"], "RSA");
}

/// A full authorization-code + PKCE login through login.mjs reaches the loopback redirect,
/// and the code redeems for an ID token carrying nonce, audience, email and groups.
#[test]
fn idp_login_with_pkce_yields_id_token_with_our_claims() {
    let idp = Idp::start(&[CLIENT], &[alice()]);
    let login = idp
        .login(
            &AuthRequest::new(CLIENT, "nonce-123"),
            "alice",
            "correct horse",
        )
        .unwrap_or_else(|e| panic!("login failed: {e}\nprovider log:\n{}", idp.log()));

    let response = idp.exchange(CLIENT, &login);
    assert_eq!(response.status, 200, "{}", response.text());
    let token = response.json()["id_token"]
        .as_str()
        .expect("id_token")
        .to_owned();
    let claims = jwt_claims(&token);
    assert_eq!(claims["iss"], idp.issuer());
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["aud"], CLIENT);
    assert_eq!(claims["nonce"], "nonce-123");
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["groups"], serde_json::json!(["dev", "ops"]));
    let (iat, exp) = (claims["iat"].as_u64(), claims["exp"].as_u64());
    assert_eq!(exp.zip(iat).map(|(e, i)| e - i), Some(600), "{claims}");
    assert!(iat.expect("iat").abs_diff(unix_now()) < 60, "{claims}");

    // A code is good once; the verifier must match.
    let again = idp.exchange(CLIENT, &login);
    assert_eq!(again.status, 400, "{}", again.text());
    let other = idp
        .login(&AuthRequest::new(CLIENT, "n2"), "alice", "correct horse")
        .expect("second login");
    let mut wrong = other;
    wrong.verifier = "a-verifier-that-does-not-match-the-challenge-0123456789".to_owned();
    let refused = idp.exchange(CLIENT, &wrong);
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert!(
        refused.text().contains("invalid_grant"),
        "{}",
        refused.text()
    );
}

/// The provider refuses what a token minter would let through: a wrong password, a request
/// without PKCE, an unregistered redirect path, an unknown client.
#[test]
fn idp_refuses_wrong_password_missing_pkce_and_foreign_redirects() {
    let idp = Idp::start(&[CLIENT], &[alice()]);

    let wrong = idp.login(&AuthRequest::new(CLIENT, "n"), "alice", "battery staple");
    let reason = wrong.expect_err("login with a wrong password");
    assert!(reason.contains("invalid user name or password"), "{reason}");

    let mut no_pkce = AuthRequest::new(CLIENT, "n");
    no_pkce.pkce = false;
    let reason = idp
        .login(&no_pkce, "alice", "correct horse")
        .expect_err("no PKCE");
    assert!(reason.contains("invalid_request"), "{reason}");

    let mut elsewhere = AuthRequest::new(CLIENT, "n");
    elsewhere.callback_path = "/elsewhere".to_owned();
    let reason = idp
        .login(&elsewhere, "alice", "correct horse")
        .expect_err("redirect");
    assert!(reason.contains("redirect_uri"), "{reason}");

    let stranger = AuthRequest::new("not-registered", "n");
    let reason = idp
        .login(&stranger, "alice", "correct horse")
        .expect_err("client");
    assert!(reason.contains("client"), "{reason}");
}

/// Accounts are read on every request: disabling a user or changing groups needs no restart,
/// a disabled user gets a clear refusal, and the ID token lifetime follows the account.
#[test]
fn idp_follows_account_changes_without_restart() {
    let idp = Idp::start(
        &[CLIENT],
        &[alice(), IdpAccount::new("bob", "pw").disabled()],
    );

    let reason = idp
        .id_token(CLIENT, "bob", "pw", "n")
        .expect_err("disabled bob");
    assert!(reason.contains("account bob is disabled"), "{reason}");
    let token = idp
        .id_token(CLIENT, "alice", "correct horse", "n")
        .expect("alice");
    assert_eq!(
        jwt_claims(&token)["groups"],
        serde_json::json!(["dev", "ops"])
    );

    idp.set_accounts(&[
        alice().groups(&["admins"]).id_token_ttl(1),
        IdpAccount::new("bob", "pw"),
    ]);
    let token = idp
        .id_token(CLIENT, "alice", "correct horse", "n")
        .expect("alice again");
    let claims = jwt_claims(&token);
    assert_eq!(claims["groups"], serde_json::json!(["admins"]));
    let lifetime = claims["exp"].as_u64().zip(claims["iat"].as_u64());
    assert_eq!(lifetime.map(|(e, i)| e - i), Some(1), "{claims}");
    idp.id_token(CLIENT, "bob", "pw", "n").expect("bob enabled");

    idp.set_accounts(&[alice().disabled()]);
    let reason = idp
        .id_token(CLIENT, "alice", "correct horse", "n")
        .expect_err("alice off");
    assert!(reason.contains("account alice is disabled"), "{reason}");
}

/// A user disabled between login and code redemption gets no ID token.
#[test]
fn idp_refuses_the_code_of_a_user_disabled_meanwhile() {
    let idp = Idp::start(&[CLIENT], &[alice()]);
    let login = idp
        .login(&AuthRequest::new(CLIENT, "n"), "alice", "correct horse")
        .expect("login");
    idp.set_accounts(&[alice().disabled()]);
    let response = idp.exchange(CLIENT, &login);
    assert_eq!(response.status, 400, "{}", response.text());
    assert!(
        response.text().contains("invalid_grant"),
        "{}",
        response.text()
    );
}

// ---------------------------------------------------------------------------------------------
// Compliance fake

/// The fake answers per device, records what it was asked, hangs on request and refuses
/// connections once stopped.
#[test]
fn compliance_fake_answers_hangs_and_stops() {
    let mut fake = ComplianceFake::start();
    fake.set("bad", ComplianceAnswer::NotCompliant);
    fake.set("odd", ComplianceAnswer::Raw(500, "oops".to_owned()));
    fake.set("slow", ComplianceAnswer::Hang);

    let base = fake.url();
    let get = |id: &str, timeout: Duration| {
        let url = format!("{base}/devices/{id}");
        let headers = [
            ("Accept", "application/json"),
            ("Authorization", "Bearer t0k"),
        ];
        http_request("GET", &url, &headers, b"", timeout)
    };
    let good = get("good", Duration::from_secs(5)).expect("good");
    assert_eq!(
        (good.status, good.json()),
        (200, serde_json::json!({"compliant": true}))
    );
    let bad = get("bad", Duration::from_secs(5)).expect("bad");
    assert_eq!(
        (bad.status, bad.json()),
        (200, serde_json::json!({"compliant": false}))
    );
    let odd = get("odd", Duration::from_secs(5)).expect("odd");
    assert_eq!((odd.status, odd.text().as_str()), (500, "oops"));

    let started = Instant::now();
    let hung = get("slow", Duration::from_millis(500));
    assert!(hung.is_err(), "a hanging device answered: {hung:?}");
    assert!(started.elapsed() >= Duration::from_millis(450));

    let seen = fake.requests();
    let ids: Vec<_> = seen.iter().filter_map(|r| r.device_id.as_deref()).collect();
    assert_eq!(ids, ["good", "bad", "odd", "slow"]);
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].path, "/devices/good");
    assert_eq!(seen[0].header("authorization"), Some("Bearer t0k"));
    assert_eq!(seen[0].header("accept"), Some("application/json"));

    fake.stop();
    let refused = get("good", Duration::from_secs(5));
    assert!(refused.is_err(), "answered after stop: {refused:?}");
}

// ---------------------------------------------------------------------------------------------
// Manufactured TPM

/// A TPM started from the manufactured state holds RSA and ECC P-384 EK certificates that
/// chain to the local CA, and has the harness's lockout settings.
#[test]
fn manufactured_tpm_has_ek_certificates_from_the_local_ca() {
    let made = ManufacturedTpm::shared();
    let tpm = made.start();

    let out = tpm.tpm2("tpm2_getcap", &["handles-nv-index"]);
    assert_ok(&out, "tpm2_getcap handles-nv-index");
    let indices = stdout(&out).to_ascii_lowercase();
    for index in ["0x1c00002", "0x1c00016", "0x1c08000"] {
        assert!(
            indices.contains(index),
            "NV index {index} missing:\n{indices}"
        );
    }
    assert_eq!(tpm.variable_property("TPM2_PT_MAX_AUTH_FAIL"), 32);

    let dir = tempdir();
    for (index, key) in [("0x01c00002", "rsaEncryption"), ("0x01c00016", "secp384r1")] {
        let der = dir.path().join(format!("{index}.der"));
        let der_arg = der.to_str().expect("UTF-8 path");
        assert_ok(
            &tpm.tpm2("tpm2_nvread", &[index, "-o", der_arg]),
            "tpm2_nvread",
        );

        let text = run(tool("openssl")
            .args(["x509", "-inform", "der", "-noout", "-text", "-in"])
            .arg(&der));
        assert_ok(&text, "openssl x509");
        assert!(
            stdout(&text).contains(key),
            "{index} is not {key}: {}",
            stdout(&text)
        );

        let pem = dir.path().join(format!("{index}.pem"));
        let convert = run(tool("openssl")
            .args(["x509", "-inform", "der", "-in"])
            .arg(&der)
            .arg("-out")
            .arg(&pem));
        assert_ok(&convert, "openssl x509 -out");
        let verify = run(tool("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(made.root_cert())
            .arg("-untrusted")
            .arg(made.issuer_cert())
            .arg(&pem));
        assert_ok(
            &verify,
            &format!("openssl verify of the EK certificate at {index}"),
        );
    }

    // A state of its own has another local CA, which does not vouch for the shared EK.
    let other = ManufacturedTpm::fresh();
    let shared_ek = dir.path().join("0x01c00002.pem");
    let verify = run(tool("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(other.root_cert())
        .arg("-untrusted")
        .arg(other.issuer_cert())
        .arg(&shared_ek));
    assert!(!verify.status.success(), "{}", describe(&verify));
}

// ---------------------------------------------------------------------------------------------
// sshd trusting a user CA

/// sshd with TrustedUserCAKeys and AuthorizedKeysFile none lets a certificate signed by the
/// CA in, and not the bare key, even when the bare key sits in the harness's authorized_keys.
#[test]
fn sshd_with_user_ca_accepts_certificates_only() {
    let dir = tempdir();
    let ca_key = plain_key(dir.path(), "ca", "ed25519");
    let ca_line = fs::read_to_string(ca_key.with_extension("pub")).expect("CA public key");
    let user_key = plain_key(dir.path(), "user", "ed25519");
    let user_public = dir.path().join("user.pub");
    let user_line = fs::read_to_string(&user_public).expect("user public key");
    let cert = sign_user_cert(&ca_key, &user_public, &[&current_user()], "-5m:+1h");
    assert!(cert.is_file(), "no certificate at {}", cert.display());

    let sshd = CaSshd::start_with_decoy(&ca_line, &user_line);

    let with_cert = SshAgent::start();
    with_cert.add(&user_key);
    let out = sshd.login(with_cert.socket(), &[]);
    assert_ok(
        &out,
        &format!("certificate login; sshd log:\n{}", sshd.log()),
    );
    assert_eq!(
        stdout(&out).trim(),
        format!("logged-in-as {}", current_user())
    );
    assert!(sshd.log().contains("ED25519-CERT"), "{}", sshd.log());

    // The same key without its certificate: sshd must not fall back to authorized_keys.
    let bare_dir = tempdir();
    let bare_key = bare_dir.path().join("bare");
    fs::copy(&user_key, &bare_key).expect("copy the key");
    let bare = SshAgent::start();
    bare.add(&bare_key);
    let out = sshd.login(bare.socket(), &[]);
    assert!(
        !out.status.success(),
        "bare key logged in: {}",
        describe(&out)
    );
    assert!(!stdout(&out).contains("logged-in-as"), "{}", describe(&out));
}
