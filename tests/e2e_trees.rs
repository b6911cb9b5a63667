//! End to end (issue 15): a directory build output, published as a url-tar
//! payload, is installed by the real systemd-sysupdate 257 (Debian trixie,
//! GNU tar) and 262 (Debian sid, libarchive) into a `Type=directory` target,
//! and the installed tree equals the build output's.
//!
//! Runs as root, like the rest of the e2e suite (tests/e2e/README.md).

mod common;
#[path = "e2e/harness.rs"]
mod harness;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use harness::{Channel, Device, Suite};

/// The device's transfer for the tree, beside the harness's UKI and store.
fn tree_transfer(url: &str) -> String {
    format!(
        "[Source]\nType=url-tar\nPath={url}/%a/\nMatchPattern=tree_@v.tar.xz\n\n\
         [Target]\nType=directory\nPath=/var/lib/e2e/tree\nMatchPattern=tree_@v\n"
    )
}

/// `tree_<version>` in `out`: nested directories, an empty one, an
/// executable, links inside the tree and out of it.
fn tree(out: &Path, version: &str) {
    let root = out.join(format!("tree_{version}"));
    std::fs::create_dir_all(root.join("usr/lib/app")).unwrap();
    std::fs::create_dir_all(root.join("var/empty")).unwrap();
    let tool = root.join("usr/lib/app/tool");
    std::fs::write(&tool, format!("#!/bin/sh\necho {version}\n")).unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(root.join("usr/lib/app/data"), vec![b'x'; 300_000]).unwrap();
    std::os::unix::fs::symlink("usr/lib/app/tool", root.join("tool")).unwrap();
    std::os::unix::fs::symlink("/etc/os-release", root.join("os-release")).unwrap();
}

#[test]
fn a_directory_output_installs_as_that_tree_on_257_and_262() {
    let ch = Channel::new("");
    std::fs::write(
        ch.transfers.join("70-tree.transfer"),
        tree_transfer(&ch.url),
    )
    .unwrap();
    let out = ch.output("18", true);
    tree(&out, "18");
    let r = ch.release_raw(&out, &[]);
    assert_eq!(r.status.code(), Some(0), "{}", common::stderr(&r));
    assert!(
        ch.served_names().contains(&"tree_18.tar.xz".to_string()),
        "{:?}",
        ch.served_names()
    );

    for (suite, systemd) in [
        (Suite::Trixie, "systemd 257 "),
        (Suite::Sid, "systemd 262 "),
    ] {
        let dev = Device::up_on(suite, &ch, "16");
        // Version 16 is installed whole: its tree too.
        let target = dev.root.join("var/lib/e2e/tree");
        std::fs::create_dir_all(target.join("tree_16")).unwrap();
        let v = dev.sysupdate(&["--version"]);
        assert!(v.stdout.starts_with(systemd), "not {systemd}\n{v}");

        dev.sysupdate(&["update"])
            .status(0, "update")
            .says("Successfully installed update '18'.", "update");
        let installed = target.join("tree_18");
        common::assert_same_tree(
            &out.join("tree_18"),
            &installed,
            &format!("{systemd}: the installed tree"),
        );
        let mode = std::fs::metadata(installed.join("usr/lib/app/tool"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755, "{systemd}: the executable bit");
        let link = std::fs::read_link(installed.join("os-release")).unwrap();
        assert_eq!(
            link,
            Path::new("/etc/os-release"),
            "{systemd}: a link stays a link"
        );
    }
}

/// A system extension's transfer, named per host OS version as Flatcar's
/// sysext-bakery does (`name-@v-%w-%a.raw`).
fn sysext_transfer(url: &str) -> String {
    format!(
        "[Source]\nType=url-file\nPath={url}/%a/\nMatchPattern=tools-@v-%w-%a.raw.xz\n\n\
         [Target]\nType=regular-file\nPath=/var/lib/e2e/ext\nMatchPattern=tools-@v-%w-%a.raw\n"
    )
}

/// A sysext published with `%w` in its name (`[specifiers] w = "40"`) is
/// installed by a device whose os-release says `VERSION_ID=40` and ignored
/// by one that says 41, on 257 and 262.
#[test]
fn a_sysext_named_for_one_host_version_installs_only_on_that_version() {
    let ch = Channel::new("");
    for e in std::fs::read_dir(&ch.transfers).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    std::fs::write(
        ch.transfers.join("50-tools.transfer"),
        sysext_transfer(&ch.url),
    )
    .unwrap();
    let mut config = std::fs::read_to_string(&ch.config).unwrap();
    config.push_str("\n[specifiers]\nw = \"40\"\n");
    std::fs::write(&ch.config, config).unwrap();
    let out = ch.work.join("out-tools-18");
    std::fs::create_dir_all(&out).unwrap();
    let image = harness::store_image("18");
    std::fs::write(out.join("tools-18-40-x86-64.raw"), &image).unwrap();
    let r = ch.release_raw(&out, &[]);
    assert_eq!(r.status.code(), Some(0), "{}", common::stderr(&r));
    assert!(
        ch.served_names()
            .contains(&"tools-18-40-x86-64.raw.xz".to_string()),
        "{:?}",
        ch.served_names()
    );

    // A build output named for another host version is refused.
    let wrong = ch.work.join("out-tools-19");
    std::fs::create_dir_all(&wrong).unwrap();
    std::fs::write(wrong.join("tools-19-41-x86-64.raw"), &image).unwrap();
    let r = ch.release_raw(&wrong, &[]);
    assert_eq!(r.status.code(), Some(1), "{}", common::stderr(&r));
    assert!(
        common::stderr(&r).contains("tools-19-41-x86-64.raw"),
        "{}",
        common::stderr(&r)
    );

    for (suite, systemd) in [
        (Suite::Trixie, "systemd 257 "),
        (Suite::Sid, "systemd 262 "),
    ] {
        for (version_id, installs) in [("40", true), ("41", false)] {
            // Its only transfer is the extension's.
            let dev = Device::up_on(suite, &ch, "16");
            std::fs::create_dir_all(dev.root.join("var/lib/e2e/ext")).unwrap();
            let osrel = dev.root.join("etc/os-release");
            let _ = std::fs::remove_file(&osrel);
            std::fs::write(
                &osrel,
                format!("ID=debian\nVERSION_ID={version_id}\nPRETTY_NAME=\"e2e\"\n"),
            )
            .unwrap();
            let v = dev.sysupdate(&["--version"]);
            assert!(v.stdout.starts_with(systemd), "not {systemd}\n{v}");
            let update = dev.sysupdate(&["update"]);
            let installed = dev
                .root
                .join(format!("var/lib/e2e/ext/tools-18-{version_id}-x86-64.raw"));
            if installs {
                update
                    .status(0, "update")
                    .says("Successfully installed update '18'.", "update");
                assert!(std::fs::read(&installed).unwrap() == image, "{systemd}");
            } else {
                update.status(0, "update on another host version");
                assert!(
                    !update.stdout.contains("Successfully installed")
                        && !update.stderr.contains("Successfully installed"),
                    "{systemd}, VERSION_ID={version_id}: installed a sysext for 40\n{update}"
                );
                assert!(!installed.exists());
                assert_eq!(
                    std::fs::read_dir(dev.root.join("var/lib/e2e/ext"))
                        .unwrap()
                        .count(),
                    0,
                    "{systemd}: something was installed"
                );
            }
        }
    }
}
