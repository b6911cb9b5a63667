//! The commit protocol, written once. Every write (release, yank, unyank,
//! rollback, refresh, repair, adopt) runs the same steps in the same order:
//!
//! 1. Lock the channel; read and verify all of it (every arch and the
//!    history, cross-checked). Problems that break the history's claim on
//!    the hosting stop the write; a write the history names but that is not
//!    committed everywhere is finished first (rolled forward).
//! 2. Plan every arch. Every check for every arch happens here.
//! 3. Upload new payloads (create-only, verified).
//! 4. Render, sign and verify every new manifest, all before any write.
//! 5. Append the history entry that names the new manifests. It goes first,
//!    so a crash between arches leaves a history that says which write is
//!    unfinished, and an older manifest put back is told apart from it.
//! 6. Switch each arch's manifest and signature.
//! 7. Remember the new head on this machine.
//! 8. Delete what no manifest names any more (only names the history
//!    recorded, never through a symlink, never outside the store).
//!
//! A write whose plan changes nothing writes nothing, history included.
//! The library never prints: progress goes to [`Events`], results come back
//! as a [`Report`].

mod mirror;
mod release;
pub mod report;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use thiserror::Error;

pub use release::{PromoteRequest, ReleaseRequest, RepairRequest, Skip};
pub use report::{ArchReport, Report};

use crate::arch::Arch;
use crate::channel::anchor::{Anchor, AnchorError};
use crate::channel::plan::{self, Plan, PlanError, Settings};
use crate::channel::problem::Problem;
use crate::channel::refusal::Refusal;
use crate::channel::source::StoreSource;
use crate::channel::state::{self, Channel, ReadError, ReadOptions};
use crate::fault;
use crate::hash;
use crate::ledger::{Action, ArchRecord, Draft, Ledger, LedgerError, State, Verbatim};
use crate::manifest::{self, Date, Manifest};
use crate::progress::Events;
use crate::signing::{Checked, Keyring, SignOptions, Signer, SigningError};
use crate::stage::{Payload, StageError};
use crate::store::{Store, StoreError};
use crate::transfer;
use crate::version::Version;
use sha2::Digest as _;

#[derive(Debug, Error)]
pub enum PublishError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Stage(#[from] StageError),
    #[error(transparent)]
    History(#[from] LedgerError),
    #[error(transparent)]
    Anchor(#[from] AnchorError),
    /// A staged payload that could not be read (or changed) when hashed.
    #[error("{arch}: {source}")]
    Payload { arch: Arch, source: std::io::Error },
    #[error("{arch}: {message}")]
    Sign { arch: Arch, message: String },
    /// The signer failed before anything was written (the message
    /// includes the signer's, so it is no `source`).
    #[error("nothing was written: {0}")]
    Signer(SigningError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

impl From<SigningError> for PublishError {
    fn from(e: SigningError) -> PublishError {
        PublishError::Signer(e)
    }
}

impl From<PlanError> for PublishError {
    fn from(e: PlanError) -> PublishError {
        match e {
            PlanError::Refused(r) => PublishError::Refused(r),
            PlanError::Store(s) => PublishError::Store(s),
            PlanError::Payload { arch, source } => PublishError::Payload { arch, source },
        }
    }
}

/// One channel and how to judge it.
pub struct Publisher<'a> {
    pub store: &'a dyn Store,
    /// What devices install; every signature must verify with it.
    pub keyring: &'a Keyring,
    pub transfers_dir: &'a Path,
    /// The stream this publisher writes: the OS (`None`) or a component
    /// (`sysupdate.NAME.d`); the other streams' files are left as they are.
    pub component: Option<&'a str>,
    /// `[specifiers]`: what `%w` and the like expand to in transfer files.
    pub specifiers: &'a crate::transfer::Specifiers,
    /// Versions kept per arch.
    pub keep: usize,
    pub signature_lifetime: Option<Duration>,
    pub expiry_warning: Duration,
    /// Where this machine remembers the channel's history head (`None`: nowhere).
    pub anchor: Option<Anchor>,
    /// The signing time (tests move it).
    pub now: SystemTime,
    pub events: &'a dyn Events,
}

/// A manifest ready to commit: rendered, signed, verified.
struct Signed {
    arch: Arch,
    bytes: Vec<u8>,
    signature: Vec<u8>,
    names: Vec<String>,
}

impl<'a> Publisher<'a> {
    fn settings(&self) -> Settings {
        Settings {
            keep: self.keep,
            best_before: self.best_before(),
        }
    }

    /// The BEST-BEFORE date of manifests signed now: the day the signature
    /// expires on (devices refuse from 00:00 UTC that day), so both checks
    /// agree to within a day.
    pub fn best_before(&self) -> Option<Date> {
        self.signature_lifetime.map(|l| best_before(self.now, l))
    }

    /// Reads, verifies and cross-checks the whole channel, and remembers
    /// its history head when the history holds up and every arch serves it
    /// (so a remembered head's write is known to be finished).
    pub fn read(&self, deep: bool) -> Result<Channel, PublishError> {
        let remembered = match &self.anchor {
            Some(a) => a.load()?,
            None => None,
        };
        let opts = ReadOptions {
            keyring: self.keyring,
            transfers_dir: self.transfers_dir,
            component: self.component,
            specifiers: self.specifiers,
            now: self.now,
            expiry_warning: self.expiry_warning,
            deep,
            remembered: remembered.clone(),
            events: self.events,
        };
        let channel = state::read(&StoreSource(self.store), &opts)?;
        let history_ok = !channel.problems.iter().any(|p| {
            matches!(
                p,
                Problem::HistoryUnreadable { .. }
                    | Problem::HistoryRolledBack { .. }
                    | Problem::HistoryMissing { .. }
            )
        });
        if let Some(anchor) = &self.anchor {
            if history_ok && !channel.history.is_empty() {
                // Once seen complete, a head stays complete: an arch behind
                // it later was put back, not left behind.
                let seen = remembered.as_ref().is_some_and(|r| {
                    r.complete
                        && r.seq == channel.history.len()
                        && r.hash == channel.history.head_hash()
                });
                anchor.remember(&channel.history, seen || channel.serves_head())?;
            }
        }
        Ok(channel)
    }

    /// The verified channel a write may build on (under the lock): blocking
    /// problems refuse; an interrupted write is finished first.
    fn read_for_write(&self, key: &dyn Signer) -> Result<(Channel, Option<u64>), PublishError> {
        let channel = self.read(false)?;
        refuse_blocking(&channel)?;
        let Some(Problem::Interrupted { seq, .. }) = channel.interrupted().cloned() else {
            return Ok((channel, None));
        };
        self.events.warn(format!(
            "{}; finishing it first",
            channel.interrupted().expect("just found")
        ));
        self.roll_forward_forced(key, &channel, &Default::default())?;
        let channel = self.read(false)?;
        refuse_blocking(&channel)?;
        if let Some(p) = channel.interrupted() {
            return Err(Refusal::Problems {
                problems: vec![p.clone()],
            }
            .into());
        }
        Ok((channel, Some(seq)))
    }

    /// Serves the history head's manifest again on every arch that does
    /// not, and on `forced` ones (an interrupted write, or `repair`), then
    /// cleans up.
    fn roll_forward_forced(
        &self,
        key: &dyn Signer,
        channel: &Channel,
        forced: &std::collections::BTreeSet<Arch>,
    ) -> Result<Vec<Arch>, PublishError> {
        let Some(state) = channel.head_state() else {
            return Ok(vec![]);
        };
        let mut signed = Vec::new();
        for (arch, record) in state {
            let view = channel.arches.get(arch);
            let at_head = view.is_some_and(|v| {
                v.manifest_sha256.as_deref() == Some(record.manifest.as_str())
                    && matches!(v.signature, state::Signature::Valid(_))
            });
            if at_head && !forced.contains(arch) {
                continue;
            }
            if let Some(v) = &record.verbatim {
                let signature = hex::decode(&v.signature).map_err(|e| PublishError::Sign {
                    arch: *arch,
                    message: format!(
                        "the history's copy of the mirrored signature is not hex ({e})"
                    ),
                })?;
                signed.push(self.served_as_is(*arch, v.manifest.as_bytes(), &signature)?);
                continue;
            }
            let m = record.manifest().ok_or_else(|| PublishError::Sign {
                arch: *arch,
                message: format!(
                    "history entry #{} does not render to the manifest it names; restore ledger.jsonl from a backup",
                    channel.history.len()
                ),
            })?;
            signed.push(self.sign(key, *arch, &m)?);
        }
        let arches: Vec<Arch> = signed.iter().map(|s| s.arch).collect();
        self.switch(&signed)?;
        self.cleanup(&channel.history, state, channel)?;
        Ok(arches)
    }

    /// Renders, signs and verifies one manifest as devices will.
    fn sign(&self, key: &dyn Signer, arch: Arch, m: &Manifest) -> Result<Signed, PublishError> {
        let err = |message: String| PublishError::Sign { arch, message };
        let bytes = manifest::render_checked(m).map_err(|e| err(e.to_string()))?;
        let opts = SignOptions {
            created: self.now,
            lifetime: self.signature_lifetime,
        };
        let signature = Checked::new(key, self.keyring)
            .sign(&bytes, opts)
            .map_err(|e| err(e.to_string()))?;
        Ok(Signed {
            arch,
            bytes,
            signature,
            names: m.entries.keys().cloned().collect(),
        })
    }

    /// A manifest and signature made elsewhere (a mirror), checked as
    /// devices will before they are served.
    fn served_as_is(
        &self,
        arch: Arch,
        bytes: &[u8],
        signature: &[u8],
    ) -> Result<Signed, PublishError> {
        self.keyring
            .verify(bytes, signature, self.now)
            .map_err(|e| PublishError::Sign {
                arch,
                message: format!("the mirrored signature does not verify with the keyring: {e}"),
            })?;
        let m = manifest::parse(bytes).map_err(|e| PublishError::Sign {
            arch,
            message: format!("the mirrored SHA256SUMS: {e}"),
        })?;
        Ok(Signed {
            arch,
            bytes: bytes.to_vec(),
            signature: signature.to_vec(),
            names: m.entries.keys().cloned().collect(),
        })
    }

    /// Makes one signature the way manifests are signed and checks it,
    /// before the first byte is written: a signer that fails, hangs or
    /// returns a signature devices would refuse leaves the store as it was
    /// (payloads are uploaded before the manifests naming them are signed).
    fn check_signer(&self, key: &dyn Signer) -> Result<(), PublishError> {
        let opts = SignOptions {
            created: self.now,
            lifetime: self.signature_lifetime,
        };
        Checked::new(key, self.keyring).sign(SIGNER_PROBE, opts)?;
        Ok(())
    }

    /// Step 6: switches each arch's manifest and signature.
    fn switch(&self, signed: &[Signed]) -> Result<(), PublishError> {
        for s in signed {
            let names: Vec<&str> = s.names.iter().map(String::as_str).collect();
            self.store.commit(s.arch, &s.bytes, &s.signature, &names)?;
            fault::point("manifest committed");
        }
        Ok(())
    }

    /// Steps 3–8 for a plan made on `channel` under the lock.
    fn commit(
        &self,
        key: &dyn Signer,
        channel: &Channel,
        plan: &mut Plan,
        from: Option<&dyn Store>,
    ) -> Result<u64, PublishError> {
        self.check_signer(key)?;
        release::upload(self.store, plan, self.events)?;
        if let Some(from) = from {
            release::copy(self.store, from, plan, self.events)?;
        }
        for ap in &mut plan.arches {
            ap.complete_hashes(true)?;
        }
        plan.record_uploads();
        let mut signed = Vec::new();
        let mut state: State = channel.head_state().cloned().unwrap_or_default();
        for ap in plan.changed() {
            if let Some(state::Signature::Expired(_)) =
                channel.arches.get(&ap.arch).map(|v| &v.signature)
            {
                self.events.warn(format!(
                    "{}: the published signature has expired (devices refuse the manifest); this write re-signs it",
                    ap.arch
                ));
            }
            let mut record = ArchRecord::new(&ap.after, &ap.sizes);
            match &ap.verbatim {
                Some((bytes, signature)) => {
                    let s = self.served_as_is(ap.arch, bytes, signature)?;
                    record.manifest = hash::to_hex(&sha2::Sha256::digest(bytes).into());
                    record.verbatim = Some(Verbatim {
                        manifest: String::from_utf8_lossy(bytes).into_owned(),
                        signature: hex::encode(signature),
                    });
                    signed.push(s);
                }
                None => signed.push(self.sign(key, ap.arch, &ap.after)?),
            }
            state.insert(ap.arch, record);
        }
        let mut history = channel.history.clone();
        let bytes = history.append(
            &Checked::new(key, self.keyring),
            self.now,
            Draft {
                action: plan.action,
                versions: plan.versions.clone(),
                component: channel.component.clone(),
                files: plan.files.clone(),
                reason: plan.reason.clone(),
                state: state.clone(),
                source: plan.source.clone(),
                skipped_checks: plan.skipped_checks.clone(),
            },
        )?;
        self.store
            .put_channel_file(manifest::LEDGER, &bytes, channel.history_bytes.as_deref())?;
        if let Some(anchor) = &self.anchor {
            anchor.remember(&history, false)?;
        }
        fault::point("history appended");
        self.switch(&signed)?;
        if let Some(anchor) = &self.anchor {
            anchor.remember(&history, true)?;
        }
        for ap in plan.changed() {
            let v: Vec<&str> = ap.versions.iter().map(|v| v.as_str()).collect();
            self.events.info(format!(
                "{}: now publishes {}",
                ap.arch,
                if v.is_empty() {
                    "nothing".into()
                } else {
                    v.join(", ")
                }
            ));
        }
        self.cleanup(&history, &state, channel)?;
        Ok(history.len())
    }

    /// Step 8: deletes stored payloads that no manifest names and no kept
    /// withdrawn version needs, but only names the history recorded (what
    /// this tool published); then the store's own scratch.
    fn cleanup(
        &self,
        history: &Ledger,
        state: &State,
        channel: &Channel,
    ) -> Result<Vec<(Arch, String)>, PublishError> {
        let mut deleted = Vec::new();
        for (arch, record) in state {
            let Some(view) = channel.arches.get(arch) else {
                continue;
            };
            let listed: Vec<&str> = record.files.keys().map(String::as_str).collect();
            // Every stream keeps its own withdrawn versions' payloads.
            let own = (channel.component.as_deref(), view.transfers.as_slice());
            let others = view
                .others
                .iter()
                .map(|o| (o.stream.component.as_deref(), o.stream.transfers.as_slice()));
            let mut retained = std::collections::BTreeSet::new();
            for (component, transfers) in std::iter::once(own).chain(others) {
                let published: Vec<Version> = transfer::classify(transfers, listed.iter().copied())
                    .versions
                    .iter()
                    .map(|v| Version::published(&v.version))
                    .collect();
                retained.extend(plan::retained(
                    history, component, *arch, &published, self.keep,
                ));
            }
            let ours = history.names(*arch);
            for name in self.store.list(*arch)?.into_keys() {
                if record.files.contains_key(&name)
                    || retained.contains(&name)
                    || !ours.contains_key(&name)
                {
                    continue;
                }
                self.store.delete(*arch, &name)?;
                self.events.detail(format!("{arch}: deleted {name}"));
                fault::point("payload deleted");
                deleted.push((*arch, name));
            }
            self.store.clear_scratch(*arch)?;
        }
        Ok(deleted)
    }

    /// Plans on the verified channel under the lock and commits, unless the
    /// plan changes nothing or this is a dry run.
    fn write(
        &self,
        key: &dyn Signer,
        dry_run: bool,
        intent: (Action, &[Version]),
        make: impl Fn(&Channel) -> Result<Plan, PublishError>,
    ) -> Result<Report, PublishError> {
        self.write_from(key, dry_run, intent, None, make)
    }

    /// [`Publisher::write`], copying new payloads from `from` (promote).
    fn write_from(
        &self,
        key: &dyn Signer,
        dry_run: bool,
        intent: (Action, &[Version]),
        from: Option<&dyn Store>,
        make: impl Fn(&Channel) -> Result<Plan, PublishError>,
    ) -> Result<Report, PublishError> {
        if dry_run {
            let channel = self.read(false)?;
            refuse_blocking(&channel)?;
            let plan = make(&channel)?;
            return Ok(Report::new(&plan, self.store.describe(), true));
        }
        let _lock = self.store.lock(self.events)?;
        let (channel, finished) = self.read_for_write(key)?;
        // Rerunning a yank, unyank, rollback or refresh that was cut off
        // finishes it; it does not do it a second time (a release replans:
        // its outputs must still be what was published).
        let rerun = finished.is_some()
            && intent.0 != Action::Publish
            && channel
                .history
                .head()
                .is_some_and(|h| h.action == intent.0 && same_versions(&h.versions, intent.1));
        let plan = make(&channel);
        if rerun && plan.as_ref().map_or(true, Plan::changes) {
            let plan = Plan::new(intent.0, intent.1.to_vec(), None);
            let mut report = Report::new(&plan, self.store.describe(), false);
            report.already_published = true;
            report.finished_interrupted = finished;
            return Ok(report);
        }
        let mut plan = plan?;
        let mut report = Report::new(&plan, self.store.describe(), false);
        report.finished_interrupted = finished;
        if plan.changes() {
            report.history_seq = Some(self.commit(key, &channel, &mut plan, from)?);
            report = Report {
                history_seq: report.history_seq,
                finished_interrupted: finished,
                ..Report::new(&plan, self.store.describe(), false)
            };
        } else if let Some(state) = channel.head_state() {
            // Nothing to change, but an earlier write may have been cut off
            // before its cleanup: deleting its leftovers changes nothing
            // devices see and writes no history.
            self.cleanup(&channel.history, state, &channel)?;
        }
        Ok(report)
    }

    pub fn yank(
        &self,
        key: &dyn Signer,
        version: &Version,
        arches: &[Arch],
        reason: &str,
        dry_run: bool,
    ) -> Result<Report, PublishError> {
        let versions = [version.clone()];
        self.write(key, dry_run, (Action::Yank, &versions), |ch| {
            Ok(plan::plan_yank(
                ch,
                version,
                arches,
                reason,
                self.settings(),
            )?)
        })
    }

    pub fn unyank(
        &self,
        key: &dyn Signer,
        version: &Version,
        reason: Option<String>,
        dry_run: bool,
    ) -> Result<Report, PublishError> {
        let versions = [version.clone()];
        self.write(key, dry_run, (Action::Unyank, &versions), |ch| {
            Ok(plan::plan_unyank(
                self.store,
                ch,
                version,
                reason.clone(),
                self.settings(),
            )?)
        })
    }

    pub fn rollback(
        &self,
        key: &dyn Signer,
        version: &Version,
        reason: Option<String>,
        dry_run: bool,
    ) -> Result<Report, PublishError> {
        let versions = [version.clone()];
        self.write(key, dry_run, (Action::Rollback, &versions[..1]), |ch| {
            Ok(plan::plan_rollback(
                self.store,
                ch,
                version,
                reason.clone(),
                self.settings(),
            )?)
        })
    }

    /// Re-signs every manifest; with `if_expiring_within`, only when some
    /// signature expires within it (otherwise writes nothing).
    pub fn refresh(
        &self,
        key: &dyn Signer,
        if_expiring_within: Option<Duration>,
        dry_run: bool,
    ) -> Result<Report, PublishError> {
        self.write(key, dry_run, (Action::Refresh, &[]), |ch| {
            let mut plan = plan::plan_refresh(ch, self.settings());
            if let Some(margin) = if_expiring_within {
                let due = ch.arches.values().any(|v| match &v.signature {
                    state::Signature::Valid(i) => i.expires.is_some_and(|e| e <= self.now + margin),
                    state::Signature::Expired(_) => true,
                    _ => false,
                });
                if !due {
                    plan.arches.clear();
                }
            }
            if ch.arches.values().all(|v| v.manifest_sha256.is_none()) {
                return Err(Refusal::NothingPublished(self.store.describe()).into());
            }
            Ok(plan)
        })
    }

    /// Records what the hosting serves now as the channel's truth: for a
    /// history lost, cut short, rewritten, or written by an older version.
    /// Every served manifest must verify with the keyring and list only
    /// payloads that are there; the remembered head is replaced.
    pub fn adopt(
        &self,
        key: &dyn Signer,
        reason: Option<String>,
        dry_run: bool,
    ) -> Result<Report, PublishError> {
        let _lock = if dry_run {
            None
        } else {
            Some(self.store.lock(self.events)?)
        };
        let channel = self.read(false)?;
        if let Some(p) = channel
            .problems
            .iter()
            .find(|p| matches!(p, Problem::HistoryUnreadable { .. }))
        {
            return Err(Refusal::Other(format!(
                "{p}. adopt appends to a history that verifies: restore ledger.jsonl from a backup, or move it away to start a new history"
            ))
            .into());
        }
        let mut unfit: Vec<String> = channel
            .problems
            .iter()
            .filter(|p| {
                matches!(
                    p,
                    Problem::SignatureMissing { .. }
                        | Problem::SignatureInvalid { .. }
                        | Problem::ManifestMalformed { .. }
                )
            })
            .map(|p| p.to_string())
            .collect();
        for view in channel.arches.values() {
            for name in view.manifest.entries.keys() {
                if !view.served.contains_key(name) {
                    unfit.push(format!("{}: {name} is listed but missing", view.arch));
                }
            }
        }
        if !unfit.is_empty() {
            return Err(Refusal::Other(format!(
                "what the hosting serves cannot be adopted:\n{}",
                unfit
                    .iter()
                    .map(|p| format!("  - {p}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ))
            .into());
        }
        let mut state = State::new();
        let mut arches = Vec::new();
        for view in channel.arches.values() {
            let Some(sha) = &view.manifest_sha256 else {
                continue;
            };
            let sizes: BTreeMap<String, u64> = view
                .served
                .iter()
                .map(|(n, f)| (n.clone(), f.size))
                .collect();
            let mut record = ArchRecord::new(&view.manifest, &sizes);
            // The served bytes, exactly: even a manifest we would render
            // differently (text-mode lines) is what devices verify.
            record.manifest = sha.clone();
            state.insert(view.arch, record);
            let mut p = plan::ArchPlan {
                versions: view.versions(),
                ..plan::ArchPlan::of(view.arch, &view.manifest)
            };
            p.kept = p.versions.clone();
            arches.push(p);
        }
        let mut plan = Plan::new(Action::Adopt, vec![], reason);
        plan.arches = arches;
        let mut report = Report::new(&plan, self.store.describe(), dry_run);
        let consistent = channel.head_state() == Some(&state)
            && !channel
                .problems
                .iter()
                .any(|p| matches!(p, Problem::HistoryRolledBack { .. }));
        report.already_published = consistent;
        if consistent || dry_run {
            return Ok(report);
        }
        let mut history = channel.history.clone();
        let bytes = history.append(
            &Checked::new(key, self.keyring),
            self.now,
            Draft {
                action: Action::Adopt,
                versions: vec![],
                component: None,
                files: Default::default(),
                reason: plan.reason.clone(),
                state,
                source: None,
                skipped_checks: vec![],
            },
        )?;
        self.store
            .put_channel_file(manifest::LEDGER, &bytes, channel.history_bytes.as_deref())?;
        if let Some(anchor) = &self.anchor {
            anchor.forget()?;
            anchor.remember(&history, true)?;
        }
        report.history_seq = Some(history.len());
        Ok(report)
    }
}

fn refuse_blocking(channel: &Channel) -> Result<(), PublishError> {
    let blocking: Vec<Problem> = channel.blocking().into_iter().cloned().collect();
    if blocking.is_empty() {
        Ok(())
    } else {
        Err(Refusal::Problems { problems: blocking }.into())
    }
}

/// Whether a history entry's versions start with `intent` (a rollback's
/// entry also lists what it withdrew).
fn same_versions(recorded: &[Version], intent: &[Version]) -> bool {
    recorded.len() >= intent.len()
        && recorded
            .iter()
            .zip(intent)
            .all(|(a, b)| a.as_str() == b.as_str())
}

/// What [`Publisher::check_signer`] has signed: no manifest (devices
/// refuse its line) and no history entry, so the signature is worthless
/// outside this check.
const SIGNER_PROBE: &[u8] = b"sysupdate-publish: can this signer sign?\n";

/// The BEST-BEFORE date for a signature made at `now` with `lifetime`.
pub fn best_before(now: SystemTime, lifetime: Duration) -> Date {
    let end = now + lifetime;
    let secs = end
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    Date::from_unix(secs)
}

/// Payloads a plan uploads, for the upload step.
pub(crate) fn uploads(plan: &Plan) -> Vec<(Arch, &Payload)> {
    plan.arches
        .iter()
        .flat_map(|a| a.uploads.iter().map(move |p| (a.arch, p)))
        .collect()
}
