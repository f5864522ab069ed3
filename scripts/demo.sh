#!/usr/bin/env bash
# The main job, end to end, on the embedded software TPM: create a key inside the TPM,
# serve it with ssh-tpm-agent, list it with ssh-add, and log into a throwaway sshd on
# 127.0.0.1 with it. The swtpm state lives in ~/.local/state/ssh-tpm/swtpm (as with
# `--swtpm`), so the key stays usable afterwards; the demo's files go to a temp directory.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
echo "==> building"
cargo build --quiet --bins
bin="${CARGO_TARGET_DIR:-$PWD/target}/debug"

demo=$(mktemp -d /tmp/ssh-tpm-demo.XXXXXX)
chmod 700 "$demo"
agent_pid="" sshd_pid=""
cleanup() {
  [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null
  [ -n "$sshd_pid" ] && kill "$sshd_pid" 2>/dev/null && wait "$sshd_pid" 2>/dev/null
  rm -rf "$demo"
}
trap cleanup EXIT

wait_for() { # wait_for TEST...: poll for up to 10 s
  for _ in $(seq 100); do "$@" 2>/dev/null && return 0; sleep 0.1; done
  return 1
}

echo
echo "==> 1. ssh-tpm-keygen --swtpm: an ECDSA P-256 key born inside the (software) TPM"
"$bin/ssh-tpm-keygen" --swtpm -f "$demo/id_ecdsa" -N "" -C "demo@ssh-tpm"

echo
echo "==> 2. ssh-tpm-agent --swtpm: serving it on $demo/agent.sock"
"$bin/ssh-tpm-agent" --swtpm -d -l "$demo/agent.sock" --key-dir "$demo" 2>"$demo/agent.log" &
agent_pid=$!
wait_for test -S "$demo/agent.sock" || { cat "$demo/agent.log"; exit 1; }
export SSH_AUTH_SOCK="$demo/agent.sock"

echo
echo "==> 3. ssh-add -L: what the agent offers"
ssh-add -L

echo
echo "==> 4. ssh into a throwaway sshd on 127.0.0.1 with the TPM key"
ssh-keygen -q -t ed25519 -N "" -f "$demo/host_key"
cp "$demo/id_ecdsa.pub" "$demo/authorized_keys"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$demo/sshd_config" <<CONF
Port $port
ListenAddress 127.0.0.1
HostKey $demo/host_key
AuthorizedKeysFile $demo/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile none
PermitRootLogin prohibit-password
CONF
[ "$(id -u)" -ne 0 ] || mkdir -p /run/sshd
sshd=$(command -v sshd || echo /usr/sbin/sshd)
"$sshd" -D -e -f "$demo/sshd_config" 2>"$demo/sshd.log" &
sshd_pid=$!
wait_for bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" || { cat "$demo/sshd.log"; exit 1; }
ssh -F /dev/null -o IdentityAgent="$SSH_AUTH_SOCK" -o StrictHostKeyChecking=no \
    -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR -p "$port" \
    "$(id -un)@127.0.0.1" \
    'echo "logged in as $(id -un) on $(hostname), with a key that lives in the TPM"'

echo
echo "==> done: the agent signed the login inside the TPM; its log:"
sed 's/^/    /' "$demo/agent.log"
