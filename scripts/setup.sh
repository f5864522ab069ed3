#!/usr/bin/env bash
# Installs what ssh-tpm builds and tests with, on Debian: the TPM stack (tpm2-tss, swtpm,
# tpm2-tools, tpm2-openssl), OpenSSH's client and server, and the small tools the tests
# drive (systemd-socket-activate and systemd-analyze, pgrep, setpriv, sqlite3), and node with
# the test OpenID provider's npm packages. Safe to run again.
set -euo pipefail

packages=(swtpm swtpm-tools tpm2-tools libtss2-dev pkg-config openssh-client
          openssh-server tpm2-openssl openssl systemd procps util-linux sqlite3)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# The test OpenID provider runs on node; a node installed some other way will do.
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if ((${#missing[@]})); then
  echo "==> installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v cargo-nextest >/dev/null 2>&1; then
  echo "==> installing cargo-nextest"
  cargo install --locked cargo-nextest
fi
if ! command -v cargo-deny >/dev/null 2>&1; then
  echo "==> installing cargo-deny"
  cargo install --locked cargo-deny
fi
idp="$(dirname "$0")/../crates/cli/tests/idp"
if [ ! -d "$idp/node_modules" ]; then
  echo "==> installing the test OpenID provider's npm packages"
  (cd "$idp" && npm ci --no-audit --no-fund --loglevel=error)
fi
