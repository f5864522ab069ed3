#!/usr/bin/env bash
# The soak of issue 7: 32 clients sign through one ssh-tpm-agent (release build) on a
# private swtpm for DURATION seconds (default 600), every signature verified, the agent's
# VmRSS sampled each second. Prints a Markdown table (BENCHMARKS.md, "Soak") and fails on
# any error. The suite runs a 15 s version (crates/bench/tests/soak.rs).
#
#   scripts/soak.sh [DURATION] [CLIENTS]
set -euo pipefail
cd "$(dirname "$0")/.."

duration="${1:-600}"
clients="${2:-32}"
scripts/setup.sh >&2
echo "==> building release binaries" >&2
cargo build --release --quiet -p ssh-tpm -p ssh-tpm-bench
target_dir="${CARGO_TARGET_DIR:-target}"
echo "==> $clients clients signing for $duration s" >&2
"$target_dir/release/ssh-tpm-soak" --seconds "$duration" --clients "$clients" \
  --bin-dir "$target_dir/release"
