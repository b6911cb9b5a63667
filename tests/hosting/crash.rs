//! SIGKILL at every crash point of every write (release, yank, unyank,
//! rollback, refresh, promote, mirror), on every hosting. After each kill:
//! - every arch serves its old or its new manifest, whole, verified by gpg
//!   with systemd's command line (or, on S3/WebDAV, a manifest whose commit
//!   was cut between manifest and signature), and every listed payload;
//! - `status` reports a consistent channel (exit 0), or exactly one problem:
//!   the interrupted write, naming the arches it has not reached;
//! - rerunning the same command exits 0 and leaves the channel exactly as
//!   the same write without a kill does (same manifests, same stored files,
//!   status clean), and a release cut off before its history entry uploads
//!   only what is missing.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;

use super::scenarios::{
    args, assert_listed_payloads_served, names_of, release, status, strs, verifies, Chan, Status,
};
use super::Site;
use crate::common::*;

/// One write and the channel it starts from.
struct Case {
    name: &'static str,
    channel: &'static str,
    /// Two channels, canary and stable (see [`Chan::pair`]).
    pair: bool,
    setup: Vec<Vec<String>>,
    command: Vec<String>,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "release",
            channel: "keep = 1",
            pair: false,
            setup: vec![release("17")],
            command: release("18"),
        },
        Case {
            name: "yank",
            pair: false,
            channel: "keep = 2",
            setup: vec![release("17"), release("18")],
            command: strs(&["yank", "18", "--reason", "bricks"]),
        },
        Case {
            name: "unyank",
            pair: false,
            channel: "keep = 2",
            setup: vec![
                release("17"),
                release("18"),
                strs(&["yank", "18", "--reason", "false alarm"]),
            ],
            command: strs(&["unyank", "18"]),
        },
        Case {
            name: "rollback",
            pair: false,
            channel: "keep = 2",
            setup: vec![release("17"), release("18")],
            command: strs(&["rollback", "17", "--reason", "18 bricks"]),
        },
        Case {
            name: "refresh",
            pair: false,
            channel: "keep = 2\nsignature-lifetime = \"30d\"",
            setup: vec![release("17"), release("18")],
            command: strs(&["refresh"]),
        },
        Case {
            name: "promote",
            channel: "keep = 2",
            pair: true,
            setup: vec![
                [strs(&["--channel", "stable"]), release("17")].concat(),
                [strs(&["--channel", "canary"]), release("18")].concat(),
            ],
            command: strs(&["promote", "18", "--from", "canary", "--to", "stable"]),
        },
        Case {
            name: "mirror",
            channel: "keep = 2",
            pair: true,
            setup: vec![
                [strs(&["--channel", "canary"]), release("17")].concat(),
                strs(&["--channel", "stable", "mirror", "--from", CANARY_URL]),
                [strs(&["--channel", "canary"]), release("18")].concat(),
            ],
            command: strs(&["--channel", "stable", "mirror", "--from", CANARY_URL]),
        },
    ]
}

/// Stands for the canary channel's public URL in a [`Case`]'s commands.
const CANARY_URL: &str = "{canary-url}";

impl Case {
    fn setup(&self, ch: &Chan) -> Vec<Vec<String>> {
        self.setup.iter().map(|c| for_channel(c, ch)).collect()
    }

    fn command(&self, ch: &Chan) -> Vec<String> {
        for_channel(&self.command, ch)
    }
}

/// `argv` with [`CANARY_URL`] replaced by `ch`'s canary channel's URL.
fn for_channel(argv: &[String], ch: &Chan) -> Vec<String> {
    let url = ch
        .source_prefix
        .as_ref()
        .map(|p| format!("{}/{p}", ch.site.public));
    argv.iter()
        .map(|a| match &url {
            Some(url) => a.replace(CANARY_URL, url),
            None => a.clone(),
        })
        .collect()
}

fn channel<'a>(site: &'a Site, keys: &Keys, case: &Case) -> Chan<'a> {
    if case.pair {
        Chan::pair(site, keys, case.channel)
    } else {
        Chan::new(site, keys, case.channel)
    }
}

/// Every arch's listed names (without BEST-BEFORE), as devices see them.
fn listed(ch: &Chan) -> BTreeMap<&'static str, BTreeSet<String>> {
    ARCHES
        .iter()
        .map(|arch| {
            let names = ch
                .manifest(arch)
                .lines()
                .map(|l| l.split_once(" *").expect("binary-mode line").1.to_string())
                .filter(|n| !n.starts_with("BEST-BEFORE-"))
                .collect();
            (*arch, names)
        })
        .collect()
}

/// Everything stored, with the directory store's generation numbers left
/// out (a finished write may have switched an arch twice).
fn stored(ch: &Chan) -> BTreeSet<String> {
    ch.stored()
        .into_iter()
        .map(|p| match p.split('/').collect::<Vec<_>>()[..] {
            [".generations", arch, _, name] => format!(".generations/{arch}/N/{name}"),
            _ => p,
        })
        .collect()
}

fn history_len(ch: &Chan) -> usize {
    ch.raw_get("ledger.jsonl")
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

/// Which arches serve a manifest that verifies only with the pending
/// signature (a remote commit cut between manifest and signature); panics
/// on anything else that does not verify.
fn check_served(ch: &Chan, keys: &Keys, what: &str) -> BTreeSet<&'static str> {
    let mut pending = BTreeSet::new();
    for arch in ARCHES {
        let m = ch.manifest(arch);
        let sig = ch.fetch(&format!("{arch}/SHA256SUMS.gpg"));
        if !sig.is_some_and(|s| verifies(&keys.keyring, &s, m.as_bytes())) {
            let parked = ch
                .fetch(&format!("{arch}/.pending/SHA256SUMS.gpg"))
                .unwrap_or_else(|| panic!("{what}, {arch}: SHA256SUMS does not verify"));
            assert!(
                verifies(&keys.keyring, &parked, m.as_bytes()),
                "{what}, {arch}: SHA256SUMS verifies with no signature"
            );
            pending.insert(arch);
        }
        assert_listed_payloads_served(ch, arch, &m);
    }
    pending
}

pub fn killed_at_every_point_of_every_write_the_channel_verifies_and_a_rerun_finishes(site: &Site) {
    let keys = keygen();
    for case in cases() {
        // The same write without a kill: what every rerun must end at.
        let reference = channel(site, &keys, &case);
        for cmd in &case.setup(&reference) {
            reference.run(cmd, 0);
        }
        let old = listed(&reference);
        reference.run(&case.command(&reference), 0);
        let new = listed(&reference);
        let want_stored = stored(&reference);

        let ch = channel(site, &keys, &case);
        let command = case.command(&ch);
        for cmd in &case.setup(&ch) {
            ch.run(cmd, 0);
        }
        let start = ch.snapshot();
        let entries_before = history_len(&ch);
        let mut interrupted_seen = 0;
        let mut point = 1;
        loop {
            let what = format!("{}: point {point}", case.name);
            ch.restore(&start);
            ch.forget_remembered();
            let out = ch
                .cmd(&command)
                .env("SYSUPDATE_PUBLISH_CRASH_AT", point.to_string())
                .stdin(Stdio::null())
                .output()
                .unwrap();
            if out.status.success() {
                // At least: the history entry, then one switch per arch.
                assert!(point > 4, "{what}: too few crash points");
                break;
            }
            assert_eq!(
                out.status.code(),
                None,
                "{what}: not killed: {}",
                stderr(&out)
            );

            let pending = check_served(&ch, &keys, &what);
            let now = listed(&ch);
            let behind: BTreeSet<&str> = ARCHES
                .iter()
                .filter(|a| now[*a] != new[*a] || pending.contains(*a))
                .copied()
                .collect();
            for arch in ARCHES {
                assert!(
                    now[arch] == old[arch] || now[arch] == new[arch],
                    "{what}, {arch}: neither the old nor the new manifest: {:?}",
                    now[arch]
                );
            }
            let recorded = history_len(&ch) > entries_before;
            if !recorded {
                assert_eq!(now, old, "{what}: switched before the history entry");
            }
            let st = status(&ch, &[]);
            let (code, report) = (st.code, &st.report);
            let unfinished = recorded && !behind.is_empty() && old != new;
            if unfinished || (recorded && !pending.is_empty()) {
                interrupted_seen += 1;
                assert_eq!(code, 1, "{what}: status must name the unfinished write");
                assert_eq!(st.kinds(), ["interrupted"], "{what}: {report}");
                let finding = &report["findings"][0];
                let named: BTreeSet<&str> = finding["pending"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap())
                    .collect();
                let lagging: BTreeSet<&str> = if old == new { pending.clone() } else { behind };
                assert_eq!(named, lagging, "{what}: {finding}");
            } else {
                assert_eq!(code, 0, "{what}: a consistent channel: {report}");
            }

            // Payloads already uploaded for a release not yet recorded.
            let present: BTreeMap<&str, BTreeSet<String>> = ARCHES
                .iter()
                .zip(SYSTEMS)
                .map(|(arch, system)| {
                    let names = names_of("18", system)
                        .into_keys()
                        .filter(|n| ch.fetch(&site.layout.payload_key(arch, n)).is_some())
                        .collect();
                    (*arch, names)
                })
                .collect();
            let mut rerun_args = args(&["--json"], vec![]);
            rerun_args.extend(command.iter().cloned());
            let rerun = ch.run(&rerun_args, 0);
            let report: serde_json::Value = serde_json::from_slice(&rerun.stdout).unwrap();
            if case.name == "release" && !recorded {
                let mut bytes = 0;
                for (a, system) in report["arches"].as_array().unwrap().iter().zip(SYSTEMS) {
                    let arch = a["arch"].as_str().unwrap();
                    let names = |k: &str| -> BTreeSet<String> {
                        a[k].as_array()
                            .unwrap()
                            .iter()
                            .map(|v| {
                                v.as_str().map_or_else(
                                    || v["name"].as_str().unwrap().to_string(),
                                    str::to_string,
                                )
                            })
                            .collect()
                    };
                    let sizes = names_of("18", system);
                    let missing: BTreeSet<String> = sizes
                        .keys()
                        .filter(|n| !present[arch].contains(*n))
                        .cloned()
                        .collect();
                    assert_eq!(names("uploads"), missing, "{what}, {arch}: uploads");
                    assert_eq!(names("reused"), present[arch], "{what}, {arch}: reused");
                    bytes += missing.iter().map(|n| sizes[n]).sum::<u64>();
                }
                assert_eq!(report["upload_bytes"], bytes, "{what}");
            }
            if unfinished {
                assert!(
                    report["finished_interrupted"].is_u64(),
                    "{what}: the rerun must say it finished the write: {report}"
                );
            }
            assert!(
                check_served(&ch, &keys, &what).is_empty(),
                "{what}: after the rerun"
            );
            assert_eq!(listed(&ch), new, "{what}: after the rerun");
            let Status { code, report, .. } = status(&ch, &[]);
            assert_eq!(code, 0, "{what}: status after the rerun: {report}");
            assert_eq!(
                stored(&ch),
                want_stored,
                "{what}: after the rerun, stored files differ from a write that was not killed\n{}",
                stderr(&rerun)
            );
            point += 1;
        }
        if case.name != "refresh" {
            assert!(
                interrupted_seen > 0,
                "{}: no kill landed between the history entry and the last switch",
                case.name
            );
        }
    }
}
