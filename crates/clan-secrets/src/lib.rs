//! clan's secrets: sops files in clan-core's "binary" form, encrypted and decrypted in-process
//! (AES-256-GCM data and MAC, the data key age-encrypted to each recipient), the admin's age
//! keys, and the `sops/` tree of users, machines, groups and secrets with its recipient
//! symlinks, re-keying and audit. `vars` builds on [`SopsDir::write_secret_at`] and
//! [`SopsDir::read_secret_at`].
//!
//! This crate owns the bytes of sops files and everything under `<clan>/sops/`, plus the
//! recipient links of secret directories it is handed (such as `vars/…/<file>/`). It must never
//! print, prompt, read the process environment except in [`KeySources::from_env`], spawn a
//! process per secret, or hold plaintext outside [`Plaintext`] (zeroized, redacted `Debug`).
//! Every file it writes is created `0600` and renamed into place. Committing to git is left
//! to the caller (`clan-git`), using the [`Changes`] returned.

mod error;
mod fsutil;
mod keys;
mod names;
pub mod sops;
mod store;

use std::fmt;

pub use age::secrecy::SecretString;
pub use error::Error;
pub use fsutil::relative_path;
pub use keys::{
    append_generated_identity, generate_identity, AdminKey, Identities, KeySources, Recipient,
};
pub use names::{GroupName, MachineName, SecretName, UserName};
pub use sops::{decrypt, decrypt_many, encrypt, SopsError, SopsFile};
pub use store::{
    write_key_file, Admin, AuditEntry, Changes, Group, Holder, Member, MemberKind, Problem,
    RekeyReport, SopsDir,
};

/// Decrypted secret bytes: zeroized on drop, never shown by `Debug`.
#[derive(Clone)]
pub struct Plaintext(zeroize::Zeroizing<Vec<u8>>);

impl Plaintext {
    pub fn new(bytes: impl Into<zeroize::Zeroizing<Vec<u8>>>) -> Self {
        Plaintext(bytes.into())
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Plaintext([REDACTED; {} bytes])", self.0.len())
    }
}
