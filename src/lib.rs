//! sysupdate-publish: turn per-architecture build outputs into signed
//! systemd-sysupdate channels.

pub mod arch;
pub mod signing;
