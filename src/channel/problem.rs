//! What can be wrong with a channel as read, each with the command that
//! fixes it. `status` exits 1 on any problem; the ones that break the
//! history's claim on the hosting stop every write until repaired.

use serde::Serialize;

use crate::arch::Arch;
use crate::ledger::Action;
use crate::version::Version;

/// One thing wrong with the channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Problem {
    /// `ledger.jsonl` does not verify: edited, corrupted, foreign signature,
    /// broken chain.
    HistoryUnreadable {
        error: String,
    },
    /// Manifests are served but the history is deleted or empty.
    HistoryMissing {
        arches: Vec<Arch>,
    },
    /// The newest entry was written before entries recorded what is served.
    HistoryWithoutState {
        seq: u64,
    },
    /// This machine saw a longer or different history than the hosting
    /// holds now: history and manifests were rolled back together.
    HistoryRolledBack {
        remembered_seq: u64,
        remembered_hash: String,
        found_seq: u64,
    },
    /// An arch serves an older manifest the history names at `served_seq`
    /// (put back by the hosting), not the one of the newest entry.
    ManifestRolledBack {
        arch: Arch,
        served_seq: u64,
        head_seq: u64,
    },
    /// An arch serves a signed manifest that no history entry names.
    ManifestUnknown {
        arch: Arch,
        head_seq: u64,
    },
    /// The newest entry names a manifest for an arch that serves none.
    ManifestMissing {
        arch: Arch,
        head_seq: u64,
    },
    SignatureMissing {
        arch: Arch,
    },
    SignatureInvalid {
        arch: Arch,
        error: String,
    },
    ManifestMalformed {
        arch: Arch,
        error: String,
    },
    /// A write was recorded and committed for some arches only (a crash or
    /// a failure between arches): the next write, or `repair`, finishes it.
    Interrupted {
        seq: u64,
        action: Action,
        versions: Vec<Version>,
        committed: Vec<Arch>,
        pending: Vec<Arch>,
    },
    PayloadMissing {
        arch: Arch,
        version: Option<Version>,
        file: String,
    },
    PayloadSize {
        arch: Arch,
        version: Option<Version>,
        file: String,
        recorded: u64,
        found: u64,
    },
    PayloadHash {
        arch: Arch,
        version: Option<Version>,
        file: String,
        recorded: String,
        found: String,
    },
    /// Devices skip a version that lacks a file for some transfer.
    Incomplete {
        arch: Arch,
        /// The component the version belongs to (absent: the OS).
        #[serde(skip_serializing_if = "Option::is_none")]
        component: Option<String>,
        version: Version,
        missing: Vec<String>,
    },
    /// A listed name that no transfer matches.
    Unmatched {
        arch: Arch,
        file: String,
        /// The source patterns of every stream, as this arch's devices
        /// expand them (specifiers included).
        patterns: String,
    },
    /// A listed name transfers of two streams (the OS, components) match:
    /// devices of both would take it as theirs.
    NameCollision {
        arch: Arch,
        file: String,
        first: String,
        second: String,
    },
    Expired {
        arch: Arch,
        at: String,
    },
    ExpiresSoon {
        arch: Arch,
        at: String,
        within: String,
    },
}

impl Problem {
    /// Whether writes must stop until it is fixed: everything that makes the
    /// hosting disagree with the history, or the history unusable.
    pub fn blocks_writes(&self) -> bool {
        !matches!(
            self,
            Problem::Incomplete { .. }
                | Problem::Unmatched { .. }
                | Problem::NameCollision { .. }
                | Problem::Expired { .. }
                | Problem::ExpiresSoon { .. }
                | Problem::Interrupted { .. }
        )
    }

    pub fn arch(&self) -> Option<Arch> {
        use Problem::*;
        match self {
            ManifestRolledBack { arch, .. }
            | ManifestUnknown { arch, .. }
            | ManifestMissing { arch, .. }
            | SignatureMissing { arch }
            | SignatureInvalid { arch, .. }
            | ManifestMalformed { arch, .. }
            | PayloadMissing { arch, .. }
            | PayloadSize { arch, .. }
            | PayloadHash { arch, .. }
            | Incomplete { arch, .. }
            | Unmatched { arch, .. }
            | NameCollision { arch, .. }
            | Expired { arch, .. }
            | ExpiresSoon { arch, .. } => Some(*arch),
            HistoryUnreadable { .. }
            | HistoryMissing { .. }
            | HistoryWithoutState { .. }
            | HistoryRolledBack { .. }
            | Interrupted { .. } => None,
        }
    }

    /// The arch and file of a payload whose bytes are not what the history
    /// recorded (missing, another size, another hash).
    pub fn payload_file(&self) -> Option<(Arch, &str)> {
        match self {
            Problem::PayloadMissing { arch, file, .. }
            | Problem::PayloadSize { arch, file, .. }
            | Problem::PayloadHash { arch, file, .. } => Some((*arch, file)),
            _ => None,
        }
    }

    /// The command that repairs it.
    pub fn fix(&self) -> String {
        use Problem::*;
        let adopt =
            "if what is served is right, record it with `sysupdate-publish adopt --confirm`";
        match self {
            HistoryUnreadable { .. } => format!(
                "restore ledger.jsonl from a backup; or move it away and, {adopt} (a new history)"
            ),
            HistoryMissing { .. } => {
                format!("restore ledger.jsonl from a backup; or, {adopt}")
            }
            HistoryWithoutState { .. } => format!(
                "it was written by an older sysupdate-publish; check `status`, then, {adopt}"
            ),
            HistoryRolledBack { .. } => format!(
                "restore the newer ledger.jsonl and manifests from a backup; or, {adopt} (this also forgets the history this machine remembers)"
            ),
            // Signed with our key but named by no entry: the history may
            // have lost the entry that published it.
            ManifestUnknown { head_seq, .. } => format!(
                "{adopt} (the history lost the entry that published it); otherwise run `sysupdate-publish repair` to serve history entry #{head_seq}'s state again"
            ),
            ManifestRolledBack { .. }
            | ManifestMissing { .. }
            | SignatureMissing { .. }
            | SignatureInvalid { .. }
            | ManifestMalformed { .. } => {
                "run `sysupdate-publish repair` to serve the history's newest state again".into()
            }
            Interrupted { .. } => {
                "run the command again, or `sysupdate-publish repair`: either finishes it".into()
            }
            PayloadMissing { arch, .. } | PayloadSize { arch, .. } | PayloadHash { arch, .. } => {
                format!(
                    "run `sysupdate-publish repair --output {arch}=PATH` with the build output of that version to upload the recorded bytes again"
                )
            }
            Incomplete { .. } => {
                "publish a new version with a file for every transfer; devices skip this one".into()
            }
            Unmatched { arch, patterns, .. } => format!(
                "devices of {arch} ignore it: they look for {patterns}. A name for another host version (%w, %W, %o from [specifiers]) or another arch is never installed here; fix the transfer files or the specifiers, or publish that host version from a channel of its own"
            ),
            NameCollision { .. } => {
                "tighten the MatchPattern= of one of the two transfers (give each component its own name prefix), then withdraw the version with `sysupdate-publish --component NAME yank`".into()
            }
            Expired { .. } | ExpiresSoon { .. } => "run `sysupdate-publish refresh`".into(),
        }
    }
}

fn version_label(v: &Option<Version>) -> String {
    v.as_ref()
        .map(|v| format!(" (version {v})"))
        .unwrap_or_default()
}

fn arch_list(arches: &[Arch]) -> String {
    arches
        .iter()
        .map(|a| a.systemd())
        .collect::<Vec<_>>()
        .join(", ")
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use Problem::*;
        match self {
            HistoryUnreadable { error } => write!(f, "the history does not verify: {error}"),
            HistoryMissing { arches } => write!(
                f,
                "manifests are served for {} but the history (ledger.jsonl) is missing or empty",
                arch_list(arches)
            ),
            HistoryWithoutState { seq } => write!(
                f,
                "the history's newest entry (#{seq}) does not record what is served"
            ),
            HistoryRolledBack {
                remembered_seq,
                remembered_hash,
                found_seq,
            } => {
                if found_seq < remembered_seq {
                    write!(
                        f,
                        "the history was cut short or rolled back: this machine saw entry #{remembered_seq} ({}…), the hosting's history ends at #{found_seq}",
                        &remembered_hash[..remembered_hash.len().min(12)]
                    )
                } else {
                    write!(
                        f,
                        "the history was rewritten: entry #{remembered_seq} is not the one this machine saw ({}…)",
                        &remembered_hash[..remembered_hash.len().min(12)]
                    )
                }
            }
            ManifestRolledBack {
                arch,
                served_seq,
                head_seq,
            } => write!(
                f,
                "{arch}: serves the SHA256SUMS of history entry #{served_seq}, not the newest (#{head_seq}): an older signed manifest was put back"
            ),
            ManifestUnknown { arch, head_seq } => write!(
                f,
                "{arch}: serves a SHA256SUMS that no history entry names (the newest is #{head_seq})"
            ),
            ManifestMissing { arch, head_seq } => write!(
                f,
                "{arch}: serves no SHA256SUMS, but history entry #{head_seq} publishes one"
            ),
            SignatureMissing { arch } => write!(
                f,
                "{arch}: SHA256SUMS.gpg is missing: devices refuse the manifest"
            ),
            SignatureInvalid { arch, error } => write!(f, "{arch}: signature: {error}"),
            ManifestMalformed { arch, error } => write!(f, "{arch}: SHA256SUMS: {error}"),
            Interrupted {
                seq,
                action,
                versions,
                committed,
                pending,
            } => {
                let what = if versions.is_empty() {
                    action.to_string()
                } else {
                    format!(
                        "{action} {}",
                        versions
                            .iter()
                            .map(|v| v.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                if committed.is_empty() {
                    write!(
                        f,
                        "interrupted write: {what} (history entry #{seq}) is not committed for {} yet",
                        arch_list(pending)
                    )
                } else {
                    write!(
                        f,
                        "interrupted write: {what} (history entry #{seq}) committed for {}, not {}",
                        arch_list(committed),
                        arch_list(pending)
                    )
                }
            }
            PayloadMissing {
                arch,
                version,
                file,
            } => write!(
                f,
                "{arch}: {file}{} is listed but missing from the hosting",
                version_label(version)
            ),
            PayloadSize {
                arch,
                version,
                file,
                recorded,
                found,
            } => write!(
                f,
                "{arch}: {file}{} has {found} bytes on the hosting, the history records {recorded}: its bytes were changed, devices refuse it",
                version_label(version)
            ),
            PayloadHash {
                arch,
                version,
                file,
                recorded,
                found,
            } => write!(
                f,
                "{arch}: {file}{} hashes to {found} on the hosting, the history records {recorded}: devices refuse it",
                version_label(version)
            ),
            Incomplete {
                arch,
                component,
                version,
                missing,
            } => write!(
                f,
                "{arch}: {}version {version} is incomplete (no file for {})",
                crate::transfer::component::prefix(component.as_deref()),
                missing.join(", ")
            ),
            Unmatched { arch, file, .. } => {
                write!(f, "{arch}: {file} is listed but matches no transfer file")
            }
            NameCollision {
                arch,
                file,
                first,
                second,
            } => write!(
                f,
                "{arch}: {file} is matched by {first} and by {second}: devices of both would install it"
            ),
            Expired { arch, at } => write!(
                f,
                "{arch}: the signature expired at {at}: devices refuse the manifest"
            ),
            ExpiresSoon { arch, at, within } => write!(
                f,
                "{arch}: the signature expires at {at}, within {within}"
            ),
        }
    }
}
