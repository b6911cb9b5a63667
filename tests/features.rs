//! Optional features (`Features=`): completeness counts every transfer a
//! device may enable, and `status` says per feature which versions a
//! device that enables it can install.

mod common;

use std::path::Path;

use common::*;

const DEBUG: &str = "[Transfer]\nFeatures=debug\n\n[Source]\nType=url-file\nPath=https://updates.example.com/stable/%a/\nMatchPattern=debug_@v.raw.xz\n\n\
[Target]\nType=regular-file\nPath=/var/lib/debug\nMatchPattern=debug_@v.raw\n";

/// The example's build output of `version` for x86-64, plus a debug image.
fn output(under: &Path, version: &str, debug: bool) -> std::path::PathBuf {
    let dir = under.join(format!("out-{version}"));
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(example_output("x86_64-linux", "18")).unwrap() {
        let name = e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .replace("_18.", &format!("_{version}."));
        let mut bytes = std::fs::read(
            example_output("x86_64-linux", "18")
                .join(name.replace(&format!("_{version}."), "_18.")),
        )
        .unwrap();
        bytes.extend_from_slice(version.as_bytes());
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    if debug {
        std::fs::write(
            dir.join(format!("debug_{version}.raw")),
            format!("debug {version}"),
        )
        .unwrap();
    }
    dir
}

#[test]
fn a_feature_added_later_makes_older_versions_incomplete_for_its_devices_only() {
    let dir = tempfile::tempdir().unwrap();
    let transfers = example_transfers_in(dir.path());
    let keys = keygen();
    let store = dir.path().join("public");
    let config = write_config_with(dir.path(), &store, &keys, "", &transfers, "");
    let release = |out: &Path, expect: i32| {
        let mut cmd = bin();
        cmd.arg("--config")
            .arg(&config)
            .args(["release", "--output"])
            .arg(format!("x86-64={}", out.display()));
        run(&mut cmd, expect)
    };
    release(&output(dir.path(), "17", false), 0);
    std::fs::write(transfers.join("70-debug.transfer"), DEBUG).unwrap();
    // Every transfer a device may enable counts: 18 without its debug image is refused.
    let err = stderr(&release(&output(dir.path(), "18", false), 1));
    assert!(err.contains("70-debug"), "{err}");
    release(&output(dir.path(), "19", true), 0);

    let status = run(
        bin()
            .arg("--config")
            .arg(&config)
            .args(["--json", "status"]),
        1,
    );
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let arch = &report["arches"][0];
    assert_eq!(
        arch["features"],
        serde_json::json!([{ "feature": "debug", "complete": ["19"] }]),
        "{arch}"
    );
    let v17 = arch["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["version"] == "17")
        .unwrap();
    assert_eq!(v17["complete"], false, "{v17}");
    assert_eq!(v17["missing"], serde_json::json!(["70-debug"]), "{v17}");

    let human = run(bin().arg("--config").arg(&config).arg("status"), 1);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("feature debug: complete in 19"), "{text}");
}
