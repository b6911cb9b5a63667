//! The real nix 2.8 (Debian nix-bin): parse checks of every .nix file, the
//! device transfer files generated from nix/lib.nix driving the publisher,
//! and `release` building the example flake itself.

mod common;

use std::process::Command;

use common::*;

/// Debian's nix-bin as root: no daemon, no nixbld group, no network.
const NIX_CONFIG: &str = "experimental-features = nix-command flakes\nsandbox = false\nsubstituters =\nbuild-users-group =";

fn nix_env(cmd: &mut Command) -> &mut Command {
    cmd.env("NIX_CONFIG", NIX_CONFIG)
}

#[test]
fn every_nix_file_parses() {
    let out = run(
        nix_env(&mut Command::new(repo().join("scripts/check-nix-parse"))),
        0,
    );
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    for f in [
        "flake.nix",
        "nix/lib.nix",
        "nix/module.nix",
        "examples/appliance/flake.nix",
        "examples/minimal/flake.nix",
    ] {
        assert!(
            listed.contains(&format!("ok      {f}")),
            "{f} not checked:\n{listed}"
        );
    }
}

#[test]
fn transfer_files_generated_by_nix_lib_drive_inspect_and_release() {
    let dir = tempfile::tempdir().unwrap();
    let generated = dir.path().join("sysupdate.d");
    run(
        nix_env(&mut Command::new(repo().join("scripts/nix-eval-transfers")))
            .arg(repo().join("examples/minimal/device.nix"))
            .arg(&generated),
        0,
    );
    // The committed example files are exactly what nix generates.
    for name in ["50-uki.transfer", "60-store.transfer"] {
        assert_eq!(
            std::fs::read(generated.join(name)).unwrap(),
            std::fs::read(repo().join("examples/minimal/sysupdate.d").join(name)).unwrap(),
            "{name} differs from nix/lib.nix's output"
        );
    }
    // The publisher reads the devices' own files: names and layout agree.
    for (system, version) in [("x86_64-linux", "17"), ("riscv64-linux", "18")] {
        let out = run(
            bin()
                .args(["--json", "inspect", "--arch", system, "--transfers"])
                .arg(&generated)
                .arg(example_output(system, version)),
            0,
        );
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["versions"][0]["version"], version);
        assert_eq!(r["versions"][0]["complete"], true);
    }
    let keys = keygen();
    let store = dir.path().join("public");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[channel]\nstore = {store:?}\n[signing]\nsecret-key = {:?}\nkeyring = {:?}\n[transfers]\ndir = {generated:?}\n",
            keys.secret, keys.keyring
        ),
    )
    .unwrap();
    let out = run(
        bin()
            .arg("--config")
            .arg(&config)
            .args(["--json", "release", "--dry-run"])
            .args(output_args("18")),
        0,
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["version"], "18");
    assert_eq!(r["arches"].as_array().unwrap().len(), 3);
    assert!(!store.exists(), "dry run created the store");
}

fn nix_config(dir: &std::path::Path, keys: &Keys, attribute: &str) -> std::path::PathBuf {
    let config = dir.join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[channel]\nstore = \"public\"\nkeep = 2\n[signing]\nsecret-key = {:?}\nkeyring = {:?}\n\
             [transfers]\ndir = {:?}\n\
             [nix]\nflake = \"path:{}\"\nattribute = {attribute:?}\nsystems = [\"x86_64-linux\", \"aarch64-linux\", \"riscv64-linux\"]\n",
            keys.secret,
            keys.keyring,
            repo().join("examples/minimal/sysupdate.d"),
            repo().join("examples/minimal").display()
        ),
    )
    .unwrap();
    config
}

#[test]
fn release_builds_every_system_with_nix_and_publishes_the_store_files() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keygen();
    let config = nix_config(
        dir.path(),
        &keys,
        "packages.{system}.appliance_{version}_update",
    );
    for version in ["17", "18", "19"] {
        run(
            nix_env(
                bin()
                    .arg("--config")
                    .arg(&config)
                    .args(["release", "--version", version]),
            ),
            0,
        );
    }
    let store = dir.path().join("public");
    assert_channel_verifies(&store, &keys.keyring);
    let m = std::fs::read_to_string(store.join("riscv64/SHA256SUMS")).unwrap();
    assert!(
        m.contains("*appliance_19.efi.xz\n") && m.contains("*store_18.img.xz\n"),
        "{m}"
    );
    assert!(!m.contains("_17"), "keep = 2 must have dropped 17:\n{m}");
    // Pre-compressed nix outputs on the store's filesystem are hard links
    // to the immutable store files (their read-only mode comes along; a copy
    // would be 0644), not copies.
    {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(store.join("riscv64/appliance_19.efi.xz")).unwrap();
        assert_eq!(m.mode() & 0o222, 0, "mode {:o}", m.mode());
        assert!(m.nlink() >= 3, "links: {}", m.nlink());
    }
    // The prebuilt example outputs are byte-identical to what nix builds.
    for (system, arch) in SYSTEMS.iter().zip(ARCHES) {
        for name in ["appliance_18.efi.xz", "store_18.img.xz"] {
            assert_eq!(
                std::fs::read(store.join(arch).join(name)).unwrap(),
                std::fs::read(example_output(system, "18").join(name)).unwrap(),
                "{arch}/{name}"
            );
        }
    }
    // Without --version the attribute cannot be built: a usage error.
    let out = run(
        nix_env(bin().arg("--config").arg(&config).arg("release")),
        2,
    );
    assert!(stderr(&out).contains("--version"), "{}", stderr(&out));
}

#[test]
fn raw_nix_outputs_are_compressed_to_names_the_transfers_match() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keygen();
    let config = nix_config(
        dir.path(),
        &keys,
        "packages.{system}.appliance_{version}_update_raw",
    );
    let out = run(
        nix_env(
            bin()
                .arg("--config")
                .arg(&config)
                .args(["--json", "release", "--version", "20"]),
        ),
        0,
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let uploads = r["arches"][0]["uploads"].to_string();
    assert!(
        uploads.contains("appliance_20.efi.xz") && uploads.contains("store_20.img.xz"),
        "{uploads}"
    );
    let store = dir.path().join("public");
    assert_channel_verifies(&store, &keys.keyring);
    let xz = Command::new("xz")
        .arg("-dc")
        .arg(store.join("arm64/store_20.img.xz"))
        .output()
        .unwrap();
    assert!(xz.status.success() && !xz.stdout.is_empty());
}

// ------------------------------------------------------------------ rings

/// A device description in `dir`: examples/minimal/device.nix updated with the
/// attribute set `extra` (nix text), and what nix/lib.nix's `etcFiles` makes of
/// it (`scripts/nix-eval-transfers --etc`) in `dir/etc`: the exit status and
/// stderr, and every file written, by relative path.
fn ring_etc(
    dir: &std::path::Path,
    extra: &str,
    expect: i32,
) -> (String, std::collections::BTreeMap<String, String>) {
    let device = dir.join("device.nix");
    std::fs::write(
        &device,
        format!(
            "(import {}) // {extra}\n",
            repo().join("examples/minimal/device.nix").display()
        ),
    )
    .unwrap();
    let etc = dir.join("etc");
    let _ = std::fs::remove_dir_all(&etc);
    let out = run(
        nix_env(&mut Command::new(repo().join("scripts/nix-eval-transfers")))
            .arg("--etc")
            .arg(&device)
            .arg(&etc),
        expect,
    );
    let mut files = std::collections::BTreeMap::new();
    if etc.exists() {
        for e in walk(&etc) {
            let rel = e.strip_prefix(&etc).unwrap().to_string_lossy().into_owned();
            files.insert(rel, std::fs::read_to_string(&e).unwrap());
        }
    }
    (stderr(&out), files)
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn example_transfer(name: &str) -> String {
    std::fs::read_to_string(repo().join("examples/minimal/sysupdate.d").join(name)).unwrap()
}

/// Without rings, or with `rings = [ ]`, a device's /etc is exactly the two
/// transfer files it had before rings existed (the committed example files,
/// generated before rings): no unit, no drop-in, no ring directory.
#[test]
fn a_ring_less_device_gets_exactly_the_files_it_had_before_rings() {
    let dir = tempfile::tempdir().unwrap();
    for extra in [
        "{ }",
        "{ rings = [ ]; }",
        "{ rings = [ ]; rolloutTag = \"fleet-2026\"; }",
    ] {
        let (_, files) = ring_etc(dir.path(), extra, 0);
        assert_eq!(
            files.keys().collect::<Vec<_>>(),
            [
                "sysupdate.d/50-uki.transfer",
                "sysupdate.d/60-store.transfer"
            ],
            "{extra}"
        );
        for name in ["50-uki.transfer", "60-store.transfer"] {
            assert_eq!(
                files[&format!("sysupdate.d/{name}")],
                example_transfer(name),
                "{extra}: {name}"
            );
        }
    }
}

/// Two rings: nested `ConditionFraction=` bands of one tag, the default unit
/// gets the complement, each ring a copy of the transfers pointed at its own
/// channel (the one beside the default when the ring names no url), and the
/// default channel's files do not change at all.
#[test]
fn rings_get_nested_bands_of_one_tag_and_their_own_transfer_sets() {
    let dir = tempfile::tempdir().unwrap();
    let (_, files) = ring_etc(
        dir.path(),
        r#"{ rings = [ { channel = "canary"; fraction = "10%"; } { channel = "beta"; url = "https://beta.example.net/x/"; fraction = "2.5%"; } ]; }"#,
        0,
    );
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        [
            "systemd/system/systemd-sysupdate.service.d/50-sysupdate-publish-rings.conf",
            "systemd/system/sysupdate-publish-ring-beta.service",
            "systemd/system/sysupdate-publish-ring-beta.timer",
            "systemd/system/sysupdate-publish-ring-canary.service",
            "systemd/system/sysupdate-publish-ring-canary.timer",
            "sysupdate-rings/beta.d/50-uki.transfer",
            "sysupdate-rings/beta.d/60-store.transfer",
            "sysupdate-rings/canary.d/50-uki.transfer",
            "sysupdate-rings/canary.d/60-store.transfer",
            "sysupdate.d/50-uki.transfer",
            "sysupdate.d/60-store.transfer",
        ]
    );
    let conditions = |path: &str| -> Vec<&str> {
        files[path]
            .lines()
            .filter_map(|l| l.strip_prefix("ConditionFraction="))
            .collect()
    };
    assert_eq!(
        conditions("systemd/system/sysupdate-publish-ring-canary.service"),
        ["sysupdate-publish 10%"]
    );
    assert_eq!(
        conditions("systemd/system/sysupdate-publish-ring-beta.service"),
        ["sysupdate-publish 12.5%", "!sysupdate-publish 10%"]
    );
    assert_eq!(
        conditions("systemd/system/systemd-sysupdate.service.d/50-sysupdate-publish-rings.conf"),
        ["!sysupdate-publish 12.5%"]
    );
    for (ring, url) in [
        ("canary", "https://updates.example.com/canary"),
        ("beta", "https://beta.example.net/x"),
    ] {
        let service = &files[&format!("systemd/system/sysupdate-publish-ring-{ring}.service")];
        assert!(
            service.contains(&format!(
                "\nExecStart=/usr/lib/systemd/systemd-sysupdate --definitions=/etc/sysupdate-rings/{ring}.d update\n"
            )),
            "{service}"
        );
        for name in ["50-uki.transfer", "60-store.transfer"] {
            // The default's text with only Path= changed.
            let want = example_transfer(name).replace(
                "Path=https://updates.example.com/stable/%a/\n",
                &format!("Path={url}/%a/\n"),
            );
            assert_ne!(want, example_transfer(name));
            assert_eq!(files[&format!("sysupdate-rings/{ring}.d/{name}")], want);
        }
    }
    for name in ["50-uki.transfer", "60-store.transfer"] {
        assert_eq!(
            files[&format!("sysupdate.d/{name}")],
            example_transfer(name)
        );
    }
    assert!(files["systemd/system/sysupdate-publish-ring-canary.timer"]
        .contains("\n[Install]\nWantedBy=timers.target\n"));
}

/// Rings that cannot give each device exactly one channel are refused when nix
/// evaluates them, with the reason.
#[test]
fn rings_that_overlap_or_do_not_parse_are_refused_by_nix() {
    let dir = tempfile::tempdir().unwrap();
    for (rings, why) in [
        (
            r#"[ { channel = "a"; fraction = "60%"; } { channel = "b"; fraction = "40.01%"; } ]"#,
            "add up to more than 100% (100.01%)",
        ),
        (
            r#"[ { channel = "a"; fraction = "1%"; } { channel = "a"; fraction = "1%"; } ]"#,
            "two rings name the same channel",
        ),
        (
            r#"[ { channel = "a"; fraction = "10"; } ]"#,
            "is not a percentage",
        ),
        (
            r#"[ { channel = "a"; fraction = "0.125%"; } ]"#,
            "is not a percentage",
        ),
        (
            r#"[ { channel = "a"; fraction = "0%"; } ]"#,
            "selects no machine",
        ),
        (
            r#"[ { channel = "../a"; fraction = "1%"; } ]"#,
            "channel must be a name",
        ),
    ] {
        let (err, files) = ring_etc(dir.path(), &format!("{{ rings = {rings}; }}"), 1);
        assert!(err.contains(why), "{rings}: want {why:?}, got:\n{err}");
        assert!(files.is_empty(), "{rings}: wrote {files:?}");
    }
    let (err, _) = ring_etc(
        dir.path(),
        r#"{ url = "https://updates.example.com"; rings = [ { channel = "a"; fraction = "1%"; } ]; }"#,
        1,
    );
    assert!(err.contains("give the ring a url"), "{err}");
    let (err, _) = ring_etc(
        dir.path(),
        r#"{ rolloutTag = "two words"; rings = [ { channel = "a"; fraction = "1%"; } ]; }"#,
        1,
    );
    assert!(err.contains("rolloutTag"), "{err}");
}

/// examples/sysext: nix builds the extension for host version 40 and its
/// data directory; the release publishes the names a device with
/// VERSION_ID=40 looks for, and `device-files` hands devices the very
/// transfer files the release was checked against.
#[test]
fn the_sysext_example_publishes_names_for_its_host_version() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keygen();
    let example = repo().join("examples/sysext");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[channel]\nstore = \"public\"\nurl = \"https://updates.example.com/sysext\"\n\
             [signing]\nsecret-key = {:?}\nkeyring = {:?}\n\
             [transfers]\ndir = {:?}\n[specifiers]\nw = \"40\"\n\
             [nix]\nflake = \"path:{}\"\nattribute = \"packages.{{system}}.tools_{{version}}\"\ncomponent-attribute = \"packages.{{system}}.{{component}}_{{version}}\"\nsystems = [\"x86_64-linux\", \"aarch64-linux\", \"riscv64-linux\"]\n",
            keys.secret,
            keys.keyring,
            example.join("sysupdate.d"),
            example.display()
        ),
    )
    .unwrap();
    run(
        nix_env(
            bin()
                .arg("--config")
                .arg(&config)
                .args(["release", "--version", "2"]),
        ),
        0,
    );
    let store = dir.path().join("public");
    // The channel verifies and every arch lists `names(arch)`.
    let assert_lists = |names: &dyn Fn(&str) -> [String; 2]| {
        assert_channel_verifies(&store, &keys.keyring);
        for arch in ARCHES {
            let m = std::fs::read_to_string(store.join(arch).join("SHA256SUMS")).unwrap();
            for name in names(arch) {
                assert!(m.contains(&format!("*{name}\n")), "{arch}: {m}");
            }
        }
    };
    assert_lists(&|arch| {
        [
            format!("tools-2-40-{arch}.raw.xz"),
            "tools-data_2.tar.xz".into(),
        ]
    });
    let out = dir.path().join("etc/sysupdate.d");
    run(
        bin()
            .arg("--config")
            .arg(&config)
            .args(["device-files", "--out"])
            .arg(&out),
        0,
    );
    assert_eq!(snapshot(&out), snapshot(&example.join("sysupdate.d")));

    // The webapp component, built by nix from component-attribute, joins
    // the same arch directories as a stream of its own.
    run(
        nix_env(bin().arg("--config").arg(&config).args([
            "--component",
            "webapp",
            "release",
            "--version",
            "7",
        ])),
        0,
    );
    assert_lists(&|arch| {
        [
            "webapp_7.raw.xz".to_string(),
            format!("tools-2-40-{arch}.raw.xz"),
        ]
    });
    let out = dir.path().join("etc/sysupdate.webapp.d");
    run(
        bin()
            .arg("--config")
            .arg(&config)
            .args(["--component", "webapp", "device-files", "--out"])
            .arg(&out),
        0,
    );
    assert_eq!(
        snapshot(&out),
        snapshot(&example.join("sysupdate.webapp.d"))
    );
    assert!(dir.path().join("etc/sysupdate.webapp.component").is_file());
}
