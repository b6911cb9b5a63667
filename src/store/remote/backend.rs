//! The transport under the remote protocol: the primitives s3.rs and
//! webdav.rs implement ([`Backend`]), the vocabulary they answer in
//! ([`Failure`], [`Kind`], [`Head`], [`Entry`], …) and the one place HTTP
//! statuses are classified, so every backend means the same by a failure.

use crate::hash::Digest;
use crate::payload::Source;

/// What a failed request means for the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Worth retrying: 5xx, 408, 429, timeouts, refused or reset connections.
    Transient,
    NotFound,
    /// A conditional request lost: the object exists or changed.
    Precondition,
    /// 401 or 403: credentials or permissions.
    Denied,
    /// The server does not offer a method we need.
    Unsupported,
    Fatal,
}

#[derive(Debug)]
pub(crate) struct Failure {
    pub kind: Kind,
    pub status: Option<u16>,
    pub message: String,
}

impl Failure {
    pub fn new(kind: Kind, status: Option<u16>, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            status,
            message: message.into(),
        }
    }

    /// Classifies an HTTP status the same way for every backend.
    pub fn status(status: u16, message: impl Into<String>) -> Failure {
        let kind = match status {
            404 | 410 => Kind::NotFound,
            412 => Kind::Precondition,
            401 | 403 => Kind::Denied,
            405 | 501 => Kind::Unsupported,
            408 | 425 | 429 | 500..=599 => Kind::Transient,
            _ => Kind::Fatal,
        };
        Failure::new(kind, Some(status), message)
    }

    /// A local problem (reading the payload, a bad key): never retried.
    pub fn fatal(message: impl Into<String>) -> Failure {
        Failure::new(Kind::Fatal, None, message)
    }
}

/// Preconditions for small writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Cond {
    Any,
    /// Only if nothing is there (`If-None-Match: *`).
    Absent,
    /// Only if the current version is this one (`If-Match`).
    Match(String),
}

/// Caching class of an object; S3 stores it as Cache-Control, WebDAV leaves
/// it to the server configuration (see the README).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cache {
    /// Published payloads never change under their name.
    Immutable,
    /// SHA256SUMS and its signature change with every release.
    Revalidate,
}

impl Cache {
    pub fn header(self) -> &'static str {
        match self {
            Cache::Immutable => "public, max-age=31536000, immutable",
            Cache::Revalidate => "no-cache",
        }
    }
}

/// An object's bytes and its version tag (ETag), when the server gives one.
pub(crate) type Versioned = (Vec<u8>, Option<String>);

pub(crate) struct Head {
    pub size: u64,
    pub etag: Option<String>,
    /// The payload hash recorded at upload, where the backend keeps one.
    pub sha256: Option<Digest>,
}

pub(crate) struct Entry {
    pub name: String,
    pub dir: bool,
    pub size: u64,
}

/// What a request was for, to word errors and permission hints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Read,
    List,
    Write,
    Delete,
    Lock,
}

impl Op {
    pub(crate) fn verb(self) -> &'static str {
        match self {
            Op::Read => "reading",
            Op::List => "listing",
            Op::Write => "writing",
            Op::Delete => "deleting",
            Op::Lock => "locking",
        }
    }
}

/// Transport primitives. Keys are relative to the channel root
/// (`x86-64/SHA256SUMS`); `""` is the root itself.
pub(crate) trait Backend: std::any::Any + Send + Sync {
    fn describe(&self) -> String;
    fn url(&self, key: &str) -> String;
    /// Entries directly below `dir`; empty when `dir` does not exist.
    fn list(&self, dir: &str) -> Result<Vec<Entry>, Failure>;
    fn head(&self, key: &str) -> Result<Option<Head>, Failure>;
    /// A small object and its version tag (ETag).
    fn get(&self, key: &str) -> Result<Option<Versioned>, Failure>;
    /// Streams an object through SHA-256.
    fn hash(
        &self,
        key: &str,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Option<(Digest, u64)>, Failure>;
    /// Writes a small object; `Precondition` when `cond` does not hold.
    /// Returns the new version tag when the server tells it.
    fn put_bytes(
        &self,
        key: &str,
        bytes: &[u8],
        cond: &Cond,
        cache: Cache,
    ) -> Result<Option<String>, Failure>;
    /// Streams a payload in, create-only where the server can enforce it
    /// (`Precondition` when the name is taken).
    fn put_payload(&self, key: &str, source: &Source) -> Result<(), Failure>;
    /// A server-side copy of `other`'s `from` to our `to`, create-only
    /// (`Precondition` when `to` exists); `Ok(false)` when `other` is not on
    /// the same server (or bucket), so the bytes would have to pass through us.
    fn copy_from(&self, _other: &dyn Backend, _from: &str, _to: &str) -> Result<bool, Failure> {
        Ok(false)
    }
    /// Streams an object into `to`; `None` when absent.
    fn download(&self, key: &str, to: &mut dyn std::io::Write) -> Result<Option<u64>, Failure>;
    /// Deletes an object; absent is fine.
    fn delete(&self, key: &str) -> Result<(), Failure>;
    /// Removes what interrupted uploads and commits may have left in an arch
    /// directory besides payloads (only called under the publisher lock).
    fn clear_scratch(&self, _dir: &str) -> Result<(), Failure> {
        Ok(())
    }
    /// Advice for a Denied or Unsupported failure of `op`.
    fn hint(&self, op: Op, failure: &Failure) -> String;
    /// The payload's hash must go out before its bytes (a backend that can
    /// record it only as metadata sent with the request); none does now.
    fn hash_before_upload(&self) -> bool {
        false
    }

    /// Creates the lock holding `owner` unless one exists (then `false`).
    fn lock_create(&self, key: &str, owner: &[u8]) -> Result<bool, Failure> {
        match self.put_bytes(key, owner, &Cond::Absent, Cache::Revalidate) {
            Ok(_) => Ok(true),
            Err(f) if f.kind == Kind::Precondition => Ok(false),
            Err(f) => Err(f),
        }
    }
    fn lock_read(&self, key: &str) -> Result<Option<Vec<u8>>, Failure> {
        Ok(self.get(key)?.map(|(b, _)| b))
    }
    fn lock_write(&self, key: &str, owner: &[u8]) -> Result<(), Failure> {
        self.put_bytes(key, owner, &Cond::Any, Cache::Revalidate)
            .map(drop)
    }
    fn lock_remove(&self, key: &str) -> Result<(), Failure> {
        self.delete(key)
    }
}

/// Starts the runtime a backend drives its async client with. Two workers
/// are plenty: the upload threads block on it and the work is I/O.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, String> {
    // rustls needs a process-wide crypto provider; ring keeps the build free
    // of a C crypto library. Installing twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sysupdate-publish-io")
        .enable_all()
        .build()
        .map_err(|e| format!("starting the I/O runtime: {e}"))
}

/// The whole error chain on one line: transport errors hide the useful part
/// (connection refused, certificate unknown) in their sources.
pub(crate) use crate::errors::chain;

/// At most `max` characters of a server's message, for one-line errors.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    let s = s.trim();
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_once_for_every_backend() {
        assert_eq!(Failure::status(503, "").kind, Kind::Transient);
        assert_eq!(Failure::status(429, "").kind, Kind::Transient);
        assert_eq!(Failure::status(412, "").kind, Kind::Precondition);
        assert_eq!(Failure::status(403, "").kind, Kind::Denied);
        assert_eq!(Failure::status(404, "").kind, Kind::NotFound);
        assert_eq!(Failure::status(405, "").kind, Kind::Unsupported);
        assert_eq!(Failure::status(400, "").kind, Kind::Fatal);
    }

    #[test]
    fn truncate_cuts_long_messages_on_a_character() {
        assert_eq!(truncate("  short  ", 10), "short");
        assert_eq!(truncate("ééééé", 3), "ééé…");
    }
}
