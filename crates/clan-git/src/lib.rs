//! Changing a clan safely. Every command that changes the clan (clan.toml, inventory.json,
//! vars, sops) holds the one [`ClanLock`] of its repository while it reads, changes and
//! commits; the commit ([`ClanLock::commit`]) is only possible under it. Whatever an
//! interrupted command left behind — a helper ref of an unfinished commit, a lock file of a
//! killed git, half-written temporary files, changes made but not committed — is recovered
//! by the next command when it takes the lock ([`ClanLock::recover`]), so that no state ever
//! needs a hand-run git command.
//!
//! This crate decides nothing about what changes, never prints (waiting is reported through
//! a callback, recovery as [`Recovered`] values) and never commits outside the lock.

mod commit;
mod error;
mod git;
mod lock;
mod recover;

pub use error::Error;
pub use lock::{ClanLock, Holder};
pub use recover::{interrupted, is_temporary, Recovered};
