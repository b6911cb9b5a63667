//! `MatchPattern=` words, ported from systemd's `src/sysupdate/sysupdate-pattern.c`.
//!
//! Clients decide which published files belong to which version with this
//! grammar, so parsing, matching and naming must agree with systemd exactly,
//! including the quirks publishers have to design around (a field ends at
//! the first occurrence of the following literal; systemd ≤ 260 ignores text
//! after the end of the pattern).

use std::fmt;

use crate::sdsyntax::{parse_boolean, parse_mode, safe_atou64};

/// One `@x` field of a pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FieldKind {
    /// `@v`
    Version,
    /// `@u`
    PartitionUuid,
    /// `@f`
    PartitionFlags,
    /// `@a`
    NoAuto,
    /// `@g`
    GrowFs,
    /// `@r`
    ReadOnly,
    /// `@t`
    Mtime,
    /// `@m`
    Mode,
    /// `@s`
    Size,
    /// `@d`
    TriesDone,
    /// `@l`
    TriesLeft,
    /// `@h`
    Sha256,
}

impl FieldKind {
    pub const ALL: [FieldKind; 12] = [
        FieldKind::Version,
        FieldKind::PartitionUuid,
        FieldKind::PartitionFlags,
        FieldKind::NoAuto,
        FieldKind::GrowFs,
        FieldKind::ReadOnly,
        FieldKind::Mtime,
        FieldKind::Mode,
        FieldKind::Size,
        FieldKind::TriesDone,
        FieldKind::TriesLeft,
        FieldKind::Sha256,
    ];

    /// The letter after `@`.
    pub fn marker(self) -> char {
        match self {
            FieldKind::Version => 'v',
            FieldKind::PartitionUuid => 'u',
            FieldKind::PartitionFlags => 'f',
            FieldKind::NoAuto => 'a',
            FieldKind::GrowFs => 'g',
            FieldKind::ReadOnly => 'r',
            FieldKind::Mtime => 't',
            FieldKind::Mode => 'm',
            FieldKind::Size => 's',
            FieldKind::TriesDone => 'd',
            FieldKind::TriesLeft => 'l',
            FieldKind::Sha256 => 'h',
        }
    }

    pub fn from_marker(c: char) -> Option<FieldKind> {
        FieldKind::ALL.into_iter().find(|k| k.marker() == c)
    }

    /// What the field holds, for messages.
    pub fn description(self) -> &'static str {
        match self {
            FieldKind::Version => "version",
            FieldKind::PartitionUuid => "GPT partition UUID",
            FieldKind::PartitionFlags => "GPT partition flags",
            FieldKind::NoAuto => "NoAuto flag",
            FieldKind::GrowFs => "GrowFileSystem flag",
            FieldKind::ReadOnly => "read-only flag",
            FieldKind::Mtime => "modification time",
            FieldKind::Mode => "file mode",
            FieldKind::Size => "size",
            FieldKind::TriesDone => "tries done",
            FieldKind::TriesLeft => "tries left",
            FieldKind::Sha256 => "SHA-256",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for FieldKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "@{} ({})", self.marker(), self.description())
    }
}

/// Values a pattern extracts from, or puts into, a name. Numbers and flags
/// come back parsed; `partition_uuid` in systemd's 32-hex-digit form and
/// `sha256` in lowercase, so formatting what was matched reproduces it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fields {
    pub version: Option<String>,
    pub partition_uuid: Option<String>,
    pub partition_flags: Option<u64>,
    pub no_auto: Option<bool>,
    pub grow_fs: Option<bool>,
    pub read_only: Option<bool>,
    pub mtime: Option<u64>,
    pub mode: Option<u32>,
    pub size: Option<u64>,
    pub tries_done: Option<u64>,
    pub tries_left: Option<u64>,
    pub sha256: Option<String>,
}

/// Why a pattern is refused, or a name cannot be made from it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("MatchPattern {pattern:?} ends with a lone '@'; write \"@@\" for a literal '@'")]
    TrailingAt { pattern: String },
    #[error("MatchPattern {pattern:?} uses the unknown field \"@{marker}\" at position {position}; the fields are @v @u @f @a @g @r @t @m @s @d @l @h, and \"@@\" is a literal '@'")]
    UnknownField {
        pattern: String,
        marker: char,
        position: usize,
    },
    #[error("MatchPattern {pattern:?} uses \"@{marker}\" twice (again at position {position}); each field may appear only once")]
    DuplicateField {
        pattern: String,
        marker: char,
        position: usize,
    },
    #[error("MatchPattern {pattern:?} puts \"@{second}\" right after \"@{first}\" (position {position}); put literal text (or '/') between two fields so systemd can tell where one ends")]
    AdjacentFields {
        pattern: String,
        first: char,
        second: char,
        position: usize,
    },
    #[error("MatchPattern {pattern:?} contains {ch:?} at position {position}; systemd allows only printable ASCII except $ * ? [ ] ! \\ | in patterns")]
    InvalidChar {
        pattern: String,
        ch: char,
        position: usize,
    },
    #[error("MatchPattern {pattern:?} starts with \"**/\", which only systemd 262 and newer understand; sysupdate-publish does not support it, list the files without it")]
    GlobPrefix { pattern: String },
    #[error("MatchPattern {pattern:?} has no @v; systemd requires the version field in every source and target pattern")]
    NoVersion { pattern: String },
    #[error(
        "cannot make a file name from MatchPattern {pattern:?}: no value was given for {field}"
    )]
    MissingField { pattern: String, field: FieldKind },
    #[error("cannot make a file name from MatchPattern {pattern:?}: {field} value {value:?} is not usable: {reason}")]
    InvalidFieldValue {
        pattern: String,
        field: FieldKind,
        value: String,
        reason: String,
    },
    #[error("MatchPattern {pattern:?} would produce the name {name:?}, but systemd would not read the same values back from it (a value contains the literal text that follows its field); choose values without that text")]
    NotRoundTrip { pattern: String, name: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Element {
    Literal(String),
    Field(FieldKind),
    /// `/`: since systemd 255 a separator of its own (subdirectories).
    Slash,
}

/// A parsed `MatchPattern=` word; keeps the text it was parsed from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    elements: Vec<Element>,
}

/// systemd's `valid_char()`: printable ASCII minus characters reserved for
/// future pattern syntax. Non-ASCII is refused outright (systemd's check
/// depends on the signedness of `char` and so on the CPU).
fn valid_char(c: char) -> bool {
    (' '..='~').contains(&c) && !matches!(c, '$' | '*' | '?' | '[' | ']' | '!' | '\\' | '|')
}

impl Pattern {
    /// Parses one pattern word the way `pattern_split()` does (systemd 255+,
    /// where `/` is allowed; see [`Pattern::has_slash`]).
    pub fn parse(text: &str) -> Result<Pattern, PatternError> {
        let err_pattern = || text.to_owned();
        if text.starts_with("**/") {
            return Err(PatternError::GlobPrefix {
                pattern: err_pattern(),
            });
        }

        let mut elements: Vec<Element> = Vec::new();
        let mut at = false;
        let mut last_literal = true;
        let mut last_slash = false;
        let mut found: u16 = 0;
        let mut prev_field: Option<FieldKind> = None;

        for (idx, ch) in text.chars().enumerate() {
            let position = idx + 1;
            if ch == '@' {
                if !at {
                    at = true;
                    continue;
                }
                // "@@": falls through as a literal '@'.
                at = false;
            } else if at {
                // Point at the '@' of the field.
                let position = position - 1;
                let kind =
                    FieldKind::from_marker(ch).ok_or_else(|| PatternError::UnknownField {
                        pattern: err_pattern(),
                        marker: ch,
                        position,
                    })?;
                if found & kind.bit() != 0 {
                    return Err(PatternError::DuplicateField {
                        pattern: err_pattern(),
                        marker: ch,
                        position,
                    });
                }
                if !last_literal && !last_slash {
                    return Err(PatternError::AdjacentFields {
                        pattern: err_pattern(),
                        first: prev_field.map_or('?', FieldKind::marker),
                        second: ch,
                        position,
                    });
                }
                elements.push(Element::Field(kind));
                found |= kind.bit();
                prev_field = Some(kind);
                last_literal = false;
                last_slash = false;
                at = false;
                continue;
            }

            if ch == '/' {
                elements.push(Element::Slash);
                last_literal = false;
                last_slash = true;
                continue;
            }

            if !valid_char(ch) {
                return Err(PatternError::InvalidChar {
                    pattern: err_pattern(),
                    ch,
                    position,
                });
            }
            last_literal = true;
            last_slash = false;
            match elements.last_mut() {
                Some(Element::Literal(l)) => l.push(ch),
                _ => elements.push(Element::Literal(ch.to_string())),
            }
        }

        if at {
            return Err(PatternError::TrailingAt {
                pattern: err_pattern(),
            });
        }
        if found & FieldKind::Version.bit() == 0 {
            return Err(PatternError::NoVersion {
                pattern: err_pattern(),
            });
        }
        Ok(Pattern {
            text: text.to_owned(),
            elements,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True when the pattern contains `/`: systemd 254 refuses such patterns,
    /// and manifest entries with `/` only work for `url-*` sources on 262+.
    pub fn has_slash(&self) -> bool {
        self.elements.contains(&Element::Slash)
    }

    /// Whether the pattern contains field `kind`.
    pub fn has_field(&self, kind: FieldKind) -> bool {
        self.elements.contains(&Element::Field(kind))
    }

    /// The fields in order of appearance.
    pub fn fields(&self) -> impl Iterator<Item = FieldKind> + '_ {
        self.elements.iter().filter_map(|e| match e {
            Element::Field(k) => Some(*k),
            _ => None,
        })
    }

    /// Matches like systemd ≥ 261: the whole name must be consumed.
    pub fn matches(&self, name: &str) -> Option<Fields> {
        self.match_impl(name, true)
    }

    /// Matches like systemd ≤ 260, which accepts any text after the end of
    /// the pattern (`foo_@v.raw` matches `foo_1.raw.xz`).
    pub fn matches_prefix(&self, name: &str) -> Option<Fields> {
        self.match_impl(name, false)
    }

    /// Port of `pattern_match()`. A "retry" result (name ends where the
    /// pattern expects a `/`, i.e. a directory) counts as no match.
    fn match_impl(&self, name: &str, exact: bool) -> Option<Fields> {
        // C strings end at the first NUL.
        let name = name.split('\0').next().unwrap_or("");
        let mut fields = Fields::default();
        let mut p = 0usize;

        for (idx, e) in self.elements.iter().enumerate() {
            let rest = &name[p..];
            match e {
                Element::Slash => {
                    if rest.starts_with('/') {
                        p += 1;
                        continue;
                    }
                    return None;
                }
                Element::Literal(l) => {
                    if !rest.starts_with(l.as_str()) {
                        return None;
                    }
                    p += l.len();
                }
                Element::Field(kind) => {
                    let len = match self.elements.get(idx + 1) {
                        Some(Element::Slash) => rest.find('/').unwrap_or(rest.len()),
                        Some(Element::Literal(l)) => rest.find(l.as_str())?,
                        // Parsing forbids adjacent fields.
                        Some(Element::Field(_)) => return None,
                        None => rest.len(),
                    };
                    store_field(&mut fields, *kind, &rest[..len])?;
                    p += len;
                }
            }
        }

        if exact && p != name.len() {
            return None;
        }
        Some(fields)
    }

    /// Builds the file name for `fields` like systemd's `pattern_format()`
    /// (flags `%x`, booleans `1`/`0`, mode `%03o`, UUID as 32 hex digits,
    /// lowercase hash). Checks that systemd would read the same values back,
    /// so a published name never lands in the wrong version.
    pub fn format(&self, fields: &Fields) -> Result<String, PatternError> {
        let mut out = String::new();
        let mut expected = Fields::default();
        for e in &self.elements {
            match e {
                Element::Literal(l) => out.push_str(l),
                Element::Slash => out.push('/'),
                Element::Field(kind) => {
                    let s = self.format_field(*kind, fields, &mut expected)?;
                    out.push_str(&s);
                }
            }
        }
        match self.matches(&out) {
            Some(back) if back == expected => Ok(out),
            _ => Err(PatternError::NotRoundTrip {
                pattern: self.text.clone(),
                name: out,
            }),
        }
    }

    fn format_field(
        &self,
        kind: FieldKind,
        fields: &Fields,
        expected: &mut Fields,
    ) -> Result<String, PatternError> {
        let missing = || PatternError::MissingField {
            pattern: self.text.clone(),
            field: kind,
        };
        let invalid = |value: String, reason: &str| PatternError::InvalidFieldValue {
            pattern: self.text.clone(),
            field: kind,
            value,
            reason: reason.to_owned(),
        };
        // systemd uses UINT64_MAX as "not set" for these.
        let unset_max = |v: Option<u64>| -> Result<u64, PatternError> {
            match v {
                None => Err(missing()),
                Some(u64::MAX) => Err(invalid(
                    u64::MAX.to_string(),
                    "systemd uses this value to mean \"not set\"",
                )),
                Some(v) => Ok(v),
            }
        };
        let one_zero = |b: bool| if b { "1" } else { "0" }.to_owned();

        Ok(match kind {
            FieldKind::Version => {
                let v = fields.version.as_deref().ok_or_else(missing)?;
                if let Err(e) = crate::version::validate(v) {
                    return Err(invalid(v.to_owned(), &e.to_string()));
                }
                expected.version = Some(v.to_owned());
                v.to_owned()
            }
            FieldKind::PartitionUuid => {
                let u = fields.partition_uuid.as_deref().ok_or_else(missing)?;
                let id = id128_from_string(u).ok_or_else(|| {
                    invalid(
                        u.to_owned(),
                        "expected 32 hex digits or a UUID like 8-4-4-4-12",
                    )
                })?;
                let s = hex_lower(&id);
                expected.partition_uuid = Some(s.clone());
                s
            }
            FieldKind::PartitionFlags => {
                let f = fields.partition_flags.ok_or_else(missing)?;
                expected.partition_flags = Some(f);
                format!("{f:x}")
            }
            FieldKind::NoAuto => {
                let b = fields.no_auto.ok_or_else(missing)?;
                expected.no_auto = Some(b);
                one_zero(b)
            }
            FieldKind::GrowFs => {
                let b = fields.grow_fs.ok_or_else(missing)?;
                expected.grow_fs = Some(b);
                one_zero(b)
            }
            FieldKind::ReadOnly => {
                let b = fields.read_only.ok_or_else(missing)?;
                expected.read_only = Some(b);
                one_zero(b)
            }
            FieldKind::Mtime => {
                let v = unset_max(fields.mtime)?;
                expected.mtime = Some(v);
                v.to_string()
            }
            FieldKind::Mode => {
                let m = fields.mode.ok_or_else(missing)?;
                if m & !0o775 != 0 {
                    return Err(invalid(
                        format!("{m:o}"),
                        "systemd refuses modes with bits outside 0775 (world-writable, setuid, ...)",
                    ));
                }
                expected.mode = Some(m);
                format!("{m:03o}")
            }
            FieldKind::Size => {
                let v = unset_max(fields.size)?;
                expected.size = Some(v);
                v.to_string()
            }
            FieldKind::TriesDone => {
                let v = unset_max(fields.tries_done)?;
                expected.tries_done = Some(v);
                v.to_string()
            }
            FieldKind::TriesLeft => {
                let v = unset_max(fields.tries_left)?;
                expected.tries_left = Some(v);
                v.to_string()
            }
            FieldKind::Sha256 => {
                let h = fields.sha256.as_deref().ok_or_else(missing)?;
                if h.len() != 64 || !h.bytes().all(|c| c.is_ascii_hexdigit()) {
                    return Err(invalid(h.to_owned(), "expected exactly 64 hex digits"));
                }
                let h = h.to_ascii_lowercase();
                expected.sha256 = Some(h.clone());
                h
            }
        })
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for Pattern {
    type Err = PatternError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Pattern::parse(s)
    }
}

/// Validates and stores one extracted value the way `pattern_match()` does;
/// `None` means "no match".
fn store_field(fields: &mut Fields, kind: FieldKind, t: &str) -> Option<()> {
    match kind {
        FieldKind::Version => {
            crate::version::validate(t).ok()?;
            fields.version = Some(t.to_owned());
        }
        FieldKind::PartitionUuid => {
            fields.partition_uuid = Some(hex_lower(&id128_from_string(t)?));
        }
        FieldKind::PartitionFlags => fields.partition_flags = Some(safe_atou64(t, 16)?),
        FieldKind::Mtime => {
            let v = safe_atou64(t, 0)?;
            // USEC_INFINITY is systemd's "unset". (v / 10^6 always fits time_t.)
            if v == u64::MAX {
                return None;
            }
            fields.mtime = Some(v);
        }
        FieldKind::Mode => {
            let m = parse_mode(t)?;
            if m & !0o775 != 0 {
                return None;
            }
            fields.mode = Some(m);
        }
        FieldKind::Size | FieldKind::TriesDone | FieldKind::TriesLeft => {
            let v = safe_atou64(t, 0)?;
            if v == u64::MAX {
                return None;
            }
            match kind {
                FieldKind::Size => fields.size = Some(v),
                FieldKind::TriesDone => fields.tries_done = Some(v),
                _ => fields.tries_left = Some(v),
            }
        }
        FieldKind::NoAuto => fields.no_auto = Some(parse_boolean(t)?),
        FieldKind::GrowFs => fields.grow_fs = Some(parse_boolean(t)?),
        FieldKind::ReadOnly => fields.read_only = Some(parse_boolean(t)?),
        FieldKind::Sha256 => {
            if t.len() != 64 || !t.bytes().all(|c| c.is_ascii_hexdigit()) {
                return None;
            }
            fields.sha256 = Some(t.to_ascii_lowercase());
        }
    }
    Some(())
}

fn hex_lower(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// `sd_id128_from_string()`: 32 hex digits, or the 36-character UUID form
/// with dashes at 8, 13, 18 and 23; either case.
fn id128_from_string(s: &str) -> Option<[u8; 16]> {
    let b = s.as_bytes();
    let mut out = [0u8; 16];
    let (mut n, mut i) = (0usize, 0usize);
    let mut is_guid = false;
    while n < out.len() {
        let c = *b.get(i)?;
        if c == b'-' {
            if i == 8 {
                is_guid = true;
            } else if !(matches!(i, 13 | 18 | 23) && is_guid) {
                return None;
            }
            i += 1;
            continue;
        }
        let hi = unhex(c)?;
        let lo = unhex(*b.get(i + 1)?)?;
        out[n] = (hi << 4) | lo;
        n += 1;
        i += 2;
    }
    if i != if is_guid { 36 } else { 32 } || i != b.len() {
        return None;
    }
    Some(out)
}

fn unhex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> Pattern {
        Pattern::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn version(f: Option<Fields>) -> Option<String> {
        f.and_then(|f| f.version)
    }

    #[test]
    fn parse_accepts_valid() {
        for s in [
            "appliance_@v.efi.xz",
            "appliance_@v+@l-@d.efi",
            "@v",
            "a@@b_@v",
            "foo_@v/@h.raw",
            "@v/@u",
            "part_@v_@u_@f_@a_@g_@r_@t_@m_@s_@d_@l_@h",
            "with space @v",
        ] {
            assert_eq!(p(s).as_str(), s);
            assert_eq!(p(s).to_string(), s);
        }
        assert!(p("foo_@v/x").has_slash());
        assert!(!p("foo_@v.x").has_slash());
        assert_eq!(
            p("a_@v+@l-@d").fields().collect::<Vec<_>>(),
            [
                FieldKind::Version,
                FieldKind::TriesLeft,
                FieldKind::TriesDone
            ]
        );
        assert!(p("a_@v_@h").has_field(FieldKind::Sha256));
    }

    #[test]
    fn parse_rejects_malformed() {
        use PatternError::*;
        let e = |s: &str| Pattern::parse(s).unwrap_err();
        assert!(matches!(e("foo_@v@"), TrailingAt { .. }));
        assert!(matches!(
            e("foo_@v_@x"),
            UnknownField {
                marker: 'x',
                position: 8,
                ..
            }
        ));
        assert!(matches!(e("foo_@v_@/"), UnknownField { marker: '/', .. }));
        assert!(matches!(e("foo_@v_@v"), DuplicateField { marker: 'v', .. }));
        assert!(matches!(
            e("foo_@v@u"),
            AdjacentFields {
                first: 'v',
                second: 'u',
                ..
            }
        ));
        assert!(matches!(e("foo_@@"), NoVersion { .. }));
        assert!(matches!(e(""), NoVersion { .. }));
        assert!(matches!(e("foo.raw"), NoVersion { .. }));
        assert!(matches!(e("**/foo_@v"), GlobPrefix { .. }));
        for bad in ['$', '*', '?', '[', ']', '!', '\\', '|', '\t', '\u{7f}', 'é'] {
            let s = format!("foo{bad}_@v");
            assert!(
                matches!(e(&s), InvalidChar { ch, position: 4, .. } if ch == bad),
                "{s:?}"
            );
        }
        let msg = e("foo_@v.raw@q").to_string();
        assert!(msg.contains("@q") && msg.contains("foo_@v.raw@q"), "{msg}");
        assert!(e("foo").to_string().contains("has no @v"));
    }

    #[test]
    fn matching_table() {
        let uki = p("appliance_@v.efi.xz");
        assert_eq!(
            version(uki.matches("appliance_18.efi.xz")).as_deref(),
            Some("18")
        );
        assert_eq!(uki.matches("appliance_18.efi.xz.asc"), None);
        assert_eq!(
            version(uki.matches_prefix("appliance_18.efi.xz.asc")).as_deref(),
            Some("18")
        );
        assert_eq!(uki.matches("appliance_.efi.xz"), None, "empty version");
        assert_eq!(
            uki.matches("appliance_1 2.efi.xz"),
            None,
            "invalid version char"
        );
        assert_eq!(uki.matches("other_18.efi.xz"), None);
        // First occurrence cut: the version stops at the first ".efi.xz".
        assert_eq!(uki.matches("appliance_1.efi.xz.efi.xz"), None);
        assert_eq!(
            version(uki.matches_prefix("appliance_1.efi.xz.efi.xz")).as_deref(),
            Some("1")
        );

        // A version containing the following literal never matches.
        let two = p("foo_@v_@u.raw.xz");
        let uuid = "0123456789abcdef0123456789abcdef";
        let f = two.matches(&format!("foo_1.2_{uuid}.raw.xz")).unwrap();
        assert_eq!(f.version.as_deref(), Some("1.2"));
        assert_eq!(f.partition_uuid.as_deref(), Some(uuid));
        assert_eq!(two.matches(&format!("foo_1_2_{uuid}.raw.xz")), None);

        // Trailing field takes the rest of the name.
        assert_eq!(
            version(p("foo_@v").matches("foo_1.2.3")).as_deref(),
            Some("1.2.3")
        );

        // Slash elements.
        let dir = p("dir_@v/file_@h");
        let h = "AB".repeat(32);
        let f = dir.matches(&format!("dir_7/file_{h}")).unwrap();
        assert_eq!(f.version.as_deref(), Some("7"));
        assert_eq!(f.sha256, Some("ab".repeat(32)));
        assert_eq!(
            dir.matches("dir_7"),
            None,
            "directory only: systemd's retry"
        );
        assert_eq!(dir.matches("dir_7x"), None);
    }

    #[test]
    fn field_values_validated_like_systemd() {
        let f = |pat: &str, name: &str| p(pat).matches(name);
        // UUID: 32 hex or dashed, any case; stored as 32 lowercase hex.
        let dashed = "01234567-89AB-CDEF-0123-456789ABCDEF";
        assert_eq!(
            f("x_@v_@u", &format!("x_1_{dashed}"))
                .unwrap()
                .partition_uuid
                .as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert!(f("x_@v_@u", "x_1_0123456789abcdef0123456789abcde").is_none());
        assert!(f("x_@v_@u", "x_1_01234567-89abcdef0123456789abcdef").is_none());
        // Flags: hex, optional 0x.
        assert_eq!(f("x_@v_@f", "x_1_1F").unwrap().partition_flags, Some(0x1f));
        assert_eq!(
            f("x_@v_@f", "x_1_0x10").unwrap().partition_flags,
            Some(0x10)
        );
        assert!(f("x_@v_@f", "x_1_g").is_none());
        // Booleans.
        for (s, b) in [
            ("1", true),
            ("YES", true),
            ("on", true),
            ("t", true),
            ("0", false),
            ("off", false),
            ("N", false),
        ] {
            assert_eq!(
                f("x_@v_@a", &format!("x_1_{s}")).unwrap().no_auto,
                Some(b),
                "{s}"
            );
        }
        assert!(f("x_@v_@r", "x_1_2").is_none());
        assert!(f("x_@v_@g", "x_1_").is_none());
        // Decimal numbers (C base 0: leading 0 is octal, 0x hex).
        assert_eq!(f("x_@v_@s", "x_1_1024").unwrap().size, Some(1024));
        assert_eq!(f("x_@v_@s", "x_1_010").unwrap().size, Some(8));
        assert_eq!(f("x_@v_@s", "x_1_0x10").unwrap().size, Some(16));
        assert_eq!(f("x_@v_@s", "x_1_0b11").unwrap().size, Some(3));
        assert!(f("x_@v_@s", "x_1_-1").is_none());
        assert!(
            f("x_@v_@s", "x_1_18446744073709551615").is_none(),
            "UINT64_MAX is unset"
        );
        assert!(
            f("x_@v_@s", "x_1_18446744073709551616").is_none(),
            "overflow"
        );
        assert!(f("x_@v_@d", "x_1_").is_none());
        assert_eq!(f("x_@v_@l", "x_1_3").unwrap().tries_left, Some(3));
        assert_eq!(
            f("x_@v_@t", "x_1_1700000000000000").unwrap().mtime,
            Some(1_700_000_000_000_000)
        );
        // Mode: octal, nothing outside 0775.
        assert_eq!(f("x_@v_@m", "x_1_0644").unwrap().mode, Some(0o644));
        assert_eq!(f("x_@v_@m", "x_1_775").unwrap().mode, Some(0o775));
        assert!(f("x_@v_@m", "x_1_0777").is_none());
        assert!(f("x_@v_@m", "x_1_4755").is_none());
        assert!(f("x_@v_@m", "x_1_+644").is_none());
        assert!(f("x_@v_@m", "x_1_9").is_none());
        // SHA-256: exactly 64 hex.
        assert!(f("x_@v_@h", &format!("x_1_{}", "a".repeat(63))).is_none());
        assert!(f("x_@v_@h", &format!("x_1_{}", "g".repeat(64))).is_none());
    }

    #[test]
    fn format_like_systemd() {
        let pat = p("p_@v_@u_@f_@a_@g_@r_@t_@m_@s_@d_@l_@h");
        let fields = Fields {
            version: Some("1.2".into()),
            partition_uuid: Some("01234567-89ab-cdef-0123-456789abcdef".into()),
            partition_flags: Some(0x1000_0000_0000_00ff),
            no_auto: Some(true),
            grow_fs: Some(false),
            read_only: Some(true),
            mtime: Some(42),
            mode: Some(0o44),
            size: Some(1024),
            tries_done: Some(0),
            tries_left: Some(3),
            sha256: Some("AB".repeat(32)),
        };
        let name = pat.format(&fields).unwrap();
        assert_eq!(
            name,
            format!(
                "p_1.2_0123456789abcdef0123456789abcdef_10000000000000ff_1_0_1_42_044_1024_0_3_{}",
                "ab".repeat(32)
            )
        );
        let back = pat.matches(&name).unwrap();
        assert_eq!(back.version, fields.version);
        assert_eq!(
            back.partition_uuid.as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert_eq!(back.mode, Some(0o44));
        assert_eq!(back.sha256, Some("ab".repeat(32)));
        assert_eq!(pat.format(&back).unwrap(), name);
    }

    #[test]
    fn format_errors() {
        use PatternError::*;
        let only_v = |v: &str| Fields {
            version: Some(v.into()),
            ..Fields::default()
        };
        assert_eq!(p("a_@v.efi").format(&only_v("18")).unwrap(), "a_18.efi");
        assert_eq!(p("a@@_@v").format(&only_v("1")).unwrap(), "a@_1");
        let e = p("a_@v+@l.efi").format(&only_v("18")).unwrap_err();
        assert!(matches!(
            e,
            MissingField {
                field: FieldKind::TriesLeft,
                ..
            }
        ));
        assert!(e.to_string().contains("@l (tries left)"), "{e}");
        assert!(matches!(
            p("a_@v").format(&Fields::default()),
            Err(MissingField {
                field: FieldKind::Version,
                ..
            })
        ));
        assert!(matches!(
            p("a_@v").format(&only_v("1 2")),
            Err(InvalidFieldValue { .. })
        ));
        assert!(matches!(
            p("a_@v_@u").format(&only_v("1_2")),
            Err(MissingField { .. })
        ));
        let with_uuid = Fields {
            partition_uuid: Some("0123456789abcdef0123456789abcdef".into()),
            ..only_v("1_2")
        };
        assert!(matches!(
            p("a_@v_@u").format(&with_uuid),
            Err(NotRoundTrip { .. })
        ));
        let bad_mode = Fields {
            mode: Some(0o777),
            ..only_v("1")
        };
        assert!(matches!(
            p("a_@v_@m").format(&bad_mode),
            Err(InvalidFieldValue {
                field: FieldKind::Mode,
                ..
            })
        ));
        let unset_size = Fields {
            size: Some(u64::MAX),
            ..only_v("1")
        };
        assert!(matches!(
            p("a_@v_@s").format(&unset_size),
            Err(InvalidFieldValue { .. })
        ));
        let bad_hash = Fields {
            sha256: Some("xyz".into()),
            ..only_v("1")
        };
        assert!(matches!(
            p("a_@v_@h").format(&bad_hash),
            Err(InvalidFieldValue { .. })
        ));
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in any::<String>()) {
            let _ = Pattern::parse(&s);
        }

        #[test]
        fn parse_never_panics_patternish(s in "[a-z_.@/vuhxl$ -]{0,16}") {
            let _ = Pattern::parse(&s);
        }

        #[test]
        fn matching_never_panics(
            pat in "[a-z_.@/vuhfsmdlt -]{0,12}",
            name in any::<String>(),
            name2 in "[a-z0-9_./ -]{0,20}",
        ) {
            if let Ok(pat) = Pattern::parse(&pat) {
                let _ = pat.matches(&name);
                let _ = pat.matches_prefix(&name);
                let _ = pat.matches(&name2);
                let _ = pat.matches_prefix(&name2);
            }
        }

        #[test]
        fn format_then_match_returns_version(v in "[A-Za-z0-9][A-Za-z0-9.+-]{0,15}") {
            // (pattern, literal after @v): a version containing that literal
            // cannot round-trip, and format() must say so.
            for (pat, next) in [
                ("appliance_@v.efi.xz", ".efi.xz"),
                ("store_@v.img", ".img"),
                ("@v", "\0"),
                ("x_@v_@l.raw", "_"),
                ("dir_@v/f.raw", "/"),
            ] {
                let pat = Pattern::parse(pat).unwrap();
                let fields = Fields {
                    version: Some(v.clone()),
                    tries_left: Some(3),
                    ..Fields::default()
                };
                match pat.format(&fields) {
                    Ok(name) => prop_assert_eq!(
                        pat.matches(&name).and_then(|f| f.version),
                        Some(v.clone())
                    ),
                    Err(PatternError::NotRoundTrip { .. }) => prop_assert!(v.contains(next)),
                    Err(e) => prop_assert!(false, "{}", e),
                }
            }
        }
    }
}
