//! Property: any inventory printed as TOML parses back to the same inventory.

use clan_inventory::{parse_toml, Inventory};
use proptest::prelude::*;
use serde_json::{json, Value};

fn name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9]{0,6}(-[a-z0-9]{1,4})?"
}

fn settings() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(
        "[a-zA-Z]{1,8}",
        prop_oneof![
            any::<bool>().prop_map(Value::from),
            any::<i32>().prop_map(Value::from),
            "[ -~]{0,12}".prop_map(Value::from),
            prop::collection::vec("[a-z]{0,5}", 0..3).prop_map(|items| json!(items)),
        ],
        0..4,
    )
    .prop_map(|map| Value::Object(map.into_iter().collect()))
}

fn inventory() -> impl Strategy<Value = Inventory> {
    let machines = prop::collection::btree_map(
        name(),
        (
            prop::collection::vec(name(), 0..3),
            prop::option::of("[a-z@.0-9]{1,20}"),
            0..3u8,
        ),
        0..5,
    );
    let instances = prop::collection::btree_map(name(), (name(), settings(), settings()), 0..4);
    ("[ -~]{1,10}", machines, instances).prop_map(|(clan_name, machines, instances)| {
        let machine_names: Vec<String> = machines.keys().cloned().collect();
        let machines: serde_json::Map<String, Value> = machines
            .into_iter()
            .map(|(name, (tags, target, class))| {
                let class = ["linux", "nixos", "darwin"][class as usize];
                (
                    name,
                    json!({"tags": tags, "machineClass": class, "deploy": {"targetHost": target}}),
                )
            })
            .collect();
        let instances: serde_json::Map<String, Value> = instances
            .into_iter()
            .map(|(name, (service, role_settings, machine_settings))| {
                let mut role = json!({"tags": ["all"], "settings": role_settings});
                if let Some(first) = machine_names.first() {
                    role["machines"] = json!({first: {"settings": machine_settings}});
                }
                (
                    name,
                    json!({"module": {"name": service}, "roles": {"default": role}}),
                )
            })
            .collect();
        serde_json::from_value(
            json!({"meta": {"name": clan_name}, "machines": machines, "instances": instances}),
        )
        .expect("generated inventories are valid")
    })
}

proptest! {
    #[test]
    fn printed_inventories_parse_back_equal(inventory in inventory()) {
        let printed = toml::to_string(&inventory).unwrap();
        let parsed = parse_toml(std::path::Path::new("clan.toml"), &printed).unwrap();
        prop_assert_eq!(parsed, inventory);
    }
}
