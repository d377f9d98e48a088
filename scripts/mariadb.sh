#!/usr/bin/env bash
# Start or stop a throw-away MariaDB server on 127.0.0.1 with its own data directory.
#   scripts/mariadb.sh start NAME PORT [extra mariadbd options...]
#   scripts/mariadb.sh stop NAME
# Data lives in ${MIGRATE_RUN_DIR:-.run}/NAME (git-ignored). The server runs as root-owned
# process with user root over TCP only; root has no password and is reachable from 127.0.0.1.
set -euo pipefail
run_dir=${MIGRATE_RUN_DIR:-$(cd "$(dirname "$0")/.." && pwd)/.run}
cmd=${1:?start|stop}; name=${2:?name}
dir="$run_dir/$name"
case "$cmd" in
start)
  port=${3:?port}; shift 3
  # its own tmpdir: a starting mariadbd deletes every #sql* file in its tmpdir (another
  # server's temporary tables included)
  mkdir -p "$dir/tmp"
  if [ ! -d "$dir/data/mysql" ]; then
    mariadb-install-db --no-defaults --datadir="$dir/data" --user=root --tmpdir="$dir/tmp" \
      --auth-root-authentication-method=normal --skip-test-db >"$dir/install.log" 2>&1
  fi
  if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then exit 0; fi
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is already in use by another process: stop it or choose another port" >&2; exit 2
  fi
  mariadbd --no-defaults --user=root --datadir="$dir/data" --port="$port" --bind-address=127.0.0.1 \
    --socket="$dir/sock" --pid-file="$dir/pid" --log-error="$dir/error.log" --tmpdir="$dir/tmp" \
    --innodb-buffer-pool-size=256M --innodb-log-file-size=256M --innodb-flush-log-at-trx-commit=2 \
    --skip-name-resolve --max-allowed-packet=1G --local-infile=1 "$@" &
  for _ in $(seq 1 300); do
    if mariadb --no-defaults -uroot -h127.0.0.1 -P"$port" -e 'SELECT 1' >/dev/null 2>&1; then exit 0; fi
    sleep 0.1
  done
  echo "MariaDB $name did not start on port $port; see $dir/error.log" >&2; tail -20 "$dir/error.log" >&2; exit 2
  ;;
stop)
  if [ -f "$dir/pid" ]; then
    pid=$(cat "$dir/pid"); kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  ;;
*) echo "usage: $0 start NAME PORT [opts] | stop NAME" >&2; exit 2;;
esac
