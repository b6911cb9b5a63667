//! PE/COFF headers of EFI images (UKIs, add-ons, boot loaders), read with
//! the `object` crate from the first bytes of a payload.
//!
//! Firmware refuses a PE image whose COFF machine is not the CPU's, so the
//! machine field is what decides where a UKI boots. The section table says
//! where `.osrel` lies and how large the image is, without reading the
//! kernel and initrd behind it.

use object::pe::{ImageDosHeader, ImageNtHeaders32, ImageNtHeaders64, IMAGE_NT_SIGNATURE};
use object::read::pe::{optional_header_magic, ImageNtHeaders};
use object::LittleEndian as LE;

use crate::arch::Arch;

/// A section of the image: where its bytes are in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub offset: u64,
    /// Bytes in the file (the smaller of raw and virtual size: the rest is
    /// the file alignment's padding).
    pub size: u64,
}

/// What the headers of a PE image say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pe {
    /// COFF `Machine`.
    pub machine: u16,
    pub sections: Vec<Section>,
    /// Bytes the image occupies in a file: the end of the last section's
    /// raw data or of the signature (certificate table), whichever is later.
    pub extent: u64,
}

impl Pe {
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// A UKI has a kernel in `.linux`; add-ons and boot loaders do not.
    pub fn is_uki(&self) -> bool {
        self.section(".linux").is_some()
    }
}

/// Headers that start like a PE image but cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PeError(pub String);

/// (COFF machine, how people call it, the systemd arch it boots on).
const MACHINES: &[(u16, &str, Option<&str>)] = &[
    (0x8664, "AMD64 (x86-64)", Some("x86-64")),
    (0xaa64, "ARM64", Some("arm64")),
    (0x5064, "RISCV64", Some("riscv64")),
    (0x014c, "I386 (x86)", Some("x86")),
    (0x01c4, "ARMNT (32-bit arm)", Some("arm")),
    (0x6264, "LOONGARCH64", Some("loongarch64")),
    (0x6232, "LOONGARCH32", None),
    (0x5032, "RISCV32", None),
    (0x5128, "RISCV128", None),
    (0x01c0, "ARM", None),
    (0x01c2, "THUMB", None),
    (0x0200, "IA64", None),
    (0x0ebc, "EBC (EFI byte code)", None),
    (0xa641, "ARM64EC", None),
    (0xa64e, "ARM64X", None),
];

/// "AMD64 (x86-64)", or the number when the machine is not an EFI one we know.
pub fn machine_name(machine: u16) -> String {
    MACHINES
        .iter()
        .find(|m| m.0 == machine)
        .map(|m| m.1.to_string())
        .unwrap_or_else(|| format!("machine 0x{machine:04x}"))
}

/// The COFF machine a PE image for `arch` must have; `None` where UEFI
/// does not exist (ppc64-le, s390x).
pub fn machine_for(arch: Arch) -> Option<u16> {
    MACHINES
        .iter()
        .find(|m| m.2 == Some(arch.systemd()))
        .map(|m| m.0)
}

/// Whether `head` starts a PE image: a DOS header whose `e_lfanew` points
/// at `PE\0\0`. A plain "MZ" is not enough (two bytes prove nothing).
pub fn is_pe(head: &[u8]) -> bool {
    let Ok(dos) = ImageDosHeader::parse(head) else {
        return false;
    };
    let at = dos.nt_headers_offset() as usize;
    head.get(at..at.saturating_add(4))
        .is_some_and(|sig| sig == IMAGE_NT_SIGNATURE.to_le_bytes())
}

/// Reads the headers and section table from the first bytes of an image.
/// `Ok(None)` when it is no PE image; an error when it starts like one
/// (see [`is_pe`]) but its headers are broken or lie beyond `head`.
pub fn parse(head: &[u8]) -> Result<Option<Pe>, PeError> {
    if !is_pe(head) {
        return Ok(None);
    }
    let err = |what: &str, e: object::read::Error| {
        PeError(format!(
            "{what}: {e} (headers must lie in the first {} KiB)",
            head.len() >> 10
        ))
    };
    let magic = optional_header_magic(head).map_err(|e| err("optional header", e))?;
    match magic {
        object::pe::IMAGE_NT_OPTIONAL_HDR64_MAGIC => read::<ImageNtHeaders64>(head, err).map(Some),
        object::pe::IMAGE_NT_OPTIONAL_HDR32_MAGIC => read::<ImageNtHeaders32>(head, err).map(Some),
        m => Err(PeError(format!(
            "unknown optional header magic 0x{m:04x} (neither PE32 nor PE32+)"
        ))),
    }
}

fn read<H: ImageNtHeaders>(
    head: &[u8],
    err: impl Fn(&str, object::read::Error) -> PeError,
) -> Result<Pe, PeError> {
    let dos = ImageDosHeader::parse(head).map_err(|e| err("DOS header", e))?;
    let mut offset = u64::from(dos.nt_headers_offset());
    let (nt, dirs) = H::parse(head, &mut offset).map_err(|e| err("NT headers", e))?;
    let table = nt
        .sections(head, offset)
        .map_err(|e| err("section table", e))?;
    let mut sections = Vec::new();
    let mut extent = 0u64;
    for s in table.iter() {
        let (at, size) = s.pe_file_range();
        let raw_end =
            u64::from(s.pointer_to_raw_data.get(LE)) + u64::from(s.size_of_raw_data.get(LE));
        extent = extent.max(raw_end);
        let name = String::from_utf8_lossy(s.raw_name()).into_owned();
        sections.push(Section {
            name,
            offset: u64::from(at),
            size: u64::from(size),
        });
    }
    // The certificate table's address is a file offset, not an RVA.
    if let Some(cert) = dirs.get(object::pe::IMAGE_DIRECTORY_ENTRY_SECURITY) {
        let end = u64::from(cert.virtual_address.get(LE)) + u64::from(cert.size.get(LE));
        if cert.size.get(LE) > 0 {
            extent = extent.max(end);
        }
    }
    Ok(Pe {
        machine: nt.file_header().machine.get(LE).0,
        sections,
        extent,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A minimal PE32+ image: DOS header, NT headers, `n` sections.
    pub(crate) fn tiny_pe(machine: u16, sections: &[(&str, u32, u32)]) -> Vec<u8> {
        let mut b = vec![0u8; 0x40];
        b[0..2].copy_from_slice(b"MZ");
        b[0x3c..0x40].copy_from_slice(&0x40u32.to_le_bytes());
        b.extend_from_slice(b"PE\0\0");
        // COFF header: machine, sections, time, symtab, nsyms, opt size, characteristics.
        b.extend_from_slice(&machine.to_le_bytes());
        b.extend_from_slice(&(sections.len() as u16).to_le_bytes());
        b.extend_from_slice(&[0; 12]);
        b.extend_from_slice(&240u16.to_le_bytes());
        b.extend_from_slice(&0x22u16.to_le_bytes());
        // Optional header PE32+: 112 bytes of fields + 16 data directories.
        let mut opt = vec![0u8; 240];
        opt[0..2].copy_from_slice(&0x20bu16.to_le_bytes());
        opt[108..112].copy_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&opt);
        for (name, at, size) in sections {
            let mut h = [0u8; 40];
            h[..name.len()].copy_from_slice(name.as_bytes());
            h[8..12].copy_from_slice(&size.to_le_bytes()); // virtual size
            h[16..20].copy_from_slice(&size.to_le_bytes()); // raw size
            h[20..24].copy_from_slice(&at.to_le_bytes()); // raw pointer
            b.extend_from_slice(&h);
        }
        b
    }

    #[test]
    fn reads_machine_sections_and_extent() {
        let img = tiny_pe(
            0xaa64,
            &[(".osrel", 0x400, 0x30), (".linux", 0x1000, 0x5000)],
        );
        let pe = parse(&img).unwrap().unwrap();
        assert_eq!(pe.machine, 0xaa64);
        assert_eq!(machine_name(pe.machine), "ARM64");
        assert_eq!(
            pe.section(".osrel"),
            Some(&Section {
                name: ".osrel".into(),
                offset: 0x400,
                size: 0x30
            })
        );
        assert!(pe.is_uki());
        assert_eq!(pe.extent, 0x6000);
    }

    #[test]
    fn every_efi_arch_has_its_machine() {
        for (arch, m) in [
            ("x86-64", 0x8664),
            ("arm64", 0xaa64),
            ("riscv64", 0x5064),
            ("x86", 0x014c),
            ("arm", 0x01c4),
            ("loongarch64", 0x6264),
        ] {
            assert_eq!(machine_for(Arch::parse(arch).unwrap()), Some(m), "{arch}");
        }
        assert_eq!(machine_for(Arch::parse("s390x").unwrap()), None);
        assert_eq!(machine_name(0x1234), "machine 0x1234");
    }

    #[test]
    fn malformed_headers() {
        // Not PE at all.
        assert_eq!(parse(b""), Ok(None));
        assert_eq!(parse(b"MZ"), Ok(None), "two bytes prove nothing");
        assert_eq!(parse(&[0u8; 4096]), Ok(None));
        let img = tiny_pe(0x8664, &[(".text", 0x400, 0x10)]);
        // e_lfanew pointing past the data: not recognised as PE.
        let mut bad = img.clone();
        bad[0x3c..0x40].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        assert_eq!(parse(&bad), Ok(None));
        // PE signature, but the optional header is cut off.
        let e = parse(&img[..0x50]).unwrap_err();
        assert!(e.0.contains("first"), "{e}");
        // Unknown optional header magic.
        let mut bad = img.clone();
        bad[0x58..0x5a].copy_from_slice(&0x0107u16.to_le_bytes());
        assert!(parse(&bad).unwrap_err().0.contains("0x0107"));
        // Section table beyond the data.
        let mut bad = img.clone();
        bad[0x46..0x48].copy_from_slice(&500u16.to_le_bytes());
        assert!(parse(&bad).unwrap_err().0.contains("section table"));
        // Optional header size smaller than the header itself.
        let mut bad = img;
        bad[0x54..0x56].copy_from_slice(&8u16.to_le_bytes());
        assert!(parse(&bad).is_err());
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse(&data);
        }

        #[test]
        fn never_panics_on_corrupted_headers(
            flips in proptest::collection::vec((0usize..0x200, any::<u8>()), 1..8),
            cut in 0usize..0x200,
        ) {
            let mut img = tiny_pe(0x8664, &[(".osrel", 0x400, 0x30), (".linux", 0x1000, 0x5000)]);
            for (at, v) in flips {
                if at < img.len() { img[at] = v; }
            }
            img.truncate(cut.max(0x40));
            let _ = parse(&img);
        }
    }
}
