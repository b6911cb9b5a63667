//! A small blocking HTTP(S) client for looking at a channel the way
//! systemd-pull does: plain GETs, redirects followed, no Accept-Encoding
//! (so a server that compresses on its own is caught), system CA store plus
//! an optional extra CA for test hosting.

use std::path::Path;

use futures_util::StreamExt;
use thiserror::Error;

use crate::hash::Digest;

#[derive(Debug, Error)]
pub enum HttpError {
    #[error("cannot read the CA certificate {path}: {message}")]
    Ca { path: String, message: String },
    #[error("{url}: {message}")]
    Request { url: String, message: String },
}

/// The parts of a response the checks look at.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub content_length: Option<u64>,
    pub content_encoding: Option<String>,
    pub cache_control: Option<String>,
    pub body: Vec<u8>,
}

pub struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

/// Largest body `get` keeps in memory: systemd caps SHA256SUMS at 64 MiB.
const MAX_BODY: usize = 64 << 20;

impl Http {
    pub fn new(ca: Option<&Path>) -> Result<Http, HttpError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("sysupdate-publish/", env!("CARGO_PKG_VERSION")))
            .timeout(std::time::Duration::from_secs(120));
        if let Some(path) = ca {
            let ca_err = |message: String| HttpError::Ca {
                path: path.display().to_string(),
                message,
            };
            let pem = std::fs::read(path).map_err(|e| ca_err(e.to_string()))?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| ca_err(e.to_string()))?;
            builder = builder.tls_certs_merge([cert]);
        }
        let client = builder.build().map_err(|e| HttpError::Request {
            url: String::new(),
            message: e.to_string(),
        })?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| HttpError::Request {
                url: String::new(),
                message: e.to_string(),
            })?;
        Ok(Http { rt, client })
    }

    fn request(
        &self,
        method: reqwest::Method,
        url: &str,
        keep_body: bool,
    ) -> Result<Response, HttpError> {
        // reqwest says "error sending request"; the reason (connection
        // refused, certificate unknown) is in its sources.
        let err = |e: reqwest::Error| HttpError::Request {
            url: url.to_string(),
            message: crate::errors::chain(&e),
        };
        self.rt.block_on(async {
            let resp = self.client.request(method, url).send().await.map_err(err)?;
            let header = |name: reqwest::header::HeaderName| {
                resp.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let content_length =
                header(reqwest::header::CONTENT_LENGTH).and_then(|v| v.parse().ok());
            let content_encoding = header(reqwest::header::CONTENT_ENCODING);
            let cache_control = header(reqwest::header::CACHE_CONTROL);
            let status = resp.status().as_u16();
            let mut body = Vec::new();
            if keep_body {
                let mut stream = resp.bytes_stream();
                while let Some(chunk) = stream.next().await {
                    body.extend_from_slice(&chunk.map_err(err)?);
                    if body.len() > MAX_BODY {
                        return Err(HttpError::Request {
                            url: url.to_string(),
                            message: "body larger than systemd's 64 MiB limit".into(),
                        });
                    }
                }
            }
            Ok(Response {
                status,
                content_length,
                content_encoding,
                cache_control,
                body,
            })
        })
    }

    pub fn get(&self, url: &str) -> Result<Response, HttpError> {
        self.request(reqwest::Method::GET, url, true)
    }

    pub fn head(&self, url: &str) -> Result<Response, HttpError> {
        self.request(reqwest::Method::HEAD, url, false)
    }

    /// Streams a body into `to` while hashing it, in constant memory.
    pub fn download(
        &self,
        url: &str,
        to: &mut dyn std::io::Write,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(u16, Digest, u64), HttpError> {
        // reqwest says "error sending request"; the reason (connection
        // refused, certificate unknown) is in its sources.
        let err = |e: reqwest::Error| HttpError::Request {
            url: url.to_string(),
            message: crate::errors::chain(&e),
        };
        self.rt.block_on(async {
            let resp = self.client.get(url).send().await.map_err(err)?;
            let status = resp.status().as_u16();
            if status != 200 {
                return Ok((status, [0; 32], 0));
            }
            let mut hasher = crate::hash::HashingWriter::new(to);
            let mut stream = resp.bytes_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(err)?;
                std::io::Write::write_all(&mut hasher, &chunk).map_err(|e| HttpError::Request {
                    url: url.to_string(),
                    message: format!("writing the download: {e}"),
                })?;
                progress(chunk.len() as u64);
            }
            let (_, digest, len) = hasher.finish();
            Ok((status, digest, len))
        })
    }

    /// Hashes a body of any size in constant memory: [`Http::download`]
    /// into nothing (digest and length of a 200 body, zero otherwise).
    pub fn get_hashed(
        &self,
        url: &str,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(u16, Digest, u64), HttpError> {
        self.download(url, &mut std::io::sink(), progress)
    }
}
