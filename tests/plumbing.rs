//! keygen, sign, sums, inspect against the real gpg and coreutils.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::signers::GpgAgent;
use common::*;

#[test]
fn signature_from_keygen_key_verifies_with_systemds_gpg_line_and_a_flipped_byte_fails() {
    let keys = keygen();
    let mode = std::fs::metadata(&keys.secret)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let file = keys.dir.path().join("SHA256SUMS");
    std::fs::write(&file, format!("{} *a.xz\n", "ab".repeat(32))).unwrap();
    run(
        bin().arg("sign").arg("--key").arg(&keys.secret).arg(&file),
        0,
    );
    let sig = keys.dir.path().join("SHA256SUMS.gpg");
    let data = std::fs::read(&file).unwrap();
    let (rc, err) = gpg_verify(&keys.keyring, &sig, &data);
    assert_eq!(rc, 0, "{err}");
    assert!(err.contains("Good signature"), "{err}");
    // algo 22 EdDSA, as gpg reports it
    assert!(err.contains("EDDSA"), "{err}");

    let mut flipped = data.clone();
    flipped[10] ^= 1;
    let (rc, err) = gpg_verify(&keys.keyring, &sig, &flipped);
    assert_ne!(rc, 0, "gpg accepted a modified manifest: {err}");
    assert!(err.contains("BAD signature"), "{err}");
}

#[test]
fn signature_with_expiry_is_accepted_now_and_gpg_reports_the_expiry() {
    let keys = keygen();
    let file = keys.dir.path().join("data");
    std::fs::write(&file, b"hello\n").unwrap();
    let sig = keys.dir.path().join("data.sig");
    let out = run(
        bin()
            .args(["--json", "sign", "--expires", "2d", "--output"])
            .arg(&sig)
            .arg("--key")
            .arg(&keys.secret)
            .arg(&file),
        0,
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["expires"].is_string());
    let (rc, err) = gpg_verify(&keys.keyring, &sig, b"hello\n");
    assert_eq!(rc, 0, "{err}");
    assert!(err.contains("Signature expires"), "{err}");
}

/// Exports the secret keys of a gpg home (mode 0600) and its binary public keyring.
fn export(home: &GpgAgent) -> (PathBuf, PathBuf) {
    let secret = home.path().join("exported.asc");
    std::fs::write(&secret, home.gpg(&["--export-secret-keys", "--armor"])).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let keyring = home.export(&[], &home.path().join("ring.pgp"));
    (secret, keyring)
}

/// Signs a list with `sysupdate-publish sign`; returns gpg's verdict
/// (systemd's command line) on it and on a tampered copy, and our output.
fn sign_and_verify(home: &GpgAgent, secret: &Path, keyring: &Path) -> (String, String) {
    let file = home.path().join("SHA256SUMS");
    std::fs::write(&file, b"payload list\n").unwrap();
    let out = run(bin().arg("sign").arg("--key").arg(secret).arg(&file), 0);
    let sig = home.path().join("SHA256SUMS.gpg");
    let (rc, err) = gpg_verify(keyring, &sig, b"payload list\n");
    assert_eq!(rc, 0, "{err}");
    let (rc, _) = gpg_verify(keyring, &sig, b"payload lisT\n");
    assert_ne!(rc, 0);
    (err, common::stdout(&out))
}

#[test]
fn a_key_made_by_gpg_signs_what_gpg_then_verifies() {
    let home = GpgAgent::unprotected();
    home.gpg(&[
        "--quick-gen-key",
        "GPG Made <gpg@example.org>",
        "ed25519",
        "sign",
        "never",
    ]);
    let (secret, keyring) = export(&home);
    sign_and_verify(&home, &secret, &keyring);
}

/// An offline-primary layout: the primary may only certify, a subkey signs.
/// gpg refuses data signed by such a primary ("Wrong key usage"), so the
/// subkey must sign, as gpg itself would choose.
#[test]
fn a_gpg_key_with_a_signing_subkey_signs_with_the_subkey() {
    let home = GpgAgent::unprotected();
    home.gpg(&[
        "--quick-gen-key",
        "Offline Primary <ops@example.org>",
        "ed25519",
        "cert",
        "never",
    ]);
    let primary = home.fingerprints(&[])[0].clone();
    home.gpg(&["--quick-add-key", &primary, "ed25519", "sign", "never"]);
    let fprs = home.fingerprints(&[]);
    assert_eq!(fprs.len(), 2, "{fprs:?}");
    let (secret, keyring) = export(&home);
    let (gpg_says, we_say) = sign_and_verify(&home, &secret, &keyring);
    assert!(
        gpg_says.contains(&format!("using EDDSA key {}", fprs[1])),
        "{gpg_says}"
    );
    assert!(
        we_say.contains(&format!("with subkey {} of {primary}", fprs[1])),
        "{we_say}"
    );
    // The usual deployment: only the subkey's secret leaves the offline
    // machine (the primary's secret is a gnu-dummy stub).
    let sub_only = home.path().join("subkey-only.asc");
    let export = home.gpg(&[
        "--export-secret-subkeys",
        "--armor",
        &format!("{}!", fprs[1]),
    ]);
    std::fs::write(&sub_only, export).unwrap();
    std::fs::set_permissions(&sub_only, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (gpg_says, _) = sign_and_verify(&home, &sub_only, &keyring);
    assert!(
        gpg_says.contains(&format!("using EDDSA key {}", fprs[1])),
        "{gpg_says}"
    );
}

/// A key that may only certify, with no signing subkey, is refused when
/// loaded, naming what gpg would say, before anything is signed.
#[test]
fn a_certify_only_gpg_key_is_refused_before_signing() {
    let home = GpgAgent::unprotected();
    home.gpg(&[
        "--quick-gen-key",
        "Cert Only <cert@example.org>",
        "ed25519",
        "cert",
        "never",
    ]);
    let (secret, _) = export(&home);
    let file = home.path().join("f");
    std::fs::write(&file, b"x").unwrap();
    let out = run(bin().arg("sign").arg("--key").arg(&secret).arg(&file), 1);
    let err = stderr(&out);
    assert!(
        err.contains("Wrong key usage") && err.contains("exported.asc"),
        "{err}"
    );
    assert!(!home.path().join("f.gpg").exists());
}

#[test]
fn secret_key_readable_by_others_is_refused_with_the_fix() {
    let keys = keygen();
    std::fs::set_permissions(&keys.secret, std::fs::Permissions::from_mode(0o640)).unwrap();
    let file = keys.dir.path().join("f");
    std::fs::write(&file, b"x").unwrap();
    let out = run(
        bin().arg("sign").arg("--key").arg(&keys.secret).arg(&file),
        1,
    );
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
    assert!(!keys.dir.path().join("f.gpg").exists());
}

#[test]
fn keygen_never_overwrites_a_key() {
    let keys = keygen();
    let before = std::fs::read(&keys.secret).unwrap();
    let out = run(
        bin()
            .args(["keygen", "--uid", "X <x@e>", "--secret"])
            .arg(&keys.secret)
            .arg("--keyring")
            .arg(keys.dir.path().join("other.pgp")),
        1,
    );
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&keys.secret).unwrap(), before);
}

#[test]
fn sums_is_byte_identical_to_coreutils_sha256sum_binary_mode() {
    let dir = tempfile::tempdir().unwrap();
    let names = [
        "store_18.img.xz",
        "B",
        "a",
        "appliance_18.efi.xz",
        "a.b",
        "Z~1",
        "x+y-z_1.0",
    ];
    for (i, n) in names.iter().enumerate() {
        std::fs::write(dir.path().join(n), vec![i as u8; 1000 * i + 7]).unwrap();
    }
    // Skipped: dotfiles, old manifests and signatures, subdirectories.
    std::fs::write(dir.path().join(".hidden"), b"h").unwrap();
    std::fs::write(dir.path().join("SHA256SUMS.gpg"), b"old").unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    run(bin().arg("sums").arg(dir.path()), 0);
    let mut sorted: Vec<&str> = names.to_vec();
    sorted.sort();
    let expected = Command::new("sha256sum")
        .env("LC_ALL", "C")
        .arg("-b")
        .args(&sorted)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(expected.status.success());
    assert_eq!(
        String::from_utf8(std::fs::read(dir.path().join("SHA256SUMS")).unwrap()).unwrap(),
        String::from_utf8(expected.stdout).unwrap()
    );
}

#[test]
fn sums_best_before_adds_the_empty_file_hash_entry() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.xz"), b"abcdefgh").unwrap();
    run(
        bin()
            .args(["sums", "--best-before", "2031-02-03"])
            .arg(dir.path()),
        0,
    );
    let text = std::fs::read_to_string(dir.path().join("SHA256SUMS")).unwrap();
    assert!(text.contains(
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 *BEST-BEFORE-2031-02-03\n"
    ));
    let out = run(
        bin()
            .args(["sums", "--best-before", "2031-02-30"])
            .arg(dir.path()),
        2,
    );
    assert!(stderr(&out).contains("--best-before"), "{}", stderr(&out));
}

#[test]
fn sums_refuses_names_devices_cannot_fetch_and_an_empty_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(bin().arg("sums").arg(dir.path()), 1);
    assert!(stderr(&out).contains("empty"), "{}", stderr(&out));
    std::fs::write(dir.path().join("has space.xz"), b"abcdefgh").unwrap();
    let out = run(bin().arg("sums").arg(dir.path()), 1);
    assert!(stderr(&out).contains("has space.xz"), "{}", stderr(&out));
    assert!(!dir.path().join("SHA256SUMS").exists());
}

#[test]
fn inspect_reports_versions_missing_files_and_unmatched_names() {
    let dir = tempfile::tempdir().unwrap();
    for n in [
        "appliance_17.efi.xz",
        "store_17.img.xz",
        "appliance_18.efi.xz",
        "notes.txt",
    ] {
        std::fs::write(dir.path().join(n), b"0123456789").unwrap();
    }
    let transfers = repo().join("examples/minimal/sysupdate.d");
    let out = run(
        bin()
            .args(["--json", "inspect", "--transfers"])
            .arg(&transfers)
            .arg(dir.path()),
        1,
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["versions"][0]["version"], "18");
    assert_eq!(r["versions"][0]["complete"], false);
    assert_eq!(r["versions"][1]["version"], "17");
    assert_eq!(r["versions"][1]["complete"], true);
    assert_eq!(r["unmatched"][0], "notes.txt");
    let missing = r["versions"][0]["missing"].to_string();
    assert!(missing.contains("store"), "{missing}");

    std::fs::remove_file(dir.path().join("notes.txt")).unwrap();
    std::fs::write(dir.path().join("store_18.img.xz"), b"0123456789").unwrap();
    run(
        bin()
            .arg("inspect")
            .arg("--transfers")
            .arg(&transfers)
            .arg(dir.path()),
        0,
    );
}
