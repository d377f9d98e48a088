#!/usr/bin/env bash
# The demo: on a fresh Debian 12 machine, installs what is missing, starts a source MariaDB
# (binlog on, time_zone +09:00, permissive sql_mode) and a target (UTC, strict) on loopback
# with data under .run/, loads a sample shop, starts a live write load through the shop's own
# (unprivileged) account, and runs
#   migrate check -> snapshot -> follow (while the shop writes, metrics on :9187) -> verify
#   -> cutover --dry-run -> cutover (its switch hook moves the load to the target)
# then checks that every order the load committed, before and after the switch, is on the
# target exactly once and prints the measured write downtime; then the way back: follow
# --reverse while the load writes to the target, cutover --rollback (the load moves back), every
# order on the source exactly once; then a second migration cut over for good and --complete.
# Re-running starts over. Ports: source 13306, target 13307 (DEMO_SOURCE_PORT/DEMO_TARGET_PORT).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
sp=${DEMO_SOURCE_PORT:-13306}; tp=${DEMO_TARGET_PORT:-13307}
rows=${DEMO_ORDERS:-300000}
scripts/install-deps.sh
cargo build --release --quiet
bin=$root/target/release/migrate
export MIGRATE_RUN_DIR=$root/.run/demo
scripts/mariadb.sh stop source 2>/dev/null || true
scripts/mariadb.sh stop target 2>/dev/null || true
rm -rf "$MIGRATE_RUN_DIR"
echo "== starting source (127.0.0.1:$sp) and target (127.0.0.1:$tp)"
scripts/mariadb.sh start source "$sp" --server-id=1 --log-bin=mysql-bin --binlog-format=ROW --binlog-row-image=FULL \
  --gtid-strict-mode=1 --default-time-zone=+09:00 --sql-mode=
scripts/mariadb.sh start target "$tp" --server-id=2 --log-bin=mysql-bin --binlog-format=ROW --binlog-row-image=FULL
src() { mariadb --no-defaults -uroot -h127.0.0.1 -P"$sp" "$@"; }
dst() { mariadb --no-defaults -uroot -h127.0.0.1 -P"$tp" "$@"; }

echo "== loading the sample shop ($rows orders)"
src <<SQL
SET time_zone = '+09:00';
CREATE DATABASE shop CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
USE shop;
CREATE TABLE customers (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, name VARCHAR(60) NOT NULL, email VARCHAR(80) NOT NULL,
  joined TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), UNIQUE KEY (email));
CREATE TABLE products (id INT NOT NULL PRIMARY KEY, name VARCHAR(100) NOT NULL, price DECIMAL(12,2) NOT NULL, stock INT NOT NULL,
  KEY (name));
CREATE TABLE orders (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, customer_id INT NOT NULL, total DECIMAL(14,2) NOT NULL,
  placed DATETIME(3) NOT NULL, ref VARCHAR(20) NULL, KEY (customer_id), UNIQUE KEY (ref));
CREATE TABLE order_items (order_id BIGINT NOT NULL, line INT NOT NULL, product_id INT NOT NULL, qty INT NOT NULL,
  PRIMARY KEY (order_id, line), CONSTRAINT fk_items FOREIGN KEY (order_id) REFERENCES orders (id) ON DELETE CASCADE);
CREATE TABLE legacy_notices (id INT NOT NULL PRIMARY KEY, title VARCHAR(100) CHARACTER SET euckr, body TEXT CHARACTER SET euckr,
  posted DATE NOT NULL DEFAULT '0000-00-00') ENGINE=InnoDB;
INSERT INTO customers (name, email) SELECT CONCAT('고객 ', seq), CONCAT('customer', seq, '@shop.kr') FROM seq_1_to_50000;
INSERT INTO products SELECT seq, CONCAT('상품 ', seq, ' 한정판 😀'), 1000 + seq % 90000, 100 FROM seq_1_to_5000;
INSERT INTO orders (customer_id, total, placed) SELECT 1 + seq % 50000, (seq % 997) * 1.5, '2024-01-01' + INTERVAL seq MINUTE
  FROM seq_1_to_$rows;
INSERT INTO order_items SELECT o.id, l.seq, 1 + (o.id * 7 + l.seq) % 5000, 1 + l.seq FROM orders o JOIN seq_1_to_2 l;
INSERT INTO legacy_notices SELECT seq, CONVERT(CONCAT('공지 ', seq) USING euckr), CONVERT(REPEAT('안내문 ', 20) USING euckr),
  IF(seq % 10 = 0, '0000-00-00', '2020-01-01' + INTERVAL seq DAY) FROM seq_1_to_2000;
CREATE VIEW recent_orders AS SELECT id, customer_id, total FROM orders WHERE placed > '2024-06-01';
CREATE TRIGGER stock_floor BEFORE UPDATE ON products FOR EACH ROW SET NEW.stock = GREATEST(NEW.stock, 0);
CREATE USER shop_app@'%' IDENTIFIED BY 'demo-app-password';
GRANT SELECT, INSERT, UPDATE, DELETE ON shop.* TO shop_app@'%';
SQL

echo "== starting a live write load (account shop_app) on the server named in app.port"
touch "$MIGRATE_RUN_DIR/load.on"; echo "$sp" > "$MIGRATE_RUN_DIR/app.port"; : > "$MIGRATE_RUN_DIR/committed.log"
(
  i=0
  while [ -f "$MIGRATE_RUN_DIR/load.on" ]; do
    i=$((i + 1)); c=$((RANDOM % 50000 + 1)); p=$((RANDOM % 5000 + 1)); port=$(cat "$MIGRATE_RUN_DIR/app.port")
    # one order per transaction, logged only once its COMMIT succeeded
    if MYSQL_PWD=demo-app-password mariadb --no-defaults -ushop_app -h127.0.0.1 -P"$port" shop -e "BEGIN;
      INSERT INTO orders (customer_id, total, placed, ref) VALUES ($c, $((RANDOM % 1000)).50, NOW(3), 'L$i');
      INSERT INTO order_items VALUES (LAST_INSERT_ID(), 1, $p, 1); UPDATE products SET stock = stock - 1 WHERE id = $p; COMMIT;" 2>/dev/null
    then echo "L$i" >> "$MIGRATE_RUN_DIR/committed.log"; fi
    MYSQL_PWD=demo-app-password mariadb --no-defaults -ushop_app -h127.0.0.1 -P"$port" shop -e "
      UPDATE customers SET name = CONCAT('고객 ', $c, ' 수정 $i') WHERE id = $c;
      DELETE FROM orders WHERE id = $((RANDOM * 8 % rows + 1)) AND ref IS NULL;" 2>/dev/null || true
  done
) &
loader=$!
trap 'rm -f "$MIGRATE_RUN_DIR/load.on"; wait $loader 2>/dev/null || true' EXIT

export MIGRATE_SOURCE="mysql://root@127.0.0.1:$sp" MIGRATE_TARGET="mysql://root@127.0.0.1:$tp"
export MIGRATE_STATE="$MIGRATE_RUN_DIR/migrate-state.sqlite" MIGRATE_DATABASES=shop
echo; echo "== migrate check"
"$bin" check || true
echo; echo "== migrate snapshot (while the shop keeps writing)"
"$bin" snapshot
# until the switch, only the engine writes the target (it has READ ONLY ADMIN)
dst -e "SET GLOBAL read_only = ON"
echo; echo "== migrate follow in the background, with metrics on 127.0.0.1:9187"
"$bin" follow --metrics-addr 127.0.0.1:9187 2>"$MIGRATE_RUN_DIR/follow.log" &
follower=$!
until "$bin" status --json | python3 -c 'import json,sys; f=json.load(sys.stdin)["follow"]; sys.exit(0 if f.get("lag_known") else 1)'; do sleep 0.5; done
"$bin" status
curl -s 127.0.0.1:9187/metrics 2>/dev/null | grep -E '^migrate_(follow_lag|transactions_applied)' || true
echo; echo "== migrate verify while the shop writes and follow runs (follow pauses at each round's GTID)"
"$bin" verify
echo; echo "== migrate cutover --dry-run (the application's account is missing on the target)"
"$bin" cutover --dry-run || true
echo; echo "== migrate cutover: prove, freeze, drain, catch up, prove, prepare, switch (the hook moves the load), open, start the way back"
"$bin" cutover --copy-users --switch-command "echo \$MIGRATE_TARGET_PORT > $MIGRATE_RUN_DIR/app.port" \
  --report "$MIGRATE_RUN_DIR/cutover.json"
wait $follower || true
echo "the load now writes to the target for 3 s"
sleep 3
rm -f "$MIGRATE_RUN_DIR/load.on"; wait $loader 2>/dev/null || true
check_orders() { # port, what
  sort "$MIGRATE_RUN_DIR/committed.log" > "$MIGRATE_RUN_DIR/committed.sorted"
  mariadb --no-defaults -uroot -h127.0.0.1 -P"$1" -N -B shop -e "SELECT ref FROM orders WHERE ref IS NOT NULL" | sort > "$MIGRATE_RUN_DIR/server.sorted"
  if cmp -s "$MIGRATE_RUN_DIR/committed.sorted" "$MIGRATE_RUN_DIR/server.sorted"; then
    echo "all $(wc -l < "$MIGRATE_RUN_DIR/committed.sorted") committed orders present once on $2; none extra"
  else
    echo "MISMATCH between committed orders and $2:"; diff "$MIGRATE_RUN_DIR/committed.sorted" "$MIGRATE_RUN_DIR/server.sorted" | head; exit 1
  fi
}
echo; echo "== every order the load committed, before and after the switch, on the target exactly once"
check_orders "$tp" "the target"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("write downtime: %.3f s (final GTID %s)" % (r["downtime_seconds"], r["final_gtid"]))' "$MIGRATE_RUN_DIR/cutover.json"
echo; echo "== the way back: the reverse follow cutover started (target -> source) while the load writes to the target"
touch "$MIGRATE_RUN_DIR/load.on"
(
  i=100000000
  while [ -f "$MIGRATE_RUN_DIR/load.on" ]; do
    i=$((i + 1)); c=$((RANDOM % 50000 + 1)); p=$((RANDOM % 5000 + 1)); port=$(cat "$MIGRATE_RUN_DIR/app.port")
    if MYSQL_PWD=demo-app-password mariadb --no-defaults -ushop_app -h127.0.0.1 -P"$port" shop -e "BEGIN;
      INSERT INTO orders (customer_id, total, placed, ref) VALUES ($c, 9.90, NOW(3), 'L$i');
      UPDATE products SET stock = stock - 1 WHERE id = $p; COMMIT;" 2>/dev/null
    then echo "L$i" >> "$MIGRATE_RUN_DIR/committed.log"; fi
  done
) &
loader=$!
sleep 4
echo; echo "== migrate cutover --rollback: the load goes back to the source"
"$bin" cutover --rollback --rollback-command "echo \$MIGRATE_SOURCE_PORT > $MIGRATE_RUN_DIR/app.port"
sleep 2
rm -f "$MIGRATE_RUN_DIR/load.on"; wait $loader 2>/dev/null || true
echo; echo "== every order committed (source, target, source again) on the source exactly once"
check_orders "$sp" "the source"
"$bin" status

echo; echo "== a second migration into the same target (--reuse-target), cut over for good"
export MIGRATE_STATE="$MIGRATE_RUN_DIR/second.sqlite"
dst -e "SET GLOBAL read_only = OFF"
"$bin" snapshot --reuse-target
dst -e "SET GLOBAL read_only = ON"
"$bin" follow 2>"$MIGRATE_RUN_DIR/follow2.log" &
follower=$!
until "$bin" status --json | python3 -c 'import json,sys; f=json.load(sys.stdin)["follow"]; sys.exit(0 if f.get("lag_known") else 1)'; do sleep 0.5; done
"$bin" verify
"$bin" cutover --no-reverse --switch-command "echo \$MIGRATE_TARGET_PORT > $MIGRATE_RUN_DIR/app.port"
wait $follower || true
echo; echo "== migrate cutover --complete (removes the engine's objects from the target)"
"$bin" cutover --complete
echo; echo "Servers keep running: stop them with MIGRATE_RUN_DIR=$MIGRATE_RUN_DIR scripts/mariadb.sh stop source|target"
