//! Shared helpers for the integration tests: run our binary, and verify with
//! the real gpg exactly as systemd-pull does.
#![allow(dead_code)]

pub mod images;
pub mod signers;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Our binary. Each test process remembers channel history heads and
/// output hashes (the stamp cache) in directories of its own, never in the
/// developer's.
pub fn bin() -> Command {
    static STATE: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let state = STATE.get_or_init(|| tempfile::tempdir().unwrap());
    let mut c = Command::new(env!("CARGO_BIN_EXE_sysupdate-publish"));
    c.env("SYSUPDATE_PUBLISH_STATE_DIR", state.path().join("state"));
    c.env("SYSUPDATE_PUBLISH_CACHE_DIR", state.path().join("cache"));
    c
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a command, returning its output; panics with the output when the
/// exit status is not `expect`.
pub fn run(cmd: &mut Command, expect: i32) -> Output {
    let out = cmd.stdin(Stdio::null()).output().expect("spawn");
    if out.status.code() != Some(expect) {
        panic!(
            "{cmd:?} exited {:?}, expected {expect}\nstdout:\n{}\nstderr:\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The report: what a command found or did goes to stdout.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// systemd's exact gpg command line (src/import/pull-common.c, 254–261):
/// a fresh homedir, one keyring, the data on stdin. Returns the gpg exit
/// status and its stderr.
pub fn gpg_verify(keyring: &Path, sig: &Path, data: &[u8]) -> (i32, String) {
    use std::io::Write;
    let home = tempfile::tempdir().unwrap();
    let mut child = Command::new("gpg")
        .args(sysupdate_publish::signing::SYSTEMD_GPG_ARGS)
        .arg(format!("--homedir={}", home.path().display()))
        .arg(format!("--keyring={}", keyring.display()))
        .arg("--verify")
        .arg(sig)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gpg must be installed (.ci/run installs it)");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every file below `root` with its bytes: compare before/after to prove a
/// refused command changed nothing.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    if !root.exists() {
        return out;
    }
    for e in walkdir::WalkDir::new(root).sort_by_file_name() {
        let e = e.unwrap();
        if e.file_type().is_file() {
            out.insert(
                e.path().strip_prefix(root).unwrap().to_path_buf(),
                std::fs::read(e.path()).unwrap(),
            );
        }
    }
    out
}

/// A throwaway key made by our own keygen.
pub struct Keys {
    pub dir: tempfile::TempDir,
    pub secret: PathBuf,
    pub keyring: PathBuf,
}

pub fn keygen() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("release.asc");
    let keyring = dir.path().join("release.pgp");
    run(
        bin()
            .arg("keygen")
            .args(["--uid", "Test Release <release@example.org>"])
            .arg("--secret")
            .arg(&secret)
            .arg("--keyring")
            .arg(&keyring),
        0,
    );
    Keys {
        dir,
        secret,
        keyring,
    }
}

/// Verifies every arch directory of a channel like a device: the signature
/// with systemd's gpg line, then every listed payload's hash.
pub fn assert_channel_verifies(store: &Path, keyring: &Path) {
    for e in std::fs::read_dir(store).unwrap() {
        let dir = e.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        if !dir.is_dir() || name.starts_with('.') {
            continue;
        }
        let sums = dir.join("SHA256SUMS");
        if !sums.exists() {
            continue;
        }
        let data = std::fs::read(&sums).unwrap();
        let (rc, err) = gpg_verify(keyring, &dir.join("SHA256SUMS.gpg"), &data);
        assert_eq!(rc, 0, "{name}: gpg refused the manifest: {err}");
        for line in String::from_utf8(data).unwrap().lines() {
            let (hash, file) = line.split_once(" *").expect("binary-mode line");
            if file.starts_with("BEST-BEFORE-") {
                continue;
            }
            let bytes = std::fs::read(dir.join(file))
                .unwrap_or_else(|e| panic!("{name}: listed {file} is missing: {e}"));
            assert_eq!(sha256_hex(&bytes), hash, "{name}/{file}: wrong hash");
        }
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Writes a config for a channel at `store` using the example transfer files.
pub fn write_config(dir: &Path, store: &Path, keys: &Keys, extra_channel: &str) -> PathBuf {
    let transfers = repo().join("examples/minimal/sysupdate.d");
    write_config_with(dir, store, keys, extra_channel, &transfers, "")
}

/// The `[signing]` body for a key file.
pub fn key_file_signing(keys: &Keys) -> String {
    format!(
        "secret-key = {:?}\nkeyring = {:?}\n",
        keys.secret, keys.keyring
    )
}

/// Writes the config at `path` with `signing` as the `[signing]` body.
pub fn write_config_signed(path: &Path, store: &Path, extra_channel: &str, signing: &str) {
    let transfers = repo().join("examples/minimal/sysupdate.d");
    write_config_file(path, store, extra_channel, signing, &transfers, "");
}

/// A config with its own transfer directory and extra sections (`[checks]`).
pub fn write_config_with(
    dir: &Path,
    store: &Path,
    keys: &Keys,
    extra_channel: &str,
    transfers: &Path,
    extra: &str,
) -> PathBuf {
    let path = dir.join("sysupdate-publish.toml");
    let signing = key_file_signing(keys);
    write_config_file(&path, store, extra_channel, &signing, transfers, extra);
    path
}

fn write_config_file(
    path: &Path,
    store: &Path,
    extra_channel: &str,
    signing: &str,
    transfers: &Path,
    extra: &str,
) {
    std::fs::write(
        path,
        format!(
            "[channel]\nstore = {store:?}\nurl = \"https://updates.example.com/stable\"\n{extra_channel}\n\
             [signing]\n{signing}\n\
             [transfers]\ndir = {transfers:?}\n{extra}\n"
        ),
    )
    .unwrap();
}

/// A copy of the example's transfer files in `dir/sysupdate.d`, to add to.
pub fn example_transfers_in(dir: &Path) -> PathBuf {
    let transfers = dir.join("sysupdate.d");
    std::fs::create_dir(&transfers).unwrap();
    for e in std::fs::read_dir(repo().join("examples/minimal/sysupdate.d")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), transfers.join(e.file_name())).unwrap();
    }
    transfers
}

/// The prebuilt example output of one system and version.
pub fn example_output(system: &str, version: &str) -> PathBuf {
    repo()
        .join("examples/minimal/outputs")
        .join(system)
        .join(version)
}

pub const SYSTEMS: [&str; 3] = ["x86_64-linux", "aarch64-linux", "riscv64-linux"];
pub const ARCHES: [&str; 3] = ["x86-64", "arm64", "riscv64"];

/// `--output` arguments for every example system at `version`.
pub fn output_args(version: &str) -> Vec<String> {
    SYSTEMS
        .iter()
        .flat_map(|s| {
            [
                "--output".to_string(),
                format!("{s}={}", example_output(s, version).display()),
            ]
        })
        .collect()
}

/// The build output of a version made up here for one nix system: xz
/// payloads, distinct per system and version, created under
/// `dir/outputs` on first use.
pub fn fake_output(dir: &Path, system: &str, version: &str) -> PathBuf {
    let out = dir.join("outputs").join(system).join(version);
    if !out.exists() {
        std::fs::create_dir_all(&out).unwrap();
        for (name, size) in [
            (format!("appliance_{version}.efi"), 3000),
            (format!("store_{version}.img"), 9000),
        ] {
            let raw = out.join(&name);
            let content: Vec<u8> = format!("{system} {name} IMAGE_VERSION={version}\n")
                .bytes()
                .cycle()
                .take(size)
                .collect();
            std::fs::write(&raw, content).unwrap();
            assert!(Command::new("xz")
                .arg("-q")
                .arg(&raw)
                .status()
                .unwrap()
                .success());
        }
    }
    out
}

/// `--output` arguments for a version made up here, for every example system.
pub fn fake_outputs(dir: &Path, version: &str) -> Vec<String> {
    SYSTEMS
        .iter()
        .flat_map(|s| {
            [
                "--output".to_string(),
                format!("{s}={}", fake_output(dir, s, version).display()),
            ]
        })
        .collect()
}

/// A directory-store channel in a temp dir with its own key and a config
/// using the example's transfer files.
pub struct TestChannel {
    pub dir: tempfile::TempDir,
    pub keys: Keys,
    pub store: PathBuf,
    pub config: PathBuf,
    /// The stamp cache, outside `dir`: a refused write may still learn hashes.
    pub cache: tempfile::TempDir,
    /// Environment for every run of our binary (a token's PIN, SOFTHSM2_CONF).
    pub env: std::cell::RefCell<Vec<(String, String)>>,
}

impl TestChannel {
    /// `extra` goes into `[channel]`, e.g. `keep = 2`.
    pub fn new(extra: &str) -> TestChannel {
        let dir = tempfile::tempdir().unwrap();
        let keys = keygen();
        let store = dir.path().join("public");
        let config = write_config(dir.path(), &store, &keys, extra);
        TestChannel {
            dir,
            keys,
            store,
            config,
            cache: tempfile::tempdir().unwrap(),
            env: Default::default(),
        }
    }

    /// Rewrites the config with another `[signing]` body (and `extra` in
    /// `[channel]`), as an operator switching signers does.
    pub fn set_signing(&self, extra: &str, signing: &str) {
        write_config_signed(&self.config, &self.store, extra, signing);
    }

    /// Our binary with `--config` set, and a stamp cache of this channel's
    /// own (what one test hashed never spares another test a read).
    pub fn cmd(&self) -> Command {
        let mut c = bin();
        c.env("SYSUPDATE_PUBLISH_CACHE_DIR", self.cache.path());
        c.arg("--config").arg(&self.config);
        c.envs(self.env.borrow().iter().map(|(k, v)| (k, v)));
        c
    }

    /// Sets `name` in the environment of every later run of our binary.
    pub fn set_env(&self, name: &str, value: &str) {
        let mut env = self.env.borrow_mut();
        env.retain(|(k, _)| k != name);
        env.push((name.to_string(), value.to_string()));
    }

    /// Removes `name` from that environment.
    pub fn unset_env(&self, name: &str) {
        self.env.borrow_mut().retain(|(k, _)| k != name);
    }

    pub fn run(&self, args: &[&str], expect: i32) -> Output {
        run(self.cmd().args(args), expect)
    }

    /// `release ARGS…`, expecting exit status `expect`.
    pub fn publish(&self, args: &[String], expect: i32) -> Output {
        run(self.cmd().arg("release").args(args), expect)
    }

    /// Releases the example outputs of `version` for every system.
    pub fn publish_version(&self, version: &str, expect: i32) -> Output {
        self.publish(&output_args(version), expect)
    }

    /// Runs with `--json` and parses stdout.
    pub fn json(&self, args: &[&str], expect: i32) -> serde_json::Value {
        let out = run(self.cmd().arg("--json").args(args), expect);
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The served SHA256SUMS of an arch.
    pub fn manifest(&self, arch: &str) -> String {
        std::fs::read_to_string(self.store.join(arch).join("SHA256SUMS")).unwrap()
    }

    /// Names devices can fetch in an arch directory, sorted.
    pub fn names(&self, arch: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.store.join(arch))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        v.sort();
        v
    }

    /// How many stored files (anywhere in the store) have `needle` in their path.
    pub fn stored(&self, needle: &str) -> usize {
        snapshot(&self.store)
            .keys()
            .filter(|p| p.to_string_lossy().contains(needle))
            .count()
    }
}

/// A running `sysupdate-publish serve`; stopped when dropped.
pub struct Served {
    child: std::process::Child,
    /// What it printed: `http(s)://127.0.0.1:PORT/`.
    pub url: String,
}

impl Served {
    /// Starts `cmd` (our binary with `serve … --listen 127.0.0.1:0`) and
    /// reads the address from its one stdout line; stderr goes to `log`.
    pub fn start(cmd: &mut Command, log: Stdio) -> Served {
        use std::io::BufRead;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("run sysupdate-publish serve");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // Before the assertion, so a failed start does not leave it running.
        let served = Served {
            child,
            url: line.trim().to_string(),
        };
        assert!(
            served.url.starts_with("http"),
            "serve printed {line:?} instead of its address"
        );
        served
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test CA and a server certificate it signed (SAN 127.0.0.1 and
/// localhost), made by the real openssl through tests/e2e/nginx.sh, the same
/// as the e2e nginx uses.
pub struct TestCerts {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn test_certs(dir: &Path) -> TestCerts {
    let out = run(
        Command::new(repo().join("tests/e2e/nginx.sh"))
            .arg("certs")
            .arg(dir),
        0,
    );
    let text = stdout(&out);
    let get = |k: &str| -> PathBuf {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or_else(|| panic!("nginx.sh certs did not print {k}: {text}"))
            .into()
    };
    TestCerts {
        ca: get("E2E_CA="),
        cert: get("E2E_CERT="),
        key: get("E2E_KEY="),
    }
}

/// Asserts that the trees `want` and `got` hold the same names, contents
/// and links (links compared as links), as the real `diff -r` sees them.
pub fn assert_same_tree(want: &Path, got: &Path, what: &str) {
    let diff = Command::new("diff")
        .args(["-r", "--no-dereference"])
        .arg(want)
        .arg(got)
        .output()
        .unwrap();
    assert!(
        diff.status.success(),
        "{what}: {} differs from {}:\n{}",
        got.display(),
        want.display(),
        String::from_utf8_lossy(&diff.stdout)
    );
}
