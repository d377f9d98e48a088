//! A shop write load through the mariadb client: inserts, updates, deletes, key changes,
//! multi-statement transactions, rollbacks, REPLACE, INSERT ... ON DUPLICATE KEY UPDATE,
//! foreign-key cascades, trigger-generated rows, large transactions and DDL.

use super::Server;

pub const SCHEMA: &str = r#"
SET NAMES utf8mb4; SET time_zone = '+09:00';
CREATE DATABASE shop CHARACTER SET utf8mb4;
USE shop;
CREATE TABLE customers (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, name VARCHAR(60) NOT NULL, email VARCHAR(80) NOT NULL,
  created TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), UNIQUE KEY (email)) ENGINE=InnoDB;
CREATE TABLE products (id INT NOT NULL PRIMARY KEY, name VARCHAR(80) NOT NULL, price DECIMAL(12,2) NOT NULL, stock INT NOT NULL) ENGINE=InnoDB;
CREATE TABLE orders (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, customer_id INT NOT NULL, total DECIMAL(14,2) NOT NULL,
  placed DATETIME(3) NOT NULL, KEY (customer_id)) ENGINE=InnoDB;
CREATE TABLE order_items (order_id BIGINT NOT NULL, line INT NOT NULL, product_id INT NOT NULL, qty INT NOT NULL,
  PRIMARY KEY (order_id, line),
  CONSTRAINT fk_items_order FOREIGN KEY (order_id) REFERENCES orders (id) ON DELETE CASCADE ON UPDATE CASCADE) ENGINE=InnoDB;
CREATE TABLE order_audit (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, order_id BIGINT NOT NULL, note VARCHAR(40)) ENGINE=InnoDB;
CREATE TRIGGER orders_audit AFTER INSERT ON orders FOR EACH ROW INSERT INTO order_audit (order_id, note) VALUES (NEW.id, '주문 생성');
CREATE TABLE legacy_notes (id INT NOT NULL PRIMARY KEY, body VARCHAR(100) CHARACTER SET euckr) ENGINE=MyISAM;
CREATE TABLE big (id INT NOT NULL PRIMARY KEY, payload VARCHAR(200)) ENGINE=InnoDB;
INSERT INTO customers (name, email) SELECT CONCAT('고객 ', seq), CONCAT('c', seq, '@shop.kr') FROM seq_1_to_2000;
INSERT INTO products SELECT seq, CONCAT('상품 ', seq), seq * 1.25, 1000 FROM seq_1_to_500;
INSERT INTO orders (customer_id, total, placed) SELECT 1 + seq % 2000, seq * 3.5, '2024-01-01 00:00:00' + INTERVAL seq MINUTE FROM seq_1_to_3000;
INSERT INTO order_items SELECT o.id, l.seq, 1 + (o.id * l.seq) % 500, l.seq FROM orders o JOIN seq_1_to_3 l;
INSERT INTO legacy_notes SELECT seq, CONVERT(CONCAT('메모 ', seq) USING euckr) FROM seq_1_to_200;
"#;

/// A tiny deterministic generator (no external crates in tests).
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407))
    }
    pub fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}

/// The SQL of iteration `i` of the load.
pub fn iteration(i: u64, rng: &mut Rng) -> String {
    let c = 1 + rng.next(2000);
    let p = 1 + rng.next(500);
    let o = 1 + rng.next(3000 + i);
    let mut s = String::from("USE shop; SET time_zone = '+09:00';\n");
    s.push_str(&format!(
        "BEGIN; INSERT INTO orders (customer_id, total, placed) VALUES ({c}, {}.{:02}, NOW(3)); SET @o = LAST_INSERT_ID();
         INSERT INTO order_items VALUES (@o, 1, {p}, 2), (@o, 2, {}, 1); UPDATE products SET stock = stock - 1 WHERE id = {p}; COMMIT;\n",
        rng.next(1000),
        rng.next(100),
        1 + rng.next(500)
    ));
    s.push_str("UPDATE products SET stock = stock + 1 WHERE id IN (1, 2, 3);\n");
    match i % 10 {
        0 => s.push_str(&format!("DELETE FROM orders WHERE id = {o};\n")),
        1 => s.push_str(&format!("UPDATE orders SET id = -id WHERE id = {o};\n")),
        2 => s.push_str(&format!("UPDATE customers SET id = id + 100000 WHERE id = {c};\n")),
        3 => s.push_str(&format!("BEGIN; UPDATE customers SET name = 'rolled back' WHERE id = {c}; DELETE FROM products WHERE id = {p}; ROLLBACK;\n")),
        4 => s.push_str(&format!("REPLACE INTO products VALUES ({p}, '교체 {i}', 9.99, 5);\n")),
        5 => s.push_str(&format!(
            "INSERT INTO products VALUES ({}, '신상품', 1.00, 1) ON DUPLICATE KEY UPDATE stock = stock + 10, name = CONCAT(name, '+');\n",
            1 + rng.next(600)
        )),
        6 => s.push_str(&format!("UPDATE customers SET email = CONCAT('x', email) WHERE id = {c};\n")),
        7 => s.push_str(&format!(
            "INSERT INTO legacy_notes VALUES ({}, CONVERT('새 메모' USING euckr)) ON DUPLICATE KEY UPDATE body = CONVERT('수정' USING euckr);\n",
            1 + rng.next(300)
        )),
        8 => s.push_str(&format!("DELETE FROM order_items WHERE order_id = {o} AND line = 1;\n")),
        _ => s.push_str(&format!("UPDATE orders SET total = total + 1 WHERE customer_id = {c};\n")),
    }
    if i % 40 == 39 {
        s.push_str(&format!(
            "BEGIN; DELETE FROM big; INSERT INTO big SELECT seq, CONCAT('batch {i} row ', seq) FROM seq_1_to_5000; COMMIT;\n"
        ));
    }
    if i == 60 {
        s.push_str("ALTER TABLE customers ADD COLUMN note VARCHAR(20) CHARACTER SET utf8mb4 DEFAULT '메모';\n");
        s.push_str("CREATE TABLE coupons (code VARCHAR(12) NOT NULL PRIMARY KEY, pct TINYINT UNSIGNED NOT NULL);\n");
    }
    if i > 60 {
        s.push_str(&format!(
            "INSERT INTO coupons VALUES ('C{i}', {}) ON DUPLICATE KEY UPDATE pct = pct + 1;\n",
            rng.next(90)
        ));
        s.push_str(&format!(
            "UPDATE customers SET note = '노트 {i}' WHERE id = {c};\n"
        ));
    }
    s
}

/// Run `n` iterations against `src`.
pub fn run(src: &Server, from: u64, n: u64, seed: u64) {
    let mut rng = Rng::new(seed);
    for i in from..from + n {
        let sql = iteration(i, &mut rng);
        src.script(sql.as_bytes());
    }
}
