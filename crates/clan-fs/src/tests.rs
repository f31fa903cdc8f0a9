//! Hostile trees: links at every level (to outside, to a secret, to a directory, dangling),
//! FIFOs, devices, huge files, odd names; the machine policy on links; atomic writes of
//! files outside a tree.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt as _, PermissionsExt as _};
use std::path::Path;

use super::*;

fn is_root() -> bool {
    rustix::fs::fstat(Tree::open("/proc/self").unwrap()).is_ok_and(|st| st.st_uid == 0)
}

const SECRET: &[u8] = b"outside-secret-content";

/// A tree `a/b/c.txt`, and a directory outside it holding a secret.
struct Fixture {
    _dir: tempfile::TempDir,
    inside: std::path::PathBuf,
    outside: std::path::PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let inside = dir.path().join("tree");
        let outside = dir.path().join("outside");
        fs::create_dir_all(inside.join("a/b")).unwrap();
        fs::write(inside.join("a/b/c.txt"), "inside").unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("secret"), SECRET).unwrap();
        Fixture {
            _dir: dir,
            inside,
            outside,
        }
    }

    fn tree(&self) -> Tree {
        Tree::open(&self.inside).unwrap()
    }

    /// Nothing outside was written or deleted.
    fn outside_untouched(&self) {
        let names: Vec<_> = fs::read_dir(&self.outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["secret"]);
        assert_eq!(fs::read(self.outside.join("secret")).unwrap(), SECRET);
    }
}

fn assert_not_a_file(error: &Error, expected: Kind) {
    assert!(
        matches!(error, Error::NotAFile { kind, .. } if *kind == expected),
        "{error}"
    );
}

/// The kinds of link a hostile tree may hold in place of `at`.
fn plant(fixture: &Fixture, at: &Path, case: usize) {
    let at = fixture.inside.join(at);
    let _ = fs::remove_dir_all(&at);
    let _ = fs::remove_file(&at);
    match case {
        0 => symlink(&fixture.outside, &at).unwrap(),
        1 => symlink(fixture.outside.join("secret"), &at).unwrap(),
        2 => symlink(fixture.inside.join("a"), &at).unwrap(),
        3 => symlink("/nonexistent/clan-fs-dangling", &at).unwrap(),
        _ => symlink("../../../outside", &at).unwrap(),
    }
}

#[test]
fn links_at_every_level_are_refused_and_named() {
    for level in ["a", "a/b", "a/b/c.txt"] {
        for case in 0..5 {
            let fixture = Fixture::new();
            plant(&fixture, Path::new(level), case);
            let tree = fixture.tree();
            let culprit = fixture.inside.join(level);
            let file = Path::new("a/b/c.txt");
            let named = |error: Error| {
                assert_eq!(error.path(), culprit, "{level} case {case}: {error}");
                assert!(matches!(error, Error::Symlink { .. }), "{error}");
                assert!(!error.to_string().contains("outside-secret"));
            };
            named(tree.read(file, DEFAULT_LIMIT).unwrap_err());
            named(tree.open_file(file).unwrap_err());
            if level == "a/b/c.txt" {
                // A final link is replaced by the file written, never written through.
                tree.write(file, b"x", WriteOptions::new(0o600)).unwrap();
                assert_eq!(tree.kind(file).unwrap(), Some(Kind::File));
                fixture.outside_untouched();
                plant(&fixture, Path::new(level), case);
            } else {
                named(
                    tree.write(file, b"x", WriteOptions::new(0o600))
                        .unwrap_err(),
                );
                named(tree.list(Path::new("a/b")).unwrap_err());
                named(tree.subtree(Path::new("a/b")).unwrap_err());
                named(tree.walk_for_test(Path::new("a/b")).unwrap_err());
                named(
                    tree.create_dir_all(Path::new("a/b/new"), 0o755)
                        .unwrap_err(),
                );
            }
            // Removing the link removes the link, nothing it points at.
            assert!(tree.remove_all(Path::new(level)).unwrap());
            assert!(fs::symlink_metadata(&culprit).is_err());
            fixture.outside_untouched();
        }
    }
}

#[test]
fn removal_never_descends_through_links() {
    let fixture = Fixture::new();
    symlink(&fixture.outside, fixture.inside.join("a/b/out")).unwrap();
    symlink(fixture.outside.join("secret"), fixture.inside.join("a/s")).unwrap();
    let tree = fixture.tree();
    assert!(tree.remove_all(Path::new("a")).unwrap());
    assert!(!fixture.inside.join("a").exists());
    fixture.outside_untouched();
    assert!(!tree.remove_all(Path::new("a")).unwrap(), "already gone");
}

#[test]
fn paths_leaving_the_tree_are_refused() {
    let fixture = Fixture::new();
    let tree = fixture.tree();
    for rel in ["../outside/secret", "a/../../outside/secret", "/etc/passwd"] {
        let error = tree.read(Path::new(rel), DEFAULT_LIMIT).unwrap_err();
        assert!(matches!(error, Error::Outside { .. }), "{rel}: {error}");
        assert!(tree
            .write(Path::new(rel), b"x", WriteOptions::new(0o600))
            .is_err());
    }
    fixture.outside_untouched();
}

#[test]
fn only_regular_files_are_read_and_a_fifo_never_blocks() {
    let fixture = Fixture::new();
    let tree = fixture.tree();
    rustix::fs::mknodat(
        &tree,
        "fifo",
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let error = tree.read(Path::new("fifo"), DEFAULT_LIMIT).unwrap_err();
    assert_not_a_file(&error, Kind::Fifo);
    assert!(error.to_string().contains("FIFO"));
    let error = tree.read(Path::new("a"), DEFAULT_LIMIT).unwrap_err();
    assert_not_a_file(&error, Kind::Directory);
    if is_root() {
        // /dev/zero's numbers: reading it would never end.
        rustix::fs::mknodat(
            &tree,
            "zero",
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o600),
            rustix::fs::makedev(1, 5),
        )
        .unwrap();
        let error = tree.read(Path::new("zero"), DEFAULT_LIMIT).unwrap_err();
        assert_not_a_file(&error, Kind::CharDevice);
    }
    fs::write(fixture.inside.join("big"), vec![b'x'; 4097]).unwrap();
    let error = tree.read(Path::new("big"), 4096).unwrap_err();
    assert!(
        matches!(error, Error::TooLarge { limit: 4096, .. }),
        "{error}"
    );
    assert_eq!(tree.read(Path::new("big"), 4097).unwrap().len(), 4097);
    assert_eq!(tree.read_optional(Path::new("missing"), 1).unwrap(), None);
    assert!(tree
        .read(Path::new("missing/x"), 1)
        .unwrap_err()
        .is_not_found());
}

#[test]
fn writes_are_atomic_private_and_replace_links_instead_of_following_them() {
    let fixture = Fixture::new();
    let tree = fixture.tree();
    let file = Path::new("a/b/c.txt");
    tree.write(file, b"new", WriteOptions::new(0o640)).unwrap();
    let meta = fs::metadata(fixture.inside.join(file)).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    assert_eq!(fs::read(fixture.inside.join(file)).unwrap(), b"new");
    let names: Vec<_> = tree.list(Path::new("a/b")).unwrap();
    assert_eq!(names.len(), 1, "no temporary file left: {names:?}");

    // A final link is replaced by the file, and its target left alone.
    symlink(
        fixture.outside.join("secret"),
        fixture.inside.join("a/link"),
    )
    .unwrap();
    let error = tree
        .write_new(Path::new("a/link"), b"x", 0o600)
        .unwrap_err();
    assert!(error.to_string().contains("a/link"), "{error}");
    tree.write(Path::new("a/link"), b"mine", WriteOptions::new(0o600))
        .unwrap();
    assert_eq!(tree.kind(Path::new("a/link")).unwrap(), Some(Kind::File));
    fixture.outside_untouched();

    // A directory in the way is named.
    let error = tree
        .write(Path::new("a/b"), b"x", WriteOptions::new(0o600))
        .unwrap_err();
    assert_not_a_file(&error, Kind::Directory);

    if is_root() {
        tree.write(
            Path::new("owned"),
            b"x",
            WriteOptions::new(0o600).owner(Some(4242), Some(4243)),
        )
        .unwrap();
        let meta = fs::metadata(fixture.inside.join("owned")).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (4242, 4243));
    }
}

#[test]
fn odd_names_are_names() {
    let fixture = Fixture::new();
    let tree = fixture.tree();
    for name in [
        "new\nline",
        "$(touch pwned)",
        "ünï cødé ✓",
        "-rf",
        "a b;c|d&e",
        ".hidden",
    ] {
        let dir = tree
            .create_dir_all(&Path::new("odd").join(name), 0o700)
            .unwrap();
        dir.write(Path::new(name), name.as_bytes(), WriteOptions::new(0o600))
            .unwrap();
        let rel = Path::new("odd").join(name).join(name);
        assert_eq!(tree.read(&rel, 100).unwrap(), name.as_bytes());
    }
    let listed: Vec<String> = tree
        .list(Path::new("odd"))
        .unwrap()
        .into_iter()
        .map(|e| e.name.into_string().unwrap())
        .collect();
    assert_eq!(listed.len(), 6);
    assert!(!Path::new("pwned").exists());
    assert!(tree.remove_all(Path::new("odd")).unwrap());
}

#[test]
fn links_are_read_as_data_renames_and_exchanges_stay_inside() {
    let fixture = Fixture::new();
    let tree = fixture.tree();
    tree.symlink(Path::new("../../sops/users/alice"), Path::new("a/alice"))
        .unwrap();
    assert_eq!(
        tree.read_link(Path::new("a/alice")).unwrap(),
        Path::new("../../sops/users/alice")
    );
    let error = tree.read_link(Path::new("a/b/c.txt")).unwrap_err();
    assert!(
        matches!(
            error,
            Error::NotASymlink {
                kind: Kind::File,
                ..
            }
        ),
        "{error}"
    );

    tree.create_dir_all(Path::new("x"), 0o755).unwrap();
    tree.exchange(Path::new("x"), Path::new("a")).unwrap();
    assert_eq!(tree.kind(Path::new("x/b/c.txt")).unwrap(), Some(Kind::File));
    tree.rename(Path::new("x/b/c.txt"), Path::new("moved"))
        .unwrap();
    assert_eq!(tree.read(Path::new("moved"), 10).unwrap(), b"inside");
    assert!(tree.remove_file(Path::new("moved")).unwrap());
    assert!(!tree.remove_file(Path::new("moved")).unwrap());
}

#[test]
fn system_follows_root_links_only() {
    if !is_root() {
        clan_testbed::skip("needs root to own files as another user");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir_all(root.join("usr/lib")).unwrap();
    fs::create_dir_all(root.join("run")).unwrap();
    fs::create_dir_all(root.join("var")).unwrap();
    fs::create_dir_all(root.join("etc/cron.d")).unwrap();
    symlink("usr/lib", root.join("lib")).unwrap();
    symlink("/run", root.join("var/run")).unwrap();
    fs::create_dir_all(root.join("home/alice")).unwrap();
    std::os::unix::fs::chown(root.join("home/alice"), Some(1000), None).unwrap();
    let system = system::System::open(root).unwrap();

    let (lib, name) = system.parent(Path::new("/lib/x.conf"), None).unwrap();
    lib.write(Path::new(&name), b"ok", WriteOptions::new(0o644))
        .unwrap();
    assert!(root.join("usr/lib/x.conf").is_file());
    let run = system
        .dir(Path::new("/var/run/clan/secrets"), Some(0o751))
        .unwrap();
    drop(run);
    assert!(root.join("run/clan/secrets").is_dir());

    // alice's link, in alice's directory: refused, nothing written where it points.
    fs::create_dir_all(root.join("home/alice/.app")).unwrap();
    fs::remove_dir(root.join("home/alice/.app")).unwrap();
    symlink("/etc/cron.d", root.join("home/alice/.app")).unwrap();
    let error = system
        .parent(Path::new("/home/alice/.app/config"), Some(0o755))
        .unwrap_err();
    assert!(matches!(error, Error::UntrustedLink { .. }), "{error}");
    assert_eq!(error.path(), root.join("home/alice/.app"));
    // Even a root-owned link is refused in a directory alice can write.
    fs::remove_file(root.join("home/alice/.app")).unwrap();
    symlink("/etc/cron.d", root.join("home/alice/.app")).unwrap();
    std::os::unix::fs::lchown(root.join("home/alice/.app"), Some(0), None).unwrap();
    assert!(matches!(
        system.parent(Path::new("/home/alice/.app/config"), Some(0o755)),
        Err(Error::UntrustedLink { .. })
    ));
    assert_eq!(fs::read_dir(root.join("etc/cron.d")).unwrap().count(), 0);

    // A plain directory of alice's is written into, through its descriptor.
    fs::remove_file(root.join("home/alice/.app")).unwrap();
    let (app, name) = system
        .parent(Path::new("/home/alice/.app/config"), Some(0o755))
        .unwrap();
    app.write(
        Path::new(&name),
        b"cfg",
        WriteOptions::new(0o600).owner(Some(1000), Some(1000)),
    )
    .unwrap();
    let meta = fs::symlink_metadata(root.join("home/alice/.app/config")).unwrap();
    assert_eq!((meta.uid(), meta.len()), (1000, 3));
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn write_file_replaces_with_the_mode_asked_and_leaves_nothing_beside() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key");
    write_file(&path, b"one", WriteOptions::new(0o600)).unwrap();
    write_file(&path, b"two", WriteOptions::new(0o640)).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"two");
    assert_eq!(mode(&path), 0o640);
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn write_file_never_writes_through_a_link() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    fs::write(&victim, "keep").unwrap();
    let link = dir.path().join("state.json");
    symlink(&victim, &link).unwrap();
    write_file(&link, b"new", WriteOptions::new(0o644)).unwrap();
    // The link itself is replaced by the file; its target is untouched.
    assert_eq!(fs::read(&victim).unwrap(), b"keep");
    assert!(!link.symlink_metadata().unwrap().is_symlink());
}

#[test]
fn a_staged_write_puts_its_temporary_file_in_the_staging_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (data, staging) = (dir.path().join("data"), dir.path().join("tmp"));
    fs::create_dir(&data).unwrap();
    fs::create_dir(&staging).unwrap();
    let path = data.join("record");
    write_file_staged(&path, &staging, b"r", WriteOptions::new(0o644)).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"r");
    assert_eq!(mode(&path), 0o644);
    assert_eq!(fs::read_dir(&data).unwrap().count(), 1);
    assert_eq!(fs::read_dir(&staging).unwrap().count(), 0);
}

#[test]
fn only_mine_needs_a_private_directory_nobody_else_can_rename() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("cache");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    assert!(only_mine(&dir));
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
    assert!(!only_mine(&dir), "others may write in it");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    symlink(&dir, base.path().join("link")).unwrap();
    assert!(!only_mine(&base.path().join("link")), "a link");
    // Its holder writable by others: they could rename it away and put their own there.
    fs::set_permissions(base.path(), fs::Permissions::from_mode(0o777)).unwrap();
    assert!(!only_mine(&dir));
    fs::set_permissions(base.path(), fs::Permissions::from_mode(0o1777)).unwrap();
    assert!(only_mine(&dir), "a sticky holder, as /tmp");
}

#[test]
fn private_ancestry_needs_every_directory_above_changeable_by_no_one_else() {
    let base = tempfile::tempdir().unwrap();
    let deep = base.path().join("a/b/c");
    fs::create_dir_all(&deep).unwrap();
    fs::set_permissions(base.path(), fs::Permissions::from_mode(0o700)).unwrap();
    assert!(private_ancestry(&deep));
    // Two levels up, writable by others: they could rename `b` away and put a link there.
    fs::set_permissions(base.path().join("a"), fs::Permissions::from_mode(0o777)).unwrap();
    assert!(!private_ancestry(&deep), "a writable ancestor");
    fs::set_permissions(base.path().join("a"), fs::Permissions::from_mode(0o1777)).unwrap();
    assert!(private_ancestry(&deep), "a sticky ancestor, as /tmp");
    symlink(base.path().join("a/b"), base.path().join("link")).unwrap();
    assert!(
        !private_ancestry(&base.path().join("link/c")),
        "a link on the way"
    );
}
