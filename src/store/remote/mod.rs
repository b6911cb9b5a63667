//! The protocol every remote backend shares, written once over a handful of
//! transport primitives ([`Backend`], in backend.rs) that s3.rs and
//! webdav.rs implement.
//!
//! - Publisher lock (lock.rs): an object (S3) or collection (WebDAV) created
//!   only if absent, holding who took it, kept fresh by a heartbeat.
//! - Payloads: create-only, skipped when already there with the same hash,
//!   checked after upload (size, and the hash the S3 upload recorded as
//!   metadata or in its companion record).
//! - Commit, per arch: the new signature goes to [`PENDING_SIGNATURE`], then
//!   SHA256SUMS (conditional on the version read with the state), then
//!   SHA256SUMS.gpg, then the pending copy is deleted. Object stores cannot
//!   switch two objects at once; a crash between the manifest and its
//!   signature leaves a manifest that verifies with the pending signature,
//!   which `channel::read_arch` recognises and the next write finishes.
//! - Transient failures are retried with exponential backoff (retry.rs).

pub(super) mod backend;
mod lock;
mod retry;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use backend::{Backend, Cache, Cond, Failure, Head, Kind, Op};

use super::{FileInfo, Lock, Options, Store, StoreError};
use crate::arch::Arch;
use crate::fault;
use crate::hash::Digest;
use crate::manifest::{MANIFEST, PENDING_SIGNATURE, SIGNATURE};
use crate::payload::Source;

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

    /// [`retry::attempt`], with failures turned into errors naming the object.
    fn run<T>(
        &self,
        op: Op,
        key: &str,
        f: impl FnMut() -> Result<T, Failure>,
    ) -> Result<T, StoreError> {
        retry::attempt(f).map_err(|e| self.error(op, key, e))
    }

    fn head(&self, key: &str) -> Result<Option<Head>, StoreError> {
        self.run(Op::Read, key, || self.backend.head(key))
    }
}

fn key(arch: Arch, name: &str) -> String {
    format!("{}/{name}", arch.systemd())
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
    fn existing(&self, arch: Arch, name: &str, source: &Source) -> Result<(), StoreError> {
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
        let version = match retry::attempt(put) {
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

    fn lock(&self, events: &dyn crate::progress::Events) -> Result<Box<dyn Lock>, StoreError> {
        lock::acquire(self.shared.clone(), events)
    }

    fn arches(&self) -> Result<Vec<Arch>, StoreError> {
        let entries = self.shared.run(Op::List, "", || self.backend().list(""))?;
        let mut out: Vec<Arch> = entries
            .into_iter()
            .filter(|e| e.dir && Arch::is_arch_dir(&e.name))
            .filter_map(|e| Arch::parse(&e.name).ok())
            .collect();
        out.sort();
        Ok(out)
    }

    fn list(&self, arch: Arch) -> Result<BTreeMap<String, FileInfo>, StoreError> {
        let entries = self.shared.run(Op::List, arch.systemd(), || {
            self.backend().list(arch.systemd())
        })?;
        Ok(entries
            .into_iter()
            .filter(|e| {
                !e.dir && !e.name.starts_with('.') && e.name != MANIFEST && e.name != SIGNATURE
            })
            .map(|e| (e.name, FileInfo { size: e.size }))
            .collect())
    }

    fn get(&self, arch: Arch, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let k = key(arch, name);
        if name == MANIFEST {
            return self.get_versioned(&k);
        }
        Ok(self
            .shared
            .run(Op::Read, &k, || self.backend().get(&k))?
            .map(|(b, _)| b))
    }

    fn put_payload(&self, arch: Arch, name: &str, source: &Source) -> Result<(), StoreError> {
        let k = key(arch, name);
        if self.shared.head(&k)?.is_some() {
            return self.existing(arch, name, source);
        }
        match retry::attempt(|| self.backend().put_payload(&k, source)) {
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

    fn copy_payload(
        &self,
        arch: Arch,
        name: &str,
        from: &dyn Store,
        sha256: Digest,
        size: u64,
    ) -> Result<bool, StoreError> {
        let Some(other) = (from as &dyn std::any::Any).downcast_ref::<RemoteStore>() else {
            return Ok(false);
        };
        let k = key(arch, name);
        let copied = if self.shared.head(&k)?.is_some() {
            true
        } else {
            match retry::attempt(|| self.backend().copy_from(other.backend(), &k, &k)) {
                Ok(copied) => copied,
                Err(f) if f.kind == Kind::Precondition => true,
                Err(f) => return Err(self.shared.error(Op::Write, &k, f)),
            }
        };
        if !copied {
            return Ok(false);
        }
        match self.payload_hash(arch, name, &mut |_| {})? {
            Some((h, got)) if h == sha256 && got == size => {}
            Some((h, got)) if got == size => {
                return Err(StoreError::Conflict {
                    path: self.backend().url(&k).into(),
                    existing: crate::hash::to_hex(&h),
                })
            }
            found => {
                return Err(StoreError::Remote {
                    op: "verifying",
                    url: self.backend().url(&k),
                    status: None,
                    message: format!(
                        "the copy has {} bytes, the source {size}",
                        found.map_or(0, |(_, n)| n)
                    ),
                    hint: "run the command again".into(),
                })
            }
        }
        locked(&self.shared.hashes).insert(k, (sha256, size));
        Ok(true)
    }

    fn download(
        &self,
        arch: Arch,
        name: &str,
        to: &mut dyn std::io::Write,
    ) -> Result<Option<u64>, StoreError> {
        let k = key(arch, name);
        // Not retried: a partial write to `to` cannot be taken back.
        self.backend()
            .download(&k, to)
            .map_err(|f| self.shared.error(Op::Read, &k, f))
    }

    fn commit(
        &self,
        arch: Arch,
        manifest: &[u8],
        signature: &[u8],
        names: &[&str],
    ) -> Result<(), StoreError> {
        let (pending, mkey, skey) = (
            key(arch, PENDING_SIGNATURE),
            key(arch, MANIFEST),
            key(arch, SIGNATURE),
        );
        lock::check_held(&self.shared, &mkey)?;
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
        lock::check_held(&self.shared, name)?;
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

    fn delete(&self, arch: Arch, name: &str) -> Result<(), StoreError> {
        let k = key(arch, name);
        self.shared
            .run(Op::Delete, &k, || self.backend().delete(&k))?;
        locked(&self.shared.hashes).remove(&k);
        Ok(())
    }

    /// The parked pending signature and the backend's upload temporaries;
    /// under the publisher lock nobody else is mid-commit or mid-upload.
    fn clear_scratch(&self, arch: Arch) -> Result<(), StoreError> {
        let pending = key(arch, PENDING_SIGNATURE);
        self.shared
            .run(Op::Delete, &pending, || self.backend().delete(&pending))?;
        self.shared.run(Op::Delete, arch.systemd(), || {
            self.backend().clear_scratch(arch.systemd())
        })
    }

    fn payload_hash(
        &self,
        arch: Arch,
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
            None => self.hash(arch, name, progress)?,
        };
        if let Some(g) = got {
            locked(&self.shared.hashes).insert(k, g);
        }
        Ok(got)
    }

    fn hash(
        &self,
        arch: Arch,
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
