#!/usr/bin/env bash
# Installs what the tests need and runs every test: unit tests, key-file vectors, and the
# end-to-end tests that drive the binaries against real swtpm and OpenSSH.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo nextest run --workspace --no-fail-fast "$@"
cargo test --workspace --doc --quiet
