//! Rust side of the end-to-end harness (tests/e2e/README.md): nginx (or
//! `sysupdate-publish serve`), channels published by `sysupdate-publish
//! release`, and devices running the real systemd-sysupdate 257 (262) in an
//! overlay of the cached trixie (sid) chroot.
//!
//! Every resource is a guard whose `Drop` releases it (nginx stopped, device
//! unmounted and deleted), so a failing assertion cleans up too. Each test
//! thread works in its own private mount namespace, so even a `kill -9` of the
//! test binary cannot leave an overlay or proc mount on the host; the next run
//! stops any nginx a killed run left behind and deletes its directories.
//!
//! Anything that cannot run (not root, a tool missing, the chroot build failing)
//! panics with the reason: the suite never skips.
// Shared by several test crates, each using a part of it.
#![allow(dead_code)]

use std::cell::Cell;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use crate::common::{self, bin, repo};

/// The systemd architecture of the test devices (what `%a` expands to).
pub const ARCH: &str = "x86-64";
/// Its nix system name, for `release --output`.
pub const SYSTEM: &str = "x86_64-linux";

const TOOLS: &[(&str, &str)] = &[
    ("debootstrap", "debootstrap"),
    ("chroot", "coreutils"),
    ("timeout", "coreutils"),
    ("nginx", "nginx-light"),
    ("openssl", "openssl"),
    ("curl", "curl"),
    ("ss", "iproute2"),
    ("findmnt", "util-linux"),
    ("flock", "util-linux"),
    ("xz", "xz-utils"),
    ("gpg", "gpg"),
    ("nix", "nix-bin"),
];

/// Proxy settings would send the chroot's libcurl (and our curl) elsewhere.
const PROXY_VARS: &[&str] = &[
    "http_proxy",
    "https_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
];

fn e2e_dir() -> PathBuf {
    repo().join("tests/e2e")
}

fn script(name: &str) -> Command {
    let mut c = Command::new(e2e_dir().join(name));
    for v in PROXY_VARS {
        c.env_remove(v);
    }
    c.stdin(Stdio::null());
    c
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a command that must succeed; panics with its output otherwise.
fn must(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("e2e: {what}: cannot run {}: {e}", describe(cmd)));
    if !out.status.success() {
        panic!(
            "e2e: {what} failed ({}): {}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            describe(cmd),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Why a cleanup command failed, if it did.
fn failure(out: &std::io::Result<Output>) -> Option<String> {
    match out {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "{}: {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        )),
        Err(e) => Some(e.to_string()),
    }
}

/// A failed cleanup fails the test (unless it is already failing: a panic
/// while panicking would abort and hide the first message).
fn cleanup_failed(what: &str, why: &str) {
    eprintln!("e2e: {what} failed: {why}");
    if !std::thread::panicking() {
        panic!("e2e: {what} failed: {why}");
    }
}

/// `KEY=value` lines (what nginx.sh and device.sh print) as a map.
fn env_lines(out: &Output) -> BTreeMap<String, String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{prefix}-{}", N.fetch_add(1, Ordering::Relaxed))
}

// ------------------------------------------------------------------ setup

/// Puts the calling thread (and every process and thread it starts from now
/// on) into a private mount namespace: the overlays and proc mounts of its
/// devices are invisible to the host and vanish with the last process in it.
fn private_mounts() {
    thread_local!(static DONE: Cell<bool> = const { Cell::new(false) });
    if DONE.with(Cell::get) {
        return;
    }
    // SAFETY: plain syscalls with valid, NUL-terminated arguments.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            panic!(
                "e2e: unshare(CLONE_NEWNS) failed: {} (the suite needs root with CAP_SYS_ADMIN, as in CI)",
                std::io::Error::last_os_error()
            );
        }
        if libc::mount(
            c"none".as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            panic!(
                "e2e: making / a private mount failed: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    DONE.with(|d| d.set(true));
}

/// The Debian release a device runs, i.e. its systemd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suite {
    /// Debian trixie: systemd 257.
    Trixie,
    /// Debian sid: systemd 262 (261 or later: `ConditionFraction=`).
    Sid,
}

impl Suite {
    pub fn name(self) -> &'static str {
        match self {
            Suite::Trixie => "trixie",
            Suite::Sid => "sid",
        }
    }
}

/// Builds (or reuses) the cached chroot of `suite`, once per run.
pub fn chroot_root(suite: Suite) -> PathBuf {
    static ROOTS: Mutex<BTreeMap<&'static str, PathBuf>> = Mutex::new(BTreeMap::new());
    preflight();
    let mut roots = ROOTS.lock().unwrap_or_else(|e| e.into_inner());
    roots
        .entry(suite.name())
        .or_insert_with(|| {
            let t = std::time::Instant::now();
            let out = must(
                script("chroot.sh").args(["--suite", suite.name()]),
                &format!("building the {} chroot", suite.name()),
            );
            let root = String::from_utf8_lossy(&out.stdout).trim().to_string();
            eprintln!(
                "e2e: chroot {root} ready in {:.1} s",
                t.elapsed().as_secs_f64()
            );
            PathBuf::from(root)
        })
        .clone()
}

/// Checks the prerequisites once and builds (or reuses) the cached chroot.
/// Panics with the reason when something is missing.
fn preflight() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "e2e: the end-to-end suite must run as root (chroot, mounts, nginx as root); CI does. \
             Run `sudo -E cargo test --test e2e` locally"
        );
        let missing: Vec<String> = TOOLS
            .iter()
            .filter(|(cmd, _)| {
                !Command::new("sh")
                    .args(["-c", &format!("command -v {cmd}")])
                    .stdout(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            })
            .map(|(cmd, pkg)| format!("{cmd} (Debian package {pkg})"))
            .collect();
        assert!(
            missing.is_empty(),
            "e2e: missing tools: {} (.ci/run installs them)",
            missing.join(", ")
        );
        let t = std::time::Instant::now();
        let out = must(&mut script("chroot.sh"), "building the trixie chroot");
        let root = String::from_utf8_lossy(&out.stdout).trim().to_string();
        eprintln!(
            "e2e: chroot {root} ready in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    });
}

/// This run's work directory, `$TMPDIR/sysupdate-e2e-rs/run-<pid>`. The first
/// call also cleans up after runs that were killed.
fn run_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = std::env::temp_dir().join("sysupdate-e2e-rs");
        std::fs::create_dir_all(&base).unwrap();
        set_mode_755(&base);
        sweep_dead_runs(&base);
        let dir = base.join(format!("run-{}", std::process::id()));
        if dir.exists() {
            sweep(&dir);
        }
        std::fs::create_dir_all(&dir).unwrap();
        set_mode_755(&dir);
        dir
    })
}

fn set_mode_755(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn sweep_dead_runs(base: &Path) {
    for e in std::fs::read_dir(base).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("run-") else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            if std::fs::read_dir(e.path()).is_ok_and(|mut d| d.next().is_some()) {
                eprintln!(
                    "e2e: cleaning up after a killed run: {}",
                    e.path().display()
                );
            }
            sweep(&e.path());
        }
    }
}

/// Stops the nginx servers of a run directory, takes its devices down and
/// deletes it.
fn sweep(dir: &Path) {
    let entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    let named = |p: &Path, prefix: &str| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
    };
    for p in entries.iter().filter(|p| named(p, "nginx-")) {
        must(
            script("nginx.sh").arg("stop").arg(p),
            "stopping a stale nginx",
        );
    }
    for p in entries.iter().filter(|p| named(p, "device-")) {
        must(
            script("device.sh").arg("down").arg(p),
            "removing a stale device",
        );
    }
    must(
        Command::new("rm")
            .arg("-rf")
            .arg("--one-file-system")
            .arg(dir),
        "removing a stale work directory",
    );
}

/// A fresh directory below this run's work directory (mode 755).
fn work_dir(prefix: &str) -> PathBuf {
    let dir = run_dir().join(unique(prefix));
    std::fs::create_dir_all(&dir).unwrap();
    set_mode_755(&dir);
    dir
}

// ------------------------------------------------------------------ nginx

/// A private nginx serving HTTPS on a free loopback port (tests/e2e/nginx.sh).
pub struct Nginx {
    dir: PathBuf,
    pub www: PathBuf,
    pub ca: PathBuf,
    pub port: u16,
}

impl Nginx {
    fn start() -> Nginx {
        let dir = work_dir("nginx");
        let out = must(
            script("nginx.sh")
                .arg("start")
                .arg(&dir)
                .args(["auto", "none"]),
            "starting nginx",
        );
        let env = env_lines(&out);
        let get = |k: &str| {
            env.get(k)
                .unwrap_or_else(|| panic!("e2e: nginx.sh did not print {k}: {env:?}"))
                .clone()
        };
        Nginx {
            www: get("E2E_WWW").into(),
            ca: get("E2E_CA").into(),
            port: get("E2E_HTTPS_PORT").parse().unwrap(),
            dir,
        }
    }

    /// `https://localhost:PORT/<path>`
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}/{path}", self.port)
    }

    /// HTTP status and response headers of a GET, with the test CA.
    pub fn get(&self, path: &str) -> (u16, String) {
        let out = must(
            Command::new("curl")
                .args(["-sS", "--noproxy", "*", "-o", "/dev/null", "-D", "-"])
                .args(["-H", "Accept-Encoding: gzip, deflate, br"])
                .arg("--cacert")
                .arg(&self.ca)
                .arg(self.url(path))
                .stdin(Stdio::null()),
            "curl",
        );
        let headers = String::from_utf8_lossy(&out.stdout).into_owned();
        let status = headers
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("e2e: no HTTP status from curl: {headers}"));
        (status, headers)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let out = script("nginx.sh").arg("stop").arg(&self.dir).output();
        match failure(&out) {
            None => {
                let _ = std::fs::remove_dir_all(&self.dir);
            }
            Some(why) => cleanup_failed(&format!("nginx.sh stop {}", self.dir.display()), &why),
        }
    }
}

/// The nginx shared by every test that runs at the same time; the last test
/// to finish stops it (a later test starts a new one).
pub fn shared_nginx() -> Arc<Nginx> {
    static SHARED: Mutex<Weak<Nginx>> = Mutex::new(Weak::new());
    private_mounts();
    preflight();
    let mut slot = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(n) = slot.upgrade() {
        return n;
    }
    let n = Arc::new(Nginx::start());
    *slot = Arc::downgrade(&n);
    n
}

// ------------------------------------------------------------------ payloads

/// Deterministic, incompressible bytes: a recognisable header, then `size`
/// bytes of xorshift output seeded by `what` and `version`.
fn fake(what: &str, version: &str, size: usize) -> Vec<u8> {
    let mut seed: u64 = 0xcbf2_9ce4_8422_2325;
    for b in what.bytes().chain([0]).chain(version.bytes()) {
        seed = (seed ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    let mut out = format!("{what} for appliance version {version}\n").into_bytes();
    out.reserve(size);
    while out.len() < size {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(size);
    out
}

/// What `appliance_<v>.efi` holds (installed, decompressed): a real UKI,
/// systemd-boot's EFI stub with an `.osrel` saying `IMAGE_VERSION=<v>` and a
/// small `.linux`, so every release here passes preflight on a real PE file.
/// Made once per version, so every call returns the same bytes.
pub fn uki(version: &str) -> Vec<u8> {
    uki_saying(version, version)
}

/// A UKI whose `.osrel` says `IMAGE_VERSION=<says>`, to be named for `name`.
pub fn uki_saying(name: &str, says: &str) -> Vec<u8> {
    static MADE: Mutex<BTreeMap<(String, String), Vec<u8>>> = Mutex::new(BTreeMap::new());
    let mut made = MADE.lock().unwrap_or_else(|e| e.into_inner());
    made.entry((name.to_string(), says.to_string()))
        .or_insert_with(|| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("uki.efi");
            let osrel = common::images::osrel("appliance", says);
            common::images::uki(&path, ARCH, Some(&osrel), 48 << 10);
            std::fs::read(&path).unwrap()
        })
        .clone()
}

/// What `store_<v>.img` holds (installed, decompressed).
pub fn store_image(version: &str) -> Vec<u8> {
    fake("fake store image", version, 96 << 10)
}

/// Compresses with the xz command-line tool.
pub fn xz(data: &[u8]) -> Vec<u8> {
    pipe(Command::new("xz").args(["-c", "-T1"]), data, "xz -c")
}

/// Decompresses with the xz command-line tool.
pub fn unxz(data: &[u8]) -> Vec<u8> {
    pipe(Command::new("xz").args(["-dc"]), data, "xz -dc")
}

fn pipe(cmd: &mut Command, data: &[u8], what: &str) -> Vec<u8> {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("e2e: cannot run {what}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    assert!(out.status.success(), "e2e: {what} failed");
    out.stdout
}

// ------------------------------------------------------------------ channel

/// A build output for `version` below `work` (see [`Channel::output`]).
pub fn build_output(work: &Path, version: &str, with_store: bool) -> PathBuf {
    let dir = work.join(format!("out-{version}-{}", unique("o")));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("appliance_{version}.efi")), uki(version)).unwrap();
    if with_store {
        std::fs::write(
            dir.join(format!("store_{version}.img.xz")),
            xz(&store_image(version)),
        )
        .unwrap();
    }
    dir
}

/// Generates the transfer files of tests/e2e/device.nix for `url` with nix/lib.nix.
fn nix_transfers(url: &str, dir: &Path) {
    must(
        Command::new(repo().join("scripts/nix-eval-transfers"))
            .env("SYSUPDATE_E2E_URL", url)
            .arg(e2e_dir().join("device.nix"))
            .arg(dir)
            .stdin(Stdio::null()),
        "generating the transfer files with nix/lib.nix",
    );
}

/// Generates a ring device's /etc share (tests/e2e/ring-device.nix through
/// nix/lib.nix's `etcFiles`): the default channel at `url`, `rings` as
/// (channel, url or none for the default's sibling, fraction).
pub fn nix_ring_etc(url: &str, rings: &[(&str, Option<&str>, &str)], dir: &Path) {
    let json = serde_json::Value::Array(
        rings
            .iter()
            .map(|(channel, url, fraction)| {
                let mut r = serde_json::json!({ "channel": channel, "fraction": fraction });
                if let Some(url) = url {
                    r["url"] = serde_json::json!(url);
                }
                r
            })
            .collect(),
    );
    must(
        Command::new(repo().join("scripts/nix-eval-transfers"))
            .env("SYSUPDATE_E2E_URL", url)
            .env("SYSUPDATE_E2E_RINGS", json.to_string())
            .arg("--etc")
            .arg(e2e_dir().join("ring-device.nix"))
            .arg(dir)
            .stdin(Stdio::null()),
        "generating a ring device's /etc with nix/lib.nix",
    );
}

/// Who serves a channel to devices.
pub enum Host {
    /// The shared nginx (HTTPS with its test CA).
    Nginx(Arc<Nginx>),
    /// The channel's own `sysupdate-publish serve` on its store.
    Serve(common::Served),
}

/// How `serve` talks to devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    /// With a certificate from a test CA the device trusts.
    Https,
}

/// One channel: a directory store with its own key and the transfer files
/// generated from tests/e2e/device.nix by nix/lib.nix, served to devices by
/// the shared nginx (`https://localhost:PORT/<name>/`) or by its own `serve`.
pub struct Channel {
    host: Host,
    /// The CA devices trust (for a channel served over plain HTTP, one
    /// nothing uses: devices are always given one).
    pub ca: PathBuf,
    pub url: String,
    /// The store (`[channel] store`); devices fetch `<store>/x86-64/…`.
    pub store: PathBuf,
    /// Config, transfers, build outputs.
    pub work: PathBuf,
    pub keys: common::Keys,
    pub transfers: PathBuf,
    pub config: PathBuf,
}

impl Channel {
    /// A channel below the shared nginx's document root; `extra` goes into
    /// `[channel]`, e.g. `keep = 2`.
    pub fn new(extra: &str) -> Channel {
        let nginx = shared_nginx();
        let work = work_dir("channel");
        let name = work.file_name().unwrap().to_string_lossy().into_owned();
        let url = nginx.url(&name);
        let store = nginx.www.join(&name);
        let ca = nginx.ca.clone();
        Channel::hosted(Host::Nginx(nginx), ca, url, store, work, extra)
    }

    /// A channel served by `sysupdate-publish serve STORE` on a free
    /// loopback port, over `scheme` (HTTPS: a certificate from
    /// `nginx.sh certs`, whose CA devices get).
    pub fn behind_serve(scheme: Scheme, extra: &str) -> Channel {
        private_mounts();
        preflight();
        let work = work_dir("channel");
        let store = work.join("store");
        // serve wants the directory to exist; release fills it.
        std::fs::create_dir_all(&store).unwrap();
        let certs = common::test_certs(&work.join("tls"));
        let mut cmd = bin();
        cmd.arg("serve")
            .arg(&store)
            .args(["--listen", "127.0.0.1:0"]);
        if scheme == Scheme::Https {
            cmd.arg("--tls-cert")
                .arg(&certs.cert)
                .arg("--tls-key")
                .arg(&certs.key);
        }
        let log = std::fs::File::create(work.join("serve.log")).unwrap();
        let served = common::Served::start(&mut cmd, log.into());
        let url = served.url.trim_end_matches('/').to_string();
        Channel::hosted(Host::Serve(served), certs.ca, url, store, work, extra)
    }

    fn hosted(
        host: Host,
        ca: PathBuf,
        url: String,
        store: PathBuf,
        work: PathBuf,
        extra: &str,
    ) -> Channel {
        let transfers = work.join("sysupdate.d");
        nix_transfers(&url, &transfers);
        let keys = common::keygen();
        let config = work.join("sysupdate-publish.toml");
        std::fs::write(
            &config,
            format!(
                "[channel]\nstore = {store:?}\nurl = {url:?}\n{extra}\n\n\
                 [signing]\nsecret-key = {:?}\nkeyring = {:?}\n\n\
                 [transfers]\ndir = {transfers:?}\ncompress = \"xz\"\n\n\
                 [checks]\nimage-id = \"appliance\"\n",
                keys.secret, keys.keyring
            ),
        )
        .unwrap();
        Channel {
            host,
            ca,
            url,
            store,
            work,
            keys,
            transfers,
            config,
        }
    }

    /// The nginx serving this channel; panics for a channel `serve` serves.
    pub fn nginx(&self) -> &Arc<Nginx> {
        match &self.host {
            Host::Nginx(n) => n,
            Host::Serve(_) => panic!("e2e: this channel is served by `serve`, not nginx"),
        }
    }

    /// The arch directory devices fetch (a symlink to the current generation).
    pub fn arch_dir(&self) -> PathBuf {
        self.store.join(ARCH)
    }

    /// A build output for `version`: `appliance_<v>.efi` uncompressed (the
    /// tool compresses it, `compress = "xz"`) and `store_<v>.img.xz`
    /// compressed by the xz CLI (the tool passes it through).
    pub fn output(&self, version: &str, with_store: bool) -> PathBuf {
        build_output(&self.work, version, with_store)
    }

    /// `sysupdate-publish release --output x86_64-linux=DIR` with extra
    /// environment; returns the output whatever the exit status.
    pub fn release_raw(&self, dir: &Path, env: &[(&str, &str)]) -> Output {
        let mut cmd = bin();
        cmd.arg("--config")
            .arg(&self.config)
            .arg("release")
            .arg("--output")
            .arg(format!("{SYSTEM}={}", dir.display()))
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run sysupdate-publish")
    }

    /// Releases a complete `version`; panics unless the tool exits 0.
    pub fn release(&self, version: &str) -> Output {
        self.release_env(version, &[])
    }

    pub fn release_env(&self, version: &str, env: &[(&str, &str)]) -> Output {
        let out = self.release_raw(&self.output(version, true), env);
        assert_eq!(
            out.status.code(),
            Some(0),
            "release {version} failed:\n{}",
            common::stderr(&out)
        );
        out
    }

    /// Names in the served arch directory, sorted.
    pub fn served_names(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.arch_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    pub fn served(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.arch_dir().join(name))
            .unwrap_or_else(|e| panic!("reading served {name}: {e}"))
    }

    /// Replaces a served file behind the tool's back (a new inode: hard links
    /// into the tool's payload pool are not written through).
    pub fn tamper(&self, name: &str, bytes: &[u8]) {
        let path = self.arch_dir().join(name);
        let _ = std::fs::remove_file(&path);
        std::fs::write(&path, bytes).unwrap();
    }

    /// Signs the served SHA256SUMS with `secret` (`sysupdate-publish sign`).
    pub fn sign_served_manifest(&self, secret: &Path) {
        let dir = self.arch_dir();
        common::run(
            bin()
                .arg("sign")
                .arg("--key")
                .arg(secret)
                .arg("--output")
                .arg(dir.join("SHA256SUMS.gpg"))
                .arg(dir.join("SHA256SUMS")),
            0,
        );
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.store);
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

/// Several channels in one publisher config (`[channels.NAME]`), one key, each a
/// directory store below nginx's document root served at
/// `https://localhost:PORT/<work>-<name>/`.
pub struct Channels {
    pub nginx: Arc<Nginx>,
    pub work: PathBuf,
    pub keys: common::Keys,
    pub config: PathBuf,
    /// The publisher's `[transfers] dir` (the default channel's device files).
    pub transfers: PathBuf,
    stores: BTreeMap<String, (PathBuf, String)>,
}

impl Channels {
    /// `extra` goes into every `[channels.NAME]` table.
    pub fn new(names: &[&str], extra: &str) -> Channels {
        let nginx = shared_nginx();
        let work = work_dir("channels");
        let base = work.file_name().unwrap().to_string_lossy().into_owned();
        let stores: BTreeMap<String, (PathBuf, String)> = names
            .iter()
            .map(|n| {
                let dir = format!("{base}-{n}");
                (n.to_string(), (nginx.www.join(&dir), nginx.url(&dir)))
            })
            .collect();
        let transfers = work.join("sysupdate.d");
        nix_transfers(&stores[names[0]].1, &transfers);
        let keys = common::keygen();
        let mut text = String::new();
        for (name, (store, url)) in &stores {
            text.push_str(&format!(
                "[channels.{name}]\nstore = {store:?}\nurl = {url:?}\n{extra}\n\n"
            ));
        }
        text.push_str(&format!(
            "[signing]\nsecret-key = {:?}\nkeyring = {:?}\n\n\
             [transfers]\ndir = {transfers:?}\ncompress = \"xz\"\n\n\
             [checks]\nimage-id = \"appliance\"\n",
            keys.secret, keys.keyring
        ));
        let config = work.join("sysupdate-publish.toml");
        std::fs::write(&config, text).unwrap();
        Channels {
            nginx,
            work,
            keys,
            config,
            transfers,
            stores,
        }
    }

    /// What devices fetch for channel `name`.
    pub fn url(&self, name: &str) -> &str {
        &self.stores[name].1
    }

    /// The store of channel `name`.
    pub fn store(&self, name: &str) -> &Path {
        &self.stores[name].0
    }

    /// `sysupdate-publish --config C ARGS…`, which must exit 0.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, &[])
    }

    /// [`Channels::run`] with extra environment variables.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let out = bin()
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("run sysupdate-publish");
        assert_eq!(
            out.status.code(),
            Some(0),
            "sysupdate-publish {} failed:\n{}",
            args.join(" "),
            common::stderr(&out)
        );
        out
    }

    /// Releases a complete `version` to `channel`.
    pub fn release(&self, channel: &str, version: &str) -> Output {
        self.release_env(channel, version, &[])
    }

    /// [`Channels::release`] with extra environment variables.
    pub fn release_env(&self, channel: &str, version: &str, env: &[(&str, &str)]) -> Output {
        let dir = build_output(&self.work, version, true);
        self.run_env(
            &[
                "--channel",
                channel,
                "release",
                "--output",
                &format!("{SYSTEM}={}", dir.display()),
            ],
            env,
        )
    }

    /// Names in channel `name`'s served arch directory, sorted.
    pub fn served_names(&self, name: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.store(name).join(ARCH))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for Channels {
    fn drop(&mut self) {
        for (store, _) in self.stores.values() {
            let _ = std::fs::remove_dir_all(store);
        }
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

// ------------------------------------------------------------------ device

/// One systemd-sysupdate call in the device.
pub struct Sys {
    pub args: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl fmt::Display for Sys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "$ systemd-sysupdate {}   -> exit {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.args, self.code, self.stdout, self.stderr
        )
    }
}

impl Sys {
    /// Panics (with the whole call) unless the exit status is `code`.
    pub fn status(&self, code: i32, why: &str) -> &Sys {
        assert_eq!(self.code, Some(code), "{why}\n{self}");
        self
    }

    /// Panics unless stderr contains `needle`.
    pub fn says(&self, needle: &str, why: &str) -> &Sys {
        assert!(
            self.stderr.contains(needle),
            "{why}: stderr lacks {needle:?}\n{self}"
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e})\n{self}"))
    }
}

/// What `--json=short list` reports.
#[derive(Debug, PartialEq, Eq)]
pub struct Listing {
    pub current: Option<String>,
    pub all: Vec<String>,
}

/// A throw-away device (tests/e2e/device.sh): an overlay of the cached chroot
/// with the test CA, the channel's keyring, the channel's transfer files, and
/// `installed` in its target directories.
pub struct Device {
    dir: PathBuf,
    pub root: PathBuf,
    /// Its definitions directory (`--definitions=`, device.sh's `sysupdate`).
    pub defs: PathBuf,
    pub suite: Suite,
}

impl Device {
    /// A trixie (systemd 257) device with `channel`'s transfer files, at `installed`.
    pub fn up(channel: &Channel, installed: &str) -> Device {
        Device::up_on(Suite::Trixie, channel, installed)
    }

    /// A device of `suite` with `channel`'s transfer files, at `installed`.
    pub fn up_on(suite: Suite, channel: &Channel, installed: &str) -> Device {
        let device = Device::up_bare(suite, &channel.ca, &channel.keys.keyring, installed);
        for e in std::fs::read_dir(&channel.transfers).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), device.defs.join(e.file_name())).unwrap();
        }
        device
    }

    /// A device of `suite` trusting `ca` and `keyring`, at `installed`, with
    /// no transfer files yet.
    pub fn up_bare(suite: Suite, ca: &Path, keyring: &Path, installed: &str) -> Device {
        private_mounts();
        chroot_root(suite);
        let dir = run_dir().join(unique("device"));
        let out = script("device.sh")
            .arg("up")
            .arg(&dir)
            .arg(ca)
            .arg(keyring)
            .arg(installed)
            .env("E2E_DEVICE_SUITE", suite.name())
            .output()
            .expect("run device.sh");
        // From here on the guard takes the device down, whatever happens.
        let mut device = Device {
            root: dir.join("root"),
            defs: PathBuf::new(),
            dir,
            suite,
        };
        assert!(
            out.status.success(),
            "e2e: device.sh up failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let env = env_lines(&out);
        device.root = env["E2E_DEVICE_ROOT"].clone().into();
        device.defs = PathBuf::from(&env["E2E_DEVICE_DEFS"]);
        // "At version N": installed versions come from the target directories.
        std::fs::write(
            device
                .target("uki")
                .join(format!("appliance_{installed}.efi")),
            uki(installed),
        )
        .unwrap();
        std::fs::write(
            device
                .target("store")
                .join(format!("store_{installed}.img")),
            store_image(installed),
        )
        .unwrap();
        device
    }

    fn target(&self, which: &str) -> PathBuf {
        self.root.join("var/lib/e2e").join(which)
    }

    /// Runs systemd-sysupdate in the device (at most 2 minutes).
    pub fn sysupdate<S: AsRef<OsStr>>(&self, args: &[S]) -> Sys {
        let mut cmd = Command::new("timeout");
        cmd.args(["--kill-after=10", "120"])
            .arg(e2e_dir().join("device.sh"))
            .arg("sysupdate")
            .arg(&self.dir)
            .args(args)
            .env("SYSTEMD_COLORS", "0")
            .stdin(Stdio::null());
        for v in PROXY_VARS {
            cmd.env_remove(v);
        }
        let out = cmd.output().expect("run device.sh sysupdate");
        sys_call(args, &out)
    }

    /// Runs `args` in the device (`chroot ROOT ARGS…`, at most 2 minutes).
    pub fn chroot<S: AsRef<OsStr>>(&self, args: &[S]) -> Sys {
        let mut cmd = Command::new("timeout");
        cmd.args(["--kill-after=10", "120", "chroot"])
            .arg(&self.root)
            .args(args)
            .env("SYSTEMD_COLORS", "0")
            .stdin(Stdio::null());
        for v in PROXY_VARS {
            cmd.env_remove(v);
        }
        let out = cmd.output().expect("run chroot");
        sys_call(args, &out)
    }

    /// Copies a directory tree into the device's /etc (a share of /etc made by
    /// `scripts/nix-eval-transfers --etc`).
    pub fn install_etc(&self, tree: &Path) {
        must(
            Command::new("cp")
                .arg("-r")
                .arg(format!("{}/.", tree.display()))
                .arg(self.root.join("etc")),
            "copying into the device's /etc",
        );
    }

    /// Writes /etc/machine-id (what `ConditionFraction=` is derived from).
    pub fn set_machine_id(&self, id: &str) {
        let path = self.root.join("etc/machine-id");
        let _ = std::fs::remove_file(&path);
        std::fs::write(&path, format!("{id}\n")).unwrap();
    }

    /// The unit file `unit` as systemd finds it (/etc before /usr/lib), aliases followed.
    pub fn unit_file(&self, unit: &str) -> String {
        for dir in ["etc/systemd/system", "usr/lib/systemd/system"] {
            if let Ok(text) = std::fs::read_to_string(self.root.join(dir).join(unit)) {
                return text;
            }
        }
        panic!("e2e: no unit {unit} in the device");
    }

    /// Whether the real systemd in the device would start `unit`
    /// (`systemd-analyze condition --unit=UNIT`, drop-ins included).
    pub fn unit_would_start(&self, unit: &str) -> bool {
        let s = self.chroot(&["systemd-analyze", "condition", &format!("--unit={unit}")]);
        match s.code {
            Some(0) => true,
            Some(1) if s.stderr.contains("Conditions failed.") => false,
            _ => panic!("e2e: systemd-analyze condition --unit={unit} did not answer\n{s}"),
        }
    }

    /// Runs what starting `unit` runs: its `ExecStart=` command line, in the device.
    pub fn run_unit(&self, unit: &str) -> Sys {
        let text = self.unit_file(unit);
        let line = text
            .lines()
            .filter_map(|l| l.strip_prefix("ExecStart="))
            .next_back()
            .unwrap_or_else(|| panic!("e2e: {unit} has no ExecStart=:\n{text}"));
        let argv: Vec<&str> = line.split_whitespace().collect();
        self.chroot(&argv)
    }

    /// `--json=short list`, which must succeed.
    pub fn list(&self) -> Listing {
        let s = self.sysupdate(&["--json=short", "list"]);
        s.status(0, "list must succeed");
        listing(&s)
    }

    /// `--json=short check-new`, which must succeed: the candidate or None.
    pub fn check_new(&self) -> Option<String> {
        let s = self.sysupdate(&["--json=short", "check-new"]);
        s.status(0, "check-new must succeed");
        match &s.json()["available"] {
            serde_json::Value::Null => None,
            serde_json::Value::String(v) => Some(v.clone()),
            other => panic!("check-new: odd \"available\": {other}\n{s}"),
        }
    }

    /// `update` installs `version`, after which exactly `installed` are
    /// there, each byte-exact.
    pub fn updates_to(&self, version: &str, installed: &[&str]) {
        self.sysupdate(&["update"]).status(0, "update").says(
            &format!("Successfully installed update '{version}'."),
            "update",
        );
        self.assert_installed(installed);
    }

    /// Every file in the target directories ("uki/appliance_18.efi", …) with
    /// its bytes, temporaries included.
    pub fn installed(&self) -> BTreeMap<String, Vec<u8>> {
        let base = self.root.join("var/lib/e2e");
        common::snapshot(&base)
            .into_iter()
            .map(|(p, b)| (p.to_string_lossy().into_owned(), b))
            .collect()
    }

    /// The names of [`Device::installed`].
    pub fn installed_names(&self) -> Vec<String> {
        self.installed().into_keys().collect()
    }

    /// Asserts that exactly `versions` are installed, each complete and with
    /// the bytes of its payloads.
    pub fn assert_installed(&self, versions: &[&str]) {
        let mut want = BTreeMap::new();
        for v in versions {
            want.insert(format!("store/store_{v}.img"), store_image(v));
            want.insert(format!("uki/appliance_{v}.efi"), uki(v));
        }
        let got = self.installed();
        let names = |m: &BTreeMap<String, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
        assert_eq!(names(&got), names(&want), "installed files");
        for (name, bytes) in &want {
            assert!(
                &got[name] == bytes,
                "installed {name} differs from the decompressed payload"
            );
        }
    }
}

fn sys_call<S: AsRef<OsStr>>(args: &[S], out: &Output) -> Sys {
    Sys {
        args: args
            .iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" "),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Parses `--json=short list` output.
pub fn listing(s: &Sys) -> Listing {
    let j = s.json();
    let all = j["all"]
        .as_array()
        .unwrap_or_else(|| panic!("list: no \"all\"\n{s}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    Listing {
        current: j["current"].as_str().map(str::to_string),
        all,
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        let out = script("device.sh").arg("down").arg(&self.dir).output();
        if let Some(why) = failure(&out) {
            cleanup_failed(&format!("device.sh down {}", self.dir.display()), &why);
        }
    }
}

/// `Listing` from version strings.
pub fn list_of(current: Option<&str>, all: &[&str]) -> Listing {
    Listing {
        current: current.map(str::to_string),
        all: all.iter().map(|s| s.to_string()).collect(),
    }
}
