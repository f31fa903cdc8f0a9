//! Interoperability with files written by clan-core's sops (3.7.3, Go age): every secret in
//! `../shared/fixtures/clan-core-sops/` decrypts with the fixture's `key.age`, its MAC checks,
//! and a parsed file is written back byte for byte.

use std::path::{Path, PathBuf};

use clan_secrets::{Identities, SopsError, SopsFile};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/clan-core-sops")
}

fn fixture_secrets() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.file_name().is_some_and(|n| n == "secret") {
                out.push(path);
            }
        }
    }
    let mut secrets = Vec::new();
    walk(&fixture_dir().join("sops"), &mut secrets);
    secrets.sort();
    assert!(
        secrets.len() >= 2,
        "fixture secrets not found in {}",
        fixture_dir().display()
    );
    secrets
}

fn fixture_identities() -> Identities {
    let key = std::fs::read_to_string(fixture_dir().join("key.age")).unwrap();
    Identities::parse(&key, "key.age").unwrap()
}

#[test]
fn decrypts_every_clan_core_secret_and_verifies_its_mac() {
    let identities = fixture_identities();
    for path in fixture_secrets() {
        let bytes = std::fs::read(&path).unwrap();
        let plaintext = clan_secrets::decrypt(&bytes, &identities)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        assert_eq!(plaintext.expose().len(), 3, "{}", path.display());
    }
}

#[test]
fn clan_core_files_are_written_back_byte_for_byte() {
    for path in fixture_secrets() {
        let bytes = std::fs::read(&path).unwrap();
        let file = SopsFile::parse(&bytes).unwrap();
        assert_eq!(
            String::from_utf8(file.to_bytes()).unwrap(),
            String::from_utf8(bytes).unwrap()
        );
    }
}

#[test]
fn tampered_clan_core_files_are_rejected() {
    let identities = fixture_identities();
    let path = &fixture_secrets()[0];
    let original = std::fs::read_to_string(path).unwrap();

    // lastmodified is the MAC's additional data.
    let moved = original.replace("\"lastmodified\": \"20", "\"lastmodified\": \"19");
    let error = clan_secrets::decrypt(moved.as_bytes(), &identities).unwrap_err();
    assert!(matches!(error, SopsError::Authentication("mac")), "{error}");

    // A flipped ciphertext byte.
    let file: serde_json::Value = serde_json::from_str(&original).unwrap();
    let data = file["data"].as_str().unwrap();
    let mut tampered = file.clone();
    tampered["data"] = serde_json::Value::String(flip_first_data_char(data));
    let error = clan_secrets::decrypt(tampered.to_string().as_bytes(), &identities).unwrap_err();
    assert!(
        matches!(error, SopsError::Authentication("data")),
        "{error}"
    );

    // The wrong key.
    let other = Identities::parse(
        "AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX",
        "other",
    )
    .unwrap();
    let error = clan_secrets::decrypt(original.as_bytes(), &other).unwrap_err();
    assert!(matches!(error, SopsError::NotARecipient { .. }), "{error}");
}

fn flip_first_data_char(value: &str) -> String {
    let at = value.find("data:").unwrap() + 5;
    let mut bytes = value.as_bytes().to_vec();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

/// New files follow current sops' layout: tab indentation, metadata keys in sops' order with
/// empty key types omitted, armored data keys ending in a newline.
#[test]
fn new_files_have_the_layout_sops_writes() {
    let recipient: clan_secrets::Recipient =
        "age15x8u838dwqflr3t6csf4tlghxm4tx77y379ncqxav7y2n8qp7yzqgrwt00"
            .parse()
            .unwrap();
    let bytes = clan_secrets::encrypt(b"x", &[recipient])
        .unwrap()
        .to_bytes();
    let text = String::from_utf8(bytes).unwrap();
    assert!(
        text.starts_with("{\n\t\"data\": \"ENC[AES256_GCM,data:"),
        "{text}"
    );
    assert!(text.ends_with("\n\t}\n}\n"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let keys: Vec<&str> = json["sops"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "age",
            "lastmodified",
            "mac",
            "unencrypted_suffix",
            "version"
        ]
    );
    let enc = json["sops"]["age"][0]["enc"].as_str().unwrap();
    assert!(enc.starts_with("-----BEGIN AGE ENCRYPTED FILE-----\n"));
    assert!(enc.ends_with("\n-----END AGE ENCRYPTED FILE-----\n"));
    assert!(enc.lines().all(|line| line.len() <= 64));
    let last_modified = json["sops"]["lastmodified"].as_str().unwrap();
    assert_eq!(last_modified.len(), "2023-08-23T09:11:08Z".len());
    assert!(json["sops"]["mac"]
        .as_str()
        .unwrap()
        .ends_with(",type:str]"));
    let identities = fixture_identities();
    assert_eq!(
        clan_secrets::decrypt(text.as_bytes(), &identities)
            .unwrap()
            .expose(),
        b"x"
    );
}
