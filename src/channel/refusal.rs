//! Why a write was refused before anything was written. Tests match on the
//! variants; people read the message, which names the arch, version or file
//! at fault and what to do.

use thiserror::Error;

use super::problem::Problem;
use crate::arch::Arch;
use crate::ledger::Action;
use crate::version::Version;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("nothing to publish: no architecture given")]
    NoArchitectures,
    #[error("{second}: the build output {path} is also given for {first}; each architecture needs its own build")]
    SameOutput {
        first: Arch,
        second: Arch,
        path: String,
    },
    #[error("{arch}: {name} matches no transfer source pattern ({patterns}); fix the build output or the transfer files")]
    Unmatched {
        arch: Arch,
        /// What the build output calls it, when compression renames it.
        name: String,
        patterns: String,
    },
    #[error("{arch}: {explanation}")]
    OldClientConflict { arch: Arch, explanation: String },
    #[error("{arch}: the build output holds several versions ({}); publish one version at a time", join(.versions))]
    SeveralVersions { arch: Arch, versions: Vec<String> },
    #[error("{arch}: version {version} is incomplete: no file for transfer(s) {} (devices would never install it)", .missing.join(", "))]
    Incomplete {
        arch: Arch,
        version: String,
        missing: Vec<String>,
    },
    #[error("{arch}: version {version} has several files for transfer {transfer}: {}", join(.files))]
    Duplicates {
        arch: Arch,
        version: String,
        transfer: String,
        files: Vec<String>,
    },
    #[error("{arch}: invalid version {version:?}: {error}")]
    InvalidVersion {
        arch: Arch,
        version: String,
        error: String,
    },
    #[error("architectures disagree on the version: {first} has {first_version}, {second} has {second_version}")]
    ArchesDisagree {
        first: Arch,
        first_version: Version,
        second: Arch,
        second_version: Version,
    },
    #[error("--version {wanted} does not match the payloads, which are version {found}")]
    VersionMismatch { wanted: String, found: Version },
    #[error("{arch}: version {version} compares equal to the published {published}; devices would treat them as one version. Use a new version number")]
    EqualVersion {
        arch: Arch,
        version: Version,
        published: Version,
    },
    #[error("{arch}: version {version} is already published with different content: {}. Published payloads never change; publish a new version", join(.changes))]
    ChangedContent {
        arch: Arch,
        version: Version,
        changes: Vec<String>,
    },
    #[error("{arch}: version {version} is older than the published {newest}; devices would not install it. Use a higher version, or --allow-downgrade")]
    Downgrade {
        arch: Arch,
        version: Version,
        newest: Version,
    },
    #[error("version {version} was withdrawn ({action} at {time}{}); {how}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Withdrawn {
        version: Version,
        action: Action,
        time: String,
        reason: Option<String>,
        /// The way to bring it back.
        how: String,
    },
    #[error("{arch}: {name} was published before (history entry #{seq}) with sha256 {recorded}; these bytes hash to {found}. Caches keep a published name's bytes for a year, so a name never gets other bytes: publish a new version")]
    NameReused {
        arch: Arch,
        name: String,
        seq: u64,
        recorded: String,
        found: String,
    },
    #[error("{arch}: {name} exists in {store} but is not published and has other content (left by an interrupted release of a different build?). Delete it, or publish a new version")]
    Leftover {
        arch: Arch,
        name: String,
        store: String,
    },
    #[error("the channel has problems that must be fixed before any write:\n{}", problems.iter().map(|p| format!("  - {p}: {}", p.fix())).collect::<Vec<_>>().join("\n"))]
    Problems { problems: Vec<Problem> },
    #[error("--arch {0}: the channel has no such architecture")]
    NoSuchArch(String),
    #[error("{arch}: version {version} is not published")]
    NotPublishedOn { arch: Arch, version: Version },
    #[error("version {0} is not published on any architecture")]
    NotPublished(Version),
    #[error("{arch}: {version} is the only published version; withdrawing it would leave devices nothing to install. Publish a fixed version instead")]
    OnlyVersion { arch: Arch, version: Version },
    #[error("version {0} is not withdrawn (see `status` for the history)")]
    NotWithdrawn(Version),
    #[error("{arch}: cannot bring back {version}: {why}; republish it with `sysupdate-publish release --unyank --allow-downgrade --output {arch}=PATH`")]
    NotRestorable {
        arch: Arch,
        version: Version,
        why: String,
    },
    #[error("the history records no files for version {0}")]
    NoRecord(Version),
    #[error("{arch}: version {version} is not published and the history has no record of its files; publish it first with `sysupdate-publish release --allow-downgrade --output {arch}=PATH`")]
    NeverPublished { arch: Arch, version: Version },
    #[error("nothing is published in {0} yet")]
    NothingPublished(String),
    #[error("{arch}: {name} is listed for {version} but the given build output has no file with the recorded sha256 {sha256}")]
    RepairSourceMissing {
        arch: Arch,
        version: String,
        name: String,
        sha256: String,
    },
    #[error("the source channel {channel} has problems; fix them there first:\n{}", problems.iter().map(|p| format!("  - {p}: {}", p.fix())).collect::<Vec<_>>().join("\n"))]
    SourceProblems {
        channel: String,
        problems: Vec<Problem>,
    },
    #[error("version {version} is not published on channel {channel}")]
    NotOnChannel { version: Version, channel: String },
    #[error("version {version} was published on {channel} at {since}, less than {soak} ago: promote it after {ready}")]
    TooRecent {
        version: Version,
        channel: String,
        since: String,
        soak: String,
        ready: String,
    },
    #[error(transparent)]
    Preflight(#[from] crate::preflight::Refused),
    #[error("{0}")]
    Other(String),
}

fn join(v: &[String]) -> String {
    const SHOWN: usize = 8;
    if v.len() <= SHOWN {
        return v.join(", ");
    }
    format!("{}, … and {} more", v[..SHOWN].join(", "), v.len() - SHOWN)
}
