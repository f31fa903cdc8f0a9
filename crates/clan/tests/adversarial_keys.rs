//! Issue 10, "errors name the culprit": a key given explicitly that is not there is an
//! error naming the variable and the path, never a silent fall back to another key (here a
//! valid `~/.config/sops/age/keys.txt`, which would decrypt the secret just as well).

mod crash_support;
mod env;

use std::ffi::OsStr;

use crash_support::Clan;

/// A clan with secret `s`, and the admin's key copied to the user config file too.
fn clan_with_fallback_key() -> Clan {
    let clan = Clan::new(&["web01"]);
    clan.ok(&["vars", "generate"], b"");
    clan.ok(&["secrets", "set", "s"], b"value");
    let config = clan.home().join(".config/sops/age");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::copy(clan.key(), config.join("keys.txt")).unwrap();
    clan
}

/// `clan secrets get s` with `variable=value`: its exit code, stdout and stderr.
fn get_with(clan: &Clan, variable: &str, value: &OsStr) -> (Option<i32>, Vec<u8>, String) {
    let output = clan
        .command(&["secrets", "get", "s"])
        .env(variable, value)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code(), output.stdout, stderr)
}

#[test]
fn a_missing_sops_age_key_file_is_an_error_naming_it() {
    let clan = clan_with_fallback_key();
    let missing = clan.home().join("typo/keys.txt");
    let (code, stdout, stderr) = get_with(&clan, "SOPS_AGE_KEY_FILE", missing.as_os_str());
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stdout.is_empty(), "nothing decrypted with another key");
    let named = format!(
        "SOPS_AGE_KEY_FILE is set to `{}`, which does not exist",
        missing.display()
    );
    assert!(stderr.contains(&named), "{stderr}");
    assert!(
        stderr.contains("hint: point SOPS_AGE_KEY_FILE at"),
        "{stderr}"
    );
    // Without the variable, the user config file is used.
    let fallback = clan
        .command(&["secrets", "get", "s"])
        .env_remove("SOPS_AGE_KEY_FILE")
        .output()
        .unwrap();
    assert_eq!(fallback.stdout, b"value");
}

#[test]
fn a_sops_age_key_that_does_not_parse_is_an_error_naming_it() {
    let clan = clan_with_fallback_key();
    for value in ["AGE-SECRET-KEY-1GARBAGE", "# only a comment", "not a key"] {
        let (code, stdout, stderr) = get_with(&clan, "SOPS_AGE_KEY", OsStr::new(value));
        assert_eq!(code, Some(2), "{value}: {stderr}");
        assert!(stdout.is_empty(), "{value}: decrypted with another key");
        assert!(stderr.contains("SOPS_AGE_KEY"), "{value}: {stderr}");
        assert!(
            !stderr.contains("GARBAGE"),
            "the value is not echoed: {stderr}"
        );
    }
}

#[test]
fn a_key_file_that_holds_no_key_is_an_error_naming_it() {
    let clan = clan_with_fallback_key();
    let empty = clan.home().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let (code, _, stderr) = get_with(&clan, "SOPS_AGE_KEY_FILE", empty.as_os_str());
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("SOPS_AGE_KEY_FILE (`"), "{stderr}");
    assert!(
        stderr.contains("empty.txt`) holds no age identity"),
        "{stderr}"
    );
    // Generating a key into it is what it is for.
    let generated = clan
        .command(&["secrets", "key", "generate"])
        .env("SOPS_AGE_KEY_FILE", &empty)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&generated.stderr);
    assert!(generated.status.success(), "{stderr}");
    let key = std::fs::read_to_string(&empty).unwrap();
    assert!(key.contains("AGE-SECRET-KEY-"));
}
