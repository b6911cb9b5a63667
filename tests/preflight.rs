//! Preflight through `release` and `inspect`, with real UKIs (systemd-boot's
//! EFI stub + objcopy), real GPT images (sfdisk) and real erofs/squashfs
//! images: every bad case is refused with a message naming arch, file, what
//! was found and what was expected, and leaves the store byte for byte as it
//! was; a clean release goes out.

mod common;

use std::path::{Path, PathBuf};

use common::images;
use common::*;

const UKI_TRANSFER: &str = "[Source]\nType=url-file\nPath=https://updates.example.com/stable/%a/\nMatchPattern=appliance_@v.efi.xz\n\
[Target]\nType=regular-file\nPath=/EFI/Linux\nPathRelativeTo=boot\nMatchPattern=appliance_@v.efi\nInstancesMax=2\n";
const STORE_TRANSFER: &str = "[Source]\nType=url-file\nPath=https://updates.example.com/stable/%a/\nMatchPattern=store_@v.img.xz\n\
[Target]\nType=partition\nPath=/dev/vda\nMatchPartitionType=linux-generic\nMatchPattern=store_@v\n";
const DISK_TRANSFER: &str = "[Source]\nType=url-file\nPath=https://updates.example.com/stable/%a/\nMatchPattern=disk_@v.raw.xz\n\
[Target]\nType=regular-file\nPath=/var/lib/machines\nMatchPattern=disk_@v.raw\n";

/// A channel whose transfers put a UKI on the ESP, a store image into a
/// partition slot and a disk image into a directory.
struct Channel {
    dir: tempfile::TempDir,
    _keys: Keys,
    store: PathBuf,
    config: PathBuf,
}

impl Channel {
    fn new(checks: &str) -> Channel {
        let dir = tempfile::tempdir().unwrap();
        let transfers = dir.path().join("sysupdate.d");
        std::fs::create_dir(&transfers).unwrap();
        for (name, text) in [
            ("50-uki", UKI_TRANSFER),
            ("60-store", STORE_TRANSFER),
            ("70-disk", DISK_TRANSFER),
        ] {
            std::fs::write(transfers.join(format!("{name}.transfer")), text).unwrap();
        }
        let keys = keygen();
        let store = dir.path().join("public");
        let config = write_config_with(
            dir.path(),
            &store,
            &keys,
            "",
            &transfers,
            &format!("[checks]\n{checks}"),
        );
        Channel {
            dir,
            _keys: keys,
            store,
            config,
        }
    }

    fn release(&self, outputs: &[(&str, &Path)], extra: &[&str], expect: i32) -> String {
        let mut cmd = bin();
        cmd.arg("--config").arg(&self.config).arg("release");
        for (arch, dir) in outputs {
            cmd.arg("--output").arg(format!("{arch}={}", dir.display()));
        }
        stderr(&run(cmd.args(extra), expect))
    }

    /// Releases and expects a refusal containing every `needle`, with the
    /// store unchanged.
    fn refused(&self, outputs: &[(&str, &Path)], extra: &[&str], needles: &[&str]) -> String {
        let before = snapshot(&self.store);
        let err = self.release(outputs, extra, 1);
        for n in needles {
            assert!(err.contains(n), "missing {n:?} in:\n{err}");
        }
        assert!(err.contains("nothing was uploaded"), "{err}");
        assert_eq!(snapshot(&self.store), before, "a refusal changed the store");
        err
    }
}

/// What one arch's build output holds.
#[derive(Clone)]
struct Build {
    /// The arch the UKI is built for.
    uki_arch: &'static str,
    osrel: Option<String>,
    kernel: usize,
    /// The store image: erofs, squashfs, or a GPT disk (wrong in a slot).
    store: &'static str,
    /// Partition types of the disk image.
    disk: Vec<&'static str>,
    /// Ship the UKI and the disk xz-compressed by the build (passed through).
    precompressed: bool,
}

impl Build {
    fn good(arch: &'static str, version: &str) -> Build {
        Build {
            uki_arch: arch,
            osrel: Some(images::osrel("appliance", version)),
            kernel: 200 << 10,
            store: "erofs",
            disk: vec!["esp", root(arch)],
            precompressed: false,
        }
    }

    fn make(&self, dir: &Path, name: &str, version: &str) -> PathBuf {
        let out = dir.join(name);
        std::fs::create_dir_all(&out).unwrap();
        let uki = out.join(format!("appliance_{version}.efi"));
        images::uki(&uki, self.uki_arch, self.osrel.as_deref(), self.kernel);
        let store = out.join(format!("store_{version}.img"));
        match self.store {
            "erofs" => images::erofs(&store, 32),
            "squashfs" => images::squashfs(&store, 32),
            "gpt" => images::gpt(&store, &["root-x86-64"]),
            other => panic!("{other}"),
        }
        let disk = out.join(format!("disk_{version}.raw"));
        images::gpt(&disk, &self.disk);
        if self.precompressed {
            images::xz(&uki);
            images::xz(&disk);
        }
        out
    }
}

fn root(arch: &str) -> &'static str {
    match arch {
        "x86-64" => "root-x86-64",
        "arm64" => "root-arm64",
        other => panic!("{other}"),
    }
}

#[test]
fn a_clean_release_of_real_ukis_and_images_goes_out_for_two_arches() {
    let ch = Channel::new("image-id = \"appliance\"\nesp-size = \"64M\"\n[checks.partition-size]\n60-store = \"16M\"\n");
    let x86 = Build::good("x86-64", "18").make(ch.dir.path(), "x86", "18");
    let arm = Build {
        precompressed: true,
        store: "squashfs",
        ..Build::good("arm64", "18")
    }
    .make(ch.dir.path(), "arm", "18");
    let err = ch.release(&[("x86-64", &x86), ("arm64", &arm)], &["-v"], 0);
    // What preflight read of the passed-through (already compressed) payloads.
    assert!(
        err.contains("arm64: appliance_18.efi.xz: preflight read"),
        "{err}"
    );
    assert!(
        err.contains("ARM64 UKI, IMAGE_ID=appliance, IMAGE_VERSION=18"),
        "{err}"
    );
    assert_channel_verifies(&ch.store, &ch._keys.keyring);
    let ledger = std::fs::read_to_string(ch.store.join("ledger.jsonl")).unwrap();
    assert!(!ledger.contains("skipped_checks"), "{ledger}");
}

#[test]
fn swapped_outputs_are_refused_naming_arch_file_and_machine() {
    let ch = Channel::new("");
    let x86 = Build::good("x86-64", "18").make(ch.dir.path(), "x86", "18");
    // The arm64 output holds an x86-64 build (a cross build that fell back
    // to the build machine), already compressed by the build.
    let arm = Build {
        precompressed: true,
        ..Build::good("x86-64", "18")
    }
    .make(ch.dir.path(), "arm", "18");
    let err = ch.refused(
        &[("x86-64", &x86), ("arm64", &arm)],
        &[],
        &[
            "arm64: appliance_18.efi.xz is an AMD64 (x86-64) UKI; expected ARM64 UKI for arm64",
            "[uki-arch]",
            "arm64: disk_18.raw.xz is a GPT disk image whose partition 2 is root-x86-64; expected root-arm64",
            "[gpt-arch]",
        ],
    );
    assert!(!err.contains("  - x86-64: "), "x86-64 is fine: {err}");
}

#[test]
fn an_osrel_that_disagrees_with_the_name_or_the_image_id_is_refused() {
    let ch = Channel::new("image-id = \"appliance\"\n");
    let out = Build {
        osrel: Some(images::osrel("appliance", "17")),
        ..Build::good("x86-64", "18")
    }
    .make(ch.dir.path(), "v", "18");
    ch.refused(
        &[("x86-64", &out)],
        &[],
        &[
            "x86-64: appliance_18.efi.xz says IMAGE_VERSION=17 in .osrel; expected IMAGE_VERSION=18",
            "update loop",
        ],
    );
    let out = Build {
        osrel: Some(images::osrel("other", "18")),
        ..Build::good("x86-64", "18")
    }
    .make(ch.dir.path(), "id", "18");
    ch.refused(
        &[("x86-64", &out)],
        &[],
        &["x86-64: appliance_18.efi.xz says IMAGE_ID=other in .osrel; expected IMAGE_ID=appliance"],
    );
    // Without .osrel there is nothing to compare: it goes out.
    let out = Build {
        osrel: None,
        ..Build::good("x86-64", "18")
    }
    .make(ch.dir.path(), "none", "18");
    ch.release(&[("x86-64", &out)], &[], 0);
}

#[test]
fn a_uki_too_large_for_the_esp_times_instances_is_refused_and_a_skip_is_recorded() {
    // 3 MiB kernel × InstancesMax 2 does not fit 5 MiB less 1 MiB.
    let ch = Channel::new("esp-size = \"5M\"\nesp-reserved = \"1M\"\n");
    let out = Build {
        kernel: 3 << 20,
        ..Build::good("x86-64", "18")
    }
    .make(ch.dir.path(), "big", "18");
    ch.refused(
        &[("x86-64", &out)],
        &[],
        &[
            "x86-64: appliance_18.efi.xz need ",
            "× InstancesMax 2",
            "at most 4.0 MiB",
            "[esp-size]",
        ],
    );
    // The escape hatch needs a reason, and names must be known.
    let e = ch.release(&[("x86-64", &out)], &["--skip-check", "esp-size"], 2);
    assert!(e.contains("--reason"), "{e}");
    let e = ch.release(
        &[("x86-64", &out)],
        &["--skip-check", "esp", "--reason", "x"],
        2,
    );
    assert!(e.contains("esp-size"), "{e}");
    let e = ch.release(
        &[("x86-64", &out)],
        &[
            "--skip-check",
            "esp-size",
            "--reason",
            "devices have a 1 GiB ESP since batch 7",
        ],
        0,
    );
    assert!(e.contains("preflight check esp-size skipped"), "{e}");
    let ledger = std::fs::read_to_string(ch.store.join("ledger.jsonl")).unwrap();
    assert!(
        ledger.contains(r#""skipped_checks":[{"check":"esp-size","reason":"devices have a 1 GiB ESP since batch 7"}]"#),
        "{ledger}"
    );
    assert_channel_verifies(&ch.store, &ch._keys.keyring);
    let status = run(bin().arg("--config").arg(&ch.config).arg("status"), 0);
    let out = String::from_utf8_lossy(&status.stdout).into_owned() + &stderr(&status);
    assert!(
        out.contains(
            "published without preflight check esp-size (devices have a 1 GiB ESP since batch 7)"
        ),
        "{out}"
    );
}

#[test]
fn a_store_image_larger_than_its_slot_or_not_a_file_system_is_refused() {
    let ch = Channel::new("[checks.partition-size]\n60-store = \"64K\"\n");
    let out = Build::good("x86-64", "18").make(ch.dir.path(), "big", "18");
    ch.refused(
        &[("x86-64", &out)],
        &[],
        &[
            "x86-64: store_18.img.xz decompresses to",
            "at most 65536 bytes ([checks.partition-size] \"60-store\")",
            "[partition-size]",
        ],
    );
    let ch = Channel::new("");
    let out = Build {
        store: "gpt",
        ..Build::good("x86-64", "18")
    }
    .make(ch.dir.path(), "gpt", "18");
    ch.refused(
        &[("x86-64", &out)],
        &[],
        &[
            "x86-64: store_18.img.xz is a whole GPT disk image",
            "[image-format]",
        ],
    );
    // Compressed twice: the device would write xz data into the slot.
    let out = Build::good("x86-64", "18").make(ch.dir.path(), "twice", "18");
    images::xz(&out.join("store_18.img"));
    std::fs::rename(out.join("store_18.img.xz"), out.join("once")).unwrap();
    images::xz(&out.join("once"));
    std::fs::rename(out.join("once.xz"), out.join("store_18.img.xz")).unwrap();
    ch.refused(
        &[("x86-64", &out)],
        &[],
        &["store_18.img.xz is still xz-compressed after the device decompresses it"],
    );
    // An unknown partition-size transfer is named.
    let ch = Channel::new("[checks.partition-size]\n60-stor = \"1G\"\n");
    let out = Build::good("x86-64", "18").make(ch.dir.path(), "ok", "18");
    let e = ch.release(&[("x86-64", &out)], &[], 1);
    assert!(e.contains("\"60-stor\"") && e.contains("60-store"), "{e}");
}

#[test]
fn inspect_reports_the_same_checks_for_a_payload_directory() {
    let ch = Channel::new("");
    let out = Build {
        precompressed: true,
        ..Build::good("x86-64", "18")
    }
    .make(ch.dir.path(), "arm", "18");
    images::xz(&out.join("store_18.img"));
    let transfers = ch.dir.path().join("sysupdate.d");
    let inspect = |arch: &str, expect: i32| {
        run(
            bin()
                .args(["--json", "inspect", "--arch", arch, "--transfers"])
                .arg(&transfers)
                .arg(&out),
            expect,
        )
    };
    let o = inspect("x86-64", 0);
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["checks"]["findings"], serde_json::json!([]), "{json}");
    assert!(
        json["contents"]["appliance_18.efi.xz"]
            .as_str()
            .unwrap()
            .contains("AMD64 (x86-64) UKI"),
        "{json}"
    );
    let o = inspect("arm64", 1);
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let checks: Vec<&str> = json["checks"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["check"].as_str().unwrap())
        .collect();
    assert_eq!(checks, ["uki-arch", "gpt-arch"], "{json}");
}

/// A version canary got with a check skipped is checked again on its way to
/// stable: `promote` runs preflight on the payloads it copies, from what
/// this machine kept of them (no byte read) or from the start of canary's
/// copy (cut off once the headers are seen), and records its own skips.
#[test]
fn promote_checks_again_what_the_source_skipped() {
    let ch = Channel::new("esp-size = \"5M\"\nesp-reserved = \"1M\"\n");
    let canary = ch.dir.path().join("canary");
    let text = std::fs::read_to_string(&ch.config).unwrap();
    let text = text.replacen(
        "[channel]\n",
        &format!("[channels.canary]\nstore = {canary:?}\n[channels.stable]\n"),
        1,
    );
    std::fs::write(&ch.config, text).unwrap();
    let out = Build {
        kernel: 3 << 20,
        ..Build::good("x86-64", "18")
    }
    .make(ch.dir.path(), "big", "18");
    let skip = ["--skip-check", "esp-size", "--reason", "lab devices only"];
    let mut release = vec!["--channel", "canary", "release", "--output"];
    let output = format!("x86-64={}", out.display());
    release.push(&output);
    release.extend(skip);
    run(bin().arg("--config").arg(&ch.config).args(&release), 0);

    let promote = |extra: &[&str], cache: Option<&Path>, expect: i32| {
        let mut cmd = bin();
        if let Some(cache) = cache {
            cmd.env("SYSUPDATE_PUBLISH_CACHE_DIR", cache);
        }
        cmd.arg("--config").arg(&ch.config).args([
            "--json", "promote", "18", "--from", "canary", "--to", "stable",
        ]);
        run(cmd.args(extra), expect)
    };
    let err = stderr(&promote(&[], None, 1));
    for needle in ["x86-64: appliance_18.efi.xz need ", "[esp-size]"] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    assert!(!ch.store.exists(), "a refused promote wrote to stable");

    // Another machine (an empty cache) reads the payloads from canary (only
    // their starts when large: see `inspect`'s own tests).
    let fresh = tempfile::tempdir().unwrap();
    let dry = promote(&[&["--dry-run"][..], &skip].concat(), Some(fresh.path()), 0);
    let report: serde_json::Value = serde_json::from_slice(&dry.stdout).unwrap();
    let read = report["read_bytes"].as_u64().unwrap();
    let stored: u64 = std::fs::read_dir(canary.join(".payloads/x86-64"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(read > 0 && read <= stored, "read {read} of {stored} bytes");
    assert!(!ch.store.exists(), "a dry run wrote to stable");

    // The machine that released it knows the payloads: nothing is read.
    let done = promote(&skip, None, 0);
    let report: serde_json::Value = serde_json::from_slice(&done.stdout).unwrap();
    assert_eq!(report["read_bytes"], 0, "{report}");
    assert!(stderr(&done).contains("preflight check esp-size skipped: lab devices only"));
    let ledger = std::fs::read_to_string(ch.store.join("ledger.jsonl")).unwrap();
    assert!(
        ledger.contains(r#""skipped_checks":[{"check":"esp-size","reason":"lab devices only"}]"#),
        "{ledger}"
    );
    assert_channel_verifies(&ch.store, &ch._keys.keyring);
}
