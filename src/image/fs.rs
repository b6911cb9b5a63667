//! File system images recognised by their superblock magic. They carry no
//! architecture, so for them the magic is the check: a partition slot gets
//! a file system the device can mount, not a compressed stream or a whole
//! disk. Where the superblock states the file system's size, it is read,
//! so a size budget can be checked without decompressing everything.

use std::fmt;

/// A file system type found by magic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsKind {
    Erofs,
    Squashfs,
    Ext4,
    Btrfs,
    Xfs,
    Vfat,
    /// A dm-verity hash device with its superblock (`veritysetup format`).
    Verity,
}

impl fmt::Display for FsKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FsKind::Erofs => "erofs",
            FsKind::Squashfs => "squashfs",
            FsKind::Ext4 => "ext2/3/4",
            FsKind::Btrfs => "btrfs",
            FsKind::Xfs => "xfs",
            FsKind::Vfat => "vfat",
            FsKind::Verity => "dm-verity hash",
        })
    }
}

/// A recognised file system and the size its superblock states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fs {
    pub kind: FsKind,
    pub size: Option<u64>,
}

/// Bytes from the start [`detect`] may look at (btrfs's superblock is at 64 KiB).
pub const NEEDED: usize = 0x10000 + 0x1000;

fn bytes<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at.checked_add(N)?)?.try_into().ok()
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    bytes(b, at).map(u32::from_le_bytes)
}

fn le64(b: &[u8], at: usize) -> Option<u64> {
    bytes(b, at).map(u64::from_le_bytes)
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    bytes(b, at).map(u32::from_be_bytes)
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    bytes(b, at).map(u64::from_be_bytes)
}

/// Recognises the file system at the start of `head`.
pub fn detect(head: &[u8]) -> Option<Fs> {
    // squashfs: "hsqs", bytes_used at 40.
    if head.starts_with(b"hsqs") {
        return Some(Fs {
            kind: FsKind::Squashfs,
            size: le64(head, 40),
        });
    }
    // erofs: superblock at 1024, magic E0F5E1E2, blkszbits at +12, blocks at +36.
    if le32(head, 1024) == Some(0xE0F5_E1E2) {
        let size = match (head.get(1024 + 12), le32(head, 1024 + 36)) {
            (Some(&bits), Some(blocks)) if (9..=16).contains(&bits) => {
                Some(u64::from(blocks) << bits)
            }
            _ => None,
        };
        return Some(Fs {
            kind: FsKind::Erofs,
            size,
        });
    }
    // ext2/3/4: superblock at 1024, magic EF53 at +56.
    if bytes::<2>(head, 1024 + 56) == Some([0x53, 0xef]) {
        let size = (|| {
            let lo = u64::from(le32(head, 1024 + 4)?);
            let log = le32(head, 1024 + 24)?;
            let incompat = le32(head, 1024 + 0x60)?;
            let hi = if incompat & 0x80 != 0 {
                u64::from(le32(head, 1024 + 0x150)?)
            } else {
                0
            };
            let block = 1024u64.checked_shl(log).filter(|&b| b <= 65536)?;
            ((hi << 32) | lo).checked_mul(block)
        })();
        return Some(Fs {
            kind: FsKind::Ext4,
            size,
        });
    }
    if head.starts_with(b"XFSB") {
        let size = be64(head, 8)
            .zip(be32(head, 4))
            .and_then(|(blocks, bs)| blocks.checked_mul(u64::from(bs)));
        return Some(Fs {
            kind: FsKind::Xfs,
            size,
        });
    }
    if head.starts_with(b"verity\0\0") {
        return Some(Fs {
            kind: FsKind::Verity,
            size: None,
        });
    }
    if head.get(0x10040..0x10048) == Some(b"_BHRfS_M") {
        return Some(Fs {
            kind: FsKind::Btrfs,
            size: le64(head, 0x10000 + 0x70),
        });
    }
    let fat = head.get(510..512) == Some(&[0x55, 0xaa])
        && (head.get(54..57) == Some(b"FAT") || head.get(82..85) == Some(b"FAT"));
    if fat {
        return Some(Fs {
            kind: FsKind::Vfat,
            size: None,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn magics_and_sizes() {
        let mut sq = vec![0u8; 4096];
        sq[..4].copy_from_slice(b"hsqs");
        sq[40..48].copy_from_slice(&12345u64.to_le_bytes());
        assert_eq!(
            detect(&sq),
            Some(Fs {
                kind: FsKind::Squashfs,
                size: Some(12345)
            })
        );
        let mut e = vec![0u8; 4096];
        e[1024..1028].copy_from_slice(&0xE0F5_E1E2u32.to_le_bytes());
        e[1024 + 12] = 12;
        e[1024 + 36..1024 + 40].copy_from_slice(&10u32.to_le_bytes());
        assert_eq!(detect(&e).unwrap().size, Some(40960));
        e[1024 + 12] = 200; // absurd block size: kind known, size not
        assert_eq!(
            detect(&e),
            Some(Fs {
                kind: FsKind::Erofs,
                size: None
            })
        );
        let mut x = vec![0u8; 4096];
        x[1024 + 56..1024 + 58].copy_from_slice(&[0x53, 0xef]);
        x[1024 + 4..1024 + 8].copy_from_slice(&100u32.to_le_bytes());
        x[1024 + 24..1024 + 28].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(detect(&x).unwrap().size, Some(409600));
        x[1024 + 24..1024 + 28].copy_from_slice(&40u32.to_le_bytes());
        assert_eq!(detect(&x).unwrap().size, None, "block size 2^50 is no ext4");
    }

    #[test]
    fn malformed_and_short_input() {
        assert_eq!(detect(b""), None);
        assert_eq!(detect(b"hsq"), None);
        // Magic present, size fields cut off.
        assert_eq!(
            detect(b"hsqs"),
            Some(Fs {
                kind: FsKind::Squashfs,
                size: None
            })
        );
        let mut e = vec![0u8; 1030];
        e[1024..1028].copy_from_slice(&0xE0F5_E1E2u32.to_le_bytes());
        assert_eq!(detect(&e).unwrap().size, None);
        // Compressed data and zeros are no file system.
        assert_eq!(detect(&[0xfd, b'7', b'z', b'X', b'Z', 0]), None);
        assert_eq!(detect(&vec![0u8; NEEDED]), None);
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..2048), magic in 0usize..5) {
            let mut d = data;
            let m: &[(usize, &[u8])] = &[(0, b"hsqs"), (1024, &[0xe2, 0xe1, 0xf5, 0xe0]), (1080, &[0x53, 0xef]), (0, b"XFSB"), (0, b"verity\0\0")];
            let (at, bytes) = m[magic];
            if d.len() >= at + bytes.len() { d[at..at + bytes.len()].copy_from_slice(bytes); }
            let _ = detect(&d);
        }
    }
}
