//! The query parser. It accepts the same language as clan-core's
//! `parse_selector` (`pkgs/clan-cli/clan_lib/flake/flake.py`), quirks
//! included, so queries written for clan-core mean the same here.

use std::fmt;

use crate::query::{Query, Selector, SetItem};

/// A query that does not follow the grammar; it knows where it went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid select query `{query}` at column {}: {kind}", self.column())]
pub struct ParseError {
    query: String,
    /// Characters (not bytes) before the offending one.
    offset: usize,
    kind: ParseErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// `*` and `}` end a selector: only `.` or the end may follow.
    ExpectedDot {
        after: char,
        found: char,
    },
    UnterminatedQuote,
    UnterminatedSet,
    /// A `\` with nothing after it to escape.
    DanglingEscape,
    /// Nix collapses an attribute set that has `outPath` to that string when
    /// it is part of a multi-select, so clan-core refuses it.
    OutPathInSet,
}

impl fmt::Display for ParseErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ExpectedDot { after, found } => {
                write!(
                    f,
                    "expected `.` or the end after `{after}`, found `{found}`"
                )
            }
            Self::UnterminatedQuote => f.write_str("this `\"` is never closed"),
            Self::UnterminatedSet => f.write_str("this `{` is never closed with `}`"),
            Self::DanglingEscape => f.write_str("`\\` at the end escapes nothing"),
            Self::OutPathInSet => f.write_str(
                "`outPath` cannot be part of a set `{…}` (Nix would collapse the attribute set \
                 to its outPath); select it on its own instead",
            ),
        }
    }
}

impl ParseError {
    pub fn kind(&self) -> &ParseErrorKind {
        &self.kind
    }

    /// 1-based column, counted in characters.
    pub fn column(&self) -> usize {
        self.offset + 1
    }

    /// The query with a caret under the offending character, for a terminal.
    pub fn caret(&self) -> String {
        format!("{}\n{}^", self.query, " ".repeat(self.offset))
    }
}

pub(crate) fn parse(query: &str) -> Result<Query, ParseError> {
    let mut cursor = Cursor {
        query,
        chars: query.chars().collect(),
        pos: 0,
    };
    let mut selectors = Vec::new();
    // Each turn starts a selector; a selector consumes the `.` after it, so a
    // trailing `.` is accepted and ignored, as in clan-core.
    while let Some(c) = cursor.peek() {
        match c {
            '.' => {
                cursor.pos += 1;
                selectors.push(Selector::Key(String::new()));
            }
            '*' => {
                cursor.pos += 1;
                selectors.push(Selector::All);
                cursor.end_of_selector('*')?;
            }
            '{' => {
                selectors.push(Selector::Set(cursor.set()?));
                cursor.end_of_selector('}')?;
            }
            '?' => {
                cursor.pos += 1;
                let mut key = String::new();
                cursor.bare(&mut key)?;
                selectors.push(Selector::OptionalKey(key));
            }
            '"' => {
                let mut key = String::new();
                cursor.quoted(&mut key)?;
                cursor.bare(&mut key)?;
                selectors.push(Selector::Key(key));
            }
            _ => {
                let mut key = String::new();
                cursor.bare(&mut key)?;
                selectors.push(Selector::Key(key));
            }
        }
    }
    Ok(Query { selectors })
}

struct Cursor<'a> {
    query: &'a str,
    chars: Vec<char>,
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    fn error(&self, offset: usize, kind: ParseErrorKind) -> ParseError {
        ParseError {
            query: self.query.to_owned(),
            offset,
            kind,
        }
    }

    fn end_of_selector(&mut self, after: char) -> Result<(), ParseError> {
        match self.next() {
            None | Some('.') => Ok(()),
            Some(found) => {
                Err(self.error(self.pos - 1, ParseErrorKind::ExpectedDot { after, found }))
            }
        }
    }

    /// The character after a `\` at `self.pos - 1`.
    fn escaped(&mut self) -> Result<char, ParseError> {
        self.next()
            .ok_or_else(|| self.error(self.pos - 1, ParseErrorKind::DanglingEscape))
    }

    /// An unquoted key up to and including the next `.`. Unlike clan-core,
    /// a `\` leading the key escapes too (clan-core keeps it literally there,
    /// which makes `\?x` mean the key `\?x`).
    fn bare(&mut self, key: &mut String) -> Result<(), ParseError> {
        while let Some(c) = self.next() {
            match c {
                '.' => break,
                '\\' => key.push(self.escaped()?),
                _ => key.push(c),
            }
        }
        Ok(())
    }

    /// A `"…"` string starting at the cursor, appended to `key`.
    fn quoted(&mut self, key: &mut String) -> Result<(), ParseError> {
        let open = self.pos;
        self.pos += 1;
        loop {
            match self.next() {
                None => return Err(self.error(open, ParseErrorKind::UnterminatedQuote)),
                Some('"') => return Ok(()),
                Some('\\') => key.push(self.escaped()?),
                Some(c) => key.push(c),
            }
        }
    }

    /// A `{…}` set starting at the cursor.
    fn set(&mut self) -> Result<Vec<SetItem>, ParseError> {
        let open = self.pos;
        self.pos += 1;
        let mut items = Vec::new();
        let mut key = String::new();
        // None until the member has content; a member with none is dropped
        // before `}` (so `{}` is empty) but kept before `,`, as in clan-core.
        let mut optional: Option<bool> = None;
        let mut start = self.pos;
        loop {
            let Some(c) = self.next() else {
                return Err(self.error(open, ParseErrorKind::UnterminatedSet));
            };
            match c {
                '?' if optional.is_none() => optional = Some(true),
                '\\' => {
                    key.push(self.escaped()?);
                    optional.get_or_insert(false);
                }
                '"' => {
                    self.pos -= 1;
                    self.quoted(&mut key)?;
                    optional.get_or_insert(false);
                }
                ',' | '}' => {
                    if c == ',' || optional.is_some() {
                        if key == "outPath" {
                            return Err(self.error(start, ParseErrorKind::OutPathInSet));
                        }
                        items.push(SetItem {
                            key: std::mem::take(&mut key),
                            optional: optional.unwrap_or(false),
                        });
                    }
                    if c == '}' {
                        return Ok(items);
                    }
                    optional = None;
                    start = self.pos;
                }
                _ => {
                    key.push(c);
                    optional.get_or_insert(false);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Selector {
        Selector::Key(k.into())
    }

    fn maybe(k: &str) -> Selector {
        Selector::OptionalKey(k.into())
    }

    fn item(k: &str) -> SetItem {
        SetItem {
            key: k.into(),
            optional: false,
        }
    }

    fn maybe_item(k: &str) -> SetItem {
        SetItem {
            key: k.into(),
            optional: true,
        }
    }

    fn selectors(text: &str) -> Vec<Selector> {
        parse(text).unwrap().selectors
    }

    fn error(text: &str) -> ParseError {
        parse(text).unwrap_err()
    }

    // Every case of clan-core's `test_parse_selector`
    // (pkgs/clan-cli/clan_lib/flake/flake_test.py).
    #[test]
    fn clan_core_parse_selector_cases() {
        assert_eq!(selectors("x"), [key("x")]);
        assert_eq!(selectors("?x"), [maybe("x")]);
        assert_eq!(selectors(r#""x""#), [key("x")]);
        assert_eq!(selectors("*"), [Selector::All]);
        assert_eq!(selectors("{x}"), [Selector::Set(vec![item("x")])]);
        assert_eq!(
            selectors("{x}.y"),
            [Selector::Set(vec![item("x")]), key("y")]
        );
        assert_eq!(selectors("x.y.z"), [key("x"), key("y"), key("z")]);
        assert_eq!(selectors("x.*"), [key("x"), Selector::All]);
        assert_eq!(selectors("*.x"), [Selector::All, key("x")]);
        assert_eq!(selectors("x.*.z"), [key("x"), Selector::All, key("z")]);
        assert_eq!(
            selectors("x.{y,z}"),
            [key("x"), Selector::Set(vec![item("y"), item("z")])]
        );
        assert_eq!(
            selectors("x.?zzz.{y,?z,x,*}"),
            [
                key("x"),
                maybe("zzz"),
                Selector::Set(vec![item("y"), maybe_item("z"), item("x"), item("*")]),
            ]
        );
        assert_eq!(
            selectors(r#"x."?zzz".?zzz\.asd..{y,\?z,"x,",*}"#),
            [
                key("x"),
                key("?zzz"),
                maybe("zzz.asd"),
                key(""),
                Selector::Set(vec![item("y"), item("?z"), item("x,"), item("*")]),
            ]
        );
    }

    #[test]
    fn clan_core_rejects_out_path_in_sets() {
        for text in [
            "{outPath}",
            "x.{y,outPath}",
            "a.b.{c,d,outPath,e}",
            "{?outPath}",
        ] {
            assert_eq!(error(text).kind(), &ParseErrorKind::OutPathInSet, "{text}");
        }
        let err = error("a.b.{c,d,outPath,e}");
        assert_eq!(err.column(), 10);
        assert_eq!(err.caret(), "a.b.{c,d,outPath,e}\n         ^");
        // Outside a set it is an ordinary key.
        assert_eq!(selectors("x.outPath"), [key("x"), key("outPath")]);
    }

    #[test]
    fn keys_quotes_and_escapes() {
        assert_eq!(selectors(r#""a.b".c"#), [key("a.b"), key("c")]);
        assert_eq!(selectors(r"a\.b.c"), [key("a.b"), key("c")]);
        assert_eq!(selectors(r"\?x"), [key("?x")]);
        assert_eq!(selectors(r#""a\"b\\""#), [key(r#"a"b\"#)]);
        // Special characters only count at the start of a selector.
        assert_eq!(
            selectors("a*b.c?d.e{f}"),
            [key("a*b"), key("c?d"), key("e{f}")]
        );
        assert_eq!(selectors(r#"a"b""#), [key(r#"a"b""#)]);
        assert_eq!(selectors(r#""a"b"#), [key("ab")]);
        assert_eq!(selectors(r#"?"a""#), [maybe(r#""a""#)]);
        assert_eq!(selectors("0.12"), [key("0"), key("12")]);
        assert_eq!(selectors("héllo.wörld"), [key("héllo"), key("wörld")]);
    }

    #[test]
    fn empty_selectors_and_dots() {
        assert_eq!(selectors(""), []);
        assert_eq!(selectors("a."), [key("a")]);
        assert_eq!(selectors("*."), [Selector::All]);
        assert_eq!(selectors("."), [key("")]);
        assert_eq!(selectors(".a"), [key(""), key("a")]);
        assert_eq!(selectors("a..b"), [key("a"), key(""), key("b")]);
        assert_eq!(selectors(r#"a."""#), [key("a"), key("")]);
        assert_eq!(selectors("?"), [maybe("")]);
    }

    #[test]
    fn sets() {
        assert_eq!(selectors("{}"), [Selector::Set(vec![])]);
        assert_eq!(selectors("{a,}"), [Selector::Set(vec![item("a")])]);
        assert_eq!(selectors("{,}"), [Selector::Set(vec![item("")])]);
        assert_eq!(selectors("{?}"), [Selector::Set(vec![maybe_item("")])]);
        assert_eq!(selectors(r#"{""}"#), [Selector::Set(vec![item("")])]);
        assert_eq!(
            selectors("{a.b,c*}"),
            [Selector::Set(vec![item("a.b"), item("c*")])]
        );
        assert_eq!(
            selectors("{a?,??}"),
            [Selector::Set(vec![item("a?"), maybe_item("?")])]
        );
        assert_eq!(selectors(r#"{"x,"y}"#), [Selector::Set(vec![item("x,y")])]);
        assert_eq!(selectors(r"{a\}b}"), [Selector::Set(vec![item("a}b")])]);
    }

    #[test]
    fn errors_point_at_the_offending_character() {
        let err = error("a.*b");
        assert_eq!(
            err.kind(),
            &ParseErrorKind::ExpectedDot {
                after: '*',
                found: 'b'
            }
        );
        assert_eq!(err.column(), 4);
        assert_eq!(err.caret(), "a.*b\n   ^");
        assert_eq!(
            err.to_string(),
            "invalid select query `a.*b` at column 4: expected `.` or the end after `*`, found `b`"
        );

        let err = error("x.{a,b}c");
        assert_eq!(
            err.kind(),
            &ParseErrorKind::ExpectedDot {
                after: '}',
                found: 'c'
            }
        );
        assert_eq!(err.column(), 8);

        let err = error("x.{a,b");
        assert_eq!(err.kind(), &ParseErrorKind::UnterminatedSet);
        assert_eq!(err.column(), 3);

        let err = error(r#"x."a.b"#);
        assert_eq!(err.kind(), &ParseErrorKind::UnterminatedQuote);
        assert_eq!(err.column(), 3);

        let err = error(r#"{"a}"#);
        assert_eq!(err.kind(), &ParseErrorKind::UnterminatedQuote);
        assert_eq!(err.column(), 2);

        for (text, column) in [(r"a\", 2), (r#""a\"#, 3), (r"{a\", 3), (r"?\", 2)] {
            let err = error(text);
            assert_eq!(err.kind(), &ParseErrorKind::DanglingEscape, "{text}");
            assert_eq!(err.column(), column, "{text}");
        }
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let err = error("ä.ö.*x");
        assert_eq!(err.column(), 6);
        assert_eq!(err.caret(), "ä.ö.*x\n     ^");
    }
}
