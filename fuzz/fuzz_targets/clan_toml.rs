//! clan.toml is hand-edited and may come from anyone's repository: parsing and validating it
//! must never panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let path = std::path::Path::new("clan.toml");
        if let Ok(inventory) = clan_inventory::parse_toml(path, text) {
            // What parsed must print and parse back to the same inventory.
            let printed = toml::to_string(&inventory).expect("a parsed inventory serializes");
            let reparsed = clan_inventory::parse_toml(path, &printed).expect("printed inventory parses");
            assert_eq!(inventory, reparsed);
        }
    }
});
