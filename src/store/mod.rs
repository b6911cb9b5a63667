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
//! - `memory`: a complete store in memory, for unit tests of the layers
//!   above (never opened from a configuration).

pub mod dir;
mod location;
pub mod memory;
mod remote;
pub mod s3;
pub mod webdav;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::arch::Arch;
use crate::hash::Digest;
use crate::payload::Source;
use crate::progress::Events;
pub use location::{InvalidLocation, StoreLocation};
pub use memory::MemoryStore;

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

/// [`Source::digest`] for the store's own comparisons (dedupe, resume).
pub(crate) fn stored_digest(source: &Source) -> Result<Digest, StoreError> {
    source
        .digest()
        .map_err(StoreError::io("reading", &source.path))
}

pub trait Store: std::any::Any + Send + Sync {
    /// Human description (path or URL), for messages.
    fn describe(&self) -> String;

    /// Takes the publisher lock, waiting for it.
    /// Waiting is reported to `events` (another publisher holds the lock).
    fn lock(&self, events: &dyn Events) -> Result<Box<dyn Lock>, StoreError>;

    /// Architecture directories present in the channel: top-level
    /// directories named as a systemd architecture, sorted. Anything else
    /// there (`docs/`, hidden directories) belongs to someone else and is
    /// left out, not an error.
    fn arches(&self) -> Result<Vec<Arch>, StoreError>;

    /// The payloads stored for one architecture (uploaded, whether or not a
    /// manifest names them yet), by name; never temporaries or manifests.
    fn list(&self, arch: Arch) -> Result<BTreeMap<String, FileInfo>, StoreError>;

    /// The files devices can fetch in the arch directory right now, with
    /// their sizes; never SHA256SUMS, its signature, hidden or scratch names.
    /// Where payloads are served from where they are uploaded, that is
    /// [`Store::list`].
    fn served(&self, arch: Arch) -> Result<BTreeMap<String, FileInfo>, StoreError> {
        self.list(arch)
    }

    /// Reads a small file as devices see it (manifest, signature); `None` when absent.
    /// Remote backends remember the version of SHA256SUMS they return here:
    /// the next `commit` of that arch is conditional on it still being current.
    fn get(&self, arch: Arch, name: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Uploads a payload under `name`, create-only: an existing file with the
    /// same hash is fine (resume), a different one is a Conflict. Verified
    /// after upload (size, and hash where the backend can).
    fn put_payload(&self, arch: Arch, name: &str, source: &Source) -> Result<(), StoreError>;

    /// Makes a new SHA256SUMS and its signature visible to devices, with every
    /// payload the manifest names. `names` are those payloads.
    fn commit(
        &self,
        arch: Arch,
        manifest: &[u8],
        signature: &[u8],
        names: &[&str],
    ) -> Result<(), StoreError>;

    /// Deletes a payload no manifest names any more; absent is fine.
    fn delete(&self, arch: Arch, name: &str) -> Result<(), StoreError>;

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

    /// Removes what the store itself leaves behind in one arch as scratch
    /// (upload temporaries, a parked pending signature, superseded
    /// generations), never a payload: which payloads go is the caller's
    /// decision, made with [`Store::delete`]. Called under the publisher
    /// lock, after every arch is committed.
    fn clear_scratch(&self, arch: Arch) -> Result<(), StoreError>;

    /// Hashes an uploaded payload (named by a manifest or not); `None` when
    /// absent. May answer from what the upload recorded (S3 metadata).
    fn payload_hash(
        &self,
        arch: Arch,
        name: &str,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Option<(Digest, u64)>, StoreError> {
        self.hash(arch, name, progress)
    }

    /// Hashes a file as devices see it (reading every byte); `None` when absent.
    fn hash(
        &self,
        arch: Arch,
        name: &str,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Option<(Digest, u64)>, StoreError>;

    /// Copies a payload published by another channel's store into this
    /// one, create-only, without its bytes passing through this process
    /// where both are the same kind of store in the same place (hard link
    /// on one filesystem, CopyObject in one bucket, WebDAV COPY on one
    /// server). Checked by size afterwards. `Ok(false)`: they are not, the
    /// caller streams it through [`Store::download`] and `put_payload`.
    fn copy_payload(
        &self,
        _arch: Arch,
        _name: &str,
        _from: &dyn Store,
        _sha256: Digest,
        _size: u64,
    ) -> Result<bool, StoreError> {
        Ok(false)
    }

    /// Streams a stored payload into `to`; `None` when absent.
    fn download(
        &self,
        arch: Arch,
        name: &str,
        to: &mut dyn std::io::Write,
    ) -> Result<Option<u64>, StoreError>;

    /// How many payloads `apply_release` uploads at once.
    fn parallel_uploads(&self) -> usize {
        1
    }

    /// Whether an upload can learn a payload's hash as it sends the bytes
    /// (see [`crate::payload::PayloadDigest`]); a backend that must send the
    /// hash first has staging hash it, under its own progress bar. Every
    /// backend here learns it while uploading (S3 records a hash learned by
    /// a multipart upload beside the object: see s3.rs).
    fn hashes_while_uploading(&self) -> bool {
        true
    }
}

/// Payloads uploaded at once unless `channel.parallel-uploads` says otherwise.
pub const DEFAULT_PARALLEL_UPLOADS: usize = 4;

/// Channel settings that shape how the backends talk to the hosting.
#[derive(Clone, Debug)]
pub struct Options {
    pub parallel_uploads: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            parallel_uploads: DEFAULT_PARALLEL_UPLOADS,
        }
    }
}

/// Opens the backend for a configured location with default options.
pub fn open(location: &StoreLocation) -> Box<dyn Store> {
    open_with(location, &Options::default())
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
                .map(|b| Box::new(b) as Box<dyn remote::backend::Backend>)
                .map_err(|m| (format!("s3://{bucket}/{prefix}"), m))
        }
        StoreLocation::WebDav { url, ca } => webdav::WebDav::new(url, ca.as_deref())
            .map(|b| Box::new(b) as Box<dyn remote::backend::Backend>)
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
    fn lock(&self, _: &dyn Events) -> Result<Box<dyn Lock>, StoreError> {
        self.err()
    }
    fn arches(&self) -> Result<Vec<Arch>, StoreError> {
        self.err()
    }
    fn list(&self, _: Arch) -> Result<BTreeMap<String, FileInfo>, StoreError> {
        self.err()
    }
    fn get(&self, _: Arch, _: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.err()
    }
    fn put_payload(&self, _: Arch, _: &str, _: &Source) -> Result<(), StoreError> {
        self.err()
    }
    fn commit(&self, _: Arch, _: &[u8], _: &[u8], _: &[&str]) -> Result<(), StoreError> {
        self.err()
    }
    fn delete(&self, _: Arch, _: &str) -> Result<(), StoreError> {
        self.err()
    }
    fn clear_scratch(&self, _: Arch) -> Result<(), StoreError> {
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
        _: Arch,
        _: &str,
        _: &mut dyn FnMut(u64),
    ) -> Result<Option<(Digest, u64)>, StoreError> {
        self.err()
    }
    fn download(
        &self,
        _: Arch,
        _: &str,
        _: &mut dyn std::io::Write,
    ) -> Result<Option<u64>, StoreError> {
        self.err()
    }
    fn hashes_while_uploading(&self) -> bool {
        false
    }
}
