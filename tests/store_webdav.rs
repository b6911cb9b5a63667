//! The WebDAV backend against a real nginx (dav + dav-ext modules) on
//! loopback, started here through tests/e2e/nginx.sh.

mod common;
mod hosting;

use hosting::scenarios::*;
use hosting::{Nginx, Relay, Site};

// The device view over HTTPS with the test CA from `channel.webdav-ca`.
hosting_scenarios! {
    mod webdav;
    let nginx = Nginx::start();
    site: Site::webdav(&nginx);
    view: Site::webdav_https(&nginx);
}

/// nginx itself is stopped mid-upload (and started again, its files
/// intact); the relay in front of it picks the moment by bytes sent.
#[test]
fn webdav_server_gone_mid_upload_resumes() {
    let nginx = Nginx::start();
    let relay = Relay::start(nginx.http_port);
    server_gone_mid_upload_then_a_rerun_resumes(
        &Site::webdav_at(&nginx, relay.port),
        &relay,
        &|| nginx.kill(),
        &|| nginx.restart(),
    );
}

/// Promotion copies files on the server (WebDAV COPY): through the relay go
/// the manifests, signatures and history only.
#[test]
fn webdav_promote_sends_no_payload_bytes() {
    let nginx = Nginx::start();
    let relay = Relay::start(nginx.http_port);
    promote_copies_payloads_on_the_hosting(&Site::webdav_at(&nginx, relay.port), Some(&relay));
}

const USER: &str = "SYSUPDATE_PUBLISH_WEBDAV_USER";
const PASSWORD: &str = "SYSUPDATE_PUBLISH_WEBDAV_PASSWORD";

/// Below /private/ every write needs the login, taken from the environment;
/// devices still read without one.
#[test]
fn webdav_basic_auth_from_the_environment() {
    let nginx = Nginx::start();
    let login = [
        (USER, nginx.user.as_str()),
        (PASSWORD, nginx.password.as_str()),
    ];
    device_view_matches_the_directory_backend(&Site::webdav_below(&nginx, "private", &login));
}

/// No login, a wrong one, an account that may not write: each names the
/// object, the HTTP status and what to fix, and writes nothing.
#[test]
fn webdav_401_and_403_name_the_object_and_the_credential() {
    let nginx = Nginx::start();
    let keys = common::keygen();
    let cases = [
        (
            Site::webdav_below(&nginx, "private", &[]),
            "HTTP 401",
            format!("the server wants credentials: set {USER} and {PASSWORD}"),
        ),
        (
            Site::webdav_below(
                &nginx,
                "private",
                &[(USER, &nginx.user), (PASSWORD, "wrong")],
            ),
            "HTTP 401",
            format!("the server rejected the credentials in {USER} / {PASSWORD}"),
        ),
        (
            Site::webdav_below(&nginx, "readonly", &[(USER, "reader"), (PASSWORD, "x")]),
            "HTTP 403",
            format!("does not let user \"reader\" ({USER}) create the lock collection"),
        ),
    ];
    for (site, status, hint) in &cases {
        let ch = Chan::new(site, &keys, "");
        let out = ch.run(&args(&["release"], common::output_args("17")), 1);
        let err = common::stderr(&out);
        let channel = format!("{}/{}", site.public, ch.prefix);
        // The hint starts a sentence: capitalised.
        assert!(
            err.contains(status)
                && err.to_lowercase().contains(&hint.to_lowercase())
                && err.contains(&channel),
            "expected {status}, {hint:?} and {channel}:\n{err}"
        );
        assert_eq!(ch.stored(), Vec::<String>::new(), "nothing may be written");
    }
}
