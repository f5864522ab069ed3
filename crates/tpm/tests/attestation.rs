//! The attestation commands against a swtpm manufactured with EK certificates: EK
//! certificates and public keys, ActivateCredential with credentials made by tpm2-tools,
//! TPM2_Certify and TPM2_Quote checked byte by byte and by their signatures.

#![allow(clippy::unwrap_used)]

mod ek_swtpm;

use std::fs;

use ek_swtpm::Swtpm;
use p256::ecdsa::signature::Verifier as _;
use sha2::{Digest as _, Sha256};
use ssh_tpm_tpm::{AkTemplate, EkKind, Error, KeySpec, Pin, Tpm, TpmTarget};
use x509_cert::der::{Decode as _, Encode as _};

const TPM_GENERATED: u32 = 0xff54_4347;
const ST_ATTEST_CERTIFY: u16 = 0x8017;
const ST_ATTEST_QUOTE: u16 = 0x8018;

fn open(swtpm: &Swtpm) -> Tpm {
    Tpm::open(&TpmTarget::Tcti(swtpm.tcti())).unwrap()
}

/// Big-endian TPM unmarshalling for the checks.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.take(2).try_into().unwrap())
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take(4).try_into().unwrap())
    }
    fn tpm2b(&mut self) -> &'a [u8] {
        let size = usize::from(self.u16());
        self.take(size)
    }
}

/// The parts of a TPMS_ATTEST (TPM 2.0 Part 2, 10.12.12) the CA checks.
struct Attest<'a> {
    magic: u32,
    kind: u16,
    extra_data: &'a [u8],
    /// TPMU_ATTEST.
    attested: Reader<'a>,
}

fn parse_attest(bytes: &[u8]) -> Attest<'_> {
    let mut r = Reader(bytes);
    let magic = r.u32();
    let kind = r.u16();
    let _qualified_signer = r.tpm2b();
    let extra_data = r.tpm2b();
    let _clock_info = r.take(8 + 4 + 4 + 1);
    let _firmware_version = r.take(8);
    Attest {
        magic,
        kind,
        extra_data,
        attested: r,
    }
}

/// The AK's verifying key from its TPMT_PUBLIC (ECC P-256, ECDSA-SHA256, as the protocol
/// fixes it).
fn ak_verifying_key(public: &[u8]) -> p256::ecdsa::VerifyingKey {
    let mut r = Reader(public);
    assert_eq!(r.u16(), 0x0023, "TPM_ALG_ECC");
    assert_eq!(r.u16(), 0x000B, "nameAlg SHA-256");
    assert_eq!(r.u32(), 0x0005_0072, "AK attributes");
    assert!(r.tpm2b().is_empty(), "empty authPolicy");
    assert_eq!(r.u16(), 0x0010, "no symmetric");
    assert_eq!((r.u16(), r.u16()), (0x0018, 0x000B), "ECDSA with SHA-256");
    assert_eq!(r.u16(), 0x0003, "NIST P-256");
    assert_eq!(r.u16(), 0x0010, "no KDF");
    let x = r.tpm2b();
    let y = r.tpm2b();
    let point = [&[0x04][..], x, y].concat();
    p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).unwrap()
}

/// Verifies a TPMT_SIGNATURE (ECDSA, SHA-256) over `message`.
fn verify(ak_public: &[u8], message: &[u8], signature: &[u8]) {
    let mut r = Reader(signature);
    assert_eq!((r.u16(), r.u16()), (0x0018, 0x000B), "ECDSA with SHA-256");
    let (sig_r, sig_s) = (r.tpm2b(), r.tpm2b());
    let pad = |v: &[u8]| {
        let mut out = [0u8; 32];
        out[32 - v.len()..].copy_from_slice(v);
        out
    };
    let signature =
        p256::ecdsa::Signature::from_scalars(pad(sig_r), pad(sig_s)).expect("valid scalars");
    ak_verifying_key(ak_public)
        .verify(message, &signature)
        .expect("the AK's signature verifies");
}

/// The name of an object: nameAlg SHA-256 and the digest of its TPMT_PUBLIC.
fn name(tpmt_public: &[u8]) -> Vec<u8> {
    [&[0x00, 0x0B][..], &Sha256::digest(tpmt_public)].concat()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn spki(certificate: &[u8]) -> Vec<u8> {
    x509_cert::Certificate::from_der(certificate)
        .expect("the EK certificate is DER X.509")
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .unwrap()
}

#[test]
fn ek_certificates_are_read_and_match_the_eks_made_from_the_templates() {
    let swtpm = Swtpm::start();
    let mut tpm = open(&swtpm);
    let certificates = tpm.ek_certificates().unwrap();
    let kinds: Vec<EkKind> = certificates.iter().map(|(kind, _)| *kind).collect();
    assert_eq!(kinds, [EkKind::Rsa2048, EkKind::EccP384]);
    for (kind, der) in &certificates {
        let made = tpm.ek_public_key_der(*kind).unwrap();
        assert_eq!(spki(der), made, "{kind:?}: the EK is the certificate's key");
    }
    drop(tpm);
    assert_eq!(swtpm.transient_handles(), Vec::<String>::new());
}

/// A credential for `secret` made by tpm2-tools without a TPM, to the EK at the persistent
/// handle swtpm_setup left (the same key the template makes) and the AK's name.
fn make_credential(swtpm: &Swtpm, ek_handle: &str, ak_public: &[u8], secret: &[u8]) -> Credential {
    let ek_pub = swtpm.scratch().join(format!("ek-{ek_handle}.pub"));
    swtpm.tpm2(
        "tpm2_readpublic",
        &["-c", ek_handle, "-o", ek_pub.to_str().unwrap()],
    );
    make_credential_to(swtpm, &ek_pub, ak_public, secret)
}

/// A credential made by tpm2-tools without a TPM, to the EK whose TPM2B_PUBLIC is in
/// `ek_pub`.
fn make_credential_to(
    swtpm: &Swtpm,
    ek_pub: &std::path::Path,
    ak_public: &[u8],
    secret: &[u8],
) -> Credential {
    let dir = swtpm.scratch();
    fs::write(dir.join("secret"), secret).unwrap();
    let blob = dir.join("credential");
    let out = ek_swtpm::run(
        std::process::Command::new("tpm2_makecredential")
            .args(["-T", "none", "-u"])
            .arg(ek_pub)
            .arg("-n")
            .arg(hex(&name(ak_public)))
            .arg("-s")
            .arg(dir.join("secret"))
            .arg("-o")
            .arg(&blob),
    );
    assert!(out.status.success(), "{}", ek_swtpm::describe(&out));

    // tpm2-tools' file: magic 0xBADCC0DE, version 1, TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET.
    let bytes = fs::read(&blob).unwrap();
    let mut r = Reader(&bytes);
    assert_eq!((r.u32(), r.u32()), (0xBADC_C0DE, 1));
    Credential {
        blob: r.tpm2b().to_vec(),
        secret: r.tpm2b().to_vec(),
    }
}

struct Credential {
    blob: Vec<u8>,
    secret: Vec<u8>,
}

#[test]
fn activate_credential_opens_tpm2_tools_credentials_for_rsa_and_p384_eks() {
    let swtpm = Swtpm::start();
    let ak_public = {
        let mut tpm = open(&swtpm);
        tpm.attestation_key_public(AkTemplate::Standard).unwrap()
    };
    let secret = b"a challenge from the CA, 32 byte";
    let rsa = make_credential(&swtpm, "0x81010001", &ak_public, secret);
    let p384 = make_credential(&swtpm, "0x81010016", &ak_public, secret);

    let mut tpm = open(&swtpm);
    let opened = tpm
        .activate_credential(
            EkKind::Rsa2048,
            AkTemplate::Standard,
            &rsa.blob,
            &rsa.secret,
        )
        .unwrap();
    assert_eq!(opened.as_slice(), secret);
    let opened = tpm
        .activate_credential(
            EkKind::EccP384,
            AkTemplate::Standard,
            &p384.blob,
            &p384.secret,
        )
        .unwrap();
    assert_eq!(opened.as_slice(), secret);

    // Another AK, another EK, or an altered blob: refused, and said why.
    let refusals = [
        (
            EkKind::EccP384,
            AkTemplate::Variant(1),
            &p384.blob,
            &p384.secret,
        ),
        (
            EkKind::EccP384,
            AkTemplate::Standard,
            &rsa.blob,
            &rsa.secret,
        ),
        (
            EkKind::Rsa2048,
            AkTemplate::Standard,
            &p384.blob,
            &p384.secret,
        ),
    ];
    for (ek, ak, blob, encrypted) in refusals {
        let err = tpm
            .activate_credential(ek, ak, blob, encrypted)
            .unwrap_err();
        assert!(
            err.to_string().contains("could not open the credential"),
            "{ek:?} {ak:?}: {err}"
        );
    }
    let mut altered = rsa.blob.clone();
    *altered.last_mut().unwrap() ^= 1;
    let err = tpm
        .activate_credential(EkKind::Rsa2048, AkTemplate::Standard, &altered, &rsa.secret)
        .unwrap_err();
    assert!(
        err.to_string().contains("altered on the way"),
        "altered blob: {err}"
    );
    drop(tpm);
    assert_eq!(swtpm.transient_handles(), Vec::<String>::new());
}

#[test]
fn certify_key_is_signed_by_the_ak_over_the_keys_name() {
    let swtpm = Swtpm::start();
    let mut tpm = open(&swtpm);
    let pin = Pin::from("1234".to_string());
    let key = tpm.create_key(KeySpec::EcdsaP256, &pin).unwrap();
    let no_pin = tpm.create_key(KeySpec::Rsa2048, &Pin::empty()).unwrap();
    let ak_public = tpm.attestation_key_public(AkTemplate::Standard).unwrap();
    let qualifying = Sha256::digest(b"session and nonce").to_vec();

    for (key, pin) in [(&key, &pin), (&no_pin, &Pin::empty())] {
        let certified = tpm
            .certify_key(key, pin, AkTemplate::Standard, &qualifying)
            .unwrap();
        let mut attest = parse_attest(&certified.attest);
        assert_eq!(attest.magic, TPM_GENERATED);
        assert_eq!(attest.kind, ST_ATTEST_CERTIFY);
        assert_eq!(attest.extra_data, qualifying);
        let certified_name = attest.attested.tpm2b();
        assert_eq!(certified_name, name(&key.pubkey[2..]), "the key's name");
        verify(&ak_public, &certified.attest, &certified.signature);
    }

    // A second AK signs too, and differently.
    let other = tpm.attestation_key_public(AkTemplate::Variant(7)).unwrap();
    assert_ne!(other, ak_public);
    let certified = tpm
        .certify_key(&key, &pin, AkTemplate::Variant(7), &qualifying)
        .unwrap();
    verify(&other, &certified.attest, &certified.signature);

    // The key still signs after the parents made room for the AK.
    let signature = tpm.sign(&key, &pin, ssh_tpm_tpm::SignHash::Sha256, b"data");
    assert!(signature.is_ok(), "{signature:?}");
    drop(tpm);
    assert_eq!(swtpm.transient_handles(), Vec::<String>::new());
}

/// tpm2-tools reads the quote too (tpm2_print 5.4 does not know certifications).
fn check_with_tpm2_print(swtpm: &Swtpm, attest: &[u8], qualifying: &[u8]) {
    let path = swtpm.scratch().join("attest");
    fs::write(&path, attest).unwrap();
    let out = ek_swtpm::run(
        std::process::Command::new("tpm2_print")
            .args(["-t", "TPMS_ATTEST"])
            .arg(&path),
    );
    assert!(out.status.success(), "{}", ek_swtpm::describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("magic: ff544347"), "{text}");
    assert!(text.contains("type: 8018"), "{text}");
    assert!(
        text.contains(&format!("extraData: {}", hex(qualifying))),
        "{text}"
    );
}

#[test]
fn certify_with_a_wrong_pin_fails_once_and_says_how_many_tries_are_left() {
    let swtpm = Swtpm::start();
    let mut tpm = open(&swtpm);
    let key = tpm
        .create_key(KeySpec::EcdsaP256, &Pin::from("right".to_string()))
        .unwrap();
    let before = tpm.lockout_status().unwrap();
    let err = tpm
        .certify_key(
            &key,
            &Pin::from("wrong".to_string()),
            AkTemplate::Standard,
            &[1; 32],
        )
        .unwrap_err();
    let after = tpm.lockout_status().unwrap();
    assert_eq!(
        after.failures,
        before.failures + 1,
        "exactly one try counted"
    );
    match err {
        Error::WrongPin { tries_left } => assert_eq!(tries_left, Some(after.tries_left())),
        other => panic!("expected WrongPin, got {other}"),
    }

    // An empty PIN for a PIN key never reaches the TPM.
    let err = tpm
        .certify_key(&key, &Pin::empty(), AkTemplate::Standard, &[1; 32])
        .unwrap_err();
    assert!(matches!(err, Error::PinRequired), "{err}");
    assert_eq!(tpm.lockout_status().unwrap().failures, after.failures);

    // Keys with a policy are refused before the TPM is asked.
    let mut bound = key.clone();
    bound.policy.push(ssh_tpm_keyfile::TpmPolicy {
        command_code: 0x16B,
        command_policy: Vec::new(),
    });
    let err = tpm
        .certify_key(&bound, &Pin::empty(), AkTemplate::Standard, &[1; 32])
        .unwrap_err();
    assert!(err.to_string().contains("policy-bound keys"), "{err}");
    drop(tpm);
    assert_eq!(swtpm.transient_handles(), Vec::<String>::new());
}

#[test]
fn quote_covers_the_returned_pcr_values() {
    let swtpm = Swtpm::start();
    // Something in a boot PCR, so that the values are not all zero.
    swtpm.tpm2(
        "tpm2_pcrextend",
        &["7:sha256=0101010101010101010101010101010101010101010101010101010101010101"],
    );
    let mut tpm = open(&swtpm);
    let ak_public = tpm.attestation_key_public(AkTemplate::Standard).unwrap();
    let qualifying = Sha256::digest(b"quote me").to_vec();

    // 0-7 fit one TPM2_PCR_Read; 0-9 and 16 take two.
    for selection in [
        (0..=7).collect::<Vec<u8>>(),
        vec![16, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    ] {
        let quote = tpm
            .quote(AkTemplate::Standard, &qualifying, &selection)
            .unwrap();
        let mut wanted = selection.clone();
        wanted.sort_unstable();
        let indexes: Vec<u8> = quote.pcrs.iter().map(|(i, _)| *i).collect();
        assert_eq!(indexes, wanted);
        assert!(quote.pcrs.iter().all(|(_, v)| v.len() == 32));
        assert_ne!(quote.pcrs[7].1, [0u8; 32], "PCR 7 was extended");

        let mut attest = parse_attest(&quote.attestation.attest);
        assert_eq!(attest.magic, TPM_GENERATED);
        assert_eq!(attest.kind, ST_ATTEST_QUOTE);
        assert_eq!(attest.extra_data, qualifying);
        // TPMS_QUOTE_INFO: TPML_PCR_SELECTION, then pcrDigest.
        let r = &mut attest.attested;
        assert_eq!(r.u32(), 1, "one bank");
        assert_eq!(r.u16(), 0x000B, "SHA-256 bank");
        let select_size = usize::from(r.take(1)[0]);
        let bitmap = r.take(select_size);
        let selected: Vec<u8> = (0..select_size * 8)
            .filter(|i| bitmap[i / 8] & (1 << (i % 8)) != 0)
            .map(|i| i as u8)
            .collect();
        assert_eq!(selected, wanted);
        let mut digest = Sha256::new();
        for (_, value) in &quote.pcrs {
            digest.update(value);
        }
        assert_eq!(r.tpm2b(), digest.finalize().as_slice(), "pcrDigest");
        verify(
            &ak_public,
            &quote.attestation.attest,
            &quote.attestation.signature,
        );
        check_with_tpm2_print(&swtpm, &quote.attestation.attest, &qualifying);
    }
    drop(tpm);
    assert_eq!(swtpm.transient_handles(), Vec::<String>::new());
}

/// Runs openssl in `dir`.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = ek_swtpm::run(
        std::process::Command::new("openssl")
            .current_dir(dir)
            .args(args),
    );
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        ek_swtpm::describe(&out)
    );
}

/// swtpm_setup makes no P-256 EK certificate: this test issues one from the local CA for
/// the L-2 EK, longer than one TPM2_NV_Read (swtpm's NV buffer is 1024 bytes), in an index
/// larger than the certificate, and enrols with that EK.
#[test]
fn p256_ek_certificate_longer_than_one_nv_read_and_its_ek() {
    let swtpm = Swtpm::start();
    let dir = swtpm.scratch().to_path_buf();
    let (spki_der, ak_public) = {
        let mut tpm = open(&swtpm);
        assert!(
            tpm.ek_certificates().unwrap().len() == 2,
            "no P-256 certificate yet"
        );
        (
            tpm.ek_public_key_der(EkKind::EccP256).unwrap(),
            tpm.attestation_key_public(AkTemplate::Standard).unwrap(),
        )
    };

    // The certificate: the EK's key forced into a request made with a throwaway key, a
    // long comment extension to pass 1024 bytes, signed by swtpm's local CA.
    let ca = ek_swtpm::manufactured().join("ca");
    fs::write(dir.join("ek.der"), &spki_der).unwrap();
    fs::write(
        dir.join("ext.cnf"),
        format!("nsComment = \"{}\"\n", "padding ".repeat(80)),
    )
    .unwrap();
    openssl(
        &dir,
        &[
            "pkey", "-pubin", "-inform", "DER", "-in", "ek.der", "-out", "ek.pem",
        ],
    );
    openssl(
        &dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "throwaway.key",
            "-subj",
            "/CN=P-256 EK",
            "-out",
            "ek.csr",
        ],
    );
    let issuer = ca.join("issuercert.pem");
    let signer = ca.join("signkey.pem");
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "ek.csr",
            "-force_pubkey",
            "ek.pem",
            "-CA",
            issuer.to_str().unwrap(),
            "-CAkey",
            signer.to_str().unwrap(),
            "-set_serial",
            "7",
            "-days",
            "30",
            "-extfile",
            "ext.cnf",
            "-outform",
            "DER",
            "-out",
            "cert.der",
        ],
    );
    let certificate = fs::read(dir.join("cert.der")).unwrap();
    assert!(certificate.len() > 1024, "{} bytes", certificate.len());
    let size = (certificate.len() + 64).to_string();
    let attributes = "ownerread|ownerwrite|authread|authwrite|no_da";
    swtpm.tpm2(
        "tpm2_nvdefine",
        &["0x01c0000a", "-C", "o", "-s", &size, "-a", attributes],
    );
    let cert_path = dir.join("cert.der");
    swtpm.tpm2(
        "tpm2_nvwrite",
        &["0x01c0000a", "-C", "o", "-i", cert_path.to_str().unwrap()],
    );

    // The L-2 EK's public area for tpm2_makecredential, from tpm2-tools' own template.
    let ek_pub = dir.join("ek-p256.pub");
    let ek_ctx = dir.join("ek-p256.ctx");
    swtpm.tpm2(
        "tpm2_createek",
        &[
            "-G",
            "ecc",
            "-u",
            ek_pub.to_str().unwrap(),
            "-c",
            ek_ctx.to_str().unwrap(),
        ],
    );
    swtpm.tpm2("tpm2_flushcontext", &["-t"]);
    let secret = b"p-256 challenge";
    let credential = make_credential_to(&swtpm, &ek_pub, &ak_public, secret);

    let mut tpm = open(&swtpm);
    let certificates = tpm.ek_certificates().unwrap();
    let kinds: Vec<EkKind> = certificates.iter().map(|(kind, _)| *kind).collect();
    assert_eq!(kinds, [EkKind::Rsa2048, EkKind::EccP256, EkKind::EccP384]);
    assert_eq!(
        certificates[1].1, certificate,
        "read whole, NV padding cut off"
    );
    assert_eq!(spki(&certificates[1].1), spki_der);
    let opened = tpm
        .activate_credential(
            EkKind::EccP256,
            AkTemplate::Standard,
            &credential.blob,
            &credential.secret,
        )
        .unwrap();
    assert_eq!(opened.as_slice(), secret);

    // And through the CA's MakeCredential, with the key from the certificate just read.
    let ek = ssh_tpm_attest::ekcert::EkCertificate::from_der(&certificates[1].1)
        .and_then(|c| c.public_key())
        .unwrap();
    let (blob, encrypted) = ssh_tpm_attest::credential::make_credential(
        &ek,
        &name(&ak_public),
        secret,
        &mut rand_core::OsRng,
    )
    .unwrap();
    let opened = tpm
        .activate_credential(EkKind::EccP256, AkTemplate::Standard, &blob, &encrypted)
        .unwrap();
    assert_eq!(opened.as_slice(), secret);
    drop(tpm);
    assert_eq!(swtpm.transient_handles(), Vec::<String>::new());
}

/// A TPM whose EK certificate is not for the EK the standard template makes: the refusal
/// says that the template is not the standard one, not that the credential is bad.
#[test]
fn a_certificate_for_another_key_is_named_as_the_reason() {
    let swtpm = Swtpm::start();
    let (rsa_certificate, ak_public) = {
        let mut tpm = open(&swtpm);
        let certificates = tpm.ek_certificates().unwrap();
        (
            certificates[0].1.clone(),
            tpm.attestation_key_public(AkTemplate::Standard).unwrap(),
        )
    };
    // The RSA EK's certificate where the P-256 one belongs.
    let path = swtpm.scratch().join("rsa.der");
    fs::write(&path, &rsa_certificate).unwrap();
    let size = rsa_certificate.len().to_string();
    swtpm.tpm2(
        "tpm2_nvdefine",
        &[
            "0x01c0000a",
            "-C",
            "o",
            "-s",
            &size,
            "-a",
            "ownerread|ownerwrite|authread|no_da",
        ],
    );
    swtpm.tpm2(
        "tpm2_nvwrite",
        &["0x01c0000a", "-C", "o", "-i", path.to_str().unwrap()],
    );
    let credential = make_credential(&swtpm, "0x81010016", &ak_public, b"secret");

    let mut tpm = open(&swtpm);
    let err = tpm
        .activate_credential(
            EkKind::EccP256,
            AkTemplate::Standard,
            &credential.blob,
            &credential.secret,
        )
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("template is not the standard one"), "{text}");
    assert!(text.contains("L-2"), "{text}");
    drop(tpm);
    assert_eq!(swtpm.transient_handles(), Vec::<String>::new());
}

/// With swtpm's three slots full (storage parent and two loaded keys), certification still
/// finds room for the AK, and both keys sign afterwards.
#[test]
fn certify_makes_room_for_the_ak_when_the_tpm_is_full() {
    let swtpm = Swtpm::start();
    let mut tpm = open(&swtpm);
    let pin = Pin::from("2468".to_string());
    let first = tpm.create_key(KeySpec::EcdsaP256, &pin).unwrap();
    let second = tpm.create_key(KeySpec::EcdsaP256, &Pin::empty()).unwrap();
    let hash = ssh_tpm_tpm::SignHash::Sha256;
    tpm.sign(&first, &pin, hash, b"load").unwrap();
    tpm.sign(&second, &Pin::empty(), hash, b"load").unwrap();

    let ak_public = tpm.attestation_key_public(AkTemplate::Standard).unwrap();
    let certified = tpm
        .certify_key(&first, &pin, AkTemplate::Standard, &[9; 32])
        .unwrap();
    verify(&ak_public, &certified.attest, &certified.signature);
    let mut attest = parse_attest(&certified.attest);
    assert_eq!(attest.attested.tpm2b(), name(&first.pubkey[2..]));

    tpm.sign(&first, &pin, hash, b"after").unwrap();
    tpm.sign(&second, &Pin::empty(), hash, b"after").unwrap();
    drop(tpm);
    assert_eq!(swtpm.transient_handles(), Vec::<String>::new());
}

/// An index defined but never written holds no certificate.
#[test]
fn an_unwritten_certificate_index_is_skipped() {
    let swtpm = Swtpm::start();
    swtpm.tpm2(
        "tpm2_nvdefine",
        &[
            "0x01c0000a",
            "-C",
            "o",
            "-s",
            "600",
            "-a",
            "ownerread|ownerwrite|authread",
        ],
    );
    let mut tpm = open(&swtpm);
    let kinds: Vec<EkKind> = tpm
        .ek_certificates()
        .unwrap()
        .into_iter()
        .map(|(kind, _)| kind)
        .collect();
    assert_eq!(kinds, [EkKind::Rsa2048, EkKind::EccP384]);
}

/// The CA's side: the EK key taken from the certificate the TPM holds, a credential made by
/// ssh-tpm-attest for the AK's name, opened by this TPM, for each EK kind swtpm certifies.
#[test]
fn activate_credential_opens_credentials_made_by_the_ca() {
    use ssh_tpm_attest::credential::make_credential;
    use ssh_tpm_attest::ekcert::EkCertificate;

    let swtpm = Swtpm::start();
    let mut tpm = open(&swtpm);
    let ak_public = tpm.attestation_key_public(AkTemplate::Standard).unwrap();
    let certificates = tpm.ek_certificates().unwrap();
    assert_eq!(certificates.len(), 2);
    for (kind, der) in certificates {
        let ek = EkCertificate::from_der(&der)
            .and_then(|c| c.public_key())
            .unwrap();
        let secret = Sha256::digest(format!("challenge for {kind:?}"));
        let (blob, encrypted) =
            make_credential(&ek, &name(&ak_public), &secret, &mut rand_core::OsRng).unwrap();
        let opened = tpm
            .activate_credential(kind, AkTemplate::Standard, &blob, &encrypted)
            .unwrap();
        assert_eq!(opened.as_slice(), secret.as_slice(), "{kind:?}");

        // Made for another AK: refused.
        let other = tpm.attestation_key_public(AkTemplate::Variant(3)).unwrap();
        let (blob, encrypted) =
            make_credential(&ek, &name(&other), &secret, &mut rand_core::OsRng).unwrap();
        let err = tpm
            .activate_credential(kind, AkTemplate::Standard, &blob, &encrypted)
            .unwrap_err();
        assert!(
            err.to_string().contains("another attestation key"),
            "{kind:?}: {err}"
        );
    }
    drop(tpm);
    assert_eq!(swtpm.transient_handles(), Vec::<String>::new());
}
