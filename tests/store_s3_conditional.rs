//! The conditional manifest write on its own, below the publisher lock: two
//! writers that read the same SHA256SUMS, and the second one must lose
//! cleanly instead of overwriting the first one's version. Its own test
//! binary, because the S3 backend reads its endpoint from the process
//! environment.

mod common;
mod hosting;

use sysupdate_publish::arch::Arch;
use sysupdate_publish::store::{self, StoreError, StoreLocation};

#[test]
fn s3_second_writer_of_the_same_manifest_version_loses_cleanly() {
    let moto = hosting::Moto::start();
    for (k, v) in moto.env() {
        // Single test in this binary: no other thread reads the environment.
        std::env::set_var(k, v);
    }
    let location = StoreLocation::S3 {
        bucket: hosting::BUCKET.into(),
        prefix: "conditional".into(),
    };
    let (a, b) = (store::open(&location), store::open(&location));
    let x86 = Arch::parse("x86-64").unwrap();
    let commit = |s: &dyn store::Store, text: &str| s.commit(x86, text.as_bytes(), b"sig", &[]);

    // Nothing published yet: both see no manifest, the first create wins.
    assert_eq!(a.get(x86, "SHA256SUMS").unwrap(), None);
    assert_eq!(b.get(x86, "SHA256SUMS").unwrap(), None);
    commit(a.as_ref(), "first\n").unwrap();
    let e = commit(b.as_ref(), "second\n").unwrap_err();
    assert!(matches!(e, StoreError::Changed { .. }), "{e}");
    assert!(e.to_string().contains("Run the command again"), "{e}");
    assert_eq!(a.get(x86, "SHA256SUMS").unwrap().unwrap(), b"first\n");

    // Both read version 1; A replaces it; B's replacement of version 1 loses.
    assert_eq!(b.get(x86, "SHA256SUMS").unwrap().unwrap(), b"first\n");
    commit(a.as_ref(), "third\n").unwrap();
    let e = commit(b.as_ref(), "fourth\n").unwrap_err();
    assert!(matches!(e, StoreError::Changed { .. }), "{e}");
    let served = hosting::fetch(&format!("{}/x86-64/SHA256SUMS", moto.public("conditional")));
    assert_eq!(served.unwrap(), b"third\n");

    // After reading again, B builds on A's version.
    b.get(x86, "SHA256SUMS").unwrap();
    commit(b.as_ref(), "fifth\n").unwrap();
}
