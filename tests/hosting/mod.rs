//! Real hosting servers for the remote-store tests, started on free loopback
//! ports and stopped by Drop guards (also when a test panics):
//! - moto (`moto_server`, pip `moto[server]`) for S3,
//! - nginx with the dav and dav-ext modules, through tests/e2e/nginx.sh,
//! - a TCP relay in front of either, which the tests cut to make the server
//!   vanish in the middle of an upload at a chosen byte count.
//!
//! Plus a small HTTP GET to see the channel exactly as a device does.
#![allow(dead_code)]

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
    let rest = url.strip_prefix("http://").expect("plain http URL");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut s = TcpStream::connect(host).unwrap_or_else(|e| panic!("connect {host}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
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

/// A TCP relay to `target` that counts the bytes clients send and can be
/// cut: every connection is reset and new ones are refused until `up`.
pub struct Relay {
    pub port: u16,
    sent: Arc<AtomicU64>,
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
        let down = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (s, d, st, c) = (sent.clone(), down.clone(), stop.clone(), conns.clone());
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
                    Some(s.clone()),
                );
                pipe(server, client, None);
            }
        });
        Relay {
            port,
            sent,
            down,
            stop,
            conns,
            thread: Some(thread),
        }
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
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

fn pipe(mut from: TcpStream, mut to: TcpStream, count: Option<Arc<AtomicU64>>) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if let Some(c) = &count {
                c.fetch_add(n as u64, Ordering::SeqCst);
            }
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

/// Lists every stored file below a channel prefix, relative to it.
pub type Lister = Box<dyn Fn(&str) -> Vec<String>>;

/// A hosting as the scenarios see it: how our binary reaches it (the store
/// URL, config lines, environment), where devices fetch from, and what it
/// stores.
pub struct Site {
    /// `channel.store` without the channel's own prefix.
    pub store: String,
    /// Extra `[channel]` config lines.
    pub extra: String,
    pub env: Vec<(String, String)>,
    /// Plain-HTTP URL devices fetch the same root from.
    pub public: String,
    /// Every stored file below a channel prefix, relative to it.
    pub list: Lister,
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
        let endpoint = moto.endpoint();
        Site {
            store: format!("s3://{BUCKET}"),
            extra: String::new(),
            env,
            public: format!("{}/{BUCKET}", moto.endpoint()),
            list: Box::new(move |prefix| s3_keys(&endpoint, prefix)),
        }
    }

    pub fn webdav(nginx: &Nginx) -> Site {
        Self::webdav_at(nginx, nginx.http_port)
    }

    /// WebDAV over plain HTTP through `port` (nginx's, or a Relay's).
    pub fn webdav_at(nginx: &Nginx, port: u16) -> Site {
        let www = nginx.www();
        Site {
            store: format!("webdav+http://127.0.0.1:{port}"),
            extra: String::new(),
            env: vec![],
            public: nginx.http_url(),
            list: Box::new(move |prefix| walk(&www.join(prefix))),
        }
    }

    /// WebDAV below `/{dir}` of nginx's plain-HTTP port, with `env`:
    /// `private` wants a login for every write, `readonly` refuses writes.
    pub fn webdav_below(nginx: &Nginx, dir: &str, env: &[(&str, &str)]) -> Site {
        let www = nginx.www().join(dir);
        Site {
            store: format!("webdav+{}/{dir}", nginx.http_url()),
            extra: String::new(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            public: format!("{}/{dir}", nginx.http_url()),
            list: Box::new(move |prefix| walk(&www.join(prefix))),
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
}

/// Files below `root`, relative, sorted.
pub fn walk(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            e.path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    out.sort();
    out
}
pub mod scenarios;
