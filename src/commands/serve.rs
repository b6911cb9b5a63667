//! `serve`: a directory store over HTTP(S).

use anyhow::Result;

use super::{Ctx, Outcome, UsageError};
use crate::cli::ServeArgs;
use crate::serve::{self, Options};
use crate::store::StoreLocation;

pub(crate) fn run(ctx: &Ctx, args: ServeArgs) -> Result<Outcome> {
    let root = match args.dir {
        Some(dir) => dir,
        None => match ctx.config()?.channel.store {
            StoreLocation::Dir(dir) => dir,
            StoreLocation::S3 { .. } | StoreLocation::WebDav { .. } => {
                return Err(UsageError(
                    "the channel's store is S3 or WebDAV, which serve themselves: `serve DIR` serves a directory store".into(),
                )
                .into())
            }
        },
    };
    if !root.is_dir() {
        return Err(UsageError(format!(
            "{} is not a directory: nothing published there yet? (`release` creates it)",
            root.display()
        ))
        .into());
    }
    let tls = args.tls_cert.zip(args.tls_key);
    let scheme = if tls.is_some() { "https" } else { "http" };
    let opts = Options {
        root: root.clone(),
        listen: args.listen,
        tls,
    };
    serve::serve(&opts, &ctx.ui, |addr| {
        // The one line on stdout: scripts read the address from it.
        println!("{scheme}://{addr}/");
        ctx.ui.info(format!(
            "serving {} at {scheme}://{addr}/ (Ctrl-C stops)",
            root.display()
        ));
    })?;
    Ok(Outcome::Success)
}
