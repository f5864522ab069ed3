//! Malformed requests to a running `ssh-tpm-ca serve` (docs/protocol.md), with the exact status,
//! `error` code and `message` of each answer; and malformed CA-side command lines
//! (`ssh-tpm-ca`, `ssh-tpm-cert`), with the line a user reads.

use std::path::Path;

use serde_json::{json, Value};
use ssh_tpm_attest::b64;
use ssh_tpm_attest::protocol::SessionResponse;
use ssh_tpm_cert::IdToken;

use crate::support::ca::{http_request, HttpResponse, HTTP_TIMEOUT};
use crate::support::ca_world::{ca_bin, cert_bin, CaSettings, World};
use crate::support::{assert_ok, run, stderr, stdout, tempdir, tool, Swtpm};

// ---------------------------------------------------------------------------------------------
// Requests

/// What a case sends as its body.
#[derive(Clone, Copy)]
pub enum Body {
    /// These bytes as they are.
    Raw(&'static str),
    /// `{}` padded with spaces to this many bytes.
    Padded(usize),
    /// An enrolment request with a fresh session, alice's ID token for it, the world's EK
    /// certificate and a standard AK made by swtpm, then changed by the function.
    Enroll(fn(&mut Value)),
    /// A certificate request the CA would grant (fresh session, alice's token, the world's
    /// key certified and PCRs quoted by the enrolled AK), then changed by the function.
    Certificate(fn(&mut Value)),
}

/// In `message`, `{device}` stands for the world's device id.
pub struct Case {
    pub name: &'static str,
    pub method: &'static str,
    pub path: &'static str,
    pub body: Body,
    pub status: u16,
    pub error: &'static str,
    pub message: &'static str,
}

/// A case answered with `answer` (status and code); its message follows with [`Case::says`].
fn request(
    name: &'static str,
    method: &'static str,
    path: &'static str,
    body: Body,
    answer: (u16, &'static str),
) -> Case {
    let (status, error) = answer;
    Case {
        name,
        method,
        path,
        body,
        status,
        error,
        message: "",
    }
}

fn post(name: &'static str, path: &'static str, body: Body, answer: (u16, &'static str)) -> Case {
    request(name, "POST", path, body, answer)
}

impl Case {
    /// The case with the answer's exact `message`.
    fn says(mut self, message: &'static str) -> Case {
        self.message = message;
        self
    }
}

const SESSIONS: &str = "/v1/sessions";
const ENROLL: &str = "/v1/enroll";
const ACTIVATE: &str = "/v1/enroll/activate";
const CERTIFICATES: &str = "/v1/certificates";

const BAD: (u16, &str) = (400, "bad_request");

/// A certificate request that names no session the CA knows; well-formed otherwise.
const UNKNOWN_SESSION_CERTIFICATE: &str = r#"{"session_id": "no-such-session", "id_token": "x",
    "device_id": "00", "ssh_public_key": "ecdsa-sha2-nistp256 AAAA", "key_public": "AA",
    "certify": {"attest": "AA", "signature": "AA"},
    "quote": {"attest": "AA", "signature": "AA", "pcrs": {}}}"#;

/// Replaces the JSON value at `pointer`.
fn set(value: &mut Value, pointer: &str, new: Value) {
    *value
        .pointer_mut(pointer)
        .unwrap_or_else(|| panic!("no {pointer} in the request")) = new;
}

/// Decodes the b64 field at `pointer`, lets `edit` change the bytes and encodes them again.
fn edit_b64(value: &mut Value, pointer: &str, edit: impl FnOnce(&mut Vec<u8>)) {
    let text = value.pointer(pointer).and_then(Value::as_str);
    let text = text.unwrap_or_else(|| panic!("no string {pointer} in the request"));
    let mut bytes = b64::decode(text).expect("the request's own base64");
    edit(&mut bytes);
    set(value, pointer, json!(b64::encode(&bytes)));
}

/// Cuts the last 3 bytes off.
fn truncate(bytes: &mut Vec<u8>) {
    bytes.truncate(bytes.len() - 3);
}

/// Appends 3 zero bytes.
fn append(bytes: &mut Vec<u8>) {
    bytes.extend_from_slice(&[0, 0, 0]);
}

/// The table, in the order the CA's checks meet each field.
pub fn cases() -> Vec<Case> {
    vec![
        // Any endpoint: the body, the path, the method.
        post("sessions body not JSON", SESSIONS, Body::Raw("hello"), BAD)
            .says("the body is not JSON: expected value at line 1 column 1"),
        post("sessions body a list", SESSIONS, Body::Raw("[]"), BAD).says(
            "the body is not a /v1/sessions request: invalid type: sequence, expected a map \
             at line 1 column 0; docs/protocol.md shows its fields",
        ),
        post(
            "body over 64 KiB",
            SESSIONS,
            Body::Padded(65 * 1024),
            (413, "bad_request"),
        )
        .says("the request body is larger than 64 KiB"),
        request(
            "sessions with GET",
            "GET",
            SESSIONS,
            Body::Raw(""),
            (405, "bad_request"),
        )
        .says("/v1/sessions takes POST, not GET"),
        post(
            "info with POST",
            "/v1/info",
            Body::Raw("{}"),
            (405, "bad_request"),
        )
        .says("/v1/info takes GET, not POST"),
        post(
            "unknown path",
            "/v1/certificate",
            Body::Raw("{}"),
            (404, "bad_request"),
        )
        .says(
            "there is no /v1/certificate; the CA serves GET /v1/info and POST /v1/sessions, \
             /v1/enroll, /v1/enroll/activate and /v1/certificates",
        ),
        post(
            "unknown path, long",
            "/v1/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            Body::Raw("{}"),
            (404, "bad_request"),
        )
        .says(
            "there is no /v1/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa…; the \
             CA serves GET /v1/info and POST /v1/sessions, /v1/enroll, /v1/enroll/activate and \
             /v1/certificates",
        ),
        // Enrolment.
        post("enroll empty body", ENROLL, Body::Raw(""), BAD)
            .says("the body is not JSON: EOF while parsing a value at line 1 column 0"),
        post(
            "enroll missing fields",
            ENROLL,
            Body::Raw(r#"{"session_id": "s"}"#),
            BAD,
        )
        .says(
            "the body is not a /v1/enroll request: missing field `id_token` at line 1 column \
             19; docs/protocol.md shows its fields",
        ),
        post(
            "enroll session id a number",
            ENROLL,
            Body::Raw(r#"{"session_id": 7, "id_token": "t", "ek_cert": "", "ak_public": ""}"#),
            BAD,
        )
        .says(
            "the body is not a /v1/enroll request: invalid type: integer `7`, expected a \
             string at line 1 column 16; docs/protocol.md shows its fields",
        ),
        post(
            "enroll unknown session",
            ENROLL,
            Body::Raw(r#"{"session_id": "gone", "id_token": "t", "ek_cert": "", "ak_public": ""}"#),
            (404, "session_unknown"),
        )
        .says("no such session; it may have expired or the CA restarted: start a new one"),
        post(
            "enroll ek_cert not base64",
            ENROLL,
            Body::Enroll(|v| set(v, "/ek_cert", json!("MIIB not base64!"))),
            BAD,
        )
        .says("ek_cert is not unpadded base64url"),
        post(
            "enroll ek_cert padded base64",
            ENROLL,
            Body::Enroll(|v| set(v, "/ek_cert", json!("MIIB=="))),
            BAD,
        )
        .says("ek_cert is not unpadded base64url"),
        post(
            "enroll ek_cert not DER",
            ENROLL,
            Body::Enroll(|v| set(v, "/ek_cert", json!(b64::encode(b"not a certificate")))),
            BAD,
        )
        .says(
            "ek_cert: not a DER X.509 certificate: unexpected ASN.1 DER tag: expected \
             SEQUENCE, got APPLICATION [14] (constructed)",
        ),
        post(
            "enroll ek_cert truncated",
            ENROLL,
            Body::Enroll(|v| edit_b64(v, "/ek_cert", truncate)),
            BAD,
        )
        .says(
            "ek_cert: not a DER X.509 certificate: ASN.1 DER message is incomplete: expected \
             1016, actual 1013 at DER byte 4",
        ),
        post(
            "enroll ek_cert PEM",
            ENROLL,
            Body::Enroll(|v| edit_b64(v, "/ek_cert", |b| *b = pem_of(b).into_bytes())),
            BAD,
        )
        .says("ek_cert is PEM; send the DER bytes of the certificate"),
        post(
            "enroll ak_public not base64",
            ENROLL,
            Body::Enroll(|v| set(v, "/ak_public", json!("AAEACw+"))),
            BAD,
        )
        .says("ak_public is not unpadded base64url"),
        post(
            "enroll ak_public truncated",
            ENROLL,
            Body::Enroll(|v| edit_b64(v, "/ak_public", truncate)),
            (403, "ak_invalid"),
        )
        .says(
            "ak_public is not a usable TPMT_PUBLIC: truncated unique.ecc.y: need 32 bytes, \
             29 left at byte 56",
        ),
        post(
            "enroll ak_public trailing bytes",
            ENROLL,
            Body::Enroll(|v| edit_b64(v, "/ak_public", append)),
            (403, "ak_invalid"),
        )
        .says("ak_public is not a usable TPMT_PUBLIC: 3 trailing bytes at byte 88"),
        post(
            "enroll ak_public keyedhash object",
            ENROLL,
            Body::Enroll(|v| edit_b64(v, "/ak_public", |b| b[..2].copy_from_slice(&[0, 8]))),
            (403, "ak_invalid"),
        )
        .says(
            "ak_public is not a usable TPMT_PUBLIC: unsupported TPM object type keyedhash \
             (only RSA and ECC keys)",
        ),
        // Activation.
        post(
            "activate missing secret",
            ACTIVATE,
            Body::Raw(r#"{"challenge_id": "c"}"#),
            BAD,
        )
        .says(
            "the body is not a /v1/enroll/activate request: missing field `secret` at line 1 \
             column 21; docs/protocol.md shows its fields",
        ),
        post(
            "activate secret not base64",
            ACTIVATE,
            Body::Raw(r#"{"challenge_id": "c", "secret": "a b c"}"#),
            BAD,
        )
        .says("secret is not unpadded base64url"),
        post(
            "activate unknown challenge",
            ACTIVATE,
            Body::Raw(r#"{"challenge_id": "c", "secret": "AAAA"}"#),
            (403, "challenge_failed"),
        )
        .says("no such challenge; enrol again"),
        // Certificates.
        post(
            "certificates certify a string",
            CERTIFICATES,
            Body::Certificate(|v| set(v, "/certify", json!("AAAA"))),
            BAD,
        )
        .says(
            "the body is not a /v1/certificates request: invalid type: string \"AAAA\", \
             expected an object with attest and signature at line 1 column 17; docs/protocol.md \
             shows its fields",
        ),
        post(
            "certificates unknown session",
            CERTIFICATES,
            Body::Raw(UNKNOWN_SESSION_CERTIFICATE),
            (404, "session_unknown"),
        )
        .says("no such session; it may have expired or the CA restarted: start a new one"),
        post(
            "certificates ssh_public_key not OpenSSH",
            CERTIFICATES,
            Body::Certificate(|v| set(v, "/ssh_public_key", json!("-----BEGIN PUBLIC KEY-----"))),
            BAD,
        )
        .says(
            "ssh_public_key is not an OpenSSH public key (TYPE BASE64 COMMENT): Base64 \
             encoding error: invalid Base64 encoding",
        ),
        post(
            "certificates ssh_public_key bad base64",
            CERTIFICATES,
            Body::Certificate(|v| set(v, "/ssh_public_key", json!("ecdsa-sha2-nistp256 AA!A"))),
            BAD,
        )
        .says(
            "ssh_public_key is not an OpenSSH public key (TYPE BASE64 COMMENT): character \
             encoding invalid",
        ),
        post(
            "certificates pcrs unknown bank",
            CERTIFICATES,
            Body::Certificate(|v| set(v, "/quote/pcrs", json!({"sha1": {"0": "00"}}))),
            BAD,
        )
        .says(r#"pcrs: unknown bank "sha1", only "sha256""#),
        post(
            "certificates pcr value not hex",
            CERTIFICATES,
            Body::Certificate(|v| set(v, "/quote/pcrs/sha256/0", json!("zz"))),
            BAD,
        )
        .says("pcrs: PCR 0 is not 64 hex digits"),
        post(
            "certificates quote attest not base64",
            CERTIFICATES,
            Body::Certificate(|v| set(v, "/quote/attest", json!("/+/+"))),
            BAD,
        )
        .says("quote attest is not unpadded base64url"),
        post(
            "certificates quote signature truncated",
            CERTIFICATES,
            Body::Certificate(|v| edit_b64(v, "/quote/signature", truncate)),
            (403, "quote_invalid"),
        )
        .says(
            "the quote signature is not a usable TPMT_SIGNATURE: truncated signatureS: need \
             32 bytes, 29 left at byte 40",
        ),
        post(
            "certificates quote signature trailing bytes",
            CERTIFICATES,
            Body::Certificate(|v| edit_b64(v, "/quote/signature", append)),
            (403, "quote_invalid"),
        )
        .says("the quote signature is not a usable TPMT_SIGNATURE: 3 trailing bytes at byte 72"),
        post(
            "certificates quote signature HMAC",
            CERTIFICATES,
            Body::Certificate(|v| {
                edit_b64(v, "/quote/signature", |b| b[..2].copy_from_slice(&[0, 5]))
            }),
            (403, "quote_invalid"),
        )
        .says(
            "the quote signature is not a usable TPMT_SIGNATURE: unsupported signature \
             scheme hmac (only rsassa, rsapss and ecdsa)",
        ),
        post(
            "certificates quote attest truncated",
            CERTIFICATES,
            Body::Certificate(|v| edit_b64(v, "/quote/attest", truncate)),
            (403, "quote_invalid"),
        )
        .says("the quote is not signed by the device's AK: ECDSA signature does not match"),
        post(
            "certificates quote attest wrong magic",
            CERTIFICATES,
            Body::Certificate(|v| edit_b64(v, "/quote/attest", |b| b[0] ^= 0x80)),
            (403, "quote_invalid"),
        )
        .says("the quote is not signed by the device's AK: ECDSA signature does not match"),
        post(
            "certificates certify signature not base64",
            CERTIFICATES,
            Body::Certificate(|v| set(v, "/certify/signature", json!("AB=="))),
            BAD,
        )
        .says("certification signature is not unpadded base64url"),
        post(
            "certificates certify signature truncated",
            CERTIFICATES,
            Body::Certificate(|v| edit_b64(v, "/certify/signature", truncate)),
            (403, "certify_invalid"),
        )
        .says(
            "the certification signature is not a usable TPMT_SIGNATURE: truncated \
             signatureS: need 32 bytes, 29 left at byte 40",
        ),
        post(
            "certificates certify attest trailing bytes",
            CERTIFICATES,
            Body::Certificate(|v| edit_b64(v, "/certify/attest", append)),
            (403, "certify_invalid"),
        )
        .says(
            "the certification is not signed by the device's AK: ECDSA signature does not \
             match",
        ),
        post(
            "certificates key_public not base64",
            CERTIFICATES,
            Body::Certificate(|v| set(v, "/key_public", json!("AAEACw="))),
            BAD,
        )
        .says("key_public is not unpadded base64url"),
        post(
            "certificates key_public truncated",
            CERTIFICATES,
            Body::Certificate(|v| edit_b64(v, "/key_public", truncate)),
            (403, "certify_invalid"),
        )
        .says(
            "key_public is not a usable TPMT_PUBLIC: truncated unique.ecc.y: need 32 bytes, \
             29 left at byte 54",
        ),
        post(
            "certificates key_public trailing bytes",
            CERTIFICATES,
            Body::Certificate(|v| edit_b64(v, "/key_public", append)),
            (403, "certify_invalid"),
        )
        .says("key_public is not a usable TPMT_PUBLIC: 3 trailing bytes at byte 86"),
        post(
            "certificates device_id not hex",
            CERTIFICATES,
            Body::Certificate(|v| set(v, "/device_id", json!("laptop"))),
            (403, "device_unknown"),
        )
        .says("device laptop is not in the inventory"),
    ]
}

/// `der` as a PEM certificate.
fn pem_of(der: &[u8]) -> String {
    use base64ct::{Base64, Encoding as _};
    let text = Base64::encode_string(der);
    let lines: Vec<&str> = text
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

/// A fixture that crates/attest/tests/fixtures/make-fixtures.sh made with swtpm.
fn attest_fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../attest/tests/fixtures");
    let path = path.join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A fresh session and alice's ID token for it.
type Login = (SessionResponse, IdToken);

/// A login for each case whose body needs one, `LOGIN_THREADS` at a time: a login through
/// the provider is most of the time a case takes.
fn logins(world: &World, cases: &[Case]) -> Vec<Option<Login>> {
    let needs = |case: &Case| matches!(case.body, Body::Enroll(_) | Body::Certificate(_));
    let mut out: Vec<Option<Login>> = cases.iter().map(|_| None).collect();
    let wanted: Vec<usize> = (0..cases.len()).filter(|&i| needs(&cases[i])).collect();
    for batch in wanted.chunks(LOGIN_THREADS) {
        let done: Vec<(usize, Login)> = std::thread::scope(|scope| {
            let threads: Vec<_> = batch
                .iter()
                .map(|&i| {
                    scope.spawn(move || {
                        let session = world.session();
                        let token = world.token("alice", &session.oidc_nonce);
                        (i, (session, token))
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|t| t.join().expect("a login thread"))
                .collect()
        });
        for (i, login) in done {
            out[i] = Some(login);
        }
    }
    out
}

/// Logins that run at once.
const LOGIN_THREADS: usize = 4;

/// The bytes `body` stands for in `world`, with `login` where the body needs one.
fn body_bytes(world: &World, body: Body, login: Option<&Login>) -> Vec<u8> {
    let login = || login.expect("a login for this case");
    match body {
        Body::Raw(text) => text.as_bytes().to_vec(),
        Body::Padded(size) => format!("{{{}}}", " ".repeat(size - 2)).into_bytes(),
        Body::Enroll(change) => {
            let (session, token) = login();
            let ek_cert = std::fs::read(&world.ek_cert).expect("read the EK certificate");
            let mut value = json!({
                "session_id": session.session_id,
                "id_token": token.as_str(),
                "ek_cert": b64::encode(&ek_cert),
                "ak_public": b64::encode(&attest_fixture("ak-ecc.pub")),
            });
            change(&mut value);
            value.to_string().into_bytes()
        }
        Body::Certificate(change) => {
            let (session, token) = login();
            let request = world.request(&world.tpm_key(), session, token);
            let mut value = serde_json::to_value(&request).expect("the request as JSON");
            change(&mut value);
            value.to_string().into_bytes()
        }
    }
}

/// `STATUS CODE: MESSAGE` of an answer, or what was wrong with it.
fn describe_answer(answer: &HttpResponse) -> String {
    let body: Value = match serde_json::from_slice(&answer.body) {
        Ok(body) => body,
        Err(_) => return format!("{} (not JSON) {:?}", answer.status, answer.text()),
    };
    let field = |name: &str| body[name].as_str().unwrap_or("(none)").to_owned();
    format!("{} {}: {}", answer.status, field("error"), field("message"))
}

#[test]
fn malformed_ca_requests() {
    let world = World::enrolled(CaSettings::default(), "alice");
    let cases = cases();
    let logins = logins(&world, &cases);
    let headers = [("Content-Type", "application/json")];

    let mut results = Vec::new();
    for (case, login) in cases.iter().zip(&logins) {
        let body = body_bytes(&world, case.body, login.as_ref());
        let url = format!("{}{}", world.ca.url(), case.path);
        let seen = match http_request(case.method, &url, &headers, &body, HTTP_TIMEOUT) {
            Ok(answer) => describe_answer(&answer).replace(&world.device_id, "{device}"),
            Err(e) => format!("no answer: {e}"),
        };
        let expected = format!("{} {}: {}", case.status, case.error, case.message);
        results.push((case.name.to_string(), expected, seen));
    }
    crate::check_all("CA request", results);
}

// ---------------------------------------------------------------------------------------------
// Command lines

/// The CA-side programs.
#[derive(Clone, Copy)]
pub enum Program {
    Ca,
    Cert,
}

/// `{dir}` in an argument stands for a scratch directory holding a CA made by `ssh-tpm-ca
/// init` (`ca.toml`), `not-toml.toml`, `wrong.toml` (TOML, not a CA configuration), `note.txt`
/// (not a certificate), `ek-rsa.der` (an EK certificate), `state.toml` (an enrolment record)
/// and `key.tpm` (a key file without a certificate). `ssh-tpm-cert` reaches a swtpm.
///
/// `line` is the first line of stderr of a failing command; for a command that succeeds, it
/// is `(exit 0)` and the last line of stdout.
pub struct Command {
    pub name: &'static str,
    pub program: Program,
    pub args: &'static [&'static str],
    pub line: &'static str,
}

const fn command(
    name: &'static str,
    program: Program,
    args: &'static [&'static str],
    line: &'static str,
) -> Command {
    Command {
        name,
        program,
        args,
        line,
    }
}

use Program::{Ca, Cert};

pub const COMMANDS: &[Command] = &[
    command(
        "ca missing config file",
        Ca,
        &["--config", "{dir}/missing.toml", "device", "list"],
        "ssh-tpm-ca: cannot read {dir}/missing.toml: No such file or directory (os error 2); \
         create one with `ssh-tpm-ca init`",
    ),
    command(
        "ca config not TOML",
        Ca,
        &["--config", "{dir}/not-toml.toml", "device", "list"],
        "ssh-tpm-ca: {dir}/not-toml.toml: line 1, column 7: expected `.`, `=`",
    ),
    command(
        "ca config of the wrong shape",
        Ca,
        &["--config", "{dir}/wrong.toml", "audit"],
        "ssh-tpm-ca: {dir}/wrong.toml: line 1, column 2: unknown field `server`, expected one of \
         `listen`, `tls_cert`, `tls_key`, `database`, `ca_key`, `ek_roots`, \
         `session_lifetime_secs`, `certificate_validity_secs`, `oidc`, `compliance`, `rate_limit`",
    ),
    command(
        "ca unknown subcommand",
        Ca,
        &["--config", "{dir}/ca.toml", "revoke"],
        "error: unrecognized subcommand 'revoke'",
    ),
    command(
        "ca device add not a certificate",
        Ca,
        &[
            "--config",
            "{dir}/ca.toml",
            "device",
            "add",
            "--ek-cert",
            "{dir}/note.txt",
            "--user",
            "alice",
        ],
        "ssh-tpm-ca: {dir}/note.txt: not a DER X.509 certificate: unexpected ASN.1 DER tag: \
         expected SEQUENCE, got APPLICATION [20] (constructed); give the EK certificate in DER or \
         PEM, as `tpm2_nvread 0x01c00002` (RSA) or 0x01c0000a (ECC) reads it from the TPM",
    ),
    command(
        "ca device add missing file",
        Ca,
        &[
            "--config",
            "{dir}/ca.toml",
            "device",
            "add",
            "--ek-cert",
            "{dir}/missing.der",
            "--user",
            "alice",
        ],
        "ssh-tpm-ca: cannot read {dir}/missing.der: No such file or directory (os error 2)",
    ),
    command(
        "ca device add --pcr without value",
        Ca,
        &[
            "--config",
            "{dir}/ca.toml",
            "device",
            "add",
            "--ek-cert",
            "{dir}/ek-rsa.der",
            "--user",
            "alice",
            "--pcr",
            "7",
        ],
        "ssh-tpm-ca: --pcr 7: expected INDEX=HEX with INDEX 0-23 and a SHA-256 value (64 hex \
         digits)",
    ),
    command(
        "ca device add --pcr index out of range",
        Ca,
        &[
            "--config",
            "{dir}/ca.toml",
            "device",
            "add",
            "--ek-cert",
            "{dir}/ek-rsa.der",
            "--user",
            "alice",
            "--pcr",
            "24=0000000000000000000000000000000000000000000000000000000000000000",
        ],
        "ssh-tpm-ca: --pcr 24=0000000000000000000000000000000000000000000000000000000000000000: \
         expected INDEX=HEX with INDEX 0-23 and a SHA-256 value (64 hex digits)",
    ),
    command(
        "ca device add --pcr short value",
        Ca,
        &[
            "--config",
            "{dir}/ca.toml",
            "device",
            "add",
            "--ek-cert",
            "{dir}/ek-rsa.der",
            "--user",
            "alice",
            "--pcr",
            "7=abcd",
        ],
        "ssh-tpm-ca: --pcr 7=abcd: expected INDEX=HEX with INDEX 0-23 and a SHA-256 value (64 \
         hex digits)",
    ),
    command(
        "ca retire unknown device",
        Ca,
        &["--config", "{dir}/ca.toml", "device", "retire", "0123abcd"],
        "ssh-tpm-ca: no device 0123abcd in the inventory; `ssh-tpm-ca device list` shows them",
    ),
    command(
        "ca policy unknown device",
        Ca,
        &["--config", "{dir}/ca.toml", "device", "policy", "0123abcd"],
        "ssh-tpm-ca: no device 0123abcd in the inventory; `ssh-tpm-ca device list` shows them",
    ),
    command(
        "ca init over an existing CA",
        Ca,
        &["init", "--dir", "{dir}"],
        "ssh-tpm-ca: {dir}/ca.toml already exists; init never replaces files (use another --dir)",
    ),
    command(
        "cert renew without enrolment",
        Cert,
        &[
            "--state",
            "{dir}/missing.toml",
            "renew",
            "-f",
            "{dir}/key.tpm",
        ],
        "ssh-tpm-cert: this device is not enrolled with a CA ({dir}/missing.toml is missing); \
         run `ssh-tpm-cert enroll --ca URL` first",
    ),
    command(
        "cert renew with a state that is not a record",
        Cert,
        &[
            "--state",
            "{dir}/wrong.toml",
            "renew",
            "-f",
            "{dir}/key.tpm",
        ],
        "ssh-tpm-cert: {dir}/wrong.toml is not an enrolment record (missing field `ca_url`); run \
         `ssh-tpm-cert enroll` again",
    ),
    command(
        "cert enroll --ca not a URL",
        Cert,
        &["enroll", "--ca", "ca.example.com:8443"],
        "ssh-tpm-cert: \"ca.example.com:8443\" is not a CA URL: use https://HOST",
    ),
    command(
        "cert enroll --ca plain http",
        Cert,
        &["enroll", "--ca", "http://ca.example.com"],
        "ssh-tpm-cert: \"http://ca.example.com\" is not a CA URL: plain HTTP is only allowed to \
         a CA on this machine; use https://",
    ),
    command(
        "cert renew -f missing key",
        Cert,
        &[
            "--state",
            "{dir}/state.toml",
            "renew",
            "-f",
            "{dir}/missing",
        ],
        "ssh-tpm-cert: cannot read {dir}/missing.tpm: No such file or directory (os error 2)",
    ),
    command(
        "cert status without certificate",
        Cert,
        &[
            "--state",
            "{dir}/state.toml",
            "status",
            "-f",
            "{dir}/key.tpm",
        ],
        "(exit 0) no certificate ({dir}/key-cert.pub is missing)",
    ),
    command(
        "cert status of a missing key",
        Cert,
        &[
            "--state",
            "{dir}/state.toml",
            "status",
            "-f",
            "{dir}/missing",
        ],
        "ssh-tpm-cert: no key file at {dir}/missing.tpm; name a key made by ssh-tpm-keygen with -f",
    ),
    command(
        "cert unknown subcommand",
        Cert,
        &["login"],
        "error: unrecognized subcommand 'login'",
    ),
];

/// Fills `dir` as [`Command`] describes.
fn scratch(dir: &Path) {
    let out = run(tool(ca_bin()).arg("init").arg("--dir").arg(dir));
    assert_ok(&out, "ssh-tpm-ca init");
    let write = |name: &str, text: &[u8]| crate::support::write(&dir.join(name), text);
    write("not-toml.toml", b"listen: 127.0.0.1:8443\n");
    write("wrong.toml", b"[server]\nport = 8443\n");
    write("note.txt", b"this is not a certificate\n");
    write("ek-rsa.der", &attest_fixture("ek-rsa.der"));
    let state = "ca_url = \"http://127.0.0.1:9/\"\ndevice_id = \"0123abcd\"\nek = \"rsa2048\"\n\
                 enrolled_at = 1764800000\n";
    write("state.toml", state.as_bytes());
    write("key.tpm", &crate::key_files::vector("ossl-p256-owner.tpm"));
}

#[test]
fn malformed_ca_command_lines() {
    let tpm = Swtpm::start();
    let dir = tempdir();
    scratch(dir.path());
    let dir_text = dir.path().to_str().expect("UTF-8 path");

    let mut results = Vec::new();
    for command in COMMANDS {
        let args: Vec<String> = command
            .args
            .iter()
            .map(|a| a.replace("{dir}", dir_text))
            .collect();
        let mut cmd = match command.program {
            Ca => tool(ca_bin()),
            Cert => tool(cert_bin()),
        };
        cmd.args(&args)
            .env("HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .env("SSH_TPM_TCTI", tpm.tcti());
        let out = run(&mut cmd);
        let seen = if out.status.success() {
            let text = stdout(&out);
            format!(
                "(exit 0) {}",
                text.lines().last().unwrap_or_default().trim()
            )
        } else {
            stderr(&out).lines().next().unwrap_or_default().to_owned()
        };
        let seen = seen.replace(dir_text, "{dir}");
        results.push((command.name.to_string(), command.line.to_string(), seen));
    }
    crate::check_all("CA command-line", results);
}
