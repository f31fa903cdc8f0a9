//! inventory.json is clan-core's inventory format, merged into clan.toml's and taken from
//! anyone's repository: parsing, merging and validating it must never panic, whatever the
//! bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

const CLAN_TOML: &str = "[meta]\nname = \"fuzz\"\n\n[machines.web01]\ntags = [\"web\"]\n";

fuzz_target!(|data: &[u8]| {
    if let Ok(json) = std::str::from_utf8(data) {
        let dir = std::path::Path::new("/nonexistent-clan");
        let _ = clan_inventory::load_from_texts(dir, CLAN_TOML, Some(json));
    }
});
