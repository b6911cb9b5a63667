//! What a new user meets in the first hour (issue 16): reports on stdout,
//! completions and man pages, and errors that say what is wrong once, with
//! exit status 2 for every mistake found before work starts.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::{bin, fake_outputs, run, stderr, stdout, TestChannel};

fn channel_with(extra: &str) -> TestChannel {
    TestChannel::new(extra)
}

/// A channel with 17 and 18 published for every example arch.
fn published() -> TestChannel {
    let ch = channel_with("keep = 3");
    for v in ["17", "18"] {
        run(
            ch.cmd().arg("release").args(fake_outputs(ch.dir.path(), v)),
            0,
        );
    }
    ch
}

// --- Output conventions -------------------------------------------------

#[test]
fn status_prints_its_report_on_stdout_and_quiet_keeps_it() {
    let ch = published();
    let out = ch.run(&["status"], 0);
    let report = stdout(&out);
    assert!(report.contains("x86-64: signed by"), "{report}");
    assert!(report.contains("history:"), "{report}");
    assert!(!stderr(&out).contains("signed by"), "{}", stderr(&out));

    let quiet = ch.run(&["-q", "status"], 0);
    assert_eq!(
        stdout(&quiet),
        report,
        "-q silences diagnostics, not the report"
    );
    assert_eq!(stderr(&quiet), "");

    // With --json the document is the report: stdout holds only JSON.
    let json = ch.run(&["--json", "status"], 0);
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(doc["schema"], 1);
    assert!(stderr(&json).contains("x86-64: signed by"));
}

/// `status | head` with the reader gone: the command still ends normally.
#[test]
fn a_closed_stdout_does_not_crash_a_command() {
    let ch = published();
    for args in [
        &["status"][..],
        &["--json", "status"],
        &["yank", "18", "--reason", "x"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = ch
            .cmd()
            .args(args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    }
    assert!(
        !ch.manifest("x86-64").contains("_18"),
        "the yank went through"
    );
}

#[test]
fn write_commands_and_inspect_report_on_stdout() {
    let ch = published();
    let out = run(
        ch.cmd()
            .arg("release")
            .args(fake_outputs(ch.dir.path(), "19")),
        0,
    );
    assert!(stdout(&out).contains("released 19"), "{}", stdout(&out));
    let out = ch.run(&["yank", "19", "--reason", "bricks"], 0);
    assert!(stdout(&out).contains("withdraw 19"), "{}", stdout(&out));
    assert!(stdout(&out).contains("What devices do now"));

    let payloads = common::fake_output(ch.dir.path(), "x86_64-linux", "20");
    let out = run(
        bin()
            .args(["inspect", "--transfers"])
            .arg(common::repo().join("examples/minimal/sysupdate.d"))
            .arg(&payloads)
            .current_dir(ch.dir.path()),
        0,
    );
    assert!(
        stdout(&out).contains("20           complete"),
        "{}",
        stdout(&out)
    );
}

// --- Completions and man pages ------------------------------------------

/// The commands as `--help` lists them (clap's own view of the CLI).
fn commands() -> Vec<String> {
    sysupdate_publish::cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect()
}

#[test]
fn completions_for_bash_zsh_and_fish_name_every_command() {
    let names = commands();
    assert!(names.contains(&"release".to_string()) && names.len() > 10);
    for shell in ["bash", "zsh", "fish"] {
        let out = run(bin().args(["completions", shell]), 0);
        let script = stdout(&out);
        for name in &names {
            assert!(script.contains(name.as_str()), "{shell}: no {name}");
        }
        assert!(script.contains("dry-run"), "{shell}: no options");
    }
    let out = run(bin().args(["completions", "tcsh"]), 2);
    assert!(stderr(&out).contains("bash"), "{}", stderr(&out));
}

#[test]
fn man_writes_a_readable_page_for_the_program_and_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("man1");
    run(bin().args(["man", "--out"]).arg(&out_dir), 0);
    let mut pages = vec!["sysupdate-publish".to_string()];
    pages.extend(commands().iter().map(|c| format!("sysupdate-publish-{c}")));
    // The real man renders every page: no skipping when it is missing.
    Command::new("man")
        .arg("--version")
        .output()
        .expect("man (Debian: man-db; scripts/test-prereqs installs it)");
    for page in &pages {
        let path = out_dir.join(format!("{page}.1"));
        let roff = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(roff.contains(".TH"), "{page}: not roff");
        let out = run(
            Command::new("man")
                .arg("-l")
                .arg(&path)
                .env("MANPAGER", "cat")
                .env("MANWIDTH", "100"),
            0,
        );
        let text = stdout(&out);
        assert!(
            text.contains("NAME") && text.contains(page.as_str()),
            "{page}: {text}"
        );
    }
    let release = std::fs::read_to_string(out_dir.join("sysupdate-publish-release.1")).unwrap();
    assert!(release.contains("sysupdate\\-publish release"), "{release}");

    // --out naming a file is a usage error.
    let file = dir.path().join("file");
    std::fs::write(&file, b"").unwrap();
    let out = run(bin().args(["man", "--out"]).arg(&file), 2);
    assert!(stderr(&out).contains("is a file"), "{}", stderr(&out));
}

/// The nix package's postInstall, run with installShellFiles' two helpers
/// written out as the layout they produce (nixpkgs' setup hook), against
/// this build: the snippet's commands must run and leave real files.
#[test]
fn the_nix_package_installs_completions_and_man_pages() {
    let flake = std::fs::read_to_string(common::repo().join("flake.nix")).unwrap();
    let start = flake
        .find("postInstall")
        .expect("flake.nix has a postInstall");
    let body = &flake[start..];
    let body = &body[body.find("''").unwrap() + 2..];
    let snippet = &body[..body.find("'';").unwrap()];
    let out = tempfile::tempdir().unwrap();
    std::fs::create_dir(out.path().join("bin")).unwrap();
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_sysupdate-publish"),
        out.path().join("bin/sysupdate-publish"),
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let helpers = r#"
set -euo pipefail
installShellCompletion() {
  local cmd=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --cmd) cmd=$2; shift 2 ;;
      --bash) mkdir -p "$out/share/bash-completion/completions"; cat "$2" > "$out/share/bash-completion/completions/$cmd.bash"; shift 2 ;;
      --zsh) mkdir -p "$out/share/zsh/site-functions"; cat "$2" > "$out/share/zsh/site-functions/_$cmd"; shift 2 ;;
      --fish) mkdir -p "$out/share/fish/vendor_completions.d"; cat "$2" > "$out/share/fish/vendor_completions.d/$cmd.fish"; shift 2 ;;
      *) echo "unexpected $1" >&2; return 1 ;;
    esac
  done
}
installManPage() { mkdir -p "$out/share/man/man1"; cp "$@" "$out/share/man/man1/"; }
"#;
    run(
        Command::new("bash")
            .arg("-c")
            .arg(format!("{helpers}\n{snippet}"))
            .env("out", out.path())
            .current_dir(work.path()),
        0,
    );
    for file in [
        "share/bash-completion/completions/sysupdate-publish.bash",
        "share/zsh/site-functions/_sysupdate-publish",
        "share/fish/vendor_completions.d/sysupdate-publish.fish",
        "share/man/man1/sysupdate-publish.1",
        "share/man/man1/sysupdate-publish-release.1",
    ] {
        let text = std::fs::read_to_string(out.path().join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(text.contains("release"), "{file}: {text}");
    }
}

#[test]
fn command_help_separates_global_options_and_hides_config_where_unused() {
    let help = stdout(&run(bin().args(["status", "--help"]), 0));
    let (own, global) = help.split_once("Global options:").expect(&help);
    assert!(
        own.contains("--deep") && !own.contains("--config"),
        "{help}"
    );
    assert!(
        global.contains("--config") && global.contains("--json"),
        "{help}"
    );
    for cmd in ["sums", "sign", "keygen"] {
        let help = stdout(&run(bin().args([cmd, "--help"]), 0));
        assert!(!help.contains("--config"), "{cmd}: {help}");
        assert!(!help.contains("--channel"), "{cmd}: {help}");
        assert!(help.contains("--json"), "{cmd}: {help}");
    }
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        bin().args(["sums", "--config", "x.toml"]).arg(dir.path()),
        2,
    );
    assert!(
        stderr(&out).contains("reads no configuration"),
        "{}",
        stderr(&out)
    );
}

// --- Errors ---------------------------------------------------------------

#[test]
fn an_unreadable_config_names_the_os_error_once_and_hints_only_without_config() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        bin()
            .arg("--config")
            .arg(dir.path().join("missing.toml"))
            .arg("status"),
        2,
    );
    let err = stderr(&out);
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");
    assert!(!err.contains("pass --config"), "{err}");

    let out = run(bin().arg("status").current_dir(dir.path()), 2);
    let err = stderr(&out);
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");
    assert!(err.contains("pass --config FILE"), "{err}");
}

#[test]
fn a_wrong_key_passphrase_says_so() {
    let home = tempfile::tempdir().unwrap();
    let gpg = |args: &[&str]| {
        let out = run(
            Command::new("gpg")
                .arg("--homedir")
                .arg(home.path())
                .args([
                    "--batch",
                    "--pinentry-mode",
                    "loopback",
                    "--passphrase",
                    "right",
                ])
                .args(args),
            0,
        );
        out.stdout
    };
    gpg(&[
        "--quick-gen-key",
        "P <p@example.org>",
        "ed25519",
        "sign",
        "never",
    ]);
    let secret = home.path().join("protected.asc");
    std::fs::write(&secret, gpg(&["--export-secret-keys", "--armor"])).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let file = home.path().join("SHA256SUMS");
    std::fs::write(&file, b"x\n").unwrap();
    let sign = |pass: &str, code| {
        stderr(&run(
            bin()
                .args(["sign", "--key"])
                .arg(&secret)
                .arg(&file)
                .env("SYSUPDATE_PUBLISH_KEY_PASSPHRASE", pass),
            code,
        ))
    };
    let err = sign("wrong", 1);
    assert!(
        err.contains("SYSUPDATE_PUBLISH_KEY_PASSPHRASE does not unlock the secret key"),
        "{err}"
    );
    assert!(!err.contains("invalid input"), "{err}");
    sign("right", 0);
}

/// Mistakes in how release is called: exit 2, before keys, locks or reads.
#[test]
fn release_usage_mistakes_exit_2_and_say_what_is_wrong() {
    let ch = published();
    let before = common::snapshot(&ch.store);
    let dir = ch.dir.path();
    let file = dir.join("result");
    std::fs::write(&file, b"not a directory").unwrap();
    let refused = |args: Vec<String>, needle: &str| {
        let out = run(ch.cmd().arg("release").args(&args), 2);
        let err = stderr(&out);
        assert!(
            err.contains(needle),
            "{args:?}: expected {needle:?} in:\n{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    };
    let mut outputs = fake_outputs(dir, "19");
    outputs[1] = format!("x86_64-linux={}", file.display());
    refused(outputs, "is a file, not a directory");
    let mut outputs = fake_outputs(dir, "19");
    outputs[1] = format!("x86_64-linux={}", dir.join("nowhere").display());
    refused(outputs, "does not exist");
    refused(vec!["19".into()], "--version 19");
    refused(
        [vec!["--version".into(), "".into()], fake_outputs(dir, "19")].concat(),
        "--version is empty",
    );
    // One arch alone would leave arm64 and riscv64 devices on 18.
    let x86 = fake_outputs(dir, "19")[..2].to_vec();
    refused(x86.clone(), "no --output for arm64, riscv64");
    refused(vec!["--partial".into()], "--partial goes with --output");
    assert_eq!(common::snapshot(&ch.store), before);
    // Meant: --partial.
    run(ch.cmd().args(["release", "--partial"]).args(&x86), 0);
    assert!(ch.manifest("x86-64").contains("_19"));
    assert!(!ch.manifest("arm64").contains("_19"));
}

#[test]
fn config_mistakes_exit_2_before_any_work() {
    let cases: [(&str, &str, &str); 4] = [
        (
            "signature-lifetime = \"2d\"\nexpiry-warning = \"3d\"",
            "",
            "expiry-warning",
        ),
        (
            "signature-lifetime = \"7d\"\nexpiry-warning = \"7d\"",
            "",
            "not shorter than signature-lifetime (7 days)",
        ),
        (
            "",
            "[transfers]\ncompress = \"xz\"\nthreads = 100000",
            "transfers.threads",
        ),
        ("", "", "transfers.dir"),
    ];
    for (channel, extra, needle) in cases {
        let keys = common::keygen();
        let dir = tempfile::tempdir().unwrap();
        let transfers = if needle == "transfers.dir" {
            dir.path().join("no-such-dir")
        } else {
            common::repo().join("examples/minimal/sysupdate.d")
        };
        let mut config = common::write_config_with(
            dir.path(),
            &dir.path().join("public"),
            &keys,
            channel,
            &transfers,
            "",
        );
        if !extra.is_empty() {
            // Replace the [transfers] section.
            let text = std::fs::read_to_string(&config).unwrap();
            let head = text.split("[transfers]").next().unwrap().to_string();
            config = dir.path().join("c.toml");
            std::fs::write(&config, format!("{head}{}\ndir = {transfers:?}\n", extra)).unwrap();
        }
        let out = run(bin().arg("--config").arg(&config).arg("status"), 2);
        assert!(stderr(&out).contains(needle), "{needle}: {}", stderr(&out));
    }
}

#[test]
fn a_missing_keyring_or_ca_file_exits_2() {
    let ch = channel_with("");
    let out = run(
        ch.cmd()
            .args(["verify", "--arch", "x86-64", "--ca"])
            .arg(ch.dir.path().join("no-ca.pem")),
        2,
    );
    assert!(stderr(&out).contains("--ca"), "{}", stderr(&out));
    std::fs::remove_file(&ch.keys.keyring).unwrap();
    let out = ch.run(&["status"], 2);
    assert!(stderr(&out).contains("signing.keyring"), "{}", stderr(&out));
}

#[test]
fn a_missing_secret_key_exits_2() {
    let ch = channel_with("");
    std::fs::remove_file(&ch.keys.secret).unwrap();
    let out = run(
        ch.cmd()
            .arg("release")
            .args(fake_outputs(ch.dir.path(), "17")),
        2,
    );
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
}

#[test]
fn a_build_output_of_3000_versions_is_refused_in_a_short_message() {
    let ch = channel_with("");
    let out_dir = ch.dir.path().join("many");
    std::fs::create_dir(&out_dir).unwrap();
    // Real xz bytes, so staging takes them as already compressed.
    let one = common::fake_output(ch.dir.path(), "x86_64-linux", "1");
    let xz = std::fs::read(one.join("appliance_1.efi.xz")).unwrap();
    for i in 1..=3000 {
        std::fs::write(out_dir.join(format!("appliance_{i}.efi.xz")), &xz).unwrap();
    }
    let out = run(
        ch.cmd()
            .args(["release", "--partial", "--output"])
            .arg(format!("x86_64-linux={}", out_dir.display())),
        1,
    );
    let err = stderr(&out);
    assert!(err.len() < 600, "{} bytes: {err}", err.len());
    assert!(err.contains("and 2992 more"), "{err}");
}

#[test]
fn sums_and_sign_write_world_readable_files_and_explain_best_before() {
    let keys = common::keygen();
    let dir = common::fake_output(keys.dir.path(), "x86_64-linux", "18");
    let out = run(
        bin()
            .args(["sums", "--best-before", "2099-01-01"])
            .arg(&dir),
        0,
    );
    assert!(
        stderr(&out).contains("sha256sum -c --ignore-missing SHA256SUMS"),
        "{}",
        stderr(&out)
    );
    run(
        bin()
            .args(["sign", "--key"])
            .arg(&keys.secret)
            .arg(dir.join("SHA256SUMS")),
        0,
    );
    for name in ["SHA256SUMS", "SHA256SUMS.gpg"] {
        let mode = std::fs::metadata(dir.join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644, "{name}: {mode:o}");
    }
}

// --- status and rollback wording -----------------------------------------

#[test]
fn status_shows_a_withdrawn_version_with_why_when_and_who_not_as_leftovers() {
    let ch = published();
    ch.run(&["yank", "18", "--reason", "18 bricks"], 0);
    let report = stdout(&ch.run(&["status"], 0));
    let line = report
        .lines()
        .find(|l| l.starts_with("18 withdrawn ("))
        .unwrap_or_else(|| panic!("{report}"));
    assert!(
        line.contains("18 bricks") && line.contains("yank at 20"),
        "{line}"
    );
    let fpr = ch.json(&["status"], 0)["arches"][0]["signer"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(line.contains(&format!("by {fpr}")), "{line}");
    assert!(!report.contains("stored, not listed"), "{report}");
}

#[test]
fn rollback_reads_clearly_in_the_history_and_its_dry_run_does_not_explain_devices() {
    let ch = published();
    run(
        ch.cmd()
            .arg("release")
            .args(fake_outputs(ch.dir.path(), "19")),
        0,
    );
    let dry = ch.run(&["rollback", "17", "--dry-run"], 0);
    assert!(
        !stdout(&dry).contains("What devices do now"),
        "{}",
        stdout(&dry)
    );
    assert!(stdout(&dry).contains("dry run"), "{}", stdout(&dry));
    ch.run(&["rollback", "17", "--reason", "18 bricks"], 0);
    let report = stdout(&ch.run(&["status"], 0));
    assert!(
        report.contains("rollback to 17, withdrew 19, 18 (18 bricks)")
            || report.contains("rollback to 17, withdrew 18, 19 (18 bricks)"),
        "{report}"
    );
}

#[test]
fn an_expiring_signature_says_within_12_hours() {
    let ch = channel_with("signature-lifetime = \"2d\"");
    let past = humantime::format_rfc3339_seconds(
        std::time::SystemTime::now() - std::time::Duration::from_secs(47 * 3600),
    )
    .to_string();
    run(
        ch.cmd()
            .arg("release")
            .args(fake_outputs(ch.dir.path(), "17"))
            .env(sysupdate_publish::commands::SIGNING_TIME_ENV, &past),
        0,
    );
    let out = run(ch.cmd().arg("status"), 1);
    assert!(stdout(&out).contains("within 12 hours"), "{}", stdout(&out));
}

#[test]
fn verify_names_a_refused_connection() {
    let ch = channel_with("");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = run(
        ch.cmd()
            .args(["verify", "--arch", "x86-64", "--url"])
            .arg(format!("http://127.0.0.1:{port}/stable")),
        1,
    );
    let err = stderr(&out);
    assert!(err.to_lowercase().contains("connection refused"), "{err}");
}

#[test]
fn plumbing_input_path_mistakes_exit_2() {
    let keys = common::keygen();
    let dir = keys.dir.path();
    let missing = dir.join("missing");
    let transfers = common::repo().join("examples/minimal/sysupdate.d");
    let cases: Vec<(Vec<std::ffi::OsString>, &str)> = vec![
        (
            vec!["sums".into(), missing.clone().into()],
            "no such directory",
        ),
        (
            vec!["sums".into(), keys.secret.clone().into()],
            "is a file, not a directory",
        ),
        (
            vec![
                "sign".into(),
                "--key".into(),
                missing.clone().into(),
                keys.keyring.clone().into(),
            ],
            "--key",
        ),
        (
            vec![
                "sign".into(),
                "--key".into(),
                keys.secret.clone().into(),
                missing.clone().into(),
            ],
            "no such file",
        ),
        (
            vec![
                "inspect".into(),
                "--transfers".into(),
                missing.clone().into(),
                dir.into(),
            ],
            "--transfers",
        ),
        (
            vec![
                "inspect".into(),
                "--transfers".into(),
                transfers.into(),
                missing.clone().into(),
            ],
            "PAYLOAD_DIR",
        ),
    ];
    for (args, needle) in cases {
        let out = run(bin().args(&args).current_dir(dir), 2);
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
}

/// A plain static server (python's http.server: no Cache-Control at all):
/// verify passes, counts the warnings, and shows them with -v.
#[test]
fn verify_counts_its_warnings_and_shows_them_with_v() {
    let ch = published();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    struct Server(std::process::Child);
    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Server(
        Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .arg("--directory")
            .arg(&ch.store)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 (the test suite's moto needs it too)"),
    );
    // Ready when it accepts a connection.
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let url = format!("http://127.0.0.1:{port}");
    let out = ch.run(&["verify", "--arch", "x86-64", "--url", &url], 0);
    let report = stdout(&out);
    assert!(report.contains("x86-64: OK, newest 18"), "{report}");
    assert!(
        report
            .lines()
            .last()
            .is_some_and(|l| l.ends_with(" warnings (run with -v to see them)")),
        "the count is the report's last line:\n{report}"
    );
    assert!(!report.contains("no Cache-Control header"), "{report}");
    let out = ch.run(&["-v", "verify", "--arch", "x86-64", "--url", &url], 0);
    let report = stdout(&out);
    assert!(
        report.contains("  warning: SHA256SUMS: no Cache-Control header"),
        "{report}"
    );
    assert!(!report.contains("run with -v"), "{report}");
}

/// `status` holds back the same kind of warnings as `verify`, the same way:
/// what systemd changes in the transfer files (`InstancesMax=1` becomes 2)
/// is counted on the report's last line, shown with -v, and listed in JSON;
/// a channel without any says nothing of warnings.
#[test]
fn status_counts_its_warnings_like_verify_and_shows_them_with_v() {
    let ch = published();
    let out = ch.run(&["status"], 0);
    assert!(!stdout(&out).contains("warning"), "{}", stdout(&out));

    let transfers = ch.dir.path().join("sysupdate.d");
    let example = common::repo().join("examples/minimal/sysupdate.d");
    std::fs::create_dir_all(transfers.join("60-store.transfer.d")).unwrap();
    for e in std::fs::read_dir(&example).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), transfers.join(e.file_name())).unwrap();
    }
    std::fs::write(
        transfers.join("60-store.transfer.d/keep-one.conf"),
        "[Target]\nInstancesMax=1\n",
    )
    .unwrap();
    let config = std::fs::read_to_string(&ch.config).unwrap();
    let config = config.replace(&format!("{example:?}"), &format!("{transfers:?}"));
    assert!(config.contains(&format!("{transfers:?}")), "{config}");
    std::fs::write(&ch.config, config).unwrap();

    let out = ch.run(&["status"], 0);
    let report = stdout(&out);
    let arches = report.lines().filter(|l| l.contains(": signed by")).count();
    assert_eq!(
        report.lines().last(),
        Some(format!("{arches} warnings (run with -v to see them)").as_str()),
        "one per arch, counted on the last line:\n{report}"
    );
    assert!(!report.contains("InstancesMax"), "{report}");
    assert!(!stderr(&out).contains("InstancesMax"), "{}", stderr(&out));

    let out = ch.run(&["-v", "status"], 0);
    let report = stdout(&out);
    assert!(
        report.contains("  warning: ")
            && report.contains("keep-one.conf:2: InstancesMax=1 is bumped to 2"),
        "{report}"
    );
    assert!(!report.contains("run with -v"), "{report}");

    let json = ch.json(&["status"], 0);
    let warnings = &json["arches"][0]["warnings"];
    assert_eq!(warnings.as_array().map(Vec::len), Some(1), "{json}");
}
