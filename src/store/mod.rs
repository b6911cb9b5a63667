//! Where a channel lives. One trait, one file per backend.
//!
//! The commit protocol (channel.rs) only needs these operations; each backend
//! makes them as atomic as it can: payloads are create-only, a manifest and
//! its signature become visible together where the backend allows it, and
//! nothing half-written is ever visible under a published name.
//!
//! - `dir`: a local directory, switched atomically by symlink.
//! - `s3`: S3 and compatibles (object_store), `webdav`: WebDAV (reqwest).
//!   Both are thin transports under `remote`, which holds the protocol they
//!   share: the publisher lock, create-only verified payload uploads, the
//!   conditional manifest write with its roll-forward, retries.

pub mod dir;
mod remote;
pub mod s3;
pub mod webdav;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use sha2::Digest as _;
use thiserror::Error;

use crate::config::{Channel, StoreLocation};
use crate::hash::{self, Digest};

/// Where a remote commit parks the new signature while SHA256SUMS is being
/// replaced (relative to the arch directory). A SHA256SUMS that verifies only
/// with this signature is an interrupted commit; the next write finishes it.
pub const PENDING_SIGNATURE: &str = ".pending/SHA256SUMS.gpg";

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Layout { path: PathBuf, message: String },
    #[error(
        "{path} already exists with different content (sha256 {existing}); published payloads are never overwritten: publish under a new version"
    )]
    Conflict { path: PathBuf, existing: String },
    /// A request the hosting refused or that kept failing.
    #[error("{}", remote_message(op, url, *status, message, hint))]
    Remote {
        op: &'static str,
        url: String,
        status: Option<u16>,
        message: String,
        hint: String,
    },
    /// The conditional manifest write lost against another writer.
    #[error("{url} changed since it was read (another publisher wrote to the channel); this command's manifest for it was not written. Run the command again: it re-reads the channel and plans on top of the other release")]
    Changed { url: String },
    /// The store cannot be used at all (bad URL, bad CA file, …).
    #[error("{location}: {message}")]
    Open { location: String, message: String },
}

/// `writing URL: HTTP 403: what the server said. What to check.`
fn remote_message(op: &str, url: &str, status: Option<u16>, message: &str, hint: &str) -> String {
    let mut s = format!("{op} {url}: ");
    if let Some(status) = status {
        s += &format!("HTTP {status}: ");
    }
    s += message.trim_end_matches('.');
    let mut hint = hint.chars();
    if let Some(first) = hint.next() {
        s += ". ";
        s.extend(first.to_uppercase());
        s += hint.as_str();
    }
    s
}

impl StoreError {
    pub fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.to_path_buf();
        move |source| StoreError::Io { what, path, source }
    }
}

/// Per-file facts a listing gives without reading the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileInfo {
    pub size: u64,
}

/// Held while a command changes the channel; dropping it releases the lock.
pub trait Lock {}

/// What tells a file's content changed without reading it: every write
/// updates ctime (nanoseconds), a replacement changes the inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn of(path: &Path) -> io::Result<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path)?;
        Ok(FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

/// A payload's SHA-256: known from staging, or learned from the first
/// complete read of the file, which for a payload new to the hosting is its
/// upload. Such a payload is read once instead of hashed and then sent.
/// Clones share what was learned.
#[derive(Clone, Debug, Default)]
pub struct PayloadDigest(Arc<OnceLock<Digest>>);

impl PayloadDigest {
    pub fn known(digest: Digest) -> PayloadDigest {
        PayloadDigest(Arc::new(OnceLock::from(digest)))
    }

    /// Not hashed yet: the upload (or [`Source::digest`]) will.
    pub fn deferred() -> PayloadDigest {
        PayloadDigest::default()
    }

    pub fn get(&self) -> Option<Digest> {
        self.0.get().copied()
    }

    /// Records what a complete read found; `false` when an earlier read
    /// found something else (the file changed between them).
    fn learn(&self, digest: Digest) -> bool {
        *self.0.get_or_init(|| digest) == digest
    }
}

/// A staged payload to upload. Backends read it from disk for every attempt
/// (never all of it into memory) through [`Source::open`] or [`Checker`],
/// which fail before handing on the last byte when the file no longer is
/// what the manifest will list: its stamp changed since it was staged, or
/// (without a stamp) its bytes do not hash to `sha256`. A deferred `sha256`
/// always comes with a stamp, which is what makes the hash learned while
/// uploading the file's content.
#[derive(Clone)]
pub struct Source {
    pub path: PathBuf,
    pub sha256: PayloadDigest,
    pub size: u64,
    pub stamp: Option<FileStamp>,
    /// Called with each chunk's length as it is read (the progress bar).
    pub progress: Arc<dyn Fn(u64) + Send + Sync>,
}

impl Source {
    pub fn open(&self) -> io::Result<SourceReader> {
        Ok(SourceReader {
            file: std::fs::File::open(&self.path)?,
            checker: self.checker(),
            progress: self.progress.clone(),
        })
    }

    pub fn checker(&self) -> Checker {
        Checker {
            hasher: sha2::Sha256::new(),
            seen: 0,
            size: self.size,
            expected: self.sha256.get(),
            learned: self.sha256.clone(),
            stamp: self.stamp,
            path: self.path.clone(),
        }
    }

    /// The payload's hash; when no upload has learned it yet, reads the file
    /// now (backends that must send the hash ahead of the bytes, and
    /// comparisons with what the hosting already has).
    pub fn digest(&self) -> io::Result<Digest> {
        if let Some(d) = self.sha256.get() {
            return Ok(d);
        }
        let checker = self.checker();
        let (digest, size) = hash::hash_file(&self.path)?;
        if size != self.size {
            return Err(checker.changed(format!("{size} bytes instead of {}", self.size)));
        }
        checker.accept(digest)?;
        Ok(digest)
    }

    /// [`Source::digest`] for the store's own comparisons.
    fn stored_digest(&self) -> Result<Digest, StoreError> {
        self.digest().map_err(StoreError::io("reading", &self.path))
    }
}

/// Checks a payload's bytes as they stream past.
pub struct Checker {
    hasher: sha2::Sha256,
    seen: u64,
    size: u64,
    /// `None`: deferred, learned from this read.
    expected: Option<Digest>,
    learned: PayloadDigest,
    stamp: Option<FileStamp>,
    path: PathBuf,
}

impl Checker {
    /// Accounts for the next chunk. The chunk that completes the file is
    /// checked before the caller passes it on, so a server never receives a
    /// complete body with the wrong content.
    pub fn update(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.seen += chunk.len() as u64;
        if self.seen > self.size {
            return Err(self.changed(format!("grew beyond {} bytes", self.size)));
        }
        if let (Some(_), Some(stamp)) = (self.expected, self.stamp) {
            // Hashed at staging; unchanged since then means the same bytes.
            if self.seen == self.size && FileStamp::of(&self.path)? != stamp {
                return Err(self.changed("modified since it was hashed".into()));
            }
            return Ok(());
        }
        self.hasher.update(chunk);
        if self.seen == self.size {
            let digest: Digest = self.hasher.clone().finalize().into();
            self.accept(digest)?;
        }
        Ok(())
    }

    /// Checks a complete read's hash: against the expected one, or (deferred)
    /// the file's stamp is still the staged one, so these were its bytes.
    fn accept(&self, digest: Digest) -> io::Result<()> {
        match self.expected {
            Some(expected) if digest != expected => Err(self.changed(format!(
                "sha256 {} instead of {}",
                hash::to_hex(&digest),
                hash::to_hex(&expected)
            ))),
            Some(_) => Ok(()),
            None => {
                let unchanged = match self.stamp {
                    Some(stamp) => FileStamp::of(&self.path)? == stamp,
                    None => false,
                };
                if !unchanged {
                    return Err(self.changed("modified since it was staged".into()));
                }
                if !self.learned.learn(digest) {
                    return Err(self.changed("read twice with different content".into()));
                }
                Ok(())
            }
        }
    }

    /// At end of file: everything was there.
    pub fn finish(&self) -> io::Result<()> {
        if self.seen != self.size {
            return Err(self.changed(format!("{} bytes instead of {}", self.seen, self.size)));
        }
        if self.size == 0 {
            // No chunk ever completed the file.
            self.accept(hash::EMPTY_SHA256)?;
        }
        Ok(())
    }

    fn changed(&self, what: String) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} changed while publishing ({what}); stage the release again",
                self.path.display()
            ),
        )
    }
}

/// A payload file read through its [`Checker`].
pub struct SourceReader {
    file: std::fs::File,
    checker: Checker,
    progress: Arc<dyn Fn(u64) + Send + Sync>,
}

impl Read for SourceReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.checker.finish()?;
        } else {
            self.checker.update(&buf[..n])?;
            (self.progress)(n as u64);
        }
        Ok(n)
    }
}

pub trait Store: Send + Sync {
    /// Human description (path or URL), for messages.
    fn describe(&self) -> String;

    /// Takes the publisher lock, waiting for it.
    fn lock(&self) -> Result<Box<dyn Lock>, StoreError>;

    /// Architecture directories present in the channel.
    fn arches(&self) -> Result<Vec<String>, StoreError>;

    /// The payloads stored for one architecture (uploaded, whether or not a
    /// manifest names them yet), by name; never temporaries or manifests.
    fn list(&self, arch: &str) -> Result<BTreeMap<String, FileInfo>, StoreError>;

    /// Reads a small file as devices see it (manifest, signature); `None` when absent.
    /// Remote backends remember the version of SHA256SUMS they return here:
    /// the next `commit` of that arch is conditional on it still being current.
    fn get(&self, arch: &str, name: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Uploads a payload under `name`, create-only: an existing file with the
    /// same hash is fine (resume), a different one is a Conflict. Verified
    /// after upload (size, and hash where the backend can).
    fn put_payload(&self, arch: &str, name: &str, source: &Source) -> Result<(), StoreError>;

    /// Makes a new SHA256SUMS and its signature visible to devices, with every
    /// payload the manifest names. `names` are those payloads.
    fn commit(
        &self,
        arch: &str,
        manifest: &[u8],
        signature: &[u8],
        names: &[&str],
    ) -> Result<(), StoreError>;

    /// Deletes a payload no manifest names any more; absent is fine.
    fn delete(&self, arch: &str, name: &str) -> Result<(), StoreError>;

    /// Reads a channel-level file beside the arch directories (the ledger).
    fn get_channel_file(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Replaces a channel-level file atomically (the whole ledger is one file,
    /// so an append is never half-visible). `previous` is the content read
    /// before; backends with conditional writes use it to refuse a lost update.
    fn put_channel_file(
        &self,
        name: &str,
        bytes: &[u8],
        previous: Option<&[u8]>,
    ) -> Result<(), StoreError>;

    /// Removes what earlier commits or interrupted runs left behind, keeping
    /// the payloads in `keep`; called only after every arch is committed.
    fn cleanup(&self, _arch: &str, _keep: &BTreeSet<&str>) -> Result<(), StoreError> {
        Ok(())
    }

    /// Hashes an uploaded payload (named by a manifest or not); `None` when
    /// absent. May answer from what the upload recorded (S3 metadata).
    fn payload_hash(
        &self,
        arch: &str,
        name: &str,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Option<(Digest, u64)>, StoreError> {
        self.hash(arch, name, progress)
    }

    /// Hashes a file as devices see it (reading every byte); `None` when absent.
    fn hash(
        &self,
        arch: &str,
        name: &str,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Option<(Digest, u64)>, StoreError>;

    /// How many payloads `apply_release` uploads at once.
    fn parallel_uploads(&self) -> usize {
        1
    }

    /// Whether an upload can learn a payload's hash as it sends the bytes
    /// (see [`PayloadDigest`]); a backend that must send the hash first
    /// (S3's metadata) has staging hash it, under its own progress bar.
    fn hashes_while_uploading(&self) -> bool {
        true
    }
}

/// Channel settings that shape how the backends talk to the hosting.
#[derive(Clone, Debug)]
pub struct Options {
    pub parallel_uploads: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            parallel_uploads: crate::config::DEFAULT_PARALLEL_UPLOADS,
        }
    }
}

/// Opens the backend for a configured location with default options.
pub fn open(location: &StoreLocation) -> Box<dyn Store> {
    open_with(location, &Options::default())
}

/// Opens the configured channel's backend with its options.
pub fn open_channel(channel: &Channel) -> Box<dyn Store> {
    open_with(
        &channel.store,
        &Options {
            parallel_uploads: channel.parallel_uploads,
        },
    )
}

/// Opens a backend. A remote one that cannot be set up (bad endpoint, CA
/// file, …) still opens, and reports why on first use, so `open` stays
/// infallible for its callers.
pub fn open_with(location: &StoreLocation, options: &Options) -> Box<dyn Store> {
    let remote = match location {
        StoreLocation::Dir(path) => {
            return Box::new(dir::DirStore::new(path.clone(), options.parallel_uploads))
        }
        StoreLocation::S3 { bucket, prefix } => {
            s3::S3::new(bucket, prefix, options.parallel_uploads)
                .map(|b| Box::new(b) as Box<dyn remote::Backend>)
                .map_err(|m| (format!("s3://{bucket}/{prefix}"), m))
        }
        StoreLocation::WebDav { url, ca } => webdav::WebDav::new(url, ca.as_deref())
            .map(|b| Box::new(b) as Box<dyn remote::Backend>)
            .map_err(|m| (format!("webdav+{url}"), m)),
    };
    match remote {
        Ok(backend) => Box::new(remote::RemoteStore::new(backend, options)),
        Err((location, message)) => Box::new(Unavailable { location, message }),
    }
}

/// A store whose backend could not be set up: every operation says why.
struct Unavailable {
    location: String,
    message: String,
}

impl Unavailable {
    fn err<T>(&self) -> Result<T, StoreError> {
        Err(StoreError::Open {
            location: self.location.clone(),
            message: self.message.clone(),
        })
    }
}

impl Store for Unavailable {
    fn describe(&self) -> String {
        self.location.clone()
    }
    fn lock(&self) -> Result<Box<dyn Lock>, StoreError> {
        self.err()
    }
    fn arches(&self) -> Result<Vec<String>, StoreError> {
        self.err()
    }
    fn list(&self, _: &str) -> Result<BTreeMap<String, FileInfo>, StoreError> {
        self.err()
    }
    fn get(&self, _: &str, _: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.err()
    }
    fn put_payload(&self, _: &str, _: &str, _: &Source) -> Result<(), StoreError> {
        self.err()
    }
    fn commit(&self, _: &str, _: &[u8], _: &[u8], _: &[&str]) -> Result<(), StoreError> {
        self.err()
    }
    fn delete(&self, _: &str, _: &str) -> Result<(), StoreError> {
        self.err()
    }
    fn get_channel_file(&self, _: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.err()
    }
    fn put_channel_file(&self, _: &str, _: &[u8], _: Option<&[u8]>) -> Result<(), StoreError> {
        self.err()
    }
    fn hash(
        &self,
        _: &str,
        _: &str,
        _: &mut dyn FnMut(u64),
    ) -> Result<Option<(Digest, u64)>, StoreError> {
        self.err()
    }
    fn hashes_while_uploading(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(path: &Path, sha256: PayloadDigest) -> Source {
        Source {
            path: path.to_path_buf(),
            sha256,
            size: std::fs::metadata(path).unwrap().len(),
            stamp: FileStamp::of(path).ok(),
            progress: Arc::new(|_| {}),
        }
    }

    fn read_all(s: &Source) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        s.open()?.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn a_deferred_digest_is_learned_by_the_read_and_shared_by_clones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let digest = PayloadDigest::deferred();
        let s = source(&path, digest.clone());
        assert_eq!(digest.get(), None);
        assert_eq!(read_all(&s).unwrap(), data);
        let expected = hash::hash_file(&path).unwrap().0;
        assert_eq!(digest.get(), Some(expected));
        assert_eq!(s.digest().unwrap(), expected);
    }

    #[test]
    fn a_deferred_payload_changed_after_staging_is_refused_before_its_last_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        std::fs::write(&path, b"first").unwrap();
        let s = source(&path, PayloadDigest::deferred());
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&path, b"other").unwrap(); // same size, new ctime
        let e = read_all(&s).unwrap_err();
        assert!(
            e.to_string().contains("modified since it was staged"),
            "{e}"
        );
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        assert_eq!(s.sha256.get(), None, "nothing learned from a bad read");
        let e = s.digest().unwrap_err();
        assert!(
            e.to_string().contains("modified since it was staged"),
            "{e}"
        );
    }

    #[test]
    fn a_deferred_empty_payload_learns_the_empty_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty");
        std::fs::write(&path, b"").unwrap();
        let s = source(&path, PayloadDigest::deferred());
        assert!(read_all(&s).unwrap().is_empty());
        assert_eq!(s.sha256.get(), Some(hash::EMPTY_SHA256));
    }

    #[test]
    fn deferred_needs_a_stamp_and_known_needs_the_right_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        std::fs::write(&path, b"bytes").unwrap();
        let mut s = source(&path, PayloadDigest::deferred());
        s.stamp = None;
        assert!(
            read_all(&s).is_err(),
            "a deferred hash without a stamp proves nothing"
        );
        let mut s = source(&path, PayloadDigest::known([0; 32]));
        s.stamp = None;
        let e = read_all(&s).unwrap_err();
        assert!(e.to_string().contains("instead of 0000"), "{e}");
        let mut s = source(&path, PayloadDigest::deferred());
        s.size = 4;
        assert!(read_all(&s)
            .unwrap_err()
            .to_string()
            .contains("grew beyond 4"));
    }
}
