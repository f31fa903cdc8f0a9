//! Shared by the deploy tests: starting the test machines (or saying why they cannot run
//! here), and the clan binary they run with the `clan-agent` every deploy uploads to each test
//! machine. The test build carries its symbols (about 50 MB for the agent); copies without
//! them are a third of that, which keeps a fifty-machine deploy cheap. Without `strip`
//! (binutils) the binaries themselves are used. [`fixture`] drives a clan directory with
//! that binary.

pub mod fixture;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use clan_testbed::{check_host, Error, Options, Testbed};

/// Test machines named `names` and their state directory; `None` (after saying why) when
/// this host cannot run them (not root, a tool missing).
#[allow(dead_code)] // each test file uses part of this module
pub fn testbed(names: &[&str]) -> Option<(tempfile::TempDir, Testbed)> {
    testbed_with(names, &[])
}

/// [`testbed`] with `packages` added to the machines' root filesystem.
#[allow(dead_code)] // each test file uses part of this module
pub fn testbed_with(names: &[&str], packages: &[&str]) -> Option<(tempfile::TempDir, Testbed)> {
    testbed_configured(names, |options| {
        options.extra_packages = packages.iter().map(|p| (*p).to_owned()).collect();
    })
}

/// [`testbed`] with `configure` applied to the options (extra packages, binds).
pub fn testbed_configured(
    names: &[&str],
    configure: impl FnOnce(&mut Options),
) -> Option<(tempfile::TempDir, Testbed)> {
    if let Err(reason) = check_host() {
        clan_testbed::skip(reason);
        return None;
    }
    let state = tempfile::tempdir().expect("state dir");
    let mut options = Options::named(state.path(), names.iter().copied());
    options.progress = |message| eprintln!("{message}");
    configure(&mut options);
    match Testbed::up(&options) {
        Ok(testbed) => Some((state, testbed)),
        Err(error @ Error::Host(clan_host::Error::ToolMissing { .. })) => {
            clan_testbed::skip(error);
            None
        }
        Err(error) => panic!("testbed up: {error}"),
    }
}

/// The `clan` binary the tests run: a stripped copy, with the stripped `clan-agent` beside
/// it, where the deployer looks for the agent it uploads.
pub fn clan_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| stripped().join("clan"))
}

/// A directory holding stripped copies of this build's `clan` and `clan-agent`, named after
/// the build so that a rebuild makes new ones; the build's own directory without `strip`.
fn stripped() -> PathBuf {
    let originals =
        [env!("CARGO_BIN_EXE_clan"), env!("CARGO_BIN_EXE_clan-agent")].map(PathBuf::from);
    let build_dir = originals[0]
        .parent()
        .expect("in the target directory")
        .to_path_buf();
    let mut key = Vec::new();
    for original in &originals {
        let metadata = std::fs::metadata(original).expect("the binaries are built");
        let modified = metadata
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |t| t.as_nanos());
        key.push(format!("{}-{modified}", metadata.len()));
    }
    let dir = build_dir.join(format!("stripped-{}", key.join("-")));
    if dir.is_dir() {
        return dir;
    }
    // Test processes run at once: each strips into its own directory, the first rename wins.
    let partial = build_dir.join(format!("stripped-partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&partial);
    let stripped = std::fs::create_dir(&partial).is_ok()
        && originals.iter().all(|original| {
            std::process::Command::new("strip")
                .arg("-o")
                .arg(partial.join(original.file_name().expect("a file")))
                .arg(original)
                .status()
                .is_ok_and(|status| status.success())
        });
    let renamed = stripped && std::fs::rename(&partial, &dir).is_ok();
    let _ = std::fs::remove_dir_all(&partial);
    if !renamed {
        return if dir.is_dir() { dir } else { build_dir };
    }
    // Copies of earlier builds are of no more use.
    for entry in std::fs::read_dir(&build_dir)
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let stale = (name.starts_with("stripped-")
            && entry.path() != dir
            && !name.starts_with("stripped-partial-"))
            || name.starts_with("clan-agent-");
        if stale {
            let _ = std::fs::remove_dir_all(entry.path())
                .or_else(|_| std::fs::remove_file(entry.path()));
        }
    }
    dir
}
