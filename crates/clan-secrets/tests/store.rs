//! The `sops/` tree: users, machines, groups, secrets, re-keying on every membership change,
//! refusals, audit, machine keys, and clan-core's fixture layout.

use std::path::{Path, PathBuf};

use clan_error::Hint as _;
use clan_secrets::{
    Admin, Error, GroupName, Identities, MachineName, Member, MemberKind, Recipient, SecretName,
    SopsDir, SopsFile, UserName,
};

struct Person {
    identities: Identities,
    recipient: Recipient,
}

fn person() -> Person {
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string().parse().unwrap();
    let mut identities = Identities::default();
    identities.push(identity);
    Person {
        identities,
        recipient,
    }
}

/// A second `Identities` for the same key (they are not `Clone`, on purpose).
fn ids(person: &Person) -> Identities {
    let secret = PERSONS.with(|map| {
        map.borrow()
            .iter()
            .find(|(r, _)| r == &person.recipient)
            .map(|(_, s)| s.clone())
            .unwrap()
    });
    Identities::parse(&secret, "test").unwrap()
}

thread_local! {
    static PERSONS: std::cell::RefCell<Vec<(Recipient, String)>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn remembered_person() -> Person {
    use age::secrecy::ExposeSecret;
    let identity = age::x25519::Identity::generate();
    let secret = identity.to_string().expose_secret().to_owned();
    let recipient: Recipient = identity.to_public().to_string().parse().unwrap();
    PERSONS.with(|map| map.borrow_mut().push((recipient.clone(), secret)));
    let mut identities = Identities::default();
    identities.push(identity);
    Person {
        identities,
        recipient,
    }
}

fn user(name: &str) -> UserName {
    name.parse().unwrap()
}
fn machine(name: &str) -> MachineName {
    name.parse().unwrap()
}
fn secret(name: &str) -> SecretName {
    name.parse().unwrap()
}
fn group(name: &str) -> GroupName {
    name.parse().unwrap()
}

fn recipients(store: &SopsDir, name: &str) -> Vec<String> {
    let bytes = std::fs::read(
        store
            .clan_dir()
            .join("sops/secrets")
            .join(name)
            .join("secret"),
    )
    .unwrap();
    SopsFile::parse(&bytes).unwrap().recipients()
}

/// A clan with user alice (the admin).
fn clan() -> (tempfile::TempDir, SopsDir, Admin, Person) {
    let dir = tempfile::tempdir().unwrap();
    let store = SopsDir::new(dir.path());
    let alice = remembered_person();
    store
        .add_user(
            &user("alice"),
            std::slice::from_ref(&alice.recipient),
            false,
            &alice.identities,
        )
        .unwrap();
    let admin = store.admin(ids(&alice), "test").unwrap();
    assert_eq!(admin.user, user("alice"));
    (dir, store, admin, alice)
}

#[test]
fn set_get_and_user_key_json_is_clan_core_list_form() {
    let (dir, store, admin, alice) = clan();
    let changes = store
        .set_secret(&secret("db-password"), b"s3cret", &[], &admin)
        .unwrap();
    assert!(changes
        .paths
        .contains(&PathBuf::from("sops/secrets/db-password/secret")));
    assert_eq!(changes.message, "secrets: update db-password");
    let link = dir.path().join("sops/secrets/db-password/users/alice");
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        Path::new("../../../users/alice")
    );
    assert_eq!(
        store
            .get_secret(&secret("db-password"), &alice.identities)
            .unwrap()
            .expose(),
        b"s3cret"
    );
    let key_json = std::fs::read_to_string(dir.path().join("sops/users/alice/key.json")).unwrap();
    assert_eq!(
        key_json,
        format!(
            "[\n  {{\n    \"publickey\": \"{}\",\n    \"type\": \"age\"\n  }}\n]",
            alice.recipient
        )
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join("sops/secrets/db-password/secret"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o077, 0, "secret files are private");
    assert_eq!(store.secrets().unwrap(), [secret("db-password")]);
}

#[test]
fn machines_and_groups_rekey_their_secrets() {
    let (_dir, store, admin, alice) = clan();
    let web = remembered_person();
    store
        .set_secret(&secret("api"), b"token", &[], &admin)
        .unwrap();
    store
        .add_machine(&machine("web01"), &web.recipient, false, &alice.identities)
        .unwrap();

    store
        .allow(
            &SopsDir::secret_dir(&secret("api")),
            &Member::Machine(machine("web01")),
            &alice.identities,
        )
        .unwrap();
    assert!(recipients(&store, "api").contains(&web.recipient.to_string()));
    let held = |name: &str| {
        store
            .held_by(
                &SopsDir::secret_dir(&secret(name)),
                MemberKind::Machine,
                "web01",
            )
            .unwrap()
    };
    assert!(held("api"), "a direct link");
    assert_eq!(
        store
            .get_secret(&secret("api"), &web.identities)
            .unwrap()
            .expose(),
        b"token"
    );

    store
        .disallow(
            &SopsDir::secret_dir(&secret("api")),
            &Member::Machine(machine("web01")),
            &alice.identities,
        )
        .unwrap();
    assert_eq!(recipients(&store, "api"), [alice.recipient.to_string()]);
    assert!(store.get_secret(&secret("api"), &web.identities).is_err());
    assert!(!held("api"));

    // Through a group: adding the machine to the group re-keys the group's secret.
    store
        .group_add(
            &group("servers"),
            &Member::User(user("alice")),
            &alice.identities,
        )
        .unwrap();
    store
        .set_secret(
            &secret("tls"),
            b"pem",
            &[Member::Group(group("servers"))],
            &admin,
        )
        .unwrap();
    let (_, report) = store
        .group_add(
            &group("servers"),
            &Member::Machine(machine("web01")),
            &alice.identities,
        )
        .unwrap();
    assert_eq!(report.changed, [PathBuf::from("sops/secrets/tls/secret")]);
    assert!(report.failed.is_empty());
    assert_eq!(
        store
            .get_secret(&secret("tls"), &web.identities)
            .unwrap()
            .expose(),
        b"pem"
    );
    let holders = store
        .holders(&SopsDir::secret_dir(&secret("tls")))
        .unwrap()
        .0;
    assert!(holders
        .iter()
        .any(|h| h.name == "web01" && h.via_group.as_deref() == Some("servers")));
    assert!(held("tls"), "through a group");

    store
        .group_remove(
            &group("servers"),
            &Member::Machine(machine("web01")),
            &alice.identities,
        )
        .unwrap();
    assert!(store.get_secret(&secret("tls"), &web.identities).is_err());

    // Removing the machine entirely takes it out of every secret.
    store
        .allow(
            &SopsDir::secret_dir(&secret("api")),
            &Member::Machine(machine("web01")),
            &alice.identities,
        )
        .unwrap();
    let (changes, _) = store
        .remove_member(&Member::Machine(machine("web01")), &alice.identities)
        .unwrap();
    assert!(changes
        .paths
        .contains(&PathBuf::from("sops/secrets/api/secret")));
    assert_eq!(recipients(&store, "api"), [alice.recipient.to_string()]);
    assert!(
        store.audit().unwrap().iter().all(|entry| entry.is_clean()),
        "{:?}",
        store.audit()
    );
}

#[test]
fn user_keys_add_remove_and_last_key_refused() {
    let (_dir, store, admin, alice) = clan();
    store.set_secret(&secret("s"), b"v", &[], &admin).unwrap();
    let laptop = remembered_person();
    store
        .add_user_keys(
            &user("alice"),
            std::slice::from_ref(&laptop.recipient),
            &alice.identities,
        )
        .unwrap();
    assert_eq!(recipients(&store, "s").len(), 2);
    assert_eq!(
        store
            .get_secret(&secret("s"), &laptop.identities)
            .unwrap()
            .expose(),
        b"v"
    );

    store
        .remove_user_keys(
            &user("alice"),
            std::slice::from_ref(&alice.recipient),
            &laptop.identities,
        )
        .unwrap();
    assert_eq!(recipients(&store, "s"), [laptop.recipient.to_string()]);
    assert!(store.get_secret(&secret("s"), &alice.identities).is_err());

    let error = store
        .remove_user_keys(
            &user("alice"),
            std::slice::from_ref(&laptop.recipient),
            &laptop.identities,
        )
        .unwrap_err();
    assert!(matches!(error, Error::LastKey { .. }), "{error}");
    assert!(error.hint().unwrap().contains("add-key"));
}

#[test]
fn removing_the_only_holder_is_refused_and_other_users_keep_access() {
    let (_dir, store, admin, alice) = clan();
    let bob = remembered_person();
    store
        .add_user(
            &user("bob"),
            std::slice::from_ref(&bob.recipient),
            false,
            &alice.identities,
        )
        .unwrap();
    store
        .set_secret(
            &secret("shared"),
            b"x",
            &[Member::User(user("bob"))],
            &admin,
        )
        .unwrap();
    store
        .set_secret(&secret("mine"), b"y", &[], &admin)
        .unwrap();

    let error = store
        .remove_member(&Member::User(user("alice")), &alice.identities)
        .unwrap_err();
    assert!(
        matches!(&error, Error::NoRecipientsLeft { paths, .. } if paths == &["mine".to_owned()]),
        "{error}"
    );
    assert!(
        store.clan_dir().join("sops/users/alice/key.json").exists(),
        "nothing changed"
    );

    store.remove_secret(&secret("mine")).unwrap();
    store
        .remove_member(&Member::User(user("alice")), &alice.identities)
        .unwrap();
    assert_eq!(recipients(&store, "shared"), [bob.recipient.to_string()]);
    assert_eq!(store.users().unwrap(), [user("bob")]);
}

#[test]
fn a_key_that_is_not_a_recipient_names_who_can_decrypt() {
    let (_dir, store, admin, alice) = clan();
    let bob = remembered_person();
    store
        .add_user(
            &user("bob"),
            std::slice::from_ref(&bob.recipient),
            false,
            &alice.identities,
        )
        .unwrap();
    store.set_secret(&secret("s"), b"v", &[], &admin).unwrap();
    let error = store.get_secret(&secret("s"), &bob.identities).unwrap_err();
    assert!(
        matches!(&error, Error::NotARecipient { holders, .. } if holders == &["user alice".to_owned()])
    );
    assert_eq!(
        error.to_string(),
        "cannot decrypt `sops/secrets/s/secret`: none of your keys is a recipient; it can be decrypted by user alice"
    );
    assert!(error.hint().unwrap().contains("alice"));
}

#[test]
fn tampered_secret_file_is_named() {
    let (dir, store, admin, alice) = clan();
    store
        .set_secret(&secret("s"), b"value", &[], &admin)
        .unwrap();
    let path = dir.path().join("sops/secrets/s/secret");
    let text = std::fs::read_to_string(&path).unwrap();
    let tampered = text.replacen("\"lastmodified\": \"2", "\"lastmodified\": \"1", 1);
    std::fs::write(&path, tampered).unwrap();
    let error = store
        .get_secret(&secret("s"), &alice.identities)
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "failed to decrypt `sops/secrets/s/secret`"
    );
    let cause = std::error::Error::source(&error).unwrap().to_string();
    assert!(cause.contains("modified or corrupted"), "{cause}");
    assert!(error.hint().unwrap().contains("git checkout"));
}

#[test]
fn no_admin_key_and_unknown_admin() {
    let (_dir, store, _admin, _alice) = clan();
    let error = store
        .admin(
            Identities::default(),
            "SOPS_AGE_KEY, ~/.config/sops/age/keys.txt",
        )
        .unwrap_err();
    assert!(matches!(error, Error::NoAdminKey { .. }));
    assert!(error.hint().unwrap().contains("clan secrets key generate"));
    let stranger = person();
    let error = store.admin(stranger.identities, "").unwrap_err();
    assert!(matches!(error, Error::UnknownAdmin { .. }));
    assert!(error.hint().unwrap().contains("clan secrets users add"));
}

#[test]
fn machine_key_is_created_once_and_opens_machine_secrets() {
    let (_dir, store, admin, alice) = clan();
    let changes = store
        .ensure_machine_key(&machine("db"), &[], &admin)
        .unwrap()
        .unwrap();
    assert!(changes
        .paths
        .contains(&PathBuf::from("sops/secrets/db-age.key/secret")));
    assert!(changes
        .paths
        .contains(&PathBuf::from("sops/machines/db/key.json")));
    assert!(store
        .ensure_machine_key(&machine("db"), &[], &admin)
        .unwrap()
        .is_none());

    let dir = Path::new("vars/per-machine/db/postgres/password");
    store
        .write_secret_at(dir, b"pw", &[Member::Machine(machine("db"))], &admin)
        .unwrap();
    assert_eq!(
        std::fs::read_link(store.clan_dir().join(dir).join("machines/db")).unwrap(),
        Path::new("../../../../../../sops/machines/db")
    );
    let machine_ids = store
        .machine_identities(&machine("db"), &alice.identities)
        .unwrap();
    assert_eq!(
        store.read_secret_at(dir, &machine_ids).unwrap().expose(),
        b"pw"
    );
    assert!(store
        .all_secret_dirs()
        .unwrap()
        .contains(&dir.to_path_buf()));
}

#[test]
fn rename_remove_and_audit_drift() {
    let (dir, store, admin, alice) = clan();
    let bob = remembered_person();
    store
        .add_user(
            &user("bob"),
            std::slice::from_ref(&bob.recipient),
            false,
            &alice.identities,
        )
        .unwrap();
    store.set_secret(&secret("old"), b"v", &[], &admin).unwrap();
    store.rename_secret(&secret("old"), &secret("new")).unwrap();
    assert_eq!(
        store
            .get_secret(&secret("new"), &alice.identities)
            .unwrap()
            .expose(),
        b"v"
    );
    assert!(matches!(
        store.rename_secret(&secret("old"), &secret("x")),
        Err(Error::NotFound { .. })
    ));

    // A link added by hand (no re-key) is drift: bob is linked but not a recipient.
    std::os::unix::fs::symlink(
        "../../../users/bob",
        dir.path().join("sops/secrets/new/users/bob"),
    )
    .unwrap();
    let audit = store.audit().unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(
        audit[0].missing,
        [(bob.recipient.clone(), "user bob".to_owned())]
    );
    let report = store.update_keys(&alice.identities).unwrap();
    assert_eq!(report.changed.len(), 1);
    assert!(store.audit().unwrap()[0].is_clean());

    // A dangling link is a problem, a recipient nobody links is unexpected.
    std::fs::remove_file(dir.path().join("sops/secrets/new/users/bob")).unwrap();
    std::os::unix::fs::symlink(
        "../../../users/carol",
        dir.path().join("sops/secrets/new/users/carol"),
    )
    .unwrap();
    let audit = store.audit().unwrap();
    assert_eq!(
        audit[0].unexpected,
        [(bob.recipient.to_string(), Some("user bob".to_owned()))]
    );
    assert!(
        audit[0].problems[0].message.contains("dangling"),
        "{:?}",
        audit[0].problems
    );

    store.remove_secret(&secret("new")).unwrap();
    assert!(store.secrets().unwrap().is_empty());
}

/// clan-core's fixture with its links restored (the fixture copy stores link targets as
/// plain files).
#[test]
fn clan_core_fixture_layout_reads() {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/clan-core-sops");
    let dir = tempfile::tempdir().unwrap();
    copy_restoring_links(&fixture.join("sops"), &dir.path().join("sops"));
    let store = SopsDir::new(dir.path());
    let key = std::fs::read_to_string(fixture.join("key.age")).unwrap();
    let identities = Identities::parse(&key, "key.age").unwrap();

    assert_eq!(store.users().unwrap(), [user("admin")]);
    assert_eq!(store.machines().unwrap(), [machine("machine")]);
    assert_eq!(
        store.secrets().unwrap(),
        [secret("group-secret"), secret("secret")]
    );
    let groups = store.groups().unwrap();
    assert_eq!(groups[0].machines, ["machine"]);
    for name in ["secret", "group-secret"] {
        assert_eq!(
            store
                .get_secret(&secret(name), &identities)
                .unwrap()
                .expose()
                .len(),
            3
        );
    }
    let audit = store.audit().unwrap();
    assert!(audit.iter().all(|entry| entry.is_clean()), "{audit:?}");
    let (holders, _) = store
        .holders(Path::new("sops/secrets/group-secret"))
        .unwrap();
    assert_eq!(holders[0].via_group.as_deref(), Some("group"));
    // Re-keying an up-to-date clan-core file leaves it untouched.
    let before = std::fs::read(dir.path().join("sops/secrets/secret/secret")).unwrap();
    assert!(!store
        .rekey_dir(Path::new("sops/secrets/secret"), &identities)
        .unwrap());
    assert_eq!(
        std::fs::read(dir.path().join("sops/secrets/secret/secret")).unwrap(),
        before
    );
}

fn copy_restoring_links(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        let parent = from.file_name().unwrap().to_str().unwrap();
        if entry.path().is_dir() {
            copy_restoring_links(&entry.path(), &target);
        } else if ["users", "machines", "groups"].contains(&parent) {
            let link = std::fs::read_to_string(entry.path()).unwrap();
            std::os::unix::fs::symlink(link.trim(), &target).unwrap();
        } else {
            std::fs::write(&target, std::fs::read(entry.path()).unwrap()).unwrap();
        }
    }
}
