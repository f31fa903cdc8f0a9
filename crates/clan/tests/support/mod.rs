//! Shared by the deploy tests: starting the test machines (or saying why they cannot run
//! here), and the clan binary they run, which every deploy also uploads to each test machine
//! as its agent. The test build carries its symbols (about 110 MB); a copy
//! without them is a third of that, which keeps a fifty-machine deploy cheap. Without
//! `strip` (binutils) the binary itself is used. [`fixture`] drives a clan directory with
//! that binary.

pub mod fixture;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use clan_testbed::{check_host, Error, Options, Testbed};

/// Test machines named `names` and their state directory; `None` (after saying why) when
/// this host cannot run them (not root, a tool missing).
pub fn testbed(names: &[&str]) -> Option<(tempfile::TempDir, Testbed)> {
    if let Err(reason) = check_host() {
        eprintln!("skipping: {reason}");
        return None;
    }
    let state = tempfile::tempdir().expect("state dir");
    let mut options = Options::named(state.path(), names.iter().copied());
    options.progress = |message| eprintln!("{message}");
    match Testbed::up(&options) {
        Ok(testbed) => Some((state, testbed)),
        Err(error @ Error::ToolMissing { .. }) => {
            eprintln!("skipping: {error}");
            None
        }
        Err(error) => panic!("testbed up: {error}"),
    }
}

pub fn clan_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let original = PathBuf::from(env!("CARGO_BIN_EXE_clan"));
        let metadata = std::fs::metadata(&original).expect("the clan binary is built");
        let modified = metadata
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |t| t.as_nanos());
        // Named after the build it comes from, so a rebuild makes a new copy.
        let copy = original.with_file_name(format!("clan-agent-{}-{modified}", metadata.len()));
        if copy.exists() {
            return copy;
        }
        let partial = copy.with_extension(format!("partial-{}", std::process::id()));
        let stripped = std::process::Command::new("strip")
            .arg("-o")
            .arg(&partial)
            .arg(&original)
            .status()
            .is_ok_and(|status| status.success());
        if !stripped || std::fs::rename(&partial, &copy).is_err() {
            let _ = std::fs::remove_file(&partial);
            return original;
        }
        // Copies of earlier builds are of no more use.
        let dir = copy.parent().expect("in the target directory");
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let stale = name.to_string_lossy().starts_with("clan-agent-") && entry.path() != copy;
            if stale {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        copy
    })
}
