//! Each check on contents built in memory; tests/preflight.rs does the
//! same with real UKIs, GPT and file system images through `release`.

use super::*;
use crate::image::fs::{Fs, FsKind};
use crate::image::gpt::{Guid, Header, Partition};
use crate::image::osrel::OsRelease;
use crate::image::pe::Pe;
use crate::transfer::{parse_str, Specifiers};
use std::path::Path;

fn arch(s: &str) -> Arch {
    Arch::parse(s).unwrap()
}

fn transfers() -> Vec<Transfer> {
    let spec = Specifiers {
        arch: "arm64".into(),
        ..Default::default()
    };
    let uki = "[Source]\nType=url-file\nPath=https://u/%a/\nMatchPattern=appliance_@v.efi.xz\n[Target]\nType=regular-file\nPath=/EFI/Linux\nPathRelativeTo=boot\nMatchPattern=appliance_@v.efi\nInstancesMax=2\n";
    let store = "[Source]\nType=url-file\nPath=https://u/%a/\nMatchPattern=store_@v.img.xz\n[Target]\nType=partition\nPath=/dev/vda\nMatchPartitionType=root-arm64\nMatchPattern=store_@v\n";
    vec![
        parse_str("50-uki", Path::new("50-uki.transfer"), uki, &spec).unwrap(),
        parse_str("60-store", Path::new("60-store.transfer"), store, &spec).unwrap(),
    ]
}

fn uki(machine: u16, osrel: Option<&str>, size: u64) -> Content {
    Content {
        kind: Kind::Pe {
            pe: Pe {
                machine,
                sections: vec![crate::image::pe::Section {
                    name: ".linux".into(),
                    offset: 4096,
                    size: size - 4096,
                }],
                extent: size,
            },
            osrel: osrel.map(|t| Ok(OsRelease::parse(t.as_bytes()).unwrap())),
        },
        exact_size: Some(size),
    }
}

fn erofs(size: u64) -> Content {
    Content {
        kind: Kind::FileSystem(Fs {
            kind: FsKind::Erofs,
            size: Some(size),
        }),
        exact_size: None,
    }
}

fn run(a: &str, items: &[(&str, &Content)], s: &Settings, skip: &[Check]) -> Outcome {
    let items: Vec<Item> = items
        .iter()
        .map(|(name, c)| Item {
            name,
            content: Some(c),
        })
        .collect();
    check(
        arch(a),
        &transfers(),
        &items,
        s,
        &skip.iter().copied().collect(),
    )
}

fn checks_of(o: &Outcome) -> Vec<Check> {
    o.findings.iter().map(|f| f.check).collect()
}

const OSREL18: &str = "IMAGE_ID=appliance\nIMAGE_VERSION=18\n";

#[test]
fn a_clean_release_passes() {
    let u = uki(0xaa64, Some(OSREL18), 50 << 20);
    let s = erofs(100 << 20);
    let settings = Settings {
        image_id: Some("appliance".into()),
        esp_size: Some(512 << 20),
        esp_reserved: 0,
        partition_sizes: [("60-store".to_string(), 200 << 20)].into(),
    };
    let o = run(
        "arm64",
        &[("appliance_18.efi.xz", &u), ("store_18.img.xz", &s)],
        &settings,
        &[],
    );
    assert_eq!(o, Outcome::default());
}

#[test]
fn an_x86_64_uki_in_the_arm64_directory() {
    let u = uki(0x8664, Some(OSREL18), 1 << 20);
    let o = run(
        "arm64",
        &[("appliance_18.efi.xz", &u)],
        &Settings::default(),
        &[],
    );
    assert_eq!(checks_of(&o), [Check::UkiArch]);
    let msg = o.findings[0].to_string();
    assert!(
        msg.starts_with(
            "arm64: appliance_18.efi.xz is an AMD64 (x86-64) UKI; expected ARM64 UKI for arm64"
        ),
        "{msg}"
    );
    assert!(msg.ends_with("[uki-arch]"), "{msg}");
    // Skipped: no finding.
    assert!(run(
        "arm64",
        &[("appliance_18.efi.xz", &u)],
        &Settings::default(),
        &[Check::UkiArch]
    )
    .findings
    .is_empty());
    // No UEFI on s390x: any PE image is wrong there.
    let o = run(
        "s390x",
        &[("appliance_18.efi.xz", &u)],
        &Settings::default(),
        &[],
    );
    assert!(
        o.findings[0].expected.contains("no UEFI"),
        "{:?}",
        o.findings
    );
}

#[test]
fn osrel_version_and_image_id() {
    let settings = Settings {
        image_id: Some("appliance".into()),
        ..Default::default()
    };
    let u = uki(0xaa64, Some("IMAGE_ID=other\nIMAGE_VERSION=17\n"), 1 << 20);
    let o = run("arm64", &[("appliance_18.efi.xz", &u)], &settings, &[]);
    assert_eq!(checks_of(&o), [Check::UkiVersion, Check::UkiImageId]);
    assert!(o.findings[0].found.contains("IMAGE_VERSION=17"));
    assert!(o.findings[0].expected.contains("IMAGE_VERSION=18"));
    assert!(o.findings[0].expected.contains("update loop"));
    assert!(o.findings[1].found.contains("IMAGE_ID=other"));
    let u = uki(0xaa64, Some("ID=x\n"), 1 << 20);
    let o = run("arm64", &[("appliance_18.efi.xz", &u)], &settings, &[]);
    assert_eq!(
        o.findings
            .iter()
            .map(|f| f.found.as_str())
            .collect::<Vec<_>>(),
        [
            "has no IMAGE_VERSION in .osrel",
            "has no IMAGE_ID in .osrel"
        ]
    );
    // Without .osrel, or without a configured image id, nothing to compare.
    let u = uki(0xaa64, None, 1 << 20);
    assert!(run("arm64", &[("appliance_18.efi.xz", &u)], &settings, &[])
        .findings
        .is_empty());
    let u = uki(0xaa64, Some("IMAGE_ID=other\nIMAGE_VERSION=18\n"), 1 << 20);
    assert!(run(
        "arm64",
        &[("appliance_18.efi.xz", &u)],
        &Settings::default(),
        &[]
    )
    .findings
    .is_empty());
    // An unreadable .osrel.
    let mut u = uki(0xaa64, None, 1 << 20);
    if let Kind::Pe { osrel, .. } = &mut u.kind {
        *osrel = Some(Err("not UTF-8 text".into()));
    }
    let o = run("arm64", &[("appliance_18.efi.xz", &u)], &settings, &[]);
    assert_eq!(checks_of(&o), [Check::UkiVersion]);
}

#[test]
fn esp_budget_counts_instances() {
    let u = uki(0xaa64, Some(OSREL18), 227 << 20);
    let settings = Settings {
        esp_size: Some(500 << 20),
        esp_reserved: 60 << 20,
        ..Default::default()
    };
    // 227 MiB × InstancesMax 2 = 454 MiB > 500 − 60 MiB.
    let o = run("arm64", &[("appliance_18.efi.xz", &u)], &settings, &[]);
    assert_eq!(checks_of(&o), [Check::EspSize]);
    let f = &o.findings[0];
    assert!(
        f.found.contains("454.0 MiB") && f.found.contains("× InstancesMax 2"),
        "{f}"
    );
    assert!(
        f.expected.contains("440.0 MiB") && f.expected.contains("esp-reserved"),
        "{f}"
    );
    let roomy = Settings {
        esp_reserved: 0,
        ..settings.clone()
    };
    assert!(run("arm64", &[("appliance_18.efi.xz", &u)], &roomy, &[])
        .findings
        .is_empty());
    assert!(run(
        "arm64",
        &[("appliance_18.efi.xz", &u)],
        &settings,
        &[Check::EspSize]
    )
    .findings
    .is_empty());
    // Unknown size: said, not refused.
    let mut unknown = u.clone();
    unknown.kind = Kind::Unknown;
    unknown.exact_size = None;
    let o = run(
        "arm64",
        &[("appliance_18.efi.xz", &unknown)],
        &settings,
        &[],
    );
    assert!(o.findings.is_empty());
    assert!(
        o.unchecked[0].contains("esp-size not checked"),
        "{:?}",
        o.unchecked
    );
}

#[test]
fn partition_slot_size_and_format() {
    let settings = Settings {
        partition_sizes: [("60-store".to_string(), 64 << 20)].into(),
        ..Default::default()
    };
    let o = run(
        "arm64",
        &[("store_18.img.xz", &erofs(100 << 20))],
        &settings,
        &[],
    );
    assert_eq!(checks_of(&o), [Check::PartitionSize]);
    assert!(
        o.findings[0].found.contains("100.0 MiB"),
        "{}",
        o.findings[0]
    );
    let compressed = Content {
        kind: Kind::Compressed(crate::compress::Detected::Xz),
        exact_size: Some(10),
    };
    let o = run("arm64", &[("store_18.img.xz", &compressed)], &settings, &[]);
    assert_eq!(checks_of(&o), [Check::ImageFormat]);
    assert!(o.findings[0].found.contains("compressed twice"));
    let unknown = Content {
        kind: Kind::Unknown,
        exact_size: Some(10),
    };
    let o = run("arm64", &[("store_18.img.xz", &unknown)], &settings, &[]);
    assert!(
        o.findings[0].found.contains("no recognised format"),
        "{}",
        o.findings[0]
    );
    assert!(o.findings[0]
        .expected
        .contains("root-arm64 partition slot of transfer 60-store"));
}

#[test]
fn gpt_partition_types_belong_to_the_arch() {
    let t = |name: &str| {
        let (_, g) = crate::image::gpt::tests::named(name);
        g
    };
    let disk = |types: &[Guid]| Content {
        kind: Kind::Gpt {
            header: Header {
                sector: 512,
                alternate_lba: 100,
                entries_lba: 2,
                entries: 128,
                entry_size: 128,
                entries_crc: 0,
            },
            partitions: types
                .iter()
                .enumerate()
                .map(|(i, g)| Partition {
                    number: i as u32 + 1,
                    type_guid: *g,
                    label: String::new(),
                    first_lba: 34,
                    last_lba: 40,
                })
                .collect(),
        },
        exact_size: None,
    };
    let good = disk(&[t("esp"), t("root-arm64"), t("root-arm64-verity")]);
    assert!(run(
        "arm64",
        &[("disk_18.raw.xz", &good)],
        &Settings::default(),
        &[]
    )
    .findings
    .is_empty());
    let bad = disk(&[t("esp"), t("root-x86-64"), t("usr-x86-64-verity")]);
    let o = run(
        "arm64",
        &[("disk_18.raw.xz", &bad)],
        &Settings::default(),
        &[],
    );
    assert_eq!(checks_of(&o), [Check::GptArch]);
    let f = &o.findings[0];
    assert!(
        f.found
            .contains("partition 2 is root-x86-64, partition 3 is usr-x86-64-verity"),
        "{f}"
    );
    assert!(
        f.expected.starts_with("root-arm64, usr-arm64-verity"),
        "{f}"
    );
    let damaged = Content {
        kind: Kind::BadGpt("CRC".into()),
        exact_size: None,
    };
    let o = run(
        "arm64",
        &[("disk_18.raw.xz", &damaged)],
        &Settings::default(),
        &[],
    );
    assert_eq!(checks_of(&o), [Check::GptArch]);
    // A whole disk into a partition slot.
    let o = run(
        "arm64",
        &[("store_18.img.xz", &good)],
        &Settings::default(),
        &[],
    );
    assert_eq!(checks_of(&o), [Check::ImageFormat]);
}

#[test]
fn names_and_uninspected_payloads() {
    for c in Check::ALL {
        assert_eq!(Check::parse(c.name()), Ok(c));
        assert!(!c.about().is_empty());
    }
    let e = Check::parse("uki").unwrap_err().to_string();
    assert!(e.contains("uki-arch") && e.contains("all"), "{e}");
    let o = check(
        arch("arm64"),
        &transfers(),
        &[Item {
            name: "appliance_18.efi.bz2",
            content: None,
        }],
        &Settings::default(),
        &BTreeSet::new(),
    );
    assert!(o.findings.is_empty());
    assert_eq!(o.unchecked, ["arm64: appliance_18.efi.bz2: not inspected"]);
    let r = Refused {
        findings: vec![Finding {
            check: Check::UkiArch,
            arch: arch("arm64"),
            file: "a".into(),
            found: "is b".into(),
            expected: "c".into(),
        }],
    };
    let msg = r.to_string();
    assert!(
        msg.contains("nothing was uploaded") && msg.contains("--skip-check NAME --reason"),
        "{msg}"
    );
}
