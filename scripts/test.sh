#!/usr/bin/env bash
# The test command: installs what is missing, then runs the whole suite. Unit tests run
# without a server; integration tests (tests/*.rs) start their own MariaDB servers on
# 127.0.0.1 with data under target/test-servers, and stop them when done.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# style and lints first (skipped only where the toolchain lacks the components)
if cargo fmt --version >/dev/null 2>&1; then cargo fmt --check; fi
if cargo clippy --version >/dev/null 2>&1; then cargo clippy --all-targets --quiet -- -D warnings; fi
cargo build --all-targets
cargo test --all-targets -- --test-threads=2
