//! `release`: build or take the outputs, hand them to the publisher, show
//! what it did.

use anyhow::Result;

use super::{human_bytes, parse_outputs, publisher, signer, Ctx, Outcome, UsageError};
use crate::cli::ReleaseArgs;
use crate::publisher::{ReleaseRequest, Report};
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

pub(super) fn run(ctx: &Ctx, args: ReleaseArgs) -> Result<Outcome> {
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
    };
    let report = publisher.release(key.as_ref(), &req)?;
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
