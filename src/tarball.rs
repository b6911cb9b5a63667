//! Directory build outputs as `url-tar` payloads: a reproducible tar of the
//! tree's contents, as `tar -C DIR -c .` would write it, so that the same
//! tree always gives the same bytes (and so the same published hash).
//!
//! What makes it reproducible: names in byte order, every mtime set to
//! `SOURCE_DATE_EPOCH` (or 0), owner and group 0 with no names, no atime,
//! ctime or extended attributes. Symlinks are stored as links (their text,
//! never their target's content); hard links become separate files. Device
//! nodes, fifos and sockets are refused: a device cannot get them from a
//! download, and a build output that has one is broken.
//!
//! systemd-sysupdate untars into the target directory (GNU tar up to 258,
//! libarchive from 259, whose reader refuses absolute names and `..`): the
//! archive starts with the root `./` and names everything below it
//! relative to it.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum PackError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is a {kind}; a url-tar payload can hold only directories, regular files and symlinks (remove it from the build output)")]
    Special { path: PathBuf, kind: &'static str },
    #[error("{path}: the name is not UTF-8; tar names in payloads must be")]
    BadName { path: PathBuf },
}

/// The mtime every entry gets: `SOURCE_DATE_EPOCH` when set to a number
/// (as reproducible builds set it), else 0.
pub fn source_date_epoch() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// `root` and everything below it, links not followed (but `root` itself),
/// names in byte order: the order of the tar.
fn sorted_walk(root: &Path) -> walkdir::WalkDir {
    walkdir::WalkDir::new(root)
        .follow_links(false)
        .follow_root_links(true)
        .sort_by(|a, b| {
            a.file_name()
                .as_encoded_bytes()
                .cmp(b.file_name().as_encoded_bytes())
        })
}

/// What tells that a tree (and so its tar) did not change, without reading
/// a file: SHA-256 over every entry's relative name, type, link text and
/// stamp (device, inode, size, mtime, ctime, mode), and the tar's mtime.
/// Any write below `root` moves some ctime, so a changed tree never gets
/// the fingerprint of its old self.
pub fn fingerprint(root: &Path, mtime: u64) -> io::Result<String> {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(format!("tar mtime {mtime}\n"));
    let walk = sorted_walk(root);
    for entry in walk {
        let entry = entry.map_err(io::Error::from)?;
        let m = entry.metadata().map_err(io::Error::from)?;
        let rel = entry.path().strip_prefix(root).unwrap_or(entry.path());
        h.update(rel.as_os_str().as_encoded_bytes());
        h.update([0]);
        if m.file_type().is_symlink() {
            h.update(fs::read_link(entry.path())?.as_os_str().as_encoded_bytes());
            h.update([0]);
        }
        let fields = [
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime() as u64,
            m.mtime_nsec() as u64,
            m.ctime() as u64,
            m.ctime_nsec() as u64,
            u64::from(m.mode()),
        ];
        for f in fields {
            h.update(f.to_le_bytes());
        }
    }
    Ok(crate::hash::to_hex(&h.finalize().into()))
}

/// Writes the tar of `root`'s contents to `to`; returns the bytes written.
pub fn pack(root: &Path, mtime: u64, to: impl Write) -> Result<u64, PackError> {
    let io_at = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PackError::Io { path, source }
    };
    let mut out = Counter { inner: to, n: 0 };
    {
        let mut tar = tar::Builder::new(&mut out);
        tar.follow_symlinks(false);
        let walk = sorted_walk(root);
        for entry in walk {
            let entry = entry.map_err(|e| {
                let path = e.path().unwrap_or(root).to_path_buf();
                PackError::Io {
                    path,
                    source: e.into(),
                }
            })?;
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .expect("walkdir stays below its root");
            let name = if rel.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                PathBuf::from(rel.to_str().ok_or_else(|| PackError::BadName {
                    path: path.to_path_buf(),
                })?)
            };
            let meta = if entry.depth() == 0 {
                fs::metadata(path)
            } else {
                fs::symlink_metadata(path)
            }
            .map_err(io_at(path))?;
            let mut header = tar::Header::new_gnu();
            header.set_mode(meta.mode() & 0o7777);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(mtime);
            let kind = meta.file_type();
            if kind.is_dir() {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                tar.append_data(&mut header, &name, io::empty())
                    .map_err(io_at(path))?;
            } else if kind.is_file() {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(meta.len());
                let file = File::open(path).map_err(io_at(path))?;
                // A file that grows or shrinks while packed would give a
                // corrupt archive: read exactly the size in the header.
                let mut exact = io::Read::take(file, meta.len());
                tar.append_data(&mut header, &name, &mut exact)
                    .map_err(io_at(path))?;
            } else if kind.is_symlink() {
                let target = fs::read_link(path).map_err(io_at(path))?;
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                tar.append_link(&mut header, &name, &target)
                    .map_err(io_at(path))?;
            } else {
                let kind = if kind.is_block_device() {
                    "block device"
                } else if kind.is_char_device() {
                    "character device"
                } else if kind.is_fifo() {
                    "fifo"
                } else {
                    "socket"
                };
                return Err(PackError::Special {
                    path: path.to_path_buf(),
                    kind,
                });
            }
        }
        tar.finish().map_err(io_at(root))?;
    }
    out.flush().map_err(io_at(root))?;
    Ok(out.n)
}

/// Counts what the archive writes.
struct Counter<W> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for Counter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// The fingerprint holds while nothing below the root changes, and
    /// moves with any write, a link's new text, or another tar mtime.
    #[test]
    fn a_fingerprint_moves_with_every_change_below_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("t");
        tree(&root);
        let fp = || fingerprint(&root, 0).unwrap();
        let before = fp();
        assert_eq!(fp(), before);
        assert_ne!(fingerprint(&root, 1).unwrap(), before);
        let changes: [&dyn Fn(); 3] = [
            // Same bytes again: only ctime tells.
            &|| fs::write(root.join("etc/a.conf"), "a=1\n").unwrap(),
            &|| {
                fs::remove_file(root.join("etc/link")).unwrap();
                std::os::unix::fs::symlink("b/run", root.join("etc/link")).unwrap();
            },
            &|| fs::create_dir(root.join("etc/b/new")).unwrap(),
        ];
        let mut seen = vec![before];
        for change in changes {
            std::thread::sleep(std::time::Duration::from_millis(10));
            change();
            let now = fp();
            assert!(!seen.contains(&now), "a change kept an old fingerprint");
            seen.push(now);
        }
    }

    fn tree(dir: &Path) {
        fs::create_dir_all(dir.join("etc/b")).unwrap();
        fs::write(dir.join("etc/a.conf"), "a=1\n").unwrap();
        fs::write(dir.join("etc/b/run"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(dir.join("etc/b/run"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("a.conf", dir.join("etc/link")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.join("outside")).unwrap();
        fs::write(dir.join("Z-upper"), vec![7u8; 70_000]).unwrap();
        let long = "n".repeat(120);
        fs::write(dir.join("etc").join(&long), "long name").unwrap();
    }

    fn packed(dir: &Path, mtime: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let n = pack(dir, mtime, &mut out).unwrap();
        assert_eq!(n, out.len() as u64);
        out
    }

    #[test]
    fn the_same_tree_packs_to_the_same_bytes_wherever_and_whenever_it_lies() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        tree(a.path());
        std::thread::sleep(std::time::Duration::from_millis(20));
        tree(b.path());
        assert_eq!(packed(a.path(), 0), packed(b.path(), 0));
        assert_ne!(packed(a.path(), 0), packed(a.path(), 1_700_000_000));
    }

    #[test]
    fn the_archive_holds_the_tree_with_links_as_links_and_owner_zero() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path());
        let bytes = packed(dir.path(), 42);
        let mut archive = tar::Archive::new(bytes.as_slice());
        let mut seen = Vec::new();
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let h = e.header();
            assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
            assert_eq!(h.mtime().unwrap(), 42);
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let link = e
                .link_name()
                .unwrap()
                .map(|l| l.to_string_lossy().into_owned());
            let mode = h.mode().unwrap();
            let mut data = Vec::new();
            io::Read::read_to_end(&mut e, &mut data).unwrap();
            seen.push((path, link, mode, data.len()));
        }
        let names: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
        let long = format!("etc/{}", "n".repeat(120));
        assert_eq!(
            names,
            [
                ".",
                "Z-upper",
                "etc",
                "etc/a.conf",
                "etc/b",
                "etc/b/run",
                "etc/link",
                long.as_str(),
                "outside"
            ]
        );
        let find = |n: &str| seen.iter().find(|s| s.0 == n).unwrap();
        assert_eq!(find("etc/link").1.as_deref(), Some("a.conf"));
        assert_eq!(find("outside").1.as_deref(), Some("/etc/passwd"));
        assert_eq!(find("etc/b/run").2 & 0o777, 0o755);
        assert_eq!(find("Z-upper").3, 70_000);
        // GNU tar reads it back to the same tree.
        let x = tempfile::tempdir().unwrap();
        let tarball = x.path().join("t.tar");
        fs::write(&tarball, &bytes).unwrap();
        let unpacked = x.path().join("root");
        fs::create_dir(&unpacked).unwrap();
        let ok = std::process::Command::new("tar")
            .arg("-C")
            .arg(&unpacked)
            .args(["--numeric-owner", "-pxf"])
            .arg(&tarball)
            .status()
            .unwrap();
        assert!(ok.success());
        let diff = std::process::Command::new("diff")
            .arg("-r")
            .arg("--no-dereference")
            .arg(dir.path())
            .arg(&unpacked)
            .output()
            .unwrap();
        assert!(
            diff.status.success(),
            "{}",
            String::from_utf8_lossy(&diff.stdout)
        );
    }

    #[test]
    fn device_nodes_and_fifos_are_refused_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let e = pack(dir.path(), 0, io::sink()).unwrap_err().to_string();
        assert!(e.contains("pipe is a fifo"), "{e}");
    }
}
