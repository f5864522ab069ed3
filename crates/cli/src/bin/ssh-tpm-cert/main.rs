//! `ssh-tpm-cert`: enrols this device's TPM with the organisation's CA, renews the SSH
//! certificates of TPM keys, shows them, and installs an hourly renewal timer. The flow lives
//! in the `ssh-tpm-cert` library; this is argument parsing, prompts and messages.

mod cli;
mod units;

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ssh_tpm::owner::{self, OwnerArgs};
use ssh_tpm::tpm_args::TpmArgs;
use ssh_tpm::CliError;
use ssh_tpm_cert::certfile::{self, format_duration, format_time, now};
use ssh_tpm_cert::enroll::{self, EkFamily, EnrollOptions};
use ssh_tpm_cert::login::{Browser, LoginOptions};
use ssh_tpm_cert::renew::{self, Outcome, RenewOptions};
use ssh_tpm_cert::{state, CaClient, HttpOptions};
use ssh_tpm_tpm::{Pin, Tpm};

use cli::{Args, Command, EkArg, NetArgs};

/// What a command fails with: the CLI's own errors or the client library's.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Cli(#[from] CliError),
    #[error(transparent)]
    Cert(#[from] ssh_tpm_cert::Error),
}

impl From<ssh_tpm_tpm::Error> for Failure {
    fn from(e: ssh_tpm_tpm::Error) -> Self {
        Failure::Cli(e.into())
    }
}

fn main() -> ExitCode {
    ssh_tpm::quiet_tss();
    let args = Args::parse();
    let level = if args.debug {
        tracing::Level::DEBUG
    } else {
        tracing::Level::WARN
    };
    ssh_tpm::init_logging(level);
    exit_on_interrupt();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ssh-tpm-cert: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Ctrl-C (SIGINT) ends the command at once with a word and status 130, whatever it waits
/// for (the browser's redirect, the CA, the TPM), rather than leaving a login to time out.
/// Certificates and the enrolment record are replaced atomically, so none is left half
/// written.
fn exit_on_interrupt() {
    std::thread::spawn(|| -> Option<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        runtime.block_on(async {
            let kind = tokio::signal::unix::SignalKind::interrupt();
            tokio::signal::unix::signal(kind).ok()?.recv().await
        })?;
        eprintln!("ssh-tpm-cert: interrupted");
        std::process::exit(130);
    });
}

fn run(args: Args) -> Result<(), Failure> {
    let state_path = match &args.state {
        Some(path) => path.clone(),
        None => state::default_path()?,
    };
    match args.command {
        Command::Enroll(a) => enroll(&a, &state_path),
        Command::Renew(a) => renew(&a, &state_path),
        Command::Status(a) => status(&a.keys, &state_path),
        Command::DeviceId(a) => device_id(&a),
        Command::InstallTimer(a) => {
            let renew = units::RenewCommand {
                state: args.state.as_deref(),
                tpm: Some(&a.tpm),
                net: Some(&a.net),
                ca: a.ca.as_deref(),
                keys: &a.keys,
                env: units::RenewCommand::env_now(),
            };
            Ok(units::install(&renew, a.force)?)
        }
    }
}

fn enroll(args: &cli::EnrollArgs, state_path: &Path) -> Result<(), Failure> {
    let net = net_options(&args.net)?;
    let ca = CaClient::new(&args.ca, &net.http)?;
    state::check_writable(state_path)?;
    let mut tpm = open_tpm(&args.tpm, &args.owner)?;
    let options = EnrollOptions {
        ek: args.ek.map(ek_family),
        ..EnrollOptions::default()
    };
    let enrolment = enroll::enroll(&mut tpm, &ca, &net, &options, state_path)?;
    println!(
        "Enrolled with {} as device {} ({} EK).",
        enrolment.ca_url, enrolment.device_id, enrolment.ek
    );
    println!(
        "Saved in {}; get a certificate with `ssh-tpm-cert renew`.",
        state_path.display()
    );
    Ok(())
}

fn ek_family(ek: EkArg) -> EkFamily {
    match ek {
        EkArg::Rsa => EkFamily::Rsa,
        EkArg::Ecc => EkFamily::Ecc,
    }
}

/// `device-id`: the id the CA computes from the EK certificate `enroll` would use, and that
/// certificate for the administrator.
fn device_id(args: &cli::DeviceIdArgs) -> Result<(), Failure> {
    let mut tpm = open_tpm(&args.tpm, &args.owner)?;
    let ek = enroll::choose_ek(&mut tpm, args.ek.map(ek_family))?;
    println!(
        "Device id: {} ({} EK certificate).",
        ek.device_id(),
        state::ek_name(ek.kind)
    );
    if let Some(path) = &args.ek_cert_out {
        ssh_tpm_keyfile::atomic::write_atomic(path, ek.certificate.der(), 0o644)
            .map_err(|e| CliError::io(format!("cannot write {}", path.display()), e))?;
        println!(
            "Wrote the EK certificate to {0}; your administrator adds this device with \
             `ssh-tpm-ca device add --ek-cert {0} --user NAME`.",
            path.display()
        );
    }
    Ok(())
}

fn renew(args: &cli::RenewArgs, state_path: &Path) -> Result<(), Failure> {
    let enrolment = state::require(state_path)?;
    let keys = match args.keys.is_empty() {
        true => vec![default_key()?],
        false => args.keys.iter().map(|k| certfile::key_path(k)).collect(),
    };
    let login = net_options(&args.net)?;
    let ca = CaClient::new(args.ca.as_deref().unwrap_or(&enrolment.ca_url), &login.http)?;
    let options = RenewOptions {
        force: args.force,
        hand_to_agent: !args.no_agent,
        login,
    };

    // Every key gets its turn, whatever became of the ones before; the TPM is opened when
    // the first one is due.
    let mut tpm = None;
    let mut failures = Vec::new();
    for key in &keys {
        match renew_one(args, &ca, &enrolment, &mut tpm, key, &options) {
            Ok(outcome) => report(&outcome),
            Err(failure) => failures.push(failure),
        }
    }
    match failures.len() {
        0 => Ok(()),
        1 if keys.len() == 1 => Err(CliError::Usage(failures.remove(0)).into()),
        n => {
            for failure in &failures {
                eprintln!("ssh-tpm-cert: {failure}");
            }
            Err(CliError::Usage(format!(
                "{n} of {} keys were not renewed; see above why",
                keys.len()
            ))
            .into())
        }
    }
}

/// Renews `key` when due; the error in words that name it.
fn renew_one(
    args: &cli::RenewArgs,
    ca: &CaClient,
    enrolment: &state::Enrolment,
    tpm: &mut Option<Tpm>,
    key: &Path,
    options: &RenewOptions,
) -> Result<Outcome, String> {
    let due = match renew::plan(key, options.force) {
        Ok(renew::Plan::StillGood(outcome)) => return Ok(outcome),
        Ok(renew::Plan::Due(due)) => due,
        Err(e) => return Err(naming(key, &e.to_string())),
    };
    println!("Renewing {} because {}.", key.display(), due.reason);
    let tpm = match tpm {
        Some(tpm) => tpm,
        None => {
            tpm.insert(open_tpm(&args.tpm, &args.owner).map_err(|e| naming(key, &e.to_string()))?)
        }
    };
    let mut pin = || ask_pin(key);
    renew::renew_due(tpm, ca, enrolment, &due, &mut pin, options)
        .map_err(|e| naming(key, &e.to_string()))
}

/// `error` in words that name the key file `key` (once: key-file errors name it already).
fn naming(key: &Path, text: &str) -> String {
    match text.contains(&key.display().to_string()) {
        true => text.to_string(),
        false => format!("{}: {text}", key.display()),
    }
}

/// Prints what a renewal did.
fn report(outcome: &Outcome) {
    match outcome {
        Outcome::StillGood { path, valid_before } if *valid_before >= certfile::FOREVER => {
            println!(
                "{} is valid forever (it has no expiry); nothing to renew (--force renews now).",
                path.display()
            )
        }
        Outcome::StillGood { path, valid_before } => println!(
            "{} is still good until {} ({} left); renewal is due in the last third of its \
             life (--force renews now).",
            path.display(),
            format_time(*valid_before),
            format_duration(valid_before.saturating_sub(now()))
        ),
        Outcome::Renewed {
            path,
            certificate,
            user,
            handover,
            ..
        } => {
            if !user.is_empty() {
                println!("Logged in as {user}.");
            }
            println!(
                "Wrote {}: principals {}, serial {}, valid until {}.",
                path.display(),
                certificate.valid_principals().join(", "),
                certificate.serial(),
                format_time(certificate.valid_before())
            );
            if let Some(handover) = handover {
                println!("{}.", first_upper(&handover.to_string()));
            }
        }
    }
}

fn first_upper(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

fn status(keys: &[PathBuf], state_path: &Path) -> Result<(), Failure> {
    match state::load(state_path)? {
        Some(e) => println!(
            "Enrolled with {} as device {} ({} EK) since {}.",
            e.ca_url,
            e.device_id,
            e.ek,
            format_time(e.enrolled_at)
        ),
        None => println!("Not enrolled ({} does not exist).", state_path.display()),
    }
    let keys = match keys.is_empty() {
        true => all_keys()?,
        false => keys.iter().map(|k| certfile::key_path(k)).collect(),
    };
    if let Some(missing) = keys.iter().find(|k| !k.exists()) {
        return Err(CliError::Usage(format!(
            "no key file at {}; name a key made by ssh-tpm-keygen with -f",
            missing.display()
        ))
        .into());
    }
    let now = now();
    for key in keys {
        let cert_path = certfile::cert_path(&key);
        println!("{}:", key.display());
        let key_data = renew::read_key(&key).and_then(|k| renew::ssh_key_data(&k));
        if let Err(e) = &key_data {
            println!("  {e}");
        }
        match certfile::read(&cert_path) {
            Ok(Some(cert)) if key_data.as_ref().is_ok_and(|k| cert.public_key() != k) => println!(
                "  {} certifies another key, not this one; `ssh-tpm-cert renew` replaces it",
                cert_path.display()
            ),
            Ok(Some(cert)) => {
                for line in certfile::describe(&cert, now) {
                    println!("  {line}");
                }
            }
            Ok(None) => println!("  no certificate ({} is missing)", cert_path.display()),
            Err(e @ ssh_tpm_cert::Error::Usage(_)) => {
                println!("  {e}; `ssh-tpm-cert renew` replaces it")
            }
            Err(e) => println!("  {e}"),
        }
    }
    Ok(())
}

/// `~/.ssh`.
fn ssh_dir() -> Result<PathBuf, CliError> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| PathBuf::from(home).join(".ssh"))
        .ok_or_else(|| CliError::Usage("HOME is not set; name the key with -f".into()))
}

/// `~/.ssh/id_ecdsa.tpm`, else `~/.ssh/id_rsa.tpm`.
fn default_key() -> Result<PathBuf, CliError> {
    let dir = ssh_dir()?;
    let candidates = [dir.join("id_ecdsa.tpm"), dir.join("id_rsa.tpm")];
    candidates
        .iter()
        .find(|path| path.exists())
        .cloned()
        .ok_or_else(|| {
            CliError::Usage(format!(
                "no key at {} or {}; make one with ssh-tpm-keygen, or name it with -f",
                candidates[0].display(),
                candidates[1].display()
            ))
        })
}

/// Every `*.tpm` directly in `~/.ssh`, sorted.
fn all_keys() -> Result<Vec<PathBuf>, CliError> {
    let dir = ssh_dir()?;
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CliError::io(format!("cannot list {}", dir.display()), e)),
    };
    let mut keys: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "tpm") && path.is_file())
        .collect();
    keys.sort();
    Ok(keys)
}

/// The login and HTTP options the flags ask for.
fn net_options(net: &NetArgs) -> Result<LoginOptions, Failure> {
    let mut http = HttpOptions::default();
    if let Some(path) = &net.tls_roots {
        let pem = std::fs::read(path)
            .map_err(|e| CliError::io(format!("cannot read {}", path.display()), e))?;
        http.add_roots_from_pem(&pem)?;
    }
    Ok(LoginOptions {
        timeout: Duration::from_secs(net.login_timeout),
        browser: if net.no_browser {
            Browser::None
        } else {
            Browser::Auto
        },
        http,
    })
}

/// Opens the TPM the flags name, with the owner password of `-o` or the environment.
fn open_tpm(tpm: &TpmArgs, owner_args: &OwnerArgs) -> Result<Tpm, Failure> {
    let from_env = owner::password_from_env();
    let mut opened = Tpm::open(&tpm.target()?)?;
    let password = match from_env {
        _ if owner_args.owner_password => Some(owner::ask_on_terminal()?),
        from_env => from_env,
    };
    if let Some(password) = password {
        opened.set_owner_password(password);
    }
    Ok(opened)
}

/// The key's PIN: on the terminal when there is one, else through SSH_ASKPASS.
fn ask_pin(key: &Path) -> ssh_tpm_cert::Result<Pin> {
    let prompt = format!("Enter PIN for {}: ", key.display());
    if std::io::stdin().is_terminal() {
        let pin = rpassword::prompt_password(&prompt)
            .map_err(|e| ssh_tpm_cert::Error::Usage(format!("cannot read the PIN: {e}")))?;
        return Ok(Pin::from(pin));
    }
    let askpass = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ssh_tpm_cert::Error::Usage(format!("cannot start the event loop: {e}")))?
        .block_on(ssh_tpm_agent_core::askpass::ask_pin(&prompt));
    askpass.map_err(|e| {
        ssh_tpm_cert::Error::Usage(format!(
            "{} needs its PIN and there is no terminal to ask on: {e}",
            key.display()
        ))
    })
}
