#!/usr/bin/env bash
# The demo: on a fresh Debian 12 machine, installs what is missing, starts a source MariaDB
# (binlog on, time_zone +09:00, permissive sql_mode) and a target (UTC, strict) on loopback
# with data under .run/, loads a sample shop, starts a live write load, and runs
#   migrate check -> snapshot -> follow (while the shop writes) -> follow --until-caught-up
# verify (online, then after the load stops), then compares both sides with mariadb-dump
# (independently of migrate).
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
scripts/mariadb.sh start target "$tp" --server-id=2 --log-bin=mysql-bin
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
  placed DATETIME(3) NOT NULL, KEY (customer_id));
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
SQL

echo "== starting a live write load on the source"
touch "$MIGRATE_RUN_DIR/load.on"
(
  i=0
  while [ -f "$MIGRATE_RUN_DIR/load.on" ]; do
    i=$((i + 1)); c=$((RANDOM % 50000 + 1)); p=$((RANDOM % 5000 + 1))
    src shop -e "BEGIN; INSERT INTO orders (customer_id, total, placed) VALUES ($c, $((RANDOM % 1000)).50, NOW(3));
      INSERT INTO order_items VALUES (LAST_INSERT_ID(), 1, $p, 1); UPDATE products SET stock = stock - 1 WHERE id = $p; COMMIT;
      UPDATE customers SET name = CONCAT('고객 ', $c, ' 수정 $i') WHERE id = $c;
      DELETE FROM orders WHERE id = $((RANDOM * 8 % rows + 1));" 2>/dev/null || true
  done
) &
loader=$!
trap 'rm -f "$MIGRATE_RUN_DIR/load.on"; wait $loader 2>/dev/null || true' EXIT

export MIGRATE_SOURCE="mysql://root@127.0.0.1:$sp" MIGRATE_TARGET="mysql://root@127.0.0.1:$tp"
export MIGRATE_STATE="$MIGRATE_RUN_DIR/migrate-state.sqlite" MIGRATE_DATABASES=shop
echo; echo "== migrate check"
"$bin" check || true
echo; echo "== migrate snapshot (while the shop keeps writing)"
"$bin" snapshot --defer-indexes
echo; echo "== migrate follow for 10 s, with metrics on 127.0.0.1:9187"
"$bin" follow --metrics-addr 127.0.0.1:9187 &
follower=$!
sleep 5
"$bin" status
curl -s 127.0.0.1:9187/metrics 2>/dev/null | grep -E '^migrate_(follow_lag|transactions_applied)' || true
echo; echo "== migrate verify while the shop writes and follow runs (follow pauses at each round's GTID)"
"$bin" verify
kill -TERM $follower; wait $follower || true
echo; echo "== stopping the load, then follow --until-caught-up"
rm -f "$MIGRATE_RUN_DIR/load.on"; wait $loader 2>/dev/null || true
"$bin" follow --until-caught-up
echo; echo "== migrate verify"
"$bin" verify
echo; echo "== comparing source and target with mariadb-dump (independent of migrate)"
dump() { mariadb-dump --no-defaults -uroot -h127.0.0.1 -P"$1" --no-create-info --skip-extended-insert --order-by-primary \
  --hex-blob --tz-utc --skip-comments --skip-triggers --default-character-set=binary shop | sha256sum | cut -d' ' -f1; }
a=$(dump "$sp"); b=$(dump "$tp")
echo "source shop: $a"; echo "target shop: $b"
if [ "$a" = "$b" ]; then echo "IDENTICAL"; else echo "DIFFERENT"; exit 1; fi
echo; "$bin" status
echo; echo "Servers keep running: stop them with MIGRATE_RUN_DIR=$MIGRATE_RUN_DIR scripts/mariadb.sh stop source|target"
