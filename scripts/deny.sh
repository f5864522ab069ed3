#!/usr/bin/env bash
# cargo deny (deny.toml) on the whole workspace: licences, sources and bans always; the
# RustSec advisories when their database (cloned from GitHub) can be fetched. A machine
# that cannot reach it checks the rest and says that the advisories were skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-deny >/dev/null 2>&1; then
  echo "deny.sh: cargo-deny is missing; run scripts/setup.sh" >&2
  exit 1
fi
cargo deny --log-level error check licenses sources bans
if cargo deny --log-level error fetch db >/dev/null 2>&1; then
  cargo deny --log-level error --offline check advisories
else
  echo "deny.sh: advisories NOT checked: the advisory database cannot be fetched from here" >&2
fi
