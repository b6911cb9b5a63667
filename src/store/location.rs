//! Where a channel lives, as the `channel.store` setting names it: a
//! directory (or `file://` URL), `s3://bucket/prefix` or
//! `webdav+https://host/dir`. The store owns this type because only the
//! store knows which locations it can open; the config merely holds one.

use std::path::PathBuf;

use thiserror::Error;

/// Where the channel lives: `channel.store` parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreLocation {
    Dir(PathBuf),
    /// `s3://bucket/prefix`; endpoint, region and credentials from `AWS_*`.
    S3 {
        bucket: String,
        prefix: String,
    },
    /// `webdav+https://host/dir`: `url` is the http(s) URL of the channel
    /// root; `ca` an extra CA certificate file (`channel.webdav-ca`).
    WebDav {
        url: String,
        ca: Option<PathBuf>,
    },
}

/// A `channel.store` value that names no location we can open; the message
/// says what the accepted forms are.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{0}")]
pub struct InvalidLocation(pub String);

impl StoreLocation {
    /// Parses a store setting. A plain (relative) directory is resolved by
    /// `resolve`: the config anchors it at the config file's directory.
    pub fn parse(
        s: &str,
        resolve: impl Fn(&str) -> PathBuf,
    ) -> Result<StoreLocation, InvalidLocation> {
        parse(s, resolve).map_err(InvalidLocation)
    }
}

fn parse(s: &str, resolve: impl Fn(&str) -> PathBuf) -> Result<StoreLocation, String> {
    if let Some(path) = s.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(format!(
                "{s:?}: a file:// URL needs an absolute path (file:///srv/…)"
            ));
        }
        return Ok(StoreLocation::Dir(PathBuf::from(path)));
    }
    if let Some(rest) = s.strip_prefix("s3://") {
        return parse_s3(s, rest);
    }
    if let Some(url) = s.strip_prefix("webdav+") {
        return parse_webdav(s, url);
    }
    if let Some((scheme, _)) = s.split_once("://") {
        return Err(format!(
            "{s:?}: unknown store {scheme}://; use a directory, file://, s3://bucket/prefix or webdav+https://host/dir"
        ));
    }
    if s.is_empty() {
        return Err("empty: give a directory or file:// URL".into());
    }
    Ok(StoreLocation::Dir(resolve(s)))
}

/// `s3://bucket/prefix`: the bucket name rules of S3 (3–63 of a-z 0-9 . -),
/// a prefix without empty, `.` or `..` segments.
fn parse_s3(s: &str, rest: &str) -> Result<StoreLocation, String> {
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !ok {
        return Err(format!(
            "{s:?}: {bucket:?} is not an S3 bucket name (3–63 characters of a-z, 0-9, '.', '-'); the form is s3://bucket/prefix"
        ));
    }
    let prefix = prefix.trim_end_matches('/');
    if prefix.contains(['?', '#'])
        || (!prefix.is_empty()
            && prefix
                .split('/')
                .any(|seg| seg.is_empty() || seg == "." || seg == ".."))
    {
        return Err(format!(
            "{s:?}: the prefix {prefix:?} must be a plain path (no empty, . or .. segments, no ? or #)"
        ));
    }
    Ok(StoreLocation::S3 {
        bucket: bucket.to_string(),
        prefix: prefix.to_string(),
    })
}

/// `webdav+https://host[:port]/dir`; credentials come from the environment,
/// never from the URL (it shows up in messages and reports).
fn parse_webdav(s: &str, url: &str) -> Result<StoreLocation, String> {
    let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    else {
        return Err(format!(
            "{s:?}: a WebDAV store is webdav+https://host/dir (webdav+http:// for loopback tests)"
        ));
    };
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() {
        return Err(format!("{s:?}: no host"));
    }
    if host.contains('@') {
        return Err(format!(
            "{s:?}: no credentials in the URL; set SYSUPDATE_PUBLISH_WEBDAV_USER and SYSUPDATE_PUBLISH_WEBDAV_PASSWORD"
        ));
    }
    if url.contains(['?', '#']) {
        return Err(format!("{s:?}: no ?query or #fragment in a store URL"));
    }
    Ok(StoreLocation::WebDav {
        url: url.to_string(),
        ca: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<StoreLocation, InvalidLocation> {
        StoreLocation::parse(s, |p| PathBuf::from("/base").join(p))
    }

    #[test]
    fn directories_urls_and_buckets() {
        assert_eq!(parse("pub"), Ok(StoreLocation::Dir("/base/pub".into())));
        assert_eq!(
            parse("file:///srv/stable"),
            Ok(StoreLocation::Dir("/srv/stable".into()))
        );
        assert!(parse("file://srv").unwrap_err().0.contains("absolute path"));
        assert_eq!(
            parse("s3://bucket/a/b/"),
            Ok(StoreLocation::S3 {
                bucket: "bucket".into(),
                prefix: "a/b".into()
            })
        );
        assert_eq!(
            parse("webdav+https://h/d"),
            Ok(StoreLocation::WebDav {
                url: "https://h/d".into(),
                ca: None
            })
        );
        assert!(parse("").is_err());
        assert!(parse("ftp://h/d").unwrap_err().0.contains("unknown store"));
    }
}
