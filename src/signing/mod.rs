//! OpenPGP keys and detached signatures, in the one dialect every device's gpg
//! accepts: v4 keys, EdDSA-legacy (algorithm 22) over Ed25519, SHA-256.
//!
//! systemd-sysupdate verifies `SHA256SUMS.gpg` by running gpg with a binary
//! keyring, so the output of this module is checked against the real gpg in
//! the integration tests; in-process verification here is for the publisher's
//! own safety checks (never build on a manifest someone else wrote).

mod checked;
pub mod command;
mod key;
mod keyring;
mod packet;
pub mod pkcs11;

pub use checked::{check, CheckError, Checked, CLOCK_SLACK};
pub use command::{CommandSigner, CommandSpec};
pub use key::SecretKey;
pub use keyring::{Keyring, SignatureInfo, VerifyError};
pub use pkcs11::{Pkcs11Error, Pkcs11Signer, Pkcs11Spec};

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use pgp::crypto::public_key::PublicKeyAlgorithm;
use thiserror::Error;

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
    /// A signature came back, but devices would refuse it or it is not
    /// what was asked for.
    #[error("the signature made by {signer} was refused: {source}")]
    Refused { signer: String, source: CheckError },
    /// A signing program failed; `stderr` is the end of what it said.
    #[error("{command}: {problem}{stderr}")]
    Command {
        command: String,
        problem: String,
        stderr: String,
    },
    /// A PKCS#11 token could not be used, or its key has no certificate.
    #[error(transparent)]
    Pkcs11(#[from] Pkcs11Error),
}

/// Upper-case hex without spaces, as keyrings list fingerprints; only v4
/// (40 hex digits), the one version devices' gpg verifies.
pub fn normalize_fingerprint(s: &str) -> Result<String, String> {
    let hex: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    if hex.len() != 40 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "{s:?} is not an OpenPGP v4 fingerprint (40 hex digits, as `gpg --list-keys --with-colons` shows)"
        ));
    }
    Ok(hex.to_ascii_uppercase())
}

/// The one signer `[signing]` configures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignerSpec {
    /// An armored OpenPGP secret key file.
    KeyFile(PathBuf),
    /// A program: gpg, a SOP implementation, a wrapper.
    Command(CommandSpec),
    /// An Ed25519 key in a PKCS#11 token.
    Pkcs11(Pkcs11Spec),
}

impl SignerSpec {
    /// What signs, for messages (as [`Signer::describe`] says it).
    pub fn describe(&self) -> String {
        match self {
            SignerSpec::KeyFile(path) => format!("the secret key {}", path.display()),
            SignerSpec::Command(spec) => spec.describe(),
            SignerSpec::Pkcs11(spec) => spec.describe(),
        }
    }

    /// Which key the signer signs with, found without unlocking anything,
    /// so `status` and `verify` can name it where it cannot sign.
    /// `keyring_path` names the keyring in messages.
    pub fn identify(&self, keyring: &Keyring, keyring_path: &std::path::Path) -> Identity {
        let key = match self {
            SignerSpec::KeyFile(path) => SecretKey::identify(path),
            SignerSpec::Command(spec) => Ok(spec.fingerprint.clone()),
            SignerSpec::Pkcs11(spec) => Pkcs11Signer::identify(spec, keyring, keyring_path),
        };
        Identity::new(self.describe(), key, keyring)
    }
}

impl SignerSpec {
    /// Opens the signer: loads the key file, or prepares the command, or
    /// logs in to the token. `keyring` (read from `keyring_path`) tells a
    /// subkey's primary and holds a token key's certificate.
    pub fn open(
        &self,
        keyring: &Keyring,
        keyring_path: &std::path::Path,
    ) -> Result<Box<dyn Signer>, SigningError> {
        Ok(match self {
            SignerSpec::KeyFile(path) => Box::new(SecretKey::load(path)?),
            SignerSpec::Command(spec) => Box::new(CommandSigner::new(spec.clone(), keyring)),
            SignerSpec::Pkcs11(spec) => Box::new(Pkcs11Signer::open(spec, keyring, keyring_path)?),
        })
    }
}

/// A configured signer's key, as far as it can be known without signing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// What signs ("the command `gpg …`").
    pub signer: String,
    /// The primary key's fingerprint, or why it is not known here.
    pub key: Result<String, String>,
    /// The subkey that signs, when it is not the primary.
    pub subkey: Option<String>,
    /// Whether the keyring holds the key, so devices accept its signatures.
    pub in_keyring: bool,
}

impl Identity {
    /// `key`: the fingerprint of the key that signs (primary or subkey).
    fn new(signer: String, key: Result<String, SigningError>, keyring: &Keyring) -> Identity {
        let (key, subkey, in_keyring) = match key {
            Err(e) => (Err(e.to_string()), None, false),
            Ok(fpr) => match keyring.primary_of(&fpr) {
                Some(primary) => {
                    let subkey = (primary != fpr).then_some(fpr);
                    (Ok(primary), subkey, true)
                }
                None => (Ok(fpr), None, false),
            },
        };
        Identity {
            signer,
            key,
            subkey,
            in_keyring,
        }
    }
}

fn pgp_err(what: impl Into<String>) -> impl FnOnce(pgp::errors::Error) -> SigningError {
    let what = what.into();
    move |source| SigningError::Pgp { what, source }
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
/// a key file, a command (gpg-agent, smartcards, SOP) or a PKCS#11 token.
/// Whatever it is, the publisher checks each signature with the keyring
/// ([`Checked`]) before using it.
pub trait Signer: Send + Sync {
    /// The primary key's fingerprint (upper-case hex), as keyrings list it.
    fn fingerprint(&self) -> String;
    /// What signs, for messages: "key file …", "command `…`", "PKCS#11 …".
    fn describe(&self) -> String;
    /// A binary detached OpenPGP signature over `data`.
    fn sign(&self, data: &[u8], opts: SignOptions) -> Result<Vec<u8>, SigningError>;
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
}
