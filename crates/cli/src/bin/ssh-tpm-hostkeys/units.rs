//! `ssh-tpm-hostkeys --install-system-units`: a system socket and a sandboxed service that run
//! ssh-tpm-agent as root, serving the TPM host keys to sshd on the socket its `HostKeyAgent`
//! names.

use ssh_tpm::{units, CliError};

use crate::cli::Args;

/// The socket unit's name; the service has the same stem.
const SOCKET_UNIT: &str = "ssh-tpm-agent-hostkeys.socket";
const SERVICE_UNIT: &str = "ssh-tpm-agent-hostkeys.service";

/// The socket unit, with `@SOCKET@` for the path sshd's `HostKeyAgent` names.
const SOCKET_TEXT: &str = "\
[Unit]
Description=SSH agent serving the TPM host keys to sshd (socket)
Documentation=https://github.com/Foxboron/ssh-tpm-agent
Before=sshd.service ssh.service

[Socket]
ListenStream=@SOCKET@
SocketMode=0600
Service=ssh-tpm-agent-hostkeys.service

[Install]
WantedBy=sockets.target
";

/// The service unit, with `@EXEC@` for the agent, `@SOCKET@` and `@KEYDIR@`. The agent runs as
/// root with the host key directory to read, the TPM device (tss-owned on some systems, hence
/// CAP_DAC_OVERRIDE alone), the socket systemd passes, and nothing to write.
const SERVICE_TEXT: &str = "\
[Unit]
Description=SSH agent serving the TPM host keys to sshd
Documentation=https://github.com/Foxboron/ssh-tpm-agent
Requires=ssh-tpm-agent-hostkeys.socket
After=ssh-tpm-agent-hostkeys.socket

[Service]
Type=simple
ExecStart=@EXEC@ -l @SOCKET@ --key-dir @KEYDIR@
ExecReload=/bin/kill -HUP $MAINPID
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
ReadOnlyPaths=@KEYDIR@
PrivateTmp=yes
DevicePolicy=closed
DeviceAllow=/dev/tpmrm0 rw
CapabilityBoundingSet=CAP_DAC_OVERRIDE
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
UMask=0077

[Install]
Also=ssh-tpm-agent-hostkeys.socket
";

/// Writes both units into `--unit-dir`; an existing unit is replaced only with `--force`.
/// Prints what to run next.
pub fn install(args: &Args) -> Result<(), CliError> {
    let exec = units::agent_exec()?;
    let socket = units::unit_path(&args.socket, "the agent socket")?;
    let key_dir = units::unit_path(&args.host_key_dir, "the host key directory")?;
    let fill = |text: &str| {
        text.replace("@EXEC@", &exec)
            .replace("@SOCKET@", &socket)
            .replace("@KEYDIR@", &key_dir)
    };
    let unit_files = [
        (SOCKET_UNIT, fill(SOCKET_TEXT)),
        (SERVICE_UNIT, fill(SERVICE_TEXT)),
    ];
    units::write_units(&args.unit_dir, &unit_files, args.force)?;
    println!("Now run:");
    println!("  systemctl daemon-reload && systemctl enable --now {SOCKET_UNIT}");
    println!(
        "and point sshd at {} with ssh-tpm-hostkeys --install-sshd-config.",
        args.socket.display()
    );
    Ok(())
}
