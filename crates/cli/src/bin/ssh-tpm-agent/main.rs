//! `ssh-tpm-agent`: serves TPM keys to OpenSSH over the agent protocol.

mod cli;
mod units;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use ssh_tpm::{owner, CliError};
use ssh_tpm_agent_core::askpass;
use ssh_tpm_agent_core::upstream::Upstreams;
use ssh_tpm_agent_core::watch::KeyDirWatch;
use ssh_tpm_agent_core::{activation, server, socket, Agent, AgentKey};
use ssh_tpm_keyfile::TpmKey;
use ssh_tpm_tpm::{KeySpec, Pin, TpmService};
use tokio::signal::unix::{signal, SignalKind};

use cli::Args;

fn main() -> ExitCode {
    ssh_tpm::quiet_tss();
    let args = Args::parse();
    if args.install_user_units {
        return match units::install(args.force) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => ssh_tpm::report("ssh-tpm-agent", &e),
        };
    }
    if args.print_socket {
        return match socket::resolve(args.socket.as_deref()) {
            Ok(path) => {
                println!("{}", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => ssh_tpm::report("ssh-tpm-agent", &e.into()),
        };
    }
    let level = if args.debug {
        tracing::Level::DEBUG
    } else {
        tracing::Level::INFO
    };
    ssh_tpm::init_logging(level);
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => ssh_tpm::report("ssh-tpm-agent", &e),
    }
}

fn run(args: Args) -> Result<(), CliError> {
    // Taken before any thread starts: it clears systemd's variables.
    let activated = activation::listener()?;
    let path = match activated.as_ref().and_then(activation::socket_path) {
        Some(path) => path,
        None => socket::resolve(args.socket.as_deref())?,
    };
    check_upstreams(&path, &args.upstreams)?;
    let tpm = match owner_password(args.owner.owner_password)? {
        Some(password) => TpmService::start_with(args.tpm.target()?, move |tpm| {
            tpm.set_owner_password(password.clone())
        })?,
        None => TpmService::start(args.tpm.target()?)?,
    };
    let hierarchy_keys = match args.hierarchy {
        Some(hierarchy) => tpm.run(move |tpm| tpm.hierarchy_keys(hierarchy))?,
        None => Vec::new(),
    };
    let agent = Agent::new(tpm, !args.no_cache).with_upstreams(Upstreams::new(args.upstreams));
    for key in hierarchy_keys {
        add_hierarchy_key(&agent, key)?;
    }
    let key_dir = match (args.no_load, args.key_dir) {
        (true, _) => None,
        (false, Some(dir)) => Some(dir),
        (false, None) => Some(default_key_dir()?),
    };
    if let Some(dir) = &key_dir {
        load_keys(&agent, dir);
    }

    server::raise_open_file_limit();
    let from_systemd = activated.is_some();
    let listener = match activated {
        Some(listener) => listener,
        None => socket::bind(&path)?,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::io("cannot start the event loop", e))?;
    let agent = Arc::new(agent);
    let served = runtime.block_on(async {
        let listener = tokio::net::UnixListener::from_std(listener)
            .map_err(|e| CliError::io("cannot use the socket", e))?;
        let mut term = signal(SignalKind::terminate())
            .map_err(|e| CliError::io("cannot handle SIGTERM", e))?;
        let mut int =
            signal(SignalKind::interrupt()).map_err(|e| CliError::io("cannot handle SIGINT", e))?;
        let mut hangup =
            signal(SignalKind::hangup()).map_err(|e| CliError::io("cannot handle SIGHUP", e))?;
        if let Some(dir) = &key_dir {
            watch_key_dir(Arc::clone(&agent), dir.clone());
        }
        let reloader = Arc::clone(&agent);
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                match &key_dir {
                    Some(dir) => {
                        tracing::info!(dir = %dir.display(), "SIGHUP: reloading keys");
                        reloader.keyring().forget_removals();
                        load_keys(&reloader, dir);
                    }
                    None => tracing::info!("SIGHUP: no key directory to reload (--no-load)"),
                }
            }
        });
        if from_systemd {
            tracing::info!("listening on the socket systemd passed");
        } else {
            tracing::info!(socket = %path.display(), "listening");
        }
        let stop = async {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        server::serve(Arc::clone(&agent), listener, stop).await;
        Ok::<(), CliError>(())
    });
    // Connections still open hold the agent; ending the runtime drops them.
    drop(runtime);
    // systemd's socket stays for the next activation.
    if !from_systemd {
        let _ = std::fs::remove_file(&path);
    }
    if let Ok(agent) = Arc::try_unwrap(agent) {
        agent.into_tpm().shutdown();
    }
    tracing::info!("stopped");
    served
}

/// Refuses `-A` sockets that are our own: each request would come back to us, forever.
/// Sockets that do not answer yet are allowed (the agent may start later), with a warning.
fn check_upstreams(own: &Path, upstreams: &[PathBuf]) -> Result<(), CliError> {
    let canonical = |path: &Path| std::fs::canonicalize(path).unwrap_or_else(|_| path.into());
    for upstream in upstreams {
        if upstream == own || canonical(upstream) == canonical(own) {
            return Err(CliError::Usage(format!(
                "-A {} is this agent's own socket; give the socket of another agent",
                upstream.display()
            )));
        }
        if std::os::unix::net::UnixStream::connect(upstream).is_err() {
            tracing::warn!(
                agent = %upstream.display(),
                "nothing answers at this -A socket yet; its keys are left out until it does"
            );
        }
        tracing::info!(agent = %upstream.display(), "standing in front of another agent");
    }
    Ok(())
}

/// Reloads the keys whenever a key file, public key or certificate under `dir` changes.
/// Without inotify (or without the directory) the keys are reloaded on SIGHUP only.
fn watch_key_dir(agent: Arc<Agent>, dir: PathBuf) {
    let mut watch = match KeyDirWatch::new(&dir) {
        Ok(watch) => watch,
        Err(e) => {
            let dir = dir.display();
            tracing::warn!(%dir, "not watching for key changes ({e}); send SIGHUP to reload");
            return;
        }
    };
    tokio::spawn(async move {
        loop {
            if let Err(e) = watch.changed().await {
                tracing::warn!(dir = %dir.display(), "stopped watching for key changes: {e}");
                return;
            }
            tracing::info!(dir = %dir.display(), "key files changed: reloading keys");
            load_keys(&agent, &dir);
        }
    });
}

/// Loads (or reloads) every key file under `dir`, reporting each one that fails.
fn load_keys(agent: &Agent, dir: &std::path::Path) {
    for failure in agent.keyring().load_dir(dir) {
        tracing::warn!("not loaded: {failure}");
    }
}

fn default_key_dir() -> Result<PathBuf, CliError> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| PathBuf::from(home).join(".ssh"))
        .ok_or_else(|| {
            CliError::Usage("HOME is not set; name the key directory with --key-dir".into())
        })
}

/// The owner hierarchy's password: asked through askpass with `-o`, else taken from
/// `SSH_TPM_AGENT_OWNER_PASSWORD` (and removed there, so that askpass does not inherit it).
fn owner_password(ask: bool) -> Result<Option<Pin>, CliError> {
    let from_env = owner::password_from_env();
    if !ask {
        return Ok(from_env);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::io("cannot start the event loop", e))?;
    let asked = runtime.block_on(askpass::ask_pin("Enter the TPM owner password: "))?;
    Ok(Some(asked))
}

/// Serves a hierarchy signing key, with a comment like `owner hierarchy ecdsa`.
fn add_hierarchy_key(agent: &Agent, key: TpmKey) -> Result<(), CliError> {
    let hierarchy = ssh_tpm_tpm::hierarchy_name(key.parent);
    let mut key = AgentKey::new(key, None)?;
    let kind = match key.spec {
        KeySpec::Rsa2048 | KeySpec::Rsa3072 => "rsa",
        _ => "ecdsa",
    };
    key.comment = format!("{hierarchy} hierarchy {kind}");
    tracing::info!(key = %key.label(), "serving a hierarchy key");
    agent.keyring().add(key);
    Ok(())
}
