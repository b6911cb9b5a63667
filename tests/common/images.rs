//! Real payloads for the preflight tests, made by real tools: UKIs from
//! Debian's systemd-boot EFI stub with binutils `objcopy`, GPT disk images
//! by util-linux `sfdisk`, file systems by `mkfs.erofs` and `mksquashfs`.

use std::path::Path;
use std::process::{Command, Stdio};

pub const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

fn tool(cmd: &mut Command) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (.ci/run installs it)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The COFF machine of a systemd arch, as the firmware wants it.
pub fn machine(arch: &str) -> u16 {
    match arch {
        "x86-64" => 0x8664,
        "arm64" => 0xaa64,
        "riscv64" => 0x5064,
        "x86" => 0x014c,
        "arm" => 0x01c4,
        "loongarch64" => 0x6264,
        other => panic!("no EFI machine for {other}"),
    }
}

/// A UKI: the stub plus `.osrel` (when given) and a `.linux` of
/// `kernel_size` bytes, its COFF machine set to `arch`'s (the 2 bytes
/// after `PE\0\0`, which is what the firmware and preflight read).
pub fn uki(path: &Path, arch: &str, osrel: Option<&str>, kernel_size: usize) {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("linux");
    // Not compressible to nothing: a kernel is not zeros.
    let bytes: Vec<u8> = (0..kernel_size as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&kernel, bytes).unwrap();
    let mut cmd = Command::new("objcopy");
    if let Some(text) = osrel {
        let f = dir.path().join("osrel");
        std::fs::write(&f, text).unwrap();
        cmd.arg(format!("--add-section=.osrel={}", f.display()))
            .arg("--change-section-vma=.osrel=0x20000");
    }
    cmd.arg(format!("--add-section=.linux={}", kernel.display()))
        .arg("--change-section-vma=.linux=0x2000000")
        .arg(STUB)
        .arg(path);
    tool(&mut cmd);
    let mut img = std::fs::read(path).unwrap();
    let pe = u32::from_le_bytes(img[0x3c..0x40].try_into().unwrap()) as usize;
    assert_eq!(&img[pe..pe + 4], b"PE\0\0");
    img[pe + 4..pe + 6].copy_from_slice(&machine(arch).to_le_bytes());
    std::fs::write(path, img).unwrap();
}

pub fn osrel(id: &str, version: &str) -> String {
    format!("NAME=Appliance\nID=appliance\nIMAGE_ID={id}\nIMAGE_VERSION={version}\n")
}

/// A GPT disk image with one 1 MiB partition per DPS type name.
pub fn gpt(path: &Path, types: &[&str]) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(4 << 20).unwrap();
    drop(f);
    let ids = String::from_utf8(
        Command::new("systemd-id128")
            .arg("show")
            .output()
            .expect("systemd-id128")
            .stdout,
    )
    .unwrap();
    let mut script = String::from("label: gpt\n");
    for t in types {
        let hex = ids
            .lines()
            .find_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some(t)).then(|| w.next().unwrap().to_string())
            })
            .unwrap_or_else(|| panic!("no partition type {t}"));
        let uuid = format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        );
        script += &format!("size=1MiB, type={uuid}\n");
    }
    let mut child = Command::new("sfdisk")
        .arg("--quiet")
        .arg(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("sfdisk (.ci/run installs fdisk)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
}

/// A tree of `files` files to put in a file system image.
fn tree(files: usize) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for i in 0..files {
        let data: Vec<u8> = (0..4096u32)
            .map(|j| (j.wrapping_mul(i as u32 + 7) >> 3) as u8)
            .collect();
        std::fs::write(d.path().join(format!("f{i}")), data).unwrap();
    }
    d
}

/// An erofs image made by mkfs.erofs from `files` 4 KiB files.
pub fn erofs(path: &Path, files: usize) {
    let src = tree(files);
    tool(
        Command::new("mkfs.erofs")
            .arg("-d0")
            .arg(path)
            .arg(src.path()),
    );
}

/// A squashfs image made by mksquashfs.
pub fn squashfs(path: &Path, files: usize) {
    let src = tree(files);
    tool(Command::new("mksquashfs").arg(src.path()).arg(path).args([
        "-quiet",
        "-noappend",
        "-no-progress",
    ]));
}

/// Compresses `path` in place with the xz CLI (`path.xz`), as a build that
/// ships compressed payloads would.
pub fn xz(path: &Path) {
    tool(Command::new("xz").arg("-q").arg("-T1").arg(path));
}
