//! Where a channel lives. One trait, one file per backend.
//!
//! The commit protocol (channel.rs) only needs these operations; each backend
//! makes them as atomic as it can: payloads are create-only, a manifest and
//! its signature become visible together where the backend allows it, and
//! nothing half-written is ever visible under a published name.

pub mod dir;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::config::StoreLocation;
use crate::hash::Digest;

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

pub trait Store {
    /// Human description (path or URL), for messages.
    fn describe(&self) -> String;

    /// Takes the publisher lock where the backend has one, waiting for it.
    fn lock(&self) -> Result<Box<dyn Lock>, StoreError>;

    /// Architecture directories present in the channel.
    fn arches(&self) -> Result<Vec<String>, StoreError>;

    /// The payloads stored for one architecture (uploaded, whether or not a
    /// manifest names them yet), by name; never temporaries or manifests.
    fn list(&self, arch: &str) -> Result<BTreeMap<String, FileInfo>, StoreError>;

    /// Reads a small file as devices see it (manifest, signature); `None` when absent.
    fn get(&self, arch: &str, name: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Streams a payload in under `name`, create-only: an existing file with
    /// the same hash is fine (resume), a different one is a Conflict.
    /// `write` copies the bytes and must fail if they do not hash to `sha256`.
    fn put_payload(
        &self,
        arch: &str,
        name: &str,
        sha256: &Digest,
        write: &mut dyn FnMut(&mut dyn std::io::Write) -> std::io::Result<u64>,
    ) -> Result<(), StoreError>;

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

    /// Removes what earlier commits or interrupted runs left behind, keeping
    /// the payloads in `keep`; called only after every arch is committed.
    fn cleanup(&self, _arch: &str, _keep: &BTreeSet<&str>) -> Result<(), StoreError> {
        Ok(())
    }

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

    /// Hashes an uploaded payload (named by a manifest or not); `None` when absent.
    fn payload_hash(
        &self,
        arch: &str,
        name: &str,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Option<(Digest, u64)>, StoreError> {
        self.hash(arch, name, progress)
    }

    /// Hashes a file as devices see it; `None` when absent.
    fn hash(
        &self,
        arch: &str,
        name: &str,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Option<(Digest, u64)>, StoreError>;
}

/// Opens the backend for a configured location.
pub fn open(location: &StoreLocation) -> Box<dyn Store> {
    match location {
        StoreLocation::Dir(path) => Box::new(dir::DirStore::new(path.clone())),
    }
}
