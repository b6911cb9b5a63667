//! Signers that keep the key out of a file: gpg through gpg-agent, a SOP
//! implementation, a PKCS#11 token. Every release they sign is checked
//! with systemd's gpg command line; every way a signer can go wrong
//! refuses the write with the store exactly as it was.

mod common;

use common::signers::*;
use common::*;

/// A channel whose `[signing]` is `signing`, in `[channel]` `extra`.
fn channel_signed(extra: &str, signing: &str) -> TestChannel {
    let ch = TestChannel::new(extra);
    ch.set_signing(extra, signing);
    ch
}

/// gpg's verdict on every arch's manifest, with systemd's command line.
fn gpg_says(ch: &TestChannel, keyring: &std::path::Path) -> String {
    assert_channel_verifies(&ch.store, keyring);
    let data = std::fs::read(ch.store.join("x86-64/SHA256SUMS")).unwrap();
    let (rc, err) = gpg_verify(keyring, &ch.store.join("x86-64/SHA256SUMS.gpg"), &data);
    assert_eq!(rc, 0, "{err}");
    err
}

#[test]
fn gpg_agent_with_a_passphrase_signs_releases_with_the_configured_lifetime() {
    let agent = GpgAgent::new();
    let fpr = agent.generate("Agent Release <agent@example.org>", "sign");
    agent.preset();
    let keyring = agent.export(&[], &agent.path().join("release.pgp"));
    let extra = "signature-lifetime = \"30d\"";
    let ch = channel_signed(
        extra,
        &command_signing(&agent.command("{fingerprint}"), &fpr, &keyring, ""),
    );
    ch.publish_version("17", 0);
    let said = gpg_says(&ch, &keyring);
    assert!(said.contains(&format!("using EDDSA key {fpr}")), "{said}");
    assert!(said.contains("Signature expires"), "{said}");
    // The history's entries are signed by the same command, without expiry,
    // and status names the signer.
    let status = ch.run(&["status"], 0);
    let status = stderr(&status);
    assert!(
        status.contains("signer: the command `gpg --homedir"),
        "{status}"
    );
    assert!(status.contains(&format!("(key {fpr})")), "{status}");
}

/// The offline-primary layout: the primary only certifies and its secret
/// never reaches the release machine, whose agent holds the signing
/// subkey alone. The command names the subkey (`FPR!`, gpg's "exactly this key").
#[test]
fn gpg_agent_holding_only_the_signing_subkey_of_an_offline_primary() {
    let offline = OfflinePrimary::new();
    let (primary, sub, keyring) = (&offline.primary, &offline.subkey, &offline.keyring);
    let sub_only = offline.subkey_only();

    let ci = GpgAgent::new();
    let import = ci.path().join("subkey.gpg");
    std::fs::write(&import, sub_only).unwrap();
    ci.gpg(&["--import", import.to_str().unwrap()]);
    let secrets = String::from_utf8(ci.gpg(&["--list-secret-keys", "--with-colons"])).unwrap();
    let sec = secrets.lines().find(|l| l.starts_with("sec:")).unwrap();
    assert!(
        sec.contains(":#:"),
        "the primary's secret must be a stub:\n{secrets}"
    );
    ci.preset();

    let ch = channel_signed(
        "signature-lifetime = \"7d\"",
        &command_signing(&ci.command("{fingerprint}!"), sub, keyring, ""),
    );
    ch.publish_version("17", 0);
    let said = gpg_says(&ch, keyring);
    assert!(said.contains(&format!("using EDDSA key {sub}")), "{said}");
    let status = stderr(&ch.run(&["status"], 0));
    assert!(
        status.contains(&format!("(subkey {sub} of {primary})")),
        "{status}"
    );
}

/// sqop prints an armored signature; devices get it binary.
#[test]
fn sqop_signs_and_its_armored_output_is_published_binary() {
    let sop = Sqop::new("SOP Release <sop@example.org>");
    let ch = channel_signed(
        "",
        &command_signing(
            &Sqop::command(&sop.key),
            &sop.fingerprint(),
            &sop.keyring,
            "",
        ),
    );
    ch.publish_version("17", 0);
    gpg_says(&ch, &sop.keyring);
    for arch in ARCHES {
        let sig = std::fs::read(ch.store.join(arch).join("SHA256SUMS.gpg")).unwrap();
        assert!(sig[0] & 0x80 != 0, "{arch}: not a binary OpenPGP packet");
    }
}

/// SOP's `sign` has no expiry: with a lifetime configured the tool says
/// so, once, before doing anything.
#[test]
fn a_command_that_cannot_set_expiry_is_refused_when_a_lifetime_is_configured() {
    let sop = Sqop::new("SOP Release <sop@example.org>");
    let ch = channel_signed(
        "signature-lifetime = \"30d\"",
        &command_signing(
            &Sqop::command(&sop.key),
            &sop.fingerprint(),
            &sop.keyring,
            "",
        ),
    );
    let out = ch.publish(&output_args("17"), 2);
    let err = stderr(&out);
    assert_eq!(err.matches("cannot expire").count(), 1, "{err}");
    assert!(err.contains("signature-lifetime"), "{err}");
    assert!(snapshot(&ch.store).is_empty());
}

/// The offline-primary layout with sqop: the key file holds the signing
/// subkey's secret (passphrase-protected) and a stub for the primary
/// (`gpg --export-secret-subkeys`).
#[test]
fn sqop_with_only_the_signing_subkey_of_an_offline_primary() {
    let offline = OfflinePrimary::new();
    let (primary, sub, keyring) = (&offline.primary, &offline.subkey, &offline.keyring);
    let sub_only = offline.gpg.path().join("subkey.asc");
    std::fs::write(&sub_only, offline.subkey_only()).unwrap();
    let ch = channel_signed(
        "",
        &command_signing(
            &toml_array(&[
                "sqop",
                "sign",
                "--with-key-password",
                passphrase_file(offline.gpg.path()).to_str().unwrap(),
                sub_only.to_str().unwrap(),
            ]),
            primary,
            keyring,
            "",
        ),
    );
    ch.publish_version("17", 0);
    let said = gpg_says(&ch, keyring);
    assert!(said.contains(&format!("using EDDSA key {sub}")), "{said}");
}

/// A file holding [`PASSPHRASE`], as SOP takes passwords.
fn passphrase_file(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("passphrase");
    std::fs::write(&path, PASSPHRASE).unwrap();
    path
}

/// A channel with 17 released by a good gpg signer, then switched to
/// `bad` (a command); releasing 18 must fail saying `needle`, and leave
/// every byte of the store as it was.
fn refused_with_store_unchanged(
    bad: impl Fn(&GpgAgent, &str) -> String,
    extra: &str,
    needle: &str,
) {
    let agent = GpgAgent::new();
    let fpr = agent.generate("Agent Release <agent@example.org>", "sign");
    agent.generate("Stranger <stranger@example.org>", "sign");
    agent.preset();
    let keyring = agent.export(&[&fpr], &agent.path().join("release.pgp"));
    let good = command_signing(&agent.command("{fingerprint}"), &fpr, &keyring, "");
    let lifetime = "signature-lifetime = \"30d\"";
    let ch = channel_signed(lifetime, &good);
    ch.publish_version("17", 0);
    let before = snapshot(&ch.store);
    ch.set_signing(
        lifetime,
        &command_signing(&bad(&agent, &fpr), &fpr, &keyring, extra),
    );
    let out = ch.publish(&output_args("18"), 1);
    let err = stderr(&out);
    assert!(err.contains(needle), "expected {needle:?} in:\n{err}");
    assert!(err.contains("nothing was written"), "{err}");
    assert!(snapshot(&ch.store) == before, "the store changed:\n{err}");
    ch.run(&["status"], 0);
}

/// A shell script as the command; `$1` is the agent's home, `$2` the lifetime.
fn script(agent: &GpgAgent, body: &str) -> String {
    toml_array(&[
        "sh",
        "-c",
        body,
        "sh",
        agent.path().to_str().unwrap(),
        "{expires}",
    ])
}

#[test]
fn a_signer_that_exits_non_zero_is_refused_showing_its_stderr() {
    refused_with_store_unchanged(
        |a, _| script(a, "cat >/dev/null; echo 'card not present' >&2; exit 2"),
        "",
        "card not present",
    );
}

#[test]
fn a_signer_that_prints_garbage_is_refused() {
    refused_with_store_unchanged(
        |a, _| script(a, "cat >/dev/null; echo 'Signature: OK'"),
        "",
        "not an OpenPGP signature",
    );
}

#[test]
fn a_signer_that_signs_other_bytes_is_refused() {
    refused_with_store_unchanged(
        |a, _| {
            script(
                a,
                "cat >/dev/null; echo other | gpg --homedir \"$1\" --batch --default-sig-expire \"$2\" --detach-sign",
            )
        },
        "",
        "does not match the data",
    );
}

#[test]
fn a_signer_that_signs_with_a_key_not_in_the_keyring_is_refused() {
    refused_with_store_unchanged(
        |a, _| a.command("Stranger <stranger@example.org>"),
        "",
        "not in the keyring",
    );
}

#[test]
fn a_signer_that_drops_the_expiry_is_refused() {
    refused_with_store_unchanged(
        |a, fpr| {
            script(
                a,
                &format!("exec gpg --homedir \"$1\" --batch --local-user {fpr} --detach-sign"),
            )
        },
        "",
        "signature-lifetime asks for",
    );
}

#[test]
fn a_signer_that_hangs_is_killed_at_the_timeout_and_refused() {
    refused_with_store_unchanged(
        |a, _| script(a, "echo 'please touch the card' >&2; sleep 600"),
        "command-timeout = \"2s\"",
        "did not finish within 2s",
    );
}

/// A signer whose key devices do not have: every write is refused before
/// it starts, and `status` says why.
#[test]
fn a_signer_whose_key_is_not_in_the_keyring_is_refused_and_status_warns() {
    let agent = GpgAgent::new();
    let fpr = agent.generate("Agent Release <agent@example.org>", "sign");
    let other = agent.generate("Stranger <stranger@example.org>", "sign");
    agent.preset();
    let keyring = agent.export(&[&fpr], &agent.path().join("release.pgp"));
    let ch = channel_signed(
        "",
        &command_signing(&agent.command("{fingerprint}"), &fpr, &keyring, ""),
    );
    ch.publish_version("17", 0);
    let before = snapshot(&ch.store);
    ch.set_signing(
        "",
        &command_signing(&agent.command("{fingerprint}"), &other, &keyring, ""),
    );
    let err = stderr(&ch.publish(&output_args("18"), 2));
    assert!(
        err.contains(&format!("the signing key {other}"))
            && err.contains("not in the device keyring"),
        "{err}"
    );
    assert!(snapshot(&ch.store) == before);
    let status = stderr(&ch.run(&["status"], 0));
    assert!(
        status.contains(&format!("the signer's key {other} is not in the keyring")),
        "{status}"
    );
    assert!(
        status.contains(&format!("signed by {fpr}, not by the signer's key {other}")),
        "{status}"
    );
}

/// Key rotation that never leaves a device unable to verify: first a
/// release that ships a keyring with the old and the new key (still
/// signed by the old one, so devices with the old keyring install it),
/// then the signer switches to the new key (here from a key file to gpg
/// through its agent). Devices still on the old keyring would refuse what
/// the new key signs: that is why the keyring ships first.
#[test]
fn rotation_ships_both_keys_then_switches_the_signer() {
    let ch = TestChannel::new("");
    let old = ch.keys.keyring.clone();
    let old_fpr = sysupdate_publish::signing::Keyring::load(&old)
        .unwrap()
        .fingerprints()[0]
        .clone();
    ch.publish_version("17", 0);

    // Step 1: both keys in the keyring, the old key still signs.
    let agent = GpgAgent::new();
    let new_fpr = agent.generate("New Release <new@example.org>", "sign");
    agent.preset();
    let new = agent.export(&[], &agent.path().join("new.pgp"));
    let both = ch.dir.path().join("both.pgp");
    let mut ring = std::fs::read(&old).unwrap();
    ring.extend(std::fs::read(&new).unwrap());
    std::fs::write(&both, ring).unwrap();
    ch.set_signing(
        "",
        &format!("secret-key = {:?}\nkeyring = {both:?}\n", ch.keys.secret),
    );
    ch.publish_version("18", 0);
    assert_channel_verifies(&ch.store, &old);
    assert_channel_verifies(&ch.store, &both);
    let status = stderr(&ch.run(&["status"], 0));
    assert!(status.contains(&format!("(key {old_fpr})")), "{status}");
    assert!(!status.contains("not in the keyring"), "{status}");

    // Step 2, once devices run an image with both keys: switch the signer.
    ch.set_signing(
        "",
        &command_signing(&agent.command("{fingerprint}"), &new_fpr, &both, ""),
    );
    let status = stderr(&ch.run(&["status"], 0));
    assert!(status.contains(&format!("(key {new_fpr})")), "{status}");
    assert!(
        status.contains(&format!(
            "signed by {old_fpr}, not by the signer's key {new_fpr}"
        )),
        "{status}"
    );
    ch.publish(&fake_outputs(ch.dir.path(), "19"), 0);
    let said = gpg_says(&ch, &both);
    assert!(
        said.contains(&format!("using EDDSA key {new_fpr}")),
        "{said}"
    );
    let data = std::fs::read(ch.store.join("x86-64/SHA256SUMS")).unwrap();
    let (rc, _) = gpg_verify(&old, &ch.store.join("x86-64/SHA256SUMS.gpg"), &data);
    assert_ne!(
        rc, 0,
        "a device with only the old key must refuse the new key's signature"
    );
    let status = stderr(&ch.run(&["status"], 0));
    assert!(!status.contains("not by the signer's key"), "{status}");
}

/// A key file holding only the signing subkey of an offline primary (as
/// `gpg --export-secret-subkeys` writes it) signs releases with the
/// subkey; status names the subkey and its primary.
#[test]
fn a_key_file_with_only_the_signing_subkey_of_an_offline_primary() {
    let offline = OfflinePrimary::new_unprotected();
    let (primary, sub, keyring) = (&offline.primary, &offline.subkey, &offline.keyring);
    let secret = offline.gpg.path().join("subkey.asc");
    std::fs::write(&secret, offline.subkey_only()).unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let ch = channel_signed(
        "signature-lifetime = \"7d\"",
        &format!("secret-key = {secret:?}\nkeyring = {keyring:?}\n"),
    );
    ch.publish_version("17", 0);
    let said = gpg_says(&ch, keyring);
    assert!(said.contains(&format!("using EDDSA key {sub}")), "{said}");
    assert!(said.contains("Signature expires"), "{said}");
    let status = stderr(&ch.run(&["status"], 0));
    assert!(
        status.contains(&format!("(subkey {sub} of {primary})")),
        "{status}"
    );
}

/// A channel signed by the SoftHSM key `label`, whose certificate
/// `keygen --pkcs11` wrote; returns it with the key's fingerprint.
fn token_channel(hsm: &SoftHsm, label: &str, extra: &str) -> (TestChannel, String) {
    hsm.keypair(label);
    let keyring = hsm.dir.path().join("release.pgp");
    let fpr = hsm.keygen(label, "Token Release <token@example.org>", &keyring);
    let ch = channel_signed(extra, &hsm.signing(label, &keyring));
    for (k, v) in hsm.env() {
        ch.set_env(&k, &v);
    }
    (ch, fpr)
}

/// The key never leaves the token: `keygen --pkcs11` self-signs its
/// certificate through the token, releases are signed through it, with
/// the configured lifetime, and gpg (systemd's line) accepts both.
#[test]
fn a_pkcs11_token_key_signs_releases_that_gpg_verifies() {
    let hsm = SoftHsm::new("release");
    let (ch, fpr) = token_channel(&hsm, "relkey", "signature-lifetime = \"30d\"");
    let keyring = hsm.dir.path().join("release.pgp");
    // gpg checks the certificate's self-signature on import.
    let gpg = GpgAgent::unprotected();
    gpg.gpg(&["--import", keyring.to_str().unwrap()]);
    assert_eq!(gpg.fingerprints(&[]), vec![fpr.clone()]);
    let listed = String::from_utf8(gpg.gpg(&["--check-signatures", &fpr])).unwrap();
    assert!(listed.contains("sig!3"), "{listed}");

    ch.publish_version("17", 0);
    let said = gpg_says(&ch, &keyring);
    assert!(said.contains(&format!("using EDDSA key {fpr}")), "{said}");
    assert!(said.contains("Signature expires"), "{said}");
    let status = stderr(&ch.run(&["status"], 0));
    assert!(
        status.contains("signer: the PKCS#11 key \"relkey\" on token \"release\""),
        "{status}"
    );
    assert!(status.contains(&format!("(key {fpr})")), "{status}");
}

/// A token key the keyring has no certificate for is refused, naming the
/// command that makes it; a missing or wrong PIN is refused too, and
/// nothing is written.
#[test]
fn a_token_key_without_its_certificate_or_pin_is_refused() {
    let hsm = SoftHsm::new("release");
    let (ch, _) = token_channel(&hsm, "relkey", "");
    ch.publish_version("17", 0);
    let before = snapshot(&ch.store);

    hsm.keypair("newkey");
    let keyring = hsm.dir.path().join("release.pgp");
    ch.set_signing("", &hsm.signing("newkey", &keyring));
    let err = stderr(&ch.publish(&output_args("18"), 1));
    assert!(
        err.contains("has no OpenPGP certificate in the keyring")
            && err.contains(&format!(
                "sysupdate-publish keygen --pkcs11 {SOFTHSM_MODULE} --token release --key newkey"
            )),
        "{err}"
    );
    assert!(snapshot(&ch.store) == before);
    let status = stderr(&ch.run(&["status"], 0));
    assert!(status.contains("keygen --pkcs11"), "{status}");

    ch.set_signing("", &hsm.signing("relkey", &keyring));
    ch.unset_env("SYSUPDATE_PUBLISH_PKCS11_PIN");
    let err = stderr(&ch.publish(&output_args("18"), 1));
    assert!(err.contains("SYSUPDATE_PUBLISH_PKCS11_PIN"), "{err}");
    ch.set_env("SYSUPDATE_PUBLISH_PKCS11_PIN", "0000");
    let err = stderr(&ch.publish(&output_args("18"), 1));
    assert!(err.contains("logging in"), "{err}");
    ch.set_signing("", &hsm.signing("nokey", &keyring));
    ch.set_env("SYSUPDATE_PUBLISH_PKCS11_PIN", HSM_PIN);
    let err = stderr(&ch.publish(&output_args("18"), 1));
    assert!(err.contains("no public key labelled \"nokey\""), "{err}");
    assert!(snapshot(&ch.store) == before);
}

/// The offline-primary layout with a token: the primary (certify only,
/// passphrase-protected, made by gpg) stays offline and binds the token's
/// key as its signing subkey (`keygen --pkcs11 … --primary`), with the
/// back-signature the token makes; releases are signed by the subkey.
#[test]
fn a_token_key_bound_as_the_signing_subkey_of_an_offline_primary() {
    let offline = GpgAgent::new();
    let primary = offline.generate("Offline Primary <ops@example.org>", "cert");
    let secret = offline.path().join("primary.asc");
    std::fs::write(
        &secret,
        offline.gpg(&["--export-secret-keys", "--armor", &primary]),
    )
    .unwrap();

    let hsm = SoftHsm::new("ci");
    hsm.keypair("signing");
    let keyring = hsm.dir.path().join("release.pgp");
    let report = hsm.bind("signing", &secret, &keyring);
    assert_eq!(report["fingerprint"], primary.as_str(), "{report}");
    let sub = report["subkey"].as_str().unwrap().to_string();
    // gpg accepts the binding (and its back-signature) on import.
    let gpg = GpgAgent::unprotected();
    gpg.gpg(&["--import", keyring.to_str().unwrap()]);
    assert_eq!(gpg.fingerprints(&[]), vec![primary.clone(), sub.clone()]);
    let listed = String::from_utf8(gpg.gpg(&["--list-keys", "--with-colons"])).unwrap();
    let sub_line = listed.lines().find(|l| l.starts_with("sub:")).unwrap();
    assert!(sub_line.split(':').nth(11) == Some("s"), "{listed}");

    let ch = channel_signed(
        "signature-lifetime = \"7d\"",
        &hsm.signing("signing", &keyring),
    );
    for (k, v) in hsm.env() {
        ch.set_env(&k, &v);
    }
    ch.publish_version("17", 0);
    let said = gpg_says(&ch, &keyring);
    assert!(said.contains(&format!("using EDDSA key {sub}")), "{said}");
    let status = stderr(&ch.run(&["status"], 0));
    assert!(
        status.contains(&format!("(subkey {sub} of {primary})")),
        "{status}"
    );
}
