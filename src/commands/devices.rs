//! `device-files`: the definitions a non-nix device installs, written from
//! the very transfer directory the publisher checks releases against.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::{write_atomic, Ctx, Outcome, UsageError};
use crate::cli::DeviceFilesArgs;
use crate::transfer::{self, SourceType};

/// Names systemd-sysupdate reads from a definitions directory: a stray one
/// in `--out` would be read by devices as well.
const READ_BY_DEVICES: [&str; 3] = [".transfer", ".conf", ".feature"];

pub(super) fn device_files(ctx: &Ctx, args: DeviceFilesArgs) -> Result<Outcome> {
    let out: &Path = &args.out;
    if out.exists() && !out.is_dir() {
        return Err(UsageError(format!(
            "--out {}: is a file, not a directory",
            out.display()
        ))
        .into());
    }
    let config = ctx.config()?;
    let arches = config
        .nix
        .as_ref()
        .map(|n| n.systems.clone())
        .unwrap_or_else(|| crate::arch::Arch::all().take(1).collect());
    super::check_component(ctx, &config)?;
    let component = ctx.component.as_deref();
    let source = transfer::component::dir_of(&config.transfers.dir, component);
    let mut files = Vec::new();
    for arch in &arches {
        let spec = config.specifiers.for_arch(arch.systemd());
        // Refuses an unknown component, naming the ones there are.
        transfer::component::load_streams(&config.transfers.dir, &spec, component)?;
        let (found, transfers) = transfer::device_files(&source, &spec)
            .with_context(|| format!("reading {}", source.display()))?;
        check_urls(
            &transfers,
            config.channel.url.as_deref(),
            &config.channel_name,
        )?;
        files = found;
    }
    if config.channel.url.is_none() {
        ctx.ui.warn(format!(
            "channel {} has no url: the transfers' [Source] Path= was not checked against it",
            config.channel_name
        ));
    }
    let ours: BTreeSet<String> = files
        .iter()
        .map(|f| f.rel.to_string_lossy().into_owned())
        .collect();
    if out.is_dir() {
        let stray: Vec<String> = std::fs::read_dir(out)
            .with_context(|| format!("reading {}", out.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| READ_BY_DEVICES.iter().any(|s| n.ends_with(s)) && !ours.contains(n))
            .collect();
        if !stray.is_empty() {
            bail!(
                "{} holds {} that {} does not: devices would read them too. Remove them or write into an empty directory",
                out.display(),
                stray.join(", "),
                source.display()
            );
        }
    }
    let metadata = component
        .map(|c| {
            (
                c,
                transfer::component::metadata_file(&config.transfers.dir, c),
            )
        })
        .filter(|(_, m)| m.is_file());
    if let Some((c, meta)) = &metadata {
        let dir_name = format!("sysupdate.{c}.d");
        if out.file_name().and_then(|n| n.to_str()) != Some(dir_name.as_str()) {
            return Err(UsageError(format!(
                "--out {}: component {c} has a {} file, which devices read beside the component's directory; name --out {dir_name} (e.g. /etc/{dir_name}) so both land where systemd-sysupdate looks",
                out.display(),
                meta.file_name().unwrap_or_default().to_string_lossy()
            ))
            .into());
        }
    }
    for f in &files {
        let path = out.join(&f.rel);
        let dir = path.parent().expect("below --out");
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        write_atomic(&path, &f.bytes)?;
    }
    let mut written = ours.iter().cloned().collect::<Vec<_>>();
    if let Some((_, meta)) = &metadata {
        let name = meta.file_name().expect("a file");
        let to = out.parent().unwrap_or(Path::new(".")).join(name);
        let bytes = std::fs::read(meta).with_context(|| format!("reading {}", meta.display()))?;
        write_atomic(&to, &bytes)?;
        written.push(format!("../{}", name.to_string_lossy()));
    }
    ctx.ui.report(format!(
        "wrote {} device file(s) to {}: {}",
        written.len(),
        out.display(),
        written.join(", ")
    ));
    ctx.emit(&serde_json::json!({ "dir": out, "files": written }))?;
    Ok(Outcome::Success)
}

/// Every url transfer must fetch from this channel: a device given these
/// files would otherwise follow another channel than the one published.
fn check_urls(transfers: &[transfer::Transfer], url: Option<&str>, channel: &str) -> Result<()> {
    let Some(url) = url else { return Ok(()) };
    let url = url.trim_end_matches('/');
    for t in transfers {
        if !matches!(t.source_type, SourceType::UrlFile | SourceType::UrlTar) {
            continue;
        }
        let path = t.source_path.as_deref().unwrap_or_default();
        let under = path
            .strip_prefix(url)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
        if !under {
            bail!(
                "{}: [Source] Path={path} is not below channel {channel}'s url {url}: devices given this file would fetch from elsewhere. Fix the transfer, or pick the channel with --channel",
                t.file.display()
            );
        }
    }
    Ok(())
}
