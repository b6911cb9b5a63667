//! The settings of one transfer, accumulated over its main file and
//! drop-ins the way systemd's `config_parse()` and `transfer_finalize()` do.

use std::path::{Path, PathBuf};

use super::{
    expand_specifiers, SourceType, SpecifierProblem, Specifiers, Target, Transfer, TransferError,
    TransferWarning,
};
use crate::pattern::Pattern;
use crate::sdsyntax::{
    ends_with_unescaped_backslash, extract_first_word, parse_boolean, path_is_normalized,
    physical_lines, strip, url_is_valid, ExtractFlags, NAME_MAX, PATH_MAX, WHITESPACE,
};
use crate::version;

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
pub(super) struct Builder<'s> {
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
    /// 0: systemd's default (3 for files, every slot for partitions).
    instances_max: u64,
    target_relative_to: Option<String>,
    match_partition_type: Option<String>,
}

/// Keys systemd knows (254–262) whose values publishing does not need.
const IGNORED_KEYS: &[(Section, &str)] = &[
    (Section::Transfer, "MaxVersion"),
    (Section::Transfer, "ChangeLog"),
    (Section::Transfer, "AppStream"),
    (Section::Source, "PathRelativeTo"),
    (Section::Target, "PartitionUUID"),
    (Section::Target, "PartitionFlags"),
    (Section::Target, "PartitionNoAuto"),
    (Section::Target, "PartitionGrowFileSystem"),
    (Section::Target, "ReadOnly"),
    (Section::Target, "Mode"),
    (Section::Target, "TriesLeft"),
    (Section::Target, "TriesDone"),
    (Section::Target, "RemoveTemporary"),
    (Section::Target, "CurrentSymlink"),
];

/// `DEFAULT_FILE_INSTANCES_MAX` in `sysupdate-transfer.c`.
const DEFAULT_FILE_INSTANCES_MAX: u64 = 3;

const SOURCE_TYPES: &str = "url-file, url-tar, regular-file, directory, subvolume";
const TARGET_TYPES: &str = "partition, regular-file, directory, subvolume";

impl<'s> Builder<'s> {
    pub(super) fn new(spec: &'s Specifiers) -> Self {
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
            instances_max: 0,
            target_relative_to: None,
            match_partition_type: None,
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
    pub(super) fn feed(&mut self, file: &Path, text: &str) -> Result<(), TransferError> {
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
            let lead = l.trim_start_matches(WHITESPACE);
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
            (Section::Target, "PathRelativeTo") => {
                self.target_relative_to = (!value.is_empty()).then(|| value.to_owned())
            }
            (Section::Target, "MatchPartitionType") => {
                self.match_partition_type = (!value.is_empty()).then(|| value.to_owned())
            }
            (Section::Target, "InstancesMax") => self.instances_max(loc, value),
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

    /// `config_parse_instances_max()`: empty resets to the default, 1 is
    /// bumped to 2, anything unparsable is ignored with a warning.
    fn instances_max(&mut self, loc: &Loc, value: &str) {
        if value.is_empty() {
            self.instances_max = 0;
            return;
        }
        match value.parse::<u64>() {
            Ok(1) => {
                self.warn(loc, "InstancesMax=1 is bumped to 2, as systemd does".into());
                self.instances_max = 2;
            }
            Ok(n) => self.instances_max = n,
            Err(_) => self.warn(
                loc,
                format!("InstancesMax={value:?} is not a number; systemd ignores it"),
            ),
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
    pub(super) fn finish(self, name: &str, file: &Path) -> Result<Transfer, TransferError> {
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

        // systemd's default: 3 files, or as many as there are partition slots.
        let instances_max = match (self.instances_max, target_type) {
            (0, SourceType::Partition) => None,
            (0, _) => Some(DEFAULT_FILE_INSTANCES_MAX),
            (n, _) => Some(n),
        };
        let target_path = self.target_path.map(|(p, _)| p);
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
            target: Target {
                target_type,
                path: target_path,
                path_relative_to: self.target_relative_to,
                match_partition_type: self.match_partition_type,
                instances_max,
            },
            warnings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transfer::testutil::{ok, parse, pats, with_source};

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
    fn target_settings_for_preflight() {
        let t = ok(&with_source("MatchPattern=a_@v"));
        assert_eq!(t.target.target_type, SourceType::RegularFile);
        assert_eq!(
            t.target.instances_max,
            Some(3),
            "systemd's default for files"
        );
        assert_eq!(t.target.path.as_deref(), Some("/x"));
        assert!(!t.target.on_boot_partition());

        let t = ok(&format!(
            "{}
InstancesMax=5
PathRelativeTo=boot
Path=/EFI/Linux",
            with_source("MatchPattern=a_@v")
        ));
        assert_eq!(t.target.instances_max, Some(5));
        assert_eq!(t.target.path_relative_to.as_deref(), Some("boot"));
        assert!(t.target.on_boot_partition());

        let t = ok(&format!(
            "{}
Type=partition
Path=/dev/vda
MatchPartitionType=root-arm64
InstancesMax=",
            with_source("MatchPattern=a_@v")
        ));
        assert_eq!(t.target.target_type, SourceType::Partition);
        assert_eq!(t.target.instances_max, None, "every slot");
        assert_eq!(t.target.match_partition_type.as_deref(), Some("root-arm64"));
        assert!(!t.target.on_boot_partition());

        // Bumped, ignored, reset: as systemd does, with warnings.
        let t = ok(&format!(
            "{}
InstancesMax=1",
            with_source("MatchPattern=a_@v")
        ));
        assert_eq!(t.target.instances_max, Some(2));
        let t = ok(&format!(
            "{}
InstancesMax=4
InstancesMax=many",
            with_source("MatchPattern=a_@v")
        ));
        assert_eq!(t.target.instances_max, Some(4));
        assert!(t.warnings.iter().any(|w| w.message.contains("many")));
        let t = ok(&format!(
            "{}
Path=/boot/efi/EFI/Linux",
            with_source("MatchPattern=a_@v")
        ));
        assert!(t.target.on_boot_partition());
        let t = ok(&format!(
            "{}
Path=/bootstrap",
            with_source("MatchPattern=a_@v")
        ));
        assert!(!t.target.on_boot_partition());
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
}
