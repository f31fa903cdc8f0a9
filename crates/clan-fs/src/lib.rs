//! The one helper through which clan resolves, reads and writes paths inside a tree (the clan
//! directory, a generator's `$out`, an import directory, a machine's `/`), so that nothing a
//! hostile commit, generator script or local user puts there makes clan touch a file outside
//! it.
//!
//! A [`Tree`] holds a directory file descriptor. Every path given to it is relative, resolved
//! beneath that descriptor with Linux `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS)` — or, on kernels without `openat2`, one `openat(O_NOFOLLOW)` per
//! component — so a symbolic link anywhere in the path is an error naming it, never followed.
//! Files are read only when `fstat` says they are regular files (a FIFO never blocks, a device
//! is never read), up to a size limit; writes are atomic (a `0600` temporary file in the same
//! directory, synced, then renamed); removal never descends through a link; a link that clan
//! itself stores as data (sops recipient links) is read with [`Tree::read_link`].
//!
//! [`system`] applies the machine-side policy of the agent, which must follow the system's own
//! links (`/lib → usr/lib`) but none a non-root user controls.
//!
//! This crate must never follow a symbolic link it was not told to trust, and never open a
//! file that is not regular for reading.

mod error;
pub mod system;
mod tree;

pub use error::{Error, Kind};
pub use tree::{Entry, Tree, WriteOptions};

/// A size limit for files clan reads as values (public vars, sops files, manifests).
pub const DEFAULT_LIMIT: u64 = 64 << 20;

#[cfg(test)]
mod tests;
