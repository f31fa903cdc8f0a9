//! Reading the clan directory's evaluation inputs (`machines/<m>/config.star`,
//! `services/<name>/service.star`, public var values) through [`clan_fs`]: a link anywhere is
//! an error naming it, so nothing outside the clan directory is ever read, hashed, cached or
//! handed to a service.

use std::path::{Path, PathBuf};

use clan_fs::{Kind, Tree};

use crate::error::Error;

/// The clan directory as a tree (paths in errors under `dir`).
pub(crate) fn open(dir: &Path) -> Result<Tree, Error> {
    Ok(Tree::open(dir).map_err(clan_inventory::Error::from)?)
}

fn fs_error(error: clan_fs::Error) -> Error {
    clan_inventory::Error::from(error).into()
}

/// Sorted names of the directories in `rel`; none when it is missing. A link is an error.
pub(crate) fn subdirs(tree: &Tree, rel: &Path) -> Result<Vec<String>, Error> {
    let mut names = Vec::new();
    for entry in tree.list(rel).map_err(fs_error)? {
        let path = || rel.join(&entry.name);
        match entry.kind {
            Kind::Directory => names.push(entry.name.to_string_lossy().into_owned()),
            Kind::Symlink => {
                return Err(fs_error(clan_fs::Error::Symlink {
                    path: tree.display_path(&path()),
                }))
            }
            _ => {}
        }
    }
    Ok(names)
}

/// The UTF-8 text of the regular file `rel`; `None` when it is missing.
pub(crate) fn read_text(tree: &Tree, rel: &Path) -> Result<Option<String>, Error> {
    let Some(bytes) = tree
        .read_optional(rel, clan_fs::DEFAULT_LIMIT)
        .map_err(fs_error)?
    else {
        return Ok(None);
    };
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|error| Error::Read {
            path: tree.display_path(rel),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, error),
        })
}

/// `(name, path)` of each `<rel>/<name>/<file>` that exists, relative to the clan directory.
pub(crate) fn files_in_subdirs(
    tree: &Tree,
    rel: &Path,
    file: &str,
) -> Result<Vec<(String, PathBuf)>, Error> {
    let mut found = Vec::new();
    for name in subdirs(tree, rel)? {
        let path = rel.join(&name).join(file);
        if tree.kind(&path).map_err(fs_error)?.is_some() {
            found.push((name, path));
        }
    }
    Ok(found)
}
