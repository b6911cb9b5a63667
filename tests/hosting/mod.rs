//! Real hosting servers for the remote-store tests, started on free loopback
//! ports and stopped by Drop guards (also when a test panics):
//! - moto (`moto_server`, pip `moto[server]`) for S3,
//! - nginx with the dav and dav-ext modules, through tests/e2e/nginx.sh,
//! - a TCP relay in front of either, which the tests cut to make the server
//!   vanish in the middle of an upload at a chosen byte count.
//!
//! Plus a small HTTP GET to see the channel exactly as a device does, and
//! [`Site`]: one hosting as the shared scenarios (scenarios.rs) see it, the
//! directory store in nginx's document root being one more.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BUCKET: &str = "channel-bucket";

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(
            start.elapsed() < timeout,
            "{what} did not come up in {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One plain-HTTP request, as a device or a curl would make it.
pub fn http(method: &str, url: &str, body: &[u8]) -> Response {
    http_with(method, url, &[], body)
}

/// [`http`] with extra request headers.
pub fn http_with(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let rest = url.strip_prefix("http://").expect("plain http URL");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut s = TcpStream::connect(host).unwrap_or_else(|e| panic!("connect {host}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("complete HTTP head");
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&data[..eol])
                .split(';')
                .next()
                .unwrap()
                .trim(),
            16,
        )
        .unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + size]);
        data = &data[eol + 2 + size + 2..];
    }
}

/// GET: the body on 200, `None` on 404, a panic otherwise.
pub fn fetch(url: &str) -> Option<Vec<u8>> {
    let r = http("GET", url, b"");
    match r.status {
        200 => Some(r.body),
        404 => None,
        s => panic!("GET {url}: HTTP {s}: {}", String::from_utf8_lossy(&r.body)),
    }
}

/// A moto S3 server with one bucket that anonymous devices may read and
/// list (GET on a missing key is a real 404, as systemd ≥ 258 needs).
pub struct Moto {
    child: Child,
    pub port: u16,
    _log: tempfile::TempDir,
}

impl Moto {
    pub fn start() -> Moto {
        Self::start_with(&[])
    }

    /// With `env` for moto; any env (e.g. authentication on) skips the
    /// bucket setup, which then needs credentials.
    pub fn start_with(env: &[(&str, &str)]) -> Moto {
        let log = tempfile::tempdir().unwrap();
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new("moto_server")
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(log.path().join("moto.log")).unwrap())
                .stderr(std::fs::File::create(log.path().join("moto.err")).unwrap())
                .spawn()
                .expect("moto_server must be installed: python3 -m pip install 'moto[server]' (.ci/run does)");
            let start = Instant::now();
            let up = loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break false; // the port was taken meanwhile: try another
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    break true;
                }
                if start.elapsed() > Duration::from_secs(60) {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("moto_server did not listen within a minute");
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            if up {
                let moto = Moto {
                    child,
                    port,
                    _log: log,
                };
                if env.is_empty() {
                    moto.create_bucket();
                }
                return moto;
            }
        }
        let err = std::fs::read_to_string(log.path().join("moto.err")).unwrap_or_default();
        panic!("moto_server did not start ({env:?}):\n{err}")
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn create_bucket(&self) {
        let base = format!("{}/{BUCKET}", self.endpoint());
        let r = http("PUT", &base, b"");
        assert_eq!(r.status, 200, "creating the bucket");
        let policy = format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":"*","Action":["s3:GetObject","s3:ListBucket"],"Resource":["arn:aws:s3:::{BUCKET}","arn:aws:s3:::{BUCKET}/*"]}}]}}"#
        );
        let r = http("PUT", &format!("{base}?policy"), policy.as_bytes());
        assert!(r.status < 300, "bucket policy: HTTP {}", r.status);
    }

    /// What our binary needs to reach this server (path-style, plain http).
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The public URL of the channel at `prefix`, as devices fetch it.
    pub fn public(&self, prefix: &str) -> String {
        format!("{}/{BUCKET}/{prefix}", self.endpoint())
    }

    pub fn keys(&self, prefix: &str) -> Vec<String> {
        s3_keys(&self.endpoint(), prefix)
    }
}

/// Every key below `prefix/`, from an anonymous ListObjectsV2.
pub fn s3_keys(endpoint: &str, prefix: &str) -> Vec<String> {
    let url = format!("{endpoint}/{BUCKET}?list-type=2&prefix={prefix}/&max-keys=1000");
    let r = http("GET", &url, b"");
    assert_eq!(r.status, 200, "listing {url}");
    let xml = String::from_utf8_lossy(&r.body).into_owned();
    let mut keys: Vec<String> = xml
        .split("<Key>")
        .skip(1)
        .map(|s| s.split("</Key>").next().unwrap())
        .map(|k| {
            k.strip_prefix(&format!("{prefix}/"))
                .unwrap_or(k)
                .to_string()
        })
        .collect();
    keys.sort();
    keys
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx with WebDAV (PUT DELETE MKCOL COPY MOVE, PROPFIND) over HTTPS with a
/// test CA and over plain HTTP, via tests/e2e/nginx.sh.
pub struct Nginx {
    pub dir: tempfile::TempDir,
    pub https_port: u16,
    pub http_port: u16,
    pub ca: PathBuf,
    /// The login writes below /private/ need (nginx.sh's test values).
    pub user: String,
    pub password: String,
}

fn nginx_sh() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/nginx.sh")
}

impl Nginx {
    pub fn start() -> Nginx {
        let dir = tempfile::Builder::new()
            .prefix("nginx-")
            .tempdir_in("/tmp")
            .unwrap();
        let out = Command::new(nginx_sh())
            .arg("start")
            .arg(dir.path())
            .args(["auto", "auto"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "nginx.sh start failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let env = String::from_utf8_lossy(&out.stdout).into_owned();
        let get = |k: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .unwrap_or_else(|| panic!("{k} missing in nginx.sh output:\n{env}"))
                .to_string()
        };
        Nginx {
            https_port: get("E2E_HTTPS_PORT").parse().unwrap(),
            http_port: get("E2E_HTTP_PORT").parse().unwrap(),
            ca: PathBuf::from(get("E2E_CA")),
            user: get("E2E_WEBDAV_USER"),
            password: get("E2E_WEBDAV_PASSWORD"),
            dir,
        }
    }

    pub fn www(&self) -> PathBuf {
        self.dir.path().join("www")
    }

    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn https_url(&self) -> String {
        format!("https://localhost:{}", self.https_port)
    }

    /// Stops nginx at once (SIGTERM: open connections are cut, unlike the
    /// graceful stop that lets uploads finish).
    pub fn kill(&self) {
        let pid = std::fs::read_to_string(self.dir.path().join("nginx.pid")).unwrap();
        let pid: i32 = pid.trim().parse().unwrap();
        // SAFETY: signalling the nginx master this guard started.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        wait_until("nginx exit", Duration::from_secs(10), || {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .map(|s| s.contains("State:\tZ"))
                .unwrap_or(true)
        });
        self.stop();
    }

    /// Starts it again on the same ports and document root.
    pub fn restart(&self) {
        let out = Command::new(nginx_sh())
            .arg("start")
            .arg(self.dir.path())
            .arg(self.https_port.to_string())
            .arg(self.http_port.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "nginx.sh restart failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn stop(&self) {
        let _ = Command::new(nginx_sh())
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP relay to `target` that counts the bytes clients send and receive
/// and can be cut: every connection is reset and new ones are refused
/// until `up`.
pub struct Relay {
    pub port: u16,
    sent: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
    down: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    pub fn start(target: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let sent = Arc::new(AtomicU64::new(0));
        let received = Arc::new(AtomicU64::new(0));
        let down = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (s, r) = (sent.clone(), received.clone());
        let (d, st, c) = (down.clone(), stop.clone(), conns.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((client, _)) => client,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                client.set_nonblocking(false).unwrap();
                if d.load(Ordering::SeqCst) {
                    let _ = client.set_linger_zero();
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                c.lock().unwrap().push(client.try_clone().unwrap());
                c.lock().unwrap().push(server.try_clone().unwrap());
                pipe(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    s.clone(),
                );
                pipe(server, client, r.clone());
            }
        });
        Relay {
            port,
            sent,
            received,
            down,
            stop,
            conns,
            thread: Some(thread),
        }
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    /// Bytes the server answered with.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::SeqCst)
    }

    /// The server vanishes: open connections are cut, new ones refused.
    pub fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    pub fn up(&self) {
        self.down.store(false, Ordering::SeqCst);
    }

    /// Waits until clients sent at least `bytes` through the relay.
    pub fn wait_for(&self, bytes: u64, timeout: Duration) {
        wait_until(&format!("{bytes} bytes through the relay"), timeout, || {
            self.sent() >= bytes
        });
    }
}

trait LingerZero {
    fn set_linger_zero(&self) -> std::io::Result<()>;
}

impl LingerZero for TcpStream {
    /// Close with a reset, like a dead server.
    fn set_linger_zero(&self) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt on a socket we own, with a correctly sized value.
        let rc = unsafe {
            libc::setsockopt(
                self.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                &linger as *const libc::linger as *const libc::c_void,
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream, count: Arc<AtomicU64>) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            count.fetch_add(n as u64, Ordering::SeqCst);
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A payload of `size` bytes that staging takes as already xz-compressed
/// (the xz magic, then random bytes), so nothing gets compressed.
pub fn fake_xz(path: &Path, size: usize) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    f.write_all(&[0xfd, b'7', b'z', b'X', b'Z', 0]).unwrap();
    let mut left = size - 6;
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15 ^ size as u64;
    let mut buf = vec![0u8; 1 << 16];
    while left > 0 {
        for b in buf.iter_mut() {
            // xorshift: incompressible enough, and fast.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *b = state as u8;
        }
        let n = left.min(buf.len());
        f.write_all(&buf[..n]).unwrap();
        left -= n;
    }
    f.flush().unwrap();
}

/// How a store lays a channel out, where the scenarios must tell stores apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// S3 and WebDAV: payloads go straight to their arch directory (named by
    /// no manifest until a commit); a commit writes the manifest, then its
    /// signature, with `<arch>/.pending/SHA256SUMS.gpg` bridging the gap.
    Remote,
    /// The directory store (src/store/dir.rs): payloads go to
    /// `.payloads/<arch>/`, each arch directory is a symlink to its current
    /// `.generations/<arch>/<n>/`, switched in one rename, and the flock file
    /// `.sysupdate-publish.lock` stays.
    Dir,
}

const DIR_LOCK: &str = ".sysupdate-publish.lock";

impl Layout {
    /// Where the store keeps an uploaded payload, relative to the channel,
    /// before a commit names it.
    pub fn payload_key(self, arch: &str, name: &str) -> String {
        match self {
            Layout::Remote => format!("{arch}/{name}"),
            Layout::Dir => format!(".payloads/{arch}/{name}"),
        }
    }

    /// A manifest and its signature appear in one step: no kill lands
    /// between them, so there is never an interrupted commit.
    pub fn atomic_commit(self) -> bool {
        self == Layout::Dir
    }

    /// The stored paths of a settled channel (no publisher running or
    /// killed) that are not the store's own bookkeeping. For the directory
    /// store the bookkeeping is checked to mirror them exactly: one pool copy
    /// of every published payload, one generation per arch holding just the
    /// arch's files, and the lock file.
    pub fn published(self, stored: Vec<String>) -> Vec<String> {
        if self == Layout::Remote {
            return stored;
        }
        let (internal, published): (Vec<String>, Vec<String>) = stored.into_iter().partition(|p| {
            p == DIR_LOCK || p.starts_with(".payloads/") || p.starts_with(".generations/")
        });
        let mut pool = BTreeSet::new();
        let mut generations: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut in_generations = BTreeSet::new();
        for p in internal.iter().filter(|p| *p != DIR_LOCK) {
            match p.split('/').collect::<Vec<_>>()[..] {
                [".payloads", arch, name] => pool.insert(format!("{arch}/{name}")),
                [".generations", arch, generation, name] => {
                    generations
                        .entry(arch.to_string())
                        .or_default()
                        .insert(generation.to_string());
                    in_generations.insert(format!("{arch}/{name}"))
                }
                _ => panic!("{p}: not part of the directory store's layout"),
            };
        }
        let arch_files: BTreeSet<String> = published
            .iter()
            .filter(|p| p.contains('/') && !p.starts_with('.'))
            .cloned()
            .collect();
        assert_eq!(
            in_generations, arch_files,
            "the current generations hold exactly what devices fetch"
        );
        let payloads: BTreeSet<String> = arch_files
            .into_iter()
            .filter(|p| !p.ends_with("/SHA256SUMS") && !p.ends_with("/SHA256SUMS.gpg"))
            .collect();
        // Withdrawn versions' payloads may stay in the pool for `unyank`.
        assert!(
            pool.is_superset(&payloads),
            "one pool copy of every published payload: pool {pool:?}, published {payloads:?}"
        );
        assert!(
            generations.values().all(|g| g.len() == 1),
            "old generations left: {generations:?}"
        );
        published
    }
}

/// A hosting as the scenarios see it: how our binary reaches it (the store
/// URL, config lines, environment), where devices fetch from, what it
/// stores, and raw access to it as its owner (a careless admin, or an
/// attacker who took it over).
pub struct Site {
    /// `channel.store` without the channel's own prefix.
    pub store: String,
    /// Extra `[channel]` config lines.
    pub extra: String,
    pub env: Vec<(String, String)>,
    /// Plain-HTTP URL devices fetch the same root from.
    pub public: String,
    pub layout: Layout,
    backing: Backing,
}

/// Where a site's bytes really are.
enum Backing {
    /// Objects in moto's bucket, reached with plain HTTP requests.
    S3 { endpoint: String },
    /// Files below a directory nginx serves.
    Files { root: PathBuf },
}

/// moto, with authentication off (its default), takes any request carrying
/// an Authorization header as the account's own and does not check the
/// signature; requests without one are anonymous, and the bucket policy lets
/// those only read (a DELETE, or a PUT over an existing key, gets 403).
/// Raw access is the account's: this header, unsigned.
const MOTO_ACCOUNT: (&str, &str) = (
    "Authorization",
    "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=unchecked",
);

/// Response headers S3 stores with an object and serves back: what a
/// restore must put back besides the bytes.
fn stored_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["cache-control", "content-type", "content-encoding"].contains(&name.as_str())
        || name.starts_with("x-amz-meta-")
}

/// Every stored object below a channel prefix, to put back with
/// [`Site::restore`].
pub struct Snapshot {
    prefix: String,
    saved: Saved,
}

enum Saved {
    /// S3: by key relative to the prefix.
    Objects(BTreeMap<String, Object>),
    /// Files: a `cp -a` copy of the prefix directory (symlinks, hard links,
    /// modes and times as they were); `None` when it did not exist.
    Tree(Option<tempfile::TempDir>),
}

/// An S3 object's bytes and the headers stored with them.
struct Object {
    bytes: Vec<u8>,
    headers: Vec<(String, String)>,
}

/// `cp -a from to`.
fn copy_tree(from: &Path, to: &Path) {
    let out = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cp -a {} {}: {}",
        from.display(),
        to.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Site {
    pub fn s3(moto: &Moto) -> Site {
        Self::s3_at(moto, moto.port)
    }

    /// S3 reached through `port` (a Relay in front of moto).
    pub fn s3_at(moto: &Moto, port: u16) -> Site {
        let mut env = moto.env();
        env.retain(|(k, _)| k != "AWS_ENDPOINT_URL");
        env.push((
            "AWS_ENDPOINT_URL".into(),
            format!("http://127.0.0.1:{port}"),
        ));
        Site {
            store: format!("s3://{BUCKET}"),
            extra: String::new(),
            env,
            public: format!("{}/{BUCKET}", moto.endpoint()),
            layout: Layout::Remote,
            backing: Backing::S3 {
                endpoint: moto.endpoint(),
            },
        }
    }

    pub fn webdav(nginx: &Nginx) -> Site {
        Self::webdav_at(nginx, nginx.http_port)
    }

    /// WebDAV over plain HTTP through `port` (nginx's, or a Relay's).
    pub fn webdav_at(nginx: &Nginx, port: u16) -> Site {
        Site {
            store: format!("webdav+http://127.0.0.1:{port}"),
            extra: String::new(),
            env: vec![],
            public: nginx.http_url(),
            layout: Layout::Remote,
            backing: Backing::Files { root: nginx.www() },
        }
    }

    /// WebDAV below `/{dir}` of nginx's plain-HTTP port, with `env`:
    /// `private` wants a login for every write, `readonly` refuses writes.
    pub fn webdav_below(nginx: &Nginx, dir: &str, env: &[(&str, &str)]) -> Site {
        Site {
            store: format!("webdav+{}/{dir}", nginx.http_url()),
            extra: String::new(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            public: format!("{}/{dir}", nginx.http_url()),
            layout: Layout::Remote,
            backing: Backing::Files {
                root: nginx.www().join(dir),
            },
        }
    }

    /// WebDAV over HTTPS with the test CA from `channel.webdav-ca`.
    pub fn webdav_https(nginx: &Nginx) -> Site {
        Site {
            store: format!("webdav+{}", nginx.https_url()),
            extra: format!("webdav-ca = {:?}\n", nginx.ca),
            ..Self::webdav(nginx)
        }
    }

    /// The directory store, in nginx's document root: our binary writes the
    /// directory, devices fetch the very same files from nginx over plain
    /// HTTP (through the arch symlinks, which nginx follows by default).
    pub fn dir(nginx: &Nginx) -> Site {
        Site {
            store: nginx.www().display().to_string(),
            extra: String::new(),
            env: vec![],
            public: nginx.http_url(),
            layout: Layout::Dir,
            backing: Backing::Files { root: nginx.www() },
        }
    }

    /// Every stored file below a channel prefix, relative to it, sorted. For
    /// files, symlinks are followed (the directory store's arch
    /// directories), so a file is listed under every path nginx serves it
    /// by; a dangling symlink is listed as itself.
    pub fn list(&self, prefix: &str) -> Vec<String> {
        match &self.backing {
            Backing::S3 { endpoint } => s3_keys(endpoint, prefix),
            Backing::Files { root } => walk(&root.join(prefix)),
        }
    }

    fn object_url(endpoint: &str, key: &str) -> String {
        format!("{endpoint}/{BUCKET}/{key}")
    }

    /// Where a key of a directory-backed site (WebDAV, directory store)
    /// lives on disk.
    pub fn path(&self, key: &str) -> PathBuf {
        match &self.backing {
            Backing::Files { root } => root.join(key),
            Backing::S3 { .. } => panic!("{key}: an S3 site has no files"),
        }
    }

    /// The stored bytes at `key` (relative to the site root, e.g.
    /// `chan-x/x86-64/SHA256SUMS`), `None` when absent. Files are read
    /// through symlinks.
    pub fn raw_get(&self, key: &str) -> Option<Vec<u8>> {
        match &self.backing {
            Backing::S3 { endpoint } => {
                let r = http_with(
                    "GET",
                    &Self::object_url(endpoint, key),
                    &[MOTO_ACCOUNT],
                    b"",
                );
                match r.status {
                    200 => Some(r.body),
                    404 => None,
                    s => panic!("raw GET {key}: HTTP {s}"),
                }
            }
            Backing::Files { root } => match std::fs::read(root.join(key)) {
                Ok(b) => Some(b),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => panic!("raw read {key}: {e}"),
            },
        }
    }

    /// Stores `bytes` at `key` behind the publisher's back: an S3 PUT
    /// without the metadata our binary sets, or a file written in place
    /// (through the directory store's arch symlink into the current
    /// generation, where a payload is a hard link to its pool copy).
    pub fn raw_put(&self, key: &str, bytes: &[u8]) {
        self.put_with(key, bytes, &[]);
    }

    fn put_with(&self, key: &str, bytes: &[u8], headers: &[(&str, &str)]) {
        match &self.backing {
            Backing::S3 { endpoint } => {
                let mut h = vec![MOTO_ACCOUNT];
                h.extend_from_slice(headers);
                let r = http_with("PUT", &Self::object_url(endpoint, key), &h, bytes);
                assert_eq!(r.status, 200, "raw PUT {key}");
            }
            Backing::Files { root } => {
                let path = root.join(key);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("raw write {key}: {e}"));
            }
        }
    }

    /// [`Site::raw_put`] by someone who knows S3 keeps metadata with each
    /// object: the metadata stored with the old bytes stays, so
    /// `x-amz-meta-sha256` still claims the old bytes' hash. Files have no
    /// such metadata: they are written as by `raw_put`.
    pub fn raw_put_keeping_metadata(&self, key: &str, bytes: &[u8]) {
        match &self.backing {
            Backing::S3 { endpoint } => {
                let old = Self::object(endpoint, key);
                self.put_object(key, bytes, &old.headers);
            }
            Backing::Files { .. } => self.raw_put(key, bytes),
        }
    }

    /// Stores `bytes` at `key` as rsync does: a new file renamed over the
    /// name, which on the directory store replaces the current generation's
    /// link and leaves the pool copy as it was. S3 objects are always
    /// replaced whole: the same as `raw_put`.
    pub fn raw_replace(&self, key: &str, bytes: &[u8]) {
        match &self.backing {
            Backing::S3 { .. } => self.raw_put(key, bytes),
            Backing::Files { root } => {
                let path = root.join(key);
                let tmp = path.with_file_name(".rsync-tmp");
                std::fs::write(&tmp, bytes).unwrap();
                std::fs::rename(&tmp, &path).unwrap_or_else(|e| panic!("raw rename {key}: {e}"));
            }
        }
    }

    /// An S3 object's bytes and the headers stored with them.
    fn object(endpoint: &str, key: &str) -> Object {
        let url = Self::object_url(endpoint, key);
        let r = http_with("GET", &url, &[MOTO_ACCOUNT], b"");
        assert_eq!(r.status, 200, "raw GET {url}");
        let headers = r
            .headers
            .into_iter()
            .filter(|(k, _)| stored_header(k))
            .collect();
        Object {
            bytes: r.body,
            headers,
        }
    }

    fn put_object(&self, key: &str, bytes: &[u8], headers: &[(String, String)]) {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.put_with(key, bytes, &headers);
    }

    /// Removes `key`; absent is fine.
    pub fn raw_delete(&self, key: &str) {
        match &self.backing {
            Backing::S3 { endpoint } => {
                let url = Self::object_url(endpoint, key);
                let r = http_with("DELETE", &url, &[MOTO_ACCOUNT], b"");
                assert_eq!(r.status, 204, "raw DELETE {key}");
            }
            Backing::Files { root } => match std::fs::remove_file(root.join(key)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    panic!("raw delete {key}: {e}")
                }
                _ => {}
            },
        }
    }

    /// Saves everything stored below `prefix`.
    pub fn snapshot(&self, prefix: &str) -> Snapshot {
        let saved = match &self.backing {
            Backing::S3 { endpoint } => Saved::Objects(
                s3_keys(endpoint, prefix)
                    .into_iter()
                    .map(|rel| {
                        let object = Self::object(endpoint, &format!("{prefix}/{rel}"));
                        (rel, object)
                    })
                    .collect(),
            ),
            Backing::Files { root } => {
                let dir = root.join(prefix);
                Saved::Tree(dir.exists().then(|| {
                    let copy = tempfile::tempdir().unwrap();
                    copy_tree(&dir, &copy.path().join("tree"));
                    copy
                }))
            }
        };
        Snapshot {
            prefix: prefix.to_string(),
            saved,
        }
    }

    /// Puts back exactly what `snapshot` saved: the same paths with the same
    /// bytes (and S3 metadata), everything stored since removed.
    pub fn restore(&self, snapshot: &Snapshot) {
        let prefix = &snapshot.prefix;
        match (&self.backing, &snapshot.saved) {
            (Backing::S3 { endpoint }, Saved::Objects(objects)) => {
                for rel in s3_keys(endpoint, prefix) {
                    if !objects.contains_key(&rel) {
                        self.raw_delete(&format!("{prefix}/{rel}"));
                    }
                }
                for (rel, o) in objects {
                    self.put_object(&format!("{prefix}/{rel}"), &o.bytes, &o.headers);
                }
            }
            (Backing::Files { root }, Saved::Tree(copy)) => {
                let dir = root.join(prefix);
                if dir.exists() {
                    std::fs::remove_dir_all(&dir).unwrap();
                }
                if let Some(copy) = copy {
                    copy_tree(&copy.path().join("tree"), &dir);
                }
            }
            _ => panic!("a snapshot of another kind of site"),
        }
    }
}

/// Files below `root`, relative, sorted; symlinks followed, dangling ones
/// listed as themselves.
pub fn walk(root: &Path) -> Vec<String> {
    let rel = |p: &Path| p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
    let mut out: Vec<String> = walkdir::WalkDir::new(root)
        .follow_links(true)
        .into_iter()
        .filter_map(|e| match e {
            Ok(e) => e.file_type().is_file().then(|| rel(e.path())),
            Err(e) => e
                .path()
                .filter(|p| p.symlink_metadata().is_ok_and(|m| m.is_symlink()))
                .map(rel),
        })
        .collect();
    out.sort();
    out
}

/// The scenarios of scenarios.rs that every hosting runs, as `#[test]`s
/// in a module `$module` (so they are `s3::…`, `webdav::…`, `dir::…`), each
/// with its own fresh server `$server`. `view` is the site for the device
/// view when it differs (WebDAV checks it over HTTPS).
///
/// ```ignore
/// hosting_scenarios! {
///     mod dir;
///     let nginx = Nginx::start();
///     site: Site::dir(&nginx);
/// }
/// ```
#[macro_export]
macro_rules! hosting_scenarios {
    (mod $module:ident; let $server:ident = $start:expr; site: $site:expr;) => {
        $crate::hosting_scenarios! {
            mod $module; let $server = $start; site: $site; view: $site;
        }
    };
    (mod $module:ident; let $server:ident = $start:expr; site: $site:expr; view: $view:expr;) => {
        mod $module {
            use super::*;
            $crate::hosting_scenarios! {
                @tests let $server = $start;
                device_view_matches_the_directory_backend($view),
                killed_at_every_point_of_every_write_the_channel_verifies_and_a_rerun_finishes($site),
                promote_copies_payloads_on_the_hosting_directly($site),
                mirror_copies_a_published_channel_verified_and_byte_for_byte($site),
                concurrent_releases_of_two_versions_both_land($site),
                raw_hosting_edits_reach_devices_and_a_restore_rolls_everything_back($site),
                an_older_signed_manifest_put_back_is_refused_until_repaired($site),
                a_history_cut_short_emptied_or_deleted_refuses_writes_until_adopted($site),
                payload_bytes_changed_under_a_published_name_are_found_and_uploaded_again($site),
                history_and_manifests_rolled_back_together_only_the_remembered_head_tells($site),
                a_deleted_manifest_or_signature_is_refused_until_repaired($site),
            }
        }
    };
    (@tests let $server:ident = $start:expr; $($scenario:ident($on:expr),)+) => {
        $(
            #[test]
            fn $scenario() {
                let $server = $start;
                $crate::hosting::scenarios::$scenario(&$on);
            }
        )+
    };
}

pub mod crash;
pub mod holes;
pub mod mirror;
pub mod promote;
pub mod scenarios;
