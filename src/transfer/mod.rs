//! `sysupdate.d/*.transfer` files, read the way systemd-sysupdate reads them.
//!
//! The publisher has to see the same source patterns the clients see, so
//! this follows systemd's `conf-parser.c` (sections, comments,
//! continuations), `extract_first_word()` and `specifier_printf()` for
//! `MatchPattern=`, and the checks of `transfer_finalize()`. It then answers
//! the publisher's question: which published names form complete versions.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use crate::pattern::{parse_boolean, Fields, Pattern, PatternError};
use crate::version;

/// `NAME_MAX`: longest expanded `MatchPattern=`/version value systemd takes.
const NAME_MAX: usize = 255;
/// `PATH_MAX - 1`: longest expanded `Path=`.
const PATH_MAX: usize = 4095;

/// `[Source] Type=`; the same names serve `[Target] Type=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SourceType {
    UrlFile,
    UrlTar,
    RegularFile,
    Directory,
    Subvolume,
    /// Only valid as a target; systemd refuses it as a source.
    Partition,
}

impl SourceType {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceType::UrlFile => "url-file",
            SourceType::UrlTar => "url-tar",
            SourceType::RegularFile => "regular-file",
            SourceType::Directory => "directory",
            SourceType::Subvolume => "subvolume",
            SourceType::Partition => "partition",
        }
    }

    fn from_name(s: &str) -> Option<SourceType> {
        [
            SourceType::UrlFile,
            SourceType::UrlTar,
            SourceType::RegularFile,
            SourceType::Directory,
            SourceType::Subvolume,
            SourceType::Partition,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
    }

    /// Sources fetched over HTTP(S) from a published directory.
    pub fn is_url(self) -> bool {
        matches!(self, SourceType::UrlFile | SourceType::UrlTar)
    }
}

impl fmt::Display for SourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Values for the `%` specifiers the publisher can know. `%A`/`%M` are the
/// image's os-release `IMAGE_VERSION`/`IMAGE_ID`; `arch` uses systemd's
/// names (`x86-64`, `arm64`, ...).
#[derive(Clone, Debug, Default)]
pub struct Specifiers {
    pub arch: String,
    pub image_version: Option<String>,
    pub image_id: Option<String>,
}

/// Why a `%` specifier could not be expanded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpecifierProblem {
    /// Not a systemd specifier; systemd would ignore the whole setting.
    Unknown { specifier: char },
    /// Differs per device (host name, machine ID, ...).
    DeviceSpecific {
        specifier: char,
        meaning: &'static str,
    },
    /// Fixed per image, but the caller did not supply it.
    NotGiven {
        specifier: char,
        meaning: &'static str,
    },
    /// Longer than systemd accepts after expansion.
    TooLong { len: usize, max: usize },
}

impl fmt::Display for SpecifierProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown { specifier } => write!(
                f,
                "%{specifier} is not a systemd specifier, so systemd would ignore this whole setting; write %% for a literal %"
            ),
            Self::DeviceSpecific { specifier, meaning } => write!(
                f,
                "%{specifier} expands to the {meaning}, which differs per device and cannot be known at publish time; spell the value out"
            ),
            Self::NotGiven { specifier, meaning } => write!(
                f,
                "%{specifier} expands to {meaning}, which cannot be known at publish time because it was not given to sysupdate-publish; provide it or spell the value out"
            ),
            Self::TooLong { len, max } => write!(
                f,
                "the expanded value is {len} bytes long; systemd ignores values longer than {max} bytes"
            ),
        }
    }
}

/// Something systemd would warn about and ignore; publishing can go on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferWarning {
    pub file: PathBuf,
    /// 0 when it concerns the whole file.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for TransferWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
        }
    }
}

/// A transfer definition that systemd would refuse, or that we cannot
/// evaluate at publish time.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("{}: cannot read: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not valid UTF-8; systemd refuses such lines, save the file as UTF-8", .path.display())]
    NotUtf8 { path: PathBuf },
    #[error("{}: no *.transfer or *.conf transfer definitions found in this directory; add one per published artifact (e.g. 50-uki.transfer)", .dir.display())]
    NoTransfers { dir: PathBuf },
    #[error("{}:{line}: invalid section header {header:?}: it must end with ']'", .file.display())]
    InvalidSectionHeader {
        file: PathBuf,
        line: usize,
        header: String,
    },
    #[error("{}:{line}: section header {header:?} contains quotes, backslashes or control characters, which systemd refuses", .file.display())]
    BadSectionHeader {
        file: PathBuf,
        line: usize,
        header: String,
    },
    #[error("{}:{line}: {text:?} has no '='; systemd only warns and drops such a line, so whatever it meant is silently lost; write Key=value or comment it out with '#'", .file.display())]
    MissingEquals {
        file: PathBuf,
        line: usize,
        text: String,
    },
    #[error("{}:{line}: {text:?} has nothing before '='; systemd only warns and drops such a line; write Key=value or comment it out with '#'", .file.display())]
    MissingKey {
        file: PathBuf,
        line: usize,
        text: String,
    },
    #[error("{}:{line}: {key}={value}: {problem}", .file.display())]
    Specifier {
        file: PathBuf,
        line: usize,
        key: String,
        value: String,
        problem: SpecifierProblem,
    },
    #[error("{}:{line}: [{section}] Type={value:?} is not a type systemd-sysupdate 254–262 accepts here (or sysupdate-publish handles); use one of {expected}", .file.display())]
    UnknownType {
        file: PathBuf,
        line: usize,
        section: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("{}:{line}: MatchPattern= word {word:?} contains an escape sequence systemd does not understand; systemd keeps the backslash, and a backslash is not allowed in a pattern", .file.display())]
    BadEscape {
        file: PathBuf,
        line: usize,
        word: String,
    },
    #[error("{}:{line}: MatchPattern= word {word:?} contains a quote; systemd does not remove quotes in MatchPattern= (it only splits on whitespace), so they would become part of the pattern and match nothing; remove them", .file.display())]
    QuotedPattern {
        file: PathBuf,
        line: usize,
        word: String,
    },
    #[error("{}:{line}: MatchPattern= word {word:?} contains non-ASCII characters, which systemd refuses in patterns on some CPUs; use ASCII names", .file.display())]
    NonAsciiPattern {
        file: PathBuf,
        line: usize,
        word: String,
    },
    #[error("{}:{line}: {source}", .file.display())]
    InvalidPattern {
        file: PathBuf,
        line: usize,
        #[source]
        source: PatternError,
    },
    #[error("{}: [Source] has no Type=; set it to one of url-file, url-tar, regular-file, directory, subvolume", .file.display())]
    MissingSourceType { file: PathBuf },
    #[error("{}:{line}: [Source] Type=partition is refused by systemd: a partition can only be a [Target]", .file.display())]
    PartitionSource { file: PathBuf, line: usize },
    #[error("{}:{line}: [Target] Type={target} is refused by systemd: a target must be partition, regular-file, directory or subvolume", .file.display())]
    InvalidTargetType {
        file: PathBuf,
        line: usize,
        target: SourceType,
    },
    #[error("{}: [Source] Type={source_type} cannot be installed into [Target] Type={target}; systemd refuses this combination (files go to regular-file/partition, trees to directory/subvolume)", .file.display())]
    IncompatibleTypes {
        file: PathBuf,
        source_type: SourceType,
        target: SourceType,
    },
    #[error("{}: [Source] has no Path=; systemd refuses the transfer, set it to the URL or directory the files are published in", .file.display())]
    MissingSourcePath { file: PathBuf },
    #[error("{}:{line}: [Source] Path={path:?} is not a valid http://, https:// or file:/ URL, which Type={source_type} requires", .file.display())]
    InvalidSourceUrl {
        file: PathBuf,
        line: usize,
        path: String,
        source_type: SourceType,
    },
    #[error("{}:{line}: [Source] Path={path:?} must be an absolute, normalized path (no '.', '..' or '//') for Type={source_type}", .file.display())]
    InvalidSourcePath {
        file: PathBuf,
        line: usize,
        path: String,
        source_type: SourceType,
    },
    #[error("{}: [Source] has no MatchPattern=; systemd refuses such a transfer, add one such as MatchPattern=name_@v.raw", .file.display())]
    MissingSourcePattern { file: PathBuf },
    #[error("{}: [Target] has no Path=; systemd refuses the transfer", .file.display())]
    MissingTargetPath { file: PathBuf },
    #[error("{}:{line}: [Target] Path={path:?} must be an absolute, normalized path or \"auto\"", .file.display())]
    InvalidTargetPath {
        file: PathBuf,
        line: usize,
        path: String,
    },
}

/// One transfer definition, reduced to what publishing needs.
#[derive(Clone, Debug)]
pub struct Transfer {
    /// File name without `.transfer`/`.conf`, as systemd names the transfer.
    pub name: String,
    pub file: PathBuf,
    pub source_type: SourceType,
    /// Specifier-expanded `[Source] Path=`.
    pub source_path: Option<String>,
    pub source_patterns: Vec<Pattern>,
    /// Copied from the source patterns when `[Target]` has none, as systemd does.
    pub target_patterns: Vec<Pattern>,
    pub min_version: Option<String>,
    /// Every `ProtectVersion=` (systemd 254–262 accumulate them), except
    /// those that depend on something unknown at publish time (typically
    /// `%A` without an image version): they only matter on the device.
    pub protect_versions: Vec<String>,
    pub features: Vec<String>,
    pub requisite_features: Vec<String>,
    pub verify: bool,
    /// What systemd would warn about and ignore.
    pub warnings: Vec<TransferWarning>,
}

impl Transfer {
    /// What a systemd ≥ 261 client reads from `name`: the first source
    /// pattern that matches the whole name wins.
    pub fn match_source(&self, name: &str) -> Option<Fields> {
        self.source_patterns.iter().find_map(|p| p.matches(name))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Section {
    Transfer,
    Source,
    Target,
}

#[derive(Clone, Debug)]
struct Loc {
    file: PathBuf,
    line: usize,
}

/// Settings accumulated over the main file and its drop-ins.
struct Builder<'s> {
    spec: &'s Specifiers,
    warnings: Vec<TransferWarning>,
    source_type: Option<(SourceType, Loc)>,
    target_type: Option<(SourceType, Loc)>,
    source_path: Option<(String, Loc)>,
    target_path: Option<(String, Loc)>,
    source_patterns: Vec<Pattern>,
    target_patterns: Vec<Pattern>,
    min_version: Option<String>,
    protect_versions: Vec<String>,
    features: Vec<String>,
    requisite_features: Vec<String>,
    verify: bool,
}

/// Keys systemd knows (254–262) whose values publishing does not need.
const IGNORED_KEYS: &[(Section, &str)] = &[
    (Section::Transfer, "MaxVersion"),
    (Section::Transfer, "ChangeLog"),
    (Section::Transfer, "AppStream"),
    (Section::Source, "PathRelativeTo"),
    (Section::Target, "PathRelativeTo"),
    (Section::Target, "MatchPartitionType"),
    (Section::Target, "PartitionUUID"),
    (Section::Target, "PartitionFlags"),
    (Section::Target, "PartitionNoAuto"),
    (Section::Target, "PartitionGrowFileSystem"),
    (Section::Target, "ReadOnly"),
    (Section::Target, "Mode"),
    (Section::Target, "TriesLeft"),
    (Section::Target, "TriesDone"),
    (Section::Target, "InstancesMax"),
    (Section::Target, "RemoveTemporary"),
    (Section::Target, "CurrentSymlink"),
];

const SOURCE_TYPES: &str = "url-file, url-tar, regular-file, directory, subvolume";
const TARGET_TYPES: &str = "partition, regular-file, directory, subvolume";

/// systemd's `WHITESPACE`.
fn is_ws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r')
}

fn strip(s: &str) -> &str {
    s.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r'))
}

impl<'s> Builder<'s> {
    fn new(spec: &'s Specifiers) -> Self {
        Builder {
            spec,
            warnings: Vec::new(),
            source_type: None,
            target_type: None,
            source_path: None,
            target_path: None,
            source_patterns: Vec::new(),
            target_patterns: Vec::new(),
            min_version: None,
            protect_versions: Vec::new(),
            features: Vec::new(),
            requisite_features: Vec::new(),
            verify: true,
        }
    }

    fn warn(&mut self, loc: &Loc, message: String) {
        self.warnings.push(TransferWarning {
            file: loc.file.clone(),
            line: loc.line,
            message,
        });
    }

    /// Port of `config_parse()`: one file, fresh section state. Deviations:
    /// a BOM is stripped before the comment check (systemd would misread a
    /// BOM-prefixed comment), and messages name the first line of a
    /// continued setting (systemd names the last).
    fn feed(&mut self, file: &Path, text: &str) -> Result<(), TransferError> {
        let mut section: Option<Section> = None;
        let mut section_ignored = false;
        let mut continuation: Option<(String, usize)> = None;
        let mut bom_seen = false;

        for (idx, raw) in physical_lines(text).into_iter().enumerate() {
            let line_no = idx + 1;
            let mut l = raw;
            if !bom_seen {
                if let Some(rest) = l.strip_prefix('\u{feff}') {
                    l = rest;
                    bom_seen = true;
                }
            }
            // Comment lines are dropped even inside a continuation.
            let lead = l.trim_start_matches([' ', '\t', '\n', '\r']);
            if lead.starts_with(['#', ';']) {
                continue;
            }

            let (mut p, start) = match continuation.take() {
                Some((mut c, start)) => {
                    c.push_str(l);
                    (c, start)
                }
                None => (l.to_owned(), line_no),
            };
            if ends_with_unescaped_backslash(&p) {
                p.pop();
                p.push(' ');
                continuation = Some((p, start));
                continue;
            }
            let loc = Loc {
                file: file.to_owned(),
                line: start,
            };
            self.parse_line(&loc, &p, &mut section, &mut section_ignored)?;
        }
        if let Some((p, start)) = continuation {
            let loc = Loc {
                file: file.to_owned(),
                line: start,
            };
            self.parse_line(&loc, &p, &mut section, &mut section_ignored)?;
        }
        Ok(())
    }

    /// Port of `parse_line()`.
    fn parse_line(
        &mut self,
        loc: &Loc,
        l: &str,
        section: &mut Option<Section>,
        section_ignored: &mut bool,
    ) -> Result<(), TransferError> {
        let l = strip(l);
        if l.is_empty() {
            return Ok(());
        }

        if l.starts_with('[') {
            if l.len() < 2 || !l.ends_with(']') {
                return Err(TransferError::InvalidSectionHeader {
                    file: loc.file.clone(),
                    line: loc.line,
                    header: l.to_owned(),
                });
            }
            let name = &l[1..l.len() - 1];
            if name
                .chars()
                .any(|c| c.is_ascii_control() || matches!(c, '"' | '\'' | '\\'))
            {
                return Err(TransferError::BadSectionHeader {
                    file: loc.file.clone(),
                    line: loc.line,
                    header: l.to_owned(),
                });
            }
            *section = match name {
                "Transfer" => Some(Section::Transfer),
                "Source" => Some(Section::Source),
                "Target" => Some(Section::Target),
                _ => {
                    if !name.starts_with("X-") {
                        self.warn(
                            loc,
                            format!("unknown section [{name}]; systemd ignores it and every setting in it"),
                        );
                    }
                    None
                }
            };
            *section_ignored = section.is_none();
            return Ok(());
        }

        let Some(sec) = *section else {
            if !*section_ignored {
                self.warn(
                    loc,
                    format!("{l:?} is outside of any section; systemd ignores it"),
                );
            }
            return Ok(());
        };

        let Some(eq) = l.find('=') else {
            return Err(TransferError::MissingEquals {
                file: loc.file.clone(),
                line: loc.line,
                text: l.to_owned(),
            });
        };
        if eq == 0 {
            return Err(TransferError::MissingKey {
                file: loc.file.clone(),
                line: loc.line,
                text: l.to_owned(),
            });
        }
        let key = strip(&l[..eq]);
        let value = strip(&l[eq + 1..]);
        self.assign(loc, sec, key, value)
    }

    fn assign(
        &mut self,
        loc: &Loc,
        sec: Section,
        key: &str,
        value: &str,
    ) -> Result<(), TransferError> {
        match (sec, key) {
            (Section::Transfer, "MinVersion") => self.min_version(loc, value),
            (Section::Transfer, "ProtectVersion") => self.protect_version(loc, value),
            (Section::Transfer, "Verify") => {
                if value.is_empty() {
                    self.verify = true;
                } else if let Some(b) = parse_boolean(value) {
                    self.verify = b;
                } else {
                    self.warn(
                        loc,
                        format!("Verify={value:?} is not a boolean; systemd ignores it (verification stays on unless set to no)"),
                    );
                }
            }
            (Section::Transfer, "Features") => self.strv(loc, key, value, true),
            (Section::Transfer, "RequisiteFeatures") => self.strv(loc, key, value, false),
            (Section::Source | Section::Target, "Type") => {
                let is_source = sec == Section::Source;
                let t = SourceType::from_name(value).ok_or_else(|| TransferError::UnknownType {
                    file: loc.file.clone(),
                    line: loc.line,
                    section: if is_source { "Source" } else { "Target" },
                    value: value.to_owned(),
                    expected: if is_source {
                        SOURCE_TYPES
                    } else {
                        TARGET_TYPES
                    },
                })?;
                if is_source {
                    self.source_type = Some((t, loc.clone()));
                } else {
                    self.target_type = Some((t, loc.clone()));
                }
            }
            (Section::Source, "Path") => {
                let p = self.expand(loc, key, value, PATH_MAX)?;
                self.source_path = Some((p, loc.clone()));
            }
            // Expanded on the device; we only check it is there.
            (Section::Target, "Path") => self.target_path = Some((value.to_owned(), loc.clone())),
            (Section::Source, "MatchPattern") => self.match_pattern(loc, true, value)?,
            (Section::Target, "MatchPattern") => self.match_pattern(loc, false, value)?,
            _ if IGNORED_KEYS.contains(&(sec, key)) => {}
            _ => {
                if !key.starts_with("X-") {
                    self.warn(
                        loc,
                        format!("unknown key {key:?} in section [{sec:?}]; systemd ignores it"),
                    );
                }
            }
        }
        Ok(())
    }

    fn expand(
        &self,
        loc: &Loc,
        key: &str,
        value: &str,
        max: usize,
    ) -> Result<String, TransferError> {
        expand_specifiers(value, self.spec, max).map_err(|problem| TransferError::Specifier {
            file: loc.file.clone(),
            line: loc.line,
            key: key.to_owned(),
            value: value.to_owned(),
            problem,
        })
    }

    fn min_version(&mut self, loc: &Loc, value: &str) {
        if value.is_empty() {
            self.min_version = None;
            return;
        }
        match expand_specifiers(value, self.spec, NAME_MAX) {
            Ok(v) => match version::validate(&v) {
                Ok(_) => self.min_version = Some(v),
                Err(e) => self.warn(loc, format!("MinVersion= ignored, as systemd does: {e}")),
            },
            Err(
                p @ (SpecifierProblem::DeviceSpecific { .. } | SpecifierProblem::NotGiven { .. }),
            ) => {
                self.min_version = None;
                self.warn(loc, format!("MinVersion={value}: {p}; it is not checked"));
            }
            Err(p) => self.warn(loc, format!("MinVersion= ignored, as systemd does: {p}")),
        }
    }

    /// `strv_extend()` in 254–262: each valid value adds one, an empty one
    /// is an invalid version (ignored with a warning, no reset). Unknown
    /// values (`%A` without an image version) are skipped silently: the
    /// setting only matters on the device.
    fn protect_version(&mut self, loc: &Loc, value: &str) {
        match expand_specifiers(value, self.spec, NAME_MAX) {
            Ok(v) => match version::validate(&v) {
                Ok(_) => self.protect_versions.push(v),
                Err(e) => self.warn(
                    loc,
                    format!("ProtectVersion= ignored, as systemd does: {e}"),
                ),
            },
            Err(SpecifierProblem::DeviceSpecific { .. } | SpecifierProblem::NotGiven { .. }) => {}
            Err(p) => self.warn(
                loc,
                format!("ProtectVersion= ignored, as systemd does: {p}"),
            ),
        }
    }

    /// `config_parse_strv()`: quoted words, accumulate, empty resets, no duplicates.
    fn strv(&mut self, loc: &Loc, key: &str, value: &str, features: bool) {
        if value.is_empty() {
            if features {
                self.features.clear();
            } else {
                self.requisite_features.clear();
            }
            return;
        }
        let flags = ExtractFlags {
            unquote: true,
            retain_escape: true,
            ..ExtractFlags::default()
        };
        let mut words = Vec::new();
        let mut pos = 0;
        loop {
            match extract_first_word(value.as_bytes(), &mut pos, flags) {
                Ok(Some(w)) => words.push(String::from_utf8_lossy(&w).into_owned()),
                Ok(None) => break,
                Err(()) => {
                    self.warn(
                        loc,
                        format!("{key}={value}: unbalanced quotes; systemd ignores this line"),
                    );
                    return;
                }
            }
        }
        let list = if features {
            &mut self.features
        } else {
            &mut self.requisite_features
        };
        for w in words {
            if !list.contains(&w) {
                list.push(w);
            }
        }
    }

    /// `config_parse_resource_pattern()`.
    fn match_pattern(
        &mut self,
        loc: &Loc,
        is_source: bool,
        value: &str,
    ) -> Result<(), TransferError> {
        if value.is_empty() {
            if is_source {
                self.source_patterns.clear();
            } else {
                self.target_patterns.clear();
            }
            return Ok(());
        }
        let flags = ExtractFlags {
            cunescape: true,
            unescape_relax: true,
            ..ExtractFlags::default()
        };
        let err_word = |w: &[u8]| String::from_utf8_lossy(w).into_owned();
        let mut pos = 0;
        // With these flags systemd's extraction cannot fail.
        while let Ok(Some(word)) = extract_first_word(value.as_bytes(), &mut pos, flags) {
            if word.contains(&b'\\') {
                return Err(TransferError::BadEscape {
                    file: loc.file.clone(),
                    line: loc.line,
                    word: err_word(&word),
                });
            }
            if !word.is_ascii() {
                return Err(TransferError::NonAsciiPattern {
                    file: loc.file.clone(),
                    line: loc.line,
                    word: err_word(&word),
                });
            }
            let word = err_word(&word);
            if word.contains(['"', '\'']) {
                return Err(TransferError::QuotedPattern {
                    file: loc.file.clone(),
                    line: loc.line,
                    word,
                });
            }
            let expanded = self.expand(loc, "MatchPattern", &word, NAME_MAX)?;
            let pattern =
                Pattern::parse(&expanded).map_err(|source| TransferError::InvalidPattern {
                    file: loc.file.clone(),
                    line: loc.line,
                    source,
                })?;
            let list = if is_source {
                &mut self.source_patterns
            } else {
                &mut self.target_patterns
            };
            if !list.contains(&pattern) {
                list.push(pattern);
            }
        }
        Ok(())
    }

    /// Port of the checks in `transfer_finalize()`.
    fn finish(self, name: &str, file: &Path) -> Result<Transfer, TransferError> {
        let mut warnings = self.warnings;
        let (source_type, sloc) =
            self.source_type
                .ok_or_else(|| TransferError::MissingSourceType {
                    file: file.to_owned(),
                })?;
        if source_type == SourceType::Partition {
            return Err(TransferError::PartitionSource {
                file: sloc.file,
                line: sloc.line,
            });
        }

        let target_type = match &self.target_type {
            Some((t, tloc)) => {
                if t.is_url() {
                    return Err(TransferError::InvalidTargetType {
                        file: tloc.file.clone(),
                        line: tloc.line,
                        target: *t,
                    });
                }
                *t
            }
            None => match source_type {
                SourceType::UrlFile | SourceType::RegularFile => {
                    let dev = self
                        .target_path
                        .as_ref()
                        .is_some_and(|(p, _)| p.starts_with("/dev/"));
                    if dev {
                        SourceType::Partition
                    } else {
                        SourceType::RegularFile
                    }
                }
                SourceType::Subvolume => SourceType::Subvolume,
                _ => SourceType::Directory,
            },
        };
        let file_like = matches!(source_type, SourceType::UrlFile | SourceType::RegularFile);
        let target_ok = if file_like {
            matches!(target_type, SourceType::Partition | SourceType::RegularFile)
        } else {
            matches!(target_type, SourceType::Directory | SourceType::Subvolume)
        };
        if !target_ok {
            return Err(TransferError::IncompatibleTypes {
                file: file.to_owned(),
                source_type,
                target: target_type,
            });
        }

        let (source_path, ploc) =
            self.source_path
                .ok_or_else(|| TransferError::MissingSourcePath {
                    file: file.to_owned(),
                })?;
        if source_type.is_url() {
            if !url_is_valid(&source_path) {
                return Err(TransferError::InvalidSourceUrl {
                    file: ploc.file,
                    line: ploc.line,
                    path: source_path,
                    source_type,
                });
            }
        } else if !(source_path.starts_with('/') && path_is_normalized(&source_path)) {
            return Err(TransferError::InvalidSourcePath {
                file: ploc.file,
                line: ploc.line,
                path: source_path,
                source_type,
            });
        }

        if self.source_patterns.is_empty() {
            return Err(TransferError::MissingSourcePattern {
                file: file.to_owned(),
            });
        }
        if source_type.is_url() {
            for p in self.source_patterns.iter().filter(|p| p.has_slash()) {
                warnings.push(TransferWarning {
                    file: file.to_owned(),
                    line: 0,
                    message: format!(
                        "source MatchPattern {:?} contains '/': only systemd 262 and newer match such names in a SHA256SUMS manifest",
                        p.as_str()
                    ),
                });
            }
        }

        match &self.target_path {
            None => {
                return Err(TransferError::MissingTargetPath {
                    file: file.to_owned(),
                })
            }
            Some((p, tloc)) => {
                // Paths with specifiers are only known on the device.
                let checkable = p != "auto" && !p.contains('%');
                if checkable && !(p.starts_with('/') && path_is_normalized(p)) {
                    return Err(TransferError::InvalidTargetPath {
                        file: tloc.file.clone(),
                        line: tloc.line,
                        path: p.clone(),
                    });
                }
            }
        }

        let target_patterns = if self.target_patterns.is_empty() {
            self.source_patterns.clone()
        } else {
            self.target_patterns
        };

        Ok(Transfer {
            name: name.to_owned(),
            file: file.to_owned(),
            source_type,
            source_path: Some(source_path),
            source_patterns: self.source_patterns,
            target_patterns,
            min_version: self.min_version,
            protect_versions: self.protect_versions,
            features: self.features,
            requisite_features: self.requisite_features,
            verify: self.verify,
            warnings,
        })
    }
}

/// `read_line()` line splitting: `\n`, `\r`, `\r\n` and NUL end a line; a
/// run of different end-of-line characters counts as one.
fn physical_lines(text: &str) -> Vec<&str> {
    fn kind(c: u8) -> u8 {
        match c {
            0 => 1,
            b'\n' => 2,
            b'\r' => 4,
            _ => 0,
        }
    }
    let b = text.as_bytes();
    let mut lines = Vec::new();
    let (mut start, mut i) = (0usize, 0usize);
    while i < b.len() {
        let k = kind(b[i]);
        if k == 0 {
            i += 1;
            continue;
        }
        lines.push(&text[start..i]);
        let mut seen = k;
        i += 1;
        while let Some(&c) = b.get(i) {
            let k = kind(c);
            if k == 0 || seen & k != 0 {
                break;
            }
            seen |= k;
            i += 1;
        }
        start = i;
    }
    if start < b.len() {
        lines.push(&text[start..]);
    }
    lines
}

/// Continuation: an odd backslash run at the end of the line.
fn ends_with_unescaped_backslash(s: &str) -> bool {
    let mut escaped = false;
    for c in s.bytes() {
        if escaped {
            escaped = false;
        } else if c == b'\\' {
            escaped = true;
        }
    }
    escaped
}

/// The subset of systemd's `ExtractFlags` sysupdate uses.
#[derive(Clone, Copy, Default)]
struct ExtractFlags {
    cunescape: bool,
    unescape_relax: bool,
    unquote: bool,
    retain_escape: bool,
}

/// Port of `extract_first_word()` with whitespace separators. `Ok(None)` at
/// the end; `Err` for unbalanced quotes or (unless relaxed) bad escapes.
fn extract_first_word(
    s: &[u8],
    pos: &mut usize,
    flags: ExtractFlags,
) -> Result<Option<Vec<u8>>, ()> {
    while s.get(*pos).is_some_and(|&c| is_ws(c)) {
        *pos += 1;
    }
    if *pos >= s.len() {
        return Ok(None);
    }
    let mut out = Vec::new();
    let mut quote: Option<u8> = None;
    let mut backslash = false;
    loop {
        if backslash {
            let Some(&c) = s.get(*pos) else {
                if flags.unescape_relax && quote.is_none() {
                    out.push(b'\\');
                    return Ok(Some(out));
                }
                return Err(());
            };
            if flags.cunescape {
                if let Some((bytes, used)) = cunescape_one(&s[*pos..]) {
                    out.extend_from_slice(&bytes);
                    *pos += used;
                } else if flags.unescape_relax {
                    out.extend_from_slice(&[b'\\', c]);
                    *pos += 1;
                } else {
                    return Err(());
                }
            } else {
                out.push(c);
                *pos += 1;
            }
            backslash = false;
        } else if let Some(q) = quote {
            loop {
                match s.get(*pos) {
                    None => return Err(()),
                    Some(&c) if c == q => {
                        quote = None;
                        *pos += 1;
                        break;
                    }
                    Some(b'\\') if !flags.retain_escape => {
                        backslash = true;
                        *pos += 1;
                        break;
                    }
                    Some(&c) => {
                        out.push(c);
                        *pos += 1;
                    }
                }
            }
        } else {
            loop {
                match s.get(*pos) {
                    None => return Ok(Some(out)),
                    Some(&c @ (b'\'' | b'"')) if flags.unquote => {
                        quote = Some(c);
                        *pos += 1;
                        break;
                    }
                    Some(b'\\') if !flags.retain_escape => {
                        backslash = true;
                        *pos += 1;
                        break;
                    }
                    Some(&c) if is_ws(c) => {
                        while s.get(*pos).is_some_and(|&c| is_ws(c)) {
                            *pos += 1;
                        }
                        return Ok(Some(out));
                    }
                    Some(&c) => {
                        out.push(c);
                        *pos += 1;
                    }
                }
            }
        }
    }
}

/// Port of `cunescape_one()` (no NUL allowed): the bytes produced and the
/// number of input bytes used after the backslash.
fn cunescape_one(p: &[u8]) -> Option<(Vec<u8>, usize)> {
    let hex = |k: usize| p.get(k).and_then(|&c| (c as char).to_digit(16));
    let oct = |k: usize| p.get(k).and_then(|&c| (c as char).to_digit(8));
    let simple = |b: u8| Some((vec![b], 1));
    match *p.first()? {
        b'a' => simple(0x07),
        b'b' => simple(0x08),
        b'f' => simple(0x0c),
        b'n' => simple(b'\n'),
        b'r' => simple(b'\r'),
        b't' => simple(b'\t'),
        b'v' => simple(0x0b),
        b'\\' => simple(b'\\'),
        b'"' => simple(b'"'),
        b'\'' => simple(b'\''),
        b's' => simple(b' '),
        b'x' => {
            let v = (hex(1)? << 4) | hex(2)?;
            (v != 0).then(|| (vec![v as u8], 3))
        }
        b'u' => {
            let v = (1..=4).try_fold(0u32, |acc, k| Some((acc << 4) | hex(k)?))?;
            (v != 0).then(|| (utf8_encode(v), 5))
        }
        b'U' => {
            let v = (1..=8).try_fold(0u32, |acc, k| Some((acc << 4) | hex(k)?))?;
            (v != 0 && unichar_is_valid(v)).then(|| (utf8_encode(v), 9))
        }
        b'0'..=b'7' => {
            let v = (oct(0)? << 6) | (oct(1)? << 3) | oct(2)?;
            (v != 0 && v <= 255).then(|| (vec![v as u8], 3))
        }
        _ => None,
    }
}

fn unichar_is_valid(c: u32) -> bool {
    c < 0x110000
        && (c & 0xFFFF_F800) != 0xD800
        && !(0xFDD0..=0xFDEF).contains(&c)
        && (c & 0xFFFE) != 0xFFFE
}

/// systemd's `utf8_encode_unichar()` (also encodes surrogates, like C).
fn utf8_encode(c: u32) -> Vec<u8> {
    if c < 0x80 {
        vec![c as u8]
    } else if c < 0x800 {
        vec![0xc0 | (c >> 6) as u8, 0x80 | (c & 0x3f) as u8]
    } else if c < 0x10000 {
        vec![
            0xe0 | (c >> 12) as u8,
            0x80 | ((c >> 6) & 0x3f) as u8,
            0x80 | (c & 0x3f) as u8,
        ]
    } else {
        vec![
            0xf0 | ((c >> 18) & 0x07) as u8,
            0x80 | ((c >> 12) & 0x3f) as u8,
            0x80 | ((c >> 6) & 0x3f) as u8,
            0x80 | (c & 0x3f) as u8,
        ]
    }
}

/// Port of `specifier_printf()` with `system_and_tmp_specifier_table`,
/// limited to what the publisher knows.
pub fn expand_specifiers(
    value: &str,
    spec: &Specifiers,
    max: usize,
) -> Result<String, SpecifierProblem> {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(s) = chars.next() else {
            // A stray trailing '%' stays.
            out.push('%');
            break;
        };
        let not_given = |meaning| SpecifierProblem::NotGiven {
            specifier: s,
            meaning,
        };
        let device = |meaning| SpecifierProblem::DeviceSpecific {
            specifier: s,
            meaning,
        };
        match s {
            '%' => out.push('%'),
            'a' if spec.arch.is_empty() => return Err(not_given("the architecture")),
            'a' => out.push_str(&spec.arch),
            'A' => out.push_str(
                spec.image_version
                    .as_deref()
                    .ok_or_else(|| not_given("IMAGE_VERSION from the image's os-release"))?,
            ),
            'M' => out.push_str(
                spec.image_id
                    .as_deref()
                    .ok_or_else(|| not_given("IMAGE_ID from the image's os-release"))?,
            ),
            'b' => return Err(device("boot ID")),
            'B' => return Err(device("BUILD_ID from the device's os-release")),
            'H' => return Err(device("host name")),
            'l' => return Err(device("short host name")),
            'q' => return Err(device("pretty host name")),
            'm' => return Err(device("machine ID")),
            'o' => return Err(device("ID from the device's os-release")),
            'v' => return Err(device("running kernel release")),
            'w' => return Err(device("VERSION_ID from the device's os-release")),
            'W' => return Err(device("VARIANT_ID from the device's os-release")),
            'T' => return Err(device("temporary directory")),
            'V' => return Err(device("/var/tmp directory")),
            s if s.is_ascii_alphanumeric() => {
                return Err(SpecifierProblem::Unknown { specifier: s })
            }
            // Not a possible specifier: kept as written.
            s => {
                out.push('%');
                out.push(s);
            }
        }
    }
    if out.len() > max {
        return Err(SpecifierProblem::TooLong {
            len: out.len(),
            max,
        });
    }
    Ok(out)
}

/// `http_url_is_valid()` or `file_url_is_valid()`.
fn url_is_valid(u: &str) -> bool {
    let rest = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"))
        .or_else(|| u.strip_prefix("file:/"));
    rest.is_some_and(|r| !r.is_empty() && r.is_ascii() && !r.contains('\0'))
}

/// `path_is_normalized()`.
fn path_is_normalized(p: &str) -> bool {
    if p.is_empty() || p.len() > PATH_MAX || p.split('/').any(|c| c == ".." || c.len() > NAME_MAX) {
        return false;
    }
    if p == "." || p.starts_with("./") || p.ends_with("/.") || p.contains("/./") {
        return false;
    }
    !p.contains("//")
}

/// Parses one transfer definition. `name` is the file name without
/// extension; `file` is only used in messages.
pub fn parse_str(
    name: &str,
    file: &Path,
    text: &str,
    spec: &Specifiers,
) -> Result<Transfer, TransferError> {
    let mut b = Builder::new(spec);
    b.feed(file, text)?;
    b.finish(name, file)
}

fn read_text(path: &Path) -> Result<String, TransferError> {
    let bytes = fs::read(path).map_err(|source| TransferError::Io {
        path: path.to_owned(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|_| TransferError::NotUtf8 {
        path: path.to_owned(),
    })
}

/// Regular, non-hidden, non-masked (empty or `/dev/null`) files ending in
/// `suffix`, sorted by name, like `conf_files_list()`.
fn list_conf_files(dir: &Path, suffix: &str) -> Result<Vec<PathBuf>, TransferError> {
    let io = |source| TransferError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let fname = entry.file_name();
        let Some(fname) = fname.to_str() else {
            continue;
        };
        if fname.starts_with('.') || fname.len() <= suffix.len() || !fname.ends_with(suffix) {
            continue;
        }
        let path = entry.path();
        match fs::metadata(&path) {
            Ok(m) if m.is_file() && m.len() > 0 => found.push((fname.to_owned(), path)),
            _ => {}
        }
    }
    found.sort();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// Reads every transfer in `dir` like systemd ≥ 257: `*.transfer`, or the
/// legacy `*.conf` when there is no `*.transfer`; plus drop-ins from
/// `<file>.d/*.conf`. Sorted by file name.
pub fn load_dir(dir: &Path, spec: &Specifiers) -> Result<Vec<Transfer>, TransferError> {
    let transfer_files = list_conf_files(dir, ".transfer")?;
    let conf_files = list_conf_files(dir, ".conf")?;
    let legacy_ignored = !transfer_files.is_empty() && !conf_files.is_empty();
    let (files, suffix) = if transfer_files.is_empty() {
        (conf_files.clone(), ".conf")
    } else {
        (transfer_files, ".transfer")
    };
    if files.is_empty() {
        return Err(TransferError::NoTransfers {
            dir: dir.to_owned(),
        });
    }

    let mut out = Vec::with_capacity(files.len());
    for path in files {
        let fname = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let name = &fname[..fname.len() - suffix.len()];
        let mut b = Builder::new(spec);
        b.feed(&path, &read_text(&path)?)?;
        let dropin_dir = dir.join(format!("{fname}.d"));
        if dropin_dir.is_dir() {
            for dropin in list_conf_files(&dropin_dir, ".conf")? {
                b.feed(&dropin, &read_text(&dropin)?)?;
            }
        }
        out.push(b.finish(name, &path)?);
    }

    if legacy_ignored {
        let names: Vec<String> = conf_files
            .iter()
            .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_owned))
            .collect();
        out[0].warnings.push(TransferWarning {
            file: dir.to_owned(),
            line: 0,
            message: format!(
                "ignoring legacy {} because *.transfer files exist, as systemd 257+ does; systemd 254–256 read only the *.conf files",
                names.join(", ")
            ),
        });
    }
    Ok(out)
}

/// Files of one version, by transfer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VersionSet {
    /// The first spelling seen; spellings that compare equal ("1.0", "1.00")
    /// are the same version to systemd and share this set.
    pub version: String,
    /// Transfer name → published file name.
    pub files: BTreeMap<String, String>,
    /// Transfers without a file for this version, in transfer order.
    pub missing: Vec<String>,
    /// Transfers with more than one file for this version, with all of them.
    pub duplicates: Vec<(String, Vec<String>)>,
}

impl VersionSet {
    /// Every transfer has exactly one file, so every client can install it.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty() && self.duplicates.is_empty()
    }
}

/// A name that systemd ≤ 260 clients read differently from newer ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub name: String,
    pub transfer: String,
    /// The version old clients read from the name.
    pub version: String,
    pub explanation: String,
}

/// How published names group into versions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Classification {
    /// Newest first by [`version::compare`].
    pub versions: Vec<VersionSet>,
    /// Names no transfer's source pattern matches exactly, in input order.
    pub unmatched: Vec<String>,
    pub old_client_conflicts: Vec<Conflict>,
}

/// Groups published `names` into versions as systemd ≥ 261 clients see them,
/// and flags names older clients (which accept trailing text) read differently.
///
/// A name belongs to every transfer with a source pattern that matches it
/// exactly (first matching pattern wins). Every transfer counts for
/// completeness, including those gated by `Features=`: a device may enable
/// them.
pub fn classify<'a>(
    transfers: &[Transfer],
    names: impl IntoIterator<Item = &'a str>,
) -> Classification {
    let mut out = Classification::default();
    let mut seen = HashSet::new();

    for name in names {
        if !seen.insert(name) {
            continue;
        }
        let mut matched = false;
        for t in transfers {
            let exact = t.match_source(name).and_then(|f| f.version);
            let old = t.source_patterns.iter().find_map(|p| {
                p.matches_prefix(name)
                    .and_then(|f| f.version)
                    .map(|v| (p, v))
            });

            if let Some(v) = &exact {
                matched = true;
                add_to_set(&mut out.versions, v, &t.name, name);
            }
            if let Some((p, ov)) = old {
                let explanation = match &exact {
                    None => format!(
                        "systemd 260 and older ignore text after the end of a pattern, so they would take {name:?} as version {ov} of transfer {} (MatchPattern {}); no published name may extend a name a pattern matches, so rename or drop it",
                        t.name,
                        p.as_str()
                    ),
                    Some(nv) if version::compare(nv, &ov).is_ne() => format!(
                        "systemd 260 and older would read {name:?} as version {ov} of transfer {} (MatchPattern {}, ignoring trailing text) while newer clients read version {nv}; reorder or tighten the patterns",
                        t.name,
                        p.as_str()
                    ),
                    Some(_) => continue,
                };
                out.old_client_conflicts.push(Conflict {
                    name: name.to_owned(),
                    transfer: t.name.clone(),
                    version: ov,
                    explanation,
                });
            }
        }
        if !matched {
            out.unmatched.push(name.to_owned());
        }
    }

    for set in &mut out.versions {
        set.missing = transfers
            .iter()
            .filter(|t| !set.files.contains_key(&t.name))
            .map(|t| t.name.clone())
            .collect();
    }
    out.versions
        .sort_by(|a, b| version::compare(&b.version, &a.version));
    out
}

fn add_to_set(sets: &mut Vec<VersionSet>, v: &str, transfer: &str, name: &str) {
    let idx = match sets
        .iter()
        .position(|s| version::compare(&s.version, v).is_eq())
    {
        Some(i) => i,
        None => {
            sets.push(VersionSet {
                version: v.to_owned(),
                ..VersionSet::default()
            });
            sets.len() - 1
        }
    };
    let set = &mut sets[idx];
    match set.files.get(transfer) {
        None => {
            set.files.insert(transfer.to_owned(), name.to_owned());
        }
        Some(first) => {
            let first = first.clone();
            match set.duplicates.iter_mut().find(|(t, _)| t == transfer) {
                Some((_, list)) => list.push(name.to_owned()),
                None => set
                    .duplicates
                    .push((transfer.to_owned(), vec![first, name.to_owned()])),
            }
        }
    }
}

/// The version systemd ≥ 261 reads from `name`: the first transfer whose
/// source pattern matches it exactly.
pub fn version_of(transfers: &[Transfer], name: &str) -> Option<String> {
    transfers
        .iter()
        .find_map(|t| t.match_source(name).and_then(|f| f.version))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const UKI: &str = "[Transfer]
ProtectVersion=%A

[Source]
Type=url-file
Path=https://updates.example.com/stable/%a/
MatchPattern=appliance_@v.efi.xz

[Target]
Type=regular-file
Path=/EFI/Linux
PathRelativeTo=boot
MatchPattern=appliance_@v+@l-@d.efi \\
             appliance_@v+@l.efi \\
             appliance_@v.efi
Mode=0444
TriesLeft=3
TriesDone=0
InstancesMax=2
";

    const STORE: &str = "[Source]
Type=url-file
Path=https://updates.example.com/stable/%a/
MatchPattern=store_@v.img.xz

[Target]
Type=regular-file
Path=/var/lib/appliance
MatchPattern=store_@v.img
";

    fn spec() -> Specifiers {
        Specifiers {
            arch: "x86-64".into(),
            image_version: None,
            image_id: None,
        }
    }

    fn parse(text: &str) -> Result<Transfer, TransferError> {
        parse_str("t", Path::new("t.transfer"), text, &spec())
    }

    fn ok(text: &str) -> Transfer {
        parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn pats(p: &[Pattern]) -> Vec<&str> {
        p.iter().map(Pattern::as_str).collect()
    }

    /// A minimal valid transfer with `extra` appended to [Source].
    fn with_source(extra: &str) -> String {
        format!("[Source]\nType=url-file\nPath=https://x/\n{extra}\n[Target]\nPath=/x\n")
    }

    #[test]
    fn parses_example_uki() {
        let t = parse_str(
            "50-uki",
            Path::new("/etc/sysupdate.d/50-uki.transfer"),
            UKI,
            &spec(),
        )
        .unwrap();
        assert_eq!(t.name, "50-uki");
        assert_eq!(t.source_type, SourceType::UrlFile);
        assert_eq!(
            t.source_path.as_deref(),
            Some("https://updates.example.com/stable/x86-64/")
        );
        assert_eq!(pats(&t.source_patterns), ["appliance_@v.efi.xz"]);
        assert_eq!(
            pats(&t.target_patterns),
            [
                "appliance_@v+@l-@d.efi",
                "appliance_@v+@l.efi",
                "appliance_@v.efi"
            ]
        );
        assert!(t.protect_versions.is_empty());
        assert_eq!(t.min_version, None);
        assert!(t.verify);
        assert!(t.features.is_empty());
        assert!(t.warnings.is_empty(), "{:?}", t.warnings);

        let with_version = Specifiers {
            image_version: Some("17".into()),
            ..spec()
        };
        let t = parse_str("50-uki", Path::new("50-uki.transfer"), UKI, &with_version).unwrap();
        assert_eq!(t.protect_versions, ["17"]);
    }

    #[test]
    fn parses_example_store() {
        let t = ok(STORE);
        assert_eq!(pats(&t.source_patterns), ["store_@v.img.xz"]);
        assert_eq!(pats(&t.target_patterns), ["store_@v.img"]);
    }

    #[test]
    fn malformed_files() {
        use TransferError::*;
        let e = parse("[Transfer\nVerify=no\n").unwrap_err();
        assert!(matches!(e, InvalidSectionHeader { line: 1, .. }), "{e}");
        let e = parse("[Sou\"rce]\n").unwrap_err();
        assert!(matches!(e, BadSectionHeader { .. }), "{e}");

        let e = parse(&with_source("MatchPattern=a_@v\nnonsense here")).unwrap_err();
        assert!(
            matches!(e, MissingEquals { line: 5, ref text, .. } if text == "nonsense here"),
            "{e}"
        );
        assert!(e.to_string().starts_with("t.transfer:5: "), "{e}");
        let e = parse(&with_source("=x")).unwrap_err();
        assert!(matches!(e, MissingKey { line: 4, .. }), "{e}");

        let e = parse(&with_source("MatchPattern=a_@v_%x")).unwrap_err();
        assert!(
            matches!(
                e,
                Specifier {
                    line: 4,
                    problem: SpecifierProblem::Unknown { specifier: 'x' },
                    ..
                }
            ),
            "{e}"
        );
        let msg = e.to_string();
        assert!(msg.contains("%x") && msg.contains("t.transfer:4"), "{msg}");
        let e = parse(&with_source("MatchPattern=a_@v_%H")).unwrap_err();
        assert!(matches!(
            e,
            Specifier {
                problem: SpecifierProblem::DeviceSpecific { specifier: 'H', .. },
                ..
            }
        ));
        assert!(
            e.to_string().contains("cannot be known at publish time"),
            "{e}"
        );
        let e = parse(&with_source("MatchPattern=a_%A_@v")).unwrap_err();
        assert!(
            matches!(
                e,
                Specifier {
                    problem: SpecifierProblem::NotGiven { specifier: 'A', .. },
                    ..
                }
            ),
            "{e}"
        );
        let e = parse(
            "[Source]\nType=url-file\nPath=https://u/%M/\nMatchPattern=a_@v\n[Target]\nPath=/x\n",
        )
        .unwrap_err();
        assert!(matches!(
            e,
            Specifier {
                line: 3,
                problem: SpecifierProblem::NotGiven { specifier: 'M', .. },
                ..
            }
        ));

        let e = parse(&with_source("MatchPattern=a\\q_@v")).unwrap_err();
        assert!(
            matches!(e, BadEscape { ref word, .. } if word == "a\\q_@v"),
            "{e}"
        );
        let e = parse(&with_source("MatchPattern=a_@v\\")).unwrap_err();
        // A trailing backslash continues the line, here into "[Target]".
        assert!(
            matches!(e, InvalidPattern { line: 4, .. }) && e.to_string().contains("[Target]"),
            "{e}"
        );
        let e = parse(&with_source("MatchPattern=\"a_@v.raw\"")).unwrap_err();
        assert!(matches!(e, QuotedPattern { .. }), "{e}");
        let e = parse(&with_source("MatchPattern=a_@v\\u00e9")).unwrap_err();
        assert!(matches!(e, NonAsciiPattern { .. }), "{e}");
        let e = parse(&with_source("MatchPattern=a_@v_@x")).unwrap_err();
        assert!(matches!(e, InvalidPattern { line: 4, .. }), "{e}");
        let e = parse(&with_source("MatchPattern=foo.raw")).unwrap_err();
        assert!(e.to_string().contains("has no @v"), "{e}");

        let e = parse(&with_source("")).unwrap_err();
        assert!(matches!(e, MissingSourcePattern { .. }), "{e}");
        let e = parse(&with_source("MatchPattern=a_@v\nMatchPattern=")).unwrap_err();
        assert!(matches!(e, MissingSourcePattern { .. }), "reset: {e}");

        let e = parse("[Source]\nType=url-zip\n").unwrap_err();
        assert!(
            matches!(e, UnknownType { line: 2, section: "Source", ref value, .. } if value == "url-zip"),
            "{e}"
        );
        let e =
            parse("[Source]\nPath=https://x/\nMatchPattern=a_@v\n[Target]\nPath=/x\n").unwrap_err();
        assert!(matches!(e, MissingSourceType { .. }), "{e}");
        let e = parse("[Source]\nType=partition\nPath=/dev/x\nMatchPattern=a_@v\n").unwrap_err();
        assert!(matches!(e, PartitionSource { line: 2, .. }), "{e}");
        let e = parse(&with_source("MatchPattern=a_@v\n[Target]\nType=directory")).unwrap_err();
        assert!(matches!(e, IncompatibleTypes { .. }), "{e}");
        let e = parse(&with_source("MatchPattern=a_@v\n[Target]\nType=url-file")).unwrap_err();
        assert!(matches!(e, InvalidTargetType { .. }), "{e}");
        let e =
            parse("[Source]\nType=url-file\nMatchPattern=a_@v\n[Target]\nPath=/x\n").unwrap_err();
        assert!(matches!(e, MissingSourcePath { .. }), "{e}");
        let e =
            parse("[Source]\nType=url-file\nPath=ftp://x/\nMatchPattern=a_@v\n[Target]\nPath=/x\n")
                .unwrap_err();
        assert!(matches!(e, InvalidSourceUrl { line: 3, .. }), "{e}");
        let e = parse(
            "[Source]\nType=regular-file\nPath=/a/../b\nMatchPattern=a_@v\n[Target]\nPath=/x\n",
        )
        .unwrap_err();
        assert!(matches!(e, InvalidSourcePath { .. }), "{e}");
        let e = parse("[Source]\nType=url-file\nPath=https://x/\nMatchPattern=a_@v\n").unwrap_err();
        assert!(matches!(e, MissingTargetPath { .. }), "{e}");
        let e = parse(
            "[Source]\nType=url-file\nPath=https://x/\nMatchPattern=a_@v\n[Target]\nPath=rel\n",
        )
        .unwrap_err();
        assert!(matches!(e, InvalidTargetPath { .. }), "{e}");
    }

    #[test]
    fn patterns_accumulate_reset_and_dedupe() {
        let t = ok(&with_source(
            "MatchPattern=a_@v.raw b_@v.raw\nMatchPattern=c_@v.raw   a_@v.raw\n\tMatchPattern =  d_@v.raw\t",
        ));
        assert_eq!(
            pats(&t.source_patterns),
            ["a_@v.raw", "b_@v.raw", "c_@v.raw", "d_@v.raw"]
        );
        assert_eq!(
            pats(&t.target_patterns),
            pats(&t.source_patterns),
            "copied from source"
        );

        let t = ok(&with_source(
            "MatchPattern=a_@v.raw\nMatchPattern=\nMatchPattern=b_@v.raw",
        ));
        assert_eq!(pats(&t.source_patterns), ["b_@v.raw"]);
    }

    #[test]
    fn escapes_and_specifiers() {
        let t = ok(&with_source(
            r"MatchPattern=a\x20b_@v.raw c\sd_@v e\x2dq_@v f%%g_@v h%-_@v_%a",
        ));
        assert_eq!(
            pats(&t.source_patterns),
            ["a b_@v.raw", "c d_@v", "e-q_@v", "f%g_@v", "h%-_@v_x86-64"]
        );
        // A trailing stray '%' stays.
        assert_eq!(expand_specifiers("a%", &spec(), 255).unwrap(), "a%");
        assert_eq!(
            expand_specifiers(&"a".repeat(256), &spec(), 255),
            Err(SpecifierProblem::TooLong { len: 256, max: 255 })
        );
        assert!(matches!(
            expand_specifiers("%a", &Specifiers::default(), 255),
            Err(SpecifierProblem::NotGiven { specifier: 'a', .. })
        ));
        let full = Specifiers {
            arch: "arm64".into(),
            image_version: Some("7".into()),
            image_id: Some("appliance".into()),
        };
        assert_eq!(
            expand_specifiers("%M_%A_%a", &full, 255).unwrap(),
            "appliance_7_arm64"
        );
    }

    #[test]
    fn conf_parser_syntax() {
        // Comments, ';' comments, CRLF, comment inside a continuation,
        // continuation at end of file, BOM, escaped backslash is no continuation.
        let text = "\u{feff}# comment\r\n; also\r\n[Source]\r\nType=url-file\r\nPath=https://x/\r\n\
                    MatchPattern=a_@v.raw \\\r\n# dropped comment\r\n   b_@v.raw\r\n[Target]\r\nPath=/x\r\n\
                    MatchPattern=c_@v.raw \\";
        let t = ok(text);
        assert_eq!(pats(&t.source_patterns), ["a_@v.raw", "b_@v.raw"]);
        assert_eq!(pats(&t.target_patterns), ["c_@v.raw"]);

        // Later single-valued assignments override earlier ones.
        let t = ok("[Source]\nType=regular-file\nType=url-file\nPath=https://a/\nPath=https://b/\nMatchPattern=a_@v\n[Target]\nPath=/x\n");
        assert_eq!(t.source_type, SourceType::UrlFile);
        assert_eq!(t.source_path.as_deref(), Some("https://b/"));
    }

    #[test]
    fn warnings_for_what_systemd_ignores() {
        let t = ok(&format!(
            "Stray=1\n[Foo]\nBar=1\nno equals sign is fine in an ignored section\n[X-Mine]\nA=b\n{}\n[Transfer]\nBogus=1\nX-Ok=1\nVerify=maybe\n",
            with_source("MatchPattern=a/b_@v")
        ));
        let msgs: Vec<String> = t.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(msgs.len(), 5, "{msgs:#?}");
        assert!(
            msgs[0].starts_with("t.transfer:1: ") && msgs[0].contains("outside"),
            "{msgs:#?}"
        );
        assert!(msgs[1].contains("[Foo]"));
        assert!(msgs[2].contains("\"Bogus\""));
        assert!(msgs[3].contains("Verify"));
        assert!(msgs[4].contains("262"), "slash in url pattern: {msgs:#?}");
        assert!(t.verify);
    }

    #[test]
    fn transfer_keys() {
        let t = ok(&format!(
            "[Transfer]\nMinVersion=1.2\nProtectVersion=5\nVerify=no\nFeatures=a \"b c\" a\nFeatures=d\nRequisiteFeatures=x\nRequisiteFeatures=\n{}",
            with_source("MatchPattern=a_@v")
        ));
        assert_eq!(t.min_version.as_deref(), Some("1.2"));
        assert_eq!(t.protect_versions, ["5"]);
        assert!(!t.verify);
        assert_eq!(t.features, ["a", "b c", "d"]);
        assert!(t.requisite_features.is_empty());

        let t = ok(&format!(
            "[Transfer]\nMinVersion=1 2\nProtectVersion=%H\n{}",
            with_source("MatchPattern=a_@v")
        ));
        assert_eq!(t.min_version, None);
        assert!(t.protect_versions.is_empty());
        assert_eq!(t.warnings.len(), 1, "{:?}", t.warnings);

        // 254–262 accumulate; an empty value is an invalid version, not a reset.
        let t = ok(&format!(
            "[Transfer]\nProtectVersion=5\nProtectVersion=\nProtectVersion=6\nProtectVersion=bad/v\n{}",
            with_source("MatchPattern=a_@v")
        ));
        assert_eq!(t.protect_versions, ["5", "6"]);
        assert_eq!(t.warnings.len(), 2, "{:?}", t.warnings);
        assert!(t
            .warnings
            .iter()
            .all(|w| w.message.contains("ProtectVersion= ignored")));
    }

    #[test]
    fn extract_words_like_systemd() {
        let words = |s: &str, flags| {
            let mut pos = 0;
            let mut out = Vec::new();
            while let Some(w) = extract_first_word(s.as_bytes(), &mut pos, flags).unwrap() {
                out.push(String::from_utf8(w).unwrap());
            }
            out
        };
        let pattern_flags = ExtractFlags {
            cunescape: true,
            unescape_relax: true,
            ..ExtractFlags::default()
        };
        // Quotes are ordinary characters for MatchPattern=.
        assert_eq!(
            words("  \"a b\"  c\\td \\z", pattern_flags),
            ["\"a", "b\"", "c\td", "\\z"]
        );
        assert_eq!(words("a\\\\b \\101", pattern_flags), ["a\\b", "A"]);
        assert_eq!(
            words("\\x00 \\000", pattern_flags),
            ["\\x00", "\\000"],
            "NUL refused, kept verbatim"
        );
        let strv_flags = ExtractFlags {
            unquote: true,
            retain_escape: true,
            ..ExtractFlags::default()
        };
        assert_eq!(
            words("'a b' c\\d \"e\"f", strv_flags),
            ["a b", "c\\d", "ef"]
        );
        let mut pos = 0;
        assert!(extract_first_word(b"'open", &mut pos, strv_flags).is_err());
    }

    #[test]
    fn physical_line_splitting() {
        assert_eq!(
            physical_lines("a\nb\r\nc\rd\n\ne"),
            ["a", "b", "c", "d", "", "e"]
        );
        assert_eq!(physical_lines("a\n"), ["a"]);
        assert!(physical_lines("").is_empty());
    }

    fn transfers() -> Vec<Transfer> {
        vec![
            parse_str("50-uki", Path::new("50-uki.transfer"), UKI, &spec()).unwrap(),
            parse_str("60-store", Path::new("60-store.transfer"), STORE, &spec()).unwrap(),
        ]
    }

    #[test]
    fn classify_complete_and_incomplete() {
        let ts = transfers();
        let c = classify(
            &ts,
            [
                "appliance_18.efi.xz",
                "store_18.img.xz",
                "appliance_19.efi.xz",
                "SHA256SUMS",
                "SHA256SUMS.gpg",
            ],
        );
        assert_eq!(c.versions.len(), 2);
        let v19 = &c.versions[0];
        assert_eq!(v19.version, "19");
        assert!(!v19.is_complete());
        assert_eq!(v19.missing, ["60-store"]);
        let v18 = &c.versions[1];
        assert_eq!(v18.version, "18");
        assert!(v18.is_complete());
        assert_eq!(v18.files["50-uki"], "appliance_18.efi.xz");
        assert_eq!(v18.files["60-store"], "store_18.img.xz");
        assert_eq!(c.unmatched, ["SHA256SUMS", "SHA256SUMS.gpg"]);
        assert!(c.old_client_conflicts.is_empty());
    }

    #[test]
    fn classify_conflicts_and_unmatched() {
        let ts = transfers();
        let c = classify(
            &ts,
            [
                "appliance_18.efi.xz",
                "appliance_18.efi.xz.sig",
                "store_18.img.xz",
            ],
        );
        assert_eq!(c.unmatched, ["appliance_18.efi.xz.sig"]);
        assert_eq!(c.versions.len(), 1);
        assert!(c.versions[0].is_complete());
        assert_eq!(
            c.old_client_conflicts,
            [Conflict {
                name: "appliance_18.efi.xz.sig".into(),
                transfer: "50-uki".into(),
                version: "18".into(),
                explanation: c.old_client_conflicts[0].explanation.clone(),
            }]
        );
        assert!(c.old_client_conflicts[0].explanation.contains("260"));
        assert_eq!(
            version_of(&ts, "appliance_18.efi.xz").as_deref(),
            Some("18")
        );
        assert_eq!(version_of(&ts, "appliance_18.efi.xz.sig"), None);
        assert_eq!(version_of(&ts, "store_7.img.xz").as_deref(), Some("7"));
    }

    #[test]
    fn classify_order_and_equal_versions() {
        let ts = transfers();
        let c = classify(
            &ts,
            [
                "appliance_1.9.efi.xz",
                "appliance_1.10.efi.xz",
                "store_1.9.img.xz",
                "store_1.010.img.xz",
                "appliance_1.2.efi.xz",
                "appliance_1.02.efi.xz",
                "appliance_1.9.efi.xz",
            ],
        );
        let order: Vec<&str> = c.versions.iter().map(|s| s.version.as_str()).collect();
        assert_eq!(order, ["1.10", "1.9", "1.2"]);
        assert!(
            c.versions[0].is_complete(),
            "1.10 and 1.010 are one version"
        );
        assert_eq!(c.versions[0].files["60-store"], "store_1.010.img.xz");
        assert!(c.versions[1].is_complete());
        let dup = &c.versions[2];
        assert_eq!(
            dup.duplicates,
            [(
                "50-uki".to_owned(),
                vec![
                    "appliance_1.2.efi.xz".to_owned(),
                    "appliance_1.02.efi.xz".to_owned()
                ]
            )]
        );
        assert_eq!(dup.missing, ["60-store"]);
        assert!(!dup.is_complete());
    }

    #[test]
    fn classify_old_client_reads_other_version() {
        // ≤ 260 takes the first pattern that matches a prefix.
        let t = ok(&with_source("MatchPattern=a_@v.raw a_@v.raw.xz"));
        let c = classify(std::slice::from_ref(&t), ["a_1.raw.xz"]);
        assert_eq!(c.versions.len(), 1);
        assert!(c.old_client_conflicts.is_empty(), "same version both ways");
        let t = ok(&with_source("MatchPattern=a_@v.r a_@v.raw.xz"));
        let c = classify(std::slice::from_ref(&t), ["a_1.raw.xz", "a_2.r"]);
        assert_eq!(c.versions.len(), 2);
        assert!(c.old_client_conflicts.is_empty());
        let t = ok(&with_source("MatchPattern=a_@v.x a_@v"));
        let c = classify(std::slice::from_ref(&t), ["a_1.x.y"]);
        assert_eq!(c.versions[0].version, "1.x.y");
        assert_eq!(c.old_client_conflicts.len(), 1);
        assert_eq!(c.old_client_conflicts[0].version, "1");
    }

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let p =
                std::env::temp_dir().join(format!("scratch-transfer-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn load_dir_reads_sorted_transfers_and_dropins() {
        let d = TempDir::new("load");
        fs::write(d.0.join("60-store.transfer"), STORE).unwrap();
        fs::write(d.0.join("50-uki.transfer"), UKI).unwrap();
        fs::write(d.0.join("40-legacy.conf"), STORE).unwrap();
        fs::write(d.0.join(".hidden.transfer"), "garbage").unwrap();
        fs::write(d.0.join("10-masked.transfer"), "").unwrap();
        fs::create_dir(d.0.join("60-store.transfer.d")).unwrap();
        fs::write(
            d.0.join("60-store.transfer.d/override.conf"),
            "[Transfer]\nMinVersion=3\n",
        )
        .unwrap();
        let ts = load_dir(&d.0, &spec()).unwrap();
        let names: Vec<&str> = ts.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["50-uki", "60-store"]);
        assert_eq!(ts[1].min_version.as_deref(), Some("3"));
        assert!(ts[0]
            .warnings
            .iter()
            .any(|w| w.message.contains("40-legacy.conf")));

        let d2 = TempDir::new("legacy");
        fs::write(d2.0.join("50-uki.conf"), UKI).unwrap();
        let ts = load_dir(&d2.0, &spec()).unwrap();
        assert_eq!(ts[0].name, "50-uki");

        let d3 = TempDir::new("empty");
        let e = load_dir(&d3.0, &spec()).unwrap_err();
        assert!(matches!(e, TransferError::NoTransfers { .. }));
        assert!(e.to_string().contains(&d3.0.display().to_string()));

        let d4 = TempDir::new("bad");
        fs::write(d4.0.join("50-bad.transfer"), "[Source\n").unwrap();
        let e = load_dir(&d4.0, &spec()).unwrap_err();
        assert!(e.to_string().contains("50-bad.transfer:1:"), "{e}");

        let e = load_dir(&d4.0.join("missing"), &spec()).unwrap_err();
        assert!(matches!(e, TransferError::Io { .. }));
    }

    proptest! {
        #[test]
        fn parse_str_never_panics(text in any::<String>()) {
            let _ = parse(&text);
        }

        #[test]
        fn parse_str_never_panics_ini(
            lines in proptest::collection::vec(
                "(\\[(Transfer|Source|Target|X)\\]|(Type|Path|MatchPattern|Features|Verify|MinVersion|ProtectVersion)=[ -~]{0,20}|[#;][ -~]{0,5}|[ -~]{0,10}\\\\?)",
                0..12,
            )
        ) {
            let _ = parse(&lines.join("\n"));
        }
    }
}
