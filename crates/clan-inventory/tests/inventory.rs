//! Loading, validating and editing real clan directories on disk.

use std::path::Path;

use clan_error::Hint as _;
use clan_inventory::{load, Editor, Error, MachineClass, RoleTarget, SettingScope};
use serde_json::json;

const ISSUE_EXAMPLE: &str = r#"[meta]
name = "home"
domain = "clan"

[machines.web01]
tags = ["web"]
deploy.targetHost = "root@203.0.113.4"

[machines.laptop]
machineClass = "linux"

[instances.hello]
module.name = "hello-world"
roles.default.tags = ["all"]
roles.default.settings.greeting = "Hi"
roles.default.machines.laptop.settings.greeting = "Hello laptop"
"#;

fn clan_with(toml: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("clan.toml"), toml).unwrap();
    dir
}

fn load_error(toml: &str) -> Error {
    load(clan_with(toml).path()).unwrap_err()
}

#[test]
fn the_issue_example_loads() {
    let dir = clan_with(ISSUE_EXAMPLE);
    let inventory = load(dir.path()).unwrap().inventory;
    assert_eq!(inventory.meta.name, "home");
    let web01 = &inventory.machines["web01"];
    assert_eq!(web01.tags[0].as_str(), "web");
    assert_eq!(
        web01.deploy.target_host.as_deref(),
        Some("root@203.0.113.4")
    );
    let role = &inventory.instances["hello"].roles["default"];
    assert_eq!(role.settings, json!({"greeting": "Hi"}));
    assert_eq!(
        role.machines["laptop"].settings,
        json!({"greeting": "Hello laptop"})
    );
}

#[test]
fn a_clan_core_inventory_json_is_merged_in() {
    let dir = clan_with("[meta]\nname = \"home\"\n[machines.web01]\ntags = [\"web\"]\n");
    // The shape clan-core writes: machineClass defaults to nixos there, names repeated inside.
    let json = json!({
        "meta": {"name": "home"},
        "machines": {
            "jon": {"name": "jon", "tags": ["backup", "desktop"], "machineClass": "nixos",
                     "deploy": {"targetHost": "root@jon.local", "buildHost": null}},
            "sara": {"tags": ["desktop"], "deploy": {"targetHost": "root@sara.local"}}
        },
        "instances": {
            "borg": {
                "module": {"name": "borgbackup", "input": "clan-core"},
                "roles": {
                    "client": {"machines": {"jon": {"settings": {"destinations": {"x": {"repo": "r"}}}}}, "tags": {"desktop": {}}},
                    "server": {"machines": {"web01": {}}, "settings": {"directory": "/var/lib/borg"}}
                }
            }
        },
        "services": {}
    });
    std::fs::write(dir.path().join("inventory.json"), json.to_string()).unwrap();
    let loaded = load(dir.path()).unwrap();
    let inventory = &loaded.inventory;
    assert_eq!(inventory.machines.len(), 3);
    assert_eq!(inventory.machines["jon"].machine_class, MachineClass::Nixos);
    assert_eq!(
        inventory.machines["sara"].deploy.target_host.as_deref(),
        Some("root@sara.local")
    );
    let borg = &inventory.instances["borg"];
    assert_eq!(borg.module.name.as_str(), "borgbackup");
    let tags: Vec<_> = borg.roles["client"]
        .tags
        .iter()
        .map(|(tag, _)| tag.as_str())
        .collect();
    assert_eq!(tags, ["desktop"]);
    assert_eq!(
        borg.roles["server"].settings,
        json!({"directory": "/var/lib/borg"})
    );
    assert!(loaded
        .source_of("machines", "jon")
        .ends_with("inventory.json"));
    assert!(loaded.source_of("machines", "web01").ends_with("clan.toml"));
}

#[test]
fn a_machine_in_both_files_is_an_error_naming_both() {
    let dir = clan_with("[meta]\nname = \"home\"\n[machines.jon]\n");
    std::fs::write(
        dir.path().join("inventory.json"),
        r#"{"machines": {"jon": {}}}"#,
    )
    .unwrap();
    let error = load(dir.path()).unwrap_err().to_string();
    assert!(
        error.contains("machines.jon")
            && error.contains("clan.toml")
            && error.contains("inventory.json"),
        "{error}"
    );
}

#[test]
fn malformed_toml_reports_line_and_column() {
    let error = load_error("[meta]\nname = \"home\"\n[machines.web01\n");
    let Error::Syntax {
        line, column, path, ..
    } = &error
    else {
        panic!("{error:?}")
    };
    assert_eq!((*line, *column), (3, 16));
    assert!(path.ends_with("clan.toml"));
}

#[test]
fn unknown_keys_suggest_the_closest_one() {
    let error = load_error("[meta]\nname = \"home\"\n[machines.web01]\ntagz = [\"web\"]\n");
    let Error::Syntax { line, message, .. } = &error else {
        panic!("{error:?}")
    };
    assert_eq!(*line, 4);
    assert!(message.contains("unknown field `tagz`"), "{message}");
    assert_eq!(error.hint().unwrap(), "did you mean `tags`?");
}

#[test]
fn wrong_types_are_reported_with_their_position() {
    let error = load_error("[meta]\nname = \"home\"\n[machines.web01]\ntags = \"web\"\n");
    let Error::Syntax { line, message, .. } = &error else {
        panic!("{error:?}")
    };
    assert_eq!(*line, 4);
    assert!(message.contains("invalid type"), "{message}");
}

#[test]
fn bad_machine_names_and_classes_are_refused() {
    let error = load_error("[meta]\nname = \"home\"\n[machines.Web_01]\n").to_string();
    assert!(error.contains("invalid machine name `Web_01`"), "{error}");
    let error = load_error("[meta]\nname = \"home\"\n[machines.a]\nmachineClass = \"windows\"\n")
        .to_string();
    assert!(error.contains("windows"), "{error}");
}

#[test]
fn unknown_machines_and_tags_in_roles_are_named() {
    let toml = "[meta]\nname = \"home\"\n[machines.web01]\ntags=[\"web\"]\n[instances.x]\nmodule.name = \"sshd\"\nroles.server.machines.web1 = {}\n";
    let error = load_error(toml);
    assert!(
        error
            .to_string()
            .contains("instances.x.roles.server.machines.web1"),
        "{error}"
    );
    assert_eq!(error.hint().unwrap(), "did you mean `web01`?");
    let toml = "[meta]\nname = \"home\"\n[machines.web01]\ntags=[\"web\"]\n[instances.x]\nmodule.name = \"sshd\"\nroles.server.tags = [\"wbe\"]\n";
    let error = load_error(toml);
    assert!(
        error.to_string().contains("no machine has the tag `wbe`"),
        "{error}"
    );
}

fn edit(dir: &Path, change: impl FnOnce(&mut Editor) -> Result<(), Error>) -> Result<(), Error> {
    let mut editor = Editor::open(dir)?;
    change(&mut editor)?;
    editor.save().map(drop)
}

#[test]
fn edits_keep_comments_and_layout() {
    let original = format!("# my fleet\n{ISSUE_EXAMPLE}# trailing comment\n");
    let dir = clan_with(&original);
    edit(dir.path(), |editor| {
        editor.add_machine(
            &"db".parse().unwrap(),
            &["web".parse().unwrap()],
            MachineClass::Linux,
            Some("root@db"),
            None,
        )?;
        editor.add_instance(&"ssh".parse().unwrap(), &"sshd".parse().unwrap())?;
        editor.add_role_member(
            &"ssh".parse().unwrap(),
            &"server".parse().unwrap(),
            &"tag:all".parse().unwrap(),
        )?;
        editor.set_setting(
            &"ssh".parse().unwrap(),
            &"server".parse().unwrap(),
            &SettingScope::Role,
            "authorizedKeys",
            &json!(["ssh-ed25519 AAAA"]),
        )
    })
    .unwrap();
    let text = std::fs::read_to_string(dir.path().join("clan.toml")).unwrap();
    assert!(
        text.starts_with(&format!(
            "# my fleet\n{}",
            &ISSUE_EXAMPLE[..ISSUE_EXAMPLE.find("[instances").unwrap()]
        )),
        "{text}"
    );
    assert!(text.contains("# trailing comment"));
    assert!(
        text.contains("[machines.db]\ntags = [\"web\"]\ndeploy.targetHost = \"root@db\"\n"),
        "{text}"
    );
    assert!(text.contains("[instances.ssh]\nmodule.name = \"sshd\"\nroles.server.tags = [\"all\"]\nroles.server.settings.authorizedKeys = [\"ssh-ed25519 AAAA\"]\n"), "{text}");
    let inventory = load(dir.path()).unwrap().inventory;
    assert_eq!(inventory.machines.len(), 3);
}

#[test]
fn a_failing_edit_writes_nothing() {
    let dir = clan_with(ISSUE_EXAMPLE);
    let error = edit(dir.path(), |editor| {
        editor.add_role_member(
            &"hello".parse().unwrap(),
            &"default".parse().unwrap(),
            &RoleTarget::Tag("nope".parse().unwrap()),
        )
    })
    .unwrap_err();
    assert!(
        error.to_string().contains("no machine has the tag `nope`"),
        "{error}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("clan.toml")).unwrap(),
        ISSUE_EXAMPLE
    );
}

#[test]
fn deleting_a_machine_removes_its_role_memberships() {
    let dir = clan_with(ISSUE_EXAMPLE);
    edit(dir.path(), |editor| {
        editor.remove_machine(&"laptop".parse().unwrap())
    })
    .unwrap();
    let inventory = load(dir.path()).unwrap().inventory;
    assert!(!inventory.machines.contains_key("laptop"));
    assert!(inventory.instances["hello"].roles["default"]
        .machines
        .is_empty());
}

#[test]
fn per_tag_settings_convert_a_tag_list_to_a_table() {
    let dir = clan_with(ISSUE_EXAMPLE);
    edit(dir.path(), |editor| {
        editor.set_setting(
            &"hello".parse().unwrap(),
            &"default".parse().unwrap(),
            &SettingScope::Member("tag:all".parse().unwrap()),
            "greeting",
            &json!("Hey all"),
        )
    })
    .unwrap();
    let inventory = load(dir.path()).unwrap().inventory;
    let tags: Vec<_> = inventory.instances["hello"].roles["default"]
        .tags
        .iter()
        .collect();
    assert_eq!(tags[0].0.as_str(), "all");
    assert_eq!(tags[0].1, Some(&json!({"greeting": "Hey all"})));
}

#[test]
fn the_schema_describes_machines_and_instances() {
    let schema = clan_inventory::json_schema();
    let text = schema.to_string();
    assert!(
        text.contains("machineClass") && text.contains("targetHost") && text.contains("instances")
    );
}
