//! `release`: build or take the outputs, stage, plan, apply.

use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::{Context, Result};
use serde::Serialize;

use std::collections::BTreeMap;

use super::{human_bytes, load_keys, load_ledger, record, Ctx, Outcome, UsageError};
use crate::arch::Arch;
use crate::channel::{self, ArchPlan, ReleaseInput, ReleaseOptions};
use crate::cli::ReleaseArgs;
use crate::compress::Settings;
use crate::ledger::{Action, Ledger};
use crate::operations;
use crate::signing::SignOptions;
use crate::stage;

/// Test-only: overrides the signature creation time (RFC 3339), so tests can
/// make signatures that have already expired. Never set it in production.
pub const SIGNING_TIME_ENV: &str = "SYSUPDATE_PUBLISH_SIGNING_TIME";

#[derive(Serialize)]
struct ReleaseReport<'a> {
    version: &'a str,
    store: String,
    dry_run: bool,
    already_published: bool,
    upload_bytes: u64,
    arches: &'a [ArchPlan],
}

fn parse_outputs(outputs: &[String]) -> Result<Vec<(Arch, PathBuf)>> {
    let mut seen = Vec::new();
    for o in outputs {
        let (sys, path) = o.split_once('=').ok_or_else(|| {
            UsageError(format!(
                "--output {o:?}: expected SYSTEM=PATH, e.g. x86_64-linux=./result"
            ))
        })?;
        let arch = Arch::parse(sys).map_err(|e| UsageError(format!("--output {o:?}: {e}")))?;
        if seen.iter().any(|(a, _)| *a == arch) {
            return Err(UsageError(format!("--output: {arch} given twice")).into());
        }
        seen.push((arch, PathBuf::from(path)));
    }
    Ok(seen)
}

/// A yanked or rolled-back version comes back only when asked.
fn refuse_withdrawn(ledger: &Ledger, version: &str, unyank: bool) -> Result<()> {
    match ledger.withdrawn().get(version) {
        Some(e) if !unyank => Err(crate::channel::ChannelError::Refused(format!(
            "version {version} was withdrawn ({} at {}{}); pass --unyank to publish it again",
            e.action,
            e.time,
            e.reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ))
        .into()),
        _ => Ok(()),
    }
}

/// Whether the ledger's latest word on `version` is a publish of these files.
fn recorded(
    ledger: &Ledger,
    version: &str,
    files: &BTreeMap<String, BTreeMap<String, String>>,
) -> bool {
    ledger
        .entries()
        .rev()
        .find(|e| e.versions.iter().any(|v| v == version))
        .is_some_and(|e| {
            matches!(e.action, Action::Publish | Action::Unyank)
                && e.files
                    .get(version)
                    .is_some_and(|f| files.iter().all(|(a, n)| f.get(a) == Some(n)))
        })
}

/// The signing time: now, unless the documented test override is set.
pub(crate) fn signing_time() -> Result<SystemTime> {
    match std::env::var(SIGNING_TIME_ENV) {
        Ok(s) => humantime::parse_rfc3339_weak(&s)
            .map_err(|e| UsageError(format!("{SIGNING_TIME_ENV}={s:?}: {e}")).into()),
        Err(_) => Ok(SystemTime::now()),
    }
}

fn print_plan(ui: &crate::ui::Ui, plan: &channel::ReleasePlan) {
    let list = |label: &str, v: &[String]| {
        if v.is_empty() {
            String::new()
        } else {
            format!("; {label} {}", v.join(", "))
        }
    };
    for a in &plan.arches {
        if a.already_published && a.interrupted_commit {
            ui.info(format!(
                "{}: {} already published by an interrupted commit; finishing it",
                a.arch, plan.version
            ));
            continue;
        }
        if a.already_published {
            ui.info(format!(
                "{}: {} already published, nothing to do",
                a.arch, plan.version
            ));
            continue;
        }
        ui.info(format!(
            "{}: add {}{}{}; upload {} file(s), {}{}{}",
            a.arch,
            a.added.join(", "),
            list("keep", &a.kept),
            list("drop", &a.dropped),
            a.uploads.len(),
            human_bytes(a.upload_bytes),
            if a.reused.is_empty() {
                String::new()
            } else {
                format!("; {} already uploaded", a.reused.len())
            },
            if a.deletions.is_empty() {
                String::new()
            } else {
                format!("; delete {} file(s)", a.deletions.len())
            },
        ));
    }
}

pub(super) fn run(ctx: &Ctx, args: ReleaseArgs) -> Result<Outcome> {
    let config = ctx.config()?;
    let ui = &ctx.ui;
    let (key, keyring) = load_keys(&config, ui)?;
    let store = config.channel.open_store();
    let now = signing_time()?;
    let (ledger, _) = load_ledger(store.as_ref(), &keyring)?;
    let settings = Settings {
        codec: config.transfers.compress,
        level: config
            .transfers
            .level
            .unwrap_or_else(|| config.transfers.compress.default_level()),
        threads: config.transfers.threads,
    };

    let outputs = if args.outputs.is_empty() {
        let nix = config.nix.as_ref().ok_or_else(|| {
            UsageError(format!(
                "no --output given and {} has no [nix] section to build from",
                config.file.display()
            ))
        })?;
        if nix.attribute.contains("{version}") && args.version.is_none() {
            return Err(UsageError(format!(
                "the nix attribute {:?} needs {{version}}: pass --version",
                nix.attribute
            ))
            .into());
        }
        ui.info(format!("building {} system(s) with nix", nix.systems.len()));
        crate::nix::build_all(nix, args.version.as_deref())?
    } else {
        parse_outputs(&args.outputs)?
    };

    // Check names and the published state before spending minutes compressing.
    let mut prepared = Vec::new();
    for (arch, dir) in &outputs {
        let transfers = channel::load_transfers(&config.transfers.dir, arch.systemd())?;
        let files = stage::scan(*arch, dir)?;
        let names = files
            .iter()
            .map(|f| stage::published_name(f, settings.codec).map(|n| (n, f.name.clone())))
            .collect::<std::io::Result<Vec<_>>>()
            .with_context(|| format!("{arch}: reading {}", dir.display()))?;
        let checks: Vec<_> = names
            .iter()
            .map(|(n, raw)| channel::NameCheck {
                name: n,
                compressed_from: (n != raw).then_some(raw.as_str()),
            })
            .collect();
        let version =
            channel::version_of_names(*arch, &transfers, &checks, &crate::ui::Ui::silent())?;
        refuse_withdrawn(&ledger, &version, args.unyank)?;
        let state = channel::read_arch(store.as_ref(), &keyring, *arch, now)?;
        prepared.push((*arch, transfers, state, files));
    }

    if settings.codec == crate::compress::Codec::Zstd {
        ui.warn("compress = \"zstd\": systemd-sysupdate before 258 cannot decompress zstd and installs the compressed bytes as-is");
    }
    let staging = tempfile::Builder::new()
        .prefix("sysupdate-publish-")
        .tempdir()
        .context("creating a staging directory (set TMPDIR to a roomy filesystem)")?;
    let jobs: Vec<_> = prepared
        .iter()
        .map(|(arch, _, _, files)| (*arch, files.as_slice()))
        .collect();
    // A payload the hosting does not have yet is hashed by its upload, so
    // it is read once (S3 needs the hash first; a dry run uploads nothing).
    let learn_while_uploading = !args.dry_run && store.hashes_while_uploading();
    let defer = |arch: Arch, name: &str| {
        learn_while_uploading
            && prepared.iter().any(|(a, _, state, _)| {
                *a == arch
                    && !state.files.contains_key(name)
                    && !state.manifest.entries.contains_key(name)
            })
    };
    let staged = stage::stage_all(&jobs, &settings, staging.path(), &defer, ui)?;
    let mut inputs = Vec::new();
    for ((arch, transfers, state, _), payloads) in prepared.into_iter().zip(staged) {
        inputs.push(ReleaseInput {
            arch,
            transfers,
            payloads,
            state,
        });
    }

    let opts = ReleaseOptions {
        version: args.version.as_deref(),
        allow_downgrade: args.allow_downgrade,
        keep: config.channel.keep,
        best_before: config
            .channel
            .signature_lifetime
            .map(|l| channel::best_before(now, l)),
    };
    let mut plan = channel::plan_release(store.as_ref(), &inputs, opts, ui)?;
    let _lock = if args.dry_run {
        print_plan(ui, &plan);
        ui.info("dry run: nothing was changed");
        None
    } else {
        // Another publisher may have committed while we compressed: take the
        // lock, re-read what is published and plan again on that.
        let lock = store.lock()?;
        let (mut ledger, ledger_bytes) = load_ledger(store.as_ref(), &keyring)?;
        for input in &mut inputs {
            input.state = channel::read_arch(store.as_ref(), &keyring, input.arch, now)?;
            if input.state.expired {
                ui.warn(format!(
                    "{}: the published signature has expired; this release re-signs it",
                    input.arch
                ));
            }
        }
        plan = channel::plan_release(store.as_ref(), &inputs, opts, &crate::ui::Ui::silent())?;
        refuse_withdrawn(&ledger, &plan.version, args.unyank)?;
        for a in &mut plan.arches {
            let published: Vec<String> = a.added.iter().chain(&a.kept).cloned().collect();
            a.retain =
                operations::retained(&ledger, a.arch.systemd(), &published, config.channel.keep);
        }
        print_plan(ui, &plan);
        if plan.is_noop() {
            ui.info(format!(
                "version {} is already published for every architecture",
                plan.version
            ));
        }
        let sign = SignOptions {
            created: now,
            lifetime: config.channel.signature_lifetime,
        };
        channel::apply_release(store.as_ref(), &mut plan, &key, &keyring, sign, ui)?;
        // Recorded after the commit; a rerun records it if a crash came first.
        let mut files: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for i in &inputs {
            let names = files.entry(i.arch.systemd().to_string()).or_default();
            for p in &i.payloads {
                // Known by now: staged, or learned by the upload.
                let digest = p
                    .digest()
                    .with_context(|| format!("{}: hashing {}", i.arch, p.file.display()))?;
                names.insert(p.name.clone(), crate::hash::to_hex(&digest));
            }
        }
        if !recorded(&ledger, &plan.version, &files) {
            record(
                store.as_ref(),
                &mut ledger,
                ledger_bytes.as_deref(),
                &key,
                now,
                Action::Publish,
                vec![plan.version.clone()],
                [(plan.version.clone(), files)].into(),
                None,
            )?;
        }
        if !plan.is_noop() {
            ui.info(format!("released {} to {}", plan.version, store.describe()));
        }
        Some(lock)
    };
    ctx.emit(&ReleaseReport {
        version: &plan.version,
        store: store.describe(),
        dry_run: args.dry_run,
        already_published: plan.is_noop(),
        upload_bytes: plan.upload_bytes(),
        arches: &plan.arches,
    })?;
    Ok(Outcome::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_accept_both_namings_and_refuse_duplicates() {
        let o = parse_outputs(&["x86_64-linux=/a".into(), "arm64=/b".into()]).unwrap();
        assert_eq!(o[1].0.systemd(), "arm64");
        assert!(parse_outputs(&["x86-64=/a".into(), "x86_64-linux=/b".into()]).is_err());
        assert!(parse_outputs(&["/a".into()])
            .unwrap_err()
            .to_string()
            .contains("SYSTEM=PATH"));
        assert!(parse_outputs(&["mips=/a".into()]).is_err());
    }
}
