//! Table descriptions read from information_schema: columns with their kinds and charsets,
//! the key used for chunking and for applying row changes, engine and size estimates.

pub mod ddl;
pub mod keyset;

use crate::db::{query_strings, quote};
use crate::error::{Error, Result};
use mysql_async::Conn;

/// How a column's values are read, compared and written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Int {
        unsigned: bool,
        bytes: u8,
    },
    Decimal,
    Float,
    Double,
    Bit,
    Year,
    Date,
    Time,
    DateTime,
    Timestamp,
    /// Character string; the charset is in `Column::charset`.
    Text,
    /// Binary string; `pad` is the fixed length of BINARY(n).
    Binary {
        pad: Option<usize>,
    },
    Enum,
    Set,
    Geometry,
    Inet4,
    Inet6,
    Uuid,
}

impl Kind {
    /// The bytes of a type stored as a fixed binary value and shown as text (INET4, INET6,
    /// UUID): read as `CAST(c AS BINARY(n))`, written as those bytes.
    pub fn native_binary_width(&self) -> Option<usize> {
        match self {
            Kind::Inet4 => Some(4),
            Kind::Inet6 | Kind::Uuid => Some(16),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Column {
    pub name: String,
    pub kind: Kind,
    pub charset: Option<String>,
    pub nullable: bool,
    /// VIRTUAL or STORED generated: present in row images, never written.
    pub generated: bool,
    pub auto_increment: bool,
    /// Fractional-second digits of a TIME, DATETIME or TIMESTAMP column (0 otherwise): the
    /// binlog does not carry them for columns in MariaDB 5.3's format (`binlog::rows`).
    pub fsp: u8,
    /// COLUMN_TYPE, lowercase (`decimal(12,4) unsigned`, `varchar(10) /*M!100301 COMPRESSED*/`):
    /// what a binlog table map must say of the column (`TableLayout::check_types`).
    pub column_type: String,
    /// CHARACTER_OCTET_LENGTH: the most bytes a string column holds.
    pub octet_length: Option<u64>,
}

/// A foreign key of another table that references this one with an action the binlog does
/// not carry (ON DELETE/UPDATE CASCADE or SET NULL).
#[derive(Clone, Debug)]
pub struct ChildFk {
    pub db: String,
    pub table: String,
    pub child_columns: Vec<String>,
    pub parent_columns: Vec<String>,
    pub on_delete: String,
    pub on_update: String,
}

#[derive(Clone, Debug)]
pub struct Table {
    pub db: String,
    pub name: String,
    pub engine: String,
    pub columns: Vec<Column>,
    /// Positions in `columns` of the primary key, or else of a NOT NULL unique key.
    pub key: Vec<usize>,
    pub key_name: Option<String>,
    pub rows_estimate: u64,
    pub bytes_estimate: u64,
    pub avg_row_length: u64,
    /// Cascading foreign keys of other tables that reference this one.
    pub children: Vec<ChildFk>,
    /// An ON UPDATE CASCADE foreign key of this table changes its chunking key: the binlog
    /// does not carry those moves, so the snapshot reads this table in one consistent
    /// snapshot (see snapshot/copy.rs).
    pub key_moved_by_cascade: bool,
    /// A foreign key of this table has a CASCADE or SET NULL action: InnoDB changes its rows
    /// without binlog events, so the snapshot reads it in one consistent snapshot.
    pub cascade_child: bool,
    /// A SEQUENCE (one row; applied as "last image wins").
    pub sequence: bool,
    /// WITH SYSTEM VERSIONING (not supported: `check` blocks it).
    pub versioned: bool,
    /// A foreign key of some table references this one (its indexes stay in its CREATE).
    pub referenced_by_fk: bool,
}

impl Table {
    pub fn has_cascades(&self) -> bool {
        !self.children.is_empty()
    }
    /// Read in one consistent snapshot for the whole table (then replayed only from that
    /// snapshot's position): rows that change without binlog events (foreign-key cascades)
    /// or rows that have no key to chunk by.
    pub fn needs_single_snapshot(&self) -> bool {
        self.key_moved_by_cascade || self.cascade_child || !self.has_key()
    }
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
    pub fn quoted(&self) -> String {
        quote::table(&self.db, &self.name)
    }
    pub fn full_name(&self) -> String {
        format!("{}.{}", self.db, self.name)
    }
    pub fn transactional(&self) -> bool {
        self.engine.eq_ignore_ascii_case("InnoDB")
    }
    /// Where the table's rows are, by its engine.
    pub fn storage(&self) -> Storage {
        storage_of(&self.engine)
    }
    pub fn has_key(&self) -> bool {
        !self.key.is_empty()
    }
    /// Columns that are written (generated columns are not).
    pub fn writable(&self) -> impl Iterator<Item = (usize, &Column)> {
        self.columns
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.generated)
    }
}

#[cfg(test)]
impl Table {
    /// A table for unit tests: `db.name` with these columns (NOT NULL, InnoDB), keyed by `key`.
    pub fn for_test(db: &str, name: &str, columns: &[(&str, Kind)], key: &[usize]) -> Table {
        Table {
            db: db.into(),
            name: name.into(),
            engine: "InnoDB".into(),
            columns: columns
                .iter()
                .map(|(n, k)| Column {
                    name: n.to_string(),
                    kind: k.clone(),
                    charset: Some("utf8mb4".into()),
                    nullable: false,
                    generated: false,
                    auto_increment: false,
                    fsp: 0,
                    column_type: String::new(),
                    octet_length: None,
                })
                .collect(),
            key: key.to_vec(),
            key_name: Some("PRIMARY".into()),
            rows_estimate: 0,
            bytes_estimate: 0,
            avg_row_length: 0,
            children: Vec::new(),
            key_moved_by_cascade: false,
            cascade_child: false,
            sequence: false,
            versioned: false,
            referenced_by_fk: false,
        }
    }
}

/// Where a table's rows are stored, by its engine: what the snapshot copies of it and what
/// follow does with its row events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// In the table itself, on this server: copied and applied.
    Here,
    /// A MERGE (MRG_MyISAM) table: its rows are those of the MyISAM tables it unions, which
    /// are copied themselves; a change made through it is logged against it alone.
    Union,
    /// A FEDERATED table: its rows are on the server its CONNECTION names, which the source
    /// changed itself; writing them through the target's table would change them again.
    Remote,
    /// An engine migrate does not know where it keeps its rows (CONNECT, SPIDER, S3, ...).
    Unknown,
}

/// The storage of a table with engine `engine` (as information_schema names it).
pub fn storage_of(engine: &str) -> Storage {
    match engine.to_ascii_lowercase().as_str() {
        "innodb" | "myisam" | "aria" | "memory" | "heap" | "csv" | "archive" | "blackhole"
        | "rocksdb" | "mroonga" => Storage::Here,
        "mrg_myisam" => Storage::Union,
        "federated" => Storage::Remote,
        // also an empty name: a table whose engine is not loaded is listed without one
        _ => Storage::Unknown,
    }
}

pub fn kind_of(data_type: &str, column_type: &str) -> Option<Kind> {
    let unsigned = column_type.contains("unsigned");
    Some(match data_type {
        "tinyint" => Kind::Int { unsigned, bytes: 1 },
        "smallint" => Kind::Int { unsigned, bytes: 2 },
        "mediumint" => Kind::Int { unsigned, bytes: 3 },
        "int" => Kind::Int { unsigned, bytes: 4 },
        "bigint" => Kind::Int { unsigned, bytes: 8 },
        "decimal" => Kind::Decimal,
        "float" => Kind::Float,
        "double" => Kind::Double,
        "bit" => Kind::Bit,
        "year" => Kind::Year,
        "date" => Kind::Date,
        "time" => Kind::Time,
        "datetime" => Kind::DateTime,
        "timestamp" => Kind::Timestamp,
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "json" => Kind::Text,
        "binary" => {
            let n = column_type
                .trim_start_matches("binary(")
                .trim_end_matches(')')
                .parse()
                .ok();
            Kind::Binary { pad: n }
        }
        "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => Kind::Binary { pad: None },
        "enum" => Kind::Enum,
        "set" => Kind::Set,
        "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring"
        | "multipolygon" | "geometrycollection" => Kind::Geometry,
        "inet4" => Kind::Inet4,
        "inet6" => Kind::Inet6,
        "uuid" => Kind::Uuid,
        _ => return None,
    })
}

/// The `n` of `time(n)`, `datetime(n)`, `timestamp(n)` (a COLUMN_TYPE); 0 for other kinds.
pub fn fractional_digits(kind: &Kind, column_type: &str) -> u8 {
    if !matches!(kind, Kind::Time | Kind::DateTime | Kind::Timestamp) {
        return 0;
    }
    column_type
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .and_then(|(n, _)| n.trim().parse::<u8>().ok())
        .map_or(0, |n| n.min(6))
}

/// The statement listing the tables (base tables, sequences, system-versioned tables; views
/// are schema objects, `ddl::objects`) of `dbs`, or with None of every non-system database;
/// `tables_from` reads its rows. `dbs` must not be empty.
pub fn tables_sql(dbs: Option<&[String]>) -> String {
    let (op, list): (&str, Vec<String>) = match dbs {
        Some(dbs) => ("IN", dbs.iter().map(|d| quote::string(d)).collect()),
        None => (
            "NOT IN",
            crate::config::SYSTEM_DATABASES
                .iter()
                .map(|d| quote::string(d))
                .collect(),
        ),
    };
    format!(
        "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA {op} ({}) \
         AND TABLE_TYPE IN ('BASE TABLE', 'SEQUENCE', 'SYSTEM VERSIONED') ORDER BY TABLE_NAME",
        list.join(", ")
    )
}

/// (database, table) of `dbs` from the rows of `tables_sql`, ordered as `dbs`, then by name.
pub fn tables_from(rows: Vec<Vec<Option<String>>>, dbs: &[String]) -> Vec<(String, String)> {
    let mut by_db: std::collections::HashMap<String, Vec<String>> = Default::default();
    for r in rows {
        let mut r = r.into_iter();
        if let (Some(Some(d)), Some(Some(t))) = (r.next(), r.next()) {
            by_db.entry(d).or_default().push(t);
        }
    }
    dbs.iter()
        .flat_map(|d| {
            by_db
                .remove(d)
                .unwrap_or_default()
                .into_iter()
                .map(move |t| (d.clone(), t))
        })
        .collect()
}

/// (database, table) of every table in `dbs`, in one query (`tables_sql`).
pub async fn list_tables(conn: &mut Conn, dbs: &[String]) -> Result<Vec<(String, String)>> {
    if dbs.is_empty() {
        return Ok(Vec::new());
    }
    Ok(tables_from(
        query_strings(conn, &tables_sql(Some(dbs))).await?,
        dbs,
    ))
}

/// The statement listing the databases (`databases_from` reads its rows).
pub const DATABASES_SQL: &str =
    "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA ORDER BY SCHEMA_NAME";

/// The non-system databases in the rows of `DATABASES_SQL`.
pub fn databases_from(rows: Vec<Vec<Option<String>>>) -> Vec<String> {
    rows.into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
        .filter(|d| !crate::config::SYSTEM_DATABASES.contains(&d.as_str()))
        .collect()
}

/// Names of the non-system databases.
pub async fn list_databases(conn: &mut Conn) -> Result<Vec<String>> {
    Ok(databases_from(query_strings(conn, DATABASES_SQL).await?))
}

/// Describe one table. Unknown column types are an error naming the column.
pub async fn describe(conn: &mut Conn, db: &str, name: &str) -> Result<Table> {
    // one round trip for the five queries (a describe over the VPN is otherwise five)
    let sets = crate::db::query_each(
        conn,
        &describe_queries(db, name),
        &format!("describing {db}.{name}"),
    )
    .await?;
    describe_from(db, name, sets)
}

/// The queries a description reads, to be sent in one round trip (`describe_from` reads
/// their result sets).
pub fn describe_queries(db: &str, name: &str) -> Vec<String> {
    let (qdb, qname) = (quote::string(db), quote::string(name));
    vec![
        format!(
            "SELECT ENGINE, IFNULL(TABLE_ROWS,0), IFNULL(DATA_LENGTH,0), IFNULL(AVG_ROW_LENGTH,0), TABLE_TYPE FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = {qdb} AND TABLE_NAME = {qname}"
        ),
        format!(
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, CHARACTER_SET_NAME, IS_NULLABLE, IS_GENERATED, EXTRA, CHARACTER_OCTET_LENGTH \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = {qdb} AND TABLE_NAME = {qname} ORDER BY ORDINAL_POSITION"
        ),
        unique_keys_sql(db, name),
        children_sql(db, name),
        own_foreign_keys_sql(db, name),
    ]
}

/// The table described by the result sets of `describe_queries`.
pub fn describe_from(db: &str, name: &str, sets: Vec<Vec<Vec<Option<String>>>>) -> Result<Table> {
    let mut sets = sets.into_iter();
    let mut next = || sets.next().unwrap_or_default();
    let (trows, crows, keys, children, own) = (next(), next(), next(), next(), next());
    let t = trows.into_iter().next().ok_or_else(|| {
        Error::definite(
            format!("table {db}.{name} not found"),
            "check --databases and --exclude",
        )
    })?;
    let num = |v: &Option<String>| {
        v.as_deref()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let mut columns = Vec::new();
    for r in crows {
        let get = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
        let (cname, data_type, column_type) =
            (get(0), get(1).to_lowercase(), get(2).to_lowercase());
        let kind = kind_of(&data_type, &column_type).ok_or_else(|| {
            Error::definite(
                format!("{db}.{name}: column `{cname}` has type {column_type} that migrate cannot copy yet"),
                format!("exclude the table with --exclude '{db}.{name}'"),
            )
        })?;
        columns.push(Column {
            name: cname,
            charset: r.get(3).cloned().flatten(),
            nullable: get(4) == "YES",
            generated: get(5) == "ALWAYS",
            auto_increment: get(6).contains("auto_increment"),
            fsp: fractional_digits(&kind, &column_type),
            kind,
            octet_length: r.get(7).cloned().flatten().and_then(|n| n.parse().ok()),
            column_type,
        });
    }
    let (key, key_name) = choose_key(keys, &columns);
    let (children, referenced_by_fk) = cascading_children(children);
    let key_names: Vec<&str> = key.iter().map(|&i| columns[i].name.as_str()).collect();
    let (moved, cascade_child) = own_foreign_keys(own);
    let key_moved_by_cascade = moved.iter().any(|c| key_names.contains(&c.as_str()));
    let table_type = t.get(4).cloned().flatten().unwrap_or_default();
    Ok(Table {
        db: db.to_string(),
        name: name.to_string(),
        engine: t[0].clone().unwrap_or_default(),
        columns,
        key,
        key_name,
        rows_estimate: num(&t[1]),
        bytes_estimate: num(&t[2]),
        avg_row_length: num(&t[3]),
        children,
        key_moved_by_cascade,
        cascade_child,
        sequence: table_type == "SEQUENCE",
        versioned: table_type == "SYSTEM VERSIONED",
        referenced_by_fk,
    })
}

/// The primary key, else the first unique key whose columns are all NOT NULL and whole
/// (no prefix), else none.
fn unique_keys_sql(db: &str, name: &str) -> String {
    format!(
        "SELECT INDEX_NAME, COLUMN_NAME, SUB_PART FROM information_schema.STATISTICS \
         WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {} AND NON_UNIQUE = 0 \
         ORDER BY INDEX_NAME = 'PRIMARY' DESC, INDEX_NAME, SEQ_IN_INDEX",
        quote::string(db),
        quote::string(name)
    )
}

/// The primary key, or else the first unique key whose columns are all NOT NULL and whole.
fn choose_key(rows: Vec<Vec<Option<String>>>, columns: &[Column]) -> (Vec<usize>, Option<String>) {
    let mut indexes: Vec<(String, Vec<usize>, bool)> = Vec::new();
    for r in rows {
        let iname = r[0].clone().unwrap_or_default();
        let cname = r[1].clone().unwrap_or_default();
        let pos = columns.iter().position(|c| c.name == cname);
        let usable = pos.is_some_and(|p| !columns[p].nullable) && r[2].is_none();
        match indexes.last_mut() {
            Some((n, cols, ok)) if *n == iname => {
                cols.extend(pos);
                *ok &= usable;
            }
            _ => indexes.push((iname, pos.into_iter().collect(), usable)),
        }
    }
    indexes
        .into_iter()
        .find(|(_, _, ok)| *ok)
        .map(|(n, c, _)| (c, Some(n)))
        .unwrap_or_default()
}

/// Foreign keys of other tables referencing `db.name` with CASCADE or SET NULL actions, and
/// whether any foreign key references it at all.
fn children_sql(db: &str, name: &str) -> String {
    format!(
        "SELECT rc.CONSTRAINT_SCHEMA, rc.TABLE_NAME, rc.CONSTRAINT_NAME, rc.DELETE_RULE, rc.UPDATE_RULE, \
         k.COLUMN_NAME, k.REFERENCED_COLUMN_NAME \
         FROM information_schema.REFERENTIAL_CONSTRAINTS rc JOIN information_schema.KEY_COLUMN_USAGE k \
         ON k.CONSTRAINT_SCHEMA = rc.CONSTRAINT_SCHEMA AND k.CONSTRAINT_NAME = rc.CONSTRAINT_NAME AND k.TABLE_NAME = rc.TABLE_NAME \
         WHERE rc.UNIQUE_CONSTRAINT_SCHEMA = {} AND rc.REFERENCED_TABLE_NAME = {} \
         ORDER BY rc.CONSTRAINT_SCHEMA, rc.TABLE_NAME, rc.CONSTRAINT_NAME, k.ORDINAL_POSITION",
        quote::string(db),
        quote::string(name)
    )
}

/// The cascading foreign keys of other tables that reference this one, and whether any foreign
/// key references it at all.
fn cascading_children(rows: Vec<Vec<Option<String>>>) -> (Vec<ChildFk>, bool) {
    let mut out: Vec<(String, ChildFk)> = Vec::new();
    for r in rows {
        let g = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
        let id = format!("{}.{}.{}", g(0), g(1), g(2));
        match out.last_mut() {
            Some((last, fk)) if *last == id => {
                fk.child_columns.push(g(5));
                fk.parent_columns.push(g(6));
            }
            _ => out.push((
                id,
                ChildFk {
                    db: g(0),
                    table: g(1),
                    child_columns: vec![g(5)],
                    parent_columns: vec![g(6)],
                    on_delete: g(3),
                    on_update: g(4),
                },
            )),
        }
    }
    let referenced = !out.is_empty();
    let cascading = |r: &str| r == "CASCADE" || r == "SET NULL";
    (
        out.into_iter()
            .map(|(_, fk)| fk)
            .filter(|fk| cascading(&fk.on_delete) || cascading(&fk.on_update))
            .collect(),
        referenced,
    )
}

/// The foreign keys of `db.name` itself: (columns an ON UPDATE CASCADE can change, whether
/// any of them has a CASCADE or SET NULL action).
fn own_foreign_keys_sql(db: &str, name: &str) -> String {
    format!(
        "SELECT k.COLUMN_NAME, rc.UPDATE_RULE, rc.DELETE_RULE FROM information_schema.REFERENTIAL_CONSTRAINTS rc JOIN information_schema.KEY_COLUMN_USAGE k \
         ON k.CONSTRAINT_SCHEMA = rc.CONSTRAINT_SCHEMA AND k.CONSTRAINT_NAME = rc.CONSTRAINT_NAME AND k.TABLE_NAME = rc.TABLE_NAME \
         WHERE rc.CONSTRAINT_SCHEMA = {} AND rc.TABLE_NAME = {}",
        quote::string(db),
        quote::string(name)
    )
}

fn own_foreign_keys(rows: Vec<Vec<Option<String>>>) -> (Vec<String>, bool) {
    let mut moved = Vec::new();
    let mut cascading = false;
    for r in rows {
        let g = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
        let (upd, del) = (g(1), g(2));
        if upd == "CASCADE" {
            moved.push(g(0));
        }
        if ["CASCADE", "SET NULL"].contains(&upd.as_str())
            || ["CASCADE", "SET NULL"].contains(&del.as_str())
        {
            cascading = true;
        }
    }
    (moved, cascading)
}
