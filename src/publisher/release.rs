//! `release` and `repair`: the writes that take build outputs. Build
//! outputs are untrusted input: each is scanned (links followed only into
//! the nix store or within the output), named, and checked against the
//! transfers before anything is compressed, and no output directory may
//! serve two architectures.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use super::{refuse_blocking, uploads, PublishError, Publisher, Report};
use crate::arch::Arch;
use crate::channel::plan::{
    self, Copied, NameCheck, Plan, PromoteInput, ReleaseInput, ReleaseOptions,
};
use crate::channel::problem::Problem;
use crate::channel::refusal::Refusal;
use crate::channel::state::{self, Channel};
use crate::compress;
use crate::fault;
use crate::hash;
use crate::ledger::{Action, Origin, SkippedCheck};
use crate::preflight::{self, Check};
use crate::progress::Events;
use crate::signing::Signer;
use crate::stage::{self, InputFile, Payload};
use crate::stamps::StampCache;
use crate::store::{Store, StoreError};
use crate::transfer::Transfer;
use crate::version::Version;

/// What `release` publishes and how.
#[derive(Clone, Debug)]
pub struct ReleaseRequest {
    /// One build output directory per arch.
    pub outputs: Vec<(Arch, PathBuf)>,
    /// The version the payloads must be (they name it; this only checks).
    pub version: Option<String>,
    pub dry_run: bool,
    pub allow_downgrade: bool,
    /// Publish a withdrawn version again.
    pub unyank: bool,
    pub compress: compress::Settings,
    /// What preflight compares with.
    pub checks: preflight::Settings,
    /// Checks not to run, and why (recorded in the history).
    pub skip: Skip,
    /// What earlier runs learned of unchanged output files
    /// ([`StampCache::off`] reads every byte).
    pub stamps: std::sync::Arc<StampCache>,
}

/// What `promote` publishes and how.
#[derive(Clone, Debug)]
pub struct PromoteRequest {
    pub version: Version,
    /// With `--if-older-than`: how long ago the source must have published it.
    pub soak: Option<std::time::Duration>,
    pub dry_run: bool,
    /// This channel's preflight settings (the promoted payloads are checked
    /// as a release here would check them).
    pub checks: preflight::Settings,
    pub skip: Skip,
    /// Evidence earlier runs kept, so payloads this machine inspected
    /// before are not read again.
    pub stamps: std::sync::Arc<StampCache>,
}

/// `--skip-check`: the checks a release goes without, with the reason.
#[derive(Clone, Debug, Default)]
pub struct Skip {
    pub checks: BTreeSet<Check>,
    pub reason: Option<String>,
}

impl Skip {
    /// Whether any check runs at all (if none does, staging need not look).
    fn any_check(&self) -> bool {
        self.checks.len() < Check::ALL.len()
    }

    fn record(&self) -> Vec<SkippedCheck> {
        self.checks
            .iter()
            .map(|c| SkippedCheck {
                check: c.name().to_string(),
                reason: self.reason.clone().unwrap_or_default(),
            })
            .collect()
    }
}

/// Build outputs to take recorded payloads from again.
#[derive(Clone, Debug)]
pub struct RepairRequest {
    pub outputs: Vec<(Arch, PathBuf)>,
    pub dry_run: bool,
    /// How the release compressed them (the recorded hashes are of the
    /// compressed bytes).
    pub compress: compress::Settings,
}

/// One arch's build output, scanned and named.
struct Output {
    arch: Arch,
    files: Vec<InputFile>,
    /// Published name and the build output's own name, per file.
    names: Vec<(String, String)>,
}

impl Publisher<'_> {
    fn transfers(&self, arches: &[Arch]) -> Result<BTreeMap<Arch, Vec<Transfer>>, PublishError> {
        arches
            .iter()
            .map(|a| {
                let t =
                    state::load_transfers(self.transfers_dir, self.specifiers, self.component, *a)?;
                Ok((*a, t))
            })
            .collect()
    }

    /// Scans every output: one directory per arch, untrusted.
    fn scan(
        &self,
        outputs: &[(Arch, PathBuf)],
        codec: compress::Codec,
    ) -> Result<Vec<Output>, PublishError> {
        let mut seen: Vec<(Arch, PathBuf)> = Vec::new();
        let mut out = Vec::new();
        for (arch, dir) in outputs {
            let real = std::fs::canonicalize(dir).map_err(|source| {
                PublishError::Stage(stage::StageError::Io {
                    arch: *arch,
                    path: dir.clone(),
                    source,
                })
            })?;
            if seen.iter().any(|(a, _)| a == arch) {
                return Err(Refusal::Other(format!(
                    "{arch}: two build outputs given; give one per architecture"
                ))
                .into());
            }
            if let Some((first, _)) = seen.iter().find(|(_, p)| *p == real) {
                return Err(Refusal::SameOutput {
                    first: *first,
                    second: *arch,
                    path: real.display().to_string(),
                }
                .into());
            }
            seen.push((*arch, real));
            let files = stage::scan(*arch, dir)?;
            let names = files
                .iter()
                .map(|f| {
                    stage::published_name(f, codec)
                        .map(|n| (n, f.name.clone()))
                        .map_err(|source| {
                            PublishError::Stage(stage::StageError::Io {
                                arch: *arch,
                                path: f.path.clone(),
                                source,
                            })
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            out.push(Output {
                arch: *arch,
                files,
                names,
            });
        }
        Ok(out)
    }

    /// Publishes one version from build outputs.
    pub fn release(&self, key: &dyn Signer, req: &ReleaseRequest) -> Result<Report, PublishError> {
        if req.outputs.is_empty() {
            return Err(Refusal::NoArchitectures.into());
        }
        let arches: Vec<Arch> = req.outputs.iter().map(|(a, _)| *a).collect();
        let transfers = self.transfers(&arches)?;
        let outputs = self.scan(&req.outputs, req.compress.codec)?;
        // Names and the published state first: minutes of compression later
        // is too late to learn the release is refused.
        for o in &outputs {
            let checks: Vec<NameCheck> = o
                .names
                .iter()
                .zip(&o.files)
                .map(|((n, raw), file)| NameCheck {
                    name: n,
                    compressed_from: (n != raw).then_some(raw.as_str()),
                    tree: file.path.is_dir(),
                })
                .collect();
            let (version, warnings) = plan::version_of_names(o.arch, &transfers[&o.arch], &checks)?;
            let streams =
                state::load_streams(self.transfers_dir, self.specifiers, self.component, o.arch)?;
            plan::refuse_collisions(
                o.arch,
                self.component,
                &streams[0].transfers,
                &streams[1..],
                o.names.iter().map(|(n, _)| n.as_str()),
            )?;
            for w in warnings {
                self.events
                    .warn(format!("{}: version {version}: {w}", o.arch));
            }
        }
        let pre = self.read(false)?;
        refuse_blocking(&pre)?;
        if req.compress.codec == compress::Codec::Zstd {
            self.events.warn("compress = \"zstd\": systemd-sysupdate before 258 cannot decompress zstd and installs the compressed bytes as-is".into());
        }
        let staging = tempfile::Builder::new()
            .prefix("sysupdate-publish-")
            .tempdir()
            .map_err(|source| PublishError::Io {
                what: "creating a staging directory (set TMPDIR to a roomy filesystem)".into(),
                source,
            })?;
        let inputs = self.stage(&pre, &outputs, req, staging.path())?;
        self.remember_stamps(req, &inputs);
        // Withdrawn versions and --version are checked on the staged names
        // too (before the lock, so a refusal costs no lock wait).
        let version = plan::release_version(&transfers, &inputs, req.version.as_deref())?;
        if !req.unyank {
            plan::refuse_withdrawn(
                &pre.history,
                self.component,
                &version,
                "pass --unyank to publish it again",
            )?;
        }
        self.preflight(&transfers, &inputs, req)?;
        let opts = ReleaseOptions {
            version: req.version.as_deref(),
            allow_downgrade: req.allow_downgrade,
            unyank: req.unyank,
            settings: self.settings(),
        };
        let versions = [version.clone()];
        let written = self.write(key, req.dry_run, (Action::Publish, &versions), |ch| {
            let mut plan = plan::plan_release(self.store, ch, &transfers, &inputs, opts)?;
            plan.skipped_checks = req.skip.record();
            Ok(plan)
        });
        // Uploads learned the hashes of new payloads: the next run reads none.
        self.remember_stamps(req, &inputs);
        let mut report = written?;
        report.read_bytes = inputs
            .iter()
            .flat_map(|i| &i.payloads)
            .map(|p| p.read)
            .sum();
        Ok(report)
    }

    fn remember_stamps(&self, req: &ReleaseRequest, inputs: &[ReleaseInput]) {
        for input in inputs {
            stage::remember(&req.stamps, &input.payloads);
        }
        if let Err(e) = req.stamps.save() {
            self.events.warn(format!(
                "cannot save the stamp cache (the next run hashes again): {e}"
            ));
        }
    }

    /// Publishes `version` as channel `source` publishes it: reads and
    /// verifies the source (signatures, hashes, history), checks the version
    /// is published and not withdrawn there (and, with `soak`, that the
    /// source's history shows it published at least that long ago), then
    /// publishes it here through this channel's protocol with the payloads
    /// copied store to store. The history entry names the source channel
    /// and its head.
    pub fn promote(
        &self,
        key: &dyn Signer,
        source: &Publisher,
        source_name: &str,
        req: &PromoteRequest,
    ) -> Result<Report, PublishError> {
        let version = &req.version;
        let from = source.read(false)?;
        let blocking: Vec<Problem> = from.blocking().into_iter().cloned().collect();
        if !blocking.is_empty() {
            return Err(Refusal::SourceProblems {
                channel: source_name.to_string(),
                problems: blocking,
            }
            .into());
        }
        plan::refuse_withdrawn(
            &from.history,
            source.component,
            version,
            &format!("it is withdrawn on {source_name}; promote another version"),
        )?;
        let mut inputs = Vec::new();
        for view in from.arches.values() {
            let Some(set) = view.set(version) else {
                continue;
            };
            let record = from.record(view.arch);
            let files = set
                .files
                .values()
                .map(|name| Copied {
                    name: name.clone(),
                    size: record.and_then(|r| r.files.get(name)).map_or(0, |f| f.size),
                    sha256: view.manifest.entries[name],
                })
                .collect();
            inputs.push(PromoteInput {
                arch: view.arch,
                files,
            });
        }
        if inputs.is_empty() {
            return Err(Refusal::NotOnChannel {
                version: version.clone(),
                channel: source_name.to_string(),
            }
            .into());
        }
        if let Some(soak) = req.soak {
            self.refuse_too_recent(&from, source_name, version, soak)?;
        }
        let read = self.preflight_promoted(source, &inputs, req)?;
        let origin = Origin {
            channel: source_name.to_string(),
            store: source.store.describe(),
            seq: from.history.len(),
            hash: from.history.head_hash(),
        };
        let opts = ReleaseOptions {
            version: None,
            allow_downgrade: false,
            unyank: false,
            settings: self.settings(),
        };
        let versions = [version.clone()];
        let mut report = self.write_from(
            key,
            req.dry_run,
            (Action::Promote, &versions),
            Some(source.store),
            |ch| {
                let mut plan =
                    plan::plan_promote(self.store, ch, &inputs, version, origin.clone(), opts)?;
                plan.skipped_checks = req.skip.record();
                Ok(plan)
            },
        )?;
        report.read_bytes = read;
        Ok(report)
    }

    /// This channel's preflight on the payloads a promotion copies: checks
    /// the source skipped, or settings changed since its release, are not
    /// carried along unseen. What a payload holds comes from the stamp
    /// cache (this machine inspected those bytes before) or from reading
    /// the start of the source's copy, cut off once the inspector has
    /// what it needs. Returns the payload bytes read.
    fn preflight_promoted(
        &self,
        source: &Publisher,
        inputs: &[PromoteInput],
        req: &PromoteRequest,
    ) -> Result<u64, PublishError> {
        if !req.skip.any_check() {
            self.warn_skipped(&req.skip);
            return Ok(0);
        }
        let arches: Vec<Arch> = inputs.iter().map(|i| i.arch).collect();
        let transfers = self.transfers(&arches)?;
        let mut read = 0;
        let mut seen = Vec::new();
        for input in inputs {
            let mut payloads = Vec::new();
            for file in &input.files {
                let content = match req.stamps.evidence(&file.sha256) {
                    Some(e) => Some(e.replay()),
                    None => {
                        let (found, n) = self.inspect_stored(source, input.arch, file)?;
                        read += n;
                        match found {
                            Ok((c, _)) => Some(c),
                            Err(why) => {
                                self.events.warn(format!(
                                    "{}: {}: preflight cannot look inside: {why}",
                                    input.arch, file.name
                                ));
                                None
                            }
                        }
                    }
                };
                payloads.push((file.name.clone(), content));
            }
            seen.push((input.arch, payloads));
        }
        let items: Vec<(Arch, Vec<preflight::Item>)> = seen
            .iter()
            .map(|(arch, payloads)| {
                let items = payloads
                    .iter()
                    .map(|(name, content)| preflight::Item {
                        name,
                        content: content.as_ref(),
                    })
                    .collect();
                (*arch, items)
            })
            .collect();
        self.run_preflight(&transfers, &items, &req.checks, &req.skip)?;
        Ok(read)
    }

    /// Reads the start of `file` from `source`'s store for preflight. The
    /// evidence is not remembered: these bytes were not hashed, so they
    /// prove nothing about the content hash the cache is keyed by.
    fn inspect_stored(
        &self,
        source: &Publisher,
        arch: Arch,
        file: &Copied,
    ) -> Result<(crate::inspect::Inspected, u64), PublishError> {
        let found = crate::inspect::inspect_download(file.size, |to| {
            match source.store.download(arch, &file.name, to)? {
                Some(_) => Ok(()),
                None => Err(PublishError::Refused(Refusal::Other(format!(
                    "{arch}: {} is listed in the source channel's manifest but not stored there; run `sysupdate-publish --channel SOURCE repair` first",
                    file.name
                )))),
            }
        })
        .map_err(|source| PublishError::Io {
            what: format!("{arch}: inspecting {}", file.name),
            source,
        })??;
        self.events.detail(format!(
            "{arch}: {}: preflight read {} of {} bytes from the source channel",
            file.name, found.1, file.size
        ));
        Ok(found)
    }

    /// A pipeline promotes after a soak time: the source's history must show
    /// the version published at least `soak` ago.
    fn refuse_too_recent(
        &self,
        from: &Channel,
        source_name: &str,
        version: &Version,
        soak: std::time::Duration,
    ) -> Result<(), PublishError> {
        let published = from
            .history
            .entries()
            .rev()
            .find(|e| {
                matches!(e.action, Action::Publish | Action::Unyank | Action::Promote)
                    && e.versions.first() == Some(version)
            })
            .map(|e| e.time.clone());
        let since = published
            .as_deref()
            .and_then(|t| humantime::parse_rfc3339(t).ok());
        match since {
            Some(t) if t + soak <= self.now => Ok(()),
            _ => Err(Refusal::TooRecent {
                version: version.clone(),
                channel: source_name.to_string(),
                since: published.unwrap_or_else(|| "an unknown time".into()),
                soak: humantime::format_duration(soak).to_string(),
                ready: since
                    .map(|t| state::rfc3339(t + soak))
                    .unwrap_or_else(|| "its publication is in the history".into()),
            }
            .into()),
        }
    }

    /// Hashes or compresses every output's files. A payload the hosting
    /// has never seen is hashed by its upload instead (read once); one the
    /// hosting or the history knows is hashed now, because planning
    /// compares it.
    fn stage(
        &self,
        channel: &Channel,
        outputs: &[Output],
        req: &ReleaseRequest,
        staging: &std::path::Path,
    ) -> Result<Vec<ReleaseInput>, PublishError> {
        let learn = !req.dry_run && self.store.hashes_while_uploading();
        let known: BTreeMap<Arch, BTreeSet<String>> = outputs
            .iter()
            .map(|o| {
                let mut names: BTreeSet<String> =
                    channel.history.names(o.arch).into_keys().collect();
                if let Some(v) = channel.arches.get(&o.arch) {
                    names.extend(v.stored.keys().cloned());
                    names.extend(v.manifest.entries.keys().cloned());
                }
                (o.arch, names)
            })
            .collect();
        let defer = |arch: Arch, name: &str| learn && !known[&arch].contains(name);
        let jobs: Vec<_> = outputs
            .iter()
            .map(|o| (o.arch, o.files.as_slice()))
            .collect();
        let opts = stage::Options {
            settings: &req.compress,
            defer: &defer,
            inspect: req.skip.any_check(),
            stamps: &req.stamps,
        };
        let staged = stage::stage_all(&jobs, opts, staging, self.events)?;
        Ok(outputs
            .iter()
            .zip(staged)
            .map(|(o, payloads)| ReleaseInput {
                arch: o.arch,
                payloads,
            })
            .collect())
    }

    /// Preflight on every arch's staged payloads: refuses (before any
    /// upload, before the lock) with every finding of every arch.
    fn preflight(
        &self,
        transfers: &BTreeMap<Arch, Vec<Transfer>>,
        inputs: &[ReleaseInput],
        req: &ReleaseRequest,
    ) -> Result<(), PublishError> {
        for name in req.checks.partition_sizes.keys() {
            if !transfers.values().flatten().any(|t| &t.name == name) {
                let known: BTreeSet<&str> = transfers
                    .values()
                    .flatten()
                    .map(|t| t.name.as_str())
                    .collect();
                return Err(Refusal::Other(format!(
                    "[checks.partition-size] {name:?}: no transfer has that name in {} (transfers: {})",
                    self.transfers_dir.display(),
                    known.into_iter().collect::<Vec<_>>().join(", ")
                ))
                .into());
            }
        }
        let items: Vec<(Arch, Vec<preflight::Item>)> = inputs
            .iter()
            .map(|input| {
                let items = input
                    .payloads
                    .iter()
                    .map(|p| preflight::Item {
                        name: &p.name,
                        content: p.content.as_ref(),
                    })
                    .collect();
                (input.arch, items)
            })
            .collect();
        self.run_preflight(transfers, &items, &req.checks, &req.skip)
    }

    /// Runs preflight on every arch's payloads: refuses with every finding
    /// of every arch; warns of what it could not check and what was skipped.
    fn run_preflight(
        &self,
        transfers: &BTreeMap<Arch, Vec<Transfer>>,
        items: &[(Arch, Vec<preflight::Item>)],
        checks: &preflight::Settings,
        skip: &Skip,
    ) -> Result<(), PublishError> {
        let mut findings = Vec::new();
        for (arch, items) in items {
            let outcome = preflight::check(*arch, &transfers[arch], items, checks, &skip.checks);
            for u in outcome.unchecked {
                self.events.warn(u);
            }
            findings.extend(outcome.findings);
        }
        self.warn_skipped(skip);
        if findings.is_empty() {
            Ok(())
        } else {
            Err(Refusal::Preflight(preflight::Refused { findings }).into())
        }
    }

    fn warn_skipped(&self, skip: &Skip) {
        for c in &skip.checks {
            self.events.warn(format!(
                "preflight check {c} skipped: {}",
                skip.reason.as_deref().unwrap_or("no reason given")
            ));
        }
    }

    /// Makes the hosting serve the history's newest state again: finishes an
    /// interrupted write, puts back manifests the hosting replaced or lost
    /// (re-signed now), and uploads again payloads whose bytes are missing
    /// or changed, taken from the given build outputs (only files that hash
    /// to what the history recorded). Given build outputs, it hashes every
    /// published payload (as `status --deep`): bytes changed at the same
    /// size show no other way. Writes no history: the head already names
    /// this state.
    pub fn repair(&self, key: &dyn Signer, req: &RepairRequest) -> Result<Report, PublishError> {
        let _lock = if req.dry_run {
            None
        } else {
            Some(self.store.lock(self.events)?)
        };
        let channel = self.read(!req.outputs.is_empty())?;
        let history: Vec<&Problem> = channel
            .problems
            .iter()
            .filter(|p| {
                matches!(
                    p,
                    Problem::HistoryUnreadable { .. }
                        | Problem::HistoryMissing { .. }
                        | Problem::HistoryWithoutState { .. }
                        | Problem::HistoryRolledBack { .. }
                )
            })
            .collect();
        if let Some(p) = history.first() {
            return Err(Refusal::Other(format!(
                "repair serves the history's newest state, but {p}: {}",
                p.fix()
            ))
            .into());
        }
        let Some(head) = channel.history.head() else {
            return Err(Refusal::NothingPublished(self.store.describe()).into());
        };
        let plan = Plan::new(Action::Publish, vec![], None);
        let mut report = Report::new(&plan, self.store.describe(), req.dry_run);
        report.action = head.action;
        let staging = tempfile::tempdir().map_err(|source| PublishError::Io {
            what: "creating a staging directory".into(),
            source,
        })?;
        let fixes = self.payload_fixes(&channel, req, staging.path())?;
        let repairable = channel.problems.iter().any(|p| {
            p.blocks_writes() || matches!(p, Problem::Interrupted { .. } | Problem::Expired { .. })
        });
        report.already_published = !repairable;
        if req.dry_run || !repairable {
            return Ok(report);
        }
        // Every arch with a payload problem is committed again, also where
        // the stored copy is right and nothing is uploaded: that is what
        // serves it again (a directory store's generation links).
        let mut forced: BTreeSet<Arch> = channel
            .problems
            .iter()
            .filter_map(|p| p.payload_file().map(|(arch, _)| arch))
            .collect();
        if !fixes.is_empty() {
            self.check_signer(key)?;
        }
        for (arch, payload) in &fixes {
            self.store.delete(*arch, &payload.name)?;
            let bar = self
                .events
                .bar(payload.size, &format!("{arch} {}", payload.name));
            let progress = bar.clone();
            self.store.put_payload(
                *arch,
                &payload.name,
                &payload.source(std::sync::Arc::new(move |n| progress.inc(n))),
            )?;
            bar.finish();
            self.events
                .info(format!("{arch}: uploaded {} again", payload.name));
            fault::point("payload repaired");
            forced.insert(*arch);
        }
        let arches = self.roll_forward_forced(key, &channel, &forced)?;
        for arch in &arches {
            self.events.info(format!(
                "{arch}: serves the manifest of history entry #{} again",
                head.seq
            ));
        }
        report.finished_interrupted = channel.interrupted().map(|_| head.seq);
        Ok(report)
    }

    /// The payloads repair must upload again, staged from the outputs.
    fn payload_fixes(
        &self,
        channel: &Channel,
        req: &RepairRequest,
        staging: &std::path::Path,
    ) -> Result<Vec<(Arch, Payload)>, PublishError> {
        let mut bad: BTreeMap<Arch, Vec<(String, String)>> = BTreeMap::new();
        for p in &channel.problems {
            let Some((arch, file)) = p.payload_file() else {
                continue;
            };
            let Some(rec) = channel.record(arch).and_then(|r| r.files.get(file)) else {
                continue;
            };
            // The stored copy may still be right (a directory store whose
            // served link was replaced): then re-committing is enough. Not
            // for bytes found to hash otherwise: the stored hash may be what
            // the upload recorded (S3 metadata), which stays when the bytes
            // are replaced.
            let stored = match p {
                Problem::PayloadHash { .. } => None,
                _ => self.store.payload_hash(arch, file, &mut |_| {})?,
            };
            if stored.is_some_and(|(d, size)| hash::to_hex(&d) == rec.sha256 && size == rec.size) {
                continue;
            }
            bad.entry(arch)
                .or_default()
                .push((file.to_string(), rec.sha256.clone()));
        }
        let mut out = Vec::new();
        if bad.is_empty() {
            return Ok(out);
        }
        let outputs = self.scan(&req.outputs, req.compress.codec)?;
        let lacking: Vec<String> = bad
            .iter()
            .filter(|(arch, _)| !outputs.iter().any(|o| o.arch == **arch))
            .map(|(arch, files)| {
                format!(
                    "{arch}: {} must be uploaded again: pass the build output of that version with `--output {arch}=PATH`",
                    files.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
                )
            })
            .collect();
        if !lacking.is_empty() {
            return Err(Refusal::Other(lacking.join("\n")).into());
        }
        for (arch, files) in bad {
            let o = outputs
                .iter()
                .find(|o| o.arch == arch)
                .expect("every arch has an output");
            // Repair trusts no cache: it reads every byte it vouches for.
            let off = StampCache::off();
            let opts = stage::Options::deep(&req.compress, &off);
            let staged = stage::stage(arch, &o.files, opts, staging, self.events)?;
            for (name, sha256) in files {
                let found = staged.iter().find(|p| {
                    p.name == name
                        && p.sha256.get().map(|d| hash::to_hex(&d)) == Some(sha256.clone())
                });
                match found {
                    Some(p) => out.push((arch, p.clone())),
                    None => {
                        return Err(Refusal::RepairSourceMissing {
                            arch,
                            version: channel
                                .arches
                                .get(&arch)
                                .and_then(|v| v.version_of(&name))
                                .map(|v| v.to_string())
                                .unwrap_or_else(|| "?".into()),
                            name,
                            sha256,
                        }
                        .into())
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Uploads every planned payload, `store.parallel_uploads()` at a time,
/// under one aggregate progress bar. The first failure stops further
/// uploads (those in flight finish) and is returned.
pub(super) fn upload(
    store: &dyn Store,
    plan: &Plan,
    events: &dyn Events,
) -> Result<(), PublishError> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let jobs = uploads(plan);
    if jobs.is_empty() {
        return Ok(());
    }
    let bar = events.bar(plan.upload_bytes(), "uploading payloads");
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
                match store.put_payload(arch, &p.name, &p.source(progress.clone())) {
                    Ok(()) => {
                        events.detail(format!("{arch}: wrote {} ({} bytes)", p.name, p.size));
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
    bar.finish();
    match failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// Copies the payloads a promotion needs from the source channel's store:
/// server side where the two stores allow, else streamed through a
/// temporary file (counted in the report's `upload_bytes`).
pub(super) fn copy(
    store: &dyn Store,
    from: &dyn Store,
    plan: &mut Plan,
    events: &dyn Events,
) -> Result<(), PublishError> {
    for ap in &mut plan.arches {
        for c in &ap.copies {
            if store.copy_payload(ap.arch, &c.name, from, c.sha256, c.size)? {
                events.detail(format!("{}: copied {} on the hosting", ap.arch, c.name));
                fault::point("payload copied");
                continue;
            }
            let tmp = tempfile::NamedTempFile::new().map_err(|source| PublishError::Io {
                what: "creating a temporary file (set TMPDIR to a roomy filesystem)".into(),
                source,
            })?;
            let mut file = std::io::BufWriter::new(tmp.as_file());
            let got = from.download(ap.arch, &c.name, &mut file)?;
            std::io::Write::flush(&mut file).map_err(|source| PublishError::Io {
                what: format!("writing {}", tmp.path().display()),
                source,
            })?;
            drop(file);
            if got != Some(c.size) {
                return Err(Refusal::Other(format!(
                    "{}: {} is gone from the source channel or has {} bytes instead of {}",
                    ap.arch,
                    c.name,
                    got.unwrap_or(0),
                    c.size
                ))
                .into());
            }
            let source = crate::payload::Source::from_file(
                tmp.path(),
                crate::payload::PayloadDigest::known(c.sha256),
            )
            .map_err(|source| PublishError::Io {
                what: format!("reading {}", tmp.path().display()),
                source,
            })?;
            store.put_payload(ap.arch, &c.name, &source)?;
            ap.streamed += c.size;
            events.detail(format!(
                "{}: copied {} through this machine",
                ap.arch, c.name
            ));
            fault::point("payload copied");
        }
    }
    Ok(())
}
