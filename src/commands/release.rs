//! `release`: build or take the outputs, hand them to the publisher, show
//! what it did.

use anyhow::Result;

use super::{human_bytes, load_keys, parse_outputs, publisher, Ctx, Outcome, UsageError};
use crate::cli::ReleaseArgs;
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
            ui.info(format!(
                "{}: {version} already published, nothing to do",
                a.arch
            ));
            continue;
        }
        ui.info(format!(
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
fn skip(args: &ReleaseArgs) -> Result<Skip, UsageError> {
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

pub(super) fn run(ctx: &Ctx, args: ReleaseArgs) -> Result<Outcome> {
    let skip = skip(&args)?;
    let config = ctx.config()?;
    let ui = &ctx.ui;
    let (key, keyring) = load_keys(&config, ui)?;
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
    let req = ReleaseRequest {
        outputs,
        version: args.version,
        dry_run: args.dry_run,
        allow_downgrade: args.allow_downgrade,
        unyank: args.unyank,
        compress,
        checks: config.checks.clone(),
        skip,
        stamps: std::sync::Arc::new(match StampCache::default_dir() {
            Some(dir) if !args.deep => StampCache::open(&dir),
            _ => StampCache::off(),
        }),
    };
    let report = publisher.release(&key, &req)?;
    print_report(ui, &report);
    let version = report.version.as_ref().map(|v| v.as_str()).unwrap_or("?");
    if let Some(seq) = report.finished_interrupted {
        ui.info(format!(
            "finished the interrupted write of history entry #{seq} first"
        ));
    }
    if args.dry_run {
        ui.info("dry run: nothing was changed");
    } else if report.already_published {
        ui.info(format!(
            "version {version} is already published for every architecture"
        ));
    } else {
        ui.info(format!("released {version} to {}", store.describe()));
    }
    ctx.emit(&report)?;
    Ok(Outcome::Success)
}
