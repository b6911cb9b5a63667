//! The WebDAV backend against a real nginx (dav + dav-ext modules) on
//! loopback, started here through tests/e2e/nginx.sh.

mod common;
mod hosting;

use hosting::scenarios::*;
use hosting::{Nginx, Relay, Site};

/// Over HTTPS with the test CA from `channel.webdav-ca`.
#[test]
fn webdav_device_view_matches_the_directory_backend() {
    let nginx = Nginx::start();
    device_view_matches_the_directory_backend(&Site::webdav_https(&nginx));
}

#[test]
fn webdav_killed_at_every_point_verifies_and_resumes() {
    let nginx = Nginx::start();
    killed_at_every_point_the_channel_verifies_and_a_rerun_uploads_only_what_is_missing(
        &Site::webdav(&nginx),
    );
}

#[test]
fn webdav_concurrent_releases_both_land() {
    let nginx = Nginx::start();
    concurrent_releases_of_two_versions_both_land(&Site::webdav(&nginx));
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
