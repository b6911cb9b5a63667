//! Every command's `--json` document against its example in docs/json.md:
//! the top-level keys present, no undocumented key anywhere, every value of
//! the documented type (docs/json.md says how the examples are read).

mod common;
#[path = "e2e/harness.rs"]
mod harness;

use std::collections::BTreeMap;

use common::{bin, fake_outputs, run, TestChannel};
use serde_json::Value;

/// The first ```json block under each `##`/`###` heading of docs/json.md.
fn documented() -> BTreeMap<String, Value> {
    let text = std::fs::read_to_string(common::repo().join("docs/json.md")).unwrap();
    let mut out = BTreeMap::new();
    let mut heading = String::new();
    let mut block: Option<String> = None;
    for line in text.lines() {
        match &mut block {
            Some(b) if line.trim_start() == "```" => {
                let v: Value = serde_json::from_str(b)
                    .unwrap_or_else(|e| panic!("docs/json.md, {heading}: {e}"));
                out.entry(heading.clone()).or_insert(v);
                block = None;
            }
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
            None if line.starts_with("```json") => block = Some(String::new()),
            None if line.starts_with('#') => {
                heading = line.trim_start_matches('#').trim().to_string()
            }
            None => {}
        }
    }
    out
}

fn example(heading: &str) -> Value {
    documented()
        .remove(heading)
        .unwrap_or_else(|| panic!("docs/json.md has no example under {heading:?}"))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Differences between a document and its example, one line each.
fn mismatches(doc: &Value, actual: &Value, path: &str, top: bool, out: &mut Vec<String>) {
    match (doc, actual) {
        // Documented null: any value; an actual null: "does not apply".
        (Value::Null, _) | (_, Value::Null) => {}
        (Value::Object(d), Value::Object(a)) => {
            let map = d.len() == 1 && d.keys().all(|k| k.starts_with('<'));
            if map {
                let each = d.values().next().unwrap();
                for (k, v) in a {
                    mismatches(each, v, &format!("{path}.{k}"), false, out);
                }
                return;
            }
            for (k, v) in a {
                match d.get(k) {
                    Some(dv) => mismatches(dv, v, &format!("{path}.{k}"), false, out),
                    None => out.push(format!("{path}.{k}: not documented")),
                }
            }
            if top {
                for k in d.keys().filter(|k| !a.contains_key(*k)) {
                    out.push(format!("{path}.{k}: documented, missing"));
                }
            }
        }
        (Value::Array(d), Value::Array(a)) => {
            if let Some(each) = d.first() {
                for (i, v) in a.iter().enumerate() {
                    mismatches(each, v, &format!("{path}[{i}]"), false, out);
                }
            }
        }
        (d, a) if kind(d) == kind(a) => {}
        (d, a) => out.push(format!("{path}: {} documented, {} found", kind(d), kind(a))),
    }
}

#[track_caller]
fn assert_documented(heading: &str, actual: &Value) {
    assert_eq!(actual["schema"], 1, "{heading}: no schema 1: {actual:#}");
    let mut out = Vec::new();
    mismatches(&example(heading), actual, "$", true, &mut out);
    assert!(
        out.is_empty(),
        "{heading}: the output does not match docs/json.md:\n  {}\n{actual:#}",
        out.join("\n  ")
    );
}

const WRITE: &str = "release, yank, unyank, rollback, refresh, promote, mirror, repair, adopt";

#[test]
fn every_example_is_json_with_schema_1() {
    let docs = documented();
    for heading in [
        WRITE,
        "status",
        "status of a config with several channels",
        "verify",
        "keygen",
        "sign",
        "sums",
        "inspect",
        "man",
        "device-files",
    ] {
        assert_eq!(docs[heading]["schema"], 1, "{heading}");
    }
}

#[test]
fn the_checker_catches_an_undocumented_key_a_missing_one_and_a_wrong_type() {
    let doc = serde_json::json!({"schema": 1, "a": "x", "m": {"<k>": {"n": 1}}});
    let mut out = Vec::new();
    let actual = serde_json::json!({"schema": 1, "m": {"k1": {"n": "one"}}, "b": true});
    mismatches(&doc, &actual, "$", true, &mut out);
    out.sort();
    assert_eq!(
        out,
        [
            "$.a: documented, missing",
            "$.b: not documented",
            "$.m.k1.n: number documented, string found"
        ]
    );
}

#[test]
fn write_commands_and_status_match_their_examples() {
    let ch = TestChannel::new("keep = 3\nsignature-lifetime = \"30d\"");
    let dir = ch.dir.path();
    let release = |v: &str| {
        let out = run(
            ch.cmd()
                .args(["--json", "release"])
                .args(fake_outputs(dir, v)),
            0,
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    assert_documented(WRITE, &release("17"));
    assert_documented(WRITE, &release("18"));
    assert_documented(WRITE, &release("19"));
    assert_documented(WRITE, &ch.json(&["yank", "19", "--reason", "bricks"], 0));
    assert_documented("status", &ch.json(&["status"], 0));
    assert_documented(WRITE, &ch.json(&["unyank", "19"], 0));
    assert_documented(WRITE, &ch.json(&["rollback", "17", "--reason", "r"], 0));
    assert_documented(WRITE, &ch.json(&["refresh"], 0));
    assert_documented(WRITE, &ch.json(&["repair"], 0));
    let status = ch.json(&["status"], 0);
    assert!(!status["withdrawn"].as_array().unwrap().is_empty());
    assert_documented("status", &status);
}

#[test]
fn promote_and_the_overview_of_several_channels_match_their_examples() {
    let keys = common::keygen();
    let dir = tempfile::tempdir().unwrap();
    let transfers = common::repo().join("examples/minimal/sysupdate.d");
    let config = dir.path().join("sysupdate-publish.toml");
    std::fs::write(
        &config,
        format!(
            "[channels.stable]\nstore = {:?}\n[channels.canary]\nstore = {:?}\n\
             [signing]\nsecret-key = {:?}\nkeyring = {:?}\n[transfers]\ndir = {transfers:?}\n",
            dir.path().join("stable"),
            dir.path().join("canary"),
            keys.secret,
            keys.keyring
        ),
    )
    .unwrap();
    run(
        bin()
            .arg("--config")
            .arg(&config)
            .args(["--channel", "canary", "release"])
            .args(fake_outputs(dir.path(), "18")),
        0,
    );
    let out = run(
        bin().arg("--config").arg(&config).args([
            "--json", "promote", "18", "--from", "canary", "--to", "stable",
        ]),
        0,
    );
    let promoted: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(promoted["source"]["channel"], "canary");
    assert_documented(WRITE, &promoted);
    let out = run(
        bin()
            .arg("--config")
            .arg(&config)
            .args(["--json", "status"]),
        0,
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["channels"].as_array().unwrap().len(), 2, "{r:#}");
    assert_documented("status of a config with several channels", &r);
}

#[test]
fn verify_matches_its_example() {
    let ch = harness::Channel::new("");
    ch.release("18");
    let out = run(
        bin()
            .arg("--config")
            .arg(&ch.config)
            .args(["--json", "verify", "--ca"])
            .arg(&ch.ca),
        0,
    );
    assert_documented("verify", &serde_json::from_slice(&out.stdout).unwrap());
}

#[test]
fn plumbing_and_man_match_their_examples() {
    let keys = common::keygen();
    let dir = keys.dir.path();
    let json = |args: &mut std::process::Command| -> Value {
        serde_json::from_slice(&run(args, 0).stdout).unwrap()
    };
    let k = json(
        bin()
            .args(["--json", "keygen", "--uid", "A <a@example.org>", "--secret"])
            .arg(dir.join("k.asc"))
            .arg("--keyring")
            .arg(dir.join("k.pgp"))
            .arg("--public")
            .arg(dir.join("k.pub.asc")),
    );
    assert_documented("keygen", &k);

    let payloads = common::fake_output(dir, "x86_64-linux", "18");
    let s = json(
        bin()
            .args(["--json", "sums", "--best-before", "2099-01-01"])
            .arg(&payloads),
    );
    assert_documented("sums", &s);
    let sig = json(
        bin()
            .args(["--json", "sign", "--expires", "30d", "--key"])
            .arg(&keys.secret)
            .arg(payloads.join("SHA256SUMS")),
    );
    assert_documented("sign", &sig);

    let i = json(
        bin()
            .args(["--json", "inspect", "--transfers"])
            .arg(common::repo().join("examples/minimal/sysupdate.d"))
            .arg(&payloads)
            .current_dir(dir),
    );
    assert_documented("inspect", &i);

    let m = json(bin().args(["--json", "man", "--out"]).arg(dir.join("man")));
    assert_documented("man", &m);
}

#[test]
fn device_files_matches_its_example() {
    let ch = common::TestChannel::new("");
    let out = ch.dir.path().join("etc/sysupdate.d");
    let done = run(
        ch.cmd().args(["--json", "device-files", "--out"]).arg(out),
        0,
    );
    let d: Value = serde_json::from_slice(&done.stdout).unwrap();
    assert_documented("device-files", &d);
}
