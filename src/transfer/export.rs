//! The files a device needs for this channel, taken from the publisher's
//! own transfer directory (`device-files`): what the publisher checks
//! releases against is byte for byte what devices read, so the two cannot
//! drift.

use std::path::{Path, PathBuf};

use super::{list_conf_files, load_dir, read_text, Specifiers, Transfer, TransferError};

/// One file of a device's definitions directory, by its path there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceFile {
    pub rel: PathBuf,
    pub bytes: Vec<u8>,
}

/// Every file systemd-sysupdate reads from a definitions directory: the
/// transfer files it would pick (`*.transfer`, or the legacy `*.conf` when
/// there are none) with their `.d/*.conf` drop-ins, and `*.feature` files
/// with theirs. The transfers are parsed first, with `spec`, so a file the
/// publisher cannot read never reaches a device. Returns the transfers too.
pub fn device_files(
    dir: &Path,
    spec: &Specifiers,
) -> Result<(Vec<DeviceFile>, Vec<Transfer>), TransferError> {
    let transfers = load_dir(dir, spec)?;
    let mut mains = list_conf_files(dir, ".transfer")?;
    if mains.is_empty() {
        mains = list_conf_files(dir, ".conf")?;
    }
    mains.extend(list_conf_files(dir, ".feature")?);
    let mut out = Vec::new();
    for main in mains {
        let name = main
            .file_name()
            .expect("listed files have names")
            .to_owned();
        out.push(file(&main, PathBuf::from(&name))?);
        let mut dropins = PathBuf::from(&name).into_os_string();
        dropins.push(".d");
        let dropin_dir = dir.join(&dropins);
        if dropin_dir.is_dir() {
            for d in list_conf_files(&dropin_dir, ".conf")? {
                let rel = Path::new(&dropins).join(d.file_name().expect("named"));
                out.push(file(&d, rel)?);
            }
        }
    }
    Ok((out, transfers))
}

fn file(path: &Path, rel: PathBuf) -> Result<DeviceFile, TransferError> {
    Ok(DeviceFile {
        rel,
        bytes: read_text(path)?.into_bytes(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transfer::testutil::{spec, UKI};

    #[test]
    fn transfers_features_and_drop_ins_are_taken_and_nothing_else() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::write(p.join("50-uki.transfer"), UKI).unwrap();
        std::fs::create_dir(p.join("50-uki.transfer.d")).unwrap();
        std::fs::write(
            p.join("50-uki.transfer.d/10-max.conf"),
            "[Target]\nInstancesMax=4\n",
        )
        .unwrap();
        std::fs::write(
            p.join("debug.feature"),
            "[Feature]\nDescription=Debug tools\n",
        )
        .unwrap();
        std::fs::write(p.join("README"), "not for devices").unwrap();
        std::fs::write(p.join("old.conf"), "ignored: .transfer files exist").unwrap();
        let (files, transfers) = device_files(p, &spec()).unwrap();
        let rels: Vec<String> = files
            .iter()
            .map(|f| f.rel.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            rels,
            [
                "50-uki.transfer",
                "50-uki.transfer.d/10-max.conf",
                "debug.feature"
            ]
        );
        assert_eq!(files[0].bytes, UKI.as_bytes());
        assert_eq!(transfers[0].target.instances_max, Some(4));
    }

    #[test]
    fn a_transfer_the_publisher_cannot_read_is_not_exported() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("50-bad.transfer"),
            "[Source]\nType=url-file\n",
        )
        .unwrap();
        assert!(device_files(d.path(), &spec()).is_err());
    }
}
