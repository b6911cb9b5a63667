//! `completions` and `man`: the command line describes itself, so shells and
//! `man` always match the binary (the nix package installs both).

use std::path::Path;

use anyhow::{Context, Result};

use super::{Ctx, Outcome};
use crate::cli::{CompletionsArgs, ManArgs};

pub(super) fn completions(args: CompletionsArgs) -> Result<Outcome> {
    let mut cmd = crate::cli::command();
    clap_complete::generate(
        args.shell,
        &mut cmd,
        "sysupdate-publish",
        &mut std::io::stdout(),
    );
    Ok(Outcome::Success)
}

/// One page for the program and one per command (`sysupdate-publish-release.1`, …).
pub(super) fn man(ctx: &Ctx, args: ManArgs) -> Result<Outcome> {
    let out: &Path = &args.out;
    if out.exists() && !out.is_dir() {
        return Err(super::UsageError(format!(
            "--out {}: is a file, not a directory",
            out.display()
        ))
        .into());
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let cmd = crate::cli::command();
    let mut pages = 0;
    write_pages(&cmd, None, out, &mut pages)?;
    ctx.ui
        .report(format!("wrote {pages} man page(s) to {}", out.display()));
    ctx.emit(&serde_json::json!({ "dir": out, "pages": pages }))?;
    Ok(Outcome::Success)
}

fn write_pages(
    cmd: &clap::Command,
    parent: Option<&str>,
    out: &Path,
    pages: &mut usize,
) -> Result<()> {
    let (name, bin) = match parent {
        Some(p) => (
            format!("{p}-{}", cmd.get_name()),
            format!("{p} {}", cmd.get_name()),
        ),
        None => (cmd.get_name().to_string(), cmd.get_name().to_string()),
    };
    // Subcommand pages carry their full name, as `git-commit(1)` does.
    let page = cmd.clone().name(name.clone()).bin_name(bin);
    let mut bytes = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut bytes)
        .with_context(|| format!("rendering the man page of {name}"))?;
    let path = out.join(format!("{name}.1"));
    std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    *pages += 1;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        write_pages(sub, Some(&name), out, pages)?;
    }
    Ok(())
}
