//! Identifier quoting. Every database, table and column name that reaches SQL goes through here.

/// `name` -> `` `name` `` with embedded backticks doubled. Safe for any UTF-8 name
/// (spaces, quotes, reserved words, Korean).
pub fn ident(name: &str) -> String {
    let mut s = String::with_capacity(name.len() + 2);
    s.push('`');
    for c in name.chars() {
        if c == '`' {
            s.push('`');
        }
        s.push(c);
    }
    s.push('`');
    s
}

/// `db`.`table`
pub fn table(db: &str, table: &str) -> String {
    format!("{}.{}", ident(db), ident(table))
}

/// A string literal for names and settings (not for row values: those go through value::encode).
pub fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            _ => out.push(c),
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn quotes() {
        assert_eq!(ident("a`b"), "`a``b`");
        assert_eq!(table("상점", "order items"), "`상점`.`order items`");
        assert_eq!(string("it's\\"), "'it''s\\\\'");
    }
}
