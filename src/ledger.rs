//! The release ledger: a signed, hash-chained, append-only history of every
//! change to a channel, stored beside the arch directories as one file.
//!
//! Each line is `<hex OpenPGP signature> <entry JSON>`: the signature covers
//! the JSON bytes exactly as stored, and each entry names the SHA-256 of the
//! previous entry's JSON, so removing, reordering or editing any line breaks
//! either a signature or the chain. Devices never read it; the publisher
//! refuses to write to a channel whose ledger does not verify.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use thiserror::Error;

use crate::arch::Arch;
use crate::hash::{self, Digest};
use crate::manifest::{self, Date, Manifest};
use crate::signing::{Keyring, SignOptions, Signer, SigningError};
use crate::version::Version;

/// version → arch → payload name → sha256 (hex).
pub type Files = BTreeMap<Version, BTreeMap<Arch, BTreeMap<String, String>>>;

/// What every arch serves after a write, by arch.
pub type State = BTreeMap<Arch, ArchRecord>;

/// The ledger's file name in the channel root (defined with the layout).
pub use crate::manifest::LEDGER as FILE;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Publish,
    Yank,
    Unyank,
    Rollback,
    Refresh,
    /// The operator confirmed what the hosting serves as the new truth
    /// (after a history was lost, cut short or predates state records).
    Adopt,
    /// A version published on another channel, copied from it.
    Promote,
    /// A copy of a channel published elsewhere, verified and served as is.
    Mirror,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = serde_json::to_value(self).expect("serializable");
        f.write_str(s.as_str().unwrap_or("?"))
    }
}

/// One payload as the history records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub sha256: String,
    pub size: u64,
}

/// One arch's served state: the exact SHA256SUMS (its hash, and enough to
/// render it again) and the size of every payload it lists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchRecord {
    /// SHA-256 (hex) of the SHA256SUMS bytes.
    pub manifest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_before: Option<Date>,
    pub files: BTreeMap<String, FileRecord>,
    /// A mirror serves another publisher's manifest and signature byte for
    /// byte; it cannot sign them again, so it keeps them to serve them again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verbatim: Option<Verbatim>,
}

/// The exact SHA256SUMS text and signature (hex) a mirror serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verbatim {
    pub manifest: String,
    pub signature: String,
}

impl ArchRecord {
    /// Records `m` as rendered for publishing; `sizes` gives every entry's size.
    pub fn new(m: &Manifest, sizes: &BTreeMap<String, u64>) -> ArchRecord {
        ArchRecord {
            manifest: hash::to_hex(&sha2::Sha256::digest(manifest::render(m)).into()),
            best_before: m.best_before,
            files: m
                .entries
                .iter()
                .map(|(name, d)| {
                    let size = sizes.get(name).copied().unwrap_or(0);
                    let sha256 = hash::to_hex(d);
                    (name.clone(), FileRecord { sha256, size })
                })
                .collect(),
            verbatim: None,
        }
    }

    /// The manifest this record names; `None` when the record does not
    /// render to its own hash (a malformed or foreign record).
    pub fn manifest(&self) -> Option<Manifest> {
        let mut entries = BTreeMap::new();
        for (name, f) in &self.files {
            entries.insert(name.clone(), manifest::hex_digest_from_str(&f.sha256)?);
        }
        let m = Manifest {
            entries,
            best_before: self.best_before,
        };
        let rendered: Digest = sha2::Sha256::digest(manifest::render(&m)).into();
        (hash::to_hex(&rendered) == self.manifest).then_some(m)
    }
}

/// One change to the channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    /// RFC 3339, UTC.
    pub time: String,
    pub action: Action,
    /// The versions concerned. For a rollback the first is the target and
    /// the others are the versions it withdrew.
    pub versions: Vec<Version>,
    /// The component whose versions these are; absent for the OS's own
    /// stream (`sysupdate.d`), so entries before components read alike.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// version → arch → payload name → sha256 (hex) of the files concerned.
    pub files: Files,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub signer: String,
    /// SHA-256 (hex) of the previous entry's JSON; empty for the first.
    pub prev: String,
    /// What every arch serves once this write is committed. It is written
    /// before the manifests are switched, so a crash between arches leaves
    /// a history that names the unfinished write. Absent in entries written
    /// by versions before the history became the source of truth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<State>,
    /// Where a promoted version came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Origin>,
    /// Preflight checks the release skipped, and why. Absent (not an empty
    /// list) when none was, so entries written before it existed and
    /// entries without skips serialize alike.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_checks: Vec<SkippedCheck>,
}

/// The channel and history head a promotion took its version from, so the
/// history tells what was vetted where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub channel: String,
    pub store: String,
    /// The source channel's history head when it was read.
    pub seq: u64,
    pub hash: String,
}

/// A preflight check a release was published without (`--skip-check`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedCheck {
    pub check: String,
    pub reason: String,
}

/// What a write adds to the history (the ledger fills in the rest).
#[derive(Clone, Debug)]
pub struct Draft {
    pub action: Action,
    pub versions: Vec<Version>,
    pub component: Option<String>,
    pub files: Files,
    pub reason: Option<String>,
    pub state: State,
    pub source: Option<Origin>,
    pub skipped_checks: Vec<SkippedCheck>,
}

#[derive(Debug, Error)]
pub enum LedgerError {
    #[error("ledger line {line}: {message}. The ledger was edited or corrupted on the hosting; restore it from a backup before any further write")]
    Corrupt { line: usize, message: String },
    #[error("ledger line {line}: the signature does not verify with the keyring ({message}); someone else wrote to the ledger. Restore it before any further write")]
    Signature { line: usize, message: String },
    #[error("ledger line {line}: the chain is broken (expected prev {expected}, found {found}): an entry was removed, reordered or edited")]
    Chain {
        line: usize,
        expected: String,
        found: String,
    },
    #[error("signing the ledger entry: {0}")]
    Sign(#[from] SigningError),
}

/// A verified ledger.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    lines: Vec<Line>,
}

/// An entry with its JSON exactly as signed and stored, and its signature.
#[derive(Clone, Debug)]
struct Line {
    entry: Entry,
    json: String,
    signature: String,
}

fn entry_hash(json: &str) -> String {
    hex::encode(sha2::Sha256::digest(json.as_bytes()))
}

/// Where a payload name was first recorded, and with which bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameRecord {
    pub sha256: String,
    pub seq: u64,
}

impl Ledger {
    /// Parses and verifies every signature and the whole chain.
    pub fn parse(bytes: &[u8], keyring: &Keyring) -> Result<Ledger, LedgerError> {
        let text = std::str::from_utf8(bytes).map_err(|e| LedgerError::Corrupt {
            line: 0,
            message: format!("not UTF-8 ({e})"),
        })?;
        if !text.is_empty() && !text.ends_with('\n') {
            return Err(LedgerError::Corrupt {
                line: text.lines().count(),
                message: "truncated (no final newline)".into(),
            });
        }
        let mut ledger = Ledger::default();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let corrupt = |message: String| LedgerError::Corrupt { line: n, message };
            let (sig_hex, json) = line
                .split_once(' ')
                .ok_or_else(|| corrupt("expected '<signature> <entry>'".into()))?;
            let sig =
                hex::decode(sig_hex).map_err(|e| corrupt(format!("signature is not hex ({e})")))?;
            keyring
                .verify(json.as_bytes(), &sig, SystemTime::now())
                .map_err(|e| LedgerError::Signature {
                    line: n,
                    message: e.to_string(),
                })?;
            let entry: Entry = serde_json::from_str(json)
                .map_err(|e| corrupt(format!("entry is not valid ({e})")))?;
            let expected = ledger.head_hash();
            if entry.prev != expected || entry.seq != ledger.lines.len() as u64 + 1 {
                return Err(LedgerError::Chain {
                    line: n,
                    expected,
                    found: entry.prev,
                });
            }
            ledger.lines.push(Line {
                entry,
                json: json.to_string(),
                signature: sig_hex.to_string(),
            });
        }
        Ok(ledger)
    }

    /// SHA-256 (hex) of the newest entry's JSON; empty when there is none.
    pub fn head_hash(&self) -> String {
        self.lines
            .last()
            .map(|l| entry_hash(&l.json))
            .unwrap_or_default()
    }

    /// SHA-256 (hex) of entry `seq` (1-based), if the ledger has it.
    pub fn hash_of(&self, seq: u64) -> Option<String> {
        let i = usize::try_from(seq).ok()?.checked_sub(1)?;
        self.lines.get(i).map(|l| entry_hash(&l.json))
    }

    pub fn head(&self) -> Option<&Entry> {
        self.lines.last().map(|l| &l.entry)
    }

    pub fn len(&self) -> u64 {
        self.lines.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    pub fn entries(&self) -> impl DoubleEndedIterator<Item = &Entry> {
        self.lines.iter().map(|l| &l.entry)
    }

    /// Appends a signed entry; returns the new file content to store.
    pub fn append(
        &mut self,
        key: &dyn Signer,
        now: SystemTime,
        draft: Draft,
    ) -> Result<Vec<u8>, LedgerError> {
        let entry = Entry {
            seq: self.len() + 1,
            time: humantime::format_rfc3339_seconds(now).to_string(),
            action: draft.action,
            versions: draft.versions,
            component: draft.component,
            files: draft.files,
            reason: draft.reason,
            signer: key.fingerprint(),
            prev: self.head_hash(),
            state: Some(draft.state),
            source: draft.source,
            skipped_checks: draft.skipped_checks,
        };
        let json = serde_json::to_string(&entry).expect("entries serialize");
        // No expiry: history must stay verifiable forever.
        let sig = key.sign(
            json.as_bytes(),
            SignOptions {
                created: now,
                lifetime: None,
            },
        )?;
        self.lines.push(Line {
            entry,
            json,
            signature: hex::encode(sig),
        });
        Ok(self.to_bytes())
    }

    /// The file content: one `<signature> <json>` line per entry.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::new();
        for l in &self.lines {
            out.push_str(&l.signature);
            out.push(' ');
            out.push_str(&l.json);
            out.push('\n');
        }
        out.into_bytes()
    }

    /// Versions of one stream (the OS: `None`, or a component) withdrawn by
    /// yank or rollback and not restored since, with the entry that
    /// withdrew them (its reason and per-arch files).
    pub fn withdrawn(&self, component: Option<&str>) -> BTreeMap<Version, &Entry> {
        let mut out: BTreeMap<Version, &Entry> = BTreeMap::new();
        for e in self
            .entries()
            .filter(|e| e.component.as_deref() == component)
        {
            for (i, v) in e.versions.iter().enumerate() {
                match e.action {
                    Action::Yank => {
                        out.insert(v.clone(), e);
                    }
                    Action::Rollback if i > 0 => {
                        out.insert(v.clone(), e);
                    }
                    Action::Rollback | Action::Unyank | Action::Publish | Action::Promote => {
                        out.remove(v);
                    }
                    Action::Refresh | Action::Adopt | Action::Mirror => {}
                }
            }
        }
        out
    }

    /// The files and hashes a version was last published or withdrawn with,
    /// per arch: what `unyank` restores without a re-upload.
    pub fn files_of(
        &self,
        version: &Version,
        component: Option<&str>,
    ) -> BTreeMap<Arch, BTreeMap<String, String>> {
        self.entries()
            .rev()
            .filter(|e| e.component.as_deref() == component)
            .find_map(|e| e.files.get(version))
            .cloned()
            .unwrap_or_default()
    }

    /// Every payload name ever recorded for `arch`, with the hash it was
    /// first recorded with: a name never comes back with other bytes, also
    /// after retention dropped it (caches keep published payloads a year).
    pub fn names(&self, arch: Arch) -> BTreeMap<String, NameRecord> {
        let mut out: BTreeMap<String, NameRecord> = BTreeMap::new();
        for e in self.entries() {
            let from_files = e.files.values().filter_map(|a| a.get(&arch)).flatten();
            let from_state = e
                .state
                .iter()
                .filter_map(|s| s.get(&arch))
                .flat_map(|r| r.files.iter().map(|(n, f)| (n, &f.sha256)));
            for (name, sha256) in from_files.chain(from_state) {
                out.entry(name.clone()).or_insert_with(|| NameRecord {
                    sha256: sha256.clone(),
                    seq: e.seq,
                });
            }
        }
        out
    }

    /// The newest entry whose recorded state names `manifest` (hex SHA-256
    /// of SHA256SUMS) for `arch`: tells an old manifest put back apart from
    /// one the history never saw.
    pub fn entry_serving(&self, arch: Arch, manifest: &str) -> Option<&Entry> {
        self.entries().rev().find(|e| {
            e.state
                .as_ref()
                .and_then(|s| s.get(&arch))
                .is_some_and(|r| r.manifest == manifest)
        })
    }

    /// The newest entry before the head that records a state.
    pub fn previous_state(&self) -> Option<&Entry> {
        self.entries().rev().skip(1).find(|e| e.state.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::SecretKey;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    fn x86() -> Arch {
        Arch::parse("x86-64").unwrap()
    }

    fn files(version: &str, name: &str) -> Files {
        let per_arch = [(x86(), [(name.to_string(), "ab".repeat(32))].into())].into();
        [(v(version), per_arch)].into()
    }

    fn draft(action: Action, version: &str, name: &str, reason: Option<&str>) -> Draft {
        let m = Manifest {
            entries: [(name.to_string(), [0xab; 32])].into(),
            best_before: None,
        };
        Draft {
            action,
            versions: vec![v(version)],
            component: None,
            files: files(version, name),
            reason: reason.map(str::to_string),
            state: [(x86(), ArchRecord::new(&m, &[(name.to_string(), 7)].into()))].into(),
            source: None,
            skipped_checks: vec![],
        }
    }

    fn sample() -> (SecretKey, Keyring, Vec<u8>) {
        let key = SecretKey::generate("L <l@e>").unwrap();
        let ring = Keyring::from_bytes(&key.keyring_bytes().unwrap()).unwrap();
        let mut l = Ledger::default();
        let now = SystemTime::now();
        l.append(&key, now, draft(Action::Publish, "17", "a_17", None))
            .unwrap();
        l.append(&key, now, draft(Action::Publish, "18", "a_18", None))
            .unwrap();
        let bytes = l
            .append(&key, now, draft(Action::Yank, "18", "a_18", Some("bad")))
            .unwrap();
        (key, ring, bytes)
    }

    #[test]
    fn round_trip_verifies_and_tracks_withdrawn_versions() {
        let (key, ring, bytes) = sample();
        let mut l = Ledger::parse(&bytes, &ring).unwrap();
        assert_eq!(l.entries().count(), 3);
        let w = l.withdrawn(None);
        assert_eq!(w.keys().map(|v| v.as_str()).collect::<Vec<_>>(), ["18"]);
        assert_eq!(w[&v("18")].reason.as_deref(), Some("bad"));
        assert!(l.files_of(&v("18"), None)[&x86()].contains_key("a_18"));
        assert!(l.withdrawn(Some("webapp")).is_empty(), "streams are apart");
        assert!(l.files_of(&v("18"), Some("webapp")).is_empty());
        let bytes = l
            .append(
                &key,
                SystemTime::now(),
                draft(Action::Unyank, "18", "a_18", None),
            )
            .unwrap();
        let l = Ledger::parse(&bytes, &ring).unwrap();
        assert!(l.withdrawn(None).is_empty());
        assert_eq!(l.to_bytes(), bytes);
        assert_eq!(l.len(), 4);
        assert_eq!(l.hash_of(4), Some(l.head_hash()));
        assert_eq!(l.hash_of(5), None);
        assert_eq!(l.hash_of(0), None);
    }

    #[test]
    fn states_name_manifests_and_every_name_ever_published() {
        let (_, ring, bytes) = sample();
        let l = Ledger::parse(&bytes, &ring).unwrap();
        let head = l.head().unwrap().state.as_ref().unwrap()[&x86()].clone();
        let m = head.manifest().expect("a record renders to its own hash");
        assert!(m.entries.contains_key("a_18"));
        assert_eq!(l.entry_serving(x86(), &head.manifest).unwrap().seq, 3);
        assert_eq!(l.previous_state().unwrap().seq, 2);
        let names = l.names(x86());
        assert_eq!(names["a_17"].seq, 1);
        assert_eq!(names["a_18"].seq, 2);
        let mut forged = head.clone();
        forged.files.get_mut("a_18").unwrap().sha256 = "cd".repeat(32);
        assert!(forged.manifest().is_none(), "a record must match its hash");
    }

    #[test]
    fn entries_without_a_state_still_parse() {
        let key = SecretKey::generate("O <o@e>").unwrap();
        let ring = Keyring::from_bytes(&key.keyring_bytes().unwrap()).unwrap();
        let json = r#"{"seq":1,"time":"2026-01-01T00:00:00Z","action":"publish","versions":["17"],"files":{"17":{"x86-64":{"a_17":"abab"}}},"signer":"X","prev":""}"#;
        let sig = key.sign(json.as_bytes(), SignOptions::default()).unwrap();
        let line = format!("{} {json}\n", hex::encode(sig));
        let l = Ledger::parse(line.as_bytes(), &ring).unwrap();
        assert!(l.head().unwrap().state.is_none());
        assert_eq!(l.names(x86())["a_17"].sha256, "abab");
    }

    #[test]
    fn tampering_is_detected() {
        let (_, ring, bytes) = sample();
        let text = String::from_utf8(bytes).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        // an edited entry
        let edited = text.replacen("\"bad\"", "\"fine\"", 1);
        assert!(matches!(
            Ledger::parse(edited.as_bytes(), &ring),
            Err(LedgerError::Signature { line: 3, .. })
        ));
        // a removed entry
        let removed = format!("{}\n{}\n", lines[0], lines[2]);
        assert!(matches!(
            Ledger::parse(removed.as_bytes(), &ring),
            Err(LedgerError::Chain { line: 2, .. })
        ));
        // reordered
        let swapped = format!("{}\n{}\n{}\n", lines[1], lines[0], lines[2]);
        assert!(Ledger::parse(swapped.as_bytes(), &ring).is_err());
        // truncated, garbage, foreign key
        assert!(Ledger::parse(&text.as_bytes()[..text.len() - 1], &ring).is_err());
        assert!(Ledger::parse(b"zz {}\n", &ring).is_err());
        let other = Keyring::from_bytes(
            &SecretKey::generate("O <o@e>")
                .unwrap()
                .keyring_bytes()
                .unwrap(),
        )
        .unwrap();
        assert!(matches!(
            Ledger::parse(text.as_bytes(), &other),
            Err(LedgerError::Signature { line: 1, .. })
        ));
        assert!(Ledger::parse(b"", &ring)
            .unwrap()
            .entries()
            .next()
            .is_none());
        // cut short: still a valid chain; only the remembered head or the
        // manifests tell (see channel::state)
        let cut = format!("{}\n", lines[0]);
        assert_eq!(Ledger::parse(cut.as_bytes(), &ring).unwrap().len(), 1);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let ring = Keyring::from_bytes(&SecretKey::generate("P <p@e>").unwrap().keyring_bytes().unwrap()).unwrap();
            let _ = Ledger::parse(&b, &ring);
        }
    }
}
