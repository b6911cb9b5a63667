//! `status`: what is published, who signed it, until when, and what is wrong.

use std::time::SystemTime;

use anyhow::Result;
use serde::Serialize;

use super::{human_bytes, rfc3339, Ctx, Outcome};
use crate::arch::Arch;
use crate::channel;
use crate::cli::StatusArgs;
use crate::hash;
use crate::manifest::{self, MANIFEST, SIGNATURE};
use crate::signing::Keyring;
use crate::store::{self, Store};
use crate::transfer;

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

#[derive(Serialize, Default)]
struct ArchStatus {
    arch: String,
    signer: Option<String>,
    signed: Option<String>,
    expires: Option<String>,
    best_before: Option<String>,
    versions: Vec<VersionStatus>,
    /// Files in the arch directory that no manifest names (leftovers; devices never see them).
    unreferenced: Vec<String>,
    problems: Vec<String>,
}

#[derive(Serialize)]
struct StatusReport {
    store: String,
    arches: Vec<ArchStatus>,
    /// The most recent ledger entries, oldest first.
    history: Vec<crate::ledger::Entry>,
    /// Channel-level problems (the ledger).
    problems: Vec<String>,
}

/// How many ledger entries `status` shows.
const HISTORY: usize = 10;

fn arch_status(
    store: &dyn Store,
    keyring: &Keyring,
    transfers_dir: &std::path::Path,
    arch: Arch,
    hash_payloads: bool,
    ctx: &Ctx,
) -> Result<ArchStatus> {
    let mut st = ArchStatus {
        arch: arch.to_string(),
        ..Default::default()
    };
    let files = store.list(arch)?;
    let Some(bytes) = store.get(arch, MANIFEST)? else {
        st.problems
            .push("no SHA256SUMS: nothing is published here".into());
        return Ok(st);
    };
    let verified = match store.get(arch, SIGNATURE)? {
        None => Err("SHA256SUMS.gpg is missing: devices refuse the manifest".to_string()),
        Some(sig) => keyring
            .verify(&bytes, &sig, SystemTime::now())
            .map_err(|e| format!("signature: {e}")),
    };
    let verified = match verified {
        Err(problem) => {
            match channel::pending_signature(store, keyring, arch, &bytes, SystemTime::now())? {
                Some((info, _)) => {
                    st.problems.push(format!(
                        "interrupted commit: SHA256SUMS verifies only with {}; devices refuse it until the next release, yank or refresh finishes the commit (or a commit is in progress right now)",
                        crate::manifest::PENDING_SIGNATURE
                    ));
                    Ok(info)
                }
                None => Err(problem),
            }
        }
        ok => ok,
    };
    match verified {
        Ok(info) => {
            st.signer = Some(info.fingerprint);
            st.signed = Some(rfc3339(info.created));
            st.expires = info.expires.map(rfc3339);
        }
        Err(problem) => st.problems.push(problem),
    }
    let m = match manifest::parse(&bytes) {
        Ok(m) => m,
        Err(e) => {
            st.problems.push(format!("manifest: {e}"));
            return Ok(st);
        }
    };
    st.best_before = m.best_before.map(|d| d.to_string());
    let transfers = channel::load_transfers(transfers_dir, arch.systemd())?;
    let c = transfer::classify(&transfers, m.entries.keys().map(String::as_str));
    for set in &c.versions {
        let mut v = VersionStatus {
            version: set.version.clone(),
            complete: set.is_complete(),
            size: 0,
            files: vec![],
            missing: set.missing.clone(),
        };
        if !set.missing.is_empty() {
            st.problems.push(format!(
                "version {} is incomplete (no file for {}): devices skip it",
                set.version,
                set.missing.join(", ")
            ));
        }
        for name in set.files.values() {
            let expected = m.entries[name];
            let size = if hash_payloads {
                let len = files.get(name).map_or(0, |f| f.size);
                let bar = ctx.ui.bytes_bar(len, format!("{arch} verify {name}"));
                let got = store.hash(arch, name, &mut |n| bar.inc(n))?;
                bar.finish_and_clear();
                if got.is_some_and(|(h, _)| h != expected) {
                    st.problems.push(format!(
                        "{name} does not have the listed sha256 {}: devices refuse it",
                        hash::to_hex(&expected)
                    ));
                }
                got.map(|(_, len)| len)
            } else {
                files.get(name).map(|f| f.size)
            };
            if size.is_none() {
                st.problems
                    .push(format!("{name} is listed but missing from the hosting"));
            }
            v.size += size.unwrap_or(0);
            v.files.push(FileStatus {
                name: name.clone(),
                size,
                sha256: hash::to_hex(&expected),
            });
        }
        st.versions.push(v);
    }
    for name in &c.unmatched {
        st.problems
            .push(format!("{name} is listed but matches no transfer file"));
    }
    let listed = channel::referenced(&m);
    st.unreferenced = files
        .keys()
        .filter(|n| !listed.contains(n.as_str()) && *n != MANIFEST && *n != SIGNATURE)
        .cloned()
        .collect();
    Ok(st)
}

pub(super) fn run(ctx: &Ctx, args: StatusArgs) -> Result<Outcome> {
    let config = ctx.config()?;
    let keyring = Keyring::load(&config.signing.keyring)?;
    let store = store::open(&config.channel.store);
    let mut report = StatusReport {
        store: store.describe(),
        arches: vec![],
        history: vec![],
        problems: vec![],
    };
    match super::load_ledger(store.as_ref(), &keyring) {
        Ok((ledger, _)) => {
            let all: Vec<_> = ledger.entries().cloned().collect();
            report.history = all[all.len().saturating_sub(HISTORY)..].to_vec();
        }
        Err(e) => report.problems.push(format!("{e:#}")),
    }
    let arches = store.arches()?;
    if arches.is_empty() {
        ctx.ui
            .info(format!("{}: nothing published yet", store.describe()));
    }
    for arch in arches {
        let mut st = arch_status(
            store.as_ref(),
            &keyring,
            &config.transfers.dir,
            arch,
            !args.no_hash,
            ctx,
        )?;
        if let Some(expires) = &st.expires {
            let margin = config.channel.expiry_warning;
            let soon =
                humantime::parse_rfc3339(expires).is_ok_and(|e| e <= SystemTime::now() + margin);
            if soon {
                st.problems.push(format!(
                    "the signature expires at {expires}, within {}: run `sysupdate-publish refresh`",
                    humantime::format_duration(margin)
                ));
            }
        }
        print_arch(ctx, &st);
        report.arches.push(st);
    }
    if !report.history.is_empty() {
        ctx.ui.info("history:");
        for e in &report.history {
            ctx.ui.info(format!(
                "  {} {:<8} {}{}",
                e.time,
                e.action.to_string(),
                e.versions.join(", "),
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
    let problems =
        !report.problems.is_empty() || report.arches.iter().any(|a| !a.problems.is_empty());
    Ok(if problems {
        Outcome::Problems
    } else {
        Outcome::Success
    })
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
            "  unreferenced files: {}",
            st.unreferenced.join(", ")
        ));
    }
    for p in &st.problems {
        ui.info(format!("  PROBLEM: {p}"));
    }
}
