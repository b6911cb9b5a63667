//! Components (systemd 262, `sysupdate.components(5)`): a directory
//! `sysupdate.NAME.d/` beside `sysupdate.d/` holds the transfers of one
//! component, a version stream of its own that devices update with
//! `systemd-sysupdate --component=NAME`. All streams publish into the same
//! arch directories and one SHA256SUMS, so a name must belong to exactly
//! one stream: a name two streams match would be taken by both.

use std::fs;
use std::path::{Path, PathBuf};

use super::{load_dir, Specifiers, Transfer, TransferError};

/// The transfers of one stream: the OS (`None`) or a component.
#[derive(Clone, Debug)]
pub struct Stream {
    pub component: Option<String>,
    pub transfers: Vec<Transfer>,
}

impl Stream {
    /// How messages name the stream.
    pub fn label(&self) -> String {
        label(self.component.as_deref())
    }
}

/// How messages name a stream: "the OS" or "component NAME".
pub fn label(component: Option<&str>) -> String {
    match component {
        None => "the OS (sysupdate.d)".into(),
        Some(c) => format!("component {c}"),
    }
}

/// How a version line names its stream: "component NAME " before the
/// version, nothing for the OS (as lines read before components).
pub fn prefix(component: Option<&str>) -> String {
    component
        .map(|c| format!("component {c} "))
        .unwrap_or_default()
}

/// The directory of a stream's transfers: the configured directory for the
/// OS, `sysupdate.NAME.d` beside it for a component.
pub fn dir_of(transfers_dir: &Path, component: Option<&str>) -> PathBuf {
    match component {
        None => transfers_dir.to_owned(),
        Some(c) => transfers_dir
            .parent()
            .unwrap_or(Path::new("."))
            .join(format!("sysupdate.{c}.d")),
    }
}

/// The `.component` metadata file of a component, beside its directory.
pub fn metadata_file(transfers_dir: &Path, component: &str) -> PathBuf {
    transfers_dir
        .parent()
        .unwrap_or(Path::new("."))
        .join(format!("sysupdate.{component}.component"))
}

/// Whether systemd accepts `name` as a component (`component_name_valid()`:
/// `sysupdate.NAME.d` must be a valid file name, no control characters).
pub fn valid_name(name: &str) -> bool {
    let dir = format!("sysupdate.{name}.d");
    !name.is_empty()
        && !name.contains('/')
        && !name.chars().any(char::is_control)
        && dir.len() <= 255
}

/// The components beside `transfers_dir`, sorted: every directory named
/// `sysupdate.NAME.d` (hidden ones and the OS's own directory excepted).
pub fn list(transfers_dir: &Path) -> Result<Vec<String>, TransferError> {
    let parent = transfers_dir.parent().unwrap_or(Path::new("."));
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let io = |source| TransferError::Io {
        path: parent.to_owned(),
        source,
    };
    let own = fs::canonicalize(transfers_dir).ok();
    let mut out = Vec::new();
    for entry in fs::read_dir(parent).map_err(io)? {
        let entry = entry.map_err(io)?;
        let Some(fname) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let Some(name) = fname
            .strip_prefix("sysupdate.")
            .and_then(|n| n.strip_suffix(".d"))
        else {
            continue;
        };
        if !valid_name(name) || !entry.path().is_dir() {
            continue;
        }
        if own.is_some() && fs::canonicalize(entry.path()).ok() == own {
            continue;
        }
        out.push(name.to_owned());
    }
    out.sort();
    Ok(out)
}

/// Every stream's transfers, `selected` first: the stream a command works
/// on, then the others it must leave alone. Refuses a component that does
/// not exist, naming the ones that do.
pub fn load_streams(
    transfers_dir: &Path,
    spec: &Specifiers,
    selected: Option<&str>,
) -> Result<Vec<Stream>, TransferError> {
    let components = list(transfers_dir)?;
    if let Some(c) = selected {
        if !components.iter().any(|k| k == c) {
            return Err(TransferError::UnknownComponent {
                name: c.to_owned(),
                dir: dir_of(transfers_dir, Some(c)),
                known: components,
            });
        }
    }
    let mut order: Vec<Option<&str>> = vec![selected];
    if selected.is_some() {
        order.push(None);
    }
    order.extend(
        components
            .iter()
            .map(|c| Some(c.as_str()))
            .filter(|c| *c != selected),
    );
    order
        .into_iter()
        .map(|c| {
            Ok(Stream {
                component: c.map(str::to_owned),
                transfers: load_dir(&dir_of(transfers_dir, c), spec)?,
            })
        })
        .collect()
}

/// The transfer of another stream that also matches `name`, if any, as
/// (stream label, transfer name).
pub fn claimed_elsewhere(others: &[Stream], name: &str) -> Option<(String, String)> {
    others.iter().find_map(|s| {
        s.transfers
            .iter()
            .find(|t| t.match_source(name).is_some())
            .map(|t| (s.label(), t.name.clone()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transfer::testutil::{spec, UKI};

    fn channel_dirs() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("sysupdate.d")).unwrap();
        fs::write(d.path().join("sysupdate.d/50-uki.transfer"), UKI).unwrap();
        fs::create_dir(d.path().join("sysupdate.webapp.d")).unwrap();
        fs::write(
            d.path().join("sysupdate.webapp.d/50-webapp.transfer"),
            "[Source]\nType=url-file\nPath=https://h/x86-64/\nMatchPattern=webapp_@v.raw.xz\n[Target]\nType=regular-file\nPath=/var/lib/machines\nMatchPattern=webapp_@v.raw\n",
        )
        .unwrap();
        fs::create_dir(d.path().join(".sysupdate.hidden.d")).unwrap();
        fs::create_dir(d.path().join("sysupdate.d.bak")).unwrap();
        fs::write(d.path().join("sysupdate.file.d"), "not a dir").unwrap();
        d
    }

    #[test]
    fn components_are_the_sibling_directories() {
        let d = channel_dirs();
        assert_eq!(list(&d.path().join("sysupdate.d")).unwrap(), ["webapp"]);
        assert_eq!(
            dir_of(&d.path().join("sysupdate.d"), Some("webapp")),
            d.path().join("sysupdate.webapp.d")
        );
    }

    #[test]
    fn selected_stream_comes_first_and_unknown_ones_are_refused() {
        let d = channel_dirs();
        let dir = d.path().join("sysupdate.d");
        let s = load_streams(&dir, &spec(), Some("webapp")).unwrap();
        let order: Vec<_> = s.iter().map(|s| s.component.clone()).collect();
        assert_eq!(order, [Some("webapp".to_string()), None]);
        let s = load_streams(&dir, &spec(), None).unwrap();
        assert_eq!(s[0].component, None);
        assert_eq!(s[1].transfers[0].name, "50-webapp");
        let e = load_streams(&dir, &spec(), Some("webap")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("webap") && msg.contains("webapp"), "{msg}");
        assert_eq!(
            claimed_elsewhere(&s[1..], "webapp_3.raw.xz"),
            Some(("component webapp".into(), "50-webapp".into()))
        );
        assert_eq!(claimed_elsewhere(&s[1..], "appliance_3.efi.xz"), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Any name is judged without panicking, and a valid one is found
        /// again as the component its directory holds.
        #[test]
        fn a_valid_name_round_trips_through_its_directory(name in "\\PC{0,60}") {
            if valid_name(&name) {
                let d = tempfile::tempdir().unwrap();
                let os = d.path().join("sysupdate.d");
                fs::create_dir(&os).unwrap();
                fs::create_dir(dir_of(&os, Some(&name))).unwrap();
                proptest::prop_assert_eq!(list(&os).unwrap(), vec![name.clone()]);
            }
        }
    }

    #[test]
    fn names_systemd_refuses_are_not_components() {
        assert!(valid_name("webapp"));
        assert!(valid_name("web.app"));
        assert!(!valid_name(""));
        assert!(!valid_name("a/b"));
        assert!(!valid_name("a\nb"));
        assert!(!valid_name(&"x".repeat(250)));
    }
}
