//! Applying a query to a JSON value. The result shapes follow clan-core's
//! `FlakeCacheEntry.select` (`pkgs/clan-cli/clan_lib/flake/flake.py`) and
//! its tests: a plain key descends; `*`, `{…}` and `?key` keep the keys they
//! selected as a level of the result (a list stays a list).

use std::fmt;

use serde_json::{Map, Value};

use crate::query::{write_key, Query, Selector, SetItem};

/// Why a query does not fit the value it was applied to. `path` is the
/// concrete path walked so far (`machines.web01`, with `*` resolved),
/// printed in query syntax; empty means the top level.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SelectError {
    #[error("{}", missing_key(path, key, available, suggestion.as_deref()))]
    MissingKey {
        path: String,
        key: String,
        /// The keys that do exist there, in document order.
        available: Vec<String>,
        /// The closest of `available`, when one is close.
        suggestion: Option<String>,
    },
    #[error(
        "index {index} is out of range at {}: the list has {len} elements",
        at(path)
    )]
    IndexOutOfRange {
        path: String,
        index: String,
        len: usize,
    },
    #[error(
        "`{key}` is not a list index at {}: the list has {len} elements; select one by number or all with `*`",
        at(path)
    )]
    NotAnIndex {
        path: String,
        key: String,
        len: usize,
    },
    #[error("cannot select `{selector}` at {}: the value there is {found}, not an attribute set or list", at(path))]
    NotAContainer {
        path: String,
        selector: String,
        found: &'static str,
    },
}

fn at(path: &str) -> String {
    if path.is_empty() {
        "the top level".to_owned()
    } else {
        format!("`{path}`")
    }
}

/// How many existing keys an error message lists before eliding the rest.
const LISTED_KEYS: usize = 12;

fn missing_key(path: &str, key: &str, available: &[String], suggestion: Option<&str>) -> String {
    let mut message = format!("attribute `{key}` missing at {}", at(path));
    if let Some(suggestion) = suggestion {
        message.push_str(&format!("; did you mean `{suggestion}`?"));
    }
    if available.is_empty() {
        message.push_str(" (the attribute set there is empty)");
    } else {
        let listed: Vec<String> = available
            .iter()
            .take(LISTED_KEYS)
            .map(|k| format!("`{k}`"))
            .collect();
        message.push_str(&format!(" (it has {}", listed.join(", ")));
        if available.len() > LISTED_KEYS {
            message.push_str(&format!(" and {} more", available.len() - LISTED_KEYS));
        }
        message.push(')');
    }
    message
}

/// The existing key most like `key`, if any is alike enough to suggest.
fn closest<'a>(key: &str, available: impl Iterator<Item = &'a String>) -> Option<String> {
    available
        .map(|candidate| (strsim::jaro_winkler(key, candidate), candidate))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate.clone())
}

impl Query {
    /// Selects from `value`; the result is a new value, `value` is untouched.
    pub fn apply(&self, value: &Value) -> Result<Value, SelectError> {
        apply(&self.selectors, value, &mut Path::default())
    }
}

/// The concrete keys walked so far, for error messages.
#[derive(Default)]
struct Path(Vec<String>);

impl Path {
    fn within<T>(&mut self, key: &str, f: impl FnOnce(&mut Self) -> T) -> T {
        self.0.push(key.to_owned());
        let result = f(self);
        self.0.pop();
        result
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, key) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write_key(f, key)?;
        }
        Ok(())
    }
}

fn apply(selectors: &[Selector], value: &Value, path: &mut Path) -> Result<Value, SelectError> {
    let Some((selector, rest)) = selectors.split_first() else {
        return Ok(value.clone());
    };
    match selector {
        Selector::Key(key) => {
            let child = child(value, key, path, selector)?;
            path.within(key, |path| apply(rest, child, path))
        }
        Selector::OptionalKey(key) => match optional_child(value, key) {
            Some(child) => {
                let selected = path.within(key, |path| apply(rest, child, path))?;
                Ok(Value::Object(Map::from_iter([(key.clone(), selected)])))
            }
            None => Ok(Value::Object(Map::new())),
        },
        Selector::All => match value {
            Value::Object(map) => {
                let mut result = Map::new();
                for (key, child) in map {
                    insert(&mut result, key, child, path, rest)?;
                }
                Ok(Value::Object(result))
            }
            Value::Array(list) => list
                .iter()
                .enumerate()
                .map(|(index, child)| {
                    path.within(&index.to_string(), |path| apply(rest, child, path))
                })
                .collect::<Result<_, _>>()
                .map(Value::Array),
            other => Err(not_a_container(other, path, selector)),
        },
        Selector::Set(items) => match value {
            Value::Object(map) => {
                let mut result = Map::new();
                for SetItem { key, optional } in items {
                    match map.get(key) {
                        Some(child) => insert(&mut result, key, child, path, rest)?,
                        None if *optional => {}
                        None => return Err(missing(map, key, path)),
                    }
                }
                Ok(Value::Object(result))
            }
            Value::Array(list) => {
                let mut result = Vec::new();
                for SetItem { key, optional } in items {
                    if *optional && optional_child(value, key).is_none() {
                        continue;
                    }
                    let child = element(list, key, path)?;
                    result.push(path.within(key, |path| apply(rest, child, path))?);
                }
                Ok(Value::Array(result))
            }
            // Nothing is required of a scalar by an all-optional (or empty) set.
            _ if items.iter().all(|item| item.optional) => Ok(Value::Object(Map::new())),
            other => Err(not_a_container(other, path, selector)),
        },
    }
}

/// Adds `key` to an object being built by `*` or `{…}`.
fn insert(
    result: &mut Map<String, Value>,
    key: &str,
    child: &Value,
    path: &mut Path,
    rest: &[Selector],
) -> Result<(), SelectError> {
    let selected = path.within(key, |path| apply(rest, child, path))?;
    // clan-core drops a null whose optional selection found nothing:
    // `x.*.?a` over `{y: {a: 1}, z: null}` is `{y: {a: 1}}` (test_select).
    let nothing_from_null = child.is_null() && selected.as_object().is_some_and(Map::is_empty);
    if !nothing_from_null {
        result.insert(key.to_owned(), selected);
    }
    Ok(())
}

fn child<'v>(
    value: &'v Value,
    key: &str,
    path: &Path,
    selector: &Selector,
) -> Result<&'v Value, SelectError> {
    match value {
        Value::Object(map) => map.get(key).ok_or_else(|| missing(map, key, path)),
        Value::Array(list) => element(list, key, path),
        other => Err(not_a_container(other, path, selector)),
    }
}

fn optional_child<'v>(value: &'v Value, key: &str) -> Option<&'v Value> {
    match value {
        Value::Object(map) => map.get(key),
        Value::Array(list) => list.get(index(key)?.ok()?),
        _ => None,
    }
}

/// `Some(Ok(i))` for a list index as clan-core writes them (`0`, `12`, not
/// `012`); `Some(Err(()))` for digits too large to be an index at all.
fn index(key: &str) -> Option<Result<usize, ()>> {
    let canonical = !key.is_empty()
        && key.bytes().all(|b| b.is_ascii_digit())
        && (key == "0" || !key.starts_with('0'));
    canonical.then(|| key.parse().map_err(|_| ()))
}

fn element<'v>(list: &'v [Value], key: &str, path: &Path) -> Result<&'v Value, SelectError> {
    let out_of_range = || SelectError::IndexOutOfRange {
        path: path.to_string(),
        index: key.to_owned(),
        len: list.len(),
    };
    match index(key) {
        Some(Ok(i)) => list.get(i).ok_or_else(out_of_range),
        Some(Err(())) => Err(out_of_range()),
        None => Err(SelectError::NotAnIndex {
            path: path.to_string(),
            key: key.to_owned(),
            len: list.len(),
        }),
    }
}

fn missing(map: &Map<String, Value>, key: &str, path: &Path) -> SelectError {
    SelectError::MissingKey {
        path: path.to_string(),
        key: key.to_owned(),
        available: map.keys().cloned().collect(),
        suggestion: closest(key, map.keys()),
    }
}

fn not_a_container(value: &Value, path: &Path, selector: &Selector) -> SelectError {
    SelectError::NotAContainer {
        path: path.to_string(),
        selector: selector.to_string(),
        found: match value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "a list",
            Value::Object(_) => "an attribute set",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn select(query: &str, value: &Value) -> Result<Value, SelectError> {
        crate::parse(query).unwrap().apply(value)
    }

    fn ok(query: &str, value: &Value) -> Value {
        select(query, value).unwrap_or_else(|e| panic!("{query}: {e}"))
    }

    /// The document clan-core's `test_select` builds in its cache
    /// (pkgs/clan-cli/clan_lib/flake/flake_test.py).
    fn clan_core_doc() -> Value {
        json!({
            "a": {"b": {"c": "bla"}},
            "testdict": {"x": {"y": [123, 345, 456], "z": "bla"}},
            "testdict2": {"x": {"y": {"a": 1, "b": 2}, "z": null}, "n": {}},
        })
    }

    #[test]
    fn clan_core_test_select() {
        let doc = clan_core_doc();
        let cases = [
            ("a.b.c", json!("bla")),
            ("a.b", json!({"c": "bla"})),
            ("a", json!({"b": {"c": "bla"}})),
            ("a.b.?c", json!({"c": "bla"})),
            ("a.?b.?c", json!({"b": {"c": "bla"}})),
            ("a.?c", json!({})),
            ("a.?x.c", json!({})),
            ("a.*", json!({"b": {"c": "bla"}})),
            ("a.*.*", json!({"b": {"c": "bla"}})),
            ("a.*.c", json!({"b": "bla"})),
            ("a.b.*", json!({"c": "bla"})),
            ("a.{b}.c", json!({"b": "bla"})),
            ("a.{b}.{c}", json!({"b": {"c": "bla"}})),
            ("a.b.{c}", json!({"c": "bla"})),
            ("a.{?b}.c", json!({"b": "bla"})),
            ("a.{?b,?x}.c", json!({"b": "bla"})),
            ("testdict.x.z", json!("bla")),
            ("testdict.x.y.0", json!(123)),
            ("testdict2.n", json!({})),
            ("testdict2.?n", json!({"n": {}})),
            ("testdict2.x.*.?a", json!({"y": {"a": 1}})),
            ("testdict2.x.z.?a", json!({})),
            ("testdict2.x.z.{?a}", json!({})),
            ("testdict2.x.z.{}", json!({})),
        ];
        for (query, expected) in cases {
            assert_eq!(ok(query, &doc), expected, "{query}");
        }
        for query in [
            "a.b.x",
            "a.b.c.x",
            "a.{b,x}.c",
            "testdict.x.z.z",
            "testdict.x.z.1",
            "testdict2.x.z.a",
            "testdict2.x.z.{a}",
            "testdict2.x.z.{a,?b}",
        ] {
            assert!(select(query, &doc).is_err(), "{query} should fail");
        }
    }

    #[test]
    fn issue_examples() {
        let doc = json!({"machines": {"a": {"tags": [1]}, "b": {"tags": [2]}}});
        assert_eq!(ok("machines.*.tags", &doc), json!({"a": [1], "b": [2]}));
        assert_eq!(ok("machines.a.tags", &doc), json!([1]));
        assert_eq!(ok("machines.{a,?zz}.tags", &doc), json!({"a": [1]}));
        assert_eq!(ok("machines.?zz.tags", &doc), json!({}));
        assert_eq!(ok("machines.?a.tags", &doc), json!({"a": [1]}));
        // The rest of the table in docs/select.md.
        assert_eq!(ok("machines.a.tags.0", &doc), json!(1));
        assert_eq!(ok("machines.*.tags.*", &doc), json!({"a": [1], "b": [2]}));
        assert_eq!(ok("machines.a.?tags", &doc), json!({"tags": [1]}));
        assert!(select("machines.{a,zz}.tags", &doc).is_err());
        assert_eq!(ok("", &doc), doc);
    }

    // The examples of `clan select --help` (pkgs/clan-cli/clan_cli/cli.py),
    // `inputs.*.?_type` from flake.py and the query of
    // `test_conditional_all_selector`.
    #[test]
    fn clan_core_cli_examples() {
        let doc = json!({
            "nixosConfigurations": {
                "jon": {"config": {
                    "networking": {"hostName": "jon"},
                    "clan": {"core": {"vars": {"generators": {
                        "ssh": {"name": "ssh"}, "wifi": {"name": "wifi"}
                    }}}},
                    "environment": {"systemPackages": ["/nix/store/a-git", "/nix/store/b-vim"]},
                }},
                "alice": {"config": {
                    "networking": {"hostName": "alice"},
                    "clan": {"core": {"vars": {"generators": {"zerotier": {"name": "zerotier"}}}}},
                    "environment": {"systemPackages": []},
                }},
                "bob": {"config": {"networking": {"hostName": "bob"}}},
            },
            "inputs": {
                "clan-core": {"_type": "flake", "clan": {"templates": {"machine": {
                    "demo": {"description": "A demo machine"}
                }}}},
                "nixpkgs": {"_type": "flake"},
                "self": {},
            },
        });
        assert_eq!(
            ok("nixosConfigurations.*.config.networking.hostName", &doc),
            json!({"jon": "jon", "alice": "alice", "bob": "bob"})
        );
        assert_eq!(
            ok(
                "nixosConfigurations.{jon,alice}.config.clan.core.vars.generators.*.name",
                &doc
            ),
            json!({"jon": {"ssh": "ssh", "wifi": "wifi"}, "alice": {"zerotier": "zerotier"}})
        );
        assert_eq!(
            ok(
                "nixosConfigurations.jon.config.environment.systemPackages.1",
                &doc
            ),
            json!("/nix/store/b-vim")
        );
        assert_eq!(
            ok("inputs.*.?_type", &doc),
            json!({"clan-core": {"_type": "flake"}, "nixpkgs": {"_type": "flake"}, "self": {}})
        );
        assert_eq!(
            ok("inputs.*.{?clan,?missing}.templates.*.*.description", &doc),
            json!({
                "clan-core": {"clan": {"machine": {"demo": "A demo machine"}}},
                "nixpkgs": {},
                "self": {},
            })
        );
    }

    #[test]
    fn lists() {
        let doc = json!({"l": [{"n": 1}, {"n": 2}, {"n": 3}]});
        assert_eq!(ok("l.*.n", &doc), json!([1, 2, 3]));
        assert_eq!(ok("l.*", &doc), doc["l"]);
        assert_eq!(ok("l.{2,0}.n", &doc), json!([3, 1]));
        assert_eq!(ok("l.{0,?7,?x}.n", &doc), json!([1]));
        assert_eq!(ok("l.?1.n", &doc), json!({"1": 2}));
        assert_eq!(ok("l.?7.n", &doc), json!({}));
        assert_eq!(ok("l.1.n", &doc), json!(2));
        assert_eq!(ok("l.{}", &doc), json!([]));
        assert_eq!(ok("*.*.n", &doc), json!({"l": [1, 2, 3]}));
        assert_eq!(ok("l.*", &json!({"l": []})), json!([]));
    }

    #[test]
    fn quoted_keys_and_order() {
        let doc = json!({"a.b": {"z": 1, "y": 2, "x": 3}, "?q": 4, "": 5});
        assert_eq!(ok(r#""a.b".*"#, &doc), json!({"z": 1, "y": 2, "x": 3}));
        assert_eq!(ok(r"a\.b.x", &doc), json!(3));
        assert_eq!(ok(r#""?q""#, &doc), json!(4));
        assert_eq!(ok(r"\?q", &doc), json!(4));
        assert_eq!(ok(r"\*", &json!({"*": 1, "b": 2})), json!(1));
        assert_eq!(ok(r#""""#, &doc), json!(5));
        // Result objects keep the order of the document (`*`) or of the set.
        let keys = |v: Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(ok(r#""a.b".*"#, &doc)), ["z", "y", "x"]);
        assert_eq!(keys(ok(r#""a.b".{x,z}"#, &doc)), ["x", "z"]);
    }

    #[test]
    fn null_children_dropped_only_when_nothing_was_found() {
        let doc = json!({"y": {"a": 1}, "z": null, "s": 5});
        assert_eq!(ok("*.?a", &doc), json!({"y": {"a": 1}, "s": {}}));
        assert_eq!(ok("*", &doc), doc);
        assert_eq!(ok("{z,y}", &doc), json!({"z": null, "y": {"a": 1}}));
    }

    #[test]
    fn missing_key_names_path_keys_and_suggestion() {
        let doc = json!({"machines": {"web01": {"tags": [], "name": "web01"}, "db01": {}}});
        let err = select("machines.*.tagz", &doc).unwrap_err();
        assert_eq!(
            err,
            SelectError::MissingKey {
                path: "machines.web01".into(),
                key: "tagz".into(),
                available: vec!["tags".into(), "name".into()],
                suggestion: Some("tags".into()),
            }
        );
        assert_eq!(
            err.to_string(),
            "attribute `tagz` missing at `machines.web01`; did you mean `tags`? (it has `tags`, `name`)"
        );
        assert_eq!(
            select("machines.db01.tags", &doc).unwrap_err().to_string(),
            "attribute `tags` missing at `machines.db01` (the attribute set there is empty)"
        );
        assert_eq!(
            select("machines.{web01,zzz}", &doc)
                .unwrap_err()
                .to_string(),
            "attribute `zzz` missing at `machines` (it has `web01`, `db01`)"
        );
        assert_eq!(
            select("machine", &doc).unwrap_err().to_string(),
            "attribute `machine` missing at the top level; did you mean `machines`? (it has `machines`)"
        );
    }

    #[test]
    fn missing_key_lists_a_bounded_number_of_keys() {
        let doc = Value::Object((0..20).map(|i| (format!("k{i}"), json!(i))).collect());
        let message = select("nope", &doc).unwrap_err().to_string();
        assert!(message.ends_with("`k10`, `k11` and 8 more)"), "{message}");
    }

    #[test]
    fn path_in_errors_is_printed_as_a_query() {
        let doc = json!({"a.b": {"*": [0, {"q": true}]}});
        assert_eq!(
            select(r#""a.b"."*".*.q"#, &doc).unwrap_err(),
            SelectError::NotAContainer {
                path: r#""a.b"."*".0"#.into(),
                selector: "q".into(),
                found: "a number",
            }
        );
    }

    #[test]
    fn list_errors() {
        let doc = json!({"l": [10, 20]});
        assert_eq!(
            select("l.2", &doc).unwrap_err().to_string(),
            "index 2 is out of range at `l`: the list has 2 elements"
        );
        assert_eq!(
            select("l.99999999999999999999999", &doc).unwrap_err(),
            SelectError::IndexOutOfRange {
                path: "l".into(),
                index: "99999999999999999999999".into(),
                len: 2
            }
        );
        assert_eq!(
            select("l.name", &doc).unwrap_err().to_string(),
            "`name` is not a list index at `l`: the list has 2 elements; select one by number or all with `*`"
        );
        assert!(matches!(
            select("l.01", &doc),
            Err(SelectError::NotAnIndex { .. })
        ));
        assert!(matches!(
            select("l.-1", &doc),
            Err(SelectError::NotAnIndex { .. })
        ));
        assert!(matches!(
            select("l.{0,5}", &doc),
            Err(SelectError::IndexOutOfRange { .. })
        ));
    }

    #[test]
    fn selecting_into_scalars_fails() {
        let doc = json!({"s": "text", "n": null});
        assert_eq!(
            select("s.*", &doc).unwrap_err().to_string(),
            "cannot select `*` at `s`: the value there is a string, not an attribute set or list"
        );
        assert_eq!(
            select("n.x", &doc).unwrap_err(),
            SelectError::NotAContainer {
                path: "n".into(),
                selector: "x".into(),
                found: "null"
            }
        );
        assert!(matches!(
            select("s.{a,?b}", &doc),
            Err(SelectError::NotAContainer { .. })
        ));
        assert_eq!(ok("s.?x", &doc), json!({}));
        assert_eq!(ok("s.{?x,?y}", &doc), json!({}));
    }
}
