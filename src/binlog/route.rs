//! What to do on the target with a DDL statement from the binlog, given the migrated
//! selection and the horizons of the copied tables: run it as it is, skip it (with the
//! reason), run a narrowed form (a `DROP TABLE a, b` of which only `a` is migrated, a
//! `RENAME` that moves a table out of the selection), or stop (a `RENAME` that moves a table
//! the target never received into the selection). Pure: unit-tested below.

use crate::config::Filter;
use crate::db::quote;
use crate::position::{horizon::Horizons, FilePos};
use crate::sql::statement::{Ddl, Name, Object, Verb};

#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    /// Run the statement as the source ran it.
    Apply,
    /// Nothing to do on the target; the reason is logged.
    Skip(String),
    /// Run these statements instead (UTF-8, every name quoted).
    Rewrite(Vec<String>),
    /// Stop: replaying it cannot give the source's result.
    Fail(String, String),
}

/// Where an object stands for an event ending at a given position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    /// Migrated, and the target is at the state before this event: apply.
    Live,
    /// Migrated, and the target's copy already holds this event's effect.
    Copied,
    /// Not migrated.
    Outside,
}

pub struct Scope<'a> {
    pub filter: &'a Filter,
    pub horizons: &'a Horizons,
}

impl Scope<'_> {
    fn table(&self, n: &Name, end: &FilePos) -> Standing {
        if !self.filter.includes_table(&n.db, &n.name) {
            Standing::Outside
        } else if self.horizons.covers_table(&n.db, &n.name, end) {
            Standing::Copied
        } else {
            Standing::Live
        }
    }
    fn database(&self, db: &str, end: &FilePos) -> Standing {
        if !self.filter.includes_db(db) {
            Standing::Outside
        } else if self.horizons.covers_database(db, end) {
            Standing::Copied
        } else {
            Standing::Live
        }
    }
    /// Views, routines and events follow their database; their DDL replays idempotently.
    fn object(&self, n: &Name) -> Standing {
        if self.filter.includes_db(&n.db) {
            Standing::Live
        } else {
            Standing::Outside
        }
    }
}

fn object_word(o: Object) -> &'static str {
    match o {
        Object::Database => "DATABASE",
        Object::Table | Object::Index => "TABLE",
        Object::View => "VIEW",
        Object::Function => "FUNCTION",
        Object::Procedure => "PROCEDURE",
        Object::Package => "PACKAGE",
        Object::Event => "EVENT",
        Object::Trigger => "TRIGGER",
        Object::Sequence => "SEQUENCE",
    }
}

fn qname(n: &Name) -> String {
    quote::table(&n.db, &n.name)
}

/// Decide what to do with DDL `d` whose event ends at `end`.
pub fn route(d: &Ddl, scope: &Scope, end: &FilePos) -> Route {
    use Standing::*;
    match d.object {
        Object::Trigger => {
            return Route::Skip("triggers are created on the target at cutover".into());
        }
        Object::Database => {
            let db = d.names.first().map(|n| n.db.as_str()).unwrap_or("");
            return match scope.database(db, end) {
                Live => Route::Apply,
                Copied => Route::Skip(format!("database `{db}` was copied after it")),
                Outside => Route::Skip(format!("database `{db}` is not migrated")),
            };
        }
        _ => {}
    }
    let table_level = matches!(d.object, Object::Table | Object::Index | Object::Sequence);
    let standing = |n: &Name| {
        if table_level {
            scope.table(n, end)
        } else {
            scope.object(n)
        }
    };
    let word = object_word(d.object);
    if !d.renames.is_empty() {
        let mut out = Vec::new();
        let mut all_live = true;
        for (a, b) in &d.renames {
            match (standing(a), standing(b)) {
                (Live, Live) => out.push(if d.verb == Verb::Rename {
                    format!("RENAME TABLE {} TO {}", qname(a), qname(b))
                } else {
                    String::new() // an ALTER ... RENAME: run as it is
                }),
                (Live, _) => {
                    all_live = false;
                    out.push(format!("DROP {word} IF EXISTS {}", qname(a)));
                }
                (Outside, Live) => {
                    return Route::Fail(
                        format!("{} moves `{a}` (not migrated) into the migrated selection as `{b}`: the target has none of its rows", describe(d)),
                        format!("include `{a}` in the migration (--databases/--exclude) and take a new snapshot, or exclude `{b}`"),
                    )
                }
                (Copied, Live) => {
                    return Route::Fail(
                        format!("{} renames `{a}`, whose copy is newer than this event, to `{b}`, which was not copied", describe(d)),
                        "take a new snapshot (a table was renamed and dropped while the snapshot was copying)".into(),
                    )
                }
                _ => all_live = false,
            }
        }
        if all_live {
            return Route::Apply;
        }
        let out: Vec<String> = out.into_iter().filter(|s| !s.is_empty()).collect();
        return if out.is_empty() {
            Route::Skip(format!(
                "{}: nothing of it is migrated or it is already in the copy",
                describe(d)
            ))
        } else {
            Route::Rewrite(out)
        };
    }
    let names: Vec<Standing> = d.names.iter().map(standing).collect();
    let uses: Vec<Standing> = d.uses.iter().map(standing).collect();
    if d.verb == Verb::Drop && d.names.len() > 1 {
        let live: Vec<String> = d
            .names
            .iter()
            .zip(&names)
            .filter(|(_, s)| **s == Live)
            .map(|(n, _)| qname(n))
            .collect();
        return if live.len() == d.names.len() {
            Route::Apply
        } else if live.is_empty() {
            Route::Skip(format!(
                "{}: none of its objects is migrated or live",
                describe(d)
            ))
        } else {
            Route::Rewrite(vec![format!("DROP {word} IF EXISTS {}", live.join(", "))])
        };
    }
    let all: Vec<Standing> = names.iter().chain(&uses).copied().collect();
    if all.iter().all(|s| *s == Live) {
        return Route::Apply;
    }
    if names.iter().all(|s| *s != Live) && uses.iter().all(|s| *s != Live) {
        let why = if names.contains(&Copied) {
            "already in the copy"
        } else {
            "not migrated"
        };
        return Route::Skip(format!("{}: {why}", describe(d)));
    }
    let missing: Vec<String> = d
        .uses
        .iter()
        .zip(&uses)
        .filter(|(_, s)| **s != Live)
        .map(|(n, _)| format!("`{n}`"))
        .collect();
    Route::Fail(
        format!(
            "{} needs {} that the target does not have at this point",
            describe(d),
            missing.join(", ")
        ),
        "include those tables in the migration and take a new snapshot, or exclude the changed table".into(),
    )
}

/// "ALTER TABLE `shop.t`"-style description for messages.
pub fn describe(d: &Ddl) -> String {
    let verb = match d.verb {
        Verb::Create => "CREATE",
        Verb::Alter => "ALTER",
        Verb::Drop => "DROP",
        Verb::Rename => "RENAME",
        Verb::Truncate => "TRUNCATE",
    };
    let first = d
        .names
        .first()
        .or(d.renames.first().map(|r| &r.0))
        .map(|n| n.to_string())
        .unwrap_or_default();
    format!("{verb} {} `{first}`", object_word(d.object))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::lexer::Mode;
    use crate::sql::statement::{classify, Statement};

    fn ddl(sql: &str) -> Ddl {
        match classify(sql.as_bytes(), Mode::default(), "shop", &|b| {
            String::from_utf8_lossy(b).into_owned()
        }) {
            Statement::Ddl(d) => d,
            o => panic!("{o:?}"),
        }
    }

    fn at(n: u64) -> FilePos {
        FilePos::new("bin.000001", n)
    }

    #[test]
    fn routes() {
        let filter = Filter::new(&["shop".into()], &["shop.tmp_*".into()]).unwrap();
        let mut h = Horizons::default();
        h.set_table("shop", "copied_late", at(500));
        let s = Scope {
            filter: &filter,
            horizons: &h,
        };
        let r = |sql: &str, pos| route(&ddl(sql), &s, &at(pos));
        assert_eq!(r("ALTER TABLE t ADD c INT", 100), Route::Apply);
        assert_eq!(
            r("TRUNCATE other.t", 100),
            Route::Skip("TRUNCATE TABLE `other.t`: not migrated".into())
        );
        assert!(matches!(
            r("ALTER TABLE copied_late ADD c INT", 400),
            Route::Skip(_)
        ));
        assert_eq!(r("ALTER TABLE copied_late ADD c INT", 600), Route::Apply);
        assert_eq!(
            r("DROP TABLE a, other.b, tmp_x", 100),
            Route::Rewrite(vec!["DROP TABLE IF EXISTS `shop`.`a`".into()])
        );
        assert_eq!(r("DROP TABLE a, b", 100), Route::Apply);
        assert_eq!(r("RENAME TABLE a TO b, c TO d", 100), Route::Apply);
        assert_eq!(
            r("RENAME TABLE a TO other.a, c TO d", 100),
            Route::Rewrite(vec![
                "DROP TABLE IF EXISTS `shop`.`a`".into(),
                "RENAME TABLE `shop`.`c` TO `shop`.`d`".into()
            ])
        );
        assert!(matches!(
            r("RENAME TABLE other.a TO a", 100),
            Route::Fail(..)
        ));
        assert!(matches!(
            r("RENAME TABLE other.a TO other.b", 100),
            Route::Skip(_)
        ));
        assert_eq!(
            r("ALTER TABLE a ADD c INT, RENAME TO tmp_a", 100),
            Route::Rewrite(vec!["DROP TABLE IF EXISTS `shop`.`a`".into()])
        );
        assert_eq!(r("ALTER TABLE a RENAME TO b", 100), Route::Apply);
        assert!(matches!(
            r("CREATE TABLE t LIKE other.s", 100),
            Route::Fail(..)
        ));
        assert!(matches!(
            r("ALTER TABLE t EXCHANGE PARTITION p WITH TABLE other.s", 100),
            Route::Fail(..)
        ));
        assert!(matches!(
            r(
                "CREATE TRIGGER g BEFORE INSERT ON t FOR EACH ROW SET @a=1",
                100
            ),
            Route::Skip(_)
        ));
        assert_eq!(r("CREATE DATABASE shop", 100), Route::Apply);
        assert!(matches!(r("DROP DATABASE other", 100), Route::Skip(_)));
        assert_eq!(r("CREATE VIEW v AS SELECT 1", 100), Route::Apply);
        assert_eq!(
            r("DROP VIEW v, other.w", 100),
            Route::Rewrite(vec!["DROP VIEW IF EXISTS `shop`.`v`".into()])
        );
        assert_eq!(
            r("CREATE INDEX i ON tmp_t (a)", 100),
            Route::Skip("CREATE TABLE `shop.tmp_t`: not migrated".into())
        );
    }
}
