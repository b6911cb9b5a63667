//! SHA256SUMS: a byte-exact writer and a strict reader.
//!
//! systemd-sysupdate (254–262) refuses the *whole* manifest on any malformed
//! line, so the writer emits only the one safe form
//! (`<64 lowercase hex> *<name>\n`, sorted, final LF) and the reader rejects
//! everything systemd rejects plus everything we would never write, so a
//! manifest that passes [`parse`] is one every client accepts.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crate::hash::{to_hex, Digest, EMPTY_SHA256};

// The published layout's file names, defined once: every layer (store
// backends, channel state, commands) names these files, and the store must
// not reach up into the channel for them.

/// The manifest in an arch directory.
pub const MANIFEST: &str = "SHA256SUMS";
/// Its detached binary OpenPGP signature, the one this tool publishes.
pub const SIGNATURE: &str = "SHA256SUMS.gpg";
/// Where a remote commit parks the new signature while SHA256SUMS is being
/// replaced (relative to the arch directory). A SHA256SUMS that verifies only
/// with this signature is an interrupted commit; the next write finishes it.
pub const PENDING_SIGNATURE: &str = ".pending/SHA256SUMS.gpg";
/// Signature names systemd 258+ asks for before SHA256SUMS.gpg; anything but
/// a 404 for them makes the device give up.
pub const SIGNATURE_FALLBACKS: [&str; 3] = [
    "SHA256SUMS.sha256.asc",
    "SHA256SUMS.sha256.gpg",
    "SHA256SUMS.asc",
];
/// The channel's publisher-side history, at the channel root (devices never read it).
pub const LEDGER: &str = "ledger.jsonl";

/// Prefix of the freshness marker entry (systemd 260+); older clients ignore it.
pub const BEST_BEFORE_PREFIX: &str = "BEST-BEFORE-";

/// systemd's NAME_MAX check in `filename_is_valid()`.
pub const NAME_MAX: usize = 255;

/// Parsed or to-be-written SHA256SUMS.
///
/// `entries` is a `BTreeMap<String, _>`, which orders by bytes: exactly the
/// `LC_ALL=C` order we emit. The `BEST-BEFORE-*` marker lives in `best_before`,
/// never in `entries`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Manifest {
    pub entries: BTreeMap<String, Digest>,
    pub best_before: Option<Date>,
}

/// A proleptic Gregorian calendar date (UTC), enough for `BEST-BEFORE-YYYY-MM-DD`
/// without pulling in chrono.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    pub year: i32,
    pub month: u32,
    pub day: u32,
}

/// A string that is not a strict `YYYY-MM-DD` calendar date.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid date {0:?}: expected YYYY-MM-DD with a real calendar day, e.g. 2027-01-31")]
pub struct DateError(pub String);

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

// Howard Hinnant's days_from_civil / civil_from_days, in i64.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let (m, d) = (i64::from(m), i64::from(d));
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl Date {
    /// A validated date, or `None` if the day does not exist.
    pub fn new(year: i32, month: u32, day: u32) -> Option<Date> {
        let d = Date { year, month, day };
        d.is_valid().then_some(d)
    }

    /// Whether month and day form a real calendar day (fields are public, so check).
    pub fn is_valid(&self) -> bool {
        (1..=12).contains(&self.month)
            && self.day >= 1
            && self.day <= days_in_month(i64::from(self.year), self.month)
    }

    /// Date of the given day number (0 = 1970-01-01). Saturates at the `i32` year range.
    pub fn from_days_since_epoch(days: i64) -> Date {
        let min = days_from_civil(i64::from(i32::MIN), 1, 1);
        let max = days_from_civil(i64::from(i32::MAX), 12, 31);
        let z = days.clamp(min, max) + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Date {
            year: year as i32,
            month,
            day,
        }
    }

    /// Day number since 1970-01-01 (negative before).
    pub fn to_days_since_epoch(&self) -> i64 {
        days_from_civil(i64::from(self.year), self.month, self.day)
    }

    /// UTC calendar date of a Unix timestamp.
    pub fn from_unix(secs: i64) -> Date {
        Date::from_days_since_epoch(secs.div_euclid(86_400))
    }

    /// Strict `YYYY-MM-DD`: exactly 4+2+2 ASCII digits and a day that exists.
    pub fn parse(s: &str) -> Result<Date, DateError> {
        let err = || DateError(s.to_owned());
        let b = s.as_bytes();
        let shape_ok = b.len() == 10
            && b[4] == b'-'
            && b[7] == b'-'
            && b.iter()
                .enumerate()
                .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
        if !shape_ok {
            return Err(err());
        }
        let num = |r: std::ops::Range<usize>| s[r].parse::<u32>().map_err(|_| err());
        Date::new(num(0..4)? as i32, num(5..7)?, num(8..10)?).ok_or_else(err)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// As `YYYY-MM-DD`, the way the history records BEST-BEFORE dates.
impl serde::Serialize for Date {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Date {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Date, D::Error> {
        let s = String::deserialize(d)?;
        Date::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for Date {
    type Err = DateError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Date::parse(s)
    }
}

/// Name of the freshness marker entry for `date`.
pub fn best_before_name(date: Date) -> String {
    format!("{BEST_BEFORE_PREFIX}{date}")
}

/// Why a file name cannot be listed in SHA256SUMS.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("file name is empty")]
    Empty,
    #[error(
        "file name {name:?} is {len} bytes; systemd allows at most 255 (NAME_MAX); shorten it"
    )]
    TooLong { name: String, len: usize },
    #[error("file name {0:?} is not a file; `.` and `..` cannot be listed")]
    DotOrDotDot(String),
    #[error("file name {0:?} contains `/`; systemd 254–261 refuse the whole manifest for sub-paths, so publish the file flat in the channel directory")]
    Slash(String),
    #[error("file name {name:?} contains control character U+{:04X}; systemd refuses the whole manifest, rename the file", u32::from(*.ch))]
    ControlChar { name: String, ch: char },
    #[error("file name {0:?} starts with `\\`; systemd does not support sha256sum's escaped names, rename the file")]
    Backslash(String),
    #[error("file name {0:?} contains `%`; systemd 262 refuses the whole manifest for it, rename the file")]
    Percent(String),
    #[error("file name {name:?} contains {ch:?}; systemd fetches `<Path>/<name>` without percent-encoding, so only [A-Za-z0-9._+~-] are allowed, rename the file")]
    UnsafeChar { name: String, ch: char },
}

/// Checks that `name` is safe to publish in SHA256SUMS for every client 254–262.
///
/// Beyond systemd's own rules (non-empty, ≤ 255 bytes, no `/`, not `.`/`..`,
/// no control characters, no leading `\`, no `%`), only `[A-Za-z0-9._+~-]`
/// is allowed because systemd appends the name to the URL verbatim.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    let owned = || name.to_owned();
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > NAME_MAX {
        return Err(NameError::TooLong {
            name: owned(),
            len: name.len(),
        });
    }
    if name == "." || name == ".." {
        return Err(NameError::DotOrDotDot(owned()));
    }
    if name.contains('/') {
        return Err(NameError::Slash(owned()));
    }
    if let Some(ch) = name.chars().find(|c| c.is_control()) {
        return Err(NameError::ControlChar { name: owned(), ch });
    }
    if name.starts_with('\\') {
        return Err(NameError::Backslash(owned()));
    }
    if name.contains('%') {
        return Err(NameError::Percent(owned()));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '~' | '-');
    if let Some(ch) = name.chars().find(|&c| !allowed(c)) {
        return Err(NameError::UnsafeChar { name: owned(), ch });
    }
    Ok(())
}

/// `SHA256SUMS` and its signatures (`SHA256SUMS.gpg`, `.sha256.asc`, …): never payloads.
pub fn is_signature_or_manifest_name(name: &str) -> bool {
    name.starts_with(MANIFEST)
}

/// Decodes exactly 64 hex digits (either case) into a digest.
pub fn hex_digest_from_str(s: &str) -> Option<Digest> {
    let mut d = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    hex::decode_to_slice(s, &mut d).ok()?;
    Some(d)
}

/// An error in SHA256SUMS, with the 1-based line it refers to (0 = the whole file).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("SHA256SUMS{}: {kind}", line_suffix(*.line))]
pub struct ManifestError {
    pub line: usize,
    pub kind: ManifestErrorKind,
}

fn line_suffix(line: usize) -> String {
    if line == 0 {
        String::new()
    } else {
        format!(" line {line}")
    }
}

const REFUSED: &str = "systemd-sysupdate refuses the whole manifest";

/// What is wrong; see [`ManifestError`] for where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ManifestErrorKind {
    #[error("the file is empty; systemd 254–260 cannot download an empty SHA256SUMS, so list at least one file or a BEST-BEFORE marker")]
    EmptyFile,
    #[error("nothing to publish: systemd 254–260 cannot download an empty SHA256SUMS; add a payload or a BEST-BEFORE date")]
    EmptyManifest,
    #[error("contains a NUL byte ({REFUSED}); is this a binary file?")]
    Nul,
    #[error("is not valid UTF-8 ({REFUSED})")]
    NotUtf8,
    #[error("contains a carriage return, i.e. CRLF line endings ({REFUSED}); convert to LF")]
    CarriageReturn,
    #[error("contains a tab ({REFUSED}); separate hash and name with ` *`")]
    Tab,
    #[error("blank lines are not allowed ({REFUSED})")]
    BlankLine,
    #[error("comment lines are not allowed ({REFUSED})")]
    Comment,
    #[error("starts with `\\`, sha256sum's escaped-name form ({REFUSED}); rename the file so it needs no escaping")]
    Escaped,
    #[error("line is {len} bytes with its newline, shorter than the 67 a `<64 hex> *<name>` line needs ({REFUSED})")]
    TooShort { len: usize },
    #[error("the first 64 characters are not a hexadecimal SHA-256 ({REFUSED})")]
    BadHash,
    #[error("missing the single space after the hash ({REFUSED})")]
    MissingSpace,
    #[error("missing the `*` (binary) or ` ` (text) marker after the hash and space ({REFUSED})")]
    MissingMarker,
    #[error("the file name is empty ({REFUSED})")]
    EmptyName,
    #[error("{0}")]
    InvalidName(NameError),
    #[error("the last line has no final newline; the file looks truncated (systemd says \"Truncated manifest file\" and refuses it)")]
    Truncated,
    #[error("{name:?} is listed twice (first on line {first_line}); this tool never writes duplicates and clients would pick an arbitrary one")]
    Duplicate { name: String, first_line: usize },
    #[error("{name:?} is not BEST-BEFORE-YYYY-MM-DD with a real calendar date")]
    BadBestBefore { name: String },
    #[error(
        "BEST-BEFORE date {0} is outside the years 0000–9999 and cannot be written as YYYY-MM-DD"
    )]
    BestBeforeOutOfRange(Date),
    #[error("the BEST-BEFORE entry must carry the SHA-256 of the empty file (e3b0c442…b855); systemd only warns, this tool refuses")]
    BestBeforeHash,
    #[error("a second BEST-BEFORE entry (first on line {first_line}); only one is allowed")]
    MultipleBestBefore { first_line: usize },
    #[error("{0:?} starts with BEST-BEFORE-, which systemd 260+ reads as a freshness marker; set `best_before` instead of listing it as a file")]
    ReservedName(String),
}

fn err(line: usize, kind: ManifestErrorKind) -> ManifestError {
    ManifestError { line, kind }
}

/// All lines in output order (best-before marker sorted in like any name).
fn lines(m: &Manifest) -> Vec<(Cow<'_, str>, &Digest)> {
    let mut v: Vec<(Cow<'_, str>, &Digest)> = m
        .entries
        .iter()
        .map(|(n, d)| (Cow::Borrowed(n.as_str()), d))
        .collect();
    if let Some(date) = m.best_before {
        v.push((Cow::Owned(best_before_name(date)), &EMPTY_SHA256));
    }
    v.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    v
}

/// Renders `<64 lowercase hex> *<name>\n` per entry, sorted by name bytes, with
/// the BEST-BEFORE marker sorted in among them. No validation: use
/// [`render_checked`] for anything that will be published.
pub fn render(m: &Manifest) -> Vec<u8> {
    let lines = lines(m);
    let mut out = Vec::with_capacity(lines.iter().map(|(n, _)| n.len() + 67).sum());
    for (name, digest) in lines {
        out.extend_from_slice(to_hex(digest).as_bytes());
        out.extend_from_slice(b" *");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    out
}

/// [`render`], but refuses manifests that some client would reject: empty
/// ones, invalid names, and `BEST-BEFORE-*` names smuggled into `entries`.
/// Line numbers in errors are the lines the entry would have had.
pub fn render_checked(m: &Manifest) -> Result<Vec<u8>, ManifestError> {
    if m.entries.is_empty() && m.best_before.is_none() {
        return Err(err(0, ManifestErrorKind::EmptyManifest));
    }
    let marker = m.best_before.map(|date| (best_before_name(date), date));
    for (i, (name, _)) in lines(m).iter().enumerate() {
        let line = i + 1;
        if let Some((_, date)) = marker.as_ref().filter(|(n, _)| n == name) {
            let date = *date;
            if !date.is_valid() {
                return Err(err(
                    line,
                    ManifestErrorKind::BadBestBefore {
                        name: name.to_string(),
                    },
                ));
            }
            if !(0..=9999).contains(&date.year) {
                return Err(err(line, ManifestErrorKind::BestBeforeOutOfRange(date)));
            }
            // A file entry with the very same name would make it appear twice.
            if m.entries.contains_key(name.as_ref()) {
                return Err(err(line, ManifestErrorKind::ReservedName(name.to_string())));
            }
            continue;
        }
        if name.starts_with(BEST_BEFORE_PREFIX) {
            return Err(err(line, ManifestErrorKind::ReservedName(name.to_string())));
        }
        validate_name(name).map_err(|e| err(line, ManifestErrorKind::InvalidName(e)))?;
    }
    Ok(render(m))
}

/// Strict SHA256SUMS reader.
///
/// Rejects, with the 1-based line number, everything systemd-sysupdate
/// rejects (NUL, non-UTF-8, control characters, escapes, short lines, bad
/// hex, missing separator/marker, missing final LF, invalid names) and what
/// we never write (comments, blank lines, names outside `[A-Za-z0-9._+~-]`,
/// duplicates, an empty file). Upper-case hex and the text-mode marker
/// (`<hex>  name`) are accepted, as systemd does.
///
/// A `BEST-BEFORE-*` entry must be a valid date, appear at most once and carry
/// [`EMPTY_SHA256`]; systemd only warns about another hash, we are strict.
pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
    use ManifestErrorKind as K;
    let line_of = |pos: usize| bytes[..pos].iter().filter(|&&b| b == b'\n').count() + 1;

    if bytes.is_empty() {
        return Err(err(1, K::EmptyFile));
    }
    if let Some(pos) = bytes.iter().position(|&b| b == 0) {
        return Err(err(line_of(pos), K::Nul));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| err(line_of(e.valid_up_to()), K::NotUtf8))?;

    let mut m = Manifest::default();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut best_before_line: Option<usize> = None;
    let mut rest = text;
    let mut lineno = 0;
    while !rest.is_empty() {
        lineno += 1;
        let Some(nl) = rest.find('\n') else {
            return Err(err(lineno, K::Truncated));
        };
        let line = &rest[..nl];
        rest = &rest[nl + 1..];
        let e = |k| err(lineno, k);

        if line.is_empty() {
            return Err(e(K::BlankLine));
        }
        if line.starts_with('#') {
            return Err(e(K::Comment));
        }
        if line.starts_with('\\') {
            return Err(e(K::Escaped));
        }
        if line.contains('\r') {
            return Err(e(K::CarriageReturn));
        }
        if line.contains('\t') {
            return Err(e(K::Tab));
        }
        // systemd's `left < 67` counts the newline; a 66-byte line is a valid
        // prefix with an empty name.
        if line.len() < 66 {
            return Err(e(K::TooShort {
                len: line.len() + 1,
            }));
        }
        let b = line.as_bytes();
        if !b[..64].iter().all(u8::is_ascii_hexdigit) {
            return Err(e(K::BadHash));
        }
        // All 64 bytes are ASCII, so slicing at 64 is on a char boundary.
        let digest = hex_digest_from_str(&line[..64]).ok_or_else(|| e(K::BadHash))?;
        if b[64] != b' ' {
            return Err(e(K::MissingSpace));
        }
        if b[65] != b'*' && b[65] != b' ' {
            return Err(e(K::MissingMarker));
        }
        let name = &line[66..];
        if name.is_empty() {
            return Err(e(K::EmptyName));
        }

        if let Some(date_str) = name.strip_prefix(BEST_BEFORE_PREFIX) {
            let date = Date::parse(date_str).map_err(|_| {
                e(K::BadBestBefore {
                    name: name.to_owned(),
                })
            })?;
            if let Some(first_line) = best_before_line {
                return Err(e(K::MultipleBestBefore { first_line }));
            }
            if digest != EMPTY_SHA256 {
                return Err(e(K::BestBeforeHash));
            }
            best_before_line = Some(lineno);
            m.best_before = Some(date);
            continue;
        }

        validate_name(name).map_err(|ne| e(K::InvalidName(ne)))?;
        if let Some(&first_line) = seen.get(name) {
            return Err(e(K::Duplicate {
                name: name.to_owned(),
                first_line,
            }));
        }
        seen.insert(name, lineno);
        m.entries.insert(name.to_owned(), digest);
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ManifestErrorKind as K;

    const H1: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const E: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn d(hex: &str) -> Digest {
        hex_digest_from_str(hex).unwrap()
    }

    fn manifest(entries: &[(&str, Digest)], bb: Option<Date>) -> Manifest {
        Manifest {
            entries: entries.iter().map(|(n, h)| (n.to_string(), *h)).collect(),
            best_before: bb,
        }
    }

    type NamePred = fn(&NameError) -> bool;
    type KindPred = fn(&ManifestErrorKind) -> bool;

    fn parse_err(s: &[u8]) -> ManifestError {
        parse(s).expect_err("should be rejected")
    }

    // ---- Date ----

    #[test]
    fn date_epoch_and_known_days() {
        assert_eq!(
            Date::from_days_since_epoch(0),
            Date::new(1970, 1, 1).unwrap()
        );
        assert_eq!(
            Date::from_days_since_epoch(-1),
            Date::new(1969, 12, 31).unwrap()
        );
        assert_eq!(Date::new(2000, 3, 1).unwrap().to_days_since_epoch(), 11_017);
        assert_eq!(
            Date::from_unix(1_700_000_000),
            Date::new(2023, 11, 14).unwrap()
        );
        assert_eq!(Date::from_unix(-1), Date::new(1969, 12, 31).unwrap());
        assert_eq!(
            Date::from_unix(951_782_400),
            Date::new(2000, 2, 29).unwrap()
        );
    }

    #[test]
    fn date_saturates_instead_of_overflowing() {
        assert_eq!(Date::from_days_since_epoch(i64::MAX).year, i32::MAX);
        assert_eq!(Date::from_days_since_epoch(i64::MIN).year, i32::MIN);
        let _ = Date::from_unix(i64::MIN);
    }

    #[test]
    fn date_parse_strict() {
        assert_eq!(
            Date::parse("2027-02-28").unwrap(),
            Date::new(2027, 2, 28).unwrap()
        );
        assert_eq!(Date::parse("2028-02-29").unwrap().to_string(), "2028-02-29");
        for bad in [
            "2027-02-29",
            "1900-02-29",
            "2027-13-01",
            "2027-00-10",
            "2027-01-00",
            "2027-04-31",
            "2027-1-01",
            "27-01-01",
            "2027/01/01",
            "2027-01-01 ",
            " 2027-01-01",
            "+027-01-01",
            "2027-01-0x",
            "",
            "20270101",
            "２０２７-01-01",
        ] {
            assert!(Date::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Date::parse("2000-02-29").is_ok());
        assert!(Date::parse("x")
            .unwrap_err()
            .to_string()
            .contains("YYYY-MM-DD"));
    }

    proptest! {
        #[test]
        fn date_days_round_trip(days in -10_000_000i64..10_000_000) {
            let date = Date::from_days_since_epoch(days);
            prop_assert!(date.is_valid());
            prop_assert_eq!(date.to_days_since_epoch(), days);
            if (0..=9999).contains(&date.year) {
                prop_assert_eq!(Date::parse(&date.to_string()).unwrap(), date);
            }
        }
    }

    // ---- names ----

    #[test]
    fn names() {
        for ok in [
            "a",
            "store_1.img.xz",
            "foo_1.2.3~rc1+git-x.raw",
            ".hidden",
            "...",
            &"x".repeat(255),
        ] {
            assert_eq!(validate_name(ok), Ok(()), "{ok:?}");
        }
        let cases: [(&str, NamePred); 12] = [
            ("", |e| matches!(e, NameError::Empty)),
            (".", |e| matches!(e, NameError::DotOrDotDot(_))),
            ("..", |e| matches!(e, NameError::DotOrDotDot(_))),
            ("a/b", |e| matches!(e, NameError::Slash(_))),
            ("a\rb", |e| {
                matches!(e, NameError::ControlChar { ch: '\r', .. })
            }),
            ("a\tb", |e| {
                matches!(e, NameError::ControlChar { ch: '\t', .. })
            }),
            ("a\x7fb", |e| {
                matches!(e, NameError::ControlChar { ch: '\x7f', .. })
            }),
            ("\\a", |e| matches!(e, NameError::Backslash(_))),
            ("a%20b", |e| matches!(e, NameError::Percent(_))),
            ("a b", |e| {
                matches!(e, NameError::UnsafeChar { ch: ' ', .. })
            }),
            ("a?b", |e| {
                matches!(e, NameError::UnsafeChar { ch: '?', .. })
            }),
            ("ü.raw", |e| {
                matches!(e, NameError::UnsafeChar { ch: 'ü', .. })
            }),
        ];
        for (name, pred) in cases {
            let e = validate_name(name).unwrap_err();
            assert!(pred(&e), "{name:?}: {e:?}");
        }
        assert!(matches!(
            validate_name(&"x".repeat(256)),
            Err(NameError::TooLong { len: 256, .. })
        ));
        let msg = validate_name("a#b").unwrap_err().to_string();
        assert!(
            msg.contains("'#'") && msg.contains("without percent-encoding"),
            "{msg}"
        );
    }

    #[test]
    fn signature_names() {
        for n in [
            "SHA256SUMS",
            "SHA256SUMS.gpg",
            "SHA256SUMS.sha256.asc",
            "SHA256SUMS.asc",
        ] {
            assert!(is_signature_or_manifest_name(n));
        }
        for n in ["sha256sums", "x_SHA256SUMS", "foo.raw"] {
            assert!(!is_signature_or_manifest_name(n));
        }
    }

    #[test]
    fn hex_helper() {
        assert_eq!(hex_digest_from_str(E), Some(EMPTY_SHA256));
        assert_eq!(hex_digest_from_str(&E.to_uppercase()), Some(EMPTY_SHA256));
        assert_eq!(hex_digest_from_str(&E[..63]), None);
        assert_eq!(hex_digest_from_str(&format!("{}g", &E[..63])), None);
        assert_eq!(hex_digest_from_str(&format!("{E}0")), None);
    }

    // ---- render ----

    #[test]
    fn render_golden() {
        let m = manifest(
            &[
                ("b.raw.xz", d(H1)),
                ("a.raw.xz", EMPTY_SHA256),
                ("B.raw", d(H1)),
            ],
            None,
        );
        let want = format!("{H1} *B.raw\n{E} *a.raw.xz\n{H1} *b.raw.xz\n");
        assert_eq!(String::from_utf8(render(&m)).unwrap(), want);
        assert_eq!(render_checked(&m).unwrap(), want.as_bytes());
    }

    #[test]
    fn render_best_before_is_sorted_among_names() {
        let m = manifest(
            &[
                ("a.raw", d(H1)),
                ("Ba", d(H1)),
                ("A.raw", d(H1)),
                ("0.raw", d(H1)),
            ],
            Date::new(2027, 1, 31),
        );
        let want = format!(
            "{H1} *0.raw\n{H1} *A.raw\n{E} *BEST-BEFORE-2027-01-31\n{H1} *Ba\n{H1} *a.raw\n"
        );
        assert_eq!(
            String::from_utf8(render_checked(&m).unwrap()).unwrap(),
            want
        );
        // Only the marker: still publishable.
        let only = manifest(&[], Date::new(2030, 12, 1));
        assert_eq!(
            render_checked(&only).unwrap(),
            format!("{E} *BEST-BEFORE-2030-12-01\n").as_bytes()
        );
    }

    #[test]
    fn render_checked_refuses() {
        let e = render_checked(&Manifest::default()).unwrap_err();
        assert_eq!(e, err(0, K::EmptyManifest));
        assert!(
            e.to_string().starts_with("SHA256SUMS: nothing to publish"),
            "{e}"
        );
        assert!(e.to_string().contains("254–260"));
        assert!(render(&Manifest::default()).is_empty());

        let e = render_checked(&manifest(&[("a", d(H1)), ("b c", d(H1))], None)).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(matches!(
            e.kind,
            K::InvalidName(NameError::UnsafeChar { ch: ' ', .. })
        ));

        let e = render_checked(&manifest(&[("BEST-BEFORE-2027-01-01", EMPTY_SHA256)], None))
            .unwrap_err();
        assert!(matches!(e.kind, K::ReservedName(_)), "{e}");

        let e = render_checked(&manifest(
            &[("BEST-BEFORE-2027-01-01", EMPTY_SHA256)],
            Date::new(2027, 1, 1),
        ))
        .unwrap_err();
        assert!(matches!(e.kind, K::ReservedName(_)), "{e}");

        let bad = Date {
            year: 2027,
            month: 2,
            day: 30,
        };
        let e = render_checked(&manifest(&[("a", d(H1))], Some(bad))).unwrap_err();
        assert!(matches!(e.kind, K::BadBestBefore { .. }), "{e}");
        let far = Date::new(10_000, 1, 1).unwrap();
        let e = render_checked(&manifest(&[("a", d(H1))], Some(far))).unwrap_err();
        assert!(matches!(e.kind, K::BestBeforeOutOfRange(_)), "{e}");
    }

    // ---- parse ----

    #[test]
    fn parse_accepts_what_systemd_accepts() {
        let text = format!(
            "{H1} *b.raw\n{} *a.raw\n{H1}  text-mode.raw\n{E} *BEST-BEFORE-2027-03-04\n",
            H1.to_uppercase()
        );
        let m = parse(text.as_bytes()).unwrap();
        assert_eq!(m.entries.len(), 3);
        assert_eq!(m.entries["a.raw"], d(H1));
        assert_eq!(m.entries["text-mode.raw"], d(H1));
        assert_eq!(m.best_before, Date::new(2027, 3, 4));
    }

    #[test]
    fn round_trip_golden() {
        let m = manifest(
            &[("x_1.raw.xz", d(H1)), ("x_2.raw.xz", d(E))],
            Date::new(2026, 12, 24),
        );
        let bytes = render_checked(&m).unwrap();
        assert_eq!(parse(&bytes).unwrap(), m);
    }

    #[test]
    fn parse_rejects_with_line_numbers() {
        let ok = format!("{H1} *ok\n");
        let cases: Vec<(Vec<u8>, usize, KindPred)> = vec![
            (b"".to_vec(), 1, |k| matches!(k, K::EmptyFile)),
            (format!("{ok}{H1} *a\0b\n").into_bytes(), 2, |k| {
                matches!(k, K::Nul)
            }),
            (
                [
                    ok.as_bytes(),
                    format!("{H1} *ok2\n").as_bytes(),
                    H1.as_bytes(),
                    b" *\xff\n",
                ]
                .concat(),
                3,
                |k| matches!(k, K::NotUtf8),
            ),
            (format!("{ok}{H1} *a\r\n").into_bytes(), 2, |k| {
                matches!(k, K::CarriageReturn)
            }),
            (format!("{H1}\t*a\n").into_bytes(), 1, |k| {
                matches!(k, K::Tab)
            }),
            (format!("{ok}\n{ok}").into_bytes(), 2, |k| {
                matches!(k, K::BlankLine)
            }),
            (format!("{ok}\n").into_bytes(), 2, |k| {
                matches!(k, K::BlankLine)
            }),
            (format!("# generated\n{ok}").into_bytes(), 1, |k| {
                matches!(k, K::Comment)
            }),
            (format!("{ok}\\{H1} *a\\\\b\n").into_bytes(), 2, |k| {
                matches!(k, K::Escaped)
            }),
            (
                format!("{ok}{H1} *ok2\n{} *a\n", &H1[..60]).into_bytes(),
                3,
                |k| matches!(k, K::TooShort { len: 64 }),
            ),
            (format!("{}g *abc\n", &H1[..63]).into_bytes(), 1, |k| {
                matches!(k, K::BadHash)
            }),
            (format!("{H1}x*abc\n").into_bytes(), 1, |k| {
                matches!(k, K::MissingSpace)
            }),
            (format!("{H1} abc\n").into_bytes(), 1, |k| {
                matches!(k, K::MissingMarker)
            }),
            (format!("{H1} *\n").into_bytes(), 1, |k| {
                matches!(k, K::EmptyName)
            }),
            (format!("{ok}{H1} *sub/dir.raw\n").into_bytes(), 2, |k| {
                matches!(k, K::InvalidName(NameError::Slash(_)))
            }),
            (format!("{H1} *..\n").into_bytes(), 1, |k| {
                matches!(k, K::InvalidName(NameError::DotOrDotDot(_)))
            }),
            (format!("{H1} *a%41\n").into_bytes(), 1, |k| {
                matches!(k, K::InvalidName(NameError::Percent(_)))
            }),
            (format!("{H1} *a\x7f\n").into_bytes(), 1, |k| {
                matches!(k, K::InvalidName(NameError::ControlChar { .. }))
            }),
            (format!("{H1} * a\n").into_bytes(), 1, |k| {
                matches!(k, K::InvalidName(NameError::UnsafeChar { ch: ' ', .. }))
            }),
            (format!("{ok}{H1} *b").into_bytes(), 2, |k| {
                matches!(k, K::Truncated)
            }),
            (format!("{ok}{}", &H1[..10]).into_bytes(), 2, |k| {
                matches!(k, K::Truncated)
            }),
            (format!("{ok}{H1} *b\n{H1}  ok\n").into_bytes(), 3, |k| {
                matches!(k, K::Duplicate { first_line: 1, .. })
            }),
            (
                format!("{E} *BEST-BEFORE-2027-02-30\n").into_bytes(),
                1,
                |k| matches!(k, K::BadBestBefore { .. }),
            ),
            (format!("{E} *BEST-BEFORE-\n").into_bytes(), 1, |k| {
                matches!(k, K::BadBestBefore { .. })
            }),
            (
                format!("{H1} *BEST-BEFORE-2027-02-03\n").into_bytes(),
                1,
                |k| matches!(k, K::BestBeforeHash),
            ),
            (
                format!("{E} *BEST-BEFORE-2027-02-03\n{ok}{E} *BEST-BEFORE-2028-02-03\n")
                    .into_bytes(),
                3,
                |k| matches!(k, K::MultipleBestBefore { first_line: 1 }),
            ),
        ];
        for (input, line, pred) in cases {
            let e = parse_err(&input);
            assert!(
                e.line == line && pred(&e.kind),
                "input {:?}: got {e:?} ({e}), want line {line}",
                String::from_utf8_lossy(&input)
            );
            assert!(
                e.to_string()
                    .starts_with(&format!("SHA256SUMS line {line}: ")),
                "{e}"
            );
        }
    }

    #[test]
    fn error_messages_say_what_to_do() {
        let e = parse_err(format!("{H1} *a\n{H1} *b\n# c\n").as_bytes());
        assert_eq!(
            e.to_string(),
            "SHA256SUMS line 3: comment lines are not allowed (systemd-sysupdate refuses the whole manifest)"
        );
        let e = parse_err(format!("{H1} *a\n{H1} *a\n").as_bytes());
        let s = e.to_string();
        assert!(s.contains("line 2") && s.contains("line 1"), "{s}");
        let e = parse_err(format!("{H1} *a").as_bytes());
        assert!(e.to_string().contains("truncated"), "{e}");
    }

    /// Our render must equal `LC_ALL=C sha256sum -b` over the same files, byte for byte.
    #[test]
    fn render_equals_coreutils_sha256sum() {
        if std::process::Command::new("sha256sum")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("sha256sum not installed; skipping");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let names = [
            "a",
            "B",
            "b.xz",
            "store_1.img.xz",
            "Z",
            "_u",
            "~t",
            "a+b",
            "a-b",
            "a.b",
            "0",
            "empty",
        ];
        let mut m = Manifest::default();
        for (i, n) in names.iter().enumerate() {
            let p = dir.path().join(n);
            let content = if *n == "empty" {
                Vec::new()
            } else {
                vec![i as u8; i * 1000 + 1]
            };
            std::fs::write(&p, content).unwrap();
            let (digest, _) = crate::hash::hash_file(&p).unwrap();
            m.entries.insert(n.to_string(), digest);
        }
        // The shell's glob sorts by LC_COLLATE, so this checks our order as well as the format.
        let out = std::process::Command::new("bash")
            .args(["-c", "sha256sum -b -- *"])
            .env("LC_ALL", "C")
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8(render_checked(&m).unwrap()).unwrap(),
            String::from_utf8(out.stdout.clone()).unwrap()
        );
        assert_eq!(parse(&out.stdout).unwrap(), m);
    }

    fn name_strategy() -> impl Strategy<Value = String> {
        "[A-Za-z0-9._+~-]{1,60}".prop_filter("valid, not the marker prefix", |n| {
            validate_name(n).is_ok() && !n.starts_with(BEST_BEFORE_PREFIX)
        })
    }

    fn manifest_strategy() -> impl Strategy<Value = Manifest> {
        (
            proptest::collection::btree_map(name_strategy(), any::<[u8; 32]>(), 0..20),
            proptest::option::of(0i64..2_932_896), // 1970-01-01 ..= 9999-12-31
        )
            .prop_filter("non-empty", |(e, bb)| !e.is_empty() || bb.is_some())
            .prop_map(|(entries, bb)| Manifest {
                entries,
                best_before: bb.map(Date::from_days_since_epoch),
            })
    }

    /// Lines that look almost right, to reach the deeper checks.
    fn near_valid_bytes() -> impl Strategy<Value = Vec<u8>> {
        let line = (
            prop_oneof![3 => "[0-9a-fA-F]{64}", 1 => "[0-9a-fA-Fg ]{60,66}"],
            proptest::sample::select(vec![" *", "  ", "*", " x", "\t*", ""]),
            "(BEST-BEFORE-)?[A-Za-z0-9._/%\\\\ \r#-]{0,12}",
            proptest::sample::select(vec!["\n", "\r\n", ""]),
        )
            .prop_map(|(h, sep, n, end)| format!("{h}{sep}{n}{end}").into_bytes());
        proptest::collection::vec(line, 0..6).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn parse_never_panics_near_valid(bytes in near_valid_bytes()) {
            if let Ok(m) = parse(&bytes) {
                // Whatever we accept, we can write back, and what we write parses to the same.
                let again = render_checked(&m).unwrap();
                prop_assert_eq!(parse(&again).unwrap(), m);
            }
        }

        #[test]
        fn render_parse_round_trip(m in manifest_strategy()) {
            let bytes = render_checked(&m).unwrap();
            prop_assert_eq!(&bytes, &render(&m));
            prop_assert!(bytes.ends_with(b"\n"));
            let names: Vec<&[u8]> = bytes
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| &l[66..])
                .collect();
            prop_assert!(names.windows(2).all(|w| w[0] < w[1]), "not sorted");
            prop_assert_eq!(parse(&bytes).unwrap(), m);
        }
    }
}
