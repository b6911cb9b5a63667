//! systemd's configuration-syntax primitives (`conf-parser.c`,
//! `extract-word.c`, `escape.c`, `parse-util.c`, `path-util.c`), shared by
//! transfer files and `MatchPattern=` fields so both read text exactly as
//! systemd does and neither keeps a copy of its own.

/// `NAME_MAX`: longest path component; also the longest expanded
/// `MatchPattern=`/version value systemd takes.
pub(crate) const NAME_MAX: usize = 255;
/// `PATH_MAX - 1`: longest path, so also the longest expanded `Path=`.
pub(crate) const PATH_MAX: usize = 4095;

/// systemd's `WHITESPACE`.
pub(crate) const WHITESPACE: [char; 4] = [' ', '\t', '\n', '\r'];

/// `strchr(WHITESPACE, c)`, for the byte-level ports.
pub(crate) fn is_ws(c: u8) -> bool {
    WHITESPACE.contains(&char::from(c))
}

/// systemd's `strstrip()`.
pub(crate) fn strip(s: &str) -> &str {
    s.trim_matches(WHITESPACE)
}

/// `read_line()` line splitting: `\n`, `\r`, `\r\n` and NUL end a line; a
/// run of different end-of-line characters counts as one.
pub(crate) fn physical_lines(text: &str) -> Vec<&str> {
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

/// `config_parse()` continuation: an odd backslash run at the end of the line.
pub(crate) fn ends_with_unescaped_backslash(s: &str) -> bool {
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
pub(crate) struct ExtractFlags {
    pub(crate) cunescape: bool,
    pub(crate) unescape_relax: bool,
    pub(crate) unquote: bool,
    pub(crate) retain_escape: bool,
}

/// Port of `extract_first_word()` with whitespace separators. `Ok(None)` at
/// the end; `Err` for unbalanced quotes or (unless relaxed) bad escapes.
pub(crate) fn extract_first_word(
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

/// systemd's `unichar_is_valid()`.
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

/// `http_url_is_valid()` or `file_url_is_valid()`.
pub(crate) fn url_is_valid(u: &str) -> bool {
    let rest = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"))
        .or_else(|| u.strip_prefix("file:/"));
    rest.is_some_and(|r| !r.is_empty() && r.is_ascii() && !r.contains('\0'))
}

/// `path_is_normalized()`.
pub(crate) fn path_is_normalized(p: &str) -> bool {
    if p.is_empty() || p.len() > PATH_MAX || p.split('/').any(|c| c == ".." || c.len() > NAME_MAX) {
        return false;
    }
    if p == "." || p.starts_with("./") || p.ends_with("/.") || p.contains("/./") {
        return false;
    }
    !p.contains("//")
}

/// systemd's `parse_boolean()`, case-insensitive.
pub(crate) fn parse_boolean(v: &str) -> Option<bool> {
    const YES: [&str; 6] = ["1", "yes", "y", "true", "t", "on"];
    const NO: [&str; 6] = ["0", "no", "n", "false", "f", "off"];
    if YES.iter().any(|y| v.eq_ignore_ascii_case(y)) {
        Some(true)
    } else if NO.iter().any(|n| v.eq_ignore_ascii_case(n)) {
        Some(false)
    } else {
        None
    }
}

/// glibc `strtoull()`: returns (value, overflowed, end index); end 0 means
/// nothing was converted.
fn strtoull(s: &[u8], mut base: u32) -> (u64, bool, usize) {
    let mut i = 0;
    while s
        .get(i)
        .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'))
    {
        i += 1;
    }
    let mut negative = false;
    if let Some(&c @ (b'+' | b'-')) = s.get(i) {
        negative = c == b'-';
        i += 1;
    }
    let hex_prefix = s.get(i) == Some(&b'0')
        && matches!(s.get(i + 1), Some(b'x' | b'X'))
        && s.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
    if (base == 0 || base == 16) && hex_prefix {
        base = 16;
        i += 2;
    } else if base == 0 {
        base = if s.get(i) == Some(&b'0') { 8 } else { 10 };
    }
    let start = i;
    let mut value: u64 = 0;
    let mut overflow = false;
    while let Some(d) = s.get(i).and_then(|&c| (c as char).to_digit(base)) {
        match value
            .checked_mul(u64::from(base))
            .and_then(|v| v.checked_add(u64::from(d)))
        {
            Some(v) => value = v,
            None => overflow = true,
        }
        i += 1;
    }
    if i == start {
        return (0, false, 0);
    }
    if overflow {
        return (u64::MAX, true, i);
    }
    (
        if negative {
            value.wrapping_neg()
        } else {
            value
        },
        false,
        i,
    )
}

/// systemd's `safe_atou64()` (base 0: C rules plus `0b`/`0o`) and
/// `safe_atoux64()` (base 16).
pub(crate) fn safe_atou64(t: &str, base: u32) -> Option<u64> {
    let b = t.as_bytes();
    let skip = b.iter().take_while(|&&c| is_ws(c)).count();
    let mut s = &b[skip..];
    let mut base = base;
    if base == 0 {
        if let Some(rest) = s.strip_prefix(b"0b").or_else(|| s.strip_prefix(b"0B")) {
            s = rest;
            base = 2;
        } else if let Some(rest) = s.strip_prefix(b"0o").or_else(|| s.strip_prefix(b"0O")) {
            s = rest;
            base = 8;
        }
    }
    let (value, overflow, end) = strtoull(s, base);
    if overflow || end == 0 || end != s.len() {
        return None;
    }
    if value != 0 && s.first() == Some(&b'-') {
        return None;
    }
    Some(value)
}

/// systemd's `parse_mode()`: octal, no sign, at most 07777.
pub(crate) fn parse_mode(t: &str) -> Option<u32> {
    let b = t.as_bytes();
    let skip = b.iter().take_while(|&&c| is_ws(c)).count();
    let s = &b[skip..];
    if matches!(s.first(), Some(b'+' | b'-')) {
        return None;
    }
    let (value, overflow, end) = strtoull(s, 8);
    if overflow || end == 0 || end != s.len() {
        return None;
    }
    if value != 0 && s.first() == Some(&b'-') {
        return None;
    }
    let m = u32::try_from(value).ok()?;
    (m <= 0o7777).then_some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
