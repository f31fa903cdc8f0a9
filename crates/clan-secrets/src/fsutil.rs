//! File writes as the secrets store needs them: created `0600` before any byte is written,
//! written to a temporary file in the same directory, synced, then renamed into place.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use rand::RngCore;

use crate::Error;

/// Atomically replaces `path` with `content` (mode 0600), creating parent directories.
pub(crate) fn write_atomic(path: &Path, content: &[u8]) -> Result<(), Error> {
    let io = |source| Error::Io {
        action: "write",
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.tmp-{:016x}", rand::rngs::OsRng.next_u64()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        // The mode passed to open is masked by the umask; make sure before writing.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(content)?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result.map_err(io)
}

/// `to` relative to the directory `from` (both relative to the same root, no `..`).
pub fn relative_path(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<Component> = from.components().collect();
    let to: Vec<Component> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for part in &to[common..] {
        out.push(part);
    }
    out
}

/// Creates (or replaces) a relative symlink at `link` pointing at `target`; both relative to
/// `root`.
pub(crate) fn symlink_relative(root: &Path, link: &Path, target: &Path) -> Result<(), Error> {
    let io = |source| Error::Io {
        action: "create link",
        path: link.to_path_buf(),
        source,
    };
    let absolute = root.join(link);
    let dir = absolute.parent().expect("links live in a directory");
    fs::create_dir_all(dir).map_err(io)?;
    let relative = relative_path(link.parent().expect("links live in a directory"), target);
    match fs::symlink_metadata(&absolute) {
        Ok(meta) if meta.file_type().is_symlink() => fs::remove_file(&absolute).map_err(io)?,
        Ok(_) => {
            return Err(Error::NotALink {
                path: link.to_path_buf(),
            })
        }
        Err(_) => {}
    }
    std::os::unix::fs::symlink(relative, &absolute).map_err(io)
}

/// Names of the entries of `dir`, sorted; empty if it does not exist.
pub(crate) fn entry_names(dir: &Path) -> Result<Vec<String>, Error> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::Io {
                action: "list",
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::Io {
            action: "list",
            path: dir.to_path_buf(),
            source,
        })?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Removes `dir` if it is empty, and then its parents up to (not including) `stop`.
pub(crate) fn remove_empty_dirs(dir: &Path, stop: &Path) {
    let mut current = dir;
    while current != stop && current.starts_with(stop) && fs::remove_dir(current).is_ok() {
        match current.parent() {
            Some(parent) => current = parent,
            None => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        let rel = |a: &str, b: &str| {
            relative_path(Path::new(a), Path::new(b))
                .display()
                .to_string()
        };
        assert_eq!(
            rel("sops/secrets/s/users", "sops/users/alice"),
            "../../../users/alice"
        );
        assert_eq!(
            rel("sops/groups/g/machines", "sops/machines/m"),
            "../../../machines/m"
        );
        assert_eq!(
            rel("vars/per-machine/m/gen/file/machines", "sops/machines/m"),
            "../../../../../../sops/machines/m"
        );
    }

    #[test]
    fn atomic_write_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/secret");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(entry_names(path.parent().unwrap()).unwrap(), ["secret"]);
    }
}
