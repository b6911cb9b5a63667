//! os-release(5) text, as a UKI's `.osrel` section carries it.
//!
//! systemd reads it with `parse_env_file()`: `KEY=VALUE` lines, `#`
//! comments, values optionally in single or double quotes with backslash
//! escapes in double quotes. It is lenient (a line it cannot use is
//! skipped), so this is too: refusing what the device accepts would block
//! good releases. `IMAGE_VERSION` is what `ProtectVersion=%A` and
//! `pending` compare with the installed version.

use std::collections::BTreeMap;

/// The assignments of an os-release file; later ones win, as in systemd.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OsRelease(pub BTreeMap<String, String>);

/// `.osrel` bytes that are not text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OsRelError {
    #[error("not UTF-8 text")]
    NotUtf8,
    #[error("contains a NUL byte before its end")]
    Nul,
}

impl OsRelease {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Parses os-release text. Trailing NUL padding (a section padded to
    /// the file alignment) is ignored.
    pub fn parse(bytes: &[u8]) -> Result<OsRelease, OsRelError> {
        let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        let bytes = &bytes[..end];
        if bytes.contains(&0) {
            return Err(OsRelError::Nul);
        }
        let text = std::str::from_utf8(bytes).map_err(|_| OsRelError::NotUtf8)?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut out = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim_matches(|c: char| c.is_ascii_whitespace());
            if line.is_empty() || line.starts_with(['#', ';']) {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let key = key.trim_end_matches(|c: char| c.is_ascii_whitespace());
            if !valid_key(key) {
                continue;
            }
            let value = value.trim_start_matches(|c: char| c.is_ascii_whitespace());
            out.insert(key.to_string(), unquote(value));
        }
        Ok(OsRelease(out))
    }
}

/// Environment variable names, as `env_name_is_valid()` wants them.
fn valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Shell-like unquoting: `"…"` with `\` escapes, `'…'` verbatim, bare words
/// with `\` escapes; an unterminated quote runs to the end of the line.
fn unquote(value: &str) -> String {
    let mut out = String::new();
    let mut chars = value.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => out.push(c),
            (_, '\\') => match chars.next() {
                Some(n) => out.push(n),
                None => out.push('\\'),
            },
            (None, c) if c.is_ascii_whitespace() => {
                // Unquoted whitespace ends the value (trailing comments etc.).
                break;
            }
            (_, c) => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_a_ukis_osrel() {
        let o = OsRelease::parse(
            b"# made by ukify\nNAME=\"Appliance OS\"\nID=appliance\nIMAGE_ID=appliance\nIMAGE_VERSION=18\nPRETTY_NAME='Appliance 18'\n\0\0\0",
        )
        .unwrap();
        assert_eq!(o.get("IMAGE_VERSION"), Some("18"));
        assert_eq!(o.get("IMAGE_ID"), Some("appliance"));
        assert_eq!(o.get("NAME"), Some("Appliance OS"));
        assert_eq!(o.get("PRETTY_NAME"), Some("Appliance 18"));
        assert_eq!(o.get("VERSION_ID"), None);
    }

    #[test]
    fn quoting_and_escapes() {
        let o = OsRelease::parse(
            b"A=\"x \\\"y\\\" \\\\z\"\nB='a\\b'\nC=plain\\ word trailing\nD=\"unterminated\nE =  spaced\nF=\n",
        )
        .unwrap();
        assert_eq!(o.get("A"), Some("x \"y\" \\z"));
        assert_eq!(o.get("B"), Some("a\\b"));
        assert_eq!(o.get("C"), Some("plain word"));
        assert_eq!(o.get("D"), Some("unterminated"));
        assert_eq!(o.get("E"), Some("spaced"));
        assert_eq!(o.get("F"), Some(""));
    }

    #[test]
    fn malformed_input() {
        assert_eq!(OsRelease::parse(b"A=\xff\xfe"), Err(OsRelError::NotUtf8));
        assert_eq!(OsRelease::parse(b"A=1\0B=2"), Err(OsRelError::Nul));
        // Lines systemd skips are skipped.
        let o = OsRelease::parse(
            b"no equals sign\n=nokey\n1BAD=x\nBAD-KEY=y\n  # indented comment\n;semi\nIMAGE_VERSION=7\r\n",
        )
        .unwrap();
        assert_eq!(o.0.len(), 1, "{o:?}");
        assert_eq!(o.get("IMAGE_VERSION"), Some("7"));
        assert_eq!(OsRelease::parse(b"").unwrap(), OsRelease::default());
        assert_eq!(OsRelease::parse(b"\0\0").unwrap(), OsRelease::default());
        // Later assignments win.
        let o = OsRelease::parse(b"IMAGE_VERSION=1\nIMAGE_VERSION=2\n").unwrap();
        assert_eq!(o.get("IMAGE_VERSION"), Some("2"));
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = OsRelease::parse(&data);
        }

        #[test]
        fn plain_values_round_trip(
            entries in proptest::collection::btree_map("[A-Z_][A-Z0-9_]{0,12}", "[A-Za-z0-9.,_+-]{0,20}", 0..8)
        ) {
            let text: String = entries.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
            prop_assert_eq!(OsRelease::parse(text.as_bytes()).unwrap().0, entries.clone());
            let quoted: String = entries.iter().map(|(k, v)| format!("{k}=\"{v}\"\n")).collect();
            prop_assert_eq!(OsRelease::parse(quoted.as_bytes()).unwrap().0, entries);
        }
    }
}
