//! `s3://bucket/prefix`: AWS S3 and S3-compatible object storage, through
//! the object_store crate. Only transport lives here; the protocol is in
//! remote/mod.rs.
//!
//! Configuration comes from the standard `AWS_*` environment variables
//! (object_store's `AmazonS3Builder::from_env`): `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` /
//! `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL` (S3-compatibles; path-style
//! addressing unless `AWS_VIRTUAL_HOSTED_STYLE_REQUEST=true`) and
//! `AWS_ALLOW_HTTP=true` for a plain-http endpoint such as a local test server.
//!
//! Payloads up to one part are a single create-only PUT; larger ones are
//! multipart uploads of [`PART`] bytes, read from disk as they go so memory
//! stays bounded. Every request carries `x-amz-checksum-sha256` of its body
//! (object_store computes it from the bytes it sends), so the server
//! verifies each body: for a single PUT that is the full object's SHA-256,
//! for a multipart upload each part's, and the completed object gets S3's
//! *composite* checksum (SHA-256 of the parts' SHA-256s). S3 offers a
//! full-object checksum for multipart uploads only for the CRC algorithms,
//! never for SHA-256, so the payload's own SHA-256 is computed here as the
//! parts stream past (the file is read once) and recorded:
//!
//! - single PUT: as `x-amz-meta-sha256`, sent with the bytes it describes
//!   (the body is read into memory, hashed, then sent);
//! - multipart with the hash already known (the hosting or the history knew
//!   the name, so staging hashed it): `x-amz-meta-sha256` at creation, as
//!   metadata must go out before the first part;
//! - multipart with the hash learned by the upload: metadata can no longer
//!   be set without rewriting the object, so the hash goes to a small
//!   companion object `<dir>/.sha256/<name>` that also holds the object's
//!   size and ETag. [`Backend::head`] trusts it only while the object still
//!   has that ETag and size (any rewrite of the object changes its ETag), so
//!   a replaced payload is hashed by reading it, as one without a record is.
//!
//! Either record makes dedupe and resume a HEAD request. moto (5.2.1, and
//! 5.2.5 as read) stores `x-amz-checksum-sha256` without checking it; real
//! S3 refuses a body that does not match (`BadDigest`), which is the
//! upload's check there.

use std::io::Read;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, Checksum};
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, BackoffConfig, ClientConfigKey, GetOptions, ObjectStore, ObjectStoreExt,
    PutMode, PutMultipartOptions, PutOptions, RetryConfig, UpdateVersion, WriteMultipart,
};

use super::remote::backend::{
    self, Backend, Cache, Cond, Entry, Failure, Head, Kind, Op, Versioned,
};
use crate::hash::{self, Digest};
use crate::payload::Source;

/// Multipart part size: large enough for few requests, small enough that
/// parallel uploads stay well under 200 MiB of memory.
pub const PART: usize = 16 << 20;
const SHA256_META: &str = "sha256";
/// Companion records of payload hashes learned by multipart uploads.
const SHA256_DIR: &str = ".sha256";

pub struct S3 {
    store: AmazonS3,
    rt: tokio::runtime::Runtime,
    bucket: String,
    prefix: String,
    /// Parts in flight per upload (memory: parallel × (this + 1) × PART).
    part_slots: usize,
}

impl S3 {
    pub fn new(bucket: &str, prefix: &str, parallel_uploads: usize) -> Result<S3, String> {
        let rt = backend::runtime()?;
        // object_store retries each request (and each part) briefly itself;
        // remote/retry.rs retries whole operations on top with a longer backoff.
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(2),
                base: 2.0,
            },
            max_retries: 3,
            retry_timeout: Duration::from_secs(60),
        };
        let store = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_retry(retry)
            .with_checksum_algorithm(Checksum::SHA256)
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                "10s",
            )
            // Whole requests, including streaming a multi-GB payload to hash it.
            .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), "1h")
            .build()
            .map_err(|e| format!("S3 configuration from the AWS_* environment: {e}"))?;
        Ok(S3 {
            store,
            rt,
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            part_slots: (4 / parallel_uploads.max(1)).max(1),
        })
    }

    fn path(&self, key: &str) -> Result<Path, Failure> {
        let full = match (self.prefix.as_str(), key) {
            ("", k) => k.to_string(),
            (p, "") => p.to_string(),
            (p, k) => format!("{p}/{k}"),
        };
        Path::parse(&full).map_err(|e| Failure::fatal(format!("{full:?} is not a valid key: {e}")))
    }

    /// A multipart upload, reading the file once. Returns the new object's
    /// ETag and whether its hash still has to be recorded (it was learned
    /// by this upload, after the metadata went out).
    async fn upload_parts(
        &self,
        path: &Path,
        source: &Source,
    ) -> Result<(Option<String>, bool), Failure> {
        // S3 takes metadata before the first part: only a hash known now.
        let known = source.sha256.get();
        let options = PutMultipartOptions {
            attributes: attributes(Cache::Immutable, known.as_ref()),
            ..Default::default()
        };
        let upload = self
            .store
            .put_multipart_opts(path, options)
            .await
            .map_err(failure)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
        let pumped = self.pump(&mut writer, source).await;
        match pumped {
            Ok(()) => {
                let done = writer.finish().await.map_err(failure)?;
                Ok((done.e_tag, known.is_none()))
            }
            Err(f) => {
                // Parts already sent cost storage until aborted.
                let _ = writer.abort().await;
                Err(f)
            }
        }
    }

    /// The companion record's key for a payload's key.
    fn record_key(key: &str) -> String {
        match key.rsplit_once('/') {
            Some((dir, name)) => format!("{dir}/{SHA256_DIR}/{name}"),
            None => format!("{SHA256_DIR}/{key}"),
        }
    }

    /// Writes the companion record of a hash learned by a multipart upload.
    fn write_record(
        &self,
        key: &str,
        sha256: &Digest,
        size: u64,
        etag: &str,
    ) -> Result<(), Failure> {
        let record = Record {
            sha256: *sha256,
            size,
            etag: etag.to_string(),
        };
        self.put_bytes(
            &Self::record_key(key),
            record.to_line().as_bytes(),
            &Cond::Any,
            Cache::Revalidate,
        )
        .map(drop)
    }

    /// The hash a companion record gives for an object with this size and
    /// ETag; `None` without a record or when it describes other bytes.
    fn recorded(
        &self,
        key: &str,
        size: u64,
        etag: Option<&str>,
    ) -> Result<Option<Digest>, Failure> {
        let Some(etag) = etag else {
            return Ok(None);
        };
        let Some((bytes, _)) = self.get(&Self::record_key(key))? else {
            return Ok(None);
        };
        Ok(Record::parse(&bytes)
            .filter(|r| r.size == size && r.etag == etag)
            .map(|r| r.sha256))
    }

    /// Feeds the file to the multipart writer, at most `part_slots` parts in
    /// flight. Reading blocks this (the calling) thread, not the runtime's.
    async fn pump(&self, writer: &mut WriteMultipart, source: &Source) -> Result<(), Failure> {
        // Through the source's checker: it hashes what is sent and learns
        // the digest before the last byte goes out.
        let mut reader = source.open().map_err(local)?;
        loop {
            writer
                .wait_for_capacity(self.part_slots)
                .await
                .map_err(failure)?;
            // A whole part per read buffer: object_store then sends (and
            // checksums) it as one piece, without gathering 1 MiB chunks.
            let mut chunk = vec![0u8; PART];
            let n = read_full(&mut reader, &mut chunk).map_err(local)?;
            if n == 0 {
                return Ok(());
            }
            chunk.truncate(n);
            writer.put(Bytes::from(chunk));
        }
    }
}

/// Fills `buf` unless the file ends first.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// A payload hash learned by a multipart upload, bound to the object it
/// describes by size and ETag: `<sha256 hex> <size> <etag>`.
struct Record {
    sha256: Digest,
    size: u64,
    etag: String,
}

impl Record {
    fn to_line(&self) -> String {
        format!(
            "{} {} {}\n",
            hash::to_hex(&self.sha256),
            self.size,
            self.etag
        )
    }

    fn parse(bytes: &[u8]) -> Option<Record> {
        let text = std::str::from_utf8(bytes).ok()?.trim_end_matches('\n');
        let mut fields = text.splitn(3, ' ');
        let sha256 = hex::decode(fields.next()?).ok()?;
        Some(Record {
            sha256: Digest::try_from(sha256.as_slice()).ok()?,
            size: fields.next()?.parse().ok()?,
            etag: fields.next()?.to_string(),
        })
    }
}

fn attributes(cache: Cache, sha256: Option<&Digest>) -> Attributes {
    let mut a = Attributes::new();
    a.insert(Attribute::CacheControl, cache.header().into());
    // Devices want the bytes as they are; a text type invites CDNs to compress.
    a.insert(Attribute::ContentType, "application/octet-stream".into());
    if let Some(d) = sha256 {
        a.insert(
            Attribute::Metadata(SHA256_META.into()),
            hash::to_hex(d).into(),
        );
    }
    a
}

/// A local error (the payload changed on disk, cannot be read): never retried.
fn local(e: std::io::Error) -> Failure {
    Failure::fatal(e.to_string())
}

/// The HTTP status buried in object_store's error chain, if any.
fn status_of(e: &(dyn std::error::Error + 'static)) -> Option<u16> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if let Some(i) = text.find("status code: ") {
            let digits = &text[i + 13..];
            if let Ok(s) = digits.get(..3).unwrap_or("").parse() {
                return Some(s);
            }
        }
        cur = err.source();
    }
    None
}

/// `Code: Message` of an S3 XML error body, else the innermost error.
fn s3_message(e: &(dyn std::error::Error + 'static)) -> String {
    let text = backend::chain(e);
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let start = text.find(&open)? + open.len();
        let end = text[start..].find(&format!("</{name}>"))? + start;
        Some(text[start..end].to_string())
    };
    match (tag("Code"), tag("Message")) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c,
        _ => {
            let mut inner = e;
            while let Some(s) = inner.source() {
                inner = s;
            }
            backend::truncate(&inner.to_string(), 300)
        }
    }
}

fn failure(e: object_store::Error) -> Failure {
    use object_store::Error as E;
    let status = status_of(&e);
    let message = s3_message(&e);
    let kind = match &e {
        E::NotFound { .. } => Kind::NotFound,
        E::AlreadyExists { .. } | E::Precondition { .. } => Kind::Precondition,
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => Kind::Denied,
        E::NotSupported { .. } | E::NotImplemented { .. } => Kind::Unsupported,
        _ => match status {
            Some(s) => Failure::status(s, "").kind,
            // No response at all: refused, reset, timed out.
            None if transport_failed(&e) => Kind::Transient,
            None => Kind::Fatal,
        },
    };
    Failure::new(kind, status, message)
}

/// A request that got no HTTP answer, as for WebDAV: refused, reset, timed
/// out, or a pooled connection the server dropped (hyper's "connection was
/// not ready", which object_store calls Unknown). Our own reads never get
/// here (they are `local`); only an answer we could not decode is final.
fn transport_failed(e: &(dyn std::error::Error + 'static)) -> bool {
    use object_store::client::{HttpError, HttpErrorKind as H};
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(h) = err.downcast_ref::<HttpError>() {
            return !matches!(h.kind(), H::Decode);
        }
        cur = err.source();
    }
    false
}

impl Backend for S3 {
    fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    fn url(&self, key: &str) -> String {
        match (self.prefix.as_str(), key) {
            ("", k) => format!("s3://{}/{k}", self.bucket),
            (p, k) => format!("s3://{}/{p}/{k}", self.bucket),
        }
    }

    fn list(&self, dir: &str) -> Result<Vec<Entry>, Failure> {
        let path = self.path(dir)?;
        let prefix = (!path.as_ref().is_empty()).then_some(&path);
        let result = self
            .rt
            .block_on(self.store.list_with_delimiter(prefix))
            .map_err(failure)?;
        let name = |p: &Path| p.filename().unwrap_or_default().to_string();
        Ok(result
            .common_prefixes
            .iter()
            .map(|p| Entry {
                name: name(p),
                dir: true,
                size: 0,
            })
            .chain(result.objects.iter().map(|o| Entry {
                name: name(&o.location),
                dir: false,
                size: o.size,
            }))
            .collect())
    }

    fn head(&self, key: &str) -> Result<Option<Head>, Failure> {
        let path = self.path(key)?;
        let options = GetOptions {
            head: true,
            ..Default::default()
        };
        match self.rt.block_on(self.store.get_opts(&path, options)) {
            Ok(r) => {
                let mut sha256 = r
                    .attributes
                    .get(&Attribute::Metadata(SHA256_META.into()))
                    .and_then(|v| hex::decode(v.as_ref()).ok())
                    .and_then(|v| Digest::try_from(v.as_slice()).ok());
                // Only multipart uploads leave a companion record.
                if sha256.is_none() && r.meta.size > PART as u64 {
                    sha256 = self.recorded(key, r.meta.size, r.meta.e_tag.as_deref())?;
                }
                Ok(Some(Head {
                    size: r.meta.size,
                    etag: r.meta.e_tag,
                    sha256,
                }))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(failure(e)),
        }
    }

    fn get(&self, key: &str) -> Result<Option<Versioned>, Failure> {
        let path = self.path(key)?;
        self.rt.block_on(async {
            match self.store.get_opts(&path, GetOptions::default()).await {
                Ok(r) => {
                    let etag = r.meta.e_tag.clone();
                    let bytes = r.bytes().await.map_err(failure)?;
                    Ok(Some((bytes.to_vec(), etag)))
                }
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(failure(e)),
            }
        })
    }

    fn hash(
        &self,
        key: &str,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Option<(Digest, u64)>, Failure> {
        let path = self.path(key)?;
        self.rt.block_on(async {
            let r = match self.store.get_opts(&path, GetOptions::default()).await {
                Ok(r) => r,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(failure(e)),
            };
            let stream = r.into_stream().map(|c| c.map_err(failure));
            hash::hash_stream(stream, progress).await.map(Some)
        })
    }

    fn put_bytes(
        &self,
        key: &str,
        bytes: &[u8],
        cond: &Cond,
        cache: Cache,
    ) -> Result<Option<String>, Failure> {
        let path = self.path(key)?;
        let mode = match cond {
            Cond::Any => PutMode::Overwrite,
            Cond::Absent => PutMode::Create,
            Cond::Match(e) => PutMode::Update(UpdateVersion {
                e_tag: Some(e.clone()),
                version: None,
            }),
        };
        let options = PutOptions {
            mode,
            attributes: attributes(cache, None),
            ..Default::default()
        };
        let payload = Bytes::copy_from_slice(bytes).into();
        let result = self
            .rt
            .block_on(self.store.put_opts(&path, payload, options))
            .map_err(failure)?;
        Ok(result.e_tag)
    }

    fn put_payload(&self, key: &str, source: &Source) -> Result<(), Failure> {
        let path = self.path(key)?;
        if source.size > PART as u64 {
            let (etag, learned) = self.rt.block_on(self.upload_parts(&path, source))?;
            if learned {
                let sha256 = source.digest().map_err(local)?;
                let etag = etag.ok_or_else(|| {
                    Failure::fatal("the server gave no ETag for the completed upload")
                })?;
                self.write_record(key, &sha256, source.size, &etag)?;
            }
            return Ok(());
        }
        // One read: the source's checker learns the hash as the body fills.
        let mut body = Vec::with_capacity(source.size as usize);
        source
            .open()
            .and_then(|mut r| r.read_to_end(&mut body))
            .map_err(local)?;
        let sha256 = source.digest().map_err(local)?;
        let options = PutOptions {
            mode: PutMode::Create,
            attributes: attributes(Cache::Immutable, Some(&sha256)),
            ..Default::default()
        };
        self.rt
            .block_on(
                self.store
                    .put_opts(&path, Bytes::from(body).into(), options),
            )
            .map(drop)
            .map_err(failure)
    }

    /// CopyObject within the bucket: the bytes never leave S3, and the
    /// object keeps its metadata (sha256, Cache-Control).
    fn copy_from(&self, other: &dyn Backend, from: &str, to: &str) -> Result<bool, Failure> {
        let Some(other) = (other as &dyn std::any::Any).downcast_ref::<S3>() else {
            return Ok(false);
        };
        if other.bucket != self.bucket {
            return Ok(false);
        }
        let (from_key, to_key) = (from, to);
        let (from, to) = (other.path(from)?, self.path(to)?);
        self.rt
            .block_on(self.store.copy(&from, &to))
            .map_err(failure)?;
        // Metadata travels with the copy, a companion record does not; the
        // copy has an ETag of its own, so the record is written anew.
        if let Some(theirs) = other.head(from_key)? {
            let ours = self.head(to_key)?;
            if let (
                Some(sha256),
                Some(Head {
                    size,
                    etag: Some(etag),
                    sha256: None,
                }),
            ) = (theirs.sha256, ours)
            {
                if size == theirs.size {
                    self.write_record(to_key, &sha256, size, &etag)?;
                }
            }
        }
        Ok(true)
    }

    fn download(&self, key: &str, to: &mut dyn std::io::Write) -> Result<Option<u64>, Failure> {
        let path = self.path(key)?;
        self.rt.block_on(async {
            let r = match self.store.get_opts(&path, GetOptions::default()).await {
                Ok(r) => r,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(failure(e)),
            };
            let mut stream = r.into_stream();
            let mut n = 0;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(failure)?;
                to.write_all(&chunk).map_err(local)?;
                n += chunk.len() as u64;
            }
            Ok(Some(n))
        })
    }

    /// Deletes the object and any companion record of its hash.
    fn delete(&self, key: &str) -> Result<(), Failure> {
        for k in [key.to_string(), Self::record_key(key)] {
            let path = self.path(&k)?;
            match self.rt.block_on(self.store.delete(&path)) {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(failure(e)),
            }
        }
        Ok(())
    }

    fn hint(&self, op: Op, failure: &Failure) -> String {
        let code = failure.message.split(':').next().unwrap_or("");
        let action = match op {
            Op::Read => "s3:GetObject",
            Op::List => "s3:ListBucket",
            Op::Write | Op::Lock => "s3:PutObject",
            Op::Delete => "s3:DeleteObject",
        };
        match code {
            "InvalidAccessKeyId" => "AWS_ACCESS_KEY_ID is not known to this S3 endpoint: check the access key (and AWS_ENDPOINT_URL when the bucket is not on AWS)".into(),
            "SignatureDoesNotMatch" => "AWS_SECRET_ACCESS_KEY does not belong to AWS_ACCESS_KEY_ID, or AWS_REGION is not the bucket's region".into(),
            "ExpiredToken" | "InvalidToken" | "TokenRefreshRequired" => "AWS_SESSION_TOKEN is expired or invalid: get fresh credentials".into(),
            _ if failure.status == Some(401) || std::env::var_os("AWS_ACCESS_KEY_ID").is_none() => "no usable credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary ones)".into(),
            _ if failure.kind == Kind::Unsupported => "the S3 endpoint does not support this request; conditional writes (If-Match / If-None-Match) are required".into(),
            _ => format!(
                "the credentials of AWS_ACCESS_KEY_ID lack {action} on arn:aws:s3:::{}/{}* (IAM or bucket policy)",
                self.bucket,
                if self.prefix.is_empty() { String::new() } else { format!("{}/", self.prefix) }
            ),
        }
    }
}
