//! Issue 10, "no input panics the CLI": values from a (possibly hostile) clan.toml that once
//! crashed or could mislead the table printer — a cell wider than 65,535 characters, control
//! characters meant for the terminal.

mod crash_support;
mod env;

use crash_support::Clan;

#[test]
fn machines_list_prints_a_cell_wider_than_65535_characters() {
    let clan = Clan::new(&[]);
    let host = format!("root@{}", "h".repeat(70_000));
    clan.ok(&["machines", "create", "wide", "--target-host", &host], b"");
    clan.ok(&["machines", "create", "narrow"], b"");
    let table = clan.ok(&["machines", "list"], b"");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{}", &table[..200]);
    assert!(lines.iter().any(|line| line.contains(&host)));
    // The column after the wide one starts at the same place on every line.
    let services = lines[0].find("SERVICES").unwrap();
    assert!(services > 70_000);
}

#[test]
fn terminal_control_characters_in_the_clan_are_shown_escaped() {
    let clan = Clan::new(&[]);
    let toml = clan.read("clan.toml");
    clan.write(
        "clan.toml",
        &format!("{toml}\n[machines.evil]\ndeploy.targetHost = \"root@x\\u001b]0;owned\\u0007\"\n"),
    );
    let table = clan.ok(&["machines", "list"], b"");
    assert!(!table.contains('\u{1b}'), "{table:?}");
    assert!(table.contains("root@x\\u{1b}]0;owned\\u{7}"), "{table:?}");
}
