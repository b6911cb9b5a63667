//! Planning a write: from the verified channel and what a command asks, the
//! new manifest of every arch, or a [`Refusal`]. Every check for every arch
//! happens here, before anything is written. Pure apart from hashing
//! payloads the hosting already holds (a resumed release, or a withdrawn
//! version coming back without an upload).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use thiserror::Error;

use super::refusal::Refusal;
use super::state::{ArchView, Channel};
use crate::arch::Arch;
use crate::hash::{self, Digest};
use crate::ledger::{Action, Files, Ledger};
use crate::manifest::{self, Date, Manifest};
use crate::stage::Payload;
use crate::store::{Store, StoreError};
use crate::transfer::{self, Transfer};
use crate::version::{self, Version, VersionWarning};

#[derive(Debug, Error)]
pub enum PlanError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A staged payload that could not be read (or changed) when hashed.
    #[error("{arch}: {source}")]
    Payload { arch: Arch, source: std::io::Error },
}

/// What every plan needs from the channel's settings.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Versions kept per arch.
    pub keep: usize,
    /// BEST-BEFORE of every manifest this write signs.
    pub best_before: Option<Date>,
}

/// A payload to upload, as the report shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Upload {
    pub name: String,
    pub size: u64,
    /// `None` until the upload that hashes it.
    pub sha256: Option<String>,
}

/// One arch's part of a write.
#[derive(Clone, Debug)]
pub struct ArchPlan {
    pub arch: Arch,
    /// What the arch serves now (the history's head).
    pub before: Manifest,
    pub after: Manifest,
    pub added: Vec<Version>,
    pub kept: Vec<Version>,
    pub dropped: Vec<Version>,
    pub removed: Vec<Version>,
    pub restored: Vec<Version>,
    /// New payloads, uploaded before anything is committed.
    pub uploads: Vec<Payload>,
    /// Payloads copied from another channel's store (promote).
    pub copies: Vec<Copied>,
    /// Bytes of copies that had to pass through this machine.
    pub streamed: u64,
    /// The manifest is signed again even when its entries stay (refresh).
    pub resign: bool,
    /// A mirror's manifest and signature, served byte for byte instead of
    /// rendered and signed here.
    pub verbatim: Option<(Vec<u8>, Vec<u8>)>,
    /// Payloads already stored with the right bytes (a resumed release).
    pub reused: Vec<String>,
    /// Size of every payload `after` lists.
    pub sizes: BTreeMap<String, u64>,
    /// Versions published after the write, newest first.
    pub versions: Vec<Version>,
}

impl ArchPlan {
    /// An arch that keeps serving `manifest`.
    pub fn of(arch: Arch, manifest: &Manifest) -> ArchPlan {
        ArchPlan {
            arch,
            before: manifest.clone(),
            after: manifest.clone(),
            added: vec![],
            kept: vec![],
            dropped: vec![],
            removed: vec![],
            restored: vec![],
            uploads: vec![],
            copies: vec![],
            streamed: 0,
            resign: false,
            verbatim: None,
            reused: vec![],
            sizes: BTreeMap::new(),
            versions: vec![],
        }
    }

    fn unchanged(view: Option<&ArchView>, arch: Arch) -> ArchPlan {
        ArchPlan {
            versions: view.map(|v| v.versions()).unwrap_or_default(),
            ..ArchPlan::of(arch, &view.map(|v| v.manifest.clone()).unwrap_or_default())
        }
    }

    /// Whether devices would see another list of payloads (new payloads
    /// hashed by their upload are not in `after` yet, but are added).
    pub fn changes_entries(&self) -> bool {
        !self.added.is_empty()
            || !self.removed.is_empty()
            || !self.restored.is_empty()
            || self.after.entries != self.before.entries
    }

    /// Adds the hashes uploads learned to `after`; with `hash_missing`,
    /// any still unknown is read from its file now.
    pub fn complete_hashes(&mut self, hash_missing: bool) -> Result<(), PlanError> {
        for c in &self.copies {
            self.after.entries.insert(c.name.clone(), c.sha256);
        }
        for p in &self.uploads {
            let digest = match p.sha256.get() {
                Some(d) => d,
                None if hash_missing => p.digest().map_err(|source| PlanError::Payload {
                    arch: self.arch,
                    source,
                })?,
                None => continue,
            };
            self.after.entries.insert(p.name.clone(), digest);
        }
        Ok(())
    }

    pub fn upload_bytes(&self) -> u64 {
        self.uploads.iter().map(|p| p.size).sum()
    }

    pub fn upload_list(&self) -> Vec<Upload> {
        self.uploads
            .iter()
            .map(|p| Upload {
                name: p.name.clone(),
                size: p.size,
                sha256: p.sha256.get().map(|d| hash::to_hex(&d)),
            })
            .collect()
    }
}

/// A planned write of the whole channel.
#[derive(Clone, Debug)]
pub struct Plan {
    pub action: Action,
    pub versions: Vec<Version>,
    pub reason: Option<String>,
    pub arches: Vec<ArchPlan>,
    /// For the history: version → arch → name → hash of the files concerned.
    pub files: Files,
    /// The channel a promotion takes the version from.
    pub source: Option<crate::ledger::Origin>,
    /// Preflight checks skipped, for the history.
    pub skipped_checks: Vec<crate::ledger::SkippedCheck>,
}

impl Plan {
    /// A plan that does not touch any arch yet.
    pub fn new(action: Action, versions: Vec<Version>, reason: Option<String>) -> Plan {
        Plan {
            action,
            versions,
            reason,
            arches: vec![],
            files: Files::new(),
            source: None,
            skipped_checks: vec![],
        }
    }

    /// Whether committing it changes anything. A refresh re-signs, so it
    /// always does; anything else that lists the same payloads writes nothing.
    pub fn changes(&self) -> bool {
        self.changed().next().is_some()
    }

    /// The arches whose manifest this write replaces.
    pub fn changed(&self) -> impl Iterator<Item = &ArchPlan> {
        self.arches
            .iter()
            .filter(|a| a.resign || a.changes_entries())
    }

    pub fn upload_bytes(&self) -> u64 {
        self.arches.iter().map(ArchPlan::upload_bytes).sum()
    }

    /// Records the hashes uploads learned in the history's file list.
    pub fn record_uploads(&mut self) {
        if self.action != Action::Publish {
            return;
        }
        let Some(version) = self.versions.first().cloned() else {
            return;
        };
        for ap in &self.arches {
            for p in &ap.uploads {
                if let Some(d) = ap.after.entries.get(&p.name) {
                    self.files
                        .entry(version.clone())
                        .or_default()
                        .entry(ap.arch)
                        .or_default()
                        .insert(p.name.clone(), hash::to_hex(d));
                }
            }
        }
    }
}

/// A payload name as it will be published, and the build output's own name
/// when it differs (it gets compressed on the way).
pub struct NameCheck<'a> {
    pub name: &'a str,
    pub compressed_from: Option<&'a str>,
    /// A directory output, packed as a url-tar payload: only a transfer
    /// whose source is `Type=url-tar` may take it.
    pub tree: bool,
}

/// Finds the one version an architecture's payload names make up, or says
/// why not. Cheap: run it before compressing anything.
pub fn version_of_names(
    arch: Arch,
    transfers: &[Transfer],
    names: &[NameCheck],
) -> Result<(Version, Vec<VersionWarning>), Refusal> {
    let c = transfer::classify(transfers, names.iter().map(|n| n.name));
    if let Some(name) = c.unmatched.first() {
        let name = match names.iter().find(|n| n.name == name) {
            Some(NameCheck {
                tree: true,
                compressed_from: Some(raw),
                ..
            }) => format!("{raw} (a directory) would be packed as {name}, which"),
            Some(NameCheck {
                compressed_from: Some(raw),
                ..
            }) => format!("{raw} would be compressed to {name}, which"),
            _ => name.clone(),
        };
        return Err(Refusal::Unmatched {
            arch,
            name,
            patterns: transfer::source_patterns(transfers),
        });
    }
    if let Some(conflict) = c.old_client_conflicts.first() {
        return Err(Refusal::OldClientConflict {
            arch,
            explanation: conflict.explanation.clone(),
        });
    }
    let [set] = c.versions.as_slice() else {
        return Err(Refusal::SeveralVersions {
            arch,
            versions: c.versions.iter().map(|v| v.version.clone()).collect(),
        });
    };
    for (transfer, name) in &set.files {
        let tree = names.iter().find(|n| n.name == name).filter(|n| n.tree);
        let t = transfers.iter().find(|t| &t.name == transfer);
        if let (Some(tree), Some(t)) = (tree, t) {
            if t.source_type != transfer::SourceType::UrlTar {
                return Err(Refusal::Other(format!(
                    "{arch}: {} is a directory, packed as {name} for transfer {transfer}, whose [Source] is Type={}: a device would install the tar itself as a file. Use Type=url-tar (and a directory or subvolume [Target]) for directory payloads, or put a file in the build output",
                    tree.compressed_from.unwrap_or(name),
                    t.source_type
                )));
            }
        }
    }
    if !set.missing.is_empty() {
        return Err(Refusal::Incomplete {
            arch,
            version: set.version.clone(),
            missing: set.missing.clone(),
        });
    }
    if let Some((t, files)) = set.duplicates.first() {
        return Err(Refusal::Duplicates {
            arch,
            version: set.version.clone(),
            transfer: t.clone(),
            files: files.clone(),
        });
    }
    let warnings = version::validate(&set.version).map_err(|e| Refusal::InvalidVersion {
        arch,
        version: set.version.clone(),
        error: e.to_string(),
    })?;
    Ok((Version::published(&set.version), warnings))
}

/// A name of one stream must not be another stream's too: devices of both
/// would install it. Names both transfers.
pub fn refuse_collisions<'a>(
    arch: Arch,
    component: Option<&str>,
    own: &[Transfer],
    others: &[transfer::Stream],
    names: impl IntoIterator<Item = &'a str>,
) -> Result<(), Refusal> {
    for name in names {
        if let Some((stream, other)) = transfer::component::claimed_elsewhere(others, name) {
            let ours = own
                .iter()
                .find(|t| t.match_source(name).is_some())
                .map(|t| t.name.as_str())
                .unwrap_or("?");
            return Err(Refusal::Other(format!(
                "{arch}: {name} would be published for transfer {ours} of {} and is also matched by transfer {other} of {stream}: devices of both would install it. Give each stream its own name prefix in MatchPattern=",
                transfer::component::label(component),
            )));
        }
    }
    Ok(())
}

/// A withdrawn version comes back only when asked.
pub fn refuse_withdrawn(
    ledger: &Ledger,
    component: Option<&str>,
    version: &Version,
    how: &str,
) -> Result<(), Refusal> {
    match ledger.withdrawn(component).get(version) {
        Some(e) => Err(Refusal::Withdrawn {
            version: version.clone(),
            action: e.action,
            time: e.time.clone(),
            reason: e.reason.clone(),
            how: how.to_string(),
        }),
        None => Ok(()),
    }
}

/// What planning needs of a payload that is new to the channel: a staged
/// file (release) or another channel's published payload (promote).
pub trait Incoming: Clone {
    fn name(&self) -> &str;
    fn size(&self) -> u64;
    /// Its hash; may read the file when staging left it to the upload.
    fn digest(&self) -> std::io::Result<Digest>;
}

impl Incoming for Payload {
    fn name(&self) -> &str {
        &self.name
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn digest(&self) -> std::io::Result<Digest> {
        Payload::digest(self)
    }
}

/// A payload published on another channel, copied store to store.
#[derive(Clone, Debug)]
pub struct Copied {
    pub name: String,
    pub size: u64,
    pub sha256: Digest,
}

impl Incoming for Copied {
    fn name(&self) -> &str {
        &self.name
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn digest(&self) -> std::io::Result<Digest> {
        Ok(self.sha256)
    }
}

/// One architecture's share of a release.
pub struct ReleaseInput {
    pub arch: Arch,
    pub payloads: Vec<Payload>,
}

#[derive(Clone, Copy, Debug)]
pub struct ReleaseOptions<'a> {
    pub version: Option<&'a str>,
    pub allow_downgrade: bool,
    pub unyank: bool,
    pub settings: Settings,
}

fn digest(arch: Arch, p: &impl Incoming) -> Result<Digest, PlanError> {
    p.digest()
        .map_err(|source| PlanError::Payload { arch, source })
}

/// The version a release publishes: what every arch's payload names say.
pub fn release_version(
    transfers: &BTreeMap<Arch, Vec<Transfer>>,
    inputs: &[ReleaseInput],
    wanted: Option<&str>,
) -> Result<Version, Refusal> {
    let mut found: Option<(Arch, Version)> = None;
    for input in inputs {
        let names: Vec<NameCheck> = input
            .payloads
            .iter()
            .map(|p| NameCheck {
                name: &p.name,
                compressed_from: p.compressed_from.as_deref(),
                // Checked on the build outputs, before staging.
                tree: false,
            })
            .collect();
        let empty = Vec::new();
        let t = transfers.get(&input.arch).unwrap_or(&empty);
        let (v, _) = version_of_names(input.arch, t, &names)?;
        match &found {
            Some((first, fv)) if fv.as_str() != v.as_str() => {
                return Err(Refusal::ArchesDisagree {
                    first: *first,
                    first_version: fv.clone(),
                    second: input.arch,
                    second_version: v,
                })
            }
            Some(_) => {}
            None => found = Some((input.arch, v)),
        }
    }
    let (_, version) = found.ok_or(Refusal::NoArchitectures)?;
    if let Some(wanted) = wanted {
        if wanted != version.as_str() {
            return Err(Refusal::VersionMismatch {
                wanted: wanted.to_string(),
                found: version,
            });
        }
    }
    Ok(version)
}

/// Plans a release on the verified channel.
pub fn plan_release(
    store: &dyn Store,
    channel: &Channel,
    transfers: &BTreeMap<Arch, Vec<Transfer>>,
    inputs: &[ReleaseInput],
    opts: ReleaseOptions,
) -> Result<Plan, PlanError> {
    let version = release_version(transfers, inputs, opts.version)?;
    if !opts.unyank {
        refuse_withdrawn(
            &channel.history,
            channel.component.as_deref(),
            &version,
            "pass --unyank to publish it again",
        )?;
    }
    let mut plan = Plan::new(Action::Publish, vec![version.clone()], None);
    for input in inputs {
        let (mut ap, uploads) =
            plan_arch(store, channel, input.arch, &input.payloads, &version, opts)?;
        ap.uploads = uploads;
        ap.complete_hashes(false)?;
        let files = plan
            .files
            .entry(version.clone())
            .or_default()
            .entry(input.arch)
            .or_default();
        for p in &input.payloads {
            if let Some(d) = p.sha256.get() {
                files.insert(p.name.clone(), hash::to_hex(&d));
            }
        }
        plan.arches.push(ap);
    }
    Ok(plan)
}

/// Plans adding `version` with `payloads` to one arch; returns the plan and
/// the payloads the hosting does not hold yet (to upload or copy).
fn plan_arch<P: Incoming>(
    store: &dyn Store,
    channel: &Channel,
    arch: Arch,
    payloads: &[P],
    version: &Version,
    opts: ReleaseOptions,
) -> Result<(ArchPlan, Vec<P>), PlanError> {
    let view = channel.arches.get(&arch);
    let mut plan = ArchPlan::unchanged(view, arch);
    let published = view.map(|v| v.versions.as_slice()).unwrap_or_default();
    let old = &plan.before;
    if let Some(same) = published
        .iter()
        .find(|s| Version::published(&s.version) == *version)
    {
        if same.version != version.as_str() {
            return Err(Refusal::EqualVersion {
                arch,
                version: version.clone(),
                published: Version::published(&same.version),
            }
            .into());
        }
        let mut changes = Vec::new();
        for p in payloads {
            match old.entries.get(p.name()) {
                None => changes.push(format!("{} (not in the published set)", p.name())),
                Some(h) => {
                    let now = digest(arch, p)?;
                    if *h != now {
                        changes.push(format!(
                            "{} (published {}, now {})",
                            p.name(),
                            hash::to_hex(h),
                            hash::to_hex(&now)
                        ));
                    }
                }
            }
        }
        if !changes.is_empty() || same.files.len() != payloads.len() {
            return Err(Refusal::ChangedContent {
                arch,
                version: version.clone(),
                changes,
            }
            .into());
        }
        plan.kept = plan.versions.clone();
        return Ok((plan, vec![]));
    }
    if let Some(view) = view {
        refuse_collisions(
            arch,
            channel.component.as_deref(),
            &view.transfers,
            &view.other_streams(),
            payloads.iter().map(|p| p.name()),
        )?;
    }
    // A name never gets other bytes, also after retention dropped it.
    let names = channel.history.names(arch);
    for p in payloads {
        if let Some(rec) = names.get(p.name()) {
            let now = hash::to_hex(&digest(arch, p)?);
            if now != rec.sha256 {
                return Err(Refusal::NameReused {
                    arch,
                    name: p.name().to_string(),
                    seq: rec.seq,
                    recorded: rec.sha256.clone(),
                    found: now,
                }
                .into());
            }
        }
    }
    if let Some(newest) = published.first() {
        let newest = Version::published(&newest.version);
        if newest > *version && !opts.allow_downgrade {
            return Err(Refusal::Downgrade {
                arch,
                version: version.clone(),
                newest,
            }
            .into());
        }
    }

    // Retention: the newest `keep` versions, always including the new one.
    let mut all: Vec<Version> = published
        .iter()
        .map(|v| Version::published(&v.version))
        .collect();
    all.push(version.clone());
    all.sort_by(|a, b| b.cmp(a));
    let mut kept: Vec<Version> = all.iter().take(opts.settings.keep).cloned().collect();
    if !kept.contains(version) {
        kept.pop();
        kept.push(version.clone());
    }
    plan.dropped = all.iter().filter(|v| !kept.contains(v)).cloned().collect();
    plan.added = vec![version.clone()];
    plan.kept = kept.iter().filter(|v| *v != version).cloned().collect();
    plan.versions = kept.clone();

    let record = channel.record(arch);
    let size_of = |name: &str| record.and_then(|r| r.files.get(name)).map(|f| f.size);
    let mut entries: BTreeMap<String, Digest> = BTreeMap::new();
    for set in published
        .iter()
        .filter(|s| plan.kept.contains(&Version::published(&s.version)))
    {
        for name in set.files.values() {
            entries.insert(name.clone(), old.entries[name]);
        }
    }
    // Entries no transfer knows stay (they are signed by us; status shows
    // them), and so do other streams' (the OS, components): not ours to drop.
    if let Some(view) = view {
        for name in view.unmatched.iter().chain(&view.foreign) {
            entries.insert(name.clone(), old.entries[name]);
        }
    }
    for name in entries.keys() {
        let size = size_of(name)
            .or_else(|| view.and_then(|v| v.served.get(name)).map(|f| f.size))
            .unwrap_or(0);
        plan.sizes.insert(name.clone(), size);
    }
    let stored = view.map(|v| &v.stored);
    let mut new = Vec::new();
    plan.after = Manifest {
        entries,
        best_before: opts.settings.best_before,
    };
    for p in payloads {
        plan.sizes.insert(p.name().to_string(), p.size());
        if !stored.is_some_and(|s| s.contains_key(p.name())) {
            new.push(p.clone());
            continue;
        }
        // Already stored (a resumed write): fine with the same bytes, and
        // listed with its known hash.
        match store.payload_hash(arch, p.name(), &mut |_| {})? {
            Some((h, _)) if h == digest(arch, p)? => {
                plan.reused.push(p.name().to_string());
                plan.after.entries.insert(p.name().to_string(), h);
            }
            _ => {
                return Err(Refusal::Leftover {
                    arch,
                    name: p.name().to_string(),
                    store: store.describe(),
                }
                .into())
            }
        }
    }
    Ok((plan, new))
}

/// One arch's share of a promotion: the version's payloads as the source
/// channel publishes them.
pub struct PromoteInput {
    pub arch: Arch,
    pub files: Vec<Copied>,
}

/// Plans publishing `version` from another channel: the same checks as a
/// release (withdrawn, names, downgrade, retention), with payloads copied
/// store to store instead of uploaded.
pub fn plan_promote(
    store: &dyn Store,
    channel: &Channel,
    inputs: &[PromoteInput],
    version: &Version,
    source: crate::ledger::Origin,
    opts: ReleaseOptions,
) -> Result<Plan, PlanError> {
    if !opts.unyank {
        refuse_withdrawn(
            &channel.history,
            channel.component.as_deref(),
            version,
            &format!("it was withdrawn on this channel: `sysupdate-publish --channel {} unyank {version}` first", source.channel),
        )?;
    }
    let mut plan = Plan::new(Action::Promote, vec![version.clone()], None);
    plan.source = Some(source);
    for input in inputs {
        let (mut ap, copies) = plan_arch(store, channel, input.arch, &input.files, version, opts)?;
        ap.copies = copies;
        ap.complete_hashes(false)?;
        let files = plan
            .files
            .entry(version.clone())
            .or_default()
            .entry(input.arch)
            .or_default();
        for c in &input.files {
            files.insert(c.name.clone(), hash::to_hex(&c.sha256));
        }
        plan.arches.push(ap);
    }
    Ok(plan)
}

fn hex_files(set: &transfer::VersionSet, m: &Manifest) -> BTreeMap<String, String> {
    set.files
        .values()
        .map(|n| (n.clone(), hash::to_hex(&m.entries[n])))
        .collect()
}

/// The unchanged plan of every arch, to edit.
fn every_arch(channel: &Channel, settings: Settings) -> Vec<ArchPlan> {
    channel
        .arches
        .values()
        .filter(|v| v.manifest_sha256.is_some())
        .map(|v| {
            let mut p = ArchPlan::unchanged(Some(v), v.arch);
            p.after.best_before = settings.best_before;
            p.sizes = sizes(channel, v);
            p
        })
        .collect()
}

fn sizes(channel: &Channel, view: &ArchView) -> BTreeMap<String, u64> {
    view.manifest
        .entries
        .keys()
        .map(|n| {
            let size = channel
                .record(view.arch)
                .and_then(|r| r.files.get(n))
                .map(|f| f.size)
                .or_else(|| view.served.get(n).map(|f| f.size))
                .unwrap_or(0);
            (n.clone(), size)
        })
        .collect()
}

fn finish(plan: &mut ArchPlan, view: &ArchView) {
    plan.versions = transfer::classify(
        &view.transfers,
        plan.after.entries.keys().map(String::as_str),
    )
    .versions
    .iter()
    .map(|v| Version::published(&v.version))
    .collect();
}

/// Withdraws `version` from the given arches (all that publish it when empty).
pub fn plan_yank(
    channel: &Channel,
    version: &Version,
    arches: &[Arch],
    reason: &str,
    settings: Settings,
) -> Result<Plan, Refusal> {
    let mut plan = Plan::new(
        Action::Yank,
        vec![version.clone()],
        Some(reason.to_string()),
    );
    for a in arches {
        if !channel.arches.contains_key(a) {
            return Err(Refusal::NoSuchArch(a.to_string()));
        }
    }
    for mut ap in every_arch(channel, settings) {
        let view = &channel.arches[&ap.arch];
        let chosen = arches.is_empty() || arches.contains(&ap.arch);
        if chosen {
            match view.set(version) {
                None if !arches.is_empty() => {
                    return Err(Refusal::NotPublishedOn {
                        arch: ap.arch,
                        version: version.clone(),
                    })
                }
                None => {}
                Some(_) if view.versions.len() == 1 => {
                    return Err(Refusal::OnlyVersion {
                        arch: ap.arch,
                        version: version.clone(),
                    })
                }
                Some(set) => {
                    for name in set.files.values() {
                        ap.after.entries.remove(name);
                    }
                    ap.removed.push(version.clone());
                    plan.files
                        .entry(version.clone())
                        .or_default()
                        .insert(ap.arch, hex_files(set, &view.manifest));
                }
            }
        }
        finish(&mut ap, view);
        plan.arches.push(ap);
    }
    if plan.files.is_empty() {
        // Yanking what is already withdrawn changes nothing (a rerun).
        if channel
            .history
            .withdrawn(channel.component.as_deref())
            .contains_key(version)
            && arches.is_empty()
        {
            return Ok(plan);
        }
        return Err(Refusal::NotPublished(version.clone()));
    }
    Ok(plan)
}

/// Files (name → hash) that can be re-added without an upload: recorded in
/// the history and still stored with those bytes.
fn restorable(
    store: &dyn Store,
    arch: Arch,
    version: &Version,
    recorded: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, Digest>, PlanError> {
    let mut out = BTreeMap::new();
    for (name, hex) in recorded {
        let refuse = |why: String| Refusal::NotRestorable {
            arch,
            version: version.clone(),
            why,
        };
        let want = manifest::hex_digest_from_str(hex)
            .ok_or_else(|| refuse(format!("the history has a malformed hash for {name}")))?;
        match store.payload_hash(arch, name, &mut |_| {})? {
            Some((h, _)) if h == want => {
                out.insert(name.clone(), h);
            }
            Some(_) => return Err(refuse(format!("{name} is stored with other content")).into()),
            None => {
                return Err(
                    refuse(format!("{name} is no longer stored (retention pruned it)")).into(),
                )
            }
        }
    }
    Ok(out)
}

fn restore(
    store: &dyn Store,
    ap: &mut ArchPlan,
    version: &Version,
    recorded: &BTreeMap<String, String>,
    files: &mut Files,
) -> Result<(), PlanError> {
    let found = restorable(store, ap.arch, version, recorded)?;
    for (name, d) in &found {
        let size = store.list(ap.arch)?.get(name).map(|f| f.size).unwrap_or(0);
        ap.sizes.insert(name.clone(), size);
        ap.after.entries.insert(name.clone(), *d);
    }
    files
        .entry(version.clone())
        .or_default()
        .insert(ap.arch, recorded.clone());
    ap.restored.push(version.clone());
    Ok(())
}

/// Re-adds a withdrawn version from payloads still on the hosting.
pub fn plan_unyank(
    store: &dyn Store,
    channel: &Channel,
    version: &Version,
    reason: Option<String>,
    settings: Settings,
) -> Result<Plan, PlanError> {
    let component = channel.component.as_deref();
    if !channel.history.withdrawn(component).contains_key(version) {
        // Already back everywhere it was withdrawn from (a rerun): nothing to do.
        let published = channel.arches.values().any(|v| v.set(version).is_some());
        if published
            && channel
                .history
                .entries()
                .any(|e| e.action == Action::Unyank && e.versions.contains(version))
        {
            let mut plan = Plan::new(Action::Unyank, vec![version.clone()], reason);
            plan.arches = unchanged_arches(channel, settings);
            return Ok(plan);
        }
        return Err(Refusal::NotWithdrawn(version.clone()).into());
    }
    let recorded = channel.history.files_of(version, component);
    if recorded.is_empty() {
        return Err(Refusal::NoRecord(version.clone()).into());
    }
    let mut plan = Plan::new(Action::Unyank, vec![version.clone()], reason);
    for mut ap in every_arch(channel, settings) {
        let view = &channel.arches[&ap.arch];
        if let (Some(files), None) = (recorded.get(&ap.arch), view.set(version)) {
            restore(store, &mut ap, version, files, &mut plan.files)?;
        }
        finish(&mut ap, view);
        plan.arches.push(ap);
    }
    Ok(plan)
}

/// Makes `version` the newest published version of every arch: withdraws
/// every newer one, and re-adds `version` from stored payloads if
/// retention had dropped it. A withdrawn version never comes back this way.
pub fn plan_rollback(
    store: &dyn Store,
    channel: &Channel,
    version: &Version,
    reason: Option<String>,
    settings: Settings,
) -> Result<Plan, PlanError> {
    refuse_withdrawn(
        &channel.history,
        channel.component.as_deref(),
        version,
        &format!("bring it back with `sysupdate-publish unyank {version}` first, or roll back to a version that is published"),
    )?;
    let recorded = channel
        .history
        .files_of(version, channel.component.as_deref());
    let mut plan = Plan::new(Action::Rollback, vec![version.clone()], reason);
    let mut withdrawn = BTreeSet::new();
    for mut ap in every_arch(channel, settings) {
        let view = &channel.arches[&ap.arch];
        if view.set(version).is_none() {
            let files = recorded.get(&ap.arch).ok_or(Refusal::NeverPublished {
                arch: ap.arch,
                version: version.clone(),
            })?;
            restore(store, &mut ap, version, files, &mut plan.files)?;
        }
        for set in &view.versions {
            let v = Version::published(&set.version);
            if v > *version {
                for name in set.files.values() {
                    ap.after.entries.remove(name);
                }
                plan.files
                    .entry(v.clone())
                    .or_default()
                    .insert(ap.arch, hex_files(set, &view.manifest));
                ap.removed.push(v.clone());
                withdrawn.insert(v.as_str().to_string());
            }
        }
        finish(&mut ap, view);
        plan.arches.push(ap);
    }
    if plan.arches.is_empty() {
        return Err(Refusal::NothingPublished(channel.location.clone()).into());
    }
    let mut withdrawn: Vec<Version> = withdrawn.iter().map(|v| Version::published(v)).collect();
    withdrawn.sort_by(|a, b| b.cmp(a));
    plan.versions.extend(withdrawn);
    Ok(plan)
}

/// Every published arch as it is, re-signed with `settings`.
fn unchanged_arches(channel: &Channel, settings: Settings) -> Vec<ArchPlan> {
    let mut arches = every_arch(channel, settings);
    for ap in &mut arches {
        finish(ap, &channel.arches[&ap.arch]);
    }
    arches
}

/// Re-signs every manifest unchanged, with a fresh lifetime and BEST-BEFORE.
pub fn plan_refresh(channel: &Channel, settings: Settings) -> Plan {
    let mut plan = Plan::new(Action::Refresh, vec![], None);
    plan.arches = unchanged_arches(channel, settings);
    for ap in &mut plan.arches {
        ap.resign = true;
    }
    plan
}

/// Payloads of withdrawn versions kept on the hosting (so `unyank` needs no
/// upload): those of withdrawn versions among the newest `keep` versions
/// known for the arch, published or withdrawn, in one stream.
pub fn retained(
    ledger: &Ledger,
    component: Option<&str>,
    arch: Arch,
    published: &[Version],
    keep: usize,
) -> BTreeSet<String> {
    let withdrawn = ledger.withdrawn(component);
    let mut all: Vec<&Version> = published.iter().collect();
    all.extend(withdrawn.keys());
    all.sort_by(|a, b| b.cmp(a));
    all.dedup_by(|a, b| a == b);
    let newest: Vec<&Version> = all.into_iter().take(keep).collect();
    withdrawn
        .keys()
        .filter(|v| newest.contains(v))
        .flat_map(|v| {
            ledger
                .files_of(v, component)
                .remove(&arch)
                .unwrap_or_default()
                .into_keys()
        })
        .collect()
}
