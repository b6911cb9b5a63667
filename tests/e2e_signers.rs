//! End to end, for every signer: a release signed through an external
//! command (gpg via gpg-agent with a passphrase-protected key, Sequoia's
//! `sqop`) or a PKCS#11 token (SoftHSM) is fetched, verified and installed by
//! the real systemd-sysupdate 257 in the Debian chroot, with the keyring the
//! signer's key came with installed on the device (issue 14).

mod common;
#[path = "e2e/harness.rs"]
mod harness;

use std::path::Path;

use common::signers::{command_signing, GpgAgent, SoftHsm, Sqop};
use harness::{Channel, Device};

/// Switches the channel to `signing` (a `[signing]` body) and makes `keyring`
/// the one devices install.
fn sign_with(ch: &Channel, signing: &str, keyring: &Path) {
    std::fs::copy(keyring, &ch.keys.keyring).unwrap();
    let config = std::fs::read_to_string(&ch.config).unwrap();
    let start = config.find("[signing]\n").expect("[signing] in the config");
    let end = config
        .find("\n[transfers]")
        .expect("[transfers] in the config");
    let rewritten = format!(
        "{}[signing]\n{signing}\n{}",
        &config[..start],
        &config[end..]
    );
    std::fs::write(&ch.config, rewritten).unwrap();
}

/// Releases 17 with `env`, then a device at 16 installs it.
fn device_installs_17(ch: &Channel, env: &[(&str, &str)]) {
    ch.release_env("17", env);
    let dev = Device::up(ch, "16");
    assert_eq!(dev.check_new().as_deref(), Some("17"));
    dev.updates_to("17", &["16", "17"]);
}

#[test]
fn gpg_agent_with_a_protected_key_signs_what_devices_install() {
    let ch = Channel::new("signature-lifetime = \"30d\"");
    let gpg = GpgAgent::new();
    let uid = "Agent Release <agent@example.org>";
    let fpr = gpg.generate(uid, "sign");
    gpg.preset();
    let keyring = gpg.export(&[uid], &gpg.path().join("release.pgp"));
    sign_with(
        &ch,
        &command_signing(&gpg.command(&fpr), &fpr, &ch.keys.keyring, ""),
        &keyring,
    );
    device_installs_17(&ch, &[]);
}

#[test]
fn sqop_signs_what_devices_install() {
    let ch = Channel::new("");
    let sop = Sqop::new("SOP Release <sop@example.org>");
    let signing = command_signing(
        &Sqop::command(&sop.key),
        &sop.fingerprint(),
        &ch.keys.keyring,
        "",
    );
    sign_with(&ch, &signing, &sop.keyring);
    device_installs_17(&ch, &[]);
}

#[test]
fn a_pkcs11_token_signs_what_devices_install() {
    let ch = Channel::new("signature-lifetime = \"30d\"");
    let hsm = SoftHsm::new("release");
    hsm.keypair("relkey");
    let keyring = hsm.dir.path().join("release.pgp");
    hsm.keygen("relkey", "Token Release <token@example.org>", &keyring);
    sign_with(&ch, &hsm.signing("relkey", &ch.keys.keyring), &keyring);
    let env = hsm.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    device_installs_17(&ch, &env);
}
