//! The S3 backend against a real moto server on loopback (started here).

mod common;
mod hosting;

use hosting::scenarios::*;
use hosting::{Moto, Relay, Site};

#[test]
fn s3_device_view_matches_the_directory_backend() {
    let moto = Moto::start();
    device_view_matches_the_directory_backend(&Site::s3(&moto));
}

#[test]
fn s3_killed_at_every_point_verifies_and_resumes() {
    let moto = Moto::start();
    killed_at_every_point_the_channel_verifies_and_a_rerun_uploads_only_what_is_missing(&Site::s3(
        &moto,
    ));
}

#[test]
fn s3_concurrent_releases_both_land() {
    let moto = Moto::start();
    concurrent_releases_of_two_versions_both_land(&Site::s3(&moto));
}

/// moto keeps everything in memory, so it cannot be restarted with the
/// channel intact: the relay in front of it is what goes away.
#[test]
fn s3_server_gone_mid_upload_resumes() {
    let moto = Moto::start();
    let relay = Relay::start(moto.port);
    server_gone_mid_upload_then_a_rerun_resumes(
        &Site::s3_at(&moto, relay.port),
        &relay,
        &|| {},
        &|| {},
    );
}

#[test]
fn s3_403_names_the_object_and_the_credential() {
    let moto = Moto::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]);
    let keys = common::keygen();
    let site = Site::s3(&moto);
    let ch = Chan::new(&site, &keys, "");
    let out = ch.run(&args(&["release"], common::output_args("17")), 1);
    let err = common::stderr(&out);
    assert!(
        err.contains("HTTP 403")
            && err.contains(&format!("s3://{}/{}", hosting::BUCKET, ch.prefix))
            && err.contains("InvalidAccessKeyId")
            && err.contains("AWS_ACCESS_KEY_ID is not known"),
        "{err}"
    );
}
