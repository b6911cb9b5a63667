//! A channel in a local directory (what nginx or a CDN origin serves).
//!
//! Each arch directory is a symlink to an immutable generation directory
//! holding SHA256SUMS, SHA256SUMS.gpg and hard links to the payloads:
//!
//! ```text
//! x86-64 -> .generations/x86-64/7        what devices fetch
//! .generations/x86-64/7/{SHA256SUMS,SHA256SUMS.gpg,appliance_18.efi.xz,…}
//! .payloads/x86-64/appliance_18.efi.xz   every uploaded payload, create-only
//! ```
//!
//! A commit builds the next generation beside the current one and renames a
//! new symlink over the old: the manifest, its signature and the payloads
//! change in one atomic step, so a crash at any instant leaves the old or the
//! new consistent state on disk, never a manifest with a stale signature.
//! Every file is written to a temporary, fsynced, then renamed. A flock on
//! `.sysupdate-publish.lock` serialises concurrent publishers.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{FileInfo, Lock, Store, StoreError};
use crate::arch::Arch;
use crate::hash::{self, Digest};
use crate::manifest::{MANIFEST, SIGNATURE};
use crate::payload::Source;

pub struct DirStore {
    root: PathBuf,
    parallel_uploads: usize,
}

const TEMP_PREFIX: &str = ".tmp-";
const LOCK_FILE: &str = ".sysupdate-publish.lock";
const GENERATIONS: &str = ".generations";
const PAYLOADS: &str = ".payloads";

/// Holds the flock until dropped (closing the descriptor releases it).
struct FlockGuard {
    _file: File,
}
impl Lock for FlockGuard {}

fn not_found(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl DirStore {
    pub fn new(root: PathBuf, parallel_uploads: usize) -> DirStore {
        DirStore {
            root,
            parallel_uploads,
        }
    }

    fn pool(&self, arch: Arch) -> PathBuf {
        self.root.join(PAYLOADS).join(arch.systemd())
    }

    fn generations(&self, arch: Arch) -> PathBuf {
        self.root.join(GENERATIONS).join(arch.systemd())
    }

    fn temp_name(name: &str) -> String {
        format!("{TEMP_PREFIX}{}-{name}", std::process::id())
    }

    /// The current generation number, from the arch symlink.
    fn current(&self, arch: Arch) -> Result<Option<u64>, StoreError> {
        let link = self.root.join(arch.systemd());
        match fs::symlink_metadata(&link) {
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => return Err(StoreError::io("reading", &link)(e)),
            Ok(m) if !m.file_type().is_symlink() => {
                return Err(StoreError::Layout {
                    path: link,
                    message: "is not a symlink to a generation; sysupdate-publish switches arch directories atomically by symlink. Move it away and release again".into(),
                })
            }
            Ok(_) => {}
        }
        let target = fs::read_link(&link).map_err(StoreError::io("reading", &link))?;
        let n = target
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| StoreError::Layout {
                path: link.clone(),
                message: format!("points to {}, not a generation", target.display()),
            })?;
        Ok(Some(n))
    }
}

/// Writes `dir/name` via temp + fsync + rename + directory fsync.
fn write_atomic(
    dir: &Path,
    name: &str,
    write: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<u64>,
) -> Result<(), StoreError> {
    fs::create_dir_all(dir).map_err(StoreError::io("creating", dir))?;
    let tmp = dir.join(DirStore::temp_name(name));
    let result = (|| {
        let f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        write(&mut w)?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        fs::rename(&tmp, dir.join(name))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(StoreError::io("writing", &dir.join(name)))
}

fn hash_path(
    path: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<Option<(Digest, u64)>, StoreError> {
    match hash::hash_file_with_progress(path, progress) {
        Ok(r) => Ok(Some(r)),
        Err(e) if not_found(&e) => Ok(None),
        Err(e) => Err(StoreError::io("reading", path)(e)),
    }
}

fn read_dir_names(dir: &Path) -> Result<Vec<(String, fs::Metadata)>, StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if not_found(&e) => return Ok(vec![]),
        Err(e) => return Err(StoreError::io("listing", dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(StoreError::io("listing", dir))?;
        // Follow links: arch directories are symlinks to generations.
        let meta = match fs::metadata(entry.path()) {
            Ok(m) => m,
            Err(e) if not_found(&e) => continue,
            Err(e) => return Err(StoreError::io("reading", &entry.path())(e)),
        };
        out.push((entry.file_name().to_string_lossy().into_owned(), meta));
    }
    Ok(out)
}

impl Store for DirStore {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn lock(&self) -> Result<Box<dyn Lock>, StoreError> {
        fs::create_dir_all(&self.root).map_err(StoreError::io("creating", &self.root))?;
        let path = self.root.join(LOCK_FILE);
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(StoreError::io("opening", &path))?;
        // SAFETY: flock on a descriptor we own; blocks until the other publisher is done.
        let rc = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), libc::LOCK_EX) };
        if rc != 0 {
            return Err(StoreError::io("locking", &path)(
                std::io::Error::last_os_error(),
            ));
        }
        Ok(Box::new(FlockGuard { _file: f }))
    }

    fn arches(&self) -> Result<Vec<Arch>, StoreError> {
        let mut out: Vec<Arch> = read_dir_names(&self.root)?
            .into_iter()
            .filter(|(name, meta)| Arch::is_arch_dir(name) && meta.is_dir())
            .filter_map(|(name, _)| Arch::parse(&name).ok())
            .collect();
        out.sort();
        Ok(out)
    }

    fn list(&self, arch: Arch) -> Result<BTreeMap<String, FileInfo>, StoreError> {
        Ok(read_dir_names(&self.pool(arch))?
            .into_iter()
            .filter(|(name, meta)| !name.starts_with(TEMP_PREFIX) && meta.is_file())
            .map(|(name, meta)| (name, FileInfo { size: meta.len() }))
            .collect())
    }

    fn get(&self, arch: Arch, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.root.join(arch.systemd()).join(name);
        match fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(StoreError::io("reading", &path)(e)),
        }
    }

    fn put_payload(&self, arch: Arch, name: &str, source: &Source) -> Result<(), StoreError> {
        let pool = self.pool(arch);
        let path = pool.join(name);
        match hash_path(&path, &mut |_| {})? {
            Some((existing, _)) if existing == super::stored_digest(source)? => Ok(()),
            Some((existing, _)) => Err(StoreError::Conflict {
                path,
                existing: hash::to_hex(&existing),
            }),
            None => write_atomic(&pool, name, &mut |w| std::io::copy(&mut source.open()?, w)),
        }
    }

    fn commit(
        &self,
        arch: Arch,
        manifest: &[u8],
        signature: &[u8],
        names: &[&str],
    ) -> Result<(), StoreError> {
        let next = self.current(arch)?.map_or(1, |n| n + 1);
        let gens = self.generations(arch);
        let dir = gens.join(next.to_string());
        let tmp = gens.join(Self::temp_name(&next.to_string()));
        let _ = fs::remove_dir_all(&tmp);
        if dir.exists() {
            // Left by a crash after building it but before switching to it.
            fs::remove_dir_all(&dir).map_err(StoreError::io("removing", &dir))?;
        }
        fs::create_dir_all(&tmp).map_err(StoreError::io("creating", &tmp))?;
        let pool = self.pool(arch);
        for name in names {
            let src = pool.join(name);
            let dst = tmp.join(name);
            if fs::hard_link(&src, &dst).is_err() {
                // Filesystems without hard links: copy (and fsync) instead.
                fs::copy(&src, &dst)
                    .and_then(|_| File::open(&dst)?.sync_all())
                    .map_err(StoreError::io("linking payload", &src))?;
            }
        }
        for (name, bytes) in [(MANIFEST, manifest), (SIGNATURE, signature)] {
            write_atomic(&tmp, name, &mut |w| {
                w.write_all(bytes)?;
                Ok(bytes.len() as u64)
            })?;
        }
        fs::rename(&tmp, &dir).map_err(StoreError::io("renaming", &dir))?;
        sync_dir(&gens).map_err(StoreError::io("syncing", &gens))?;
        crate::fault::point("generation built");
        // The switch: one rename of a symlink makes the new state visible.
        let link_tmp = self.root.join(Self::temp_name(arch.systemd()));
        let _ = fs::remove_file(&link_tmp);
        let target = Path::new(GENERATIONS)
            .join(arch.systemd())
            .join(next.to_string());
        std::os::unix::fs::symlink(&target, &link_tmp)
            .and_then(|_| fs::rename(&link_tmp, self.root.join(arch.systemd())))
            .and_then(|_| sync_dir(&self.root))
            .map_err(StoreError::io("switching", &self.root.join(arch.systemd())))
    }

    fn get_channel_file(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.root.join(name);
        match fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(StoreError::io("reading", &path)(e)),
        }
    }

    /// The flock already excludes other writers, so `previous` is not needed.
    fn put_channel_file(
        &self,
        name: &str,
        bytes: &[u8],
        _previous: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        write_atomic(&self.root, name, &mut |w| {
            w.write_all(bytes)?;
            Ok(bytes.len() as u64)
        })
    }

    fn delete(&self, arch: Arch, name: &str) -> Result<(), StoreError> {
        let path = self.pool(arch).join(name);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(StoreError::io("deleting", &path)(e)),
        }
    }

    /// Generations other than the current one and upload temporaries; the
    /// flock guarantees no other publisher is building or uploading them.
    fn clear_scratch(&self, arch: Arch) -> Result<(), StoreError> {
        let current = self.current(arch)?.map(|n| n.to_string());
        let gens = self.generations(arch);
        for (name, meta) in read_dir_names(&gens)? {
            if Some(&name) != current.as_ref() && meta.is_dir() {
                let path = gens.join(&name);
                fs::remove_dir_all(&path).map_err(StoreError::io("removing", &path))?;
            }
        }
        let pool = self.pool(arch);
        for (name, meta) in read_dir_names(&pool)? {
            if name.starts_with(TEMP_PREFIX) && meta.is_file() {
                let path = pool.join(&name);
                fs::remove_file(&path).map_err(StoreError::io("removing", &path))?;
            }
        }
        Ok(())
    }

    fn payload_hash(
        &self,
        arch: Arch,
        name: &str,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Option<(Digest, u64)>, StoreError> {
        hash_path(&self.pool(arch).join(name), progress)
    }

    fn hash(
        &self,
        arch: Arch,
        name: &str,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Option<(Digest, u64)>, StoreError> {
        hash_path(&self.root.join(arch.systemd()).join(name), progress)
    }

    fn parallel_uploads(&self) -> usize {
        self.parallel_uploads
    }
}
