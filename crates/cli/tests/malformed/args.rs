//! Malformed command lines: the first line of stderr, exactly, and a failing exit status.
//! None of these reaches a TPM or an agent.

use crate::support::{product, run, stderr};

/// `{dir}` in an argument stands for a scratch directory holding `key.tpm` (a valid key file
/// copied from the test vectors) and `not-a-dir` (a regular file).
pub struct Case {
    pub name: &'static str,
    pub program: &'static str,
    pub args: &'static [&'static str],
    pub error: &'static str,
}

const fn case(
    name: &'static str,
    program: &'static str,
    args: &'static [&'static str],
    error: &'static str,
) -> Case {
    Case {
        name,
        program,
        args,
        error,
    }
}

const KEYGEN: &str = "ssh-tpm-keygen";
const AGENT: &str = "ssh-tpm-agent";
const ADD: &str = "ssh-tpm-add";
const HOSTKEYS: &str = "ssh-tpm-hostkeys";

pub const CASES: &[Case] = &[
    case(
        "keygen unknown type",
        KEYGEN,
        &["-t", "ed25519"],
        r#"ssh-tpm-keygen: key type `ed25519` cannot live in a TPM; use -t ecdsa or -t rsa"#,
    ),
    case(
        "keygen rsa size",
        KEYGEN,
        &["-t", "rsa", "-b", "1024"],
        r#"ssh-tpm-keygen: TPM RSA keys can be 2048 or 3072 bits, not 1024; pick one with -b"#,
    ),
    case(
        "keygen ecdsa size",
        KEYGEN,
        &["-t", "ecdsa", "-b", "255"],
        r#"ssh-tpm-keygen: ECDSA keys can be 256, 384 or 521 bits, not 255; pick one with -b"#,
    ),
    case(
        "keygen size not a number",
        KEYGEN,
        &["-b", "big"],
        r#"error: invalid value 'big' for '-b <BITS>': invalid digit found in string"#,
    ),
    case(
        "keygen unknown flag",
        KEYGEN,
        &["-Z"],
        r#"error: unexpected argument '-Z' found"#,
    ),
    case(
        "keygen parent name",
        KEYGEN,
        &["--parent-handle", "storage"],
        r#"error: invalid value 'storage' for '--parent-handle <HANDLE>': `storage` is not a parent; use owner (o), endorsement (e), null (n) or a persistent handle 0x81000000 to 0x81FFFFFF"#,
    ),
    case(
        "keygen parent handle out of range",
        KEYGEN,
        &["--parent-handle", "0x40000001"],
        r#"error: invalid value '0x40000001' for '--parent-handle <HANDLE>': `0x40000001` is not a parent; use owner (o), endorsement (e), null (n) or a persistent handle 0x81000000 to 0x81FFFFFF"#,
    ),
    case(
        "keygen bad tcti",
        KEYGEN,
        &[
            "--tcti",
            "bogus",
            "-N",
            r#"ssh-tpm-keygen: cannot reach the TPM through `bogus`: the TCTI `bogus` is not supported; this build reaches device:PATH, swtpm:host=H,port=P, mssim:host=H,port=P and tabrmd:"#,
            "-f",
            "{dir}/new",
        ],
        r#"ssh-tpm-keygen: cannot reach the TPM through `bogus`: the TCTI `bogus` is not supported; this build reaches device:PATH, swtpm:host=H,port=P, mssim:host=H,port=P and tabrmd:"#,
    ),
    case(
        "keygen tcti option",
        KEYGEN,
        &[
            "--tcti",
            "swtpm:path=/x",
            "-N",
            r#"ssh-tpm-keygen: cannot reach the TPM through `swtpm:path=/x`: the swtpm option `path` is not supported; this build reaches device:PATH, swtpm:host=H,port=P, mssim:host=H,port=P and tabrmd:"#,
            "-f",
            "{dir}/new",
        ],
        r#"ssh-tpm-keygen: cannot reach the TPM through `swtpm:path=/x`: the swtpm option `path` is not supported; this build reaches device:PATH, swtpm:host=H,port=P, mssim:host=H,port=P and tabrmd:"#,
    ),
    case(
        "keygen missing device",
        KEYGEN,
        &[
            "--tcti",
            "device:/dev/no-such-tpm",
            "-N",
            r#"ssh-tpm-keygen: no TPM found at /dev/no-such-tpm; run with --swtpm to use a software TPM kept in your state directory, or name another TPM with --tcti"#,
            "-f",
            "{dir}/new",
        ],
        r#"ssh-tpm-keygen: no TPM found at /dev/no-such-tpm; run with --swtpm to use a software TPM kept in your state directory, or name another TPM with --tcti"#,
    ),
    case(
        "keygen change PIN of missing key",
        KEYGEN,
        &["-p", "-f", "{dir}/missing"],
        r#"ssh-tpm-keygen: cannot read {dir}/missing.tpm: No such file or directory (os error 2)"#,
    ),
    case(
        "keygen import missing file",
        KEYGEN,
        &["--import", "{dir}/missing", "-f", "{dir}/new"],
        r#"ssh-tpm-keygen: cannot read {dir}/missing: No such file or directory (os error 2)"#,
    ),
    case(
        "keygen host key dir missing",
        KEYGEN,
        &["-A", "--host-key-dir", "{dir}/missing"],
        r#"ssh-tpm-keygen: {dir}/missing is not a directory; create it or choose another with --host-key-dir"#,
    ),
    case(
        "keygen host key dir is a file",
        KEYGEN,
        &["-A", "--host-key-dir", "{dir}/not-a-dir"],
        r#"ssh-tpm-keygen: {dir}/not-a-dir is not a directory; create it or choose another with --host-key-dir"#,
    ),
    case(
        "keygen -f without value",
        KEYGEN,
        &["-f"],
        r#"error: a value is required for '-f <NAME>' but none was supplied"#,
    ),
    case(
        "agent unknown flag",
        AGENT,
        &["--frobnicate"],
        r#"error: unexpected argument '--frobnicate' found"#,
    ),
    case(
        "agent hierarchy name",
        AGENT,
        &["--hierarchy", "storage"],
        r#"error: invalid value 'storage' for '--hierarchy <HIERARCHY>': `storage` is not a hierarchy; use owner, endorsement, null or platform"#,
    ),
    case(
        "agent force without install",
        AGENT,
        &["--force"],
        r#"error: the following required arguments were not provided:"#,
    ),
    case(
        "agent -A to itself",
        AGENT,
        &["-l", "{dir}/agent.sock", "-A", "{dir}/agent.sock"],
        r#"ssh-tpm-agent: -A {dir}/agent.sock is this agent's own socket; give the socket of another agent"#,
    ),
    case(
        "agent bad tcti",
        AGENT,
        &["--tcti", "nonsense:", "-l", "{dir}/agent.sock"],
        r#"ssh-tpm-agent: cannot reach the TPM through `nonsense:`: the TCTI `nonsense` is not supported; this build reaches device:PATH, swtpm:host=H,port=P, mssim:host=H,port=P and tabrmd:"#,
    ),
    case(
        "agent missing device",
        AGENT,
        &[
            "--tcti",
            "device:/dev/no-such-tpm",
            "-l",
            "{dir}/agent.sock",
        ],
        r#"ssh-tpm-agent: no TPM found at /dev/no-such-tpm; run with --swtpm to use a software TPM kept in your state directory, or name another TPM with --tcti"#,
    ),
    case(
        "add no file",
        ADD,
        &[],
        r#"error: the following required arguments were not provided:"#,
    ),
    case(
        "add lifetime word",
        ADD,
        &["-t", "forever", "{dir}/key.tpm"],
        r#"error: invalid value 'forever' for '-t <LIFE>': "forever" is not a lifetime; give seconds, or a time such as 90s, 10m or 1h30m"#,
    ),
    case(
        "add lifetime unit",
        ADD,
        &["-t", "10y", "{dir}/key.tpm"],
        r#"error: invalid value '10y' for '-t <LIFE>': "10y" is not a lifetime; give seconds, or a time such as 90s, 10m or 1h30m"#,
    ),
    case(
        "add destination without value",
        ADD,
        &["{dir}/key.tpm", "-h"],
        r#"error: a value is required for '-h <DEST>' but none was supplied"#,
    ),
    case(
        "add no agent",
        ADD,
        &["{dir}/key.tpm"],
        r#"ssh-tpm-add: socket {dir}/no-agent.sock: no agent is listening there; start ssh-tpm-agent, or point SSH_TPM_AUTH_SOCK at its socket"#,
    ),
    case(
        "add missing known_hosts",
        ADD,
        &["-H", "{dir}/missing", "-h", "host", "{dir}/key.tpm"],
        r#"ssh-tpm-add: no host key for host in {dir}/missing; log in to it once with ssh, or name its known_hosts file with -H"#,
    ),
    case(
        "hostkeys unknown flag",
        HOSTKEYS,
        &["--frobnicate"],
        r#"error: unexpected argument '--frobnicate' found"#,
    ),
    case(
        "hostkeys host key dir missing",
        HOSTKEYS,
        &["--host-key-dir", "{dir}/missing"],
        r#"ssh-tpm-hostkeys: cannot read {dir}/missing: No such file or directory (os error 2)"#,
    ),
];

#[test]
fn malformed_command_lines() {
    let dir = crate::support::tempdir();
    let key = crate::key_files::vector("ossl-p256-owner.tpm");
    std::fs::write(dir.path().join("key.tpm"), key).expect("write key");
    std::fs::write(dir.path().join("not-a-dir"), "x").expect("write file");
    let dir_text = dir.path().to_str().expect("UTF-8 path");

    let mut results = Vec::new();
    for case in CASES {
        let args: Vec<String> = case
            .args
            .iter()
            .map(|a| a.replace("{dir}", dir_text))
            .collect();
        let mut cmd = product(case.program);
        cmd.args(&args)
            .env("SSH_TPM_AUTH_SOCK", dir.path().join("no-agent.sock"));
        let out = run(&mut cmd);
        let seen = stderr(&out)
            .lines()
            .next()
            .unwrap_or_default()
            .replace(dir_text, "{dir}");
        let seen = if out.status.success() {
            format!("(exit 0) {seen}")
        } else {
            seen
        };
        results.push((case.name.to_string(), case.error.to_string(), seen));
    }
    crate::check_all("command-line", results);
}
