//! `webdav+https://host/dir` (and `webdav+http://` for loopback tests):
//! WebDAV hosting such as nginx's dav module, through reqwest. Only transport
//! lives here; the protocol is in remote/mod.rs.
//!
//! - Payloads stream from disk into a temporary in the hidden collection
//!   `<arch>/.uploads/`, which a `MOVE` with `Overwrite: F` renames to the
//!   published name: create-only and atomic on every WebDAV server, even
//!   those (nginx) that ignore `If-None-Match` on PUT. The size is checked
//!   with HEAD afterwards. Cleanup deletes `.uploads/` whole, as listings
//!   (nginx's dav-ext) may not show hidden names.
//! - Missing collections are made with MKCOL. Listing needs PROPFIND (nginx:
//!   libnginx-mod-http-dav-ext, `dav_ext_methods PROPFIND OPTIONS;`).
//! - SHA256SUMS is written with `If-Match` / `If-None-Match: *` for servers
//!   that honour them; the publisher lock (a collection made by MKCOL, which
//!   fails when it exists) serialises publishers on those that do not.
//! - Credentials: basic auth from [`USER_ENV`] / [`PASSWORD_ENV`]; an extra
//!   CA for test hosting from `[channel] webdav-ca` or [`CA_ENV`].
//! - Cache-Control is the server's job (see the README's nginx snippet).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::{StreamExt, TryStreamExt};
use reqwest::header::{HeaderMap, CONTENT_LENGTH, CONTENT_TYPE, ETAG, IF_MATCH, IF_NONE_MATCH};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use tokio::io::AsyncReadExt;
use url::Url;

use super::remote::backend::{
    self, Backend, Cache, Cond, Entry, Failure, Head, Kind, Op, Versioned,
};
use crate::hash::Digest;
use crate::payload::Source;

pub const USER_ENV: &str = "SYSUPDATE_PUBLISH_WEBDAV_USER";
pub const PASSWORD_ENV: &str = "SYSUPDATE_PUBLISH_WEBDAV_PASSWORD";
/// A PEM file of extra CA certificates; overrides `[channel] webdav-ca`.
pub const CA_ENV: &str = "SYSUPDATE_PUBLISH_WEBDAV_CA";

/// Longest wait for a small request (listing, HEAD, manifest, MOVE, …).
const SMALL_TIMEOUT: Duration = Duration::from_secs(120);
/// Where payload uploads land before their MOVE, inside each arch directory.
const UPLOADS: &str = ".uploads";
/// Read size from disk, and the size of each body chunk.
const CHUNK: usize = 1 << 20;
const PROPFIND_BODY: &str = r#"<?xml version="1.0" encoding="utf-8"?><propfind xmlns="DAV:"><prop><resourcetype/><getcontentlength/></prop></propfind>"#;

pub struct WebDav {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    /// Always ends in `/`.
    base: Url,
    auth: Option<(String, String)>,
    /// Collections known to exist (made or seen) in this run.
    collections: Mutex<HashSet<String>>,
}

impl WebDav {
    /// `url` is the http(s) URL of the channel root.
    pub fn new(url: &str, ca: Option<&Path>) -> Result<WebDav, String> {
        let mut base = Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let auth = match (std::env::var(USER_ENV), std::env::var(PASSWORD_ENV)) {
            (Ok(u), Ok(p)) => Some((u, p)),
            (Err(_), Err(_)) => None,
            _ => {
                return Err(format!(
                    "set both {USER_ENV} and {PASSWORD_ENV}, or neither"
                ))
            }
        };
        let ca = std::env::var_os(CA_ENV)
            .map(PathBuf::from)
            .or_else(|| ca.map(Path::to_path_buf));
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("sysupdate-publish/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            // No overall timeout (a payload upload takes as long as it
            // takes); a peer that stops acknowledging data or answering
            // keepalives for a minute is dead.
            .tcp_keepalive(Duration::from_secs(30))
            .tcp_keepalive_interval(Duration::from_secs(10))
            .tcp_keepalive_retries(3)
            .tcp_user_timeout(Duration::from_secs(60))
            // A redirected PUT would silently publish somewhere else.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &ca {
            let pem = std::fs::read(ca).map_err(|e| format!("CA file {}: {e}", ca.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("CA file {}: {e}", ca.display()))?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let rt = backend::runtime()?;
        let client = builder
            .build()
            .map_err(|e| format!("HTTP client: {}", backend::chain(&e)))?;
        Ok(WebDav {
            rt,
            client,
            base,
            auth,
            collections: Mutex::new(HashSet::new()),
        })
    }

    fn at(&self, key: &str) -> Url {
        let mut u = self.base.clone();
        {
            let mut segs = u.path_segments_mut().expect("http URLs have paths");
            segs.pop_if_empty();
            segs.extend(key.split('/').filter(|s| !s.is_empty()));
        }
        u
    }

    /// A collection's URL, with the trailing slash servers want for MKCOL.
    fn dir_at(&self, dir: &str) -> Url {
        let mut u = self.at(dir);
        if !u.path().ends_with('/') {
            u.set_path(&format!("{}/", u.path()));
        }
        u
    }

    /// A request for a small answer: a server that takes longer than
    /// [`SMALL_TIMEOUT`] to give it is not working.
    fn request(&self, method: Method, url: Url) -> RequestBuilder {
        self.streaming(method, url).timeout(SMALL_TIMEOUT)
    }

    /// A request streaming a payload either way: no overall time limit.
    fn streaming(&self, method: Method, url: Url) -> RequestBuilder {
        let r = self.client.request(method, url);
        match &self.auth {
            Some((u, p)) => r.basic_auth(u, Some(p)),
            None => r,
        }
    }

    fn send(&self, r: RequestBuilder) -> Result<Response, Failure> {
        // send() arms its timers when called: it must run inside the runtime.
        self.rt
            .block_on(async move { r.send().await })
            .map_err(transport)
    }

    /// Makes `dir` and its parents below the base, as far as not known.
    fn ensure_dir(&self, dir: &str) -> Result<(), Failure> {
        let mut path = String::new();
        let parts = std::iter::once("").chain(dir.split('/').filter(|s| !s.is_empty()));
        for part in parts {
            if !part.is_empty() {
                path = if path.is_empty() {
                    part.to_string()
                } else {
                    format!("{path}/{part}")
                };
            }
            if self.collections.lock().unwrap().contains(&path) {
                continue;
            }
            if path.is_empty() && self.base.path() == "/" {
                // The server root exists.
            } else {
                let resp = self.send(self.request(mkcol(), self.dir_at(&path)))?;
                // 405: it exists already.
                if !(resp.status().is_success() || resp.status() == StatusCode::METHOD_NOT_ALLOWED)
                {
                    return Err(self.status_failure(resp));
                }
            }
            self.collections.lock().unwrap().insert(path.clone());
        }
        Ok(())
    }

    fn status_failure(&self, resp: Response) -> Failure {
        let status = resp.status();
        let body = self.rt.block_on(resp.text()).unwrap_or_default();
        let mut message = status.canonical_reason().unwrap_or("").to_string();
        let detail = summary(&body);
        if !detail.is_empty() && !message.contains(&detail) {
            message = format!("{message} ({detail})");
        }
        let mut f = Failure::status(status.as_u16(), message);
        if f.kind == Kind::Unsupported && f.message.is_empty() {
            f.message = "method not allowed".into();
        }
        f
    }

    /// PROPFIND with Depth 0: does the collection exist?
    fn collection_exists(&self, dir: &str) -> Result<bool, Failure> {
        let resp = self.send(
            self.request(propfind(), self.dir_at(dir))
                .header("Depth", "0")
                .header(CONTENT_TYPE, "application/xml")
                .body(PROPFIND_BODY),
        )?;
        match resp.status().as_u16() {
            207 | 200 => Ok(true),
            404 => Ok(false),
            _ => Err(self.status_failure(resp)),
        }
    }

    /// Deletes a collection and everything in it; absent is fine.
    fn remove_collection(&self, dir: &str) -> Result<(), Failure> {
        let resp = self.send(
            self.request(Method::DELETE, self.dir_at(dir))
                .header("Depth", "infinity"),
        )?;
        match resp.status().as_u16() {
            200..=299 | 404 => Ok(()),
            _ => Err(self.status_failure(resp)),
        }
    }

    fn put(&self, key: &str, body: reqwest::Body, headers: HeaderMap) -> Result<Response, Failure> {
        self.send(
            self.request(Method::PUT, self.at(key))
                .headers(headers)
                .body(body),
        )
    }
}

fn mkcol() -> Method {
    Method::from_bytes(b"MKCOL").expect("valid method")
}

fn propfind() -> Method {
    Method::from_bytes(b"PROPFIND").expect("valid method")
}

fn copy_method() -> Method {
    Method::from_bytes(b"COPY").expect("valid method")
}

fn move_method() -> Method {
    Method::from_bytes(b"MOVE").expect("valid method")
}

/// A request that got no HTTP answer: connection refused or reset, timeout.
fn transport(e: reqwest::Error) -> Failure {
    let kind = if e.is_builder() {
        Kind::Fatal
    } else {
        Kind::Transient
    };
    Failure::new(kind, None, backend::chain(&e))
}

/// The useful part of an error page: its title, or its first line.
fn summary(body: &str) -> String {
    let lower = body.to_ascii_lowercase();
    if let (Some(s), Some(e)) = (lower.find("<title>"), lower.find("</title>")) {
        if s + 7 <= e {
            return backend::truncate(&body[s + 7..e], 200);
        }
    }
    if lower.contains('<') {
        return String::new();
    }
    backend::truncate(body.lines().next().unwrap_or(""), 200)
}

fn etag(resp: &Response) -> Option<String> {
    resp.headers()
        .get(ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The payload as a request body: read from disk chunk by chunk and checked
/// as it goes. Our own read or check errors land in `failed`, so they are
/// not mistaken for a network failure worth retrying.
fn body(source: &Source, failed: Arc<Mutex<Option<String>>>) -> reqwest::Body {
    struct State {
        file: Option<tokio::fs::File>,
        checker: crate::payload::Checker,
        source: Source,
    }
    let state = State {
        file: None,
        checker: source.checker(),
        source: source.clone(),
    };
    let stream = futures_util::stream::try_unfold(state, |mut st| async move {
        if st.file.is_none() {
            st.file = Some(tokio::fs::File::open(&st.source.path).await?);
        }
        let mut buf = BytesMut::with_capacity(CHUNK);
        let n = st.file.as_mut().expect("opened").read_buf(&mut buf).await?;
        if n == 0 {
            st.checker.finish()?;
            return Ok(None);
        }
        st.checker.update(&buf)?;
        (st.source.progress)(n as u64);
        Ok(Some((buf.freeze(), st)))
    })
    .inspect_err(move |e: &std::io::Error| {
        *failed.lock().unwrap() = Some(e.to_string());
    });
    reqwest::Body::wrap_stream(stream)
}

/// Entries of a PROPFIND multistatus below the collection at `base_path`.
fn parse_multistatus(xml: &str, base_path: &str) -> Result<Vec<Entry>, String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    reader.config_mut().trim_text(true);
    #[derive(Default)]
    struct Resp {
        href: String,
        dir: bool,
        size: u64,
    }
    let mut out = Vec::new();
    let mut cur: Option<Resp> = None;
    let mut field: Option<&'static str> = None;
    let base = base_path.trim_end_matches('/');
    loop {
        let ev = reader.read_event().map_err(|e| e.to_string())?;
        match ev {
            Event::Start(e) | Event::Empty(e) => match e.local_name().as_ref() {
                b"response" => cur = Some(Resp::default()),
                b"href" => field = Some("href"),
                b"getcontentlength" => field = Some("size"),
                b"collection" => {
                    if let Some(r) = cur.as_mut() {
                        r.dir = true;
                    }
                }
                _ => {}
            },
            Event::Text(t) => {
                let text = t.decode().map_err(|e| e.to_string())?;
                if let (Some(r), Some(f)) = (cur.as_mut(), field) {
                    match f {
                        "href" => r.href.push_str(&text),
                        _ => r.size = text.trim().parse().unwrap_or(0),
                    }
                }
            }
            Event::GeneralRef(g) => {
                let name = g.decode().map_err(|e| e.to_string())?;
                let ch = match name.as_ref() {
                    "amp" => Some('&'),
                    "lt" => Some('<'),
                    "gt" => Some('>'),
                    "quot" => Some('"'),
                    "apos" => Some('\''),
                    _ => g.resolve_char_ref().ok().flatten(),
                };
                if let (Some(r), Some("href"), Some(c)) = (cur.as_mut(), field, ch) {
                    r.href.push(c);
                }
            }
            Event::End(e) => match e.local_name().as_ref() {
                b"href" | b"getcontentlength" => field = None,
                b"response" => {
                    if let Some(r) = cur.take() {
                        // hrefs are absolute paths or full URLs.
                        let path = match Url::parse(&r.href) {
                            Ok(u) => u.path().to_string(),
                            Err(_) => r.href.clone(),
                        };
                        let path = percent_encoding::percent_decode_str(&path)
                            .decode_utf8_lossy()
                            .into_owned();
                        let dir = r.dir || path.ends_with('/');
                        let rel = path
                            .trim_end_matches('/')
                            .strip_prefix(base)
                            .map(|p| p.trim_start_matches('/'))
                            .unwrap_or("");
                        if !rel.is_empty() && !rel.contains('/') {
                            out.push(Entry {
                                name: rel.to_string(),
                                dir,
                                size: r.size,
                            });
                        }
                    }
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(out)
}

impl Backend for WebDav {
    fn describe(&self) -> String {
        format!("webdav+{}", self.base)
    }

    fn url(&self, key: &str) -> String {
        self.at(key).to_string()
    }

    fn list(&self, dir: &str) -> Result<Vec<Entry>, Failure> {
        let url = self.dir_at(dir);
        let resp = self.send(
            self.request(propfind(), url.clone())
                .header("Depth", "1")
                .header(CONTENT_TYPE, "application/xml")
                .body(PROPFIND_BODY),
        )?;
        match resp.status().as_u16() {
            207 => {
                let xml = self.rt.block_on(resp.text()).map_err(transport)?;
                parse_multistatus(&xml, url.path())
                    .map_err(|e| Failure::fatal(format!("unreadable PROPFIND answer: {e}")))
            }
            404 => Ok(vec![]),
            _ => Err(self.status_failure(resp)),
        }
    }

    fn head(&self, key: &str) -> Result<Option<Head>, Failure> {
        let resp = self.send(self.request(Method::HEAD, self.at(key)))?;
        match resp.status().as_u16() {
            200 => {
                // Not content_length(): for HEAD that is the (empty) body's.
                let size = resp
                    .headers()
                    .get(CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| Failure::fatal("HEAD answered without Content-Length"))?;
                Ok(Some(Head {
                    size,
                    etag: etag(&resp),
                    sha256: None,
                }))
            }
            404 => Ok(None),
            _ => Err(self.status_failure(resp)),
        }
    }

    fn get(&self, key: &str) -> Result<Option<Versioned>, Failure> {
        let resp = self.send(self.request(Method::GET, self.at(key)))?;
        match resp.status().as_u16() {
            200 => {
                let tag = etag(&resp);
                let bytes = self.rt.block_on(resp.bytes()).map_err(transport)?;
                Ok(Some((bytes.to_vec(), tag)))
            }
            404 => Ok(None),
            _ => Err(self.status_failure(resp)),
        }
    }

    fn hash(
        &self,
        key: &str,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Option<(Digest, u64)>, Failure> {
        let resp = self.send(self.streaming(Method::GET, self.at(key)))?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Ok(None),
            _ => return Err(self.status_failure(resp)),
        }
        self.rt.block_on(async {
            let stream = resp.bytes_stream().map(|c| c.map_err(transport));
            crate::hash::hash_stream(stream, progress).await.map(Some)
        })
    }

    fn put_bytes(
        &self,
        key: &str,
        bytes: &[u8],
        cond: &Cond,
        _cache: Cache,
    ) -> Result<Option<String>, Failure> {
        let dir = key.rsplit_once('/').map_or("", |(d, _)| d);
        self.ensure_dir(dir)?;
        let mut headers = HeaderMap::new();
        match cond {
            Cond::Any => {}
            Cond::Absent => {
                headers.insert(IF_NONE_MATCH, "*".parse().expect("valid"));
            }
            Cond::Match(e) => {
                let v = e
                    .parse()
                    .map_err(|_| Failure::fatal(format!("unusable ETag {e:?}")))?;
                headers.insert(IF_MATCH, v);
            }
        }
        let resp = self.put(key, bytes.to_vec().into(), headers)?;
        if resp.status().is_success() {
            Ok(etag(&resp))
        } else {
            Err(self.status_failure(resp))
        }
    }

    fn put_payload(&self, key: &str, source: &Source) -> Result<(), Failure> {
        let (dir, name) = key.rsplit_once('/').unwrap_or(("", key));
        let uploads = format!("{dir}/{UPLOADS}");
        self.ensure_dir(&uploads)?;
        let tmp = format!(
            "{uploads}/{}-{:08x}-{name}",
            std::process::id(),
            rand::random::<u32>()
        );
        let failed = Arc::new(Mutex::new(None));
        let result = (|| {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_LENGTH, source.size.into());
            headers.insert(IF_NONE_MATCH, "*".parse().expect("valid"));
            let put = self
                .streaming(Method::PUT, self.at(&tmp))
                .headers(headers)
                .body(body(source, failed.clone()));
            let resp = self
                .send(put)
                .map_err(|f| match failed.lock().unwrap().take() {
                    // Our own read or check failed: not the network's fault.
                    Some(local) => Failure::fatal(local),
                    None => f,
                })?;
            if !resp.status().is_success() {
                return Err(self.status_failure(resp));
            }
            let resp = self.send(
                self.request(move_method(), self.at(&tmp))
                    .header("Destination", self.at(key).as_str())
                    .header("Overwrite", "F"),
            )?;
            if resp.status().is_success() {
                Ok(())
            } else {
                Err(self.status_failure(resp))
            }
        })();
        if result.is_err() {
            let _ = self.delete(&tmp);
        }
        result
    }

    /// `COPY` on the same server (scheme, host and port): the bytes stay
    /// there. `Overwrite: F` makes it create-only.
    fn copy_from(&self, other: &dyn Backend, from: &str, to: &str) -> Result<bool, Failure> {
        let Some(other) = (other as &dyn std::any::Any).downcast_ref::<WebDav>() else {
            return Ok(false);
        };
        if other.base.origin() != self.base.origin() {
            return Ok(false);
        }
        let dir = to.rsplit_once('/').map_or("", |(d, _)| d);
        self.ensure_dir(dir)?;
        let resp = self.send(
            self.request(copy_method(), other.at(from))
                .header("Destination", self.at(to).as_str())
                .header("Overwrite", "F"),
        )?;
        if resp.status().is_success() {
            Ok(true)
        } else {
            Err(self.status_failure(resp))
        }
    }

    fn download(&self, key: &str, to: &mut dyn std::io::Write) -> Result<Option<u64>, Failure> {
        let resp = self.send(self.streaming(Method::GET, self.at(key)))?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Ok(None),
            _ => return Err(self.status_failure(resp)),
        }
        self.rt.block_on(async {
            let mut stream = resp.bytes_stream();
            let mut n = 0;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(transport)?;
                to.write_all(&chunk)
                    .map_err(|e| Failure::fatal(format!("writing a download: {e}")))?;
                n += chunk.len() as u64;
            }
            Ok(Some(n))
        })
    }

    fn delete(&self, key: &str) -> Result<(), Failure> {
        let resp = self.send(self.request(Method::DELETE, self.at(key)))?;
        match resp.status().as_u16() {
            200..=299 | 404 => Ok(()),
            _ => Err(self.status_failure(resp)),
        }
    }

    fn clear_scratch(&self, dir: &str) -> Result<(), Failure> {
        for scratch in [UPLOADS, ".pending"] {
            self.remove_collection(&format!("{dir}/{scratch}"))?;
            self.collections
                .lock()
                .unwrap()
                .remove(&format!("{dir}/{scratch}"));
        }
        Ok(())
    }

    fn hint(&self, op: Op, failure: &Failure) -> String {
        if failure.kind == Kind::Unsupported {
            return match op {
                Op::List => "the server does not answer PROPFIND; nginx needs libnginx-mod-http-dav-ext with `dav_ext_methods PROPFIND OPTIONS;`".into(),
                _ => "the server does not allow this WebDAV method; nginx needs `dav_methods PUT DELETE MKCOL COPY MOVE;`".into(),
            };
        }
        if failure.status == Some(401) {
            return match &self.auth {
                Some(_) => {
                    format!("the server rejected the credentials in {USER_ENV} / {PASSWORD_ENV}")
                }
                None => format!("the server wants credentials: set {USER_ENV} and {PASSWORD_ENV}"),
            };
        }
        let who = match &self.auth {
            Some((u, _)) => format!("user {u:?} ({USER_ENV})"),
            None => format!("anonymous clients ({USER_ENV} / {PASSWORD_ENV} are not set)"),
        };
        let what = match op {
            Op::Read => "read",
            Op::List => "list (PROPFIND)",
            Op::Write => "write (PUT, MKCOL, MOVE)",
            Op::Delete => "delete",
            Op::Lock => "create the lock collection (MKCOL)",
        };
        format!(
            "the server does not let {who} {what} below {}: check its access rules (nginx: dav_methods, limit_except, auth_basic) and that the server process may write that directory",
            self.base
        )
    }

    /// MKCOL fails on an existing collection on every WebDAV server, so a
    /// collection is the lock; the owner file inside says who holds it.
    fn lock_create(&self, key: &str, owner: &[u8]) -> Result<bool, Failure> {
        self.ensure_dir("")?;
        let resp = self.send(self.request(mkcol(), self.dir_at(key)))?;
        match resp.status().as_u16() {
            200..=299 => {
                if let Err(f) = self.lock_write(key, owner) {
                    let _ = self.lock_remove(key);
                    return Err(f);
                }
                Ok(true)
            }
            405 if self.collection_exists(key)? => Ok(false),
            _ => Err(self.status_failure(resp)),
        }
    }

    fn lock_read(&self, key: &str) -> Result<Option<Vec<u8>>, Failure> {
        match self.get(&format!("{key}/owner"))? {
            Some((b, _)) => Ok(Some(b)),
            // Made but not yet (or never, after a crash) given its owner file.
            None if self.collection_exists(key)? => Ok(Some(Vec::new())),
            None => Ok(None),
        }
    }

    fn lock_write(&self, key: &str, owner: &[u8]) -> Result<(), Failure> {
        let resp = self.put(
            &format!("{key}/owner"),
            owner.to_vec().into(),
            HeaderMap::new(),
        )?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(self.status_failure(resp))
        }
    }

    fn lock_remove(&self, key: &str) -> Result<(), Failure> {
        self.remove_collection(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multistatus_entries_are_children_with_decoded_names() {
        let xml = r#"<?xml version="1.0" encoding="utf-8" ?>
<D:multistatus xmlns:D="DAV:">
<D:response><D:href>/chan/x86-64/</D:href><D:propstat><D:prop><D:resourcetype><D:collection/></D:resourcetype></D:prop></D:propstat></D:response>
<D:response><D:href>/chan/x86-64/store_19%7Erc1.img.xz</D:href><D:propstat><D:prop><D:resourcetype></D:resourcetype><D:getcontentlength>1234</D:getcontentlength></D:prop></D:propstat></D:response>
<D:response><D:href>http://h:1/chan/x86-64/a&amp;b</D:href><D:propstat><D:prop><D:getcontentlength>7</D:getcontentlength></D:prop></D:propstat></D:response>
<D:response><D:href>/chan/x86-64/.pending/</D:href><D:propstat><D:prop><D:resourcetype><D:collection/></D:resourcetype></D:prop></D:propstat></D:response>
</D:multistatus>"#;
        let e = parse_multistatus(xml, "/chan/x86-64/").unwrap();
        let got: Vec<_> = e.iter().map(|e| (e.name.as_str(), e.dir, e.size)).collect();
        assert_eq!(
            got,
            [
                ("store_19~rc1.img.xz", false, 1234),
                ("a&b", false, 7),
                (".pending", true, 0)
            ]
        );
    }

    #[test]
    fn keys_become_urls_below_the_base() {
        let w = WebDav::new("http://127.0.0.1:9/a/chan", None).unwrap();
        assert_eq!(
            w.url("x86-64/SHA256SUMS"),
            "http://127.0.0.1:9/a/chan/x86-64/SHA256SUMS"
        );
        assert_eq!(
            w.dir_at("x86-64").as_str(),
            "http://127.0.0.1:9/a/chan/x86-64/"
        );
        assert_eq!(w.dir_at("").as_str(), "http://127.0.0.1:9/a/chan/");
        assert_eq!(
            summary("<html><head><title>403 Forbidden</title>"),
            "403 Forbidden"
        );
    }
}
