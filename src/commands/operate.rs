//! yank, unyank, rollback, refresh, repair, adopt: the operator's commands.
//! Each parses its arguments, asks the publisher, and shows the report.

use anyhow::Result;

use super::{parse_outputs, publisher, signer, Ctx, Outcome, UsageError};
use crate::arch::Arch;
use crate::cli::{
    AdoptArgs, MirrorArgs, PromoteArgs, RefreshArgs, RepairArgs, RollbackArgs, UnyankArgs, YankArgs,
};
use crate::config::{parse_lifetime, Config};
use crate::publisher::{PromoteRequest, Publisher, RepairRequest, Report};
use crate::signing::Signer;
use crate::version::Version;

/// What devices do after versions are withdrawn (printed by yank and rollback).
pub const DEVICE_BEHAVIOUR: &str = "\
What devices do now:
  - devices that did not install the withdrawn version(s) stay on, or move to, the newest one still published;
  - devices that already installed a withdrawn version keep it: systemd-sysupdate never downgrades on its own;
  - to move those back, publish a new, higher version built from the good configuration;
  - `systemd-sysupdate update VERSION` on a device is the manual escape hatch.";

/// Runs `f` with the configured channel's publisher and signing key.
fn with_publisher(
    ctx: &Ctx,
    f: impl FnOnce(&Publisher, &dyn Signer, &Config) -> Result<Report>,
) -> Result<Report> {
    let config = ctx.config()?;
    let (key, keyring) = signer::load(&config, &ctx.ui)?;
    let store = config.channel.open_store();
    let publisher = publisher(ctx, &config, store.as_ref(), &keyring)?;
    f(&publisher, key.as_ref(), &config)
}

fn version(s: &str) -> Result<Version> {
    Version::parse(s).map_err(|e| UsageError(format!("version {s:?}: {e}")).into())
}

fn names(v: &[Version]) -> String {
    v.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
}

/// One line per changed arch, then the outcome.
fn show(ctx: &Ctx, r: &Report, what: &str) -> Result<Outcome> {
    if let Some(seq) = r.finished_interrupted {
        ctx.ui.report(format!(
            "finished the interrupted write of history entry #{seq} first"
        ));
    }
    for a in r.arches.iter().filter(|a| !a.already_published) {
        let mut change = Vec::new();
        if !a.added.is_empty() {
            change.push(format!("add {}", names(&a.added)));
        }
        if !a.removed.is_empty() {
            change.push(format!("withdraw {}", names(&a.removed)));
        }
        if !a.restored.is_empty() {
            change.push(format!("restore {}", names(&a.restored)));
        }
        if change.is_empty() {
            change.push("re-sign".into());
        }
        ctx.ui.report(format!(
            "{}: {} → publishes {}",
            a.arch,
            change.join(", "),
            if a.versions.is_empty() {
                "nothing".into()
            } else {
                names(&a.versions)
            }
        ));
    }
    if r.dry_run {
        ctx.ui.report("dry run: nothing was changed");
    } else if r.already_published {
        ctx.ui.report(format!("{what}: nothing to do"));
    } else if let Some(seq) = r.history_seq {
        ctx.ui.report(format!("recorded as history entry #{seq}"));
    }
    ctx.emit(r)?;
    Ok(Outcome::Success)
}

pub(super) fn yank(ctx: &Ctx, args: YankArgs) -> Result<Outcome> {
    if args.reason.trim().is_empty() {
        return Err(UsageError("--reason must say why (it goes into the history)".into()).into());
    }
    let v = version(&args.version)?;
    let arches = args
        .arches
        .iter()
        .map(|a| Arch::parse(a).map_err(|e| UsageError(format!("--arch: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let r = with_publisher(ctx, |p, key, _| {
        Ok(p.yank(key, &v, &arches, &args.reason, args.dry_run)?)
    })?;
    let out = show(ctx, &r, "yank")?;
    if !args.dry_run {
        ctx.ui.report(DEVICE_BEHAVIOUR);
    }
    Ok(out)
}

pub(super) fn unyank(ctx: &Ctx, args: UnyankArgs) -> Result<Outcome> {
    let v = version(&args.version)?;
    let r = with_publisher(ctx, |p, key, _| {
        Ok(p.unyank(key, &v, args.reason.clone(), args.dry_run)?)
    })?;
    show(ctx, &r, "unyank")
}

pub(super) fn rollback(ctx: &Ctx, args: RollbackArgs) -> Result<Outcome> {
    let v = version(&args.version)?;
    let r = with_publisher(ctx, |p, key, _| {
        Ok(p.rollback(key, &v, args.reason.clone(), args.dry_run)?)
    })?;
    let out = show(ctx, &r, "rollback")?;
    if !args.dry_run {
        ctx.ui.report(DEVICE_BEHAVIOUR);
    }
    Ok(out)
}

pub(super) fn refresh(ctx: &Ctx, args: RefreshArgs) -> Result<Outcome> {
    let margin = args
        .if_expiring_within
        .as_deref()
        .map(parse_lifetime)
        .transpose()
        .map_err(|m| UsageError(format!("--if-expiring-within: {m}")))?;
    let r = with_publisher(ctx, |p, key, _| Ok(p.refresh(key, margin, args.dry_run)?))?;
    if r.already_published {
        if let Some(margin) = margin {
            ctx.ui.report(format!(
                "no signature expires within {}: nothing to do",
                crate::config::human_duration(margin)
            ));
            ctx.emit(&r)?;
            return Ok(Outcome::Success);
        }
    }
    show(ctx, &r, "refresh")
}

pub(super) fn promote(ctx: &Ctx, args: PromoteArgs) -> Result<Outcome> {
    let v = version(&args.version)?;
    let soak = args
        .if_older_than
        .as_deref()
        .map(|s| {
            humantime::parse_duration(s)
                .map_err(|e| UsageError(format!("--if-older-than {s:?}: {e}")))
        })
        .transpose()?;
    if args.from == args.to {
        return Err(UsageError("--from and --to name the same channel".into()).into());
    }
    let skip = super::release::skip(&args.skip)?;
    let mut from_config = ctx.config_unselected()?;
    from_config.select(Some(&args.from))?;
    let mut to_config = from_config.clone();
    to_config.select(Some(&args.to))?;
    let (key, keyring) = signer::load(&to_config, &ctx.ui)?;
    let (from_store, to_store) = (
        from_config.channel.open_store(),
        to_config.channel.open_store(),
    );
    let source = publisher(ctx, &from_config, from_store.as_ref(), &keyring)?;
    let target = publisher(ctx, &to_config, to_store.as_ref(), &keyring)?;
    let req = PromoteRequest {
        version: v.clone(),
        soak,
        dry_run: args.dry_run,
        checks: to_config.checks.clone(),
        skip,
        stamps: super::release::stamps(false),
    };
    let r = target.promote(key.as_ref(), &source, &args.from, &req)?;
    let copies: usize = r.arches.iter().map(|a| a.copies.len()).sum();
    if !r.already_published && !r.dry_run {
        ctx.ui.report(format!(
            "promoted {v} from {} to {}: {copies} payload(s) copied, {} sent through this machine, {} read for preflight",
            args.from,
            args.to,
            super::human_bytes(r.upload_bytes),
            super::human_bytes(r.read_bytes)
        ));
    }
    show(ctx, &r, "promote")
}

pub(super) fn mirror(ctx: &Ctx, args: MirrorArgs) -> Result<Outcome> {
    if let Some(ca) = &args.ca {
        super::input_file("--ca", ca)?;
    }
    let http = crate::http::Http::new(args.ca.as_deref())?;
    let r = with_publisher(ctx, |p, key, _| {
        Ok(p.mirror(key, &http, &args.from, args.dry_run)?)
    })?;
    let fetched: usize = r.arches.iter().map(|a| a.uploads.len()).sum();
    if !r.dry_run && !r.already_published {
        ctx.ui.report(format!(
            "mirrored {}: {fetched} payload(s) fetched, {}",
            args.from,
            super::human_bytes(r.upload_bytes)
        ));
    }
    show(ctx, &r, "mirror")
}

pub(super) fn repair(ctx: &Ctx, args: RepairArgs) -> Result<Outcome> {
    let outputs = parse_outputs(&args.outputs)?;
    let r = with_publisher(ctx, |p, key, config| {
        let compress = config.transfers.compress_settings();
        let req = RepairRequest {
            outputs,
            dry_run: args.dry_run,
            compress,
        };
        Ok(p.repair(key, &req)?)
    })?;
    if r.already_published {
        ctx.ui
            .report("the hosting serves the history's newest state: nothing to repair");
        ctx.emit(&r)?;
        return Ok(Outcome::Success);
    }
    if r.dry_run {
        ctx.ui.report("dry run: nothing was changed");
    } else {
        ctx.ui
            .report("repaired: the hosting serves the history's newest state");
    }
    ctx.emit(&r)?;
    Ok(Outcome::Success)
}

pub(super) fn adopt(ctx: &Ctx, args: AdoptArgs) -> Result<Outcome> {
    let r = with_publisher(ctx, |p, key, _| {
        Ok(p.adopt(key, args.reason.clone(), !args.confirm)?)
    })?;
    if r.already_published {
        ctx.ui
            .report("the history already names what the hosting serves: nothing to adopt");
        ctx.emit(&r)?;
        return Ok(Outcome::Success);
    }
    for a in &r.arches {
        ctx.ui.report(format!(
            "{}: serves {}",
            a.arch,
            if a.versions.is_empty() {
                "nothing".into()
            } else {
                names(&a.versions)
            }
        ));
    }
    if !args.confirm {
        return Err(UsageError(
            "adopt records the state above as the channel's history; check it (`sysupdate-publish status`), then run `sysupdate-publish adopt --confirm`".into(),
        )
        .into());
    }
    ctx.ui.report(format!(
        "recorded what the hosting serves as history entry #{}",
        r.history_seq.unwrap_or_default()
    ));
    ctx.emit(&r)?;
    Ok(Outcome::Success)
}
