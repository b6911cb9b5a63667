//! Which published names form complete versions, as clients of either
//! matching rule (systemd ≥ 261 exact, ≤ 260 prefix) see them.

use std::collections::{BTreeMap, HashSet};

use super::Transfer;
use crate::version;

/// Files of one version, by transfer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VersionSet {
    /// The first spelling seen; spellings that compare equal ("1.0", "1.00")
    /// are the same version to systemd and share this set.
    pub version: String,
    /// Transfer name → published file name.
    pub files: BTreeMap<String, String>,
    /// Transfers without a file for this version, in transfer order.
    pub missing: Vec<String>,
    /// Transfers with more than one file for this version, with all of them.
    pub duplicates: Vec<(String, Vec<String>)>,
}

impl VersionSet {
    /// Every transfer has exactly one file, so every client can install it.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty() && self.duplicates.is_empty()
    }
}

/// A name that systemd ≤ 260 clients read differently from newer ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub name: String,
    pub transfer: String,
    /// The version old clients read from the name.
    pub version: String,
    pub explanation: String,
}

/// How published names group into versions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Classification {
    /// Newest first by [`version::compare`].
    pub versions: Vec<VersionSet>,
    /// Names no transfer's source pattern matches exactly, in input order.
    pub unmatched: Vec<String>,
    pub old_client_conflicts: Vec<Conflict>,
}

/// Groups published `names` into versions as systemd ≥ 261 clients see them,
/// and flags names older clients (which accept trailing text) read differently.
///
/// A name belongs to every transfer with a source pattern that matches it
/// exactly (first matching pattern wins). Every transfer counts for
/// completeness, including those gated by `Features=`: a device may enable
/// them.
pub fn classify<'a>(
    transfers: &[Transfer],
    names: impl IntoIterator<Item = &'a str>,
) -> Classification {
    let mut out = Classification::default();
    let mut seen = HashSet::new();

    for name in names {
        if !seen.insert(name) {
            continue;
        }
        let mut matched = false;
        for t in transfers {
            let exact = t.match_source(name).and_then(|f| f.version);
            let old = t.source_patterns.iter().find_map(|p| {
                p.matches_prefix(name)
                    .and_then(|f| f.version)
                    .map(|v| (p, v))
            });

            if let Some(v) = &exact {
                matched = true;
                add_to_set(&mut out.versions, v, &t.name, name);
            }
            if let Some((p, ov)) = old {
                let explanation = match &exact {
                    None => format!(
                        "systemd 260 and older ignore text after the end of a pattern, so they would take {name:?} as version {ov} of transfer {} (MatchPattern {}); no published name may extend a name a pattern matches, so rename or drop it",
                        t.name,
                        p.as_str()
                    ),
                    Some(nv) if version::compare(nv, &ov).is_ne() => format!(
                        "systemd 260 and older would read {name:?} as version {ov} of transfer {} (MatchPattern {}, ignoring trailing text) while newer clients read version {nv}; reorder or tighten the patterns",
                        t.name,
                        p.as_str()
                    ),
                    Some(_) => continue,
                };
                out.old_client_conflicts.push(Conflict {
                    name: name.to_owned(),
                    transfer: t.name.clone(),
                    version: ov,
                    explanation,
                });
            }
        }
        if !matched {
            out.unmatched.push(name.to_owned());
        }
    }

    for set in &mut out.versions {
        set.missing = transfers
            .iter()
            .filter(|t| !set.files.contains_key(&t.name))
            .map(|t| t.name.clone())
            .collect();
    }
    out.versions
        .sort_by(|a, b| version::compare(&b.version, &a.version));
    out
}

fn add_to_set(sets: &mut Vec<VersionSet>, v: &str, transfer: &str, name: &str) {
    let idx = match sets
        .iter()
        .position(|s| version::compare(&s.version, v).is_eq())
    {
        Some(i) => i,
        None => {
            sets.push(VersionSet {
                version: v.to_owned(),
                ..VersionSet::default()
            });
            sets.len() - 1
        }
    };
    let set = &mut sets[idx];
    match set.files.get(transfer) {
        None => {
            set.files.insert(transfer.to_owned(), name.to_owned());
        }
        Some(first) => {
            let first = first.clone();
            match set.duplicates.iter_mut().find(|(t, _)| t == transfer) {
                Some((_, list)) => list.push(name.to_owned()),
                None => set
                    .duplicates
                    .push((transfer.to_owned(), vec![first, name.to_owned()])),
            }
        }
    }
}

/// Every source pattern of `transfers`, as messages list them.
pub fn source_patterns<'a>(transfers: impl IntoIterator<Item = &'a Transfer>) -> String {
    transfers
        .into_iter()
        .flat_map(|t| t.source_patterns.iter().map(|p| p.to_string()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The version systemd ≥ 261 reads from `name`: the first transfer whose
/// source pattern matches it exactly.
pub fn version_of(transfers: &[Transfer], name: &str) -> Option<String> {
    transfers
        .iter()
        .find_map(|t| t.match_source(name).and_then(|f| f.version))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::transfer::parse_str;
    use crate::transfer::testutil::{ok, spec, with_source, STORE, UKI};

    fn transfers() -> Vec<Transfer> {
        vec![
            parse_str("50-uki", Path::new("50-uki.transfer"), UKI, &spec()).unwrap(),
            parse_str("60-store", Path::new("60-store.transfer"), STORE, &spec()).unwrap(),
        ]
    }

    #[test]
    fn classify_complete_and_incomplete() {
        let ts = transfers();
        let c = classify(
            &ts,
            [
                "appliance_18.efi.xz",
                "store_18.img.xz",
                "appliance_19.efi.xz",
                "SHA256SUMS",
                "SHA256SUMS.gpg",
            ],
        );
        assert_eq!(c.versions.len(), 2);
        let v19 = &c.versions[0];
        assert_eq!(v19.version, "19");
        assert!(!v19.is_complete());
        assert_eq!(v19.missing, ["60-store"]);
        let v18 = &c.versions[1];
        assert_eq!(v18.version, "18");
        assert!(v18.is_complete());
        assert_eq!(v18.files["50-uki"], "appliance_18.efi.xz");
        assert_eq!(v18.files["60-store"], "store_18.img.xz");
        assert_eq!(c.unmatched, ["SHA256SUMS", "SHA256SUMS.gpg"]);
        assert!(c.old_client_conflicts.is_empty());
    }

    #[test]
    fn classify_conflicts_and_unmatched() {
        let ts = transfers();
        let c = classify(
            &ts,
            [
                "appliance_18.efi.xz",
                "appliance_18.efi.xz.sig",
                "store_18.img.xz",
            ],
        );
        assert_eq!(c.unmatched, ["appliance_18.efi.xz.sig"]);
        assert_eq!(c.versions.len(), 1);
        assert!(c.versions[0].is_complete());
        assert_eq!(
            c.old_client_conflicts,
            [Conflict {
                name: "appliance_18.efi.xz.sig".into(),
                transfer: "50-uki".into(),
                version: "18".into(),
                explanation: c.old_client_conflicts[0].explanation.clone(),
            }]
        );
        assert!(c.old_client_conflicts[0].explanation.contains("260"));
        assert_eq!(
            version_of(&ts, "appliance_18.efi.xz").as_deref(),
            Some("18")
        );
        assert_eq!(version_of(&ts, "appliance_18.efi.xz.sig"), None);
        assert_eq!(version_of(&ts, "store_7.img.xz").as_deref(), Some("7"));
    }

    #[test]
    fn classify_order_and_equal_versions() {
        let ts = transfers();
        let c = classify(
            &ts,
            [
                "appliance_1.9.efi.xz",
                "appliance_1.10.efi.xz",
                "store_1.9.img.xz",
                "store_1.010.img.xz",
                "appliance_1.2.efi.xz",
                "appliance_1.02.efi.xz",
                "appliance_1.9.efi.xz",
            ],
        );
        let order: Vec<&str> = c.versions.iter().map(|s| s.version.as_str()).collect();
        assert_eq!(order, ["1.10", "1.9", "1.2"]);
        assert!(
            c.versions[0].is_complete(),
            "1.10 and 1.010 are one version"
        );
        assert_eq!(c.versions[0].files["60-store"], "store_1.010.img.xz");
        assert!(c.versions[1].is_complete());
        let dup = &c.versions[2];
        assert_eq!(
            dup.duplicates,
            [(
                "50-uki".to_owned(),
                vec![
                    "appliance_1.2.efi.xz".to_owned(),
                    "appliance_1.02.efi.xz".to_owned()
                ]
            )]
        );
        assert_eq!(dup.missing, ["60-store"]);
        assert!(!dup.is_complete());
    }

    #[test]
    fn classify_old_client_reads_other_version() {
        // ≤ 260 takes the first pattern that matches a prefix.
        let t = ok(&with_source("MatchPattern=a_@v.raw a_@v.raw.xz"));
        let c = classify(std::slice::from_ref(&t), ["a_1.raw.xz"]);
        assert_eq!(c.versions.len(), 1);
        assert!(c.old_client_conflicts.is_empty(), "same version both ways");
        let t = ok(&with_source("MatchPattern=a_@v.r a_@v.raw.xz"));
        let c = classify(std::slice::from_ref(&t), ["a_1.raw.xz", "a_2.r"]);
        assert_eq!(c.versions.len(), 2);
        assert!(c.old_client_conflicts.is_empty());
        let t = ok(&with_source("MatchPattern=a_@v.x a_@v"));
        let c = classify(std::slice::from_ref(&t), ["a_1.x.y"]);
        assert_eq!(c.versions[0].version, "1.x.y");
        assert_eq!(c.old_client_conflicts.len(), 1);
        assert_eq!(c.old_client_conflicts[0].version, "1");
    }
}
