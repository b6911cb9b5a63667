//! Every signature, whoever made it, checked as a device's gpg will check
//! it before anything uses it. A command or a token is trusted to hold a
//! key, not to return the right signature: it may sign other bytes, with
//! another key, without the expiry devices rely on, or print garbage.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use thiserror::Error;

use super::{Keyring, SignOptions, SignatureInfo, Signer, SigningError, VerifyError};

/// How far a signature's creation time may stray from the requested time
/// and the clock. Later, and gpg on devices refuses it as made in the
/// future; earlier, and it was not made for this request.
pub const CLOCK_SLACK: Duration = Duration::from_secs(300);

/// Why a signature a signer returned is refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CheckError {
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error("it was made by key {actual}, not by the configured signer's key {expected}")]
    OtherKey { expected: String, actual: String },
    #[error("it expires {actual}, but signature-lifetime asks for {wanted}: devices would enforce the wrong expiry")]
    Expiry { wanted: String, actual: String },
    #[error("it says it was made at {created}, not between {earliest} and {latest}: is the signer's clock wrong?")]
    Created {
        created: String,
        earliest: String,
        latest: String,
    },
}

/// A signer whose every signature is checked against the device keyring.
pub struct Checked<'a> {
    signer: &'a dyn Signer,
    keyring: &'a Keyring,
}

impl<'a> Checked<'a> {
    pub fn new(signer: &'a dyn Signer, keyring: &'a Keyring) -> Checked<'a> {
        Checked { signer, keyring }
    }
}

impl Signer for Checked<'_> {
    fn fingerprint(&self) -> String {
        self.signer.fingerprint()
    }

    fn describe(&self) -> String {
        self.signer.describe()
    }

    fn sign(&self, data: &[u8], opts: SignOptions) -> Result<Vec<u8>, SigningError> {
        let signature = self.signer.sign(data, opts)?;
        check(
            self.keyring,
            &self.signer.fingerprint(),
            data,
            &signature,
            opts,
        )
        .map_err(|source| SigningError::Refused {
            signer: self.signer.describe(),
            source,
        })?;
        Ok(signature)
    }
}

/// Checks `signature` over `data` as made for `opts` by the key `expected`
/// (a primary fingerprint): it verifies with the keyring as on a device,
/// was made by that key, now, and expires exactly as asked.
pub fn check(
    keyring: &Keyring,
    expected: &str,
    data: &[u8],
    signature: &[u8],
    opts: SignOptions,
) -> Result<SignatureInfo, CheckError> {
    let info = keyring.verify(data, signature, opts.created)?;
    if info.fingerprint != expected {
        return Err(CheckError::OtherKey {
            expected: expected.to_string(),
            actual: info.fingerprint,
        });
    }
    let earliest = opts.created - CLOCK_SLACK;
    let latest = SystemTime::now().max(opts.created) + CLOCK_SLACK;
    if info.created < earliest || info.created > latest {
        return Err(CheckError::Created {
            created: rfc3339(info.created),
            earliest: rfc3339(earliest),
            latest: rfc3339(latest),
        });
    }
    let wanted = opts.lifetime.map(|l| secs(info.created + l));
    if info.expires.map(secs) != wanted {
        let show = |t: Option<u64>| {
            t.map_or("never".into(), |s| {
                rfc3339(UNIX_EPOCH + Duration::from_secs(s))
            })
        };
        return Err(CheckError::Expiry {
            wanted: show(wanted),
            actual: show(info.expires.map(secs)),
        });
    }
    Ok(info)
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::SecretKey;

    fn opts(lifetime: Option<u64>) -> SignOptions {
        SignOptions {
            created: SystemTime::now(),
            lifetime: lifetime.map(Duration::from_secs),
        }
    }

    #[test]
    fn a_good_signature_passes_and_each_wrong_one_says_why() {
        let key = SecretKey::generate("A <a@e>").unwrap();
        let other = SecretKey::generate("B <b@e>").unwrap();
        let mut ring = key.keyring_bytes().unwrap();
        ring.extend(other.keyring_bytes().unwrap());
        let ring = Keyring::from_bytes(&ring).unwrap();
        let fpr = key.fingerprint();
        let sig = key.sign(b"data", opts(Some(7200))).unwrap();
        assert!(check(&ring, &fpr, b"data", &sig, opts(Some(7200))).is_ok());

        assert!(matches!(
            check(&ring, &fpr, b"other", &sig, opts(Some(7200))),
            Err(CheckError::Verify(VerifyError::Bad(_)))
        ));
        assert!(matches!(
            check(&ring, &fpr, b"data", &sig, opts(None)),
            Err(CheckError::Expiry { .. })
        ));
        let by_other = other.sign(b"data", opts(None)).unwrap();
        assert_eq!(
            check(&ring, &fpr, b"data", &by_other, opts(None)),
            Err(CheckError::OtherKey {
                expected: fpr.clone(),
                actual: other.fingerprint()
            })
        );
        let old = SignOptions {
            created: SystemTime::now() - Duration::from_secs(3600),
            lifetime: None,
        };
        let stale = key.sign(b"data", old).unwrap();
        assert!(matches!(
            check(&ring, &fpr, b"data", &stale, opts(None)),
            Err(CheckError::Created { .. })
        ));
        // Asked for a time in the past (tests do), made for that time: fine.
        assert!(check(&ring, &fpr, b"data", &stale, old).is_ok());
    }
}
