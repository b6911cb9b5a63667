//! sysupdate-publish: turn per-architecture build outputs into signed
//! systemd-sysupdate channels.
//!
//! `../shared/reference/sysupdate-client.md` (systemd 254–262, read from the
//! source) is the contract every module here implements.

pub mod arch;
pub mod channel;
pub mod cli;
pub mod commands;
pub mod compress;
pub mod config;
pub mod fault;
pub mod hash;
pub mod http;
pub mod ledger;
pub mod manifest;
pub mod nix;
pub mod operations;
pub mod pattern;
pub mod payload;
pub mod sdsyntax;
pub mod signing;
pub mod stage;
pub mod store;
pub mod transfer;
pub mod ui;
pub mod version;
