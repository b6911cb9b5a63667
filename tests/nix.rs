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
