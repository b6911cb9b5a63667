//! End to end: the real systemd-sysupdate 257 (Debian trixie chroot) fetches
//! over HTTPS from nginx what `sysupdate-publish release` wrote, verifies it
//! with the keyring from `keygen`, and installs it (issue 4); and the same
//! from `sysupdate-publish serve` instead of nginx, on 257 and 262 (issue 16).
//!
//! Runs as root (as CI does); see tests/e2e/README.md. Every test has its own
//! channel (a directory store below the shared nginx's document root, or
//! served by its own `serve`) and its
//! own device (an overlay of the cached chroot), so the tests run in parallel.

mod common;
#[path = "e2e/harness.rs"]
mod harness;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use common::{gpg_verify, keygen, snapshot, stderr};
use harness::{
    list_of, listing, store_image, uki, uki_saying, unxz, xz, Channel, Device, Scheme, Suite, ARCH,
};

/// The hosting answers a real 404 for the signature names systemd 258 and
/// later try before SHA256SUMS.gpg (anything else makes them give up), and
/// serves the manifest and signature without Content-Encoding.
#[test]
fn hosting_answers_404_for_the_signature_names_newer_clients_try_first() {
    let ch = Channel::new("");
    ch.release("18");
    let name = ch.store.file_name().unwrap().to_string_lossy().into_owned();
    for missing in [
        "SHA256SUMS.sha256.asc",
        "SHA256SUMS.sha256.gpg",
        "SHA256SUMS.asc",
    ] {
        let (status, headers) = ch.nginx().get(&format!("{name}/{ARCH}/{missing}"));
        assert_eq!(status, 404, "GET {ARCH}/{missing}:\n{headers}");
    }
    for present in ["SHA256SUMS", "SHA256SUMS.gpg", "appliance_18.efi.xz"] {
        let (status, headers) = ch.nginx().get(&format!("{name}/{ARCH}/{present}"));
        assert_eq!(status, 200, "GET {ARCH}/{present}:\n{headers}");
        assert!(
            !headers.to_ascii_lowercase().contains("content-encoding"),
            "GET {ARCH}/{present} sent Content-Encoding:\n{headers}"
        );
    }
}

/// Scenario 1: a device at 16 sees 17 and 18, installs 18, and the installed
/// files are the decompressed payloads, byte for byte.
#[test]
fn device_at_16_sees_17_and_18_and_installs_18() {
    let ch = Channel::new("");
    ch.release("17");
    ch.release("18");
    let dev = Device::up(&ch, "16");

    let v = dev.sysupdate(&["--version"]);
    v.status(0, "--version");
    assert!(v.stdout.starts_with("systemd 257 "), "not systemd 257\n{v}");

    let l = dev.sysupdate(&["list"]);
    l.status(0, "list")
        .says(
            &format!("{}/{ARCH}/SHA256SUMS", ch.url),
            "list fetches %a = x86-64",
        )
        .says(
            "Signature verification succeeded.",
            "list verifies the signature",
        );
    for (version, state) in [("18", "candidate"), ("17", "available"), ("16", "current")] {
        assert!(
            l.stdout.lines().any(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                f.contains(&version) && f.last() == Some(&state)
            }),
            "list: {version} is not {state}\n{l}"
        );
    }
    assert_eq!(dev.list(), list_of(Some("16"), &["18", "17", "16"]));
    assert_eq!(dev.check_new().as_deref(), Some("18"));
    let c = dev.sysupdate(&["check-new"]);
    c.status(0, "plain check-new");
    assert_eq!(c.stdout.trim(), "18", "{c}");

    dev.sysupdate(&["update"])
        .status(0, "update")
        .says("Successfully installed update '18'.", "update");
    dev.assert_installed(&["16", "18"]);
    // Also against what the server serves, decompressed by the xz CLI: the UKI
    // was compressed by the tool, the store image passed through.
    let installed = dev.installed();
    assert!(installed["uki/appliance_18.efi"] == unxz(&ch.served("appliance_18.efi.xz")));
    assert!(installed["store/store_18.img"] == unxz(&ch.served("store_18.img.xz")));

    assert_eq!(dev.check_new(), None);
    dev.sysupdate(&["check-new"])
        .status(1, "plain check-new exits 1 when there is nothing new");
    dev.sysupdate(&["update"])
        .status(0, "update with nothing new")
        .says("No update needed.", "update with nothing new");
    assert_eq!(dev.list(), list_of(Some("18"), &["18", "17", "16"]));
}

/// Issue 12: a release whose UKI's `.osrel` says another version than its
/// name is refused before any upload, so devices never see it; the clean
/// release of real UKIs before and after installs.
#[test]
fn preflight_keeps_a_uki_with_the_wrong_osrel_from_devices() {
    let ch = Channel::new("");
    ch.release("17");
    let dev = Device::up(&ch, "16");
    let before = snapshot(&ch.store);
    let out = ch.output("18", true);
    std::fs::write(out.join("appliance_18.efi"), uki_saying("18", "17")).unwrap();
    let r = ch.release_raw(&out, &[]);
    assert_eq!(r.status.code(), Some(1), "{}", stderr(&r));
    assert!(
        stderr(&r).contains("x86-64: appliance_18.efi.xz says IMAGE_VERSION=17 in .osrel; expected IMAGE_VERSION=18"),
        "{}",
        stderr(&r)
    );
    assert_eq!(
        snapshot(&ch.store),
        before,
        "a refused release changed the hosting"
    );
    assert_eq!(dev.list(), list_of(Some("16"), &["17", "16"]));
    dev.sysupdate(&["update"])
        .status(0, "update")
        .says("Successfully installed update '17'.", "update");
    let installed = dev.installed();
    let efi = &installed["uki/appliance_17.efi"];
    assert_eq!(efi, &uki("17"), "the installed UKI is the real one");
    assert_eq!(&efi[..2], b"MZ");
}

/// Scenario 2: with `keep = 2`, a release of 19 leaves the device exactly 18
/// and 19 to choose from.
#[test]
fn keep_2_and_a_release_of_19_offer_exactly_18_and_19() {
    let ch = Channel::new("keep = 2");
    ch.release("17");
    ch.release("18");
    let dev = Device::up(&ch, "16");
    assert_eq!(dev.list(), list_of(Some("16"), &["18", "17", "16"]));

    ch.release("19");
    assert_eq!(
        ch.served_names(),
        [
            "SHA256SUMS",
            "SHA256SUMS.gpg",
            "appliance_18.efi.xz",
            "appliance_19.efi.xz",
            "store_18.img.xz",
            "store_19.img.xz"
        ]
    );
    // "all" is installed ∪ available: 16 is the installed one.
    assert_eq!(dev.list(), list_of(Some("16"), &["19", "18", "16"]));
    dev.sysupdate(&["list", "17"])
        .status(1, "17 was pruned: list 17")
        .says("Update '17' not found.", "list 17");
    dev.sysupdate(&["update", "17"])
        .status(1, "17 was pruned: update 17")
        .says("Update '17' not found.", "update 17");
    dev.assert_installed(&["16"]);
    assert_eq!(dev.check_new().as_deref(), Some("19"));
    dev.sysupdate(&["update", "18"])
        .status(0, "update 18")
        .says("Successfully installed update '18'.", "update 18");
    dev.sysupdate(&["update"])
        .status(0, "update")
        .says("Successfully installed update '19'.", "update");
    dev.assert_installed(&["16", "18", "19"]);
}

/// Scenario 3: a version whose store image is missing. The tool refuses to
/// publish it; hosting tampered with directly (a properly signed manifest
/// naming only the UKI of 20) still does not make devices offer it.
#[test]
fn a_version_missing_its_store_image_is_refused_and_never_offered() {
    let ch = Channel::new("");
    ch.release("17");
    ch.release("18");
    let before = snapshot(&ch.store);

    let out = ch.release_raw(&ch.output("20", false), &[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the tool must refuse an incomplete version:\n{}",
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains("version 20 is incomplete") && err.contains("60-store"),
        "the refusal must name the version and the transfer without a file:\n{err}"
    );
    assert!(
        snapshot(&ch.store) == before,
        "a refused release changed the store"
    );

    // Tamper: add appliance_20.efi.xz and its manifest line, re-signed with
    // the channel's own key, so the signature is good and only the store
    // image is missing.
    let payload = xz(&uki("20"));
    ch.tamper("appliance_20.efi.xz", &payload);
    let manifest = String::from_utf8(ch.served("SHA256SUMS")).unwrap();
    let mut lines: Vec<String> = manifest.lines().map(str::to_string).collect();
    lines.push(format!(
        "{} *appliance_20.efi.xz",
        common::sha256_hex(&payload)
    ));
    lines.sort_by(|a, b| a[66..].cmp(&b[66..]));
    ch.tamper("SHA256SUMS", format!("{}\n", lines.join("\n")).as_bytes());
    ch.sign_served_manifest(&ch.keys.secret);
    let (rc, err) = gpg_verify(
        &ch.keys.keyring,
        &ch.arch_dir().join("SHA256SUMS.gpg"),
        &ch.served("SHA256SUMS"),
    );
    assert_eq!(rc, 0, "the re-signed manifest must verify: {err}");

    let dev = Device::up(&ch, "16");
    dev.sysupdate(&["list"])
        .status(0, "list with an incomplete 20")
        .says("Signature verification succeeded.", "list");
    assert_eq!(dev.list(), list_of(Some("16"), &["18", "17", "16"]));
    assert_eq!(dev.check_new().as_deref(), Some("18"));
    dev.sysupdate(&["update", "20"])
        .status(1, "update 20 must be refused")
        .says(
            "Update '20' not found.",
            "an incomplete version is no update set at all",
        );
    dev.assert_installed(&["16"]);
    dev.sysupdate(&["update"]).status(0, "update").says(
        "Successfully installed update '18'.",
        "update installs 18, not 20",
    );
    dev.assert_installed(&["16", "18"]);
}

/// Scenario 4: a manifest changed after signing, a signature by a key not in
/// the keyring, a payload replaced on the server: each refused, nothing
/// installed; with the hosting restored the same device updates.
#[test]
fn device_refuses_a_changed_manifest_a_foreign_signature_and_a_replaced_payload() {
    let ch = Channel::new("");
    ch.release("17");
    ch.release("18");
    let dev = Device::up(&ch, "16");
    let pristine = dev.installed();
    let unchanged = |what: &str| {
        assert!(
            dev.installed() == pristine,
            "{what}: the device's targets changed: {:?}",
            dev.installed_names()
        );
    };
    let manifest = ch.served("SHA256SUMS");
    let signature = ch.served("SHA256SUMS.gpg");

    // 1. The manifest changed after signing: someone adds a version 19.
    let (u19, s19) = (xz(&uki("19")), xz(&store_image("19")));
    ch.tamper("appliance_19.efi.xz", &u19);
    ch.tamper("store_19.img.xz", &s19);
    let mut changed = manifest.clone();
    changed.extend_from_slice(
        format!(
            "{} *appliance_19.efi.xz\n{} *store_19.img.xz\n",
            common::sha256_hex(&u19),
            common::sha256_hex(&s19)
        )
        .as_bytes(),
    );
    ch.tamper("SHA256SUMS", &changed);
    for verb in ["list", "check-new", "update"] {
        dev.sysupdate(&[verb])
            .status(1, "a manifest changed after signing")
            .says("BAD signature", verb)
            .says("Signature verification failed", verb);
    }
    dev.sysupdate(&["--json=short", "check-new"])
        .status(1, "--json check-new with a changed manifest");
    unchanged("changed manifest");
    ch.tamper("SHA256SUMS", &manifest);

    // 2. A well-formed manifest signed by a key the device does not know.
    let other = keygen();
    ch.sign_served_manifest(&other.secret);
    for verb in ["list", "update"] {
        dev.sysupdate(&[verb])
            .status(1, "a signature from a key not in the keyring")
            .says("No public key", verb)
            .says("Signature verification failed", verb);
    }
    unchanged("foreign signature");
    ch.tamper("SHA256SUMS.gpg", &signature);

    // 3. A payload replaced on the server (the manifest and signature are the
    //    genuine ones). The UKI downloads fine first; the store image fails.
    let genuine = ch.served("store_18.img.xz");
    ch.tamper("store_18.img.xz", &xz(b"EVIL store image for version 18\n"));
    dev.sysupdate(&["list"])
        .status(0, "list does not download payloads");
    dev.sysupdate(&["update"])
        .status(1, "a replaced payload")
        .says("store_18.img.xz", "replaced payload")
        .says("did not check out", "replaced payload");
    unchanged("replaced payload");
    ch.tamper("store_18.img.xz", &genuine);

    // Control: the same device accepts the restored hosting.
    dev.sysupdate(&["update"])
        .status(0, "update with the hosting restored")
        .says("Successfully installed update '18'.", "restored");
    dev.assert_installed(&["16", "18"]);
}

/// Scenario 5: `signature-lifetime = "1d"`, signed with the clock two days in
/// the past (the test-only SYSUPDATE_PUBLISH_SIGNING_TIME): the device refuses
/// the expired manifest; a new release re-signs and it is accepted again.
#[test]
fn an_expired_signature_is_refused_until_a_new_release_re_signs() {
    let ch = Channel::new("signature-lifetime = \"1d\"");
    let two_days_ago = SystemTime::now() - Duration::from_secs(2 * 86400);
    let t = humantime::format_rfc3339_seconds(two_days_ago).to_string();
    ch.release_env("17", &[("SYSUPDATE_PUBLISH_SIGNING_TIME", &t)]);
    let (rc, err) = gpg_verify(
        &ch.keys.keyring,
        &ch.arch_dir().join("SHA256SUMS.gpg"),
        &ch.served("SHA256SUMS"),
    );
    assert_ne!(rc, 0, "gpg must refuse the expired signature: {err}");
    assert!(err.contains("expired"), "{err}");

    let dev = Device::up(&ch, "16");
    for verb in ["list", "update"] {
        dev.sysupdate(&[verb])
            .status(1, "an expired signature")
            .says("Expired signature", verb)
            .says("Signature verification failed", verb);
    }
    dev.sysupdate(&["--json=short", "check-new"])
        .status(1, "check-new with an expired signature");
    dev.assert_installed(&["16"]);

    let out = ch.release("18");
    assert!(
        stderr(&out).contains("expired"),
        "the tool should say it re-signs an expired manifest:\n{}",
        stderr(&out)
    );
    let manifest = String::from_utf8(ch.served("SHA256SUMS")).unwrap();
    assert!(
        manifest.contains(" *BEST-BEFORE-"),
        "a lifetime adds a BEST-BEFORE entry (257 ignores it):\n{manifest}"
    );
    assert_eq!(dev.list(), list_of(Some("16"), &["18", "17", "16"]));
    dev.sysupdate(&["update"])
        .status(0, "update after the re-signing release")
        .says("Successfully installed update '18'.", "update");
    dev.assert_installed(&["16", "18"]);
}

/// Scenario 6: versions that sort differently as strings and as versions are
/// installed in systemd's order: 1.10 over 1.9, 10 over 2. The tool agrees
/// (it refuses a downgrade by systemd's order).
#[test]
fn versions_are_installed_in_systemd_order_not_string_order() {
    let ch = Channel::new("keep = 5");
    ch.release("1.9");
    ch.release("1.10");
    let dev = Device::up(&ch, "1");
    assert_eq!(dev.list(), list_of(Some("1"), &["1.10", "1.9", "1"]));
    assert_eq!(dev.check_new().as_deref(), Some("1.10"));
    dev.sysupdate(&["update"])
        .status(0, "update")
        .says("Successfully installed update '1.10'.", "1.10 over 1.9");
    dev.assert_installed(&["1", "1.10"]);

    ch.release("2");
    ch.release("10");
    assert_eq!(
        dev.list(),
        list_of(Some("1.10"), &["10", "2", "1.10", "1.9", "1"])
    );
    assert_eq!(dev.check_new().as_deref(), Some("10"));
    dev.sysupdate(&["update"])
        .status(0, "update")
        .says("Successfully installed update '10'.", "10 over 2");
    dev.assert_installed(&["1", "1.10", "10"]);
    assert_eq!(dev.check_new(), None, "2 is not newer than 10");

    // Publisher side: 9 sorts after 10 as a string but is older; refused.
    let before = snapshot(&ch.store);
    let out = ch.release_raw(&ch.output("9", true), &[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "release 9 after 10:\n{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("older"), "{}", stderr(&out));
    assert!(snapshot(&ch.store) == before);
}

/// Scenario 7: releases while a device polls (`list`, then `update`) in a
/// loop. The only error a device may see is the transient signature mismatch
/// of fetching SHA256SUMS and SHA256SUMS.gpg on either side of a switch, and
/// it never lists an unreleased version nor installs an incomplete one.
#[test]
fn publishing_while_a_device_polls_gives_no_error_but_a_transient_signature_mismatch() {
    const RELEASES: [&str; 5] = ["18", "19", "20", "21", "22"];
    let ch = Channel::new("keep = 2");
    ch.release("17");
    let dev = Device::up(&ch, "16");
    // Outputs built up front, so each release is just the tool's work.
    let outputs: Vec<_> = RELEASES.iter().map(|v| ch.output(v, true)).collect();

    let released = AtomicUsize::new(0); // releases begun
    let cycles_begun = AtomicUsize::new(0);
    let cycles_done = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let mismatches = AtomicUsize::new(0);
    // (from, to, what) in seconds since t0, for the report
    let events = Mutex::new(Vec::<(f64, f64, String)>::new());
    let t0 = Instant::now();
    let secs = || t0.elapsed().as_secs_f64();

    // One device call: Ok(result) or a transient signature mismatch (None).
    let poll = |args: &[&str]| -> Option<harness::Sys> {
        let from = secs();
        let r = dev.sysupdate(args);
        events
            .lock()
            .unwrap()
            .push((from, secs(), format!("{} -> {:?}", r.args, r.code)));
        if r.code == Some(0) {
            return Some(r);
        }
        assert_eq!(r.code, Some(1), "unexpected exit status\n{r}");
        assert!(
            r.stderr.contains("BAD signature")
                && r.stderr.contains("Signature verification failed"),
            "a device error other than a transient signature mismatch\n{r}"
        );
        mismatches.fetch_add(1, Ordering::Relaxed);
        None
    };

    std::thread::scope(|s| {
        let poller = s.spawn(|| {
            while !stop.load(Ordering::Acquire) {
                cycles_begun.fetch_add(1, Ordering::AcqRel);
                let before = released.load(Ordering::Acquire);
                if let Some(l) = poll(&["--json=short", "list"]) {
                    let after = released.load(Ordering::Acquire);
                    let known: BTreeSet<&str> = ["16", "17"]
                        .into_iter()
                        .chain(RELEASES[..after].iter().copied())
                        .collect();
                    for v in listing(&l).all {
                        assert!(
                            known.contains(v.as_str()),
                            "the device lists {v}, which was never released \
                             (releases begun: {before} before, {after} after the call)\n{l}"
                        );
                    }
                }
                if poll(&["update"]).is_some() {
                    // Whatever is installed is complete and byte-exact.
                    let versions = installed_versions(&dev);
                    let refs: Vec<&str> = versions.iter().map(String::as_str).collect();
                    dev.assert_installed(&refs);
                }
                cycles_done.fetch_add(1, Ordering::AcqRel);
            }
        });
        let wait_until = |cond: &dyn Fn() -> bool| {
            while !cond() && !poller.is_finished() {
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        for (i, out) in outputs.iter().enumerate() {
            // Start each release while a fresh poll cycle runs (one that began
            // after the previous release ended), at a different offset each
            // time. So every release overlaps device calls, and no device call
            // overlaps two releases (with keep = 2 a version being downloaded
            // is then never pruned under it).
            let done = cycles_done.load(Ordering::Acquire);
            wait_until(&|| cycles_done.load(Ordering::Acquire) > done);
            wait_until(&|| {
                cycles_begun.load(Ordering::Acquire) > cycles_done.load(Ordering::Acquire)
            });
            std::thread::sleep(Duration::from_millis(70 * i as u64));
            released.store(i + 1, Ordering::Release);
            let from = secs();
            let r = ch.release_raw(out, &[]);
            events
                .lock()
                .unwrap()
                .push((from, secs(), format!("RELEASE {}", RELEASES[i])));
            assert_eq!(
                r.status.code(),
                Some(0),
                "release {}:\n{}",
                RELEASES[i],
                stderr(&r)
            );
        }
        let done = cycles_done.load(Ordering::Acquire);
        wait_until(&|| cycles_done.load(Ordering::Acquire) > done + 1);
        stop.store(true, Ordering::Release);
        if let Err(e) = poller.join() {
            std::panic::resume_unwind(e);
        }
    });

    let mut events = events.into_inner().unwrap();
    events.sort_by(|a, b| a.0.total_cmp(&b.0));
    let releases: Vec<_> = events
        .iter()
        .filter(|e| e.2.starts_with("RELEASE"))
        .collect();
    let overlapping = events
        .iter()
        .filter(|e| !e.2.starts_with("RELEASE"))
        .filter(|c| releases.iter().any(|r| c.0 < r.1 && r.0 < c.1))
        .count();
    eprintln!(
        "scenario 7: {} poll cycles, {overlapping} device calls overlapping a release, \
         {} transient signature mismatch(es)\n{}",
        cycles_done.load(Ordering::Relaxed),
        mismatches.load(Ordering::Relaxed),
        events
            .iter()
            .map(|(a, b, w)| format!("  {a:6.2}..{b:6.2}s {w}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        overlapping >= RELEASES.len(),
        "device calls must overlap the releases ({overlapping} did)"
    );
    // At the end: the newest is installed; keep = 2 leaves 22 and 21.
    assert_eq!(dev.check_new(), None);
    let l = dev.list();
    assert_eq!(l.current.as_deref(), Some("22"));
    assert!(
        l.all.starts_with(&["22".to_string(), "21".to_string()]),
        "{l:?}"
    );
    assert_eq!(
        ch.served_names(),
        [
            "SHA256SUMS",
            "SHA256SUMS.gpg",
            "appliance_21.efi.xz",
            "appliance_22.efi.xz",
            "store_21.img.xz",
            "store_22.img.xz"
        ]
    );
}

/// The versions with a file in either target directory.
fn installed_versions(dev: &Device) -> Vec<String> {
    let mut versions: Vec<String> = dev
        .installed_names()
        .iter()
        .filter_map(|n| {
            n.strip_prefix("uki/appliance_")
                .and_then(|n| n.strip_suffix(".efi"))
                .or_else(|| {
                    n.strip_prefix("store/store_")
                        .and_then(|n| n.strip_suffix(".img"))
                })
        })
        .map(str::to_string)
        .collect();
    versions.sort();
    versions.dedup();
    versions
}

/// Issue 16: `sysupdate-publish serve` hosts a channel as devices need it.
/// Over HTTPS with a certificate from a CA the device trusts, the real
/// systemd-sysupdate 257 (trixie) and 262 (sid) list 18 and 17, install 18
/// byte for byte, and our `verify --deep` against the served URL finds no
/// problem and no warning (headers included).
#[test]
fn serve_over_https_is_enough_for_systemd_257_and_262_to_install() {
    let ch = Channel::behind_serve(Scheme::Https, "");
    assert!(ch.url.starts_with("https://127.0.0.1:"), "{}", ch.url);
    ch.release("17");
    ch.release("18");
    let out = common::run(
        common::bin()
            .arg("--config")
            .arg(&ch.config)
            .args(["--json", "verify", "--deep", "--ca"])
            .arg(&ch.ca),
        0,
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let arch = &report["arches"][0];
    assert_eq!(arch["newest"], "18", "{report}");
    assert_eq!(arch["problems"], serde_json::json!([]), "{report}");
    assert_eq!(arch["warnings"], serde_json::json!([]), "{report}");

    for (suite, systemd) in [
        (Suite::Trixie, "systemd 257 "),
        (Suite::Sid, "systemd 262 "),
    ] {
        let dev = Device::up_on(suite, &ch, "16");
        let v = dev.sysupdate(&["--version"]);
        assert!(
            v.stdout.starts_with(systemd),
            "{suite:?}: not {systemd}\n{v}"
        );
        dev.sysupdate(&["list"])
            .status(0, "list")
            .says("Signature verification succeeded.", "list from serve");
        assert_eq!(dev.list(), list_of(Some("16"), &["18", "17", "16"]));
        dev.updates_to("18", &["16", "18"]);
    }
}

/// `serve` over plain HTTP (a test VM without a CA): the signature alone
/// protects the channel, and systemd-sysupdate 257 installs from it.
#[test]
fn serve_over_plain_http_is_enough_for_systemd_257_to_install() {
    let ch = Channel::behind_serve(Scheme::Http, "");
    assert!(ch.url.starts_with("http://127.0.0.1:"), "{}", ch.url);
    ch.release("18");
    let dev = Device::up(&ch, "16");
    assert_eq!(dev.check_new().as_deref(), Some("18"));
    dev.updates_to("18", &["16", "18"]);
}
