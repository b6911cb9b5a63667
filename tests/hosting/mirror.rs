//! `mirror`: a channel published elsewhere (a directory store served by a
//! real nginx) copied into each hosting, verified, byte for byte; devices of
//! the mirror keep trusting the original key.

use super::holes::unchanged_after;
use super::scenarios::{args, assert_listed_payloads_served, release, verifies, Chan};
use super::{Nginx, Relay, Site};
use crate::common::*;

/// The mirror's own key signs its history; its keyring holds the source's
/// key (to verify what it mirrors) and its own.
fn mirror_keys(source: &Keys) -> Keys {
    let own = keygen();
    let ring = own.dir.path().join("mirror.pgp");
    let mut bytes = std::fs::read(&source.keyring).unwrap();
    bytes.extend(std::fs::read(&own.keyring).unwrap());
    std::fs::write(&ring, bytes).unwrap();
    Keys {
        keyring: ring,
        ..own
    }
}

fn mirror(url: &str) -> Vec<String> {
    args(&["mirror", "--from", url], vec![])
}

pub fn mirror_copies_a_published_channel_verified_and_byte_for_byte(site: &Site) {
    let nginx = Nginx::start();
    let origin = Site::dir(&nginx);
    let keys = keygen();
    let src = Chan::new(&origin, &keys, "keep = 2");
    src.run(&release("17"), 0);
    src.run(&release("18"), 0);
    // Devices' view of the source, through a relay that counts what the
    // mirror fetches.
    let relay = Relay::start(nginx.http_port);
    let url = src.url("").trim_end_matches('/').replace(
        &format!(":{}/", nginx.http_port),
        &format!(":{}/", relay.port),
    );
    assert!(url.contains(&format!(":{}/", relay.port)), "{url}");
    let own = mirror_keys(&keys);
    let ch = Chan::new(site, &own, "keep = 2");

    let out = ch.run(&args(&["--json"], mirror(&url)), 0);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["action"], "mirror", "{report}");
    for arch in ARCHES {
        for name in ["SHA256SUMS", "SHA256SUMS.gpg"] {
            let rel = format!("{arch}/{name}");
            assert_eq!(ch.fetch(&rel), src.fetch(&rel), "{rel}: not byte for byte");
        }
        // Devices of the mirror keep the source's keyring.
        let m = ch.manifest(arch);
        let sig = ch.fetch(&format!("{arch}/SHA256SUMS.gpg")).unwrap();
        assert!(verifies(&keys.keyring, &sig, m.as_bytes()), "{arch}: gpg");
        assert_listed_payloads_served(&ch, arch, &m);
    }
    ch.run(&args(&["status"], vec![]), 0);

    // Nothing new at the source: a rerun writes nothing and fetches the
    // manifests and signatures only.
    let before = relay.received();
    unchanged_after(&ch, &mirror(&url), 0, &["nothing to do"]);
    let fetched = relay.received() - before;
    let listings: usize = ARCHES
        .iter()
        .map(|a| src.manifest(a).len() + src.fetch(&format!("{a}/SHA256SUMS.gpg")).unwrap().len())
        .sum();
    eprintln!("mirror rerun, nothing new: fetched {fetched} bytes ({listings} bytes of manifests and signatures)");
    assert!(
        fetched < listings as u64 + (64 << 10),
        "a rerun with nothing new fetched {fetched} bytes"
    );

    // The source moves on (keep = 2 drops 17): only 19's payloads are fetched.
    let out19 = tempfile::tempdir().unwrap();
    let mut rel19 = vec!["release".to_string()];
    for (system, arch) in SYSTEMS.iter().zip(ARCHES) {
        let dir = out19.path().join(arch);
        std::fs::create_dir(&dir).unwrap();
        for e in std::fs::read_dir(example_output(system, "18")).unwrap() {
            let name = e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .replace("_18.", "_19.");
            let bytes =
                std::fs::read(example_output(system, "18").join(name.replace("_19.", "_18.")))
                    .unwrap();
            // Other bytes than 18's: the names are new, so are the contents.
            let mut bytes = bytes;
            bytes.extend_from_slice(b"19");
            std::fs::write(dir.join(&name), bytes).unwrap();
        }
        rel19.extend(["--output".to_string(), format!("{arch}={}", dir.display())]);
    }
    src.run(&rel19, 0);
    let before = relay.received();
    let out = ch.run(&args(&["--json"], mirror(&url)), 0);
    let fetched = relay.received() - before;
    let new_bytes: u64 = dir_bytes(out19.path());
    eprintln!(
        "mirror rerun, one new version: fetched {fetched} bytes for {new_bytes} new payload bytes"
    );
    assert!(
        fetched < new_bytes + (64 << 10),
        "fetched {fetched} bytes for {new_bytes} new payload bytes"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for a in report["arches"].as_array().unwrap() {
        let uploads: Vec<&str> = a["uploads"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["name"].as_str().unwrap())
            .collect();
        assert!(
            uploads.iter().all(|n| n.contains("_19.")) && uploads.len() == 2,
            "{a}"
        );
    }
    assert!(
        !ch.stored().iter().any(|p| p.contains("_17.")),
        "what the source dropped stays: {:?}",
        ch.stored()
    );
    for arch in ARCHES {
        assert_eq!(ch.manifest(arch), src.manifest(arch));
    }

    // A source that does not verify is refused, naming the file; nothing is written.
    let stranger = keygen();
    let sums = src.raw_get("arm64/SHA256SUMS").unwrap();
    let sig = src.raw_get("arm64/SHA256SUMS.gpg").unwrap();
    let forged = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(forged.path(), &sums).unwrap();
    run(
        bin()
            .args(["sign", "--key"])
            .arg(&stranger.secret)
            .arg("--output")
            .arg(forged.path().with_extension("gpg"))
            .arg(forged.path()),
        0,
    );
    src.raw_put(
        "arm64/SHA256SUMS.gpg",
        &std::fs::read(forged.path().with_extension("gpg")).unwrap(),
    );
    unchanged_after(
        &ch,
        &mirror(&url),
        1,
        &["arm64/SHA256SUMS", "does not verify", "nothing mirrored"],
    );
    src.raw_put("arm64/SHA256SUMS.gpg", &sig);
    // A new version whose payload was changed on the source after signing.
    let out20 = tempfile::tempdir().unwrap();
    let mut rel20 = vec!["release".to_string()];
    for (system, arch) in SYSTEMS.iter().zip(ARCHES) {
        let dir = out20.path().join(arch);
        std::fs::create_dir(&dir).unwrap();
        for e in std::fs::read_dir(example_output(system, "18")).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            let mut bytes = std::fs::read(example_output(system, "18").join(&name)).unwrap();
            bytes.extend_from_slice(b"20");
            std::fs::write(dir.join(name.replace("_18.", "_20.")), bytes).unwrap();
        }
        rel20.extend(["--output".to_string(), format!("{arch}={}", dir.display())]);
    }
    src.run(&rel20, 0);
    let payload = src.site.layout.payload_key("x86-64", "store_20.img.xz");
    let mut b = src.raw_get(&payload).unwrap();
    b[10] ^= 1;
    src.raw_put(&payload, &b);
    unchanged_after(
        &ch,
        &mirror(&url),
        1,
        &["x86-64/store_20.img.xz", "nothing mirrored"],
    );
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap().metadata().unwrap())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}
