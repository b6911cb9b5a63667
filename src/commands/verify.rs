//! `verify`: the channel as a device sees it, over HTTP(S) from its public
//! URL, read by the same reader as `status` (so a served manifest that is
//! not the history's newest shows the same way), plus the device-view
//! checks of what the server sends.

use anyhow::Result;
use serde::Serialize;

use super::{rfc3339, signer, Ctx, Outcome, UsageError};
use crate::arch::Arch;
use crate::channel::device::{self, Finding, Severity};
use crate::channel::source::HttpSource;
use crate::channel::state::{self, ReadOptions};
use crate::cli::VerifyArgs;
use crate::http::Http;
use crate::manifest::{LEDGER, MANIFEST, SIGNATURE, SIGNATURE_FALLBACKS};
use crate::signing::Keyring;

#[derive(Serialize, Default)]
struct ArchCheck {
    arch: String,
    url: String,
    newest: Option<String>,
    versions: Vec<String>,
    signer: Option<String>,
    expires: Option<String>,
    payloads_checked: usize,
    problems: Vec<String>,
    warnings: Vec<String>,
}

#[derive(Serialize)]
struct Report {
    schema: u32,
    url: String,
    /// The configured signer: what the next write signs with.
    signing: signer::Named,
    deep: bool,
    arches: Vec<ArchCheck>,
    /// Channel-level problems (the history).
    problems: Vec<String>,
}

pub(super) fn run(ctx: &Ctx, args: VerifyArgs) -> Result<Outcome> {
    let config = ctx.config()?;
    let base = args
        .url
        .clone()
        .or_else(|| config.channel.url.clone())
        .ok_or_else(|| {
            UsageError(format!(
                "no --url and no [channel] url in {}",
                config.file.display()
            ))
        })?;
    let keyring = Keyring::load(&config.signing.keyring)?;
    let signing = signer::name(&config, &keyring, &ctx.ui);
    let store = config.channel.open_store();
    if let Some(ca) = &args.ca {
        super::input_file("--ca", ca)?;
    }
    let http = Http::new(args.ca.as_deref())?;
    let arches = if args.arches.is_empty() {
        store.arches()?
    } else {
        args.arches
            .iter()
            .map(|a| Arch::parse(a).map_err(|e| UsageError(format!("--arch: {e}"))))
            .collect::<Result<Vec<_>, _>>()?
    };
    if arches.is_empty() {
        return Err(UsageError("the store has no architectures; pass --arch".into()).into());
    }
    // Devices never read the history; what they are served must be what it names.
    let history = store.get_channel_file(LEDGER)?;
    let source = HttpSource::new(&http, &base, arches.clone(), history);
    super::check_component(ctx, &config)?;
    let opts = ReadOptions {
        keyring: &keyring,
        transfers_dir: &config.transfers.dir,
        component: ctx.component.as_deref(),
        specifiers: &config.specifiers,
        now: std::time::SystemTime::now(),
        expiry_warning: config.channel.expiry_warning,
        deep: args.deep,
        remembered: None,
        events: &ctx.ui,
    };
    let channel = state::read(&source, &opts)?;

    let mut checks = Vec::new();
    for arch in &arches {
        let view = &channel.arches[arch];
        let mut findings: Vec<Finding> = Vec::new();
        for name in [MANIFEST, SIGNATURE] {
            findings.extend(device::check_manifest(
                *arch,
                name,
                &source.response(*arch, name, true)?,
            ));
        }
        for name in SIGNATURE_FALLBACKS {
            let status = source.response(*arch, name, true)?.status;
            findings.extend(device::check_fallback(*arch, name, status));
        }
        let sums = source.response(*arch, MANIFEST, true)?;
        let sig = source.response(*arch, SIGNATURE, true)?;
        if sums.status == 200 && sig.status == 200 {
            if let Some(Err(e)) = device::gpg_verify(&config.signing.keyring, &sums.body, &sig.body)
            {
                findings.push(Finding {
                    severity: Severity::Problem,
                    arch: *arch,
                    file: SIGNATURE.into(),
                    message: format!("gpg (systemd's command line) refuses the manifest: {e}"),
                });
            }
        }
        let record = channel.record(*arch);
        let mut checked = 0;
        for name in view.manifest.entries.keys() {
            let size = record.and_then(|r| r.files.get(name)).map(|f| f.size);
            findings.extend(device::check_payload(
                *arch,
                name,
                &source.response(*arch, name, false)?,
                size,
            ));
            checked += 1;
        }
        let mut c = ArchCheck {
            arch: arch.to_string(),
            url: format!("{}/{arch}/", source.base),
            newest: view
                .versions
                .iter()
                .find(|v| v.is_complete())
                .map(|v| v.version.clone()),
            versions: view.versions.iter().map(|v| v.version.clone()).collect(),
            signer: view.signature.info().map(|i| i.fingerprint.clone()),
            expires: view.signature.info().and_then(|i| i.expires).map(rfc3339),
            payloads_checked: checked,
            ..Default::default()
        };
        for p in channel.problems.iter().filter(|p| p.arch() == Some(*arch)) {
            c.problems.push(format!("{p}: {}", p.fix()));
        }
        for f in findings {
            let text = format!("{}: {}", f.file, f.message);
            match f.severity {
                Severity::Problem => c.problems.push(text),
                Severity::Warning => c.warnings.push(text),
            }
        }
        if c.problems.is_empty() {
            ctx.ui.report(format!(
                "{}: OK, newest {} ({} payloads checked{})",
                c.arch,
                c.newest.as_deref().unwrap_or("-"),
                c.payloads_checked,
                if args.deep { ", hashes verified" } else { "" }
            ));
        } else {
            ctx.ui
                .report(format!("{}: {} problem(s)", c.arch, c.problems.len()));
        }
        for p in &c.problems {
            ctx.ui.report(format!("  PROBLEM: {p}"));
        }
        c.warnings.extend(super::transfer_warnings(view));
        ctx.ui.report_warnings("  ", &c.warnings);
        checks.push(c);
    }
    let problems: Vec<String> = channel
        .problems
        .iter()
        .filter(|p| p.arch().is_none())
        .map(|p| format!("{p}: {}", p.fix()))
        .collect();
    for p in &problems {
        ctx.ui.report(format!("PROBLEM: {p}"));
    }
    ctx.ui
        .warnings_hint(checks.iter().map(|c| c.warnings.len()).sum());
    let bad = !problems.is_empty() || checks.iter().any(|c| !c.problems.is_empty());
    ctx.emit(&Report {
        schema: crate::publisher::report::SCHEMA,
        url: base,
        signing,
        deep: args.deep,
        arches: checks,
        problems,
    })?;
    Ok(if bad {
        Outcome::Problems
    } else {
        Outcome::Success
    })
}
