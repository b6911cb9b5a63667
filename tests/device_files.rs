//! `device-files`: a device's definitions come from the publisher's own
//! transfer directory, checked as a release checks it, and fetch from the
//! channel being published.

mod common;

use common::*;

fn device_files(
    config: &std::path::Path,
    out: &std::path::Path,
    expect: i32,
) -> std::process::Output {
    run(
        bin()
            .arg("--config")
            .arg(config)
            .args(["--json", "device-files", "--out"])
            .arg(out),
        expect,
    )
}

#[test]
fn the_publishers_transfer_files_are_written_byte_for_byte() {
    let ch = TestChannel::new("");
    let out = ch.dir.path().join("etc/sysupdate.d");
    let done = device_files(&ch.config, &out, 0);
    let report: serde_json::Value = serde_json::from_slice(&done.stdout).unwrap();
    assert_eq!(
        report["files"],
        serde_json::json!(["50-uki.transfer", "60-store.transfer"])
    );
    assert_eq!(report["schema"], 1, "{report}");
    let example = repo().join("examples/minimal/sysupdate.d");
    assert_eq!(snapshot(&out), snapshot(&example));
    // Written again over itself: the same files, no complaint.
    device_files(&ch.config, &out, 0);
    assert_eq!(snapshot(&out), snapshot(&example));
}

#[test]
fn stray_definitions_a_foreign_url_and_a_file_as_out_are_refused() {
    let ch = TestChannel::new("");
    let out = ch.dir.path().join("defs");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("40-old.transfer"), "[Source]\n").unwrap();
    let err = stderr(&device_files(&ch.config, &out, 1));
    assert!(
        err.contains("40-old.transfer") && err.contains("devices would read them too"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        1,
        "something was written"
    );

    let text = std::fs::read_to_string(&ch.config).unwrap();
    std::fs::write(
        &ch.config,
        text.replace(
            "https://updates.example.com/stable",
            "https://updates.example.com/canary",
        ),
    )
    .unwrap();
    let fresh = ch.dir.path().join("fresh");
    let err = stderr(&device_files(&ch.config, &fresh, 1));
    assert!(
        err.contains("50-uki.transfer: [Source] Path=https://updates.example.com/stable/x86-64/ is not below channel default's url https://updates.example.com/canary"),
        "{err}"
    );
    assert!(!fresh.exists(), "a refusal wrote files");

    let file = ch.dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let err = stderr(&device_files(&ch.config, &file, 2));
    assert!(err.contains("is a file, not a directory"), "{err}");
}
