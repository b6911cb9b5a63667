//! `status`: what is published, who signed it, until when, what was
//! withdrawn, the history, and everything wrong with the channel.

use anyhow::Result;
use serde::Serialize;

use super::{human_bytes, publisher, rfc3339, signer, Ctx, Outcome};
use crate::arch::Arch;
use crate::channel::problem::Problem;
use crate::channel::state::{ArchView, Channel};
use crate::cli::StatusArgs;
use crate::hash;
use crate::signing::Keyring;

#[derive(Serialize)]
struct FileStatus {
    name: String,
    size: Option<u64>,
    sha256: String,
}

#[derive(Serialize)]
struct VersionStatus {
    version: String,
    complete: bool,
    size: u64,
    files: Vec<FileStatus>,
    missing: Vec<String>,
}

#[derive(Serialize)]
struct Withdrawn {
    version: String,
    action: String,
    time: String,
    reason: Option<String>,
    signer: String,
}

#[derive(Serialize, Default)]
struct ArchStatus {
    arch: String,
    signer: Option<String>,
    signed: Option<String>,
    expires: Option<String>,
    best_before: Option<String>,
    versions: Vec<VersionStatus>,
    /// Stored payloads no manifest names: kept for `unyank`, or leftovers.
    unreferenced: Vec<String>,
    problems: Vec<String>,
}

#[derive(Serialize)]
struct StatusReport {
    schema: u32,
    store: String,
    /// The configured signer: what the next write signs with.
    signing: Option<signer::Named>,
    arches: Vec<ArchStatus>,
    withdrawn: Vec<Withdrawn>,
    /// The most recent history entries, oldest first.
    history: Vec<crate::ledger::Entry>,
    /// Channel-level problems (the history, interrupted writes).
    problems: Vec<String>,
    /// Every problem, typed, with the command that fixes it.
    findings: Vec<Finding>,
}

#[derive(Serialize)]
struct Finding {
    #[serde(flatten)]
    problem: Problem,
    blocks_writes: bool,
    fix: String,
}

/// How many history entries `status` shows.
const HISTORY: usize = 10;

fn arch_status(view: &ArchView, problems: &[&Problem]) -> ArchStatus {
    let mut st = ArchStatus {
        arch: view.arch.to_string(),
        ..Default::default()
    };
    if let Some(info) = view.signature.info() {
        st.signer = Some(info.fingerprint.clone());
        st.signed = Some(rfc3339(info.created));
        st.expires = info.expires.map(rfc3339);
    }
    if view.manifest_sha256.is_none() {
        st.problems
            .push("no SHA256SUMS: nothing is published here".into());
    }
    st.best_before = view.manifest.best_before.map(|d| d.to_string());
    for set in &view.versions {
        let mut v = VersionStatus {
            version: set.version.clone(),
            complete: set.is_complete(),
            size: 0,
            files: vec![],
            missing: set.missing.clone(),
        };
        for name in set.files.values() {
            let size = view.served.get(name).map(|f| f.size);
            v.size += size.unwrap_or(0);
            v.files.push(FileStatus {
                name: name.clone(),
                size,
                sha256: hash::to_hex(&view.manifest.entries[name]),
            });
        }
        st.versions.push(v);
    }
    st.unreferenced = view
        .stored
        .keys()
        .filter(|n| !view.manifest.entries.contains_key(*n))
        .cloned()
        .collect();
    st.problems
        .extend(problems.iter().map(|p| format!("{p}: {}", p.fix())));
    st
}

pub(super) fn run(ctx: &Ctx, args: StatusArgs) -> Result<Outcome> {
    let config = ctx.config()?;
    let keyring = Keyring::load(&config.signing.keyring)?;
    let store = config.channel.open_store();
    let publisher = publisher(ctx, &config, store.as_ref(), &keyring)?;
    let channel = publisher.read(args.deep)?;
    if publisher.anchor.is_none() {
        ctx.ui.detail(
            "no state directory for this machine's remembered history head (set SYSUPDATE_PUBLISH_STATE_DIR): a hosting that rolls back history and manifests together goes unnoticed",
        );
    }
    let mut report = report(&channel);
    let named = signer::name(&config, &keyring, &ctx.ui);
    if let Some(fpr) = &named.fingerprint {
        for st in report
            .arches
            .iter()
            .filter(|a| a.signer.as_ref().is_some_and(|s| s != fpr))
        {
            ctx.ui.info(format!(
                "{}: signed by {}, not by the signer's key {fpr}; the next write (or `refresh`) re-signs it",
                st.arch,
                st.signer.as_deref().unwrap_or_default()
            ));
        }
    }
    report.signing = Some(named);
    if channel.arches.is_empty() {
        ctx.ui
            .info(format!("{}: nothing published yet", channel.location));
    }
    for st in &report.arches {
        print_arch(ctx, st);
    }
    for w in &report.withdrawn {
        ctx.ui.info(format!(
            "withdrawn: {} ({} at {}{})",
            w.version,
            w.action,
            w.time,
            w.reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ));
    }
    if !report.history.is_empty() {
        ctx.ui.info("history:");
        for e in &report.history {
            let versions: Vec<&str> = e.versions.iter().map(|v| v.as_str()).collect();
            ctx.ui.info(format!(
                "  #{:<3} {} {:<8} {}{}",
                e.seq,
                e.time,
                e.action.to_string(),
                versions.join(", "),
                e.reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ));
        }
    }
    for p in &report.problems {
        ctx.ui.info(format!("PROBLEM: {p}"));
    }
    ctx.emit(&report)?;
    Ok(if channel.problems.is_empty() {
        Outcome::Success
    } else {
        Outcome::Problems
    })
}

fn report(channel: &Channel) -> StatusReport {
    let per_arch = |arch: Arch| -> Vec<&Problem> {
        channel
            .problems
            .iter()
            .filter(|p| p.arch() == Some(arch))
            .collect()
    };
    let all: Vec<_> = channel.history.entries().cloned().collect();
    StatusReport {
        schema: crate::publisher::report::SCHEMA,
        store: channel.location.clone(),
        signing: None,
        arches: channel
            .arches
            .values()
            .map(|v| arch_status(v, &per_arch(v.arch)))
            .collect(),
        withdrawn: channel
            .history
            .withdrawn()
            .into_iter()
            .map(|(v, e)| Withdrawn {
                version: v.to_string(),
                action: e.action.to_string(),
                time: e.time.clone(),
                reason: e.reason.clone(),
                signer: e.signer.clone(),
            })
            .collect(),
        history: all[all.len().saturating_sub(HISTORY)..].to_vec(),
        problems: channel
            .problems
            .iter()
            .filter(|p| p.arch().is_none())
            .map(|p| format!("{p}: {}", p.fix()))
            .collect(),
        findings: channel
            .problems
            .iter()
            .map(|p| Finding {
                problem: p.clone(),
                blocks_writes: p.blocks_writes(),
                fix: p.fix(),
            })
            .collect(),
    }
}

fn print_arch(ctx: &Ctx, st: &ArchStatus) {
    let ui = &ctx.ui;
    let signer = match (&st.signer, &st.signed) {
        (Some(f), Some(t)) => format!(
            "signed by {f} at {t}, {}",
            match &st.expires {
                Some(e) => format!("expires {e}"),
                None => "no expiry".into(),
            }
        ),
        _ if st.versions.is_empty() => "nothing published".into(),
        _ => "signature not valid".into(),
    };
    ui.info(format!("{}: {signer}", st.arch));
    for v in &st.versions {
        ui.info(format!(
            "  {:<12} {:>10}  {}",
            v.version,
            human_bytes(v.size),
            if v.complete { "complete" } else { "INCOMPLETE" }
        ));
    }
    if let Some(bb) = &st.best_before {
        ui.info(format!("  best before {bb}"));
    }
    if !st.unreferenced.is_empty() {
        ui.info(format!(
            "  stored, not listed: {}",
            st.unreferenced.join(", ")
        ));
    }
    for p in &st.problems {
        ui.info(format!("  PROBLEM: {p}"));
    }
}
