//! What an account may do, from `SHOW GRANTS` (the account's own grants and those of its
//! active role): privileges per scope (`*.*`, a database or database pattern, one table), and
//! which of the privileges migrate needs are missing where it needs them.

/// Where a grant applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Global,
    /// A database name or `LIKE` pattern (`shop%`, `shop\_1`).
    Database(String),
    Table(String, String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub privileges: Vec<String>,
    pub scope: Scope,
}

/// Parse the lines of `SHOW GRANTS`. Lines that grant roles, PROXY or routine privileges are
/// not about migrate's needs and are left out.
pub fn parse(lines: &[String]) -> Vec<Grant> {
    lines.iter().filter_map(|l| parse_line(l)).collect()
}

fn parse_line(line: &str) -> Option<Grant> {
    let rest = strip_prefix_ci(line.trim(), "GRANT ")?;
    let on = find_ci_outside_quotes(rest, " ON ")?;
    let privileges = split_privileges(&rest[..on]);
    let object = rest[on + 4..].trim_start();
    if strip_prefix_ci(object, "PROCEDURE ").is_some()
        || strip_prefix_ci(object, "FUNCTION ").is_some()
        || strip_prefix_ci(object, "PACKAGE ").is_some()
    {
        return None;
    }
    if privileges.iter().any(|p| p == "PROXY") {
        return None;
    }
    let object = strip_prefix_ci(object, "TABLE ").unwrap_or(object);
    let (first, after) = ident(object)?;
    let after = after.strip_prefix('.')?;
    let (second, _) = ident(after)?;
    let scope = match (first.as_str(), second.as_str()) {
        ("*", "*") => Scope::Global,
        (db, "*") => Scope::Database(db.to_string()),
        (db, t) => Scope::Table(db.to_string(), t.to_string()),
    };
    Some(Grant { privileges, scope })
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| s.get(prefix.len()..))
        .flatten()
}

/// Byte offset of `needle` (ASCII, any case) outside backquoted names and parentheses.
fn find_ci_outside_quotes(s: &str, needle: &str) -> Option<usize> {
    let b = s.as_bytes();
    let (mut quoted, mut depth) = (false, 0i32);
    for i in 0..b.len() {
        match b[i] {
            b'`' => quoted = !quoted,
            b'(' if !quoted => depth += 1,
            b')' if !quoted => depth -= 1,
            _ if !quoted
                && depth == 0
                && b.len() - i >= needle.len()
                && b[i..i + needle.len()].eq_ignore_ascii_case(needle.as_bytes()) =>
            {
                return Some(i);
            }
            _ => {}
        }
    }
    None
}

/// "SELECT (a, b), INSERT, REPLICATION SLAVE" -> ["SELECT", "INSERT", "REPLICATION SLAVE"]
/// (a column-level privilege is kept by name: it does not cover a whole table, see `covers`).
fn split_privileges(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut cur, mut depth) = (String::new(), 0);
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c);
            }
            ')' => {
                depth -= 1;
                cur.push(c);
            }
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
            }
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter()
        .map(|p| p.trim().to_ascii_uppercase())
        .filter(|p| !p.is_empty())
        .collect()
}

/// A backquoted name or `*` at the start of `s`, and what follows it.
fn ident(s: &str) -> Option<(String, &str)> {
    if let Some(rest) = s.strip_prefix('*') {
        return Some(("*".into(), rest));
    }
    let rest = s.strip_prefix('`')?;
    let mut name = String::new();
    let mut chars = rest.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '`' {
            if matches!(chars.peek(), Some((_, '`'))) {
                chars.next();
                name.push('`');
            } else {
                return Some((name, &rest[i + 1..]));
            }
        } else {
            name.push(c);
        }
    }
    None
}

/// MariaDB's database-name pattern in a grant: `%` and `_` are wildcards, `\` escapes them.
fn db_pattern_matches(pattern: &str, db: &str) -> bool {
    fn go(p: &[char], s: &[char]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some('%') => (0..=s.len()).any(|k| go(&p[1..], &s[k..])),
            Some('_') => !s.is_empty() && go(&p[1..], &s[1..]),
            Some('\\') if p.len() > 1 => s.first() == Some(&p[1]) && go(&p[2..], &s[1..]),
            Some(c) => s.first() == Some(c) && go(&p[1..], &s[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = db.chars().collect();
    go(&p, &s)
}

fn has(g: &Grant, privilege: &str) -> bool {
    g.privileges
        .iter()
        .any(|p| p == privilege || p == "ALL PRIVILEGES" || p == "ALL")
}

/// Whether `privilege` holds everywhere `scope` names. A table privilege is covered by a grant
/// on the table, its database or everything; a database one by its database or everything.
pub fn covers(grants: &[Grant], privilege: &str, scope: &Scope) -> bool {
    grants
        .iter()
        .filter(|g| has(g, privilege))
        .any(|g| match (&g.scope, scope) {
            (Scope::Global, _) => true,
            (Scope::Database(p), Scope::Database(db)) => db_pattern_matches(p, db),
            (Scope::Database(p), Scope::Table(db, _)) => db_pattern_matches(p, db),
            (Scope::Table(gd, gt), Scope::Table(db, t)) => gd == db && gt == t,
            _ => false,
        })
}

/// Whether the account writes through `read_only` (READ ONLY ADMIN; SHOW GRANTS spells it
/// with a space or an underscore depending on the version; ALL PRIVILEGES includes it).
pub fn writes_through_read_only(grants: &[Grant]) -> bool {
    covers(grants, "READ_ONLY ADMIN", &Scope::Global)
        || covers(grants, "READ ONLY ADMIN", &Scope::Global)
}

/// The privileges of `needed` not held on `scope`.
pub fn missing(grants: &[Grant], needed: &[&str], scope: &Scope) -> Vec<String> {
    needed
        .iter()
        .filter(|p| !covers(grants, p, scope))
        .map(|p| p.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(lines: &[&str]) -> Vec<Grant> {
        parse(&lines.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn scoped_grants_cover_their_databases_only() {
        let gs = g(&[
            "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO `mig`@`%` IDENTIFIED BY PASSWORD '*AB'",
            "GRANT SELECT, SHOW VIEW, EVENT ON `shop`.* TO `mig`@`%`",
            "GRANT SELECT ON `mysql`.`proc` TO `mig`@`%`",
            "GRANT ALL PRIVILEGES ON `_migrate`.* TO `mig`@`%`",
            "GRANT `reader` TO `mig`@`%`",
            "GRANT PROXY ON ''@'%' TO 'mig'@'%'",
            "GRANT EXECUTE ON PROCEDURE `shop`.`p` TO `mig`@`%`",
        ]);
        let shop = Scope::Database("shop".into());
        assert!(missing(&gs, &["SELECT", "SHOW VIEW", "EVENT"], &shop).is_empty());
        assert_eq!(
            missing(
                &gs,
                &["SELECT", "INSERT"],
                &Scope::Database("bigshop".into())
            ),
            vec!["SELECT", "INSERT"]
        );
        assert!(covers(&gs, "REPLICATION SLAVE", &Scope::Global));
        assert!(!covers(&gs, "SELECT", &Scope::Global));
        assert!(covers(
            &gs,
            "SELECT",
            &Scope::Table("mysql".into(), "proc".into())
        ));
        assert!(!covers(
            &gs,
            "SELECT",
            &Scope::Table("mysql".into(), "user".into())
        ));
        assert!(covers(&gs, "DROP", &Scope::Database("_migrate".into())));
        assert!(!covers(&gs, "DROP", &Scope::Database("_migrateX".into())));
    }

    #[test]
    fn patterns_quotes_and_columns() {
        let gs = g(&[
            "GRANT SELECT (`a`, `b`), INSERT ON `shop`.`t` TO `m`@`%`",
            "GRANT CREATE ON `shop\\_%`.* TO `m`@`%`",
            "GRANT UPDATE ON `we``ird db`.* TO `m`@`%`",
            "GRANT DELETE ON `상점`.* TO `m`@`%`",
        ]);
        assert!(covers(&gs, "CREATE", &Scope::Database("shop_kr".into())));
        assert!(!covers(&gs, "CREATE", &Scope::Database("shopXkr".into())));
        assert!(covers(&gs, "UPDATE", &Scope::Database("we`ird db".into())));
        assert!(covers(&gs, "DELETE", &Scope::Database("상점".into())));
        assert!(covers(
            &gs,
            "INSERT",
            &Scope::Table("shop".into(), "t".into())
        ));
        // a column privilege is not the table privilege
        assert!(!covers(
            &gs,
            "SELECT",
            &Scope::Table("shop".into(), "t".into())
        ));
        assert!(!covers(&gs, "INSERT", &Scope::Database("shop".into())));
    }

    #[test]
    fn all_privileges_everywhere() {
        let gs = g(&["GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` WITH GRANT OPTION"]);
        assert!(covers(&gs, "SET USER", &Scope::Global));
        assert!(covers(&gs, "SELECT", &Scope::Database("x".into())));
    }
}
