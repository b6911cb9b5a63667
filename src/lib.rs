//! sysupdate-publish: turn per-architecture build outputs into signed
//! systemd-sysupdate channels.
//!
//! `docs/sysupdate-client.md` (systemd 254–262, read from the
//! source) is the contract every module here implements.
//!
//! Layers, from the bottom up (a module never imports one above it):
//! - formats: `arch`, `version`, `pattern`, `transfer`, `manifest` (with
//!   the layout's file names), `hash`, `compress`, `signing`, `image`
//!   (what a payload holds: PE, GPT, file system);
//! - payloads: `payload` (identity: stamp, digest), `stamps` (what earlier
//!   runs learned of unchanged files), `stage`, `nix`,
//!   `preflight` (content checks on staged payloads);
//! - hosting: `store` (one trait; directory, S3, WebDAV, memory), `http`,
//!   `serve` (a directory store over HTTP(S), as devices need it);
//! - channel: `ledger` (the history), `channel` (read + verify +
//!   cross-check, problems, planning, refusals, device view);
//! - publisher: `publisher`, the commit protocol, once;
//! - app: `config`, `cli`, `commands`, `ui`.
//!
//! `progress`, `errors` and `fault` are plumbing every layer may use.

pub mod arch;
pub mod channel;
pub mod cli;
pub mod commands;
pub mod compress;
pub mod config;
pub mod errors;
pub mod fault;
pub mod hash;
pub mod http;
pub mod image;
pub mod inspect;
pub mod ledger;
pub mod manifest;
pub mod nix;
pub mod pattern;
pub mod payload;
pub mod preflight;
pub mod progress;
pub mod publisher;
pub mod sdsyntax;
pub mod serve;
pub mod signing;
pub mod stage;
pub mod stamps;
pub mod store;
pub mod tarball;
pub mod transfer;
pub mod ui;
pub mod version;
