//! Signed records: what a signer says about one file name in one network (a new version or a
//! tombstone), and the order that decides which record wins on every node.

use std::cmp::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::bytes::{DecodeError, Reader, Writer};
use crate::certificate::Certificate;
use crate::keys::{NetworkId, PublicKey, SecretKey};
use crate::name::FileName;

const DOMAIN: &[u8] = b"clan-mesher record v1\0";
/// No file content is larger than this.
pub const MAX_FILE_SIZE: u64 = 10 * 1024 * 1024;

/// Now as unix microseconds, the unit of every timestamp in records and certificates.
pub fn unix_micros_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// What a record says about its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The content with this hash and size is the file.
    Update,
    /// The file is deleted.
    Tombstone,
}

/// A signed statement about one file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub kind: Kind,
    pub network: NetworkId,
    pub name: FileName,
    /// Unix microseconds; the newest signing time wins.
    pub signed_at: u64,
    pub size: u64,
    /// SHA-256 of the content (zero for tombstones).
    pub hash: [u8; 32],
    /// Unix microseconds after which the file disappears everywhere.
    pub valid_until: Option<u64>,
    pub signer: PublicKey,
    pub signature: [u8; 64],
    /// The signer's membership certificate, needed for signed-namespace names. Not signed over:
    /// it is checked on its own against the network key.
    pub certificate: Option<Box<Certificate>>,
}

/// A record's position in the winner order: signing time, then the record digest, so that
/// equal times resolve the same way on every node.
pub type Version = (u64, [u8; 32]);

impl Record {
    /// Signs a new version of `name` with content `content`.
    pub fn sign_update(
        key: &SecretKey,
        network: NetworkId,
        name: FileName,
        content: &[u8],
        signed_at: u64,
        valid_until: Option<u64>,
    ) -> Self {
        let hash = Sha256::digest(content).into();
        Self::sign(
            key,
            Kind::Update,
            network,
            name,
            signed_at,
            content.len() as u64,
            hash,
            valid_until,
        )
    }

    /// Signs the deletion of `name`.
    pub fn sign_tombstone(
        key: &SecretKey,
        network: NetworkId,
        name: FileName,
        signed_at: u64,
    ) -> Self {
        Self::sign(
            key,
            Kind::Tombstone,
            network,
            name,
            signed_at,
            0,
            [0; 32],
            None,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn sign(
        key: &SecretKey,
        kind: Kind,
        network: NetworkId,
        name: FileName,
        signed_at: u64,
        size: u64,
        hash: [u8; 32],
        valid_until: Option<u64>,
    ) -> Self {
        let mut record = Self {
            kind,
            network,
            name,
            signed_at,
            size,
            hash,
            valid_until,
            signer: key.public(),
            signature: [0; 64],
            certificate: None,
        };
        record.signature = key.sign(&record.signed_bytes());
        record
    }

    /// Attaches the signer's certificate (for signed-namespace names).
    pub fn with_certificate(mut self, certificate: Certificate) -> Self {
        self.certificate = Some(Box::new(certificate));
        self
    }

    fn signed_bytes(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.fixed(DOMAIN);
        self.encode_signed_fields(&mut w);
        w.0
    }

    fn encode_signed_fields(&self, w: &mut Writer) {
        w.u8(match self.kind {
            Kind::Update => 1,
            Kind::Tombstone => 2,
        });
        w.fixed(&self.network.0)
            .str(self.name.as_str())
            .u64(self.signed_at)
            .u64(self.size)
            .fixed(&self.hash);
        match self.valid_until {
            Some(at) => w.u8(1).u64(at),
            None => w.u8(0).u64(0),
        };
        w.fixed(&self.signer.0);
    }

    pub fn signature_valid(&self) -> bool {
        self.signer.verify(&self.signed_bytes(), &self.signature)
    }

    /// SHA-256 over the signed fields and the signature: the record's identity.
    pub fn digest(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.signed_bytes());
        hasher.update(self.signature);
        hasher.finalize().into()
    }

    pub fn version(&self) -> Version {
        (self.signed_at, self.digest())
    }

    /// Whether this record wins over `other` for the same name.
    pub fn supersedes(&self, other: &Record) -> bool {
        self.version().cmp(&other.version()) == Ordering::Greater
    }

    /// Whether `content` is what this record signed.
    pub fn matches_content(&self, content: &[u8]) -> bool {
        self.kind == Kind::Update
            && content.len() as u64 == self.size
            && <[u8; 32]>::from(Sha256::digest(content)) == self.hash
    }

    pub fn is_expired(&self, now: u64) -> bool {
        self.valid_until.is_some_and(|at| at <= now)
    }

    pub fn encode(&self, w: &mut Writer) {
        self.encode_signed_fields(w);
        w.fixed(&self.signature);
        match &self.certificate {
            Some(certificate) => {
                w.u8(1);
                certificate.encode(w);
            }
            None => {
                w.u8(0);
            }
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::default();
        self.encode(&mut w);
        w.0
    }

    /// Decodes a record; the name is validated here, so no bad name gets past decoding.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let kind = match r.u8("record kind")? {
            1 => Kind::Update,
            2 => Kind::Tombstone,
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "record kind",
                    tag,
                })
            }
        };
        let network = PublicKey(r.array("record network")?);
        let name = FileName::parse(r.str("record name")?).map_err(|e| DecodeError::Invalid {
            what: "record name",
            detail: e.to_string(),
        })?;
        let signed_at = r.u64("record signing time")?;
        let size = r.u64("record size")?;
        let hash = r.array("record hash")?;
        let has_validity = r.u8("record validity flag")?;
        let validity = r.u64("record validity")?;
        let valid_until = match has_validity {
            0 => None,
            1 => Some(validity),
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "record validity flag",
                    tag,
                })
            }
        };
        let signer = PublicKey(r.array("record signer")?);
        let signature = r.array("record signature")?;
        let certificate = match r.u8("record certificate flag")? {
            0 => None,
            1 => Some(Box::new(Certificate::decode(r)?)),
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "record certificate flag",
                    tag,
                })
            }
        };
        Ok(Self {
            kind,
            network,
            name,
            signed_at,
            size,
            hash,
            valid_until,
            signer,
            signature,
            certificate,
        })
    }

    pub fn from_bytes(raw: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(raw);
        let record = Self::decode(&mut r)?;
        r.finish()?;
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> FileName {
        FileName::parse(text).unwrap()
    }

    #[test]
    fn encode_decode_round_trip_keeps_signature_valid() {
        let key = SecretKey::generate();
        let network = SecretKey::generate();
        let certificate = Certificate::sign(&network, key.public(), 1, None);
        let record = Record::sign_update(&key, network.public(), name("a/b"), b"hi", 5, Some(9))
            .with_certificate(certificate);
        let decoded = Record::from_bytes(&record.to_bytes()).unwrap();
        assert_eq!(decoded, record);
        assert!(decoded.signature_valid());
        assert!(decoded.matches_content(b"hi"));
        assert!(!decoded.matches_content(b"ho"));
    }

    #[test]
    fn any_changed_signed_field_breaks_the_signature() {
        let key = SecretKey::generate();
        let network = SecretKey::generate().public();
        let record = Record::sign_update(&key, network, name("a"), b"x", 5, None);
        let mut changed = vec![record.clone(); 5];
        changed[0].signed_at += 1;
        changed[1].size += 1;
        changed[2].name = name("b");
        changed[3].network = SecretKey::generate().public();
        changed[4].kind = Kind::Tombstone;
        for forged in changed {
            assert!(!forged.signature_valid(), "{forged:?}");
        }
    }

    #[test]
    fn newer_wins_and_equal_times_resolve_by_digest_in_both_directions() {
        let key = SecretKey::generate();
        let network = SecretKey::generate().public();
        let old = Record::sign_update(&key, network, name("a"), b"1", 5, None);
        let new = Record::sign_update(&key, network, name("a"), b"2", 6, None);
        assert!(new.supersedes(&old) && !old.supersedes(&new));
        let tie_a = Record::sign_update(&key, network, name("a"), b"left", 7, None);
        let tie_b = Record::sign_update(&key, network, name("a"), b"right", 7, None);
        assert!(tie_a.supersedes(&tie_b) != tie_b.supersedes(&tie_a));
    }

    #[test]
    fn bad_name_in_encoded_record_is_refused() {
        let key = SecretKey::generate();
        let network = SecretKey::generate().public();
        let record = Record::sign_update(&key, network, name("aa"), b"1", 5, None);
        let mut raw = record.to_bytes();
        let at = 1 + 32 + 2;
        raw[at..at + 2].copy_from_slice(b"..");
        assert!(matches!(
            Record::from_bytes(&raw),
            Err(DecodeError::Invalid {
                what: "record name",
                ..
            })
        ));
    }
}
