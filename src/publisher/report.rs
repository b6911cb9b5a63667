//! What a write did (or, dry, would do): the typed result commands render
//! and `--json` prints.

use serde::Serialize;

use crate::arch::Arch;
use crate::channel::plan::{ArchPlan, Plan, Upload};
use crate::ledger::Action;
use crate::version::Version;

/// One arch's share of a write.
#[derive(Clone, Debug, Serialize)]
pub struct ArchReport {
    pub arch: Arch,
    /// Its manifest stays as it is.
    pub already_published: bool,
    pub added: Vec<Version>,
    pub kept: Vec<Version>,
    pub dropped: Vec<Version>,
    pub removed: Vec<Version>,
    pub restored: Vec<Version>,
    /// Versions published after the write, newest first.
    pub versions: Vec<Version>,
    pub uploads: Vec<Upload>,
    /// Payloads copied from the source channel (promote).
    pub copies: Vec<String>,
    pub reused: Vec<String>,
    pub upload_bytes: u64,
    /// Payloads deleted after the commit (retention, withdrawn versions).
    pub deleted: Vec<String>,
    /// This run finished an interrupted commit of this arch first.
    pub interrupted_commit: bool,
}

impl ArchReport {
    pub fn from_plan(p: &ArchPlan, changed: bool) -> ArchReport {
        ArchReport {
            arch: p.arch,
            already_published: !changed,
            added: p.added.clone(),
            kept: p.kept.clone(),
            dropped: p.dropped.clone(),
            removed: p.removed.clone(),
            restored: p.restored.clone(),
            versions: p.versions.clone(),
            uploads: p.upload_list(),
            copies: p.copies.iter().map(|c| c.name.clone()).collect(),
            reused: p.reused.clone(),
            upload_bytes: p.upload_bytes() + p.streamed,
            deleted: vec![],
            interrupted_commit: false,
        }
    }
}

/// A write of the whole channel.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub schema: u32,
    pub action: Action,
    /// The version a release publishes. Always a key (null when none), as
    /// docs/json.md promises for every top-level key.
    pub version: Option<Version>,
    pub versions: Vec<Version>,
    pub reason: Option<String>,
    pub store: String,
    pub dry_run: bool,
    /// Nothing to change: nothing was written, history included.
    pub already_published: bool,
    /// The history entry this write appended.
    pub history_seq: Option<u64>,
    /// An interrupted write (its history entry) this run finished first.
    pub finished_interrupted: Option<u64>,
    /// Payload bytes this machine sent to the hosting.
    pub upload_bytes: u64,
    /// Build output bytes read to hash, inspect or compress them (0 when
    /// the stamp cache knew every file unchanged).
    pub read_bytes: u64,
    /// The channel a promotion took the version from (null otherwise).
    pub source: Option<crate::ledger::Origin>,
    pub arches: Vec<ArchReport>,
}

/// The `--json` schema version of every report.
pub const SCHEMA: u32 = 1;

impl Report {
    pub fn new(plan: &Plan, store: String, dry_run: bool) -> Report {
        let changed: Vec<Arch> = plan.changed().map(|a| a.arch).collect();
        Report {
            schema: SCHEMA,
            action: plan.action,
            version: (plan.action == Action::Publish)
                .then(|| plan.versions.first().cloned())
                .flatten(),
            versions: plan.versions.clone(),
            reason: plan.reason.clone(),
            store,
            dry_run,
            already_published: !plan.changes(),
            history_seq: None,
            finished_interrupted: None,
            upload_bytes: plan.upload_bytes() + plan.arches.iter().map(|a| a.streamed).sum::<u64>(),
            read_bytes: 0,
            source: plan.source.clone(),
            arches: plan
                .arches
                .iter()
                .map(|a| ArchReport::from_plan(a, changed.contains(&a.arch)))
                .collect(),
        }
    }
}
