//! Seeded randomized differential test ("soak"): a writer thread generates random work from
//! `SOAK_SEED` against a source (DML of every shape, key changes, cascades, unique-key swaps,
//! savepoints and rollbacks, trigger-generated rows, session settings, sequences, DDL of every
//! kind, large transactions) while `snapshot` and then `follow` run and are killed with -9 at
//! random moments; after `SOAK_SECONDS` (default 45) the writer stops, `follow
//! --until-caught-up` runs and the target must equal the source: rows (as multisets),
//! definitions, sequences, the database, the lists of tables, views, events and routines.
//!
//! `SOAK_SEED=N SOAK_SECONDS=S cargo test --test soak -- --nocapture` replays a seed: the
//! writer's statements, and which of them the source refuses, are the same for a seed; their
//! interleaving with the engine is not. `scripts/soak.sh` runs many seeds. A failure panics with
//! `SOAK FAILED seed=N ...`; the writer's statements (target/soak/seed-N/writer.sql, each with
//! its outcome and time), the engine's logs and the state file are kept under
//! target/soak/seed-N/ (`SOAK_KEEP=1` keeps them after a clean run too; `SOAK_GENERAL_LOG=1`
//! adds the source's general query log).

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use support::load::Rng;
use support::*;

const DB: &str = "soak";
const DEFAULT_SEED: u64 = 20261125;
const DEFAULT_SECONDS: u64 = 45;

const SCHEMA: &str = r#"
SET NAMES utf8mb4; SET time_zone = '+09:00';
CREATE DATABASE soak CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
USE soak;
CREATE TABLE items (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, code VARCHAR(24) NOT NULL, qty INT NOT NULL DEFAULT 0,
  price DECIMAL(12,2), made DATETIME(6), ts TIMESTAMP(6) NULL, body BLOB, doc JSON,
  note VARCHAR(40) CHARACTER SET euckr COLLATE euckr_korean_ci, UNIQUE KEY uk_code (code)) ENGINE=InnoDB;
CREATE TABLE comp (region CHAR(2) NOT NULL, n INT NOT NULL, sub SMALLINT NOT NULL, v VARCHAR(30), amount DECIMAL(10,2),
  PRIMARY KEY (region, n, sub)) ENGINE=InnoDB;
CREATE TABLE fkey (k FLOAT NOT NULL PRIMARY KEY, v INT, d DOUBLE) ENGINE=InnoDB;
CREATE TABLE ci (name VARCHAR(30) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci NOT NULL PRIMARY KEY, v INT, memo VARCHAR(30)) ENGINE=InnoDB;
CREATE TABLE fk_a (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, code INT NOT NULL, label VARCHAR(30), UNIQUE KEY uk_a (code)) ENGINE=InnoDB;
CREATE TABLE fk_b (id INT NOT NULL PRIMARY KEY, a_code INT NOT NULL, qty INT, KEY (a_code),
  CONSTRAINT fk_b_a FOREIGN KEY (a_code) REFERENCES fk_a (code) ON UPDATE CASCADE ON DELETE CASCADE) ENGINE=InnoDB;
CREATE TABLE fk_c (id INT NOT NULL PRIMARY KEY, b_id INT NULL, note VARCHAR(30), KEY (b_id),
  CONSTRAINT fk_c_b FOREIGN KEY (b_id) REFERENCES fk_b (id) ON UPDATE CASCADE ON DELETE CASCADE) ENGINE=InnoDB;
CREATE TABLE fk_d (id INT NOT NULL PRIMARY KEY, c_id INT NULL, v INT, KEY (c_id),
  CONSTRAINT fk_d_c FOREIGN KEY (c_id) REFERENCES fk_c (id) ON UPDATE CASCADE ON DELETE SET NULL) ENGINE=InnoDB;
CREATE TABLE fk_lines (a_code INT NOT NULL, line INT NOT NULL, qty INT, PRIMARY KEY (a_code, line),
  CONSTRAINT fk_lines_a FOREIGN KEY (a_code) REFERENCES fk_a (code) ON UPDATE CASCADE ON DELETE CASCADE) ENGINE=InnoDB;
CREATE TABLE nokey (a INT, b VARCHAR(10) COLLATE utf8mb4_general_ci, f FLOAT, d DECIMAL(8,2), t DATETIME) ENGINE=InnoDB;
CREATE TABLE my (id INT NOT NULL PRIMARY KEY, v VARCHAR(30), n INT) ENGINE=MyISAM;
CREATE TABLE kr (id INT NOT NULL PRIMARY KEY, name VARCHAR(40), memo TEXT) ENGINE=InnoDB DEFAULT CHARSET=euckr;
CREATE SEQUENCE seq1 START WITH 1000 INCREMENT BY 3 CACHE 20;
CREATE TABLE seqt (id BIGINT NOT NULL DEFAULT (NEXTVAL(seq1)) PRIMARY KEY, v INT) ENGINE=InnoDB;
CREATE TABLE bulk (id INT NOT NULL PRIMARY KEY, payload VARCHAR(100), n INT) ENGINE=InnoDB;
CREATE TABLE sw1 (id INT NOT NULL PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB;
CREATE TABLE sw2 (id INT NOT NULL PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB;
INSERT INTO items (code, qty, price, made, ts, body, doc, note)
  SELECT CONCAT('i', seq), seq % 97, seq * 1.25, '2024-01-01 00:00:00.123456' + INTERVAL seq MINUTE,
         '2024-06-01 12:00:00' + INTERVAL seq SECOND, IF(seq % 5 = 0, NULL, UNHEX(REPEAT(HEX(seq % 256), 1 + seq % 7))),
         JSON_OBJECT('n', seq, 's', CONCAT('값', seq)), CONVERT(CONCAT('메모 ', seq) USING euckr)
  FROM seq_1_to_3000;
INSERT INTO comp SELECT ELT(1 + seq % 5, 'KR', 'JP', 'US', 'DE', 'FR'), seq DIV 5, seq % 3, CONCAT('v', seq), seq / 4 FROM seq_1_to_1500;
INSERT INTO fkey SELECT seq / 4, seq, seq / 3 FROM seq_1_to_400;
INSERT INTO fkey SELECT 1000 + seq * 0.1, seq, seq * 0.7 FROM seq_1_to_200;
INSERT INTO ci SELECT CONCAT(ELT(1 + seq % 6, 'alpha', 'Beta', 'GAMMA', '가나', 'Straße', 'éclair'), seq), seq, 'm' FROM seq_1_to_400;
INSERT INTO fk_a (code, label) SELECT seq * 10, CONCAT('a', seq) FROM seq_1_to_300;
INSERT INTO fk_b SELECT seq, ((seq - 1) % 300 + 1) * 10, seq FROM seq_1_to_900;
INSERT INTO fk_c SELECT seq, seq, CONCAT('c', seq) FROM seq_1_to_900;
INSERT INTO fk_d SELECT seq, seq, seq FROM seq_1_to_600;
INSERT INTO fk_lines SELECT a.code, l.seq, l.seq FROM fk_a a JOIN seq_1_to_3 l;
INSERT INTO nokey SELECT seq % 60, ELT(1 + seq % 4, 'a', 'A', 'b', NULL), seq / 8, seq % 100, '2024-01-01' + INTERVAL seq HOUR FROM seq_1_to_900;
INSERT INTO nokey SELECT * FROM nokey WHERE a < 5;
INSERT INTO my SELECT seq, CONCAT('my', seq), seq FROM seq_1_to_500;
INSERT INTO kr SELECT seq, CONVERT(CONCAT(ELT(1 + seq % 3, '서울', '부산', '김치'), seq) USING euckr), CONVERT('한글 메모' USING euckr) FROM seq_1_to_300;
INSERT INTO seqt (v) SELECT seq FROM seq_1_to_200;
INSERT INTO bulk SELECT seq, CONCAT('payload ', seq), seq FROM seq_1_to_12000;
INSERT INTO sw1 SELECT seq, CONCAT('one ', seq) FROM seq_1_to_50;
INSERT INTO sw2 SELECT seq, CONCAT('two ', seq) FROM seq_1_to_80;
CREATE TABLE audit (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, what VARCHAR(40), at DATETIME(6)) ENGINE=InnoDB;
CREATE TRIGGER ci_insert AFTER INSERT ON ci FOR EACH ROW INSERT INTO audit (what, at) VALUES (CONCAT('ci+', NEW.name), NOW(6));
CREATE TRIGGER fk_a_delete BEFORE DELETE ON fk_a FOR EACH ROW INSERT INTO audit (what, at) VALUES (CONCAT('a-', OLD.code), NOW(6));
SET sql_mode = 'PIPES_AS_CONCAT';
CREATE VIEW v_items AS SELECT id, code || ':' || qty AS label FROM items;
SET sql_mode = '';
CREATE EVENT ev_seed ON SCHEDULE EVERY 1 DAY DO UPDATE soak.items SET qty = qty WHERE id = 0;
"#;

/// Korean words and their EUC-KR bytes (sent raw after `SET NAMES euckr`).
const KO: &[(&str, &[u8])] = &[
    ("한글", &[0xc7, 0xd1, 0xb1, 0xdb]),
    ("가나다", &[0xb0, 0xa1, 0xb3, 0xaa, 0xb4, 0xd9]),
    ("서울", &[0xbc, 0xad, 0xbf, 0xef]),
    ("부산", &[0xba, 0xce, 0xbb, 0xea]),
    ("사과", &[0xbb, 0xe7, 0xb0, 0xfa]),
    ("김치", &[0xb1, 0xe8, 0xc4, 0xa1]),
    ("고객", &[0xb0, 0xed, 0xb0, 0xb4]),
    ("메모", &[0xb8, 0xde, 0xb8, 0xf0]),
    ("상품", &[0xbb, 0xf3, 0xc7, 0xb0]),
    ("주문", &[0xc1, 0xd6, 0xb9, 0xae]),
    ("수정", &[0xbc, 0xf6, 0xc1, 0xa4]),
    ("테스트", &[0xc5, 0xd7, 0xbd, 0xba, 0xc6, 0xae]),
];

const WORDS: &[&str] = &[
    "alpha", "Beta", "GAMMA", "delta", "가나", "한글", "Straße", "STRASSE", "éclair", "Eclair",
];
const REGIONS: &[&str] = &["KR", "JP", "US", "DE", "FR", "XX"];
const ZONES: &[&str] = &["+09:00", "+00:00", "-05:00", "+05:30", "SYSTEM", "-11:00"];

/// Types of columns the writer adds, with their default.
const XTYPES: &[&str] = &[
    "INT NOT NULL DEFAULT 7",
    "BIGINT NULL",
    "VARCHAR(20) CHARACTER SET utf8mb4 DEFAULT 'x'",
    "VARCHAR(12) CHARACTER SET euckr COLLATE euckr_korean_ci NULL",
    "DECIMAL(10,3) NOT NULL DEFAULT 1.125",
    "DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)",
    "TIMESTAMP NULL DEFAULT '2024-02-29 12:34:56'",
    "DOUBLE DEFAULT 0.1",
    "FLOAT DEFAULT 0.3",
    "ENUM('a','b','가') DEFAULT 'b'",
    "TEXT",
    "BLOB",
    "JSON",
    "DATE DEFAULT '2000-01-01'",
    "TIME(3) DEFAULT '-01:02:03.5'",
    "BIT(5) DEFAULT b'101'",
    "TINYINT UNSIGNED DEFAULT 200",
    "SET('x','y','z') DEFAULT 'x,z'",
];

/// What each type can be modified into (same index family).
fn modified_type(ty: usize, r: u64) -> usize {
    match ty {
        0 => [1, 16, 4][r as usize % 3],
        1 => [0, 7][r as usize % 2],
        2 => [3, 10][r as usize % 2],
        3 => [2, 10][r as usize % 2],
        4 => [0, 7, 2][r as usize % 3],
        5 => [6, 13, 2][r as usize % 3],
        6 => [5, 13][r as usize % 2],
        7 => [8, 4][r as usize % 2],
        8 => [7, 0][r as usize % 2],
        9 => [2, 17][r as usize % 2],
        10 => [2, 11][r as usize % 2],
        11 => [10][0],
        12 => [10][0],
        13 => [5, 2][r as usize % 2],
        14 => [2, 5][r as usize % 2],
        15 => [16, 0][r as usize % 2],
        16 => [0, 15][r as usize % 2],
        _ => [9, 2][r as usize % 2],
    }
}

/// Tables whose columns the writer adds, drops, modifies and renames.
const ALTERABLE: &[&str] = &[
    "items", "comp", "fkey", "ci", "fk_b", "fk_c", "nokey", "my", "kr", "bulk", "seqt",
];
/// Tables renamed to a new name and later back.
const RENAMABLE: &[&str] = &["comp", "fkey", "fk_c", "nokey", "my", "kr"];
/// Tables that may be truncated (and refilled).
const TRUNCATABLE: &[&str] = &["comp", "fkey", "ci", "nokey", "my", "kr", "bulk", "fk_d"];
/// (table, column) pairs that secondary indexes are added on.
const INDEXABLE: &[(&str, &str)] = &[
    ("items", "qty"),
    ("items", "price"),
    ("items", "made"),
    ("items", "note"),
    ("comp", "v"),
    ("comp", "amount"),
    ("fkey", "v"),
    ("ci", "v"),
    ("ci", "memo"),
    ("fk_b", "qty"),
    ("nokey", "a"),
    ("nokey", "b"),
    ("my", "v"),
    ("my", "n"),
    ("kr", "name"),
    ("bulk", "n"),
];

struct Extra {
    table: &'static str,
    col: String,
    ty: usize,
}

struct Temp {
    name: String,
    keyed: bool,
}

enum Effect {
    None,
    AddCol(Extra),
    DropCol(usize),
    ModCol(usize, usize),
    RenameCol(usize, String),
    AddIdx(&'static str, String),
    DropIdx(usize),
    Rename(&'static str, Option<String>),
    NewTemp(Temp),
    DropTemps(Vec<String>),
    TempKey(String, bool),
    RenameTemp(String, String),
    View(String, bool),
    Event(String, bool),
    Proc(String, bool),
    GenCol(bool),
    Seq2(bool),
}

struct Op {
    kind: &'static str,
    sql: Vec<u8>,
    effect: Effect,
    ddl: bool,
}

impl Op {
    fn new(kind: &'static str, sql: impl Into<Vec<u8>>) -> Op {
        Op {
            kind,
            sql: sql.into(),
            effect: Effect::None,
            ddl: false,
        }
    }
    fn with(mut self, e: Effect) -> Op {
        self.effect = e;
        self
    }
}

/// The random writer: a deterministic function of the seed and of which of its statements
/// the source accepted.
struct Gen {
    rng: Rng,
    fresh: u64,
    renamed: BTreeMap<&'static str, String>,
    extras: Vec<Extra>,
    indexes: Vec<(&'static str, String)>,
    temps: Vec<Temp>,
    views: Vec<String>,
    events: Vec<String>,
    procs: Vec<String>,
    gcol: bool,
    seq2: bool,
    /// Building a multi-statement transaction: fragments add no BEGIN/COMMIT of their own.
    in_trx: bool,
}

impl Gen {
    fn new(seed: u64) -> Gen {
        Gen {
            rng: Rng::new(seed),
            fresh: 0,
            renamed: BTreeMap::new(),
            extras: Vec::new(),
            indexes: Vec::new(),
            temps: Vec::new(),
            views: Vec::new(),
            events: Vec::new(),
            procs: Vec::new(),
            gcol: false,
            seq2: false,
            in_trx: false,
        }
    }

    fn r(&mut self, n: u64) -> u64 {
        self.rng.next(n)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.rng.next(100) < percent
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.rng.next(v.len() as u64) as usize]
    }
    fn fresh(&mut self) -> u64 {
        self.fresh += 1;
        self.fresh
    }
    /// The current name of a base table.
    fn t(&self, base: &str) -> String {
        self.renamed
            .get(base)
            .cloned()
            .unwrap_or_else(|| base.to_string())
    }
    fn word(&mut self) -> String {
        let w = *self.pick(WORDS);
        match self.r(4) {
            0 => w.to_uppercase(),
            1 => w.to_lowercase(),
            _ => w.to_string(),
        }
    }
    fn ko(&mut self) -> &'static str {
        self.pick(KO).0
    }
    fn float_lit(&mut self) -> String {
        match self.r(4) {
            0 => format!("{}", (self.r(4000) as i64 - 2000) as f64 / 8.0),
            1 => format!("{}.{}", self.r(500) as i64 - 250, self.r(10)),
            2 => format!("{}e{}", 1 + self.r(9), self.r(20) as i64 - 10),
            _ => format!("{}", self.r(100000) as f64 / 1000.0),
        }
    }
    fn datetime(&mut self) -> String {
        format!(
            "2024-{:02}-{:02} {:02}:{:02}:{:02}.{:06}",
            1 + self.r(12),
            1 + self.r(28),
            self.r(24),
            self.r(60),
            self.r(60),
            self.r(1_000_000)
        )
    }
    /// `SELECT cols INTO vars FROM t ORDER BY key LIMIT 1 OFFSET k`: a row that exists.
    fn pick_row(&mut self, table: &str, cols: &str, vars: &str, order: &str, n: u64) -> String {
        let k = self.r(n);
        format!("SELECT {cols} INTO {vars} FROM {table} ORDER BY {order} LIMIT 1 OFFSET {k};\n")
    }
    /// A literal for an added column of type `ty`.
    fn value_for(&mut self, ty: usize) -> String {
        let k = self.r(1000);
        match ty {
            0 | 1 | 16 => format!("{}", k % 250),
            2 => format!("'w{k}'"),
            3 => format!("'{}'", self.ko()),
            4 => format!("{k}.{}", self.r(1000)),
            5 | 13 => format!("'{}'", self.datetime()),
            6 => format!("'{}'", &self.datetime()[..19]),
            7 | 8 => self.float_lit(),
            9 => format!("'{}'", ["a", "b", "가", ""][k as usize % 4]),
            10 => format!("'{} {k}'", self.word()),
            11 => format!("X'{:04x}00ff'", k),
            12 => format!("JSON_OBJECT('k', {k}, 'w', '{}')", self.word()),
            14 => format!(
                "'{}{:02}:{:02}:{:02}.{}'",
                if k.is_multiple_of(2) { "-" } else { "" },
                k % 839,
                k % 60,
                k % 59,
                k % 1000
            ),
            15 => format!("b'{:b}'", k % 32),
            _ => format!("'{}'", ["x", "y,z", "", "x,y,z"][k as usize % 4]),
        }
    }

    // ---------------------------------------------------------------- DML fragments

    fn items_dml(&mut self) -> (&'static str, String) {
        let f = self.fresh();
        match self.r(14) {
            0 | 1 => {
                let (w, ko) = (self.word(), self.ko());
                let (q, p, k) = (self.r(100), self.r(100000), self.r(5000));
                ("items insert", format!(
                    "INSERT INTO items (code, qty, price, made, ts, body, doc, note) VALUES ('n{f}', {q}, {p}.{:02}, NOW(6), NOW(6) - INTERVAL {k} SECOND, X'{:06x}00', JSON_OBJECT('k', {k}, 'w', '{w}'), '{ko}');\n",
                    p % 100, k))
            }
            2 => {
                let n = 2 + self.r(15);
                let rows: Vec<String> = (0..n)
                    .map(|i| format!("('m{f}_{i}', {i}, {i}.5, '2024-05-05 05:05:05.{i}')"))
                    .collect();
                (
                    "items insert rows",
                    format!(
                        "INSERT INTO items (code, qty, price, made) VALUES {};\n",
                        rows.join(", ")
                    ),
                )
            }
            3 => {
                let d = self.r(10) as i64 - 5;
                let s = self.pick_row("items", "id", "@k", "id", 3000);
                ("items update", format!("{s}UPDATE items SET qty = qty + {d}, price = price * 1.1, ts = NOW(6) WHERE id = @k;\n"))
            }
            4 => {
                let a = 1 + self.r(3200);
                let n = self.r(40);
                ("items update range", format!("UPDATE items SET qty = qty - 1, body = CONCAT(IFNULL(body, ''), X'00ff') WHERE id BETWEEN {a} AND {};\n", a + n))
            }
            5 => {
                let s = self.pick_row("items", "id", "@k", "id", 3000);
                (
                    "items delete",
                    format!("{s}DELETE FROM items WHERE id = @k;\n"),
                )
            }
            6 => {
                let a = 1 + self.r(3200);
                let n = self.r(20);
                (
                    "items delete range",
                    format!("DELETE FROM items WHERE id BETWEEN {a} AND {};\n", a + n),
                )
            }
            7 => {
                let s = self.pick_row("items", "id", "@k", "id", 3000);
                let new = if self.chance(30) {
                    "-@k".to_string()
                } else {
                    format!("{}", 1_000_000 + f)
                };
                (
                    "items key change",
                    format!("{s}UPDATE items SET id = {new} WHERE id = @k;\n"),
                )
            }
            8 => {
                let a = 1 + self.r(3000);
                ("items key change range", format!("UPDATE items SET id = id + {} WHERE id BETWEEN {a} AND {} ORDER BY id DESC;\n", 2_000_000 + f * 100, a + self.r(10)))
            }
            9 => {
                let s = self.pick_row("items", "code", "@c", "id", 3000);
                ("items upsert", format!("{s}INSERT INTO items (code, qty) VALUES (IFNULL(@c, 'u{f}'), 1) ON DUPLICATE KEY UPDATE qty = qty + 100, note = '수정';\n"))
            }
            10 => {
                // REPLACE with the key of one row and the unique code of another
                let a = self.pick_row("items", "id", "@k", "id", 3000);
                let b = self.pick_row("items", "code", "@c", "id", 3000);
                ("items replace", format!("{a}{b}REPLACE INTO items (id, code, qty, note) VALUES (@k, IFNULL(@c, 'r{f}'), 5, '교체');\n"))
            }
            11 => {
                let s = self.pick_row("items", "id", "@k", "id", 3000);
                let (q, d) = (self.r(50), self.datetime());
                ("items update", format!("{s}UPDATE items SET made = '{d}', doc = JSON_SET(IFNULL(doc, '{{}}'), '$.q', {q}), body = NULL WHERE id = @k;\n"))
            }
            _ => self.extra_update("items", "id", 3000),
        }
    }

    /// Set an added column (if the table has one) of a picked row.
    fn extra_update(&mut self, base: &'static str, key: &str, n: u64) -> (&'static str, String) {
        let cands: Vec<(String, usize)> = self
            .extras
            .iter()
            .filter(|e| e.table == base)
            .map(|e| (e.col.clone(), e.ty))
            .collect();
        let t = self.t(base);
        if cands.is_empty() {
            return ("noop", format!("SELECT COUNT(*) FROM {t};\n"));
        }
        let (col, ty) = self.pick(&cands).clone();
        let v = if self.chance(20) {
            "DEFAULT".to_string()
        } else {
            self.value_for(ty)
        };
        let s = self.pick_row(&t, key, "@xk", key, n);
        (
            "added column update",
            format!("{s}UPDATE {t} SET `{col}` = {v} WHERE {key} = @xk;\n"),
        )
    }

    fn comp_dml(&mut self) -> (&'static str, String) {
        let t = self.t("comp");
        match self.r(9) {
            0 | 1 => {
                let n = 1 + self.r(6);
                let base = self.r(400);
                let rows: Vec<String> = (0..n)
                    .map(|i| {
                        let r = REGIONS[((base + i) % 5) as usize];
                        format!(
                            "('{r}', {}, {}, 'ins{}', {}.25)",
                            base + i,
                            self.rng.next(4),
                            base,
                            i
                        )
                    })
                    .collect();
                let ignore = if self.chance(50) { "IGNORE " } else { "" };
                (
                    "comp insert",
                    format!(
                        "INSERT {ignore}INTO {t} (region, n, sub, v, amount) VALUES {};\n",
                        rows.join(", ")
                    ),
                )
            }
            2 | 3 => {
                let s = self.pick_row(&t, "region, n, sub", "@r, @n, @s", "region, n, sub", 1500);
                ("comp update", format!("{s}UPDATE {t} SET v = CONCAT(IFNULL(v, ''), '+'), amount = amount + 1 WHERE region = @r AND n = @n AND sub = @s;\n"))
            }
            4 => {
                let s = self.pick_row(&t, "region, n", "@r, @n", "region, n, sub", 1500);
                (
                    "comp key change",
                    format!("{s}UPDATE {t} SET sub = sub + 100 WHERE region = @r AND n = @n;\n"),
                )
            }
            5 => {
                let s = self.pick_row(&t, "region, n, sub", "@r, @n, @s", "region, n, sub", 1500);
                let r = *self.pick(REGIONS);
                ("comp key change", format!("{s}UPDATE {t} SET region = '{r}' WHERE region = @r AND n = @n AND sub = @s;\n"))
            }
            6 => {
                let s = self.pick_row(&t, "region, n", "@r, @n", "region, n, sub", 1500);
                (
                    "comp delete",
                    format!("{s}DELETE FROM {t} WHERE region = @r AND n = @n;\n"),
                )
            }
            7 => {
                let r = *self.pick(REGIONS);
                let a = self.r(300);
                (
                    "comp delete range",
                    format!(
                        "DELETE FROM {t} WHERE region = '{r}' AND n BETWEEN {a} AND {};\n",
                        a + self.r(5)
                    ),
                )
            }
            _ => self.extra_update("comp", "n", 1500),
        }
    }

    fn fkey_dml(&mut self) -> (&'static str, String) {
        let t = self.t("fkey");
        match self.r(8) {
            0 | 1 => {
                let (k, v, d) = (self.float_lit(), self.r(1000), self.float_lit());
                (
                    "float insert",
                    format!("INSERT INTO {t} (k, v, d) VALUES ({k}, {v}, {d});\n"),
                )
            }
            2 => {
                let s = self.pick_row(&t, "k", "@k", "k", 600);
                (
                    "float update",
                    format!("{s}UPDATE {t} SET v = v + 1, d = d * 1.5 WHERE k = @k;\n"),
                )
            }
            3 => {
                let s = self.pick_row(&t, "k", "@k", "k", 600);
                let new = match self.r(3) {
                    0 => self.float_lit(),
                    1 => "-k".to_string(),
                    _ => "k + 0.1".to_string(),
                };
                (
                    "float key change",
                    format!("{s}UPDATE {t} SET k = {new} WHERE k = @k;\n"),
                )
            }
            4 => {
                let s = self.pick_row(&t, "k", "@k", "k", 600);
                (
                    "float delete",
                    format!("{s}DELETE FROM {t} WHERE k = @k;\n"),
                )
            }
            5 => {
                let a = self.r(100);
                (
                    "float delete range",
                    format!("DELETE FROM {t} WHERE k BETWEEN {a}.3 AND {a}.6;\n"),
                )
            }
            6 => {
                let a = self.r(200);
                (
                    "float update range",
                    format!("UPDATE {t} SET v = -v WHERE k > {a} AND k < {};\n", a + 2),
                )
            }
            _ => self.extra_update("fkey", "k", 600),
        }
    }

    fn ci_dml(&mut self) -> (&'static str, String) {
        let t = self.t("ci");
        let name = format!("{}{}", self.word(), self.r(420));
        match self.r(9) {
            0 => {
                let v = self.r(1000);
                (
                    "ci insert",
                    format!("INSERT INTO {t} (name, v, memo) VALUES ('{name}', {v}, 'i');\n"),
                )
            }
            1 => {
                let v = self.r(1000);
                ("ci upsert", format!("INSERT INTO {t} (name, v, memo) VALUES ('{name}', {v}, 'u') ON DUPLICATE KEY UPDATE v = v + 1, memo = VALUES(memo);\n"))
            }
            2 => {
                let s = self.pick_row(&t, "name", "@n", "name", 420);
                let f = *self.pick(&[
                    "UPPER(name)",
                    "LOWER(name)",
                    "CONCAT(name, ' ')",
                    "TRIM(name)",
                    "CONCAT(name, 'x')",
                    "REPLACE(name, 'ß', 'ss')",
                ]);
                (
                    "ci key change",
                    format!("{s}UPDATE {t} SET name = {f} WHERE name = @n;\n"),
                )
            }
            3 => (
                "ci update",
                format!("UPDATE {t} SET v = v + 1, memo = 'upd' WHERE name = '{name}';\n"),
            ),
            4 => (
                "ci delete",
                format!("DELETE FROM {t} WHERE name = '{name}';\n"),
            ),
            5 => {
                let v = self.r(100);
                (
                    "ci replace",
                    format!(
                        "REPLACE INTO {t} (name, v, memo) VALUES (UPPER('{name}'), {v}, 'rep');\n"
                    ),
                )
            }
            6 => (
                "ci update range",
                format!(
                    "UPDATE {t} SET memo = CONCAT(IFNULL(memo, ''), '.') WHERE name LIKE '{}%';\n",
                    name.chars().next().unwrap_or('a')
                ),
            ),
            7 => {
                let s = self.pick_row(&t, "name", "@n", "name", 420);
                (
                    "ci delete",
                    format!("{s}DELETE FROM {t} WHERE name = @n;\n"),
                )
            }
            _ => self.extra_update("ci", "name", 420),
        }
    }

    fn fk_dml(&mut self) -> (&'static str, String) {
        let f = self.fresh();
        let c = self.t("fk_c");
        match self.r(18) {
            0 => {
                let n = 1 + self.r(3);
                let rows: Vec<String> = (0..n)
                    .map(|i| format!("({}, 'new{f}_{i}')", 100_000 + f * 10 + i))
                    .collect();
                (
                    "fk parent insert",
                    format!(
                        "INSERT INTO fk_a (code, label) VALUES {};\n",
                        rows.join(", ")
                    ),
                )
            }
            1 => {
                let s = self.pick_row("fk_a", "code", "@a", "id", 300);
                ("fk child insert", format!("{s}INSERT INTO fk_b (id, a_code, qty) VALUES ({}, @a, 1);\nINSERT INTO fk_lines (a_code, line, qty) VALUES (@a, {}, 2);\n", 10_000 + f, 10 + f))
            }
            2 | 3 => {
                let s = self.pick_row("fk_a", "code", "@a", "id", 300);
                (
                    "fk parent key change (cascade)",
                    format!(
                        "{s}UPDATE fk_a SET code = {} WHERE code = @a;\n",
                        200_000 + f
                    ),
                )
            }
            4 => {
                let s = self.pick_row("fk_a", "code", "@a", "id", 300);
                (
                    "fk parent delete (cascade)",
                    format!("{s}DELETE FROM fk_a WHERE code = @a;\n"),
                )
            }
            5 => {
                let s = self.pick_row("fk_b", "id", "@b", "id", 900);
                (
                    "fk middle key change (cascade)",
                    format!("{s}UPDATE fk_b SET id = {} WHERE id = @b;\n", 20_000 + f),
                )
            }
            6 => {
                let s = self.pick_row("fk_b", "id", "@b", "id", 900);
                (
                    "fk middle delete (cascade, set null)",
                    format!("{s}DELETE FROM fk_b WHERE id = @b;\n"),
                )
            }
            7 => {
                let s = self.pick_row(&c, "id", "@c", "id", 900);
                (
                    "fk delete (set null)",
                    format!("{s}DELETE FROM {c} WHERE id = @c;\n"),
                )
            }
            8 => {
                let s = self.pick_row(&c, "id", "@c", "id", 900);
                (
                    "fk key change (cascade)",
                    format!("{s}UPDATE {c} SET id = {} WHERE id = @c;\n", 30_000 + f),
                )
            }
            9 => {
                let a = self.pick_row("fk_b", "id", "@b", "id", 900);
                let b = self.pick_row(&c, "id", "@c", "id", 900);
                ("fk child insert", format!("{a}{b}INSERT INTO {c} (id, b_id, note) VALUES ({}, @b, 'n');\nINSERT INTO fk_d (id, c_id, v) VALUES ({}, @c, 1);\n", 40_000 + f, 40_000 + f))
            }
            10 => {
                let s = self.pick_row("fk_d", "id", "@d", "id", 600);
                let b = self.pick_row(&c, "id", "@c", "id", 900);
                ("fk child update", format!("{s}{b}UPDATE fk_d SET c_id = IF(c_id IS NULL, @c, NULL), v = v + 1 WHERE id = @d;\n"))
            }
            11 => {
                // swap the unique codes of two parents through a temporary value: cascades
                let a = self.pick_row("fk_a", "code", "@x", "id", 300);
                let b = self.pick_row("fk_a", "code", "@y", "id", 300);
                let (begin, commit) = if self.in_trx {
                    ("", "")
                } else {
                    ("BEGIN;\n", "COMMIT;\n")
                };
                ("fk parent unique swap (cascade)", format!("{begin}{a}{b}UPDATE fk_a SET code = -1 - @x WHERE code = @x AND @x <> @y;\nUPDATE fk_a SET code = @x WHERE code = @y AND @x <> @y;\nUPDATE fk_a SET code = @y WHERE code = -1 - @x AND @x <> @y;\n{commit}"))
            }
            12 => {
                let s = self.pick_row("fk_lines", "a_code, line", "@a, @l", "a_code, line", 900);
                ("fk composite child update", format!("{s}UPDATE fk_lines SET qty = qty + 1, line = line + 1000 WHERE a_code = @a AND line = @l;\n"))
            }
            13 => {
                let s = self.pick_row("fk_lines", "a_code", "@a", "a_code, line", 900);
                (
                    "fk composite child delete",
                    format!("{s}DELETE FROM fk_lines WHERE a_code = @a;\n"),
                )
            }
            14 => {
                let s = self.pick_row("fk_b", "id", "@b", "id", 900);
                ("fk child update", format!("{s}UPDATE fk_b SET qty = qty * 2 WHERE id = @b;\nUPDATE fk_a SET label = CONCAT(label, '*') WHERE code = (SELECT a_code FROM fk_b WHERE id = @b);\n"))
            }
            15 => {
                let s = self.pick_row("fk_a", "code", "@a", "id", 300);
                (
                    "fk multi-table delete (cascade)",
                    format!("{s}DELETE b FROM fk_b b JOIN fk_a a ON a.code = b.a_code WHERE a.code = @a;\n"),
                )
            }
            16 => {
                let k = self.r(300);
                (
                    "fk multi-table update",
                    format!("UPDATE fk_b b JOIN fk_a a ON a.code = b.a_code SET b.qty = b.qty + 1, a.label = CONCAT(a.label, '+') WHERE a.id BETWEEN {k} AND {};\n", k + 3),
                )
            }
            _ => self.extra_update("fk_b", "id", 900),
        }
    }

    fn nokey_dml(&mut self) -> (&'static str, String) {
        let t = self.t("nokey");
        let a = self.r(70);
        match self.r(10) {
            0 | 1 => {
                let n = 1 + self.r(4);
                let rows: Vec<String> = (0..n)
                    .map(|i| {
                        let b = ["'a'", "'A'", "'b'", "NULL", "'가'"][((a + i) % 5) as usize];
                        format!(
                            "({a}, {b}, {}, {}.{:02}, '2024-03-03 03:03:03')",
                            (a + i) as f64 / 8.0,
                            i,
                            a
                        )
                    })
                    .collect();
                (
                    "keyless insert (duplicates)",
                    format!(
                        "INSERT INTO {t} (a, b, f, d, t) VALUES {};\n",
                        rows.join(", ")
                    ),
                )
            }
            2 => (
                "keyless delete one",
                format!("DELETE FROM {t} WHERE a = {a} LIMIT 1;\n"),
            ),
            3 => (
                "keyless update some",
                format!("UPDATE {t} SET d = d + 1 WHERE a = {a} LIMIT 2;\n"),
            ),
            4 => (
                "keyless update case",
                format!(
                    "UPDATE {t} SET b = IF(BINARY b = 'a', 'A', 'a') WHERE a = {a} AND b = 'a';\n"
                ),
            ),
            5 => (
                "keyless delete all",
                format!("DELETE FROM {t} WHERE a = {a};\n"),
            ),
            6 => (
                "keyless copy rows",
                format!("INSERT INTO {t} SELECT * FROM {t} WHERE a = {a} LIMIT 3;\n"),
            ),
            7 => (
                "keyless update null",
                format!(
                    "UPDATE {t} SET b = NULL, f = f * 2 WHERE a = {a} AND b IS NOT NULL LIMIT 1;\n"
                ),
            ),
            8 => (
                "keyless float match",
                format!("UPDATE {t} SET d = -d WHERE f = {} ;\n", a as f64 / 8.0),
            ),
            _ => {
                let cands: Vec<(String, usize)> = self
                    .extras
                    .iter()
                    .filter(|e| e.table == "nokey")
                    .map(|e| (e.col.clone(), e.ty))
                    .collect();
                if cands.is_empty() {
                    return (
                        "keyless delete one",
                        format!("DELETE FROM {t} WHERE a = {a} LIMIT 1;\n"),
                    );
                }
                let (col, ty) = self.pick(&cands).clone();
                let v = self.value_for(ty);
                (
                    "added column update",
                    format!("UPDATE {t} SET `{col}` = {v} WHERE a = {a} LIMIT 1;\n"),
                )
            }
        }
    }

    fn my_dml(&mut self) -> (&'static str, String) {
        let t = self.t("my");
        let id = 1 + self.r(700);
        match self.r(8) {
            0 | 1 => ("myisam upsert", format!("INSERT INTO {t} (id, v, n) VALUES ({id}, 'ins{id}', 1) ON DUPLICATE KEY UPDATE n = n + 1;\n")),
            2 => ("myisam update", format!("UPDATE {t} SET v = CONCAT(IFNULL(v, ''), '~'), n = n + 1 WHERE id = {id};\n")),
            3 => ("myisam delete", format!("DELETE FROM {t} WHERE id = {id};\n")),
            4 => ("myisam key change (may fail midway)", format!("UPDATE {t} SET id = id + 1 WHERE id BETWEEN {id} AND {};\n", id + self.r(8))),
            5 => ("myisam replace", format!("REPLACE INTO {t} (id, v, n) VALUES ({id}, 'rep', 0);\n")),
            6 => ("myisam key change", format!("UPDATE {t} SET id = {} WHERE id = {id};\n", 5000 + self.fresh())),
            _ => self.extra_update("my", "id", 500),
        }
    }

    fn kr_dml(&mut self) -> (&'static str, String) {
        let t = self.t("kr");
        let id = 1 + self.r(400);
        let ko = self.ko();
        match self.r(5) {
            0 => ("euckr upsert", format!("INSERT INTO {t} (id, name, memo) VALUES ({id}, '{ko}{id}', '{ko}') ON DUPLICATE KEY UPDATE name = VALUES(name);\n")),
            1 => ("euckr update", format!("UPDATE {t} SET memo = CONCAT(IFNULL(memo, ''), '{ko}') WHERE id = {id};\n")),
            2 => ("euckr delete", format!("DELETE FROM {t} WHERE id = {id};\n")),
            3 => ("euckr key change", format!("UPDATE {t} SET id = {} WHERE id = {id};\n", 10_000 + self.fresh())),
            _ => self.extra_update("kr", "id", 300),
        }
    }

    fn seq_dml(&mut self) -> (&'static str, String) {
        match self.r(8) {
            0 | 1 => ("sequence nextval", "SELECT NEXTVAL(seq1);\n".to_string()),
            2 | 3 => {
                let n = 1 + self.r(5);
                let rows: Vec<String> = (0..n).map(|i| format!("({i})")).collect();
                (
                    "sequence default insert",
                    format!("INSERT INTO seqt (v) VALUES {};\n", rows.join(", ")),
                )
            }
            4 => {
                let v = 5000 + self.fresh() * 50 + self.r(40);
                let round = if self.chance(30) { ", 0" } else { "" };
                (
                    "sequence setval",
                    format!("SELECT SETVAL(seq1, {v}{round});\n"),
                )
            }
            5 => {
                let s = self.pick_row("seqt", "id", "@q", "id", 200);
                (
                    "sequence table update",
                    format!("{s}UPDATE seqt SET v = v + 1, id = NEXTVAL(seq1) WHERE id = @q;\n"),
                )
            }
            6 => {
                let s = self.pick_row("seqt", "id", "@q", "id", 200);
                (
                    "sequence table delete",
                    format!("{s}DELETE FROM seqt WHERE id = @q;\n"),
                )
            }
            _ => (
                "sequence nextval",
                "DO NEXTVAL(seq1), NEXTVAL(seq1);\n".to_string(),
            ),
        }
    }

    fn small_dml(&mut self) -> (&'static str, String) {
        match self.r(6) {
            0 => {
                let t = if self.chance(50) { "sw1" } else { "sw2" };
                let id = 1 + self.r(100);
                ("swap table upsert", format!("INSERT INTO {t} (id, v) VALUES ({id}, '{t} {id}') ON DUPLICATE KEY UPDATE v = CONCAT(v, '!');\n"))
            }
            1 => {
                let t = if self.chance(50) { "sw1" } else { "sw2" };
                (
                    "swap table delete",
                    format!("DELETE FROM {t} WHERE id = {};\n", 1 + self.r(100)),
                )
            }
            2 | 3 => {
                let a = 1 + self.r(12000);
                ("bulk update", format!("UPDATE bulk SET n = n + 1, payload = CONCAT('p', n) WHERE id BETWEEN {a} AND {};\n", a + self.r(30)))
            }
            4 => {
                let a = 1 + self.r(12000);
                (
                    "bulk delete",
                    format!(
                        "DELETE FROM bulk WHERE id BETWEEN {a} AND {};\n",
                        a + self.r(5)
                    ),
                )
            }
            _ => self.extra_update("bulk", "id", 12000),
        }
    }

    fn temp_dml(&mut self) -> (&'static str, String) {
        if self.temps.is_empty() {
            return self.small_dml();
        }
        let i = self.r(self.temps.len() as u64) as usize;
        let name = self.temps[i].name.clone();
        let k = self.r(300);
        match self.r(5) {
            0 => ("new table insert", format!("INSERT INTO {name} (id, v, w) VALUES ({k}, 'x{k}', {k}), ({}, 'y', 1);\n", k + 1)),
            1 => ("new table update", format!("UPDATE {name} SET w = w + 1, v = CONCAT(v, '+') WHERE id BETWEEN {k} AND {};\n", k + 3)),
            2 => ("new table key change", format!("UPDATE {name} SET id = id + 100000 WHERE id = {k};\n")),
            3 => ("new table delete", format!("DELETE FROM {name} WHERE id BETWEEN {k} AND {};\n", k + 2)),
            _ => ("new table delete one", format!("DELETE FROM {name} WHERE id = {k} LIMIT 1;\n")),
        }
    }

    /// One DML statement group on a random table.
    fn dml(&mut self) -> (&'static str, String) {
        match self.r(20) {
            0..=3 => self.items_dml(),
            4 | 5 => self.comp_dml(),
            6 | 7 => self.fkey_dml(),
            8 | 9 => self.ci_dml(),
            10..=12 => self.fk_dml(),
            13 | 14 => self.nokey_dml(),
            15 => self.my_dml(),
            16 => self.kr_dml(),
            17 => self.seq_dml(),
            18 => self.temp_dml(),
            _ => self.small_dml(),
        }
    }

    // ---------------------------------------------------------------- whole operations

    fn next_op(&mut self) -> Op {
        let r = self.r(1000);
        match r {
            0..=749 => {
                let (k, s) = self.dml();
                Op::new(k, s)
            }
            750..=849 => self.transaction(),
            850..=879 => self.unique_swap(),
            880..=939 => self.session_op(),
            940 => self.big_transaction(),
            _ => {
                let mut op = self.ddl();
                op.ddl = true;
                op
            }
        }
    }

    fn transaction(&mut self) -> Op {
        self.in_trx = true;
        let op = self.transaction_body();
        self.in_trx = false;
        op
    }

    fn transaction_body(&mut self) -> Op {
        let mut s = String::from("BEGIN;\n");
        let n = 2 + self.r(4);
        let savepoint = self.chance(50);
        for i in 0..n {
            if savepoint && i == 1 {
                s.push_str("SAVEPOINT sp1;\n");
            }
            s.push_str(&self.dml().1);
            if savepoint && i == 1 && self.chance(60) {
                // a non-transactional change inside the rolled-back part stays
                s.push_str(&self.my_dml().1);
                s.push_str("ROLLBACK TO SAVEPOINT sp1;\n");
            }
        }
        if self.chance(20) {
            s.push_str(&self.my_dml().1);
            s.push_str("ROLLBACK;\n");
            Op::new("transaction rolled back", s)
        } else {
            s.push_str("COMMIT;\n");
            Op::new(
                if savepoint {
                    "transaction with savepoint"
                } else {
                    "transaction"
                },
                s,
            )
        }
    }

    fn unique_swap(&mut self) -> Op {
        let a = self.pick_row("items", "id, code", "@ia, @ca", "id", 3000);
        let b = self.pick_row("items", "id, code", "@ib, @cb", "id", 3000);
        if self.chance(70) {
            Op::new("unique-key swap", format!(
                "BEGIN;\n{a}{b}UPDATE items SET code = CONCAT('~', @ca) WHERE id = @ia AND @ia <> @ib;\nUPDATE items SET code = @ca WHERE id = @ib AND @ia <> @ib;\nUPDATE items SET code = @cb WHERE id = @ia AND @ia <> @ib;\nCOMMIT;\n"))
        } else {
            // in autocommit: three transactions, the middle states visible
            let c = self.pick_row("items", "id, code", "@ic, @cc", "id", 3000);
            Op::new("unique-key rotation", format!(
                "{a}{b}{c}UPDATE items SET code = CONCAT('~', @ca) WHERE id = @ia AND @ia <> @ib AND @ib <> @ic AND @ia <> @ic;\nUPDATE items SET code = @ca WHERE id = @ib AND @ia <> @ib AND @ib <> @ic AND @ia <> @ic;\nUPDATE items SET code = @cb WHERE id = @ic AND @ia <> @ib AND @ib <> @ic AND @ia <> @ic;\nUPDATE items SET code = @cc WHERE id = @ia AND @ia <> @ib AND @ib <> @ic AND @ia <> @ic;\n"))
        }
    }

    fn session_op(&mut self) -> Op {
        let f = self.fresh();
        match self.r(7) {
            0 | 1 => {
                let tz = *self.pick(ZONES);
                let d = self.datetime();
                let s = self.pick_row("items", "id", "@k", "id", 3000);
                Op::new("time_zone DML", format!(
                    "SET time_zone = '{tz}';\n{s}UPDATE items SET ts = '{d}', made = NOW(6) WHERE id = @k;\nINSERT INTO items (code, qty, ts, made) VALUES ('tz{f}', 1, '{d}', FROM_UNIXTIME(1700000000 + {f}));\n"))
            }
            2 | 3 => {
                // SET NAMES euckr, Korean literals sent as EUC-KR bytes
                let (_, a) = *self.pick(KO);
                let (_, b) = *self.pick(KO);
                let t = self.t("kr");
                let id = 1 + self.r(400);
                let mut s = b"SET NAMES euckr;\n".to_vec();
                s.extend_from_slice(format!("INSERT INTO {t} (id, name, memo) VALUES ({id}, '").as_bytes());
                s.extend_from_slice(a);
                s.extend_from_slice(b"', '");
                s.extend_from_slice(b);
                s.extend_from_slice(b"') ON DUPLICATE KEY UPDATE memo = VALUES(memo);\n");
                s.extend_from_slice(format!("UPDATE items SET note = CONCAT('{id} ', '").as_bytes());
                s.extend_from_slice(b);
                s.extend_from_slice(format!("') WHERE id = {};\n", 1 + self.r(3000)).as_bytes());
                let ct = self.t("comp");
                s.extend_from_slice(format!("UPDATE {ct} SET v = '").as_bytes());
                s.extend_from_slice(a);
                s.extend_from_slice(format!("' WHERE n = {};\n", self.r(300)).as_bytes());
                Op::new("SET NAMES euckr DML", s)
            }
            4 => {
                let t = self.t("comp");
                Op::new("PIPES_AS_CONCAT DML", format!(
                    "SET sql_mode = 'PIPES_AS_CONCAT';\nUPDATE {t} SET v = region || '-' || n WHERE n = {};\n", self.r(300)))
            }
            5 => {
                // orphans and skipped cascades: the source's session turned the checks off
                let s = self.pick_row("fk_a", "code", "@a", "id", 300);
                Op::new("foreign_key_checks=0", if self.chance(50) {
                    format!("SET foreign_key_checks = 0;\n{s}DELETE FROM fk_a WHERE code = @a;\nINSERT INTO fk_b (id, a_code, qty) VALUES ({}, {}, 0);\n", 50_000 + f, 900_000 + f)
                } else {
                    format!("SET foreign_key_checks = 0;\n{s}UPDATE fk_a SET code = {} WHERE code = @a;\n", 300_000 + f)
                })
            }
            _ => Op::new("NO_AUTO_VALUE_ON_ZERO", format!(
                "SET sql_mode = 'NO_AUTO_VALUE_ON_ZERO';\nINSERT INTO items (id, code, qty) VALUES (0, 'zero{f}', 0) ON DUPLICATE KEY UPDATE qty = qty + 1, code = 'zero{f}';\n")),
        }
    }

    fn big_transaction(&mut self) -> Op {
        let n = 5000 + self.r(15001);
        let f = self.fresh();
        match self.r(3) {
            0 => Op::new("large transaction (insert/update)", format!(
                "BEGIN;\nINSERT INTO bulk (id, payload, n) SELECT seq, CONCAT('big {f} ', seq), seq FROM seq_1_to_{n} ON DUPLICATE KEY UPDATE payload = CONCAT('big {f} ', seq), n = n + 1;\nUPDATE items SET qty = qty + 1 WHERE id < 50;\nCOMMIT;\n")),
            1 => Op::new("large transaction (delete/reinsert)", format!(
                "BEGIN;\nDELETE FROM bulk WHERE id <= {n};\nINSERT INTO bulk (id, payload, n) SELECT seq, CONCAT('re {f} ', seq), -seq FROM seq_1_to_{n};\nCOMMIT;\n")),
            _ => Op::new("large transaction (key change)", format!(
                "BEGIN;\nUPDATE bulk SET id = id + 1000000 WHERE id <= {n} ORDER BY id DESC;\nUPDATE bulk SET id = id - 1000000 WHERE id > 1000000 ORDER BY id;\nCOMMIT;\n")),
        }
    }

    // ---------------------------------------------------------------- DDL

    fn ddl(&mut self) -> Op {
        let f = self.fresh();
        match self.r(27) {
            0..=2 => {
                // ADD COLUMN, somewhere, of some type; a TIMESTAMP default under a time zone
                let table = *self.pick(ALTERABLE);
                let t = self.t(table);
                let ty = self.r(XTYPES.len() as u64) as usize;
                let col = format!("x{f}");
                let pos = match self.r(4) {
                    0 => " FIRST".to_string(),
                    1 => {
                        let c = INDEXABLE.iter().find(|(tb, _)| *tb == table).map(|(_, c)| *c).unwrap_or("id");
                        format!(" AFTER {c}")
                    }
                    _ => String::new(),
                };
                let tz = *self.pick(ZONES);
                Op::new("ALTER TABLE ADD COLUMN", format!("SET time_zone = '{tz}';\nALTER TABLE {t} ADD COLUMN {col} {}{pos};\n", XTYPES[ty]))
                    .with(Effect::AddCol(Extra { table, col, ty }))
            }
            3 => {
                if self.extras.is_empty() {
                    return self.ddl();
                }
                let i = self.r(self.extras.len() as u64) as usize;
                let t = self.t(self.extras[i].table);
                Op::new("ALTER TABLE DROP COLUMN", format!("ALTER TABLE {t} DROP COLUMN `{}`;\n", self.extras[i].col))
                    .with(Effect::DropCol(i))
            }
            4 | 5 => {
                if self.extras.is_empty() || self.chance(30) {
                    // a base column: widen or narrow (narrowing truncates under the permissive sql_mode)
                    let (t, col, a, b) = *self.pick(&[
                        ("items", "qty", "INT NOT NULL DEFAULT 0", "BIGINT NOT NULL DEFAULT 0"),
                        ("my", "v", "VARCHAR(30)", "VARCHAR(8)"),
                        ("ci", "memo", "VARCHAR(30)", "VARCHAR(60) CHARACTER SET euckr"),
                        ("comp", "amount", "DECIMAL(10,2)", "DECIMAL(12,1)"),
                        ("nokey", "d", "DECIMAL(8,2)", "DOUBLE"),
                    ]);
                    let ty = if self.chance(50) { a } else { b };
                    let t = self.t(t);
                    return Op::new("ALTER TABLE MODIFY COLUMN", format!("ALTER TABLE {t} MODIFY COLUMN {col} {ty};\n"));
                }
                let i = self.r(self.extras.len() as u64) as usize;
                let new = modified_type(self.extras[i].ty, self.r(6));
                let t = self.t(self.extras[i].table);
                let col = self.extras[i].col.clone();
                Op::new("ALTER TABLE MODIFY COLUMN", format!("ALTER TABLE {t} MODIFY COLUMN `{col}` {};\n", XTYPES[new]))
                    .with(Effect::ModCol(i, new))
            }
            6 => {
                if self.extras.is_empty() {
                    return self.ddl();
                }
                let i = self.r(self.extras.len() as u64) as usize;
                let t = self.t(self.extras[i].table);
                let to = format!("y{f}");
                let sql = if self.chance(50) {
                    format!("ALTER TABLE {t} RENAME COLUMN `{}` TO {to};\n", self.extras[i].col)
                } else {
                    format!("ALTER TABLE {t} CHANGE `{}` {to} {};\n", self.extras[i].col, XTYPES[self.extras[i].ty])
                };
                Op::new("ALTER TABLE RENAME COLUMN", sql).with(Effect::RenameCol(i, to))
            }
            7 | 8 => {
                let (table, col) = *self.pick(INDEXABLE);
                let t = self.t(table);
                let name = format!("ix{f}");
                let sql = if self.chance(50) {
                    format!("ALTER TABLE {t} ADD INDEX {name} ({col});\n")
                } else {
                    format!("CREATE INDEX {name} ON {t} ({col});\n")
                };
                Op::new("ADD INDEX", sql).with(Effect::AddIdx(table, name))
            }
            9 => {
                if self.indexes.is_empty() {
                    return self.ddl();
                }
                let i = self.r(self.indexes.len() as u64) as usize;
                let (table, name) = self.indexes[i].clone();
                let t = self.t(table);
                let sql = if self.chance(50) {
                    format!("ALTER TABLE {t} DROP INDEX {name};\n")
                } else {
                    format!("DROP INDEX {name} ON {t};\n")
                };
                Op::new("DROP INDEX", sql).with(Effect::DropIdx(i))
            }
            10 | 11 => {
                let table = *self.pick(RENAMABLE);
                match self.renamed.get(table).cloned() {
                    None => {
                        let to = format!("{table}_r{f}");
                        let sql = if self.chance(70) {
                            format!("RENAME TABLE {table} TO {to};\n")
                        } else {
                            format!("ALTER TABLE {table} RENAME TO {to};\n")
                        };
                        Op::new("RENAME TABLE", sql).with(Effect::Rename(table, Some(to)))
                    }
                    Some(cur) => Op::new("RENAME TABLE back", format!("RENAME TABLE {cur} TO {table};\n"))
                        .with(Effect::Rename(table, None)),
                }
            }
            12..=14 => self.create_table(f),
            15 => {
                if self.temps.is_empty() {
                    return self.create_table(f);
                }
                let i_ = self.r(self.temps.len() as u64) as usize;
                let mut names = vec![self.temps[i_].name.clone()];
                if self.temps.len() > 1 && self.chance(30) {
                    let i_ = self.r(self.temps.len() as u64) as usize;
                    let other = self.temps[i_].name.clone();
                    if other != names[0] {
                        names.push(other);
                    }
                }
                Op::new("DROP TABLE", format!("DROP TABLE {};\n", names.join(", "))).with(Effect::DropTemps(names))
            }
            16 => {
                // TRUNCATE and refill
                if !self.temps.is_empty() && self.chance(50) {
                    let i_ = self.r(self.temps.len() as u64) as usize;
                    let name = self.temps[i_].name.clone();
                    return Op::new("TRUNCATE", format!("TRUNCATE {name};\nINSERT INTO {name} (id, v, w) SELECT seq, 'again', seq FROM seq_1_to_50;\n"));
                }
                let table = *self.pick(TRUNCATABLE);
                let t = self.t(table);
                let refill = match table {
                    "comp" => format!("INSERT INTO {t} (region, n, sub, v, amount) SELECT ELT(1 + seq % 5, 'KR', 'JP', 'US', 'DE', 'FR'), seq DIV 5, seq % 3, CONCAT('t', seq), seq / 8 FROM seq_1_to_1500;\n"),
                    "fkey" => format!("INSERT INTO {t} (k, v, d) SELECT seq / 4 + 0.1, seq, seq FROM seq_1_to_600;\n"),
                    "ci" => format!("INSERT INTO {t} (name, v) SELECT CONCAT(ELT(1 + seq % 4, 'Alpha', 'beta', '가나', 'Straße'), seq), seq FROM seq_1_to_420;\n"),
                    "nokey" => format!("INSERT INTO {t} (a, b, f, d) SELECT seq % 70, ELT(1 + seq % 3, 'a', 'A', NULL), seq / 8, seq FROM seq_1_to_700;\n"),
                    "my" => format!("INSERT INTO {t} (id, v, n) SELECT seq, CONCAT('t', seq), seq FROM seq_1_to_500;\n"),
                    "kr" => format!("INSERT INTO {t} (id, name, memo) SELECT seq, CONCAT('김치', seq), '한글' FROM seq_1_to_300;\n"),
                    "bulk" => format!("INSERT INTO {t} (id, payload, n) SELECT seq, CONCAT('t', seq), seq FROM seq_1_to_12000;\n"),
                    _ => format!("INSERT INTO {t} (id, c_id, v) SELECT id, id, 0 FROM {} LIMIT 600;\n", self.t("fk_c")),
                };
                let word = if self.chance(50) { "TRUNCATE TABLE" } else { "TRUNCATE" };
                Op::new("TRUNCATE", format!("{word} {t};\n{refill}"))
            }
            17 => {
                if self.temps.is_empty() {
                    return self.create_table(f);
                }
                let i = self.r(self.temps.len() as u64) as usize;
                let name = self.temps[i].name.clone();
                if self.temps[i].keyed {
                    Op::new("DROP PRIMARY KEY", format!("ALTER TABLE {name} DROP PRIMARY KEY;\n")).with(Effect::TempKey(name, false))
                } else if self.chance(50) {
                    Op::new("ADD PRIMARY KEY", format!("ALTER TABLE {name} MODIFY id INT NOT NULL, ADD PRIMARY KEY (id);\n")).with(Effect::TempKey(name, true))
                } else {
                    let to = format!("t_{f}");
                    Op::new("ALTER TABLE RENAME", format!("ALTER TABLE {name} RENAME TO {to};\n")).with(Effect::RenameTemp(name, to))
                }
            }
            18 | 19 => self.view_ddl(f),
            20 => {
                if !self.events.is_empty() && self.chance(50) {
                    let i_ = self.r(self.events.len() as u64) as usize;
                    let e = self.events[i_].clone();
                    if self.chance(50) {
                        return Op::new("ALTER EVENT", format!("ALTER EVENT {e} ON SCHEDULE EVERY {} HOUR DO UPDATE items SET qty = qty + 1 WHERE id = 2;\n", 1 + self.r(9)));
                    }
                    return Op::new("DROP EVENT", format!("DROP EVENT {e};\n")).with(Effect::Event(e, false));
                }
                let e = format!("ev{f}");
                let status = *self.pick(&["", " ENABLE", " DISABLE"]);
                Op::new("CREATE EVENT", format!("CREATE EVENT {e} ON SCHEDULE EVERY {} DAY{status} DO UPDATE items SET qty = qty + 1 WHERE id = 1;\n", 1 + self.r(9)))
                    .with(Effect::Event(e, true))
            }
            21 => {
                if !self.procs.is_empty() && self.chance(50) {
                    let i_ = self.r(self.procs.len() as u64) as usize;
                    let p = self.procs[i_].clone();
                    return Op::new("DROP PROCEDURE", format!("DROP PROCEDURE {p};\n")).with(Effect::Proc(p, false));
                }
                let p = format!("p{f}");
                Op::new("CREATE PROCEDURE", format!("CREATE PROCEDURE {p}() SELECT COUNT(*) FROM items WHERE qty > {};\n", self.r(50)))
                    .with(Effect::Proc(p, true))
            }
            22 => {
                let t = self.t("comp");
                if self.gcol {
                    Op::new("DROP generated column", format!("ALTER TABLE {t} DROP COLUMN g;\n")).with(Effect::GenCol(false))
                } else {
                    let kind = if self.chance(50) { "STORED" } else { "VIRTUAL" };
                    Op::new("ADD generated column (PIPES_AS_CONCAT)", format!(
                        "SET sql_mode = 'PIPES_AS_CONCAT';\nALTER TABLE {t} ADD COLUMN g VARCHAR(80) AS (region || '-' || n || '-' || sub) {kind};\n"))
                        .with(Effect::GenCol(true))
                }
            }
            23 => match self.r(4) {
                0 => Op::new("ALTER SEQUENCE", format!("ALTER SEQUENCE seq1 INCREMENT BY {};\n", 1 + self.r(7))),
                1 => {
                    if self.seq2 {
                        Op::new("DROP SEQUENCE", "DROP SEQUENCE seq2;\n").with(Effect::Seq2(false))
                    } else {
                        Op::new("CREATE SEQUENCE", format!("CREATE SEQUENCE seq2 START WITH {} CACHE 5;\nSELECT NEXTVAL(seq2);\n", self.r(100)))
                            .with(Effect::Seq2(true))
                    }
                }
                2 => Op::new("sequence nextval", "SELECT NEXTVAL(seq2), NEXTVAL(seq2);\n"),
                _ => Op::new("ALTER DATABASE", format!("ALTER DATABASE soak COLLATE {};\n",
                    self.pick(&["utf8mb4_general_ci", "utf8mb4_unicode_ci", "utf8mb4_bin"]))),
            },
            24 => {
                let t = self.t("my");
                let e = *self.pick(&["Aria", "MyISAM", "MyISAM", "InnoDB"]);
                match self.r(4) {
                    0 => Op::new("ALTER TABLE ENGINE", format!("ALTER TABLE {t} ENGINE={e};\n")),
                    1 => Op::new("RENAME TABLE swap", "RENAME TABLE sw1 TO sw_tmp, sw2 TO sw1, sw_tmp TO sw2;\n"),
                    2 => {
                        let table = *self.pick(ALTERABLE);
                        let t = self.t(table);
                        Op::new("ALTER TABLE options", format!("ALTER TABLE {t} COMMENT 'c{f}', FORCE;\n"))
                    }
                    _ => {
                        let table = *self.pick(ALTERABLE);
                        let t = self.t(table);
                        let stmt = *self.pick(&["ANALYZE TABLE", "OPTIMIZE TABLE", "CHECK TABLE"]);
                        Op::new("admin statement", format!("{stmt} {t};\n"))
                    }
                }
            }
            25 => {
                // DDL written by an euckr client: a default and a comment in EUC-KR bytes
                let table = *self.pick(&["kr", "items", "comp"]);
                let t = self.t(table);
                let col = format!("k{f}");
                let (_, a) = *self.pick(KO);
                let (_, b) = *self.pick(KO);
                let charset = if self.chance(50) { "euckr" } else { "utf8mb4" };
                let mut s = format!("SET NAMES euckr;\nALTER TABLE {t} ADD COLUMN {col} VARCHAR(16) CHARACTER SET {charset} DEFAULT '").into_bytes();
                s.extend_from_slice(a);
                s.extend_from_slice(b"' COMMENT '");
                s.extend_from_slice(b);
                s.extend_from_slice(b"';\n");
                Op::new("SET NAMES euckr DDL", s).with(Effect::AddCol(Extra { table, col, ty: if charset == "euckr" { 3 } else { 2 } }))
            }
            _ => Op::new("CREATE TABLE IF NOT EXISTS / DROP IF EXISTS", format!(
                "CREATE TABLE IF NOT EXISTS bulk (id INT PRIMARY KEY);\nDROP TABLE IF EXISTS no_such_{f};\nDROP VIEW IF EXISTS no_view_{f};\n")),
        }
    }

    fn create_table(&mut self, f: u64) -> Op {
        if self.temps.len() >= 4 {
            let name = self.temps[0].name.clone();
            return Op::new("DROP TABLE", format!("DROP TABLE {name};\n"))
                .with(Effect::DropTemps(vec![name]));
        }
        let name = format!("t_{f}");
        let n = 20 + self.r(400);
        let (m, k) = (2 + self.r(9), self.r(2));
        let (kind, sql, keyed) = match self.r(5) {
            0 => ("CREATE TABLE (key) + rows", format!(
                "CREATE TABLE {name} (id INT NOT NULL PRIMARY KEY, v VARCHAR(30), w INT) ENGINE=InnoDB;\nINSERT INTO {name} SELECT seq, CONCAT('v', seq), seq % 7 FROM seq_1_to_{n};\n"), true),
            1 => ("CREATE TABLE (no key) + rows", format!(
                "CREATE TABLE {name} (id INT, v VARCHAR(30), w INT);\nINSERT INTO {name} SELECT seq % 50, CONCAT('v', seq % 3), seq % 7 FROM seq_1_to_{n};\n"), false),
            2 => ("CREATE TABLE ... AS SELECT (no key)", format!(
                "CREATE TABLE {name} AS SELECT id, code AS v, qty AS w FROM items WHERE id % {m} = {k};\n"), false),
            3 => ("CREATE TABLE ... AS SELECT (key)", format!(
                "CREATE TABLE {name} (PRIMARY KEY (id)) AS SELECT id, code AS v, qty AS w FROM items WHERE id % {m} = {k};\n"), true),
            _ => ("CREATE TABLE ... AS SELECT in a transaction", format!(
                "BEGIN;\nUPDATE items SET qty = qty + 1 WHERE id = {k};\nCREATE TABLE {name} (id INT NOT NULL, v VARCHAR(30), w INT, UNIQUE KEY (id)) AS SELECT id, name AS v, 0 AS w FROM {} WHERE id < {n};\nCOMMIT;\n", self.t("kr")), true),
        };
        Op::new(kind, sql).with(Effect::NewTemp(Temp { name, keyed }))
    }

    fn view_ddl(&mut self, f: u64) -> Op {
        if !self.views.is_empty() && self.chance(40) {
            let i_ = self.r(self.views.len() as u64) as usize;
            let v = self.views[i_].clone();
            return match self.r(3) {
                0 => Op::new("DROP VIEW", format!("DROP VIEW {v};\n")).with(Effect::View(v, false)),
                1 => Op::new("ALTER VIEW", format!("ALTER VIEW {v} AS SELECT id, qty FROM items WHERE qty < {};\n", self.r(50))),
                _ => Op::new("CREATE OR REPLACE VIEW", format!(
                    "SET sql_mode = 'PIPES_AS_CONCAT';\nCREATE OR REPLACE VIEW {v} AS SELECT a.code, a.label || '#' || COUNT(*) AS n FROM fk_a a JOIN fk_b b ON b.a_code = a.code GROUP BY a.code, a.label;\n")),
            };
        }
        if self.views.len() >= 4 {
            return self.create_table(f);
        }
        let v = format!("v_{f}");
        if self.chance(30) {
            let (_, ko) = *self.pick(KO);
            let mut s = format!("SET NAMES euckr;\nCREATE VIEW {v} AS SELECT id, '").into_bytes();
            s.extend_from_slice(ko);
            s.extend_from_slice(b"' AS label, note FROM items WHERE id < 100;\n");
            return Op::new("CREATE VIEW (euckr)", s).with(Effect::View(v, true));
        }
        Op::new("CREATE VIEW (PIPES_AS_CONCAT)", format!(
            "SET sql_mode = 'PIPES_AS_CONCAT';\nCREATE VIEW {v} AS SELECT id, code || '/' || qty AS label FROM items WHERE qty > {};\n", self.r(90)))
            .with(Effect::View(v, true))
    }

    /// Record what a statement that the source accepted changed.
    fn applied(&mut self, e: Effect) {
        match e {
            Effect::None => {}
            Effect::AddCol(x) => self.extras.push(x),
            Effect::DropCol(i) => {
                self.extras.remove(i);
            }
            Effect::ModCol(i, ty) => self.extras[i].ty = ty,
            Effect::RenameCol(i, to) => self.extras[i].col = to,
            Effect::AddIdx(t, n) => self.indexes.push((t, n)),
            Effect::DropIdx(i) => {
                self.indexes.remove(i);
            }
            Effect::Rename(t, Some(to)) => {
                self.renamed.insert(t, to);
            }
            Effect::Rename(t, None) => {
                self.renamed.remove(t);
            }
            Effect::NewTemp(t) => self.temps.push(t),
            Effect::DropTemps(names) => self.temps.retain(|t| !names.contains(&t.name)),
            Effect::TempKey(n, keyed) => {
                for t in self.temps.iter_mut().filter(|t| t.name == n) {
                    t.keyed = keyed;
                }
            }
            Effect::RenameTemp(from, to) => {
                for t in self.temps.iter_mut().filter(|t| t.name == from) {
                    t.name = to.clone();
                }
            }
            Effect::View(v, true) => self.views.push(v),
            Effect::View(v, false) => self.views.retain(|x| *x != v),
            Effect::Event(e, true) => self.events.push(e),
            Effect::Event(e, false) => self.events.retain(|x| *x != e),
            Effect::Proc(p, true) => self.procs.push(p),
            Effect::Proc(p, false) => self.procs.retain(|x| *x != p),
            Effect::GenCol(on) => self.gcol = on,
            Effect::Seq2(on) => self.seq2 = on,
        }
    }
}

#[derive(Default, Debug)]
struct WriterStats {
    steps: u64,
    failed: u64,
    ddl: u64,
    big: u64,
    kinds: BTreeMap<&'static str, (u64, u64)>,
}

/// Run the writer until `stop`; every statement and its outcome go to `log`.
fn writer(port: u16, seed: u64, stop: Arc<AtomicBool>, log: PathBuf) -> WriterStats {
    let src = Server::attach("soak-writer", port);
    let mut gen = Gen::new(seed);
    let mut stats = WriterStats::default();
    let mut out = std::io::BufWriter::new(std::fs::File::create(log).expect("writer log"));
    let t0 = Instant::now();
    // pauses between statements from their own generator: a debug-build follower on this
    // 2-core machine keeps within a catch-up of about the writer's time
    let mut pause = Rng::new(seed ^ 0x5eed);
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(pause.next(40)));
        let op = gen.next_op();
        let mut sql = b"USE soak;\n".to_vec();
        sql.extend_from_slice(&op.sql);
        let res = src.try_script(&sql);
        stats.steps += 1;
        let e = stats.kinds.entry(op.kind).or_default();
        e.0 += 1;
        if op.kind.starts_with("large") {
            stats.big += 1;
        }
        if op.ddl {
            stats.ddl += 1;
        }
        let status = match &res {
            Ok(_) => "ok".to_string(),
            Err(err) => {
                stats.failed += 1;
                e.1 += 1;
                format!("error: {}", err.lines().next().unwrap_or(""))
            }
        };
        let _ = writeln!(
            out,
            "-- step {} at {} ms [{}] {status}",
            stats.steps,
            t0.elapsed().as_millis(),
            op.kind
        );
        let _ = out.write_all(&sql);
        if res.is_ok() {
            gen.applied(op.effect);
        }
    }
    let _ = out.flush();
    stats
}

/// Stops the writer when dropped (also when the test panics).
struct StopOnDrop(Arc<AtomicBool>);
impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A child process killed (-9) when dropped.
struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into())
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}")),
        _ => default,
    }
}

/// The last `lines` lines of a log, without terminal colour codes.
fn tail(path: &Path, lines: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let mut plain = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // ESC [ ... m
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    let v: Vec<&str> = plain.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Spawn `migrate args` with its stderr in `log`.
fn spawn(src: &Server, dst: &Server, state: &Path, args: &[&str], log: &Path) -> Killed {
    let err = std::fs::File::create(log).expect("log file");
    Killed(
        migrate_cmd(&src.url(), &dst.url(), state, args)
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawn migrate"),
    )
}

/// Wait up to `ms` for the child; Some(status) if it exited by itself.
fn wait_for(child: &mut Killed, ms: u64) -> Option<std::process::ExitStatus> {
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(ms) {
        if let Some(s) = child.0.try_wait().expect("try_wait") {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

#[test]
fn soak() {
    let seed = env_u64("SOAK_SEED", DEFAULT_SEED);
    let secs = env_u64("SOAK_SECONDS", DEFAULT_SECONDS);
    eprintln!("soak: seed={seed} seconds={secs}");
    let work = root()
        .join("target")
        .join("soak")
        .join(format!("seed-{seed}"));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("create target/soak");
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(seed, secs, &work)));
    let failure = match res {
        Ok(Ok(())) => None,
        Ok(Err(msg)) => Some(msg),
        Err(p) => Some(panic_text(&*p)),
    };
    match failure {
        None => {
            if std::env::var("SOAK_KEEP").is_err() {
                let _ = std::fs::remove_dir_all(&work);
            }
        }
        Some(msg) => {
            let _ = std::fs::write(work.join("failure.txt"), &msg);
            let replay = format!(
                "SOAK_SEED={seed} SOAK_SECONDS={secs} cargo test --test soak -- --nocapture   (or scripts/soak.sh {secs} {seed})"
            );
            panic!(
                "SOAK FAILED seed={seed} seconds={secs}: {msg}\nwriter statements and engine logs: {}\nreplay: {replay}",
                work.display()
            )
        }
    }
}

fn run(seed: u64, secs: u64, work: &Path) -> Result<(), String> {
    let t0 = Instant::now();
    // SOAK_GENERAL_LOG=1: the source's general query log goes to target/soak/seed-N/general.log
    let general = format!("--general-log-file={}", work.join("general.log").display());
    let mut src_args: Vec<&str> = SOURCE_ARGS.to_vec();
    if std::env::var("SOAK_GENERAL_LOG").is_ok_and(|v| v == "1") {
        src_args.extend(["--general-log=1", general.as_str()]);
    }
    let src = Server::start("soak-src", &src_args);
    let dst = Server::target("soak-dst");
    let res = drive(&src, &dst, seed, secs, work, t0);
    if res.is_err() {
        // the source's binlog, decoded, for finding the failing GTID
        if let Ok(out) = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "mariadb-binlog --no-defaults --base64-output=decode-rows -vv {}/data/mysql-bin.[0-9]*",
                src.dir.display()
            ))
            .output()
        {
            let _ = std::fs::write(work.join("source-binlog.txt"), out.stdout);
        }
    }
    res
}

fn drive(
    src: &Server,
    dst: &Server,
    seed: u64,
    secs: u64,
    work: &Path,
    t0: Instant,
) -> Result<(), String> {
    let (src, dst) = (src, dst);
    src.script(SCHEMA.as_bytes());
    let state = work.join("state.sqlite");
    eprintln!("soak: servers up and seeded in {:.1?}", t0.elapsed());

    let stop = Arc::new(AtomicBool::new(false));
    let _stop_guard = StopOnDrop(stop.clone());
    let writer: JoinHandle<WriterStats> = {
        let (port, stop, log) = (src.port, stop.clone(), work.join("writer.sql"));
        std::thread::spawn(move || writer(port, seed, stop, log))
    };
    let start = Instant::now();
    // the engine's own random choices, apart from the writer's
    let mut rng = Rng::new(seed ^ 0x9e37_79b9_7f4a_7c15);

    // snapshot: random threads and chunk size, killed 0-2 times, resumed with the same state
    let threads = (1 + rng.next(4)).to_string();
    let chunk_rows = (50 + rng.next(1951)).to_string();
    let kills = rng.next(3);
    let args = [
        "snapshot",
        "--databases",
        DB,
        "--threads",
        &threads,
        "--chunk-rows",
        &chunk_rows,
    ];
    let mut attempt = 0;
    let mut snapshot_kills = 0;
    loop {
        let log = work.join(format!("snapshot-{attempt}.log"));
        let mut child = spawn(src, dst, &state, &args, &log);
        let status = if attempt < kills {
            match wait_for(&mut child, rng.next(2500)) {
                Some(s) => Some(s),
                None => {
                    let _ = child.0.kill();
                    snapshot_kills += 1;
                    None
                }
            }
        } else {
            match wait_for(&mut child, 300_000) {
                Some(s) => Some(s),
                None => {
                    return Err(format!(
                        "snapshot (--threads {threads} --chunk-rows {chunk_rows}) ran for more than 5 minutes:\n{}",
                        tail(&log, 30)
                    ))
                }
            }
        };
        let status = match status {
            Some(s) => s,
            None => child.0.wait().expect("wait"),
        };
        if status.success() {
            break;
        }
        if status.code().is_some() {
            return Err(format!(
                "snapshot (--threads {threads} --chunk-rows {chunk_rows}, attempt {attempt}) exited with {status}:\n{}",
                tail(&log, 30)
            ));
        }
        attempt += 1;
        if attempt > 10 {
            return Err("snapshot did not finish in 10 attempts".into());
        }
    }
    eprintln!(
        "soak: snapshot --threads {threads} --chunk-rows {chunk_rows} done in {:.1?} after {snapshot_kills} kill(s)",
        start.elapsed()
    );

    // follow, killed -9 at random intervals until the time is up
    let mut follow_kills = 0;
    while start.elapsed() < Duration::from_secs(secs) || follow_kills < 2 {
        if writer.is_finished() {
            break;
        }
        let log = work.join(format!("follow-{follow_kills}.log"));
        let mut child = spawn(src, dst, &state, &["follow", "--databases", DB], &log);
        if let Some(s) = wait_for(&mut child, 300 + rng.next(2701)) {
            return Err(format!(
                "follow exited by itself with {s} (run {follow_kills}):\n{}",
                tail(&log, 30)
            ));
        }
        drop(child);
        follow_kills += 1;
    }
    stop.store(true, Ordering::SeqCst);
    let stats = writer
        .join()
        .map_err(|p| format!("the writer thread panicked: {}", panic_text(&*p)))?;
    let write_time = start.elapsed();

    let t = Instant::now();
    let out = migrate(
        &src.url(),
        &dst.url(),
        &state,
        &["follow", "--until-caught-up", "--databases", DB],
    );
    std::fs::write(work.join("catch-up.log"), &out.stderr).ok();
    if !out.status.success() {
        return Err(format!(
            "follow --until-caught-up exited with {}:\n{}",
            out.status,
            tail(&work.join("catch-up.log"), 30)
        ));
    }
    let catch_up = t.elapsed();
    compare(src, dst)?;
    let mut kinds: Vec<String> = stats
        .kinds
        .iter()
        .map(|(k, (n, f))| format!("{k} {n}/{f}"))
        .collect();
    kinds.sort();
    eprintln!(
        "soak seed={seed}: clean. {} writer steps in {write_time:.1?} ({} failed on the source, {} DDL, {} large transactions); \
         snapshot killed {snapshot_kills}x, follow killed {follow_kills}x; catch-up {catch_up:.1?}; total {:.1?}\n  steps/failed by kind: {}",
        stats.steps,
        stats.failed,
        stats.ddl,
        stats.big,
        t0.elapsed(),
        kinds.join(", ")
    );
    Ok(())
}

/// One query's result on both sides.
fn same(src: &Server, dst: &Server, what: &str, q: &str, problems: &mut Vec<String>) {
    let (a, b) = (src.sql(q), dst.sql(q));
    if a != b {
        problems.push(format!("{what} differs:\n--- source\n{a}\n--- target\n{b}"));
    }
}

/// SHOW CREATE TABLE of every table and view in a UTC session (a TIMESTAMP default is shown
/// in the session's time zone, and the two servers' defaults differ), AUTO_INCREMENT removed.
fn schema(s: &Server) -> BTreeMap<String, String> {
    let tables = s.sql(&format!(
        "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{DB}' ORDER BY TABLE_NAME"
    ));
    let mut out = BTreeMap::new();
    for t in tables.lines() {
        let create = s.sql(&format!(
            "SET time_zone = '+00:00'; SHOW CREATE TABLE `{DB}`.`{}`",
            t.replace('`', "``")
        ));
        let cleaned: String = create
            .split(' ')
            .filter(|w| !w.starts_with("AUTO_INCREMENT="))
            .collect::<Vec<_>>()
            .join(" ");
        out.insert(t.to_string(), cleaned);
    }
    out
}

fn compare(src: &Server, dst: &Server) -> Result<(), String> {
    let mut problems = Vec::new();
    same(
        src,
        dst,
        "the list of tables and views",
        &format!("SELECT TABLE_NAME, TABLE_TYPE, ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{DB}' ORDER BY TABLE_NAME"),
        &mut problems,
    );
    same(
        src,
        dst,
        "the database definition",
        &format!("SHOW CREATE DATABASE {DB}"),
        &mut problems,
    );
    same(
        src,
        dst,
        "events (status aside: the target's are disabled until cutover)",
        &format!("SELECT EVENT_NAME, EVENT_DEFINITION, INTERVAL_VALUE, INTERVAL_FIELD FROM information_schema.EVENTS WHERE EVENT_SCHEMA = '{DB}' ORDER BY EVENT_NAME"),
        &mut problems,
    );
    same(
        src,
        dst,
        "routines",
        &format!("SELECT ROUTINE_NAME, ROUTINE_TYPE, ROUTINE_DEFINITION, SQL_MODE FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = '{DB}' ORDER BY ROUTINE_NAME"),
        &mut problems,
    );
    let seqs = src.sql(&format!(
        "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{DB}' AND TABLE_TYPE = 'SEQUENCE' ORDER BY TABLE_NAME"
    ));
    for s in seqs.lines() {
        same(
            src,
            dst,
            &format!("sequence {s}"),
            &format!("SELECT * FROM {DB}.`{s}`"),
            &mut problems,
        );
    }
    let (a, b) = (schema(src), schema(dst));
    for (t, def) in &a {
        match b.get(t) {
            Some(d) if d == def => {}
            Some(d) => problems.push(format!(
                "definition of {t} differs:\n--- source\n{def}\n--- target\n{d}"
            )),
            None => problems.push(format!("{t} is missing on the target")),
        }
    }
    for t in b.keys().filter(|t| !a.contains_key(*t)) {
        problems.push(format!("{t} is on the target only"));
    }
    // rows, as a multiset per table (keyless tables have duplicates and no order)
    let (da, db) = (src.dump_data(DB), dst.dump_data(DB));
    if da != db {
        let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
        for l in da.lines() {
            *counts.entry(l).or_default() += 1;
        }
        for l in db.lines() {
            *counts.entry(l).or_default() -= 1;
        }
        let mut by_table: BTreeMap<String, (Vec<String>, Vec<String>, usize, usize)> =
            BTreeMap::new();
        for (l, n) in counts.iter().filter(|(_, n)| **n != 0) {
            let table = l
                .strip_prefix("INSERT INTO `")
                .and_then(|r| r.split('`').next())
                .unwrap_or("?")
                .to_string();
            let e = by_table.entry(table).or_default();
            let cut = format!(
                "{}{}",
                &l[..l.len().min(400)],
                if n.abs() > 1 {
                    format!("  (x{})", n.abs())
                } else {
                    String::new()
                }
            );
            if *n > 0 {
                e.2 += *n as usize;
                if e.0.len() < 8 {
                    e.0.push(cut);
                }
            } else {
                e.3 += n.unsigned_abs() as usize;
                if e.1.len() < 8 {
                    e.1.push(cut);
                }
            }
        }
        for (t, (only_a, only_b, na, nb)) in by_table {
            problems.push(format!(
                "rows of {t} differ: {na} only on the source, {nb} only on the target\n--- only on source\n{}\n--- only on target\n{}",
                only_a.join("\n"),
                only_b.join("\n")
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "target differs from source after catch-up:\n{}",
            problems.join("\n\n")
        ))
    }
}
