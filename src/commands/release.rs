//! `release`: build or take the outputs, hand them to the publisher, show
//! what it did.

use anyhow::Result;

use super::{human_bytes, parse_outputs, publisher, signer, Ctx, Outcome, UsageError};
use crate::arch::Arch;
use crate::cli::{ReleaseArgs, SkipArgs};
use crate::preflight::Check;
use crate::publisher::{ReleaseRequest, Report, Skip};
use crate::stamps::StampCache;
use crate::ui::Ui;

/// One line per arch: what the release changes there.
pub(super) fn print_report(ui: &Ui, r: &Report) {
    let list = |label: &str, v: &[crate::version::Version]| {
        if v.is_empty() {
            String::new()
        } else {
            let v: Vec<&str> = v.iter().map(|v| v.as_str()).collect();
            format!("; {label} {}", v.join(", "))
        }
    };
    let version = r.version.as_ref().map(|v| v.as_str()).unwrap_or("?");
    for a in &r.arches {
        if a.already_published {
            ui.report(format!(
                "{}: {version} already published, nothing to do",
                a.arch
            ));
            continue;
        }
        ui.report(format!(
            "{}: add {}{}{}; upload {} file(s), {}{}",
            a.arch,
            a.added
                .iter()
                .map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            list("keep", &a.kept),
            list("drop", &a.dropped),
            a.uploads.len(),
            human_bytes(a.upload_bytes),
            if a.reused.is_empty() {
                String::new()
            } else {
                format!("; {} already uploaded", a.reused.len())
            },
        ));
    }
}

/// `--skip-check NAME… --reason TEXT`: names checked, a reason required.
pub(super) fn skip(args: &SkipArgs) -> Result<Skip, UsageError> {
    let mut checks = std::collections::BTreeSet::new();
    for name in &args.skip_checks {
        if name == "all" {
            checks.extend(Check::ALL);
        } else {
            checks
                .insert(Check::parse(name).map_err(|e| UsageError(format!("--skip-check: {e}")))?);
        }
    }
    let reason = args
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty());
    match (checks.is_empty(), reason) {
        (false, None) => Err(UsageError(
            "--skip-check needs --reason TEXT: the history records why a release went out unchecked".into(),
        )),
        (true, Some(_)) => Err(UsageError(
            "--reason goes with --skip-check (yank and rollback take their own --reason)".into(),
        )),
        _ => Ok(Skip {
            checks,
            reason: reason.map(str::to_string),
        }),
    }
}

/// The stamp cache, unless `deep` asks to read everything again.
pub(super) fn stamps(deep: bool) -> std::sync::Arc<StampCache> {
    std::sync::Arc::new(match StampCache::default_dir() {
        Some(dir) if !deep => StampCache::open(&dir),
        _ => StampCache::off(),
    })
}

/// Mistakes in the arguments alone, refused before any work.
fn check_args(args: &ReleaseArgs) -> Result<(), UsageError> {
    if let Some(v) = &args.stray {
        return Err(UsageError(format!(
            "unexpected argument {v:?}: the version is an option, `sysupdate-publish release --version {v}`"
        )));
    }
    if args.partial && args.outputs.is_empty() {
        return Err(UsageError(
            "--partial goes with --output: a nix build covers every configured system".into(),
        ));
    }
    if let Some(v) = &args.version {
        if v.trim().is_empty() {
            return Err(UsageError(
                "--version is empty: give the version to publish, e.g. --version 18".into(),
            ));
        }
    }
    Ok(())
}

/// A release engineer who lists outputs for some architectures and forgets
/// one would leave its devices on the old version without a word: refuse
/// (exit 2) unless `--partial` says it is meant.
fn check_left_behind(
    args: &ReleaseArgs,
    config: &crate::config::Config,
    store: &dyn crate::store::Store,
    outputs: &[(Arch, std::path::PathBuf)],
) -> Result<()> {
    if args.outputs.is_empty() || args.partial {
        return Ok(());
    }
    let mut expected = store.arches()?;
    if let Some(nix) = &config.nix {
        expected.extend(nix.systems.iter().copied());
    }
    let mut left: Vec<String> = expected
        .into_iter()
        .filter(|a| !outputs.iter().any(|(o, _)| o == a))
        .map(|a| a.to_string())
        .collect();
    left.sort();
    left.dedup();
    if left.is_empty() {
        return Ok(());
    }
    Err(UsageError(format!(
        "no --output for {}, which the channel publishes or [nix] builds: its devices would stay on the version they have. Give an --output for every architecture, or pass --partial to release only these",
        left.join(", ")
    ))
    .into())
}

pub(super) fn run(ctx: &Ctx, args: ReleaseArgs) -> Result<Outcome> {
    check_args(&args)?;
    let skip = skip(&args.skip)?;
    let given = parse_outputs(&args.outputs)?;
    let config = ctx.config()?;
    let ui = &ctx.ui;
    let (key, keyring) = signer::load(&config, ui)?;
    let store = config.channel.open_store();
    let publisher = publisher(ctx, &config, store.as_ref(), &keyring)?;
    let compress = config.transfers.compress_settings();
    let outputs = if args.outputs.is_empty() {
        let nix = config.nix.as_ref().ok_or_else(|| {
            UsageError(format!(
                "no --output given and {} has no [nix] section to build from",
                config.file.display()
            ))
        })?;
        let component = ctx.component.as_deref();
        let nix = &nix.for_component(component).ok_or_else(|| {
            UsageError(format!(
                "no --output given and [nix] in {} has no component-attribute to build component {} from; add e.g. component-attribute = \"packages.{{system}}.{{component}}_{{version}}\" or give --output SYSTEM=PATH",
                config.file.display(),
                component.unwrap_or_default()
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
        given
    };
    check_left_behind(&args, &config, store.as_ref(), &outputs)?;
    let req = ReleaseRequest {
        outputs,
        version: args.version,
        dry_run: args.dry_run,
        allow_downgrade: args.allow_downgrade,
        unyank: args.unyank,
        compress,
        checks: config.checks.clone(),
        skip,
        stamps: stamps(args.deep),
    };
    let report = publisher.release(key.as_ref(), &req)?;
    print_report(ui, &report);
    let version = report.version.as_ref().map(|v| v.as_str()).unwrap_or("?");
    if let Some(seq) = report.finished_interrupted {
        ui.report(format!(
            "finished the interrupted write of history entry #{seq} first"
        ));
    }
    if args.dry_run {
        ui.report("dry run: nothing was changed");
    } else if report.already_published {
        ui.report(format!(
            "version {version} is already published for every architecture"
        ));
    } else {
        ui.report(format!("released {version} to {}", store.describe()));
    }
    ctx.emit(&report)?;
    Ok(Outcome::Success)
}
