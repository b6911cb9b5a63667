//! The commands: glue between the CLI, configuration and the library modules.
//! Errors here are `anyhow` with context; the library's typed errors inside.

mod devices;
mod docs;
mod operate;
mod plumbing;
mod release;
mod serve;
mod signer;
mod status;
mod verify;

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::cli::{Cli, Command};
use crate::config::{Config, ConfigError};
use std::time::SystemTime;

use crate::arch::Arch;
use crate::channel::anchor::Anchor;
use crate::publisher::Publisher;
use crate::signing::Keyring;
use crate::store::Store;
use crate::ui::Ui;
use std::path::PathBuf;

/// How a command that ran to its end went.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// It ran, and found problems (exit status 1).
    Problems,
}

/// Usage and configuration errors exit with 2, everything else with 1.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err.chain().any(|e| {
        e.downcast_ref::<ConfigError>().is_some() || e.downcast_ref::<UsageError>().is_some()
    }) {
        2
    } else {
        1
    }
}

/// How `main` shows an error: the chain on one line, each cause once
/// ([`crate::errors::chain`], the one rule).
pub fn render_error(err: &anyhow::Error) -> String {
    crate::errors::chain(err.as_ref())
}

/// A mistake in how the command was called.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

pub fn run(cli: Cli) -> Result<Outcome> {
    let name = cli.command.name();
    if crate::cli::WITHOUT_CONFIG.contains(&name) {
        for (given, option) in [
            (cli.config.is_some(), "--config"),
            (cli.channel.is_some(), "--channel"),
            (cli.component.is_some(), "--component"),
        ] {
            if given {
                return Err(UsageError(format!(
                    "{name} reads no configuration: {option} has no effect here, leave it out"
                ))
                .into());
            }
        }
    }
    let ui = Ui::new(cli.quiet, cli.verbose).with_json(cli.json);
    let ctx = Ctx {
        ui,
        json: cli.json,
        config_path: cli.config,
        channel: cli.channel,
        component: cli.component,
    };
    match cli.command {
        Command::Release(args) => release::run(&ctx, args),
        Command::Status(args) => status::run(&ctx, args),
        Command::Yank(args) => operate::yank(&ctx, args),
        Command::Unyank(args) => operate::unyank(&ctx, args),
        Command::Rollback(args) => operate::rollback(&ctx, args),
        Command::Refresh(args) => operate::refresh(&ctx, args),
        Command::Promote(args) => operate::promote(&ctx, args),
        Command::Mirror(args) => operate::mirror(&ctx, args),
        Command::Repair(args) => operate::repair(&ctx, args),
        Command::Adopt(args) => operate::adopt(&ctx, args),
        Command::Verify(args) => verify::run(&ctx, args),
        Command::Serve(args) => serve::run(&ctx, args),
        Command::Keygen(args) => plumbing::keygen(&ctx, args),
        Command::Sign(args) => plumbing::sign(&ctx, args),
        Command::Sums(args) => plumbing::sums(&ctx, args),
        Command::Inspect(args) => plumbing::inspect(&ctx, args),
        Command::DeviceFiles(args) => devices::device_files(&ctx, args),
        Command::Completions(args) => docs::completions(args),
        Command::Man(args) => docs::man(&ctx, args),
    }
}

pub(crate) struct Ctx {
    pub ui: Ui,
    pub json: bool,
    pub config_path: Option<std::path::PathBuf>,
    pub channel: Option<String>,
    /// `--component`: the stream to work on (absent: the OS).
    pub component: Option<String>,
}

impl Ctx {
    /// The configuration as written, no channel chosen (promote picks two).
    fn config_unselected(&self) -> Result<Config> {
        let config = Config::load(self.config_path.as_deref())?;
        // Every command reads the transfer files; a wrong path is a config mistake.
        if !config.transfers.dir.is_dir() {
            return Err(UsageError(format!(
                "{}: `transfers.dir`: {} is not a directory (the device's *.transfer files)",
                config.file.display(),
                config.transfers.dir.display()
            ))
            .into());
        }
        // Every command checks signatures with it; only the example key
        // setup creates it on first use.
        let s = &config.signing;
        if !s.keyring.exists() && !s.generate_example_key {
            return Err(UsageError(format!(
                "{}: `signing.keyring`: {} does not exist (the keyring devices install; `sysupdate-publish keygen` writes one)",
                config.file.display(),
                s.keyring.display()
            ))
            .into());
        }
        Ok(config)
    }

    /// The configuration, with the `--channel` chosen.
    fn config(&self) -> Result<Config> {
        let mut config = self.config_unselected()?;
        config.select(self.channel.as_deref())?;
        Ok(config)
    }

    /// Prints the JSON document when --json was given. Every document
    /// carries `"schema"` (docs/json.md); the ones that do not have it
    /// themselves get it here, first.
    fn emit(&self, value: &impl Serialize) -> Result<()> {
        #[derive(Serialize)]
        struct Doc<'a, T: Serialize> {
            schema: u32,
            #[serde(flatten)]
            body: &'a T,
        }
        if self.json {
            let has_schema = serde_json::to_value(value)
                .context("serializing the report")?
                .get("schema")
                .is_some();
            let s = if has_schema {
                serde_json::to_string_pretty(value)
            } else {
                serde_json::to_string_pretty(&Doc {
                    schema: crate::publisher::report::SCHEMA,
                    body: value,
                })
            }
            .context("serializing the report")?;
            crate::ui::stdout_line(&s);
        }
        Ok(())
    }
}

/// Test-only: overrides the signature creation time (RFC 3339), so tests can
/// make signatures that have already expired. Never set it in production.
pub const SIGNING_TIME_ENV: &str = "SYSUPDATE_PUBLISH_SIGNING_TIME";

/// The signing time: now, unless the documented test override is set.
pub(crate) fn signing_time() -> Result<SystemTime> {
    match std::env::var(SIGNING_TIME_ENV) {
        Ok(s) => humantime::parse_rfc3339_weak(&s)
            .map_err(|e| UsageError(format!("{SIGNING_TIME_ENV}={s:?}: {e}")).into()),
        Err(_) => Ok(SystemTime::now()),
    }
}

/// `--component NAME` names a `sysupdate.NAME.d` beside `[transfers] dir`:
/// a typo is a usage error before anything is read.
pub(crate) fn check_component(ctx: &Ctx, config: &Config) -> Result<()> {
    let Some(name) = ctx.component.as_deref() else {
        return Ok(());
    };
    let known = crate::transfer::component::list(&config.transfers.dir)?;
    if known.iter().any(|k| k == name) {
        return Ok(());
    }
    Err(UsageError(
        crate::transfer::TransferError::UnknownComponent {
            name: name.to_owned(),
            dir: crate::transfer::component::dir_of(&config.transfers.dir, Some(name)),
            known,
        }
        .to_string(),
    )
    .into())
}

/// The configured channel's publisher.
pub(crate) fn publisher<'a>(
    ctx: &'a Ctx,
    config: &'a Config,
    store: &'a dyn Store,
    keyring: &'a Keyring,
) -> Result<Publisher<'a>> {
    check_component(ctx, config)?;
    Ok(Publisher {
        store,
        keyring,
        transfers_dir: &config.transfers.dir,
        component: ctx.component.as_deref(),
        specifiers: &config.specifiers,
        keep: config.channel.keep,
        signature_lifetime: config.channel.signature_lifetime,
        expiry_warning: config.channel.expiry_warning,
        anchor: Anchor::for_store(&store.describe()),
        now: signing_time()?,
        events: &ctx.ui,
    })
}

/// `SYSTEM=PATH` pairs of `--output`, one per arch.
pub(crate) fn parse_outputs(outputs: &[String]) -> Result<Vec<(Arch, PathBuf)>> {
    let mut seen: Vec<(Arch, PathBuf)> = Vec::new();
    for o in outputs {
        let (sys, path) = o.split_once('=').ok_or_else(|| {
            UsageError(format!(
                "--output {o:?}: expected SYSTEM=PATH, e.g. x86_64-linux=./result"
            ))
        })?;
        let arch = Arch::parse(sys).map_err(|e| UsageError(format!("--output {o:?}: {e}")))?;
        if seen.iter().any(|(a, _)| *a == arch) {
            return Err(UsageError(format!("--output: {arch} given twice")).into());
        }
        let dir = PathBuf::from(path);
        // Found now, before keys, locks and reads: a typo, not a failure.
        if !dir.exists() {
            return Err(
                UsageError(format!("--output {o}: {} does not exist", dir.display())).into(),
            );
        }
        if !dir.is_dir() {
            return Err(UsageError(format!(
                "--output {o}: {} is a file, not a directory; --output takes SYSTEM=DIRECTORY (the build output holding the payloads)",
                dir.display()
            ))
            .into());
        }
        seen.push((arch, dir));
    }
    Ok(seen)
}

/// An input directory named on the command line: a typo is a usage error
/// (exit 2), found before any work.
pub(crate) fn input_dir(option: &str, path: &Path) -> Result<(), UsageError> {
    if path.is_dir() {
        return Ok(());
    }
    Err(UsageError(if path.exists() {
        format!("{option} {}: is a file, not a directory", path.display())
    } else {
        format!("{option} {}: no such directory", path.display())
    }))
}

/// An input file named on the command line, as [`input_dir`].
pub(crate) fn input_file(option: &str, path: &Path) -> Result<(), UsageError> {
    if path.is_file() {
        return Ok(());
    }
    Err(UsageError(if path.exists() {
        format!("{option} {}: is not a regular file", path.display())
    } else {
        format!("{option} {}: no such file", path.display())
    }))
}

/// Writes a file that must not exist yet.
pub(crate) fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// Writes a public file (a manifest or signature) atomically (temp + fsync +
/// rename) so a crash never leaves half of it. Mode 0644 like the payloads:
/// a temp file's 0600 would make a web server running as another user
/// answer 403.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("renaming into {}", path.display()))?;
    Ok(())
}

/// Formats a byte count for people.
/// What systemd ignores or changes in the device's transfer files for one
/// arch (`file:line: note`), for the reports of `status` and `verify`.
pub(crate) fn transfer_warnings(view: &crate::channel::state::ArchView) -> Vec<String> {
    view.transfers
        .iter()
        .flat_map(|t| t.warnings.iter().map(ToString::to_string))
        .collect()
}

pub(crate) fn human_bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

pub(crate) fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}
