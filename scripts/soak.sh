#!/usr/bin/env bash
# Randomized differential soak (tests/soak.rs): a seeded random writer on a source MariaDB while
# snapshot and follow run and are killed with -9; the target must end identical to the source.
#
#   scripts/soak.sh SECONDS SEED   replay one seed, its writer running for SECONDS
#   scripts/soak.sh SECONDS        new random seeds one after another (each ~120 s) until
#                                  SECONDS of wall time have passed; stops at the first failure
#
# One line per seed ("seed N: clean" / "seed N: FAILED"); a failed seed's output stays in
# target/soak/seed-N.log and its writer statements and engine logs in target/soak/seed-N/.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  echo "usage: scripts/soak.sh SECONDS [SEED]" >&2
  exit 2
}
[ $# -ge 1 ] && [ $# -le 2 ] || usage
total=$1
seed=${2:-}
[[ "$total" =~ ^[0-9]+$ ]] && [ "$total" -gt 0 ] || usage
[ -z "$seed" ] || [[ "$seed" =~ ^[0-9]+$ ]] || usage

scripts/install-deps.sh
echo "building..."
cargo test --test soak --no-run --quiet
mkdir -p target/soak

clean=0
clean_secs=0

# run_seed SEED SECONDS: 0 if clean
run_seed() {
  local s=$1 secs=$2 log="target/soak/seed-$1.log" t0 rc
  t0=$(date +%s)
  set +e
  SOAK_SEED=$s SOAK_SECONDS=$secs cargo test --quiet --test soak -- --nocapture --test-threads=1 >"$log" 2>&1
  rc=$?
  set -e
  local took=$(($(date +%s) - t0))
  if [ $rc -eq 0 ]; then
    echo "seed $s: clean ($secs s of writes, ${took} s in all)"
    clean=$((clean + 1))
    clean_secs=$((clean_secs + took))
    rm -f "$log"
    return 0
  fi
  echo "seed $s: FAILED"
  # the failure message (starts with SOAK FAILED), else the end of the output
  if grep -q "SOAK FAILED" "$log"; then
    sed -n '/SOAK FAILED/,/^replay:/p' "$log" | head -60
  else
    tail -40 "$log"
  fi
  echo
  echo "full output: $log"
  echo "replay: scripts/soak.sh $secs $s"
  return 1
}

summary() {
  echo "$clean seed(s) ran clean, $(awk "BEGIN { printf \"%.1f\", $clean_secs / 60 }") minutes"
}

if [ -n "$seed" ]; then
  if run_seed "$seed" "$total"; then
    summary
    exit 0
  fi
  summary
  exit 1
fi

start=$(date +%s)
while :; do
  left=$((total - ($(date +%s) - start)))
  [ "$left" -gt 0 ] || break
  secs=120
  # the last seed gets what is left (at least 30 s of writes)
  if [ "$left" -lt "$secs" ]; then secs=$((left < 30 ? 30 : left)); fi
  s=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
  if ! run_seed "$s" "$secs"; then
    summary
    exit 1
  fi
done
summary
