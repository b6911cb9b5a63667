//! The hosting's holes: what its owner (a careless admin, or an attacker
//! who took it over) can do behind the publisher's back with every file
//! still signed by our key, on every hosting. For each one:
//! - `status` exits 1 naming the arch, version or file at fault and the
//!   command that fixes it;
//! - every write is refused (exit 1) with that problem and changes nothing
//!   stored, byte for byte;
//! - the named fix (`repair`, `repair --output`, `adopt --confirm`) exits 0;
//! - afterwards every arch verifies with gpg as systemd runs it, every
//!   listed payload is served with its hash, the history (ledger.jsonl)
//!   verifies and names exactly what is served, and `status --deep` is
//!   clean.

use std::collections::BTreeMap;

use sysupdate_publish::ledger::{Action, Ledger};
use sysupdate_publish::signing::Keyring;

use super::scenarios::{
    args, assert_listed_payloads_served, differing, outputs_19, release, status, strs, verifies,
    Chan, Status,
};
use super::{Layout, Site};
use crate::common::*;

/// Everything stored for the channel, with its bytes (`None`: a dangling
/// link of the directory store).
pub fn contents(ch: &Chan) -> BTreeMap<String, Option<Vec<u8>>> {
    ch.stored()
        .into_iter()
        .map(|rel| {
            let bytes = ch.raw_get(&rel);
            (rel, bytes)
        })
        .collect()
}

/// Runs a command that must exit `code` with a message naming every one
/// of `names`, and must not change anything stored. Returns the message.
pub fn unchanged_after(ch: &Chan, cmd: &[String], code: i32, names: &[&str]) -> String {
    let before = contents(ch);
    // The report (stdout) or the error (stderr): whichever names them.
    let out = ch.run(cmd, code);
    let err = String::from_utf8_lossy(&out.stdout).into_owned() + &stderr(&out);
    for name in names {
        assert!(err.contains(name), "{cmd:?} must name {name:?}:\n{err}");
    }
    let after = contents(ch);
    let changed = differing(&before, &after);
    assert!(
        changed.is_empty(),
        "{cmd:?} exited {code} but changed {changed:?}:\n{err}"
    );
    err
}

/// A write refused because of the channel's problems, naming `names`.
fn refused(ch: &Chan, cmd: &[String], names: &[&str]) {
    let err = unchanged_after(ch, cmd, 1, names);
    assert!(err.contains("must be fixed before any write"), "{err}");
}

/// The writes every blocking problem must refuse.
fn writes(outputs: &[String]) -> Vec<Vec<String>> {
    vec![
        args(&["release"], outputs.to_vec()),
        strs(&["yank", "17", "--reason", "bricks"]),
        strs(&["refresh"]),
    ]
}

/// `status` (with `flags`) exits 1 with exactly the problems `kinds`, and
/// its message names every one of `names`.
fn finds(ch: &Chan, flags: &[&str], kinds: &[&str], names: &[&str]) -> Status {
    let st = status(ch, flags);
    assert_eq!(st.code, 1, "status {flags:?} must fail:\n{}", st.text);
    assert_eq!(st.kinds(), kinds, "{}", st.report["findings"]);
    for name in names {
        assert!(
            st.text.contains(name),
            "status {flags:?} must name {name:?}:\n{}",
            st.text
        );
    }
    st
}

/// The channel is sound again: devices accept every arch (gpg with
/// systemd's command line, every listed payload served with its hash), the
/// history verifies and its newest entry names exactly the manifest every
/// arch serves, and `status --deep` finds nothing. Returns the history.
fn assert_sound(ch: &Chan, keys: &Keys) -> Ledger {
    let keyring = Keyring::load(&keys.keyring).unwrap();
    let bytes = ch.raw_get("ledger.jsonl").expect("ledger.jsonl");
    let history = Ledger::parse(&bytes, &keyring).expect("the history verifies");
    let state = history
        .head()
        .and_then(|e| e.state.as_ref())
        .expect("the newest entry records a state");
    for arch in ARCHES {
        let m = ch.manifest(arch);
        let sig = ch
            .fetch(&format!("{arch}/SHA256SUMS.gpg"))
            .expect("signature");
        assert!(verifies(&keys.keyring, &sig, m.as_bytes()), "{arch}: gpg");
        assert_listed_payloads_served(ch, arch, &m);
        let named = state
            .iter()
            .find(|(a, _)| a.systemd() == arch)
            .map(|(_, r)| r.manifest.as_str());
        assert_eq!(
            named,
            Some(sha256_hex(m.as_bytes()).as_str()),
            "{arch}: the history names another manifest than the one served"
        );
    }
    let st = status(ch, &["--deep"]);
    assert_eq!(st.code, 0, "status --deep:\n{}", st.text);
    history
}

/// Hole 1: the hosting puts back an older manifest with its (valid) signature
/// after a newer release: devices would accept it and lose version 18.
pub fn an_older_signed_manifest_put_back_is_refused_until_repaired(site: &Site) {
    let keys = keygen();
    let ch = Chan::new(site, &keys, "keep = 3");
    ch.run(&release("17"), 0);
    let old: Vec<(&str, Vec<u8>)> = ["x86-64/SHA256SUMS", "x86-64/SHA256SUMS.gpg"]
        .into_iter()
        .map(|rel| (rel, ch.raw_get(rel).unwrap()))
        .collect();
    ch.run(&release("18"), 0);
    let newest = ch.manifest("x86-64");
    for (rel, bytes) in &old {
        ch.raw_put(rel, bytes);
    }
    // Our key signed it: gpg alone cannot tell, only the history can.
    assert!(verifies(&keys.keyring, &old[1].1, &old[0].1));
    let fix = "sysupdate-publish repair";
    finds(
        &ch,
        &[],
        &["manifest-rolled-back"],
        &["x86-64", "history entry #1", "not the newest (#2)", fix],
    );
    let (_dirs, outputs) = outputs_19();
    for cmd in writes(&outputs) {
        refused(&ch, &cmd, &["x86-64", "history entry #1", fix]);
    }
    // Only the head this machine remembers (seen served on every arch)
    // tells it from a release interrupted before switching x86-64: a fresh
    // runner takes it for one, which the next write finishes, serving #2.
    ch.forget_remembered();
    finds(
        &ch,
        &[],
        &["interrupted"],
        &["history entry #2", "not x86-64", fix],
    );
    ch.run(&strs(&["repair"]), 0);
    assert_eq!(ch.manifest("x86-64"), newest, "#2's manifest, served again");
    assert_sound(&ch, &keys);
    ch.run(&args(&["release"], outputs), 0);
    let history = assert_sound(&ch, &keys);
    assert_eq!(history.len(), 3, "repair writes no history entry");
}

/// How a history is broken, and what `status` says of it.
struct Cut<'a> {
    what: &'static str,
    cut: &'a dyn Fn(&Chan),
    /// Named by `status` while this machine remembers the head (#2).
    remembered: Vec<&'a str>,
    /// The problems on a runner without it, and what their message names.
    kinds: Vec<&'a str>,
    names: Vec<&'a str>,
}

/// Hole 2: the history loses its newest entry, all of them, or its file, while
/// the manifests it named stay served: only `adopt --confirm` may make a
/// new history of what is served; every write waits for it.
pub fn a_history_cut_short_emptied_or_deleted_refuses_writes_until_adopted(site: &Site) {
    let keys = keygen();
    let ch = Chan::new(site, &keys, "keep = 3");
    ch.run(&release("17"), 0);
    ch.run(&release("18"), 0);
    let released = ch.snapshot();
    let (_dirs, outputs) = outputs_19();
    let adopt = "sysupdate-publish adopt --confirm";
    let history = String::from_utf8(ch.raw_get("ledger.jsonl").unwrap()).unwrap();
    let first_line = history.split_inclusive('\n').next().unwrap().to_string();
    let missing = "the history (ledger.jsonl) is missing or empty";
    let cases = [
        Cut {
            what: "cut short",
            cut: &|ch| ch.raw_put("ledger.jsonl", first_line.as_bytes()),
            remembered: vec!["this machine saw entry #2", "ends at #1"],
            kinds: vec!["manifest-unknown"; 3],
            names: vec!["x86-64", "arm64", "riscv64", "no history entry names"],
        },
        Cut {
            what: "emptied",
            cut: &|ch| ch.raw_put("ledger.jsonl", b""),
            remembered: vec!["this machine saw entry #2", "ends at #0", missing],
            kinds: vec!["history-missing"],
            names: vec![missing],
        },
        Cut {
            what: "deleted",
            cut: &|ch| ch.raw_delete("ledger.jsonl"),
            remembered: vec!["this machine saw entry #2", "ends at #0", missing],
            kinds: vec!["history-missing"],
            names: vec![missing],
        },
    ];
    for Cut {
        what,
        cut,
        remembered,
        kinds,
        names,
    } in cases
    {
        ch.restore(&released);
        ch.forget_remembered();
        ch.run(&strs(&["status"]), 0);
        cut(&ch);
        let st = status(&ch, &[]);
        assert_eq!(st.code, 1, "{what}:\n{}", st.text);
        assert!(
            st.kinds().contains(&"history-rolled-back".to_string()),
            "{what}: {}",
            st.report["findings"]
        );
        for needle in remembered.iter().chain([&adopt]) {
            assert!(st.text.contains(needle), "{what}: {needle:?}:\n{}", st.text);
        }
        ch.forget_remembered();
        let names: Vec<&str> = names.into_iter().chain([adopt]).collect();
        finds(&ch, &[], &kinds, &names);
        for cmd in writes(&outputs) {
            refused(&ch, &cmd, &[adopt]);
        }
        unchanged_after(&ch, &strs(&["adopt"]), 2, &[adopt]);
        ch.run(&strs(&["adopt", "--confirm", "--reason", what]), 0);
        let history = assert_sound(&ch, &keys);
        let head = history.head().unwrap();
        assert_eq!(head.action, Action::Adopt, "{what}");
        assert_eq!(head.reason.as_deref(), Some(what));
        ch.run(&args(&["release"], outputs.clone()), 0);
        let history = assert_sound(&ch, &keys);
        assert_eq!(history.head().unwrap().action, Action::Publish, "{what}");
        assert!(ch.manifest("x86-64").contains("_19."), "{what}");
    }
}

/// `bytes` with the last one changed: same size, other hash.
fn flipped(bytes: &[u8]) -> Vec<u8> {
    let mut bytes = bytes.to_vec();
    *bytes.last_mut().unwrap() ^= 0xff;
    bytes
}

/// `repair --output` with the version-17 build output of each of `arches`.
fn repair_from_17(ch: &Chan, arches: &[&str]) {
    let mut cmd = strs(&["repair"]);
    for arch in arches {
        let system = SYSTEMS[ARCHES.iter().position(|a| a == arch).unwrap()];
        cmd.push("--output".into());
        cmd.push(format!("{arch}={}", example_output(system, "17").display()));
    }
    ch.run(&cmd, 0);
}

/// The `x-amz-meta-sha256` served with a payload (S3 only; `None` elsewhere).
fn recorded_sha256(ch: &Chan, rel: &str) -> Option<String> {
    let r = super::http("GET", &ch.url(rel), b"");
    r.header("x-amz-meta-sha256").map(str::to_string)
}

/// Hole 3: a published payload gets other bytes under its name. On S3 a plain
/// PUT drops the `x-amz-meta-sha256` our upload stored; one that keeps it
/// leaves a hash that lies. On the directory store a careless admin writes
/// where devices fetch: through the arch symlink into the current
/// generation, where the payload is a hard link to its pool copy, so a
/// write in place (`cp`, `>`) changes the pool copy too and only a build
/// output can bring the bytes back; a new file renamed over the name
/// (rsync) replaces the generation's link only, and the pool copy is right.
pub fn payload_bytes_changed_under_a_published_name_are_found_and_uploaded_again(site: &Site) {
    let keys = keygen();
    let ch = Chan::new(site, &keys, "keep = 2");
    ch.run(&release("17"), 0);
    let names = ["x86-64/store_17.img.xz", "arm64/appliance_17.efi.xz"];
    let right: Vec<Vec<u8>> = names.iter().map(|n| ch.raw_get(n).unwrap()).collect();
    let served_right = |ch: &Chan| {
        for (name, bytes) in names.iter().zip(&right) {
            assert_eq!(
                ch.fetch(name).map(|b| sha256_hex(&b)),
                Some(sha256_hex(bytes)),
                "{name}: the recorded bytes are served again"
            );
        }
    };
    // What S3 recorded with the second at upload; it stays through each
    // tampering of it below (nothing on the other hostings).
    let claimed = recorded_sha256(&ch, names[1]);
    if site.store.starts_with("s3://") {
        assert_eq!(claimed, Some(sha256_hex(&right[1])));
    }
    let tamper = |ch: &Chan, plain: &[u8], keeping_metadata: &[u8]| {
        ch.raw_put(names[0], plain);
        ch.raw_put_keeping_metadata(names[1], keeping_metadata);
        assert_eq!(recorded_sha256(ch, names[0]), None);
        assert_eq!(recorded_sha256(ch, names[1]), claimed);
    };

    // (a) Other bytes of another size.
    let mut longer = right[0].clone();
    longer.extend_from_slice(b"tampered");
    tamper(&ch, &longer, &right[1][..right[1].len() - 10]);
    if site.layout == Layout::Dir {
        assert_eq!(
            ch.raw_get(".payloads/x86-64/store_17.img.xz"),
            Some(longer),
            "written in place: the pool copy changed with the served one"
        );
    }
    let fix = |arch: &str| format!("sysupdate-publish repair --output {arch}=PATH");
    let (x86_fix, arm_fix) = (fix("x86-64"), fix("arm64"));
    let named = [
        "x86-64: store_17.img.xz (version 17)",
        "arm64: appliance_17.efi.xz (version 17)",
        &x86_fix,
        &arm_fix,
    ];
    finds(&ch, &[], &["payload-size", "payload-size"], &named);
    refused(&ch, &args(&["release"], output_args("18")), &named);
    let without_output = [
        "store_17.img.xz",
        "appliance_17.efi.xz",
        "--output x86-64=PATH",
        "--output arm64=PATH",
    ];
    unchanged_after(&ch, &strs(&["repair"]), 1, &without_output);
    repair_from_17(&ch, &["x86-64", "arm64"]);
    served_right(&ch);
    assert_sound(&ch, &keys);

    // (b) Same size, other bytes: plain status compares sizes with the
    // history, which match, so it cannot tell (nor can any write, which
    // reads the channel the same way); only --deep hashes the bytes, and
    // must not believe the hash S3 still claims for the second.
    tamper(&ch, &flipped(&right[0]), &flipped(&right[1]));
    let st = status(&ch, &[]);
    assert_eq!(st.code, 0, "sizes match: {}", st.text);
    finds(&ch, &["--deep"], &["payload-hash", "payload-hash"], &named);
    repair_from_17(&ch, &["x86-64", "arm64"]);
    served_right(&ch);
    assert_sound(&ch, &keys);

    // (c) A new file renamed over the name, as rsync writes.
    ch.raw_replace(names[0], b"rsynced");
    finds(&ch, &[], &["payload-size"], &[named[0], &x86_fix]);
    if site.layout == Layout::Dir {
        // The pool copy is right: committing again serves it.
        ch.run(&strs(&["repair"]), 0);
    } else {
        unchanged_after(&ch, &strs(&["repair"]), 1, &["--output x86-64=PATH"]);
        repair_from_17(&ch, &["x86-64"]);
    }
    served_right(&ch);
    assert_sound(&ch, &keys);
    ch.run(&release("18"), 0);
    assert_sound(&ch, &keys);
}

/// Hole 4: the hosting puts back an older history with the manifests it named
/// (a restored backup, or an attacker replaying what was signed): every
/// signature and the whole chain check out. Only the history head this
/// machine remembers tells: that is why CI must keep its state directory
/// (SYSUPDATE_PUBLISH_STATE_DIR) between runs.
pub fn history_and_manifests_rolled_back_together_only_the_remembered_head_tells(site: &Site) {
    let keys = keygen();
    let ch = Chan::new(site, &keys, "keep = 2");
    ch.run(&release("17"), 0);
    let at_17 = ch.snapshot();
    ch.run(&release("18"), 0);
    ch.restore(&at_17);
    let adopt = "sysupdate-publish adopt --confirm";
    let rolled_back = "the history was cut short or rolled back";
    finds(
        &ch,
        &[],
        &["history-rolled-back"],
        &[
            rolled_back,
            "this machine saw entry #2",
            "ends at #1",
            adopt,
        ],
    );
    for cmd in writes(&output_args("18")) {
        refused(&ch, &cmd, &[rolled_back, adopt]);
    }
    unchanged_after(&ch, &strs(&["adopt"]), 2, &[adopt]);
    ch.run(&strs(&["adopt", "--confirm"]), 0);
    let history = assert_sound(&ch, &keys);
    assert_eq!(history.len(), 2);
    assert_eq!(history.head().unwrap().action, Action::Adopt);
    ch.run(&release("18"), 0);
    assert!(ch.manifest("arm64").contains("_18."));
    assert_sound(&ch, &keys);

    // A fresh runner (no remembered head) takes the rolled-back channel
    // for a consistent one: nothing else can tell.
    ch.restore(&at_17);
    finds(&ch, &[], &["history-rolled-back"], &["ends at #1"]);
    ch.forget_remembered();
    ch.run(&strs(&["status"]), 0);
    assert_sound(&ch, &keys);
}

/// Hole 5: one arch's manifest, or another's signature, is deleted: devices of
/// that arch see no update (or refuse the manifest) until `repair` puts
/// the history head's back, re-signed.
pub fn a_deleted_manifest_or_signature_is_refused_until_repaired(site: &Site) {
    let keys = keygen();
    let ch = Chan::new(site, &keys, "keep = 2");
    ch.run(&release("17"), 0);
    let repair = "sysupdate-publish repair";
    let cases = [
        (
            "arm64/SHA256SUMS",
            "manifest-missing",
            ["arm64: serves no SHA256SUMS", "history entry #1", repair],
        ),
        (
            "riscv64/SHA256SUMS.gpg",
            "signature-missing",
            [
                "riscv64: SHA256SUMS.gpg is missing",
                "devices refuse",
                repair,
            ],
        ),
    ];
    for (rel, kind, names) in cases {
        let before = ch.raw_get(rel);
        ch.raw_delete(rel);
        assert_eq!(ch.fetch(rel), None, "{rel}");
        finds(&ch, &[], &[kind], &names);
        for cmd in writes(&output_args("18")) {
            refused(&ch, &cmd, &names);
        }
        ch.run(&strs(&["repair"]), 0);
        if kind == "manifest-missing" {
            assert_eq!(ch.fetch(rel), before, "the same manifest, rendered again");
        }
        assert_sound(&ch, &keys);
    }
    ch.run(&release("18"), 0);
    assert_sound(&ch, &keys);
}
