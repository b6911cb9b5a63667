//! A release key in an armored OpenPGP secret key file.

use std::fs;
use std::io::{Cursor, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::SystemTime;

use pgp::composed::{ArmorOptions, Deserializable, SignedSecretKey, SignedSecretSubKey};
use pgp::crypto::{ed25519, eddsa_legacy};
use pgp::packet::{self, KeyFlags, SignatureType};
use pgp::ser::Serialize;
use pgp::types::{KeyDetails as _, Password, PlainSecretParams, PublicParams, SecretParams};
use zeroize::Zeroizing;

use super::packet::{
    check_algorithm, hex_fingerprint, key_details, public_key, sign_with, to_unix,
};
use super::{pgp_err, Keyring, SignOptions, Signer, SigningError, PASSPHRASE_ENV};

impl Signer for SecretKey {
    fn fingerprint(&self) -> String {
        SecretKey::fingerprint(self)
    }

    fn describe(&self) -> String {
        format!("the secret key {}", self.origin)
    }

    fn sign(&self, data: &[u8], opts: SignOptions) -> Result<Vec<u8>, SigningError> {
        SecretKey::sign(self, data, opts)
    }
}

/// An unlocked signing key. The pgp crate zeroizes its secret parameters on drop.
pub struct SecretKey {
    key: SignedSecretKey,
    password: Password,
    /// Where it came from, for messages.
    origin: String,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material, only what identifies the key.
        f.debug_struct("SecretKey")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
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
        let pk = public_key(public_params)?;
        let sk = packet::SecretKey::new(pk, SecretParams::Plain(plain))
            .map_err(pgp_err("creating the secret key"))?;
        let details = key_details(uid, flags)?;
        let signed = details
            .sign(&mut rng, &sk, sk.public_key(), &Password::empty())
            .map_err(pgp_err("self-signing the user id"))?;
        let key = SignedSecretKey::new(sk, signed, vec![], vec![]);
        Ok(SecretKey {
            key,
            password: Password::empty(),
            origin: format!("generated for {uid}"),
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
        let sk = SecretKey {
            key,
            password,
            origin: what.to_string(),
        };
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

    /// The fingerprint of the key in `path` that signs now (its signing
    /// subkey, or the primary), read without the passphrase.
    pub fn identify(path: &Path) -> Result<String, SigningError> {
        let text = Zeroizing::new(fs::read_to_string(path).map_err(|source| SigningError::Io {
            path: path.to_path_buf(),
            source,
        })?);
        let what = path.display().to_string();
        let (key, _) = SignedSecretKey::from_armor_single(Cursor::new(text.as_bytes())).map_err(
            pgp_err(format!("{what}: not an armored OpenPGP secret key")),
        )?;
        Ok(match signing_subkey(&key, SystemTime::now()) {
            Some(sub) => hex_fingerprint(&sub.key.fingerprint()),
            None => hex_fingerprint(&key.primary_key.fingerprint()),
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::VerifyError;

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
    fn armored_round_trip_keeps_the_fingerprint() {
        let key = SecretKey::generate("Test <test@example.org>").unwrap();
        let text = key.key.to_armored_string(ArmorOptions::default()).unwrap();
        let back = SecretKey::from_armored(&text, "test", None).unwrap();
        assert_eq!(back.fingerprint(), key.fingerprint());
        assert_eq!(back.user_ids(), vec!["Test <test@example.org>".to_string()]);
        assert!(!format!("{back:?}").contains("BEGIN"));
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
