//! `sysupdate.d/*.transfer` files, read the way systemd-sysupdate reads them.
//!
//! The publisher has to see the same source patterns the clients see, so
//! this follows systemd's `conf-parser.c` (sections, comments,
//! continuations), `extract_first_word()` and `specifier_printf()` for
//! `MatchPattern=`, and the checks of `transfer_finalize()`. It then answers
//! the publisher's question: which published names form complete versions.
//!
//! `builder` reads the settings, `specifiers` expands `%`, `classify` groups
//! names into versions; the systemd syntax itself is in [`crate::sdsyntax`].

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use crate::pattern::{Fields, Pattern, PatternError};

mod builder;
mod classify;
pub mod component;
mod export;
mod specifiers;
#[cfg(test)]
mod testutil;

use builder::Builder;
pub use classify::{classify, source_patterns, version_of, Classification, Conflict, VersionSet};
pub use component::Stream;
pub use export::{device_files, DeviceFile};
pub use specifiers::{expand_specifiers, SpecifierProblem, Specifiers};

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
    #[error("there is no component {name:?}: {} does not exist; {}", .dir.display(), if .known.is_empty() { "this channel has no components (sysupdate.NAME.d beside the transfers directory)".to_string() } else { format!("the components are: {}", .known.join(", ")) })]
    UnknownComponent {
        name: String,
        dir: PathBuf,
        known: Vec<String>,
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
    pub target: Target,
    /// What systemd would warn about and ignore.
    pub warnings: Vec<TransferWarning>,
}

/// Where a transfer installs, as far as preflight's size checks need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// `[Target] Type=`, or what systemd derives from the source type.
    pub target_type: SourceType,
    /// `[Target] Path=` as written (specifiers are the device's).
    pub path: Option<String>,
    /// `PathRelativeTo=`: `root` (default), `esp`, `xbootldr`, `boot`.
    pub path_relative_to: Option<String>,
    /// `MatchPartitionType=` as written (a DPS name or a GUID).
    pub match_partition_type: Option<String>,
    /// `InstancesMax=` as systemd resolves it: 3 for file targets by
    /// default, `None` (every slot) for partitions.
    pub instances_max: Option<u64>,
}

impl Target {
    /// Whether installs land on the ESP or XBOOTLDR (`PathRelativeTo=esp`,
    /// `boot`, `xbootldr`, or a path under `/efi` or `/boot`), which is
    /// where UKIs live and space is tight.
    pub fn on_boot_partition(&self) -> bool {
        if self.target_type != SourceType::RegularFile && self.target_type != SourceType::Directory
        {
            return false;
        }
        if matches!(
            self.path_relative_to.as_deref(),
            Some("esp" | "boot" | "xbootldr")
        ) {
            return true;
        }
        self.path.as_deref().is_some_and(|p| {
            ["/efi", "/boot"]
                .iter()
                .any(|m| p == *m || p.starts_with(&format!("{m}/")))
        })
    }
}

impl Transfer {
    /// What a systemd ≥ 261 client reads from `name`: the first source
    /// pattern that matches the whole name wins.
    pub fn match_source(&self, name: &str) -> Option<Fields> {
        self.source_patterns.iter().find_map(|p| p.matches(name))
    }
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

#[cfg(test)]
mod tests {
    use super::testutil::{ok, parse, pats, spec, STORE, UKI};
    use super::*;
    use proptest::prelude::*;

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
