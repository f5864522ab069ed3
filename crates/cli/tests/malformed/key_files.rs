//! Malformed key files, as `ssh-tpm-add FILE` reports them (it reads and checks the file
//! before it talks to an agent, so none is running): the whole of stderr's first line.

use std::path::{Path, PathBuf};

use ssh_tpm_keyfile::TpmKey;

use crate::support::{product, run, stderr};

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../keyfile/tests/fixtures/interop")
}

/// The bytes of test vector `name`.
pub fn vector(name: &str) -> Vec<u8> {
    std::fs::read(vectors().join(name)).expect("read a test vector")
}

/// What goes into the file: bytes, or a directory, or nothing at all.
pub enum Content {
    Bytes(Vec<u8>),
    Directory,
    Missing,
}

pub struct Case {
    pub name: &'static str,
    pub content: Content,
    /// stderr's first line; `{file}` is the file's path.
    pub error: &'static str,
}

fn good_der() -> Vec<u8> {
    TpmKey::from_bytes(&vector("ossl-p256-owner.tpm"))
        .expect("the vector reads")
        .to_der()
}

fn good_key() -> TpmKey {
    TpmKey::from_bytes(&vector("ossl-p256-owner.tpm")).expect("the vector reads")
}

/// `der` with the byte at `at` set to `value`.
fn patched(mut der: Vec<u8>, at: usize, value: u8) -> Vec<u8> {
    der[at] = value;
    der
}

fn pem_of(der: &[u8]) -> Vec<u8> {
    let text = pem_rfc7468_like(der);
    text.into_bytes()
}

/// PEM armour around any bytes, as our writer would put it (via a key that carries them
/// is not possible for broken DER, so the armour is written here).
fn pem_rfc7468_like(der: &[u8]) -> String {
    use base64ct::{Base64, Encoding};
    let body = Base64::encode_string(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    format!(
        "-----BEGIN TSS2 PRIVATE KEY-----\n{}\n-----END TSS2 PRIVATE KEY-----\n",
        lines.join("\n")
    )
}

fn bytes(name: &'static str, content: Vec<u8>, error: &'static str) -> Case {
    Case {
        name,
        content: Content::Bytes(content),
        error,
    }
}

pub fn cases() -> Vec<Case> {
    let der = good_der();
    let pem = String::from_utf8(good_key().to_pem().into_bytes()).expect("PEM is text");
    let oid_at = der
        .windows(3)
        .position(|w| w == [0x06, 0x06, 0x67])
        .expect("the type OID");
    let mut no_pubkey = good_key();
    no_pubkey.pubkey = vec![0, 0];
    let mut short_pubkey = good_key();
    short_pubkey.pubkey.truncate(20);
    let ssh_key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n\
                   -----END OPENSSH PRIVATE KEY-----\n";
    let mut huge = pem.clone().into_bytes();
    huge.resize(200 * 1024, b'\n');
    vec![
        Case {
            name: "missing",
            content: Content::Missing,
            error: r#"ssh-tpm-add: cannot read {file}: No such file or directory (os error 2)"#,
        },
        Case {
            name: "directory",
            content: Content::Directory,
            error: r#"ssh-tpm-add: cannot read {file}: a directory, not a key file"#,
        },
        bytes(
            "empty",
            Vec::new(),
            r#"ssh-tpm-add: {file}: not a TPM key file: expected a PEM file starting with `-----BEGIN TSS2 PRIVATE KEY-----`, or its DER encoding"#,
        ),
        bytes(
            "text",
            b"hello\n".to_vec(),
            r#"ssh-tpm-add: {file}: not a TPM key file: expected a PEM file starting with `-----BEGIN TSS2 PRIVATE KEY-----`, or its DER encoding"#,
        ),
        bytes(
            "OpenSSH private key",
            ssh_key.as_bytes().to_vec(),
            r#"ssh-tpm-add: {file}: this is a "OPENSSH PRIVATE KEY" PEM file, not a TPM key file ("TSS2 PRIVATE KEY"); to move an existing key into the TPM, use `ssh-tpm-keygen --import`"#,
        ),
        bytes(
            "old label",
            vector("refused-old-label.tpm"),
            r#"ssh-tpm-add: {file}: this is an old-format ssh-tpm-agent key ("TPM PRIVATE KEY"), which is no longer supported; recreate the key with ssh-tpm-keygen"#,
        ),
        bytes(
            "sealed data",
            vector("refused-sealed.tpm"),
            r#"ssh-tpm-add: {file}: this file holds TPM-sealed data, not a key"#,
        ),
        bytes(
            "policy with locality",
            vector("refused-locality.tpm"),
            r#"ssh-tpm-add: {file}: the key's policy uses TPM2_PolicyLocality (command code 0x0000016f): this policy command is not supported, so the key cannot be used here"#,
        ),
        bytes(
            "signed policy",
            vector("refused-authpolicy.tpm"),
            r#"ssh-tpm-add: {file}: the key's TPM2_PolicyAuthorize (command code 0x0000016a) has parameters that are not TPM2B_PUBLIC + TPM2B_DIGEST + TPMT_SIGNATURE (2 bytes); the key file is malformed"#,
        ),
        bytes(
            "PEM cut short",
            pem.as_bytes()[..100].to_vec(),
            r#"ssh-tpm-add: {file}: the key file's PEM encoding is broken: its `-----END TSS2 PRIVATE KEY-----` line is missing or damaged; copy the file again from where it was made"#,
        ),
        bytes(
            "PEM without END line",
            pem.replace("-----END TSS2 PRIVATE KEY-----", "")
                .into_bytes(),
            r#"ssh-tpm-add: {file}: the key file's PEM encoding is broken: its `-----END TSS2 PRIVATE KEY-----` line is missing or damaged; copy the file again from where it was made"#,
        ),
        bytes(
            "PEM with bad base64",
            pem.replacen("MI", "M*", 1).into_bytes(),
            r#"ssh-tpm-add: {file}: the key file's PEM encoding is broken: its base64 text is damaged or cut short; copy the file again from where it was made"#,
        ),
        bytes(
            "PEM label only",
            b"-----BEGIN TSS2 PRIVATE KEY-----\n-----END TSS2 PRIVATE KEY-----\n".to_vec(),
            r#"ssh-tpm-add: {file}: the key file's PEM block is empty: nothing between its BEGIN and END lines; copy the file again from where it was made"#,
        ),
        bytes(
            "DER cut short",
            der[..der.len() - 10].to_vec(),
            r#"ssh-tpm-add: {file}: key file is truncated: field `privkey` at byte 112 needs 131 bytes, 121 remain"#,
        ),
        bytes(
            "DER first byte only",
            der[..1].to_vec(),
            r#"ssh-tpm-add: {file}: key file is truncated: field `TPMKey` at byte 0 needs 2 bytes, 1 remain"#,
        ),
        bytes(
            "DER with trailing bytes",
            [der.clone(), vec![0, 0]].concat(),
            r#"ssh-tpm-add: {file}: malformed key file: 2 unexpected bytes at byte 243, after the end of `TPMKey`"#,
        ),
        bytes(
            "DER wrong OID",
            patched(der.clone(), oid_at + 7, 0x09),
            r#"ssh-tpm-add: {file}: unknown key type OID 2.23.133.10.1.9 (expected 2.23.133.10.1.3 loadable, .4 importable or .5 sealed)"#,
        ),
        bytes(
            "DER pubkey tag",
            patched(der.clone(), 22, 0x0C),
            r#"ssh-tpm-add: {file}: malformed key file: field `pubkey` at byte 22 should be an OCTET STRING but is a UTF8String"#,
        ),
        bytes(
            "PEM of broken DER",
            pem_of(&der[..der.len() - 10]),
            r#"ssh-tpm-add: {file}: key file is truncated: field `privkey` at byte 112 needs 131 bytes, 121 remain"#,
        ),
        bytes(
            "empty pubkey",
            no_pubkey.to_pem().into_bytes(),
            r#"ssh-tpm-add: {file}: the key file's public area is malformed"#,
        ),
        bytes(
            "pubkey cut short",
            short_pubkey.to_pem().into_bytes(),
            r#"ssh-tpm-add: {file}: the key file's public area is malformed"#,
        ),
        bytes(
            "huge",
            huge,
            r#"ssh-tpm-add: cannot read {file}: 204800 bytes is too large for a key file (at most 65536 bytes); not read"#,
        ),
        bytes(
            "binary noise",
            (0..=255u8).cycle().take(700).collect(),
            r#"ssh-tpm-add: {file}: not a TPM key file: expected a PEM file starting with `-----BEGIN TSS2 PRIVATE KEY-----`, or its DER encoding"#,
        ),
    ]
}

#[test]
fn malformed_key_files() {
    let dir = crate::support::tempdir();
    let mut results = Vec::new();
    for (index, case) in cases().into_iter().enumerate() {
        let file = dir.path().join(format!("case-{index}.tpm"));
        match &case.content {
            Content::Bytes(bytes) => std::fs::write(&file, bytes).expect("write case"),
            Content::Directory => std::fs::create_dir(&file).expect("make dir"),
            Content::Missing => {}
        }
        let out = run(product("ssh-tpm-add")
            .arg(&file)
            .env("SSH_TPM_AUTH_SOCK", dir.path().join("no-agent.sock")));
        let file_text = file.to_str().expect("UTF-8 path");
        let seen = stderr(&out)
            .lines()
            .next()
            .unwrap_or_default()
            .replace(file_text, "{file}");
        let seen = if out.status.success() {
            format!("(exit 0) {seen}")
        } else {
            seen
        };
        results.push((case.name.to_string(), case.error.to_string(), seen));
    }
    crate::check_all("key-file", results);
}
