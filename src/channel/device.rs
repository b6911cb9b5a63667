//! What a device needs from the HTTP(S) server besides the right bytes,
//! judged on responses as systemd-pull gets them: the signature names
//! systemd 258+ tries first must answer a real 404, nothing may carry a
//! `Content-Encoding` (devices hash the bytes as served), `Content-Length`
//! must match, and caches must not hold a stale manifest. Pure functions
//! over [`Response`]s, so each rule is tested on its own.

use std::path::Path;
use std::process::{Command, Stdio};

use serde::Serialize;

use crate::arch::Arch;
use crate::http::Response;
use crate::manifest::{MANIFEST, SIGNATURE};

/// Whether a finding stops devices (problem) or only costs (warning).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Problem,
    Warning,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub arch: Arch,
    pub file: String,
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.arch, self.file, self.message)
    }
}

fn finding(severity: Severity, arch: Arch, file: &str, message: String) -> Finding {
    Finding {
        severity,
        arch,
        file: file.to_string(),
        message,
    }
}

/// SHA256SUMS or its signature, fetched with GET.
pub fn check_manifest(arch: Arch, name: &str, r: &Response) -> Vec<Finding> {
    let mut out = Vec::new();
    if r.status != 200 {
        let why = if name == MANIFEST {
            "devices cannot update"
        } else {
            "devices refuse the manifest"
        };
        out.push(finding(
            Severity::Problem,
            arch,
            name,
            format!("HTTP {} ({why})", r.status),
        ));
        return out;
    }
    out.extend(check_encoding(arch, name, r));
    out.extend(check_cache(arch, name, r, false));
    out
}

/// A name systemd 258+ asks for before `SHA256SUMS.gpg`: anything but a 404
/// makes the device give up.
pub fn check_fallback(arch: Arch, name: &str, status: u16) -> Option<Finding> {
    (status != 404).then(|| {
        finding(
            Severity::Problem,
            arch,
            name,
            format!(
                "HTTP {status} instead of 404; systemd 258+ tries this name before {SIGNATURE} and gives up on anything but 404"
            ),
        )
    })
}

/// A payload, fetched with HEAD; `size` is what the history recorded.
pub fn check_payload(arch: Arch, name: &str, r: &Response, size: Option<u64>) -> Vec<Finding> {
    let mut out = Vec::new();
    if r.status != 200 {
        out.push(finding(
            Severity::Problem,
            arch,
            name,
            format!("HTTP {} (listed in the manifest)", r.status),
        ));
        return out;
    }
    out.extend(check_encoding(arch, name, r));
    match (r.content_length, size) {
        (None, _) => out.push(finding(
            Severity::Problem,
            arch,
            name,
            "no Content-Length".into(),
        )),
        (Some(got), Some(want)) if got != want => out.push(finding(
            Severity::Problem,
            arch,
            name,
            format!("Content-Length {got}, but the history records {want} bytes"),
        )),
        _ => {}
    }
    out.extend(check_cache(arch, name, r, true));
    out
}

fn check_encoding(arch: Arch, name: &str, r: &Response) -> Option<Finding> {
    r.content_encoding.as_ref().map(|enc| {
        finding(
            Severity::Problem,
            arch,
            name,
            format!("served with Content-Encoding {enc}; devices hash the bytes as served and refuse them"),
        )
    })
}

/// Payloads may be cached for long (they never change under their name);
/// manifests must be revalidated, or devices keep seeing an old one.
fn check_cache(arch: Arch, name: &str, r: &Response, immutable: bool) -> Option<Finding> {
    let Some(cc) = &r.cache_control else {
        return Some(finding(
            Severity::Warning,
            arch,
            name,
            "no Cache-Control header".into(),
        ));
    };
    let cc = cc.to_ascii_lowercase();
    let uncached = cc.contains("no-cache") || cc.contains("no-store") || cc.contains("max-age=0");
    if immutable && !(cc.contains("immutable") || cc.contains("max-age")) {
        return Some(finding(
            Severity::Warning,
            arch,
            name,
            format!("Cache-Control {cc:?} does not allow long caching"),
        ));
    }
    if !immutable && !uncached {
        return Some(finding(
            Severity::Problem,
            arch,
            name,
            format!("Cache-Control {cc:?} lets caches serve a stale manifest; use no-cache"),
        ));
    }
    None
}

/// Runs gpg exactly as systemd-pull does (src/import/pull-common.c) on a
/// manifest and its signature. `None` when gpg is not installed.
pub fn gpg_verify(keyring: &Path, manifest: &[u8], signature: &[u8]) -> Option<Result<(), String>> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().ok()?;
    let sig = dir.path().join("sig");
    std::fs::write(&sig, signature).ok()?;
    let home = dir.path().join("home");
    std::fs::create_dir(&home).ok()?;
    // gpg warns about a homedir others may read.
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).ok()?;
    let mut child = Command::new("gpg")
        .args(crate::signing::SYSTEMD_GPG_ARGS)
        .arg(format!("--homedir={}", home.display()))
        .arg(format!("--keyring={}", keyring.display()))
        .arg("--verify")
        .arg(&sig)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let _ = child.stdin.take()?.write_all(manifest);
    let out = child.wait_with_output().ok()?;
    let _ = Command::new("gpgconf")
        .arg("--homedir")
        .arg(&home)
        .args(["--kill", "all"])
        .stderr(Stdio::null())
        .status();
    Some(if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr)
            .trim()
            .replace('\n', "; "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arch() -> Arch {
        Arch::parse("x86-64").unwrap()
    }

    fn resp(status: u16, len: Option<u64>, enc: Option<&str>, cc: Option<&str>) -> Response {
        Response {
            status,
            content_length: len,
            content_encoding: enc.map(str::to_string),
            cache_control: cc.map(str::to_string),
            body: vec![],
        }
    }

    fn problems(f: &[Finding]) -> Vec<&str> {
        f.iter()
            .filter(|f| f.severity == Severity::Problem)
            .map(|f| f.message.as_str())
            .collect()
    }

    #[test]
    fn fallbacks_must_be_a_real_404() {
        assert!(check_fallback(arch(), "SHA256SUMS.sha256.asc", 404).is_none());
        for status in [403, 200, 410, 401, 500] {
            let f = check_fallback(arch(), "SHA256SUMS.sha256.asc", status).unwrap();
            assert_eq!(f.severity, Severity::Problem);
            assert!(f.message.contains(&format!("HTTP {status}")), "{f}");
        }
    }

    #[test]
    fn manifests_must_be_revalidated_and_unencoded() {
        let ok = resp(200, Some(10), None, Some("no-cache"));
        assert!(check_manifest(arch(), MANIFEST, &ok).is_empty());
        let cached = resp(200, Some(10), None, Some("public, max-age=3600"));
        assert!(problems(&check_manifest(arch(), MANIFEST, &cached))[0].contains("stale"));
        let gz = resp(200, Some(10), Some("gzip"), Some("no-cache"));
        assert!(problems(&check_manifest(arch(), MANIFEST, &gz))[0].contains("gzip"));
        let missing = resp(403, None, None, None);
        assert!(problems(&check_manifest(arch(), SIGNATURE, &missing))[0].contains("HTTP 403"));
        let bare = check_manifest(arch(), MANIFEST, &resp(200, Some(1), None, None));
        assert_eq!(bare[0].severity, Severity::Warning);
    }

    #[test]
    fn payloads_need_the_recorded_length_and_no_encoding() {
        let cc = Some("public, max-age=31536000, immutable");
        assert!(check_payload(arch(), "a.xz", &resp(200, Some(5), None, cc), Some(5)).is_empty());
        let short = check_payload(arch(), "a.xz", &resp(200, Some(4), None, cc), Some(5));
        assert!(problems(&short)[0].contains("records 5"));
        let none = check_payload(arch(), "a.xz", &resp(200, None, None, cc), Some(5));
        assert!(problems(&none)[0].contains("no Content-Length"));
        let enc = check_payload(arch(), "a.xz", &resp(200, Some(5), Some("br"), cc), Some(5));
        assert!(problems(&enc)[0].contains("Content-Encoding br"));
        let gone = check_payload(arch(), "a.xz", &resp(404, None, None, None), Some(5));
        assert!(problems(&gone)[0].contains("HTTP 404"));
        let short_cache = check_payload(
            arch(),
            "a.xz",
            &resp(200, Some(5), None, Some("no-store")),
            None,
        );
        assert_eq!(short_cache[0].severity, Severity::Warning);
    }
}
