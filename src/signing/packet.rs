//! The OpenPGP packets this tool writes, whatever holds the key.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pgp::composed::{DetachedSignature, KeyDetails, SubpacketConfig};
use pgp::crypto::{
    hash::HashAlgorithm, public_key::PublicKeyAlgorithm, sym::SymmetricKeyAlgorithm,
};
use pgp::packet::{self, Features, KeyFlags, PubKeyInner, Subpacket, SubpacketData, UserId};
use pgp::ser::Serialize;
use pgp::types::{
    Duration as PgpDuration, KeyVersion, Password, PublicParams, SigningKey, Timestamp,
};

use super::{pgp_err, SignOptions, SigningError, KEY_CREATION_TIME};

/// The v4 EdDSA-legacy public key packet of every key this tool makes,
/// in a file or a token: one creation time, so the same key material
/// always has the same fingerprint.
pub(super) fn public_key(params: PublicParams) -> Result<packet::PublicKey, SigningError> {
    let inner = PubKeyInner::new(
        KeyVersion::V4,
        PublicKeyAlgorithm::EdDSALegacy,
        Timestamp::from_secs(KEY_CREATION_TIME),
        None,
        params,
    )
    .map_err(pgp_err("creating the public key"))?;
    packet::PublicKey::from_inner(inner).map_err(pgp_err("creating the public key"))
}

/// The user id and preferences every certificate this tool makes carries.
pub(super) fn key_details(uid: &str, flags: KeyFlags) -> Result<KeyDetails, SigningError> {
    let user_id =
        UserId::from_str(Default::default(), uid).map_err(pgp_err(format!("user id {uid:?}")))?;
    Ok(KeyDetails::new(
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
    ))
}

pub(super) fn hex_fingerprint(fp: &pgp::types::Fingerprint) -> String {
    hex::encode_upper(fp.as_bytes())
}

pub(super) fn to_unix(t: SystemTime) -> u32 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs().min(u32::MAX as u64) as u32)
        .unwrap_or(0)
}

pub(super) fn from_unix(secs: u32) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs as u64)
}

pub(super) fn check_algorithm(what: &str, algo: PublicKeyAlgorithm) -> Result<(), SigningError> {
    match algo {
        PublicKeyAlgorithm::EdDSALegacy | PublicKeyAlgorithm::RSA => Ok(()),
        algo => Err(SigningError::UnsupportedAlgorithm {
            what: what.to_string(),
            algo,
        }),
    }
}

pub(super) fn sign_with<K: SigningKey>(
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
