//! A staged payload's identity as the hosting layer sees it: its path, size,
//! SHA-256 (known, or learned by the one read that uploads it) and the file
//! stamp that proves the bytes did not change since staging.
//!
//! Staging creates these and the store backends read through them; they live
//! here, below both, so neither has to import the other.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use sha2::Digest as _;

use crate::hash::{self, Digest};

/// What tells a file's content changed without reading it: every write
/// updates ctime (nanoseconds), a replacement changes the inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

    /// `stamp` with one field changed, for each field (tests of what
    /// relies on stamps).
    #[cfg(test)]
    pub(crate) fn each_field_changed(stamp: &FileStamp) -> Vec<FileStamp> {
        let s = *stamp;
        vec![
            FileStamp {
                dev: s.dev + 1,
                ..s
            },
            FileStamp {
                ino: s.ino + 1,
                ..s
            },
            FileStamp {
                size: s.size + 1,
                ..s
            },
            FileStamp {
                mtime: (s.mtime.0, s.mtime.1 + 1),
                ..s
            },
            FileStamp {
                ctime: (s.ctime.0 + 1, s.ctime.1),
                ..s
            },
        ]
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
    /// The file as it is now, without progress reporting (tools and tests;
    /// staging builds its sources from what it hashed).
    pub fn from_file(path: &Path, sha256: PayloadDigest) -> io::Result<Source> {
        Ok(Source {
            path: path.to_path_buf(),
            sha256,
            size: std::fs::metadata(path)?.len(),
            stamp: Some(FileStamp::of(path)?),
            progress: Arc::new(|_| {}),
        })
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    fn source(path: &Path, sha256: PayloadDigest) -> Source {
        Source::from_file(path, sha256).unwrap()
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
