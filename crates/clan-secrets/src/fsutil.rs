//! The clan directory's files as the secrets store needs them, through [`clan_fs`]: no
//! symbolic link is followed except a recipient link, which is read as a name; writes are
//! created `0600` before any byte is written, synced and renamed into place. Paths are
//! relative to the clan directory, and so are the paths in errors.

use std::path::{Component, Path, PathBuf};

use clan_fs::{Kind, Tree, WriteOptions};

use crate::Error;

/// The clan directory, opened per operation (so a moved or replaced clan directory is never
/// half-used).
#[derive(Clone, Copy)]
pub(crate) struct ClanFiles<'a>(pub &'a Path);

impl ClanFiles<'_> {
    fn tree(&self) -> Result<Tree, Error> {
        Ok(Tree::open(self.0)?.shown_as(""))
    }

    fn kind(&self, rel: &Path) -> Option<Kind> {
        self.tree().ok()?.kind(rel).ok().flatten()
    }

    pub(crate) fn is_file(&self, rel: &Path) -> bool {
        self.kind(rel) == Some(Kind::File)
    }

    /// Whether `rel` is a regular file; a link at it or above it is an error naming it.
    pub(crate) fn is_file_checked(&self, rel: &Path) -> Result<bool, Error> {
        match self.tree()?.kind(rel)? {
            Some(Kind::Symlink) => Err(clan_fs::Error::Symlink {
                path: rel.to_path_buf(),
            }
            .into()),
            kind => Ok(kind == Some(Kind::File)),
        }
    }

    pub(crate) fn is_dir(&self, rel: &Path) -> bool {
        self.kind(rel) == Some(Kind::Directory)
    }

    pub(crate) fn is_symlink(&self, rel: &Path) -> bool {
        self.kind(rel) == Some(Kind::Symlink)
    }

    pub(crate) fn exists(&self, rel: &Path) -> bool {
        self.kind(rel).is_some()
    }

    /// A regular file's content.
    pub(crate) fn read(&self, rel: &Path) -> Result<Vec<u8>, Error> {
        Ok(self.tree()?.read(rel, clan_fs::DEFAULT_LIMIT)?)
    }

    /// Atomically replaces `rel` with `content` (mode 0600), creating parent directories.
    pub(crate) fn write_atomic(&self, rel: &Path, content: &[u8]) -> Result<(), Error> {
        let dir = self
            .tree()?
            .create_dir_all(rel.parent().unwrap_or(Path::new("")), 0o755)?;
        let name = rel.file_name().map(Path::new).unwrap_or(rel);
        Ok(dir.write(name, content, WriteOptions::new(0o600))?)
    }

    /// Removes `rel` and what is below it (never through a link).
    pub(crate) fn remove_all(&self, rel: &Path) -> Result<(), Error> {
        self.tree()?.remove_all(rel)?;
        Ok(())
    }

    /// Removes the file or link `rel`.
    pub(crate) fn remove_file(&self, rel: &Path) -> Result<(), Error> {
        self.tree()?.remove_file(rel)?;
        Ok(())
    }

    pub(crate) fn rename(&self, from: &Path, to: &Path) -> Result<(), Error> {
        Ok(self.tree()?.rename(from, to)?)
    }

    /// A link's target, as data.
    pub(crate) fn read_link(&self, rel: &Path) -> Result<PathBuf, Error> {
        Ok(self.tree()?.read_link(rel)?)
    }

    /// Creates (or replaces) a relative symlink at `link` pointing at `target`.
    pub(crate) fn symlink_relative(&self, link: &Path, target: &Path) -> Result<(), Error> {
        let parent = link.parent().unwrap_or(Path::new(""));
        let tree = self.tree()?;
        tree.create_dir_all(parent, 0o755)?;
        match tree.kind(link)? {
            Some(Kind::Symlink) => {
                tree.remove_file(link)?;
            }
            Some(_) => {
                return Err(Error::NotALink {
                    path: link.to_path_buf(),
                })
            }
            None => {}
        }
        Ok(tree.symlink(&relative_path(parent, target), link)?)
    }

    /// Names of the entries of `dir`, sorted; empty if it does not exist.
    pub(crate) fn entry_names(&self, dir: &Path) -> Result<Vec<String>, Error> {
        Ok(self
            .tree()?
            .list(dir)?
            .into_iter()
            .filter_map(|entry| entry.name.into_string().ok())
            .collect())
    }

    /// Names of the entries of `dir` that hold members, secrets or vars (directories and
    /// files), sorted; a link among them is an error naming it (those are never links in
    /// clan-core's layout).
    pub(crate) fn dir_names(&self, dir: &Path) -> Result<Vec<String>, Error> {
        let mut names = Vec::new();
        for entry in self.tree()?.list(dir)? {
            if entry.kind == Kind::Symlink {
                return Err(clan_fs::Error::Symlink {
                    path: dir.join(&entry.name),
                }
                .into());
            }
            names.extend(entry.name.into_string().ok());
        }
        Ok(names)
    }

    /// Removes `dir` if it is empty, and then its parents up to (not including) `stop`.
    pub(crate) fn remove_empty_dirs(&self, dir: &Path, stop: &Path) {
        let Ok(tree) = self.tree() else {
            return;
        };
        let mut current = dir;
        while current != stop
            && current.starts_with(stop)
            && tree.remove_empty_dir(current).unwrap_or(false)
        {
            match current.parent() {
                Some(parent) => current = parent,
                None => break,
            }
        }
    }
}

/// Atomically replaces the file at `path`, outside the clan directory (the user's age key
/// file), with `content` (mode 0600); a missing directory is created 0700.
pub(crate) fn write_private_at(path: &Path, content: &[u8]) -> Result<(), Error> {
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.exists() {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(clan_error::io("create", dir))?;
    }
    Ok(clan_fs::write_file(
        path,
        content,
        WriteOptions::new(0o600),
    )?)
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
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let files = ClanFiles(dir.path());
        let rel = Path::new("a/b/secret");
        files.write_atomic(rel, b"one").unwrap();
        files.write_atomic(rel, b"two").unwrap();
        let path = dir.path().join(rel);
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(files.entry_names(Path::new("a/b")).unwrap(), ["secret"]);
    }
}
