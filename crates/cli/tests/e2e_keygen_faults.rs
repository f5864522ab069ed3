//! ssh-tpm-keygen's own faults, end to end: a key pair whose `.pub` cannot be written leaves
//! both old files (or neither new one) and names the file in the README's wording; a TCP
//! TCTI where nothing listens says so; a symlink key file is asked about before it is
//! replaced; a key file the user may not read says what to check (keygen, add, agent).

mod support;

use std::path::{Path, PathBuf};

use support::{
    assert_ok, describe, is_root, product, product_path, run, run_with_stdin, stderr, tempdir,
    tool, Swtpm,
};

/// Every file in `dir` with its bytes, sorted by name.
fn files_of(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_default();
            (p, bytes)
        })
        .collect();
    files.sort();
    files
}

/// `ssh-tpm-keygen -f DIR/k -N '' -C COMMENT`, answering "y" if asked to overwrite.
fn keygen(tcti: &str, dir: &Path, comment: &str) -> std::process::Output {
    run_with_stdin(
        product("ssh-tpm-keygen")
            .args(["--tcti", tcti, "-N", "", "-C", comment, "-f"])
            .arg(dir.join("k")),
        b"y\n",
    )
}

/// The tester's case: `chattr +i k.pub` (root), or `k.pub` swapped for a non-empty
/// directory otherwise; either way the new `.pub` cannot take its place, and the old
/// `k.tpm` must still be the one that matches the old `k.pub`.
#[test]
fn a_pub_that_cannot_be_replaced_keeps_the_old_key() {
    let tpm = Swtpm::start();
    let dir = tempdir();
    assert_ok(&keygen(&tpm.tcti(), dir.path(), "old"), "first keygen");
    let public = dir.path().join("k.pub");
    let why = if is_root() {
        assert_ok(&run(tool("chattr").arg("+i").arg(&public)), "chattr +i");
        "Operation not permitted (os error 1)"
    } else {
        std::fs::remove_file(&public).expect("remove k.pub");
        std::fs::create_dir(&public).expect("k.pub as a directory");
        std::fs::write(public.join("x"), b"x").expect("file in it");
        "Is a directory (os error 21)"
    };
    let old = files_of(dir.path());

    let out = keygen(&tpm.tcti(), dir.path(), "new");
    let _ = run(tool("chattr").arg("-i").arg(&public));

    assert!(!out.status.success(), "{}", describe(&out));
    let last = stderr(&out).lines().last().unwrap_or_default().to_string();
    let expected = format!("cannot write {}: {why}", public.display());
    assert!(last.ends_with(&expected), "{}", describe(&out));
    assert_eq!(files_of(dir.path()), old, "the old key files changed");
}

/// A new key where the `.tpm` fits but the `.pub` does not: a tmpfs (root, in a private
/// mount namespace) with one page left. Neither file may be left behind.
#[test]
fn no_room_for_the_pub_leaves_no_key_file() {
    if !is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let tpm = Swtpm::start();
    let dir = tempdir();
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).expect("key dir");
    let script = format!(
        "set -e
         mount -t tmpfs -o size=64k tmpfs '{keys}'
         head -c 4096 /dev/zero > '{keys}'/gap
         dd if=/dev/zero of='{keys}'/filler bs=4k 2>/dev/null || true
         rm '{keys}'/gap
         set +e
         '{keygen}' --tcti '{tcti}' -N '' -f '{keys}'/k
         echo \"exit=$?\"
         ls -A '{keys}'",
        keys = keys.display(),
        keygen = product_path("ssh-tpm-keygen"),
        tcti = tpm.tcti(),
    );
    let out = run(tool("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(&script));
    let text = stderr(&out);
    if text.contains("mount:") && text.contains("permission denied") {
        eprintln!("skipped: no mount rights here:\n{text}");
        return;
    }
    let listing = support::stdout(&out);
    assert!(listing.contains("exit=1"), "{}", describe(&out));
    let expected = format!(
        "cannot write {}/k.pub: No space left on device (os error 28)",
        keys.display()
    );
    assert!(text.trim_end().ends_with(&expected), "{}", describe(&out));
    let left: Vec<&str> = listing.lines().skip(1).collect();
    assert_eq!(left, ["filler"], "{}", describe(&out));
}

/// swtpm not running: the error says that nothing listens on the port, and what to do,
/// not tss-esapi's "response code not recognized".
#[test]
fn a_tcp_tcti_where_nothing_listens_says_so() {
    let port = support::free_port();
    let tcti = format!("swtpm:host=127.0.0.1,port={port}");
    let dir = tempdir();
    let out = run(product("ssh-tpm-keygen")
        .args(["--tcti", &tcti, "-N", "", "-f"])
        .arg(dir.path().join("k")));
    assert!(!out.status.success(), "{}", describe(&out));
    let expected = format!(
        "ssh-tpm-keygen: cannot reach the TPM through `{tcti}`: nothing listens on \
         127.0.0.1:{port} (connection refused); start swtpm there, or pick another TPM with \
         --tcti or --swtpm\n"
    );
    assert_eq!(stderr(&out), expected, "{}", describe(&out));
}

/// A `NAME.tpm` that is a symlink loop, or a symlink to nowhere, is an existing file: keygen
/// asks before replacing it, and a "no" leaves it.
#[test]
fn a_symlink_key_file_is_not_replaced_unasked() {
    let tpm = Swtpm::start();
    let dir = tempdir();
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).expect("key dir");
    std::os::unix::fs::symlink("loop1.tpm", keys.join("loop1.tpm")).expect("loop");
    std::os::unix::fs::symlink("nowhere", keys.join("dangling.tpm")).expect("dangling");

    for name in ["loop1", "dangling"] {
        let out = run_with_stdin(
            product("ssh-tpm-keygen")
                .args(["--tcti", &tpm.tcti(), "-N", "", "-f"])
                .arg(keys.join(name)),
            b"n\n",
        );
        assert!(!out.status.success(), "{}", describe(&out));
        let key = keys.join(format!("{name}.tpm"));
        let expected = format!("{} was not overwritten; nothing was created", key.display());
        assert!(stderr(&out).contains(&expected), "{}", describe(&out));
        let meta = std::fs::symlink_metadata(&key).expect("still there");
        assert!(meta.file_type().is_symlink(), "{name}.tpm was replaced");
        assert!(
            std::fs::symlink_metadata(keys.join(format!("{name}.pub"))).is_err(),
            "{name}.pub was written"
        );
    }
}

/// `program ARGS...` as a user who may not read root's 0600 files (nobody, when root), or
/// as is when not root (the file is then made mode 000).
fn as_other_user(program: &str) -> std::process::Command {
    if is_root() {
        let mut cmd = tool("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", program]);
        cmd
    } else {
        tool(program)
    }
}

/// A key file the user may not read (EACCES) says what to check, in ssh-tpm-keygen -p and
/// in ssh-tpm-add, before any TPM or agent is needed.
#[test]
fn an_unreadable_key_file_says_what_to_check() {
    let tpm = Swtpm::start();
    let dir = tempdir();
    assert_ok(&keygen(&tpm.tcti(), dir.path(), "root's"), "keygen");
    let key = dir.path().join("k.tpm");
    support::chmod(dir.path(), 0o755);
    support::chmod(&key, if is_root() { 0o600 } else { 0o000 });
    let expected = |program: &str| {
        format!(
            "{program}: cannot read {}: Permission denied (os error 13); check the file's \
             owner and mode (key files are 0600, owned by you)\n",
            key.display()
        )
    };

    let out = run(as_other_user(product_path("ssh-tpm-keygen"))
        .args(["--tcti", &tpm.tcti(), "-p", "-P", "", "-N", "", "-f"])
        .arg(&key));
    assert_eq!(
        stderr(&out),
        expected("ssh-tpm-keygen"),
        "{}",
        describe(&out)
    );

    let out = run(as_other_user(product_path("ssh-tpm-add"))
        .env("SSH_TPM_AUTH_SOCK", dir.path().join("no-agent.sock"))
        .arg(&key));
    assert_eq!(stderr(&out), expected("ssh-tpm-add"), "{}", describe(&out));

    // The agent, loading the key directory, logs the same hint.
    let sockets = tempdir();
    support::chmod(sockets.path(), 0o777);
    let mut agent = as_other_user(product_path("ssh-tpm-agent"));
    agent
        .args(["--tcti", &tpm.tcti(), "-l"])
        .arg(sockets.path().join("agent.sock"))
        .arg("--key-dir")
        .arg(dir.path());
    let agent = support::Daemon::spawn("ssh-tpm-agent", &mut agent, sockets.path());
    let hint = format!(
        "not loaded: {}: Permission denied (os error 13); check the file's owner and mode",
        key.display()
    );
    let logged = support::poll_until(support::START_TIMEOUT, || agent.stderr().contains(&hint));
    assert!(logged, "{}", agent.stderr());
}
