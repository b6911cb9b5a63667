//! Building each architecture's update output with `nix build --json`.
//!
//! `--json` exists since nix 2.4 and prints the output paths; the newer
//! `--print-out-paths` (2.9+) is avoided so Debian's nix 2.8 works.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde::Deserialize;
use thiserror::Error;

use crate::arch::Arch;

#[derive(Debug, Error)]
pub enum NixError {
    #[error("the nix attribute {attribute:?} contains {{version}}: pass --version")]
    NeedsVersion { attribute: String },
    #[error(
        "cannot run nix ({0}); install nix or pass --output SYSTEM=PATH for each architecture"
    )]
    Spawn(std::io::Error),
    #[error("{arch}: `nix build {installable}` failed ({status}); its output is above")]
    Failed {
        arch: Arch,
        installable: String,
        status: std::process::ExitStatus,
    },
    #[error("{arch}: cannot understand the JSON of `nix build {installable}`: {message}")]
    Json {
        arch: Arch,
        installable: String,
        message: String,
    },
}

#[derive(Deserialize)]
struct BuildResult {
    outputs: std::collections::BTreeMap<String, PathBuf>,
}

/// The installable for one system, with `{system}` and `{version}` filled in.
pub fn installable(nix: &Nix, arch: Arch, version: Option<&str>) -> Result<String, NixError> {
    let mut attr = nix.attribute.replace("{system}", arch.nix_system());
    if attr.contains("{version}") {
        let v = version.ok_or_else(|| NixError::NeedsVersion {
            attribute: nix.attribute.clone(),
        })?;
        attr = attr.replace("{version}", v);
    }
    Ok(format!("{}#{attr}", nix.flake))
}

/// `[nix]` of the configuration: what to build, for which systems.
#[derive(Clone, Debug)]
pub struct Nix {
    pub flake: String,
    pub attribute: String,
    /// `component-attribute`: what `release --component NAME` builds, with
    /// `{component}` (and `{system}`, `{version}`) filled in.
    pub component_attribute: Option<String>,
    pub systems: Vec<Arch>,
}

impl Nix {
    /// The `[nix]` that builds `component`'s outputs (the OS's: `None`).
    pub fn for_component(&self, component: Option<&str>) -> Option<Nix> {
        let Some(c) = component else {
            return Some(self.clone());
        };
        self.component_attribute.as_ref().map(|a| Nix {
            attribute: a.replace("{component}", c),
            ..self.clone()
        })
    }
}

/// Builds the output of every configured system; nix's own progress goes to our stderr.
pub fn build_all(nix: &Nix, version: Option<&str>) -> Result<Vec<(Arch, PathBuf)>, NixError> {
    nix.systems
        .iter()
        .map(|&arch| {
            let installable = installable(nix, arch, version)?;
            build(arch, &installable).map(|p| (arch, p))
        })
        .collect()
}

fn build(arch: Arch, installable: &str) -> Result<PathBuf, NixError> {
    let out = Command::new("nix")
        .args(["build", "--no-link", "--json", installable])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(NixError::Spawn)?;
    if !out.status.success() {
        return Err(NixError::Failed {
            arch,
            installable: installable.to_string(),
            status: out.status,
        });
    }
    parse_output(&out.stdout).map_err(|message| NixError::Json {
        arch,
        installable: installable.to_string(),
        message,
    })
}

/// Picks the single `out` path from `nix build --json` output.
pub fn parse_output(json: &[u8]) -> Result<PathBuf, String> {
    let results: Vec<BuildResult> = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    match results.as_slice() {
        [one] => one
            .outputs
            .get("out")
            .cloned()
            .ok_or_else(|| "the derivation has no `out` output".to_string()),
        other => Err(format!("expected one build result, got {}", other.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nix_2_8_json() {
        let j = br#"[{"drvPath":"/nix/store/abc-x.drv","outputs":{"out":"/nix/store/def-x"}}]"#;
        assert_eq!(parse_output(j).unwrap(), PathBuf::from("/nix/store/def-x"));
        assert!(parse_output(b"[]").is_err());
        assert!(parse_output(b"not json").is_err());
        assert!(parse_output(br#"[{"outputs":{"dev":"/x"}}]"#)
            .unwrap_err()
            .contains("out"));
    }

    #[test]
    fn installable_substitutes_system_and_version() {
        let nix = Nix {
            flake: "path:/f".into(),
            attribute: "packages.{system}.appliance_{version}_update".into(),
            component_attribute: None,
            systems: vec![],
        };
        let arm = Arch::parse("arm64").unwrap();
        assert_eq!(
            installable(&nix, arm, Some("18")).unwrap(),
            "path:/f#packages.aarch64-linux.appliance_18_update"
        );
        assert!(matches!(
            installable(&nix, arm, None),
            Err(NixError::NeedsVersion { .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_json_never_panics(s in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = parse_output(&s);
        }
    }
}
