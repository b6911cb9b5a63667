//! `%` specifiers in transfer settings, expanded as far as the publisher can
//! know them: what differs per device has to be refused, not guessed.

use std::fmt;

/// Values for the `%` specifiers the publisher can know. `%A`/`%M` are the
/// image's os-release `IMAGE_VERSION`/`IMAGE_ID`; `arch` uses systemd's
/// names (`x86-64`, `arm64`, ...). The others come from the device's
/// os-release, so only the config can say them (`[specifiers]`): a channel
/// of system extensions for one host OS version publishes names with that
/// host's `VERSION_ID` in them (`%w`), as the devices will look for them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Specifiers {
    pub arch: String,
    pub image_version: Option<String>,
    pub image_id: Option<String>,
    /// `%w`: the device's `VERSION_ID`.
    pub version_id: Option<String>,
    /// `%W`: the device's `VARIANT_ID`.
    pub variant_id: Option<String>,
    /// `%o`: the device's `ID`.
    pub os_id: Option<String>,
    /// `%B`: the device's `BUILD_ID`.
    pub build_id: Option<String>,
    /// `[specifiers.SYSTEM]`: the values of one output's devices (systemd
    /// arch name → values), over these.
    pub per_arch: std::collections::BTreeMap<String, Specifiers>,
}

impl Specifiers {
    /// The config key (in `[specifiers]`) and os-release field of each
    /// specifier the config may set, with where its value lives.
    pub fn configurable(&mut self) -> [(char, &'static str, &mut Option<String>); 6] {
        [
            ('w', "VERSION_ID", &mut self.version_id),
            ('W', "VARIANT_ID", &mut self.variant_id),
            ('o', "ID", &mut self.os_id),
            ('B', "BUILD_ID", &mut self.build_id),
            ('A', "IMAGE_VERSION", &mut self.image_version),
            ('M', "IMAGE_ID", &mut self.image_id),
        ]
    }

    /// The values for `arch` (systemd's name): `%a`, and its output's own
    /// values where `[specifiers.SYSTEM]` gives them.
    pub fn for_arch(&self, arch: &str) -> Specifiers {
        let mut out = Specifiers {
            arch: arch.to_string(),
            per_arch: Default::default(),
            ..self.clone()
        };
        if let Some(own) = self.per_arch.get(arch) {
            let mut own = own.clone();
            for ((_, _, mine), (_, _, theirs)) in
                out.configurable().into_iter().zip(own.configurable())
            {
                if theirs.is_some() {
                    *mine = theirs.take();
                }
            }
        }
        out
    }
}

/// Why a `%` specifier could not be expanded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpecifierProblem {
    /// Not a systemd specifier; systemd would ignore the whole setting.
    Unknown { specifier: char },
    /// Differs per device (host name, machine ID, ...).
    DeviceSpecific {
        specifier: char,
        meaning: &'static str,
    },
    /// Fixed per image, but the caller did not supply it.
    NotGiven {
        specifier: char,
        meaning: &'static str,
    },
    /// Longer than systemd accepts after expansion.
    TooLong { len: usize, max: usize },
}

impl fmt::Display for SpecifierProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown { specifier } => write!(
                f,
                "%{specifier} is not a systemd specifier, so systemd would ignore this whole setting; write %% for a literal %"
            ),
            Self::DeviceSpecific { specifier, meaning } if "wWoB".contains(*specifier) => write!(
                f,
                "%{specifier} expands to the {meaning}; set `{specifier} = \"…\"` in the config's [specifiers] (the value the devices of this channel have) or spell the value out"
            ),
            Self::DeviceSpecific { specifier, meaning } => write!(
                f,
                "%{specifier} expands to the {meaning}, which differs per device and cannot be known at publish time; spell the value out"
            ),
            Self::NotGiven { specifier, meaning } => write!(
                f,
                "%{specifier} expands to {meaning}, which cannot be known at publish time because it was not given to sysupdate-publish; provide it or spell the value out"
            ),
            Self::TooLong { len, max } => write!(
                f,
                "the expanded value is {len} bytes long; systemd ignores values longer than {max} bytes"
            ),
        }
    }
}

/// Port of `specifier_printf()` with `system_and_tmp_specifier_table`,
/// limited to what the publisher knows.
pub fn expand_specifiers(
    value: &str,
    spec: &Specifiers,
    max: usize,
) -> Result<String, SpecifierProblem> {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(s) = chars.next() else {
            // A stray trailing '%' stays.
            out.push('%');
            break;
        };
        let not_given = |meaning| SpecifierProblem::NotGiven {
            specifier: s,
            meaning,
        };
        let device = |meaning| SpecifierProblem::DeviceSpecific {
            specifier: s,
            meaning,
        };
        // What the device's os-release says, when the config says it too.
        let host = |value: &Option<String>, meaning| {
            value.clone().ok_or(SpecifierProblem::DeviceSpecific {
                specifier: s,
                meaning,
            })
        };
        match s {
            '%' => out.push('%'),
            'a' if spec.arch.is_empty() => return Err(not_given("the architecture")),
            'a' => out.push_str(&spec.arch),
            'A' => out.push_str(
                spec.image_version
                    .as_deref()
                    .ok_or_else(|| not_given("IMAGE_VERSION from the image's os-release"))?,
            ),
            'M' => out.push_str(
                spec.image_id
                    .as_deref()
                    .ok_or_else(|| not_given("IMAGE_ID from the image's os-release"))?,
            ),
            'b' => return Err(device("boot ID")),
            'B' => out.push_str(&host(
                &spec.build_id,
                "BUILD_ID from the device's os-release",
            )?),
            'H' => return Err(device("host name")),
            'l' => return Err(device("short host name")),
            'q' => return Err(device("pretty host name")),
            'm' => return Err(device("machine ID")),
            'o' => out.push_str(&host(&spec.os_id, "ID from the device's os-release")?),
            'v' => return Err(device("running kernel release")),
            'w' => out.push_str(&host(
                &spec.version_id,
                "VERSION_ID from the device's os-release",
            )?),
            'W' => out.push_str(&host(
                &spec.variant_id,
                "VARIANT_ID from the device's os-release",
            )?),
            'T' => return Err(device("temporary directory")),
            'V' => return Err(device("/var/tmp directory")),
            s if s.is_ascii_alphanumeric() => {
                return Err(SpecifierProblem::Unknown { specifier: s })
            }
            // Not a possible specifier: kept as written.
            s => {
                out.push('%');
                out.push(s);
            }
        }
    }
    if out.len() > max {
        return Err(SpecifierProblem::TooLong {
            len: out.len(),
            max,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transfer::testutil::spec;

    #[test]
    fn expand_specifiers_edge_cases() {
        // A trailing stray '%' stays.
        assert_eq!(expand_specifiers("a%", &spec(), 255).unwrap(), "a%");
        assert_eq!(
            expand_specifiers(&"a".repeat(256), &spec(), 255),
            Err(SpecifierProblem::TooLong { len: 256, max: 255 })
        );
        assert!(matches!(
            expand_specifiers("%a", &Specifiers::default(), 255),
            Err(SpecifierProblem::NotGiven { specifier: 'a', .. })
        ));
        let full = Specifiers {
            arch: "arm64".into(),
            image_version: Some("7".into()),
            image_id: Some("appliance".into()),
            version_id: Some("40".into()),
            variant_id: Some("edge".into()),
            os_id: Some("fedora".into()),
            build_id: Some("b1".into()),
            per_arch: Default::default(),
        };
        assert_eq!(
            expand_specifiers("%M_%A_%a-%w-%W-%o-%B-%%", &full, 255).unwrap(),
            "appliance_7_arm64-40-edge-fedora-b1-%"
        );
        let e = expand_specifiers("x-%w", &spec(), 255).unwrap_err();
        assert!(e.to_string().contains("[specifiers]"), "{e}");
        let e = expand_specifiers("x-%H", &spec(), 255).unwrap_err();
        assert!(!e.to_string().contains("[specifiers]"), "{e}");
    }

    proptest::proptest! {
        /// Any text: no panic, never longer than allowed, and text without
        /// `%` comes back as it was.
        #[test]
        fn expansion_is_total_and_bounded(value in "[ -~]{0,40}", w in "[0-9a-z._]{0,8}") {
            let full = Specifiers {
                version_id: Some(w.clone()),
                variant_id: Some(w.clone()),
                os_id: Some(w.clone()),
                build_id: Some(w),
                ..spec()
            };
            for s in [&spec(), &full] {
                if let Ok(out) = expand_specifiers(&value, s, 32) {
                    proptest::prop_assert!(out.len() <= 32);
                    if !value.contains('%') {
                        proptest::prop_assert_eq!(&out, &value);
                    }
                }
            }
        }
    }
}
