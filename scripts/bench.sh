#!/usr/bin/env bash
# Benchmarks against peers, measured in the same run on this machine (ratios, not absolutes).
#   scripts/bench.sh snapshot   migrate snapshot vs mydumper -t 2 + myloader -t 2 (sysbench tables)
#   scripts/bench.sh follow     migrate follow --until-caught-up vs a native MariaDB replica
#                               (single-threaded and slave_parallel_threads=4 optimistic) on the
#                               same binlog backlog; then the highest sysbench write rate at which
#                               follow's lag stays under 1 s
#   scripts/bench.sh verify     full verification of the sysbench tables: migrate verify (defaults)
#                               vs pt-table-checksum run on both servers at once (static
#                               10k-row chunks so both sides chunk alike — the run a user can
#                               compare; and, for reference, its default adaptive chunking,
#                               whose chunks differ between the servers; flags for a row-based
#                               binlog and no replica; sql_log_bin=0, since its statement-format
#                               writes to percona.checksums would stop follow) vs CHECKSUM TABLE
#                               on both servers at once
#   scripts/bench.sh cutover    write downtime of 5 cutovers under a 2-thread sysbench write load
#                               (a non-privileged account, so read_only stops it): each a fresh
#                               snapshot + follow + verify, then cutover (downtime_seconds from its
#                               report: freeze to target open, with the drain and the proof of
#                               catch-up); beside the naive native switch (read_only on the
#                               source, MASTER_GTID_WAIT on a GTID replica, read_only off there)
#                               timed the same way (BENCH_ROWS defaults to 20000 here)
#   scripts/bench.sh cascade    follow catch-up of parent deletes and key changes whose ON DELETE /
#                               ON UPDATE CASCADE the applier performs (the binlog does not carry
#                               them) vs a native replica (whose InnoDB runs them)
#   scripts/bench.sh wan        the same two comparisons through scripts/wan-proxy.py (the team's
#                               VPN: BENCH_RTT_MS 20, BENCH_MBIT 200; 4 x 100k rows): migrate
#                               snapshot (defaults, and with ?compress=true) vs the best of mydumper
#                               -t 2 with and without --compress-protocol (+ myloader -t 2, local);
#                               follow catch-up of a backlog (defaults, and ?compress=false) vs native
#                               replicas reading through the link (slave_compressed_protocol off and on),
#                               BENCH_ROUNDS rounds (3), a new backlog each; the median is reported
#                               (BENCH_WAN_ONLY=follow or snapshot runs only that comparison)
# Sizes: BENCH_TABLES (4), BENCH_ROWS (250000 per table), BENCH_EVENTS (25000 write trx = ~100k row events),
#        BENCH_PARENTS (20000 single-row parent transactions for cascade).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
what=${1:?usage: scripts/bench.sh snapshot|follow|verify|cutover|cascade|wan}
tables=${BENCH_TABLES:-4}; rows=${BENCH_ROWS:-250000}; events=${BENCH_EVENTS:-25000}
[ "$what" = cutover ] && rows=${BENCH_ROWS:-20000}
[ "$what" = wan ] && rows=${BENCH_ROWS:-100000}
scripts/install-deps.sh bench
cargo build --release --quiet
bin=$root/target/release/migrate
export MIGRATE_RUN_DIR=$root/.run/bench
for s in src dst dstc rep1 rep1c rep4c $(for r in $(seq 1 9); do echo peer$r ours$r; done); do scripts/mariadb.sh stop $s 2>/dev/null || true; done
rm -rf "$MIGRATE_RUN_DIR"
src_opts=(--server-id=1 --log-bin=mysql-bin --binlog-format=ROW --binlog-row-image=FULL --gtid-strict-mode=1)
scripts/mariadb.sh start src 14306 "${src_opts[@]}"
q() { local port=$1; shift; mariadb --no-defaults -uroot -h127.0.0.1 -P"$port" -N -B "$@"; }
now() { date +%s.%N; }
sb() { sysbench --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port=14306 --mysql-user=root --mysql-db=sbtest \
  --tables="$tables" --table-size="$rows" "$@"; }
if [ "$what" != cascade ]; then
  q 14306 -e "CREATE DATABASE sbtest"
  echo "== sysbench prepare: $tables tables x $rows rows"
  sb oltp_write_only prepare >/dev/null
fi

snapshot_bench() {
  # Each run writes into a freshly started, idle target (no background purge or flushing left
  # over from the previous run); ${BENCH_ROUNDS:-5} paired rounds (peer, then migrate); the median
  # of the per-round ratios is reported (the machine is shared and noisy).
  local rounds=${BENCH_ROUNDS:-5} port=14330 ratios=() ours_all=() peer_all=()
  for r in $(seq 1 "$rounds"); do
    port=$((port + 1)); scripts/mariadb.sh start "peer$r" $port --server-id=2 --skip-log-bin
    local out=$MIGRATE_RUN_DIR/dump$r t0 t1 t2
    sync; t0=$(now)
    mydumper -h 127.0.0.1 -P 14306 -u root -t 2 -B sbtest -o "$out" >/dev/null 2>&1
    t1=$(now)
    myloader -h 127.0.0.1 -P $port -u root -t 2 -d "$out" -B sbtest >/dev/null 2>&1
    t2=$(now)
    local peer; peer=$(echo "$t2 - $t0" | bc)
    rm -rf "$out"; sync
    echo "round $r: mydumper -t 2 $(echo "$t1 - $t0" | bc) s + myloader -t 2 $(echo "$t2 - $t1" | bc) s = $peer s"
    scripts/mariadb.sh stop "peer$r"
    port=$((port + 1)); scripts/mariadb.sh start "ours$r" $port --server-id=3 --skip-log-bin
    sync; t0=$(now)
    MIGRATE_STATE=$MIGRATE_RUN_DIR/snap$r.sqlite "$bin" --source mysql://root@127.0.0.1:14306 --target mysql://root@127.0.0.1:$port \
      --databases sbtest snapshot >/dev/null 2>&1
    t1=$(now)
    local ours; ours=$(echo "$t1 - $t0" | bc)
    echo "round $r: migrate snapshot (defaults: --threads 4, deferred indexes) $ours s"
    for i in $(seq 1 "$tables"); do
      a=$(q 14306 -e "CHECKSUM TABLE sbtest.sbtest$i" | cut -f2); b=$(q $port -e "CHECKSUM TABLE sbtest.sbtest$i" | cut -f2)
      [ "$a" = "$b" ] || { echo "sbtest$i differs after migrate snapshot" >&2; exit 1; }
    done
    scripts/mariadb.sh stop "ours$r"
    local ratio; ratio=$(echo "$ours / $peer" | bc -l)
    printf 'round %d: ratio %.3f\n' "$r" "$ratio"
    ratios+=("$ratio"); ours_all+=("$ours"); peer_all+=("$peer")
  done
  median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
  printf 'RESULT snapshot (%d paired rounds): median migrate %.2f s, median mydumper+myloader %.2f s, median ratio %.3f (goal <= 0.67)\n' \
    "$rounds" "$(median "${ours_all[@]}")" "$(median "${peer_all[@]}")" "$(median "${ratios[@]}")"
}

wait_replica() { # port, goal gtid
  while :; do
    local pos; pos=$(q "$1" -e "SELECT @@gtid_slave_pos")
    [ "$pos" = "$2" ] && return 0
    local err; err=$(q "$1" -e "SHOW SLAVE STATUS\G" | grep -E "Last_(SQL|IO)_Error: ." || true)
    [ -z "$err" ] || { echo "replica $1: $err" >&2; exit 1; }
    sleep 0.05
  done
}

follow_bench() {
  scripts/mariadb.sh start dst 14307 --server-id=2 --log-bin=mysql-bin
  scripts/mariadb.sh start rep1 14308 --server-id=3 --log-bin=mysql-bin --log-slave-updates
  scripts/mariadb.sh start rep4 14309 --server-id=4 --log-bin=mysql-bin --log-slave-updates --slave-parallel-threads=4 \
    --slave-parallel-mode=optimistic
  local g0; g0=$(q 14306 -e "SELECT @@gtid_binlog_pos")
  for p in 14308 14309; do
    q $p -e "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=14306, MASTER_USER='root', MASTER_USE_GTID=slave_pos; START SLAVE"
    wait_replica $p "$g0"; q $p -e "STOP SLAVE"
  done
  export MIGRATE_STATE=$MIGRATE_RUN_DIR/follow.sqlite MIGRATE_SOURCE=mysql://root@127.0.0.1:14306 MIGRATE_TARGET=mysql://root@127.0.0.1:14307
  "$bin" --databases sbtest snapshot --threads 2 >/dev/null 2>&1
  echo "== backlog: sysbench oltp_write_only, $events transactions, 2 threads, nothing applying"
  sb oltp_write_only --threads=2 --events="$events" --time=0 run >/dev/null
  local goal; goal=$(q 14306 -e "SELECT @@gtid_binlog_pos")
  local bytes; bytes=$(q 14306 -e "SHOW BINARY LOGS" | awk '{s+=$2} END {print s}')
  echo "backlog up to $goal ($bytes binlog bytes in all)"
  local t0 t1 ours one four
  t0=$(now); "$bin" --databases sbtest follow --until-caught-up >/dev/null 2>&1; t1=$(now); ours=$(echo "$t1 - $t0" | bc)
  echo "migrate follow: $ours s"
  t0=$(now); q 14308 -e "START SLAVE"; wait_replica 14308 "$goal"; t1=$(now); one=$(echo "$t1 - $t0" | bc)
  echo "native replica, 1 thread: $one s"
  t0=$(now); q 14309 -e "START SLAVE"; wait_replica 14309 "$goal"; t1=$(now); four=$(echo "$t1 - $t0" | bc)
  echo "native replica, slave_parallel_threads=4 optimistic: $four s"
  for i in $(seq 1 "$tables"); do
    a=$(q 14306 -e "CHECKSUM TABLE sbtest.sbtest$i" | cut -f2); b=$(q 14307 -e "CHECKSUM TABLE sbtest.sbtest$i" | cut -f2)
    [ "$a" = "$b" ] || { echo "sbtest$i differs after migrate follow" >&2; exit 1; }
  done
  local best; best=$(echo "if ($one < $four) $one else $four" | bc -l)
  printf 'RESULT follow catch-up: migrate %.2f s, native 1 thread %.2f s, native 4 threads %.2f s; speed-up vs best native %.2fx (goal >= 2)\n' \
    "$ours" "$one" "$four" "$(echo "$best / $ours" | bc -l)"

  echo "== sustained rate: sysbench --rate while follow runs; lag sampled from migrate status"
  "$bin" --databases sbtest follow >/dev/null 2>&1 &
  local follower=$! best_rate=0
  for rate in ${BENCH_RATES:-500 1000 1500 2000 2500 3000 4000}; do
    sb oltp_write_only --threads=2 --rate="$rate" --time=15 run > "$MIGRATE_RUN_DIR/rate.txt" &
    local sbpid=$! max_lag=0
    sleep 3
    while kill -0 $sbpid 2>/dev/null; do
      local lag; lag=$("$bin" status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["follow"]["lag_seconds"] or 0)')
      max_lag=$(echo "if ($lag > $max_lag) $lag else $max_lag" | bc -l)
      sleep 1
    done
    local tps; tps=$(grep -Eo 'transactions: +[0-9]+ +\([0-9.]+' "$MIGRATE_RUN_DIR/rate.txt" | grep -Eo '[0-9.]+$' || echo 0)
    echo "rate $rate trx/s requested, $tps trx/s achieved: max lag $max_lag s"
    if [ "$(echo "$max_lag < 1" | bc)" = 1 ]; then best_rate=$tps; else break; fi
  done
  kill -TERM $follower; wait $follower || true
  echo "RESULT sustained: lag stayed under 1 s up to $best_rate sysbench write trx/s (2 threads)"
}

cascade_bench() {
  local parents=${BENCH_PARENTS:-20000}
  scripts/mariadb.sh start dst 14307 --server-id=2 --log-bin=mysql-bin
  scripts/mariadb.sh start rep1 14308 --server-id=3 --log-bin=mysql-bin --log-slave-updates
  q 14306 -e "CREATE DATABASE shop; USE shop;
    CREATE TABLE orders (id BIGINT PRIMARY KEY, total DECIMAL(12,2) NOT NULL) ENGINE=InnoDB;
    CREATE TABLE items (order_id BIGINT NOT NULL, line INT NOT NULL, qty INT NOT NULL, PRIMARY KEY (order_id, line),
      FOREIGN KEY (order_id) REFERENCES orders (id) ON DELETE CASCADE ON UPDATE CASCADE) ENGINE=InnoDB;
    INSERT INTO orders SELECT seq, seq FROM seq_1_to_$((parents * 2));
    INSERT INTO items SELECT o.id, l.seq, l.seq FROM orders o JOIN seq_1_to_3 l;"
  local g0; g0=$(q 14306 -e "SELECT @@gtid_binlog_pos")
  q 14308 -e "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=14306, MASTER_USER='root', MASTER_USE_GTID=slave_pos; START SLAVE"
  wait_replica 14308 "$g0"; q 14308 -e "STOP SLAVE"
  export MIGRATE_STATE=$MIGRATE_RUN_DIR/cascade.sqlite MIGRATE_SOURCE=mysql://root@127.0.0.1:14306 MIGRATE_TARGET=mysql://root@127.0.0.1:14307
  "$bin" --databases shop snapshot --threads 2 >/dev/null 2>&1
  # BENCH_CASCADE_PATTERN: alternate (DELETE, key UPDATE, DELETE, ...: the worst case for
  # batching) or runs (all the DELETEs, then all the key UPDATEs)
  local pattern=${BENCH_CASCADE_PATTERN:-alternate}
  echo "== backlog ($pattern): $parents single-row parent transactions (half DELETE, half key UPDATE), each cascading to 3 items"
  for i in $(seq 1 "$parents"); do
    local del=$((i % 2))
    if [ "$pattern" = runs ]; then del=$((i <= parents / 2 ? 1 : 0)); fi
    if [ "$del" = 1 ]; then echo "DELETE FROM shop.orders WHERE id = $i;"; else echo "UPDATE shop.orders SET id = id + 10000000 WHERE id = $i;"; fi
  done | q 14306
  local goal; goal=$(q 14306 -e "SELECT @@gtid_binlog_pos")
  local t0 t1 ours one
  t0=$(now); "$bin" --databases shop follow --until-caught-up >/dev/null 2>&1; t1=$(now); ours=$(echo "$t1 - $t0" | bc)
  t0=$(now); q 14308 -e "START SLAVE"; wait_replica 14308 "$goal"; t1=$(now); one=$(echo "$t1 - $t0" | bc)
  for t in orders items; do
    a=$(q 14306 -e "CHECKSUM TABLE shop.$t" | cut -f2); b=$(q 14307 -e "CHECKSUM TABLE shop.$t" | cut -f2)
    [ "$a" = "$b" ] || { echo "shop.$t differs after migrate follow" >&2; exit 1; }
  done
  printf 'RESULT cascade catch-up (%s): migrate %.2f s (%.0f parent rows/s), native replica 1 thread %.2f s (%.0f parent rows/s); ratio %.2fx\n' \
    "$pattern" "$ours" "$(echo "$parents / $ours" | bc -l)" "$one" "$(echo "$parents / $one" | bc -l)" "$(echo "$one / $ours" | bc -l)"
}

verify_bench() {
  scripts/mariadb.sh start dst 14307 --server-id=2 --log-bin=mysql-bin
  local state=$MIGRATE_RUN_DIR/verify.sqlite t0 t1
  MIGRATE_STATE=$state "$bin" --source mysql://root@127.0.0.1:14306 --target mysql://root@127.0.0.1:14307 \
    --databases sbtest snapshot >/dev/null 2>&1
  local rounds=${BENCH_ROUNDS:-3} ours_all=() pt_all=() ptd_all=() ck_all=()
  for r in $(seq 1 "$rounds"); do
    sync; t0=$(now)
    MIGRATE_STATE=$state "$bin" --source mysql://root@127.0.0.1:14306 --target mysql://root@127.0.0.1:14307 \
      verify --report "$MIGRATE_RUN_DIR/verify$r.json" >/dev/null 2>&1 || { echo "migrate verify found differences" >&2; exit 1; }
    t1=$(now); ours_all+=("$(echo "$t1 - $t0" | bc)")
    # the peer: a checksum run on each server (they are not source and replica), both at once
    sync; t0=$(now)
    for port in 14306 14307; do
      pt-table-checksum h=127.0.0.1,P=$port,u=root --databases sbtest --recursion-method=none \
        --no-check-binlog-format --no-check-replication-filters --chunk-time=0 --chunk-size=10000 \
        --replicate=percona.checksums --set-vars sql_log_bin=0 --quiet >/dev/null 2>&1 &
    done
    wait
    t1=$(now); pt_all+=("$(echo "$t1 - $t0" | bc)")
    local a b
    a=$(q 14306 -e "SELECT GROUP_CONCAT(this_crc, this_cnt ORDER BY tbl, chunk) FROM percona.checksums")
    b=$(q 14307 -e "SELECT GROUP_CONCAT(this_crc, this_cnt ORDER BY tbl, chunk) FROM percona.checksums")
    [ "$a" = "$b" ] || echo "note: pt-table-checksum chunks differ between the two servers" >&2
    sync; t0=$(now)
    for port in 14306 14307; do
      pt-table-checksum h=127.0.0.1,P=$port,u=root --databases sbtest --recursion-method=none \
        --no-check-binlog-format --no-check-replication-filters \
        --replicate=percona.checksums --set-vars sql_log_bin=0 --quiet >/dev/null 2>&1 &
    done
    wait
    t1=$(now); ptd_all+=("$(echo "$t1 - $t0" | bc)")
    sync; t0=$(now)
    for port in 14306 14307; do
      (for i in $(seq 1 "$tables"); do q $port -e "CHECKSUM TABLE sbtest.sbtest$i" >/dev/null; done) &
    done
    wait
    t1=$(now); ck_all+=("$(echo "$t1 - $t0" | bc)")
    echo "round $r: migrate verify ${ours_all[-1]} s, pt-table-checksum (both servers at once) ${pt_all[-1]} s (its default --chunk-time ${ptd_all[-1]} s), CHECKSUM TABLE (both at once) ${ck_all[-1]} s"
  done
  median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
  local m p d c; m=$(median "${ours_all[@]}"); p=$(median "${pt_all[@]}"); d=$(median "${ptd_all[@]}"); c=$(median "${ck_all[@]}")
  printf 'RESULT verify (%d rounds, %d x %d rows): median migrate verify %.2f s, pt-table-checksum %.2f s (default chunking %.2f s), CHECKSUM TABLE %.2f s; migrate/pt ratio %.2f (goal <= 0.5), against pt default chunking %.2f\n' \
    "$rounds" "$tables" "$rows" "$m" "$p" "$d" "$c" "$(echo "$m / $p" | bc -l)" "$(echo "$m / $d" | bc -l)"
}

cutover_bench() {
  local rounds=${BENCH_ROUNDS:-5} ours_all=() native_all=()
  scripts/mariadb.sh start dst 14307 --server-id=2 --log-bin=mysql-bin
  scripts/mariadb.sh start rep1 14308 --server-id=3 --log-bin=mysql-bin --log-slave-updates
  q 14306 -e "CREATE USER sb@'%'; GRANT ALL ON sbtest.* TO sb@'%'"
  local g0; g0=$(q 14306 -e "SELECT @@gtid_binlog_pos")
  q 14308 -e "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=14306, MASTER_USER='root', MASTER_USE_GTID=slave_pos; START SLAVE"
  wait_replica 14308 "$g0"
  load() { sysbench --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port=14306 --mysql-user=sb --mysql-db=sbtest \
    --tables="$tables" --table-size="$rows" --threads=2 --time=600 --mysql-ignore-errors=all oltp_write_only run >/dev/null 2>&1 & echo $!; }
  for r in $(seq 1 "$rounds"); do
    # ours: a fresh migration into an empty target, under the load
    q 14306 -e "SET GLOBAL read_only = OFF"
    q 14307 -e "SET GLOBAL read_only = OFF; DROP DATABASE IF EXISTS sbtest; DROP DATABASE IF EXISTS _migrate"
    local state=$MIGRATE_RUN_DIR/cutover$r.sqlite sbpid
    export MIGRATE_STATE=$state MIGRATE_SOURCE=mysql://root@127.0.0.1:14306 MIGRATE_TARGET=mysql://root@127.0.0.1:14307
    sbpid=$(load)
    "$bin" --databases sbtest snapshot --threads 2 >/dev/null 2>&1
    q 14307 -e "SET GLOBAL read_only = ON"
    "$bin" follow >"$MIGRATE_RUN_DIR/follow$r.log" 2>&1 &
    local follower=$!
    until "$bin" status --json | python3 -c 'import json,sys; j=json.load(sys.stdin)["follow"]; sys.exit(0 if j.get("lag_known") and j["lag_seconds"] < 1 else 1)'; do sleep 0.2; done
    "$bin" verify >/dev/null 2>&1 || { echo "verify found differences before the cutover" >&2; exit 1; }
    "$bin" cutover --copy-users --switch-command true --report "$MIGRATE_RUN_DIR/cutover$r.json" >"$MIGRATE_RUN_DIR/cutover$r.log" 2>&1 \
      || { cat "$MIGRATE_RUN_DIR/cutover$r.log" >&2; exit 1; }
    kill $sbpid; wait $sbpid 2>/dev/null || true; wait $follower || true
    for i in $(seq 1 "$tables"); do
      a=$(q 14306 -e "CHECKSUM TABLE sbtest.sbtest$i" | cut -f2); b=$(q 14307 -e "CHECKSUM TABLE sbtest.sbtest$i" | cut -f2)
      [ "$a" = "$b" ] || { echo "sbtest$i differs after the cutover" >&2; exit 1; }
    done
    local ours; ours=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["downtime_seconds"])' "$MIGRATE_RUN_DIR/cutover$r.json")
    ours_all+=("$ours")
    # native: the same load, the replica switched the naive way
    q 14306 -e "SET GLOBAL read_only = OFF"; q 14308 -e "SET GLOBAL read_only = ON"
    sbpid=$(load); sleep 3
    local t0 t1 pos
    t0=$(now)
    q 14306 -e "SET GLOBAL read_only = ON"
    pos=$(q 14306 -e "SELECT @@gtid_binlog_pos")
    q 14308 -e "SELECT MASTER_GTID_WAIT('$pos', 60)" >/dev/null
    q 14308 -e "SET GLOBAL read_only = OFF"
    t1=$(now)
    kill $sbpid; wait $sbpid 2>/dev/null || true
    native_all+=("$(echo "$t1 - $t0" | bc)")
    echo "round $r: migrate cutover downtime $ours s; native switch ${native_all[-1]} s"
  done
  median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
  max() { printf '%s\n' "$@" | sort -g | tail -1; }
  printf 'RESULT cutover (%d rounds, 2-thread sysbench write load): migrate median %.3f s, max %.3f s; naive native switch median %.3f s, max %.3f s (goal: median < 0.5 s)\n' \
    "$rounds" "$(median "${ours_all[@]}")" "$(max "${ours_all[@]}")" "$(median "${native_all[@]}")" "$(max "${native_all[@]}")"
}

wan_bench() {
  # the source is reached only through the simulated VPN (port 14399); targets are local
  local rtt=${BENCH_RTT_MS:-20} mbit=${BENCH_MBIT:-200} rounds=${BENCH_ROUNDS:-3} via=14399
  python3 "$root/scripts/wan-proxy.py" $via 127.0.0.1:14306 --rtt-ms "$rtt" --mbit "$mbit" &
  local proxy=$!
  trap "kill $proxy 2>/dev/null || true" EXIT
  sleep 0.5
  echo "== link: ${rtt} ms round trip, ${mbit} Mbit/s per direction"
  local plain=() packed=() ours=() oursz=() cpu_peer=() cpu_ours=() cpu_oursz=()
  # CPU seconds the source's mariadbd has used (what the copy costs the server it must not hurt)
  src_cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$(cat "$MIGRATE_RUN_DIR/src/pid")/stat"; }
  median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
  peer_run() { # server name, port, extra mydumper flags...
    local name=$1 port=$2; shift 2
    scripts/mariadb.sh start "$name" $port --server-id=2 --skip-log-bin >/dev/null
    local out=$MIGRATE_RUN_DIR/dump$r t0 t1 t2
    sync; t0=$(now)
    mydumper -h 127.0.0.1 -P $via -u root -t 2 -B sbtest -o "$out" "$@" >/dev/null 2>&1
    t1=$(now)
    myloader -h 127.0.0.1 -P $port -u root -t 2 -d "$out" -B sbtest >/dev/null 2>&1
    t2=$(now)
    rm -rf "$out"; scripts/mariadb.sh stop "$name" >/dev/null; rm -rf "$MIGRATE_RUN_DIR/$name"
    echo "$t2 - $t0" | bc
  }
  ours_run() { # server name, port, URL options
    local name=$1 port=$2
    scripts/mariadb.sh start "$name" $port --server-id=3 --skip-log-bin >/dev/null
    local t0 t1
    sync; t0=$(now)
    MIGRATE_STATE=$MIGRATE_RUN_DIR/wan$r-$port.sqlite "$bin" --source "mysql://root@127.0.0.1:$via$3" \
      --target mysql://root@127.0.0.1:$port --databases sbtest snapshot >/dev/null 2>&1
    t1=$(now)
    for i in $(seq 1 "$tables"); do
      a=$(q 14306 -e "CHECKSUM TABLE sbtest.sbtest$i" | cut -f2); b=$(q $port -e "CHECKSUM TABLE sbtest.sbtest$i" | cut -f2)
      [ "$a" = "$b" ] || { echo "sbtest$i differs after migrate snapshot over the link" >&2; exit 1; }
    done
    scripts/mariadb.sh stop "$name" >/dev/null; rm -rf "$MIGRATE_RUN_DIR/$name"
    echo "$t1 - $t0" | bc
  }
  local rounds_snapshot=$rounds c0
  [ "${BENCH_WAN_ONLY:-}" != follow ] || rounds_snapshot=0
  for r in $(seq 1 "$rounds_snapshot"); do
    plain+=("$(peer_run peer$r 14331)")
    c0=$(src_cpu); packed+=("$(peer_run peerz$r 14332 --compress-protocol)"); cpu_peer+=("$(echo "$(src_cpu) - $c0" | bc)")
    c0=$(src_cpu); ours+=("$(ours_run ours$r 14333 "")"); cpu_ours+=("$(echo "$(src_cpu) - $c0" | bc)")
    c0=$(src_cpu); oursz+=("$(ours_run oursz$r 14334 "?compress=true")"); cpu_oursz+=("$(echo "$(src_cpu) - $c0" | bc)")
    echo "round $r: mydumper+myloader ${plain[-1]} s, with --compress-protocol ${packed[-1]} s (source CPU ${cpu_peer[-1]} s); migrate snapshot ${ours[-1]} s (source CPU ${cpu_ours[-1]} s), with ?compress=true ${oursz[-1]} s (source CPU ${cpu_oursz[-1]} s)"
  done
  local p1 p2 best o1 o2
  [ "$rounds_snapshot" = 0 ] || {
  p1=$(median "${plain[@]}"); p2=$(median "${packed[@]}"); o1=$(median "${ours[@]}"); o2=$(median "${oursz[@]}")
  best=$(echo "if ($p1 < $p2) $p1 else $p2" | bc -l)
  printf 'RESULT wan snapshot (%d rounds, medians): migrate defaults %.2f s (ratio %.3f; source CPU %.2f s), ?compress=true %.2f s (ratio %.3f; source CPU %.2f s); best peer %.2f s (mydumper plain %.2f s, --compress-protocol %.2f s; source CPU %.2f s) (goal <= 0.67)\n' \
    "$rounds" "$o1" "$(echo "$o1 / $best" | bc -l)" "$(median "${cpu_ours[@]}")" \
    "$o2" "$(echo "$o2 / $best" | bc -l)" "$(median "${cpu_oursz[@]}")" "$best" "$p1" "$p2" "$(median "${cpu_peer[@]}")"
  }
  [ "${BENCH_WAN_ONLY:-}" != snapshot ] || { kill $proxy 2>/dev/null || true; return 0; }

  echo "== follow catch-up over the link"
  scripts/mariadb.sh start dst 14307 --server-id=2 --log-bin=mysql-bin >/dev/null
  scripts/mariadb.sh start dstc 14310 --server-id=5 --log-bin=mysql-bin >/dev/null
  scripts/mariadb.sh start rep1 14308 --server-id=3 --log-bin=mysql-bin --log-slave-updates >/dev/null
  scripts/mariadb.sh start rep1c 14309 --server-id=4 --log-bin=mysql-bin --log-slave-updates --slave-compressed-protocol=1 >/dev/null
  scripts/mariadb.sh start rep4c 14311 --server-id=6 --log-bin=mysql-bin --log-slave-updates --slave-compressed-protocol=1 \
    --slave-parallel-threads=4 --slave-parallel-mode=optimistic >/dev/null
  local g0; g0=$(q 14306 -e "SELECT @@gtid_binlog_pos")
  for p in 14308 14309 14311; do
    q $p -e "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=$via, MASTER_USER='root', MASTER_USE_GTID=slave_pos; START SLAVE"
    wait_replica $p "$g0"; q $p -e "STOP SLAVE"
  done
  # the copies are taken on the local side (the catch-up is what is measured)
  MIGRATE_STATE=$MIGRATE_RUN_DIR/wf.sqlite "$bin" --source mysql://root@127.0.0.1:14306 --target mysql://root@127.0.0.1:14307 \
    --databases sbtest snapshot >/dev/null 2>&1
  MIGRATE_STATE=$MIGRATE_RUN_DIR/wfc.sqlite "$bin" --source mysql://root@127.0.0.1:14306 --target mysql://root@127.0.0.1:14310 \
    --databases sbtest snapshot >/dev/null 2>&1
  # each round: a new backlog, nothing applying; then each follower catches up in turn (they
  # all end at the round's goal, where the next round's backlog starts)
  local t0 t1 f1s=() f2s=() n1s=() n2s=() n4s=() ratios=()
  for r in $(seq 1 "$rounds"); do
    sb oltp_write_only --threads=2 --events="$events" --time=0 run >/dev/null
    local goal; goal=$(q 14306 -e "SELECT @@gtid_binlog_pos")
    t0=$(now); MIGRATE_STATE=$MIGRATE_RUN_DIR/wf.sqlite "$bin" --source mysql://root@127.0.0.1:$via --target mysql://root@127.0.0.1:14307 \
      --databases sbtest follow --until-caught-up >/dev/null 2>&1; t1=$(now); f1s+=("$(echo "$t1 - $t0" | bc)")
    t0=$(now); MIGRATE_STATE=$MIGRATE_RUN_DIR/wfc.sqlite "$bin" --source "mysql://root@127.0.0.1:$via?compress=false" --target mysql://root@127.0.0.1:14310 \
      --databases sbtest follow --until-caught-up >/dev/null 2>&1; t1=$(now); f2s+=("$(echo "$t1 - $t0" | bc)")
    t0=$(now); q 14308 -e "START SLAVE"; wait_replica 14308 "$goal"; t1=$(now); q 14308 -e "STOP SLAVE"; n1s+=("$(echo "$t1 - $t0" | bc)")
    t0=$(now); q 14309 -e "START SLAVE"; wait_replica 14309 "$goal"; t1=$(now); q 14309 -e "STOP SLAVE"; n2s+=("$(echo "$t1 - $t0" | bc)")
    t0=$(now); q 14311 -e "START SLAVE"; wait_replica 14311 "$goal"; t1=$(now); q 14311 -e "STOP SLAVE"; n4s+=("$(echo "$t1 - $t0" | bc)")
    local bestn; bestn=$(printf '%s\n' "${n1s[-1]}" "${n2s[-1]}" "${n4s[-1]}" | sort -g | head -1)
    ratios+=("$(echo "$bestn / ${f1s[-1]}" | bc -l)")
    printf 'round %d (%d transactions): migrate %.2f s (?compress=false %.2f s); native %.2f s, compressed %.2f s, compressed + 4 threads %.2f s; speed-up %.2fx\n' \
      "$r" "$events" "${f1s[-1]}" "${f2s[-1]}" "${n1s[-1]}" "${n2s[-1]}" "${n4s[-1]}" "${ratios[-1]}"
  done
  for port in 14307 14310; do
    for i in $(seq 1 "$tables"); do
      a=$(q 14306 -e "CHECKSUM TABLE sbtest.sbtest$i" | cut -f2); b=$(q $port -e "CHECKSUM TABLE sbtest.sbtest$i" | cut -f2)
      [ "$a" = "$b" ] || { echo "sbtest$i differs after migrate follow over the link ($port)" >&2; exit 1; }
    done
  done
  printf 'RESULT wan follow catch-up (%d rounds, medians): migrate defaults (binlog stream compressed: the link is >= 5 ms) %.2f s, ?compress=false %.2f s; native 1 thread %.2f s, compressed %.2f s, compressed + 4 parallel threads %.2f s; median speed-up of migrate defaults vs the best native of its round %.2fx (goal >= 2)\n' \
    "$rounds" "$(median "${f1s[@]}")" "$(median "${f2s[@]}")" "$(median "${n1s[@]}")" "$(median "${n2s[@]}")" "$(median "${n4s[@]}")" "$(median "${ratios[@]}")"
  kill $proxy 2>/dev/null || true
}

case "$what" in
  verify) verify_bench ;;
  cutover) cutover_bench ;;
  snapshot) snapshot_bench ;;
  follow) follow_bench ;;
  cascade) cascade_bench ;;
  wan) wan_bench ;;
  *) echo "usage: $0 snapshot|follow|verify|cutover|cascade|wan" >&2; exit 2 ;;
esac
for s in src dst dstc rep1 rep1c rep4c rep4; do scripts/mariadb.sh stop $s 2>/dev/null || true; done
