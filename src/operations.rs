//! The operator's changes to what is published: yank, unyank, rollback and
//! refresh. Each is a pure edit of arch manifests, planned on verified state
//! and applied with the same commit protocol as a release (sign, commit
//! every arch, then clean up), so devices never see a half-done change.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::arch::Arch;
use crate::channel::{self, ArchState, ChannelError};
use crate::hash::{self, Digest};
use crate::ledger::Ledger;
use crate::manifest::{Date, Manifest};
use crate::signing::{Keyring, SecretKey, SignOptions};
use crate::store::Store;
use crate::transfer::{self, Transfer};
use crate::ui::Ui;
use crate::version;

/// One arch directory as read for an operation.
pub struct ArchView {
    pub arch: Arch,
    pub transfers: Vec<Transfer>,
    pub state: ArchState,
}

impl ArchView {
    /// Published versions, newest first, with their files.
    fn versions(&self) -> Vec<transfer::VersionSet> {
        transfer::classify(
            &self.transfers,
            self.state.manifest.entries.keys().map(String::as_str),
        )
        .versions
    }
}

/// Reads and verifies every arch directory of the channel.
pub fn read_all(
    store: &dyn Store,
    keyring: &Keyring,
    transfers_dir: &std::path::Path,
    now: std::time::SystemTime,
) -> Result<Vec<ArchView>, ChannelError> {
    store
        .arches()?
        .into_iter()
        .map(|arch| {
            Ok(ArchView {
                transfers: channel::load_transfers(transfers_dir, arch.systemd())?,
                state: channel::read_arch(store, keyring, arch, now)?,
                arch,
            })
        })
        .collect()
}

/// The planned new state of one arch directory.
#[derive(Clone, Debug, Serialize)]
pub struct ArchChange {
    pub arch: Arch,
    pub removed: Vec<String>,
    pub restored: Vec<String>,
    /// Versions published after the change, newest first.
    pub versions: Vec<String>,
    /// version → payload name → sha256 of the versions removed or restored (for the ledger).
    pub files: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(skip)]
    pub manifest: Manifest,
}

impl ArchChange {
    fn remove(&mut self, set: &transfer::VersionSet) {
        let files = self.files.entry(set.version.clone()).or_default();
        for name in set.files.values() {
            let h = self
                .manifest
                .entries
                .remove(name)
                .expect("classified from the manifest");
            files.insert(name.clone(), hash::to_hex(&h));
        }
        self.removed.push(set.version.clone());
    }

    fn restore(&mut self, version: &str, found: BTreeMap<String, Digest>) {
        let files = self.files.entry(version.to_string()).or_default();
        for (name, h) in found {
            files.insert(name.clone(), hash::to_hex(&h));
            self.manifest.entries.insert(name, h);
        }
        self.restored.push(version.to_string());
    }
}

fn refused(msg: impl Into<String>) -> ChannelError {
    ChannelError::Refused(msg.into())
}

fn find<'a>(sets: &'a [transfer::VersionSet], version: &str) -> Option<&'a transfer::VersionSet> {
    sets.iter().find(|s| s.version == version)
}

fn change(view: &ArchView, best_before: Option<Date>) -> ArchChange {
    ArchChange {
        arch: view.arch,
        removed: vec![],
        restored: vec![],
        versions: vec![],
        files: BTreeMap::new(),
        manifest: Manifest {
            entries: view.state.manifest.entries.clone(),
            best_before,
        },
    }
}

fn finish(mut c: ArchChange, view: &ArchView) -> ArchChange {
    c.versions = transfer::classify(
        &view.transfers,
        c.manifest.entries.keys().map(String::as_str),
    )
    .versions
    .into_iter()
    .map(|v| v.version)
    .collect();
    c
}

/// Withdraws `version` from the given arches (all that publish it when empty).
pub fn plan_yank(
    views: &[ArchView],
    version: &str,
    arches: &[String],
    best_before: Option<Date>,
) -> Result<Vec<ArchChange>, ChannelError> {
    for a in arches {
        if !views.iter().any(|v| v.arch.systemd() == a) {
            return Err(refused(format!(
                "--arch {a}: the channel has no such architecture"
            )));
        }
    }
    let mut out = Vec::new();
    for view in views
        .iter()
        .filter(|v| arches.is_empty() || arches.iter().any(|a| a == v.arch.systemd()))
    {
        let sets = view.versions();
        let Some(set) = find(&sets, version) else {
            if !arches.is_empty() {
                return Err(refused(format!(
                    "{}: version {version} is not published",
                    view.arch
                )));
            }
            continue;
        };
        if sets.len() == 1 {
            return Err(refused(format!(
                "{}: {version} is the only published version; yanking it would leave devices nothing to install. Publish a fixed version instead",
                view.arch
            )));
        }
        let mut c = change(view, best_before);
        c.remove(set);
        out.push(finish(c, view));
    }
    if out.is_empty() {
        return Err(refused(format!(
            "version {version} is not published on any architecture"
        )));
    }
    Ok(out)
}

/// Files (name → hash) that can be re-added without an upload: recorded in
/// the ledger and still stored with that hash.
fn restorable(
    store: &dyn Store,
    arch: Arch,
    recorded: &BTreeMap<String, String>,
) -> Result<Result<BTreeMap<String, Digest>, String>, ChannelError> {
    let mut out = BTreeMap::new();
    for (name, hex) in recorded {
        let want = crate::manifest::hex_digest_from_str(hex).ok_or_else(|| {
            refused(format!(
                "{arch}: the ledger has a malformed hash for {name}"
            ))
        })?;
        match store.payload_hash(arch, name, &mut |_| {})? {
            Some((h, _)) if h == want => {
                out.insert(name.clone(), h);
            }
            Some(_) => return Ok(Err(format!("{name} is stored with other content"))),
            None => {
                return Ok(Err(format!(
                    "{name} is no longer stored (retention pruned it)"
                )))
            }
        }
    }
    Ok(Ok(out))
}

/// The verified channel an operation is planned on.
pub struct Published<'a> {
    pub store: &'a dyn Store,
    pub views: &'a [ArchView],
    pub ledger: &'a Ledger,
    /// BEST-BEFORE of the re-signed manifests.
    pub best_before: Option<Date>,
}

/// Re-adds a withdrawn version from payloads still on the hosting.
pub fn plan_unyank(p: &Published, version: &str) -> Result<Vec<ArchChange>, ChannelError> {
    let (store, ledger, best_before) = (p.store, p.ledger, p.best_before);
    if !ledger.withdrawn().contains_key(version) {
        return Err(refused(format!(
            "version {version} is not yanked (see `status` for the history)"
        )));
    }
    let recorded = ledger.files_of(version);
    let mut out = Vec::new();
    for view in p.views {
        let Some(files) = recorded.get(view.arch.systemd()) else {
            continue;
        };
        let found = restorable(store, view.arch, files)?.map_err(|why| {
            refused(format!(
                "{}: cannot unyank {version}: {why}; republish it with `release --unyank --output {}=PATH`",
                view.arch, view.arch
            ))
        })?;
        let mut c = change(view, best_before);
        c.restore(version, found);
        out.push(finish(c, view));
    }
    if out.is_empty() {
        return Err(refused(format!(
            "the ledger records no files for {version}"
        )));
    }
    Ok(out)
}

/// Makes `version` the newest published version of every arch: withdraws
/// every newer one, and re-adds `version` from stored payloads if needed.
pub fn plan_rollback(p: &Published, version: &str) -> Result<Vec<ArchChange>, ChannelError> {
    let (store, ledger, best_before) = (p.store, p.ledger, p.best_before);
    let recorded = ledger.files_of(version);
    let mut out = Vec::new();
    for view in p.views {
        let sets = view.versions();
        let mut c = change(view, best_before);
        if find(&sets, version).is_none() {
            let republish = format!(
                "republish it first with `sysupdate-publish release --allow-downgrade --unyank --output {}=PATH` (PATH: the build output of {version})",
                view.arch
            );
            let files = recorded.get(view.arch.systemd()).ok_or_else(|| {
                refused(format!("{}: version {version} is not published and the ledger has no record of its files; {republish}", view.arch))
            })?;
            let found = restorable(store, view.arch, files)?.map_err(|why| {
                refused(format!(
                    "{}: version {version}: {why}; {republish}",
                    view.arch
                ))
            })?;
            c.restore(version, found);
        }
        for set in sets
            .iter()
            .filter(|s| version::compare(&s.version, version).is_gt())
        {
            c.remove(set);
        }
        out.push(finish(c, view));
    }
    if out.is_empty() {
        return Err(refused("the channel has no architectures"));
    }
    Ok(out)
}

/// Re-signs every manifest unchanged, with a fresh lifetime and BEST-BEFORE.
pub fn plan_refresh(views: &[ArchView], best_before: Option<Date>) -> Vec<ArchChange> {
    views
        .iter()
        .filter(|v| v.state.signature.is_some())
        .map(|v| finish(change(v, best_before), v))
        .collect()
}

/// Payloads of withdrawn versions kept on the hosting (so `unyank` needs no
/// upload): those of withdrawn versions among the newest `keep` versions
/// known for the arch, published or withdrawn.
pub fn retained(
    ledger: &Ledger,
    arch: &str,
    published: &[String],
    keep: usize,
) -> BTreeSet<String> {
    let withdrawn = ledger.withdrawn();
    let mut all: Vec<&str> = published.iter().map(String::as_str).collect();
    all.extend(withdrawn.keys().map(String::as_str));
    all.sort_by(|a, b| version::compare(b, a));
    all.dedup();
    let newest: Vec<&str> = all.into_iter().take(keep).collect();
    withdrawn
        .iter()
        .filter(|(v, _)| newest.contains(&v.as_str()))
        .flat_map(|(v, _)| {
            ledger
                .files_of(v)
                .remove(arch)
                .unwrap_or_default()
                .into_keys()
        })
        .collect()
}

/// Signs and commits every changed arch (step 4 of the commit protocol).
pub fn commit(
    store: &dyn Store,
    changes: &[ArchChange],
    key: &SecretKey,
    keyring: &Keyring,
    sign: SignOptions,
    ui: &Ui,
) -> Result<(), ChannelError> {
    for c in changes {
        channel::write_signed_manifest(store, c.arch, &c.manifest, key, keyring, sign)?;
        ui.info(format!(
            "{}: now publishes {}",
            c.arch,
            c.versions.join(", ")
        ));
    }
    Ok(())
}

/// Deletes what no manifest and no retained withdrawn version names (step 5).
pub fn cleanup(
    store: &dyn Store,
    changes: &[ArchChange],
    keep: &BTreeMap<String, BTreeSet<String>>,
) -> Result<(), ChannelError> {
    for c in changes {
        let mut names = channel::referenced(&c.manifest);
        if let Some(extra) = keep.get(c.arch.systemd()) {
            names.extend(extra.iter().map(String::as_str));
        }
        channel::delete_unkept(store, c.arch, &names)?;
    }
    Ok(())
}
