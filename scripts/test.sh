#!/usr/bin/env bash
# Runs every test of the workspace under cargo-nextest (installed by
# `scripts/install-deps.sh test`): unit tests, the store conformance suite on SQLite and on
# a real PostgreSQL, and the end-to-end tests of the sovdb binary. nextest runs each test
# in its own process, in parallel, with the test groups and timeouts of
# .config/nextest.toml; there is no plain `cargo test` fallback, since without those the
# suite is not the one CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo nextest run --workspace --locked --no-fail-fast "$@"
