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
//! Every file is written to a temporary, then renamed. Manifests, signatures
//! and channel files are fsynced before their rename. Payloads are fsynced
//! in one pass when a commit names them, before the generation that serves
//! them is built: writing a release's payloads does not wait on the disk once
//! per file, and nothing devices can fetch is left unsynced. (After a power
//! loss, not a crash, a payload uploaded but not yet committed may be
//! truncated in the pool; the next release finds it with other bytes and
//! says so.) A flock on `.sysupdate-publish.lock` serialises concurrent
//! publishers.
//!
//! A payload reaches the pool as cheaply as the filesystem allows: a hard
//! link for an immutable `/nix/store` file on the same filesystem, else a
//! reflink (`FICLONE`: btrfs, XFS, …), else, when its hash is known, an
//! in-kernel copy (`copy_file_range`), else one read that hashes and writes
//! (a hash still to learn needs the bytes read anyway). Its hash is the
//! staged one (checked by the source's stamp) or learned from that read;
//! either way the bytes the manifest lists are the ones stored.
//!
//! The arch links are the only symlinks this store follows, and only when
//! they point exactly at `.generations/<arch>/<n>`. `.payloads`,
//! `.generations`, their arch directories and the generations must be real
//! directories, and the files in them real files: anything else is a
//! [`StoreError::Layout`] before a byte is read, written or deleted through
//! it, so a link planted in the hosting never makes the publisher touch
//! files outside the store.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use super::{stored_digest, FileInfo, Lock, Store, StoreError};
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

/// What an entry inside the store must be.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    Dir,
    File,
}

fn layout(path: &Path, what: &str) -> StoreError {
    StoreError::Layout {
        path: path.to_path_buf(),
        message: format!(
            "{what}; sysupdate-publish never follows links inside a store and keeps only its own files there. Move it away"
        ),
    }
}

/// The entry at `path` when it is a real directory or regular file as
/// wanted, `None` when absent. Never follows a symlink: one is a Layout
/// error, as is an entry of the other kind.
fn real(path: &Path, want: Want) -> Result<Option<fs::Metadata>, StoreError> {
    let m = match fs::symlink_metadata(path) {
        Err(e) if not_found(&e) => return Ok(None),
        Err(e) => return Err(StoreError::io("reading", path)(e)),
        Ok(m) => m,
    };
    let problem = match want {
        _ if m.file_type().is_symlink() => "is a symlink",
        Want::Dir if !m.is_dir() => "is not a directory",
        Want::File if !m.is_file() => "is not a regular file",
        _ => return Ok(Some(m)),
    };
    Err(layout(path, problem))
}

/// A generation directory's name: a plain decimal number.
fn generation_number(name: &str) -> Option<u64> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok()
}

/// The generation an arch link names, when it is exactly
/// `.generations/<arch>/<n>` (relative, no `..`, no other arch).
fn link_generation(target: &Path, arch: Arch) -> Option<u64> {
    let mut parts = target.components().map(|c| match c {
        Component::Normal(s) => s.to_str(),
        _ => None,
    });
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(Some(GENERATIONS)), Some(Some(a)), Some(Some(n)), None) if a == arch.systemd() => {
            generation_number(n)
        }
        _ => None,
    }
}

/// The entries directly in `dir` as they are (a symlink is reported as a
/// symlink, not as what it points to); empty when `dir` does not exist.
/// Names that are not UTF-8 are not ours and are left out.
fn entries(dir: &Path) -> Result<Vec<(String, fs::Metadata)>, StoreError> {
    let list = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if not_found(&e) => return Ok(vec![]),
        Err(e) => return Err(StoreError::io("listing", dir)(e)),
    };
    let mut out = Vec::new();
    for entry in list {
        let entry = entry.map_err(StoreError::io("listing", dir))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        // DirEntry::metadata does not traverse symlinks.
        match entry.metadata() {
            Ok(m) => out.push((name, m)),
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(StoreError::io("reading", &entry.path())(e)),
        }
    }
    Ok(out)
}

/// The regular files directly in `dir` with their sizes; hidden names
/// (temporaries) and symlinks are no files of ours.
fn files_in(dir: &Path) -> Result<BTreeMap<String, FileInfo>, StoreError> {
    Ok(entries(dir)?
        .into_iter()
        .filter(|(name, meta)| !name.starts_with('.') && meta.is_file())
        .map(|(name, meta)| (name, FileInfo { size: meta.len() }))
        .collect())
}

fn read_file(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    if real(path, Want::File)?.is_none() {
        return Ok(None);
    }
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if not_found(&e) => Ok(None),
        Err(e) => Err(StoreError::io("reading", path)(e)),
    }
}

fn hash_file(
    path: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<Option<(Digest, u64)>, StoreError> {
    if real(path, Want::File)?.is_none() {
        return Ok(None);
    }
    match hash::hash_file_with_progress(path, progress) {
        Ok(r) => Ok(Some(r)),
        Err(e) if not_found(&e) => Ok(None),
        Err(e) => Err(StoreError::io("reading", path)(e)),
    }
}

/// Removes a generation directory (or its temporary) when there is one;
/// a link or file in its place is refused, never followed.
fn remove_generation(path: &Path) -> Result<(), StoreError> {
    if real(path, Want::Dir)?.is_some() {
        fs::remove_dir_all(path).map_err(StoreError::io("removing", path))?;
    }
    Ok(())
}

/// Removes the entries of `dir` named as this store's temporaries that are
/// of the kind `ours` accepts.
fn remove_temporaries(dir: &Path, ours: impl Fn(&fs::Metadata) -> bool) -> Result<(), StoreError> {
    for (name, meta) in entries(dir)? {
        if !name.starts_with(TEMP_PREFIX) || !ours(&meta) {
            continue;
        }
        let path = dir.join(&name);
        match fs::remove_file(&path) {
            Err(e) if !not_found(&e) => return Err(StoreError::io("removing", &path)(e)),
            _ => {}
        }
    }
    Ok(())
}

impl DirStore {
    pub fn new(root: PathBuf, parallel_uploads: usize) -> DirStore {
        DirStore {
            root,
            parallel_uploads,
        }
    }

    /// `root/<parts…>`, every level checked to be a real directory (and
    /// created when `create`); `None` when a level does not exist.
    fn internal(&self, parts: &[&str], create: bool) -> Result<Option<PathBuf>, StoreError> {
        if create {
            fs::create_dir_all(&self.root).map_err(StoreError::io("creating", &self.root))?;
        }
        let mut path = self.root.clone();
        for part in parts {
            path.push(part);
            if real(&path, Want::Dir)?.is_some() {
                continue;
            }
            if !create {
                return Ok(None);
            }
            match fs::create_dir(&path) {
                Ok(()) => {}
                // Created meanwhile: it has to pass the same check.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    real(&path, Want::Dir)?;
                }
                Err(e) => return Err(StoreError::io("creating", &path)(e)),
            }
        }
        Ok(Some(path))
    }

    /// `.payloads/<arch>`: every payload uploaded for the arch.
    fn pool(&self, arch: Arch) -> Result<Option<PathBuf>, StoreError> {
        self.internal(&[PAYLOADS, arch.systemd()], false)
    }

    /// `.generations/<arch>`.
    fn generations(&self, arch: Arch, create: bool) -> Result<Option<PathBuf>, StoreError> {
        self.internal(&[GENERATIONS, arch.systemd()], create)
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
        match link_generation(&target, arch) {
            Some(n) => Ok(Some(n)),
            None => Err(StoreError::Layout {
                message: format!(
                    "points to {}, not to {GENERATIONS}/{arch}/<number>; sysupdate-publish never follows other links inside a store. Move it away",
                    target.display()
                ),
                path: link,
            }),
        }
    }

    /// The generation devices see now, checked; `None` before the first
    /// commit (or when the link names a generation that is gone).
    fn current_dir(&self, arch: Arch) -> Result<Option<PathBuf>, StoreError> {
        match self.current(arch)? {
            Some(n) => self.internal(&[GENERATIONS, arch.systemd(), &n.to_string()], false),
            None => Ok(None),
        }
    }
}

/// How a payload's bytes reached the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Placed {
    /// Hard link to an immutable `/nix/store` file.
    Linked,
    /// Reflink or in-kernel copy: the bytes never passed through us.
    Kernel,
    /// Read and written here, through the source's checker.
    Copied,
}

/// Puts `source` into the pool as `pool/name` via a temporary and a rename,
/// without an fsync (the commit that names it syncs it). The bytes are the
/// staged ones: a hard-linked or kernel-copied file's hash is the staged
/// hash with the source's stamp unchanged since staging and after the copy,
/// or, deferred, read from the source through its checker, which learns it
/// for the manifest only if the stamp still holds.
fn place_payload(pool: &Path, name: &str, source: &Source) -> Result<(), StoreError> {
    let tmp = pool.join(DirStore::temp_name(name));
    let dst = pool.join(name);
    let result = (|| -> std::io::Result<Placed> {
        let _ = fs::remove_file(&tmp);
        if immutable_source(&source.path) {
            // Hash (or check the stamp) before linking: a link changes the
            // source's ctime, and the file cannot change afterwards anyway.
            source.digest()?;
            if fs::hard_link(&source.path, &tmp).is_ok() {
                (source.progress)(source.size);
                return Ok(Placed::Linked);
            }
        }
        let out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        let input = File::open(&source.path)?;
        // A deferred hash needs the bytes read anyway: then reading them
        // once, hashing and writing beats an in-kernel copy plus a second
        // read to hash (measured by scripts/bench-dir). A reflink copies
        // nothing, so it is always worth trying.
        let kernel = if source.sha256.get().is_some() {
            kernel_copy(&input, &out, source.size)?
        } else {
            reflink(&input, &out)
        };
        if kernel {
            // What the kernel copied is what was staged when the stamp held
            // before (checked at the end of the copy's read) and still does.
            verify_after_kernel_copy(source, &tmp)?;
            return Ok(Placed::Kernel);
        }
        let mut w = BufWriter::with_capacity(1 << 20, out);
        std::io::copy(&mut source.open()?, &mut w)?;
        w.into_inner().map_err(|e| e.into_error())?;
        Ok(Placed::Copied)
    })();
    match result.and_then(|_| fs::rename(&tmp, &dst)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(StoreError::io("writing", &dst)(e))
        }
    }
}

/// A file nix made immutable: under `/nix/store` and not writable by
/// anyone, so a hard link to it can never see other bytes.
fn immutable_source(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.starts_with("/nix/store")
        && fs::symlink_metadata(path)
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o222 == 0)
}

/// Copies all of `input` into the empty `out` in the kernel: a reflink
/// (`FICLONE`) where the filesystem shares extents, else `copy_file_range`.
/// `Ok(false)`: neither works here (other filesystems, old kernels, special
/// files), nothing was written and the caller copies by reading.
fn kernel_copy(input: &File, out: &File, size: u64) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    if reflink(input, out) {
        return Ok(true);
    }
    let (fin, fout) = (input.as_raw_fd(), out.as_raw_fd());
    let mut left = size;
    while left > 0 {
        let want = left.min(1 << 30) as usize;
        // SAFETY: null offsets: both files' own positions are used.
        let n = unsafe {
            libc::copy_file_range(
                fin,
                std::ptr::null_mut(),
                fout,
                std::ptr::null_mut(),
                want,
                0,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            let unsupported = matches!(
                e.raw_os_error(),
                Some(libc::EXDEV | libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP | libc::EBADF)
            );
            if unsupported && left == size {
                return Ok(false);
            }
            return Err(e);
        }
        if n == 0 {
            break; // shorter than staged: the check after the copy says so
        }
        left -= n as u64;
    }
    Ok(true)
}

/// Shares `input`'s extents with the empty `out` (`FICLONE`: btrfs, XFS,
/// …); `false` where the filesystem cannot (ext4, across filesystems).
fn reflink(input: &File, out: &File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: an ioctl on two descriptors we own, no pointers passed.
    unsafe { libc::ioctl(out.as_raw_fd(), libc::FICLONE, input.as_raw_fd()) == 0 }
}

/// After a kernel copy to `copy`: the source is still the staged file
/// (stamp) and its hash is known, reading it once if it was deferred.
/// Without a stamp nothing ties the source's bytes now to the copy's, so
/// the copy itself is hashed against the known hash.
fn verify_after_kernel_copy(source: &Source, copy: &Path) -> std::io::Result<()> {
    let Some(stamp) = source.stamp else {
        let expected = source.digest()?;
        let (got, size) = hash::hash_file(copy)?;
        (source.progress)(size);
        if got != expected || size != source.size {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} changed while publishing (copied sha256 {}); stage the release again",
                    source.path.display(),
                    hash::to_hex(&got)
                ),
            ));
        }
        return Ok(());
    };
    let unchanged = crate::payload::FileStamp::of(&source.path)? == stamp;
    if source.sha256.get().is_some() && unchanged {
        (source.progress)(source.size);
        return Ok(());
    }
    // Deferred: read it through the checker, which learns the hash only
    // while the stamp still holds (and refuses the file otherwise).
    std::io::copy(&mut source.open()?, &mut std::io::sink()).map(drop)
}

/// Writes `dir/name` via temp + fsync + rename + directory fsync. The
/// temporary is never opened through a link someone left under its name.
fn write_atomic(
    dir: &Path,
    name: &str,
    write: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<u64>,
) -> Result<(), StoreError> {
    let tmp = dir.join(DirStore::temp_name(name));
    let result = (|| {
        let f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
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

impl Store for DirStore {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn lock(&self, events: &dyn crate::progress::Events) -> Result<Box<dyn Lock>, StoreError> {
        fs::create_dir_all(&self.root).map_err(StoreError::io("creating", &self.root))?;
        let path = self.root.join(LOCK_FILE);
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(StoreError::io("opening", &path))?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
        // SAFETY: flock on a descriptor we own; first without waiting, to say
        // when another publisher holds it, then blocking until it is done.
        let mut rc = unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EWOULDBLOCK) {
            events.info(format!(
                "{}: waiting for the publisher lock (another publisher is writing)",
                self.root.display()
            ));
            // SAFETY: as above.
            rc = unsafe { libc::flock(fd, libc::LOCK_EX) };
        }
        if rc != 0 {
            return Err(StoreError::io("locking", &path)(
                std::io::Error::last_os_error(),
            ));
        }
        Ok(Box::new(FlockGuard { _file: f }))
    }

    /// Top-level links and directories named as a systemd arch; everything
    /// else there (`docs/`, hidden directories) belongs to someone else.
    fn arches(&self) -> Result<Vec<Arch>, StoreError> {
        let mut out: Vec<Arch> = entries(&self.root)?
            .into_iter()
            .filter(|(name, meta)| Arch::is_arch_dir(name) && !meta.is_file())
            .filter_map(|(name, _)| Arch::parse(&name).ok())
            .collect();
        out.sort();
        Ok(out)
    }

    fn list(&self, arch: Arch) -> Result<BTreeMap<String, FileInfo>, StoreError> {
        match self.pool(arch)? {
            Some(pool) => files_in(&pool),
            None => Ok(BTreeMap::new()),
        }
    }

    /// The current generation, not the pool: what devices fetch now.
    fn served(&self, arch: Arch) -> Result<BTreeMap<String, FileInfo>, StoreError> {
        let Some(dir) = self.current_dir(arch)? else {
            return Ok(BTreeMap::new());
        };
        let mut files = files_in(&dir)?;
        files.retain(|name, _| name != MANIFEST && name != SIGNATURE);
        Ok(files)
    }

    fn get(&self, arch: Arch, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self.current_dir(arch)? {
            Some(dir) => read_file(&dir.join(name)),
            None => Ok(None),
        }
    }

    fn put_payload(&self, arch: Arch, name: &str, source: &Source) -> Result<(), StoreError> {
        let pool = self
            .internal(&[PAYLOADS, arch.systemd()], true)?
            .expect("created");
        let path = pool.join(name);
        match hash_file(&path, &mut |_| {})? {
            Some((existing, _)) if existing == stored_digest(source)? => Ok(()),
            Some((existing, _)) => Err(StoreError::Conflict {
                path,
                existing: hash::to_hex(&existing),
            }),
            None => place_payload(&pool, name, source),
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
        let pool = self.pool(arch)?;
        let pool = pool.unwrap_or_else(|| self.root.join(PAYLOADS).join(arch.systemd()));
        for name in names {
            let src = pool.join(name);
            if real(&src, Want::File)?.is_none() {
                return Err(StoreError::Layout {
                    path: src,
                    message: "is not among the uploaded payloads; refusing to publish a manifest that names it".into(),
                });
            }
        }
        let gens = self.generations(arch, true)?.expect("created");
        let dir = gens.join(next.to_string());
        let tmp = gens.join(Self::temp_name(&next.to_string()));
        remove_generation(&tmp)?;
        // Left by a crash after building it but before switching to it.
        remove_generation(&dir)?;
        // The one fsync pass of the payloads this generation serves
        // (already-clean files cost a system call each).
        for name in names {
            let src = pool.join(name);
            File::open(&src)
                .and_then(|f| f.sync_all())
                .map_err(StoreError::io("syncing", &src))?;
        }
        sync_dir(&pool).map_err(StoreError::io("syncing", &pool))?;
        fs::create_dir(&tmp).map_err(StoreError::io("creating", &tmp))?;
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
        let link = self.root.join(arch.systemd());
        let link_tmp = self.root.join(Self::temp_name(arch.systemd()));
        let _ = fs::remove_file(&link_tmp);
        let target = Path::new(GENERATIONS)
            .join(arch.systemd())
            .join(next.to_string());
        std::os::unix::fs::symlink(&target, &link_tmp)
            .and_then(|_| fs::rename(&link_tmp, &link))
            .and_then(|_| sync_dir(&self.root))
            .map_err(StoreError::io("switching", &link))
    }

    fn get_channel_file(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        read_file(&self.root.join(name))
    }

    /// The flock already excludes other writers, so `previous` is not needed.
    fn put_channel_file(
        &self,
        name: &str,
        bytes: &[u8],
        _previous: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        fs::create_dir_all(&self.root).map_err(StoreError::io("creating", &self.root))?;
        write_atomic(&self.root, name, &mut |w| {
            w.write_all(bytes)?;
            Ok(bytes.len() as u64)
        })
    }

    /// A symlink under a payload's name is refused, not removed: it was
    /// never uploaded by us.
    fn delete(&self, arch: Arch, name: &str) -> Result<(), StoreError> {
        let Some(pool) = self.pool(arch)? else {
            return Ok(());
        };
        let path = pool.join(name);
        if real(&path, Want::File)?.is_none() {
            return Ok(());
        }
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(StoreError::io("deleting", &path)(e)),
        }
    }

    /// Generations other than the current one, and temporaries: only real
    /// directories and files carrying the names this store gives them.
    fn clear_scratch(&self, arch: Arch) -> Result<(), StoreError> {
        let current = self.current(arch)?;
        if let Some(gens) = self.generations(arch, false)? {
            for (name, meta) in entries(&gens)? {
                let number = generation_number(&name);
                let old = number.is_some() && number != current;
                if meta.is_dir() && (old || name.starts_with(TEMP_PREFIX)) {
                    let path = gens.join(&name);
                    fs::remove_dir_all(&path).map_err(StoreError::io("removing", &path))?;
                }
            }
        }
        if let Some(pool) = self.pool(arch)? {
            remove_temporaries(&pool, |m| m.is_file())?;
        }
        // At the root they are replaced arch links and channel files;
        // removing a link removes the link, never what it points to.
        remove_temporaries(&self.root, |m| !m.is_dir())
    }

    /// A hard link from the other store's pool (same filesystem), else a
    /// copy of the file by the kernel (`copy_file_range`).
    fn copy_payload(
        &self,
        arch: Arch,
        name: &str,
        from: &dyn Store,
        sha256: Digest,
        size: u64,
    ) -> Result<bool, StoreError> {
        let Some(other) = (from as &dyn std::any::Any).downcast_ref::<DirStore>() else {
            return Ok(false);
        };
        let src = match other.pool(arch)? {
            Some(pool) => pool.join(name),
            None => return Ok(false),
        };
        if real(&src, Want::File)?.is_none() {
            return Err(StoreError::Layout {
                path: src,
                message: "is not there to copy".into(),
            });
        }
        let pool = self
            .internal(&[PAYLOADS, arch.systemd()], true)?
            .expect("created");
        let dst = pool.join(name);
        if let Some((existing, _)) = hash_file(&dst, &mut |_| {})? {
            return if existing == sha256 {
                Ok(true)
            } else {
                Err(StoreError::Conflict {
                    path: dst,
                    existing: hash::to_hex(&existing),
                })
            };
        }
        if fs::hard_link(&src, &dst).is_err() {
            let mut input = File::open(&src).map_err(StoreError::io("reading", &src))?;
            write_atomic(&pool, name, &mut |w| std::io::copy(&mut input, w))?;
        }
        sync_dir(&pool).map_err(StoreError::io("syncing", &pool))?;
        let got = fs::symlink_metadata(&dst).map_err(StoreError::io("reading", &dst))?;
        if got.len() != size {
            return Err(StoreError::Layout {
                path: dst,
                message: format!("copied {} bytes, the history records {size}", got.len()),
            });
        }
        Ok(true)
    }

    fn download(
        &self,
        arch: Arch,
        name: &str,
        to: &mut dyn Write,
    ) -> Result<Option<u64>, StoreError> {
        let Some(pool) = self.pool(arch)? else {
            return Ok(None);
        };
        let path = pool.join(name);
        if real(&path, Want::File)?.is_none() {
            return Ok(None);
        }
        let mut f = File::open(&path).map_err(StoreError::io("reading", &path))?;
        std::io::copy(&mut f, to)
            .map(Some)
            .map_err(StoreError::io("reading", &path))
    }

    fn payload_hash(
        &self,
        arch: Arch,
        name: &str,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Option<(Digest, u64)>, StoreError> {
        match self.pool(arch)? {
            Some(pool) => hash_file(&pool.join(name), progress),
            None => Ok(None),
        }
    }

    fn hash(
        &self,
        arch: Arch,
        name: &str,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Option<(Digest, u64)>, StoreError> {
        match self.current_dir(arch)? {
            Some(dir) => hash_file(&dir.join(name), progress),
            None => Ok(None),
        }
    }

    fn parallel_uploads(&self) -> usize {
        self.parallel_uploads
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;
    use crate::payload::PayloadDigest;

    fn x86() -> Arch {
        Arch::parse("x86-64").unwrap()
    }

    /// A store with one payload committed, and a directory beside it that
    /// planted links point into.
    struct Fixture {
        _tmp: tempfile::TempDir,
        store: DirStore,
        root: PathBuf,
        outside: PathBuf,
        staged: PathBuf,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("store");
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        for name in ["a_1.raw", ".tmp-1-b_1.raw", "1", MANIFEST] {
            fs::write(outside.join(name), "outside").unwrap();
        }
        fs::create_dir(outside.join("2")).unwrap(); // named like a generation
        let staged = tmp.path().join("staged");
        fs::write(&staged, b"payload").unwrap();
        let store = DirStore::new(root.clone(), 1);
        store
            .put_payload(x86(), "a_1.raw", &source(&staged))
            .unwrap();
        store.commit(x86(), b"m1", b"s1", &["a_1.raw"]).unwrap();
        Fixture {
            _tmp: tmp,
            store,
            root,
            outside,
            staged,
        }
    }

    fn source(path: &Path) -> Source {
        Source::from_file(path, PayloadDigest::deferred()).unwrap()
    }

    /// Every path below `dir` with its content (a link as its target).
    fn tree(dir: &Path) -> BTreeMap<PathBuf, String> {
        let mut out = BTreeMap::new();
        for (name, meta) in entries(dir).unwrap() {
            let path = dir.join(&name);
            let content = if meta.is_dir() {
                for (below, content) in tree(&path) {
                    out.insert(Path::new(&name).join(below), content);
                }
                "directory".to_string()
            } else if meta.file_type().is_symlink() {
                format!("-> {}", fs::read_link(&path).unwrap().display())
            } else {
                fs::read_to_string(&path).unwrap()
            };
            out.insert(name.into(), content);
        }
        out
    }

    fn assert_layout<T: std::fmt::Debug>(r: Result<T, StoreError>, needle: &str) {
        match r {
            Err(e @ StoreError::Layout { .. }) => {
                let text = e.to_string();
                assert!(text.contains(needle), "{text}");
            }
            other => panic!("expected a layout error about {needle}, got {other:?}"),
        }
    }

    /// Replaces the internal directory `rel` with a link to `outside`.
    fn plant(f: &Fixture, rel: &str) {
        let path = f.root.join(rel);
        fs::remove_dir_all(&path).unwrap();
        symlink(&f.outside, &path).unwrap();
    }

    /// A payload copied by the kernel (or by reading where the filesystem
    /// cannot): the pool holds its bytes, a deferred hash is learned from
    /// the source, a known one is checked by the stamp, and a source that
    /// changed since staging is refused with nothing left in the pool.
    #[test]
    fn payloads_are_copied_with_their_hash_checked_and_changed_sources_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let store = DirStore::new(tmp.path().join("store"), 1);
        let data: Vec<u8> = (0..5_000_000u32).map(|i| ((i * 31) >> 3) as u8).collect();
        let staged = tmp.path().join("staged");
        fs::write(&staged, &data).unwrap();
        let want = hash::hash_file(&staged).unwrap().0;

        let deferred = source(&staged);
        store.put_payload(x86(), "a_1.raw", &deferred).unwrap();
        assert_eq!(deferred.sha256.get(), Some(want), "learned from the source");
        let pool = tmp.path().join("store").join(PAYLOADS).join("x86-64");
        assert_eq!(fs::read(pool.join("a_1.raw")).unwrap(), data);

        let known = Source::from_file(&staged, PayloadDigest::known(want)).unwrap();
        store.put_payload(x86(), "b_1.raw", &known).unwrap();
        assert_eq!(fs::read(pool.join("b_1.raw")).unwrap(), data);

        for sha256 in [PayloadDigest::deferred(), PayloadDigest::known(want)] {
            let s = Source::from_file(&staged, sha256).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
            let mut other = data.clone();
            other[7] ^= 1;
            fs::write(&staged, &other).unwrap(); // same size, new ctime
            let e = store.put_payload(x86(), "c_1.raw", &s).unwrap_err();
            assert!(e.to_string().contains("changed while publishing"), "{e}");
            fs::write(&staged, &data).unwrap();
        }
        let left: Vec<String> = entries(&pool)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert!(
            !left
                .iter()
                .any(|n| n.starts_with("c_1") || n.starts_with(TEMP_PREFIX)),
            "{left:?}"
        );
    }

    #[test]
    fn commits_switch_generations_and_scratch_goes_but_payloads_stay() {
        let f = fixture();
        let s = &f.store;
        s.commit(x86(), b"m2", b"s2", &["a_1.raw"]).unwrap();
        let gens = f.root.join(".generations/x86-64");
        let pool = f.root.join(".payloads/x86-64");
        fs::create_dir(gens.join(".tmp-99-7")).unwrap();
        fs::create_dir(gens.join("notes")).unwrap();
        symlink(&f.outside, gens.join("5")).unwrap();
        fs::write(pool.join(".tmp-99-b_1.raw"), "half").unwrap();
        symlink(f.outside.join("a_1.raw"), pool.join(".tmp-98-c_1.raw")).unwrap();
        fs::write(f.root.join(".tmp-99-ledger.jsonl"), "half").unwrap();
        let before = tree(&f.outside);

        s.clear_scratch(x86()).unwrap();
        let names = |dir: &Path| {
            tree(dir)
                .into_keys()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(&gens),
            [
                "2",
                "2/SHA256SUMS",
                "2/SHA256SUMS.gpg",
                "2/a_1.raw",
                "5",
                "notes"
            ]
        );
        assert_eq!(
            names(&pool),
            [".tmp-98-c_1.raw", "a_1.raw"],
            "a link is not an upload temporary of ours"
        );
        assert!(!f.root.join(".tmp-99-ledger.jsonl").exists());
        assert_eq!(tree(&f.outside), before);

        assert_eq!(s.get(x86(), MANIFEST).unwrap().unwrap(), b"m2");
        let served = s.served(x86()).unwrap();
        assert_eq!(served.keys().collect::<Vec<_>>(), ["a_1.raw"]);
        assert_eq!(served["a_1.raw"].size, 7);
        assert_eq!(s.list(x86()).unwrap(), served);
        assert!(s.hash(x86(), "a_1.raw", &mut |_| {}).unwrap().is_some());
    }

    #[test]
    fn foreign_top_level_entries_are_no_arches() {
        let f = fixture();
        fs::create_dir(f.root.join("docs")).unwrap();
        fs::create_dir(f.root.join(".well-known")).unwrap();
        fs::write(f.root.join("arm64"), "a file").unwrap();
        fs::write(f.root.join("index.html"), "").unwrap();
        assert_eq!(f.store.arches().unwrap(), [x86()]);
    }

    #[test]
    fn a_linked_payload_pool_is_refused_and_nothing_outside_changes() {
        for rel in [".payloads/x86-64", ".payloads"] {
            let f = fixture();
            let before = tree(&f.outside);
            plant(&f, rel);
            let s = &f.store;
            assert_layout(
                s.list(x86()),
                "is a symlink; sysupdate-publish never follows links inside a store",
            );
            assert_layout(s.list(x86()), "Move it away");
            assert_layout(
                s.put_payload(x86(), "b_2.raw", &source(&f.staged)),
                "symlink",
            );
            assert_layout(s.delete(x86(), "a_1.raw"), "symlink");
            assert_layout(s.payload_hash(x86(), "a_1.raw", &mut |_| {}), "symlink");
            assert_layout(s.commit(x86(), b"m2", b"s2", &["a_1.raw"]), "symlink");
            assert_layout(s.clear_scratch(x86()), "symlink");
            assert_eq!(tree(&f.outside), before, "{rel}");
        }
    }

    #[test]
    fn linked_generations_are_refused_and_nothing_outside_changes() {
        for rel in [
            ".generations/x86-64",
            ".generations",
            ".generations/x86-64/1",
        ] {
            let f = fixture();
            let before = tree(&f.outside);
            plant(&f, rel);
            let s = &f.store;
            assert_layout(s.get(x86(), MANIFEST), "is a symlink");
            assert_layout(s.served(x86()), "symlink");
            assert_layout(s.hash(x86(), "a_1.raw", &mut |_| {}), "symlink");
            if rel != ".generations/x86-64/1" {
                // The current generation is not touched by a commit.
                assert_layout(s.commit(x86(), b"m2", b"s2", &["a_1.raw"]), "symlink");
                assert_layout(s.clear_scratch(x86()), "symlink");
            }
            assert_eq!(tree(&f.outside), before, "{rel}");
        }
    }

    #[test]
    fn an_arch_link_to_anything_but_its_generation_is_refused() {
        let f = fixture();
        let before = tree(&f.outside);
        let link = f.root.join("x86-64");
        let elsewhere = f.outside.display().to_string();
        for target in [
            elsewhere.as_str(),
            "../outside",
            ".generations/arm64/1",
            ".generations/x86-64/../../../outside/2",
            ".generations/x86-64/1/..",
            ".generations/x86-64/+1",
        ] {
            fs::remove_file(&link).unwrap();
            symlink(target, &link).unwrap();
            let s = &f.store;
            assert_layout(s.get(x86(), MANIFEST), target);
            assert_layout(s.served(x86()), target);
            assert_layout(s.commit(x86(), b"m2", b"s2", &["a_1.raw"]), target);
            assert_layout(s.clear_scratch(x86()), target);
            let e = s.get(x86(), MANIFEST).unwrap_err().to_string();
            assert!(e.contains(&link.display().to_string()), "{e}");
        }
        assert_eq!(tree(&f.outside), before);
    }

    #[test]
    fn a_link_among_the_payloads_is_no_payload_and_never_deleted_through() {
        let f = fixture();
        let before = tree(&f.outside);
        let pool = f.root.join(".payloads/x86-64");
        symlink(f.outside.join("a_1.raw"), pool.join("evil_1.raw")).unwrap();
        let s = &f.store;
        assert!(!s.list(x86()).unwrap().contains_key("evil_1.raw"));
        assert_layout(s.delete(x86(), "evil_1.raw"), "is a symlink");
        assert_layout(
            s.put_payload(x86(), "evil_1.raw", &source(&f.staged)),
            "symlink",
        );
        assert_layout(s.commit(x86(), b"m2", b"s2", &["evil_1.raw"]), "symlink");
        // A link planted under the name of our next temporary is not written through.
        let planted = f.root.join(DirStore::temp_name("ledger.jsonl"));
        symlink(f.outside.join(MANIFEST), &planted).unwrap();
        assert!(s.put_channel_file("ledger.jsonl", b"l", None).is_err());
        assert_eq!(tree(&f.outside), before);
    }

    #[test]
    fn a_commit_naming_a_payload_never_uploaded_is_refused() {
        let f = fixture();
        assert_layout(
            f.store.commit(x86(), b"m2", b"s2", &["a_1.raw", "b_2.raw"]),
            "not among the uploaded payloads",
        );
        assert_eq!(f.store.get(x86(), MANIFEST).unwrap().unwrap(), b"m1");
    }
}
