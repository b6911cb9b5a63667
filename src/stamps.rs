//! The stamp cache: what earlier runs learned about payload files, so a
//! rerun on unchanged build outputs reads none of their bytes.
//!
//! A file's SHA-256 is reused only while its stamp (device, inode, size,
//! mtime, ctime: a write always moves ctime, which no user can set) is the
//! one recorded with it; `/nix/store` paths are immutable, so there path and
//! size suffice. What preflight read of a payload (its [`Evidence`]) is kept
//! by content hash: the same bytes always show the same evidence.
//!
//! Raw outputs we compress leave their compressed copy here too
//! (`compressed/`), recorded with the raw file's stamp and the compression
//! settings: a rerun on the unchanged file publishes the copy instead of
//! spending minutes of xz to learn nothing changed. Copies unused for a day
//! are deleted.
//!
//! Everything here is an optimisation: an unreadable, corrupt or foreign
//! cache is ignored (the files are read again), and `--deep` switches it off.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::hash::{self, Digest};
use crate::image::Evidence;
use crate::payload::FileStamp;

/// The file that holds the recorded hashes, in the cache directory.
const HASHES: &str = "hashes.json";
/// Evidence files live under this subdirectory, one per content hash.
const EVIDENCE: &str = "evidence";
/// Records kept: the most recently used ones (a few releases' worth of
/// outputs for many arches), so the file stays small.
const KEEP: usize = 4096;
/// Evidence larger than this is not kept (the inspector reads far less).
const EVIDENCE_MAX: usize = 4 << 20;
/// Our compressed copies of raw build outputs live in this subdirectory.
const COMPRESSED: &str = "compressed";
/// A compressed copy unused for this long is deleted. A copy is reused only
/// while used within half of it, so a run that saves while another uploads
/// from a copy never deletes it (unless the other ran for twelve hours).
const COMPRESSED_MAX_AGE: u64 = 24 * 3600;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Record {
    stamp: FileStamp,
    sha256: String,
    /// Seconds since the epoch when last used: what [`KEEP`] keeps.
    used: u64,
}

/// A raw build output file and our compressed copy of it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct CompressedRecord {
    /// The raw file's stamp when it was compressed.
    stamp: FileStamp,
    /// The compression settings that made the copy (same settings, same bytes).
    settings: String,
    /// The copy, in [`COMPRESSED`]; its own hash is a [`Record`].
    copy: PathBuf,
    used: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Records {
    /// The format; any other is ignored.
    schema: u32,
    files: BTreeMap<PathBuf, Record>,
    /// Keyed by the raw file's resolved path.
    #[serde(default)]
    compressed: BTreeMap<PathBuf, CompressedRecord>,
}

/// Hashes and evidence from earlier runs (see the module documentation).
#[derive(Debug)]
pub struct StampCache {
    dir: Option<PathBuf>,
    records: Mutex<Records>,
}

impl StampCache {
    /// No cache: every file is read (`--deep`, tests).
    pub fn off() -> StampCache {
        StampCache {
            dir: None,
            records: Mutex::new(Records::default()),
        }
    }

    /// `$SYSUPDATE_PUBLISH_CACHE_DIR`, else `$XDG_CACHE_HOME/sysupdate-publish`,
    /// else `~/.cache/sysupdate-publish`.
    pub fn default_dir() -> Option<PathBuf> {
        let var = |k| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        var("SYSUPDATE_PUBLISH_CACHE_DIR")
            .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("sysupdate-publish")))
            .or_else(|| var("HOME").map(|d| d.join(".cache/sysupdate-publish")))
    }

    /// The cache in `dir`; what cannot be read there counts as empty.
    pub fn open(dir: &Path) -> StampCache {
        let records = fs::read(dir.join(HASHES))
            .ok()
            .and_then(|b| serde_json::from_slice::<Records>(&b).ok())
            .filter(|r| r.schema == 1)
            .unwrap_or_default();
        StampCache {
            dir: Some(dir.to_path_buf()),
            records: Mutex::new(records),
        }
    }

    /// The recorded hash of `path`, if its stamp is still `stamp`.
    pub fn digest(&self, path: &Path, stamp: &FileStamp) -> Option<Digest> {
        self.dir.as_ref()?;
        let key = key(path)?;
        let mut records = self.records.lock().unwrap();
        let record = records.files.get_mut(&key)?;
        let same = unchanged(&key, &record.stamp, stamp);
        let digest = same.then(|| hex::decode(&record.sha256).ok())??;
        record.used = now();
        digest.try_into().ok()
    }

    /// Records what a complete read of `path` found while its stamp was `stamp`.
    pub fn remember(&self, path: &Path, stamp: &FileStamp, digest: &Digest) {
        if self.dir.is_none() {
            return;
        }
        let Some(key) = key(path) else { return };
        let record = Record {
            stamp: *stamp,
            sha256: hash::to_hex(digest),
            used: now(),
        };
        self.records.lock().unwrap().files.insert(key, record);
    }

    /// Whether there is a cache (not `--deep`, not switched off).
    pub fn is_on(&self) -> bool {
        self.dir.is_some()
    }

    /// Where compressed copies of raw outputs go (`None`: no cache, use
    /// the run's staging directory).
    pub fn compressed_dir(&self) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?.join(COMPRESSED);
        fs::create_dir_all(&dir).ok()?;
        Some(dir)
    }

    /// Our compressed copy of `raw`, made with `settings` while `raw` had
    /// the stamp it has now, if the copy is itself unchanged (its hash is
    /// then [`StampCache::digest`]'s) and was used recently enough not to be
    /// pruned under us.
    pub fn compressed_copy(
        &self,
        raw: &Path,
        stamp: &FileStamp,
        settings: &str,
    ) -> Option<PathBuf> {
        self.dir.as_ref()?;
        let key = key(raw)?;
        let copy = {
            let mut records = self.records.lock().unwrap();
            let r = records.compressed.get_mut(&key)?;
            let same = unchanged(&key, &r.stamp, stamp);
            let fresh = now().saturating_sub(r.used) < COMPRESSED_MAX_AGE / 2;
            if !(same && fresh && r.settings == settings) {
                return None;
            }
            r.used = now();
            r.copy.clone()
        };
        let copy_stamp = FileStamp::of(&copy).ok()?;
        self.digest(&copy, &copy_stamp).map(|_| copy)
    }

    /// Records `copy` as `raw` compressed with `settings` while `raw` had
    /// `stamp`; the copy's own hash goes in with [`StampCache::remember`].
    pub fn remember_compressed(&self, raw: &Path, stamp: &FileStamp, settings: &str, copy: &Path) {
        if self.dir.is_none() {
            return;
        }
        let Some(key) = key(raw) else { return };
        let record = CompressedRecord {
            stamp: *stamp,
            settings: settings.to_string(),
            copy: copy.to_path_buf(),
            used: now(),
        };
        self.records.lock().unwrap().compressed.insert(key, record);
    }

    /// What preflight saw in the payload whose SHA-256 is `digest`.
    pub fn evidence(&self, digest: &Digest) -> Option<Evidence> {
        let path = self.evidence_path(digest)?;
        decode(&fs::read(path).ok()?)
    }

    /// Keeps `evidence` for the payload whose SHA-256 is `digest`.
    pub fn remember_evidence(&self, digest: &Digest, evidence: &Evidence) {
        let Some(path) = self.evidence_path(digest) else {
            return;
        };
        let bytes = encode(evidence);
        if bytes.len() <= EVIDENCE_MAX {
            // Best effort: a cache that cannot be written is only slower.
            let _ = write_atomic(&path, &bytes);
        }
    }

    fn evidence_path(&self, digest: &Digest) -> Option<PathBuf> {
        Some(self.dir.as_ref()?.join(EVIDENCE).join(hash::to_hex(digest)))
    }

    /// Writes the records back (atomically: a concurrent run loses at most
    /// its own additions). Keeps the [`KEEP`] most recently used.
    pub fn save(&self) -> io::Result<()> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let mut records = self.records.lock().unwrap();
        records.schema = 1;
        if records.files.len() > KEEP {
            let mut used: Vec<u64> = records.files.values().map(|r| r.used).collect();
            used.sort_unstable_by(|a, b| b.cmp(a));
            let cutoff = used[KEEP - 1];
            records.files.retain(|_, r| r.used >= cutoff);
        }
        let cutoff = now().saturating_sub(COMPRESSED_MAX_AGE);
        records.compressed.retain(|_, r| r.used >= cutoff);
        prune_copies(&dir.join(COMPRESSED), &records, cutoff);
        let bytes = serde_json::to_vec(&*records).map_err(io::Error::other)?;
        write_atomic(&dir.join(HASHES), &bytes)
    }
}

/// Deletes the compressed copies no record names that were made before
/// `cutoff` (younger ones may be a concurrent run's, not recorded yet).
fn prune_copies(dir: &Path, records: &Records, cutoff: u64) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let named: std::collections::BTreeSet<&Path> = records
        .compressed
        .values()
        .map(|r| r.copy.as_path())
        .collect();
    for entry in entries.flatten() {
        let path = entry.path();
        let made = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        if made < cutoff && !named.contains(path.as_path()) {
            // Best effort, like the rest of the cache.
            let _ = fs::remove_file(&path);
        }
    }
}

/// Whether the file at resolved path `key` is still what it was when
/// `recorded`: the whole stamp, or for an immutable `/nix/store` path its size.
fn unchanged(key: &Path, recorded: &FileStamp, now: &FileStamp) -> bool {
    if key.starts_with("/nix/store/") {
        recorded.size() == now.size()
    } else {
        recorded == now
    }
}

/// Records are keyed by the resolved path, so a link into `/nix/store` is
/// recognised as immutable and two names for one file share a record.
fn key(path: &Path) -> Option<PathBuf> {
    fs::canonicalize(path).ok()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Evidence on disk: `u8` has-size, `u64` size, then per chunk `u64` offset,
/// `u64` length, bytes (little-endian).
fn encode(evidence: &Evidence) -> Vec<u8> {
    let mut out = Vec::new();
    out.push(evidence.exact_size.is_some() as u8);
    out.extend(evidence.exact_size.unwrap_or(0).to_le_bytes());
    for (offset, bytes) in &evidence.chunks {
        out.extend(offset.to_le_bytes());
        out.extend((bytes.len() as u64).to_le_bytes());
        out.extend(bytes);
    }
    out
}

/// `None` for anything [`encode`] did not write.
fn decode(mut data: &[u8]) -> Option<Evidence> {
    fn u64_at(data: &mut &[u8]) -> Option<u64> {
        let (head, rest) = data.split_first_chunk::<8>()?;
        *data = rest;
        Some(u64::from_le_bytes(*head))
    }
    let (&has_size, rest) = data.split_first()?;
    data = rest;
    let size = u64_at(&mut data)?;
    let exact_size = match has_size {
        0 => None,
        1 => Some(size),
        _ => return None,
    };
    let mut chunks = Vec::new();
    while !data.is_empty() {
        let offset = u64_at(&mut data)?;
        let len = usize::try_from(u64_at(&mut data)?).ok()?;
        if len > data.len() {
            return None;
        }
        let (bytes, rest) = data.split_at(len);
        chunks.push((offset, bytes.to_vec()));
        data = rest;
    }
    Some(Evidence { chunks, exact_size })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn touch(path: &Path, data: &[u8]) -> FileStamp {
        fs::write(path, data).unwrap();
        FileStamp::of(path).unwrap()
    }

    /// Makes every compressed copy's record `secs` older.
    fn age_copies(cache: &StampCache, secs: u64) {
        let mut records = cache.records.lock().unwrap();
        records.compressed.values_mut().for_each(|r| r.used -= secs);
    }

    /// A file `name` holding `data` in a new directory, and a cache in its
    /// `cache/` (the directory lives as long as the first item).
    fn fixture(name: &str, data: &[u8]) -> (tempfile::TempDir, PathBuf, FileStamp, StampCache) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(name);
        let stamp = touch(&file, data);
        let cache = StampCache::open(&dir.path().join("cache"));
        (dir, file, stamp, cache)
    }

    #[test]
    fn a_hash_is_reused_only_while_the_stamp_holds_and_survives_a_save() {
        let (dir, file, stamp, cache) = fixture("store_18.img.xz", b"payload");
        assert_eq!(cache.digest(&file, &stamp), None);
        cache.remember(&file, &stamp, &[7; 32]);
        assert_eq!(cache.digest(&file, &stamp), Some([7; 32]));
        cache.save().unwrap();
        let again = StampCache::open(&dir.path().join("cache"));
        assert_eq!(again.digest(&file, &stamp), Some([7; 32]));
    }

    /// Every field of the stamp on its own invalidates the record.
    #[test]
    fn any_stamp_field_changing_invalidates() {
        let (_dir, file, stamp, cache) = fixture("p", b"payload");
        cache.remember(&file, &stamp, &[1; 32]);
        for changed in FileStamp::each_field_changed(&stamp) {
            assert_eq!(cache.digest(&file, &changed), None, "{changed:?}");
        }
        assert_eq!(cache.digest(&file, &stamp), Some([1; 32]));
    }

    /// A real rewrite of the file, even to the same size and mtime, moves
    /// ctime: the new stamp no longer matches.
    #[test]
    fn rewriting_the_file_in_place_is_noticed() {
        let (_dir, file, stamp, cache) = fixture("p", b"payload");
        cache.remember(&file, &stamp, &[1; 32]);
        let mtime = fs::metadata(&file).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let f = fs::OpenOptions::new().write(true).open(&file).unwrap();
        std::os::unix::fs::FileExt::write_at(&f, b"P", 0).unwrap();
        f.set_modified(mtime).unwrap();
        drop(f);
        assert_eq!(fs::metadata(&file).unwrap().modified().unwrap(), mtime);
        assert_eq!(cache.digest(&file, &FileStamp::of(&file).unwrap()), None);
    }

    /// A raw file compressed once: its copy is found while the raw file,
    /// the settings and the copy are unchanged, and across a save.
    #[test]
    fn a_compressed_copy_is_reused_only_while_all_three_hold() {
        let (dir, raw, stamp, cache) = fixture("store_18.img", b"raw image");
        let copy = cache
            .compressed_dir()
            .unwrap()
            .join("x86-64-store_18.img.xz.1");
        let copy_stamp = touch(&copy, b"compressed image");
        let digest = hash::hash_file(&copy).unwrap().0;
        cache.remember(&copy, &copy_stamp, &digest);
        cache.remember_compressed(&raw, &stamp, "xz 6", &copy);
        cache.save().unwrap();

        let cache = StampCache::open(&dir.path().join("cache"));
        assert_eq!(
            cache.compressed_copy(&raw, &stamp, "xz 6"),
            Some(copy.clone())
        );
        assert_eq!(cache.compressed_copy(&raw, &stamp, "xz 9"), None);
        for changed in FileStamp::each_field_changed(&stamp) {
            assert_eq!(cache.compressed_copy(&raw, &changed, "xz 6"), None);
        }
        // Recorded long ago: a concurrent run may prune it, so it is not used.
        age_copies(&cache, COMPRESSED_MAX_AGE / 2);
        assert_eq!(cache.compressed_copy(&raw, &stamp, "xz 6"), None);
        cache.remember_compressed(&raw, &stamp, "xz 6", &copy);
        touch(&copy, b"compressed imagE");
        assert_eq!(cache.compressed_copy(&raw, &stamp, "xz 6"), None);
    }

    /// Saving deletes copies no record names once they are a day old, and
    /// records unused for a day with them; young strays (a concurrent
    /// run's) stay.
    #[test]
    fn saving_prunes_old_copies_and_keeps_young_strays() {
        let (_dir, raw, stamp, cache) = fixture("store_18.img", b"raw");
        let copies = cache.compressed_dir().unwrap();
        let old = |name: &str| {
            let path = copies.join(name);
            touch(&path, b"copy");
            let day_ago =
                SystemTime::now() - std::time::Duration::from_secs(COMPRESSED_MAX_AGE + 60);
            fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(day_ago)
                .unwrap();
            path
        };
        let recorded = old("recorded");
        let stray = old("stray");
        let young = copies.join("young");
        touch(&young, b"copy");
        cache.remember_compressed(&raw, &stamp, "xz 6", &recorded);
        cache.save().unwrap();
        assert!(recorded.exists() && young.exists() && !stray.exists());

        age_copies(&cache, COMPRESSED_MAX_AGE + 60);
        cache.save().unwrap();
        assert!(!recorded.exists() && young.exists());
        assert!(cache.records.lock().unwrap().compressed.is_empty());
    }

    #[test]
    fn off_and_corrupt_caches_know_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p");
        let stamp = touch(&file, b"payload");
        let off = StampCache::off();
        off.remember(&file, &stamp, &[1; 32]);
        assert_eq!(off.digest(&file, &stamp), None);
        off.save().unwrap();
        for junk in [&b"{"[..], b"[]", br#"{"schema":2,"files":{}}"#, b"\xff\xfe"] {
            fs::write(dir.path().join(HASHES), junk).unwrap();
            let cache = StampCache::open(dir.path());
            assert_eq!(cache.digest(&file, &stamp), None);
            cache.remember(&file, &stamp, &[2; 32]);
            cache.save().unwrap();
            assert_eq!(
                StampCache::open(dir.path()).digest(&file, &stamp),
                Some([2; 32])
            );
        }
    }

    #[test]
    fn evidence_round_trips_by_content_hash() {
        let dir = tempfile::tempdir().unwrap();
        let cache = StampCache::open(dir.path());
        let ev = Evidence {
            chunks: vec![(0, b"MZ".to_vec()), (4096, vec![9; 100])],
            exact_size: Some(5000),
        };
        assert_eq!(cache.evidence(&[3; 32]), None);
        cache.remember_evidence(&[3; 32], &ev);
        assert_eq!(cache.evidence(&[3; 32]), Some(ev));
        assert_eq!(StampCache::off().evidence(&[3; 32]), None);
    }

    proptest! {
        #[test]
        fn evidence_decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&data);
        }

        #[test]
        fn evidence_encoding_round_trips(
            chunks in proptest::collection::vec((any::<u64>(), proptest::collection::vec(any::<u8>(), 0..16)), 0..4),
            exact_size in proptest::option::of(any::<u64>()),
        ) {
            let ev = Evidence { chunks, exact_size };
            prop_assert_eq!(decode(&encode(&ev)), Some(ev));
        }
    }
}
