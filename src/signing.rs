//! OpenPGP keys and detached signatures, in the one dialect every device's gpg
//! accepts: v4 keys, EdDSA-legacy (algorithm 22) over Ed25519, SHA-256.
//!
//! systemd-sysupdate verifies `SHA256SUMS.gpg` by running gpg with a binary
//! keyring, so the output of this module is checked against the real gpg in
//! the integration tests; in-process verification here is for the publisher's
//! own safety checks (never build on a manifest someone else wrote).

use std::fs;
use std::io::{BufReader, Cursor, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pgp::composed::{
    ArmorOptions, Deserializable, DetachedSignature, KeyDetails, SignedPublicKey, SignedSecretKey,
    SignedSecretSubKey, SubpacketConfig,
};
use pgp::crypto::{
    ed25519, eddsa_legacy, hash::HashAlgorithm, public_key::PublicKeyAlgorithm,
    sym::SymmetricKeyAlgorithm,
};
use pgp::packet::{
    self, Features, KeyFlags, PubKeyInner, SignatureType, Subpacket, SubpacketData, UserId,
};
use pgp::ser::Serialize;
use pgp::types::{
    Duration as PgpDuration, KeyDetails as _, KeyVersion, Password, PlainSecretParams,
    PublicParams, SecretParams, SigningKey, Timestamp,
};
use thiserror::Error;
use zeroize::Zeroizing;

/// Creation time of keys we generate: 2000-01-01T00:00:00Z. gpg refuses a key
/// "created in the future", so devices that boot with a wrong RTC would reject
/// every manifest signed by a key stamped with today's date.
pub const KEY_CREATION_TIME: u32 = 946_684_800;

/// The options systemd-pull (src/import/pull-common.c, 254–261) passes to
/// gpg before `--homedir=… --keyring=… --verify SIG -`.
pub const SYSTEMD_GPG_ARGS: [&str; 6] = [
    "--no-options",
    "--no-default-keyring",
    "--no-auto-key-locate",
    "--no-auto-check-trustdb",
    "--batch",
    "--trust-model=always",
];

/// Environment variable holding the passphrase of a protected secret key.
pub const PASSPHRASE_ENV: &str = "SYSUPDATE_PUBLISH_KEY_PASSPHRASE";

#[derive(Debug, Error)]
pub enum SigningError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is readable by group or others (mode {mode:o}); a release key must be private: run `chmod 600 {path}`"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{path} already exists; refusing to overwrite a key (move it away first)")]
    Exists { path: PathBuf },
    #[error("{what}: {source}")]
    Pgp {
        what: String,
        source: pgp::errors::Error,
    },
    #[error(
        "{what}: the key uses OpenPGP algorithm {algo:?}; devices verify with gpg, which accepts EdDSA-legacy (22) or RSA: make the key with `sysupdate-publish keygen` or `gpg --quick-gen-key … ed25519 sign`"
    )]
    UnsupportedAlgorithm {
        what: String,
        algo: PublicKeyAlgorithm,
    },
    #[error("{what}: the secret key is passphrase-protected; set {PASSPHRASE_ENV} or export it without a passphrase")]
    Locked { what: String },
    #[error("{what}: the passphrase in {PASSPHRASE_ENV} does not unlock the secret key")]
    WrongPassphrase { what: String },
    #[error("signature lifetime {0:?} is too long for OpenPGP (at most ~136 years)")]
    Lifetime(Duration),
    /// Its signatures would not verify on devices (e.g. a certify-only key).
    #[error("{what}: {source}")]
    CannotSign { what: String, source: VerifyError },
}

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

fn pgp_err(what: impl Into<String>) -> impl FnOnce(pgp::errors::Error) -> SigningError {
    let what = what.into();
    move |source| SigningError::Pgp { what, source }
}

/// What a verified signature says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureInfo {
    /// Upper-case hex v4 fingerprint of the signing key.
    pub fingerprint: String,
    pub created: SystemTime,
    pub expires: Option<SystemTime>,
}

/// Options for one detached signature.
#[derive(Clone, Copy, Debug)]
pub struct SignOptions {
    /// The signature's creation time. Normally now; tests move it into the past.
    pub created: SystemTime,
    /// Written as the OpenPGP signature-expiration subpacket, which gpg enforces.
    pub lifetime: Option<Duration>,
}

impl Default for SignOptions {
    fn default() -> Self {
        SignOptions {
            created: SystemTime::now(),
            lifetime: None,
        }
    }
}

/// What makes the detached signatures of manifests and history entries:
/// a key file, and later an agent, a command or a token. Whatever it is,
/// the publisher verifies each signature with the keyring before using it.
pub trait Signer: Send + Sync {
    /// The primary key's fingerprint (upper-case hex), as keyrings list it.
    fn fingerprint(&self) -> String;
    /// A binary detached OpenPGP signature over `data`.
    fn sign(&self, data: &[u8], opts: SignOptions) -> Result<Vec<u8>, SigningError>;
}

impl Signer for SecretKey {
    fn fingerprint(&self) -> String {
        SecretKey::fingerprint(self)
    }

    fn sign(&self, data: &[u8], opts: SignOptions) -> Result<Vec<u8>, SigningError> {
        SecretKey::sign(self, data, opts)
    }
}

/// An unlocked signing key. The pgp crate zeroizes its secret parameters on drop.
pub struct SecretKey {
    key: SignedSecretKey,
    password: Password,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material, only what identifies the key.
        f.debug_struct("SecretKey")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

fn hex_fingerprint(fp: &pgp::types::Fingerprint) -> String {
    hex::encode_upper(fp.as_bytes())
}

fn to_unix(t: SystemTime) -> u32 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs().min(u32::MAX as u64) as u32)
        .unwrap_or(0)
}

fn from_unix(secs: u32) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs as u64)
}

fn check_algorithm(what: &str, algo: PublicKeyAlgorithm) -> Result<(), SigningError> {
    match algo {
        PublicKeyAlgorithm::EdDSALegacy | PublicKeyAlgorithm::RSA => Ok(()),
        algo => Err(SigningError::UnsupportedAlgorithm {
            what: what.to_string(),
            algo,
        }),
    }
}

impl SecretKey {
    /// Generates a fresh Ed25519 key as a v4 EdDSA-legacy OpenPGP key.
    pub fn generate(uid: &str) -> Result<SecretKey, SigningError> {
        let mut flags = KeyFlags::default();
        flags.set_certify(true);
        flags.set_sign(true);
        Self::generate_with(uid, flags)
    }

    fn generate_with(uid: &str, flags: KeyFlags) -> Result<SecretKey, SigningError> {
        let mut rng = rand::thread_rng();
        let dalek = ed25519_dalek::SigningKey::generate(&mut rng);
        let seed = Zeroizing::new(dalek.to_bytes());
        let secret = ed25519::SecretKey::try_from_bytes(*seed, ed25519::Mode::EdDSALegacy)
            .map_err(pgp_err("creating the Ed25519 key"))?;
        let public_params = PublicParams::EdDSALegacy((&secret).into());
        let plain = PlainSecretParams::EdDSALegacy(eddsa_legacy::SecretKey::Ed25519(secret));
        let inner = PubKeyInner::new(
            KeyVersion::V4,
            PublicKeyAlgorithm::EdDSALegacy,
            Timestamp::from_secs(KEY_CREATION_TIME),
            None,
            public_params,
        )
        .map_err(pgp_err("creating the public key"))?;
        let pk =
            packet::PublicKey::from_inner(inner).map_err(pgp_err("creating the public key"))?;
        let sk = packet::SecretKey::new(pk, SecretParams::Plain(plain))
            .map_err(pgp_err("creating the secret key"))?;
        let user_id = UserId::from_str(Default::default(), uid)
            .map_err(pgp_err(format!("user id {uid:?}")))?;
        let details = KeyDetails::new(
            Some(user_id),
            vec![],
            vec![],
            flags,
            Features::default(),
            [SymmetricKeyAlgorithm::AES256].into_iter().collect(),
            [HashAlgorithm::Sha256, HashAlgorithm::Sha512]
                .into_iter()
                .collect(),
            Default::default(),
            Default::default(),
        );
        let signed = details
            .sign(&mut rng, &sk, sk.public_key(), &Password::empty())
            .map_err(pgp_err("self-signing the user id"))?;
        let key = SignedSecretKey::new(sk, signed, vec![], vec![]);
        Ok(SecretKey {
            key,
            password: Password::empty(),
        })
    }

    /// Parses an armored secret key (ours, or `gpg --export-secret-keys --armor`).
    /// `what` names the source in errors.
    pub fn from_armored(
        text: &str,
        what: &str,
        passphrase: Option<&str>,
    ) -> Result<SecretKey, SigningError> {
        let (key, _) = SignedSecretKey::from_armor_single(Cursor::new(text.as_bytes())).map_err(
            pgp_err(format!("{what}: not an armored OpenPGP secret key")),
        )?;
        key.verify_bindings().map_err(pgp_err(format!(
            "{what}: the key's self-signatures do not verify"
        )))?;
        check_algorithm(what, key.primary_key.algorithm())?;
        let password = passphrase.map(Password::from).unwrap_or_default();
        let sk = SecretKey { key, password };
        // Fail now, not halfway through a release, when the key cannot sign
        // or makes signatures devices refuse.
        let probe = sk
            .sign(b"probe", SignOptions::default())
            .map_err(|e| match e {
                SigningError::Pgp { .. } if passphrase.is_none() => SigningError::Locked {
                    what: what.to_string(),
                },
                SigningError::Pgp { .. } if sk.is_protected() => SigningError::WrongPassphrase {
                    what: what.to_string(),
                },
                e => e,
            })?;
        Keyring::from_bytes(&sk.keyring_bytes()?)
            .and_then(|ring| ring.verify(b"probe", &probe, SystemTime::now()))
            .map_err(|source| SigningError::CannotSign {
                what: what.to_string(),
                source,
            })?;
        Ok(sk)
    }

    /// Whether any of its secret keys is passphrase-protected.
    fn is_protected(&self) -> bool {
        self.key.primary_key.secret_params().is_encrypted()
            || self
                .key
                .secret_subkeys
                .iter()
                .any(|k| k.key.secret_params().is_encrypted())
    }

    /// Loads a secret key file, refusing one that group or others can read.
    pub fn load(path: &Path) -> Result<SecretKey, SigningError> {
        let io = |source| SigningError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = fs::metadata(path).map_err(io)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(SigningError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        let text = Zeroizing::new(fs::read_to_string(path).map_err(io)?);
        let passphrase = std::env::var(PASSPHRASE_ENV).ok().map(Zeroizing::new);
        SecretKey::from_armored(
            &text,
            &path.display().to_string(),
            passphrase.as_deref().map(|s| s.as_str()),
        )
    }

    /// Writes the armored secret key with mode 0600, never over an existing file.
    pub fn save(&self, path: &Path) -> Result<(), SigningError> {
        let armored = Zeroizing::new(
            self.key
                .to_armored_string(ArmorOptions::default())
                .map_err(pgp_err("armoring the secret key"))?,
        );
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| {
                if source.kind() == std::io::ErrorKind::AlreadyExists {
                    SigningError::Exists {
                        path: path.to_path_buf(),
                    }
                } else {
                    SigningError::Io {
                        path: path.to_path_buf(),
                        source,
                    }
                }
            })?;
        f.write_all(armored.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|source| SigningError::Io {
                path: path.to_path_buf(),
                source,
            })
    }

    pub fn fingerprint(&self) -> String {
        hex_fingerprint(&self.key.primary_key.fingerprint())
    }

    /// The user ids, for display.
    pub fn user_ids(&self) -> Vec<String> {
        self.key
            .details
            .users
            .iter()
            .map(|u| String::from_utf8_lossy(u.id.id()).into_owned())
            .collect()
    }

    /// The binary transferable public key: what devices install as
    /// `/etc/systemd/import-pubring.gpg` (gpg refuses an armored keyring there).
    pub fn keyring_bytes(&self) -> Result<Vec<u8>, SigningError> {
        self.key
            .to_public_key()
            .to_bytes()
            .map_err(pgp_err("serializing the public key"))
    }

    /// The armored public key, for humans and `gpg --import`.
    pub fn public_armored(&self) -> Result<String, SigningError> {
        self.key
            .to_public_key()
            .to_armored_string(ArmorOptions::default())
            .map_err(pgp_err("armoring the public key"))
    }

    /// A binary detached signature (type 0x00) over `data`, SHA-256, with the
    /// issuer fingerprint, creation time and optional expiration hashed.
    /// Made by the signing subkey when the key has one, as gpg would.
    pub fn sign(&self, data: &[u8], opts: SignOptions) -> Result<Vec<u8>, SigningError> {
        match signing_subkey(&self.key, opts.created) {
            Some(sub) => sign_with(&sub.key, &self.password, data, opts),
            None => sign_with(&self.key.primary_key, &self.password, data, opts),
        }
    }

    /// The fingerprint of the key that signs (the primary's, or its signing subkey's).
    pub fn signer_fingerprint(&self, at: SystemTime) -> String {
        match signing_subkey(&self.key, at) {
            Some(sub) => hex_fingerprint(&sub.key.fingerprint()),
            None => self.fingerprint(),
        }
    }
}

/// The subkey that signs, chosen as gpg does: the newest one whose latest
/// binding grants signing and that is neither revoked nor expired at `at`.
/// `None`: the primary key signs (keys without subkeys, like ours). A key
/// whose primary may only certify is the usual shape for an offline primary.
fn signing_subkey(key: &SignedSecretKey, at: SystemTime) -> Option<&SignedSecretSubKey> {
    let at = u64::from(to_unix(at));
    let usable = |sub: &&SignedSecretSubKey| {
        let of_type = |t| sub.signatures.iter().filter(move |s| s.typ() == Some(t));
        if of_type(SignatureType::SubkeyRevocation).next().is_some() {
            return false;
        }
        let Some(binding) =
            of_type(SignatureType::SubkeyBinding).max_by_key(|s| s.created().map(|t| t.as_secs()))
        else {
            return false;
        };
        let created = u64::from(sub.key.created_at().as_secs());
        let alive = match binding.key_expiration_time().map(|d| d.as_secs()) {
            None | Some(0) => true,
            Some(secs) => at < created + u64::from(secs),
        };
        binding.key_flags().sign() && alive && check_algorithm("", sub.key.algorithm()).is_ok()
    };
    key.secret_subkeys
        .iter()
        .filter(usable)
        .max_by_key(|sub| sub.key.created_at().as_secs())
}

fn sign_with<K: SigningKey>(
    signer: &K,
    password: &Password,
    data: &[u8],
    opts: SignOptions,
) -> Result<Vec<u8>, SigningError> {
    let mut hashed = vec![
        Subpacket::regular(SubpacketData::IssuerFingerprint(signer.fingerprint())),
        Subpacket::regular(SubpacketData::SignatureCreationTime(Timestamp::from_secs(
            to_unix(opts.created),
        ))),
    ];
    if let Some(lifetime) = opts.lifetime {
        let secs = u32::try_from(lifetime.as_secs())
            .ok()
            .filter(|s| *s > 0)
            .ok_or(SigningError::Lifetime(lifetime))?;
        hashed.push(Subpacket::regular(SubpacketData::SignatureExpirationTime(
            PgpDuration::from_secs(secs),
        )));
    }
    let unhashed = vec![Subpacket::regular(SubpacketData::IssuerKeyId(
        signer.legacy_key_id(),
    ))];
    let hashed = hashed
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(pgp_err("building signature subpackets"))?;
    let unhashed = unhashed
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(pgp_err("building signature subpackets"))?;
    let sig = DetachedSignature::sign_binary_data_with_subpackets(
        rand::thread_rng(),
        signer,
        password,
        HashAlgorithm::Sha256,
        data,
        SubpacketConfig::UserDefined { hashed, unhashed },
    )
    .map_err(pgp_err("signing"))?;
    sig.to_bytes().map_err(pgp_err("serializing the signature"))
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

    /// Fingerprints of the primary keys.
    pub fn fingerprints(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| hex_fingerprint(&k.primary_key.fingerprint()))
            .collect()
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

    #[test]
    fn gpg_arguments_are_systemds() {
        assert_eq!(
            SYSTEMD_GPG_ARGS.join(" "),
            "--no-options --no-default-keyring --no-auto-key-locate --no-auto-check-trustdb --batch --trust-model=always"
        );
    }

    /// gpg refuses a data signature by a key whose flags do not include
    /// signing ("Wrong key usage"); so do we, and loading such a key says so.
    #[test]
    fn a_certify_only_key_is_refused_as_gpg_would() {
        let mut flags = KeyFlags::default();
        flags.set_certify(true);
        let key = SecretKey::generate_with("Cert <c@example.org>", flags).unwrap();
        let ring = Keyring::from_bytes(&key.keyring_bytes().unwrap()).unwrap();
        let sig = key.sign(b"hello\n", SignOptions::default()).unwrap();
        assert_eq!(
            ring.verify(b"hello\n", &sig, SystemTime::now()),
            Err(VerifyError::Usage(key.fingerprint()))
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cert-only.asc");
        key.save(&path).unwrap();
        let e = SecretKey::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("Wrong key usage") && e.contains("cert-only.asc"),
            "{e}"
        );
    }

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
    fn armored_round_trip_keeps_the_fingerprint() {
        let key = SecretKey::generate("Test <test@example.org>").unwrap();
        let text = key.key.to_armored_string(ArmorOptions::default()).unwrap();
        let back = SecretKey::from_armored(&text, "test", None).unwrap();
        assert_eq!(back.fingerprint(), key.fingerprint());
        assert_eq!(back.user_ids(), vec!["Test <test@example.org>".to_string()]);
        assert!(!format!("{back:?}").contains("BEGIN"));
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

    #[test]
    fn world_readable_secret_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.asc");
        let key = SecretKey::generate("T <t@e>").unwrap();
        key.save(&path).unwrap();
        assert!(SecretKey::load(&path).is_ok());
        assert!(matches!(key.save(&path), Err(SigningError::Exists { .. })));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let e = SecretKey::load(&path).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }
}
