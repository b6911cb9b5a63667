//! The one way to read a channel: every arch's manifest and signature, the
//! history, and what is stored, verified and cross-checked. The history is
//! the source of truth: its newest entry names exactly the manifest every
//! arch serves and the size of every payload listed, so anything the
//! hosting did behind the publisher's back shows as a typed [`Problem`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, SystemTime};

use sha2::Digest as _;
use thiserror::Error;

use super::anchor::Remembered;
use super::problem::Problem;
use super::source::{Source, SourceError};
use crate::arch::Arch;
use crate::hash;
use crate::ledger::{ArchRecord, Entry, Ledger};
use crate::manifest::{self, Manifest, PENDING_SIGNATURE, SIGNATURE};
use crate::progress::Events;
use crate::signing::{Keyring, SignatureInfo, VerifyError};
use crate::store::FileInfo;
use crate::transfer::{self, Stream, Transfer, VersionSet};
use crate::version::Version;

#[derive(Debug, Error)]
pub enum ReadError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{arch}: {source}")]
    Transfers {
        arch: Arch,
        source: Box<transfer::TransferError>,
    },
}

/// What the reader needs besides the source.
pub struct ReadOptions<'a> {
    pub keyring: &'a Keyring,
    pub transfers_dir: &'a Path,
    /// The stream read as the channel's versions: the OS (`None`) or a
    /// component; the other streams' names are told apart and left alone.
    pub component: Option<&'a str>,
    /// `[specifiers]`: what `%w` and the like expand to.
    pub specifiers: &'a transfer::Specifiers,
    pub now: SystemTime,
    /// Signatures expiring within this are reported.
    pub expiry_warning: Duration,
    /// Hash every listed payload instead of comparing sizes only.
    pub deep: bool,
    /// The head this machine remembers for the channel.
    pub remembered: Option<Remembered>,
    pub events: &'a dyn Events,
}

/// How the signature of an arch's manifest checked out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signature {
    /// Nothing is published in this arch directory.
    None,
    Valid(SignatureInfo),
    /// Ours, but expired: devices refuse it; any write re-signs it.
    Expired(SignatureInfo),
    /// Verifies only with the signature a remote commit parks while it
    /// switches the manifest: that commit was interrupted.
    Pending(SignatureInfo),
    Missing,
    Invalid(String),
}

impl Signature {
    pub fn info(&self) -> Option<&SignatureInfo> {
        match self {
            Signature::Valid(i) | Signature::Expired(i) | Signature::Pending(i) => Some(i),
            _ => None,
        }
    }
}

/// One arch directory as read.
#[derive(Clone, Debug)]
pub struct ArchView {
    pub arch: Arch,
    /// The selected stream's transfers (see [`ReadOptions::component`]).
    pub transfers: Vec<Transfer>,
    /// SHA-256 (hex) of the served SHA256SUMS, when there is one.
    pub manifest_sha256: Option<String>,
    /// The served manifest (empty when absent or malformed).
    pub manifest: Manifest,
    pub signature: Signature,
    /// Payloads stored (uploaded, named by a manifest or not).
    pub stored: BTreeMap<String, FileInfo>,
    /// The listed payloads devices can fetch, with sizes.
    pub served: BTreeMap<String, FileInfo>,
    /// Published versions of the selected stream, newest first.
    pub versions: Vec<VersionSet>,
    /// Listed names no stream's transfer matches.
    pub unmatched: Vec<String>,
    /// The other streams (the OS, components) and their published versions.
    pub others: Vec<StreamVersions>,
    /// Listed names that belong to another stream: a write on the selected
    /// one lists them unchanged.
    pub foreign: BTreeSet<String>,
}

/// Another stream's published versions in one arch.
#[derive(Clone, Debug)]
pub struct StreamVersions {
    pub stream: Stream,
    /// Newest first.
    pub versions: Vec<VersionSet>,
}

impl ArchView {
    /// Published versions, newest first.
    pub fn versions(&self) -> Vec<Version> {
        self.versions
            .iter()
            .map(|v| Version::published(&v.version))
            .collect()
    }

    pub fn set(&self, version: &Version) -> Option<&VersionSet> {
        self.versions
            .iter()
            .find(|s| Version::published(&s.version) == *version)
    }

    /// The version a published name belongs to, in whichever stream.
    pub fn version_of(&self, name: &str) -> Option<Version> {
        transfer::version_of(&self.transfers, name)
            .or_else(|| {
                self.others
                    .iter()
                    .find_map(|o| transfer::version_of(&o.stream.transfers, name))
            })
            .map(|v| Version::published(&v))
    }

    /// The streams other than the selected one.
    pub fn other_streams(&self) -> Vec<Stream> {
        self.others.iter().map(|o| o.stream.clone()).collect()
    }
}

/// A channel as read: arches, history, and everything wrong with them.
#[derive(Clone, Debug)]
pub struct Channel {
    pub location: String,
    /// The stream read as the channel's versions (absent: the OS).
    pub component: Option<String>,
    pub arches: BTreeMap<Arch, ArchView>,
    /// The verified history (empty when absent or unreadable).
    pub history: Ledger,
    /// The history file as read, for the conditional write of the next entry.
    pub history_bytes: Option<Vec<u8>>,
    pub problems: Vec<Problem>,
}

impl Channel {
    /// The problems that stop every write.
    pub fn blocking(&self) -> Vec<&Problem> {
        self.problems.iter().filter(|p| p.blocks_writes()).collect()
    }

    /// The write the history names that is not committed everywhere.
    pub fn interrupted(&self) -> Option<&Problem> {
        self.problems
            .iter()
            .find(|p| matches!(p, Problem::Interrupted { .. }))
    }

    /// The newest entry, when it records a state: what every arch must serve.
    pub fn head_state(&self) -> Option<&BTreeMap<Arch, ArchRecord>> {
        self.history.head().and_then(|e| e.state.as_ref())
    }

    /// The record of one arch in the head state.
    pub fn record(&self, arch: Arch) -> Option<&ArchRecord> {
        self.head_state().and_then(|s| s.get(&arch))
    }

    /// Whether every arch serves the head's manifest, none through a
    /// parked pending signature: the head's write is finished.
    pub fn serves_head(&self) -> bool {
        self.head_state().is_some_and(|state| {
            state.iter().all(|(arch, r)| {
                self.arches.get(arch).is_some_and(|v| {
                    v.manifest_sha256.as_deref() == Some(r.manifest.as_str())
                        && !matches!(v.signature, Signature::Pending(_))
                })
            })
        })
    }

    /// Whether nothing was ever published here.
    pub fn is_empty(&self) -> bool {
        self.history.is_empty() && self.arches.values().all(|a| a.manifest_sha256.is_none())
    }
}

/// Reads, verifies and cross-checks the whole channel.
pub fn read(source: &dyn Source, opts: &ReadOptions) -> Result<Channel, ReadError> {
    let mut problems = Vec::new();
    let history_bytes = source.history()?;
    let history = match &history_bytes {
        None => Ledger::default(),
        Some(b) => Ledger::parse(b, opts.keyring).unwrap_or_else(|e| {
            problems.push(Problem::HistoryUnreadable {
                error: e.to_string(),
            });
            Ledger::default()
        }),
    };
    let unreadable = !problems.is_empty();
    if !unreadable {
        if let Some(p) = opts.remembered.as_ref().and_then(|r| r.check(&history)) {
            problems.push(p);
        }
    }

    let mut names: BTreeSet<Arch> = source.arches()?.into_iter().collect();
    if let Some(state) = history.head().and_then(|e| e.state.as_ref()) {
        names.extend(state.keys().copied());
    }
    let mut arches = BTreeMap::new();
    for arch in names {
        arches.insert(arch, read_arch(source, arch, opts, &mut problems)?);
    }

    let mut channel = Channel {
        location: source.describe(),
        component: opts.component.map(str::to_owned),
        arches,
        history,
        history_bytes,
        problems,
    };
    if !unreadable {
        cross_check(&mut channel, opts.remembered.as_ref());
    }
    check_payloads(source, &mut channel, opts)?;
    check_published(&mut channel, opts);
    Ok(channel)
}

fn read_arch(
    source: &dyn Source,
    arch: Arch,
    opts: &ReadOptions,
    problems: &mut Vec<Problem>,
) -> Result<ArchView, ReadError> {
    let mut streams = load_streams(opts.transfers_dir, opts.specifiers, opts.component, arch)?;
    let transfers = streams.remove(0).transfers;
    let stored = source.stored(arch)?;
    let mut view = ArchView {
        arch,
        transfers,
        others: streams
            .into_iter()
            .map(|stream| StreamVersions {
                stream,
                versions: vec![],
            })
            .collect(),
        foreign: BTreeSet::new(),
        manifest_sha256: None,
        manifest: Manifest::default(),
        signature: Signature::None,
        stored,
        served: BTreeMap::new(),
        versions: vec![],
        unmatched: vec![],
    };
    let Some(bytes) = source.get(arch, manifest::MANIFEST)? else {
        return Ok(view);
    };
    view.manifest_sha256 = Some(hash::to_hex(&sha2::Sha256::digest(&bytes).into()));
    view.signature = match source.get(arch, SIGNATURE)? {
        Some(sig) => match verify(opts.keyring, &bytes, &sig, opts.now) {
            Ok(s) => s,
            Err(e) => pending(source, arch, &bytes, opts)?
                .unwrap_or_else(|| Signature::Invalid(e.to_string())),
        },
        None => pending(source, arch, &bytes, opts)?.unwrap_or(Signature::Missing),
    };
    match &view.signature {
        Signature::Missing => problems.push(Problem::SignatureMissing { arch }),
        Signature::Invalid(error) => problems.push(Problem::SignatureInvalid {
            arch,
            error: error.clone(),
        }),
        _ => {}
    }
    match manifest::parse(&bytes) {
        Ok(m) => view.manifest = m,
        Err(e) => {
            problems.push(Problem::ManifestMalformed {
                arch,
                error: e.to_string(),
            });
            return Ok(view);
        }
    }
    let names: Vec<&str> = view.manifest.entries.keys().map(String::as_str).collect();
    let c = transfer::classify(&view.transfers, names.iter().copied());
    view.versions = c.versions;
    let mut owner: BTreeMap<&str, String> = names
        .iter()
        .filter(|n| !c.unmatched.iter().any(|u| u == *n))
        .map(|n| (*n, owner_label(&view.transfers, None, n)))
        .collect();
    for other in &mut view.others {
        let oc = transfer::classify(&other.stream.transfers, names.iter().copied());
        for name in names
            .iter()
            .filter(|n| !oc.unmatched.iter().any(|u| u == *n))
        {
            let label = owner_label(
                &other.stream.transfers,
                other.stream.component.as_deref(),
                name,
            );
            if let Some(first) = owner.get(name) {
                problems.push(Problem::NameCollision {
                    arch,
                    file: name.to_string(),
                    first: first.clone(),
                    second: label.clone(),
                });
            }
            owner.entry(name).or_insert(label);
            view.foreign.insert(name.to_string());
        }
        other.versions = oc.versions;
    }
    view.unmatched = c
        .unmatched
        .into_iter()
        .filter(|n| !view.foreign.contains(n))
        .collect();
    view.served = source.served(arch, &names)?;
    Ok(view)
}

/// "transfer T of STREAM", for the stream's first transfer matching `name`.
fn owner_label(transfers: &[Transfer], component: Option<&str>, name: &str) -> String {
    let t = transfers
        .iter()
        .find(|t| t.match_source(name).is_some())
        .map(|t| t.name.as_str())
        .unwrap_or("?");
    format!("transfer {t} of {}", transfer::component::label(component))
}

/// Every stream's transfer files with `%a` expanded for one architecture,
/// and the other specifiers as the config gives them; `component`'s stream
/// first (see [`transfer::component::load_streams`]).
pub fn load_streams(
    dir: &Path,
    specifiers: &transfer::Specifiers,
    component: Option<&str>,
    arch: Arch,
) -> Result<Vec<Stream>, ReadError> {
    transfer::component::load_streams(dir, &specifiers.for_arch(arch.systemd()), component).map_err(
        |source| ReadError::Transfers {
            arch,
            source: Box::new(source),
        },
    )
}

/// The transfers of `component`'s stream for one architecture.
pub fn load_transfers(
    dir: &Path,
    specifiers: &transfer::Specifiers,
    component: Option<&str>,
    arch: Arch,
) -> Result<Vec<Transfer>, ReadError> {
    let mut streams = load_streams(dir, specifiers, component, arch)?;
    Ok(streams.remove(0).transfers)
}

/// A signature as devices would judge it now; an expired one of ours is
/// still ours (the next write re-signs it), so it is told apart.
fn verify(
    keyring: &Keyring,
    bytes: &[u8],
    sig: &[u8],
    now: SystemTime,
) -> Result<Signature, VerifyError> {
    match keyring.verify(bytes, sig, now) {
        Ok(info) => Ok(Signature::Valid(info)),
        // Verify again at a time it was valid to learn who signed it.
        Err(VerifyError::Expired { .. }) => keyring
            .verify(bytes, sig, SystemTime::UNIX_EPOCH + Duration::from_secs(1))
            .map(Signature::Expired),
        Err(e) => Err(e),
    }
}

fn pending(
    source: &dyn Source,
    arch: Arch,
    manifest: &[u8],
    opts: &ReadOptions,
) -> Result<Option<Signature>, ReadError> {
    Ok(source
        .get(arch, PENDING_SIGNATURE)?
        .and_then(|sig| verify(opts.keyring, manifest, &sig, opts.now).ok())
        .and_then(|s| s.info().cloned())
        .map(Signature::Pending))
}

/// Checks the invariant: the head names exactly what every arch serves. An
/// arch that serves the previous entry's state is an interrupted write, or
/// (when this machine saw every arch serve the head) an older manifest the
/// hosting put back.
fn cross_check(ch: &mut Channel, remembered: Option<&Remembered>) {
    let served: Vec<Arch> = ch
        .arches
        .values()
        .filter(|a| a.manifest_sha256.is_some())
        .map(|a| a.arch)
        .collect();
    let Some(head) = ch.history.head() else {
        if !served.is_empty() {
            ch.problems.push(Problem::HistoryMissing { arches: served });
        }
        return;
    };
    let Some(state) = &head.state else {
        ch.problems
            .push(Problem::HistoryWithoutState { seq: head.seq });
        return;
    };
    let prev = ch.history.previous_state();
    let prev_of = |arch: Arch| -> Option<&str> {
        prev.and_then(|p| p.state.as_ref())
            .and_then(|s| s.get(&arch))
            .map(|r| r.manifest.as_str())
    };
    let mut problems = Vec::new();
    let (mut committed, mut pending) = (Vec::new(), Vec::new());
    for view in ch.arches.values() {
        let arch = view.arch;
        let want = state.get(&arch).map(|r| r.manifest.as_str());
        let served = view.manifest_sha256.as_deref();
        let changed_by_head = want != prev_of(arch);
        if served == want {
            if matches!(view.signature, Signature::Pending(_)) {
                pending.push(arch);
            } else if changed_by_head && want.is_some() {
                committed.push(arch);
            }
            continue;
        }
        if want.is_some() && changed_by_head && served == prev_of(arch) {
            pending.push(arch);
            continue;
        }
        problems.push(match served {
            None => Problem::ManifestMissing {
                arch,
                head_seq: head.seq,
            },
            Some(s) => match entry_serving(&ch.history, arch, s) {
                Some(e) => Problem::ManifestRolledBack {
                    arch,
                    served_seq: e.seq,
                    head_seq: head.seq,
                },
                None => Problem::ManifestUnknown {
                    arch,
                    head_seq: head.seq,
                },
            },
        });
    }
    let seen_complete = remembered
        .is_some_and(|r| r.complete && r.seq == head.seq && r.hash == ch.history.head_hash());
    if seen_complete {
        for arch in pending.drain(..) {
            let view = &ch.arches[&arch];
            problems.push(match (&view.signature, &view.manifest_sha256, prev) {
                (_, None, _) => Problem::ManifestMissing {
                    arch,
                    head_seq: head.seq,
                },
                // The manifest is the head's; only its signature is parked.
                (Signature::Pending(_), _, _) | (_, _, None) => Problem::ManifestRolledBack {
                    arch,
                    served_seq: head.seq,
                    head_seq: head.seq,
                },
                (_, Some(_), Some(p)) => Problem::ManifestRolledBack {
                    arch,
                    served_seq: p.seq,
                    head_seq: head.seq,
                },
            });
        }
    }
    if !pending.is_empty() {
        ch.problems.push(Problem::Interrupted {
            seq: head.seq,
            action: head.action,
            versions: head.versions.clone(),
            committed,
            pending,
        });
    }
    ch.problems.extend(problems);
}

fn entry_serving<'a>(ledger: &'a Ledger, arch: Arch, manifest: &str) -> Option<&'a Entry> {
    ledger.entry_serving(arch, manifest)
}

/// Every payload the head names is there with the recorded size (and,
/// deep, hash). An arch not yet switched to the head (interrupted write)
/// is checked against what was uploaded for it.
fn check_payloads(
    source: &dyn Source,
    ch: &mut Channel,
    opts: &ReadOptions,
) -> Result<(), ReadError> {
    let mut problems = Vec::new();
    for view in ch.arches.values() {
        let arch = view.arch;
        let at_head = ch
            .record(arch)
            .is_some_and(|r| view.manifest_sha256.as_deref() == Some(r.manifest.as_str()));
        let expected: Vec<(String, Option<(String, u64)>)> = match ch.record(arch) {
            Some(r) => r
                .files
                .iter()
                .map(|(n, f)| (n.clone(), Some((f.sha256.clone(), f.size))))
                .collect(),
            // No record to hold it to: what is listed must at least be there.
            None => view
                .manifest
                .entries
                .iter()
                .map(|(n, d)| (n.clone(), Some((hash::to_hex(d), u64::MAX))))
                .collect(),
        };
        let found = if at_head || ch.record(arch).is_none() {
            &view.served
        } else {
            &view.stored
        };
        let served = at_head || ch.record(arch).is_none();
        for (name, want) in expected {
            let version = view.version_of(&name);
            let Some(info) = found.get(&name) else {
                problems.push(Problem::PayloadMissing {
                    arch,
                    version,
                    file: name,
                });
                continue;
            };
            let Some((sha256, size)) = want else { continue };
            if size != u64::MAX && info.size != size {
                problems.push(Problem::PayloadSize {
                    arch,
                    version,
                    file: name,
                    recorded: size,
                    found: info.size,
                });
                continue;
            }
            if opts.deep {
                let bar = opts.events.bar(info.size, &format!("{arch} verify {name}"));
                let got = source.hash(arch, &name, served, &mut |n| bar.inc(n))?;
                bar.finish();
                match got {
                    None => problems.push(Problem::PayloadMissing {
                        arch,
                        version,
                        file: name,
                    }),
                    Some((d, _)) if hash::to_hex(&d) != sha256 => {
                        problems.push(Problem::PayloadHash {
                            arch,
                            version,
                            file: name,
                            recorded: sha256,
                            found: hash::to_hex(&d),
                        })
                    }
                    Some(_) => {}
                }
            }
        }
    }
    ch.problems.extend(problems);
    Ok(())
}

/// What devices would skip or refuse in what is published.
fn check_published(ch: &mut Channel, opts: &ReadOptions) {
    let mut problems = Vec::new();
    for view in ch.arches.values() {
        let arch = view.arch;
        let streams = std::iter::once((opts.component, &view.versions)).chain(
            view.others
                .iter()
                .map(|o| (o.stream.component.as_deref(), &o.versions)),
        );
        for (component, versions) in streams {
            for set in versions.iter().filter(|s| !s.missing.is_empty()) {
                problems.push(Problem::Incomplete {
                    arch,
                    component: component.map(str::to_owned),
                    version: Version::published(&set.version),
                    missing: set.missing.clone(),
                });
            }
        }
        if !view.unmatched.is_empty() {
            let patterns = transfer::source_patterns(
                view.transfers
                    .iter()
                    .chain(view.others.iter().flat_map(|o| &o.stream.transfers)),
            );
            for file in &view.unmatched {
                problems.push(Problem::Unmatched {
                    arch,
                    file: file.clone(),
                    patterns: patterns.clone(),
                });
            }
        }
        match &view.signature {
            Signature::Expired(info) => problems.push(Problem::Expired {
                arch,
                at: info.expires.map(rfc3339).unwrap_or_default(),
            }),
            Signature::Valid(info) => {
                if let Some(e) = info
                    .expires
                    .filter(|e| *e <= opts.now + opts.expiry_warning)
                {
                    problems.push(Problem::ExpiresSoon {
                        arch,
                        at: rfc3339(e),
                        within: crate::config::human_duration(opts.expiry_warning),
                    });
                }
            }
            _ => {}
        }
    }
    ch.problems.extend(problems);
}

pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}
