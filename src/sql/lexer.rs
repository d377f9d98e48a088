//! A tokenizer for the head of MariaDB statements, good enough to classify every statement a
//! binlog QUERY event can hold and to rewrite a clause in place: comments (`/* */`, `-- `,
//! `#`) are skipped, executable comments (`/*! ... */`, `/*!50001 ... */`, `/*M!100500 ... */`)
//! are read as the SQL they hold, strings and quoted identifiers are single tokens.
//!
//! It works on bytes: statements arrive in the source session's `character_set_client`, and
//! every ASCII byte means the same in the character sets MariaDB accepts there (utf8mb3/4,
//! latin1, euckr, ...): multi-byte characters only use bytes >= 0x80 and are treated as
//! identifier characters. Each token keeps its byte range, so a rewrite splices the original
//! bytes and changes nothing else.

/// What a token is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tok {
    /// A bare word: keyword or unquoted identifier (as written).
    Word(Vec<u8>),
    /// A `backtick` (or, under ANSI_QUOTES, "double-quoted") identifier, unescaped.
    Ident(Vec<u8>),
    /// A string literal, unescaped as far as the classifier needs (contents only).
    Str(Vec<u8>),
    /// A number (digits, with `.`, exponent or hex forms).
    Number(Vec<u8>),
    /// `@name` or `@@name` (with the at signs).
    Var(Vec<u8>),
    /// Any other single byte (`(`, `)`, `,`, `.`, `=`, `;`, ...).
    Punct(u8),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub tok: Tok,
    /// Byte range in the statement.
    pub start: usize,
    pub end: usize,
}

impl Token {
    /// The upper-cased word, if this token is a bare word.
    pub fn keyword(&self) -> Option<String> {
        match &self.tok {
            Tok::Word(w) => Some(String::from_utf8_lossy(w).to_ascii_uppercase()),
            _ => None,
        }
    }
    pub fn is_kw(&self, kw: &str) -> bool {
        match &self.tok {
            Tok::Word(w) => w.eq_ignore_ascii_case(kw.as_bytes()),
            _ => false,
        }
    }
    pub fn is_punct(&self, c: u8) -> bool {
        self.tok == Tok::Punct(c)
    }
    /// The name this token spells if it can be an identifier (bare word or quoted).
    pub fn name(&self) -> Option<&[u8]> {
        match &self.tok {
            Tok::Word(w) | Tok::Ident(w) => Some(w),
            _ => None,
        }
    }
}

/// Lexing options that come from the session's sql_mode.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mode {
    /// `"x"` is an identifier, not a string.
    pub ansi_quotes: bool,
    /// Backslash is an ordinary character inside strings.
    pub no_backslash_escapes: bool,
}

impl Mode {
    /// From a sql_mode bitmask (QUERY event status variable).
    pub fn from_sql_mode(bits: u64) -> Mode {
        const ANSI_QUOTES: u64 = 0x4;
        const NO_BACKSLASH_ESCAPES: u64 = 0x0010_0000;
        Mode {
            ansi_quotes: bits & ANSI_QUOTES != 0,
            no_backslash_escapes: bits & NO_BACKSLASH_ESCAPES != 0,
        }
    }
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// Tokenize `sql`, stopping after `max` tokens.
/// The (first, second) names of every chain of quoted names joined by dots in `sql`
/// (`a`.`b` and `a`.`b`.`c` give (a, b)): in a definition MariaDB stores, such as a view's,
/// the database and table of what it reads (and, in two-name chains, also `alias`.`column`,
/// which the caller tells apart by knowing the databases).
pub fn qualified_names(sql: &[u8]) -> Vec<(String, String)> {
    let toks = tokenize(sql, Mode::default(), usize::MAX);
    let ident = |i: usize| match toks.get(i).map(|t| &t.tok) {
        Some(Tok::Ident(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    };
    let dot = |i: usize| toks.get(i).is_some_and(|t| t.is_punct(b'.'));
    let mut out = Vec::new();
    for i in 0..toks.len() {
        if i > 0 && dot(i - 1) {
            continue; // inside a chain
        }
        if let (Some(a), true, Some(b)) = (ident(i), dot(i + 1), ident(i + 2)) {
            out.push((a, b));
        }
    }
    out
}

pub fn tokenize(sql: &[u8], mode: Mode, max: usize) -> Vec<Token> {
    let mut out = Vec::new();
    let n = sql.len();
    let mut i = 0;
    while i < n && out.len() < max {
        let c = sql[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'/' && sql.get(i + 1) == Some(&b'*') {
            // `/*!NNNNN` and `/*M!NNNNNN` hold SQL the server executes: read their inside
            let exec = match (sql.get(i + 2), sql.get(i + 3)) {
                (Some(b'!'), _) => Some(i + 3),
                (Some(b'M'), Some(b'!')) => Some(i + 4),
                _ => None,
            };
            if let Some(mut j) = exec {
                while j < n && sql[j].is_ascii_digit() {
                    j += 1;
                }
                i = j;
            } else {
                i += 2;
                while i + 1 < n && !(sql[i] == b'*' && sql[i + 1] == b'/') {
                    i += 1;
                }
                i = (i + 2).min(n);
            }
            continue;
        }
        if c == b'*' && sql.get(i + 1) == Some(&b'/') {
            // end of an executable comment
            i += 2;
            continue;
        }
        if c == b'#'
            || (c == b'-'
                && sql.get(i + 1) == Some(&b'-')
                && sql.get(i + 2).is_none_or(|b| b.is_ascii_whitespace()))
        {
            while i < n && sql[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if c == b'`' || (c == b'"' && mode.ansi_quotes) {
            let (body, j) = quoted(sql, i, c, false);
            out.push(Token {
                tok: Tok::Ident(body),
                start,
                end: j,
            });
            i = j;
            continue;
        }
        if c == b'\'' || c == b'"' {
            let (body, j) = quoted(sql, i, c, !mode.no_backslash_escapes);
            out.push(Token {
                tok: Tok::Str(body),
                start,
                end: j,
            });
            i = j;
            continue;
        }
        if c == b'@' {
            let mut j = i + 1;
            if sql.get(j) == Some(&b'@') {
                j += 1;
            }
            if matches!(sql.get(j), Some(b'`' | b'\'' | b'"')) {
                let q = sql[j];
                let (_, k) = quoted(sql, j, q, q != b'`' && !mode.no_backslash_escapes);
                j = k;
            } else {
                while j < n && (is_ident_byte(sql[j]) || sql[j] == b'.') {
                    j += 1;
                }
            }
            out.push(Token {
                tok: Tok::Var(sql[i..j].to_vec()),
                start,
                end: j,
            });
            i = j;
            continue;
        }
        if c.is_ascii_digit() {
            let mut j = i;
            while j < n && (sql[j].is_ascii_alphanumeric() || sql[j] == b'.' || sql[j] == b'_') {
                j += 1;
            }
            // `1abc` is an identifier in MariaDB when it is not a number
            let word = &sql[i..j];
            let numeric = word
                .iter()
                .all(|b| b.is_ascii_digit() || *b == b'.' || *b == b'e' || *b == b'E')
                || word.starts_with(b"0x")
                || word.starts_with(b"0b");
            while !numeric && j < n && is_ident_byte(sql[j]) {
                j += 1;
            }
            out.push(Token {
                tok: if numeric {
                    Tok::Number(sql[i..j].to_vec())
                } else {
                    Tok::Word(sql[i..j].to_vec())
                },
                start,
                end: j,
            });
            i = j;
            continue;
        }
        if is_ident_byte(c) {
            let mut j = i;
            while j < n && is_ident_byte(sql[j]) {
                j += 1;
            }
            // introducers and hex/bit literals: _utf8mb4'..', X'..', B'..', N'..'
            if sql.get(j) == Some(&b'\'') {
                let (body, k) = quoted(sql, j, b'\'', !mode.no_backslash_escapes);
                out.push(Token {
                    tok: Tok::Str(body),
                    start,
                    end: k,
                });
                i = k;
                continue;
            }
            out.push(Token {
                tok: Tok::Word(sql[i..j].to_vec()),
                start,
                end: j,
            });
            i = j;
            continue;
        }
        out.push(Token {
            tok: Tok::Punct(c),
            start,
            end: i + 1,
        });
        i += 1;
    }
    out
}

/// A quoted token starting at `i` (the quote byte `q`): its unescaped body and the index after
/// the closing quote. A doubled quote is one quote; with `backslash`, `\x` escapes x.
fn quoted(sql: &[u8], i: usize, q: u8, backslash: bool) -> (Vec<u8>, usize) {
    let mut body = Vec::new();
    let mut j = i + 1;
    while j < sql.len() {
        let b = sql[j];
        if backslash && b == b'\\' && j + 1 < sql.len() {
            body.push(sql[j + 1]);
            j += 2;
            continue;
        }
        if b == q {
            if sql.get(j + 1) == Some(&q) {
                body.push(q);
                j += 2;
                continue;
            }
            return (body, j + 1);
        }
        body.push(b);
        j += 1;
    }
    (body, j)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_names_of_a_stored_view_definition() {
        let def = "select `vb`.`x`.`id` AS `id`,`a`.`n` AS `n` from (`vb`.`x` join `va`.`t` `a`) where `vb`.`x`.`id` > 1 and 'x'.'y' = `f`()";
        assert_eq!(
            qualified_names(def.as_bytes()),
            vec![
                ("vb".to_string(), "x".to_string()),
                ("a".to_string(), "n".to_string()),
                ("vb".to_string(), "x".to_string()),
                ("va".to_string(), "t".to_string()),
                ("vb".to_string(), "x".to_string()),
            ]
        );
    }

    fn words(sql: &str) -> Vec<String> {
        tokenize(sql.as_bytes(), Mode::default(), 100)
            .iter()
            .map(|t| match &t.tok {
                Tok::Word(w) => String::from_utf8_lossy(w).to_string(),
                Tok::Ident(w) => format!("`{}`", String::from_utf8_lossy(w)),
                Tok::Str(w) => format!("'{}'", String::from_utf8_lossy(w)),
                Tok::Number(w) => String::from_utf8_lossy(w).to_string(),
                Tok::Var(w) => String::from_utf8_lossy(w).to_string(),
                Tok::Punct(c) => (*c as char).to_string(),
            })
            .collect()
    }

    #[test]
    fn comments_quotes_and_executable_comments() {
        assert_eq!(
            words("/* x */ TRUNCATE -- c\n a # d\n"),
            vec!["TRUNCATE", "a"]
        );
        assert_eq!(
            words("/*!40000 ALTER TABLE `a``b` DISABLE KEYS */"),
            vec!["ALTER", "TABLE", "`a`b`", "DISABLE", "KEYS"]
        );
        assert_eq!(
            words("/*M!100500 CREATE */ SEQUENCE s"),
            vec!["CREATE", "SEQUENCE", "s"]
        );
        assert_eq!(
            words("COMMENT 'it''s \\' x' DO"),
            vec!["COMMENT", "'it's ' x'", "DO"]
        );
        assert_eq!(words("a-b--1"), vec!["a", "-", "b", "-", "-", "1"]);
        assert_eq!(
            words("SET @x=1, @@session.y = _utf8mb4'z'"),
            vec!["SET", "@x", "=", "1", ",", "@@session.y", "=", "'z'"]
        );
        assert_eq!(words("1e5 1x"), vec!["1e5", "1x"]);
        let ansi = tokenize(
            b"\"t\"",
            Mode {
                ansi_quotes: true,
                no_backslash_escapes: false,
            },
            5,
        );
        assert_eq!(ansi[0].tok, Tok::Ident(b"t".to_vec()));
        let nbe = tokenize(
            b"'a\\' b",
            Mode {
                ansi_quotes: false,
                no_backslash_escapes: true,
            },
            5,
        );
        assert_eq!(nbe[0].tok, Tok::Str(b"a\\".to_vec()));
        // multi-byte identifiers (euckr bytes) are one word
        let k = tokenize(b"DROP TABLE \xc7\xd1\xb1\xdb", Mode::default(), 5);
        assert_eq!(k[2].tok, Tok::Word(b"\xc7\xd1\xb1\xdb".to_vec()));
    }
}
