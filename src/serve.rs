//! `serve`: a directory store over HTTP(S) exactly as devices need it, for
//! test VMs and the demo (production hosting is nginx, S3 or a CDN).
//!
//! What systemd-sysupdate relies on (docs/sysupdate-client.md): real 404s for
//! absent files (systemd 258+ probes `SHA256SUMS.sha256-asc` and friends),
//! bytes exactly as stored (never a `Content-Encoding`), `HEAD`, and byte
//! `Range`s for resumed downloads. Caching follows the README's nginx
//! snippet: manifests, signatures and the history are `no-cache`, payloads
//! (never rewritten under a name) `immutable`.
//!
//! Names that start with `.` (uploads in flight, generations, the lock) are
//! never served by their own name; the arch directories' links into them
//! are followed, and nothing outside the store root is ever served.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::TryStreamExt;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::manifest;
use crate::progress::Events;

#[derive(Debug, Error)]
pub enum ServeError {
    #[error("{path}: {source}")]
    Root { path: PathBuf, source: io::Error },
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    #[error("TLS {what} {path}: {message}")]
    Tls {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("starting the server: {0}")]
    Runtime(io::Error),
}

/// What to serve, where.
#[derive(Clone, Debug)]
pub struct Options {
    /// The directory store's root (the channel's `store` directory).
    pub root: PathBuf,
    pub listen: SocketAddr,
    /// PEM certificate chain and private key: HTTPS instead of HTTP.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// What a request resolves to, before any byte is read.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// `len` bytes of `path` from `start` (206 when `partial`).
    File {
        path: PathBuf,
        start: u64,
        len: u64,
        total: u64,
        partial: bool,
        cache: &'static str,
    },
    Status(StatusCode),
    /// 416: the range lies beyond the file's `total` bytes.
    Unsatisfiable {
        total: u64,
    },
}

/// Manifests, signatures and the history change in place; payloads never do.
fn cache_control(name: &str) -> &'static str {
    if name.starts_with(manifest::MANIFEST) || name == manifest::LEDGER {
        "no-cache"
    } else {
        "public, max-age=31536000, immutable"
    }
}

/// Resolves `uri_path` under `root` (canonical). `None`: not servable.
fn resolve(root: &Path, uri_path: &str) -> Option<PathBuf> {
    let decoded = percent_encoding::percent_decode_str(uri_path)
        .decode_utf8()
        .ok()?;
    let mut path = root.to_path_buf();
    for segment in decoded.split('/').filter(|s| !s.is_empty()) {
        if segment.starts_with('.') || segment.contains('\\') || segment.contains('\0') {
            return None;
        }
        path.push(segment);
    }
    let real = std::fs::canonicalize(&path).ok()?;
    real.starts_with(root).then_some(real)
}

/// Parses a single `bytes=` range against `total`; `None` for forms we
/// answer with the whole file (several ranges, other units), as RFC 9110 allows.
fn parse_range(header: &str, total: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = header.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 {
            return Some(Err(()));
        }
        (total.saturating_sub(n), total)
    } else {
        let start: u64 = a.parse().ok()?;
        let end = if b.is_empty() {
            total
        } else {
            let last: u64 = b.parse().ok()?;
            if last < start {
                return None;
            }
            last.saturating_add(1).min(total)
        };
        if start >= total {
            return Some(Err(()));
        }
        (start, end)
    };
    if range.0 >= range.1 {
        return Some(Err(()));
    }
    Some(Ok(range))
}

/// The answer to `method uri_path` with an optional `Range` header.
pub fn respond(root: &Path, method: &Method, uri_path: &str, range: Option<&str>) -> Reply {
    if method != Method::GET && method != Method::HEAD {
        return Reply::Status(StatusCode::METHOD_NOT_ALLOWED);
    }
    let Some(path) = resolve(root, uri_path) else {
        return Reply::Status(StatusCode::NOT_FOUND);
    };
    let Ok(meta) = std::fs::metadata(&path) else {
        return Reply::Status(StatusCode::NOT_FOUND);
    };
    if !meta.is_file() {
        return Reply::Status(StatusCode::NOT_FOUND);
    }
    let total = meta.len();
    let name = uri_path.rsplit('/').next().unwrap_or_default();
    let cache = cache_control(name);
    match range.and_then(|r| parse_range(r, total)) {
        None => Reply::File {
            path,
            start: 0,
            len: total,
            total,
            partial: false,
            cache,
        },
        Some(Ok((start, end))) => Reply::File {
            path,
            start,
            len: end - start,
            total,
            partial: true,
            cache,
        },
        Some(Err(())) => Reply::Unsatisfiable { total },
    }
}

type Body = BoxBody<Bytes, io::Error>;

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

async fn handle(root: Arc<PathBuf>, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok());
    let head = req.method() == Method::HEAD;
    let reply = respond(&root, req.method(), req.uri().path(), range);
    let mut resp = Response::new(empty());
    match reply {
        Reply::Status(status) => {
            *resp.status_mut() = status;
            if status == StatusCode::METHOD_NOT_ALLOWED {
                resp.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            }
            if !head {
                let text = format!("{status}\n");
                *resp.body_mut() = Full::new(Bytes::from(text))
                    .map_err(|never| match never {})
                    .boxed();
            }
        }
        Reply::Unsatisfiable { total } => {
            *resp.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{total}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
        }
        Reply::File {
            path,
            start,
            len,
            total,
            partial,
            cache,
        } => {
            let file = async {
                let mut f = tokio::fs::File::open(&path).await?;
                f.seek(io::SeekFrom::Start(start)).await?;
                Ok::<_, io::Error>(f)
            };
            let file = match file.await {
                Ok(f) => f,
                // Gone between resolving and opening (a generation switched).
                Err(_) => {
                    *resp.status_mut() = StatusCode::NOT_FOUND;
                    return resp;
                }
            };
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
            h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            if partial {
                *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
                let v = format!("bytes {start}-{}/{total}", start + len - 1);
                if let Ok(v) = HeaderValue::from_str(&v) {
                    resp.headers_mut().insert(header::CONTENT_RANGE, v);
                }
            }
            if !head {
                let stream = tokio_util::io::ReaderStream::with_capacity(file.take(len), 256 << 10)
                    .map_ok(Frame::data);
                *resp.body_mut() = StreamBody::new(stream).boxed();
            }
        }
    }
    resp
}

fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, ServeError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let tls = |what, path: &Path, message: String| ServeError::Tls {
        what,
        path: path.to_path_buf(),
        message,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<_, _>>())
        .map_err(|e| tls("certificate", cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(tls("certificate", cert, "no PEM certificate in it".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| tls("key", key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls("setup for", cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| tls("certificate and key", cert, e.to_string()))?;
    Ok(Arc::new(config))
}

/// Serves until the process is stopped. `ready` gets the bound address (a
/// `:0` port is chosen by the kernel) once connections are accepted.
pub fn serve(
    opts: &Options,
    events: &dyn Events,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    let root = std::fs::canonicalize(&opts.root).map_err(|source| ServeError::Root {
        path: opts.root.clone(),
        source,
    })?;
    if !root.is_dir() {
        return Err(ServeError::Root {
            path: opts.root.clone(),
            source: io::Error::new(io::ErrorKind::NotADirectory, "is not a directory"),
        });
    }
    let tls = match &opts.tls {
        Some((cert, key)) => Some(tokio_rustls::TlsAcceptor::from(tls_config(cert, key)?)),
        None => None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    let root = Arc::new(root);
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .map_err(|source| ServeError::Listen {
                addr: opts.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(ServeError::Runtime)?;
        ready(addr);
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    events.warn(format!("accepting a connection: {e}"));
                    continue;
                }
            };
            let root = root.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let root = root.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(root, req).await) }
                });
                let http = hyper::server::conn::http1::Builder::new();
                let result = match tls {
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(s) => {
                            http.serve_connection(hyper_util::rt::TokioIo::new(s), service)
                                .await
                        }
                        Err(_) => return,
                    },
                    None => {
                        http.serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await
                    }
                };
                // A client that hangs up mid-transfer is not our problem.
                let _ = (result, peer);
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn store() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("public");
        std::fs::create_dir_all(root.join(".generations/1")).unwrap();
        std::fs::write(root.join(".generations/1/SHA256SUMS"), b"sums\n").unwrap();
        std::fs::write(root.join(".generations/1/store_18.img.xz"), b"0123456789").unwrap();
        std::os::unix::fs::symlink(".generations/1", root.join("x86-64")).unwrap();
        std::fs::write(dir.path().join("secret"), b"outside").unwrap();
        std::os::unix::fs::symlink("../secret", root.join("escape")).unwrap();
        let root = std::fs::canonicalize(root).unwrap();
        (dir, root)
    }

    #[test]
    fn files_through_arch_links_with_their_cache_policy() {
        let (_d, root) = store();
        let get = |p: &str| respond(&root, &Method::GET, p, None);
        match get("/x86-64/SHA256SUMS") {
            Reply::File { len, cache, .. } => {
                assert_eq!((len, cache), (5, "no-cache"));
            }
            other => panic!("{other:?}"),
        }
        match get("/x86-64/store_18.img.xz") {
            Reply::File { cache, .. } => assert!(cache.contains("immutable")),
            other => panic!("{other:?}"),
        }
        for absent in [
            "/x86-64/SHA256SUMS.sha256-asc",
            "/x86-64",
            "/",
            "/.generations/1/SHA256SUMS",
            "/x86-64/../../secret",
            "/escape",
            "/%2e%2e/secret",
            "/x86-64/%2E%2E/%2E%2E/secret",
        ] {
            assert_eq!(
                get(absent),
                Reply::Status(StatusCode::NOT_FOUND),
                "{absent}"
            );
        }
        assert_eq!(
            respond(&root, &Method::PUT, "/x86-64/SHA256SUMS", None),
            Reply::Status(StatusCode::METHOD_NOT_ALLOWED)
        );
    }

    #[test]
    fn ranges() {
        let (_d, root) = store();
        let span = |r: &str| match respond(&root, &Method::GET, "/x86-64/store_18.img.xz", Some(r))
        {
            Reply::File {
                start,
                len,
                partial,
                ..
            } => Some((start, len, partial)),
            Reply::Unsatisfiable { total } => {
                assert_eq!(total, 10);
                None
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(span("bytes=2-4"), Some((2, 3, true)));
        assert_eq!(span("bytes=7-"), Some((7, 3, true)));
        assert_eq!(span("bytes=-4"), Some((6, 4, true)));
        assert_eq!(span("bytes=-40"), Some((0, 10, true)));
        assert_eq!(span("bytes=5-100"), Some((5, 5, true)));
        assert_eq!(span("bytes=10-"), None);
        assert_eq!(span("bytes=-0"), None);
        // Forms answered with the whole file.
        for whole in ["bytes=1-2,4-5", "items=1-2", "bytes=4-2", "bytes=x-"] {
            assert_eq!(span(whole), Some((0, 10, false)), "{whole}");
        }
    }

    proptest! {
        #[test]
        fn ranges_stay_inside_the_file(header in "\\PC{0,24}", total in 0u64..1_000_000) {
            if let Some(Ok((start, end))) = parse_range(&header, total) {
                prop_assert!(start < end && end <= total, "{start}..{end} of {total}");
            }
        }

        #[test]
        fn nothing_outside_the_root_resolves(path in "(/(\\.\\.|%2[eE]%2[eE]|[a-z0-9.%-]{1,6})){0,5}") {
            let (_d, root) = store();
            if let Some(p) = resolve(&root, &path) {
                prop_assert!(p.starts_with(&root));
            }
        }
    }
}
