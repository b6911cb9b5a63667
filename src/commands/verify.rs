//! `verify`: the channel as a device sees it, over HTTP(S) from its public URL.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::SystemTime;

use anyhow::Result;
use serde::Serialize;

use super::{rfc3339, Ctx, Outcome, UsageError};
use crate::arch::Arch;
use crate::channel;
use crate::cli::VerifyArgs;
use crate::hash;
use crate::http::{Http, Response};
use crate::manifest::{self, MANIFEST, SIGNATURE, SIGNATURE_FALLBACKS};
use crate::signing::Keyring;
use crate::store;
use crate::transfer;

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

/// systemd's own gpg command line (src/import/pull-common.c), when gpg exists.
fn gpg_verify(keyring: &Path, manifest: &[u8], signature: &[u8]) -> Option<Result<(), String>> {
    use std::io::Write;
    let dir = tempfile::tempdir().ok()?;
    let sig = dir.path().join("sig");
    std::fs::write(&sig, signature).ok()?;
    let home = dir.path().join("home");
    std::fs::create_dir(&home).ok()?;
    let mut child = Command::new("gpg")
        .args(crate::signing::SYSTEMD_GPG_ARGS)
        .arg(format!("--homedir={}", home.display()))
        .arg(format!("--keyring={}", keyring.display()))
        .arg("--verify")
        .arg(&sig)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let _ = child.stdin.take()?.write_all(manifest);
    let out = child.wait_with_output().ok()?;
    let _ = Command::new("gpgconf")
        .arg("--homedir")
        .arg(&home)
        .args(["--kill", "all"])
        .status();
    Some(if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr)
            .trim()
            .replace('\n', "; "))
    })
}

fn check_cache(what: &str, r: &Response, immutable: bool, c: &mut ArchCheck) {
    let Some(cc) = &r.cache_control else {
        c.warnings.push(format!("{what}: no Cache-Control header"));
        return;
    };
    let cc = cc.to_ascii_lowercase();
    if immutable && !(cc.contains("immutable") || cc.contains("max-age")) {
        c.warnings.push(format!(
            "{what}: Cache-Control {cc:?} does not allow long caching"
        ));
    }
    let uncached = cc.contains("no-cache") || cc.contains("no-store") || cc.contains("max-age=0");
    if !immutable && !uncached {
        c.problems.push(format!(
            "{what}: Cache-Control {cc:?} lets caches serve a stale manifest; use no-cache"
        ));
    }
}

#[allow(clippy::too_many_arguments)]
fn check_arch(
    http: &Http,
    base: &str,
    arch: Arch,
    keyring: &Keyring,
    keyring_path: &Path,
    transfers_dir: &Path,
    store: &dyn store::Store,
    deep: bool,
    margin: std::time::Duration,
) -> Result<ArchCheck> {
    let url = format!("{}/{arch}/", base.trim_end_matches('/'));
    let mut c = ArchCheck {
        arch: arch.to_string(),
        url: url.clone(),
        ..Default::default()
    };
    let fetch = |name: &str| http.get(&format!("{url}{name}"));
    let sums = fetch(MANIFEST)?;
    if sums.status != 200 {
        c.problems.push(format!(
            "{MANIFEST}: HTTP {} (devices cannot update)",
            sums.status
        ));
        return Ok(c);
    }
    let sig = fetch(SIGNATURE)?;
    if sig.status != 200 {
        c.problems.push(format!(
            "{SIGNATURE}: HTTP {} (devices refuse the manifest)",
            sig.status
        ));
    }
    for (name, r) in [(MANIFEST, &sums), (SIGNATURE, &sig)] {
        if let Some(enc) = &r.content_encoding {
            c.problems
                .push(format!("{name}: served with Content-Encoding {enc}"));
        }
        check_cache(name, r, false, &mut c);
    }
    for name in SIGNATURE_FALLBACKS {
        let r = fetch(name)?;
        if r.status != 404 {
            c.problems.push(format!(
                "{name}: HTTP {} instead of 404; systemd 258+ tries this name first and gives up on anything but 404",
                r.status
            ));
        }
    }
    let now = SystemTime::now();
    match keyring.verify(&sums.body, &sig.body, now) {
        Ok(info) => {
            c.signer = Some(info.fingerprint);
            if let Some(e) = info.expires {
                c.expires = Some(rfc3339(e));
                if e <= now + margin {
                    c.problems.push(format!(
                        "the signature expires at {} (within {}): run `sysupdate-publish refresh`",
                        rfc3339(e),
                        humantime::format_duration(margin)
                    ));
                }
            }
        }
        Err(e) => c.problems.push(format!("signature: {e}")),
    }
    if let Some(Err(e)) = gpg_verify(keyring_path, &sums.body, &sig.body) {
        c.problems.push(format!(
            "gpg (systemd's command line) refuses the manifest: {e}"
        ));
    }
    let m = match manifest::parse(&sums.body) {
        Ok(m) => m,
        Err(e) => {
            c.problems.push(format!("manifest: {e}"));
            return Ok(c);
        }
    };
    let transfers = channel::load_transfers(transfers_dir, arch.systemd())?;
    let cl = transfer::classify(&transfers, m.entries.keys().map(String::as_str));
    for v in &cl.versions {
        if !v.is_complete() {
            c.problems.push(format!(
                "version {} is incomplete (no file for {}): devices skip it",
                v.version,
                v.missing.join(", ")
            ));
        }
    }
    for name in &cl.unmatched {
        c.problems.push(format!("{name} matches no transfer file"));
    }
    c.versions = cl.versions.iter().map(|v| v.version.clone()).collect();
    c.newest = cl
        .versions
        .iter()
        .find(|v| v.is_complete())
        .map(|v| v.version.clone());
    // What the store says is published (what `status` shows).
    match store.get(arch, MANIFEST) {
        Ok(Some(stored)) if stored != sums.body => c.problems.push(
            "the hosting serves a different SHA256SUMS than the store holds (stale cache or another origin)".into(),
        ),
        Ok(_) => {}
        Err(e) => c.warnings.push(format!("cannot compare with the store: {e}")),
    }
    let sizes = store.list(arch).unwrap_or_default();
    for (name, want) in &m.entries {
        let purl = format!("{url}{name}");
        if deep {
            let (status, got, len) = http.get_hashed(&purl)?;
            if status != 200 {
                c.problems.push(format!("{name}: HTTP {status}"));
            } else if &got != want {
                c.problems.push(format!(
                    "{name}: downloaded {len} bytes hash to {}, the manifest says {}: devices refuse it",
                    hash::to_hex(&got),
                    hash::to_hex(want)
                ));
            }
        }
        let r = http.head(&purl)?;
        if r.status != 200 {
            c.problems.push(format!(
                "{name}: HTTP {} (listed in the manifest)",
                r.status
            ));
            continue;
        }
        if let Some(enc) = &r.content_encoding {
            c.problems.push(format!(
                "{name}: served with Content-Encoding {enc}; devices hash the bytes as served"
            ));
        }
        match (r.content_length, sizes.get(name)) {
            (None, _) => c.problems.push(format!("{name}: no Content-Length")),
            (Some(got), Some(info)) if got != info.size => c.problems.push(format!(
                "{name}: Content-Length {got}, but the stored payload has {} bytes",
                info.size
            )),
            _ => {}
        }
        check_cache(name, &r, true, &mut c);
        c.payloads_checked += 1;
    }
    Ok(c)
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
    let store = config.channel.open_store();
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
    let mut checks = Vec::new();
    for &arch in &arches {
        let c = check_arch(
            &http,
            &base,
            arch,
            &keyring,
            &config.signing.keyring,
            &config.transfers.dir,
            store.as_ref(),
            args.deep,
            config.channel.expiry_warning,
        )?;
        if c.problems.is_empty() {
            ctx.ui.info(format!(
                "{}: OK, newest {} ({} payloads checked{})",
                c.arch,
                c.newest.as_deref().unwrap_or("-"),
                c.payloads_checked,
                if args.deep { ", hashes verified" } else { "" }
            ));
        } else {
            ctx.ui
                .info(format!("{}: {} problem(s)", c.arch, c.problems.len()));
        }
        for p in &c.problems {
            ctx.ui.info(format!("  PROBLEM: {p}"));
        }
        for w in &c.warnings {
            ctx.ui.detail(format!("  warning: {w}"));
        }
        checks.push(c);
    }
    #[derive(Serialize)]
    struct Report {
        url: String,
        deep: bool,
        arches: Vec<ArchCheck>,
    }
    let bad = checks.iter().any(|c| !c.problems.is_empty());
    ctx.emit(&Report {
        url: base,
        deep: args.deep,
        arches: checks,
    })?;
    Ok(if bad {
        Outcome::Problems
    } else {
        Outcome::Success
    })
}
