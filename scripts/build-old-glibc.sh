#!/usr/bin/env bash
# Build a migrate that runs on x86_64 Linux with glibc 2.17 or newer (an Amazon Linux 2 bastion
# has 2.26; a binary built on Debian 12 needs 2.34), without the musl Rust target that
# scripts/build-static.sh needs: the host's own Rust target, linked (and its C parts: SQLite,
# mimalloc, ring) by `zig cc` against glibc 2.17's symbol versions. zig comes from PyPI
# (`pip install ziglang`), so everything is fetched from package registries.
#
#   scripts/build-old-glibc.sh            build, then check the symbol versions it needs
#   scripts/build-old-glibc.sh --test     also run the TLS, type-matrix and VPN tests against it
#
# The result: target/old-glibc/x86_64-unknown-linux-gnu/release/migrate. Extra arguments after
# the options go to cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
run_tests=0
if [ "${1:-}" = --test ]; then run_tests=1; shift; fi
glibc=${GLIBC_VERSION:-2.17}
zig_version=${ZIG_VERSION:-0.14.1}
if ! python3 -m ziglang version >/dev/null 2>&1; then
  echo "zig not found for python3: installing ziglang==$zig_version from PyPI" >&2
  python3 -m pip install --quiet "ziglang==$zig_version" || {
    echo "error: could not install ziglang (python3 -m pip install ziglang==$zig_version); install it and run again" >&2
    exit 2
  }
fi
out=$root/target/old-glibc
mkdir -p "$out/bin"
# rustc and cc-rs speak gcc; zig's clang driver takes nearly all of it. Two translations:
# -lgcc_s (unwinding) is zig's bundled libunwind, and the clang-style --target cc-rs adds is
# replaced by zig's own -target, which carries the glibc version.
cat > "$out/bin/zig-cc" <<EOF
#!/usr/bin/env bash
args=()
for a in "\$@"; do
  case "\$a" in
    -lgcc_s) args+=(-lunwind) ;;
    --target=*) ;;
    *) args+=("\$a") ;;
  esac
done
exec python3 -m ziglang cc -target x86_64-linux-gnu.$glibc "\${args[@]}"
EOF
chmod +x "$out/bin/zig-cc"
triple=x86_64-unknown-linux-gnu
CARGO_TARGET_DIR=$out \
  CC_x86_64_unknown_linux_gnu="$out/bin/zig-cc" \
  CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER="$out/bin/zig-cc" \
  CARGO_PROFILE_RELEASE_STRIP=debuginfo \
  cargo build --release --locked --target "$triple" "$@"
bin=$out/$triple/release/migrate

# what the dynamic loader will ask of the bastion's glibc: every versioned symbol and library
needed=$(objdump -T "$bin" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
if [ "$(printf '%s\n%s\n' "$needed" "$glibc" | sort -V | tail -1)" != "$glibc" ]; then
  echo "error: $bin needs GLIBC_$needed, newer than $glibc" >&2
  objdump -T "$bin" | grep "GLIBC_$needed" >&2
  exit 1
fi
libs=$(readelf -d "$bin" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | tr '\n' ' ')
for l in $libs; do
  case "$l" in
    libc.so.6 | libm.so.6 | libpthread.so.0 | libdl.so.2 | librt.so.1 | ld-linux-x86-64.so.2) ;;
    *) echo "error: $bin needs $l, which is not part of glibc" >&2; exit 1 ;;
  esac
done
"$bin" --version >/dev/null
echo "built: $bin ($(du -h "$bin" | cut -f1)); needs glibc >= $needed (libraries: $libs)"

if [ "$run_tests" = 1 ]; then
  # the servers of the suite's harness; the tests run this binary instead of cargo's
  scripts/install-deps.sh
  MIGRATE_TEST_BIN=$bin cargo test --locked --test bad_input tls_verify_ca -- --exact
  MIGRATE_TEST_BIN=$bin cargo test --locked --test types
  MIGRATE_TEST_BIN=$bin cargo test --locked --test wan
  echo "tested: TLS with CA verification, every column type through snapshot and binlog, a dropping VPN: all passed with $bin"
fi
