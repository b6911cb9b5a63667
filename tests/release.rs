//! `release` and `status` against a directory store, checked with the real gpg.

mod common;

use std::path::{Path, PathBuf};

use std::process::Output;

use common::*;

type Channel = TestChannel;

trait Release {
    fn release(&self, args: &[String], expect: i32) -> Output;
    fn release_version(&self, version: &str, expect: i32) -> Output {
        self.release(&output_args(version), expect)
    }
}

impl Release for TestChannel {
    fn release(&self, args: &[String], expect: i32) -> Output {
        run(self.cmd().arg("release").args(args), expect)
    }
}

fn expected_manifest(files: &[(&Path, &str)]) -> String {
    let mut lines: Vec<String> = files
        .iter()
        .map(|(dir, name)| {
            format!(
                "{} *{name}\n",
                sha256_hex(&std::fs::read(dir.join(name)).unwrap())
            )
        })
        .collect();
    lines.sort_by(|a, b| a[66..].cmp(&b[66..]));
    lines.concat()
}

#[test]
fn publishing_17_then_18_for_three_arches_then_keep_1_prunes_17() {
    let ch = Channel::new("keep = 2");
    ch.release_version("17", 0);
    ch.release_version("18", 0);
    for (system, arch) in SYSTEMS.iter().zip(ARCHES) {
        let o17 = example_output(system, "17");
        let o18 = example_output(system, "18");
        assert_eq!(
            ch.manifest(arch),
            expected_manifest(&[
                (&o17, "appliance_17.efi.xz"),
                (&o17, "store_17.img.xz"),
                (&o18, "appliance_18.efi.xz"),
                (&o18, "store_18.img.xz"),
            ]),
            "{arch}: manifest must be byte-exact"
        );
        for name in ["appliance_18.efi.xz", "store_18.img.xz"] {
            assert_eq!(
                std::fs::read(ch.store.join(arch).join(name)).unwrap(),
                std::fs::read(o18.join(name)).unwrap()
            );
        }
    }
    assert_channel_verifies(&ch.store, &ch.keys.keyring);

    // keep = 1: republishing 18 is a no-op, a config change alone prunes on
    // the next release. Use 19 built from 18's files renamed? No: the example
    // ships 17 and 18 only, so check pruning with a fresh channel.
    let ch1 = Channel::new("keep = 1");
    ch1.release_version("17", 0);
    ch1.release_version("18", 0);
    for arch in ARCHES {
        assert_eq!(
            ch1.names(arch),
            [
                "SHA256SUMS",
                "SHA256SUMS.gpg",
                "appliance_18.efi.xz",
                "store_18.img.xz"
            ]
        );
        assert!(!ch1.manifest(arch).contains("_17"));
    }
    assert_channel_verifies(&ch1.store, &ch1.keys.keyring);
}

#[test]
fn pruning_happens_only_after_the_new_manifests_are_in_place() {
    // Crash right after the last manifest+signature pair, before deletions:
    // 17's payloads are still there, and the manifests already name only 18.
    let ch = Channel::new("keep = 1");
    ch.release_version("17", 0);
    // crash points: 6 payload writes, the history entry, then 3 × (generation
    // built, switched) = 13 → kill at 13
    let out = bin()
        .arg("--config")
        .arg(&ch.config)
        .arg("release")
        .args(output_args("18"))
        .env("SYSUPDATE_PUBLISH_CRASH_AT", "13")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        None,
        "must have been killed: {}",
        stderr(&out)
    );
    let stored_17 = |ch: &Channel| {
        snapshot(&ch.store)
            .keys()
            .filter(|p| p.to_string_lossy().contains("store_17"))
            .count()
    };
    for arch in ARCHES {
        assert!(!ch.manifest(arch).contains("_17"), "{arch}");
        assert!(!ch.names(arch).iter().any(|n| n.contains("_17")), "{arch}");
    }
    assert!(
        stored_17(&ch) >= 3,
        "17's payloads were deleted before every manifest was in place"
    );
    assert_channel_verifies(&ch.store, &ch.keys.keyring);
    ch.release_version("18", 0);
    assert_eq!(stored_17(&ch), 0, "the rerun must finish the pruning");
}

#[test]
fn republishing_the_same_version_and_bytes_is_a_no_op() {
    let ch = Channel::new("");
    ch.release_version("18", 0);
    let before = snapshot(&ch.store);
    let out = ch.release(&[vec!["--json".to_string()], output_args("18")].concat(), 0);
    assert!(
        stderr(&out).contains("already published"),
        "{}",
        stderr(&out)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["already_published"], true);
    assert_eq!(report["upload_bytes"], 0);
    assert_eq!(snapshot(&ch.store), before);
}

/// The stamp cache: a rerun on unchanged outputs reads no payload byte; a
/// file rewritten (even to the same bytes and mtime) is read again, alone;
/// other bytes under the same stamp-looking file are still refused;
/// `--deep` reads everything.
#[test]
fn a_rerun_on_unchanged_outputs_reads_no_payload_bytes() {
    let ch = Channel::new("");
    let args = fake_outputs(ch.dir.path(), "18");
    let release = |extra: &[&str], expect| {
        let mut a: Vec<String> = vec!["release".into()];
        a.extend(extra.iter().map(|s| s.to_string()));
        a.extend(args.iter().cloned());
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        ch.json(&a, expect)
    };
    let first = release(&[], 0);
    assert!(first["read_bytes"].as_u64().unwrap() > 0, "{first}");
    let again = release(&[], 0);
    assert_eq!(again["already_published"], true);
    assert_eq!(again["read_bytes"], 0, "{again}");

    let output = fake_output(ch.dir.path(), "aarch64-linux", "18");
    let store_img = output.join("store_18.img.xz");
    let bytes = std::fs::read(&store_img).unwrap();
    let mtime = std::fs::metadata(&store_img).unwrap().modified().unwrap();
    // Writes `data` and puts the old mtime back: only ctime tells.
    let rewrite = |data: &[u8]| {
        std::fs::write(&store_img, data).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&store_img)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
    };
    std::thread::sleep(std::time::Duration::from_millis(20));
    rewrite(&bytes);
    let rewritten = release(&[], 0);
    assert_eq!(rewritten["already_published"], true);
    assert_eq!(rewritten["read_bytes"], bytes.len() as u64, "{rewritten}");

    // Same size, same mtime, other bytes: ctime gives it away.
    let mut other = bytes.clone();
    let last = other.len() - 1;
    other[last] ^= 1;
    rewrite(&other);
    let before = snapshot(&ch.store);
    let mut cmd = ch.cmd();
    let refused = run(cmd.arg("release").args(&args), 1);
    assert!(
        stderr(&refused).contains("already published with different content"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(snapshot(&ch.store), before);
    std::fs::write(&store_img, &bytes).unwrap();

    let deep = release(&["--deep"], 0);
    let total: u64 = SYSTEMS
        .iter()
        .flat_map(|s| std::fs::read_dir(fake_output(ch.dir.path(), s, "18")).unwrap())
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(
        deep["read_bytes"].as_u64().unwrap() >= total,
        "{deep} < {total}"
    );
}

/// Raw outputs we compress: a rerun on unchanged files publishes the
/// compressed copy the first run left in the stamp cache, reading nothing;
/// a rewritten file is compressed again (to the same bytes), and a copy
/// changed in the cache is never trusted.
#[test]
fn a_rerun_on_unchanged_raw_outputs_compresses_nothing() {
    let ch = Channel::new("");
    let out = ch.dir.path().join("raw-18");
    std::fs::create_dir_all(&out).unwrap();
    for (name, size) in [("appliance_18.efi", 3000), ("store_18.img", 90_000)] {
        let bytes: Vec<u8> = format!("x86-64 {name} IMAGE_VERSION=18\n")
            .bytes()
            .cycle()
            .take(size)
            .collect();
        std::fs::write(out.join(name), bytes).unwrap();
    }
    let release = |expect| {
        ch.json(
            &["release", "--output", &format!("x86-64={}", out.display())],
            expect,
        )
    };
    let first = release(0);
    assert_eq!(first["read_bytes"], 93_000, "{first}");
    let manifest = ch.manifest("x86-64");
    let again = release(0);
    assert_eq!(again["already_published"], true, "{again}");
    assert_eq!(again["read_bytes"], 0, "{again}");

    // Same bytes written again: compressed again, to the same payload.
    let store_img = out.join("store_18.img");
    std::fs::write(&store_img, std::fs::read(&store_img).unwrap()).unwrap();
    let rewritten = release(0);
    assert_eq!(rewritten["already_published"], true, "{rewritten}");
    assert_eq!(rewritten["read_bytes"], 90_000, "{rewritten}");
    assert_eq!(ch.manifest("x86-64"), manifest);

    // A copy changed in the cache (same size) is compressed anew, not published.
    let copies = ch.cache.path().join("compressed");
    for e in std::fs::read_dir(&copies).unwrap() {
        let path = e.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
    }
    let tampered = release(0);
    assert_eq!(tampered["already_published"], true, "{tampered}");
    assert_eq!(tampered["read_bytes"], 93_000, "{tampered}");
    assert_eq!(ch.manifest("x86-64"), manifest);
    assert_channel_verifies(&ch.store, &ch.keys.keyring);
}

#[test]
fn dry_run_prints_the_plan_and_touches_nothing() {
    let ch = Channel::new("keep = 1");
    ch.release_version("17", 0);
    let before = snapshot(&ch.store);
    let out = ch.release(
        &[
            vec!["--dry-run".to_string(), "--json".to_string()],
            output_args("18"),
        ]
        .concat(),
        0,
    );
    assert_eq!(snapshot(&ch.store), before);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["dry_run"], true);
    assert_eq!(r["version"], "18");
    let x86 = &r["arches"][0];
    assert_eq!(x86["arch"], "x86-64");
    assert_eq!(x86["added"][0], "18");
    assert_eq!(x86["dropped"][0], "17");
    assert_eq!(x86["uploads"].as_array().unwrap().len(), 2);
    assert!(r["upload_bytes"].as_u64().unwrap() > 0);
    assert!(stderr(&out).contains("drop 17"), "{}", stderr(&out));
}

/// Payloads new to the hosting are hashed by their upload (read once); a
/// dry run, which uploads nothing, hashes them at staging. Both report the
/// same hashes, and the manifest lists them.
#[test]
fn new_payloads_are_hashed_while_uploading_and_reported_with_their_hashes() {
    let ch = Channel::new("");
    let file_hashes = |r: &serde_json::Value| -> Vec<(String, String)> {
        r["arches"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|a| a["uploads"].as_array().unwrap().clone())
            .map(|u| {
                let name = u["name"].as_str().unwrap().to_string();
                (name, u["sha256"].as_str().expect("sha256 reported").into())
            })
            .collect()
    };
    let release = |extra: &[&str]| {
        let mut args: Vec<String> = ["-v", "--json"]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect();
        args.extend(output_args("18"));
        let out = ch.release(&args, 0);
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (r, stderr(&out))
    };
    // --deep: the dry run must not teach the stamp cache these hashes.
    let (dry, dry_log) = release(&["--dry-run", "--deep"]);
    assert!(!dry_log.contains("hashed while uploading"), "{dry_log}");
    let (real, log) = release(&[]);
    assert_eq!(
        log.matches("hashed while uploading").count(),
        6,
        "every payload of every arch is new: {log}"
    );
    assert_eq!(file_hashes(&dry), file_hashes(&real));
    assert_eq!(file_hashes(&real).len(), 6);
    for (system, arch) in SYSTEMS.iter().zip(ARCHES) {
        let out = example_output(system, "18");
        for name in ["appliance_18.efi.xz", "store_18.img.xz"] {
            let hex = sha256_hex(&std::fs::read(out.join(name)).unwrap());
            assert!(file_hashes(&real).contains(&(name.to_string(), hex.clone())));
            assert!(ch.manifest(arch).contains(&format!("{hex} *{name}\n")));
        }
    }
    // Already there: hashed at staging to compare, nothing uploaded.
    let (again, log) = release(&[]);
    assert!(!log.contains("hashed while uploading"), "{log}");
    assert_eq!(again["upload_bytes"], 0);
}

/// Copies an example output into a scratch dir so a test can alter it.
fn scratch_output(system: &str, version: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    for e in std::fs::read_dir(example_output(system, version)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), out.join(e.file_name())).unwrap();
    }
    (dir, out)
}

/// `args` may name some arches only (`--partial`): each case is about one bad output.
fn assert_refused(ch: &Channel, args: &[String], needle: &str) -> String {
    let before = snapshot(&ch.store);
    let out = ch.release(&[&["--partial".to_string()], args].concat(), 1);
    let err = stderr(&out);
    assert!(err.contains(needle), "expected {needle:?} in:\n{err}");
    assert_eq!(
        snapshot(&ch.store),
        before,
        "a refused release changed the store"
    );
    err
}

#[test]
fn refusals_name_the_problem_and_leave_the_store_byte_for_byte_unchanged() {
    let ch = Channel::new("");
    ch.release_version("18", 0);

    // incomplete: the store image is missing
    let (_d, out) = scratch_output("x86_64-linux", "18");
    std::fs::remove_file(out.join("store_18.img.xz")).unwrap();
    let mut args = output_args("18");
    args[1] = format!("x86_64-linux={}", out.display());
    std::fs::rename(
        out.join("appliance_18.efi.xz"),
        out.join("appliance_19.efi.xz"),
    )
    .unwrap();
    assert_refused(&ch, &args, "incomplete");

    // a file no transfer knows
    let (_d, out) = scratch_output("x86_64-linux", "17");
    std::fs::write(out.join("README.txt"), b"hello there").unwrap();
    let args = vec!["--output".to_string(), format!("x86-64={}", out.display())];
    assert_refused(
        &ch,
        &args,
        "README.txt would be compressed to README.txt.xz, which matches no transfer",
    );

    // a changed payload under a published name
    let (_d, out) = scratch_output("x86_64-linux", "18");
    let other =
        std::fs::read(example_output("aarch64-linux", "18").join("store_18.img.xz")).unwrap();
    std::fs::write(out.join("store_18.img.xz"), other).unwrap();
    let args = vec!["--output".to_string(), format!("x86-64={}", out.display())];
    assert_refused(&ch, &args, "already published with different content");

    // not newer than the newest published
    assert_refused(&ch, &output_args("17"), "older than the published 18");

    // an invalid version
    let (_d, out) = scratch_output("x86_64-linux", "18");
    for n in ["appliance_18.efi.xz", "store_18.img.xz"] {
        std::fs::rename(out.join(n), out.join(n.replace("18", "19~rc1^x"))).unwrap();
    }
    let args = vec!["--output".to_string(), format!("x86-64={}", out.display())];
    assert_refused(&ch, &args, "");

    // --version that contradicts the payloads
    let args = [
        vec!["--version".to_string(), "20".to_string()],
        output_args("18"),
    ]
    .concat();
    assert_refused(&ch, &args, "--version 20 does not match");

    // architectures that disagree on the version
    let mut args = output_args("18");
    args[3] = format!(
        "aarch64-linux={}",
        example_output("aarch64-linux", "17").display()
    );
    assert_refused(&ch, &args, "disagree");
}

#[test]
fn downgrade_is_allowed_only_when_asked() {
    let ch = Channel::new("keep = 3");
    ch.release_version("18", 0);
    ch.release(
        &[vec!["--allow-downgrade".to_string()], output_args("17")].concat(),
        0,
    );
    assert!(ch.manifest("x86-64").contains("appliance_17.efi.xz"));
    assert_channel_verifies(&ch.store, &ch.keys.keyring);
}

#[test]
fn a_manifest_that_does_not_verify_stops_the_release() {
    let ch = Channel::new("");
    ch.release_version("17", 0);
    let sums = ch.store.join("arm64/SHA256SUMS");
    let mut text = std::fs::read_to_string(&sums).unwrap();
    text = text.replacen('a', "b", 1);
    std::fs::write(&sums, text).unwrap();
    let err = assert_refused(&ch, &output_args("18"), "arm64: signature: ");
    assert!(
        err.contains("does not match the data") && err.contains("sysupdate-publish repair"),
        "{err}"
    );

    // a signature by a key that is not in the keyring
    let ch = Channel::new("");
    ch.release_version("17", 0);
    let stranger = keygen();
    run(
        bin()
            .arg("sign")
            .arg("--key")
            .arg(&stranger.secret)
            .arg(ch.store.join("riscv64/SHA256SUMS")),
        0,
    );
    assert_refused(&ch, &output_args("18"), "not in the keyring");
}

#[test]
fn status_lists_versions_signer_expiry_and_problems() {
    let ch = Channel::new("keep = 2\nsignature-lifetime = \"10d\"");
    ch.release_version("17", 0);
    ch.release_version("18", 0);
    let fpr = {
        let r = ch.json(&["status"], 0);
        let x86 = r["arches"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["arch"] == "x86-64")
            .unwrap()
            .clone();
        assert_eq!(x86["versions"][0]["version"], "18");
        assert_eq!(x86["versions"][1]["version"], "17");
        assert_eq!(x86["versions"][0]["complete"], true);
        assert!(x86["expires"].is_string());
        assert!(x86["best_before"].is_string());
        assert_eq!(x86["problems"].as_array().unwrap().len(), 0);
        x86["signer"].as_str().unwrap().to_string()
    };
    assert_eq!(fpr.len(), 40);
    let sums = std::fs::read_to_string(ch.store.join("x86-64/SHA256SUMS")).unwrap();
    assert!(sums.contains("*BEST-BEFORE-"), "{sums}");

    // a payload replaced on the hosting, another one deleted
    std::fs::write(ch.store.join("x86-64/store_18.img.xz"), b"tampered!").unwrap();
    std::fs::remove_file(ch.store.join("arm64/appliance_17.efi.xz")).unwrap();
    let r = ch.json(&["status"], 1);
    let problems = r["arches"].to_string();
    assert!(
        problems.contains(
            "store_18.img.xz (version 18) has 9 bytes on the hosting, the history records"
        ),
        "{problems}"
    );
    assert!(
        problems.contains("appliance_17.efi.xz (version 17) is listed but missing"),
        "{problems}"
    );
}

#[test]
fn raw_payloads_are_compressed_and_hashed_as_served() {
    for (codec, ext, magic) in [
        ("xz", "xz", &[0xfd, b'7', b'z', b'X', b'Z', 0][..]),
        ("gzip", "gz", &[0x1f, 0x8b][..]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let keys = keygen();
        let store = dir.path().join("public");
        let transfers = dir.path().join("sysupdate.d");
        std::fs::create_dir(&transfers).unwrap();
        for (t, pat) in [("50-uki", "appliance_@v.efi"), ("60-store", "store_@v.img")] {
            std::fs::write(
                transfers.join(format!("{t}.transfer")),
                format!("[Source]\nType=url-file\nPath=https://h/%a/\nMatchPattern={pat}.{ext}\n[Target]\nType=regular-file\nPath=/x\nMatchPattern={pat}\n"),
            )
            .unwrap();
        }
        let config = dir.path().join("c.toml");
        std::fs::write(
            &config,
            format!(
                "[channel]\nstore = {store:?}\n[signing]\nsecret-key = {:?}\nkeyring = {:?}\n[transfers]\ndir = {transfers:?}\ncompress = {codec:?}\n",
                keys.secret, keys.keyring
            ),
        )
        .unwrap();
        let out_dir = dir.path().join("out");
        std::fs::create_dir(&out_dir).unwrap();
        let uki: Vec<u8> = (0..300_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        std::fs::write(out_dir.join("appliance_5.efi"), &uki).unwrap();
        std::fs::write(out_dir.join("store_5.img"), vec![7u8; 1 << 20]).unwrap();
        run(
            bin()
                .arg("--config")
                .arg(&config)
                .args(["release", "--output"])
                .arg(format!("x86-64={}", out_dir.display())),
            0,
        );
        let served = std::fs::read(store.join(format!("x86-64/appliance_5.efi.{ext}"))).unwrap();
        assert!(served.starts_with(magic), "{codec}");
        let manifest = std::fs::read_to_string(store.join("x86-64/SHA256SUMS")).unwrap();
        assert!(manifest.contains(&format!("{} *appliance_5.efi.{ext}\n", sha256_hex(&served))));
        let tool = if codec == "xz" { "xz" } else { "gzip" };
        let dec = std::process::Command::new(tool)
            .arg("-dc")
            .arg(store.join(format!("x86-64/appliance_5.efi.{ext}")))
            .output()
            .unwrap();
        assert!(dec.status.success());
        assert_eq!(dec.stdout, uki, "{codec}: decompressed bytes differ");
        assert_channel_verifies(&store, &keys.keyring);
    }
}

#[test]
fn compressed_name_that_matches_no_pattern_is_explained() {
    let ch = Channel::new("");
    let dir = tempfile::tempdir().unwrap();
    // raw files whose .xz names do not fit the example's patterns
    std::fs::write(dir.path().join("appliance_18.efi.raw"), vec![1u8; 4096]).unwrap();
    std::fs::write(
        dir.path().join("store_18.img.xz"),
        std::fs::read(example_output("x86_64-linux", "18").join("store_18.img.xz")).unwrap(),
    )
    .unwrap();
    let args = vec![
        "--output".to_string(),
        format!("x86-64={}", dir.path().display()),
    ];
    assert_refused(
        &ch,
        &args,
        "appliance_18.efi.raw would be compressed to appliance_18.efi.raw.xz",
    );
}

#[test]
fn outputs_with_symlinks_publish_the_target_and_bad_outputs_are_refused() {
    let ch = Channel::new("");
    let dir = tempfile::tempdir().unwrap();
    let src = example_output("x86_64-linux", "17");
    // The output itself may be a link (nix's `result`): its files are within it.
    let result = dir.path().join("result");
    std::os::unix::fs::symlink(&src, &result).unwrap();
    let args = vec![
        "--output".to_string(),
        format!("x86-64={}", result.display()),
    ];
    ch.release(&args, 0);
    let p = ch.store.join("x86-64/store_17.img.xz");
    assert!(!std::fs::symlink_metadata(&p)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        std::fs::read(&p).unwrap(),
        std::fs::read(src.join("store_17.img.xz")).unwrap()
    );

    // A link out of the output (and not into /nix/store) is never followed:
    // here, one named like a payload that points at the release key.
    let sneaky = tempfile::tempdir().unwrap();
    std::fs::copy(
        example_output("aarch64-linux", "17").join("store_17.img.xz"),
        sneaky.path().join("store_17.img.xz"),
    )
    .unwrap();
    std::os::unix::fs::symlink(&ch.keys.secret, sneaky.path().join("appliance_17.efi.xz")).unwrap();
    let args = vec![
        "--output".to_string(),
        format!("arm64={}", sneaky.path().display()),
    ];
    let err = assert_refused(&ch, &args, "outside the build output and /nix/store");
    assert!(
        err.contains("appliance_17.efi.xz") && err.contains("release.asc"),
        "{err}"
    );

    let empty = tempfile::tempdir().unwrap();
    let args = vec![
        "--output".to_string(),
        format!("arm64={}", empty.path().display()),
    ];
    assert_refused(&ch, &args, "is empty");

    let nested = tempfile::tempdir().unwrap();
    std::fs::create_dir(nested.path().join("sub")).unwrap();
    let args = vec![
        "--output".to_string(),
        format!("arm64={}", nested.path().display()),
    ];
    assert_refused(
        &ch,
        &args,
        "sub (a directory) would be packed as sub.tar.xz",
    );

    let dev = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/dev/null", dev.path().join("appliance_19.efi.xz")).unwrap();
    let args = vec![
        "--output".to_string(),
        format!("arm64={}", dev.path().display()),
    ];
    assert_refused(&ch, &args, "not a regular file");

    let bad = tempfile::tempdir().unwrap();
    std::fs::write(bad.path().join("appliance 19.efi.xz"), b"0123456789").unwrap();
    let args = vec![
        "--output".to_string(),
        format!("arm64={}", bad.path().display()),
    ];
    assert_refused(&ch, &args, "appliance 19.efi.xz");
}

#[test]
fn production_config_without_a_secret_key_says_how_to_create_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "[channel]\nstore = \"pub\"\n[signing]\nsecret-key = \"missing.asc\"\nkeyring = \"k.pgp\"\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("sysupdate.d")).unwrap();
    let out = run(
        bin()
            .arg("--config")
            .arg(&config)
            .args(["release", "--output"])
            .arg(format!("x86-64={}", dir.path().display())),
        2,
    );
    assert!(
        stderr(&out).contains("sysupdate-publish keygen"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.path().join("missing.asc").exists());
}
