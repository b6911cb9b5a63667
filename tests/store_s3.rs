//! The S3 backend against a real moto server on loopback (started here).

mod common;
mod hosting;

use hosting::scenarios::*;
use hosting::{Moto, Relay, Site};

hosting_scenarios! {
    mod s3;
    let moto = Moto::start();
    site: Site::s3(&moto);
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

/// Promotion copies objects inside the bucket: through the relay go the
/// manifests, signatures and history only.
#[test]
fn s3_promote_sends_no_payload_bytes() {
    let moto = Moto::start();
    let relay = Relay::start(moto.port);
    promote_copies_payloads_on_the_hosting(&Site::s3_at(&moto, relay.port), Some(&relay));
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

/// Payloads are cached for a year, SHA256SUMS and its signature revalidated.
#[test]
fn s3_objects_carry_cache_control_and_their_sha256() {
    let moto = Moto::start();
    let keys = common::keygen();
    let site = Site::s3(&moto);
    let ch = Chan::new(&site, &keys, "");
    ch.run(&args(&["release"], common::output_args("17")), 0);
    for (name, cache) in [
        ("store_17.img.xz", "public, max-age=31536000, immutable"),
        ("SHA256SUMS", "no-cache"),
        ("SHA256SUMS.gpg", "no-cache"),
    ] {
        let r = hosting::http("GET", &ch.url(&format!("x86-64/{name}")), b"");
        assert_eq!(r.status, 200, "{name}");
        assert_eq!(r.header("cache-control"), Some(cache), "{name}");
        assert_eq!(r.header("content-encoding"), None, "{name}");
        if name.ends_with(".xz") {
            assert_eq!(
                r.header("x-amz-meta-sha256"),
                Some(common::sha256_hex(&r.body).as_str()),
                "{name}"
            );
        }
    }
}
