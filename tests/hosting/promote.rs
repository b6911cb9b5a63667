//! `promote` between two channels on one hosting: the version lands on the
//! target through its own protocol, with payloads copied on the hosting
//! (hard link, CopyObject, WebDAV COPY), so the publisher sends manifests,
//! signatures and the history only.

use super::holes::unchanged_after;
use super::scenarios::{args, assert_listed_payloads_served, verifies, Chan};
use super::{fake_xz, Layout, Relay, Site};
use crate::common::*;

/// Payload size: large enough that sending any payload would show;
/// `scripts/bench-promote` sets `PROMOTE_PAYLOAD_MIB` for the measured run.
fn big() -> usize {
    std::env::var("PROMOTE_PAYLOAD_MIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(4)
        << 20
}

fn release_big(ch: &Chan, version: &str) -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    let mut argv = vec!["--channel".to_string(), "canary".into(), "release".into()];
    for (system, arch) in SYSTEMS.iter().zip(ARCHES) {
        let dir = out.path().join(arch);
        std::fs::create_dir(&dir).unwrap();
        std::fs::copy(
            example_output(system, "18").join("appliance_18.efi.xz"),
            dir.join(format!("appliance_{version}.efi.xz")),
        )
        .unwrap();
        fake_xz(&dir.join(format!("store_{version}.img.xz")), big());
        argv.extend(["--output".to_string(), format!("{arch}={}", dir.display())]);
    }
    ch.run(&argv, 0);
    out
}

fn promote(v: &str, extra: &[&str]) -> Vec<String> {
    let mut a = args(
        &["promote", v, "--from", "canary", "--to", "stable"],
        vec![],
    );
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// `relay`: what the publisher's requests go through (S3, WebDAV), to count
/// the bytes it sends.
pub fn promote_copies_payloads_on_the_hosting(site: &Site, relay: Option<&Relay>) {
    let keys = keygen();
    let ch = Chan::pair(site, &keys, "keep = 2");
    let _out = release_big(&ch, "17");
    let canary = ch.source_prefix.clone().unwrap();

    // A soak time not reached, and a version canary does not have: refused.
    let names = ["published on canary at", "promote it after"];
    unchanged_after(&ch, &promote("17", &["--if-older-than", "2d"]), 1, &names);
    unchanged_after(
        &ch,
        &promote("19", &[]),
        1,
        &["not published on channel canary"],
    );

    let sent = relay.map(Relay::sent);
    let out = ch.run(&args(&["--json"], promote("17", &[])), 0);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["action"], "promote", "{report}");
    assert_eq!(report["source"]["channel"], "canary", "{report}");
    assert_eq!(
        report["upload_bytes"], 0,
        "no payload byte may pass through: {report}"
    );
    if let (Some(relay), Some(before)) = (relay, sent) {
        let sent = relay.sent() - before;
        // Manifests, signatures, history, lock and HTTP headers only.
        assert!(
            sent < 256 << 10,
            "the publisher sent {sent} bytes to promote 3 × {}",
            big()
        );
        eprintln!("promote sent {sent} bytes for {} payload bytes", 3 * big());
    }
    for arch in ARCHES {
        let m = ch.manifest(arch);
        assert!(m.contains("store_17.img.xz"), "{arch}: {m}");
        let sig = ch.fetch(&format!("{arch}/SHA256SUMS.gpg")).unwrap();
        assert!(verifies(&keys.keyring, &sig, m.as_bytes()), "{arch}: gpg");
        assert_listed_payloads_served(&ch, arch, &m);
        let theirs = ch
            .site
            .raw_get(&format!(
                "{canary}/{}",
                site.layout.payload_key(arch, "store_17.img.xz")
            ))
            .unwrap();
        assert_eq!(
            ch.fetch(&format!("{arch}/store_17.img.xz")).unwrap(),
            theirs
        );
    }
    if site.layout == Layout::Dir {
        // One file on disk, linked from both channels' pools.
        use std::os::unix::fs::MetadataExt;
        let ino = |p: &str| std::fs::metadata(site.path(p)).unwrap().ino();
        assert_eq!(
            ino(&format!("{canary}/.payloads/x86-64/store_17.img.xz")),
            ino(&format!("{}/.payloads/x86-64/store_17.img.xz", ch.prefix))
        );
    }
    let status = ch.run(&args(&["--json", "status"], vec![]), 0);
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let last = report["history"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["action"], "promote");
    assert_eq!(last["source"]["channel"], "canary");
    assert_eq!(last["source"]["seq"], 1);

    // Promoting again changes nothing, history included.
    unchanged_after(&ch, &promote("17", &[]), 0, &["nothing to do"]);

    // A version withdrawn on canary is not promoted.
    let _out18 = release_big(&ch, "18");
    ch.run(
        &args(
            &["--channel", "canary", "yank", "18", "--reason", "bad"],
            vec![],
        ),
        0,
    );
    let err = stderr(&ch.run(&promote("18", &[]), 1));
    assert!(err.contains("withdrawn on canary"), "{err}");
}

/// [`promote_copies_payloads_on_the_hosting`] without counting bytes (the
/// directory store; the remote sites count them in their own test files).
pub fn promote_copies_payloads_on_the_hosting_directly(site: &Site) {
    promote_copies_payloads_on_the_hosting(site, None)
}
