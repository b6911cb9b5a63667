//! Staging: turn one architecture's build output directory into named,
//! hashed payloads ready to upload.
//!
//! Nix outputs are read-only trees that may hold symlinks into the store; we
//! publish the file a link points to, never the link. Outputs are untrusted:
//! a link is followed only into `/nix/store` or within the output itself, so
//! no other file of the build machine (a secret key) is ever published.
//! Payloads that are
//! already compressed (by magic bytes, which is how systemd-pull decides) pass
//! through untouched and are only hashed; others are compressed into a local
//! staging directory while being hashed, so each input byte is read once.
//!
//! Preflight sees the decompressed bytes here too, without a second pass:
//! a raw input is watched by an [`Inspector`] as the compressor reads it;
//! of an already-compressed one only the start is decoded, until the
//! inspector has its headers (and a UKI's `.osrel`).

use std::fs::{self, File};
use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::arch::Arch;
use crate::compress::{self, Codec, Settings};
use crate::hash::{self, Digest};
use crate::image::{Content, Evidence, Inspector};
use crate::manifest;
use crate::payload::{FileStamp, PayloadDigest, Source};
use crate::progress::{Events, NoBars};
use crate::stamps::StampCache;

#[derive(Debug, Error)]
pub enum StageError {
    #[error("{arch}: cannot read build output {path}: {source}")]
    Io {
        arch: Arch,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{arch}: build output {dir} is empty; expected payload files such as appliance_18.efi.xz"
    )]
    Empty { arch: Arch, dir: PathBuf },
    #[error("{arch}: {path} is not a regular file (device, socket, fifo or dangling link)")]
    NotRegular { arch: Arch, path: PathBuf },
    #[error("{arch}: {path} is a symlink to {}, outside the build output and /nix/store; refusing to publish a file from elsewhere on this machine (copy it into the output if it belongs there)", via(.link, .target))]
    ForeignLink {
        arch: Arch,
        path: PathBuf,
        /// What the link says: the first hop of a chain.
        link: PathBuf,
        /// Where it ends.
        target: PathBuf,
    },
    #[error("{arch}: build output {path} is not a directory; --output takes SYSTEM=DIRECTORY")]
    NotADirectory { arch: Arch, path: PathBuf },
    #[error("{arch}: {path}: {reason}")]
    BadName {
        arch: Arch,
        path: PathBuf,
        reason: String,
    },
    #[error("{arch}: compressing {path}: {message}")]
    Compress {
        arch: Arch,
        path: PathBuf,
        message: String,
    },
    /// A directory output that cannot be a url-tar payload.
    #[error("{arch}: packing a directory output: {message}")]
    Pack { arch: Arch, message: String },
}

/// Where a link leads: what it says and, when that is another hop (a
/// chain, or a relative target), where it ends.
fn via(link: &Path, target: &Path) -> String {
    if link == target {
        target.display().to_string()
    } else {
        format!("{}, which resolves to {}", link.display(), target.display())
    }
}

/// One payload as it will be published.
#[derive(Clone, Debug)]
pub struct Payload {
    /// Name in the arch directory (after compression, e.g. `store_18.img.xz`).
    pub name: String,
    /// The bytes to upload: the original file, or its compressed copy in staging.
    pub file: PathBuf,
    /// Left to the upload when the hosting does not have the name yet.
    pub sha256: PayloadDigest,
    pub size: u64,
    /// The build output's own name when we compressed it.
    pub compressed_from: Option<String>,
    /// The file as it was when hashed: uploads check it instead of hashing
    /// the bytes a second time.
    pub stamp: Option<FileStamp>,
    /// What the decompressed bytes are, for preflight; `None` when not
    /// inspected (checks off, or a format we cannot decode).
    pub content: Option<Content>,
    /// What the inspection kept, for the stamp cache (`None`: nothing new).
    pub evidence: Option<Evidence>,
    /// Payload bytes staging read (hashing, inspecting, compressing).
    pub read: u64,
    /// The build output file we compressed, as it was: what lets the next
    /// run reuse the compressed copy.
    pub raw: Option<RawInput>,
}

/// A raw build output (file or directory) and how it was compressed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawInput {
    pub path: PathBuf,
    pub stamp: FileStamp,
    /// [`settings_key`] of the compression.
    pub settings: String,
}

/// What in the compression settings decides the compressed bytes (and the
/// rest, to be safe): a copy made otherwise is not reused.
pub fn settings_key(settings: &Settings) -> String {
    format!("{settings:?}")
}

impl Payload {
    /// The bytes to upload, reporting progress to `progress`.
    pub fn source(&self, progress: std::sync::Arc<dyn Fn(u64) + Send + Sync>) -> Source {
        Source {
            path: self.file.clone(),
            sha256: self.sha256.clone(),
            size: self.size,
            stamp: self.stamp,
            progress,
        }
    }

    /// The payload's hash, hashing the file now if staging left it for an
    /// upload that has not happened (or did not need to).
    pub fn digest(&self) -> std::io::Result<Digest> {
        self.source(std::sync::Arc::new(|_| {})).digest()
    }
}

/// Which already-compressed payloads staging leaves unhashed: those whose
/// upload will hash them (names the hosting does not have yet).
pub type Defer<'a> = &'a (dyn Fn(Arch, &str) -> bool + Sync);

/// How to stage.
#[derive(Clone, Copy)]
pub struct Options<'a> {
    pub settings: &'a Settings,
    pub defer: Defer<'a>,
    /// Look at each payload's content on the way (preflight).
    pub inspect: bool,
    /// What earlier runs learned of unchanged files.
    pub stamps: &'a StampCache,
}

impl<'a> Options<'a> {
    /// Hash everything, inspect nothing, trust no cache (repair).
    pub fn deep(settings: &'a Settings, stamps: &'a StampCache) -> Options<'a> {
        Options {
            settings,
            defer: &|_, _| false,
            inspect: false,
            stamps,
        }
    }
}

/// Records in the stamp cache what staging and uploads learned: the hashes
/// of build output files (not of our own compressed copies, which are
/// gone after the run) and what preflight kept of every payload's content.
pub fn remember(stamps: &StampCache, payloads: &[Payload]) {
    for p in payloads {
        let Some(digest) = p.sha256.get() else {
            continue;
        };
        // What we compressed was inspected as it went in: the evidence is of
        // the bytes our compressed payload decodes to (promote reuses it).
        if p.compressed_from.is_some() {
            if let Some(e) = &p.evidence {
                stamps.remember_evidence(&digest, e);
            }
        }
        let Some(stamp) = p.stamp else { continue };
        if FileStamp::of(&p.file).ok() != Some(stamp) {
            continue;
        }
        if p.compressed_from.is_some() {
            // Our copy outlives the run only in the cache's directory.
            let kept = stamps
                .compressed_dir()
                .is_some_and(|dir| p.file.starts_with(dir));
            let Some(raw) = p.raw.as_ref().filter(|_| kept) else {
                continue;
            };
            stamps.remember_compressed(&raw.path, &raw.stamp, &raw.settings, &p.file);
        }
        stamps.remember(&p.file, &stamp, &digest);
        if let Some(e) = &p.evidence {
            stamps.remember_evidence(&digest, e);
        }
    }
}

/// Where nix outputs' links may point: its files are immutable build results.
const NIX_STORE: &str = "/nix/store/";

/// Whether a resolved path lies in the nix store, also where `/nix` is
/// itself a link (e.g. to `/home/nix`).
fn in_nix_store(real: &Path) -> bool {
    real.starts_with(NIX_STORE)
        || fs::canonicalize(NIX_STORE).is_ok_and(|store| real.starts_with(store))
}

/// A regular file of the output directory, links resolved.
#[derive(Clone, Debug)]
pub struct InputFile {
    pub name: String,
    pub path: PathBuf,
}

/// Lists the payload files of a build output, refusing anything that cannot
/// be published as a flat arch directory.
pub fn scan(arch: Arch, dir: &Path) -> Result<Vec<InputFile>, StageError> {
    let io = |path: &Path, source| StageError::Io {
        arch,
        path: path.to_path_buf(),
        source,
    };
    let root = fs::canonicalize(dir).map_err(|e| io(dir, e))?;
    if !root.is_dir() {
        return Err(StageError::NotADirectory {
            arch,
            path: dir.to_path_buf(),
        });
    }
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(dir)
        .min_depth(1)
        .max_depth(1)
        .follow_links(false)
        .sort_by_file_name()
    {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(dir).to_path_buf();
            io(&path, e.into())
        })?;
        let path = entry.path();
        // Follow links: nix outputs often are farms of links into the store.
        let meta = fs::metadata(path).map_err(|e| {
            if entry.path_is_symlink() {
                StageError::NotRegular {
                    arch,
                    path: path.to_path_buf(),
                }
            } else {
                io(path, e)
            }
        })?;
        if !meta.is_file() && !meta.is_dir() {
            return Err(StageError::NotRegular {
                arch,
                path: path.to_path_buf(),
            });
        }
        let name = entry
            .file_name()
            .to_str()
            .ok_or_else(|| StageError::BadName {
                arch,
                path: path.to_path_buf(),
                reason: "the name is not UTF-8; SHA256SUMS must be UTF-8".into(),
            })?;
        manifest::validate_name(name).map_err(|e| StageError::BadName {
            arch,
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        if name.starts_with('.') || name.starts_with("SHA256SUMS") {
            return Err(StageError::BadName {
                arch,
                path: path.to_path_buf(),
                reason: "hidden files and SHA256SUMS* are not payloads; remove it from the output"
                    .into(),
            });
        }
        let real = fs::canonicalize(path).map_err(|e| io(path, e))?;
        if entry.path_is_symlink() && !in_nix_store(&real) && !real.starts_with(&root) {
            return Err(StageError::ForeignLink {
                arch,
                path: path.to_path_buf(),
                link: fs::read_link(path).map_err(|e| io(path, e))?,
                target: real,
            });
        }
        files.push(InputFile {
            name: name.to_string(),
            path: real,
        });
    }
    if files.is_empty() {
        return Err(StageError::Empty {
            arch,
            dir: dir.to_path_buf(),
        });
    }
    Ok(files)
}

/// What a payload will be called after staging. A directory is packed as
/// `NAME.tar` (a url-tar payload), then compressed like any file.
pub fn published_name(input: &InputFile, codec: Codec) -> Result<String, std::io::Error> {
    if input.path.is_dir() {
        let tar = tar_name(&input.name);
        return Ok(match codec {
            Codec::None => tar,
            _ => format!("{tar}.{}", codec.extension()),
        });
    }
    if codec == Codec::None || is_compressed(&input.path)? {
        Ok(input.name.clone())
    } else {
        Ok(format!("{}.{}", input.name, codec.extension()))
    }
}

/// `rootfs_18` → `rootfs_18.tar`; a directory already named `….tar` keeps it.
fn tar_name(dir_name: &str) -> String {
    if dir_name.ends_with(".tar") {
        dir_name.to_string()
    } else {
        format!("{dir_name}.tar")
    }
}

/// Packs a directory input into `staging` (see [`crate::tarball`]).
fn pack_tree(
    arch: Arch,
    input: &InputFile,
    staging: &Path,
    events: &dyn Events,
) -> Result<InputFile, StageError> {
    let dir = staging.join(arch.systemd()).join("packed");
    let name = tar_name(&input.name);
    let path = dir.join(&name);
    let io = |path: &Path, source| StageError::Io {
        arch,
        path: path.to_path_buf(),
        source,
    };
    fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    let file = File::create(&path).map_err(|e| io(&path, e))?;
    let mtime = crate::tarball::source_date_epoch();
    let n = crate::tarball::pack(&input.path, mtime, BufWriter::with_capacity(1 << 20, file))
        .map_err(|e| StageError::Pack {
            arch,
            message: e.to_string(),
        })?;
    events.info(format!(
        "{arch}: packed directory {} as {name} ({n} bytes, mtime {mtime})",
        input.name
    ));
    Ok(InputFile { name, path })
}

fn is_compressed(path: &Path) -> Result<bool, std::io::Error> {
    let mut head = [0u8; 8];
    let mut f = File::open(path)?;
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(compress::detect(&head[..n]).is_some())
}

/// Stages several architectures' inputs. Hashing a payload that is already
/// compressed is one core's work, so when nothing needs compressing the
/// architectures are staged side by side (compression is multi-threaded
/// itself, and stays one architecture at a time).
pub fn stage_all(
    jobs: &[(Arch, &[InputFile])],
    opts: Options,
    staging: &Path,
    events: &dyn Events,
) -> Result<Vec<Vec<Payload>>, StageError> {
    let compressed = |(arch, files): &(Arch, &[InputFile])| {
        files.iter().try_fold(true, |all, f| {
            let name = published_name(f, opts.settings.codec).map_err(|e| StageError::Io {
                arch: *arch,
                path: f.path.clone(),
                source: e,
            })?;
            Ok::<_, StageError>(all && name == f.name)
        })
    };
    let mut parallel = true;
    for job in jobs {
        parallel &= compressed(job)?;
    }
    if !parallel || jobs.len() < 2 {
        return jobs
            .iter()
            .map(|(arch, files)| stage(*arch, files, opts, staging, events))
            .collect();
    }
    let events = &NoBars(events);
    std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .iter()
            .map(|(arch, files)| s.spawn(move || stage(*arch, files, opts, staging, events)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("staging thread panicked"))
            .collect()
    })
}

/// Hashes or compresses every input; compressed copies go into `staging`.
/// Already-compressed inputs that `defer` names are only stamped: their
/// upload hashes them. Inputs the stamp cache knows unchanged are not read.
/// With `inspect`, each payload's content is seen on the way (see the module
/// documentation).
pub fn stage(
    arch: Arch,
    inputs: &[InputFile],
    opts: Options,
    staging: &Path,
    events: &dyn Events,
) -> Result<Vec<Payload>, StageError> {
    let settings = opts.settings;
    let io = |path: &Path, source| StageError::Io {
        arch,
        path: path.to_path_buf(),
        source,
    };
    let mut out = Vec::with_capacity(inputs.len());
    for given in inputs {
        let name = published_name(given, settings.codec).map_err(|e| io(&given.path, e))?;
        let tree = given.path.is_dir();
        let unpacked_name = match tree {
            true => tar_name(&given.name),
            false => given.name.clone(),
        };
        // What tells the next run this input is unchanged, for an input we
        // compress: then a copy an earlier run made may stand in for it.
        let raw = (name != unpacked_name && opts.stamps.is_on())
            .then(|| raw_input(given, settings))
            .flatten();
        if let Some(payload) = reuse(arch, given, &name, raw.as_ref(), opts, events)? {
            out.push(payload);
            continue;
        }
        let packed = match tree {
            true => Some(pack_tree(arch, given, staging, events)?),
            false => None,
        };
        let input = packed.as_ref().unwrap_or(given);
        let src = File::open(&input.path).map_err(|e| io(&input.path, e))?;
        let len = src.metadata().map_err(|e| io(&input.path, e))?.len();
        if name == input.name {
            drop(src);
            let payload = stage_compressed(arch, input, name, len, opts, events)
                .map_err(|e| io(&input.path, e))?;
            out.push(payload);
            continue;
        }
        let keep = raw.is_some().then_some(opts.stamps);
        let (dst_path, dst) =
            compressed_file(keep, staging, arch, &name).map_err(|(path, e)| io(&path, e))?;
        let bar = events.bar(
            len,
            &format!("{arch} {} {name}", settings.codec.extension()),
        );
        let mut inspector = opts.inspect.then(Inspector::new);
        let src = Watched {
            inner: src,
            inspector: inspector.as_mut(),
            at: 0,
        };
        let result = compress::compress(
            src,
            BufWriter::with_capacity(1 << 20, dst),
            settings,
            &mut |n| bar.inc(n),
        )
        .map_err(|e| {
            // A half-written copy is of no use to anyone.
            let _ = fs::remove_file(&dst_path);
            StageError::Compress {
                arch,
                path: input.path.clone(),
                message: format!(
                    "{e} (writing {}: the stamp cache's compressed/ or the staging directory; set SYSUPDATE_PUBLISH_CACHE_DIR or TMPDIR to a roomy filesystem)",
                    dst_path.display()
                ),
            }
        })?;
        bar.finish();
        events.info(format!(
            "{arch}: compressed {} → {name} ({} → {} bytes)",
            input.name, result.input_size, result.size
        ));
        out.push(Payload {
            stamp: FileStamp::of(&dst_path).ok(),
            name,
            file: dst_path,
            sha256: PayloadDigest::known(result.sha256),
            size: result.size,
            compressed_from: Some(given.name.clone()),
            evidence: inspector
                .as_ref()
                .map(|i| i.evidence(Some(result.input_size))),
            content: inspector.map(|i| i.finish(Some(result.input_size))),
            read: result.input_size,
            // Unchanged while we read it, or no use to the next run.
            raw: raw.filter(|r| raw_input(given, settings).as_ref() == Some(r)),
        });
    }
    Ok(out)
}

/// `given` as it is now, for the stamp cache: a file's stamp, or a
/// directory's own stamp with its tree's fingerprint (see
/// [`crate::tarball::fingerprint`]) beside the settings. `None` when it
/// cannot be read (the packing or compression that follows says why).
fn raw_input(given: &InputFile, settings: &Settings) -> Option<RawInput> {
    let stamp = FileStamp::of(&given.path).ok()?;
    let mut key = settings_key(settings);
    if given.path.is_dir() {
        let mtime = crate::tarball::source_date_epoch();
        let tree = crate::tarball::fingerprint(&given.path, mtime).ok()?;
        key = format!("{key} tree {tree}");
    }
    Some(RawInput {
        path: given.path.clone(),
        stamp,
        settings: key,
    })
}

/// The compressed copy an earlier run made of `raw`, staged as payload
/// `name` without reading `given`, if the stamp cache vouches for it.
fn reuse(
    arch: Arch,
    given: &InputFile,
    name: &str,
    raw: Option<&RawInput>,
    opts: Options,
    events: &dyn Events,
) -> Result<Option<Payload>, StageError> {
    let Some(r) = raw else { return Ok(None) };
    let Some(copy) = opts.stamps.compressed_copy(&r.path, &r.stamp, &r.settings) else {
        return Ok(None);
    };
    let io = |source| StageError::Io {
        arch,
        path: copy.clone(),
        source,
    };
    let size = fs::metadata(&copy).map_err(io)?.len();
    let cached = InputFile {
        name: name.to_string(),
        path: copy.clone(),
    };
    let mut payload =
        stage_compressed(arch, &cached, name.to_string(), size, opts, events).map_err(io)?;
    events.detail(format!(
        "{arch}: {}: unchanged since compressed to {name} (stamp cache)",
        given.name
    ));
    payload.compressed_from = Some(given.name.clone());
    payload.raw = Some(r.clone());
    Ok(Some(payload))
}

/// A new file for the compressed copy of payload `name`: in the stamp
/// cache's directory when there is one to `keep` it in (a rerun reuses
/// it), else in the run's staging directory.
fn compressed_file(
    keep: Option<&StampCache>,
    staging: &Path,
    arch: Arch,
    name: &str,
) -> Result<(PathBuf, File), (PathBuf, std::io::Error)> {
    if let Some(dir) = keep.and_then(StampCache::compressed_dir) {
        let made = tempfile::Builder::new()
            .prefix(&format!("{}-{name}.", arch.systemd()))
            .tempfile_in(&dir)
            .and_then(|f| f.keep().map_err(|e| e.error));
        if let Ok((file, path)) = made {
            return Ok((path, file));
        }
    }
    let dir = staging.join(arch.systemd());
    fs::create_dir_all(&dir).map_err(|e| (dir.clone(), e))?;
    let path = dir.join(name);
    let file = File::create(&path).map_err(|e| (path.clone(), e))?;
    Ok((path, file))
}

/// The compressor's input, shown to the inspector as it is read: the
/// bytes are in memory anyway, so seeing them costs no I/O.
struct Watched<'a, R> {
    inner: R,
    inspector: Option<&'a mut Inspector>,
    at: u64,
}

impl<R: Read> Read for Watched<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(i) = self.inspector.as_deref_mut() {
            if !i.done() {
                i.feed_at(self.at, &buf[..n]);
            }
        }
        self.at += n as u64;
        Ok(n)
    }
}

/// An input published as it is (already compressed): hashed now, left to
/// its upload (`defer`), or known from the stamp cache without a read.
fn stage_compressed(
    arch: Arch,
    input: &InputFile,
    name: String,
    len: u64,
    opts: Options,
    events: &dyn Events,
) -> std::io::Result<Payload> {
    let path = &input.path;
    let before = FileStamp::of(path).ok().filter(|s| s.size() == len);
    let mut read = 0;
    let (sha256, size, stamp) =
        if let Some(digest) = before.and_then(|s| opts.stamps.digest(path, &s)) {
            events.detail(format!(
            "{arch}: {name}: already compressed, {len} bytes, unchanged since hashed (stamp cache)"
        ));
            (PayloadDigest::known(digest), len, before)
        } else if let Some(stamp) = before.filter(|_| (opts.defer)(arch, &name)) {
            events.detail(format!(
                "{arch}: {name}: already compressed, {len} bytes, hashed while uploading"
            ));
            (PayloadDigest::deferred(), len, Some(stamp))
        } else {
            let bar = events.bar(len, &format!("{arch} hash {name}"));
            let (sha256, size) = hash::hash_file_with_progress(path, &mut |n| bar.inc(n))?;
            // Changed while we hashed: no stamp, so the upload hashes again.
            let stamp = before.filter(|b| FileStamp::of(path).ok() == Some(*b));
            bar.finish();
            read += size;
            events.detail(format!("{arch}: {name}: already compressed, {size} bytes"));
            (PayloadDigest::known(sha256), size, stamp)
        };
    let mut evidence = None;
    let content = if !opts.inspect {
        None
    } else if let Some(e) = sha256.get().and_then(|d| opts.stamps.evidence(&d)) {
        let c = e.replay();
        events.detail(format!(
            "{arch}: {name}: preflight from the stamp cache: {}",
            c.describe()
        ));
        Some(c)
    } else {
        let (found, n) = crate::inspect::inspect_file(path)?;
        read += n;
        match found {
            Ok((c, e)) => {
                events.detail(format!(
                    "{arch}: {name}: preflight read {n} of {len} bytes: {}",
                    c.describe()
                ));
                evidence = Some(e);
                Some(c)
            }
            Err(why) => {
                events.warn(format!(
                    "{arch}: {name}: preflight cannot look inside: {why}"
                ));
                None
            }
        }
    };
    Ok(Payload {
        name,
        file: path.clone(),
        sha256,
        size,
        compressed_from: None,
        stamp,
        content,
        evidence,
        read,
        raw: None,
    })
}
