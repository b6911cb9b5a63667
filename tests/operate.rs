//! yank, unyank, rollback, refresh and the ledger, on a directory store.

mod common;

use std::process::Output;

use common::*;

type Channel = TestChannel;

trait Publish {
    /// Publishes a generated version for every example arch.
    fn release(&self, version: &str, extra: &[&str], expect: i32) -> Output;
    fn published(&self, arch: &str) -> String;
}

impl Publish for TestChannel {
    fn release(&self, version: &str, extra: &[&str], expect: i32) -> Output {
        let outputs = fake_outputs(self.dir.path(), version);
        run(self.cmd().arg("release").args(extra).args(outputs), expect)
    }

    fn published(&self, arch: &str) -> String {
        self.manifest(arch)
    }
}

#[test]
fn yank_withdraws_keeps_payloads_and_is_undone_by_unyank_without_upload() {
    let ch = Channel::new("keep = 3");
    ch.release("17", &[], 0);
    ch.release("18", &[], 0);
    let before = snapshot(&ch.store);
    let r = ch.json(&["yank", "18", "--reason", "x", "--dry-run"], 0);
    assert_eq!(r["dry_run"], true);
    assert_eq!(r["arches"][0]["removed"][0], "18");
    assert_eq!(snapshot(&ch.store), before);
    let r = ch.json(&["yank", "18", "--reason", "boot loop on rev B boards"], 0);
    assert_eq!(r["action"], "yank");
    for arch in ARCHES {
        assert!(!ch.published(arch).contains("_18"), "{arch}");
        assert!(ch.published(arch).contains("_17"), "{arch}");
    }
    assert_channel_verifies(&ch.store, &ch.keys.keyring);
    assert!(
        ch.stored("store_18") >= 3,
        "yanked payloads must stay on the hosting"
    );

    // A release of the same outputs needs --unyank, then uploads nothing.
    let err = stderr(&ch.release("18", &[], 1));
    assert!(
        err.contains("withdrawn") && err.contains("boot loop") && err.contains("--unyank"),
        "{err}"
    );

    ch.run(&["unyank", "18"], 0);
    for arch in ARCHES {
        assert!(ch.published(arch).contains("store_18.img.xz"), "{arch}");
    }
    assert_channel_verifies(&ch.store, &ch.keys.keyring);

    // The history is in status, newest last.
    let s = ch.json(&["status"], 0);
    let history = s["history"].to_string();
    assert!(
        history.contains("\"yank\"")
            && history.contains("\"unyank\"")
            && history.contains("boot loop"),
        "{history}"
    );
}

#[test]
fn release_unyank_republishes_a_yanked_version_with_zero_payload_bytes() {
    let ch = Channel::new("keep = 3");
    ch.release("17", &[], 0);
    ch.release("18", &[], 0);
    ch.run(&["yank", "18", "--reason", "oops"], 0);
    let out = ch.release("18", &["--unyank", "--json"], 0);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["upload_bytes"], 0, "{r}");
    assert!(ch.published("arm64").contains("appliance_18.efi.xz"));
}

#[test]
fn yank_refuses_the_only_version_and_unknown_versions_and_needs_a_reason() {
    let ch = Channel::new("");
    ch.release("17", &[], 0);
    let before = snapshot(&ch.store);
    let err = stderr(&ch.run(&["yank", "17", "--reason", "x"], 1));
    assert!(err.contains("only published version"), "{err}");
    let err = stderr(&ch.run(&["yank", "99", "--reason", "x"], 1));
    assert!(err.contains("not published"), "{err}");
    ch.run(&["yank", "17"], 2);
    assert_eq!(snapshot(&ch.store), before);
}

#[test]
fn yank_of_one_arch_leaves_the_others() {
    let ch = Channel::new("");
    ch.release("17", &[], 0);
    ch.release("18", &[], 0);
    ch.run(
        &["yank", "18", "--arch", "riscv64", "--reason", "riscv only"],
        0,
    );
    assert!(!ch.published("riscv64").contains("_18"));
    assert!(ch.published("x86-64").contains("_18"));
}

#[test]
fn rollback_withdraws_every_newer_version_in_one_commit_and_explains_devices() {
    let ch = Channel::new("keep = 3");
    for v in ["17", "18", "19"] {
        ch.release(v, &[], 0);
    }
    let out = ch.run(&["rollback", "17", "--reason", "18 and 19 brick"], 0);
    assert!(
        common::stdout(&out).contains("never downgrades"),
        "{}",
        common::stdout(&out)
    );
    for arch in ARCHES {
        let m = ch.published(arch);
        assert!(
            m.contains("_17") && !m.contains("_18") && !m.contains("_19"),
            "{arch}: {m}"
        );
    }
    assert_channel_verifies(&ch.store, &ch.keys.keyring);
    // 19 is withdrawn: a release of it needs --unyank; unyank brings it back.
    assert!(stderr(&ch.release("19", &[], 1)).contains("--unyank"));
    ch.run(&["unyank", "19"], 0);
    assert!(ch.published("x86-64").contains("_19"));
}

#[test]
fn rollback_to_a_version_no_longer_stored_says_how_to_republish() {
    let ch = Channel::new("keep = 1");
    ch.release("17", &[], 0);
    ch.release("18", &[], 0);
    let before = snapshot(&ch.store);
    let err = stderr(&ch.run(&["rollback", "17"], 1));
    assert!(
        err.contains("no longer stored")
            && err.contains("release --unyank --allow-downgrade --output x86-64=PATH"),
        "{err}"
    );
    assert_eq!(snapshot(&ch.store), before);
}

#[test]
fn refresh_re_signs_expired_manifests_and_is_a_cron_friendly_no_op_otherwise() {
    let ch = Channel::new("signature-lifetime = \"1d\"");
    let past = humantime::format_rfc3339_seconds(
        std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86400),
    )
    .to_string();
    run(
        ch.cmd()
            .arg("release")
            .args(fake_outputs(ch.dir.path(), "17"))
            .env("SYSUPDATE_PUBLISH_SIGNING_TIME", &past),
        0,
    );
    let s = ch.json(&["status"], 1);
    assert!(s["arches"].to_string().contains("expired"), "{s}");
    let (rc, err) = gpg_verify(
        &ch.keys.keyring,
        &ch.store.join("x86-64/SHA256SUMS.gpg"),
        ch.published("x86-64").as_bytes(),
    );
    assert_ne!(rc, 0, "gpg accepted an expired signature: {err}");

    let payloads_before: Vec<_> = snapshot(&ch.store)
        .into_iter()
        .filter(|(p, _)| p.to_string_lossy().contains(".payloads"))
        .collect();
    ch.run(&["refresh", "--if-expiring-within", "2h"], 0);
    ch.json(&["status"], 0);
    assert_channel_verifies(&ch.store, &ch.keys.keyring);
    let payloads_after: Vec<_> = snapshot(&ch.store)
        .into_iter()
        .filter(|(p, _)| p.to_string_lossy().contains(".payloads"))
        .collect();
    assert_eq!(
        payloads_before, payloads_after,
        "refresh must not touch payloads"
    );
    let today = humantime::format_rfc3339_seconds(
        std::time::SystemTime::now() + std::time::Duration::from_secs(86400),
    )
    .to_string();
    assert!(
        ch.published("arm64")
            .contains(&format!("BEST-BEFORE-{}", &today[..10])),
        "{}",
        ch.published("arm64")
    );

    let before = snapshot(&ch.store);
    let out = ch.run(&["refresh", "--if-expiring-within", "2h"], 0);
    assert!(
        common::stdout(&out).contains("nothing to do"),
        "{}",
        common::stdout(&out)
    );
    assert_eq!(snapshot(&ch.store), before);
}

#[test]
fn a_tampered_ledger_stops_every_write_and_shows_in_status() {
    let ch = Channel::new("");
    ch.release("17", &[], 0);
    ch.release("18", &[], 0);
    let ledger = ch.store.join("ledger.jsonl");
    let text = std::fs::read_to_string(&ledger).unwrap();
    let first = text.lines().next().unwrap().to_string();
    std::fs::write(&ledger, format!("{first}\n")).unwrap(); // history rewritten: 18 gone
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(&ledger, format!("{}\n{}\n", lines[1], lines[0])).unwrap(); // reordered
    let before = snapshot(&ch.store);
    for args in [
        vec!["yank", "18", "--reason", "x"],
        vec!["refresh"],
        vec!["rollback", "17"],
    ] {
        let err = stderr(&ch.run(&args, 1));
        assert!(err.contains("ledger"), "{args:?}: {err}");
    }
    let err = stderr(&ch.release("19", &[], 1));
    assert!(err.contains("ledger"), "{err}");
    assert_eq!(snapshot(&ch.store), before);
    let s = ch.json(&["status"], 1);
    assert!(s["problems"].to_string().contains("ledger"), "{s}");
}

#[test]
fn tampered_manifest_or_signature_stops_operator_commands() {
    let ch = Channel::new("");
    ch.release("17", &[], 0);
    ch.release("18", &[], 0);
    let sums = ch.store.join("arm64/SHA256SUMS");
    std::fs::write(
        &sums,
        ch.published("arm64")
            .replace("appliance_17", "appliance_16"),
    )
    .unwrap();
    let before = snapshot(&ch.store);
    for args in [
        vec!["yank", "18", "--reason", "x"],
        vec!["refresh"],
        vec!["unyank", "18"],
    ] {
        let err = stderr(&ch.run(&args, 1));
        assert!(
            err.contains("arm64: signature")
                && err.contains("does not match the data")
                && err.contains("sysupdate-publish repair"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(snapshot(&ch.store), before);
}
