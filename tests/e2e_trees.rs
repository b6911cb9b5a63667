//! End to end (issue 15): a directory build output, published as a url-tar
//! payload, is installed by the real systemd-sysupdate 257 (Debian trixie,
//! GNU tar) and 262 (Debian sid, libarchive) into a `Type=directory` target,
//! and the installed tree equals the build output's; a sysext named for one
//! host version installs only there; a component published on its own is
//! installed by 262's `--component=NAME update`, apart from the OS.
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

/// A component's transfer (`sysupdate.webapp.d/50-webapp.transfer`).
fn webapp_transfer(url: &str) -> String {
    format!(
        "[Source]\nType=url-file\nPath={url}/%a/\nMatchPattern=webapp_@v.raw.xz\n\n\
         [Target]\nType=regular-file\nPath=/var/lib/e2e/webapp\nMatchPattern=webapp_@v.raw\nInstancesMax=2\n"
    )
}

/// A component released on its own (`--component webapp release`) is
/// installed by systemd 262's `--component=webapp update` and by nothing
/// else: the OS's update takes the OS's version, the component's update
/// the component's, from one SHA256SUMS. The device's definitions are
/// written by `device-files`, for the OS and for the component.
#[test]
fn a_component_released_on_its_own_installs_with_component_update_on_262() {
    let ch = Channel::new("");
    let comp_dir = ch.work.join("sysupdate.webapp.d");
    std::fs::create_dir_all(&comp_dir).unwrap();
    std::fs::write(
        comp_dir.join("50-webapp.transfer"),
        webapp_transfer(&ch.url),
    )
    .unwrap();
    std::fs::write(
        ch.work.join("sysupdate.webapp.component"),
        "[Component]\nDescription=WebApp container image\n",
    )
    .unwrap();
    ch.release("18");
    let publish = |args: &[&str]| {
        let out = common::bin()
            .arg("--config")
            .arg(&ch.config)
            .args(["--component", "webapp"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    };
    let image = harness::store_image("3");
    let out = ch.work.join("out-webapp-3");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("webapp_3.raw"), &image).unwrap();
    let output = format!("{}={}", harness::SYSTEM, out.display());
    publish(&["release", "--output", &output]);
    let names = ch.served_names();
    assert!(
        names.contains(&"webapp_3.raw.xz".to_string())
            && names.contains(&"appliance_18.efi.xz".to_string()),
        "{names:?}"
    );
    // `verify` reads the stream it is told to, and checks every payload the
    // one manifest lists, whichever stream it belongs to.
    let verify = |component: Option<&str>, expect: i32| {
        let mut cmd = common::bin();
        cmd.arg("--config").arg(&ch.config);
        if let Some(c) = component {
            cmd.args(["--component", c]);
        }
        cmd.args(["--json", "verify", "--deep", "--ca"]).arg(&ch.ca);
        let out = common::run(&mut cmd, expect);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let r = verify(Some("webapp"), 0);
    assert_eq!(r["arches"][0]["newest"], "3", "{r}");
    assert_eq!(r["arches"][0]["payloads_checked"], 3, "{r}");
    assert_eq!(verify(None, 0)["arches"][0]["newest"], "18");

    // The device's /etc, as device-files writes it.
    let etc = ch.work.join("etc");
    let os_defs = etc.join("sysupdate.d");
    let r = common::bin()
        .arg("--config")
        .arg(&ch.config)
        .args(["device-files", "--out"])
        .arg(&os_defs)
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(0), "{}", common::stderr(&r));
    let comp_defs = etc.join("sysupdate.webapp.d");
    publish(&["device-files", "--out", comp_defs.to_str().unwrap()]);
    assert!(etc.join("sysupdate.webapp.component").is_file());

    let dev = Device::up_bare(Suite::Sid, &ch.ca, &ch.keys.keyring, "16");
    dev.install_etc(&etc);
    std::fs::create_dir_all(dev.root.join("var/lib/e2e/webapp")).unwrap();
    let sysupdate = |args: &[&str]| {
        let mut all = vec!["/usr/lib/systemd/systemd-sysupdate"];
        all.extend_from_slice(args);
        dev.chroot(&all)
    };
    let v = sysupdate(&["--version"]);
    assert!(v.stdout.starts_with("systemd 262 "), "not 262\n{v}");
    let listed = sysupdate(&["components"]);
    assert!(listed.stdout.contains("webapp"), "{listed}");

    sysupdate(&["--component=webapp", "update"])
        .status(0, "component update")
        .says("Successfully installed update '3'.", "component update");
    let installed = dev.root.join("var/lib/e2e/webapp/webapp_3.raw");
    assert!(
        std::fs::read(&installed).unwrap() == image,
        "the component's image"
    );
    assert!(
        !dev.root.join("var/lib/e2e/uki/appliance_18.efi").exists(),
        "a component update installed the OS"
    );

    sysupdate(&["update"])
        .status(0, "OS update")
        .says("Successfully installed update '18'.", "OS update");
    assert!(dev.root.join("var/lib/e2e/uki/appliance_18.efi").exists());
    let webapp: Vec<_> = std::fs::read_dir(dev.root.join("var/lib/e2e/webapp"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        webapp,
        ["webapp_3.raw"],
        "the OS update touched the component"
    );

    // A component's payload changed on the server fails verify from either stream.
    ch.tamper("webapp_3.raw.xz", b"not the published image");
    for component in [Some("webapp"), None] {
        let r = verify(component, 1);
        let problems = r["arches"][0]["problems"].to_string();
        assert!(problems.contains("webapp_3.raw.xz"), "{r}");
    }
}
