//! Age keys: public recipients (`age1…`), private identities and where an admin's identities
//! are found (`SOPS_AGE_KEY`, `SOPS_AGE_KEY_FILE`, `~/.config/sops/age/keys.txt`).
//!
//! Public keys of plugin identities (`AGE-PLUGIN-…`) cannot be derived from the identity; as in
//! clan-core they are taken from a `# public key: age1…` (or `# recipient: age1…`) comment
//! on a preceding line.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use age::secrecy::{ExposeSecret, SecretString};

/// A public key that secrets are encrypted to, e.g. `age1…`, exactly as stored in `key.json`
/// and in sops files.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Recipient(String);

impl Recipient {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The age recipient to encrypt to. Plugin recipients (`age1<plugin>1…`) need the plugin
    /// binary and are not supported in-process.
    pub(crate) fn to_age(&self) -> Result<age::x25519::Recipient, String> {
        age::x25519::Recipient::from_str(&self.0).map_err(|error| {
            if self.0.starts_with("age1") && self.0[4..].contains('1') {
                "age plugin recipients are not supported yet".to_owned()
            } else {
                error.to_string()
            }
        })
    }
}

impl FromStr for Recipient {
    type Err = String;

    /// Accepts `age1…` recipients (x25519 and plugin ones). `ssh-…` keys are refused: sops
    /// accepts them, but nothing in clan writes them.
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let valid = text.len() > 4
            && text.starts_with("age1")
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !valid {
            return Err(format!("`{text}` is not an age public key (age1…)"));
        }
        if !text[4..].contains('1') {
            age::x25519::Recipient::from_str(text)
                .map_err(|error| format!("`{text}` is not a valid age public key: {error}"))?;
        }
        Ok(Recipient(text.to_owned()))
    }
}

impl fmt::Display for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Recipient({})", self.0)
    }
}

/// An admin's public key and where it was found (for `secrets key show`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminKey {
    pub recipient: Recipient,
    pub source: String,
}

/// Private age identities. `Debug` shows only the public keys.
#[derive(Default)]
pub struct Identities {
    x25519: Vec<age::x25519::Identity>,
    /// The public key of each entry of `x25519`, same order.
    x25519_public: Vec<String>,
    public: Vec<AdminKey>,
}

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identities")
            .field(
                "public",
                &self
                    .public
                    .iter()
                    .map(|k| k.recipient.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Identities {
    /// Parses an age identity file (or the `SOPS_AGE_KEY` value). `source` names it in errors.
    /// Like sops, `SOPS_AGE_KEY` may hold several keys on one line.
    pub fn parse(text: &str, source: &str) -> Result<Self, String> {
        let mut identities = Identities::default();
        identities.add_text(text, source)?;
        Ok(identities)
    }

    /// Adds the keys of a key file's `text`; returns how many it holds.
    fn add_text(&mut self, text: &str, source: &str) -> Result<usize, String> {
        let mut found = 0;
        let mut announced: Option<Recipient> = None;
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            let number = index + 1;
            if let Some(comment) = line.strip_prefix('#') {
                if let Some(recipient) = comment_recipient(comment) {
                    announced = Some(recipient.clone());
                    self.add_public(recipient, source);
                    found += 1;
                }
                continue;
            }
            for word in line.split_whitespace() {
                if word.starts_with("AGE-SECRET-KEY-") {
                    let identity = age::x25519::Identity::from_str(word).map_err(|_| {
                        format!("{source}, line {number}: malformed age secret key")
                    })?;
                    self.add_identity(identity, source);
                    announced = None;
                    found += 1;
                } else if word.starts_with("AGE-PLUGIN-") {
                    if announced.take().is_none() {
                        return Err(format!(
                            "{source}, line {number}: a plugin identity needs a preceding \
                             `# public key: age1…` comment"
                        ));
                    }
                } else {
                    return Err(format!("{source}, line {number}: not an age identity"));
                }
            }
        }
        Ok(found)
    }

    fn add_public(&mut self, recipient: Recipient, source: &str) {
        if !self.public.iter().any(|key| key.recipient == recipient) {
            self.public.push(AdminKey {
                recipient,
                source: source.to_owned(),
            });
        }
    }

    /// Adds an identity (used for machine keys decrypted from `sops/secrets/<m>-age.key`).
    pub fn push(&mut self, identity: age::x25519::Identity) {
        self.add_identity(identity, "memory");
    }

    fn add_identity(&mut self, identity: age::x25519::Identity, source: &str) {
        let recipient = Recipient(identity.to_public().to_string());
        self.x25519_public.push(recipient.0.clone());
        self.add_public(recipient, source);
        self.x25519.push(identity);
    }

    /// Finds the admin's identities the way sops does: every one of `SOPS_AGE_KEY`,
    /// `SOPS_AGE_KEY_FILE` and the user config file that is present. A key given explicitly
    /// must be there: `SOPS_AGE_KEY_FILE` naming a missing file, or either variable holding
    /// no identity, is an error naming it (never a silent fall back to another key). The
    /// user config file may be missing; an unreadable or malformed file is an error.
    pub fn discover(sources: &KeySources) -> Result<Self, crate::Error> {
        Self::discover_with(sources, false)
    }

    /// [`Identities::discover`] before a key is generated: `SOPS_AGE_KEY_FILE`, where the
    /// new key goes, may be missing or empty, and when it is set the user config file does
    /// not count (a key there is not the one asked for).
    pub fn discover_before_generating(sources: &KeySources) -> Result<Self, crate::Error> {
        Self::discover_with(sources, true)
    }

    fn discover_with(sources: &KeySources, generating: bool) -> Result<Self, crate::Error> {
        let mut identities = Identities::default();
        if let Some(value) = &sources.sops_age_key {
            let found = identities
                .add_text(value.expose_secret(), "SOPS_AGE_KEY")
                .map_err(|reason| crate::Error::KeyFile {
                    source_name: "SOPS_AGE_KEY".into(),
                    reason,
                })?;
            if found == 0 {
                return Err(crate::Error::NoIdentity {
                    variable: "SOPS_AGE_KEY",
                    path: None,
                });
            }
        }
        let explicit = sources.sops_age_key_file.iter().map(|path| (path, true));
        let default = sources
            .user_key_file
            .iter()
            .filter(|_| !(generating && sources.sops_age_key_file.is_some()))
            .map(|path| (path, false));
        for (path, explicit) in explicit.chain(default) {
            let text = match std::fs::read_to_string(path) {
                Ok(text) => zeroize::Zeroizing::new(text),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    if explicit && !generating {
                        return Err(crate::Error::KeyFileMissing {
                            variable: "SOPS_AGE_KEY_FILE",
                            path: path.clone(),
                        });
                    }
                    continue;
                }
                Err(source) => return Err(clan_error::io("read", path.clone())(source).into()),
            };
            let name = path.display().to_string();
            let found =
                identities
                    .add_text(&text, &name)
                    .map_err(|reason| crate::Error::KeyFile {
                        source_name: name.clone(),
                        reason,
                    })?;
            if explicit && !generating && found == 0 {
                return Err(crate::Error::NoIdentity {
                    variable: "SOPS_AGE_KEY_FILE",
                    path: Some(path.clone()),
                });
            }
        }
        Ok(identities)
    }

    /// The public keys of these identities (including announced plugin keys).
    pub fn public_keys(&self) -> &[AdminKey] {
        &self.public
    }

    pub fn has_public_key(&self, recipient: &str) -> bool {
        self.public
            .iter()
            .any(|key| key.recipient.as_str() == recipient)
    }

    pub fn is_empty(&self) -> bool {
        self.x25519.is_empty()
    }

    pub fn len(&self) -> usize {
        self.x25519.len()
    }

    /// All identities, the one whose public key is `recipient` first: age tries them in
    /// order, one X25519 operation each.
    pub(crate) fn age_identities_for<'a>(
        &'a self,
        recipient: &'a str,
    ) -> impl Iterator<Item = &'a dyn age::Identity> {
        let matching = self
            .x25519_public
            .iter()
            .map(move |public| public == recipient);
        let (first, rest): (Vec<_>, Vec<_>) =
            self.x25519.iter().zip(matching).partition(|(_, m)| *m);
        first
            .into_iter()
            .chain(rest)
            .map(|(identity, _)| identity as &dyn age::Identity)
    }
}

fn comment_recipient(comment: &str) -> Option<Recipient> {
    comment
        .split_whitespace()
        .find_map(|word| word.parse::<Recipient>().ok())
}

/// Where admin identities may be, taken from the process environment by
/// [`KeySources::from_env`] or built explicitly (tests, other callers).
#[derive(Default)]
pub struct KeySources {
    pub sops_age_key: Option<SecretString>,
    pub sops_age_key_file: Option<PathBuf>,
    pub user_key_file: Option<PathBuf>,
}

impl fmt::Debug for KeySources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySources")
            .field(
                "sops_age_key",
                &self.sops_age_key.as_ref().map(|_| "[REDACTED]"),
            )
            .field("sops_age_key_file", &self.sops_age_key_file)
            .field("user_key_file", &self.user_key_file)
            .finish()
    }
}

impl KeySources {
    /// `SOPS_AGE_KEY`, `SOPS_AGE_KEY_FILE`, and `$XDG_CONFIG_HOME/sops/age/keys.txt` (default
    /// `~/.config/sops/age/keys.txt`).
    pub fn from_env() -> Self {
        let non_empty = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
        let config_dir = non_empty("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| non_empty("HOME").map(|home| Path::new(&home).join(".config")));
        KeySources {
            sops_age_key: std::env::var("SOPS_AGE_KEY")
                .ok()
                .filter(|v| !v.is_empty())
                .map(SecretString::from),
            sops_age_key_file: non_empty("SOPS_AGE_KEY_FILE").map(PathBuf::from),
            user_key_file: config_dir.map(|dir| dir.join("sops/age/keys.txt")),
        }
    }

    /// Where `secrets key generate` writes: `SOPS_AGE_KEY_FILE`, else the user config file.
    pub fn key_file_for_writing(&self) -> Option<&Path> {
        self.sops_age_key_file
            .as_deref()
            .or(self.user_key_file.as_deref())
    }

    /// Human-readable list of the places searched, for "no key found" errors.
    pub fn describe(&self) -> String {
        let mut places = vec!["SOPS_AGE_KEY".to_owned()];
        match &self.sops_age_key_file {
            Some(path) => places.push(format!("SOPS_AGE_KEY_FILE ({})", path.display())),
            None => places.push("SOPS_AGE_KEY_FILE".to_owned()),
        }
        if let Some(path) = &self.user_key_file {
            places.push(path.display().to_string());
        }
        places.join(", ")
    }
}

/// A new x25519 identity in age's key-file format (with `# public key:` comment), and its
/// public key. The text is secret.
pub fn generate_identity() -> (SecretString, Recipient) {
    let identity = age::x25519::Identity::generate();
    let recipient = Recipient(identity.to_public().to_string());
    let text = format!(
        "# public key: {recipient}\n{}\n",
        identity.to_string().expose_secret()
    );
    (SecretString::from(text), recipient)
}

/// Generates a new identity and appends it (with its `# public key:` comment) to the key file
/// at `path`, which is created `0600` if missing and rewritten atomically otherwise.
pub fn append_generated_identity(path: &Path) -> Result<Recipient, crate::Error> {
    let existing = match std::fs::read(path) {
        Ok(bytes) => zeroize::Zeroizing::new(bytes),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            zeroize::Zeroizing::new(Vec::new())
        }
        Err(source) => return Err(clan_error::io("read", path)(source).into()),
    };
    let (text, recipient) = generate_identity();
    let mut content = zeroize::Zeroizing::new(existing.to_vec());
    if !content.is_empty() && !content.ends_with(b"\n") {
        content.push(b'\n');
    }
    content.extend_from_slice(text.expose_secret().as_bytes());
    crate::fsutil::write_private_at(path, &content)?;
    Ok(recipient)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A user config file holding a valid key, which an explicit key must never fall back to.
    fn with_default_key(dir: &Path) -> KeySources {
        let (text, _) = crate::generate_identity();
        let user = dir.join("keys.txt");
        std::fs::write(&user, text.expose_secret()).unwrap();
        KeySources {
            sops_age_key: None,
            sops_age_key_file: None,
            user_key_file: Some(user),
        }
    }

    #[test]
    fn an_explicit_key_file_that_is_missing_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nowhere.txt");
        let sources = KeySources {
            sops_age_key_file: Some(missing.clone()),
            ..with_default_key(dir.path())
        };
        let error = Identities::discover(&sources).unwrap_err();
        assert!(
            matches!(&error, crate::Error::KeyFileMissing { variable: "SOPS_AGE_KEY_FILE", path } if *path == missing),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(message.contains("SOPS_AGE_KEY_FILE") && message.contains("nowhere.txt"));
        // Where a new key is about to be written, missing is expected, and the key in the
        // user config file is not the one asked for.
        let found = Identities::discover_before_generating(&sources).unwrap();
        assert!(found.is_empty());
    }

    #[test]
    fn explicit_keys_holding_no_identity_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.txt");
        std::fs::write(&empty, "# nothing here\n").unwrap();
        let sources = KeySources {
            sops_age_key_file: Some(empty.clone()),
            ..with_default_key(dir.path())
        };
        assert!(matches!(
            Identities::discover(&sources),
            Err(crate::Error::NoIdentity { variable: "SOPS_AGE_KEY_FILE", path: Some(path) }) if path == empty
        ));
        let sources = KeySources {
            sops_age_key: Some(SecretString::from("  ".to_owned())),
            ..with_default_key(dir.path())
        };
        assert!(matches!(
            Identities::discover(&sources),
            Err(crate::Error::NoIdentity {
                variable: "SOPS_AGE_KEY",
                path: None
            })
        ));
        let sources = KeySources {
            sops_age_key: Some(SecretString::from("AGE-SECRET-KEY-1NOTAKEY".to_owned())),
            ..with_default_key(dir.path())
        };
        let error = Identities::discover(&sources).unwrap_err().to_string();
        assert!(error.contains("SOPS_AGE_KEY"), "{error}");
        assert!(
            !error.contains("NOTAKEY"),
            "the value is not echoed: {error}"
        );
    }

    const FIXTURE_KEY: &str =
        "AGE-SECRET-KEY-1UCXEUJH6JXF8LFKWFHDM4N9AQE2CCGQZGXLUNV4TKR5KY0KC8FDQ2TY4NX";
    const FIXTURE_PUBLIC: &str = "age15x8u838dwqflr3t6csf4tlghxm4tx77y379ncqxav7y2n8qp7yzqgrwt00";

    #[test]
    fn public_key_is_derived_from_secret_key() {
        let identities = Identities::parse(FIXTURE_KEY, "test").unwrap();
        assert_eq!(
            identities.public_keys()[0].recipient.as_str(),
            FIXTURE_PUBLIC
        );
        assert_eq!(identities.len(), 1);
    }

    #[test]
    fn plugin_identity_takes_public_key_from_comment() {
        let text =
            format!("# created: now\n# public key: {FIXTURE_PUBLIC}\nAGE-PLUGIN-YUBIKEY-1QQQ\n");
        let identities = Identities::parse(&text, "keys.txt").unwrap();
        assert!(identities.has_public_key(FIXTURE_PUBLIC));
        assert!(
            identities.is_empty(),
            "plugin identities cannot decrypt in-process"
        );
        let error = Identities::parse("AGE-PLUGIN-YUBIKEY-1QQQ\n", "keys.txt").unwrap_err();
        assert!(error.contains("line 1"), "{error}");
    }

    #[test]
    fn several_keys_on_one_line_and_garbage_rejected() {
        let (a, _) = generate_identity();
        let (b, _) = generate_identity();
        let secret = |t: &SecretString| t.expose_secret().lines().nth(1).unwrap().to_owned();
        let identities =
            Identities::parse(&format!("{} {}", secret(&a), secret(&b)), "env").unwrap();
        assert_eq!(identities.len(), 2);
        assert!(Identities::parse("hello", "env").is_err());
        assert!(Identities::parse("AGE-SECRET-KEY-1XYZ", "env").is_err());
    }

    #[test]
    fn generated_identities_are_appended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sops/age/keys.txt");
        let first = append_generated_identity(&path).unwrap();
        let second = append_generated_identity(&path).unwrap();
        let identities =
            Identities::parse(&std::fs::read_to_string(&path).unwrap(), "keys.txt").unwrap();
        assert_eq!(identities.len(), 2);
        assert!(
            identities.has_public_key(first.as_str()) && identities.has_public_key(second.as_str())
        );
    }

    #[test]
    fn recipients_are_validated() {
        assert!(FIXTURE_PUBLIC.parse::<Recipient>().is_ok());
        assert!("age1notakey".parse::<Recipient>().is_err());
        assert!("ssh-ed25519 AAAA".parse::<Recipient>().is_err());
        let debug = format!("{:?}", Identities::parse(FIXTURE_KEY, "t").unwrap());
        assert!(!debug.contains("AGE-SECRET-KEY"), "{debug}");
    }
}
