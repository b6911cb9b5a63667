//! A channel held in memory: a complete [`Store`] with the same semantics as
//! the real backends, for unit tests of what sits above the store (reading
//! and planning) without a server or a directory.
//!
//! It is not a mock: payloads are create-only and read through their
//! [`Checker`](crate::payload::Checker), a commit replaces SHA256SUMS and its
//! signature in one step and refuses a manifest naming an absent payload,
//! channel files are written only if they are still what was read, and the
//! lock makes a second holder wait. The inherent `*_raw` methods play a
//! hostile or broken hosting (files changed, removed or put back behind the
//! publisher's back); `snapshot`/`restore` roll the whole channel back.
//!
//! Keys are `<arch>/<name>` for files of an arch directory and the bare name
//! for channel files (the ledger).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use sha2::Digest as _;

use super::{stored_digest, FileInfo, Lock, Store, StoreError};
use crate::arch::Arch;
use crate::hash::{self, Digest};
use crate::manifest::{MANIFEST, SIGNATURE};
use crate::payload::Source;

/// The whole content of a [`MemoryStore`], by key.
pub type Snapshot = BTreeMap<String, Vec<u8>>;

#[derive(Default)]
struct Inner {
    files: Mutex<Snapshot>,
    /// Whether the publisher lock is held.
    held: Mutex<bool>,
    released: Condvar,
}

/// An in-memory channel; clones share it (two handles are two publishers
/// on one hosting).
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn key(arch: Arch, name: &str) -> String {
    format!("{}/{name}", arch.systemd())
}

/// How errors name a key.
fn location(key: &str) -> PathBuf {
    PathBuf::from(format!("memory:{key}"))
}

/// Whether `name` can be a payload: not SHA256SUMS, its signature, nor a
/// hidden (scratch) or nested name.
fn is_payload_name(name: &str) -> bool {
    !name.starts_with('.') && !name.contains('/') && name != MANIFEST && name != SIGNATURE
}

/// Held publisher lock; dropping it lets the next waiter in.
struct Held {
    inner: Arc<Inner>,
}

impl Lock for Held {}

impl Drop for Held {
    fn drop(&mut self) {
        *locked(&self.inner.held) = false;
        self.inner.released.notify_one();
    }
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn files(&self) -> MutexGuard<'_, Snapshot> {
        locked(&self.inner.files)
    }

    /// Writes a file of an arch directory behind the publisher's back
    /// (payload, manifest, signature or scratch), replacing any.
    pub fn put_raw(&self, arch: Arch, name: &str, bytes: &[u8]) {
        self.files().insert(key(arch, name), bytes.to_vec());
    }

    /// Removes a file of an arch directory behind the publisher's back;
    /// returns what it held.
    pub fn remove_raw(&self, arch: Arch, name: &str) -> Option<Vec<u8>> {
        self.files().remove(&key(arch, name))
    }

    /// Writes a channel-level file (the ledger) behind the publisher's back.
    pub fn put_raw_channel_file(&self, name: &str, bytes: &[u8]) {
        self.files().insert(name.to_string(), bytes.to_vec());
    }

    /// Removes a channel-level file behind the publisher's back.
    pub fn remove_raw_channel_file(&self, name: &str) -> Option<Vec<u8>> {
        self.files().remove(name)
    }

    /// Everything stored, to put back later with [`MemoryStore::restore`]
    /// (a hosting rolled back to an earlier state).
    pub fn snapshot(&self) -> Snapshot {
        self.files().clone()
    }

    /// Replaces everything stored with `snapshot`.
    pub fn restore(&self, snapshot: Snapshot) {
        *self.files() = snapshot;
    }

    /// Every key stored, sorted: `<arch>/<name>` and channel file names.
    pub fn keys(&self) -> Vec<String> {
        self.files().keys().cloned().collect()
    }

    /// Entries of one arch directory, by name.
    fn entries(&self, arch: Arch) -> BTreeMap<String, FileInfo> {
        let prefix = key(arch, "");
        self.files()
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, v)| {
                let info = FileInfo {
                    size: v.len() as u64,
                };
                (k[prefix.len()..].to_string(), info)
            })
            .collect()
    }
}

impl Store for MemoryStore {
    fn describe(&self) -> String {
        "memory:".into()
    }

    fn lock(&self, _: &dyn crate::progress::Events) -> Result<Box<dyn Lock>, StoreError> {
        let mut held = locked(&self.inner.held);
        while *held {
            held = self
                .inner
                .released
                .wait(held)
                .unwrap_or_else(|e| e.into_inner());
        }
        *held = true;
        Ok(Box::new(Held {
            inner: self.inner.clone(),
        }))
    }

    /// Arch directories holding at least one file, whatever it is.
    fn arches(&self) -> Result<Vec<Arch>, StoreError> {
        let mut out: Vec<Arch> = self
            .files()
            .keys()
            .filter_map(|k| k.split_once('/'))
            .filter(|(dir, _)| Arch::is_arch_dir(dir))
            .filter_map(|(dir, _)| Arch::parse(dir).ok())
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    fn list(&self, arch: Arch) -> Result<BTreeMap<String, FileInfo>, StoreError> {
        let mut entries = self.entries(arch);
        entries.retain(|name, _| is_payload_name(name));
        Ok(entries)
    }

    fn get(&self, arch: Arch, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.files().get(&key(arch, name)).cloned())
    }

    fn put_payload(&self, arch: Arch, name: &str, source: &Source) -> Result<(), StoreError> {
        let k = key(arch, name);
        if let Some(existing) = self.files().get(&k).cloned() {
            return same_or_conflict(&k, &existing, source);
        }
        let mut bytes = Vec::with_capacity(source.size as usize);
        source
            .open()
            .and_then(|mut r| r.read_to_end(&mut bytes))
            .map_err(StoreError::io("reading", &source.path))?;
        let mut files = self.files();
        match files.get(&k).cloned() {
            // Another upload of the name finished meanwhile: the same rules apply.
            Some(theirs) => {
                drop(files);
                same_or_conflict(&k, &theirs, source)
            }
            None => {
                files.insert(k, bytes);
                Ok(())
            }
        }
    }

    fn commit(
        &self,
        arch: Arch,
        manifest: &[u8],
        signature: &[u8],
        names: &[&str],
    ) -> Result<(), StoreError> {
        let mut files = self.files();
        if let Some(missing) = names.iter().find(|n| !files.contains_key(&key(arch, n))) {
            return Err(StoreError::Layout {
                path: location(&key(arch, missing)),
                message: "is not stored; refusing to publish a manifest that names it".into(),
            });
        }
        files.insert(key(arch, MANIFEST), manifest.to_vec());
        files.insert(key(arch, SIGNATURE), signature.to_vec());
        Ok(())
    }

    /// Refuses to delete SHA256SUMS or its signature: a caller asking for it
    /// has mistaken them for a payload.
    fn delete(&self, arch: Arch, name: &str) -> Result<(), StoreError> {
        if !is_payload_name(name) {
            return Err(StoreError::Layout {
                path: location(&key(arch, name)),
                message: "is not a payload; only payloads are deleted".into(),
            });
        }
        self.files().remove(&key(arch, name));
        Ok(())
    }

    fn get_channel_file(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.files().get(name).cloned())
    }

    /// Written only if the file is still `previous` (absent for `None`).
    fn put_channel_file(
        &self,
        name: &str,
        bytes: &[u8],
        previous: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let mut files = self.files();
        if files.get(name).map(Vec::as_slice) != previous {
            return Err(StoreError::Changed {
                url: location(name).display().to_string(),
            });
        }
        files.insert(name.to_string(), bytes.to_vec());
        Ok(())
    }

    /// Scratch is every hidden name of the arch directory (upload
    /// temporaries, the parked pending signature); payloads and the manifest
    /// stay.
    fn clear_scratch(&self, arch: Arch) -> Result<(), StoreError> {
        let prefix = key(arch, ".");
        self.files().retain(|k, _| !k.starts_with(&prefix));
        Ok(())
    }

    /// Between memory stores the copy never leaves them.
    fn copy_payload(
        &self,
        arch: Arch,
        name: &str,
        from: &dyn Store,
        sha256: Digest,
        _size: u64,
    ) -> Result<bool, StoreError> {
        let Some(other) = (from as &dyn std::any::Any).downcast_ref::<MemoryStore>() else {
            return Ok(false);
        };
        let Some(bytes) = other.get(arch, name)? else {
            return Err(StoreError::Layout {
                path: location(&key(arch, name)),
                message: "is not there to copy".into(),
            });
        };
        let k = key(arch, name);
        let mut files = self.files();
        if let Some(existing) = files.get(&k) {
            let theirs: Digest = sha2::Sha256::digest(existing).into();
            if theirs != sha256 {
                return Err(StoreError::Conflict {
                    path: location(&k),
                    existing: hash::to_hex(&theirs),
                });
            }
            return Ok(true);
        }
        files.insert(k, bytes);
        Ok(true)
    }

    fn download(
        &self,
        arch: Arch,
        name: &str,
        to: &mut dyn std::io::Write,
    ) -> Result<Option<u64>, StoreError> {
        let Some(bytes) = self.get(arch, name)? else {
            return Ok(None);
        };
        to.write_all(&bytes)
            .map_err(StoreError::io("writing", &location(&key(arch, name))))?;
        Ok(Some(bytes.len() as u64))
    }

    fn hash(
        &self,
        arch: Arch,
        name: &str,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Option<(Digest, u64)>, StoreError> {
        let Some(bytes) = self.get(arch, name)? else {
            return Ok(None);
        };
        let digest: Digest = sha2::Sha256::digest(&bytes).into();
        progress(bytes.len() as u64);
        Ok(Some((digest, bytes.len() as u64)))
    }
}

/// A payload already stored under the name: fine with the same bytes.
fn same_or_conflict(key: &str, existing: &[u8], source: &Source) -> Result<(), StoreError> {
    let theirs: Digest = sha2::Sha256::digest(existing).into();
    if theirs == stored_digest(source)? && existing.len() as u64 == source.size {
        return Ok(());
    }
    Err(StoreError::Conflict {
        path: location(key),
        existing: hash::to_hex(&theirs),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;
    use crate::payload::PayloadDigest;

    fn x86() -> Arch {
        Arch::parse("x86-64").unwrap()
    }

    fn arm() -> Arch {
        Arch::parse("arm64").unwrap()
    }

    /// A staged payload holding `bytes`, its hash left to the upload.
    fn staged(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> Source {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        Source::from_file(&path, PayloadDigest::deferred()).unwrap()
    }

    #[test]
    fn payloads_are_create_only_and_read_through_their_checker() {
        let dir = tempfile::tempdir().unwrap();
        let store = MemoryStore::new();
        let source = staged(&dir, "a", b"payload");
        store.put_payload(x86(), "a_1.raw", &source).unwrap();
        assert_eq!(
            source.sha256.get(),
            Some(hash::hash_file(&source.path).unwrap().0),
            "the upload learned the deferred hash"
        );
        store.put_payload(x86(), "a_1.raw", &source).unwrap();
        let other = staged(&dir, "b", b"changed");
        let e = store.put_payload(x86(), "a_1.raw", &other).unwrap_err();
        assert!(matches!(e, StoreError::Conflict { .. }), "{e}");
        assert_eq!(store.get(x86(), "a_1.raw").unwrap().unwrap(), b"payload");

        let mut lying = staged(&dir, "c", b"bytes");
        lying.sha256 = PayloadDigest::known([0; 32]);
        lying.stamp = None;
        assert!(store.put_payload(x86(), "c_1.raw", &lying).is_err());
        assert_eq!(
            store.get(x86(), "c_1.raw").unwrap(),
            None,
            "nothing half-stored"
        );
    }

    #[test]
    fn commit_switches_manifest_and_signature_together_and_needs_every_payload() {
        let dir = tempfile::tempdir().unwrap();
        let store = MemoryStore::new();
        let e = store.commit(x86(), b"m1", b"s1", &["a_1.raw"]).unwrap_err();
        assert!(matches!(e, StoreError::Layout { .. }), "{e}");
        assert!(store.keys().is_empty(), "a refused commit writes nothing");

        store
            .put_payload(x86(), "a_1.raw", &staged(&dir, "a", b"a"))
            .unwrap();
        store.commit(x86(), b"m1", b"s1", &["a_1.raw"]).unwrap();
        store.commit(x86(), b"m2", b"s2", &["a_1.raw"]).unwrap();
        assert_eq!(store.get(x86(), MANIFEST).unwrap().unwrap(), b"m2");
        assert_eq!(store.get(x86(), SIGNATURE).unwrap().unwrap(), b"s2");
        let listed: Vec<_> = store.list(x86()).unwrap().into_keys().collect();
        assert_eq!(
            listed,
            ["a_1.raw"],
            "manifest and signature are no payloads"
        );
        assert_eq!(store.served(x86()).unwrap(), store.list(x86()).unwrap());
        assert_eq!(store.list(arm()).unwrap(), BTreeMap::new());
    }

    #[test]
    fn channel_files_are_written_only_over_what_was_read() {
        let store = MemoryStore::new();
        assert_eq!(store.get_channel_file("ledger.jsonl").unwrap(), None);
        store.put_channel_file("ledger.jsonl", b"1", None).unwrap();
        let e = store
            .put_channel_file("ledger.jsonl", b"2", None)
            .unwrap_err();
        assert!(matches!(e, StoreError::Changed { .. }), "{e}");
        let e = store
            .put_channel_file("ledger.jsonl", b"2", Some(b"0"))
            .unwrap_err();
        assert!(matches!(e, StoreError::Changed { .. }), "{e}");
        store
            .put_channel_file("ledger.jsonl", b"2", Some(b"1"))
            .unwrap();
        assert_eq!(
            store.get_channel_file("ledger.jsonl").unwrap().unwrap(),
            b"2"
        );
        store.remove_raw_channel_file("ledger.jsonl");
        let e = store
            .put_channel_file("ledger.jsonl", b"3", Some(b"2"))
            .unwrap_err();
        assert!(
            matches!(e, StoreError::Changed { .. }),
            "deleted behind our back: {e}"
        );
    }

    #[test]
    fn a_second_publisher_waits_for_the_lock() {
        let store = MemoryStore::new();
        let first = store.lock(&crate::progress::Silent).unwrap();
        let (tx, rx) = mpsc::channel();
        let other = store.clone();
        let waiter = std::thread::spawn(move || {
            let _second = other.lock(&crate::progress::Silent).unwrap();
            tx.send(()).unwrap();
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "took a held lock"
        );
        drop(first);
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the lock was released");
        waiter.join().unwrap();
        drop(store.lock(&crate::progress::Silent).unwrap());
    }

    #[test]
    fn arches_are_the_arch_directories_holding_files() {
        let store = MemoryStore::new();
        assert!(store.arches().unwrap().is_empty());
        store.put_raw(arm(), "SHA256SUMS", b"");
        store.put_raw(x86(), "a_1.raw", b"");
        store.put_raw_channel_file("ledger.jsonl", b"");
        store.put_raw_channel_file("docs/index.html", b"");
        store.put_raw_channel_file(".hidden/x", b"");
        assert_eq!(store.arches().unwrap(), [x86(), arm()]);
    }

    #[test]
    fn clear_scratch_keeps_payloads_and_manifests() {
        let store = MemoryStore::new();
        for name in [
            "a_1.raw",
            MANIFEST,
            SIGNATURE,
            ".pending/SHA256SUMS.gpg",
            ".uploads/1-a",
        ] {
            store.put_raw(x86(), name, b"x");
        }
        store.put_raw(arm(), ".tmp-1-a", b"x");
        store.clear_scratch(x86()).unwrap();
        assert_eq!(
            store.keys(),
            [
                "arm64/.tmp-1-a",
                "x86-64/SHA256SUMS",
                "x86-64/SHA256SUMS.gpg",
                "x86-64/a_1.raw"
            ]
        );
    }

    #[test]
    fn deleting_takes_payloads_only() {
        let store = MemoryStore::new();
        store.put_raw(x86(), "a_1.raw", b"x");
        store.put_raw(x86(), MANIFEST, b"m");
        store.delete(x86(), "a_1.raw").unwrap();
        store.delete(x86(), "a_1.raw").unwrap();
        let e = store.delete(x86(), MANIFEST).unwrap_err();
        assert!(matches!(e, StoreError::Layout { .. }), "{e}");
        assert_eq!(store.keys(), ["x86-64/SHA256SUMS"]);
    }

    #[test]
    fn hashes_and_a_hosting_rolled_back() {
        let store = MemoryStore::new();
        store.put_raw(x86(), "a_1.raw", b"abc");
        let before = store.snapshot();
        let mut seen = 0;
        let (digest, size) = store
            .payload_hash(x86(), "a_1.raw", &mut |n| seen += n)
            .unwrap()
            .unwrap();
        assert_eq!((size, seen), (3, 3));
        assert_eq!(
            hash::to_hex(&digest),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        store.put_raw(x86(), "a_1.raw", b"abd");
        assert_ne!(
            store
                .hash(x86(), "a_1.raw", &mut |_| {})
                .unwrap()
                .unwrap()
                .0,
            digest
        );
        assert_eq!(store.remove_raw(x86(), "a_1.raw").unwrap(), b"abd");
        assert_eq!(store.hash(x86(), "a_1.raw", &mut |_| {}).unwrap(), None);
        store.restore(before);
        assert_eq!(store.get(x86(), "a_1.raw").unwrap().unwrap(), b"abc");
    }
}
