#!/usr/bin/env bash
# The soak of issue 7, in two halves, one after the other (release builds):
# - the agent: CLIENTS clients sign through one ssh-tpm-agent on a private swtpm for DURATION
#   seconds (default 600), every signature verified, the agent's VmRSS sampled each second;
# - the CA: DEVICES devices (each its own manufactured swtpm, enrolled) renew certificates
#   against one ssh-tpm-ca serve in parallel for DURATION seconds, logging in at node's
#   oidc-provider for every renewal, every certificate checked, the CA's VmRSS sampled.
# Prints both Markdown tables (BENCHMARKS.md, "Soak") and fails on any error. The suite runs
# short versions (crates/bench/tests/soak.rs, crates/cli/tests/soak_ca.rs).
#
#   scripts/soak.sh [DURATION] [CLIENTS] [DEVICES]
set -euo pipefail
cd "$(dirname "$0")/.."

duration="${1:-600}"
clients="${2:-32}"
devices="${3:-4}"
scripts/setup.sh >&2
echo "==> building release binaries" >&2
cargo build --release --quiet -p ssh-tpm -p ssh-tpm-bench
target_dir="${CARGO_TARGET_DIR:-target}"
report="$(mktemp)"
trap 'rm -f "$report" "$report.agent"' EXIT

echo "==> agent: $clients clients signing for $duration s" >&2
"$target_dir/release/ssh-tpm-soak" --seconds "$duration" --clients "$clients" \
  --bin-dir "$target_dir/release" >"$report.agent"

echo "==> CA: $devices devices renewing in parallel for $duration s" >&2
TSS2_LOG=all+NONE SSH_TPM_SOAK_SECS="$duration" SSH_TPM_SOAK_DEVICES="$devices" \
  SSH_TPM_SOAK_REPORT="$report" \
  cargo test --release --quiet -p ssh-tpm --test soak_ca -- --nocapture >&2

echo
cat "$report.agent"
echo
cat "$report"
