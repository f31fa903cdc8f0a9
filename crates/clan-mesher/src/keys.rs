//! ED25519 keys: the network key (its public half is the network id), node identity keys (libp2p
//! peer identities) and file signing keys. Key files hold the base64url seed, are written 0600
//! and never appear in logs or `Debug` output.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use libp2p::identity::ed25519;
use zeroize::Zeroizing;

/// A key file could not be read, parsed or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("failed to read key file `{}`", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to write key file `{}`", path.display())]
    Write {
        path: PathBuf,
        source: clan_fs::Error,
    },
    #[error("key file `{}` does not hold a base64url ED25519 seed", path.display())]
    Malformed { path: PathBuf },
    #[error("`{text}` is not a base64url ED25519 public key")]
    BadPublicKey { text: String },
}

/// An ED25519 public key: a network id, a signer or a node identity.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey(pub [u8; 32]);

/// The network id is the network key's public half, so signatures bind to one network.
pub type NetworkId = PublicKey;

impl PublicKey {
    /// Whether `signature` over `message` was made by this key.
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        ed25519::PublicKey::try_from_bytes(&self.0).is_ok_and(|key| key.verify(message, signature))
    }

    /// Lowercase hex, the form used in signed-namespace file names.
    pub fn to_hex(&self) -> String {
        hex_lower(&self.0)
    }

    /// The libp2p peer id of a node whose identity key this is.
    pub fn peer_id(&self) -> Option<libp2p::PeerId> {
        let key = ed25519::PublicKey::try_from_bytes(&self.0).ok()?;
        Some(libp2p::PeerId::from_public_key(
            &libp2p::identity::PublicKey::from(key),
        ))
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(text: &str) -> Result<Self, KeyError> {
        let bad = || KeyError::BadPublicKey {
            text: text.chars().take(80).collect(),
        };
        let bytes = URL_SAFE_NO_PAD.decode(text.trim()).map_err(|_| bad())?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| bad())?;
        ed25519::PublicKey::try_from_bytes(&bytes).map_err(|_| bad())?;
        Ok(Self(bytes))
    }
}

impl<'de> serde::Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// An ED25519 secret key. `Debug` shows only the public half.
#[derive(Clone)]
pub struct SecretKey(ed25519::Keypair);

impl SecretKey {
    pub fn generate() -> Self {
        Self(ed25519::Keypair::generate())
    }

    pub fn from_seed(seed: [u8; 32]) -> Self {
        let mut seed = Zeroizing::new(seed);
        let secret =
            ed25519::SecretKey::try_from_bytes(&mut *seed).expect("any 32 bytes are a seed");
        Self(ed25519::Keypair::from(secret))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.public().to_bytes())
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let signature = self.0.sign(message);
        signature
            .try_into()
            .expect("ED25519 signatures are 64 bytes")
    }

    /// The same key as a libp2p identity, for nodes.
    pub fn to_libp2p(&self) -> libp2p::identity::Keypair {
        libp2p::identity::Keypair::from(self.0.clone())
    }

    /// Reads a key file (base64url seed, surrounding whitespace ignored).
    pub fn read(path: &Path) -> Result<Self, KeyError> {
        let text =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|source| KeyError::Read {
                    path: path.to_owned(),
                    source,
                })?,
            );
        let malformed = || KeyError::Malformed {
            path: path.to_owned(),
        };
        let bytes = Zeroizing::new(
            URL_SAFE_NO_PAD
                .decode(text.trim())
                .map_err(|_| malformed())?,
        );
        let seed: [u8; 32] = bytes.as_slice().try_into().map_err(|_| malformed())?;
        Ok(Self::from_seed(seed))
    }

    /// Writes the key file 0600, atomically.
    pub fn write(&self, path: &Path) -> Result<(), KeyError> {
        let seed = Zeroizing::new(self.0.secret().as_ref().to_vec());
        let text = Zeroizing::new(format!("{}\n", URL_SAFE_NO_PAD.encode(&*seed)));
        let options = clan_fs::WriteOptions::new(0o600);
        clan_fs::write_file(path, text.as_bytes(), options).map_err(|source| KeyError::Write {
            path: path.to_owned(),
            source,
        })
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SecretKey(public: {}, secret: <redacted>)",
            self.public()
        )
    }
}

impl clan_error::Hint for KeyError {}
clan_error::register!(KeyError);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_round_trip_keeps_the_key_and_debug_hides_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.key");
        let key = SecretKey::generate();
        key.write(&path).unwrap();
        let read = SecretKey::read(&path).unwrap();
        assert_eq!(read.public(), key.public());
        let seed_text = std::fs::read_to_string(&path).unwrap();
        assert!(!format!("{read:?}").contains(seed_text.trim()));
    }

    #[test]
    fn public_key_text_round_trip_and_signatures() {
        let key = SecretKey::generate();
        let parsed: PublicKey = key.public().to_string().parse().unwrap();
        assert_eq!(parsed, key.public());
        let signature = key.sign(b"hello");
        assert!(parsed.verify(b"hello", &signature));
        assert!(!parsed.verify(b"hellO", &signature));
        assert!("not a key".parse::<PublicKey>().is_err());
    }
}
