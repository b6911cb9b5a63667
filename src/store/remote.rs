//! The protocol every remote backend shares, written once over a handful of
//! transport primitives ([`Backend`]) that s3.rs and webdav.rs implement.
//!
//! - Publisher lock: an object (S3) or collection (WebDAV) created only if
//!   absent, holding who took it; a heartbeat rewrites it while held. A
//!   waiter breaks it when its holder is a dead process on this machine, or
//!   when it has not changed for [`LEASE`] (a publisher that died elsewhere).
//! - Payloads: create-only, skipped when already there with the same hash,
//!   checked after upload (size, and the hash the S3 upload recorded).
//! - Commit, per arch: the new signature goes to [`PENDING_SIGNATURE`], then
//!   SHA256SUMS (conditional on the version read with the state), then
//!   SHA256SUMS.gpg, then the pending copy is deleted. Object stores cannot
//!   switch two objects at once; a crash between the manifest and its
//!   signature leaves a manifest that verifies with the pending signature,
//!   which `channel::read_arch` recognises and the next write finishes.
//! - Transient failures (5xx, 429, timeouts, refused or reset connections)
//!   are retried with exponential backoff, a bounded number of times.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{FileInfo, Lock, Options, Store, StoreError};
use crate::fault;
use crate::hash::Digest;
use crate::manifest::{MANIFEST, PENDING_SIGNATURE, SIGNATURE};
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
    fn verb(self) -> &'static str {
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
pub(crate) trait Backend: Send + Sync + 'static {
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
    /// Deletes an object; absent is fine.
    fn delete(&self, key: &str) -> Result<(), Failure>;
    /// Removes what interrupted uploads and commits may have left in an arch
    /// directory besides payloads (only called under the publisher lock).
    fn clear_scratch(&self, _dir: &str) -> Result<(), Failure> {
        Ok(())
    }
    /// Advice for a Denied or Unsupported failure of `op`.
    fn hint(&self, op: Op, failure: &Failure) -> String;
    /// The payload's hash goes out before its bytes (S3 metadata).
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
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// At most `max` characters of a server's message, for one-line errors.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    let s = s.trim();
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

const LOCK_KEY: &str = ".sysupdate-publish.lock";
/// How often the holder rewrites the lock.
const HEARTBEAT: Duration = Duration::from_secs(10);
/// A lock unchanged for this long belongs to a publisher that died.
const LEASE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_secs(1);

/// Attempts and backoff for transient failures: 0.5 + 1 + 2 + 4 s of
/// waiting before giving up, enough for a restarting server or a flaky link.
const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// The version of a conditionally written object (an arch's SHA256SUMS, the
/// ledger) as this process last read it.
#[derive(Clone, Debug)]
enum Seen {
    Absent,
    Version(String),
    /// Present, but the server gave no ETag.
    Unversioned,
}

struct Shared {
    backend: Box<dyn Backend>,
    parallel: usize,
    /// By key.
    seen: Mutex<HashMap<String, Seen>>,
    /// Payload hashes known from uploads and lookups in this run.
    hashes: Mutex<HashMap<String, (Digest, u64)>>,
    /// Our lock token while we hold the publisher lock.
    lock_token: Mutex<Option<String>>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Runs a request, retrying transient failures with backoff.
    fn attempt<T>(&self, mut f: impl FnMut() -> Result<T, Failure>) -> Result<T, Failure> {
        let mut delay = FIRST_BACKOFF;
        for attempt in 1.. {
            match f() {
                Err(e) if e.kind == Kind::Transient && attempt < ATTEMPTS => {
                    std::thread::sleep(delay);
                    delay *= 2;
                }
                Err(mut e) if e.kind == Kind::Transient => {
                    e.message = format!("{} (gave up after {attempt} attempts)", e.message);
                    return Err(e);
                }
                r => return r,
            }
        }
        unreachable!("the loop returns")
    }

    fn error(&self, op: Op, key: &str, f: Failure) -> StoreError {
        let hint = match f.kind {
            Kind::Denied | Kind::Unsupported => self.backend.hint(op, &f),
            Kind::Transient => "the hosting is unreachable or failing; run the command again once it is back: it resumes where it stopped".into(),
            _ => String::new(),
        };
        StoreError::Remote {
            op: op.verb(),
            url: self.backend.url(key),
            status: f.status,
            message: f.message,
            hint,
        }
    }

    /// `attempt`, with failures turned into errors naming the object.
    fn run<T>(
        &self,
        op: Op,
        key: &str,
        f: impl FnMut() -> Result<T, Failure>,
    ) -> Result<T, StoreError> {
        self.attempt(f).map_err(|e| self.error(op, key, e))
    }

    fn head(&self, key: &str) -> Result<Option<Head>, StoreError> {
        self.run(Op::Read, key, || self.backend.head(key))
    }
}

fn key(arch: &str, name: &str) -> String {
    format!("{arch}/{name}")
}

pub(crate) struct RemoteStore {
    shared: Arc<Shared>,
}

impl RemoteStore {
    pub fn new(backend: Box<dyn Backend>, options: &Options) -> RemoteStore {
        RemoteStore {
            shared: Arc::new(Shared {
                backend,
                parallel: options.parallel_uploads.max(1),
                seen: Mutex::new(HashMap::new()),
                hashes: Mutex::new(HashMap::new()),
                lock_token: Mutex::new(None),
            }),
        }
    }

    fn backend(&self) -> &dyn Backend {
        self.shared.backend.as_ref()
    }

    /// A payload already at `key`: fine when it has the same bytes.
    fn existing(&self, arch: &str, name: &str, source: &Source) -> Result<(), StoreError> {
        let theirs = self.payload_hash(arch, name, &mut |_| {})?;
        match theirs {
            Some((h, size)) if h == super::stored_digest(source)? && size == source.size => Ok(()),
            Some((h, _)) => Err(StoreError::Conflict {
                path: self.backend().url(&key(arch, name)).into(),
                existing: crate::hash::to_hex(&h),
            }),
            None => Err(StoreError::Remote {
                op: "uploading",
                url: self.backend().url(&key(arch, name)),
                status: None,
                message: "the server refused to create it as it exists, but it is not there".into(),
                hint: "run the command again".into(),
            }),
        }
    }

    /// Refuses to commit when the publisher lock we took is no longer ours
    /// (broken as stale by another publisher while we were stalled).
    fn check_lock(&self, target: &str) -> Result<(), StoreError> {
        let Some(token) = locked(&self.shared.lock_token).clone() else {
            return Ok(());
        };
        let current = self
            .shared
            .run(Op::Lock, LOCK_KEY, || self.backend().lock_read(LOCK_KEY))?;
        let owner = current.and_then(|b| serde_json::from_slice::<Owner>(&b).ok());
        if owner.is_some_and(|o| o.token == token) {
            return Ok(());
        }
        Err(StoreError::Remote {
            op: "committing",
            url: self.backend().url(target),
            status: None,
            message: "the publisher lock is no longer ours (another publisher broke it as stale)"
                .into(),
            hint: "nothing was written there; run the command again".into(),
        })
    }

    /// Reads an object whose next write is conditional on this version.
    fn get_versioned(&self, k: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let got = self.shared.run(Op::Read, k, || self.backend().get(k))?;
        let seen = match &got {
            None => Seen::Absent,
            Some((_, Some(e))) => Seen::Version(e.clone()),
            Some((_, None)) => Seen::Unversioned,
        };
        locked(&self.shared.seen).insert(k.to_string(), seen);
        Ok(got.map(|(b, _)| b))
    }

    /// The condition for replacing `k`: the version read with the state, or
    /// when this process never read it, the current one.
    fn condition(&self, k: &str) -> Result<Cond, StoreError> {
        let seen = locked(&self.shared.seen).get(k).cloned();
        let seen = match seen {
            Some(s) => s,
            None => match self.shared.head(k)? {
                None => Seen::Absent,
                Some(Head { etag: Some(e), .. }) => Seen::Version(e),
                Some(_) => Seen::Unversioned,
            },
        };
        Ok(match seen {
            Seen::Absent => Cond::Absent,
            Seen::Version(e) => Cond::Match(e),
            Seen::Unversioned => Cond::Any,
        })
    }

    /// Writes `k` only if it is still the version `cond` names; a lost race
    /// is [`StoreError::Changed`], nothing written.
    fn put_conditional(&self, k: &str, bytes: &[u8], cond: &Cond) -> Result<(), StoreError> {
        let put = || self.backend().put_bytes(k, bytes, cond, Cache::Revalidate);
        let version = match self.shared.attempt(put) {
            Ok(v) => v,
            Err(f) if f.kind == Kind::Precondition => {
                // A retried write may have landed the first time: then it is ours.
                match self.shared.run(Op::Read, k, || self.backend().get(k))? {
                    Some((b, v)) if b == bytes => v,
                    _ => {
                        return Err(StoreError::Changed {
                            url: self.backend().url(k),
                        })
                    }
                }
            }
            Err(f) => return Err(self.shared.error(Op::Write, k, f)),
        };
        let seen = version.map_or(Seen::Unversioned, Seen::Version);
        locked(&self.shared.seen).insert(k.to_string(), seen);
        Ok(())
    }
}

impl Store for RemoteStore {
    fn describe(&self) -> String {
        self.backend().describe()
    }

    fn lock(&self) -> Result<Box<dyn Lock>, StoreError> {
        acquire(self.shared.clone())
    }

    fn arches(&self) -> Result<Vec<String>, StoreError> {
        let entries = self.shared.run(Op::List, "", || self.backend().list(""))?;
        let mut out: Vec<String> = entries
            .into_iter()
            .filter(|e| e.dir && !e.name.starts_with('.'))
            .map(|e| e.name)
            .collect();
        out.sort();
        Ok(out)
    }

    fn list(&self, arch: &str) -> Result<BTreeMap<String, FileInfo>, StoreError> {
        let entries = self
            .shared
            .run(Op::List, arch, || self.backend().list(arch))?;
        Ok(entries
            .into_iter()
            .filter(|e| {
                !e.dir && !e.name.starts_with('.') && e.name != MANIFEST && e.name != SIGNATURE
            })
            .map(|e| (e.name, FileInfo { size: e.size }))
            .collect())
    }

    fn get(&self, arch: &str, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let k = key(arch, name);
        if name == MANIFEST {
            return self.get_versioned(&k);
        }
        Ok(self
            .shared
            .run(Op::Read, &k, || self.backend().get(&k))?
            .map(|(b, _)| b))
    }

    fn put_payload(&self, arch: &str, name: &str, source: &Source) -> Result<(), StoreError> {
        let k = key(arch, name);
        if self.shared.head(&k)?.is_some() {
            return self.existing(arch, name, source);
        }
        match self
            .shared
            .attempt(|| self.backend().put_payload(&k, source))
        {
            Ok(()) => {}
            Err(f) if f.kind == Kind::Precondition => return self.existing(arch, name, source),
            Err(f) => return Err(self.shared.error(Op::Write, &k, f)),
        }
        // Verify what the server now serves under the name. The upload
        // learned the hash if staging left it for the upload.
        let sha256 = super::stored_digest(source)?;
        let problem = match self.shared.head(&k)? {
            None => Some("it is not there after the upload".to_string()),
            Some(h) if h.size != source.size => Some(format!(
                "the server reports {} bytes after uploading {}",
                h.size, source.size
            )),
            Some(Head {
                sha256: Some(d), ..
            }) if d != sha256 => Some("the server recorded a different sha256".into()),
            Some(_) => None,
        };
        if let Some(message) = problem {
            return Err(StoreError::Remote {
                op: "verifying",
                url: self.backend().url(&k),
                status: None,
                message,
                hint: "the upload was corrupted on the way; run the command again".into(),
            });
        }
        locked(&self.shared.hashes).insert(k, (sha256, source.size));
        Ok(())
    }

    fn commit(
        &self,
        arch: &str,
        manifest: &[u8],
        signature: &[u8],
        names: &[&str],
    ) -> Result<(), StoreError> {
        let (pending, mkey, skey) = (
            key(arch, PENDING_SIGNATURE),
            key(arch, MANIFEST),
            key(arch, SIGNATURE),
        );
        self.check_lock(&mkey)?;
        let present = self.list(arch)?;
        if let Some(missing) = names.iter().find(|n| !present.contains_key(**n)) {
            return Err(StoreError::Remote {
                op: "committing",
                url: self.backend().url(&key(arch, MANIFEST)),
                status: None,
                message: format!(
                    "{missing} is not on the hosting; refusing to publish a manifest that names it"
                ),
                hint: "run the command again: it uploads what is missing".into(),
            });
        }
        let cond = self.condition(&mkey)?;
        let overwrite = |k: &str, bytes: &[u8]| {
            self.shared.run(Op::Write, k, || {
                self.backend()
                    .put_bytes(k, bytes, &Cond::Any, Cache::Revalidate)
            })
        };
        overwrite(&pending, signature)?;
        fault::point("pending signature written");
        self.put_conditional(&mkey, manifest, &cond)?;
        fault::point("manifest written");
        overwrite(&skey, signature)?;
        fault::point("signature written");
        self.shared
            .run(Op::Delete, &pending, || self.backend().delete(&pending))
    }

    fn get_channel_file(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.get_versioned(name)
    }

    /// Conditional on the version read by `get_channel_file`; without one,
    /// on the current object still being `previous`.
    fn put_channel_file(
        &self,
        name: &str,
        bytes: &[u8],
        previous: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        self.check_lock(name)?;
        let known = locked(&self.shared.seen).contains_key(name);
        let cond = match previous {
            None => Cond::Absent,
            Some(_) if known => self.condition(name)?,
            Some(prev) => match self
                .shared
                .run(Op::Read, name, || self.backend().get(name))?
            {
                Some((current, tag)) if current == prev => tag.map_or(Cond::Any, Cond::Match),
                _ => {
                    return Err(StoreError::Changed {
                        url: self.backend().url(name),
                    })
                }
            },
        };
        self.put_conditional(name, bytes, &cond)
    }

    fn delete(&self, arch: &str, name: &str) -> Result<(), StoreError> {
        let k = key(arch, name);
        self.shared
            .run(Op::Delete, &k, || self.backend().delete(&k))?;
        locked(&self.shared.hashes).remove(&k);
        Ok(())
    }

    /// Under the publisher lock nobody else is mid-upload, so every payload
    /// the manifest does not name, upload temporaries and a pending
    /// signature are leftovers.
    fn cleanup(&self, arch: &str, keep: &BTreeSet<&str>) -> Result<(), StoreError> {
        let entries = self
            .shared
            .run(Op::List, arch, || self.backend().list(arch))?;
        for e in entries.iter().filter(|e| !e.dir) {
            let unnamed = !e.name.starts_with('.')
                && e.name != MANIFEST
                && e.name != SIGNATURE
                && !keep.contains(e.name.as_str());
            if unnamed {
                self.delete(arch, &e.name)?;
                fault::point("leftover deleted");
            }
        }
        let pending = key(arch, PENDING_SIGNATURE);
        self.shared
            .run(Op::Delete, &pending, || self.backend().delete(&pending))?;
        self.shared
            .run(Op::Delete, arch, || self.backend().clear_scratch(arch))
    }

    fn payload_hash(
        &self,
        arch: &str,
        name: &str,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Option<(Digest, u64)>, StoreError> {
        let k = key(arch, name);
        if let Some(known) = locked(&self.shared.hashes).get(&k) {
            return Ok(Some(*known));
        }
        let Some(head) = self.shared.head(&k)? else {
            return Ok(None);
        };
        let got = match head.sha256 {
            Some(d) => Some((d, head.size)),
            None => self
                .shared
                .run(Op::Read, &k, || self.backend().hash(&k, &mut *progress))?,
        };
        if let Some(g) = got {
            locked(&self.shared.hashes).insert(k, g);
        }
        Ok(got)
    }

    fn hash(
        &self,
        arch: &str,
        name: &str,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Option<(Digest, u64)>, StoreError> {
        let k = key(arch, name);
        self.shared
            .run(Op::Read, &k, || self.backend().hash(&k, &mut *progress))
    }

    fn parallel_uploads(&self) -> usize {
        self.shared.parallel
    }

    fn hashes_while_uploading(&self) -> bool {
        !self.backend().hash_before_upload()
    }
}

/// Who holds the publisher lock; rewritten (`beat`) while held.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Owner {
    token: String,
    host: String,
    boot_id: String,
    pid: u32,
    /// Start time of the process (clock ticks since boot), against pid reuse.
    pid_start: u64,
    since: String,
    beat: u64,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Field 22 of /proc/PID/stat; `None` when no such process runs.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

impl Owner {
    fn me() -> Owner {
        let pid = std::process::id();
        Owner {
            token: format!(
                "{:016x}{:016x}",
                rand::random::<u64>(),
                rand::random::<u64>()
            ),
            host: hostname(),
            boot_id: boot_id(),
            pid,
            pid_start: process_start(pid).unwrap_or(0),
            since: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            beat: 0,
        }
    }

    /// Certain death: the holder ran on this machine since its last boot and
    /// that process is gone.
    fn is_dead_here(&self) -> bool {
        !self.host.is_empty()
            && !self.boot_id.is_empty()
            && self.host == hostname()
            && self.boot_id == boot_id()
            && process_start(self.pid) != Some(self.pid_start)
    }

    fn describe(&self) -> String {
        format!("{} pid {} since {}", self.host, self.pid, self.since)
    }
}

/// The held lock: a heartbeat thread keeps it fresh; dropping it stops the
/// heartbeat and removes the lock if it is still ours.
struct Held {
    shared: Arc<Shared>,
    token: String,
    stop: Option<mpsc::Sender<()>>,
    heartbeat: Option<std::thread::JoinHandle<()>>,
}

impl Lock for Held {}

impl Drop for Held {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.heartbeat.take() {
            let _ = h.join();
        }
        *locked(&self.shared.lock_token) = None;
        let backend = self.shared.backend.as_ref();
        let ours = backend
            .lock_read(LOCK_KEY)
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice::<Owner>(&b).ok())
            .is_some_and(|o| o.token == self.token);
        if ours {
            let _ = self.shared.attempt(|| backend.lock_remove(LOCK_KEY));
        }
    }
}

fn acquire(shared: Arc<Shared>) -> Result<Box<dyn Lock>, StoreError> {
    let me = Owner::me();
    let url = shared.backend.url(LOCK_KEY);
    let mut unchanged: Option<(Vec<u8>, Instant)> = None;
    let mut told = false;
    loop {
        let bytes = serde_json::to_vec(&me).expect("plain struct");
        if shared.run(Op::Lock, LOCK_KEY, || {
            shared.backend.lock_create(LOCK_KEY, &bytes)
        })? {
            break;
        }
        let Some(current) =
            shared.run(Op::Lock, LOCK_KEY, || shared.backend.lock_read(LOCK_KEY))?
        else {
            // Released between our attempt and the read: try again.
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let owner = serde_json::from_slice::<Owner>(&current).ok();
        let who = owner
            .as_ref()
            .map_or_else(|| "an unknown publisher".to_string(), Owner::describe);
        let stale = owner.as_ref().is_some_and(Owner::is_dead_here)
            || match &unchanged {
                Some((seen, since)) if *seen == current => since.elapsed() >= LEASE,
                _ => {
                    unchanged = Some((current, Instant::now()));
                    false
                }
            };
        if stale {
            eprintln!("warning: {url}: breaking the stale publisher lock of {who}");
            shared.run(Op::Lock, LOCK_KEY, || shared.backend.lock_remove(LOCK_KEY))?;
            unchanged = None;
            continue;
        }
        if !told {
            eprintln!("{url}: waiting for the publisher lock held by {who}");
            told = true;
        }
        std::thread::sleep(POLL);
    }
    *locked(&shared.lock_token) = Some(me.token.clone());
    let (stop, stopped) = mpsc::channel::<()>();
    let beat_shared = shared.clone();
    let heartbeat = std::thread::Builder::new()
        .name("lock-heartbeat".into())
        .spawn(move || {
            let mut me = me;
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(HEARTBEAT) {
                let backend = beat_shared.backend.as_ref();
                let still_ours = backend
                    .lock_read(LOCK_KEY)
                    .ok()
                    .flatten()
                    .and_then(|b| serde_json::from_slice::<Owner>(&b).ok())
                    .is_some_and(|o| o.token == me.token);
                if !still_ours {
                    // Commits notice through check_lock and refuse.
                    return;
                }
                me.beat += 1;
                let _ =
                    backend.lock_write(LOCK_KEY, &serde_json::to_vec(&me).expect("plain struct"));
            }
        })
        .map_err(|e| StoreError::Remote {
            op: "locking",
            url: url.clone(),
            status: None,
            message: format!("cannot start the lock heartbeat: {e}"),
            hint: String::new(),
        })?;
    let token = locked(&shared.lock_token).clone().unwrap_or_default();
    Ok(Box::new(Held {
        shared,
        token,
        stop: Some(stop),
        heartbeat: Some(heartbeat),
    }))
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
    fn a_dead_process_on_this_machine_holds_no_lock() {
        let me = Owner::me();
        assert!(!me.is_dead_here(), "we are alive");
        let gone = Owner {
            pid_start: me.pid_start + 1,
            ..me.clone()
        };
        assert!(gone.is_dead_here(), "pid reused by another process");
        let elsewhere = Owner {
            host: "another-host".into(),
            pid_start: 0,
            ..me
        };
        assert!(!elsewhere.is_dead_here(), "other machines use the lease");
    }
}
