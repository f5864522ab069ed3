//! End-to-end tests of the agent's request handling: PIN prompts, retries and cache, the TPM's
//! dictionary-attack counter, lock and unlock, and removing keys, driven by the real `ssh-add`
//! and `ssh-keygen -Y sign` against `ssh-tpm-agent` on a private swtpm.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ssh_tpm_keyfile::TpmKey;
use support::{
    askpass_calls, assert_ok, chmod, describe, keygen, listed_keys, product, read_text, run,
    sign_file, stderr, stdout, tempdir, tool, verify_file, write, write_askpass, Agent, KeyFiles,
    Swtpm,
};
use tempfile::TempDir;

/// What `ssh-add -L` prints for an agent without keys.
const NO_IDENTITIES: &str = "The agent has no identities.";

/// The lockout counter as TPM2_GetCapability names it.
const LOCKOUT_COUNTER: &str = "TPM2_PT_LOCKOUT_COUNTER";

/// Environment that makes a program ask `askpass`, with `SSH_ASKPASS_REQUIRE=require`.
fn askpass_env<'a>(askpass: &'a Path, require: &'a str) -> [(&'a str, &'a str); 2] {
    let askpass = askpass.to_str().expect("UTF-8 askpass path");
    [("SSH_ASKPASS", askpass), ("SSH_ASKPASS_REQUIRE", require)]
}

/// Starts an agent on `tpm` serving `key_dir` with extra `args` and `env`; the returned
/// directory holds its socket and must outlive it.
fn serve_with(
    tpm: &Swtpm,
    key_dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (TempDir, Agent) {
    let socket_dir = tempdir();
    let socket = socket_dir.path().join("agent.sock");
    let tcti = tpm.tcti();
    let key_dir = key_dir.to_str().expect("UTF-8 key dir");
    let mut all_args = vec!["--tcti", &tcti, "--key-dir", key_dir];
    all_args.extend_from_slice(args);
    let agent = Agent::start(&socket, &all_args, env);
    (socket_dir, agent)
}

/// Sets the TPM's dictionary-attack parameters: `max_tries` wrong PINs before lockout, and a
/// failure forgotten only after 10 minutes, so that the lockout counter holds still while a
/// test reads it. No agent may hold the TPM's connection meanwhile.
fn set_lockout(tpm: &Swtpm, max_tries: u32) {
    let max_tries = format!("--max-tries={max_tries}");
    let out = tpm.tpm2(
        "tpm2_dictionarylockout",
        &[
            "--setup-parameters",
            &max_tries,
            "--recovery-time=600",
            "--lockout-recovery-time=1",
        ],
    );
    assert_ok(&out, "tpm2_dictionarylockout --setup-parameters");
    assert_eq!(tpm.variable_property(LOCKOUT_COUNTER), 0);
}

/// A P-256 key whose PIN is 1234, in a new key directory.
fn pin_key(tpm: &Swtpm) -> (TempDir, KeyFiles) {
    let keys = tempdir();
    let (key, _) = keygen(tpm, keys.path(), "id", &["-N", "1234"]);
    (keys, key)
}

/// Signs a file with `key` through the agent at `socket`; the output of `ssh-keygen -Y sign`.
fn sign(socket: &Path, key: &KeyFiles) -> std::process::Output {
    let work = tempdir();
    let message = work.path().join("message.txt");
    write(&message, "signed through ssh-tpm-agent\n");
    sign_file(socket, &key.public, &message)
}

/// Asserts that signing with `key` through the agent works and the signature verifies.
#[track_caller]
fn assert_signs(agent: &Agent, key: &KeyFiles) {
    let work = tempdir();
    let message = work.path().join("message.txt");
    write(&message, "signed through ssh-tpm-agent\n");
    let signed = sign_file(agent.socket(), &key.public, &message);
    assert!(
        signed.status.success(),
        "signing failed: {}\nagent log:\n{}",
        describe(&signed),
        agent.stderr()
    );
    let verified = verify_file(work.path(), &key.public_line(), &message);
    assert_ok(&verified, "ssh-keygen -Y verify");
}

/// Asserts that signing with `key` through the agent fails.
#[track_caller]
fn assert_sign_fails(agent: &Agent, key: &KeyFiles) {
    let signed = sign(agent.socket(), key);
    assert!(
        !signed.status.success(),
        "signing worked: {}\nagent log:\n{}",
        describe(&signed),
        agent.stderr()
    );
}

/// The keys `ssh-add -L` lists (type and blob); empty when the agent has none.
fn listed(agent: &Agent) -> Vec<(String, String)> {
    let out = support::ssh_add(agent.socket(), &["-L"]);
    if out.status.success() {
        return listed_keys(&out);
    }
    let text = stdout(&out) + &stderr(&out);
    assert!(
        text.contains(NO_IDENTITIES),
        "ssh-add -L: {}",
        describe(&out)
    );
    Vec::new()
}

/// Writes an askpass script into `dir` that prints `first` on its first call and `then`
/// afterwards, counting calls like `write_askpass` (see `askpass_calls`).
fn write_changing_askpass(dir: &Path, first: &str, then: &str) -> PathBuf {
    let script = dir.join("askpass-changing");
    let calls = dir.join("askpass-changing.calls");
    let calls = calls.display();
    write(
        &script,
        format!(
            "#!/bin/sh\n\
             echo \"called: $*\" >> '{calls}'\n\
             if [ \"$(wc -l < '{calls}')\" -le 1 ]; then echo '{first}'; else echo '{then}'; fi\n"
        ),
    );
    chmod(&script, 0o755);
    script
}

/// The prompts the askpass script at `script` was called with, one per call.
fn askpass_prompts(script: &Path) -> Vec<String> {
    let calls = PathBuf::from(format!("{}.calls", script.display()));
    read_text(&calls).lines().map(str::to_owned).collect()
}

/// Runs `ssh-add ARGS` against `socket`, reading any passphrase from `askpass`.
fn ssh_add_with_askpass(socket: &Path, askpass: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = tool("ssh-add");
    cmd.env("SSH_AUTH_SOCK", socket)
        .envs(askpass_env(askpass, "force"))
        .args(args);
    run(&mut cmd)
}

// ---------------------------------------------------------------------------------------------
// PINs and the TPM's dictionary-attack counter

/// A key file saying emptyAuth TRUE for a TPM object that has a PIN: the agent tries the empty
/// PIN once (that try is burnt, unavoidably), then fails the request with a message blaming
/// the file, instead of burning two more tries on the same empty PIN.
#[test]
fn key_file_wrongly_claiming_no_pin_costs_one_try() {
    let tpm = Swtpm::start();
    set_lockout(&tpm, 32);
    let (keys, key) = pin_key(&tpm);
    let mut file = TpmKey::from_bytes(&fs::read(&key.tpm).expect("read id.tpm"))
        .expect("parse the key file keygen wrote");
    assert!(!file.empty_auth);
    file.empty_auth = true;
    write(&key.tpm, file.to_pem());

    let work = tempdir();
    let askpass = write_askpass(work.path(), "1234");
    let (_socket_dir, mut agent) =
        serve_with(&tpm, keys.path(), &[], &askpass_env(&askpass, "force"));
    assert_sign_fails(&agent, &key);
    let log = agent.stderr_once_it_contains("claims the key has no PIN");
    assert!(
        log.contains("claims the key has no PIN"),
        "agent log:\n{log}"
    );
    assert!(!log.contains("asking again"), "agent log:\n{log}");
    assert_eq!(
        askpass_calls(&askpass),
        0,
        "an emptyAuth key needs no prompt"
    );

    agent.stop();
    assert_eq!(
        tpm.variable_property(LOCKOUT_COUNTER),
        1,
        "agent log:\n{log}"
    );
}

/// The PIN is asked once and kept; with `--no-cache` it is asked at every signature.
/// `SSH_ASKPASS_REQUIRE` is read case-insensitively, as OpenSSH reads it.
#[test]
fn pin_is_cached_unless_no_cache() {
    let tpm = Swtpm::start();
    let (keys, key) = pin_key(&tpm);

    let cached_dir = tempdir();
    let askpass = write_askpass(cached_dir.path(), "1234");
    let (_socket_dir, mut agent) =
        serve_with(&tpm, keys.path(), &[], &askpass_env(&askpass, "FORCE"));
    assert_signs(&agent, &key);
    assert_signs(&agent, &key);
    assert_eq!(askpass_calls(&askpass), 1, "agent log:\n{}", agent.stderr());
    agent.stop();

    let uncached_dir = tempdir();
    let askpass = write_askpass(uncached_dir.path(), "1234");
    let (_socket_dir, agent) = serve_with(
        &tpm,
        keys.path(),
        &["--no-cache"],
        &askpass_env(&askpass, "force"),
    );
    assert_signs(&agent, &key);
    assert_signs(&agent, &key);
    assert_eq!(askpass_calls(&askpass), 2, "agent log:\n{}", agent.stderr());
}

/// A wrong PIN, then the right one, in one request: it succeeds, the retry prompt says how
/// many tries the TPM has left, and the TPM counted exactly one failure.
#[test]
fn wrong_then_right_pin_signs_with_one_failure_counted() {
    let tpm = Swtpm::start();
    set_lockout(&tpm, 32);
    let (keys, key) = pin_key(&tpm);
    let work = tempdir();
    let askpass = write_changing_askpass(work.path(), "9999", "1234");

    let (_socket_dir, mut agent) =
        serve_with(&tpm, keys.path(), &[], &askpass_env(&askpass, "force"));
    assert_signs(&agent, &key);
    let prompts = askpass_prompts(&askpass);
    assert_eq!(prompts.len(), 2, "{prompts:#?}");
    assert!(
        prompts[1].contains("attempt 2 of 3; 31 tries left before the TPM locks PIN keys"),
        "{prompts:#?}"
    );

    agent.stop();
    assert_eq!(tpm.variable_property(LOCKOUT_COUNTER), 1);
}

/// Wrong PINs until the TPM locks PIN keys: the last failure says so, and the next request
/// fails with the lockout without running the prompt, since no PIN could work.
#[test]
fn lockout_ends_prompting() {
    let tpm = Swtpm::start();
    set_lockout(&tpm, 2);
    let (keys, key) = pin_key(&tpm);
    let work = tempdir();
    let askpass = write_askpass(work.path(), "9999");

    let (_socket_dir, mut agent) =
        serve_with(&tpm, keys.path(), &[], &askpass_env(&askpass, "force"));
    assert_sign_fails(&agent, &key);
    let log = agent.stderr_once_it_contains("now locking PIN keys");
    assert!(log.contains("now locking PIN keys"), "agent log:\n{log}");
    assert!(!log.contains("0 tries left"), "agent log:\n{log}");
    let prompts = askpass_prompts(&askpass);
    assert_eq!(prompts.len(), 2, "{prompts:#?}");
    assert!(
        prompts[1].contains("1 try left before the TPM locks PIN keys"),
        "{prompts:#?}"
    );

    assert_sign_fails(&agent, &key);
    let refusal = "dictionary-attack lockout and refuses PINs";
    let log = agent.stderr_once_it_contains(refusal);
    assert!(log.contains(refusal), "agent log:\n{log}");
    assert_eq!(askpass_calls(&askpass), 2, "prompted during lockout");

    agent.stop();
    assert_eq!(tpm.variable_property(LOCKOUT_COUNTER), 2);
}

// ---------------------------------------------------------------------------------------------
// Lock and unlock

/// `ssh-add -x` locks: nothing is listed and nothing signed. A wrong `ssh-add -X` is answered
/// slowly, slower with each failure (0.1 s per failure so far, as OpenSSH's ssh-agent); the
/// right one unlocks.
#[test]
fn lock_and_unlock_with_ssh_add() {
    let tpm = Swtpm::start();
    let keys = tempdir();
    let (key, _) = keygen(&tpm, keys.path(), "id", &["-N", ""]);
    let (_socket_dir, agent) = serve_with(&tpm, keys.path(), &[], &[]);
    let work = tempdir();
    let right = write_askpass(work.path(), "lock-passphrase");
    let wrong = write_askpass(work.path(), "guess");

    let locked = ssh_add_with_askpass(agent.socket(), &right, &["-x"]);
    assert_ok(&locked, "ssh-add -x");
    assert_eq!(askpass_calls(&right), 2, "ssh-add -x asks twice");
    assert_eq!(listed(&agent), []);
    assert_sign_fails(&agent, &key);

    let first = ssh_add_with_askpass(agent.socket(), &wrong, &["-X"]);
    assert!(!first.status.success(), "{}", describe(&first));
    let started = Instant::now();
    let second = ssh_add_with_askpass(agent.socket(), &wrong, &["-X"]);
    let took = started.elapsed();
    assert!(!second.status.success(), "{}", describe(&second));
    // A lower bound only: the second failure is answered after at least 0.2 s.
    assert!(
        took >= Duration::from_millis(200),
        "the second wrong unlock was answered in {took:?}"
    );
    assert_eq!(listed(&agent), [], "a wrong passphrase unlocked");

    let unlocked = ssh_add_with_askpass(agent.socket(), &right, &["-X"]);
    assert_ok(&unlocked, "ssh-add -X with the right passphrase");
    assert_eq!(listed(&agent), [key.blob()]);
    assert_signs(&agent, &key);
}

// ---------------------------------------------------------------------------------------------
// Removing keys

#[test]
fn ssh_add_d_removes_one_key() {
    let tpm = Swtpm::start();
    let keys = tempdir();
    let (first, _) = keygen(&tpm, keys.path(), "first", &["-N", ""]);
    let (second, _) = keygen(&tpm, keys.path(), "second", &["-N", ""]);
    let (_socket_dir, agent) = serve_with(&tpm, keys.path(), &[], &[]);
    let mut both = listed(&agent);
    both.sort();
    let mut expected = vec![first.blob(), second.blob()];
    expected.sort();
    assert_eq!(both, expected);

    let public = first.public.to_str().expect("UTF-8 path");
    let removed = support::ssh_add(agent.socket(), &["-d", public]);
    assert_ok(&removed, "ssh-add -d first.pub");
    assert_eq!(listed(&agent), [second.blob()]);
    assert_sign_fails(&agent, &first);
    assert_signs(&agent, &second);
}

/// `ssh-add -D` removes every key and forgets their PINs: after the key is added again, the
/// next signature asks for the PIN again. `ssh-add -D` also sends the protocol-1 remove-all
/// (type 9), which gets FAILURE without a warning in the log.
#[test]
fn ssh_add_capital_d_removes_all_keys_and_pins() {
    let tpm = Swtpm::start();
    let (keys, key) = pin_key(&tpm);
    let work = tempdir();
    let askpass = write_askpass(work.path(), "1234");
    let (_socket_dir, agent) = serve_with(&tpm, keys.path(), &[], &askpass_env(&askpass, "force"));
    assert_signs(&agent, &key);
    assert_eq!(askpass_calls(&askpass), 1);

    let removed = support::ssh_add(agent.socket(), &["-D"]);
    assert_ok(&removed, "ssh-add -D");
    assert_eq!(listed(&agent), []);
    let log = agent.stderr_once_it_contains("all keys removed");
    assert!(log.contains("all keys removed"), "agent log:\n{log}");
    assert!(
        !log.contains("WARN"),
        "ssh-add -D made the agent warn:\n{log}"
    );

    let added = run(product("ssh-tpm-add")
        .env("SSH_TPM_AUTH_SOCK", agent.socket())
        .arg(&key.tpm));
    assert_ok(&added, "ssh-tpm-add");
    assert_eq!(listed(&agent), [key.blob()]);
    assert_signs(&agent, &key);
    assert_eq!(askpass_calls(&askpass), 2, "the PIN outlived ssh-add -D");
}

#[test]
fn remove_all_while_a_pin_prompt_is_open_wins_over_the_pin() {
    let tpm = Swtpm::start();
    let (keys, key) = pin_key(&tpm);
    // A prompt that takes its time, and counts its calls.
    let calls = keys.path().join("slow-askpass.calls");
    let askpass = keys.path().join("slow-askpass");
    write(
        &askpass,
        format!(
            "#!/bin/sh\necho x >> '{}'\nsleep 2\necho 1234\n",
            calls.display()
        ),
    );
    chmod(&askpass, 0o755);
    let askpass_str = askpass.to_str().expect("UTF-8 path");
    let env = askpass_env(&askpass, "force");
    let (_socket_dir, agent) = serve_with(&tpm, keys.path(), &[], &env);

    let work = tempdir();
    let message = work.path().join("message.txt");
    write(&message, "signed after remove-all?\n");
    let mut pending = tool("ssh-keygen")
        .env("SSH_AUTH_SOCK", agent.socket())
        .args(["-Y", "sign", "-n", "file", "-f"])
        .arg(&key.public)
        .arg(&message)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start ssh-keygen -Y sign");
    let opened = support::poll_until(Duration::from_secs(5), || calls.exists());
    assert!(opened, "the prompt never opened:\n{}", agent.stderr());
    assert_ok(
        &run(tool("ssh-add")
            .env("SSH_AUTH_SOCK", agent.socket())
            .arg("-D")),
        "ssh-add -D",
    );

    let status = pending.wait().expect("wait for ssh-keygen");
    assert!(
        !status.success(),
        "signed with a key removed while its prompt was open"
    );
    assert!(
        agent
            .stderr_once_it_contains("removed while its PIN prompt was open")
            .contains("the PIN was not used"),
        "{}",
        agent.stderr()
    );

    // The PIN typed meanwhile was not cached: adding the key again asks again.
    let mut add = product("ssh-tpm-add");
    add.env("SSH_TPM_AUTH_SOCK", agent.socket()).arg(&key.tpm);
    assert_ok(&run(&mut add), "ssh-tpm-add");
    assert_signs(&agent, &key);
    assert_eq!(
        read_text(&calls).lines().count(),
        2,
        "askpass {askpass_str}"
    );
}

/// An agent in the foreground of a terminal, without askpass, asks for the PIN there.
#[test]
fn foreground_agent_asks_for_the_pin_on_its_terminal() {
    use std::io::{Read, Write};
    use std::sync::{Arc, Mutex};

    let tpm = Swtpm::start();
    let (keys, key) = pin_key(&tpm);
    let run_dir = tempdir();
    let socket = run_dir.path().join("agent.sock");
    let command = format!(
        "exec '{}' --tcti '{}' --key-dir '{}' -l '{}'",
        support::product_path("ssh-tpm-agent"),
        tpm.tcti(),
        keys.path().display(),
        socket.display()
    );
    // script(1) runs the agent on a new pseudo-terminal, in its foreground, and relays our
    // pipe to that terminal.
    let mut terminal = tool("script")
        .args(["-qfec", &command, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start script(1)");
    let screen = Arc::new(Mutex::new(String::new()));
    let mut output = terminal.stdout.take().expect("script's stdout");
    let shown = Arc::clone(&screen);
    std::thread::spawn(move || {
        let mut buffer = [0u8; 1024];
        while let Ok(n) = output.read(&mut buffer) {
            if n == 0 {
                break;
            }
            let text = String::from_utf8_lossy(&buffer[..n]).into_owned();
            shown.lock().expect("screen").push_str(&text);
        }
    });
    let up = support::poll_until(Duration::from_secs(10), || support::accepts_unix(&socket));
    assert!(
        up,
        "agent did not start:\n{}",
        screen.lock().expect("screen")
    );

    let signing = {
        let socket = socket.clone();
        let key = key.clone();
        std::thread::spawn(move || sign(&socket, &key))
    };
    let asked = support::poll_until(Duration::from_secs(10), || {
        screen
            .lock()
            .expect("screen")
            .contains("Enter PIN for TPM key")
    });
    assert!(
        asked,
        "no PIN prompt on the terminal:\n{}",
        screen.lock().expect("screen")
    );
    let mut input = terminal.stdin.take().expect("script's stdin");
    input.write_all(b"1234\n").expect("type the PIN");
    input.flush().expect("flush");
    let signed = signing.join().expect("signing thread");
    assert_ok(&signed, "sign with the PIN typed on the terminal");

    // A terminal hangup is a SIGHUP, which only reloads keys: stop the agent itself, found
    // by its unique socket path, and script(1) ends with it.
    let stop = run(tool("pkill")
        .args(["-TERM", "-f"])
        .arg(socket.to_str().expect("UTF-8")));
    assert_ok(&stop, "stop the agent");
    drop(input);
    let ended = support::poll_until(Duration::from_secs(5), || {
        matches!(terminal.try_wait(), Ok(Some(_)))
    });
    if !ended {
        let _ = terminal.kill();
    }
    let _ = terminal.wait();
}
