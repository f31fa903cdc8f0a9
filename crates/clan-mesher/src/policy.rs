//! Which records a node accepts: the network, size limit, signature, who may sign which name
//! (the static `[network.files]` list or a signed namespace `<namespace>/<signer key hex>`
//! whose signer holds a valid certificate), clock skew and expiry. Pure: no I/O, no state.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::keys::{NetworkId, PublicKey};
use crate::name::FileName;
use crate::record::{Record, MAX_FILE_SIZE};

/// How far in the future a signing time may be before it is refused (5 minutes).
pub const MAX_CLOCK_SKEW_MICROS: u64 = 5 * 60 * 1_000_000;

/// Why a record, frame or peer was refused; also the `reason` label of the rejection metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RejectReason {
    Malformed,
    BadSignature,
    WrongNetwork,
    NotAllowed,
    FromFuture,
    Expired,
    TooLarge,
    Stale,
    ContentMismatch,
    UnverifiedPeer,
    BadCertificate,
    RateLimited,
    PathConflict,
    Storage,
}

impl RejectReason {
    pub const ALL: [RejectReason; 14] = [
        Self::Malformed,
        Self::BadSignature,
        Self::WrongNetwork,
        Self::NotAllowed,
        Self::FromFuture,
        Self::Expired,
        Self::TooLarge,
        Self::Stale,
        Self::ContentMismatch,
        Self::UnverifiedPeer,
        Self::BadCertificate,
        Self::RateLimited,
        Self::PathConflict,
        Self::Storage,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::BadSignature => "bad_signature",
            Self::WrongNetwork => "wrong_network",
            Self::NotAllowed => "not_allowed",
            Self::FromFuture => "from_future",
            Self::Expired => "expired",
            Self::TooLarge => "too_large",
            Self::Stale => "stale",
            Self::ContentMismatch => "content_mismatch",
            Self::UnverifiedPeer => "unverified_peer",
            Self::BadCertificate => "bad_certificate",
            Self::RateLimited => "rate_limited",
            Self::PathConflict => "path_conflict",
            Self::Storage => "storage_error",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|reason| reason.as_str() == text)
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The network's rules for accepting records.
#[derive(Debug, Clone)]
pub struct Policy {
    pub network: NetworkId,
    /// Prefixes under which each certified node may publish `<namespace>/<own key hex>`.
    pub namespaces: BTreeSet<FileName>,
    /// Names with a fixed list of allowed signers.
    pub files: BTreeMap<FileName, BTreeSet<PublicKey>>,
}

impl Policy {
    /// Checks everything about `record` that does not depend on what the node already holds.
    pub fn check(&self, record: &Record, now: u64) -> Result<(), RejectReason> {
        if record.network != self.network {
            return Err(RejectReason::WrongNetwork);
        }
        if record.size > MAX_FILE_SIZE {
            return Err(RejectReason::TooLarge);
        }
        if !record.signature_valid() {
            return Err(RejectReason::BadSignature);
        }
        self.check_signer(record, now)?;
        if record.signed_at > now.saturating_add(MAX_CLOCK_SKEW_MICROS) {
            return Err(RejectReason::FromFuture);
        }
        if record.is_expired(now) {
            return Err(RejectReason::Expired);
        }
        Ok(())
    }

    fn check_signer(&self, record: &Record, now: u64) -> Result<(), RejectReason> {
        if self
            .files
            .get(&record.name)
            .is_some_and(|signers| signers.contains(&record.signer))
        {
            return Ok(());
        }
        let Some((namespace, key)) = record.name.as_str().rsplit_once('/') else {
            return Err(RejectReason::NotAllowed);
        };
        let in_namespace = self.namespaces.iter().any(|ns| ns.as_str() == namespace);
        if !in_namespace || key != record.signer.to_hex() {
            return Err(RejectReason::NotAllowed);
        }
        match &record.certificate {
            Some(certificate)
                if certificate
                    .verify_for(&self.network, &record.signer, now)
                    .is_ok() =>
            {
                Ok(())
            }
            _ => Err(RejectReason::BadCertificate),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certificate::Certificate;
    use crate::keys::SecretKey;

    struct Setup {
        network_key: SecretKey,
        admin: SecretKey,
        policy: Policy,
    }

    fn setup() -> Setup {
        let network_key = SecretKey::generate();
        let admin = SecretKey::generate();
        let policy = Policy {
            network: network_key.public(),
            namespaces: [FileName::parse("facts").unwrap()].into(),
            files: [(FileName::parse("zone").unwrap(), [admin.public()].into())].into(),
        };
        Setup {
            network_key,
            admin,
            policy,
        }
    }

    fn name(text: &str) -> FileName {
        FileName::parse(text).unwrap()
    }

    const NOW: u64 = 1_000_000_000_000;

    #[test]
    fn allowed_signer_is_accepted_and_others_are_not() {
        let s = setup();
        let ok = Record::sign_update(&s.admin, s.policy.network, name("zone"), b"z", NOW, None);
        assert_eq!(s.policy.check(&ok, NOW), Ok(()));
        let stranger = SecretKey::generate();
        let wrong_signer =
            Record::sign_update(&stranger, s.policy.network, name("zone"), b"z", NOW, None);
        assert_eq!(
            s.policy.check(&wrong_signer, NOW),
            Err(RejectReason::NotAllowed)
        );
        let other_name =
            Record::sign_update(&s.admin, s.policy.network, name("other"), b"z", NOW, None);
        assert_eq!(
            s.policy.check(&other_name, NOW),
            Err(RejectReason::NotAllowed)
        );
    }

    #[test]
    fn time_network_and_size_rules() {
        let s = setup();
        let sign = |at, until| {
            Record::sign_update(&s.admin, s.policy.network, name("zone"), b"z", at, until)
        };
        assert_eq!(
            s.policy
                .check(&sign(NOW + MAX_CLOCK_SKEW_MICROS + 1, None), NOW),
            Err(RejectReason::FromFuture)
        );
        assert_eq!(
            s.policy.check(&sign(NOW, Some(NOW)), NOW),
            Err(RejectReason::Expired)
        );
        let other_network = SecretKey::generate().public();
        let replayed = Record::sign_update(&s.admin, other_network, name("zone"), b"z", NOW, None);
        assert_eq!(
            s.policy.check(&replayed, NOW),
            Err(RejectReason::WrongNetwork)
        );
        let mut huge = sign(NOW, None);
        huge.size = MAX_FILE_SIZE + 1;
        assert_eq!(s.policy.check(&huge, NOW), Err(RejectReason::TooLarge));
    }

    #[test]
    fn signed_namespace_needs_own_key_and_certificate() {
        let s = setup();
        let node = SecretKey::generate();
        let certificate = Certificate::sign(&s.network_key, node.public(), NOW, None);
        let own = name(&format!("facts/{}", node.public().to_hex()));
        let ok = Record::sign_update(&node, s.policy.network, own.clone(), b"f", NOW, None)
            .with_certificate(certificate.clone());
        assert_eq!(s.policy.check(&ok, NOW), Ok(()));
        let uncertified =
            Record::sign_update(&node, s.policy.network, own.clone(), b"f", NOW, None);
        assert_eq!(
            s.policy.check(&uncertified, NOW),
            Err(RejectReason::BadCertificate)
        );
        let other = SecretKey::generate();
        let other_certificate = Certificate::sign(&s.network_key, other.public(), NOW, None);
        let impersonation = Record::sign_update(&other, s.policy.network, own, b"f", NOW, None)
            .with_certificate(other_certificate);
        assert_eq!(
            s.policy.check(&impersonation, NOW),
            Err(RejectReason::NotAllowed)
        );
        let wrong_namespace = name(&format!("dns/{}", node.public().to_hex()));
        let outside =
            Record::sign_update(&node, s.policy.network, wrong_namespace, b"f", NOW, None)
                .with_certificate(certificate);
        assert_eq!(s.policy.check(&outside, NOW), Err(RejectReason::NotAllowed));
    }
}
