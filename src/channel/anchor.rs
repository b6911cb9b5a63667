//! The history head this machine last wrote or saw, per channel, kept
//! outside the hosting (like TUF's trusted timestamp). A hosting that puts
//! back older manifests *and* the matching older history passes every
//! signature check; only a record kept elsewhere tells it happened. The
//! record also says whether every arch was seen serving the head: then an
//! arch serving the previous state again was put back by the hosting, not
//! left behind by a write interrupted before switching it.
//!
//! One small JSON file per channel in `$SYSUPDATE_PUBLISH_STATE_DIR`, else
//! `$XDG_STATE_HOME/sysupdate-publish`, else `~/.local/state/sysupdate-publish`.
//! CI keeps it by caching that directory between runs (or pointing the
//! variable at a persistent volume); without it the check is skipped and
//! `status` says so.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use thiserror::Error;

use super::problem::Problem;
use crate::ledger::Ledger;

pub const STATE_DIR_ENV: &str = "SYSUPDATE_PUBLISH_STATE_DIR";

#[derive(Debug, Error)]
pub enum AnchorError {
    #[error("{path}: {message} (this machine's record of the channel's history; see README, \"Where the remembered head lives\")")]
    Io { path: PathBuf, message: String },
}

/// What this machine remembers of one channel's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remembered {
    /// The store it belongs to, for people reading the file.
    pub store: String,
    pub seq: u64,
    /// SHA-256 of entry `seq`'s JSON.
    pub hash: String,
    /// Every arch was seen serving that entry's state. Then an arch that
    /// serves the previous state again was put back by the hosting, not
    /// left behind by an interrupted write.
    #[serde(default)]
    pub complete: bool,
}

impl Remembered {
    /// The problem, if `ledger` is not this head or a continuation of it.
    pub fn check(&self, ledger: &Ledger) -> Option<Problem> {
        let found = ledger.hash_of(self.seq);
        (found.as_deref() != Some(self.hash.as_str())).then(|| Problem::HistoryRolledBack {
            remembered_seq: self.seq,
            remembered_hash: self.hash.clone(),
            found_seq: ledger.len(),
        })
    }
}

/// Where one channel's remembered head lives.
#[derive(Clone, Debug)]
pub struct Anchor {
    path: PathBuf,
    store: String,
}

/// The state directory, when one can be named.
pub fn state_dir() -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env(STATE_DIR_ENV)
        .or_else(|| env("XDG_STATE_HOME").map(|d| d.join("sysupdate-publish")))
        .or_else(|| env("HOME").map(|d| d.join(".local/state/sysupdate-publish")))
}

impl Anchor {
    /// The anchor of the channel at `store` (its description: path or URL)
    /// in the default state directory.
    pub fn for_store(store: &str) -> Option<Anchor> {
        state_dir().map(|dir| Anchor::in_dir(&dir, store))
    }

    pub fn in_dir(dir: &Path, store: &str) -> Anchor {
        let id = hex::encode(&sha2::Sha256::digest(store.as_bytes())[..16]);
        Anchor {
            path: dir.join("heads").join(format!("{id}.json")),
            store: store.to_string(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, message: String) -> AnchorError {
        AnchorError::Io {
            path: self.path.clone(),
            message,
        }
    }

    pub fn load(&self) -> Result<Option<Remembered>, AnchorError> {
        match std::fs::read(&self.path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| self.err(format!("not a remembered head ({e}); delete it only if you trust the hosting's history"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err(e.to_string())),
        }
    }

    /// Remembers `ledger`'s head (atomically: a crash leaves the old one),
    /// and whether every arch serves it.
    pub fn remember(&self, ledger: &Ledger, complete: bool) -> Result<(), AnchorError> {
        let r = Remembered {
            store: self.store.clone(),
            seq: ledger.len(),
            hash: ledger.head_hash(),
            complete,
        };
        if self.load().ok().flatten().as_ref() == Some(&r) {
            return Ok(());
        }
        let dir = self.path.parent().expect("anchor paths have a parent");
        std::fs::create_dir_all(dir).map_err(|e| self.err(e.to_string()))?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| self.err(e.to_string()))?;
        serde_json::to_writer_pretty(&mut tmp, &r).map_err(|e| self.err(e.to_string()))?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| self.err(e.to_string()))?;
        tmp.persist(&self.path)
            .map_err(|e| self.err(e.to_string()))?;
        Ok(())
    }

    /// Forgets the channel (after `adopt --confirm` accepted the hosting's history).
    pub fn forget(&self) -> Result<(), AnchorError> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.err(e.to_string())),
        }
    }
}
