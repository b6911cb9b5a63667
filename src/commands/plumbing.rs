//! keygen, sign, sums, inspect: the building blocks, usable without a channel.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result};
use serde::Serialize;

use super::{input_dir, input_file, rfc3339, write_atomic, write_new, Ctx, Outcome, UsageError};
use crate::cli::{InspectArgs, KeygenArgs, SignArgs, SumsArgs};
use crate::config::parse_lifetime;
use crate::hash;
use crate::manifest::{self, Date, Manifest};
use crate::signing::{pkcs11, Keyring, Pkcs11Spec, SecretKey, SignOptions, PASSPHRASE_ENV};
use crate::transfer::{self, Specifiers};

#[derive(Serialize)]
struct KeygenReport {
    fingerprint: String,
    /// The token's key when it is bound as a signing subkey of `fingerprint`.
    subkey: Option<String>,
    uid: Option<String>,
    /// None for a token's key: its secret never leaves the token.
    secret: Option<PathBuf>,
    keyring: PathBuf,
    public: Option<PathBuf>,
}

pub(super) fn keygen(ctx: &Ctx, args: KeygenArgs) -> Result<Outcome> {
    if let Some(module) = &args.pkcs11 {
        return keygen_pkcs11(ctx, module, &args);
    }
    let secret = args
        .secret
        .clone()
        .expect("clap requires --secret without --pkcs11");
    let uid = args
        .uid
        .clone()
        .expect("clap requires --uid without --primary");
    let key = SecretKey::generate(&uid)?;
    // Write the public parts first: a failure then leaves no orphan secret.
    write_new(&args.keyring, &key.keyring_bytes()?)?;
    if let Some(public) = &args.public {
        write_new(public, key.public_armored()?.as_bytes())?;
    }
    key.save(&secret)?;
    ctx.ui.report(format!(
        "created key {} for {}\n  secret key (keep private): {}\n  device keyring: {} — install as /etc/systemd/import-pubring.pgp and /etc/systemd/import-pubring.gpg",
        key.fingerprint(),
        uid,
        secret.display(),
        args.keyring.display()
    ));
    ctx.emit(&KeygenReport {
        fingerprint: key.fingerprint(),
        subkey: None,
        uid: Some(uid),
        secret: Some(secret),
        keyring: args.keyring,
        public: args.public,
    })?;
    Ok(Outcome::Success)
}

/// `keygen --pkcs11`: the certificate of a token's key, self-signed
/// through the token, written as the keyring devices install.
fn keygen_pkcs11(ctx: &Ctx, module: &Path, args: &KeygenArgs) -> Result<Outcome> {
    let spec = Pkcs11Spec {
        module: module.to_path_buf(),
        token: args.token.clone().expect("clap requires --token"),
        key: args.key.clone().expect("clap requires --key"),
        pin_env: args
            .pin_env
            .clone()
            .unwrap_or_else(|| pkcs11::PIN_ENV.to_string()),
    };
    let (keyring, fingerprint, subkey) = match &args.primary {
        None => {
            let uid = args
                .uid
                .as_deref()
                .expect("clap requires --uid without --primary");
            let (keyring, fpr) = pkcs11::certificate(&spec, uid)?;
            (keyring, fpr, None)
        }
        Some(primary) => {
            let text = zeroize::Zeroizing::new(
                std::fs::read_to_string(primary)
                    .with_context(|| format!("reading {}", primary.display()))?,
            );
            let passphrase = std::env::var(PASSPHRASE_ENV)
                .ok()
                .map(zeroize::Zeroizing::new);
            let (keyring, fpr, sub) = pkcs11::bind_subkey(
                &spec,
                &text,
                &primary.display().to_string(),
                passphrase.as_deref().map(|p| p.as_str()),
            )?;
            (keyring, fpr, Some(sub))
        }
    };
    write_new(&args.keyring, &keyring)?;
    if let Some(public) = &args.public {
        let armored = Keyring::from_bytes(&keyring)
            .map_err(|e| anyhow::anyhow!("reading back the certificate: {e}"))?
            .armored()?;
        write_new(public, armored.as_bytes())?;
    }
    let made = match (&subkey, &args.primary) {
        (Some(sub), Some(primary)) => format!(
            "bound {} as signing subkey {sub} of {fingerprint} ({})",
            spec.describe(),
            primary.display()
        ),
        _ => format!(
            "created the certificate of {} for {}: key {fingerprint}",
            spec.describe(),
            args.uid.as_deref().unwrap_or_default()
        ),
    };
    ctx.ui.info(format!(
        "{made}\n  device keyring: {} — install as /etc/systemd/import-pubring.pgp and /etc/systemd/import-pubring.gpg\n  sign with: [signing] pkcs11 = {{ module = {:?}, token = {:?}, key = {:?} }}",
        args.keyring.display(),
        spec.module.display().to_string(),
        spec.token,
        spec.key,
    ));
    ctx.emit(&KeygenReport {
        fingerprint,
        subkey,
        uid: args.uid.clone(),
        secret: None,
        keyring: args.keyring.clone(),
        public: args.public.clone(),
    })?;
    Ok(Outcome::Success)
}

#[derive(Serialize)]
struct SignReport {
    signature: PathBuf,
    fingerprint: String,
    /// The key that made the signature: `fingerprint`, or its signing subkey.
    signer: String,
    created: String,
    expires: Option<String>,
}

pub(super) fn sign(ctx: &Ctx, args: SignArgs) -> Result<Outcome> {
    let lifetime = args
        .expires
        .as_deref()
        .map(parse_lifetime)
        .transpose()
        .map_err(|m| UsageError(format!("--expires: {m}")))?;
    input_file("--key", &args.key)?;
    input_file("FILE", &args.file)?;
    let key = SecretKey::load(&args.key)?;
    let data =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let created = SystemTime::now();
    let sig = key.sign(&data, SignOptions { created, lifetime })?;
    let output = args.output.unwrap_or_else(|| {
        let mut s = args.file.clone().into_os_string();
        s.push(".gpg");
        PathBuf::from(s)
    });
    write_atomic(&output, &sig)?;
    let signer = key.signer_fingerprint(created);
    let with = if signer == key.fingerprint() {
        signer.clone()
    } else {
        format!("subkey {signer} of {}", key.fingerprint())
    };
    ctx.ui.report(format!(
        "signed {} with {with} → {}",
        args.file.display(),
        output.display()
    ));
    ctx.emit(&SignReport {
        signature: output,
        fingerprint: key.fingerprint(),
        signer,
        created: rfc3339(created),
        expires: lifetime.map(|l| rfc3339(created + l)),
    })?;
    Ok(Outcome::Success)
}

/// Regular files of a payload directory, sorted, skipping SHA256SUMS* and dotfiles.
fn payload_files(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            anyhow::bail!(
                "{}: the name is not UTF-8; SHA256SUMS must be UTF-8",
                path.display()
            );
        };
        if name.starts_with('.') || manifest::is_signature_or_manifest_name(&name) {
            continue;
        }
        let meta =
            std::fs::metadata(&path).with_context(|| format!("reading {}", path.display()))?;
        if meta.is_file() {
            out.push((name, path));
        }
    }
    out.sort();
    Ok(out)
}

#[derive(Serialize)]
struct SumsReport {
    manifest: PathBuf,
    entries: BTreeMap<String, String>,
    best_before: Option<String>,
}

pub(super) fn sums(ctx: &Ctx, args: SumsArgs) -> Result<Outcome> {
    let best_before = args
        .best_before
        .as_deref()
        .map(|s| Date::parse(s).map_err(|e| UsageError(format!("--best-before: {e}"))))
        .transpose()?;
    input_dir("DIR", &args.dir)?;
    let mut m = Manifest {
        best_before,
        ..Default::default()
    };
    for (name, path) in payload_files(&args.dir)? {
        manifest::validate_name(&name).with_context(|| format!("{}", path.display()))?;
        let len = std::fs::metadata(&path)?.len();
        let bar = ctx.ui.bytes_bar(len, format!("hash {name}"));
        let (digest, _) = std::fs::File::open(&path)
            .and_then(|f| hash::hash_reader(f, &mut |n| bar.inc(n)))
            .with_context(|| format!("reading {}", path.display()))?;
        bar.finish_and_clear();
        m.entries.insert(name, digest);
    }
    let bytes = manifest::render_checked(&m).with_context(|| format!("{}", args.dir.display()))?;
    let out = args.dir.join(crate::manifest::MANIFEST);
    write_atomic(&out, &bytes)?;
    ctx.ui.report(format!(
        "wrote {} ({} entries)",
        out.display(),
        m.entries.len()
    ));
    if let Some(date) = best_before {
        // sha256sum -c looks for a file named after the entry and fails.
        ctx.ui.info(format!(
            "note: `sha256sum -c SHA256SUMS` reports BEST-BEFORE-{date} as a missing file (it is a marker, not a file); check with `sha256sum -c --ignore-missing SHA256SUMS`"
        ));
    }
    ctx.emit(&SumsReport {
        manifest: out,
        entries: m
            .entries
            .iter()
            .map(|(k, v)| (k.clone(), hash::to_hex(v)))
            .collect(),
        best_before: best_before.map(|d| d.to_string()),
    })?;
    Ok(Outcome::Success)
}

#[derive(Serialize)]
struct InspectVersion {
    version: String,
    complete: bool,
    files: BTreeMap<String, String>,
    missing: Vec<String>,
    duplicates: Vec<(String, Vec<String>)>,
}

#[derive(Serialize)]
struct InspectReport {
    arch: String,
    versions: Vec<InspectVersion>,
    unmatched: Vec<String>,
    old_client_conflicts: Vec<String>,
    /// Payload name → what it holds (or why it could not be looked at).
    contents: BTreeMap<String, String>,
    /// Preflight, as `release` runs it.
    checks: crate::preflight::Outcome,
}

/// `[checks]` of the config when one is given or found, else none: inspect
/// works without a channel.
fn check_settings(ctx: &Ctx) -> Result<crate::preflight::Settings> {
    let found = ctx.config_path.is_some() || Path::new(crate::config::DEFAULT_FILE).exists();
    Ok(if found {
        ctx.config()?.checks
    } else {
        Default::default()
    })
}

/// Looks at every payload as staging would and runs preflight on them.
fn inspect_contents(
    ctx: &Ctx,
    arch: crate::arch::Arch,
    transfers: &[transfer::Transfer],
    files: &[(String, PathBuf)],
) -> Result<(BTreeMap<String, String>, crate::preflight::Outcome)> {
    let mut contents = BTreeMap::new();
    let mut seen = Vec::new();
    for (name, path) in files {
        let (content, _) = crate::inspect::inspect_file(path)
            .with_context(|| format!("reading {}", path.display()))?;
        let content = content.map(|(c, _)| c);
        let what = match &content {
            Ok(c) => c.describe(),
            Err(why) => format!("not inspected: {why}"),
        };
        contents.insert(name.clone(), what);
        seen.push((name.as_str(), content.ok()));
    }
    let items: Vec<crate::preflight::Item> = seen
        .iter()
        .map(|(name, c)| crate::preflight::Item {
            name,
            content: c.as_ref(),
        })
        .collect();
    let outcome = crate::preflight::check(
        arch,
        transfers,
        &items,
        &check_settings(ctx)?,
        &Default::default(),
    );
    Ok((contents, outcome))
}

pub(super) fn inspect(ctx: &Ctx, args: InspectArgs) -> Result<Outcome> {
    let arch = crate::arch::Arch::parse(&args.arch).map_err(|e| UsageError(e.to_string()))?;
    input_dir("--transfers", &args.transfers)?;
    input_dir("PAYLOAD_DIR", &args.payload_dir)?;
    let spec = Specifiers {
        arch: arch.systemd().to_string(),
        ..Default::default()
    };
    let transfers = transfer::load_dir(&args.transfers, &spec)?;
    let files = payload_files(&args.payload_dir)?;
    let names: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
    let (contents, checks) = inspect_contents(ctx, arch, &transfers, &files)?;
    let c = transfer::classify(&transfers, names.iter().map(String::as_str));
    let report = InspectReport {
        arch: arch.systemd().to_string(),
        versions: c
            .versions
            .iter()
            .map(|v| InspectVersion {
                version: v.version.clone(),
                complete: v.is_complete(),
                files: v.files.clone(),
                missing: v.missing.clone(),
                duplicates: v.duplicates.clone(),
            })
            .collect(),
        unmatched: c.unmatched.clone(),
        old_client_conflicts: c
            .old_client_conflicts
            .iter()
            .map(|c| c.explanation.clone())
            .collect(),
        contents,
        checks,
    };
    for v in &report.versions {
        let mut line = format!(
            "{:<12} {}",
            v.version,
            if v.complete { "complete" } else { "INCOMPLETE" }
        );
        if !v.missing.is_empty() {
            line += &format!(" (missing: {})", v.missing.join(", "));
        }
        for (t, files) in &v.duplicates {
            line += &format!(" (several files for {t}: {})", files.join(", "));
        }
        ctx.ui.report(line);
        for (t, f) in &v.files {
            ctx.ui.detail(format!("  {t}: {f}"));
        }
    }
    for name in &report.unmatched {
        ctx.ui.report(format!(
            "unmatched    {name} (matches no transfer source pattern)"
        ));
    }
    for c in &report.old_client_conflicts {
        ctx.ui.report(format!("conflict     {c}"));
    }
    for (name, what) in &report.contents {
        ctx.ui.detail(format!("  {name}: {what}"));
    }
    for f in &report.checks.findings {
        ctx.ui.report(format!("refused      {f}"));
    }
    for u in &report.checks.unchecked {
        ctx.ui.warn(u.clone());
    }
    ctx.emit(&report)?;
    let bad = report.versions.iter().any(|v| !v.complete)
        || !report.unmatched.is_empty()
        || !report.old_client_conflicts.is_empty()
        || !report.checks.findings.is_empty();
    Ok(if bad {
        Outcome::Problems
    } else {
        Outcome::Success
    })
}
