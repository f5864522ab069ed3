//! MakeCredential against a real TPM: credentials made here for EKs read from a manufactured
//! swtpm (the RSA EK taken from its certificate, ECC keys with the P-256 and P-384 EK
//! parameters) are recovered by TPM2_ActivateCredential through tpm2-tools, and only for the
//! AK they name. Skipped (with a message) when swtpm or tpm2-tools are not installed.

#![allow(clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ssh_tpm_attest::checks::check_ak_public;
use ssh_tpm_attest::credential::{make_credential, EkPublicKey};
use ssh_tpm_attest::ekcert::{EkCertificate, TrustAnchors};
use ssh_tpm_attest::tpm::Public;

const TOOLS: [&str; 10] = [
    "swtpm",
    "swtpm_setup",
    "swtpm_ioctl",
    "swtpm_localca",
    "tpm2_createprimary",
    "tpm2_readpublic",
    "tpm2_activatecredential",
    "tpm2_makecredential",
    "tpm2_nvread",
    "tpm2_policysecret",
];

const AK_ATTRS: &str = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign";
const EK_ATTRS: &str = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|decrypt";

fn missing_tools() -> Vec<&'static str> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    TOOLS
        .into_iter()
        .filter(|t| !std::env::split_paths(&path).any(|d| d.join(t).is_file()))
        .collect()
}

macro_rules! require_tools {
    () => {
        let missing = missing_tools();
        if !missing.is_empty() {
            eprintln!(
                "skipped: {} not installed (scripts/setup.sh installs them)",
                missing.join(", ")
            );
            return;
        }
    };
}

/// A manufactured swtpm (EK certificates from a private local CA) serving on loopback.
struct Swtpm {
    dir: tempfile::TempDir,
    child: Child,
    port: u16,
}

impl Swtpm {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_owned();
        std::fs::create_dir_all(d.join("ca")).unwrap();
        std::fs::create_dir_all(d.join("state")).unwrap();
        let ca = d.join("ca");
        std::fs::write(
            d.join("localca.conf"),
            format!(
                "statedir = {ca}\nsigningkey = {ca}/signkey.pem\nissuercert = {ca}/issuercert.pem\n\
                 certserial = {ca}/certserial\n",
                ca = ca.display()
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("setup.conf"),
            format!(
                "create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = {}\n\
                 create_certs_tool_options = /etc/swtpm-localca.options\nactive_pcr_banks = sha256\n",
                d.join("localca.conf").display()
            ),
        )
        .unwrap();
        let out = Command::new("swtpm_setup")
            .args(["--tpm2", "--create-ek-cert", "--overwrite", "--tpmstate"])
            .arg(d.join("state"))
            .arg("--config")
            .arg(d.join("setup.conf"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "swtpm_setup: {}",
            String::from_utf8_lossy(&out.stdout)
        );

        for _ in 0..20 {
            let port = free_port_pair();
            let mut child = Command::new("swtpm")
                .args(["socket", "--tpm2", "--flags", "not-need-init,startup-clear"])
                .arg("--tpmstate")
                .arg(format!("dir={}", d.join("state").display()))
                .args([
                    "--server",
                    &format!("type=tcp,port={port},bindaddr=127.0.0.1"),
                ])
                .args([
                    "--ctrl",
                    &format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            if wait_ready(&mut child, port, &d) {
                return Self { dir, child, port };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("swtpm did not start");
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn try_tpm2(&self, args: &[&str]) -> Output {
        Command::new(args[0])
            .args(&args[1..])
            .env(
                "TPM2TOOLS_TCTI",
                format!("swtpm:host=127.0.0.1,port={}", self.port),
            )
            .current_dir(self.dir.path())
            .output()
            .unwrap()
    }

    /// Runs a tpm2-tools command, then flushes what it left loaded (swtpm holds 3 objects).
    fn tpm2(&self, args: &[&str]) -> Output {
        let out = self.try_tpm2(args);
        self.flush();
        assert!(
            out.status.success(),
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn flush(&self) {
        self.try_tpm2(&["tpm2_flushcontext", "-t"]);
        self.try_tpm2(&["tpm2_flushcontext", "-s"]);
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }

    /// The protocol's AK; returns its public area after checking the name tpm2-tools computed.
    fn create_ak(&self) -> Public {
        self.tpm2(&[
            "tpm2_createprimary",
            "-Q",
            "-C",
            "e",
            "-g",
            "sha256",
            "-G",
            "ecc256:ecdsa-sha256:null",
            "-a",
            AK_ATTRS,
            "-c",
            "ak.ctx",
        ]);
        self.tpm2(&[
            "tpm2_readpublic",
            "-Q",
            "-c",
            "ak.ctx",
            "-f",
            "tpmt",
            "-o",
            "ak.tpmt",
            "-n",
            "ak.name",
        ]);
        let ak = Public::decode(&self.read("ak.tpmt")).unwrap();
        check_ak_public(&ak).unwrap();
        assert_eq!(
            ak.name(),
            self.read("ak.name"),
            "our AK name differs from tpm2-tools'"
        );
        ak
    }

    /// Writes tpm2-tools' credential file: magic, version, TPM2B_ID_OBJECT,
    /// TPM2B_ENCRYPTED_SECRET.
    fn write_credential(&self, name: &str, blob: &[u8], secret: &[u8]) {
        let mut file = vec![0xba, 0xdc, 0xc0, 0xde, 0, 0, 0, 1];
        for part in [blob, secret] {
            file.extend_from_slice(&u16::try_from(part.len()).unwrap().to_be_bytes());
            file.extend_from_slice(part);
        }
        std::fs::write(self.path(name), file).unwrap();
    }

    /// TPM2_ActivateCredential with the AK in ak.ctx and `ek` (a handle or a context file);
    /// `policy_secret` satisfies a TCG EK's policy with PolicySecret(TPM_RH_ENDORSEMENT).
    fn activate(&self, ek: &str, credential: &str, policy_secret: bool) -> Option<Vec<u8>> {
        let _ = std::fs::remove_file(self.path("activated"));
        let mut args = vec![
            "tpm2_activatecredential",
            "-c",
            "ak.ctx",
            "-C",
            ek,
            "-i",
            credential,
            "-o",
            "activated",
        ];
        if policy_secret {
            // Not through tpm2(), whose flush would end the session.
            let out = self.try_tpm2(&[
                "tpm2_startauthsession",
                "--policy-session",
                "-S",
                "session.ctx",
            ]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let out = self.try_tpm2(&["tpm2_policysecret", "-S", "session.ctx", "-c", "e"]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            args.extend(["-P", "session:session.ctx"]);
        }
        let out = self.try_tpm2(&args);
        if policy_secret {
            self.try_tpm2(&["tpm2_flushcontext", "session.ctx"]);
        }
        self.flush();
        out.status.success().then(|| self.read("activated"))
    }

    /// The sizes of tpm2_makecredential's two outputs for the EK public area in `ek_tss`.
    fn tools_credential_sizes(&self, ek_tss: &str, ak_name: &[u8]) -> (usize, usize) {
        std::fs::write(self.path("tools-secret"), b"0123456789abcdef").unwrap();
        let name_hex: String = ak_name.iter().map(|b| format!("{b:02x}")).collect();
        let out = Command::new("tpm2_makecredential")
            .args([
                "-T",
                "none",
                "-u",
                ek_tss,
                "-s",
                "tools-secret",
                "-n",
                &name_hex,
            ])
            .args(["-o", "tools-credential"])
            .current_dir(self.dir())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let file = self.read("tools-credential");
        let blob = usize::from(u16::from_be_bytes([file[8], file[9]]));
        let secret_at = 10 + blob;
        let secret = usize::from(u16::from_be_bytes([file[secret_at], file[secret_at + 1]]));
        assert_eq!(file.len(), secret_at + 2 + secret);
        (blob, secret)
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        self.try_tpm2(&["tpm2_shutdown"]);
        let _ = Command::new("swtpm_ioctl")
            .args(["--tcp", &format!("127.0.0.1:{}", self.port + 1), "-s"])
            .output();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_tpm2(port: u16, dir: &Path, args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .env(
            "TPM2TOOLS_TCTI",
            format!("swtpm:host=127.0.0.1,port={port}"),
        )
        .current_dir(dir)
        .output()
        .unwrap()
}

fn wait_ready(child: &mut Child, port: u16, dir: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return false;
        }
        if run_tpm2(port, dir, &["tpm2_getrandom", "1"])
            .status
            .success()
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A port P with P and P+1 free on loopback (never 2321).
fn free_port_pair() -> u16 {
    loop {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = a.local_addr().unwrap().port();
        if port == 2321 || port == 2320 || port == u16::MAX {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

#[test]
fn credentials_to_the_rsa_ek_from_its_certificate_activate() {
    require_tools!();
    let tpm = Swtpm::start();

    // The EK key comes from the certificate in NV, which the local CA signed.
    tpm.tpm2(&["tpm2_nvread", "0x01c00002", "-o", "ek-rsa.der"]);
    let cert = EkCertificate::from_der(&tpm.read("ek-rsa.der")).unwrap();
    let anchors =
        TrustAnchors::from_pem(&std::fs::read(tpm.path("ca/issuercert.pem")).unwrap()).unwrap();
    cert.verify_chain(&anchors).unwrap();
    let ek = cert.public_key().unwrap();
    assert!(matches!(ek, EkPublicKey::Rsa2048 { .. }));

    // It is the key of the EK swtpm_setup made persistent (template L-1).
    tpm.tpm2(&[
        "tpm2_readpublic",
        "-Q",
        "-c",
        "0x81010001",
        "-f",
        "tpmt",
        "-o",
        "ek.tpmt",
    ]);
    tpm.tpm2(&["tpm2_readpublic", "-Q", "-c", "0x81010001", "-o", "ek.tss"]);
    let ek_public = Public::decode(&tpm.read("ek.tpmt")).unwrap();
    assert_eq!(EkPublicKey::from_tpm_public(&ek_public).unwrap(), ek);

    let ak = tpm.create_ak();
    let secret = b"enrolment secret 0123456789abcd";
    let (blob, encrypted) =
        make_credential(&ek, &ak.name(), secret, &mut rand_core::OsRng).unwrap();
    assert_eq!(
        tpm.tools_credential_sizes("ek.tss", &ak.name()),
        (blob.len() - secret.len() + 16, encrypted.len()),
        "structure sizes differ from tpm2_makecredential's"
    );
    tpm.write_credential("credential", &blob, &encrypted);
    assert_eq!(
        tpm.activate("0x81010001", "credential", true).unwrap(),
        secret
    );

    // A credential for another name does not activate for this AK.
    let mut other = ak.name();
    other[5] ^= 1;
    let (blob, encrypted) = make_credential(&ek, &other, secret, &mut rand_core::OsRng).unwrap();
    tpm.write_credential("other", &blob, &encrypted);
    assert_eq!(tpm.activate("0x81010001", "other", true), None);
}

#[test]
fn credentials_to_ecc_p256_and_p384_eks_activate() {
    require_tools!();
    let tpm = Swtpm::start();

    // The P-384 EK certificate's key is the persistent H-3 EK's, with SHA-384 and AES-256.
    tpm.tpm2(&["tpm2_nvread", "0x01c00016", "-o", "ek-p384.der"]);
    let from_cert = EkCertificate::from_der(&tpm.read("ek-p384.der"))
        .unwrap()
        .public_key()
        .unwrap();
    tpm.tpm2(&[
        "tpm2_readpublic",
        "-Q",
        "-c",
        "0x81010016",
        "-f",
        "tpmt",
        "-o",
        "ek384.tpmt",
    ]);
    let persistent = Public::decode(&tpm.read("ek384.tpmt")).unwrap();
    assert_eq!(
        EkPublicKey::from_tpm_public(&persistent).unwrap(),
        from_cert
    );

    // The H-3 EK's policy needs more than PolicySecret, so the activations use keys with the
    // EK parameters (curve, nameAlg, AES-CFB) and an empty password instead.
    let ak = tpm.create_ak();
    for (alg, hash, sym) in [
        ("ecc256", "sha256", "aes128cfb"),
        ("ecc384", "sha384", "aes256cfb"),
    ] {
        tpm.tpm2(&[
            "tpm2_createprimary",
            "-Q",
            "-C",
            "e",
            "-g",
            hash,
            "-G",
            &format!("{alg}:null:{sym}"),
            "-a",
            EK_ATTRS,
            "-c",
            "ek.ctx",
        ]);
        tpm.tpm2(&[
            "tpm2_readpublic",
            "-Q",
            "-c",
            "ek.ctx",
            "-f",
            "tpmt",
            "-o",
            "ek.tpmt",
        ]);
        tpm.tpm2(&["tpm2_readpublic", "-Q", "-c", "ek.ctx", "-o", "ek.tss"]);
        let ek =
            EkPublicKey::from_tpm_public(&Public::decode(&tpm.read("ek.tpmt")).unwrap()).unwrap();

        let secret = vec![0x5a; ek.name_alg().size()];
        let (blob, encrypted) =
            make_credential(&ek, &ak.name(), &secret, &mut rand_core::OsRng).unwrap();
        assert_eq!(
            tpm.tools_credential_sizes("ek.tss", &ak.name()),
            (blob.len() - secret.len() + 16, encrypted.len()),
            "{alg}: structure sizes differ from tpm2_makecredential's"
        );
        tpm.write_credential("credential", &blob, &encrypted);
        assert_eq!(
            tpm.activate("ek.ctx", "credential", false).unwrap(),
            secret,
            "{alg}"
        );

        // Tampering with either part is detected by the TPM.
        let mut bad = blob.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        tpm.write_credential("bad", &bad, &encrypted);
        assert_eq!(tpm.activate("ek.ctx", "bad", false), None, "{alg}");
    }
}
