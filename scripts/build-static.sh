#!/usr/bin/env bash
# Build a static migrate for x86_64 Linux (musl libc, no shared library needed): it runs on any
# x86_64 Linux, e.g. an Amazon Linux 2 bastion (glibc 2.26) where a binary built on Debian 12
# (glibc 2.36) does not start. The result: target/x86_64-unknown-linux-musl/release/migrate.
# Extra arguments go to cargo (e.g. --features ...). Needs the Rust target and musl-gcc (the
# C parts: SQLite, mimalloc, ring). TLS is rustls (no OpenSSL to link).
set -euo pipefail
cd "$(dirname "$0")/.."
triple=x86_64-unknown-linux-musl
if ! rustup target list --installed 2>/dev/null | grep -qx "$triple"; then
  cat >&2 <<MSG
the Rust target $triple is not installed. Add it with:
    rustup target add $triple
(it downloads the musl standard library from the rustup dist server; without access to it,
build on a machine that has it, or use the container image of the Dockerfile instead)
MSG
  exit 2
fi
if ! command -v musl-gcc >/dev/null; then
  echo "musl-gcc not found: install it (Debian/Ubuntu: apt-get install musl-tools; it builds the bundled SQLite, mimalloc and ring for musl)" >&2
  exit 2
fi
export CC_x86_64_unknown_linux_musl="${CC_x86_64_unknown_linux_musl:-musl-gcc}"
cargo build --release --locked --target "$triple" "$@"
bin="target/$triple/release/migrate"
file "$bin"
# a static executable: ldd says "not a dynamic executable" (glibc's) or "statically linked"
if ldd "$bin" 2>&1 | grep -Eq 'not a dynamic executable|statically linked'; then
  echo "static: $bin ($(du -h "$bin" | cut -f1)); copy it to the bastion and run ./migrate --version"
else
  echo "error: $bin is not static:" >&2
  ldd "$bin" >&2 || true
  exit 1
fi
