//! The configured signer: opened for writes, named for `status` and
//! `verify` (which must work where it cannot sign).

use anyhow::{Context, Result};
use serde::Serialize;

use super::{write_new, UsageError};
use crate::config::{Config, Signing};
use crate::signing::{Keyring, SecretKey, Signer, SignerSpec};
use crate::ui::Ui;

/// Opens the configured signer and the device keyring, creating the
/// example's throwaway key on first use, and checks devices would accept
/// the signer's key.
pub(crate) fn load(config: &Config, ui: &Ui) -> Result<(Box<dyn Signer>, Keyring)> {
    let s = &config.signing;
    if let SignerSpec::KeyFile(path) = &s.signer {
        if !path.exists() {
            example_key(s, path, ui)?;
        }
    }
    let keyring = Keyring::load(&s.keyring)?;
    let signer = s.signer.open(&keyring, &s.keyring)?;
    if !keyring.contains(&signer.fingerprint()) {
        return Err(UsageError(format!(
            "the signing key {} ({}) is not in the device keyring {}: devices would refuse every manifest. Ship its public key in the image first, then switch the signer",
            signer.fingerprint(),
            signer.describe(),
            s.keyring.display()
        ))
        .into());
    }
    Ok((signer, keyring))
}

/// Creates the example's key, or says how to make a real one.
fn example_key(s: &Signing, path: &std::path::Path, ui: &Ui) -> Result<()> {
    if !s.generate_example_key {
        return Err(UsageError(format!(
            "the secret key {} does not exist. Create one with\n  sysupdate-publish keygen --uid 'NAME <EMAIL>' --secret {} --keyring {}\nand ship the keyring in the device image",
            path.display(),
            path.display(),
            s.keyring.display()
        ))
        .into());
    }
    ui.warn(format!(
        "generating a throwaway example key {} (generate-example-key = true; never use this in production)",
        path.display()
    ));
    let key = SecretKey::generate("sysupdate-publish example <example@localhost>")?;
    for p in [path, &s.keyring] {
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
    }
    key.save(path)?;
    write_new(&s.keyring, &key.keyring_bytes()?)
}

/// The configured signer as `status` and `verify` report it.
#[derive(Serialize)]
pub(crate) struct Named {
    /// What signs ("the command `gpg …`").
    pub signer: String,
    /// Its primary key's fingerprint, when it can be known here.
    pub fingerprint: Option<String>,
    /// The subkey that signs, when not the primary.
    pub subkey: Option<String>,
    pub in_keyring: bool,
    /// Why the key is unknown, or why devices would refuse it.
    pub warning: Option<String>,
}

/// Names the configured signer's key without unlocking it, and warns when
/// the keyring devices install lacks it.
pub(crate) fn name(config: &Config, keyring: &Keyring, ui: &Ui) -> Named {
    let id = config
        .signing
        .signer
        .identify(keyring, &config.signing.keyring);
    let warning = match &id.key {
        Err(e) => Some(format!("the signer's key cannot be named here: {e}")),
        Ok(fpr) if !id.in_keyring => Some(format!(
            "the signer's key {fpr} is not in the keyring {} that devices install: every write is refused, and devices would refuse what it signs. Ship a keyring with it in an image first, then switch the signer (keys/README.md, \"Rotating keys\")",
            config.signing.keyring.display()
        )),
        Ok(_) => None,
    };
    let key = match (&id.key, &id.subkey) {
        (Ok(fpr), None) => format!("key {fpr}"),
        (Ok(fpr), Some(sub)) => format!("subkey {sub} of {fpr}"),
        (Err(_), _) => "key unknown here".into(),
    };
    ui.info(format!("signer: {} ({key})", id.signer));
    if let Some(w) = &warning {
        ui.warn(w);
    }
    Named {
        signer: id.signer,
        fingerprint: id.key.ok(),
        subkey: id.subkey,
        in_keyring: id.in_keyring,
        warning,
    }
}
