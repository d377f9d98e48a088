#!/usr/bin/env bash
# The test command: installs what is missing, then runs the whole suite. Unit tests run
# without a server; integration tests (tests/*.rs) start their own MariaDB servers on
# 127.0.0.1 with data under target/test-servers, and stop them when done.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --all-targets
cargo test --all-targets -- --test-threads=2
