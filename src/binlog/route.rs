//! What to do on the target with a DDL statement from the binlog, given the migrated
//! selection and the horizons of the copied tables: run it as it is, skip it (with the
//! reason), run a narrowed form (a `DROP TABLE a, b` of which only `a` is migrated, a
//! `RENAME` that moves a table out of the selection), or stop (a `RENAME` that moves a table
//! the target never received into the selection). Pure: unit-tested below.

use crate::config::Filter;
use crate::db::quote;
use crate::position::{horizon::Horizons, FilePos};
use crate::sql::statement::{Ddl, Name, Object, Verb};
use std::collections::HashMap;

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
    /// Views, routines and events follow their database (a view is also left out by an
    /// `--exclude` that names it: views share the tables' namespace); their DDL replays
    /// idempotently.
    fn object(&self, n: &Name, view: bool) -> Standing {
        let included = if view {
            self.filter.includes_table(&n.db, &n.name)
        } else {
            self.filter.includes_db(&n.db)
        };
        if included {
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
            scope.object(n, d.object == Object::View)
        }
    };
    let word = object_word(d.object);
    if !d.renames.is_empty() {
        return route_renames(d, &standing, word);
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

/// A RENAME (one or many pairs, applied in order, as the source applied them) or an ALTER
/// ... RENAME. Its net effect decides: every migrated name the target holds at its state
/// before this event (`Live`) must end holding what the source's name holds after it. That
/// is the content of the name it came from (which must then be `Live` too: a copy newer
/// than this event, or a table not migrated, cannot be moved back in time), or nothing.
/// Names whose copy already has the effect (`Copied`) and names outside the selection are
/// not touched; a name only passed through (`sw_tmp` in a swap) needs nothing.
fn route_renames(d: &Ddl, standing: &dyn Fn(&Name) -> Standing, word: &str) -> Route {
    use Standing::*;
    let touched = touched_in_order(&d.renames);
    let standings: HashMap<&Name, Standing> = touched.iter().map(|n| (*n, standing(n))).collect();
    if standings.values().all(|s| *s == Live) {
        return Route::Apply;
    }
    if d.if_exists {
        // which pairs the source skipped is not known here, so neither is the net effect
        return Route::Fail(
            format!("{} IF EXISTS names tables copied after it or not migrated beside tables the target must change", describe(d)),
            "take a new snapshot (it ran while the snapshot was copying), or exclude the tables it moves out of the selection".into(),
        );
    }
    let holds = net_effect(&d.renames);
    // what each live name must receive, and whose pre-event content is still wanted
    let mut moves: Vec<(Name, Name)> = Vec::new();
    for f in &touched {
        if standings[f] != Live {
            continue;
        }
        let Some(&Some(origin)) = holds.get(*f) else {
            continue;
        };
        if origin == *f {
            continue;
        }
        match standings[origin] {
            Live => moves.push((origin.clone(), (*f).clone())),
            Copied => {
                return Route::Fail(
                    format!("{} renames `{origin}`, whose copy is newer than this event, to `{f}`, which was copied before it", describe(d)),
                    "take a new snapshot (tables were renamed into each other while the snapshot was copying them)".into(),
                )
            }
            Outside => {
                return Route::Fail(
                    format!("{} moves `{origin}` (not migrated) into the migrated selection as `{f}`: the target has none of its rows", describe(d)),
                    format!("include `{origin}` in the migration (--databases/--exclude) and take a new snapshot, or exclude `{f}`"),
                )
            }
        }
    }
    // live names whose content before the event ends nowhere the target keeps it
    let existed_before = |n: &Name| {
        d.renames.iter().find_map(|(a, b)| {
            if a == n {
                Some(true)
            } else if b == n {
                Some(false)
            } else {
                None
            }
        }) == Some(true)
    };
    let discarded: Vec<&Name> = touched
        .iter()
        .copied()
        .filter(|n| standings[n] == Live && existed_before(n))
        .filter(|n| holds.get(*n) != Some(&Some(*n)))
        .filter(|n| !moves.iter().any(|(o, _)| o == *n))
        .collect();
    // of those, the ones that receive a table: renamed aside in the same statement and dropped
    // there, so a replay after a crash never drops the table that arrived
    let set_aside: Vec<&Name> = discarded
        .iter()
        .copied()
        .filter(|n| moves.iter().any(|(_, f)| f == *n))
        .collect();
    let mut out = Vec::new();
    if !moves.is_empty() {
        out.push(format!(
            "RENAME TABLE {}",
            rename_steps(&moves, &set_aside, &touched)
                .iter()
                .map(|(a, b)| format!("{} TO {}", qname(a), qname(b)))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let drops: Vec<String> = discarded
        .iter()
        .map(|n| {
            if set_aside.contains(n) {
                qname(&aside(n, &touched))
            } else {
                qname(n)
            }
        })
        .collect();
    if !drops.is_empty() {
        out.push(format!("DROP {word} IF EXISTS {}", drops.join(", ")));
        if word == "TABLE" {
            // RENAME TABLE renames views too, and DROP TABLE leaves a view in place (a note,
            // no error); DROP VIEW leaves a table (a warning)
            out.push(format!("DROP VIEW IF EXISTS {}", drops.join(", ")));
        }
    }
    if out.is_empty() {
        Route::Skip(format!(
            "{}: nothing of it is migrated or it is already in the copy",
            describe(d)
        ))
    } else {
        Route::Rewrite(out)
    }
}

/// Every name a rename list mentions, first mention first.
fn touched_in_order(renames: &[(Name, Name)]) -> Vec<&Name> {
    let mut out: Vec<&Name> = Vec::new();
    for n in renames.iter().flat_map(|(a, b)| [a, b]) {
        if !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

/// After the renames, what each mentioned name holds: the table that had that name before
/// (`Some(origin)`), or nothing.
fn net_effect(renames: &[(Name, Name)]) -> HashMap<&Name, Option<&Name>> {
    let mut holds: HashMap<&Name, Option<&Name>> = HashMap::new();
    for (a, b) in renames {
        let content = holds.get(a).copied().unwrap_or(Some(a));
        holds.insert(a, None);
        holds.insert(b, content);
    }
    holds
}

/// A name in `n`'s database that none of `taken` uses, for a table a rewrite moves through.
fn spare_name(n: &Name, kind: &str, taken: &[&Name], from: usize) -> Name {
    (from..)
        .map(|i| Name::new(&n.db, &format!("_migrate_{kind}_{i}")))
        .find(|c| !taken.contains(&c))
        .unwrap_or_else(|| n.clone())
}

/// Where a discarded name that receives a table is set aside before it is dropped.
fn aside(n: &Name, taken: &[&Name]) -> Name {
    let i = taken.iter().position(|t| *t == n).unwrap_or(0);
    spare_name(n, "discarded", taken, i)
}

/// The moves as one RENAME TABLE list: `set_aside` first (`aside`), then each move once its
/// destination is free, a cycle broken through a spare name.
fn rename_steps(moves: &[(Name, Name)], set_aside: &[&Name], taken: &[&Name]) -> Vec<(Name, Name)> {
    let mut steps: Vec<(Name, Name)> = set_aside
        .iter()
        .map(|n| ((*n).clone(), aside(n, taken)))
        .collect();
    let mut pending: Vec<(Name, Name)> = moves.to_vec();
    let mut spare = 0;
    while !pending.is_empty() {
        let free = pending
            .iter()
            .position(|(_, f)| !pending.iter().any(|(o, _)| o == f));
        match free {
            Some(i) => steps.push(pending.remove(i)),
            None => {
                // every pending destination still holds a pending origin: a cycle
                let (o, _) = pending[0].clone();
                let t = spare_name(&o, "rename", taken, spare);
                spare += 1;
                steps.push((o, t.clone()));
                pending[0].0 = t;
            }
        }
    }
    steps
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
                "RENAME TABLE `shop`.`c` TO `shop`.`d`".into(),
                "DROP TABLE IF EXISTS `shop`.`a`".into(),
                "DROP VIEW IF EXISTS `shop`.`a`".into(),
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
            Route::Rewrite(vec![
                "DROP TABLE IF EXISTS `shop`.`a`".into(),
                "DROP VIEW IF EXISTS `shop`.`a`".into()
            ])
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

    /// Multi-step renames during a snapshot (a swap through a name that exists neither before
    /// nor after, a three-way rotation, chains into and out of the selection) against every
    /// mix of live, copied and unmigrated names: the target ends with what the source has.
    #[test]
    fn renames_by_their_net_effect() {
        let filter = Filter::new(&["shop".into()], &["shop.tmp_*".into()]).unwrap();
        let mut h = Horizons::default();
        for t in ["a", "b", "c"] {
            h.set_table("shop", t, at(100)); // copied before the events at 200: live
        }
        for t in ["late", "late2"] {
            h.set_table("shop", t, at(500)); // copied after them
        }
        h.set_listed_before(at(400)); // absent from the final listing: gone before 400
        let s = Scope {
            filter: &filter,
            horizons: &h,
        };
        let r = |sql: &str| route(&ddl(sql), &s, &at(200));
        let rw = |v: &[&str]| Route::Rewrite(v.iter().map(|x| x.to_string()).collect());
        // the soak's swap: `t` only passes through
        assert_eq!(
            r("RENAME TABLE a TO t, b TO a, t TO b"),
            rw(&["RENAME TABLE `shop`.`b` TO `shop`.`_migrate_rename_0`, `shop`.`a` TO `shop`.`b`, `shop`.`_migrate_rename_0` TO `shop`.`a`"])
        );
        // a rotation: a <- b <- c <- a
        assert_eq!(
            r("RENAME TABLE a TO t, b TO a, c TO b, t TO c"),
            rw(&["RENAME TABLE `shop`.`b` TO `shop`.`_migrate_rename_0`, `shop`.`c` TO `shop`.`b`, `shop`.`a` TO `shop`.`c`, `shop`.`_migrate_rename_0` TO `shop`.`a`"])
        );
        // all live (the passing name too, after the listing): as it is
        assert_eq!(
            route(&ddl("RENAME TABLE a TO t, b TO a, t TO b"), &s, &at(450)),
            Route::Apply
        );
        // every name already copied after it: nothing to do
        assert!(matches!(
            r("RENAME TABLE late TO t, late2 TO late, t TO late2"),
            Route::Skip(_)
        ));
        // a there and back: nothing changes
        assert!(matches!(r("RENAME TABLE a TO t, t TO a"), Route::Skip(_)));
        // a live name would receive a table whose copy is newer: impossible
        assert!(matches!(
            r("RENAME TABLE a TO t, late TO a, t TO late"),
            Route::Fail(..)
        ));
        // ... or one that is not migrated
        assert!(matches!(
            r("RENAME TABLE a TO t, other.x TO a, t TO other.x"),
            Route::Fail(..)
        ));
        // a live table moved out of the selection, another into its name: the old one is set
        // aside in the same statement and dropped after (a replay never drops the new one)
        assert_eq!(
            r("RENAME TABLE a TO other.a, b TO a"),
            rw(&[
                "RENAME TABLE `shop`.`a` TO `shop`.`_migrate_discarded_0`, `shop`.`b` TO `shop`.`a`",
                "DROP TABLE IF EXISTS `shop`.`_migrate_discarded_0`",
                "DROP VIEW IF EXISTS `shop`.`_migrate_discarded_0`"
            ])
        );
        // a live table moved onto a name copied later: the copy has it
        assert_eq!(
            r("RENAME TABLE a TO late"),
            rw(&[
                "DROP TABLE IF EXISTS `shop`.`a`",
                "DROP VIEW IF EXISTS `shop`.`a`"
            ])
        );
        // through an excluded name and back under another (after the listing: `d` is live) ...
        assert_eq!(
            route(&ddl("RENAME TABLE a TO tmp_a, tmp_a TO d"), &s, &at(450)),
            rw(&["RENAME TABLE `shop`.`a` TO `shop`.`d`"])
        );
        // ... and before it, where `d` was gone by the final listing: nothing of it stays
        assert_eq!(
            r("RENAME TABLE a TO tmp_a, tmp_a TO d"),
            rw(&[
                "DROP TABLE IF EXISTS `shop`.`a`",
                "DROP VIEW IF EXISTS `shop`.`a`"
            ])
        );
        // IF EXISTS: which pairs ran is unknown, so a mix stops; all live runs as it is
        assert!(matches!(
            r("RENAME TABLE IF EXISTS a TO t, b TO a, t TO b"),
            Route::Fail(..)
        ));
        assert_eq!(
            route(
                &ddl("RENAME TABLE IF EXISTS a TO t, b TO a, t TO b"),
                &s,
                &at(450)
            ),
            Route::Apply
        );
    }
}
