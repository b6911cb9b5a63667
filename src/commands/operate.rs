//! yank, unyank, rollback, refresh: the operator's commands. They share one
//! flow: lock, verify everything (manifests and ledger), plan, commit every
//! arch, record the ledger entry, clean up.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use anyhow::Result;
use serde::Serialize;

use super::release::signing_time;
use super::{load_keys, load_ledger, record, Ctx, Outcome, UsageError};
use crate::channel;
use crate::cli::{RefreshArgs, RollbackArgs, UnyankArgs, YankArgs};
use crate::config::{parse_lifetime, Config};
use crate::ledger::{Action, Ledger};
use crate::manifest::Date;
use crate::operations::{self, ArchChange, ArchView};
use crate::signing::{Keyring, SecretKey, SignOptions};
use crate::store::{self, Lock, Store};

/// What devices do after versions are withdrawn (printed by yank and rollback).
pub const DEVICE_BEHAVIOUR: &str = "\
What devices do now:
  - devices that did not install the withdrawn version(s) stay on, or move to, the newest one still published;
  - devices that already installed a withdrawn version keep it: systemd-sysupdate never downgrades on its own;
  - to move those back, publish a new, higher version built from the good configuration;
  - `systemd-sysupdate update VERSION` on a device is the manual escape hatch.";

struct Session {
    config: Config,
    key: SecretKey,
    keyring: Keyring,
    store: Box<dyn Store>,
    now: SystemTime,
    ledger: Ledger,
    ledger_bytes: Option<Vec<u8>>,
    views: Vec<ArchView>,
    _lock: Option<Box<dyn Lock>>,
}

impl Session {
    fn open(ctx: &Ctx, dry_run: bool) -> Result<Session> {
        let config = ctx.config()?;
        let (key, keyring) = load_keys(&config, &ctx.ui)?;
        let store = store::open(&config.channel.store);
        let lock = if dry_run { None } else { Some(store.lock()?) };
        let now = signing_time()?;
        let (ledger, ledger_bytes) = load_ledger(store.as_ref(), &keyring)?;
        let views = operations::read_all(store.as_ref(), &keyring, &config.transfers.dir, now)?;
        if views.is_empty() {
            return Err(
                UsageError(format!("{}: nothing is published yet", store.describe())).into(),
            );
        }
        Ok(Session {
            config,
            key,
            keyring,
            store,
            now,
            ledger,
            ledger_bytes,
            views,
            _lock: lock,
        })
    }

    fn published(&self) -> operations::Published<'_> {
        operations::Published {
            store: self.store.as_ref(),
            views: &self.views,
            ledger: &self.ledger,
            best_before: self.best_before(),
        }
    }

    fn best_before(&self) -> Option<Date> {
        self.config
            .channel
            .signature_lifetime
            .map(|l| channel::best_before(self.now, l))
    }

    /// Prints the plan; unless a dry run: commits, records, cleans up.
    fn finish(
        mut self,
        ctx: &Ctx,
        changes: Vec<ArchChange>,
        action: Action,
        versions: Vec<String>,
        reason: Option<String>,
        dry_run: bool,
    ) -> Result<Outcome> {
        for c in &changes {
            let mut what = Vec::new();
            if !c.removed.is_empty() {
                what.push(format!("withdraw {}", c.removed.join(", ")));
            }
            if !c.restored.is_empty() {
                what.push(format!("restore {}", c.restored.join(", ")));
            }
            if what.is_empty() {
                what.push("re-sign".into());
            }
            ctx.ui.info(format!(
                "{}: {} → publishes {}",
                c.arch,
                what.join(", "),
                c.versions.join(", ")
            ));
        }
        if dry_run {
            ctx.ui.info("dry run: nothing was changed");
        } else {
            let sign = SignOptions {
                created: self.now,
                lifetime: self.config.channel.signature_lifetime,
            };
            let store = self.store.as_ref();
            operations::commit(store, &changes, &self.key, &self.keyring, sign, &ctx.ui)?;
            let mut files = crate::ledger::Files::new();
            for c in &changes {
                for (version, names) in &c.files {
                    files
                        .entry(version.clone())
                        .or_default()
                        .insert(c.arch.to_string(), names.clone());
                }
            }
            record(
                store,
                &mut self.ledger,
                self.ledger_bytes.as_deref(),
                &self.key,
                self.now,
                action,
                versions.clone(),
                files,
                reason.clone(),
            )?;
            let keep: BTreeMap<String, BTreeSet<String>> = changes
                .iter()
                .map(|c| {
                    let kept = operations::retained(
                        &self.ledger,
                        c.arch.systemd(),
                        &c.versions,
                        self.config.channel.keep,
                    );
                    (c.arch.to_string(), kept)
                })
                .collect();
            operations::cleanup(store, &changes, &keep)?;
        }
        #[derive(Serialize)]
        struct Report<'a> {
            action: Action,
            versions: &'a [String],
            reason: Option<&'a str>,
            dry_run: bool,
            arches: &'a [ArchChange],
        }
        ctx.emit(&Report {
            action,
            versions: &versions,
            reason: reason.as_deref(),
            dry_run,
            arches: &changes,
        })?;
        Ok(Outcome::Success)
    }
}

pub(super) fn yank(ctx: &Ctx, args: YankArgs) -> Result<Outcome> {
    if args.reason.trim().is_empty() {
        return Err(UsageError("--reason must say why (it goes into the ledger)".into()).into());
    }
    let s = Session::open(ctx, args.dry_run)?;
    let changes = operations::plan_yank(&s.views, &args.version, &args.arches, s.best_before())?;
    let out = s.finish(
        ctx,
        changes,
        Action::Yank,
        vec![args.version],
        Some(args.reason),
        args.dry_run,
    )?;
    ctx.ui.info(DEVICE_BEHAVIOUR);
    Ok(out)
}

pub(super) fn unyank(ctx: &Ctx, args: UnyankArgs) -> Result<Outcome> {
    let s = Session::open(ctx, args.dry_run)?;
    let changes = operations::plan_unyank(&s.published(), &args.version)?;
    s.finish(
        ctx,
        changes,
        Action::Unyank,
        vec![args.version],
        None,
        args.dry_run,
    )
}

pub(super) fn rollback(ctx: &Ctx, args: RollbackArgs) -> Result<Outcome> {
    let s = Session::open(ctx, args.dry_run)?;
    let changes = operations::plan_rollback(&s.published(), &args.version)?;
    let mut withdrawn: Vec<String> = changes.iter().flat_map(|c| c.removed.clone()).collect();
    withdrawn.sort_by(|a, b| crate::version::compare(b, a));
    withdrawn.dedup();
    let mut versions = vec![args.version.clone()];
    versions.extend(withdrawn);
    let out = s.finish(
        ctx,
        changes,
        Action::Rollback,
        versions,
        args.reason,
        args.dry_run,
    )?;
    ctx.ui.info(DEVICE_BEHAVIOUR);
    Ok(out)
}

pub(super) fn refresh(ctx: &Ctx, args: RefreshArgs) -> Result<Outcome> {
    let margin = args
        .if_expiring_within
        .as_deref()
        .map(parse_lifetime)
        .transpose()
        .map_err(|m| UsageError(format!("--if-expiring-within: {m}")))?;
    let s = Session::open(ctx, args.dry_run)?;
    if let Some(margin) = margin {
        let due = s.views.iter().any(|v| {
            v.state.expired
                || v.state
                    .signature
                    .as_ref()
                    .and_then(|i| i.expires)
                    .is_some_and(|e| e <= s.now + margin)
        });
        if !due {
            ctx.ui.info(format!(
                "no signature expires within {}: nothing to do",
                humantime::format_duration(margin)
            ));
            return Ok(Outcome::Success);
        }
    }
    let changes = operations::plan_refresh(&s.views, s.best_before());
    s.finish(ctx, changes, Action::Refresh, vec![], None, args.dry_run)
}
