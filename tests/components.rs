//! Components (systemd 262): `sysupdate.NAME.d` beside `sysupdate.d` is a
//! version stream of its own in the same arch directories. Releases,
//! retention, yank, unyank and rollback of one stream leave the other's
//! files as they are; a name two streams match is refused; `status` groups
//! versions by component; `device-files --component` writes what a device
//! needs for it.

mod common;

use std::path::PathBuf;

use common::*;

const WEBAPP: &str = "[Source]\nType=url-file\nPath=https://updates.example.com/stable/%a/\nMatchPattern=webapp_@v.raw.xz\n\n\
[Target]\nType=regular-file\nPath=/var/lib/machines\nMatchPattern=webapp_@v.raw\nInstancesMax=2\n";

/// A channel directory: the example's sysupdate.d and a webapp component.
struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    store: PathBuf,
    _keys: Keys,
}

impl Setup {
    fn new(extra_channel: &str, component_transfer: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let transfers = example_transfers_in(dir.path());
        let webapp = dir.path().join("sysupdate.webapp.d");
        std::fs::create_dir(&webapp).unwrap();
        std::fs::write(webapp.join("50-webapp.transfer"), component_transfer).unwrap();
        let keys = keygen();
        let store = dir.path().join("public");
        let config = write_config_with(dir.path(), &store, &keys, extra_channel, &transfers, "");
        Setup {
            dir,
            config,
            store,
            _keys: keys,
        }
    }

    fn cmd(&self, component: Option<&str>, args: &[&str]) -> std::process::Command {
        let mut cmd = bin();
        cmd.arg("--config").arg(&self.config);
        if let Some(c) = component {
            cmd.args(["--component", c]);
        }
        cmd.args(args);
        cmd
    }

    fn os(&self, version: &str, expect: i32) -> std::process::Output {
        let out = fake_output(self.dir.path(), "x86_64-linux", version);
        let mut cmd = self.cmd(None, &["release", "--output"]);
        cmd.arg(format!("x86-64={}", out.display()));
        run(&mut cmd, expect)
    }

    fn webapp(&self, version: &str, expect: i32) -> std::process::Output {
        let out = self.dir.path().join(format!("webapp-{version}"));
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(
            out.join(format!("webapp_{version}.raw")),
            format!("webapp image {version}\n").repeat(100),
        )
        .unwrap();
        let mut cmd = self.cmd(Some("webapp"), &["release", "--output"]);
        cmd.arg(format!("x86-64={}", out.display()));
        run(&mut cmd, expect)
    }

    fn status(&self, component: Option<&str>, expect: i32) -> serde_json::Value {
        let out = run(&mut self.cmd(component, &["--json", "status"]), expect);
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn listed(&self) -> Vec<String> {
        let m = std::fs::read_to_string(self.store.join("x86-64/SHA256SUMS")).unwrap();
        let mut names: Vec<String> = m
            .lines()
            .filter_map(|l| {
                l.split_once(' ')
                    .map(|(_, n)| n.trim_start_matches([' ', '*']).into())
            })
            .collect();
        names.sort();
        names
    }
}

fn versions(list: &serde_json::Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap().to_string())
        .collect()
}

/// (OS versions, webapp versions) of x86-64 as `status` groups them.
fn streams(status: &serde_json::Value) -> (Vec<String>, Vec<String>) {
    let arch = &status["arches"][0];
    let comps = arch["components"].as_array().cloned().unwrap_or_default();
    let webapp = comps
        .iter()
        .find(|c| c["component"] == "webapp")
        .map(|c| versions(&c["versions"]))
        .unwrap_or_default();
    (versions(&arch["versions"]), webapp)
}

#[test]
fn each_component_is_a_version_stream_of_its_own() {
    let s = Setup::new("keep = 2", WEBAPP);
    s.os("17", 0);
    s.os("18", 0);
    // Version 3 of the component is no downgrade of the OS's 18.
    s.webapp("3", 0);
    s.webapp("4", 0);
    s.webapp("5", 0);
    // Retention is per stream: two of each.
    assert_eq!(
        streams(&s.status(None, 0)),
        (vec!["18".into(), "17".into()], vec!["5".into(), "4".into()])
    );
    s.os("19", 0);
    assert_eq!(
        s.listed(),
        [
            "appliance_18.efi.xz",
            "appliance_19.efi.xz",
            "store_18.img.xz",
            "store_19.img.xz",
            "webapp_4.raw.xz",
            "webapp_5.raw.xz"
        ],
        "an OS release lists the component's files unchanged"
    );
    // An older component version is a downgrade within its own stream.
    let err = stderr(&s.webapp("2", 1));
    assert!(err.contains("newer") || err.contains("downgrade"), "{err}");

    // Yank is per stream: the OS has no version 5; the component has.
    let err = stderr(&run(&mut s.cmd(None, &["yank", "5", "--reason", "bad"]), 1));
    assert!(err.contains('5'), "{err}");
    run(
        &mut s.cmd(Some("webapp"), &["yank", "5", "--reason", "bad webapp"]),
        0,
    );
    let status = s.status(None, 0);
    assert_eq!(
        streams(&status),
        (vec!["19".into(), "18".into()], vec!["4".into()])
    );
    let pool = s.store.join(".payloads/x86-64/webapp_5.raw.xz");
    assert!(pool.exists(), "kept for unyank");
    let withdrawn = &status["withdrawn"][0];
    assert_eq!(withdrawn["component"], "webapp", "{status}");
    assert_eq!(withdrawn["version"], "5", "{status}");
    // The component's withdrawn payload is kept for unyank, through OS writes too.
    s.os("20", 0);
    assert!(pool.exists());
    run(&mut s.cmd(Some("webapp"), &["unyank", "5"]), 0);
    assert_eq!(
        streams(&s.status(None, 0)),
        (vec!["20".into(), "19".into()], vec!["5".into(), "4".into()])
    );

    // Rollback withdraws only the stream's newer versions.
    run(
        &mut s.cmd(Some("webapp"), &["rollback", "4", "--reason", "back"]),
        0,
    );
    assert_eq!(
        streams(&s.status(None, 0)),
        (vec!["20".into(), "19".into()], vec!["4".into()])
    );
    // Seen from the component, the OS is the other stream.
    let status = s.status(Some("webapp"), 0);
    assert_eq!(versions(&status["arches"][0]["versions"]), ["4"]);
    assert_eq!(
        status["arches"][0]["components"][0]["component"],
        serde_json::Value::Null
    );

    // The history says which stream every entry is about.
    let ledger = std::fs::read_to_string(s.store.join("ledger.jsonl")).unwrap();
    let with_component = ledger
        .lines()
        .filter(|l| l.contains(r#""component":"webapp""#))
        .count();
    assert_eq!(with_component, 6, "{ledger}");

    let text = stdout(&run(&mut s.cmd(None, &["status"]), 0));
    assert!(text.contains("component webapp:"), "{text}");
    assert!(text.contains("component webapp 4"), "{text}");
}

#[test]
fn a_name_two_streams_match_is_refused_naming_both_transfers() {
    // The component's pattern also matches the OS's store images.
    let greedy = WEBAPP.replace("webapp_@v.raw.xz", "store_@v.img.xz");
    let s = Setup::new("", &greedy);
    let out = s.dir.path().join("greedy");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("store_3.img"), "x".repeat(100)).unwrap();
    let mut cmd = s.cmd(Some("webapp"), &["release", "--output"]);
    cmd.arg(format!("x86-64={}", out.display()));
    let err = stderr(&run(&mut cmd, 1));
    assert!(
        err.contains("50-webapp") && err.contains("60-store") && err.contains("store_3.img.xz"),
        "{err}"
    );
    assert!(!s.store.join("x86-64/store_3.img.xz").exists());
    // And the other way round: an OS release whose names the component matches.
    let err = stderr(&s.os("17", 1));
    assert!(
        err.contains("60-store") && err.contains("50-webapp"),
        "{err}"
    );
}

#[test]
fn an_unknown_component_is_refused_naming_the_known_ones() {
    let s = Setup::new("", WEBAPP);
    let err = stderr(&run(&mut s.cmd(Some("webap"), &["status"]), 2));
    assert!(
        err.contains("webap") && err.contains("the components are: webapp"),
        "{err}"
    );
}

#[test]
fn device_files_writes_a_components_definitions_and_metadata() {
    let s = Setup::new("", WEBAPP);
    std::fs::write(
        s.dir.path().join("sysupdate.webapp.component"),
        "[Component]\nDescription=WebApp container image\n",
    )
    .unwrap();
    let root = s.dir.path().join("image/etc");
    let wrong = root.join("webapp");
    let err = stderr(&run(
        s.cmd(Some("webapp"), &["device-files", "--out"])
            .arg(&wrong),
        2,
    ));
    assert!(err.contains("sysupdate.webapp.d"), "{err}");
    let out = root.join("sysupdate.webapp.d");
    run(
        s.cmd(Some("webapp"), &["device-files", "--out"]).arg(&out),
        0,
    );
    assert_eq!(
        std::fs::read_to_string(out.join("50-webapp.transfer")).unwrap(),
        WEBAPP
    );
    assert!(
        std::fs::read_to_string(root.join("sysupdate.webapp.component"))
            .unwrap()
            .contains("WebApp")
    );
    // The OS's files stay what they were: only its own transfers.
    let os = root.join("sysupdate.d");
    run(s.cmd(None, &["device-files", "--out"]).arg(&os), 0);
    let mut names: Vec<String> = std::fs::read_dir(&os)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["50-uki.transfer", "60-store.transfer"]);
}

/// `--component webapp promote` copies the component's version to another
/// channel as that channel's component version, beside its OS versions.
#[test]
fn promote_moves_a_component_version_between_channels() {
    let s = Setup::new("", WEBAPP);
    let keys = keygen();
    let root = s.dir.path();
    let config = root.join("two.toml");
    std::fs::write(
        &config,
        format!(
            "[channels.canary]\nstore = {:?}\nurl = \"https://updates.example.com/canary\"\n\
             [channels.stable]\nstore = {:?}\nurl = \"https://updates.example.com/stable\"\n\
             [signing]\n{}\n[transfers]\ndir = {:?}\n",
            root.join("canary"),
            root.join("stable"),
            key_file_signing(&keys),
            root.join("sysupdate.d"),
        ),
    )
    .unwrap();
    let cmd = |args: &[&str]| {
        let mut c = bin();
        c.arg("--config").arg(&config).args(args);
        c
    };
    let os = fake_output(root, "x86_64-linux", "17");
    for channel in ["canary", "stable"] {
        run(
            cmd(&["--channel", channel, "release", "--output"])
                .arg(format!("x86-64={}", os.display())),
            0,
        );
    }
    let out = root.join("webapp-3");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("webapp_3.raw"), "webapp 3\n".repeat(50)).unwrap();
    run(
        cmd(&[
            "--channel",
            "canary",
            "--component",
            "webapp",
            "release",
            "--output",
        ])
        .arg(format!("x86-64={}", out.display())),
        0,
    );
    // Not the OS's version 3: there is none.
    run(
        &mut cmd(&["promote", "3", "--from", "canary", "--to", "stable"]),
        1,
    );
    run(
        &mut cmd(&[
            "--component",
            "webapp",
            "promote",
            "3",
            "--from",
            "canary",
            "--to",
            "stable",
        ]),
        0,
    );
    let status = run(&mut cmd(&["--channel", "stable", "--json", "status"]), 0);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        streams(&status),
        (vec!["17".into()], vec!["3".into()]),
        "{status}"
    );
    let ledger = std::fs::read_to_string(root.join("stable/ledger.jsonl")).unwrap();
    let promoted = ledger.lines().last().unwrap();
    assert!(
        promoted.contains(r#""action":"promote""#) && promoted.contains(r#""component":"webapp""#),
        "{promoted}"
    );

    // The overview of both channels shows each stream's versions.
    let out = run(&mut cmd(&["--json", "status"]), 0);
    let overview: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for c in overview["channels"].as_array().unwrap() {
        assert_eq!(c["versions"]["x86-64"][0], "17", "{overview}");
        assert_eq!(c["components"][0]["component"], "webapp", "{overview}");
        assert_eq!(
            c["components"][0]["versions"]["x86-64"][0], "3",
            "{overview}"
        );
    }
    let text = stdout(&run(&mut cmd(&["status"]), 0));
    assert!(
        text.contains("stable: x86-64 17 | webapp: x86-64 3"),
        "{text}"
    );
    // Seen from the component, the OS is the other stream.
    let text = stdout(&run(&mut cmd(&["--component", "webapp", "status"]), 0));
    assert!(
        text.contains("canary: x86-64 3 | the OS: x86-64 17"),
        "{text}"
    );

    // A component version withdrawn on canary shows there as withdrawn.
    let out = root.join("webapp-4");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("webapp_4.raw"), "webapp 4\n".repeat(50)).unwrap();
    let canary = ["--channel", "canary", "--component", "webapp"];
    run(
        cmd(&canary)
            .args(["release", "--output"])
            .arg(format!("x86-64={}", out.display())),
        0,
    );
    run(cmd(&canary).args(["yank", "4", "--reason", "bad"]), 0);
    let out = run(&mut cmd(&["--json", "status"]), 0);
    let overview: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let canary = &overview["channels"][0];
    assert_eq!(canary["channel"], "canary", "{overview}");
    assert_eq!(canary["components"][0]["withdrawn"][0], "4", "{overview}");
    assert_eq!(
        canary["components"][0]["versions"]["x86-64"][0], "3",
        "{overview}"
    );
    assert_eq!(
        canary["withdrawn"].as_array().unwrap().len(),
        0,
        "{overview}"
    );
}
