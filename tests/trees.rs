//! Directory build outputs as url-tar payloads (issue 15): packed
//! reproducibly (the same tree gives the same bytes, wherever it lies and
//! whenever it was written), only for transfers whose source is url-tar,
//! and never with a device node or fifo inside.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

const TREE: &str =
    "[Source]\nType=url-tar\nPath=https://updates.example.com/%a/\nMatchPattern=tree_@v.tar.xz\n\
[Target]\nType=directory\nPath=/var/lib/trees\nMatchPattern=tree_@v\n";
const FILE: &str =
    "[Source]\nType=url-file\nPath=https://updates.example.com/%a/\nMatchPattern=tree_@v.tar.xz\n\
[Target]\nType=regular-file\nPath=/var/lib/trees\nMatchPattern=tree_@v.tar\n";

/// A channel whose one transfer is `transfer`, in a directory store.
struct Chan {
    dir: tempfile::TempDir,
    keys: Keys,
    store: PathBuf,
    config: PathBuf,
}

impl Chan {
    fn new(transfer: &str) -> Chan {
        Chan::with(transfer, "")
    }

    /// With `extra` at the end of the config (e.g. `[specifiers]`).
    fn with(transfer: &str, extra: &str) -> Chan {
        let dir = tempfile::tempdir().unwrap();
        let transfers = dir.path().join("sysupdate.d");
        std::fs::create_dir(&transfers).unwrap();
        std::fs::write(transfers.join("70-tree.transfer"), transfer).unwrap();
        let keys = keygen();
        let store = dir.path().join("public");
        let config = write_config_with(dir.path(), &store, &keys, "", &transfers, extra);
        Chan {
            dir,
            keys,
            store,
            config,
        }
    }

    fn release(&self, output: &Path, env: &[(&str, &str)], expect: i32) -> Output {
        let mut cmd = bin();
        cmd.envs(env.iter().copied())
            .arg("--config")
            .arg(&self.config)
            .args(["release", "--output"])
            .arg(format!("x86-64={}", output.display()));
        run(&mut cmd, expect)
    }

    fn served(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.store.join("x86-64").join(name)).unwrap()
    }
}

/// A build output holding the directory `tree_<version>`: nested
/// directories, an empty one, an executable, links inside and out.
fn output(under: &Path, version: &str) -> PathBuf {
    let out = under.join(format!("out-{version}"));
    let root = out.join(format!("tree_{version}"));
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::create_dir_all(root.join("var/empty")).unwrap();
    std::fs::write(
        root.join("usr/bin/tool"),
        format!("#!/bin/sh\necho {version}\n"),
    )
    .unwrap();
    std::fs::set_permissions(
        root.join("usr/bin/tool"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(root.join("version"), version).unwrap();
    std::os::unix::fs::symlink("usr/bin/tool", root.join("tool")).unwrap();
    std::os::unix::fs::symlink("/etc/os-release", root.join("os-release")).unwrap();
    out
}

/// Unpacks a published `.tar.xz` with GNU tar and compares it with `tree`.
fn assert_unpacks_to(payload: &[u8], tree: &Path) {
    let x = tempfile::tempdir().unwrap();
    let file = x.path().join("p.tar.xz");
    std::fs::write(&file, payload).unwrap();
    let root = x.path().join("root");
    std::fs::create_dir(&root).unwrap();
    run(
        Command::new("tar")
            .arg("-C")
            .arg(&root)
            .args(["--numeric-owner", "-pxJf"])
            .arg(&file),
        0,
    );
    assert_same_tree(tree, &root, "the unpacked payload");
    let mode = std::fs::metadata(root.join("usr/bin/tool"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
}

#[test]
fn a_directory_output_is_published_as_the_same_tar_every_time() {
    let a = Chan::new(TREE);
    let out = output(a.dir.path(), "18");
    let err = stderr(&a.release(&out, &[], 0));
    assert!(
        err.contains("packed directory tree_18 as tree_18.tar"),
        "{err}"
    );
    let first = a.served("tree_18.tar.xz");
    assert_unpacks_to(&first, &out.join("tree_18"));
    assert_channel_verifies(&a.store, &a.keys.keyring);

    // The same tree written again elsewhere, later (other inodes, mtimes).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let b = Chan::new(TREE);
    let again = output(b.dir.path(), "18");
    b.release(&again, &[], 0);
    assert!(b.served("tree_18.tar.xz") == first, "not reproducible");

    // SOURCE_DATE_EPOCH sets every mtime (so other bytes).
    let c = Chan::new(TREE);
    c.release(&again, &[("SOURCE_DATE_EPOCH", "1700000000")], 0);
    let dated = c.served("tree_18.tar.xz");
    assert!(dated != first);
    let listing = run(
        Command::new("sh").arg("-c").arg(format!(
            "tar -tvJf {} --full-time | head -3",
            c.store.join("x86-64/tree_18.tar.xz").display()
        )),
        0,
    );
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    assert!(listing.contains("2023-11-14 22:13:20"), "{listing}");
    assert!(listing.contains(" 0/0 "), "{listing}");
}

/// A rerun on an unchanged tree neither packs nor compresses it: the copy
/// the first run kept is published. Any change below it (a new file, a
/// mode) is noticed without reading a byte, and packed again.
#[test]
fn a_rerun_on_an_unchanged_tree_packs_nothing() {
    let ch = Chan::new(TREE);
    let out = output(ch.dir.path(), "18");
    let release = |expect| {
        let mut cmd = bin();
        cmd.arg("--config")
            .arg(&ch.config)
            .args(["--json", "release", "--output"])
            .arg(format!("x86-64={}", out.display()));
        let out = run(&mut cmd, expect);
        // A refusal prints no report.
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        (report, stderr(&out))
    };
    let (first, err) = release(0);
    assert!(err.contains("packed directory tree_18"), "{err}");
    assert!(first["read_bytes"].as_u64().unwrap() > 0, "{first}");
    let payload = ch.served("tree_18.tar.xz");

    let (again, err) = release(0);
    assert_eq!(again["already_published"], true, "{again}");
    assert_eq!(again["read_bytes"], 0, "{again}");
    assert!(!err.contains("packed directory"), "{err}");

    let tool = out.join("tree_18/usr/bin/tool");
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o700)).unwrap();
    let (_, err) = release(1);
    assert!(err.contains("packed directory tree_18"), "{err}");
    assert!(
        err.contains("already published with different content"),
        "{err}"
    );
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (back, err) = release(0);
    assert!(err.contains("packed directory tree_18"), "{err}");
    assert_eq!(back["already_published"], true, "{back}");
    assert!(ch.served("tree_18.tar.xz") == payload);

    std::fs::write(out.join("tree_18/var/empty/new"), "").unwrap();
    let (_, err) = release(1);
    assert!(
        err.contains("already published with different content"),
        "{err}"
    );
}

#[test]
fn a_directory_for_a_url_file_transfer_is_refused_naming_both() {
    let ch = Chan::new(FILE);
    let out = output(ch.dir.path(), "18");
    let err = stderr(&ch.release(&out, &[], 1));
    for needle in [
        "tree_18 is a directory, packed as tree_18.tar.xz for transfer 70-tree",
        "Type=url-file",
        "Type=url-tar",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    assert!(!ch.store.join("x86-64").exists(), "a refusal published");
}

#[test]
fn a_fifo_or_device_node_in_a_directory_output_is_refused() {
    let ch = Chan::new(TREE);
    let out = output(ch.dir.path(), "18");
    let fifo = out.join("tree_18/var/pipe");
    run(Command::new("mkfifo").arg(&fifo), 0);
    let err = stderr(&ch.release(&out, &[], 1));
    assert!(err.contains("var/pipe is a fifo"), "{err}");
    assert!(!ch.store.join("x86-64").exists(), "a refusal published");
}

/// `[specifiers.SYSTEM]`: each output's devices have their own host
/// version, so each arch publishes the names its devices look for; a name
/// for another arch's host version is refused.
#[test]
fn per_output_specifiers_name_each_arch_for_its_own_devices() {
    let ch = Chan::with(
        "[Source]\nType=url-file\nPath=https://updates.example.com/stable/%a/\nMatchPattern=tools-@v-%w-%a.raw.xz\n\n\
         [Target]\nType=regular-file\nPath=/var/lib/extensions.d\nMatchPattern=tools-@v-%w-%a.raw\n",
        "[specifiers]\nw = \"40\"\n[specifiers.aarch64-linux]\nw = \"39\"\n",
    );
    let (dir, store, config) = (&ch.dir, ch.store.clone(), ch.config.clone());
    let out = |arch: &str, w: &str| {
        let d = dir.path().join(format!("out-{arch}-{w}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join(format!("tools-2-{w}-{arch}.raw")),
            format!("{arch} {w}"),
        )
        .unwrap();
        d
    };
    let release = |x86: &Path, arm: &Path, expect: i32| {
        run(
            bin()
                .arg("--config")
                .arg(&config)
                .args(["release", "--output"])
                .arg(format!("x86-64={}", x86.display()))
                .arg("--output")
                .arg(format!("arm64={}", arm.display())),
            expect,
        )
    };
    let err = stderr(&release(&out("x86-64", "40"), &out("arm64", "40"), 1));
    assert!(err.contains("tools-2-40-arm64.raw"), "{err}");
    release(&out("x86-64", "40"), &out("arm64", "39"), 0);
    for (arch, name) in [
        ("x86-64", "tools-2-40-x86-64.raw.xz"),
        ("arm64", "tools-2-39-arm64.raw.xz"),
    ] {
        let m = std::fs::read_to_string(store.join(arch).join("SHA256SUMS")).unwrap();
        assert!(m.contains(&format!("*{name}\n")), "{arch}: {m}");
    }
    // status reads each arch with its own values: nothing unmatched.
    run(bin().arg("--config").arg(&config).arg("status"), 0);

    // The x86-64 devices move to host version 41: what was published for 40
    // is no longer theirs, and status says what they look for instead.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replacen("w = \"40\"", "w = \"41\"", 1)).unwrap();
    let out = run(bin().arg("--config").arg(&config).arg("status"), 1);
    let report = stdout(&out);
    assert!(
        report.contains("tools-2-40-x86-64.raw.xz is listed but matches no transfer file")
            && report.contains("they look for tools-@v-41-x86-64.raw.xz")
            && report.contains("another host version"),
        "{report}"
    );
}
