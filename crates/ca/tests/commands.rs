//! The `ssh-tpm-ca` commands through the library's entry point (the binary only adds logging):
//! init, the inventory, audit and krl on a real database; and `serve` over real TLS.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use clap::Parser as _;
use ssh_tpm_ca::cli::{run, run_to, Args};
use ssh_tpm_ca::{CaError, Config};

#[path = "support/tls.rs"]
mod tls;
use tls::tls_files;

fn ca(dir: &Path, args: &[&str]) -> Result<(), CaError> {
    let config = dir.join("ca.toml");
    let mut argv = vec!["ssh-tpm-ca", "--config", config.to_str().unwrap()];
    argv.extend_from_slice(args);
    run(Args::try_parse_from(argv).unwrap())
}

#[test]
fn init_inventory_audit_and_krl() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fixtures = format!("{}/../attest/tests/fixtures", env!("CARGO_MANIFEST_DIR"));
    let root = format!("{fixtures}/ca-root.pem");
    let intermediate = format!("{fixtures}/ca-intermediate.pem");
    let dir_arg = d.to_str().unwrap();
    ca(
        d,
        &[
            "init",
            "--dir",
            dir_arg,
            "--issuer",
            "http://127.0.0.1:3000",
            "--ek-root",
            &root,
            "--ek-root",
            &intermediate,
        ],
    )
    .unwrap();
    // Never twice.
    let again = ca(d, &["init", "--dir", dir_arg]).unwrap_err();
    assert!(again.to_string().contains("already exists"), "{again}");

    let ek = format!("{fixtures}/ek-rsa.der");
    let good = format!("0={}", "a".repeat(64));
    ca(
        d,
        &[
            "device",
            "add",
            "--ek-cert",
            &ek,
            "--user",
            "alice",
            "--pcr",
            &good,
        ],
    )
    .unwrap();
    let dup = ca(d, &["device", "add", "--ek-cert", &ek, "--user", "alice"]).unwrap_err();
    assert!(
        dup.to_string().contains("already in the inventory"),
        "{dup}"
    );
    let bad = ca(
        d,
        &[
            "device",
            "add",
            "--ek-cert",
            &ek,
            "--user",
            "a",
            "--pcr",
            "0=zz",
        ],
    );
    assert!(bad.unwrap_err().to_string().contains("INDEX=HEX"));

    let id = std::fs::read_to_string(format!("{fixtures}/ek-rsa.device-id")).unwrap();
    let id = id.trim();
    ca(d, &["device", "policy", id]).unwrap();
    ca(d, &["device", "retire", id]).unwrap();
    let missing = ca(d, &["device", "retire", "nope"]).unwrap_err();
    assert!(missing.to_string().contains("no device nope"), "{missing}");

    let config = Config::load(&d.join("ca.toml")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let devices = rt.block_on(async {
        let store = ssh_tpm_ca::SqliteStore::open(&config.database_url)
            .await
            .unwrap();
        ssh_tpm_ca::inventory::list(&store).await.unwrap()
    });
    assert!(devices.starts_with(id), "{devices}");
    assert!(
        devices.contains("retired") && devices.contains("no pcr policy"),
        "{devices}"
    );

    ca(d, &["audit"]).unwrap();
    ca(d, &["audit", "--json"]).unwrap();
    let krl = d.join("revoked.krl");
    ca(
        d,
        &["krl", "--out", krl.to_str().unwrap(), "--serial", "42"],
    )
    .unwrap();
    assert!(std::fs::read(&krl).unwrap().starts_with(b"SSHKRL\n\0"));

    // Serial 0 is never issued, and a KRL listing it is rejected whole by OpenSSH.
    let zero = d.join("zero.krl");
    let e = ca(
        d,
        &["krl", "--out", zero.to_str().unwrap(), "--serial", "0"],
    )
    .unwrap_err();
    assert!(
        e.to_string().starts_with("--serial 0: the CA never issues"),
        "{e}"
    );
    assert!(!zero.exists());
}

/// `ssh-tpm-ca audit | head`: output into a pipe whose reader has exited ends the command
/// quietly and successfully, with no panic.
#[test]
fn output_into_a_closed_pipe_is_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ca(d, &["init", "--dir", d.to_str().unwrap()]).unwrap();
    let config = d.join("ca.toml");
    for command in [&["audit"][..], &["audit", "--json"], &["device", "list"]] {
        let mut reader = Command::new("true").stdin(Stdio::piped()).spawn().unwrap();
        let mut pipe = reader.stdin.take().unwrap();
        assert!(reader.wait().unwrap().success());

        let mut argv = vec!["ssh-tpm-ca", "--config", config.to_str().unwrap()];
        argv.extend_from_slice(command);
        let args = Args::try_parse_from(argv).unwrap();
        run_to(args, &mut pipe).unwrap_or_else(|e| panic!("{command:?}: {e}"));
    }

    // Other output failures are still reported.
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full");
    if let Ok(mut full) = full {
        let argv = ["ssh-tpm-ca", "--config", config.to_str().unwrap(), "audit"];
        let e = run_to(Args::try_parse_from(argv).unwrap(), &mut full).unwrap_err();
        assert!(e.to_string().starts_with("cannot write the output"), "{e}");
    }
}

#[test]
fn a_config_above_24_hours_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ca(d, &["init", "--dir", d.to_str().unwrap()]).unwrap();
    let path = d.join("ca.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replace(
        "certificate_validity_secs = 57600",
        "certificate_validity_secs = 90000",
    );
    std::fs::write(&path, text).unwrap();
    let e = ca(d, &["serve"]).unwrap_err();
    assert!(e.to_string().contains("24 hours"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_over_tls_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = tls_files(dir.path());
    let text = format!(
        r#"
listen = "0.0.0.0:8443"
tls_cert = "{}"
tls_key = "{}"
ca_key = "ca_key"
[oidc]
issuer = "https://idp.example"
client_id = "ssh-tpm"
[compliance]
url = "https://mdm.example"
"#,
        cert.display(),
        key.display()
    );
    let config = Config::from_toml(&text, &dir.path().join("ca.toml")).unwrap();
    let store: Arc<dyn ssh_tpm_ca::Store> = Arc::new(
        ssh_tpm_ca::SqliteStore::open(&config.database_url)
            .await
            .unwrap(),
    );
    let ca_key =
        ssh_key::PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519).unwrap();
    let authority = Arc::new(
        ssh_tpm_ca::Authority::new(
            config,
            store,
            ca_key,
            ssh_tpm_attest::ekcert::TrustAnchors::new(),
        )
        .unwrap(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(ssh_tpm_ca::serve(authority, listener, async {
        let _ = stopped.await;
    }));

    let root = reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(root)
        .build()
        .unwrap();
    let info: serde_json::Value = client
        .get(format!("https://127.0.0.1:{port}/v1/info"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["client_id"], "ssh-tpm");

    // Plain HTTP on the TLS port gets no API answer.
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/v1/info")).await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
