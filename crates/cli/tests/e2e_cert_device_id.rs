//! `ssh-tpm-cert device-id` on a swtpm manufactured with EK certificates: it prints the id
//! the CA's inventory knows the device by, and writes the EK certificate with which the
//! administrator adds the device (`ssh-tpm-ca device add`), before any enrolment.

mod support;

use ssh_tpm_attest::ekcert::EkCertificate;
use support::ca::ManufacturedTpm;
use support::ca_world::{ca_bin, cert_bin};
use support::{assert_ok, run, stdout, tempdir, tool};

#[test]
fn device_id_prints_the_id_and_writes_the_ek_certificate_for_the_inventory() {
    let tpm = ManufacturedTpm::shared().start();
    let dir = tempdir();
    let out_path = dir.path().join("ek.der");

    // Its id is the one of the RSA certificate in NV, as tpm2_nvread reads it.
    let nv = dir.path().join("nv.der");
    let nv_arg = nv.to_str().expect("UTF-8 path");
    assert_ok(
        &tpm.tpm2("tpm2_nvread", &["0x01c00002", "-o", nv_arg]),
        "tpm2_nvread of the RSA EK certificate",
    );
    let nv = std::fs::read(&nv).expect("read the EK certificate");
    let id = EkCertificate::from_der(&nv).expect("parses").device_id();

    let out = run(tool(cert_bin())
        .env("HOME", dir.path())
        .args(["device-id", "--tcti", &tpm.tcti(), "--ek-cert-out"])
        .arg(&out_path));
    assert_ok(&out, "ssh-tpm-cert device-id");
    let said = stdout(&out);
    assert!(
        said.starts_with(&format!("Device id: {id} (rsa2048 EK certificate).\n")),
        "{said}"
    );
    assert!(said.contains("ssh-tpm-ca device add --ek-cert"), "{said}");
    let written = std::fs::read(&out_path).expect("the EK certificate was written");
    assert_eq!(written, nv);

    // The administrator's side takes it as it is.
    let ca_dir = dir.path().join("ca");
    assert_ok(
        &run(tool(ca_bin()).arg("init").arg("--dir").arg(&ca_dir)),
        "ssh-tpm-ca init",
    );
    let config = ca_dir.join("ca.toml");
    let added = run(tool(ca_bin())
        .arg("--config")
        .arg(&config)
        .args(["device", "add", "--user", "alice", "--ek-cert"])
        .arg(&out_path));
    assert_ok(&added, "ssh-tpm-ca device add");
    let listed = run(tool(ca_bin())
        .arg("--config")
        .arg(&config)
        .args(["device", "list"]));
    assert_ok(&listed, "ssh-tpm-ca device list");
    assert!(stdout(&listed).contains(&id), "{}", stdout(&listed));

    // The ECC certificate is another device id.
    let out = run(tool(cert_bin()).env("HOME", dir.path()).args([
        "device-id",
        "--tcti",
        &tpm.tcti(),
        "--ek",
        "ecc",
    ]));
    assert_ok(&out, "ssh-tpm-cert device-id --ek ecc");
    let said = stdout(&out);
    assert!(said.starts_with("Device id: "), "{said}");
    assert!(said.contains("(ecc-p384 EK certificate)"), "{said}");
    assert!(!said.contains(&id), "{said}");
}
