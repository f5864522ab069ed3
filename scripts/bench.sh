#!/usr/bin/env bash
# The benchmark of issue 5, in one command: installs what it needs (swtpm, tpm2-tools,
# tpm2-pkcs11 with its tools, tpm2-abrmd, D-Bus, OpenSSH), builds the release binaries,
# and runs ssh-tpm-bench: our agent and OpenSSH's ssh-agent + tpm2-pkcs11, each on a private
# swtpm behind a TPM command-counting proxy. The Markdown report goes to stdout and to
# target/bench/results.md; BENCHMARKS.md explains it.
#
#   scripts/bench.sh            # the full run (about two minutes on 2 cores)
#   scripts/bench.sh --quick    # a smoke run: few signatures, noisy figures
#   scripts/bench.sh --keep     # keep the working directory (agent and swtpm logs)
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(swtpm swtpm-tools tpm2-tools libtss2-dev pkg-config openssh-client
          libtpm2-pkcs11-1 libtpm2-pkcs11-tools libtss2-tcti-tabrmd0 tpm2-abrmd dbus)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "==> installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

echo "==> building release binaries" >&2
cargo build --release --quiet -p ssh-tpm -p ssh-tpm-bench

mkdir -p target/bench
exec target/release/ssh-tpm-bench --command "scripts/bench.sh${*:+ $*}" \
  --out target/bench/results.md "$@"
