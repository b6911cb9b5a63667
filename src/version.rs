//! Version strings as systemd-sysupdate sees them.
//!
//! Ordering is a byte-for-byte port of systemd's `strverscmp_improved()`
//! (`src/fundamental/string-util-fundamental.c`), because the client, not
//! us, decides which published version is "newest". Validity follows
//! `version_is_valid()` across systemd 254–262, whose accepted character
//! sets differ between releases; characters only some releases accept are
//! reported as warnings.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// Longest version systemd accepts (`NAME_MAX`), in bytes.
pub const MAX_LEN: usize = 255;

/// Compares two version strings exactly like systemd's `strverscmp_improved()`.
///
/// Only `[0-9A-Za-z~^.-]` are significant; any other byte just separates
/// segments. `~` sorts before everything (pre-release), then `-` < `^` < `.`;
/// numeric segments beat alphabetic ones, leading zeros are ignored, and a
/// longer alphabetic segment is newer. Like the C code, a string ends at its
/// first NUL byte.
pub fn compare(a: &str, b: &str) -> Ordering {
    let a = until_nul(a.as_bytes());
    let b = until_nul(b.as_bytes());
    // Index past the end reads as NUL, like the C string terminator.
    let at = |s: &[u8], k: usize| s.get(k).copied().unwrap_or(0);
    let (mut i, mut j) = (0usize, 0usize);

    loop {
        // Drop leading invalid characters.
        while at(a, i) != 0 && !is_valid_version_char(at(a, i)) {
            i += 1;
        }
        while at(b, j) != 0 && !is_valid_version_char(at(b, j)) {
            j += 1;
        }

        // '~' marks a pre-release: the string that has it is older.
        if at(a, i) == b'~' || at(b, j) == b'~' {
            let r = (at(a, i) != b'~').cmp(&(at(b, j) != b'~'));
            if r != Ordering::Equal {
                return r;
            }
            i += 1;
            j += 1;
        }

        // At the end of either string, the longer one is newer.
        if at(a, i) == 0 || at(b, j) == 0 {
            return at(a, i).cmp(&at(b, j));
        }

        // '-' (release), '^' (patched), '.' (point release), in that order:
        // the side carrying the prefix the other lacks is older.
        for prefix in [b'-', b'^', b'.'] {
            if at(a, i) == prefix || at(b, j) == prefix {
                let r = (at(a, i) != prefix).cmp(&(at(b, j) != prefix));
                if r != Ordering::Equal {
                    return r;
                }
                i += 1;
                j += 1;
            }
        }

        let (aa, bb);
        if at(a, i).is_ascii_digit() || at(b, j).is_ascii_digit() {
            aa = i + run_len(a, i, u8::is_ascii_digit);
            bb = j + run_len(b, j, u8::is_ascii_digit);

            // A numeric segment is newer than a missing one.
            let r = (aa != i).cmp(&(bb != j));
            if r != Ordering::Equal {
                return r;
            }

            // Leading zeros do not count: 00123 == 123.
            while at(a, i) == b'0' {
                i += 1;
            }
            while at(b, j) == b'0' {
                j += 1;
            }

            // More digits is bigger; same length compares bytewise.
            let r = (aa - i).cmp(&(bb - j));
            if r != Ordering::Equal {
                return r;
            }
            let r = a[i..aa].cmp(&b[j..bb]);
            if r != Ordering::Equal {
                return r;
            }
        } else {
            aa = i + run_len(a, i, u8::is_ascii_alphabetic);
            bb = j + run_len(b, j, u8::is_ascii_alphabetic);

            let n = (aa - i).min(bb - j);
            let r = a[i..i + n].cmp(&b[j..j + n]);
            if r != Ordering::Equal {
                return r;
            }
            // Longer is newer: abc < abcde.
            let r = (aa - i).cmp(&(bb - j));
            if r != Ordering::Equal {
                return r;
            }
        }

        i = aa;
        j = bb;
    }
}

fn until_nul(s: &[u8]) -> &[u8] {
    match s.iter().position(|&c| c == 0) {
        Some(n) => &s[..n],
        None => s,
    }
}

fn run_len(s: &[u8], from: usize, pred: fn(&u8) -> bool) -> usize {
    s.get(from..)
        .map_or(0, |rest| rest.iter().take_while(|c| pred(c)).count())
}

fn is_valid_version_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'~' | b'-' | b'^' | b'.')
}

/// Why a version string cannot be published.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("the version is empty; systemd-sysupdate needs a non-empty version such as \"47\" or \"2025.3.17\"")]
    Empty,
    #[error("version {version:?} is {len} bytes long; systemd refuses versions longer than 255 bytes, so shorten it")]
    TooLong { version: String, len: usize },
    #[error("version {version:?} is not usable: systemd requires a version to be a valid file name, and \".\"/\"..\" are not")]
    DotName { version: String },
    #[error("version {version:?} contains '/' at position {position}; a version becomes part of a file name, so it must not contain '/'")]
    Slash { version: String, position: usize },
    #[error("version {version:?} contains {ch:?} at position {position}; systemd accepts only letters, digits and . _ + - in versions (, ~ ^ on some releases), so replace it")]
    InvalidChar {
        version: String,
        ch: char,
        position: usize,
    },
}

/// Accepted by some systemd releases only, or accepted but likely to sort
/// differently than the release engineer expects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VersionWarning {
    /// `,` is refused by systemd 262 and newer.
    Comma { version: String },
    /// `~` is refused by systemd 251–261.
    Tilde { version: String },
    /// `^` is refused by systemd 251–261.
    Caret { version: String },
    /// `-` followed by letters (`1.0-rc1`) sorts newer than the plain release.
    DashSuffix { version: String, suffix: String },
}

impl fmt::Display for VersionWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Comma { version } => write!(
                f,
                "version {version:?} contains ','; systemd 262 and newer refuse it, so those clients will not see this version"
            ),
            Self::Tilde { version } => write!(
                f,
                "version {version:?} contains '~'; systemd 251–261 refuse it, so those clients will not see this version"
            ),
            Self::Caret { version } => write!(
                f,
                "version {version:?} contains '^'; systemd 251–261 refuse it, so those clients will not see this version"
            ),
            Self::DashSuffix { version, suffix } => write!(
                f,
                "version {version:?} has the suffix \"-{suffix}\", which systemd sorts NEWER than the version without it (1.0-rc1 > 1.0), so clients would not move from it to the final release; use a higher number instead"
            ),
        }
    }
}

/// Checks that `v` can be used as a published version.
///
/// Errors when every systemd release would refuse it; warnings when only
/// some releases accept it or when it orders surprisingly. `_` is valid
/// here, but is the usual separator in `MatchPattern=`, which the pattern
/// code checks.
pub fn validate(v: &str) -> Result<Vec<VersionWarning>, VersionError> {
    if v.is_empty() {
        return Err(VersionError::Empty);
    }
    if v.len() > MAX_LEN {
        return Err(VersionError::TooLong {
            version: v.to_owned(),
            len: v.len(),
        });
    }
    if v == "." || v == ".." {
        return Err(VersionError::DotName {
            version: v.to_owned(),
        });
    }
    for (idx, ch) in v.chars().enumerate() {
        let position = idx + 1;
        if ch == '/' {
            return Err(VersionError::Slash {
                version: v.to_owned(),
                position,
            });
        }
        if !(ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '+' | '-' | ',' | '~' | '^')) {
            return Err(VersionError::InvalidChar {
                version: v.to_owned(),
                ch,
                position,
            });
        }
    }

    let mut warnings = Vec::new();
    let version = || v.to_owned();
    if v.contains(',') {
        warnings.push(VersionWarning::Comma { version: version() });
    }
    if v.contains('~') {
        warnings.push(VersionWarning::Tilde { version: version() });
    }
    if v.contains('^') {
        warnings.push(VersionWarning::Caret { version: version() });
    }
    let bytes = v.as_bytes();
    if let Some(dash) = bytes
        .windows(2)
        .position(|w| w[0] == b'-' && w[1].is_ascii_alphabetic())
    {
        warnings.push(VersionWarning::DashSuffix {
            version: version(),
            suffix: v[dash + 1..].to_owned(),
        });
    }
    Ok(warnings)
}

/// A validated version. Equality and ordering follow [`compare`], so
/// `"1.0" == "1.00"`, just as systemd treats them as the same version;
/// [`Version::as_str`] keeps the exact spelling. No `Hash`: it could not
/// agree with that equality.
#[derive(Clone, Debug)]
pub struct Version(String);

impl Version {
    /// Validates `s` (see [`validate`]); warnings are dropped, call
    /// [`validate`] to see them.
    pub fn parse(s: &str) -> Result<Version, VersionError> {
        validate(s)?;
        Ok(Version(s.to_owned()))
    }

    /// A version as a published name spells it, without validating: it was
    /// accepted when published, and what is served must stay readable even
    /// if today's checks are stricter.
    pub fn published(s: &str) -> Version {
        Version(s.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Version {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Version::parse(s)
    }
}

impl serde::Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Version, D::Error> {
        let s = String::deserialize(d)?;
        Version::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl AsRef<str> for Version {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        compare(&self.0, &other.0) == Ordering::Equal
    }
}

impl Eq for Version {}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        compare(&self.0, &other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use Ordering::{Equal, Greater, Less};

    fn check(a: &str, b: &str, want: Ordering) {
        assert_eq!(compare(a, b), want, "compare({a:?}, {b:?})");
        assert_eq!(compare(b, a), want.reverse(), "compare({b:?}, {a:?})");
    }

    #[test]
    fn measured_table() {
        // Reference §4.4 "Measured results".
        check("1.9", "1.10", Less);
        check("1.0", "1.0.0", Less);
        check("1.0", "1.00", Equal);
        check("01", "1", Equal);
        check("2024.01.01", "2024.1.1", Equal);
        check("1.0~rc1", "1.0", Less);
        check("1.0-rc1", "1.0", Greater);
        check("1.2.3-beta", "1.2.3", Greater);
        check("1.0^p1", "1.0", Greater);
        check("1.0^p1", "1.0.1", Less);
        check("1.0a", "1.0.1", Greater);
        check("1.a", "1.1", Less);
        check("1a", "1.1", Greater);
        check("v1", "1", Less);
        check("v2", "1", Less);
        check("A", "a", Less);
        check("1_2", "1.2", Greater);
        check("1_2", "12", Less);
        check("1+2", "1.2", Greater);
        check("1,2", "1.2", Greater);
        check("1.0+build5", "1.0", Greater);
        check("20240101", "2024.01.01", Greater);
        check("2", "10", Less);
    }

    #[test]
    fn glibc_disagreement_table() {
        // Reference §4.4, "improved" column.
        check("1.01", "1.1", Equal);
        check("1.010", "1.09", Greater);
        check("a", "1", Less);
        check("2024.1", "2024.01", Equal);
        check("1.0+x", "1.0-x", Greater);
    }

    #[test]
    fn systemd_doc_order() {
        // The ordering listed in the comment of strverscmp_improved().
        let order = [
            "122.1",
            "123~rc1-1",
            "123",
            "123-a",
            "123-a.1",
            "123-1",
            "123-1.1",
            "123^post1",
            "123.a-1",
            "123.1-1",
            "123a-1",
            "124-1",
        ];
        for w in order.windows(2) {
            check(w[0], w[1], Less);
        }
    }

    #[test]
    fn edge_cases() {
        check("", "", Equal);
        check("", "1", Less);
        check("~", "", Less);
        check("_", "", Equal);
        check("1\0abc", "1", Equal);
        check("00", "0", Equal);
        check("1.", "1", Greater);
    }

    #[test]
    fn version_type_uses_compare() {
        let a = Version::parse("1.0").unwrap();
        let b = Version::parse("1.00").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.as_str(), "1.0");
        assert_eq!(b.to_string(), "1.00");
        let mut v: Vec<Version> = ["1.10", "1.9", "2", "1.0~rc1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        v.sort();
        let got: Vec<&str> = v.iter().map(Version::as_str).collect();
        assert_eq!(got, ["1.0~rc1", "1.9", "1.10", "2"]);
        assert!(Version::parse("").is_err());
    }

    #[test]
    fn validate_accepts_portable_versions() {
        for v in [
            "47",
            "2025.3.17",
            "1.4.2",
            "1_2",
            "1+build5",
            "A-1",
            "x86-64",
        ] {
            assert_eq!(validate(v), Ok(vec![]), "{v}");
        }
    }

    #[test]
    fn validate_warnings() {
        assert!(matches!(
            validate("1,2").unwrap()[..],
            [VersionWarning::Comma { .. }]
        ));
        assert!(matches!(
            validate("1~rc1").unwrap()[..],
            [VersionWarning::Tilde { .. }]
        ));
        assert!(matches!(
            validate("1^p1").unwrap()[..],
            [VersionWarning::Caret { .. }]
        ));
        let w = validate("1.0-rc1").unwrap();
        assert_eq!(
            w,
            vec![VersionWarning::DashSuffix {
                version: "1.0-rc1".into(),
                suffix: "rc1".into()
            }]
        );
        assert!(w[0].to_string().contains("NEWER"));
        assert_eq!(validate("1.0-1"), Ok(vec![]));
        assert_eq!(validate("1~a,b^c").unwrap().len(), 3);
    }

    #[test]
    fn validate_errors() {
        assert_eq!(validate(""), Err(VersionError::Empty));
        assert!(matches!(
            validate(&"1".repeat(256)),
            Err(VersionError::TooLong { len: 256, .. })
        ));
        assert_eq!(validate(&"1".repeat(255)), Ok(vec![]));
        assert_eq!(
            validate("1/2"),
            Err(VersionError::Slash {
                version: "1/2".into(),
                position: 2
            })
        );
        assert_eq!(
            validate("1.0 beta"),
            Err(VersionError::InvalidChar {
                version: "1.0 beta".into(),
                ch: ' ',
                position: 4
            })
        );
        for bad in ["1:2", "1@2", "é", "1\0", "1%2", "a*"] {
            assert!(
                matches!(validate(bad), Err(VersionError::InvalidChar { .. })),
                "{bad:?}"
            );
        }
        assert!(matches!(validate(".."), Err(VersionError::DotName { .. })));
        let msg = validate("1:2").unwrap_err().to_string();
        assert!(msg.contains("':'") && msg.contains("position 2"), "{msg}");
    }

    proptest! {
        #[test]
        fn compare_never_panics(a in any::<String>(), b in any::<String>()) {
            let _ = compare(&a, &b);
        }

        #[test]
        fn reflexive(a in any::<String>()) {
            prop_assert_eq!(compare(&a, &a), Equal);
        }

        #[test]
        fn antisymmetric(a in "[0-9a-zA-Z.~^+_,-]{0,10}", b in "[0-9a-zA-Z.~^+_,-]{0,10}") {
            prop_assert_eq!(compare(&a, &b), compare(&b, &a).reverse());
        }

        #[test]
        fn antisymmetric_any(a in any::<String>(), b in any::<String>()) {
            prop_assert_eq!(compare(&a, &b), compare(&b, &a).reverse());
        }

        #[test]
        fn transitive(
            a in "[0-9a-z.~^+_-]{0,8}",
            b in "[0-9a-z.~^+_-]{0,8}",
            c in "[0-9a-z.~^+_-]{0,8}",
        ) {
            let v = [&a, &b, &c];
            for x in v {
                for y in v {
                    for z in v {
                        if compare(x, y) != Greater && compare(y, z) != Greater {
                            prop_assert_ne!(compare(x, z), Greater, "{:?} {:?} {:?}", x, y, z);
                        }
                        if compare(x, y) == Equal && compare(y, z) == Equal {
                            prop_assert_eq!(compare(x, z), Equal);
                        }
                    }
                }
            }
        }

        #[test]
        fn validate_never_panics(a in any::<String>()) {
            let _ = validate(&a);
        }
    }
}
