//! Interoperability with the real `age` binary, both directions: `age -d` opens the data keys
//! we write, and data keys written by `age -e` open with our decryption. Needs `age` and
//! `age-keygen` on PATH (Debian package `age`).

use std::io::Write;
use std::process::{Command, Stdio};

use clan_secrets::{Identities, Recipient, SopsFile};

fn age_keygen(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, Recipient) {
    let path = dir.join(name);
    let status = Command::new("age-keygen")
        .arg("-o")
        .arg(&path)
        .stderr(Stdio::null())
        .status();
    let status = status.expect("age-keygen must be installed (Debian package `age`)");
    assert!(status.success());
    let text = std::fs::read_to_string(&path).unwrap();
    let public = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap();
    (path, public.parse().unwrap())
}

#[test]
fn age_cli_opens_our_data_keys_and_we_open_its() {
    let dir = tempfile::tempdir().unwrap();
    let (alice_key, alice) = age_keygen(dir.path(), "alice.txt");
    let (bob_key, bob) = age_keygen(dir.path(), "bob.txt");

    let file = clan_secrets::encrypt(b"hunter2\n", &[alice.clone(), bob.clone()]).unwrap();
    let bytes = file.to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let entries = json["sops"]["age"].as_array().unwrap();
    assert_eq!(entries.len(), 2);

    let mut data_keys = Vec::new();
    for (entry, key_file) in entries.iter().zip(if alice.as_str() < bob.as_str() {
        [&alice_key, &bob_key]
    } else {
        [&bob_key, &alice_key]
    }) {
        let mut child = Command::new("age")
            .arg("-d")
            .arg("-i")
            .arg(key_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(entry["enc"].as_str().unwrap().as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "age -d failed for {}",
            entry["recipient"]
        );
        assert_eq!(output.stdout.len(), 32);
        data_keys.push(output.stdout);
    }
    assert_eq!(
        data_keys[0], data_keys[1],
        "one data key for all recipients"
    );
    let parsed = SopsFile::parse(&bytes).unwrap();
    assert_eq!(
        parsed
            .decrypt_with_data_key(&data_keys[0])
            .unwrap()
            .expose(),
        b"hunter2\n"
    );

    // The other direction: `age -e -a` encrypts the data key, we decrypt the file with it.
    let mut child = Command::new("age")
        .args(["-e", "-a", "-r", alice.as_str()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&data_keys[0])
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let mut replaced = json.clone();
    replaced["sops"]["age"] = serde_json::json!([{
        "recipient": alice.as_str(),
        "enc": String::from_utf8(output.stdout).unwrap(),
    }]);
    let alice_identities =
        Identities::parse(&std::fs::read_to_string(&alice_key).unwrap(), "alice").unwrap();
    let plaintext =
        clan_secrets::decrypt(replaced.to_string().as_bytes(), &alice_identities).unwrap();
    assert_eq!(plaintext.expose(), b"hunter2\n");

    let bob_identities =
        Identities::parse(&std::fs::read_to_string(&bob_key).unwrap(), "bob").unwrap();
    assert!(clan_secrets::decrypt(replaced.to_string().as_bytes(), &bob_identities).is_err());
}
