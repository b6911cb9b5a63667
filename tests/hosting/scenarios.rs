//! The hosting scenarios, written once and run against every hosting
//! (tests/store_s3.rs, tests/store_webdav.rs, tests/store_dir.rs).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

#[allow(unused_imports)]
pub use super::crash::killed_at_every_point_of_every_write_the_channel_verifies_and_a_rerun_finishes;
#[allow(unused_imports)]
pub use super::holes::{
    a_deleted_manifest_or_signature_is_refused_until_repaired,
    a_history_cut_short_emptied_or_deleted_refuses_writes_until_adopted,
    an_older_signed_manifest_put_back_is_refused_until_repaired,
    history_and_manifests_rolled_back_together_only_the_remembered_head_tells,
    payload_bytes_changed_under_a_published_name_are_found_and_uploaded_again,
};
#[allow(unused_imports)]
pub use super::mirror::mirror_copies_a_published_channel_verified_and_byte_for_byte;
#[allow(unused_imports)]
pub use super::promote::{
    promote_copies_payloads_on_the_hosting, promote_copies_payloads_on_the_hosting_directly,
};
use super::{fake_xz, fetch, http, Layout, Relay, Site, Snapshot};
use crate::common::*;

/// A fixed signing time: Ed25519 signatures are deterministic, so two
/// backends given the same key and time publish byte-identical signatures.
const SIGNING_TIME: (&str, &str) = ("SYSUPDATE_PUBLISH_SIGNING_TIME", "2026-01-02T03:04:05Z");

/// One channel (a fresh prefix) on a site.
pub struct Chan<'a> {
    pub site: &'a Site,
    pub prefix: String,
    pub config: PathBuf,
    /// For a two-channel config: `--channel` for every command, and the
    /// prefix of the other channel (what `promote` takes from).
    pub channel: Option<String>,
    pub source_prefix: Option<String>,
    _dir: tempfile::TempDir,
    /// Where this channel's remembered history head lives.
    state: tempfile::TempDir,
}

impl<'a> Chan<'a> {
    pub fn new(site: &'a Site, keys: &Keys, extra: &str) -> Chan<'a> {
        let dir = tempfile::tempdir().unwrap();
        let prefix = format!(
            "chan-{}",
            dir.path()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .trim_start_matches('.')
        )
        .to_lowercase();
        let store = format!("{}/{prefix}", site.store);
        let config = write_config(
            dir.path(),
            Path::new(&store),
            keys,
            &format!("{extra}\n{}", site.extra),
        );
        Chan {
            site,
            prefix,
            config,
            channel: None,
            source_prefix: None,
            _dir: dir,
            state: tempfile::tempdir().unwrap(),
        }
    }

    /// Two channels on the site, `canary` and `stable` (each its own
    /// prefix, both in one config): the Chan works on `stable`; `canary` is
    /// what promotions take from.
    pub fn pair(site: &'a Site, keys: &Keys, extra: &str) -> Chan<'a> {
        let mut ch = Chan::new(site, keys, extra);
        let base = ch.prefix.clone();
        let table = |name: &str| {
            format!(
                "[channels.{name}]\nstore = \"{}/{base}-{name}\"\n{extra}\n{}\n",
                site.store, site.extra
            )
        };
        let text = std::fs::read_to_string(&ch.config).unwrap();
        let rest = &text[text.find("[signing]").unwrap()..];
        std::fs::write(
            &ch.config,
            format!("{}{}{rest}", table("canary"), table("stable")),
        )
        .unwrap();
        ch.prefix = format!("{base}-stable");
        ch.source_prefix = Some(format!("{base}-canary"));
        ch.channel = Some("stable".into());
        ch
    }

    /// Forgets the history head this machine remembers for the channel, as
    /// on a fresh CI runner (after a [`Chan::restore`] put an older one back).
    pub fn forget_remembered(&self) {
        std::fs::remove_dir_all(self.state.path()).unwrap();
        std::fs::create_dir(self.state.path()).unwrap();
    }

    pub fn cmd(&self, args: &[String]) -> Command {
        let mut c = bin();
        c.envs(self.site.env.iter().map(|(k, v)| (k, v)))
            .env("SYSUPDATE_PUBLISH_STATE_DIR", self.state.path())
            .arg("--config")
            .arg(&self.config)
            .args(
                self.channel
                    .iter()
                    .filter(|_| !args.iter().any(|a| a == "--channel"))
                    .flat_map(|c| ["--channel", c.as_str()]),
            )
            .args(args);
        c
    }

    pub fn run(&self, args: &[String], expect: i32) -> Output {
        run(&mut self.cmd(args), expect)
    }

    pub fn url(&self, rel: &str) -> String {
        format!("{}/{}/{rel}", self.site.public, self.prefix)
    }

    pub fn fetch(&self, rel: &str) -> Option<Vec<u8>> {
        fetch(&self.url(rel))
    }

    pub fn stored(&self) -> Vec<String> {
        self.site.list(&self.prefix)
    }

    fn key(&self, rel: &str) -> String {
        format!("{}/{rel}", self.prefix)
    }

    /// [`Site::raw_get`] relative to the channel: `x86-64/SHA256SUMS`.
    pub fn raw_get(&self, rel: &str) -> Option<Vec<u8>> {
        self.site.raw_get(&self.key(rel))
    }

    pub fn raw_put(&self, rel: &str, bytes: &[u8]) {
        self.site.raw_put(&self.key(rel), bytes)
    }

    pub fn raw_put_keeping_metadata(&self, rel: &str, bytes: &[u8]) {
        self.site.raw_put_keeping_metadata(&self.key(rel), bytes)
    }

    pub fn raw_replace(&self, rel: &str, bytes: &[u8]) {
        self.site.raw_replace(&self.key(rel), bytes)
    }

    pub fn raw_delete(&self, rel: &str) {
        self.site.raw_delete(&self.key(rel))
    }

    /// Everything the hosting stores for this channel, for [`Chan::restore`].
    pub fn snapshot(&self) -> Snapshot {
        self.site.snapshot(&self.prefix)
    }

    pub fn restore(&self, snapshot: &Snapshot) {
        self.site.restore(snapshot)
    }

    pub fn manifest(&self, arch: &str) -> String {
        String::from_utf8(
            self.fetch(&format!("{arch}/SHA256SUMS"))
                .expect("SHA256SUMS"),
        )
        .unwrap()
    }
}

pub fn args(parts: &[&str], outputs: Vec<String>) -> Vec<String> {
    strs(parts).into_iter().chain(outputs).collect()
}

pub fn release(version: &str) -> Vec<String> {
    args(&["release"], output_args(version))
}

fn json_release(version: &str) -> Vec<String> {
    args(&["--json", "release"], output_args(version))
}

/// gpg, with systemd's command line, over bytes fetched from the hosting.
pub fn verifies(keyring: &Path, sig: &[u8], data: &[u8]) -> bool {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), sig).unwrap();
    gpg_verify(keyring, f.path(), data).0 == 0
}

/// Every payload a manifest lists is served with its hash.
pub fn assert_listed_payloads_served(ch: &Chan, arch: &str, manifest: &str) {
    for line in manifest.lines() {
        let (hash, name) = line.split_once(" *").expect("binary-mode line");
        if name.starts_with("BEST-BEFORE-") {
            continue;
        }
        let bytes = ch
            .fetch(&format!("{arch}/{name}"))
            .unwrap_or_else(|| panic!("{arch}/{name} is listed but not served"));
        assert_eq!(
            sha256_hex(&bytes),
            hash,
            "{arch}/{name}: wrong bytes served"
        );
    }
}

pub fn names_of(version: &str, system: &str) -> BTreeMap<String, u64> {
    std::fs::read_dir(example_output(system, version))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect()
}

/// (1) What devices fetch from the remote channel is byte for byte what the
/// directory backend serves for the same releases.
pub fn device_view_matches_the_directory_backend(site: &Site) {
    let keys = keygen();
    let local = tempfile::tempdir().unwrap();
    let store = local.path().join("public");
    let config = write_config(local.path(), &store, &keys, "keep = 2");
    let ch = Chan::new(site, &keys, "keep = 2");
    for v in ["17", "18"] {
        run(
            bin()
                .env(SIGNING_TIME.0, SIGNING_TIME.1)
                .arg("--config")
                .arg(&config)
                .args(release(v)),
            0,
        );
        run(ch.cmd(&release(v)).env(SIGNING_TIME.0, SIGNING_TIME.1), 0);
    }
    for arch in ARCHES {
        let dir = store.join(arch);
        let manifest = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
        assert!(manifest.contains("_17.") && manifest.contains("_18."));
        let mut names = vec!["SHA256SUMS".to_string(), "SHA256SUMS.gpg".to_string()];
        names.extend(
            manifest
                .lines()
                .map(|l| l.split_once(" *").unwrap().1.to_string()),
        );
        for name in &names {
            let served = ch.fetch(&format!("{arch}/{name}"));
            assert!(
                served.as_deref() == Some(std::fs::read(dir.join(name)).unwrap().as_slice()),
                "{arch}/{name}: the remote channel serves other bytes than the directory backend"
            );
        }
        // The signature fallbacks of systemd ≥ 258 need real 404s.
        for absent in [
            "SHA256SUMS.sha256.asc",
            "SHA256SUMS.sha256.gpg",
            "SHA256SUMS.asc",
        ] {
            assert_eq!(
                ch.fetch(&format!("{arch}/{absent}")),
                None,
                "{arch}/{absent}"
            );
        }
        let sig = ch.fetch(&format!("{arch}/SHA256SUMS.gpg")).unwrap();
        assert!(
            verifies(&keys.keyring, &sig, manifest.as_bytes()),
            "{arch}: gpg"
        );
    }
    // Nothing else is published: no temporaries, no pending signature, no
    // lock. The directory store keeps its pool, generations and lock file
    // beside what devices fetch: `published` checks they mirror it exactly
    // and leaves them out (for S3 and WebDAV it is everything stored).
    let visible: Vec<String> = site
        .layout
        .published(ch.stored())
        .into_iter()
        .filter(|n| n != "ledger.jsonl")
        .collect();
    let mut expected: Vec<String> = ARCHES
        .iter()
        .flat_map(|arch| {
            std::fs::read_dir(store.join(arch))
                .unwrap()
                .map(move |e| format!("{arch}/{}", e.unwrap().file_name().to_string_lossy()))
        })
        .collect();
    expected.sort();
    assert_eq!(visible, expected);
}

/// Copies an example output with every `_18.` renamed to `_19.`: a new
/// version with the same bytes.
fn as_version_19(system: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, _) in names_of("18", system) {
        std::fs::copy(
            example_output(system, "18").join(&name),
            dir.path().join(name.replace("_18.", "_19.")),
        )
        .unwrap();
    }
    dir
}

/// Version-19 outputs of every system (kept while the directories live)
/// and their `--output` arguments.
pub fn outputs_19() -> (Vec<tempfile::TempDir>, Vec<String>) {
    let dirs: Vec<_> = SYSTEMS.iter().map(|s| as_version_19(s)).collect();
    let outputs = SYSTEMS
        .iter()
        .zip(&dirs)
        .flat_map(|(s, d)| {
            [
                "--output".to_string(),
                format!("{s}={}", d.path().display()),
            ]
        })
        .collect();
    (dirs, outputs)
}

/// One `--json status` run: the exit status, the report, and what people
/// read on stderr.
pub struct Status {
    pub code: i32,
    pub report: serde_json::Value,
    pub text: String,
}

impl Status {
    /// The `kind` of every finding, in order.
    pub fn kinds(&self) -> Vec<String> {
        self.report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["kind"].as_str().unwrap().to_string())
            .collect()
    }
}

/// `status` with `flags` (`--deep`).
pub fn status(ch: &Chan, flags: &[&str]) -> Status {
    let out = ch
        .cmd(&args(&["--json", "status"], strs(flags)))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status JSON: {e}\n{}", stderr(&out)));
    Status {
        code: out.status.code().unwrap_or(-1),
        report,
        text: stderr(&out),
    }
}

/// The keys whose values differ between two maps (present in one only, too).
pub fn differing<'m, K: Ord, V: PartialEq>(
    before: &'m BTreeMap<K, V>,
    after: &'m BTreeMap<K, V>,
) -> BTreeSet<&'m K> {
    before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .collect()
}

pub fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// (3) Two releases of different versions started together: both land
/// (the second waits for the publisher lock, then plans on top of the
/// first); every manifest verifies.
pub fn concurrent_releases_of_two_versions_both_land(site: &Site) {
    let keys = keygen();
    let ch = Chan::new(site, &keys, "keep = 3");
    ch.run(&release("17"), 0);
    let (_dirs, outputs19) = outputs_19();
    // --allow-downgrade: whichever wins the lock, the other is not refused as older.
    let spawn = |outputs: Vec<String>| {
        ch.cmd(&args(&["release", "--allow-downgrade"], outputs))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let a = spawn(output_args("18"));
    let b = spawn(outputs19);
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    for (v, out) in [("18", &a), ("19", &b)] {
        assert!(out.status.success(), "release {v} failed:\n{}", stderr(out));
    }
    for arch in ARCHES {
        let m = ch.manifest(arch);
        for v in ["17", "18", "19"] {
            assert!(
                m.contains(&format!("appliance_{v}.efi.xz"))
                    && m.contains(&format!("store_{v}.img.xz")),
                "{arch}: version {v} was lost:\n{m}"
            );
        }
        let sig = ch.fetch(&format!("{arch}/SHA256SUMS.gpg")).unwrap();
        assert!(verifies(&keys.keyring, &sig, m.as_bytes()), "{arch}");
        assert_listed_payloads_served(&ch, arch, &m);
    }
}

/// (4) The server vanishes in the middle of a large upload: the release
/// fails naming the object, the channel still verifies, and once the server
/// is back a rerun finishes, uploading only what is missing.
pub fn server_gone_mid_upload_then_a_rerun_resumes(
    site: &Site,
    relay: &Relay,
    kill: &dyn Fn(),
    restore: &dyn Fn(),
) {
    const BIG: usize = 96 << 20;
    let keys = keygen();
    let ch = Chan::new(site, &keys, "keep = 2");
    let x86 = |dir: &Path| vec!["--output".to_string(), format!("x86-64={}", dir.display())];
    ch.run(
        &args(&["release"], x86(&example_output("x86_64-linux", "17"))),
        0,
    );
    let out19 = tempfile::tempdir().unwrap();
    std::fs::copy(
        example_output("x86_64-linux", "18").join("appliance_18.efi.xz"),
        out19.path().join("appliance_19.efi.xz"),
    )
    .unwrap();
    fake_xz(&out19.path().join("store_19.img.xz"), BIG);

    let before = relay.sent();
    let child = ch
        .cmd(&args(&["release"], x86(out19.path())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    relay.wait_for(before + (BIG as u64) / 3, Duration::from_secs(120));
    relay.cut();
    kill();
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "must fail cleanly:\n{err}");
    assert!(err.contains("run the command again"), "{err}");

    restore();
    relay.up();
    let m = ch.manifest("x86-64");
    assert!(m.contains("store_17.img.xz") && !m.contains("_19"), "{m}");
    let sig = ch.fetch("x86-64/SHA256SUMS.gpg").unwrap();
    assert!(verifies(&keys.keyring, &sig, m.as_bytes()));
    let names = ["appliance_19.efi.xz", "store_19.img.xz"];
    let present: BTreeSet<&str> = names
        .iter()
        .copied()
        .filter(|n| ch.fetch(&format!("x86-64/{n}")).is_some())
        .collect();
    assert!(
        !present.contains("store_19.img.xz"),
        "the cut upload must not be visible"
    );

    let rerun = ch.run(&args(&["--json", "release"], x86(out19.path())), 0);
    let report: serde_json::Value = serde_json::from_slice(&rerun.stdout).unwrap();
    let a = &report["arches"][0];
    let uploads: BTreeSet<&str> = a["uploads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    let reused: BTreeSet<&str> = a["reused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(reused, present);
    assert_eq!(
        uploads,
        names
            .iter()
            .copied()
            .filter(|n| !present.contains(n))
            .collect()
    );
    let m = ch.manifest("x86-64");
    let sig = ch.fetch("x86-64/SHA256SUMS.gpg").unwrap();
    assert!(verifies(&keys.keyring, &sig, m.as_bytes()));
    assert!(m.contains("store_19.img.xz"), "{m}");
    assert_listed_payloads_served(&ch, "x86-64", &m);
}

/// What a device GETs at a path: the status, the bytes, and the caching and
/// hash metadata served with them.
#[derive(PartialEq)]
struct Served {
    status: u16,
    body: Vec<u8>,
    cache_control: Option<String>,
    sha256: Option<String>,
}

/// Every stored path of a channel with what a device GETs there.
fn served(ch: &Chan) -> BTreeMap<String, Served> {
    ch.stored()
        .into_iter()
        .map(|rel| {
            let r = http("GET", &ch.url(&rel), b"");
            let header = |k: &str| r.header(k).map(str::to_string);
            let served = Served {
                status: r.status,
                cache_control: header("cache-control"),
                sha256: header("x-amz-meta-sha256"),
                body: r.body,
            };
            (rel, served)
        })
        .collect()
}

/// (5) The hosting's owner changes the channel behind the publisher's back
/// (raw access, as the hostile-hosting tests need it): devices fetch what
/// was put there and `status` sees it, and restoring a snapshot puts back
/// everything as it was, byte for byte, which the publisher takes as its own.
pub fn raw_hosting_edits_reach_devices_and_a_restore_rolls_everything_back(site: &Site) {
    let keys = keygen();
    let ch = Chan::new(site, &keys, "keep = 2");
    ch.run(&release("17"), 0);
    for rel in ["x86-64/SHA256SUMS", "arm64/store_17.img.xz", "ledger.jsonl"] {
        let raw = ch.raw_get(rel);
        assert!(
            raw.is_some() && raw == ch.fetch(rel),
            "{rel}: raw and served differ"
        );
    }
    assert_eq!(ch.raw_get("x86-64/SHA256SUMS.asc"), None);
    let before = served(&ch);
    let snapshot = ch.snapshot();

    ch.run(&release("18"), 0);
    let mut edited = ch.raw_get("x86-64/SHA256SUMS").unwrap();
    edited.extend_from_slice(
        b"0000000000000000000000000000000000000000000000000000000000000000 *evil.efi.xz\n",
    );
    ch.raw_put("x86-64/SHA256SUMS", &edited);
    ch.raw_delete("arm64/SHA256SUMS.gpg");
    ch.raw_put("riscv64/extra/planted.efi.xz", b"planted");
    if site.layout == Layout::Dir {
        // Written through the arch symlink into the current generation (the
        // second); `status` below still finds the symlink to read it through.
        assert_eq!(
            ch.raw_get(".generations/x86-64/2/SHA256SUMS").as_ref(),
            Some(&edited)
        );
    }
    assert_eq!(ch.fetch("x86-64/SHA256SUMS"), Some(edited));
    assert_eq!(ch.fetch("arm64/SHA256SUMS.gpg"), None);
    assert_eq!(
        ch.fetch("riscv64/extra/planted.efi.xz").as_deref(),
        Some(&b"planted"[..])
    );
    let st = ch.run(&args(&["--json", "status"], vec![]), 1);
    let report: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    let problems = |arch: &str| -> String {
        let a = report["arches"].as_array().unwrap().iter();
        a.filter(|a| a["arch"] == arch)
            .map(|a| a["problems"].to_string())
            .collect()
    };
    assert!(problems("x86-64").contains("signature"), "{report}");
    assert!(
        problems("arm64").contains("SHA256SUMS.gpg is missing"),
        "{report}"
    );

    ch.restore(&snapshot);
    let after = served(&ch);
    let differ = differing(&before, &after);
    assert!(
        differ.is_empty(),
        "the restore changed what devices fetch at {differ:?}"
    );
    // History and manifests went back together: every signature checks
    // out, only the head this machine remembers tells. Once forgotten (a
    // fresh runner), the restored channel is consistent again.
    let out = ch.run(&args(&["status"], vec![]), 1);
    let err = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        err.contains("this machine saw entry #2") && err.contains("ends at #1"),
        "{err}"
    );
    let err = stderr(&ch.run(&release("18"), 1));
    assert!(err.contains("cut short or rolled back"), "{err}");
    ch.forget_remembered();
    ch.run(&args(&["status"], vec![]), 0);
    ch.run(&release("18"), 0);
    for arch in ARCHES {
        let m = ch.manifest(arch);
        let sig = ch.fetch(&format!("{arch}/SHA256SUMS.gpg")).unwrap();
        assert!(verifies(&keys.keyring, &sig, m.as_bytes()), "{arch}");
        assert!(m.contains("_17.") && m.contains("_18."), "{arch}: {m}");
        assert_listed_payloads_served(&ch, arch, &m);
    }
}
