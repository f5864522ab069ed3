//! The CA's whole story with real parts, through the binaries a user and an operator run:
//! `ssh-tpm-ca` (init, serve, device add/list/retire, audit), `ssh-tpm-cert` (enroll, renew)
//! logging in at node's oidc-provider through the scripted browser, `ssh-tpm-keygen` and
//! `ssh-tpm-agent` on a swtpm manufactured with EK certificates, and OpenSSH's `ssh` into an
//! sshd that trusts the CA and has no authorized_keys.
//!
//! swtpm serves one connection at a time, where a real TPM has the kernel's resource manager.
//! So that the agent can hold its TPM while `ssh-tpm-cert` certifies the key, the agent runs
//! on a twin of the device's TPM: a second swtpm started from the same manufactured state,
//! hence the same seeds, in which the same key file loads.

mod support;

use std::fs;
use std::path::Path;
use std::process::Output;

use support::ca::{unix_now, CaSshd, ManufacturedTpm};
use support::ca_world::{alice, bob, sleep_until, CaSettings, World};
use support::{assert_ok, current_user, describe, run, ssh_add, stderr, stdout, tool, Agent};

/// `ssh-tpm-cert enroll --ca URL` as `user`; panics unless it succeeds.
fn enroll(world: &World, user: &str) -> Output {
    let out = world.cert_command(user, &["enroll", "--ca", world.ca.url()], &[]);
    assert_ok(
        &out,
        &format!("ssh-tpm-cert enroll\nCA log:\n{}", world.ca.log()),
    );
    out
}

/// `ssh-tpm-cert renew -f KEY ARGS...` as `user`, handing the certificate to `agent` if any.
fn renew(world: &World, user: &str, args: &[&str], agent: Option<&Agent>) -> Output {
    let key = world.key.tpm.to_str().expect("UTF-8 key path");
    let mut all = vec!["renew", "-f", key];
    all.extend_from_slice(args);
    let socket = agent.map(|a| a.socket().to_str().expect("UTF-8 socket").to_owned());
    let env: Vec<(&str, &str)> = socket
        .as_deref()
        .map(|s| vec![("SSH_AUTH_SOCK", s)])
        .unwrap_or_default();
    world.cert_command(user, &all, &env)
}

/// `ssh-keygen -L -f CERT`.
fn describe_cert(cert: &Path) -> String {
    let out = run(tool("ssh-keygen").arg("-L").arg("-f").arg(cert));
    assert_ok(&out, "ssh-keygen -L");
    stdout(&out)
}

/// The `Serial:` of `ssh-keygen -L` output.
fn serial(described: &str) -> String {
    described
        .lines()
        .find_map(|l| l.trim().strip_prefix("Serial: "))
        .unwrap_or_else(|| panic!("no serial in {described}"))
        .trim()
        .to_owned()
}

/// An agent for the world's key on a twin of its TPM (see the module's notes).
fn agent_on_twin(world: &World, twin: &support::Swtpm) -> Agent {
    let key_dir = world.key.tpm.parent().expect("key directory");
    Agent::serve(twin, key_dir, &[])
}

/// The whole story: the operator adds the device, the user enrols it, renews a certificate
/// that the running agent picks up, and logs in to an sshd that trusts only the CA; the
/// audit log shows the issuance. Then the operator retires the device, and the next renewal
/// is refused with `device_retired`, logged as such, the old certificate left in place.
#[test]
fn device_enrolled_certified_logs_in_then_retired_is_refused() {
    let world = World::start();
    let ca = &world.ca;
    let id = world.device_id.clone();
    let sshd = CaSshd::start(&ca.public_key());

    // The operator puts the device in the inventory by its EK certificate.
    ca.add_device(&world.ek_cert, "alice");
    let listed = ca.run_ok(&["device", "list"]);
    assert!(
        listed.contains(&id) && listed.contains("user=alice") && listed.contains("not-enrolled"),
        "{listed}"
    );

    // alice enrols the device: login in the browser, EK certificate, AK, credential.
    let out = enroll(&world, "alice");
    assert!(stdout(&out).contains(&id), "{}", describe(&out));
    let listed = ca.run_ok(&["device", "list"]);
    assert!(
        listed.contains(" enrolled") && !listed.contains("not-enrolled"),
        "{listed}"
    );

    // Her agent runs on the key; a renewal writes KEY-cert.pub and hands it over.
    let twin = ManufacturedTpm::shared().start();
    let agent = agent_on_twin(&world, &twin);
    let denied = sshd.login(agent.socket(), &[]);
    assert!(
        !denied.status.success(),
        "the bare key logged in: {}",
        describe(&denied)
    );

    let out = renew(&world, "alice", &[], Some(&agent));
    assert_ok(&out, &format!("ssh-tpm-cert renew\nCA log:\n{}", ca.log()));
    let said = stdout(&out);
    assert!(said.contains("Logged in as alice"), "{said}");
    assert!(said.contains("now serves the key"), "{said}");
    let cert = world.key.cert();
    let described = describe_cert(&cert);
    let user = current_user();
    for wanted in [
        format!("Key ID: \"user=alice device={id}\""),
        "alice".to_owned(),
        user.clone(),
        "device@ssh-tpm".to_owned(),
        "permit-pty".to_owned(),
    ] {
        assert!(
            described.contains(&wanted),
            "{wanted} missing:\n{described}"
        );
    }
    let listed = ssh_add(agent.socket(), &["-L"]);
    assert!(
        stdout(&listed).contains("-cert-v01@openssh.com"),
        "the agent does not offer the certificate: {}",
        describe(&listed)
    );

    // ssh with the agent gets in; sshd saw the certificate.
    let login = sshd.login(agent.socket(), &[]);
    assert_ok(
        &login,
        &format!("ssh with the certificate\nsshd log:\n{}", sshd.log()),
    );
    assert_eq!(stdout(&login).trim(), format!("logged-in-as {user}"));
    assert!(sshd.log().contains("ECDSA-CERT"), "{}", sshd.log());

    // The audit log shows the issuance.
    let serial = serial(&described);
    let audit = ca.audit();
    let issued = format!("serial={serial} user=alice device={id}");
    assert!(audit.contains(&issued), "{issued} missing:\n{audit}");

    // Retired: the next renewal is refused, and the certificate on disk stays as it was.
    ca.retire(&id);
    let before = fs::read_to_string(&cert).expect("read the certificate");
    let out = renew(&world, "alice", &["--force"], Some(&agent));
    assert!(
        !out.status.success(),
        "renewed a retired device: {}",
        describe(&out)
    );
    assert!(
        stderr(&out).contains("device_retired"),
        "{}",
        describe(&out)
    );
    assert_eq!(fs::read_to_string(&cert).expect("certificate"), before);
    ca.assert_refusal_logged("device_retired", &["user=alice", &format!("device={id}")]);
    let audit = ca.audit();
    assert_eq!(audit.matches("serial=").count(), 1, "{audit}");
}

/// A user disabled at the identity provider gets no certificate: the login itself fails,
/// so the CA is never asked and issues nothing, though device and key are fine.
#[test]
fn user_disabled_at_the_provider_gets_no_renewal() {
    let world = World::start();
    world.ca.add_device(&world.ek_cert, "alice");
    enroll(&world, "alice");
    let out = renew(&world, "alice", &["--no-agent"], None);
    assert_ok(&out, &format!("first renewal\nCA log:\n{}", world.ca.log()));

    world.idp.set_accounts(&[alice().disabled(), bob()]);
    let out = renew(&world, "alice", &["--force", "--no-agent"], None);
    assert!(
        !out.status.success(),
        "renewed for a disabled user: {}",
        describe(&out)
    );
    let said = stderr(&out);
    assert!(
        said.contains("login failed") || said.contains("browser"),
        "{}",
        describe(&out)
    );

    let audit = world.ca.audit();
    assert_eq!(audit.matches("serial=").count(), 1, "{audit}");
    assert!(
        world.ca.refusals().is_empty(),
        "the CA was asked: {:?}",
        world.ca.refusals()
    );
}

/// A CA issuing one-minute certificates: the certificate logs in while valid and is refused
/// by sshd once it expires, though the agent still offers it.
#[test]
fn one_minute_certificate_stops_working_after_it_expires() {
    let settings = CaSettings {
        certificate_validity_secs: Some(60),
        ..CaSettings::default()
    };
    let world = World::with(settings);
    world.ca.add_device(&world.ek_cert, "alice");
    enroll(&world, "alice");
    let sshd = CaSshd::start(&world.ca.public_key());

    let out = renew(&world, "alice", &["--no-agent"], None);
    assert_ok(&out, &format!("renewal\nCA log:\n{}", world.ca.log()));
    let twin = ManufacturedTpm::shared().start();
    let agent = agent_on_twin(&world, &twin);

    let login = sshd.login(agent.socket(), &[]);
    assert_ok(
        &login,
        &format!("ssh while valid\nsshd log:\n{}", sshd.log()),
    );

    let valid_before = valid_before(&world);
    assert!(
        valid_before <= unix_now() + 60,
        "valid until {valid_before}, more than a minute from now ({})",
        unix_now()
    );
    sleep_until(valid_before + 2);
    let login = sshd.login(agent.socket(), &[]);
    assert!(
        !login.status.success(),
        "logged in with an expired certificate: {}",
        describe(&login)
    );
    assert!(sshd.log().contains("expired"), "{}", sshd.log());
}

/// The `valid_before` of the only issuance in the CA's audit log (`valid=AFTER..BEFORE`).
fn valid_before(world: &World) -> u64 {
    let audit = world.ca.audit();
    let range = audit
        .split_whitespace()
        .find_map(|field| field.strip_prefix("valid="))
        .unwrap_or_else(|| panic!("no issuance in the audit log:\n{audit}"));
    let before = range.split("..").nth(1).unwrap_or_default();
    before
        .parse()
        .unwrap_or_else(|_| panic!("odd validity {range} in the audit log"))
}
