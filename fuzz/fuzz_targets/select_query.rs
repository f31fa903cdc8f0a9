//! Arbitrary text as a select query: parsing and applying must never panic,
//! and whatever parses must print to a canonical form that parses back.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

/// Nested objects, lists, nulls, scalars and keys that need quoting, so
/// every selector kind meets every kind of value.
static DOC: LazyLock<Value> = LazyLock::new(|| {
    json!({
        "machines": {
            "web01": {"tags": ["web", "prod"], "deploy": {"targetHost": "root@web01"}},
            "db01": {"tags": [], "deploy": null},
        },
        "lists": [[0, 1], {"a": null, "b": [true, false]}, "x", 1.5, null],
        "a.b": {"?c": {"*": {"{d}": "e"}}, "": 0},
        "outPath": "/nix/store/abc-x",
        "0": {"1": {"2": []}},
        "empty": {},
    })
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(query) = clan_select::parse(text) else {
        return;
    };
    let _ = query.apply(&DOC);
    let printed = query.to_string();
    assert_eq!(
        clan_select::parse(&printed).as_ref(),
        Ok(&query),
        "{text:?} printed as {printed:?}"
    );
});
