//! Nix system names ↔ systemd architecture names.
//!
//! Arch directories use systemd's naming so a single `Path=https://host/%a/`
//! transfer file serves every architecture (`%a` expands to these names).

use thiserror::Error;

/// (nix system, systemd `%a`) pairs; the order is the display order.
const TABLE: &[(&str, &str)] = &[
    ("x86_64-linux", "x86-64"),
    ("aarch64-linux", "arm64"),
    ("riscv64-linux", "riscv64"),
    ("i686-linux", "x86"),
    ("armv7l-linux", "arm"),
    ("powerpc64le-linux", "ppc64-le"),
    ("loongarch64-linux", "loongarch64"),
    ("s390x-linux", "s390x"),
];

#[derive(Debug, Error, PartialEq, Eq)]
#[error("unknown architecture '{0}': use a nix system ({systems}) or a systemd architecture ({arches})",
    systems = TABLE.iter().map(|t| t.0).collect::<Vec<_>>().join(", "),
    arches = TABLE.iter().map(|t| t.1).collect::<Vec<_>>().join(", "))]
pub struct UnknownArch(pub String);

/// A supported architecture, stored as its systemd name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Arch(usize);

impl Arch {
    /// Accepts either naming, so `--output x86_64-linux=…` and `--output x86-64=…` both work.
    pub fn parse(s: &str) -> Result<Arch, UnknownArch> {
        TABLE
            .iter()
            .position(|(nix, sd)| *nix == s || *sd == s)
            .map(Arch)
            .ok_or_else(|| UnknownArch(s.to_string()))
    }

    /// The systemd name, also the arch directory's name.
    pub fn systemd(self) -> &'static str {
        TABLE[self.0].1
    }

    pub fn nix_system(self) -> &'static str {
        TABLE[self.0].0
    }

    /// Every supported architecture, in display order.
    pub fn all() -> impl Iterator<Item = Arch> {
        (0..TABLE.len()).map(Arch)
    }

    /// Whether `name` is one of the arch directory names we publish.
    pub fn is_arch_dir(name: &str) -> bool {
        TABLE.iter().any(|t| t.1 == name)
    }
}

/// Reports and `--json` name an arch by its systemd name, as devices do.
impl serde::Serialize for Arch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.systemd())
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.systemd())
    }
}

/// The history names arches as reports do.
impl<'de> serde::Deserialize<'de> for Arch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Arch, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        Arch::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_namings_map_to_the_same_arch() {
        assert_eq!(Arch::parse("aarch64-linux"), Arch::parse("arm64"));
        assert_eq!(Arch::parse("x86_64-linux").unwrap().systemd(), "x86-64");
        assert_eq!(
            Arch::parse("riscv64").unwrap().nix_system(),
            "riscv64-linux"
        );
    }

    #[test]
    fn unknown_names_list_the_choices() {
        let e = Arch::parse("x86_64").unwrap_err().to_string();
        assert!(e.contains("'x86_64'") && e.contains("x86_64-linux") && e.contains("x86-64"));
        assert!(Arch::parse("").is_err());
    }
}
