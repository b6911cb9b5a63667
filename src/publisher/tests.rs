//! The commit protocol and its planning against the in-memory store: every
//! refusal is matched by variant, and every refused write is checked to
//! have changed nothing. (Integration tests run the same protocol against
//! the real directory store, nginx and moto.)

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::*;
use crate::channel::anchor::Anchor;
use crate::compress::{Codec, Settings as Compress};
use crate::progress::Silent;
use crate::signing::SecretKey;
use crate::store::MemoryStore;

/// A channel whose transfers need no `[specifiers]`.
static NO_SPECIFIERS: std::sync::LazyLock<crate::transfer::Specifiers> =
    std::sync::LazyLock::new(Default::default);

fn arch(s: &str) -> Arch {
    Arch::parse(s).unwrap()
}

fn v(s: &str) -> Version {
    Version::parse(s).unwrap()
}

fn transfers() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/minimal/sysupdate.d")
}

/// A build output for `version`: two already-compressed payloads whose
/// bytes depend on `arch`, `version` and `salt`.
fn output(dir: &Path, a: &str, version: &str, salt: &str) -> PathBuf {
    let out = dir.join(format!("{a}-{version}-{salt}"));
    std::fs::create_dir_all(&out).unwrap();
    for name in [
        format!("appliance_{version}.efi.xz"),
        format!("store_{version}.img.xz"),
    ] {
        let mut bytes = vec![0xfd, b'7', b'z', b'X', b'Z', 0];
        bytes.extend_from_slice(format!("{a} {name} {salt}").as_bytes());
        std::fs::write(out.join(name), bytes).unwrap();
    }
    out
}

struct World {
    dir: tempfile::TempDir,
    store: MemoryStore,
    key: SecretKey,
    keyring: Keyring,
    transfers: PathBuf,
    keep: usize,
}

impl World {
    fn new(keep: usize) -> World {
        let key = SecretKey::generate("Unit <unit@example.org>").unwrap();
        let keyring = Keyring::from_bytes(&key.keyring_bytes().unwrap()).unwrap();
        World {
            dir: tempfile::tempdir().unwrap(),
            store: MemoryStore::new(),
            key,
            keyring,
            transfers: transfers(),
            keep,
        }
    }

    fn publisher(&self) -> Publisher<'_> {
        Publisher {
            store: &self.store,
            keyring: &self.keyring,
            transfers_dir: &self.transfers,
            component: None,
            specifiers: &NO_SPECIFIERS,
            keep: self.keep,
            signature_lifetime: None,
            expiry_warning: Duration::from_secs(7 * 86400),
            anchor: Some(Anchor::in_dir(&self.dir.path().join("state"), "memory")),
            now: SystemTime::now(),
            events: &Silent,
        }
    }

    fn request(&self, version: &str, salt: &str, arches: &[&str]) -> ReleaseRequest {
        ReleaseRequest {
            outputs: arches
                .iter()
                .map(|a| (arch(a), output(self.dir.path(), a, version, salt)))
                .collect(),
            version: None,
            dry_run: false,
            allow_downgrade: false,
            unyank: false,
            compress: Compress {
                codec: Codec::Xz,
                level: 0,
                threads: 1,
                memory: crate::compress::DEFAULT_MEMORY,
            },
            checks: Default::default(),
            skip: Default::default(),
            stamps: std::sync::Arc::new(crate::stamps::StampCache::off()),
        }
    }

    fn release(&self, version: &str) -> Result<Report, PublishError> {
        let req = self.request(version, "", &["x86-64", "arm64"]);
        self.publisher().release(&self.key, &req)
    }

    /// As on a machine that never saw this channel (a fresh CI runner).
    fn forget(&self) {
        self.publisher().anchor.unwrap().forget().unwrap();
    }

    fn channel(&self) -> Channel {
        self.publisher().read(false).unwrap()
    }

    fn history_len(&self) -> u64 {
        self.channel().history.len()
    }

    fn listed(&self, a: &str) -> Vec<String> {
        self.channel().arches[&arch(a)]
            .manifest
            .entries
            .keys()
            .cloned()
            .collect()
    }
}

fn refusal(r: Result<Report, PublishError>) -> Refusal {
    match r {
        Err(PublishError::Refused(r)) => r,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn problem_kinds(r: &Refusal) -> Vec<&Problem> {
    match r {
        Refusal::Problems { problems } => problems.iter().collect(),
        other => panic!("expected channel problems, got {other:?}"),
    }
}

#[test]
fn a_release_records_what_it_serves_and_a_rerun_writes_nothing() {
    let w = World::new(2);
    let r = w.release("17").unwrap();
    assert_eq!(r.history_seq, Some(1));
    assert!(!r.already_published);
    let ch = w.channel();
    assert!(ch.problems.is_empty(), "{:?}", ch.problems);
    for a in ["x86-64", "arm64"] {
        let record = ch.record(arch(a)).unwrap();
        assert_eq!(
            ch.arches[&arch(a)].manifest_sha256.as_deref(),
            Some(record.manifest.as_str())
        );
        assert_eq!(record.files.len(), 2);
    }
    let before = w.store.snapshot();
    let r = w.release("17").unwrap();
    assert!(r.already_published && r.history_seq.is_none());
    assert_eq!(w.store.snapshot(), before, "a no-op release wrote");
}

#[test]
fn retention_drops_and_deletes_only_after_the_switch() {
    let w = World::new(1);
    w.release("17").unwrap();
    w.release("18").unwrap();
    assert_eq!(
        w.listed("x86-64"),
        ["appliance_18.efi.xz", "store_18.img.xz"]
    );
    assert!(
        !w.store.keys().iter().any(|k| k.contains("_17")),
        "{:?}",
        w.store.keys()
    );
}

#[test]
fn a_name_never_comes_back_with_other_bytes() {
    let w = World::new(1);
    w.release("17").unwrap();
    w.release("18").unwrap();
    let before = w.store.snapshot();
    let mut req = w.request("17", "rebuilt", &["x86-64"]);
    req.allow_downgrade = true;
    match refusal(w.publisher().release(&w.key, &req)) {
        Refusal::NameReused { arch: a, seq, .. } => {
            assert_eq!((a, seq), (arch("x86-64"), 1));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(w.store.snapshot(), before);
}

#[test]
fn the_same_output_for_two_arches_is_refused() {
    let w = World::new(2);
    let out = output(w.dir.path(), "x86-64", "17", "");
    let mut req = w.request("17", "", &[]);
    req.outputs = vec![(arch("x86-64"), out.clone()), (arch("arm64"), out)];
    assert!(matches!(
        refusal(w.publisher().release(&w.key, &req)),
        Refusal::SameOutput { .. }
    ));
    assert!(w.store.keys().is_empty());
}

#[test]
fn a_write_one_arch_refuses_changes_no_arch() {
    let w = World::new(3);
    w.release("17").unwrap();
    let req = w.request("18", "", &["x86-64"]);
    w.publisher().release(&w.key, &req).unwrap();
    let before = w.store.snapshot();
    // arm64 publishes only 17: yanking it there would leave nothing.
    let r = w.publisher().yank(
        &w.key,
        &v("17"),
        &[arch("x86-64"), arch("arm64")],
        "x",
        false,
    );
    assert!(matches!(refusal(r), Refusal::OnlyVersion { arch: a, .. } if a == arch("arm64")));
    assert_eq!(w.store.snapshot(), before);
}

#[test]
fn rollback_never_brings_back_a_withdrawn_version() {
    let w = World::new(3);
    for version in ["17", "18", "19"] {
        w.release(version).unwrap();
    }
    w.publisher()
        .rollback(&w.key, &v("17"), None, false)
        .unwrap();
    let before = w.store.snapshot();
    match refusal(w.publisher().rollback(&w.key, &v("18"), None, false)) {
        Refusal::Withdrawn {
            version,
            action,
            how,
            ..
        } => {
            assert_eq!((version.as_str(), action), ("18", Action::Rollback));
            assert!(how.contains("unyank 18"), "{how}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(w.store.snapshot(), before);
    w.publisher().unyank(&w.key, &v("18"), None, false).unwrap();
    assert!(w.listed("arm64").contains(&"store_18.img.xz".to_string()));
    // A rerun of the unyank, and of a yank of what is withdrawn: nothing.
    let before = w.store.snapshot();
    assert!(
        w.publisher()
            .unyank(&w.key, &v("18"), None, false)
            .unwrap()
            .already_published
    );
    assert!(
        w.publisher()
            .yank(&w.key, &v("19"), &[], "x", false)
            .unwrap()
            .already_published
    );
    assert_eq!(w.store.snapshot(), before);
}

/// 17 and 18 released, then x86-64's signed manifest of 17 served again.
fn seventeen_put_back_over_eighteen() -> (World, Arch) {
    let w = World::new(2);
    w.release("17").unwrap();
    let x86 = arch("x86-64");
    let old = (
        w.store.get(x86, manifest::MANIFEST).unwrap().unwrap(),
        w.store.get(x86, manifest::SIGNATURE).unwrap().unwrap(),
    );
    w.release("18").unwrap();
    w.store.put_raw(x86, manifest::MANIFEST, &old.0);
    w.store.put_raw(x86, manifest::SIGNATURE, &old.1);
    (w, x86)
}

#[test]
fn an_older_signed_manifest_put_back_is_caught_and_repaired() {
    let (w, x86) = seventeen_put_back_over_eighteen();
    let ch = w.channel();
    assert!(ch.problems.contains(&Problem::ManifestRolledBack {
        arch: x86,
        served_seq: 1,
        head_seq: 2
    }));
    let before = w.store.snapshot();
    let r = refusal(w.release("19"));
    assert!(problem_kinds(&r)
        .iter()
        .any(|p| matches!(p, Problem::ManifestRolledBack { .. })));
    assert_eq!(w.store.snapshot(), before, "a refused release wrote");
    let req = RepairRequest {
        outputs: vec![],
        dry_run: false,
        compress: w.request("1", "", &[]).compress,
    };
    w.publisher().repair(&w.key, &req).unwrap();
    assert!(w.channel().problems.is_empty());
    assert!(w.listed("x86-64").contains(&"store_18.img.xz".to_string()));
    assert_eq!(w.history_len(), 2, "repair writes no history");
}

#[test]
fn a_history_cut_short_or_lost_is_caught_and_adopt_needs_no_guessing() {
    let w = World::new(2);
    w.release("17").unwrap();
    w.release("18").unwrap();
    let ledger = w.store.get_channel_file(manifest::LEDGER).unwrap().unwrap();
    let first_line = ledger.split_inclusive(|&b| b == b'\n').next().unwrap();
    w.store.put_raw_channel_file(manifest::LEDGER, first_line);
    let ch = w.channel();
    assert!(ch.problems.iter().any(|p| matches!(
        p,
        Problem::HistoryRolledBack {
            remembered_seq: 2,
            found_seq: 1,
            ..
        }
    )));
    assert!(ch
        .problems
        .iter()
        .any(|p| matches!(p, Problem::ManifestUnknown { .. })));
    assert!(matches!(refusal(w.release("19")), Refusal::Problems { .. }));

    w.store.remove_raw_channel_file(manifest::LEDGER);
    let ch = w.channel();
    assert!(ch
        .problems
        .iter()
        .any(|p| matches!(p, Problem::HistoryMissing { arches } if arches.len() == 2)));
    // Without --confirm nothing is written.
    let dry = w.publisher().adopt(&w.key, None, true).unwrap();
    assert!(!dry.already_published && dry.history_seq.is_none());
    assert!(w
        .store
        .get_channel_file(manifest::LEDGER)
        .unwrap()
        .is_none());
    w.publisher()
        .adopt(&w.key, Some("ledger lost".into()), false)
        .unwrap();
    let ch = w.channel();
    assert!(ch.problems.is_empty(), "{:?}", ch.problems);
    assert_eq!(ch.history.head().unwrap().action, Action::Adopt);
    w.release("19").unwrap();
}

#[test]
fn payloads_with_other_sizes_stop_writes_until_repaired() {
    let w = World::new(2);
    w.release("17").unwrap();
    let a = arch("arm64");
    w.store.put_raw(a, "store_17.img.xz", b"short");
    let ch = w.channel();
    assert!(ch.problems.iter().any(|p| matches!(
        p,
        Problem::PayloadSize { arch, file, .. } if *arch == a && file == "store_17.img.xz"
    )));
    assert!(matches!(refusal(w.release("18")), Refusal::Problems { .. }));
    let mut req = RepairRequest {
        outputs: vec![],
        dry_run: false,
        compress: w.request("1", "", &[]).compress,
    };
    assert!(matches!(
        refusal(w.publisher().repair(&w.key, &req)),
        Refusal::Other(m) if m.contains("store_17.img.xz") && m.contains("--output arm64=PATH")
    ));
    req.outputs = vec![(a, output(w.dir.path(), "arm64", "17", ""))];
    w.publisher().repair(&w.key, &req).unwrap();
    assert!(w.publisher().read(true).unwrap().problems.is_empty());
}

#[test]
fn an_interrupted_write_is_named_and_the_next_write_finishes_it() {
    // As if the release died after switching arm64, before x86-64, on a
    // machine that did not see it finish (this one would call it a put-back
    // manifest: see the test above).
    let (w, x86) = seventeen_put_back_over_eighteen();
    w.forget();
    let ch = w.channel();
    let interrupted = ch.interrupted().expect("named");
    assert!(matches!(
        interrupted,
        Problem::Interrupted { seq: 2, committed, pending, .. }
            if committed == &[arch("arm64")] && pending == &[x86]
    ));
    assert!(!interrupted.blocks_writes());
    let r = w.release("18").unwrap();
    assert_eq!(r.finished_interrupted, Some(2));
    assert!(r.already_published, "finishing it was all there was to do");
    assert!(w.channel().problems.is_empty());
    assert_eq!(w.history_len(), 2);
}
