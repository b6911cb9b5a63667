//! SIGKILL at every crash point of a release: the channel must verify after
//! each kill, and rerunning the same command must finish the release.

mod common;

use common::*;

#[test]
fn killed_at_every_point_the_channel_verifies_and_a_rerun_completes() {
    let mut point = 1;
    loop {
        let dir = tempfile::tempdir().unwrap();
        let keys = keygen();
        let store = dir.path().join("public");
        let config = write_config(dir.path(), &store, &keys, "keep = 1");
        let release = |version: &str| {
            let mut cmd = bin();
            cmd.arg("--config")
                .arg(&config)
                .arg("release")
                .args(output_args(version));
            cmd
        };
        run(&mut release("17"), 0);
        let out = release("18")
            .env("SYSUPDATE_PUBLISH_CRASH_AT", point.to_string())
            .output()
            .unwrap();
        if out.status.success() {
            // Passed every crash point: the loop has covered them all.
            assert!(
                point > 15,
                "too few crash points ({point}): the protocol has more steps"
            );
            break;
        }
        assert_eq!(
            out.status.code(),
            None,
            "point {point}: not killed: {}",
            stderr(&out)
        );
        // Old-consistent or new-consistent, never in between.
        assert_channel_verifies(&store, &keys.keyring);
        for arch in ARCHES {
            let m = std::fs::read_to_string(store.join(arch).join("SHA256SUMS")).unwrap();
            let has17 = m.contains("appliance_17.efi.xz") && m.contains("store_17.img.xz");
            let has18 = m.contains("appliance_18.efi.xz") && m.contains("store_18.img.xz");
            assert!(has17 ^ has18, "point {point}, {arch}: mixed manifest:\n{m}");
        }
        let rerun = run(&mut release("18"), 0);
        assert_channel_verifies(&store, &keys.keyring);
        for arch in ARCHES {
            let m = std::fs::read_to_string(store.join(arch).join("SHA256SUMS")).unwrap();
            assert!(
                m.contains("store_18.img.xz") && !m.contains("_17"),
                "point {point}: {m}"
            );
        }
        let leftovers: Vec<_> = snapshot(&store)
            .into_keys()
            .filter(|p| p.to_string_lossy().contains("_17"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "point {point}: rerun left {leftovers:?}\n{}",
            stderr(&rerun)
        );
        point += 1;
    }
}
