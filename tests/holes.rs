//! One test per input or semantics hole, on a directory store: each is
//! refused (or done right) with a message that names the arch, version or
//! file and what to do; a refused write changes nothing, in the store or
//! outside it; and afterwards devices (systemd's gpg line) and the history
//! still verify.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;
use sysupdate_publish::ledger::Ledger;
use sysupdate_publish::signing::Keyring;

type Channel = TestChannel;

/// An entry as it is on disk; links are recorded, never followed.
#[derive(Debug, PartialEq, Eq)]
enum Node {
    Dir,
    File(Vec<u8>),
    Link(PathBuf),
}

/// Everything below `root`: stricter than `snapshot`, a link switched or a
/// directory added shows too.
fn tree(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).follow_links(false) {
        let e = e.unwrap();
        let node = if e.path_is_symlink() {
            Node::Link(std::fs::read_link(e.path()).unwrap())
        } else if e.file_type().is_dir() {
            Node::Dir
        } else {
            Node::File(std::fs::read(e.path()).unwrap())
        };
        out.insert(e.path().to_path_buf(), node);
    }
    out
}

/// The directories a test watches: the channel's own (store, config, build
/// outputs), its key, and whatever the test made outside the store.
struct Watch {
    before: Vec<(PathBuf, BTreeMap<PathBuf, Node>)>,
}

impl Watch {
    fn new(ch: &Channel, outside: &[&Path]) -> Watch {
        let roots = [ch.dir.path(), ch.keys.dir.path()]
            .into_iter()
            .chain(outside.iter().copied());
        Watch {
            before: roots.map(|r| (r.to_path_buf(), tree(r))).collect(),
        }
    }

    fn assert_unchanged(&self, what: &str) {
        for (root, before) in &self.before {
            assert!(
                tree(root) == *before,
                "{what} changed {} (byte for byte, links and directories included)",
                root.display()
            );
        }
    }
}

/// `--output ARCH=DIR`.
fn output(arch: &str, dir: &Path) -> Vec<String> {
    vec!["--output".into(), format!("{arch}={}", dir.display())]
}

/// A command line: `head` then `tail` (build outputs).
fn argv(head: &[&str], tail: &[String]) -> Vec<String> {
    head.iter()
        .map(|s| s.to_string())
        .chain(tail.iter().cloned())
        .collect()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn exec(ch: &Channel, args: &[String], code: i32) -> Output {
    run(ch.cmd().args(args), code)
}

/// Runs `args`, expecting exit status 1 and every needle in stderr, and
/// checks nothing changed, in the store or in `outside`. Returns stderr.
fn refused(ch: &Channel, args: &[String], needles: &[&str], outside: &[&Path]) -> String {
    refused_with(1, ch, args, needles, outside)
}

/// [`refused`] with another exit status (2: a usage error).
fn refused_with(
    code: i32,
    ch: &Channel,
    args: &[String],
    needles: &[&str],
    outside: &[&Path],
) -> String {
    let watch = Watch::new(ch, outside);
    let err = stderr(&exec(ch, args, code));
    for needle in needles {
        assert!(
            err.contains(needle),
            "{args:?}: expected {needle:?} in:\n{err}"
        );
    }
    watch.assert_unchanged(&format!("the refused {args:?}"));
    err
}

/// Devices accept every arch (systemd's gpg line, then every hash), and
/// the history verifies with the keyring.
fn assert_sound(ch: &Channel) {
    assert_channel_verifies(&ch.store, &ch.keys.keyring);
    let keyring = Keyring::load(&ch.keys.keyring).unwrap();
    let history = std::fs::read(ch.store.join("ledger.jsonl")).unwrap();
    if let Err(e) = Ledger::parse(&history, &keyring) {
        panic!("the history no longer verifies: {e}");
    }
}

fn canonical(p: &Path) -> String {
    std::fs::canonicalize(p).unwrap().display().to_string()
}

/// Copies the files of `from` into a new directory `to`.
fn copy_dir(from: &Path, to: &Path) -> PathBuf {
    std::fs::create_dir(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
    to.to_path_buf()
}

/// A copy of an example output that a test may alter, in `dir/name`.
fn copy_output(dir: &Path, name: &str, system: &str, version: &str) -> PathBuf {
    copy_dir(&example_output(system, version), &dir.join(name))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A copy of an example output in `dir/name` whose `file` is a link saying
/// `says`.
fn output_with_link(
    dir: &Path,
    name: &str,
    (system, version): (&str, &str),
    file: &str,
    says: &Path,
) -> PathBuf {
    let out = copy_output(dir, name, system, version);
    std::fs::remove_file(out.join(file)).unwrap();
    symlink(says, out.join(file)).unwrap();
    out
}

/// The needles of a refused link: the arch, the link, what it says, where
/// it ends, and what to do.
fn foreign_link(link: &Path, says: &Path, ends: &Path) -> Vec<String> {
    vec![
        format!(
            "arm64: {} is a symlink to {}",
            link.display(),
            says.display()
        ),
        canonical(ends),
        "outside the build output and /nix/store".into(),
        "copy it into the output if it belongs there".into(),
    ]
}

/// Hole 1: a build output is untrusted. A link named like a payload that
/// leads out of it (directly, through a chain of links, or into a sibling
/// whose name merely starts like the output's) is refused by `release` and
/// `repair` before anything is read, naming the link and where it leads;
/// the key never reaches the store. Links into the output are followed.
#[test]
fn a_link_from_a_build_output_to_the_release_key_is_refused_and_never_published() {
    let ch = Channel::new("");
    exec(&ch, &argv(&["release"], &output_args("17")), 0);
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let secret = ch.keys.secret.clone();
    let arm18 = ("aarch64-linux", "18");
    let appliance = "appliance_18.efi.xz";

    // A chain: the output's link → a harmless-looking link elsewhere → the key.
    std::fs::create_dir(w.join("hop")).unwrap();
    symlink(&secret, w.join("hop/uki.efi.xz")).unwrap();
    // A sibling named like the output plus a suffix is not inside it.
    std::fs::create_dir(w.join("out-keys")).unwrap();
    let sibling = w.join("out-keys/release.asc");
    std::fs::copy(&secret, &sibling).unwrap();
    let hop = Path::new("../hop/uki.efi.xz");
    for (name, says, ends) in [
        ("direct", &*secret, &*secret),
        ("chain", hop, &*secret),
        ("out", &*sibling, &*sibling),
    ] {
        let out = output_with_link(w, name, arm18, appliance, says);
        let mut outputs = output_args("18");
        outputs[3] = format!("aarch64-linux={}", out.display());
        let needles = foreign_link(&out.join(appliance), says, ends);
        refused(&ch, &argv(&["release"], &outputs), &strs(&needles), &[w]);
    }

    // `repair` takes build outputs too: arm64's served 17 is damaged, and
    // the output offered to upload it again links to the key.
    std::fs::write(ch.store.join("arm64/appliance_17.efi.xz"), b"bit rot").unwrap();
    let name = "appliance_17.efi.xz";
    let out = output_with_link(w, "repair", ("aarch64-linux", "17"), name, &secret);
    let needles = foreign_link(&out.join(name), &secret, &secret);
    let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
    refused(
        &ch,
        &argv(&["repair"], &output("arm64", &out)),
        &needles,
        &[w],
    );
    let good = example_output("aarch64-linux", "17");
    exec(&ch, &argv(&["repair"], &output("arm64", &good)), 0);

    // The key's bytes are nowhere in the store, not even a line of them.
    let key = std::fs::read(&secret).unwrap();
    let line = key
        .split(|b| *b == b'\n')
        .max_by_key(|l| l.len())
        .unwrap()
        .to_vec();
    for (path, node) in tree(&ch.store) {
        if let Node::File(bytes) = node {
            assert!(
                !contains(&bytes, &key) && !contains(&bytes, &line),
                "{} holds the secret key",
                path.display()
            );
        }
    }

    // A link into the output is fine: nix's `result`, even through a chain.
    let farm = copy_output(w, "farm", "aarch64-linux", "18");
    symlink(&farm, w.join("result-1")).unwrap();
    symlink(w.join("result-1"), w.join("result")).unwrap();
    let mut outputs = output_args("18");
    outputs[3] = format!("aarch64-linux={}", w.join("result").display());
    exec(&ch, &argv(&["release"], &outputs), 0);
    let served = ch.store.join("arm64").join(appliance);
    assert!(std::fs::symlink_metadata(&served).unwrap().is_file());
    assert_eq!(
        std::fs::read(&served).unwrap(),
        std::fs::read(farm.join(appliance)).unwrap()
    );
    assert_sound(&ch);
}

/// Hole 2: one build output serving two arches would publish one
/// architecture's binaries for another; refused however the directory is
/// spelled, naming both arches.
#[test]
fn the_same_build_output_for_two_arches_is_refused_however_it_is_spelled() {
    let ch = Channel::new("");
    exec(&ch, &argv(&["release"], &output_args("17")), 0);
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let d = copy_output(w, "x86", "x86_64-linux", "18");
    symlink(&d, w.join("alias")).unwrap();
    for second in [
        d.clone(),
        w.join("alias"),
        d.join("."),
        w.join("alias/../x86"),
    ] {
        let mut outputs = output_args("18");
        outputs[1] = format!("x86_64-linux={}", d.display());
        outputs[3] = format!("aarch64-linux={}", second.display());
        refused(
            &ch,
            &argv(&["release"], &outputs),
            &[
                &format!(
                    "arm64: the build output {} is also given for x86-64",
                    canonical(&d)
                ),
                "each architecture needs its own build",
            ],
            &[w],
        );
    }
    // The other way round: one arch given two outputs is a usage error.
    let mut outputs = output_args("18");
    outputs.extend(output("x86-64", &d));
    refused_with(
        2,
        &ch,
        &argv(&["release"], &outputs),
        &["--output: x86-64 given twice"],
        &[w],
    );
    assert_sound(&ch);
}

/// Rewrites `name` in a build output with other bytes.
fn tamper(dir: &Path, name: &str) {
    let mut bytes = std::fs::read(dir.join(name)).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(dir.join(name), bytes).unwrap();
}

/// Hole 3, retention: 17 is dropped and its payloads deleted, but its
/// names stay taken; other bytes under them are refused, naming the file
/// and the history entry; the original bytes may come back.
#[test]
fn a_version_retention_dropped_comes_back_only_with_its_own_bytes() {
    let ch = Channel::new("keep = 1");
    exec(&ch, &argv(&["release"], &output_args("17")), 0);
    exec(&ch, &argv(&["release"], &output_args("18")), 0);
    assert_eq!(ch.stored("_17"), 0, "keep = 1 deletes 17's payloads");
    let work = tempfile::tempdir().unwrap();
    let other = copy_output(work.path(), "x86", "x86_64-linux", "17");
    tamper(&other, "store_17.img.xz");
    let recorded = sha256_hex(
        &std::fs::read(example_output("x86_64-linux", "17").join("store_17.img.xz")).unwrap(),
    );
    let found = sha256_hex(&std::fs::read(other.join("store_17.img.xz")).unwrap());
    let mut outputs = output_args("17");
    outputs[1] = format!("x86_64-linux={}", other.display());
    refused(
        &ch,
        &argv(&["release", "--allow-downgrade"], &outputs),
        &[
            "x86-64: store_17.img.xz was published before (history entry #1)",
            &recorded,
            &found,
            "publish a new version",
        ],
        &[work.path()],
    );
    exec(
        &ch,
        &argv(&["release", "--allow-downgrade"], &output_args("17")),
        0,
    );
    for arch in ARCHES {
        assert!(ch.manifest(arch).contains("store_17.img.xz"), "{arch}");
    }
    assert_sound(&ch);
}

/// Hole 3, withdrawn then pruned: the same, and bringing it back takes
/// `--unyank`.
#[test]
fn a_withdrawn_version_retention_dropped_comes_back_only_with_its_own_bytes_and_unyank() {
    let ch = Channel::new("keep = 2");
    let dir = ch.dir.path();
    for v in ["17", "18"] {
        exec(&ch, &argv(&["release"], &fake_outputs(dir, v)), 0);
    }
    ch.run(&["yank", "18", "--reason", "bricks rev B"], 0);
    for v in ["19", "20"] {
        exec(&ch, &argv(&["release"], &fake_outputs(dir, v)), 0);
    }
    assert_eq!(ch.stored("_18"), 0, "retention deleted 18's payloads");
    let work = tempfile::tempdir().unwrap();
    let other = copy_dir(
        &fake_output(dir, "aarch64-linux", "18"),
        &work.path().join("arm64"),
    );
    tamper(&other, "appliance_18.efi.xz");
    let mut outputs = fake_outputs(dir, "18");
    outputs[3] = format!("aarch64-linux={}", other.display());
    refused(
        &ch,
        &argv(&["release", "--unyank", "--allow-downgrade"], &outputs),
        &["arm64: appliance_18.efi.xz was published before (history entry #2)"],
        &[work.path()],
    );
    let original = fake_outputs(dir, "18");
    refused(
        &ch,
        &argv(&["release", "--allow-downgrade"], &original),
        &["version 18 was withdrawn", "bricks rev B", "pass --unyank"],
        &[],
    );
    exec(
        &ch,
        &argv(&["release", "--unyank", "--allow-downgrade"], &original),
        0,
    );
    for arch in ARCHES {
        assert!(ch.manifest(arch).contains("appliance_18.efi.xz"), "{arch}");
    }
    assert_sound(&ch);
}

/// Hole 4: the store's internal directories are never followed when they
/// are links: a link to a directory outside holding payloads (or
/// generations) the cleanup would delete is refused by every command,
/// naming it and saying to move it away.
#[test]
fn linked_internal_directories_of_the_store_are_never_followed() {
    for internal in [
        ".payloads/x86-64",
        ".payloads",
        ".generations/x86-64",
        ".generations",
    ] {
        let ch = Channel::new("keep = 2");
        let dir = ch.dir.path();
        for v in ["17", "18"] {
            exec(&ch, &argv(&["release"], &fake_outputs(dir, v)), 0);
        }
        let work = tempfile::tempdir().unwrap();
        let moved = work.path().join("moved");
        let path = ch.store.join(internal);
        std::fs::rename(&path, &moved).unwrap();
        symlink(&moved, &path).unwrap();
        // What a cleanup would delete if it went through the link: 17's
        // payloads (the next release drops 17), and an old generation.
        if internal.starts_with(".generations") {
            let gens = ch.store.join(".generations/x86-64");
            let current = std::fs::read_link(ch.store.join("x86-64")).unwrap();
            copy_dir(&gens.join(current.file_name().unwrap()), &gens.join("1"));
        }
        let needles = [
            &*format!("{}: is a symlink", path.display()),
            "never follows links inside a store",
            "Move it away",
        ];
        let new = fake_outputs(dir, "19");
        for args in [
            vec!["status".to_string()],
            argv(&["release"], &new),
            argv(&["yank", "18", "--reason", "x"], &[]),
            argv(&["unyank", "18"], &[]),
            argv(&["rollback", "17"], &[]),
            argv(&["refresh"], &[]),
            argv(&["repair"], &[]),
            argv(&["adopt"], &[]),
        ] {
            refused(&ch, &args, &needles, &[work.path()]);
        }
        // Moved back, the next release drops 17 and deletes its payloads,
        // inside the store only.
        std::fs::remove_file(&path).unwrap();
        std::fs::rename(&moved, &path).unwrap();
        exec(&ch, &argv(&["release"], &new), 0);
        assert_eq!(ch.stored("_17"), 0, "{internal}");
        assert_sound(&ch);
    }
}

/// Hole 5: rollback never brings back what an earlier rollback withdrew
/// (that is `unyank`'s job); and a release of what is already published
/// everywhere writes nothing, history included.
#[test]
fn rollback_does_not_undo_a_rollback_and_a_no_op_release_writes_nothing() {
    let ch = Channel::new("keep = 3");
    let dir = ch.dir.path();
    for v in ["17", "18", "19"] {
        exec(&ch, &argv(&["release"], &fake_outputs(dir, v)), 0);
    }
    ch.run(&["rollback", "17", "--reason", "18 and 19 brick"], 0);
    refused(
        &ch,
        &argv(&["rollback", "18"], &[]),
        &[
            "version 18 was withdrawn (rollback at",
            "18 and 19 brick",
            "sysupdate-publish unyank 18",
        ],
        &[],
    );
    ch.run(&["unyank", "18"], 0);
    for arch in ARCHES {
        let m = ch.manifest(arch);
        assert!(
            m.contains("_17") && m.contains("_18") && !m.contains("_19"),
            "{arch}: {m}"
        );
    }
    assert_sound(&ch);

    let ledger = std::fs::read(ch.store.join("ledger.jsonl")).unwrap();
    let watch = Watch::new(&ch, &[]);
    let out = exec(&ch, &argv(&["release"], &fake_outputs(dir, "18")), 0);
    assert!(
        common::stdout(&out).contains("already published"),
        "{}",
        common::stdout(&out)
    );
    assert_eq!(
        std::fs::read(ch.store.join("ledger.jsonl")).unwrap(),
        ledger
    );
    watch.assert_unchanged("a release of what is published");
    ch.run(&["unyank", "18"], 0);
    watch.assert_unchanged("unyank of what is back");
    assert_sound(&ch);
}

/// Hole 6: a directory in the store that is no arch (`docs/`) is someone
/// else's: not an arch to `status`, not touched by any write.
#[test]
fn a_directory_in_the_store_that_is_no_arch_is_left_alone() {
    let ch = Channel::new("keep = 3");
    let dir = ch.dir.path();
    let docs = ch.store.join("docs");
    std::fs::create_dir_all(docs.join("x86-64")).unwrap();
    std::fs::write(docs.join("index.html"), "<h1>updates</h1>\n").unwrap();
    std::fs::write(docs.join("x86-64/SHA256SUMS"), "not a manifest\n").unwrap();
    let docs_before = tree(&docs);
    let check = |what: &str| {
        assert!(tree(&docs) == docs_before, "{what} touched docs/");
        let r = ch.json(&["status"], 0);
        let arches: Vec<&str> = r["arches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["arch"].as_str().unwrap())
            .collect();
        assert_eq!(arches, ARCHES, "after {what}");
        assert!(!r.to_string().contains("docs"), "after {what}: {r}");
    };
    for v in ["17", "18", "19"] {
        exec(&ch, &argv(&["release"], &fake_outputs(dir, v)), 0);
        check(&format!("release {v}"));
    }
    for args in [
        &["yank", "19", "--reason", "x"][..],
        &["unyank", "19"],
        &["rollback", "18"],
        &["refresh"],
        &["repair"],
        &["adopt"],
    ] {
        ch.run(args, 0);
        check(&args.join(" "));
    }
    assert_sound(&ch);
}

/// Hole 7: a write is planned for every arch before anything is written;
/// one arch's refusal leaves every arch as it was, history included.
#[test]
fn a_write_one_arch_refuses_changes_no_arch() {
    let ch = Channel::new("keep = 3");
    let dir = ch.dir.path();
    exec(&ch, &argv(&["release"], &fake_outputs(dir, "17")), 0);
    let x86_18 = output("x86_64-linux", &fake_output(dir, "x86_64-linux", "18"));
    exec(&ch, &argv(&["release", "--partial"], &x86_18), 0);
    refused(
        &ch,
        &argv(
            &[
                "yank", "17", "--arch", "x86-64", "--arch", "arm64", "--reason", "x",
            ],
            &[],
        ),
        &[
            "arm64: 17 is the only published version",
            "Publish a fixed version",
        ],
        &[],
    );
    assert!(ch.manifest("x86-64").contains("_17"));

    // A release x86-64 plans fine and arm64 refuses: a payload left on the
    // hosting under one of arm64's new names, with other bytes.
    let pool = ch.store.join(".payloads/arm64");
    std::fs::write(
        pool.join("store_19.img.xz"),
        b"left by an interrupted release",
    )
    .unwrap();
    let mut outputs = output("x86_64-linux", &fake_output(dir, "x86_64-linux", "19"));
    outputs.extend(output(
        "aarch64-linux",
        &fake_output(dir, "aarch64-linux", "19"),
    ));
    refused(
        &ch,
        &argv(&["release", "--partial"], &outputs),
        &[
            "arm64: store_19.img.xz exists in",
            "Delete it, or publish a new version",
        ],
        &[],
    );
    std::fs::remove_file(pool.join("store_19.img.xz")).unwrap();
    exec(&ch, &argv(&["release", "--partial"], &outputs), 0);
    assert_sound(&ch);
}
