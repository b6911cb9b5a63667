use super::*;
use proptest::prelude::*;
use std::process::Command;

use pe::tests::tiny_pe;

/// A real GPT made by util-linux `sfdisk` in a sparse file, with the given
/// partition types (DPS names or GUIDs). sfdisk writes 512-byte sectors to
/// a file; 4 KiB sectors are covered by `gpt`'s own tests.
pub(crate) fn sfdisk_image(types: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(8 << 20).unwrap();
    let mut script = String::from("label: gpt\n");
    for t in types {
        let guid = gpt_guid(t);
        script += &format!("size=1MiB, type={guid}\n");
    }
    // The partitioning script from a file: sfdisk reads it on stdin.
    let script_file = dir.path().join("script");
    std::fs::write(&script_file, script).unwrap();
    let status = Command::new("sfdisk")
        .arg("--quiet")
        .arg(&img)
        .stdin(std::fs::File::open(&script_file).unwrap())
        .status()
        .expect("sfdisk (fdisk package) is needed for GPT tests");
    assert!(status.success(), "sfdisk failed");
    std::fs::read(&img).unwrap()
}

fn gpt_guid(name: &str) -> String {
    if name.len() == 36 {
        return name.to_string();
    }
    // The DPS names, found back through the table the reader uses.
    let (_, g) = gpt::tests::named(name);
    g.to_string()
}

/// A short file and a GPT: the evidence replays to the same content too.
#[test]
fn evidence_replays_to_the_same_content() {
    for data in [b"MZ".to_vec(), sfdisk_image(&["root-x86-64", "esp"])] {
        let mut i = Inspector::new();
        for (n, chunk) in data.chunks(4000).enumerate() {
            i.feed_at(n as u64 * 4000, chunk);
        }
        let evidence = i.evidence(Some(data.len() as u64));
        assert_eq!(evidence.replay(), i.finish(Some(data.len() as u64)));
    }
}

#[test]
fn inspector_keeps_osrel_beyond_the_head() {
    let osrel = b"ID=appliance\nIMAGE_ID=appliance\nIMAGE_VERSION=18\n";
    let at = 3 << 20;
    let mut img = tiny_pe(
        0x8664,
        &[
            (".linux", 0x1000, 0x1000),
            (".osrel", at, osrel.len() as u32),
        ],
    );
    img.resize(at as usize, 0);
    img.extend_from_slice(osrel);
    img.resize(img.len() + 100, 0);
    // Fed in odd chunks, as a decoder delivers them.
    let mut i = Inspector::new();
    let mut off = 0;
    for chunk in img.chunks(77_777) {
        i.feed_at(off, chunk);
        off += chunk.len() as u64;
    }
    assert!(i.done());
    let evidence = i.evidence(Some(img.len() as u64));
    let kept: usize = evidence.chunks.iter().map(|(_, b)| b.len()).sum();
    assert!(kept < HEAD_LEN + 4096, "kept {kept} bytes");
    let c = i.finish(Some(img.len() as u64));
    assert_eq!(
        evidence.replay(),
        c,
        "the evidence alone gives the same content"
    );
    let Kind::Pe { pe, osrel } = &c.kind else {
        panic!("{c:?}")
    };
    assert_eq!(pe.machine, 0x8664);
    assert_eq!(
        osrel
            .as_ref()
            .unwrap()
            .as_ref()
            .unwrap()
            .get("IMAGE_VERSION"),
        Some("18")
    );
    assert_eq!(c.size(), Some(img.len() as u64));
    assert_eq!(
        c.describe(),
        "AMD64 (x86-64) UKI, IMAGE_ID=appliance, IMAGE_VERSION=18"
    );
}

#[test]
fn inspector_stops_asking_once_it_has_what_it_needs() {
    let img = tiny_pe(0xaa64, &[(".osrel", 0x400, 4), (".linux", 0x1000, 0x5000)]);
    let mut i = Inspector::new();
    assert!(!i.done());
    assert_eq!(i.missing(), vec![0..HEAD_LEN as u64]);
    let mut padded = img.clone();
    padded.resize(HEAD_LEN, 0);
    i.feed_at(0, &padded);
    assert!(i.done(), "{:?}", i.missing());
    // The declared size comes from the section table when the rest never went past.
    let c = i.finish(None);
    assert_eq!(c.exact_size, None);
    assert_eq!(c.size(), Some(0x6000));
}

#[test]
fn positioned_reads_fill_what_is_missing() {
    let osrel = b"IMAGE_VERSION=5\n";
    let at = 1 << 20;
    let mut img = tiny_pe(0x5064, &[(".osrel", at, osrel.len() as u32)]);
    img.resize(at as usize, 0);
    img.extend_from_slice(osrel);
    let mut i = Inspector::new();
    while let Some(r) = i.missing().first().cloned() {
        let end = (r.end as usize).min(img.len());
        i.feed_at(r.start, &img[r.start as usize..end]);
        if end < r.end as usize {
            break;
        }
    }
    let c = i.finish(Some(img.len() as u64));
    assert!(c.describe().contains("IMAGE_VERSION=5"), "{}", c.describe());
}

#[test]
fn a_truncated_uki_reports_its_missing_osrel() {
    let img = tiny_pe(0x8664, &[(".osrel", 0x10_0000, 64)]);
    let c = inspect_bytes(&img);
    let Kind::Pe { osrel, .. } = &c.kind else {
        panic!()
    };
    assert!(osrel.as_ref().unwrap().is_err());
    assert!(c.describe().contains("beyond the end"), "{}", c.describe());
}

#[test]
fn real_gpt_images_from_sfdisk() {
    {
        let img = sfdisk_image(&["esp", "root-arm64", "root-arm64-verity"]);
        let c = inspect_bytes(&img);
        let Kind::Gpt { header, partitions } = &c.kind else {
            panic!("{c:?}")
        };
        assert_eq!(header.sector, 512);
        assert_eq!(partitions.len(), 3);
        let names: Vec<_> = partitions
            .iter()
            .map(|p| gpt::dps_type(&p.type_guid).unwrap().name)
            .collect();
        assert_eq!(names, ["esp", "root-arm64", "root-arm64-verity"]);
        assert_eq!(
            c.describe(),
            "GPT disk image (esp, root-arm64, root-arm64-verity)"
        );
        assert_eq!(c.declared_size(), Some(8 << 20));
    }
}

#[test]
fn damaged_gpt_is_reported_not_ignored() {
    let mut img = sfdisk_image(&["root-x86-64"]);
    // A bit flipped in the first entry's type: the array's CRC catches it.
    img[1024] ^= 1;
    assert!(matches!(inspect_bytes(&img).kind, Kind::BadGpt(ref e) if e.contains("entry array")));
    let mut img = sfdisk_image(&["root-x86-64"]);
    img[512 + 40] ^= 1; // first usable LBA, covered by the header CRC
    assert!(matches!(inspect_bytes(&img).kind, Kind::BadGpt(ref e) if e.contains("header")));
    // Cut inside the entry array.
    let img = sfdisk_image(&["root-x86-64"]);
    assert!(
        matches!(inspect_bytes(&img[..2048]).kind, Kind::BadGpt(ref e) if e.contains("cut off"))
    );
}

#[test]
fn other_kinds() {
    assert_eq!(inspect_bytes(b"").kind, Kind::Unknown);
    assert_eq!(inspect_bytes(b"plain text").kind, Kind::Unknown);
    assert_eq!(
        inspect_bytes(&[0xfd, b'7', b'z', b'X', b'Z', 0, 1, 2]).kind,
        Kind::Compressed(Detected::Xz)
    );
    let mut sq = vec![0u8; 8192];
    sq[..4].copy_from_slice(b"hsqs");
    assert!(
        matches!(inspect_bytes(&sq).kind, Kind::FileSystem(f) if f.kind == fs::FsKind::Squashfs)
    );
    let mut bad = tiny_pe(0x8664, &[]);
    bad.truncate(0x50);
    assert!(matches!(inspect_bytes(&bad).kind, Kind::BadPe(_)));
}

proptest! {
    /// Whatever the chunking, the inspector sees what one whole read sees.
    #[test]
    fn chunking_does_not_change_the_result(
        cuts in proptest::collection::vec(1usize..50_000, 1..20),
        at in 0x400u32..400_000,
    ) {
        let osrel = b"IMAGE_VERSION=9\n";
        let mut img = tiny_pe(0xaa64, &[(".osrel", at, osrel.len() as u32)]);
        img.resize(at as usize, 0);
        img.extend_from_slice(osrel);
        let whole = inspect_bytes(&img);
        let mut i = Inspector::new();
        let mut off = 0usize;
        for c in cuts.iter().cycle() {
            if off >= img.len() { break; }
            let end = (off + c).min(img.len());
            i.feed_at(off as u64, &img[off..end]);
            off = end;
        }
        prop_assert_eq!(i.finish(Some(img.len() as u64)), whole);
    }

    #[test]
    fn never_panics_on_arbitrary_streams(data in proptest::collection::vec(any::<u8>(), 0..4096), gpt_at in any::<bool>()) {
        let mut d = data;
        if gpt_at && d.len() > 600 { d[512..520].copy_from_slice(b"EFI PART"); }
        let _ = inspect_bytes(&d);
    }
}
