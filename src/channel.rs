//! The commit protocol: read the verified state, plan, then apply in an order
//! that keeps every arch directory consistent at every instant.
//!
//! 1. Read each arch's SHA256SUMS + signature and verify them with the device
//!    keyring; never build on a manifest we cannot verify.
//! 2. Plan (pure): what to upload, keep, drop; refuse what devices would choke on.
//! 3. Upload payloads, create-only.
//! 4. Only when every arch's payloads are in: SHA256SUMS, then its signature.
//! 5. Only then delete payloads no manifest names any more.
//!
//! A crash anywhere leaves old-consistent or new-consistent arch directories
//! (modulo the short window between manifest and signature, which devices
//! report as a transient signature mismatch), and rerunning finishes the job.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use thiserror::Error;

use crate::arch::Arch;
use crate::fault;
use crate::hash::{self, Digest};
use crate::manifest::{self, Date, Manifest, MANIFEST, PENDING_SIGNATURE, SIGNATURE};
use crate::signing::{Keyring, SecretKey, SignOptions, SignatureInfo, VerifyError};
use crate::stage::Payload;
use crate::store::{FileInfo, Store, StoreError};
use crate::transfer::{self, Transfer};
use crate::ui::Ui;
use crate::version;

#[derive(Debug, Error)]
pub enum ChannelError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{arch}: SHA256SUMS has no SHA256SUMS.gpg beside it; someone else wrote to the hosting. Inspect it, then remove or re-sign it by hand")]
    Unsigned { arch: String },
    #[error("{arch}: the published SHA256SUMS does not verify with the keyring: {source}. Someone else wrote to the hosting, or the keyring is wrong; refusing to build on it")]
    Unverified { arch: String, source: VerifyError },
    #[error("{arch}: the published SHA256SUMS is malformed: {source}")]
    Malformed {
        arch: String,
        source: manifest::ManifestError,
    },
    #[error("{arch}: {source}")]
    Transfers {
        arch: String,
        source: Box<transfer::TransferError>,
    },
    #[error("{0}")]
    Refused(String),
    #[error("{arch}: {message}")]
    Sign { arch: String, message: String },
    /// A staged payload that could not be read (or changed) when hashed.
    #[error("{arch}: {source}")]
    Payload {
        arch: String,
        source: std::io::Error,
    },
}

/// The verified published state of one arch directory.
#[derive(Clone, Debug, Default)]
pub struct ArchState {
    pub manifest: Manifest,
    /// `None` when nothing is published yet.
    pub signature: Option<SignatureInfo>,
    pub files: BTreeMap<String, FileInfo>,
    /// The signature verified but has expired; writes re-sign it anyway.
    pub expired: bool,
    /// SHA256SUMS verifies only with the signature a remote commit parks in
    /// `manifest::PENDING_SIGNATURE`: that commit was interrupted between the
    /// manifest and its signature. Devices refuse the arch until the next
    /// write of it (any release, yank, refresh) finishes the commit.
    pub interrupted: bool,
}

/// Reads and verifies one arch directory. An expired signature is accepted
/// here (it is ours; the write re-signs) but flagged.
pub fn read_arch(
    store: &dyn Store,
    keyring: &Keyring,
    arch: Arch,
    now: SystemTime,
) -> Result<ArchState, ChannelError> {
    let files = store.list(arch)?;
    let Some(bytes) = store.get(arch, MANIFEST)? else {
        return Ok(ArchState {
            files,
            ..Default::default()
        });
    };
    let verified = match store.get(arch, SIGNATURE)? {
        Some(sig) => verify_accepting_expiry(keyring, &bytes, &sig, now).map_err(|source| {
            ChannelError::Unverified {
                arch: arch.to_string(),
                source,
            }
        }),
        None => Err(ChannelError::Unsigned {
            arch: arch.to_string(),
        }),
    };
    let (signature, expired, interrupted) = match verified {
        Ok((info, expired)) => (info, expired, false),
        Err(e) => match pending_signature(store, keyring, arch, &bytes, now)? {
            Some((info, expired)) => (info, expired, true),
            None => return Err(e),
        },
    };
    let manifest = manifest::parse(&bytes).map_err(|source| ChannelError::Malformed {
        arch: arch.to_string(),
        source,
    })?;
    Ok(ArchState {
        manifest,
        signature: Some(signature),
        files,
        expired,
        interrupted,
    })
}

/// Verifies a signature; an expired one is accepted (it is ours; the next
/// write re-signs it) and flagged.
fn verify_accepting_expiry(
    keyring: &Keyring,
    bytes: &[u8],
    sig: &[u8],
    now: SystemTime,
) -> Result<(SignatureInfo, bool), VerifyError> {
    match keyring.verify(bytes, sig, now) {
        Ok(info) => Ok((info, false)),
        // Verify again at a time it was valid to learn who signed it.
        Err(VerifyError::Expired { .. }) => keyring
            .verify(bytes, sig, SystemTime::UNIX_EPOCH + Duration::from_secs(1))
            .map(|info| (info, true)),
        Err(e) => Err(e),
    }
}

/// The signature of an interrupted remote commit, when it is the one that
/// verifies `manifest` (see `manifest::PENDING_SIGNATURE`), and whether it expired.
pub fn pending_signature(
    store: &dyn Store,
    keyring: &Keyring,
    arch: Arch,
    manifest: &[u8],
    now: SystemTime,
) -> Result<Option<(SignatureInfo, bool)>, ChannelError> {
    Ok(store
        .get(arch, PENDING_SIGNATURE)?
        .and_then(|sig| verify_accepting_expiry(keyring, manifest, &sig, now).ok()))
}

/// Transfer files with `%a` expanded for one architecture.
pub fn load_transfers(dir: &std::path::Path, arch: &str) -> Result<Vec<Transfer>, ChannelError> {
    let spec = transfer::Specifiers {
        arch: arch.to_string(),
        ..Default::default()
    };
    transfer::load_dir(dir, &spec).map_err(|source| ChannelError::Transfers {
        arch: arch.to_string(),
        source: Box::new(source),
    })
}

/// One architecture's share of a release.
pub struct ReleaseInput {
    pub arch: Arch,
    pub transfers: Vec<Transfer>,
    pub payloads: Vec<Payload>,
    pub state: ArchState,
}

#[derive(Clone, Debug, Serialize)]
pub struct Upload {
    pub name: String,
    pub size: u64,
    /// `None` until the upload that hashes it (see `stage::Defer`).
    pub sha256: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ArchPlan {
    pub arch: Arch,
    /// Same version, same bytes: nothing to do here.
    pub already_published: bool,
    pub added: Vec<String>,
    pub kept: Vec<String>,
    pub dropped: Vec<String>,
    pub uploads: Vec<Upload>,
    /// Payloads already in the store with the right hash (a resumed release).
    pub reused: Vec<String>,
    pub deletions: Vec<String>,
    pub upload_bytes: u64,
    /// The published manifest was left by an interrupted remote commit (it
    /// verifies only with the pending signature): this run commits it again.
    pub interrupted_commit: bool,
    #[serde(skip)]
    pub manifest: Manifest,
    /// Payloads of withdrawn versions kept for `unyank` (not deleted by cleanup).
    #[serde(skip)]
    pub retain: BTreeSet<String>,
    #[serde(skip)]
    payloads: Vec<Payload>,
}

impl ArchPlan {
    /// Adds the new payloads' hashes to the manifest and the upload list.
    /// Uploads learn the hashes staging deferred; with `hash_missing`, any
    /// still unknown is read from the file now.
    fn add_payload_hashes(&mut self, hash_missing: bool) -> Result<(), ChannelError> {
        for p in &self.payloads {
            let digest = match p.sha256.get() {
                Some(d) => d,
                None if hash_missing => p.digest().map_err(|source| ChannelError::Payload {
                    arch: self.arch.to_string(),
                    source,
                })?,
                None => continue,
            };
            self.manifest.entries.insert(p.name.clone(), digest);
            if let Some(up) = self.uploads.iter_mut().find(|u| u.name == p.name) {
                up.sha256 = Some(hash::to_hex(&digest));
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ReleasePlan {
    pub version: String,
    pub arches: Vec<ArchPlan>,
}

impl ReleasePlan {
    pub fn is_noop(&self) -> bool {
        self.arches
            .iter()
            .all(|a| a.already_published && !a.interrupted_commit)
    }

    pub fn upload_bytes(&self) -> u64 {
        self.arches.iter().map(|a| a.upload_bytes).sum()
    }
}

#[derive(Clone, Copy, Debug)]
pub struct ReleaseOptions<'a> {
    pub version: Option<&'a str>,
    pub allow_downgrade: bool,
    pub keep: usize,
    pub best_before: Option<Date>,
}

fn refused(msg: impl Into<String>) -> ChannelError {
    ChannelError::Refused(msg.into())
}

fn patterns(transfers: &[Transfer]) -> String {
    transfers
        .iter()
        .flat_map(|t| t.source_patterns.iter().map(|p| p.to_string()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A payload name as it will be published, and the build output's own name
/// when it differs (it gets compressed on the way).
pub struct NameCheck<'a> {
    pub name: &'a str,
    pub compressed_from: Option<&'a str>,
}

/// Finds the one version an architecture's payload names make up, or says
/// why not. Cheap: run it before compressing anything.
pub fn version_of_names(
    arch: Arch,
    transfers: &[Transfer],
    names: &[NameCheck],
    ui: &Ui,
) -> Result<String, ChannelError> {
    let c = transfer::classify(transfers, names.iter().map(|n| n.name));
    if let Some(name) = c.unmatched.first() {
        let how = match names
            .iter()
            .find(|n| n.name == name)
            .and_then(|n| n.compressed_from)
        {
            Some(raw) => format!("{raw} would be compressed to {name}, which"),
            None => name.clone(),
        };
        return Err(refused(format!(
            "{arch}: {how} matches no transfer source pattern ({}); fix the build output or the transfer files",
            patterns(transfers)
        )));
    }
    if let Some(conflict) = c.old_client_conflicts.first() {
        return Err(refused(format!("{arch}: {}", conflict.explanation)));
    }
    let [set] = c.versions.as_slice() else {
        let versions: Vec<_> = c.versions.iter().map(|v| v.version.as_str()).collect();
        return Err(refused(format!(
            "{arch}: the build output holds several versions ({}); publish one version at a time",
            versions.join(", ")
        )));
    };
    if !set.missing.is_empty() {
        return Err(refused(format!(
            "{arch}: version {} is incomplete: no file for transfer(s) {} (devices would never install it)",
            set.version,
            set.missing.join(", ")
        )));
    }
    if let Some((t, files)) = set.duplicates.first() {
        return Err(refused(format!(
            "{arch}: version {} has several files for transfer {t}: {}",
            set.version,
            files.join(", ")
        )));
    }
    match version::validate(&set.version) {
        Ok(warnings) => {
            for w in warnings {
                ui.warn(format!("{arch}: version {}: {w}", set.version));
            }
        }
        Err(e) => {
            return Err(refused(format!(
                "{arch}: invalid version {:?}: {e}",
                set.version
            )))
        }
    }
    Ok(set.version.clone())
}

fn version_of_payloads(input: &ReleaseInput, ui: &Ui) -> Result<String, ChannelError> {
    let names: Vec<NameCheck> = input
        .payloads
        .iter()
        .map(|p| NameCheck {
            name: &p.name,
            compressed_from: p.compressed_from.as_deref(),
        })
        .collect();
    version_of_names(input.arch, &input.transfers, &names, ui)
}

/// Plans a release. Pure apart from hashing payloads already in the store
/// under a new name (to tell a resumed release from a conflicting one).
pub fn plan_release(
    store: &dyn Store,
    inputs: &[ReleaseInput],
    opts: ReleaseOptions,
    ui: &Ui,
) -> Result<ReleasePlan, ChannelError> {
    if inputs.is_empty() {
        return Err(refused("nothing to publish: no architecture given"));
    }
    let mut version: Option<String> = None;
    for input in inputs {
        let v = version_of_payloads(input, ui)?;
        if let Some(prev) = &version {
            if *prev != v {
                return Err(refused(format!(
                    "architectures disagree on the version: {} has {prev}, {} has {v}",
                    inputs[0].arch, input.arch
                )));
            }
        }
        version = Some(v);
    }
    let version = version.expect("at least one input");
    if let Some(wanted) = opts.version {
        if wanted != version {
            return Err(refused(format!(
                "--version {wanted} does not match the payloads, which are version {version}"
            )));
        }
    }
    let arches = inputs
        .iter()
        .map(|input| plan_arch(store, input, &version, opts))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ReleasePlan { version, arches })
}

fn plan_arch(
    store: &dyn Store,
    input: &ReleaseInput,
    version: &str,
    opts: ReleaseOptions,
) -> Result<ArchPlan, ChannelError> {
    let arch = input.arch;
    let old = &input.state.manifest;
    let digest = |p: &Payload| {
        p.digest().map_err(|source| ChannelError::Payload {
            arch: arch.to_string(),
            source,
        })
    };
    let published = transfer::classify(&input.transfers, old.entries.keys().map(String::as_str));

    let same = published
        .versions
        .iter()
        .find(|v| version::compare(&v.version, version).is_eq());
    let mut plan = ArchPlan {
        arch,
        already_published: false,
        added: vec![],
        kept: vec![],
        dropped: vec![],
        uploads: vec![],
        reused: vec![],
        deletions: vec![],
        upload_bytes: 0,
        interrupted_commit: input.state.interrupted,
        manifest: Manifest::default(),
        retain: BTreeSet::new(),
        payloads: vec![],
    };
    if let Some(same) = same {
        if same.version != version {
            return Err(refused(format!(
                "{arch}: version {version} compares equal to the published {}; devices would treat them as one version. Use a new version number",
                same.version
            )));
        }
        let mut changed = Vec::new();
        for p in &input.payloads {
            match old.entries.get(&p.name) {
                None => changed.push(format!("{} (not in the published set)", p.name)),
                Some(h) => {
                    let now = digest(p)?;
                    if *h != now {
                        changed.push(format!(
                            "{} (published {}, now {})",
                            p.name,
                            hash::to_hex(h),
                            hash::to_hex(&now)
                        ));
                    }
                }
            }
        }
        if !changed.is_empty() || same.files.len() != input.payloads.len() {
            return Err(refused(format!(
                "{arch}: version {version} is already published with different content: {}. Published payloads never change; publish a new version",
                changed.join(", ")
            )));
        }
        plan.already_published = true;
        plan.kept = published
            .versions
            .iter()
            .map(|v| v.version.clone())
            .collect();
        plan.manifest = old.clone();
        return Ok(plan);
    }

    if let Some(newest) = published.versions.first() {
        if version::compare(&newest.version, version).is_gt() && !opts.allow_downgrade {
            return Err(refused(format!(
                "{arch}: version {version} is older than the published {}; devices would not install it. Use a higher version, or --allow-downgrade",
                newest.version
            )));
        }
    }

    // Retention: the newest `keep` versions, always including the new one.
    let mut all: Vec<String> = published
        .versions
        .iter()
        .map(|v| v.version.clone())
        .collect();
    all.push(version.to_string());
    all.sort_by(|a, b| version::compare(b, a));
    let mut kept: Vec<String> = all.iter().take(opts.keep).cloned().collect();
    if !kept.iter().any(|v| v == version) {
        kept.pop();
        kept.push(version.to_string());
    }
    plan.dropped = all.iter().filter(|v| !kept.contains(v)).cloned().collect();
    plan.added = vec![version.to_string()];
    plan.kept = kept.iter().filter(|v| *v != version).cloned().collect();

    let mut entries: BTreeMap<String, Digest> = BTreeMap::new();
    for set in published
        .versions
        .iter()
        .filter(|s| plan.kept.contains(&s.version))
    {
        for name in set.files.values() {
            entries.insert(name.clone(), old.entries[name]);
        }
    }
    // Entries no transfer knows stay (they are signed by us); status shows them.
    for name in &published.unmatched {
        entries.insert(name.clone(), old.entries[name]);
    }
    for p in &input.payloads {
        match input.state.files.get(&p.name) {
            None => {
                plan.upload_bytes += p.size;
                plan.uploads.push(Upload {
                    name: p.name.clone(),
                    size: p.size,
                    sha256: None,
                });
            }
            Some(_) => match store.payload_hash(arch, &p.name, &mut |_| {})? {
                Some((h, _)) if h == digest(p)? => plan.reused.push(p.name.clone()),
                _ => {
                    return Err(refused(format!(
                        "{arch}: {} exists in {} but is not published and has other content (left by an interrupted release of a different build?). Delete it, or publish a new version",
                        p.name,
                        store.describe()
                    )))
                }
            },
        }
    }
    let new = |n: &str| input.payloads.iter().any(|p| p.name == n);
    plan.deletions = old
        .entries
        .keys()
        .filter(|n| !entries.contains_key(*n) && !new(n))
        .cloned()
        .collect();
    plan.manifest = Manifest {
        entries,
        best_before: opts.best_before,
    };
    plan.payloads = input.payloads.clone();
    plan.add_payload_hashes(false)?;
    Ok(plan)
}

/// Applies a plan in commit-protocol order. Completes the plan's manifests
/// with the hashes its uploads learned.
pub fn apply_release(
    store: &dyn Store,
    plan: &mut ReleasePlan,
    key: &SecretKey,
    keyring: &Keyring,
    sign: SignOptions,
    ui: &Ui,
) -> Result<(), ChannelError> {
    upload_payloads(store, plan, ui)?;
    for arch in &mut plan.arches {
        arch.add_payload_hashes(true)?;
    }
    let to_commit = plan
        .arches
        .iter()
        .filter(|a| !a.already_published || a.interrupted_commit);
    for arch in to_commit {
        write_signed_manifest(store, arch.arch, &arch.manifest, key, keyring, sign)?;
        if arch.already_published {
            ui.info(format!("{}: finished the interrupted commit", arch.arch));
        } else {
            ui.info(format!(
                "{}: published {}",
                arch.arch,
                describe_versions(arch)
            ));
        }
    }
    for arch in &plan.arches {
        for name in &arch.deletions {
            store.delete(arch.arch, name)?;
            ui.detail(format!("{}: deleted {name}", arch.arch));
            fault::point("payload deleted");
        }
        let mut keep = referenced(&arch.manifest);
        keep.extend(arch.retain.iter().map(String::as_str));
        delete_unkept(store, arch.arch, &keep)?;
    }
    Ok(())
}

/// Uploads every planned payload, `store.parallel_uploads()` at a time,
/// under one aggregate progress bar. The first failure stops further
/// uploads (those in flight finish) and is returned.
fn upload_payloads(store: &dyn Store, plan: &ReleasePlan, ui: &Ui) -> Result<(), ChannelError> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let jobs: Vec<(Arch, &Payload)> = plan
        .arches
        .iter()
        .flat_map(|a| {
            a.uploads.iter().map(move |up| {
                let p = a
                    .payloads
                    .iter()
                    .find(|p| p.name == up.name)
                    .expect("upload comes from a payload");
                (a.arch, p)
            })
        })
        .collect();
    if jobs.is_empty() {
        return Ok(());
    }
    let bar = ui.bytes_bar(plan.upload_bytes(), "uploading payloads");
    let progress: Arc<dyn Fn(u64) + Send + Sync> = {
        let bar = bar.clone();
        Arc::new(move |n| bar.inc(n))
    };
    let next = AtomicUsize::new(0);
    let failed: Mutex<Option<StoreError>> = Mutex::new(None);
    let workers = store.parallel_uploads().clamp(1, jobs.len());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                if failed.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
                    return;
                }
                let Some(&(arch, p)) = jobs.get(next.fetch_add(1, Ordering::SeqCst)) else {
                    return;
                };
                let source = p.source(progress.clone());
                match store.put_payload(arch, &p.name, &source) {
                    Ok(()) => {
                        ui.detail(format!("{arch}: wrote {} ({} bytes)", p.name, p.size));
                        fault::point("payload written");
                    }
                    Err(e) => {
                        failed
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get_or_insert(e);
                        return;
                    }
                }
            });
        }
    });
    bar.finish_and_clear();
    match failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

fn describe_versions(a: &ArchPlan) -> String {
    let mut s = a.added.join(", ");
    if !a.kept.is_empty() {
        s += &format!(" (kept {})", a.kept.join(", "));
    }
    if !a.dropped.is_empty() {
        s += &format!(" (dropped {})", a.dropped.join(", "));
    }
    s
}

/// Signs SHA256SUMS and commits it with its signature, checking the
/// signature with the device keyring first so we never publish one devices refuse.
pub fn write_signed_manifest(
    store: &dyn Store,
    arch: Arch,
    manifest: &Manifest,
    key: &SecretKey,
    keyring: &Keyring,
    sign: SignOptions,
) -> Result<(), ChannelError> {
    let sign_err = |message: String| ChannelError::Sign {
        arch: arch.to_string(),
        message,
    };
    let bytes = manifest::render_checked(manifest).map_err(|e| sign_err(e.to_string()))?;
    let sig = key
        .sign(&bytes, sign)
        .map_err(|e| sign_err(e.to_string()))?;
    keyring.verify(&bytes, &sig, sign.created).map_err(|e| {
        sign_err(format!(
            "the new signature does not verify with the keyring: {e}"
        ))
    })?;
    let names: Vec<&str> = manifest.entries.keys().map(String::as_str).collect();
    store.commit(arch, &bytes, &sig, &names)?;
    fault::point("manifest committed");
    Ok(())
}

/// The BEST-BEFORE date for a signature made at `now` with `lifetime`: the
/// day the signature expires on (devices refuse from 00:00 UTC that day), so
/// both checks agree to within a day.
pub fn best_before(now: SystemTime, lifetime: Duration) -> Date {
    let end = now + lifetime;
    let secs = end
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    Date::from_unix(secs)
}

/// Deletes every stored payload of `arch` not in `keep`, then the store's
/// scratch. This is what the store used to decide by itself; it stays here
/// until the channel layer plans deletions from the history (only names
/// this tool published).
pub fn delete_unkept(
    store: &dyn Store,
    arch: Arch,
    keep: &BTreeSet<&str>,
) -> Result<(), StoreError> {
    for name in store.list(arch)?.into_keys() {
        if !keep.contains(name.as_str()) {
            store.delete(arch, &name)?;
            fault::point("leftover deleted");
        }
    }
    store.clear_scratch(arch)
}

/// Names referenced by a manifest, for "unreferenced file" checks.
pub fn referenced(m: &Manifest) -> BTreeSet<&str> {
    m.entries.keys().map(String::as_str).collect()
}
