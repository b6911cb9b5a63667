//! Preflight: the content checks that refuse a release which would brick
//! devices, run after staging and before anything is uploaded.
//!
//! Names are right but contents wrong is what hurts fleets: an x86-64 UKI
//! in the arm64 directory boots nowhere; a UKI whose `.osrel` disagrees
//! with its file name's version is installed again and again and leaves
//! the booted slot unprotected; a UKI too large for the ESP times
//! `InstancesMax`, or an image larger than its partition slot, fails on the
//! device only after the download. Each check looks at what staging's
//! [`crate::image::Inspector`] saw; none reads a payload again.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use crate::arch::Arch;
use crate::image::{gpt, pe, Content, Kind};
use crate::transfer::{SourceType, Transfer};

/// One check, by the name `--skip-check` takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(into = "&'static str")]
pub enum Check {
    UkiArch,
    UkiVersion,
    UkiImageId,
    EspSize,
    PartitionSize,
    GptArch,
    ImageFormat,
}

impl Check {
    pub const ALL: [Check; 7] = [
        Check::UkiArch,
        Check::UkiVersion,
        Check::UkiImageId,
        Check::EspSize,
        Check::PartitionSize,
        Check::GptArch,
        Check::ImageFormat,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Check::UkiArch => "uki-arch",
            Check::UkiVersion => "uki-version",
            Check::UkiImageId => "uki-image-id",
            Check::EspSize => "esp-size",
            Check::PartitionSize => "partition-size",
            Check::GptArch => "gpt-arch",
            Check::ImageFormat => "image-format",
        }
    }

    /// What it checks, for `--help`, README and refusals.
    pub fn about(self) -> &'static str {
        match self {
            Check::UkiArch => "a PE image's COFF machine is the arch directory's",
            Check::UkiVersion => "a UKI's .osrel IMAGE_VERSION is the version in its name",
            Check::UkiImageId => "a UKI's .osrel IMAGE_ID is [checks] image-id",
            Check::EspSize => "ESP transfers' payloads × InstancesMax fit [checks] esp-size",
            Check::PartitionSize => "a payload fits [checks.partition-size] of its transfer",
            Check::GptArch => "a GPT image's root/usr partition types are the arch directory's",
            Check::ImageFormat => "a partition target gets a file system image",
        }
    }

    pub fn parse(s: &str) -> Result<Check, UnknownCheck> {
        Check::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| UnknownCheck(s.to_string()))
    }
}

impl From<Check> for &'static str {
    fn from(c: Check) -> &'static str {
        c.name()
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown check {0:?}: choose one of {names}, or all", names = Check::ALL.map(Check::name).join(", "))]
pub struct UnknownCheck(pub String);

/// What the checks compare with (`[checks]` in the configuration).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// `IMAGE_ID=` every UKI's `.osrel` must state.
    pub image_id: Option<String>,
    /// Bytes of the devices' ESP (or XBOOTLDR) that UKIs may fill.
    pub esp_size: Option<u64>,
    /// Bytes of it taken by other files (boot loader, firmware updates).
    pub esp_reserved: u64,
    /// Transfer name → largest decompressed payload its target takes
    /// (a partition slot's size).
    pub partition_sizes: BTreeMap<String, u64>,
}

/// A check that failed: enough for a release engineer to act on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub check: Check,
    pub arch: Arch,
    pub file: String,
    /// "is an AMD64 (x86-64) UKI".
    pub found: String,
    pub expected: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} {}; expected {} [{}]",
            self.arch, self.file, self.found, self.expected, self.check
        )
    }
}

/// What preflight found for one arch: failures, and what it could not check.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub findings: Vec<Finding>,
    /// Checks that could not run on a payload, and why (no refusal).
    pub unchecked: Vec<String>,
}

/// A payload as preflight sees it.
#[derive(Clone, Copy, Debug)]
pub struct Item<'a> {
    /// Published name (`appliance_18.efi.xz`).
    pub name: &'a str,
    /// `None`: not inspected (a bzip2 payload, or checks skipped).
    pub content: Option<&'a Content>,
}

/// Runs every check not in `skip` on one arch's payloads.
pub fn check(
    arch: Arch,
    transfers: &[Transfer],
    items: &[Item],
    settings: &Settings,
    skip: &BTreeSet<Check>,
) -> Outcome {
    let mut out = Outcome::default();
    let on = |c: Check| !skip.contains(&c);
    let mut esp: Vec<(String, u64, u64)> = Vec::new();
    for item in items {
        let matched = transfers
            .iter()
            .find_map(|t| t.match_source(item.name).map(|f| (t, f.version)));
        let Some(content) = item.content else {
            out.unchecked
                .push(format!("{arch}: {}: not inspected", item.name));
            continue;
        };
        let mut finding = |check: Check, found: String, expected: String| {
            if on(check) {
                out.findings.push(Finding {
                    check,
                    arch,
                    file: item.name.to_string(),
                    found,
                    expected,
                });
            }
        };
        let version = matched.as_ref().and_then(|(_, v)| v.as_deref());
        pe_checks(arch, content, version, settings, &mut finding);
        gpt_checks(arch, content, &mut finding);
        let Some((t, _)) = matched else { continue };
        if t.target.target_type == SourceType::Partition {
            format_check(content, t, &mut finding);
        }
        if let Some(&limit) = settings.partition_sizes.get(&t.name) {
            match content.size() {
                Some(size) if size > limit => finding(
                    Check::PartitionSize,
                    format!("decompresses to {}", bytes(size)),
                    format!(
                        "at most {} ([checks.partition-size] \"{}\"), or the device fails after the download",
                        bytes(limit),
                        t.name
                    ),
                ),
                Some(_) => {}
                None if on(Check::PartitionSize) => out.unchecked.push(format!(
                    "{arch}: {}: partition-size not checked: its decompressed size is unknown",
                    item.name
                )),
                None => {}
            }
        }
        if t.target.on_boot_partition() && settings.esp_size.is_some() {
            let instances = t.target.instances_max.unwrap_or(1);
            match content.size() {
                Some(size) => esp.push((item.name.to_string(), size, instances)),
                None if on(Check::EspSize) => out.unchecked.push(format!(
                    "{arch}: {}: esp-size not checked: its decompressed size is unknown",
                    item.name
                )),
                None => {}
            }
        }
    }
    if let (Some(esp_size), true) = (settings.esp_size, on(Check::EspSize)) {
        esp_check(arch, &esp, esp_size, settings.esp_reserved, &mut out);
    }
    out
}

fn bytes(n: u64) -> String {
    const MIB: f64 = (1u64 << 20) as f64;
    if n >= 1 << 20 {
        format!("{:.1} MiB ({n} bytes)", n as f64 / MIB)
    } else {
        format!("{n} bytes")
    }
}

fn article(s: &str) -> &'static str {
    if s.starts_with(['A', 'E', 'I', 'O', 'U', 'a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

fn pe_checks(
    arch: Arch,
    content: &Content,
    version: Option<&str>,
    settings: &Settings,
    finding: &mut impl FnMut(Check, String, String),
) {
    let (pe, osrel) = match &content.kind {
        Kind::Pe { pe, osrel } => (pe, osrel),
        Kind::BadPe(e) => {
            return finding(
                Check::UkiArch,
                format!("is a damaged PE image ({e})"),
                "a PE image the firmware can load".into(),
            )
        }
        _ => return,
    };
    let what = if pe.is_uki() { "UKI" } else { "PE image" };
    if pe::machine_for(arch) != Some(pe.machine) {
        let machine = pe::machine_name(pe.machine);
        let expected = match pe::machine_for(arch) {
            Some(m) => format!(
                "{} {what} for {arch}: firmware refuses any other machine type (are two build outputs swapped, or did a cross build fall back to the build machine?)",
                pe::machine_name(m)
            ),
            None => format!("no PE image: {arch} has no UEFI firmware to load it"),
        };
        finding(
            Check::UkiArch,
            format!("is {} {machine} {what}", article(&machine)),
            expected,
        );
    }
    let Some(osrel) = osrel else { return };
    let o = match osrel {
        Ok(o) => o,
        Err(e) => {
            return finding(
                Check::UkiVersion,
                format!("has an unreadable .osrel section ({e})"),
                "os-release text with IMAGE_VERSION".into(),
            )
        }
    };
    if let Some(v) = version {
        let found = match o.get("IMAGE_VERSION") {
            Some(iv) if iv == v => None,
            Some(iv) => Some(format!("says IMAGE_VERSION={iv} in .osrel")),
            None => Some("has no IMAGE_VERSION in .osrel".to_string()),
        };
        if let Some(found) = found {
            finding(
                Check::UkiVersion,
                found,
                format!("IMAGE_VERSION={v}, the version in its name: devices would boot it, see {v} as newer and install it again (an update loop), and ProtectVersion=%A would not protect the booted slot"),
            );
        }
    }
    if let Some(id) = &settings.image_id {
        if o.get("IMAGE_ID") != Some(id) {
            let found = o.get("IMAGE_ID").map_or_else(
                || "has no IMAGE_ID in .osrel".to_string(),
                |i| format!("says IMAGE_ID={i} in .osrel"),
            );
            finding(
                Check::UkiImageId,
                found,
                format!("IMAGE_ID={id} ([checks] image-id): it is another image's UKI"),
            );
        }
    }
}

fn gpt_checks(arch: Arch, content: &Content, finding: &mut impl FnMut(Check, String, String)) {
    let partitions = match &content.kind {
        Kind::Gpt { partitions, .. } => partitions,
        Kind::BadGpt(e) => {
            return finding(
                Check::GptArch,
                format!("is a damaged GPT disk image ({e})"),
                "an intact partition table".into(),
            )
        }
        _ => return,
    };
    let foreign: Vec<(String, String)> = partitions
        .iter()
        .filter_map(|p| {
            let t = gpt::dps_type(&p.type_guid)?;
            t.arch.filter(|a| *a != arch.systemd())?;
            let want = gpt::same_kind_for(t.name, arch.systemd())
                .map_or_else(|| format!("a {arch} type"), str::to_string);
            Some((format!("partition {} is {}", p.number, t.name), want))
        })
        .collect();
    if !foreign.is_empty() {
        finding(
            Check::GptArch,
            format!(
                "is a GPT disk image whose {}",
                foreign
                    .iter()
                    .map(|(f, _)| f.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            format!(
                "{} (Discoverable Partitions Specification): a device of another architecture does not find its root or /usr",
                foreign
                    .iter()
                    .map(|(_, w)| w.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
}

/// A partition slot takes a file system (or the verity data its type says).
fn format_check(content: &Content, t: &Transfer, finding: &mut impl FnMut(Check, String, String)) {
    let ptype = t.target.match_partition_type.as_deref().unwrap_or("");
    let verity = ptype.ends_with("-verity") || ptype == "root-verity" || ptype == "usr-verity";
    let verity_sig = ptype.ends_with("-verity-sig");
    let found = match &content.kind {
        Kind::FileSystem(_) if !verity_sig => return,
        // Verity hash data needs no superblock (systemd-repart writes none).
        Kind::Unknown if verity => return,
        Kind::Unknown if verity_sig => return,
        Kind::Gpt { .. } | Kind::BadGpt(_) => {
            "is a whole GPT disk image, which would be written into one partition".to_string()
        }
        Kind::Compressed(d) => {
            format!("is still {d}-compressed after the device decompresses it (compressed twice)")
        }
        other => {
            let c = Content {
                kind: other.clone(),
                exact_size: None,
            };
            format!("holds {}", c.describe())
        }
    };
    finding(
        Check::ImageFormat,
        found,
        format!(
            "a file system image (erofs, squashfs, ext4, btrfs, xfs, vfat) for the {} partition slot of transfer {}",
            if ptype.is_empty() { "linux-generic" } else { ptype },
            t.name
        ),
    );
}

fn esp_check(
    arch: Arch,
    esp: &[(String, u64, u64)],
    esp_size: u64,
    reserved: u64,
    out: &mut Outcome,
) {
    if esp.is_empty() {
        return;
    }
    let need: u64 = esp
        .iter()
        .map(|(_, size, n)| size.saturating_mul(*n))
        .fold(0, u64::saturating_add);
    let room = esp_size.saturating_sub(reserved);
    if need <= room {
        return;
    }
    let parts: Vec<String> = esp
        .iter()
        .map(|(name, size, n)| format!("{name} {} × InstancesMax {n}", bytes(*size)))
        .collect();
    out.findings.push(Finding {
        check: Check::EspSize,
        arch,
        file: esp.iter().map(|(n, ..)| n.as_str()).collect::<Vec<_>>().join(", "),
        found: format!("need {} on the ESP ({})", bytes(need), parts.join(" + ")),
        expected: format!(
            "at most {} ([checks] esp-size {}{}): devices would fail after downloading it; shrink the UKI or lower InstancesMax",
            bytes(room),
            bytes(esp_size),
            if reserved > 0 {
                format!(" less esp-reserved {}", bytes(reserved))
            } else {
                String::new()
            }
        ),
    });
}

/// Every finding of a release, refusing it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("preflight refused the release; nothing was uploaded:\n{}\nFix the build, or skip a check with --skip-check NAME --reason TEXT (recorded in the history)", findings.iter().map(|f| format!("  - {f}")).collect::<Vec<_>>().join("\n"))]
pub struct Refused {
    pub findings: Vec<Finding>,
}

#[cfg(test)]
mod tests;
