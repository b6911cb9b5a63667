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

/// A payload larger than one multipart part is read once: its upload hashes
/// it. S3 takes metadata only before the first part and has no full-object
/// SHA-256 for multipart uploads (only a composite of the parts'), so the
/// hash goes to a companion record bound to the object's size and ETag; the
/// manifest lists the file's own hash, and a rerun and `status` accept it.
#[test]
fn s3_multipart_payload_is_hashed_by_its_upload_and_recorded_with_its_etag() {
    const BIG: usize = 40 << 20; // three 16 MiB parts
    let moto = Moto::start();
    let keys = common::keygen();
    let site = Site::s3(&moto);
    let ch = Chan::new(&site, &keys, "");
    let out = tempfile::tempdir().unwrap();
    std::fs::copy(
        common::example_output("x86_64-linux", "17").join("appliance_17.efi.xz"),
        out.path().join("appliance_17.efi.xz"),
    )
    .unwrap();
    let store = out.path().join("store_17.img.xz");
    hosting::fake_xz(&store, BIG);
    let want = common::sha256_hex(&std::fs::read(&store).unwrap());
    let x86 = vec![
        "release".to_string(),
        "--output".to_string(),
        format!("x86-64={}", out.path().display()),
    ];
    ch.run(&x86, 0);
    assert!(
        ch.manifest("x86-64")
            .contains(&format!("{want} *store_17.img.xz\n")),
        "{}",
        ch.manifest("x86-64")
    );

    let head = hosting::http("HEAD", &ch.url("x86-64/store_17.img.xz"), b"");
    assert_eq!(head.status, 200);
    let etag = head.header("etag").expect("ETag").to_string();
    assert!(etag.contains('-'), "a multipart upload's ETag: {etag}");
    assert_eq!(
        head.header("x-amz-meta-sha256"),
        None,
        "metadata went out first"
    );
    let record = ch
        .fetch("x86-64/.sha256/store_17.img.xz")
        .expect("the companion record");
    assert_eq!(
        String::from_utf8(record).unwrap(),
        format!("{want} {BIG} {etag}\n")
    );

    // A rerun with nothing new (stamp cache bypassed), and status.
    let mut rerun = x86.clone();
    rerun.insert(1, "--deep".into());
    ch.run(&rerun, 0);
    ch.run(&strs(&["status"]), 0);
}

/// What the S3 upload check rests on: a body whose `x-amz-checksum-sha256`
/// does not match is refused by the server (AWS answers 400 `BadDigest`).
/// moto 5.2.1 (and 5.2.5, by its source) stores the header without checking
/// it and answers 200, so this runs only against an endpoint that checks:
/// `S3_CHECKSUM_ENDPOINT=http://host:port/bucket` with anonymous writes or
/// moto-style unchecked authorization.
#[test]
#[ignore = "moto does not verify x-amz-checksum-sha256; set S3_CHECKSUM_ENDPOINT to an endpoint that does"]
fn s3_a_body_with_a_corrupted_checksum_is_refused_by_the_server() {
    let base = std::env::var("S3_CHECKSUM_ENDPOINT").expect("S3_CHECKSUM_ENDPOINT");
    // base64(sha256("other")), sent with the body "hello".
    let wrong = "2SmKENGwc1g33EvYXaxkGw887yekfl1TpU8vP1svz/o=";
    let r = hosting::http_with(
        "PUT",
        &format!("{base}/corrupted-checksum"),
        &[
            ("x-amz-checksum-sha256", wrong),
            ("x-amz-sdk-checksum-algorithm", "SHA256"),
            (
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=unchecked",
            ),
        ],
        b"hello",
    );
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
}
