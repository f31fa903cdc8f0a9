//! The parsed form of a query and its canonical printed form.

use std::fmt::{self, Write as _};
use std::str::FromStr;

use crate::ParseError;

/// A parsed select query: a path of selectors applied left to right.
///
/// Only built by [`crate::parse`], so every `Query` prints (via `Display`) to
/// a canonical string that parses back to an equal `Query`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Query {
    pub(crate) selectors: Vec<Selector>,
}

/// One step of a query; it selects one level down.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Selector {
    /// `*`: every key of an object or every element of a list.
    All,
    /// `name`, `"a.b"` or `0`: one key, or one list index; descends without
    /// adding a level to the result.
    Key(String),
    /// `?name`: like [`Selector::Key`], but wraps the result as
    /// `{name: …}`, and yields `{}` when the key is missing.
    OptionalKey(String),
    /// `{a,?b}`: several keys (or list indices) at once.
    Set(Vec<SetItem>),
}

/// One member of a [`Selector::Set`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SetItem {
    pub key: String,
    /// `?key`: skipped instead of an error when missing.
    pub optional: bool,
}

impl Query {
    pub fn selectors(&self) -> &[Selector] {
        &self.selectors
    }
}

impl FromStr for Query {
    type Err = ParseError;

    fn from_str(query: &str) -> Result<Self, ParseError> {
        crate::parse(query)
    }
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, selector) in self.selectors.iter().enumerate() {
            if i > 0 {
                f.write_char('.')?;
            }
            write!(f, "{selector}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::All => f.write_char('*'),
            Selector::Key(key) => write_key(f, key),
            Selector::OptionalKey(key) => {
                // After `?` quotes are literal, so only `.` and `\` need escaping.
                f.write_char('?')?;
                write_escaped(f, key, &['.', '\\'])
            }
            Selector::Set(items) => {
                f.write_char('{')?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_char(',')?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_char('}')
            }
        }
    }
}

impl fmt::Display for SetItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SPECIAL: [char; 4] = ['\\', '"', ',', '}'];
        if self.optional {
            f.write_char('?')?;
            return write_escaped(f, &self.key, &SPECIAL);
        }
        if self.key.is_empty() {
            // A bare empty member would vanish (`{}` is the empty set).
            return f.write_str("\"\"");
        }
        if self.key.starts_with('?') {
            f.write_char('\\')?;
        }
        write_escaped(f, &self.key, &SPECIAL)
    }
}

/// Prints a top-level key bare when that reads back the same, quoted otherwise.
pub(crate) fn write_key(f: &mut impl fmt::Write, key: &str) -> fmt::Result {
    let bare =
        !key.is_empty() && !key.starts_with(['*', '?', '{']) && !key.contains(['.', '\\', '"']);
    if bare {
        return f.write_str(key);
    }
    f.write_char('"')?;
    write_escaped(f, key, &['"', '\\'])?;
    f.write_char('"')
}

fn write_escaped(f: &mut impl fmt::Write, text: &str, special: &[char]) -> fmt::Result {
    for c in text.chars() {
        if special.contains(&c) {
            f.write_char('\\')?;
        }
        f.write_char(c)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            // Dense in the characters the grammar treats specially.
            "[a-z0-9.\\\\\"?*{},\\- ]{0,6}",
            any::<String>(),
        ]
    }

    fn set_item() -> impl Strategy<Value = SetItem> {
        // clan-core rejects `outPath` inside a set, so a Query never holds one.
        (
            key().prop_filter("outPath in a set", |k| k != "outPath"),
            any::<bool>(),
        )
            .prop_map(|(key, optional)| SetItem { key, optional })
    }

    fn selector() -> impl Strategy<Value = Selector> {
        prop_oneof![
            Just(Selector::All),
            key().prop_map(Selector::Key),
            key().prop_map(Selector::OptionalKey),
            prop::collection::vec(set_item(), 0..4).prop_map(Selector::Set),
        ]
    }

    fn query() -> impl Strategy<Value = Query> {
        prop::collection::vec(selector(), 0..6).prop_map(|selectors| Query { selectors })
    }

    proptest! {
        #[test]
        fn display_parses_back_to_the_same_query(query in query()) {
            let printed = query.to_string();
            prop_assert_eq!(crate::parse(&printed), Ok(query), "printed as {}", printed);
        }

        #[test]
        fn any_parsed_query_prints_canonically(text in "[a-z0-9.\\\\\"?*{},]{0,12}") {
            if let Ok(query) = crate::parse(&text) {
                let printed = query.to_string();
                prop_assert_eq!(crate::parse(&printed), Ok(query), "{} printed as {}", text, printed);
            }
        }
    }

    fn canonical(text: &str) -> String {
        crate::parse(text).unwrap().to_string()
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(canonical("a.b.c"), "a.b.c");
        assert_eq!(canonical(r#""a.b".c"#), r#""a.b".c"#);
        assert_eq!(canonical(r"a\.b.c"), r#""a.b".c"#);
        assert_eq!(canonical(r#""a"b"#), "ab");
        assert_eq!(canonical("a."), "a");
        assert_eq!(canonical("a..b"), r#"a."".b"#);
        assert_eq!(canonical(r#""*".x"#), r#""*".x"#);
        assert_eq!(canonical(r"?a\.b"), r"?a\.b");
        assert_eq!(canonical(r#"{"a,b",\?c,?d\}}"#), r"{a\,b,\?c,?d\}}");
        assert_eq!(canonical(r#"{"",x}"#), r#"{"",x}"#);
        assert_eq!(canonical("{a,}"), "{a}");
        assert_eq!(canonical(""), "");
    }
}
