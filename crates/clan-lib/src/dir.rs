//! Finding the clan directory a command works on.

use std::path::{Path, PathBuf};

use crate::Error;

/// The nearest of `start` and its ancestors that is a clan: it holds a `clan.toml`, or only
/// clan-core's `inventory.json` (a clan brought from clan-core).
pub fn find_clan_dir(start: &Path) -> Result<PathBuf, Error> {
    start
        .ancestors()
        .find(|dir| is_clan(dir))
        .map(Path::to_path_buf)
        .ok_or_else(|| Error::NoClan {
            searched: start.to_path_buf(),
        })
}

fn is_clan(dir: &Path) -> bool {
    [clan_inventory::CLAN_TOML, clan_inventory::INVENTORY_JSON]
        .iter()
        .any(|file| dir.join(file).is_file())
}
