#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets/*.rs) under libFuzzer for SECONDS each
# (default 60), starting from its committed corpus (fuzz/corpus/TARGET). Needs a nightly
# toolchain and cargo-fuzz (`cargo install --locked cargo-fuzz`; .ci/run installs it when a
# nightly toolchain is there).
#
#   scripts/fuzz.sh [SECONDS]          new inputs go to a temporary directory
#   FUZZ_KEEP=1 scripts/fuzz.sh 600    new inputs join the corpus; then minimize it with
#                                      cargo +nightly fuzz cmin TARGET fuzz/corpus/TARGET
#
# A crash stops the script with libFuzzer's report; the input is under fuzz/artifacts/TARGET.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
if ! cargo +nightly --version >/dev/null 2>&1 || ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: skipped: needs a nightly toolchain and cargo-fuzz" >&2
  exit 0
fi

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for source in fuzz/fuzz_targets/*.rs; do
  target="$(basename "$source" .rs)"
  corpus="fuzz/corpus/$target"
  mkdir -p "$corpus"
  dirs=("$corpus")
  if [ -z "${FUZZ_KEEP:-}" ]; then
    mkdir -p "$scratch/$target"
    dirs=("$scratch/$target" "$corpus")
  fi
  echo "==> fuzzing $target for ${seconds} s"
  log="$scratch/$target.log"
  status=0
  cargo +nightly fuzz run "$target" "${dirs[@]}" -- \
    -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1 || status=$?
  grep -E '^(INFO: seed corpus|#[0-9]+ *DONE|stat::number_of_executed_units|stat::new_units_added)' \
    "$log" || true
  if [ "$status" -ne 0 ]; then
    tail -n 60 "$log" >&2
    echo "fuzz.sh: $target failed (status $status); the input is under fuzz/artifacts/$target" >&2
    exit "$status"
  fi
done
echo "fuzz.sh: every target ran ${seconds} s without a crash"
