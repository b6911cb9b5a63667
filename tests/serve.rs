//! `serve` as devices and `verify` see it: a published channel served over
//! HTTP and HTTPS (a test CA made by the real openssl), checked by our
//! `verify` and by the real curl (404s, HEAD, ranges, no Content-Encoding,
//! Cache-Control).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

fn serve(ch: &TestChannel, extra: &[&str]) -> Served {
    Served::start(
        ch.cmd()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra),
        Stdio::null(),
    )
}

/// Status line and headers of a curl request (`-I` for HEAD).
fn curl(args: &[&str], ca: Option<&Path>) -> String {
    let mut c = Command::new("curl");
    c.args(["-sS", "--noproxy", "*", "-o", "/dev/null", "-D", "-"]);
    if let Some(ca) = ca {
        c.arg("--cacert").arg(ca);
    }
    let out = c.args(args).output().expect("curl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().to_lowercase()
}

fn verify(ch: &TestChannel, url: &str, ca: Option<&Path>) -> serde_json::Value {
    let mut c = ch.cmd();
    c.args(["--json", "verify", "--deep", "--url", url]);
    if let Some(ca) = ca {
        c.arg("--ca").arg(ca);
    }
    let out = run(&mut c, 0);
    serde_json::from_slice(&out.stdout).unwrap()
}

fn check_headers(base: &str, ca: Option<&Path>) {
    let sums = format!("{base}x86-64/SHA256SUMS");
    let payload = format!("{base}x86-64/store_18.img.xz");
    let get = curl(&["-H", "Accept-Encoding: gzip, br", &sums], ca);
    assert!(get.starts_with("http/1.1 200"), "{get}");
    assert!(get.contains("cache-control: no-cache"), "{get}");
    assert!(!get.contains("content-encoding"), "{get}");
    let head = curl(&["-I", &payload], ca);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("immutable"), "{head}");
    let range = curl(&["-r", "2-9", &payload], ca);
    assert!(range.starts_with("http/1.1 206"), "{range}");
    assert!(range.contains("content-length: 8"), "{range}");
    for absent in [
        "x86-64/SHA256SUMS.sha256-asc",
        "x86-64/",
        ".sysupdate-publish.lock",
        "x86-64/../../../etc/passwd",
    ] {
        let r = curl(&["--path-as-is", &format!("{base}{absent}")], ca);
        assert!(r.starts_with("http/1.1 404"), "{absent}: {r}");
    }
}

/// A directory-store channel with version 18 of the example published.
fn published_channel() -> TestChannel {
    let ch = TestChannel::new("");
    let mut args = vec!["release".to_string()];
    args.extend(output_args("18"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ch.run(&args, 0);
    ch
}

#[test]
fn a_served_channel_verifies_over_http() {
    let ch = published_channel();
    let server = serve(&ch, &[]);
    let r = verify(&ch, &server.url, None);
    assert_eq!(r["arches"].as_array().unwrap().len(), 3, "{r}");
    check_headers(&server.url, None);
}

#[test]
fn a_served_channel_verifies_over_https_with_its_ca() {
    let ch = published_channel();
    let tls = tempfile::tempdir().unwrap();
    let certs = test_certs(tls.path());
    let server = serve(
        &ch,
        &[
            "--tls-cert",
            certs.cert.to_str().unwrap(),
            "--tls-key",
            certs.key.to_str().unwrap(),
        ],
    );
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );
    verify(&ch, &server.url, Some(&certs.ca));
    check_headers(&server.url, Some(&certs.ca));
}

#[test]
fn serve_refuses_what_it_cannot_serve() {
    let ch = TestChannel::new("");
    // Nothing published yet: the store directory does not exist.
    let out = ch.run(&["serve", "--listen", "127.0.0.1:0"], 2);
    assert!(
        stderr(&out).contains("is not a directory"),
        "{}",
        stderr(&out)
    );
    let out = ch.run(&["serve", "--tls-cert", "/nonexistent"], 2);
    assert!(stderr(&out).contains("--tls-key"), "{}", stderr(&out));
    std::fs::create_dir_all(&ch.store).unwrap();
    let out = ch.run(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            "/nonexistent.pem",
            "--tls-key",
            "/nonexistent.key",
        ],
        1,
    );
    assert!(
        stderr(&out).contains("/nonexistent.pem"),
        "{}",
        stderr(&out)
    );
}
