//! What a binlog QUERY event's statement does, from a real tokenizer of its head: every form
//! of the MariaDB manual for transaction control, savepoints, XA and DDL (CREATE [OR REPLACE],
//! IF [NOT] EXISTS, DEFINER=..., ALGORITHM=..., ALTER ONLINE/IGNORE, TRUNCATE [TABLE],
//! RENAME TABLE a TO b, c TO d, DROP TABLE a, b, ...), with the objects each names, so the
//! caller can decide exactly which belong to the migrated selection. Statements that change
//! data by statement (binlog_format STATEMENT/MIXED) are recognised as such; anything not
//! recognised is `Unknown`, never a silent "other".

use super::lexer::{tokenize, Mode, Tok, Token};

/// A schema-qualified object name (database `""` when neither given nor defaulted).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Name {
    pub db: String,
    pub name: String,
}

impl Name {
    pub fn new(db: &str, name: &str) -> Name {
        Name {
            db: db.to_string(),
            name: name.to_string(),
        }
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.name.is_empty() {
            write!(f, "{}", self.db)
        } else {
            write!(f, "{}.{}", self.db, self.name)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Object {
    Database,
    Table,
    Index,
    View,
    Function,
    Procedure,
    Package,
    Event,
    Trigger,
    Sequence,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Create,
    Alter,
    Drop,
    Rename,
    Truncate,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ddl {
    pub verb: Verb,
    pub object: Object,
    /// The objects the statement changes (for INDEX and TRIGGER: the table it is on; for
    /// DATABASE: the database, with an empty name).
    pub names: Vec<Name>,
    /// Renames it performs, in order (RENAME TABLE a TO b, ALTER TABLE a RENAME TO b,
    /// ALTER EVENT e RENAME TO f).
    pub renames: Vec<(Name, Name)>,
    /// Other tables it needs to exist (CREATE TABLE t LIKE s; ALTER TABLE t EXCHANGE
    /// PARTITION p WITH TABLE s).
    pub uses: Vec<Name>,
    pub temporary: bool,
    /// `IF EXISTS` / `IF NOT EXISTS` was given (recorded for RENAME TABLE).
    pub if_exists: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Statement {
    Begin,
    Commit,
    /// A full ROLLBACK ending the group (only non-transactional changes of it happened).
    Rollback,
    Savepoint(Vec<u8>),
    RollbackTo(Vec<u8>),
    Release(Vec<u8>),
    /// XA START/END/PREPARE/COMMIT/ROLLBACK/RECOVER.
    Xa(String),
    Ddl(Ddl),
    /// Server-wide objects migrate does not carry (accounts, grants, plugins, servers,
    /// loadable functions): the statement's kind.
    Global(String),
    /// Changes no data or schema a replica must mirror (ANALYZE/OPTIMIZE/REPAIR, FLUSH,
    /// temporary tables).
    NoEffect(String),
    /// A data change logged as a statement (binlog_format STATEMENT or MIXED): its verb and
    /// every `db.x` qualifier seen (a conservative superset of the databases it touches).
    Dml {
        verb: String,
        qualified_dbs: Vec<String>,
    },
    Unknown,
}

/// Turns identifier bytes (in the session's client character set) into a name.
pub type Decode<'a> = &'a dyn Fn(&[u8]) -> String;

struct Cursor<'a> {
    toks: &'a [Token],
    i: usize,
    default_db: &'a str,
    decode: Decode<'a>,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<&'a Token> {
        self.toks.get(self.i)
    }
    fn peek_at(&self, k: usize) -> Option<&'a Token> {
        self.toks.get(self.i + k)
    }
    fn kw(&self, kw: &str) -> bool {
        self.peek().is_some_and(|t| t.is_kw(kw))
    }
    fn eat(&mut self, kw: &str) -> bool {
        if self.kw(kw) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn eat_punct(&mut self, c: u8) -> bool {
        if self.peek().is_some_and(|t| t.is_punct(c)) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn done(&self) -> bool {
        self.i >= self.toks.len() || self.peek().is_some_and(|t| t.is_punct(b';'))
    }
    /// `IF EXISTS` / `IF NOT EXISTS`: whether it was there.
    fn if_exists(&mut self) -> bool {
        if self.kw("IF") {
            let k = if self.peek_at(1).is_some_and(|t| t.is_kw("NOT")) {
                3
            } else {
                2
            };
            self.i += k;
            return true;
        }
        false
    }
    /// `[db.]name` (a trailing `.` with nothing after gives None).
    fn name(&mut self) -> Option<Name> {
        let first = self.peek()?.name()?;
        self.i += 1;
        if self.peek().is_some_and(|t| t.is_punct(b'.')) {
            if let Some(second) = self.peek_at(1).and_then(|t| t.name()) {
                self.i += 2;
                return Some(Name {
                    db: (self.decode)(first),
                    name: (self.decode)(second),
                });
            }
        }
        Some(Name {
            db: self.default_db.to_string(),
            name: (self.decode)(first),
        })
    }
    /// A comma-separated list of names.
    fn names(&mut self) -> Vec<Name> {
        let mut v = Vec::new();
        while let Some(n) = self.name() {
            v.push(n);
            if !self.eat_punct(b',') {
                break;
            }
        }
        v
    }
    /// Skip `DEFINER = user[@host]`, `DEFINER = CURRENT_USER[()]`, `ALGORITHM = x`,
    /// `SQL SECURITY {DEFINER|INVOKER}`, and the other words that may precede the object
    /// keyword of CREATE/ALTER.
    fn modifiers(&mut self) {
        loop {
            if self.eat("DEFINER") {
                self.eat_punct(b'=');
                if self.eat("CURRENT_USER") || self.eat("CURRENT_ROLE") {
                    if self.eat_punct(b'(') {
                        self.eat_punct(b')');
                    }
                } else {
                    self.i += 1; // user
                    if matches!(self.peek().map(|t| &t.tok), Some(Tok::Var(_))) {
                        self.i += 1; // @host
                    }
                }
            } else if self.eat("ALGORITHM") {
                self.eat_punct(b'=');
                self.i += 1;
            } else if self.kw("SQL") && self.peek_at(1).is_some_and(|t| t.is_kw("SECURITY")) {
                self.i += 3;
            } else if self.eat("OR") {
                self.eat("REPLACE");
            } else if self.eat("ONLINE")
                || self.eat("OFFLINE")
                || self.eat("IGNORE")
                || self.eat("AGGREGATE")
                || self.eat("NONBLOCKING")
            {
            } else {
                return;
            }
        }
    }
}

fn upper(t: Option<&Token>) -> String {
    t.and_then(Token::keyword).unwrap_or_default()
}

/// Classify `sql` (a QUERY event's statement). `default_db` is the event's schema.
pub fn classify(sql: &[u8], mode: Mode, default_db: &str, decode: Decode<'_>) -> Statement {
    let toks = tokenize(sql, mode, 4096);
    let mut c = Cursor {
        toks: &toks,
        i: 0,
        default_db,
        decode,
    };
    // `SET STATEMENT var = value [, ...] FOR <statement>`
    if c.kw("SET") && c.peek_at(1).is_some_and(|t| t.is_kw("STATEMENT")) {
        match toks.iter().position(|t| t.is_kw("FOR")) {
            Some(p) => c.i = p + 1,
            None => return Statement::Unknown,
        }
    }
    let first = upper(c.peek());
    c.i += 1;
    match first.as_str() {
        "BEGIN" => Statement::Begin,
        "START" if c.kw("TRANSACTION") => Statement::Begin,
        "COMMIT" => Statement::Commit,
        "ROLLBACK" => {
            c.eat("WORK");
            if c.eat("TO") {
                c.eat("SAVEPOINT");
                match c.peek().and_then(Token::name) {
                    Some(n) => Statement::RollbackTo(n.to_vec()),
                    None => Statement::Unknown,
                }
            } else {
                Statement::Rollback
            }
        }
        "SAVEPOINT" => match c.peek().and_then(Token::name) {
            Some(n) => Statement::Savepoint(n.to_vec()),
            None => Statement::Unknown,
        },
        "RELEASE" => {
            c.eat("SAVEPOINT");
            match c.peek().and_then(Token::name) {
                Some(n) => Statement::Release(n.to_vec()),
                None => Statement::Unknown,
            }
        }
        "XA" => Statement::Xa(upper(c.peek())),
        "CREATE" | "ALTER" | "DROP" => ddl(&mut c, &first),
        "RENAME" => rename(&mut c),
        "TRUNCATE" => {
            c.eat("TABLE");
            match c.name() {
                Some(n) => table_ddl(Verb::Truncate, vec![n]),
                None => Statement::Unknown,
            }
        }
        "GRANT" | "REVOKE" => Statement::Global(first),
        "SET" => match upper(c.peek()).as_str() {
            "PASSWORD" | "DEFAULT" | "ROLE" => {
                Statement::Global(format!("SET {}", upper(c.peek())))
            }
            _ => Statement::Unknown,
        },
        "INSTALL" | "UNINSTALL" => Statement::Global(format!("{first} {}", upper(c.peek()))),
        "ANALYZE" | "OPTIMIZE" | "REPAIR" | "FLUSH" | "CHECK" | "CHECKSUM" | "RESET" | "PURGE" => {
            Statement::NoEffect(first)
        }
        "INSERT" | "REPLACE" | "UPDATE" | "DELETE" | "LOAD" | "CALL" | "DO" | "SELECT" | "WITH"
        | "HANDLER" | "VALUES" | "TABLE" => dml(&toks, &first, decode),
        _ => Statement::Unknown,
    }
}

fn table_ddl(verb: Verb, names: Vec<Name>) -> Statement {
    Statement::Ddl(Ddl {
        verb,
        object: Object::Table,
        names,
        renames: Vec::new(),
        uses: Vec::new(),
        temporary: false,
        if_exists: false,
    })
}

/// `RENAME TABLE[S] [IF EXISTS] a [WAIT n|NOWAIT] TO b, c TO d` and `RENAME USER ...`.
fn rename(c: &mut Cursor) -> Statement {
    if c.kw("USER") {
        return Statement::Global("RENAME USER".into());
    }
    if !(c.eat("TABLE") || c.eat("TABLES")) {
        return Statement::Unknown;
    }
    let if_exists = c.if_exists();
    let mut renames = Vec::new();
    loop {
        let Some(from) = c.name() else {
            return Statement::Unknown;
        };
        if c.eat("WAIT") {
            c.i += 1;
        }
        c.eat("NOWAIT");
        if !c.eat("TO") {
            return Statement::Unknown;
        }
        let Some(to) = c.name() else {
            return Statement::Unknown;
        };
        renames.push((from, to));
        if !c.eat_punct(b',') {
            break;
        }
    }
    Statement::Ddl(Ddl {
        verb: Verb::Rename,
        object: Object::Table,
        names: Vec::new(),
        renames,
        uses: Vec::new(),
        temporary: false,
        if_exists,
    })
}

fn ddl(c: &mut Cursor, verb_word: &str) -> Statement {
    let verb = match verb_word {
        "CREATE" => Verb::Create,
        "ALTER" => Verb::Alter,
        _ => Verb::Drop,
    };
    c.modifiers();
    let temporary = c.eat("TEMPORARY");
    let kind = upper(c.peek());
    c.i += 1;
    let object = match kind.as_str() {
        "DATABASE" | "SCHEMA" => Object::Database,
        "TABLE" => Object::Table,
        "INDEX" | "UNIQUE" | "FULLTEXT" | "SPATIAL" => {
            if kind != "INDEX" {
                c.eat("INDEX");
            }
            Object::Index
        }
        "VIEW" => Object::View,
        "FUNCTION" => Object::Function,
        "PROCEDURE" => Object::Procedure,
        "PACKAGE" => {
            c.eat("BODY");
            Object::Package
        }
        "EVENT" => Object::Event,
        "TRIGGER" => Object::Trigger,
        "SEQUENCE" => Object::Sequence,
        "USER" | "ROLE" => return Statement::Global(format!("{verb_word} {kind}")),
        "SERVER" => return Statement::Global(format!("{verb_word} SERVER")),
        "TABLESPACE" | "LOGFILE" => return Statement::NoEffect(format!("{verb_word} {kind}")),
        _ => return Statement::Unknown,
    };
    let if_exists = c.if_exists();
    let mut d = Ddl {
        verb,
        object,
        names: Vec::new(),
        renames: Vec::new(),
        uses: Vec::new(),
        temporary,
        if_exists,
    };
    match object {
        Object::Database => {
            // ALTER DATABASE without a name applies to the default database
            let named = c
                .peek()
                .and_then(Token::name)
                .filter(|_| !(verb == Verb::Alter && is_db_option(c.peek())));
            let db = match named {
                Some(n) => {
                    c.i += 1;
                    (c.decode)(n)
                }
                None => c.default_db.to_string(),
            };
            d.names.push(Name::new(&db, ""));
        }
        Object::Table => {
            if temporary {
                return Statement::NoEffect(format!("{verb_word} TEMPORARY TABLE"));
            }
            match verb {
                Verb::Drop => d.names = c.names(),
                _ => {
                    let Some(t) = c.name() else {
                        return Statement::Unknown;
                    };
                    d.names.push(t.clone());
                    if verb == Verb::Create {
                        // CREATE TABLE t LIKE s / (LIKE s)
                        let paren = c.eat_punct(b'(');
                        if c.eat("LIKE") {
                            if let Some(s) = c.name() {
                                d.uses.push(s);
                            }
                        } else if paren {
                            c.i -= 1;
                        }
                    } else {
                        alter_table_clauses(c, &t, &mut d);
                    }
                }
            }
        }
        Object::Index => {
            // [name] [USING x] ON table  (CREATE: also `IF NOT EXISTS` before the name)
            let Some(p) = c.toks[c.i..].iter().position(|t| t.is_kw("ON")) else {
                return Statement::Unknown;
            };
            c.i += p + 1;
            match c.name() {
                Some(t) => d.names.push(t),
                None => return Statement::Unknown,
            }
        }
        Object::Trigger => {
            if verb == Verb::Drop {
                match c.name() {
                    Some(t) => d.names.push(t),
                    None => return Statement::Unknown,
                }
            } else {
                let Some(trigger) = c.name() else {
                    return Statement::Unknown;
                };
                // ... {BEFORE|AFTER} {INSERT|UPDATE|DELETE} ON table
                let Some(p) = c.toks[c.i..].iter().position(|t| t.is_kw("ON")) else {
                    return Statement::Unknown;
                };
                c.i += p + 1;
                match c.name() {
                    // the trigger lives in its table's database
                    Some(t) => d.names.push(Name {
                        db: t.db,
                        name: trigger.name,
                    }),
                    None => return Statement::Unknown,
                }
            }
        }
        Object::Function if verb == Verb::Create => {
            let Some(f) = c.name() else {
                return Statement::Unknown;
            };
            // a loadable function: CREATE FUNCTION f RETURNS STRING SONAME 'lib.so'
            if c.kw("RETURNS")
                && c.toks[c.i..].iter().any(|t| t.is_kw("SONAME"))
                && !c.toks[c.i..].iter().any(|t| t.is_punct(b'('))
            {
                return Statement::Global("CREATE FUNCTION ... SONAME".into());
            }
            d.names.push(f);
        }
        Object::View | Object::Sequence if verb == Verb::Drop => d.names = c.names(),
        Object::Sequence if temporary => {
            return Statement::NoEffect(format!("{verb_word} TEMPORARY SEQUENCE"))
        }
        _ => {
            let Some(n) = c.name() else {
                return Statement::Unknown;
            };
            d.names.push(n.clone());
            if object == Object::Event && verb == Verb::Alter {
                // ALTER EVENT e ... RENAME TO f
                while !c.done() {
                    if c.eat("RENAME") && c.eat("TO") {
                        if let Some(to) = c.name() {
                            d.renames.push((n.clone(), to));
                        }
                        break;
                    }
                    c.i += 1;
                }
            }
        }
    }
    Statement::Ddl(d)
}

fn is_db_option(t: Option<&Token>) -> bool {
    matches!(
        upper(t).as_str(),
        "DEFAULT" | "CHARACTER" | "CHARSET" | "COLLATE" | "COMMENT" | "UPGRADE"
    )
}

/// The clauses of ALTER TABLE that name other tables: `RENAME [TO|AS] x`,
/// `EXCHANGE PARTITION p WITH TABLE x`, `CONVERT PARTITION p TO TABLE x`,
/// `CONVERT TABLE x TO PARTITION p`. Nesting (parentheses) is skipped.
fn alter_table_clauses(c: &mut Cursor, table: &Name, d: &mut Ddl) {
    let mut depth = 0i32;
    while !c.done() {
        let t = &c.toks[c.i];
        if t.is_punct(b'(') {
            depth += 1;
        } else if t.is_punct(b')') {
            depth -= 1;
        } else if depth == 0 && t.is_kw("RENAME") {
            let next = upper(c.peek_at(1));
            if matches!(next.as_str(), "COLUMN" | "INDEX" | "KEY" | "CONSTRAINT") {
                c.i += 2;
                continue;
            }
            c.i += 1;
            let _ = c.eat("TO") || c.eat("AS");
            if let Some(to) = c.name() {
                d.renames.push((table.clone(), to));
            }
            continue;
        } else if depth == 0 && t.is_kw("TABLE") && c.i > 0 {
            let prev = upper(c.toks.get(c.i - 1));
            if matches!(prev.as_str(), "WITH" | "TO" | "CONVERT") {
                c.i += 1;
                if let Some(other) = c.name() {
                    d.uses.push(other);
                }
                continue;
            }
        }
        c.i += 1;
    }
}

/// A statement-format data change: every qualifier `x` of `x.y` seen (it may be an alias:
/// the caller treats a match as touching the database, which errs towards stopping).
fn dml(toks: &[Token], verb: &str, decode: Decode<'_>) -> Statement {
    let mut dbs = Vec::new();
    for w in toks.windows(3) {
        if w[1].is_punct(b'.') {
            if let (Some(a), Some(_)) = (w[0].name(), w[2].name()) {
                let d = decode(a);
                if !dbs.contains(&d) {
                    dbs.push(d);
                }
            }
        }
    }
    Statement::Dml {
        verb: verb.to_string(),
        qualified_dbs: dbs,
    }
}

/// Functions whose value depends on where or when (to the row) the statement runs, not on
/// what the binlog carries: the statement's timestamp is carried, so NOW() and its kin are
/// not here. RAND(seed) is (its sequence follows the order the server visits the rows in),
/// and so are sequences: the target's copy of one hands out values from where the source's
/// cache ended, not from where the source was.
const UNREPEATABLE: &[&str] = &[
    "RAND",
    "RANDOM_BYTES",
    "SYSDATE",
    "LAST_INSERT_ID",
    "NEXTVAL",
    "LASTVAL",
    "SETVAL",
];

/// The same, for functions that take no argument: only `name()` is a call (`user(10)` in an
/// index is a prefix of a column named `user`); CURRENT_USER and CURRENT_ROLE also bare.
const UNREPEATABLE_NO_ARGS: &[&str] = &[
    "UUID",
    "UUID_SHORT",
    "UUID_V4",
    "UUID_V7",
    "SYS_GUID",
    "CONNECTION_ID",
    "USER",
    "SESSION_USER",
    "SYSTEM_USER",
    "CURRENT_USER",
    "CURRENT_ROLE",
    "ROW_COUNT",
    "FOUND_ROWS",
    "VERSION",
];

/// How an `ALTER TABLE ... ADD` column fills the rows already in the table, when the target
/// may not repeat it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fill {
    /// A default the target computes otherwise (RAND(), UUID(), USER(), NEXT VALUE FOR s,
    /// @@server_id, ...): the function or variable, as written.
    Unrepeatable(String),
    /// An AUTO_INCREMENT column: numbered in the table's clustered order, which is the
    /// source's and the target's alike only when the table has a primary key or a NOT NULL
    /// unique key (without one, InnoDB's hidden row order on the target follows the binlog's
    /// commit order, not the source's insert order).
    Numbered,
    /// `ALTER IGNORE TABLE ... ADD UNIQUE|PRIMARY KEY`: of rows that share the new key, the
    /// first in the table's clustered order is kept; like `Numbered`, the same on both sides
    /// only when a primary or NOT NULL unique key orders the table.
    Deduplicated,
}

/// An `ALTER TABLE ... ADD` whose new column fills the rows already in the table in a way the
/// target may not repeat (`Fill`). A native replica runs the statement too and fills its
/// rows its own way. Only ADD clauses count: a changed default applies to later inserts,
/// which arrive as row events with their values.
pub fn fills_existing_rows_with(sql: &[u8], mode: Mode) -> Option<Fill> {
    let toks = tokenize(sql, mode, usize::MAX);
    // ALTER [ONLINE] [IGNORE] TABLE
    if !toks.first().is_some_and(|t| t.is_kw("ALTER")) {
        return None;
    }
    let table = toks.iter().take(4).position(|t| t.is_kw("TABLE"))?;
    let ignore = toks[..table].iter().any(|t| t.is_kw("IGNORE"));
    let kw_at = |i: usize, kw: &str| toks.get(i).is_some_and(|t| t.is_kw(kw));
    let mut depth = 0i32;
    let mut in_add = false;
    let mut deduplicated = false;
    // MODIFY / CHANGE: an existing column made AUTO_INCREMENT numbers its 0s and NULLs too
    let mut in_change = false;
    let mut numbered = false;
    for (i, t) in toks.iter().enumerate().skip(table + 1) {
        if t.is_punct(b'(') {
            depth += 1;
        } else if t.is_punct(b')') {
            depth -= 1;
        } else if depth == 0 && t.is_punct(b',') {
            in_add = false;
            in_change = false;
        } else if depth == 0 && (t.is_kw("MODIFY") || t.is_kw("CHANGE")) {
            in_change = true;
        } else if in_change && t.is_kw("AUTO_INCREMENT") {
            numbered = true;
        } else if depth == 0 && t.is_kw("ADD") {
            // ADD is reserved: never a bare column or table name; PERIOD and SYSTEM are not
            let n = i + 1;
            let not_a_column = matches!(
                toks.get(n).and_then(Token::keyword).as_deref(),
                Some(
                    "INDEX"
                        | "KEY"
                        | "CONSTRAINT"
                        | "PRIMARY"
                        | "UNIQUE"
                        | "FOREIGN"
                        | "FULLTEXT"
                        | "SPATIAL"
                        | "PARTITION"
                        | "CHECK"
                )
            ) || (kw_at(n, "PERIOD") && kw_at(n + 1, "FOR"))
                || (kw_at(n, "SYSTEM") && kw_at(n + 1, "VERSIONING"));
            in_add = !not_a_column;
            // ADD [CONSTRAINT [name]] {UNIQUE | PRIMARY KEY}
            let mut k = n;
            if kw_at(k, "CONSTRAINT") {
                k += if kw_at(k + 1, "UNIQUE") || kw_at(k + 1, "PRIMARY") {
                    1
                } else {
                    2
                };
            }
            if ignore && (kw_at(k, "UNIQUE") || kw_at(k, "PRIMARY")) {
                deduplicated = true;
            }
        } else if in_add {
            match &t.tok {
                Tok::Word(w) => {
                    let up = String::from_utf8_lossy(w).to_ascii_uppercase();
                    let called = toks.get(i + 1).is_some_and(|n| n.is_punct(b'('));
                    let empty_call = called && toks.get(i + 2).is_some_and(|n| n.is_punct(b')'));
                    let bare = matches!(up.as_str(), "CURRENT_USER" | "CURRENT_ROLE");
                    if (UNREPEATABLE.contains(&up.as_str()) && called)
                        || (UNREPEATABLE_NO_ARGS.contains(&up.as_str()) && (empty_call || bare))
                    {
                        return Some(Fill::Unrepeatable(format!("{up}()")));
                    }
                    if (up == "NEXT" || up == "PREVIOUS")
                        && kw_at(i + 1, "VALUE")
                        && kw_at(i + 2, "FOR")
                    {
                        return Some(Fill::Unrepeatable(format!("{up} VALUE FOR")));
                    }
                    if up == "AUTO_INCREMENT" && depth <= 1 {
                        numbered = true;
                    }
                }
                Tok::Var(v) if v.starts_with(b"@@") => {
                    return Some(Fill::Unrepeatable(String::from_utf8_lossy(v).into_owned()));
                }
                _ => {}
            }
        }
    }
    if numbered {
        Some(Fill::Numbered)
    } else {
        deduplicated.then_some(Fill::Deduplicated)
    }
}

/// An `ALTER TABLE ... DISCARD|IMPORT [PARTITION ...] TABLESPACE`: the rows of an imported
/// tablespace come from a file copied into the server's data directory, which the binlog does
/// not carry; discarding one deletes the table's rows. Returns the clause's verb.
pub fn swaps_tablespace(sql: &[u8], mode: Mode) -> Option<&'static str> {
    let toks = tokenize(sql, mode, usize::MAX);
    if !toks.first().is_some_and(|t| t.is_kw("ALTER")) {
        return None;
    }
    let table = toks.iter().take(4).position(|t| t.is_kw("TABLE"))?;
    let mut depth = 0i32;
    for (i, t) in toks.iter().enumerate().skip(table + 1) {
        if t.is_punct(b'(') {
            depth += 1;
        } else if t.is_punct(b')') {
            depth -= 1;
        } else if depth == 0 && (t.is_kw("DISCARD") || t.is_kw("IMPORT")) {
            // DISCARD|IMPORT [PARTITION {ALL | p [, p]...}] TABLESPACE
            let mut j = i + 1;
            if toks.get(j).is_some_and(|n| n.is_kw("PARTITION")) {
                j += 1;
                let name_or_comma = |n: &Token| {
                    n.is_punct(b',')
                        || matches!(n.tok, Tok::Ident(_))
                        || (n.keyword().is_some() && !n.is_kw("TABLESPACE"))
                };
                while toks.get(j).is_some_and(name_or_comma) {
                    j += 1;
                }
            }
            if toks.get(j).is_some_and(|n| n.is_kw("TABLESPACE")) {
                return Some(if t.is_kw("DISCARD") {
                    "DISCARD"
                } else {
                    "IMPORT"
                });
            }
        }
    }
    None
}

/// Where in `sql` the status clause of a CREATE/ALTER EVENT is, so that a rewrite can make
/// the event DISABLED: returns (byte ranges of existing `ENABLE` / `DISABLE [ON SLAVE]`
/// clauses, byte offset where `DISABLE ` can be inserted). The insertion point is before
/// `COMMENT` or `DO` at the top level (the grammar's order), or the end of the statement for
/// an ALTER EVENT without a body.
pub fn event_status_clauses(sql: &[u8], mode: Mode) -> Option<(Vec<(usize, usize)>, usize)> {
    let toks = tokenize(sql, mode, usize::MAX);
    let ev = toks.iter().position(|t| t.is_kw("EVENT"))?;
    let mut ranges = Vec::new();
    let mut insert = None;
    let mut i = ev + 1;
    while i < toks.len() {
        let t = &toks[i];
        if t.is_kw("DO") {
            insert.get_or_insert(t.start);
            break;
        }
        if t.is_kw("COMMENT") && insert.is_none() {
            insert = Some(t.start);
        } else if t.is_kw("ENABLE") {
            ranges.push((t.start, t.end));
        } else if t.is_kw("DISABLE") {
            let mut end = t.end;
            if toks.get(i + 1).is_some_and(|n| n.is_kw("ON"))
                && toks
                    .get(i + 2)
                    .is_some_and(|n| n.is_kw("SLAVE") || n.is_kw("REPLICA"))
            {
                end = toks[i + 2].end;
                i += 2;
            }
            ranges.push((t.start, end));
        }
        i += 1;
    }
    let end = toks.last().map(|t| t.end).unwrap_or(sql.len());
    Some((ranges, insert.unwrap_or(end)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn tablespace_swaps_are_found() {
        let m = Mode::default();
        let f = |s: &str| swaps_tablespace(s.as_bytes(), m);
        assert_eq!(f("ALTER TABLE t DISCARD TABLESPACE"), Some("DISCARD"));
        assert_eq!(f("alter table `db`.`t` import tablespace"), Some("IMPORT"));
        assert_eq!(
            f("ALTER TABLE t DISCARD PARTITION p0, p1 TABLESPACE"),
            Some("DISCARD")
        );
        assert_eq!(
            f("ALTER TABLE t IMPORT PARTITION ALL TABLESPACE"),
            Some("IMPORT")
        );
        assert_eq!(
            f("ALTER TABLE t IMPORT PARTITION `p 0`,`p1` TABLESPACE"),
            Some("IMPORT")
        );
        assert_eq!(
            f("ALTER TABLE t ADD COLUMN `import` INT, COMMENT 'discard tablespace'"),
            None
        );
        assert_eq!(
            f("ALTER TABLE t ADD COLUMN discard INT, ADD COLUMN tablespace INT"),
            None
        );
        assert_eq!(f("ALTER TABLE t ENGINE=InnoDB"), None);
    }

    #[test]
    fn unrepeatable_defaults_of_added_columns() {
        let m = Mode::default();
        let f = |sql: &str| fills_existing_rows_with(sql.as_bytes(), m);
        let u = |what: &str| Some(Fill::Unrepeatable(what.into()));
        assert_eq!(
            f("ALTER TABLE t ADD COLUMN r DOUBLE DEFAULT (RAND())"),
            u("RAND()")
        );
        let dedup = Some(Fill::Deduplicated);
        assert_eq!(f("ALTER IGNORE TABLE t ADD UNIQUE (a)"), dedup);
        assert_eq!(f("alter online ignore table t add primary key (a)"), dedup);
        assert_eq!(
            f("ALTER IGNORE TABLE t ADD CONSTRAINT u UNIQUE KEY (a)"),
            dedup
        );
        assert_eq!(
            f("ALTER IGNORE TABLE t ADD CONSTRAINT PRIMARY KEY (a)"),
            dedup
        );
        assert_eq!(f("ALTER TABLE t ADD UNIQUE (a)"), None);
        assert_eq!(f("ALTER IGNORE TABLE t ADD INDEX (a), MODIFY b INT"), None);
        assert_eq!(
            f("alter online table d.t add g char(36) default (uuid()), add x int"),
            u("UUID()")
        );
        assert_eq!(
            f("ALTER TABLE t ADD (a INT, b VARCHAR(80) DEFAULT (CURRENT_USER))"),
            u("CURRENT_USER()")
        );
        assert_eq!(
            f("ALTER TABLE t ADD COLUMN s INT DEFAULT (@@server_id)"),
            u("@@server_id")
        );
        assert_eq!(
            f("ALTER TABLE t ADD COLUMN u VARCHAR(80) DEFAULT USER()"),
            u("USER()")
        );
        assert_eq!(
            f("ALTER TABLE t ADD COLUMN r DOUBLE DEFAULT (RAND(1))"),
            u("RAND()")
        );
        assert_eq!(
            f("ALTER TABLE t ADD COLUMN n INT DEFAULT (NEXT VALUE FOR s)"),
            u("NEXT VALUE FOR")
        );
        assert_eq!(
            f("ALTER TABLE t ADD COLUMN n INT DEFAULT (nextval(s))"),
            u("NEXTVAL()")
        );
        assert_eq!(
            f("ALTER TABLE t ADD period CHAR(36) DEFAULT (UUID())"),
            u("UUID()")
        );
        // repeatable: the statement's timestamp is in the binlog; a literal; names
        assert_eq!(f("ALTER TABLE t ADD COLUMN c TIMESTAMP DEFAULT CURRENT_TIMESTAMP, ADD d DATETIME DEFAULT (NOW())"), None);
        assert_eq!(
            f("ALTER TABLE t ADD COLUMN `rand` INT DEFAULT 5, ADD COLUMN `uuid` INT"),
            None
        );
        assert_eq!(
            f("ALTER TABLE t ADD (user VARCHAR(20), INDEX i (user(10)))"),
            None
        );
        // not filling rows: a default changed, an index, a period, another clause
        assert_eq!(f("ALTER TABLE t ALTER COLUMN c SET DEFAULT (RAND())"), None);
        assert_eq!(
            f("ALTER TABLE t MODIFY c INT DEFAULT (UUID_SHORT()), ADD INDEX (c)"),
            None
        );
        assert_eq!(
            f("ALTER TABLE t ADD CONSTRAINT k CHECK (c > 0), ADD COLUMN v INT DEFAULT 1"),
            None
        );
        assert_eq!(f("ALTER TABLE t ADD PERIOD FOR p(s, e)"), None);
        assert_eq!(f("CREATE TABLE t (r DOUBLE DEFAULT (RAND()))"), None);
        // numbered: the caller decides by the table's key
        assert_eq!(
            f("ALTER TABLE t ADD COLUMN id INT AUTO_INCREMENT PRIMARY KEY FIRST"),
            Some(Fill::Numbered)
        );
        assert_eq!(
            f("ALTER TABLE t MODIFY id INT AUTO_INCREMENT"),
            Some(Fill::Numbered)
        );
        assert_eq!(
            f("ALTER TABLE t AUTO_INCREMENT = 5, ADD COLUMN v INT"),
            None
        );
    }

    use super::*;

    fn dec(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }
    fn cl(sql: &str) -> Statement {
        classify(sql.as_bytes(), Mode::default(), "shop", &dec)
    }
    fn n(db: &str, t: &str) -> Name {
        Name::new(db, t)
    }
    fn ddl_of(sql: &str) -> Ddl {
        match cl(sql) {
            Statement::Ddl(d) => d,
            other => panic!("{sql}: {other:?}"),
        }
    }

    #[test]
    fn transaction_control() {
        assert_eq!(cl("BEGIN"), Statement::Begin);
        assert_eq!(cl("START TRANSACTION"), Statement::Begin);
        assert_eq!(cl("COMMIT"), Statement::Commit);
        assert_eq!(cl("commit work"), Statement::Commit);
        assert_eq!(cl("ROLLBACK"), Statement::Rollback);
        assert_eq!(cl("ROLLBACK WORK"), Statement::Rollback);
        assert_eq!(cl("ROLLBACK TO `b`"), Statement::RollbackTo(b"b".to_vec()));
        assert_eq!(
            cl("rollback work to savepoint sp1"),
            Statement::RollbackTo(b"sp1".to_vec())
        );
        assert_eq!(cl("SAVEPOINT `a b`"), Statement::Savepoint(b"a b".to_vec()));
        assert_eq!(cl("RELEASE SAVEPOINT x"), Statement::Release(b"x".to_vec()));
        assert_eq!(cl("XA START X'7831',X'',1"), Statement::Xa("START".into()));
        assert_eq!(cl("XA COMMIT 'x'"), Statement::Xa("COMMIT".into()));
        assert_eq!(cl("  /* c */ BEGIN"), Statement::Begin);
    }

    #[test]
    fn truncate_and_rename() {
        assert_eq!(ddl_of("TRUNCATE a").names, vec![n("shop", "a")]);
        assert_eq!(ddl_of("truncate table x.`a`").names, vec![n("x", "a")]);
        assert_eq!(
            ddl_of("TRUNCATE TABLE a WAIT 5").names,
            vec![n("shop", "a")]
        );
        let d = ddl_of("RENAME TABLE a TO b, other.c TO shop.c");
        assert_eq!(d.verb, Verb::Rename);
        assert_eq!(
            d.renames,
            vec![
                (n("shop", "a"), n("shop", "b")),
                (n("other", "c"), n("shop", "c"))
            ]
        );
        let d = ddl_of("RENAME TABLES IF EXISTS a NOWAIT TO b");
        assert_eq!(d.renames, vec![(n("shop", "a"), n("shop", "b"))]);
        assert_eq!(
            cl("RENAME USER a TO b"),
            Statement::Global("RENAME USER".into())
        );
    }

    #[test]
    fn tables() {
        let d = ddl_of("CREATE OR REPLACE TABLE IF NOT EXISTS `상점`.`order items` (id INT)");
        assert_eq!((d.verb, d.object), (Verb::Create, Object::Table));
        assert_eq!(d.names, vec![n("상점", "order items")]);
        let d = ddl_of("CREATE TABLE t LIKE other.s");
        assert_eq!(d.uses, vec![n("other", "s")]);
        let d = ddl_of("CREATE TABLE t (LIKE s)");
        assert_eq!(d.uses, vec![n("shop", "s")]);
        let d = ddl_of("CREATE TABLE t (id INT) SELECT 1");
        assert!(d.uses.is_empty());
        let d = ddl_of("DROP TABLE IF EXISTS a, x.b /* generated by server */");
        assert_eq!(d.names, vec![n("shop", "a"), n("x", "b")]);
        assert!(matches!(
            cl("DROP TEMPORARY TABLE IF EXISTS `t`"),
            Statement::NoEffect(_)
        ));
        assert!(matches!(
            cl("CREATE TEMPORARY TABLE t (a INT)"),
            Statement::NoEffect(_)
        ));
        let d = ddl_of("ALTER ONLINE IGNORE TABLE IF EXISTS t ADD c INT, RENAME COLUMN a TO b");
        assert_eq!(d.names, vec![n("shop", "t")]);
        assert!(d.renames.is_empty());
        let d = ddl_of("ALTER TABLE t ADD KEY (a), RENAME TO archive.t2");
        assert_eq!(d.renames, vec![(n("shop", "t"), n("archive", "t2"))]);
        let d = ddl_of("alter table t rename t3");
        assert_eq!(d.renames, vec![(n("shop", "t"), n("shop", "t3"))]);
        let d = ddl_of("ALTER TABLE t EXCHANGE PARTITION p0 WITH TABLE x.s");
        assert_eq!(d.uses, vec![n("x", "s")]);
        let d = ddl_of("ALTER TABLE t CONVERT PARTITION p0 TO TABLE s");
        assert_eq!(d.uses, vec![n("shop", "s")]);
        let d = ddl_of("ALTER TABLE t ADD c INT DEFAULT (CONCAT('RENAME TO', 'x'))");
        assert!(d.renames.is_empty());
        let d = ddl_of("/*!40000 ALTER TABLE `t` DISABLE KEYS */");
        assert_eq!(d.names, vec![n("shop", "t")]);
        let d = ddl_of("SET STATEMENT max_statement_time=60 FOR ALTER TABLE t ADD c INT");
        assert_eq!(d.names, vec![n("shop", "t")]);
    }

    #[test]
    fn indexes_databases_and_routines() {
        let d = ddl_of("CREATE UNIQUE INDEX IF NOT EXISTS i USING BTREE ON s.t (a)");
        assert_eq!(
            (d.object, d.names.clone()),
            (Object::Index, vec![n("s", "t")])
        );
        let d = ddl_of("DROP INDEX IF EXISTS i ON t");
        assert_eq!(d.names, vec![n("shop", "t")]);
        let d = ddl_of("CREATE DATABASE IF NOT EXISTS `a``b` CHARACTER SET euckr");
        assert_eq!(d.names, vec![n("a`b", "")]);
        let d = ddl_of("ALTER DATABASE CHARACTER SET utf8mb4");
        assert_eq!(d.names, vec![n("shop", "")]);
        let d = ddl_of("ALTER SCHEMA other COLLATE utf8mb4_bin");
        assert_eq!(d.names, vec![n("other", "")]);
        let d = ddl_of("DROP SCHEMA IF EXISTS x");
        assert_eq!((d.verb, d.names.clone()), (Verb::Drop, vec![n("x", "")]));
        let d = ddl_of(
            "CREATE OR REPLACE ALGORITHM=UNDEFINED DEFINER=`root`@`%` SQL SECURITY DEFINER VIEW `v` AS select 1",
        );
        assert_eq!(
            (d.object, d.names.clone()),
            (Object::View, vec![n("shop", "v")])
        );
        let d = ddl_of("CREATE DEFINER='a'@'b' VIEW IF NOT EXISTS x.v AS SELECT 1");
        assert_eq!(d.names, vec![n("x", "v")]);
        let d = ddl_of("DROP VIEW IF EXISTS v1, x.v2 CASCADE");
        assert_eq!(d.names, vec![n("shop", "v1"), n("x", "v2")]);
        let d = ddl_of("CREATE DEFINER=CURRENT_USER() PROCEDURE p() SELECT 1");
        assert_eq!(
            (d.object, d.names.clone()),
            (Object::Procedure, vec![n("shop", "p")])
        );
        let d = ddl_of("CREATE DEFINER=root@localhost AGGREGATE FUNCTION IF NOT EXISTS f(x INT) RETURNS INT RETURN 1");
        assert_eq!(
            (d.object, d.names.clone()),
            (Object::Function, vec![n("shop", "f")])
        );
        assert!(matches!(
            cl("CREATE FUNCTION metaphon RETURNS STRING SONAME 'udf_example.so'"),
            Statement::Global(_)
        ));
        let d = ddl_of("DROP FUNCTION IF EXISTS x.f");
        assert_eq!(d.names, vec![n("x", "f")]);
        let d = ddl_of("CREATE PACKAGE BODY pk AS BEGIN END");
        assert_eq!(d.object, Object::Package);
        let d = ddl_of("CREATE DEFINER=`root`@`localhost` TRIGGER trg BEFORE INSERT ON o.t FOR EACH ROW SET @x=1");
        assert_eq!(
            (d.object, d.names.clone()),
            (Object::Trigger, vec![n("o", "trg")])
        );
        let d = ddl_of("DROP TRIGGER IF EXISTS trg");
        assert_eq!(d.names, vec![n("shop", "trg")]);
        let d = ddl_of("CREATE OR REPLACE SEQUENCE IF NOT EXISTS s START WITH 10");
        assert_eq!(
            (d.object, d.names.clone()),
            (Object::Sequence, vec![n("shop", "s")])
        );
        let d = ddl_of("DROP SEQUENCE IF EXISTS s1, x.s2");
        assert_eq!(d.names, vec![n("shop", "s1"), n("x", "s2")]);
        let d = ddl_of("ALTER SEQUENCE IF EXISTS s RESTART 5");
        assert_eq!(d.names, vec![n("shop", "s")]);
        let d = ddl_of(
            "CREATE DEFINER=`r`@`h` EVENT IF NOT EXISTS e ON SCHEDULE EVERY 1 DAY DO DELETE FROM t",
        );
        assert_eq!(
            (d.object, d.names.clone()),
            (Object::Event, vec![n("shop", "e")])
        );
        let d = ddl_of("ALTER EVENT e ON SCHEDULE EVERY 2 DAY RENAME TO x.f ENABLE");
        assert_eq!(d.renames, vec![(n("shop", "e"), n("x", "f"))]);
    }

    #[test]
    fn global_noeffect_dml_unknown() {
        assert!(matches!(cl("GRANT ALL ON *.* TO x"), Statement::Global(_)));
        assert!(matches!(cl("CREATE USER 'a'@'%'"), Statement::Global(_)));
        assert!(matches!(cl("DROP ROLE r"), Statement::Global(_)));
        assert!(matches!(
            cl("ALTER USER a IDENTIFIED BY 'x'"),
            Statement::Global(_)
        ));
        assert!(matches!(
            cl("SET PASSWORD FOR a = 'x'"),
            Statement::Global(_)
        ));
        assert!(matches!(
            cl("CREATE SERVER s FOREIGN DATA WRAPPER mysql OPTIONS (HOST 'h')"),
            Statement::Global(_)
        ));
        assert!(matches!(cl("INSTALL SONAME 'ha_x'"), Statement::Global(_)));
        assert!(matches!(cl("ANALYZE TABLE t"), Statement::NoEffect(_)));
        assert!(matches!(
            cl("OPTIMIZE NO_WRITE_TO_BINLOG TABLE t"),
            Statement::NoEffect(_)
        ));
        assert!(matches!(cl("FLUSH PRIVILEGES"), Statement::NoEffect(_)));
        assert_eq!(
            cl("UPDATE i SET v=v+1 WHERE id=1"),
            Statement::Dml {
                verb: "UPDATE".into(),
                qualified_dbs: vec![]
            }
        );
        assert_eq!(
            cl("INSERT INTO x.t SELECT * FROM y.u"),
            Statement::Dml {
                verb: "INSERT".into(),
                qualified_dbs: vec!["x".into(), "y".into()]
            }
        );
        assert!(matches!(
            cl("LOAD DATA LOCAL INFILE '/tmp/SQL_LOAD' INTO TABLE `m`"),
            Statement::Dml { .. }
        ));
        assert!(matches!(cl("DELETE FROM `s`.`mem`"), Statement::Dml { .. }));
        assert_eq!(cl("FROBNICATE t"), Statement::Unknown);
        assert_eq!(cl(""), Statement::Unknown);
    }

    #[test]
    fn event_status_rewrite_points() {
        let sql = b"CREATE EVENT e ON SCHEDULE EVERY 1 SECOND ON COMPLETION PRESERVE ENABLE COMMENT 'DO not' DO INSERT INTO t VALUES (1)";
        let (ranges, at) = event_status_clauses(sql, Mode::default()).unwrap();
        assert_eq!(ranges.len(), 1);
        assert_eq!(&sql[ranges[0].0..ranges[0].1], b"ENABLE");
        assert!(sql[at..].starts_with(b"COMMENT"));
        let sql = b"ALTER EVENT e DISABLE ON SLAVE";
        let (ranges, at) = event_status_clauses(sql, Mode::default()).unwrap();
        assert_eq!(&sql[ranges[0].0..ranges[0].1], b"DISABLE ON SLAVE");
        assert_eq!(at, sql.len());
        let sql = b"CREATE EVENT e ON SCHEDULE AT NOW() DO BEGIN UPDATE t SET enable = 1; END";
        let (ranges, at) = event_status_clauses(sql, Mode::default()).unwrap();
        assert!(ranges.is_empty());
        assert!(sql[at..].starts_with(b"DO BEGIN"));
    }
}
