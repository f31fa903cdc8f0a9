//! Membership certificates: the network key signs a node's identity key (with an optional
//! expiry). Peers show one before any index is exchanged; signed-namespace files carry their
//! signer's certificate.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::bytes::{DecodeError, Reader, Writer};
use crate::keys::{NetworkId, PublicKey, SecretKey};

const DOMAIN: &[u8] = b"clan-mesher certificate v1\0";

/// A network's statement that `subject` is one of its nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    pub network: NetworkId,
    pub subject: PublicKey,
    /// Unix time in microseconds.
    pub issued_at: u64,
    /// Unix time in microseconds after which the certificate is void.
    pub expires_at: Option<u64>,
    pub signature: [u8; 64],
}

/// Why a certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    #[error("certificate for node `{subject}` belongs to network `{found}`, not `{expected}`")]
    WrongNetwork {
        subject: PublicKey,
        found: NetworkId,
        expected: NetworkId,
    },
    #[error("certificate for node `{subject}` has an invalid signature")]
    BadSignature { subject: PublicKey },
    #[error("certificate for node `{subject}` expired")]
    Expired { subject: PublicKey },
    #[error("certificate is for node `{subject}`, not `{expected}`")]
    WrongSubject {
        subject: PublicKey,
        expected: PublicKey,
    },
}

/// A certificate file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CertificateFileError {
    #[error("failed to read certificate `{}`", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to write certificate `{}`", path.display())]
    Write {
        path: PathBuf,
        source: clan_fs::Error,
    },
    #[error("certificate `{}` is malformed", path.display())]
    Malformed { path: PathBuf, source: DecodeError },
}

impl Certificate {
    /// Signs `subject` into the network whose key is `network_key`.
    pub fn sign(
        network_key: &SecretKey,
        subject: PublicKey,
        issued_at: u64,
        expires_at: Option<u64>,
    ) -> Self {
        let mut certificate = Self {
            network: network_key.public(),
            subject,
            issued_at,
            expires_at,
            signature: [0; 64],
        };
        certificate.signature = network_key.sign(&certificate.signed_bytes());
        certificate
    }

    fn signed_bytes(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.fixed(DOMAIN);
        self.encode_fields(&mut w);
        w.0
    }

    fn encode_fields(&self, w: &mut Writer) {
        w.fixed(&self.network.0)
            .fixed(&self.subject.0)
            .u64(self.issued_at);
        match self.expires_at {
            Some(at) => w.u8(1).u64(at),
            None => w.u8(0).u64(0),
        };
    }

    /// Checks network, signature and expiry at `now` (unix microseconds).
    pub fn verify(&self, network: &NetworkId, now: u64) -> Result<(), CertificateError> {
        if self.network != *network {
            return Err(CertificateError::WrongNetwork {
                subject: self.subject,
                found: self.network,
                expected: *network,
            });
        }
        if !network.verify(&self.signed_bytes(), &self.signature) {
            return Err(CertificateError::BadSignature {
                subject: self.subject,
            });
        }
        if self.expires_at.is_some_and(|at| at <= now) {
            return Err(CertificateError::Expired {
                subject: self.subject,
            });
        }
        Ok(())
    }

    /// Like [`Certificate::verify`], and also that it certifies `subject`.
    pub fn verify_for(
        &self,
        network: &NetworkId,
        subject: &PublicKey,
        now: u64,
    ) -> Result<(), CertificateError> {
        if self.subject != *subject {
            return Err(CertificateError::WrongSubject {
                subject: self.subject,
                expected: *subject,
            });
        }
        self.verify(network, now)
    }

    pub fn encode(&self, w: &mut Writer) {
        w.u8(1);
        self.encode_fields(w);
        w.fixed(&self.signature);
    }

    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let version = r.u8("certificate version")?;
        if version != 1 {
            return Err(DecodeError::UnknownTag {
                what: "certificate version",
                tag: version,
            });
        }
        let network = PublicKey(r.array("certificate network")?);
        let subject = PublicKey(r.array("certificate subject")?);
        let issued_at = r.u64("certificate issue time")?;
        let has_expiry = r.u8("certificate expiry flag")?;
        let expiry = r.u64("certificate expiry")?;
        let expires_at = match has_expiry {
            0 => None,
            1 => Some(expiry),
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "certificate expiry flag",
                    tag,
                })
            }
        };
        let signature = r.array("certificate signature")?;
        Ok(Self {
            network,
            subject,
            issued_at,
            expires_at,
            signature,
        })
    }

    /// The base64url text form used in files and on the command line.
    pub fn to_text(&self) -> String {
        let mut w = Writer::default();
        self.encode(&mut w);
        URL_SAFE_NO_PAD.encode(w.0)
    }

    pub fn from_text(text: &str) -> Result<Self, DecodeError> {
        let raw = URL_SAFE_NO_PAD
            .decode(text.trim())
            .map_err(|e| DecodeError::Invalid {
                what: "certificate",
                detail: e.to_string(),
            })?;
        let mut r = Reader::new(&raw);
        let certificate = Self::decode(&mut r)?;
        r.finish()?;
        Ok(certificate)
    }

    pub fn read(path: &Path) -> Result<Self, CertificateFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| CertificateFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_text(&text).map_err(|source| CertificateFileError::Malformed {
            path: path.to_owned(),
            source,
        })
    }

    pub fn write(&self, path: &Path) -> Result<(), CertificateFileError> {
        let text = format!("{}\n", self.to_text());
        clan_fs::write_file(path, text.as_bytes(), clan_fs::WriteOptions::new(0o644)).map_err(
            |source| CertificateFileError::Write {
                path: path.to_owned(),
                source,
            },
        )
    }
}

impl clan_error::Hint for CertificateError {}
impl clan_error::Hint for CertificateFileError {}
clan_error::register!(CertificateError, CertificateFileError);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_certificate_verifies_and_forgeries_do_not() {
        let network = SecretKey::generate();
        let other_network = SecretKey::generate();
        let node = SecretKey::generate().public();
        let certificate = Certificate::sign(&network, node, 10, Some(1_000));
        assert_eq!(certificate.verify(&network.public(), 500), Ok(()));
        assert!(matches!(
            certificate.verify(&network.public(), 1_000),
            Err(CertificateError::Expired { .. })
        ));
        assert!(matches!(
            certificate.verify(&other_network.public(), 500),
            Err(CertificateError::WrongNetwork { .. })
        ));
        let self_signed = Certificate::sign(&other_network, node, 10, None);
        let mut forged = self_signed.clone();
        forged.network = network.public();
        assert!(matches!(
            forged.verify(&network.public(), 500),
            Err(CertificateError::BadSignature { .. })
        ));
        let stranger = SecretKey::generate().public();
        assert!(matches!(
            certificate.verify_for(&network.public(), &stranger, 500),
            Err(CertificateError::WrongSubject { .. })
        ));
    }

    #[test]
    fn text_round_trip() {
        let network = SecretKey::generate();
        let certificate = Certificate::sign(&network, SecretKey::generate().public(), 1, None);
        assert_eq!(
            Certificate::from_text(&certificate.to_text()),
            Ok(certificate)
        );
        assert!(Certificate::from_text("AAAA").is_err());
    }
}
