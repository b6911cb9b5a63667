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
    /// The component the version belongs to (absent: the OS).
    #[serde(skip_serializing_if = "Option::is_none")]
    component: Option<String>,
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
    /// The other streams published in this arch (components, or the OS
    /// with `--component`), each with its own versions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    components: Vec<ComponentStatus>,
    /// Stored payloads no manifest and no withdrawn version names: leftovers.
    unreferenced: Vec<String>,
    problems: Vec<String>,
    /// Per optional feature (`Features=`/`RequisiteFeatures=` of the
    /// transfers), the versions a device with it enabled can install.
    features: Vec<FeatureStatus>,
    /// What systemd ignores or changes in the transfer files (exit 0).
    warnings: Vec<String>,
}

#[derive(Serialize)]
struct ComponentStatus {
    /// `null` for the OS's own stream (sysupdate.d).
    component: Option<String>,
    versions: Vec<VersionStatus>,
}

#[derive(Serialize)]
struct FeatureStatus {
    feature: String,
    complete: Vec<String>,
}

/// Which versions are complete for a device that enables `feature` alone:
/// every transfer it then enables (as systemd decides: any of `Features=`,
/// all of `RequisiteFeatures=`) has a file of the version.
fn features(view: &ArchView) -> Vec<FeatureStatus> {
    let names: std::collections::BTreeSet<&String> = view
        .transfers
        .iter()
        .flat_map(|t| t.features.iter().chain(&t.requisite_features))
        .collect();
    names
        .into_iter()
        .map(|feature| {
            let enabled = |name: &String| {
                view.transfers.iter().any(|t| {
                    &t.name == name
                        && (t.features.is_empty() || t.features.contains(feature))
                        && t.requisite_features.iter().all(|r| r == feature)
                })
            };
            FeatureStatus {
                feature: feature.clone(),
                complete: view
                    .versions
                    .iter()
                    .filter(|set| !set.missing.iter().any(enabled))
                    .map(|set| set.version.clone())
                    .collect(),
            }
        })
        .collect()
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

/// `withdrawn`: names of payloads kept for `unyank`, shown with the
/// withdrawn version rather than as leftovers.
fn arch_status(
    view: &ArchView,
    problems: &[&Problem],
    withdrawn: &std::collections::BTreeSet<String>,
) -> ArchStatus {
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
    st.versions = view
        .versions
        .iter()
        .map(|s| version_status(view, s))
        .collect();
    st.components = view
        .others
        .iter()
        .filter(|o| !o.versions.is_empty())
        .map(|o| ComponentStatus {
            component: o.stream.component.clone(),
            versions: o.versions.iter().map(|s| version_status(view, s)).collect(),
        })
        .collect();
    st.unreferenced = view
        .stored
        .keys()
        .filter(|n| !view.manifest.entries.contains_key(*n) && !withdrawn.contains(*n))
        .cloned()
        .collect();
    st.problems
        .extend(problems.iter().map(|p| format!("{p}: {}", p.fix())));
    st.features = features(view);
    st.warnings = super::transfer_warnings(view);
    st
}

fn version_status(view: &ArchView, set: &crate::transfer::VersionSet) -> VersionStatus {
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
    v
}

/// Every stream the channel knows: the selected one first, then the others
/// any arch reads, then components only the history names.
fn streams(channel: &Channel) -> Vec<Option<String>> {
    let mut out = vec![channel.component.clone()];
    let known = channel
        .arches
        .values()
        .flat_map(|v| v.others.iter().map(|o| o.stream.component.clone()))
        .chain(channel.history.entries().map(|e| e.component.clone()));
    for c in known {
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

/// One channel's versions per arch, for the overview of several channels.
#[derive(Serialize)]
struct ChannelSummary {
    channel: String,
    store: String,
    /// arch → published versions, newest first.
    versions: std::collections::BTreeMap<String, Vec<String>>,
    /// The other streams published beside it, each with its versions per arch.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    components: Vec<StreamSummary>,
    withdrawn: Vec<String>,
    problems: Vec<String>,
}

#[derive(Serialize)]
struct StreamSummary {
    /// `null` for the OS's own stream (sysupdate.d).
    component: Option<String>,
    versions: std::collections::BTreeMap<String, Vec<String>>,
    withdrawn: Vec<String>,
}

/// arch → versions, newest first, as one line: `x86-64 18, 17; arm64 -`.
fn versions_line(versions: &std::collections::BTreeMap<String, Vec<String>>) -> String {
    versions
        .iter()
        .map(|(a, v)| {
            format!(
                "{a} {}",
                if v.is_empty() {
                    "-".into()
                } else {
                    v.join(", ")
                }
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The streams other than the selected one that publish or withdrew
/// anything, each with its versions per arch.
fn other_streams(channel: &Channel) -> Vec<StreamSummary> {
    streams(channel)
        .into_iter()
        .skip(1)
        .map(|component| {
            let versions = channel
                .arches
                .values()
                .filter_map(|view| {
                    let other = view
                        .others
                        .iter()
                        .find(|o| o.stream.component == component && !o.versions.is_empty())?;
                    let list = other.versions.iter().map(|s| s.version.clone()).collect();
                    Some((view.arch.to_string(), list))
                })
                .collect();
            StreamSummary {
                withdrawn: withdrawn_versions(channel, component.as_deref()),
                component,
                versions,
            }
        })
        .filter(|s| !s.versions.is_empty() || !s.withdrawn.is_empty())
        .collect()
}

/// The versions of `component`'s stream the history withdrew.
fn withdrawn_versions(channel: &Channel, component: Option<&str>) -> Vec<String> {
    channel
        .history
        .withdrawn(component)
        .keys()
        .map(|v| v.to_string())
        .collect()
}

/// Without `--channel` in a config with several: which versions are where.
fn overview(ctx: &Ctx, args: &StatusArgs) -> Result<Outcome> {
    let all = ctx.config_unselected()?;
    let keyring = Keyring::load(&all.signing.keyring)?;
    let mut summaries = Vec::new();
    for name in all.channels.keys() {
        let mut config = all.clone();
        config.select(Some(name))?;
        let store = config.channel.open_store();
        let channel = publisher(ctx, &config, store.as_ref(), &keyring)?.read(args.deep)?;
        let versions: std::collections::BTreeMap<String, Vec<String>> = channel
            .arches
            .values()
            .map(|v| {
                let list = v.versions.iter().map(|s| s.version.clone()).collect();
                (v.arch.to_string(), list)
            })
            .collect();
        let components = other_streams(&channel);
        let streams: String = components
            .iter()
            .map(|s| {
                let label = s.component.as_deref().unwrap_or("the OS");
                format!(" | {label}: {}", versions_line(&s.versions))
            })
            .collect();
        ctx.ui.report(format!(
            "{name}: {}{streams}{}",
            if versions.is_empty() {
                "nothing published".into()
            } else {
                versions_line(&versions)
            },
            match channel.problems.len() {
                0 => String::new(),
                n => format!(" ({n} problem(s): `status --channel {name}`)"),
            }
        ));
        summaries.push(ChannelSummary {
            channel: name.clone(),
            store: channel.location.clone(),
            versions,
            components,
            withdrawn: withdrawn_versions(&channel, channel.component.as_deref()),
            problems: channel
                .problems
                .iter()
                .map(|p| format!("{p}: {}", p.fix()))
                .collect(),
        });
    }
    #[derive(Serialize)]
    struct Overview {
        schema: u32,
        channels: Vec<ChannelSummary>,
    }
    let bad = summaries.iter().any(|s| !s.problems.is_empty());
    ctx.emit(&Overview {
        schema: crate::publisher::report::SCHEMA,
        channels: summaries,
    })?;
    Ok(if bad {
        Outcome::Problems
    } else {
        Outcome::Success
    })
}

pub(super) fn run(ctx: &Ctx, args: StatusArgs) -> Result<Outcome> {
    if ctx.channel.is_none() && ctx.config_unselected()?.channels.len() > 1 {
        return overview(ctx, &args);
    }
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
            .report(format!("{}: nothing published yet", channel.location));
    }
    for st in &report.arches {
        print_arch(ctx, st);
    }
    for w in &report.withdrawn {
        // What an operator asks first: why, when, who.
        ctx.ui.report(format!(
            "{}{} withdrawn ({}{} at {}, by {})",
            crate::transfer::component::prefix(w.component.as_deref()),
            w.version,
            w.reason
                .as_deref()
                .map(|r| format!("{r}; "))
                .unwrap_or_default(),
            w.action,
            w.time,
            w.signer
        ));
    }
    if !report.history.is_empty() {
        ctx.ui.report("history:");
        for e in &report.history {
            let versions: Vec<&str> = e.versions.iter().map(|v| v.as_str()).collect();
            // A rollback names its target first, then what it withdrew.
            let versions = match (e.action, versions.split_first()) {
                (crate::ledger::Action::Rollback, Some((to, withdrew))) if !withdrew.is_empty() => {
                    vec![format!("to {to}, withdrew {}", withdrew.join(", "))]
                }
                _ => versions.iter().map(|v| v.to_string()).collect(),
            };
            let from = e
                .source
                .as_ref()
                .map(|o| format!(" from {}", o.channel))
                .unwrap_or_default();
            let component = crate::transfer::component::prefix(e.component.as_deref());
            ctx.ui.report(format!(
                "  #{:<3} {} {:<8} {component}{}{from}{}",
                e.seq,
                e.time,
                e.action.to_string(),
                versions.join(", "),
                e.reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ));
            for skip in &e.skipped_checks {
                ctx.ui.report(format!(
                    "       published without preflight check {} ({})",
                    skip.check, skip.reason
                ));
            }
        }
    }
    for p in &report.problems {
        ctx.ui.report(format!("PROBLEM: {p}"));
    }
    ctx.ui
        .warnings_hint(report.arches.iter().map(|a| a.warnings.len()).sum());
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
    let withdrawn: Vec<(
        Option<String>,
        crate::version::Version,
        &crate::ledger::Entry,
    )> = streams(channel)
        .into_iter()
        .flat_map(|c| {
            channel
                .history
                .withdrawn(c.as_deref())
                .into_iter()
                .map(move |(v, e)| (c.clone(), v, e))
        })
        .collect();
    let kept = |arch: Arch| -> std::collections::BTreeSet<String> {
        withdrawn
            .iter()
            .filter_map(|(_, v, e)| e.files.get(v).and_then(|a| a.get(&arch)))
            .flat_map(|names| names.keys().cloned())
            .collect()
    };
    StatusReport {
        schema: crate::publisher::report::SCHEMA,
        store: channel.location.clone(),
        signing: None,
        arches: channel
            .arches
            .values()
            .map(|v| arch_status(v, &per_arch(v.arch), &kept(v.arch)))
            .collect(),
        withdrawn: withdrawn
            .iter()
            .map(|(c, v, e)| Withdrawn {
                component: c.clone(),
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

fn print_versions(ui: &crate::ui::Ui, indent: &str, versions: &[VersionStatus]) {
    for v in versions {
        ui.report(format!(
            "{indent}{:<12} {:>10}  {}",
            v.version,
            human_bytes(v.size),
            if v.complete { "complete" } else { "INCOMPLETE" }
        ));
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
    ui.report(format!("{}: {signer}", st.arch));
    print_versions(ui, "  ", &st.versions);
    for c in &st.components {
        ui.report(format!(
            "  {}:",
            crate::transfer::component::label(c.component.as_deref())
        ));
        print_versions(ui, "    ", &c.versions);
    }
    for f in &st.features {
        ui.report(format!(
            "  feature {}: {}",
            f.feature,
            match f.complete.is_empty() {
                true => "no complete version (devices that enable it get no update)".into(),
                false => format!("complete in {}", f.complete.join(", ")),
            }
        ));
    }
    if let Some(bb) = &st.best_before {
        ui.report(format!("  best before {bb}"));
    }
    if !st.unreferenced.is_empty() {
        ui.report(format!(
            "  stored, not listed: {}",
            st.unreferenced.join(", ")
        ));
    }
    for p in &st.problems {
        ui.report(format!("  PROBLEM: {p}"));
    }
    ui.report_warnings("  ", &st.warnings);
}
