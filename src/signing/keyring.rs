//! The device keyring, and verification as gpg on a device does it.

use std::fs;
use std::io::BufReader;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey};
use pgp::packet::{self, SignatureType, SubpacketData};
use pgp::types::KeyDetails as _;
use thiserror::Error;

use super::packet::{from_unix, hex_fingerprint};
use super::SigningError;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("the signature file is not an OpenPGP signature ({0})")]
    Malformed(String),
    #[error("the signature file holds {0} signatures; devices need exactly one whose key is in their keyring")]
    Count(usize),
    #[error("signed by key {0}, which is not in the keyring: devices would refuse it")]
    UnknownKey(String),
    #[error("the signature by {0} does not match the data (modified after signing?)")]
    Bad(String),
    #[error("the signature by {fingerprint} expired at {expired} (devices refuse it); re-sign with a fresh lifetime")]
    Expired {
        fingerprint: String,
        expired: String,
    },
    #[error("the keyring is empty or unreadable ({0})")]
    Keyring(String),
    #[error("key {0} may not make signatures (its key flags do not include signing): gpg on devices refuses it with \"Wrong key usage\". Sign with a signing subkey")]
    Usage(String),
}

/// What a verified signature says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureInfo {
    /// Upper-case hex v4 fingerprint of the signing key's primary key.
    pub fingerprint: String,
    /// The key that made it: the primary, or the subkey that signs for it.
    pub key: String,
    pub created: SystemTime,
    pub expires: Option<SystemTime>,
}

/// Whether a key may sign data, as gpg decides: by the key flags of its
/// newest self-signature (or binding) that states them; a key whose
/// signatures state none may (the algorithm decides, and ours all sign).
fn grants_signing<'a>(self_sigs: impl Iterator<Item = &'a packet::Signature>) -> bool {
    let states_flags = |s: &&packet::Signature| {
        s.config().is_some_and(|c| {
            c.hashed_subpackets()
                .any(|p| matches!(p.data, SubpacketData::KeyFlags(_)))
        })
    };
    self_sigs
        .filter(states_flags)
        .max_by_key(|s| s.created().map(|t| t.as_secs()))
        .is_none_or(|s| s.key_flags().sign())
}

/// Whether a signature's issuer (a fingerprint, or a 16-hex key id) names `fingerprint`.
fn issues(issuer: &str, fingerprint: &str) -> bool {
    issuer == fingerprint || (issuer.len() == 16 && fingerprint.ends_with(issuer))
}

/// The device keyring: one or more binary (or armored) public keys.
#[derive(Clone, Debug)]
pub struct Keyring {
    keys: Vec<SignedPublicKey>,
}

impl Keyring {
    pub fn from_bytes(bytes: &[u8]) -> Result<Keyring, VerifyError> {
        let mut keys = Vec::new();
        let (iter, _) = SignedPublicKey::from_reader_many(BufReader::new(bytes))
            .map_err(|e| VerifyError::Keyring(e.to_string()))?;
        for key in iter {
            keys.push(key.map_err(|e| VerifyError::Keyring(e.to_string()))?);
        }
        if keys.is_empty() {
            return Err(VerifyError::Keyring("no public keys found".into()));
        }
        Ok(Keyring { keys })
    }

    pub fn load(path: &Path) -> Result<Keyring, SigningError> {
        let bytes = fs::read(path).map_err(|source| SigningError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Keyring::from_bytes(&bytes).map_err(|e| SigningError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
        })
    }

    /// The armored certificates, for humans and `gpg --import`.
    pub fn armored(&self) -> Result<String, SigningError> {
        let mut out = String::new();
        for key in &self.keys {
            out.push_str(
                &key.to_armored_string(pgp::composed::ArmorOptions::default())
                    .map_err(super::pgp_err("armoring the public key"))?,
            );
        }
        Ok(out)
    }

    /// The certificates, in keyring order.
    pub(super) fn keys(&self) -> &[SignedPublicKey] {
        &self.keys
    }

    /// Fingerprints of the primary keys.
    pub fn fingerprints(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| hex_fingerprint(&k.primary_key.fingerprint()))
            .collect()
    }

    /// The primary key's fingerprint of a primary or subkey fingerprint.
    pub fn primary_of(&self, fingerprint: &str) -> Option<String> {
        self.keys.iter().find_map(|k| {
            let primary = hex_fingerprint(&k.primary_key.fingerprint());
            let sub = k
                .public_subkeys
                .iter()
                .any(|s| hex_fingerprint(&s.key.fingerprint()) == fingerprint);
            (primary == fingerprint || sub).then_some(primary)
        })
    }

    pub fn contains(&self, fingerprint: &str) -> bool {
        self.fingerprints().iter().any(|f| f == fingerprint)
    }

    /// Verifies a detached signature as a device would: exactly one
    /// signature, by a key in the keyring, over exactly `data`, not expired at `now`.
    pub fn verify(
        &self,
        data: &[u8],
        signature: &[u8],
        now: SystemTime,
    ) -> Result<SignatureInfo, VerifyError> {
        let (sigs, _) = DetachedSignature::from_reader_many(BufReader::new(signature))
            .map_err(|e| VerifyError::Malformed(e.to_string()))?;
        let sigs = sigs
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| VerifyError::Malformed(e.to_string()))?;
        let [sig] = sigs.as_slice() else {
            return Err(VerifyError::Count(sigs.len()));
        };
        let sig = &sig.signature;
        let issuer = sig
            .issuer_fingerprint()
            .first()
            .map(|f| hex_fingerprint(f))
            .or_else(|| sig.issuer_key_id().first().map(hex::encode_upper))
            .unwrap_or_else(|| "(no issuer)".into());
        for key in &self.keys {
            let primary = hex_fingerprint(&key.primary_key.fingerprint());
            // Certifications by other keys say nothing about this key's use.
            let own_id = key.primary_key.legacy_key_id();
            let self_sigs = key
                .details
                .users
                .iter()
                .flat_map(|u| &u.signatures)
                .filter(|s| {
                    s.issuer_key_id().contains(&&own_id)
                        || s.issuer_fingerprint()
                            .contains(&&key.primary_key.fingerprint())
                })
                .chain(&key.details.direct_signatures);
            let result = if issues(&issuer, &primary) {
                Some((
                    sig.verify(&key.primary_key, data),
                    primary.clone(),
                    grants_signing(self_sigs),
                ))
            } else {
                key.public_subkeys.iter().find_map(|sub| {
                    let fpr = hex_fingerprint(&sub.key.fingerprint());
                    issues(&issuer, &fpr).then(|| {
                        let binding = sub
                            .signatures
                            .iter()
                            .filter(|s| s.typ() == Some(SignatureType::SubkeyBinding));
                        (sig.verify(&sub.key, data), fpr, grants_signing(binding))
                    })
                })
            };
            let Some((result, signer, may_sign)) = result else {
                continue;
            };
            result.map_err(|_| VerifyError::Bad(signer.clone()))?;
            if !may_sign {
                return Err(VerifyError::Usage(signer));
            }
            let created = sig
                .created()
                .map(|t| from_unix(t.as_secs()))
                .unwrap_or(UNIX_EPOCH);
            let expires = sig
                .signature_expiration_time()
                .map(|d| created + Duration::from_secs(d.as_secs() as u64));
            if let Some(exp) = expires.filter(|exp| *exp <= now) {
                return Err(VerifyError::Expired {
                    fingerprint: primary,
                    expired: humantime::format_rfc3339_seconds(exp).to_string(),
                });
            }
            return Ok(SignatureInfo {
                fingerprint: primary,
                key: signer,
                created,
                expires,
            });
        }
        Err(VerifyError::UnknownKey(issuer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::packet::to_unix;
    use crate::signing::{SecretKey, SignOptions};

    #[test]
    fn generated_key_signs_and_verifies_in_process() {
        let key = SecretKey::generate("Test <test@example.org>").unwrap();
        let ring = Keyring::from_bytes(&key.keyring_bytes().unwrap()).unwrap();
        assert_eq!(ring.fingerprints(), vec![key.fingerprint()]);
        let sig = key.sign(b"hello\n", SignOptions::default()).unwrap();
        let info = ring.verify(b"hello\n", &sig, SystemTime::now()).unwrap();
        assert_eq!(info.fingerprint, key.fingerprint());
        assert_eq!(info.expires, None);
        assert_eq!(
            ring.verify(b"hellO\n", &sig, SystemTime::now()),
            Err(VerifyError::Bad(key.fingerprint()))
        );
    }

    #[test]
    fn expiry_is_enforced_and_reported() {
        let key = SecretKey::generate("T <t@e>").unwrap();
        let ring = Keyring::from_bytes(&key.keyring_bytes().unwrap()).unwrap();
        let created = SystemTime::now() - Duration::from_secs(2 * 86400);
        let sig = key
            .sign(
                b"x",
                SignOptions {
                    created,
                    lifetime: Some(Duration::from_secs(86400)),
                },
            )
            .unwrap();
        assert!(matches!(
            ring.verify(b"x", &sig, SystemTime::now()),
            Err(VerifyError::Expired { .. })
        ));
        let info = ring
            .verify(b"x", &sig, created + Duration::from_secs(60))
            .unwrap();
        assert_eq!(info.created, from_unix(to_unix(created)));
        assert!(info.expires.is_some());
    }

    #[test]
    fn unknown_signer_and_garbage_are_refused() {
        let a = SecretKey::generate("A <a@e>").unwrap();
        let b = SecretKey::generate("B <b@e>").unwrap();
        let ring = Keyring::from_bytes(&a.keyring_bytes().unwrap()).unwrap();
        let sig = b.sign(b"x", SignOptions::default()).unwrap();
        assert!(matches!(
            ring.verify(b"x", &sig, SystemTime::now()),
            Err(VerifyError::UnknownKey(_))
        ));
        assert!(matches!(
            ring.verify(b"x", b"not a signature", SystemTime::now()),
            Err(VerifyError::Malformed(_) | VerifyError::Count(0))
        ));
        let mut two = a.sign(b"x", SignOptions::default()).unwrap();
        two.extend(a.sign(b"x", SignOptions::default()).unwrap());
        assert_eq!(
            ring.verify(b"x", &two, SystemTime::now()),
            Err(VerifyError::Count(2))
        );
    }
}
