//! The operator's commands as devices see them: the real systemd-sysupdate
//! 257 (trixie chroot) after yank, unyank and rollback (issue 6).

mod common;
#[path = "e2e/harness.rs"]
mod harness;

use common::run;
use harness::{Channel, Device};

fn op(ch: &Channel, args: &[&str]) -> serde_json::Value {
    let out = run(
        common::bin()
            .arg("--config")
            .arg(&ch.config)
            .arg("--json")
            .args(args),
        0,
    );
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

#[test]
fn after_yank_a_device_at_16_installs_17_and_unyank_brings_18_back_without_upload() {
    let ch = Channel::new("keep = 3");
    ch.release("17");
    ch.release("18");
    op(&ch, &["yank", "18", "--reason", "bricks rev B"]);

    let dev = Device::up(&ch, "16");
    assert_eq!(
        dev.check_new().as_deref(),
        Some("17"),
        "after yank 18 the candidate must be 17"
    );
    dev.sysupdate(&["update"]).status(0, "update must succeed");
    dev.assert_installed(&["16", "17"]);

    op(&ch, &["unyank", "18"]);
    assert_eq!(
        dev.check_new().as_deref(),
        Some("18"),
        "unyank makes 18 the candidate again"
    );

    // The other undo: `release` of the same outputs, zero payload bytes.
    op(&ch, &["yank", "18", "--reason", "again"]);
    let out = run(
        common::bin()
            .arg("--config")
            .arg(&ch.config)
            .args(["--json", "release", "--unyank", "--output"])
            .arg(format!("x86_64-linux={}", ch.output("18", true).display())),
        0,
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["upload_bytes"], 0, "{r}");
    assert_eq!(dev.check_new().as_deref(), Some("18"));
}

#[test]
fn after_rollback_a_device_at_16_installs_17_and_one_at_19_reports_no_update() {
    let ch = Channel::new("keep = 3");
    for v in ["17", "18", "19"] {
        ch.release(v);
    }
    let at19 = Device::up(&ch, "19");
    op(&ch, &["rollback", "17", "--reason", "18 and 19 are bad"]);

    let at16 = Device::up(&ch, "16");
    assert_eq!(at16.check_new().as_deref(), Some("17"));
    at16.sysupdate(&["update"]).status(0, "update must succeed");
    at16.assert_installed(&["16", "17"]);

    // systemd-sysupdate never downgrades on its own: the device at 19 keeps
    // 19 and sees nothing to do (documented in the README and `rollback --help`).
    assert_eq!(
        at19.check_new(),
        None,
        "a device at 19 must report no update"
    );
    at19.sysupdate(&["update"])
        .status(0, "update with nothing newer succeeds")
        .says("No update needed", "systemd's own words");
    at19.assert_installed(&["19"]);
}
