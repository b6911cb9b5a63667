//! `verify` against a real nginx over HTTPS (the e2e harness's nginx, test CA).

mod common;
#[path = "e2e/harness.rs"]
mod harness;

use common::{keygen, run};
use harness::{Channel, ARCH};

fn verify(ch: &Channel, extra: &[&str], expect: i32) -> serde_json::Value {
    let out = run(
        common::bin()
            .arg("--config")
            .arg(&ch.config)
            .args(["--json", "verify", "--ca"])
            .arg(&ch.ca)
            .args(extra),
        expect,
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn problems(r: &serde_json::Value) -> String {
    r["arches"][0]["problems"].to_string()
}

#[test]
fn a_good_channel_verifies_shallow_and_deep() {
    let ch = Channel::new("keep = 2");
    ch.release("17");
    ch.release("18");
    let r = verify(&ch, &["--deep"], 0);
    assert_eq!(r["arches"][0]["arch"], ARCH);
    assert_eq!(r["arches"][0]["newest"], "18");
    assert_eq!(r["arches"][0]["payloads_checked"], 4);
}

#[test]
fn verify_catches_a_missing_payload_and_a_wrong_hash() {
    let ch = Channel::new("");
    ch.release("18");
    ch.tamper("store_18.img.xz", b"replaced on the server");
    let shallow = verify(&ch, &[], 1);
    assert!(problems(&shallow).contains("Content-Length"), "{shallow}");
    let deep = verify(&ch, &["--deep"], 1);
    assert!(problems(&deep).contains("devices refuse it"), "{deep}");

    std::fs::remove_file(ch.arch_dir().join("appliance_18.efi.xz")).unwrap();
    let r = verify(&ch, &[], 1);
    assert!(
        problems(&r).contains("appliance_18.efi.xz: HTTP 404"),
        "{r}"
    );
}

#[test]
fn verify_catches_a_foreign_signature_and_an_expired_one() {
    let ch = Channel::new("");
    ch.release("18");
    let stranger = keygen();
    ch.sign_served_manifest(&stranger.secret);
    let r = verify(&ch, &[], 1);
    let p = problems(&r);
    assert!(p.contains("not in the keyring") && p.contains("gpg"), "{r}");

    let ch = Channel::new("signature-lifetime = \"1d\"");
    let past = humantime::format_rfc3339_seconds(
        std::time::SystemTime::now() - std::time::Duration::from_secs(3 * 86400),
    )
    .to_string();
    ch.release_env("18", &[("SYSUPDATE_PUBLISH_SIGNING_TIME", &past)]);
    let r = verify(&ch, &[], 1);
    assert!(problems(&r).contains("expired"), "{r}");
}

#[test]
fn verify_catches_an_incomplete_version() {
    let ch = Channel::new("");
    ch.release("18");
    // Add a version with only its UKI behind the tool's back, signed with the
    // channel's own key: the signature is fine, the version is not.
    let uki = harness::xz(&harness::uki("19"));
    std::fs::write(ch.arch_dir().join("appliance_19.efi.xz"), &uki).unwrap();
    let sums = ch.arch_dir().join("SHA256SUMS");
    let mut text = std::fs::read_to_string(&sums).unwrap();
    text.push_str(&format!(
        "{} *appliance_19.efi.xz\n",
        common::sha256_hex(&uki)
    ));
    std::fs::write(&sums, text).unwrap();
    ch.sign_served_manifest(&ch.keys.secret);
    let r = verify(&ch, &[], 1);
    assert!(problems(&r).contains("version 19 is incomplete"), "{r}");
}

#[test]
fn verify_catches_a_host_that_does_not_answer_404() {
    let ch = Channel::new("");
    ch.release("18");
    // nginx answers 403 for a directory without an index: the same answer an
    // S3 bucket without ListBucket gives for an absent key.
    std::fs::create_dir(ch.arch_dir().join("SHA256SUMS.sha256.asc")).unwrap();
    let r = verify(&ch, &[], 1);
    assert!(
        problems(&r).contains("SHA256SUMS.sha256.asc: HTTP 403 instead of 404"),
        "{r}"
    );
}

#[test]
fn verify_reports_on_stdout() {
    let ch = Channel::new("");
    ch.release("18");
    let out = run(
        common::bin()
            .arg("--config")
            .arg(&ch.config)
            .args(["verify", "--ca"])
            .arg(&ch.ca),
        0,
    );
    let report = common::stdout(&out);
    assert!(
        report.contains(&format!("{ARCH}: OK, newest 18")),
        "{report}"
    );
    assert!(!common::stderr(&out).contains("OK, newest"));
}

/// `verify` names the configured signer's key and who signed each arch,
/// and warns when the keyring devices install lacks the signer's key; in
/// a rotation (keyring with both keys) the warning goes away.
#[test]
fn verify_names_the_signing_key_and_warns_when_the_keyring_lacks_it() {
    let ch = Channel::new("");
    ch.release("18");
    let old = sysupdate_publish::signing::Keyring::load(&ch.keys.keyring)
        .unwrap()
        .fingerprints()[0]
        .clone();
    let r = verify(&ch, &[], 0);
    assert_eq!(r["signing"]["fingerprint"], old.as_str(), "{r}");
    assert_eq!(r["signing"]["warning"], serde_json::Value::Null, "{r}");
    assert_eq!(r["arches"][0]["signer"], old.as_str(), "{r}");

    let new = keygen();
    let new_fpr = sysupdate_publish::signing::Keyring::load(&new.keyring)
        .unwrap()
        .fingerprints()[0]
        .clone();
    let config = std::fs::read_to_string(&ch.config).unwrap();
    let switched = config.replace(
        &format!("secret-key = {:?}", ch.keys.secret),
        &format!("secret-key = {:?}", new.secret),
    );
    assert_ne!(config, switched);
    std::fs::write(&ch.config, &switched).unwrap();
    let r = verify(&ch, &[], 0);
    assert_eq!(r["signing"]["fingerprint"], new_fpr.as_str(), "{r}");
    assert_eq!(r["signing"]["in_keyring"], false, "{r}");
    let warning = r["signing"]["warning"].as_str().unwrap_or_default();
    assert!(warning.contains("not in the keyring"), "{r}");

    let both = ch.work.join("both.pgp");
    let mut ring = std::fs::read(&ch.keys.keyring).unwrap();
    ring.extend(std::fs::read(&new.keyring).unwrap());
    std::fs::write(&both, ring).unwrap();
    std::fs::write(
        &ch.config,
        switched.replace(
            &format!("keyring = {:?}", ch.keys.keyring),
            &format!("keyring = {both:?}"),
        ),
    )
    .unwrap();
    let r = verify(&ch, &[], 0);
    assert_eq!(r["signing"]["in_keyring"], true, "{r}");
    assert_eq!(r["signing"]["warning"], serde_json::Value::Null, "{r}");
    assert_eq!(r["arches"][0]["signer"], old.as_str(), "{r}");
}
