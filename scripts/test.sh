#!/usr/bin/env bash
# Runs every test of the workspace: unit tests, the store conformance suite on SQLite and
# on a real PostgreSQL, and the end-to-end tests of the sovdb binary.
# cargo-nextest runs each test in its own process, in parallel; plain cargo test is the
# fallback where nextest is not installed.
set -euo pipefail
cd "$(dirname "$0")/.."
if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --workspace --locked --no-fail-fast
else
  exec cargo test --workspace --locked --no-fail-fast
fi
