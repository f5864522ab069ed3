//! `ssh-tpm-agent --install-user-units`: writes a systemd user socket and service for the
//! agent, so that systemd listens on its socket and starts the agent on first use.

use std::path::{Path, PathBuf};

use ssh_tpm::{units, CliError};

/// The socket unit's name; the service has the same stem.
const SOCKET_UNIT: &str = "ssh-tpm-agent.socket";
const SERVICE_UNIT: &str = "ssh-tpm-agent.service";

/// The socket unit. `%t` is `$XDG_RUNTIME_DIR`, where the agent listens by default.
const SOCKET_TEXT: &str = "\
[Unit]
Description=SSH agent with keys in the TPM (socket)
Documentation=https://github.com/Foxboron/ssh-tpm-agent

[Socket]
ListenStream=%t/ssh-tpm-agent.sock
SocketMode=0600
DirectoryMode=0700
Service=ssh-tpm-agent.service

[Install]
WantedBy=sockets.target
";

/// The service unit, with `@EXEC@` for the agent's path. The sandbox leaves the agent what it
/// needs: `~/.ssh` to read, the TPM device, Unix sockets (its own, askpass helpers' displays,
/// `-A` agents), TCP for an swtpm, and the embedded swtpm's state under `%S`.
const SERVICE_TEXT: &str = "\
[Unit]
Description=SSH agent with keys in the TPM
Documentation=https://github.com/Foxboron/ssh-tpm-agent
Requires=ssh-tpm-agent.socket
After=ssh-tpm-agent.socket

[Service]
Type=simple
ExecStart=@EXEC@
ExecReload=/bin/kill -HUP $MAINPID
Environment=SSH_TPM_AUTH_SOCK=%t/ssh-tpm-agent.sock
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=read-only
ReadWritePaths=-%S/ssh-tpm
PrivateTmp=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
UMask=0077

[Install]
Also=ssh-tpm-agent.socket
";

/// Writes both units into `$XDG_CONFIG_HOME/systemd/user` (default `~/.config/systemd/user`);
/// an existing unit is replaced only with `force`. Prints what to run next.
pub fn install(force: bool) -> Result<(), CliError> {
    let dir = unit_dir()?;
    let exec = units::agent_exec()?;
    let unit_files = [
        (SOCKET_UNIT, SOCKET_TEXT.to_string()),
        (SERVICE_UNIT, SERVICE_TEXT.replace("@EXEC@", &exec)),
    ];
    units::write_units(&dir, &unit_files, force)?;
    println!("Now run:");
    println!("  systemctl --user daemon-reload");
    println!("  systemctl --user enable --now {SOCKET_UNIT}");
    println!("and set SSH_AUTH_SOCK=$XDG_RUNTIME_DIR/ssh-tpm-agent.sock in your shell.");
    Ok(())
}

/// `$XDG_CONFIG_HOME/systemd/user`, else `~/.config/systemd/user`.
fn unit_dir() -> Result<PathBuf, CliError> {
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let config = match (env("XDG_CONFIG_HOME"), env("HOME")) {
        (Some(config), _) => PathBuf::from(config),
        (None, Some(home)) => Path::new(&home).join(".config"),
        (None, None) => {
            return Err(CliError::Usage(
                "neither XDG_CONFIG_HOME nor HOME is set; set one to install the units".into(),
            ))
        }
    };
    Ok(config.join("systemd").join("user"))
}
