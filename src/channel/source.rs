//! Where a channel is read from: through its store (what the publisher
//! wrote) or over HTTP(S) from its public URL (what devices fetch). Both go
//! through the same reader, so `status`, `verify` and every write judge a
//! channel by the same rules.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use thiserror::Error;

use crate::arch::Arch;
use crate::hash::Digest;
use crate::http::{Http, HttpError, Response};
use crate::store::{FileInfo, Store, StoreError};

#[derive(Debug, Error)]
pub enum SourceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Http(#[from] HttpError),
}

/// Read access to one channel.
pub trait Source: Sync {
    fn describe(&self) -> String;
    /// The arch directories to read.
    fn arches(&self) -> Result<Vec<Arch>, SourceError>;
    /// A small file of an arch directory as devices see it; `None` when absent.
    fn get(&self, arch: Arch, name: &str) -> Result<Option<Vec<u8>>, SourceError>;
    /// The history file; `None` when absent.
    fn history(&self) -> Result<Option<Vec<u8>>, SourceError>;
    /// Payloads stored for the arch (uploaded, named by a manifest or not).
    fn stored(&self, arch: Arch) -> Result<BTreeMap<String, FileInfo>, SourceError>;
    /// Which of `names` devices can fetch now, with sizes.
    fn served(&self, arch: Arch, names: &[&str])
        -> Result<BTreeMap<String, FileInfo>, SourceError>;
    /// Hashes a file as devices get it (`served`) or as stored; `None` when absent.
    fn hash(
        &self,
        arch: Arch,
        name: &str,
        served: bool,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Option<(Digest, u64)>, SourceError>;
}

/// A channel read through its store.
pub struct StoreSource<'a>(pub &'a dyn Store);

impl Source for StoreSource<'_> {
    fn describe(&self) -> String {
        self.0.describe()
    }
    fn arches(&self) -> Result<Vec<Arch>, SourceError> {
        Ok(self.0.arches()?)
    }
    fn get(&self, arch: Arch, name: &str) -> Result<Option<Vec<u8>>, SourceError> {
        Ok(self.0.get(arch, name)?)
    }
    fn history(&self) -> Result<Option<Vec<u8>>, SourceError> {
        Ok(self.0.get_channel_file(crate::manifest::LEDGER)?)
    }
    fn stored(&self, arch: Arch) -> Result<BTreeMap<String, FileInfo>, SourceError> {
        Ok(self.0.list(arch)?)
    }
    fn served(&self, arch: Arch, _: &[&str]) -> Result<BTreeMap<String, FileInfo>, SourceError> {
        Ok(self.0.served(arch)?)
    }
    fn hash(
        &self,
        arch: Arch,
        name: &str,
        served: bool,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Option<(Digest, u64)>, SourceError> {
        Ok(if served {
            self.0.hash(arch, name, progress)?
        } else {
            self.0.payload_hash(arch, name, progress)?
        })
    }
}

/// A channel read from its public URL, as devices fetch it. It cannot list
/// anything, so the arches come from the caller and the history from the
/// store (devices never read it; what matters is that what they are
/// served is what the history names). Responses are kept, so the
/// device-view checks look at the very responses the reader judged.
pub struct HttpSource<'a> {
    pub http: &'a Http,
    /// The channel root URL, without a trailing slash.
    pub base: String,
    pub arches: Vec<Arch>,
    pub history: Option<Vec<u8>>,
    responses: Mutex<HashMap<(String, bool), Response>>,
}

impl<'a> HttpSource<'a> {
    pub fn new(
        http: &'a Http,
        base: &str,
        arches: Vec<Arch>,
        history: Option<Vec<u8>>,
    ) -> HttpSource<'a> {
        HttpSource {
            http,
            base: base.trim_end_matches('/').to_string(),
            arches,
            history,
            responses: Mutex::new(HashMap::new()),
        }
    }

    pub fn url(&self, arch: Arch, name: &str) -> String {
        format!("{}/{arch}/{name}", self.base)
    }

    /// GET (`body`) or HEAD of a file, fetched once.
    pub fn response(&self, arch: Arch, name: &str, body: bool) -> Result<Response, HttpError> {
        let url = self.url(arch, name);
        let key = (url.clone(), body);
        if let Some(r) = self.lock().get(&key) {
            return Ok(r.clone());
        }
        let r = if body {
            self.http.get(&url)?
        } else {
            self.http.head(&url)?
        };
        self.lock().insert(key, r.clone());
        Ok(r)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, bool), Response>> {
        self.responses.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Source for HttpSource<'_> {
    fn describe(&self) -> String {
        self.base.clone()
    }
    fn arches(&self) -> Result<Vec<Arch>, SourceError> {
        Ok(self.arches.clone())
    }
    /// Anything but a 200 reads as absent; the device-view checks report
    /// the status itself.
    fn get(&self, arch: Arch, name: &str) -> Result<Option<Vec<u8>>, SourceError> {
        let r = self.response(arch, name, true)?;
        Ok((r.status == 200).then_some(r.body))
    }
    fn history(&self) -> Result<Option<Vec<u8>>, SourceError> {
        Ok(self.history.clone())
    }
    fn stored(&self, arch: Arch) -> Result<BTreeMap<String, FileInfo>, SourceError> {
        let _ = arch;
        Ok(BTreeMap::new())
    }
    fn served(
        &self,
        arch: Arch,
        names: &[&str],
    ) -> Result<BTreeMap<String, FileInfo>, SourceError> {
        let mut out = BTreeMap::new();
        for name in names {
            let r = self.response(arch, name, false)?;
            if r.status != 200 {
                continue;
            }
            // Without Content-Length (the device-view checks report that),
            // the body tells the size.
            let size = match r.content_length {
                Some(size) => size,
                None => self.http.get_hashed(&self.url(arch, name), &mut |_| {})?.2,
            };
            out.insert(name.to_string(), FileInfo { size });
        }
        Ok(out)
    }
    fn hash(
        &self,
        arch: Arch,
        name: &str,
        _served: bool,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Option<(Digest, u64)>, SourceError> {
        let (status, digest, len) = self.http.get_hashed(&self.url(arch, name), progress)?;
        Ok((status == 200).then_some((digest, len)))
    }
}
