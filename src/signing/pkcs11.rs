//! A signer whose Ed25519 key lives in a PKCS#11 token (an HSM, a
//! smartcard through OpenSC, SoftHSM): the token makes the raw EdDSA
//! signature over the OpenPGP hash, the OpenPGP packets around it are ours,
//! so devices get the same v4 EdDSA-legacy signatures as from a key file.
//!
//! A token holds a bare key pair, not an OpenPGP key: the certificate
//! devices install (`keygen --pkcs11 …`, self-signed through the token)
//! gives it its creation time and so its fingerprint. The signer finds its
//! key in the configured keyring by the public key the token reports, and
//! refuses a token key the keyring has no certificate for.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use pgp::composed::{Deserializable, SignedPublicKey, SignedPublicSubKey, SignedSecretKey};
use pgp::crypto::{hash::HashAlgorithm, public_key::PublicKeyAlgorithm};
use pgp::packet::{
    self, KeyFlags, PubKeyInner, SignatureConfig, SignatureType, Subpacket, SubpacketData,
};
use pgp::ser::Serialize;
use pgp::types::{
    EddsaLegacyPublicParams, Fingerprint, KeyDetails as _, KeyId, KeyVersion, Mpi, Password,
    PublicParams, SignatureBytes, SigningKey, Timestamp,
};
use thiserror::Error;

use super::packet::{self as packets, hex_fingerprint, sign_with};
use super::{pgp_err, Keyring, SignOptions, Signer, SigningError};

/// Environment variable holding the token's user PIN unless `pin-env` names another.
pub const PIN_ENV: &str = "SYSUPDATE_PUBLISH_PKCS11_PIN";

/// A configured token key: `pkcs11 = { module, token, key, pin-env }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pkcs11Spec {
    /// The PKCS#11 module (shared library), e.g. /usr/lib/softhsm/libsofthsm2.so.
    pub module: PathBuf,
    /// The token's label.
    pub token: String,
    /// The key pair's label (CKA_LABEL) on the token.
    pub key: String,
    /// The environment variable the PIN is read from.
    pub pin_env: String,
}

impl Pkcs11Spec {
    /// "the PKCS#11 key "relkey" on token "release" (/usr/lib/…/libsofthsm2.so)".
    pub fn describe(&self) -> String {
        format!(
            "the PKCS#11 key {:?} on token {:?} ({})",
            self.key,
            self.token,
            self.module.display()
        )
    }

    /// The command that makes the certificate devices install for this key.
    pub fn keygen_command(&self, keyring: &std::path::Path) -> String {
        format!(
            "sysupdate-publish keygen --pkcs11 {} --token {} --key {} --uid 'NAME <EMAIL>' --keyring {}",
            quote(&self.module.display().to_string()),
            quote(&self.token),
            quote(&self.key),
            quote(&keyring.display().to_string()),
        )
    }
}

fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=+.,/:@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// What went wrong with the token.
#[derive(Debug, Error)]
pub enum Pkcs11Error {
    #[error("cannot load the PKCS#11 module {module}: {source} (is the package that ships it installed?)")]
    Module {
        module: PathBuf,
        source: cryptoki::error::Error,
    },
    #[error("{what}: {source}")]
    Token {
        what: String,
        source: cryptoki::error::Error,
    },
    #[error("{what}: no answer from the token within {after:?}; nothing was published (is it plugged in, waiting for a touch or a PIN?)")]
    Timeout { what: String, after: Duration },
    #[error("no token labelled {token:?} in {module}; tokens there: {found}")]
    NoToken {
        module: PathBuf,
        token: String,
        found: String,
    },
    #[error("token {token:?} has no {class} labelled {key:?}; make one, e.g. `pkcs11-tool --module {module} --token-label {token} --login --keypairgen --key-type EC:edwards25519 --label {key}`")]
    NoKey {
        module: PathBuf,
        token: String,
        key: String,
        class: &'static str,
    },
    #[error("token {token:?} holds {count} private keys labelled {key:?}; give the one to sign with a label of its own")]
    Ambiguous {
        token: String,
        key: String,
        count: usize,
    },
    #[error("the key {key:?} on token {token:?} is not an Ed25519 key ({detail}); devices verify EdDSA (Ed25519): make one with --key-type EC:edwards25519")]
    NotEd25519 {
        token: String,
        key: String,
        detail: String,
    },
    #[error("the PIN of token {token:?} is not set: put it in the environment variable {env} (never in the config)")]
    NoPin { token: String, env: String },
    #[error("{key} has no OpenPGP certificate in the keyring {keyring}: devices could not verify its signatures. Make one (self-signed through the token) with\n  {command}\nthen add it to the keyring devices install (`cat {keyring} {cert} > new.pgp` keeps the current keys while rotating) and ship that in an image before signing with the token")]
    NoCertificate {
        key: String,
        keyring: String,
        /// Where the command writes the certificate.
        cert: String,
        command: String,
    },
}

/// How long one signature may take: a token that hangs (unplugged, waiting
/// for a touch nobody gives) refuses the write instead of stalling it.
pub const SIGN_TIMEOUT: Duration = Duration::from_secs(60);

/// An open session on a token, logged in, with the key pair found.
pub struct Token {
    spec: Pkcs11Spec,
    /// Shared with the thread that waits for the token (see [`SIGN_TIMEOUT`]).
    session: Arc<Mutex<Session>>,
    private: ObjectHandle,
    /// The Ed25519 public key the token reports.
    public: [u8; 32],
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("spec", &self.spec)
            .field("public", &hex::encode(self.public))
            .finish_non_exhaustive()
    }
}

impl Token {
    /// Loads the module, finds the token and the key pair, and logs in
    /// with the PIN from the environment.
    pub fn open(spec: &Pkcs11Spec) -> Result<Token, Pkcs11Error> {
        let pin = std::env::var(&spec.pin_env)
            .ok()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| Pkcs11Error::NoPin {
                token: spec.token.clone(),
                env: spec.pin_env.clone(),
            })?;
        let (session, public) = Self::session(spec)?;
        let token_err = |what: String| {
            let what = format!("token {:?}: {what}", spec.token);
            move |source| Pkcs11Error::Token { what, source }
        };
        session
            .login(UserType::User, Some(&AuthPin::from(pin)))
            .map_err(token_err("logging in (is the PIN right?)".into()))?;
        let private = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(spec.key.as_bytes().to_vec()),
            ])
            .map_err(token_err("looking for the private key".into()))?;
        let private = match private.as_slice() {
            [one] => *one,
            [] => {
                return Err(Pkcs11Error::NoKey {
                    module: spec.module.clone(),
                    token: spec.token.clone(),
                    key: spec.key.clone(),
                    class: "private key",
                })
            }
            more => {
                return Err(Pkcs11Error::Ambiguous {
                    token: spec.token.clone(),
                    key: spec.key.clone(),
                    count: more.len(),
                })
            }
        };
        Ok(Token {
            spec: spec.clone(),
            session: Arc::new(Mutex::new(session)),
            private,
            public,
        })
    }

    /// The public key of `spec`'s key pair, read without the PIN (public
    /// objects need no login), for `status` and `verify`.
    pub fn public_key(spec: &Pkcs11Spec) -> Result<[u8; 32], Pkcs11Error> {
        Self::session(spec).map(|(_, public)| public)
    }

    /// A session on the token labelled `spec.token`, and the key's public half.
    fn session(spec: &Pkcs11Spec) -> Result<(Session, [u8; 32]), Pkcs11Error> {
        let ctx = Pkcs11::new(&spec.module).map_err(|source| Pkcs11Error::Module {
            module: spec.module.clone(),
            source,
        })?;
        let token_err = |what: &str| {
            let what = format!("{}: {what}", spec.module.display());
            move |source| Pkcs11Error::Token { what, source }
        };
        ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .map_err(token_err("initializing the module"))?;
        let slots = ctx
            .get_slots_with_initialized_token()
            .map_err(token_err("listing its tokens"))?;
        let mut found = Vec::new();
        let mut slot = None;
        for s in slots {
            let info = ctx
                .get_token_info(s)
                .map_err(token_err("reading a token's label"))?;
            let label = info.label().trim_end().to_string();
            if label == spec.token {
                slot = Some(s);
                break;
            }
            found.push(format!("{label:?}"));
        }
        let slot = slot.ok_or_else(|| Pkcs11Error::NoToken {
            module: spec.module.clone(),
            token: spec.token.clone(),
            found: if found.is_empty() {
                "none".into()
            } else {
                found.join(", ")
            },
        })?;
        let session = ctx
            .open_ro_session(slot)
            .map_err(token_err("opening a session"))?;
        let public = public_key(&session, spec)?;
        Ok((session, public))
    }

    /// A raw Ed25519 signature (R ‖ S, 64 bytes) of `digest`, or an error
    /// after [`SIGN_TIMEOUT`] (the token's thread is left to finish alone).
    fn sign_raw(&self, digest: &[u8]) -> Result<Vec<u8>, Pkcs11Error> {
        let (tx, rx) = std::sync::mpsc::channel();
        let session = Arc::clone(&self.session);
        let private = self.private;
        let digest = digest.to_vec();
        std::thread::spawn(move || {
            let session = session.lock().unwrap_or_else(|e| e.into_inner());
            let mechanism = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
            let _ = tx.send(session.sign(&mechanism, private, &digest));
        });
        let what = format!("{}: signing", self.spec.describe());
        match rx.recv_timeout(SIGN_TIMEOUT) {
            Ok(result) => result.map_err(|source| Pkcs11Error::Token { what, source }),
            Err(_) => Err(Pkcs11Error::Timeout {
                what,
                after: SIGN_TIMEOUT,
            }),
        }
    }
}

/// The 32-byte public key of the key pair labelled `spec.key`.
fn public_key(session: &Session, spec: &Pkcs11Spec) -> Result<[u8; 32], Pkcs11Error> {
    let token_err = |what: &str| {
        let what = format!("token {:?}: {what}", spec.token);
        move |source| Pkcs11Error::Token { what, source }
    };
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::Label(spec.key.as_bytes().to_vec()),
        ])
        .map_err(token_err("looking for the public key"))?;
    let Some(handle) = found.first() else {
        return Err(Pkcs11Error::NoKey {
            module: spec.module.clone(),
            token: spec.token.clone(),
            key: spec.key.clone(),
            class: "public key",
        });
    };
    let attrs = session
        .get_attributes(*handle, &[AttributeType::KeyType, AttributeType::EcPoint])
        .map_err(token_err("reading the public key"))?;
    let not_ed25519 = |detail: String| Pkcs11Error::NotEd25519 {
        token: spec.token.clone(),
        key: spec.key.clone(),
        detail,
    };
    let mut point = None;
    for a in attrs {
        match a {
            Attribute::KeyType(t) if t != KeyType::EC_EDWARDS => {
                return Err(not_ed25519(format!("key type {t}")))
            }
            Attribute::EcPoint(p) => point = Some(p),
            _ => {}
        }
    }
    let point = point.ok_or_else(|| not_ed25519("it has no EC point".into()))?;
    // A DER OCTET STRING (04 20 …) as PKCS#11 3.0 says, or the raw 32 bytes
    // as some tokens give it.
    let raw = match point.as_slice() {
        [0x04, 0x20, rest @ ..] if rest.len() == 32 => rest,
        raw if raw.len() == 32 => raw,
        other => return Err(not_ed25519(format!("a {}-byte EC point", other.len()))),
    };
    let mut out = [0u8; 32];
    out.copy_from_slice(raw);
    Ok(out)
}

/// The OpenPGP key params of an Ed25519 public key, as in our certificates.
fn public_params(public: &[u8; 32]) -> Result<PublicParams, SigningError> {
    let key = ed25519_dalek::VerifyingKey::from_bytes(public).map_err(|e| SigningError::Pgp {
        what: "the token's Ed25519 public key".into(),
        source: pgp::errors::Error::Message {
            message: e.to_string(),
            backtrace: None,
        },
    })?;
    Ok(PublicParams::EdDSALegacy(
        EddsaLegacyPublicParams::Ed25519 { key },
    ))
}

/// A key packet whose secret half is in the token: what rPGP signs with.
#[derive(Debug)]
struct OnToken<'a, K> {
    key: &'a K,
    token: &'a Token,
}

impl<K: pgp::types::KeyDetails> pgp::types::KeyDetails for OnToken<'_, K> {
    fn version(&self) -> KeyVersion {
        self.key.version()
    }
    fn legacy_key_id(&self) -> KeyId {
        self.key.legacy_key_id()
    }
    fn fingerprint(&self) -> Fingerprint {
        self.key.fingerprint()
    }
    fn algorithm(&self) -> PublicKeyAlgorithm {
        self.key.algorithm()
    }
    fn created_at(&self) -> Timestamp {
        self.key.created_at()
    }
    fn legacy_v3_expiration_days(&self) -> Option<u16> {
        self.key.legacy_v3_expiration_days()
    }
    fn public_params(&self) -> &PublicParams {
        self.key.public_params()
    }
}

impl<K: pgp::types::KeyDetails> SigningKey for OnToken<'_, K> {
    fn sign(
        &self,
        _key_pw: &Password,
        _hash: HashAlgorithm,
        digest: &[u8],
    ) -> pgp::errors::Result<SignatureBytes> {
        // EdDSA-legacy signs the OpenPGP hash itself (RFC 4880bis), as a
        // pure Ed25519 message; R and S go out as two MPIs.
        let raw = self
            .token
            .sign_raw(digest)
            .map_err(|e| pgp::errors::Error::Message {
                message: e.to_string(),
                backtrace: None,
            })?;
        if raw.len() != 64 {
            return Err(pgp::errors::Error::Message {
                message: format!(
                    "{}: the token returned a {}-byte signature, not Ed25519's 64",
                    self.token.spec.describe(),
                    raw.len()
                ),
                backtrace: None,
            });
        }
        Ok(SignatureBytes::Mpis(vec![
            Mpi::from_slice(&raw[..32]),
            Mpi::from_slice(&raw[32..]),
        ]))
    }

    fn hash_alg(&self) -> HashAlgorithm {
        HashAlgorithm::Sha256
    }
}

/// The key packet of the token's key in the keyring: a primary or a subkey.
#[derive(Debug)]
enum KeyPacket {
    Primary(packet::PublicKey),
    Subkey(packet::PublicSubkey),
}

/// Signs with a token key whose certificate is in the keyring.
#[derive(Debug)]
pub struct Pkcs11Signer {
    token: Token,
    packet: KeyPacket,
    /// The certificate's primary fingerprint.
    primary: String,
}

impl Pkcs11Signer {
    /// Opens the token and finds its key's certificate in `keyring`
    /// (`keyring_path` names it in messages).
    pub fn open(
        spec: &Pkcs11Spec,
        keyring: &Keyring,
        keyring_path: &std::path::Path,
    ) -> Result<Pkcs11Signer, SigningError> {
        let token = Token::open(spec)?;
        let (primary, packet) = find(spec, &token.public, keyring, keyring_path)?;
        Ok(Pkcs11Signer {
            token,
            packet,
            primary,
        })
    }

    /// The fingerprint of the key that signs (primary or subkey) in
    /// `keyring`, read from the token without the PIN.
    pub fn identify(
        spec: &Pkcs11Spec,
        keyring: &Keyring,
        keyring_path: &std::path::Path,
    ) -> Result<String, SigningError> {
        let public = Token::public_key(spec)?;
        let (_, packet) = find(spec, &public, keyring, keyring_path)?;
        Ok(match packet {
            KeyPacket::Primary(k) => hex_fingerprint(&k.fingerprint()),
            KeyPacket::Subkey(k) => hex_fingerprint(&k.fingerprint()),
        })
    }
}

fn find(
    spec: &Pkcs11Spec,
    public: &[u8; 32],
    keyring: &Keyring,
    keyring_path: &std::path::Path,
) -> Result<(String, KeyPacket), SigningError> {
    let params = public_params(public)?;
    for key in keyring.keys() {
        let primary = hex_fingerprint(&key.primary_key.fingerprint());
        if key.primary_key.public_params() == &params {
            return Ok((primary, KeyPacket::Primary(key.primary_key.clone())));
        }
        if let Some(sub) = key
            .public_subkeys
            .iter()
            .find(|s| s.key.public_params() == &params)
        {
            return Ok((primary, KeyPacket::Subkey(sub.key.clone())));
        }
    }
    let cert = keyring_path.with_file_name(format!("{}.pgp", spec.key.replace('/', "_")));
    Err(Pkcs11Error::NoCertificate {
        key: spec.describe(),
        keyring: keyring_path.display().to_string(),
        cert: cert.display().to_string(),
        command: spec.keygen_command(&cert),
    }
    .into())
}

impl Signer for Pkcs11Signer {
    fn fingerprint(&self) -> String {
        self.primary.clone()
    }

    fn describe(&self) -> String {
        self.token.spec.describe()
    }

    fn sign(&self, data: &[u8], opts: SignOptions) -> Result<Vec<u8>, SigningError> {
        fn on<K: pgp::types::KeyDetails>(
            key: &K,
            token: &Token,
            data: &[u8],
            opts: SignOptions,
        ) -> Result<Vec<u8>, SigningError> {
            sign_with(&OnToken { key, token }, &Password::empty(), data, opts)
        }
        match &self.packet {
            KeyPacket::Primary(key) => on(key, &self.token, data, opts),
            KeyPacket::Subkey(key) => on(key, &self.token, data, opts),
        }
    }
}

/// The OpenPGP certificate of the token's key, self-signed through the
/// token: a v4 EdDSA-legacy primary that certifies and signs, created at
/// [`KEY_CREATION_TIME`] like every key this tool makes. Returns the
/// binary keyring devices install and its fingerprint.
pub fn certificate(spec: &Pkcs11Spec, uid: &str) -> Result<(Vec<u8>, String), SigningError> {
    let token = Token::open(spec)?;
    let pk = packets::public_key(public_params(&token.public)?)?;
    let mut flags = KeyFlags::default();
    flags.set_certify(true);
    flags.set_sign(true);
    let details = packets::key_details(uid, flags)?;
    let on_token = OnToken {
        key: &pk,
        token: &token,
    };
    let signed = details
        .sign(rand::thread_rng(), &on_token, &pk, &Password::empty())
        .map_err(pgp_err(format!(
            "{}: self-signing the user id",
            spec.describe()
        )))?;
    let fingerprint = hex_fingerprint(&pk.fingerprint());
    let cert = SignedPublicKey::new(pk, signed, vec![]);
    cert.verify_bindings().map_err(pgp_err(format!(
        "{}: the certificate's self-signature does not verify (does the token sign pure Ed25519?)",
        spec.describe()
    )))?;
    let bytes = cert
        .to_bytes()
        .map_err(pgp_err("serializing the certificate"))?;
    Ok((bytes, fingerprint))
}

/// The certificate of an offline primary key with the token's key bound
/// to it as a signing subkey: the primary (an armored secret key file on
/// the offline machine, `gpg --export-secret-keys --armor`; its passphrase
/// from `passphrase`) certifies, the token signs releases. The binding
/// carries the back-signature the token makes, which gpg requires of
/// signing subkeys. `what` names the primary's file in messages. Returns
/// the binary keyring devices install, the primary's and the subkey's fingerprints.
pub fn bind_subkey(
    spec: &Pkcs11Spec,
    primary_armored: &str,
    what: &str,
    passphrase: Option<&str>,
) -> Result<(Vec<u8>, String, String), SigningError> {
    let (key, _) =
        SignedSecretKey::from_armor_single(std::io::Cursor::new(primary_armored.as_bytes()))
            .map_err(pgp_err(format!(
                "{what}: not an armored OpenPGP secret key"
            )))?;
    key.verify_bindings().map_err(pgp_err(format!(
        "{what}: the key's self-signatures do not verify"
    )))?;
    let password = passphrase.map(Password::from).unwrap_or_default();
    let token = Token::open(spec)?;
    let primary_pub = key.primary_key.public_key().clone();
    // As old as the primary: a device whose clock is behind must not see
    // a key "created in the future".
    let inner = PubKeyInner::new(
        KeyVersion::V4,
        PublicKeyAlgorithm::EdDSALegacy,
        primary_pub.created_at(),
        None,
        public_params(&token.public)?,
    )
    .map_err(pgp_err("creating the subkey"))?;
    let sub = packet::PublicSubkey::from_inner(inner).map_err(pgp_err("creating the subkey"))?;
    let on_token = OnToken {
        key: &sub,
        token: &token,
    };
    let back = || -> pgp::errors::Result<packet::Signature> {
        let mut config =
            SignatureConfig::from_key(rand::thread_rng(), &on_token, SignatureType::KeyBinding)?;
        config.hashed_subpackets = vec![
            Subpacket::regular(SubpacketData::SignatureCreationTime(Timestamp::now()))?,
            Subpacket::regular(SubpacketData::IssuerFingerprint(sub.fingerprint()))?,
        ];
        config.unhashed_subpackets = vec![Subpacket::regular(SubpacketData::IssuerKeyId(
            sub.legacy_key_id(),
        ))?];
        config.sign_primary_key_binding(&on_token, &sub, &Password::empty(), &primary_pub)
    };
    let backsig = back().map_err(pgp_err(format!(
        "{}: the back-signature binding it to {what}",
        spec.describe()
    )))?;
    let mut flags = KeyFlags::default();
    flags.set_sign(true);
    let binding = sub
        .sign(
            rand::thread_rng(),
            &key.primary_key,
            &primary_pub,
            &password,
            flags,
            Some(backsig),
        )
        .map_err(|source| match passphrase {
            None => SigningError::Locked {
                what: what.to_string(),
            },
            Some(_) => SigningError::Pgp {
                what: format!("{what}: binding the token's key as its signing subkey"),
                source,
            },
        })?;
    let sub_fpr = hex_fingerprint(&sub.fingerprint());
    let mut cert = key.to_public_key();
    cert.public_subkeys
        .push(SignedPublicSubKey::new(sub, vec![binding]));
    cert.verify_bindings().map_err(pgp_err(format!(
        "{}: the subkey binding does not verify",
        spec.describe()
    )))?;
    let bytes = cert
        .to_bytes()
        .map_err(pgp_err("serializing the certificate"))?;
    Ok((bytes, hex_fingerprint(&primary_pub.fingerprint()), sub_fpr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keygen_command_is_quoted_for_a_shell() {
        let spec = Pkcs11Spec {
            module: "/usr/lib/softhsm/libsofthsm2.so".into(),
            token: "release token".into(),
            key: "relkey".into(),
            pin_env: PIN_ENV.into(),
        };
        assert_eq!(
            spec.keygen_command(std::path::Path::new("keys/release.pgp")),
            "sysupdate-publish keygen --pkcs11 /usr/lib/softhsm/libsofthsm2.so --token 'release token' --key relkey --uid 'NAME <EMAIL>' --keyring keys/release.pgp"
        );
    }
}
