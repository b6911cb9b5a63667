//! `sysupdate-publish.toml` → a typed, validated configuration.
//!
//! Everything is checked up front, before a single byte is compressed, and
//! every error names the file and the key at fault. Relative paths are resolved
//! against the directory holding the config file, so a config works the same
//! from any working directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use crate::arch::Arch;
use crate::compress::Codec;
pub use crate::nix::Nix;
use crate::signing::command::{self, CommandSpec};
use crate::signing::pkcs11::{Pkcs11Spec, PIN_ENV};
use crate::signing::SignerSpec;
use crate::store::{self, StoreLocation, DEFAULT_PARALLEL_UPLOADS};

/// Overrides `[signing] secret-key`, so CI can inject the key from a secret store.
pub const SECRET_KEY_ENV: &str = "SYSUPDATE_PUBLISH_SECRET_KEY";
/// The file looked for in the working directory when `--config` is absent.
pub const DEFAULT_FILE: &str = "sysupdate-publish.toml";

#[derive(Debug, Error)]
pub enum ConfigError {
    /// The hint only when `--config` was not given: it names the fix.
    #[error("cannot read config {path}: {source}{}", read_hint(.given))]
    Read {
        path: PathBuf,
        source: std::io::Error,
        /// Whether the path came from `--config`.
        given: bool,
    },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// What to do about an unreadable config the user did not name.
fn read_hint(given: &bool) -> &'static str {
    if *given {
        ""
    } else {
        " (pass --config FILE or create ./sysupdate-publish.toml)"
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    channel: Option<RawChannel>,
    #[serde(default)]
    channels: std::collections::BTreeMap<String, RawChannel>,
    signing: RawSigning,
    #[serde(default)]
    transfers: RawTransfers,
    nix: Option<RawNix>,
    #[serde(default)]
    checks: RawChecks,
    /// Base values, and `[specifiers.SYSTEM]` tables for one output each.
    #[serde(default)]
    specifiers: toml::Table,
}

/// `[specifiers]`: what the devices' os-release says, for `%w` and the like
/// in transfer files (keys are the specifier letters).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSpecifiers {
    w: Option<String>,
    #[serde(rename = "W")]
    variant_id: Option<String>,
    o: Option<String>,
    #[serde(rename = "B")]
    build_id: Option<String>,
    #[serde(rename = "A")]
    image_version: Option<String>,
    #[serde(rename = "M")]
    image_id: Option<String>,
    /// An os-release file to take the values not given from.
    #[serde(rename = "os-release")]
    os_release: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawChecks {
    image_id: Option<String>,
    esp_size: Option<toml::Value>,
    esp_reserved: Option<toml::Value>,
    #[serde(default)]
    partition_size: std::collections::BTreeMap<String, toml::Value>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawChannel {
    store: String,
    url: Option<String>,
    keep: Option<i64>,
    signature_lifetime: Option<String>,
    expiry_warning: Option<String>,
    parallel_uploads: Option<i64>,
    webdav_ca: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawPkcs11 {
    module: String,
    token: String,
    key: String,
    pin_env: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawSigning {
    secret_key: Option<String>,
    command: Option<Vec<String>>,
    fingerprint: Option<String>,
    command_timeout: Option<String>,
    pkcs11: Option<RawPkcs11>,
    keyring: String,
    #[serde(default)]
    generate_example_key: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawTransfers {
    dir: Option<String>,
    compress: Option<String>,
    level: Option<u32>,
    threads: Option<u32>,
    memory: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawNix {
    flake: Option<String>,
    attribute: String,
    component_attribute: Option<String>,
    systems: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct Channel {
    pub store: StoreLocation,
    /// The public URL devices fetch (used by `verify`).
    pub url: Option<String>,
    /// Versions kept per architecture.
    pub keep: usize,
    pub signature_lifetime: Option<Duration>,
    /// `status` warns when a signature expires within this margin.
    pub expiry_warning: Duration,
    /// Payloads uploaded at once (`parallel-uploads`).
    pub parallel_uploads: usize,
}

impl Channel {
    /// The store backend options this channel's settings ask for.
    pub fn store_options(&self) -> store::Options {
        store::Options {
            parallel_uploads: self.parallel_uploads,
        }
    }

    /// Opens the channel's store with its options.
    pub fn open_store(&self) -> Box<dyn store::Store> {
        store::open_with(&self.store, &self.store_options())
    }
}

#[derive(Clone, Debug)]
pub struct Signing {
    /// The one signer: a key file, a command or a token.
    pub signer: SignerSpec,
    pub keyring: PathBuf,
    /// Only for examples: create a throwaway key when none exists yet.
    pub generate_example_key: bool,
}

#[derive(Clone, Debug)]
pub struct Transfers {
    pub dir: PathBuf,
    pub compress: Codec,
    pub level: Option<u32>,
    /// 0 = as many as the cores and `memory` allow.
    pub threads: u32,
    /// The compressor's memory budget (`[transfers] memory`, bytes).
    pub memory: u64,
}

impl Transfers {
    /// How payloads that are not compressed yet get compressed.
    pub fn compress_settings(&self) -> crate::compress::Settings {
        crate::compress::Settings {
            codec: self.compress,
            level: self.level.unwrap_or_else(|| self.compress.default_level()),
            threads: self.threads,
            memory: self.memory,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub file: PathBuf,
    /// The channel commands work on (`--channel NAME`, or the only one).
    pub channel: Channel,
    /// Its name ("default" for a lone `[channel]`).
    pub channel_name: String,
    /// Every configured channel by name; a lone `[channel]` is "default".
    pub channels: std::collections::BTreeMap<String, Channel>,
    pub signing: Signing,
    pub transfers: Transfers,
    pub nix: Option<Nix>,
    /// `[checks]`: what preflight compares payloads with.
    pub checks: crate::preflight::Settings,
    /// `[specifiers]`: what `%w`, `%W`, `%o`, `%B`, `%A`, `%M` in transfer
    /// files expand to (`arch` empty: filled per architecture).
    pub specifiers: crate::transfer::Specifiers,
}

impl Config {
    /// Makes `name` the channel commands work on. Without a name, a config
    /// with one channel uses it and one with several asks which.
    pub fn select(&mut self, name: Option<&str>) -> Result<(), ConfigError> {
        let names = || self.channels.keys().cloned().collect::<Vec<_>>().join(", ");
        let name = match name {
            Some(n) => n.to_string(),
            None if self.channels.len() == 1 => return Ok(()),
            None => {
                return Err(ConfigError::Invalid {
                    path: self.file.clone(),
                    key: "channels".into(),
                    message: format!("several channels ({}): pass --channel NAME", names()),
                })
            }
        };
        let channel = self
            .channels
            .get(&name)
            .ok_or_else(|| ConfigError::Invalid {
                path: self.file.clone(),
                key: "channels".into(),
                message: format!("no channel {name:?} (channels: {})", names()),
            })?;
        self.channel = channel.clone();
        self.channel_name = name;
        Ok(())
    }

    /// Loads `path`, or `./sysupdate-publish.toml` when `None`.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let given = path.is_some();
        let path = path.unwrap_or(Path::new(DEFAULT_FILE));
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
            given,
        })?;
        Config::parse(
            &text,
            path,
            std::env::var_os(SECRET_KEY_ENV).map(PathBuf::from),
        )
    }

    /// Parses config text; `file` names it in errors and anchors relative paths.
    pub fn parse(
        text: &str,
        file: &Path,
        secret_key_override: Option<PathBuf>,
    ) -> Result<Config, ConfigError> {
        let raw: Raw = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: file.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let base = file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
        let resolve = |p: &str| normalize(&base.join(p));
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: file.to_path_buf(),
            key: key.to_string(),
            message,
        };

        let named: Vec<(String, RawChannel)> = match (&raw.channel, raw.channels.is_empty()) {
            (Some(_), false) => {
                return Err(invalid(
                    "channels",
                    "give either one [channel] or [channels.NAME] tables, not both".into(),
                ))
            }
            (Some(c), true) => vec![(DEFAULT_CHANNEL.to_string(), c.clone())],
            (None, true) => {
                return Err(invalid(
                    "channel",
                    "missing: add a [channel] table (or [channels.NAME] tables)".into(),
                ))
            }
            (None, false) => raw.channels.clone().into_iter().collect(),
        };
        let mut channels = std::collections::BTreeMap::new();
        for (name, c) in &named {
            let key = |k: &str| {
                if raw.channel.is_some() {
                    format!("channel.{k}")
                } else {
                    format!("channels.{name}.{k}")
                }
            };
            channels.insert(name.clone(), parse_channel(c, &key, &resolve, &invalid)?);
        }
        let mut seen: Vec<(&String, &StoreLocation)> = Vec::new();
        for (name, c) in &channels {
            if let Some((other, _)) = seen.iter().find(|(_, s)| **s == c.store) {
                return Err(invalid(
                    &format!("channels.{name}.store"),
                    format!("the same store as channel {other}: each channel needs its own (another prefix or directory)"),
                ));
            }
            seen.push((name, &c.store));
        }
        let channel_name = channels
            .keys()
            .next()
            .expect("one channel at least")
            .clone();
        let channel = channels[&channel_name].clone();

        let signer = signer(&raw.signing, secret_key_override, resolve, &invalid)?;
        if let (SignerSpec::Command(spec), true) = (
            &signer,
            channels.values().any(|c| c.signature_lifetime.is_some()),
        ) {
            if !spec.sets_expiry() {
                return Err(invalid(
                    "signing.command",
                    "passes no {expires} or {lifetime}, so its signatures cannot expire, but channel.signature-lifetime asks devices to enforce an expiry: add e.g. \"--default-sig-expire\", \"{expires}\" (gpg), or remove signature-lifetime (SOP's `sign` cannot set an expiry)".into(),
                ));
            }
        }
        if raw.signing.generate_example_key && !matches!(signer, SignerSpec::KeyFile(_)) {
            return Err(invalid(
                "signing.generate-example-key",
                "only makes a secret-key file; remove it".into(),
            ));
        }
        let signing = Signing {
            signer,
            keyring: resolve(&raw.signing.keyring),
            generate_example_key: raw.signing.generate_example_key,
        };

        let compress = match raw.transfers.compress.as_deref() {
            None => Codec::Xz,
            Some(s) => s.parse().map_err(|e: crate::compress::ParseCodecError| {
                invalid("transfers.compress", e.to_string())
            })?,
        };
        if let Some(level) = raw.transfers.level {
            let levels = compress.levels();
            if !levels.contains(&level) {
                return Err(invalid(
                    "transfers.level",
                    format!(
                        "{level} is not a {compress} level ({}–{})",
                        levels.start(),
                        levels.end()
                    ),
                ));
            }
        }
        let memory = match &raw.transfers.memory {
            None => crate::compress::DEFAULT_MEMORY,
            Some(toml::Value::Integer(n)) if *n > 0 => *n as u64,
            Some(toml::Value::String(v)) => {
                parse_size(v).map_err(|m| invalid("transfers.memory", m))?
            }
            Some(other) => {
                return Err(invalid(
                    "transfers.memory",
                    format!("{other}: give bytes or a size like \"200M\""),
                ))
            }
        };
        let threads = raw.transfers.threads.unwrap_or(0);
        if threads > 256 {
            return Err(invalid(
                "transfers.threads",
                format!("{threads}: give 0 (as many as fit) or 1 to 256"),
            ));
        }
        let level = raw
            .transfers
            .level
            .unwrap_or_else(|| compress.default_level());
        if compress == Codec::Xz {
            let mib = |b: u64| b.div_ceil(1 << 20);
            if threads > 0 && crate::compress::xz_memusage(level, threads) > memory {
                return Err(invalid(
                    "transfers.threads",
                    format!(
                        "{threads} xz threads at level {level} need {} MiB, more than transfers.memory ({} MiB); use fewer threads, 0 to fit, or raise memory",
                        mib(crate::compress::xz_memusage(level, threads)),
                        mib(memory)
                    ),
                ));
            }
            if crate::compress::xz_threads(level, 1, memory).is_none() {
                return Err(invalid(
                    "transfers.memory",
                    format!(
                        "{} MiB is less than one xz thread at level {level} needs ({} MiB); raise it or lower transfers.level",
                        mib(memory),
                        mib(crate::compress::xz_memusage(level, 1))
                    ),
                ));
            }
        }
        let transfers = Transfers {
            dir: resolve(raw.transfers.dir.as_deref().unwrap_or("sysupdate.d")),
            compress,
            level: raw.transfers.level,
            threads,
            memory,
        };

        let nix = raw
            .nix
            .map(|n| -> Result<Nix, ConfigError> {
                if n.systems.is_empty() {
                    return Err(invalid(
                        "nix.systems",
                        "empty: list at least one nix system".into(),
                    ));
                }
                let systems = n
                    .systems
                    .iter()
                    .map(|s| Arch::parse(s).map_err(|e| invalid("nix.systems", e.to_string())))
                    .collect::<Result<Vec<_>, _>>()?;
                if !n.attribute.contains("{system}") && systems.len() > 1 {
                    return Err(invalid(
                        "nix.attribute",
                        "needs {system} so each architecture builds its own output".into(),
                    ));
                }
                if let Some(a) = &n.component_attribute {
                    if !a.contains("{component}") {
                        return Err(invalid(
                            "nix.component-attribute",
                            format!("{a:?} needs {{component}} so each component builds its own output (e.g. \"packages.{{system}}.{{component}}_{{version}}\")"),
                        ));
                    }
                }
                let flake = n.flake.unwrap_or_else(|| ".".into());
                Ok(Nix {
                    flake: resolve_flake(&flake, &base),
                    attribute: n.attribute,
                    component_attribute: n.component_attribute,
                    systems,
                })
            })
            .transpose()?;

        let checks = checks(raw.checks, &invalid)?;
        let specifiers = specifiers(raw.specifiers, &resolve, &invalid)?;

        Ok(Config {
            file: file.to_path_buf(),
            channel,
            channel_name,
            channels,
            signing,
            transfers,
            nix,
            checks,
            specifiers,
        })
    }
}

/// The name a lone `[channel]` table goes by.
pub const DEFAULT_CHANNEL: &str = "default";

/// One `[channel]` or `[channels.NAME]` table, validated; `key` names its
/// keys in errors.
fn parse_channel(
    c: &RawChannel,
    key: &dyn Fn(&str) -> String,
    resolve: &dyn Fn(&str) -> PathBuf,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<Channel, ConfigError> {
    let mut store =
        StoreLocation::parse(&c.store, resolve).map_err(|e| invalid(&key("store"), e.0))?;
    if let Some(ca) = &c.webdav_ca {
        match &mut store {
            StoreLocation::WebDav { ca: slot, .. } => *slot = Some(resolve(ca)),
            _ => {
                return Err(invalid(
                    &key("webdav-ca"),
                    "only applies to a webdav+https:// store".into(),
                ))
            }
        }
    }
    let parallel_uploads = match c.parallel_uploads {
        None => DEFAULT_PARALLEL_UPLOADS,
        Some(n @ 1..=64) => n as usize,
        Some(n) => {
            return Err(invalid(
                &key("parallel-uploads"),
                format!("{n}: give 1 (one at a time) to 64"),
            ))
        }
    };
    if let Some(url) = &c.url {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(invalid(
                &key("url"),
                format!("{url:?} is not an http(s) URL; it is what devices fetch"),
            ));
        }
        if url.contains(['?', '#']) {
            return Err(invalid(
            &key("url"),
            "systemd-sysupdate drops ?query and #fragment from Path=, so tokens in URLs cannot work".into(),
        ));
        }
    }
    let keep = match c.keep {
        None => 3,
        Some(n) if n >= 1 => n as usize,
        Some(n) => {
            return Err(invalid(
                &key("keep"),
                format!("{n} versions: keep at least 1 (the one being released)"),
            ))
        }
    };
    let signature_lifetime = c
        .signature_lifetime
        .as_deref()
        .map(|s| parse_lifetime(s).map_err(|m| invalid(&key("signature-lifetime"), m)))
        .transpose()?;
    let expiry_warning = c
        .expiry_warning
        .as_deref()
        .map(|s| parse_lifetime(s).map_err(|m| invalid(&key("expiry-warning"), m)))
        .transpose()?
        // A week, but never most of a short lifetime.
        .unwrap_or_else(|| {
            let week = Duration::from_secs(7 * 86400);
            signature_lifetime.map_or(week, |l| week.min(l / 4))
        });
    // A warning window as long as the lifetime would warn from the moment of signing.
    if let Some(lifetime) = signature_lifetime {
        if expiry_warning >= lifetime {
            return Err(invalid(
                &key("expiry-warning"),
                format!(
                    "{} is not shorter than signature-lifetime ({}): every signature would warn from the day it is made",
                    human_duration(expiry_warning),
                    human_duration(lifetime)
                ),
            ));
        }
    }

    Ok(Channel {
        store,
        url: c.url.clone(),
        keep,
        signature_lifetime,
        expiry_warning,
        parallel_uploads,
    })
}

/// A duration for people: "7 days", "1 day 12 hours", "90 seconds"
/// (humantime writes "7days").
pub fn human_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0 seconds".into();
    }
    let mut parts = Vec::new();
    for (unit, len) in [
        ("day", 86400),
        ("hour", 3600),
        ("minute", 60),
        ("second", 1),
    ] {
        let n = secs / len;
        secs %= len;
        if n > 0 {
            parts.push(format!("{n} {unit}{}", if n == 1 { "" } else { "s" }));
        }
    }
    parts.join(" ")
}

/// `[specifiers]`: each value as given, else from the `os-release` file;
/// a `[specifiers.SYSTEM]` table (nix system or arch name) gives the values
/// of that output's devices, over the base ones.
fn specifiers(
    raw: toml::Table,
    resolve: &dyn Fn(&str) -> PathBuf,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<crate::transfer::Specifiers, ConfigError> {
    let (tables, base): (toml::Table, toml::Table) =
        raw.into_iter().partition(|(_, v)| v.is_table());
    let mut spec = specifier_values(base, "specifiers", resolve, invalid)?;
    for (key, table) in tables {
        let at = format!("specifiers.{key}");
        let arch = Arch::parse(&key).map_err(|e| {
            invalid(
                &at,
                format!("{e}; a table in [specifiers] names the output (nix system or arch) whose devices its values are for"),
            )
        })?;
        let toml::Value::Table(table) = table else {
            unreachable!("partitioned by is_table")
        };
        if let Some((inner, _)) = table.iter().find(|(_, v)| v.is_table()) {
            return Err(invalid(
                &format!("{at}.{inner}"),
                "per-output tables hold values, not further tables".into(),
            ));
        }
        let values = specifier_values(table, &at, resolve, invalid)?;
        spec.per_arch.insert(arch.systemd().to_string(), values);
    }
    Ok(spec)
}

/// One table of specifier values (`w`, `W`, `o`, `B`, `A`, `M`,
/// `os-release`). Values go into file names devices look for, so they must
/// be what MatchPattern literals allow (printable ASCII, none of
/// `/$*?[]!\|@%`).
fn specifier_values(
    table: toml::Table,
    at: &str,
    resolve: &dyn Fn(&str) -> PathBuf,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<crate::transfer::Specifiers, ConfigError> {
    let raw: RawSpecifiers = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| invalid(at, e.message().to_string()))?;
    let mut spec = crate::transfer::Specifiers {
        version_id: raw.w,
        variant_id: raw.variant_id,
        os_id: raw.o,
        build_id: raw.build_id,
        image_version: raw.image_version,
        image_id: raw.image_id,
        ..Default::default()
    };
    let osrel = match &raw.os_release {
        None => None,
        Some(path) => {
            let path = resolve(path);
            let key = format!("{at}.os-release");
            let bytes = std::fs::read(&path)
                .map_err(|e| invalid(&key, format!("cannot read {}: {e}", path.display())))?;
            Some(
                crate::image::osrel::OsRelease::parse(&bytes)
                    .map_err(|e| invalid(&key, format!("{}: {e}", path.display())))?,
            )
        }
    };
    for (letter, field, value) in spec.configurable() {
        if value.is_none() {
            *value = osrel
                .as_ref()
                .and_then(|o| o.get(field))
                .map(str::to_string);
        }
        if let Some(v) = value {
            if let Some(bad) = v
                .chars()
                .find(|c| !c.is_ascii_graphic() || "/$*?[]!\\|@%".contains(*c))
            {
                return Err(invalid(
                    &format!("{at}.{letter}"),
                    format!("{v:?} ({field}) has {bad:?}, which cannot be in a published name"),
                ));
            }
        }
    }
    Ok(spec)
}

/// `[checks]`: sizes as bytes or with a binary suffix ("512M" = 512 MiB,
/// as systemd-repart reads sizes).
fn checks(
    raw: RawChecks,
    invalid: &dyn Fn(&'static str, String) -> ConfigError,
) -> Result<crate::preflight::Settings, ConfigError> {
    if let Some(id) = &raw.image_id {
        let ok = !id.is_empty()
            && id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
        if !ok {
            return Err(invalid(
                "checks.image-id",
                format!("{id:?}: os-release IMAGE_ID is lowercase letters, digits and ._-"),
            ));
        }
    }
    let size = |key: &'static str, v: &toml::Value| match v {
        toml::Value::Integer(n) if *n > 0 => Ok(*n as u64),
        toml::Value::String(s) => parse_size(s).map_err(|m| invalid(key, m)),
        other => Err(invalid(
            key,
            format!("{other}: give bytes or a size like \"512M\""),
        )),
    };
    let esp_size = raw
        .esp_size
        .as_ref()
        .map(|v| size("checks.esp-size", v))
        .transpose()?;
    let esp_reserved = raw
        .esp_reserved
        .as_ref()
        .map(|v| size("checks.esp-reserved", v))
        .transpose()?
        .unwrap_or(0);
    match esp_size {
        None if esp_reserved > 0 => {
            return Err(invalid(
                "checks.esp-reserved",
                "only means something with checks.esp-size".into(),
            ))
        }
        Some(s) if esp_reserved >= s => {
            return Err(invalid(
                "checks.esp-reserved",
                format!("{esp_reserved} bytes leave nothing of esp-size ({s} bytes) for UKIs"),
            ))
        }
        _ => {}
    }
    let mut partition_sizes = std::collections::BTreeMap::new();
    for (name, v) in &raw.partition_size {
        let n = size("checks.partition-size", v).map_err(|e| match e {
            ConfigError::Invalid { path, key, message } => ConfigError::Invalid {
                path,
                key,
                message: format!("{name:?}: {message}"),
            },
            e => e,
        })?;
        partition_sizes.insert(name.clone(), n);
    }
    Ok(crate::preflight::Settings {
        image_id: raw.image_id,
        esp_size,
        esp_reserved,
        partition_sizes,
    })
}

/// "512M", "1.5G", "4096", "2GiB": bytes, with K/M/G/T meaning powers of 1024.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, shift) = match t.chars().last() {
        Some('K') => (&t[..t.len() - 1], 10),
        Some('M') => (&t[..t.len() - 1], 20),
        Some('G') => (&t[..t.len() - 1], 30),
        Some('T') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let bad = || format!("{s:?} is not a size like \"512M\", \"2G\" or a number of bytes");
    let bytes = if let Ok(n) = num.parse::<u64>() {
        n.checked_shl(shift)
            .filter(|b| b >> shift == n)
            .ok_or_else(bad)?
    } else {
        let f: f64 = num.parse().map_err(|_| bad())?;
        if !f.is_finite() || f < 0.0 || f * ((1u64 << shift) as f64) >= u64::MAX as f64 {
            return Err(bad());
        }
        (f * (1u64 << shift) as f64) as u64
    };
    if bytes == 0 {
        return Err(format!("{s:?} is zero bytes"));
    }
    Ok(bytes)
}

/// The one signer `[signing]` names; `SYSUPDATE_PUBLISH_SECRET_KEY`
/// stands for `secret-key`.
fn signer(
    raw: &RawSigning,
    secret_key_override: Option<PathBuf>,
    resolve: impl Fn(&str) -> PathBuf,
    invalid: &impl Fn(&'static str, String) -> ConfigError,
) -> Result<SignerSpec, ConfigError> {
    let secret_key = secret_key_override.or_else(|| raw.secret_key.as_deref().map(&resolve));
    let given: Vec<&str> = [
        (secret_key.is_some(), "secret-key"),
        (raw.command.is_some(), "command"),
        (raw.pkcs11.is_some(), "pkcs11"),
    ]
    .into_iter()
    .filter_map(|(set, name)| set.then_some(name))
    .collect();
    if given.len() > 1 {
        return Err(invalid(
            "signing",
            format!(
                "{} are set: give exactly one signer (the environment variable {SECRET_KEY_ENV} counts as secret-key)",
                given.join(" and ")
            ),
        ));
    }
    if raw.command.is_none() && (raw.fingerprint.is_some() || raw.command_timeout.is_some()) {
        return Err(invalid(
            "signing.fingerprint",
            "fingerprint and command-timeout only go with command".into(),
        ));
    }
    if let Some(path) = secret_key {
        return Ok(SignerSpec::KeyFile(path));
    }
    if let Some(p) = &raw.pkcs11 {
        let pin_env = p.pin_env.clone().unwrap_or_else(|| PIN_ENV.to_string());
        if pin_env.is_empty() || pin_env.contains('=') {
            return Err(invalid(
                "signing.pkcs11.pin-env",
                format!("{pin_env:?} is no environment variable name"),
            ));
        }
        for (value, key) in [
            (&p.token, "signing.pkcs11.token"),
            (&p.key, "signing.pkcs11.key"),
        ] {
            if value.is_empty() {
                return Err(invalid(key, "empty: give the label".into()));
            }
        }
        return Ok(SignerSpec::Pkcs11(Pkcs11Spec {
            // A bare library name is for the dynamic loader to find.
            module: if p.module.contains('/') {
                resolve(&p.module)
            } else {
                PathBuf::from(&p.module)
            },
            token: p.token.clone(),
            key: p.key.clone(),
            pin_env,
        }));
    }
    if let Some(argv) = &raw.command {
        let fingerprint = raw.fingerprint.as_deref().ok_or_else(|| {
            invalid(
                "signing.fingerprint",
                "missing: name the key the command signs with (its fingerprint), so it can be checked against the keyring".into(),
            )
        })?;
        let timeout = match &raw.command_timeout {
            None => command::DEFAULT_TIMEOUT,
            Some(t) => humantime::parse_duration(t).map_err(|e| {
                invalid(
                    "signing.command-timeout",
                    format!("{t:?} is not a duration like \"60s\" or \"2m\": {e}"),
                )
            })?,
        };
        return CommandSpec::new(argv.clone(), fingerprint, timeout)
            .map(SignerSpec::Command)
            .map_err(|m| {
                let key = if m.contains("fingerprint") {
                    "signing.fingerprint"
                } else {
                    "signing.command"
                };
                invalid(key, m)
            });
    }
    Err(invalid(
        "signing",
        format!("no signer: set secret-key (or the environment variable {SECRET_KEY_ENV}), command or pkcs11"),
    ))
}

/// Removes `.` and `..` lexically, so messages show `/repo/public`, not
/// `/repo/examples/minimal/../../public` (symlinks are not resolved).
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// A flake reference that is a plain path is made absolute; URLs pass through.
fn resolve_flake(flake: &str, base: &Path) -> String {
    if flake.contains(':') {
        flake.to_string()
    } else {
        normalize(&base.join(flake)).display().to_string()
    }
}

/// Parses durations like `30d`, `12h`, `1d 12h`. A lifetime under an hour is
/// refused: BEST-BEFORE has day granularity and devices poll infrequently.
pub fn parse_lifetime(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration like \"30d\" or \"12h\": {e}"))?;
    if d < Duration::from_secs(3600) {
        return Err(format!("{s:?} is shorter than an hour"));
    }
    if d.as_secs() > u32::MAX as u64 {
        return Err(format!("{s:?} is longer than OpenPGP can express"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[channel]
store = "public"
url = "https://updates.example.com/stable"
keep = 2
signature-lifetime = "30d"
[signing]
secret-key = "k.asc"
keyring = "keys/release.pgp"
[transfers]
compress = "gzip"
[nix]
attribute = "packages.{system}.appliance_{version}_update"
systems = ["x86_64-linux", "arm64"]
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/sp/sysupdate-publish.toml"), None)
    }

    #[test]
    fn good_config_resolves_paths_against_its_directory() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.channel.store, StoreLocation::Dir("/etc/sp/public".into()));
        assert_eq!(
            c.signing.signer,
            SignerSpec::KeyFile("/etc/sp/k.asc".into())
        );
        assert_eq!(c.transfers.dir, PathBuf::from("/etc/sp/sysupdate.d"));
        assert_eq!(c.transfers.compress, Codec::Gzip);
        assert_eq!(c.channel.keep, 2);
        assert_eq!(
            c.channel.signature_lifetime,
            Some(Duration::from_secs(30 * 86400))
        );
        let nix = c.nix.unwrap();
        assert_eq!(nix.flake, "/etc/sp");
        assert_eq!(nix.systems[1].systemd(), "arm64");
    }

    #[test]
    fn relative_paths_are_normalized() {
        let c = Config::parse(
            &GOOD.replace("\"public\"", "\"../../srv/./public\""),
            Path::new("/etc/sp/c.toml"),
            None,
        )
        .unwrap();
        assert_eq!(c.channel.store, StoreLocation::Dir("/srv/public".into()));
    }

    #[test]
    fn secret_key_env_overrides_the_file() {
        let c = Config::parse(GOOD, Path::new("c.toml"), Some("/run/k".into())).unwrap();
        assert_eq!(c.signing.signer, SignerSpec::KeyFile("/run/k".into()));
    }

    const FPR: &str = "0123456789ABCDEF0123456789ABCDEF01234567";

    fn with_signer(signer: &str) -> String {
        GOOD.replace("secret-key = \"k.asc\"\n", &format!("{signer}\n"))
    }

    #[test]
    fn a_command_signer_needs_its_fingerprint_and_expiry_when_a_lifetime_is_set() {
        let gpg = format!(
            "command = [\"gpg\", \"--local-user\", \"{{fingerprint}}\", \"--default-sig-expire\", \"{{expires}}\", \"--detach-sign\"]\nfingerprint = \"{FPR}\"\ncommand-timeout = \"5s\""
        );
        let c = parse(&with_signer(&gpg)).unwrap();
        let SignerSpec::Command(spec) = c.signing.signer else {
            panic!("not a command")
        };
        assert_eq!(spec.fingerprint, FPR);
        assert_eq!(spec.timeout, Duration::from_secs(5));

        let sqop = format!("command = [\"sqop\", \"sign\", \"k.asc\"]\nfingerprint = \"{FPR}\"");
        let e = err(&with_signer(&sqop));
        assert!(
            e.contains("`signing.command`") && e.contains("cannot expire"),
            "{e}"
        );
        assert!(parse(&with_signer(&sqop).replace("signature-lifetime = \"30d\"\n", "")).is_ok());
        let e = err(&with_signer("command = [\"gpg\", \"--detach-sign\"]"));
        assert!(e.contains("`signing.fingerprint`: missing"), "{e}");
    }

    #[test]
    fn a_pkcs11_signer_takes_module_token_and_key_and_its_pin_from_the_environment() {
        let c = parse(&with_signer(
            "pkcs11 = { module = \"/usr/lib/softhsm/libsofthsm2.so\", token = \"release\", key = \"relkey\" }",
        ))
        .unwrap();
        assert_eq!(
            c.signing.signer,
            SignerSpec::Pkcs11(Pkcs11Spec {
                module: "/usr/lib/softhsm/libsofthsm2.so".into(),
                token: "release".into(),
                key: "relkey".into(),
                pin_env: PIN_ENV.into(),
            })
        );
        let c = parse(&with_signer(
            "pkcs11 = { module = \"libsofthsm2.so\", token = \"t\", key = \"k\", pin-env = \"HSM_PIN\" }",
        ))
        .unwrap();
        let SignerSpec::Pkcs11(spec) = c.signing.signer else {
            panic!("not pkcs11")
        };
        assert_eq!(spec.module, PathBuf::from("libsofthsm2.so"));
        assert_eq!(spec.pin_env, "HSM_PIN");
        let e = err(&with_signer(
            "pkcs11 = { module = \"m.so\", token = \"t\", key = \"k\", pin = \"1234\" }",
        ));
        assert!(e.contains("pin"), "{e}");
        let e = err(&with_signer(
            "pkcs11 = { module = \"m.so\", token = \"t\", key = \"\" }",
        ));
        assert!(e.contains("`signing.pkcs11.key`"), "{e}");
        let both =
            "secret-key = \"k.asc\"\npkcs11 = { module = \"m.so\", token = \"t\", key = \"k\" }";
        assert!(err(&with_signer(both)).contains("secret-key and pkcs11 are set"));
    }

    #[test]
    fn exactly_one_signer() {
        let both = format!("secret-key = \"k.asc\"\ncommand = [\"gpg\"]\nfingerprint = \"{FPR}\"");
        assert!(err(&with_signer(&both)).contains("secret-key and command are set"));
        let e = err(&with_signer(""));
        assert!(e.contains("no signer"), "{e}");
        // The environment's key file is a second signer next to a command.
        let cmd = format!("command = [\"gpg\", \"{{expires}}\"]\nfingerprint = \"{FPR}\"");
        let e = Config::parse(
            &with_signer(&cmd),
            Path::new("c.toml"),
            Some("/run/k".into()),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains(SECRET_KEY_ENV), "{e}");
        let e = err(&with_signer(&format!("{cmd}\ngenerate-example-key = true")));
        assert!(e.contains("`signing.generate-example-key`"), "{e}");
        let e = err(&GOOD.replace("keyring =", &format!("fingerprint = \"{FPR}\"\nkeyring =")));
        assert!(e.contains("only go with command"), "{e}");
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_file_and_key() {
        let cases = [
            (GOOD.replace("keep = 2", "keep = 0"), "`channel.keep`"),
            (
                GOOD.replace("\"30d\"", "\"soon\""),
                "`channel.signature-lifetime`",
            ),
            (GOOD.replace("\"gzip\"", "\"lz4\""), "`transfers.compress`"),
            (GOOD.replace("\"arm64\"", "\"arm\u{37}\""), "`nix.systems`"),
            (
                GOOD.replace("\"public\"", "\"sftp://h/p\""),
                "`channel.store`",
            ),
            (
                GOOD.replace("https://updates", "ftp://updates"),
                "`channel.url`",
            ),
            (GOOD.replace("stable\"", "stable?t=1\""), "`channel.url`"),
            (
                GOOD.replace("secret-key = \"k.asc\"\n", ""),
                "`signing`: no signer",
            ),
            (GOOD.replace("{system}.", ""), "`nix.attribute`"),
        ];
        for (text, key) in cases {
            let e = err(&text);
            assert!(
                e.contains("/etc/sp/sysupdate-publish.toml") && e.contains(key),
                "{key}: {e}"
            );
        }
    }

    fn store(store: &str, extra: &str) -> Result<Channel, String> {
        let text = GOOD.replace("store = \"public\"", &format!("store = {store:?}\n{extra}"));
        parse(&text).map(|c| c.channel).map_err(|e| e.to_string())
    }

    #[test]
    fn remote_stores_parse_and_bad_ones_are_explained() {
        let c = store("s3://my-bucket/appliance/stable/", "").unwrap();
        assert_eq!(
            c.store,
            StoreLocation::S3 {
                bucket: "my-bucket".into(),
                prefix: "appliance/stable".into()
            }
        );
        assert_eq!(c.parallel_uploads, DEFAULT_PARALLEL_UPLOADS);
        let c = store("s3://bucket", "parallel-uploads = 8").unwrap();
        assert_eq!(
            c.store,
            StoreLocation::S3 {
                bucket: "bucket".into(),
                prefix: String::new()
            }
        );
        assert_eq!(c.parallel_uploads, 8);
        let c = store(
            "webdav+https://dav.example.com/stable",
            "webdav-ca = \"ca.crt\"",
        )
        .unwrap();
        assert_eq!(
            c.store,
            StoreLocation::WebDav {
                url: "https://dav.example.com/stable".into(),
                ca: Some("/etc/sp/ca.crt".into())
            }
        );
        let c = store("webdav+http://127.0.0.1:8080/", "").unwrap();
        assert!(matches!(c.store, StoreLocation::WebDav { ca: None, .. }));

        for (s, extra, needle) in [
            ("s3://B/p", "", "not an S3 bucket name"),
            ("s3://b/p", "", "not an S3 bucket name"),
            ("s3://bucket/a//b", "", "plain path"),
            ("s3://bucket/../b", "", "plain path"),
            ("webdav+ftp://h/d", "", "webdav+https://"),
            (
                "webdav+https://u:pw@h/d",
                "",
                "SYSUPDATE_PUBLISH_WEBDAV_USER",
            ),
            ("webdav+https:///d", "", "no host"),
            ("sftp://h/d", "", "unknown store sftp://"),
            (
                "s3://bucket/p",
                "webdav-ca = \"ca.crt\"",
                "`channel.webdav-ca`",
            ),
            (
                "s3://bucket/p",
                "parallel-uploads = 0",
                "`channel.parallel-uploads`",
            ),
            (
                "s3://bucket/p",
                "parallel-uploads = 65",
                "`channel.parallel-uploads`",
            ),
        ] {
            let e = store(s, extra).unwrap_err();
            assert!(e.contains(needle), "{s} {extra}: {e}");
        }
    }

    #[test]
    fn syntax_errors_and_unknown_keys_are_reported() {
        assert!(err("[channel\n").contains("sysupdate-publish.toml"));
        let e = err(&GOOD.replace("keep = 2", "kepp = 2"));
        assert!(e.contains("kepp"), "{e}");
        assert!(err("").contains("missing"));
    }

    #[test]
    fn checks_section() {
        let c = parse(&format!(
            "{GOOD}[checks]\nimage-id = \"appliance\"\nesp-size = \"512M\"\nesp-reserved = 16777216\n[checks.partition-size]\n60-store = \"1.5G\"\n"
        ))
        .unwrap();
        assert_eq!(c.checks.image_id.as_deref(), Some("appliance"));
        assert_eq!(c.checks.esp_size, Some(512 << 20));
        assert_eq!(c.checks.esp_reserved, 16 << 20);
        assert_eq!(c.checks.partition_sizes["60-store"], 3 << 29);
        assert_eq!(parse(GOOD).unwrap().checks, Default::default());
        for (extra, needle) in [
            ("image-id = \"Appliance\"", "`checks.image-id`"),
            ("esp-size = \"lots\"", "`checks.esp-size`"),
            ("esp-size = -5", "`checks.esp-size`"),
            ("esp-reserved = \"1M\"", "`checks.esp-reserved`: only"),
            ("esp-size = \"1M\"\nesp-reserved = \"1M\"", "leave nothing"),
            ("[checks.partition-size]\n60-store = \"2X\"", "\"60-store\""),
            ("esp-sise = 1", "esp-sise"),
        ] {
            let e = err(&format!("{GOOD}[checks]\n{extra}\n"));
            assert!(e.contains(needle), "{extra}: {e}");
        }
    }

    #[test]
    fn specifiers_section_from_values_and_an_os_release_file() {
        let c = parse(&format!("{GOOD}[specifiers]\nw = \"40\"\nW = \"\"\n")).unwrap();
        assert_eq!(c.specifiers.version_id.as_deref(), Some("40"));
        assert_eq!(c.specifiers.variant_id.as_deref(), Some(""));
        assert_eq!(c.specifiers.os_id, None);
        assert_eq!(parse(GOOD).unwrap().specifiers, Default::default());

        let dir = tempfile::tempdir().unwrap();
        let osrel = dir.path().join("os-release");
        std::fs::write(&osrel, "ID=fedora\nVERSION_ID=\"41\"\nBUILD_ID=b7\n").unwrap();
        let text = format!("{GOOD}[specifiers]\nw = \"40\"\nos-release = {osrel:?}\n");
        let c = parse(&text).unwrap();
        // Given values win; the file fills in the rest.
        assert_eq!(c.specifiers.version_id.as_deref(), Some("40"));
        assert_eq!(c.specifiers.os_id.as_deref(), Some("fedora"));
        assert_eq!(c.specifiers.build_id.as_deref(), Some("b7"));
        assert_eq!(c.specifiers.image_id, None);

        // Per output: a table named by nix system or arch, over the base.
        let text = format!(
            "{GOOD}[specifiers]\nw = \"40\"\no = \"fedora\"\n[specifiers.riscv64-linux]\nw = \"39\"\n[specifiers.arm64]\nos-release = {osrel:?}\n"
        );
        let c = parse(&text).unwrap();
        let riscv = c.specifiers.for_arch("riscv64");
        assert_eq!(riscv.version_id.as_deref(), Some("39"));
        assert_eq!(riscv.os_id.as_deref(), Some("fedora"));
        let arm = c.specifiers.for_arch("arm64");
        assert_eq!(arm.version_id.as_deref(), Some("41"));
        assert_eq!(arm.build_id.as_deref(), Some("b7"));
        let x86 = c.specifiers.for_arch("x86-64");
        assert_eq!(x86.version_id.as_deref(), Some("40"));
        assert_eq!(x86.build_id, None);

        for (extra, needle) in [
            (
                "w = \"4/0\"",
                "`specifiers.w`: \"4/0\" (VERSION_ID) has '/'",
            ),
            ("o = \"a b\"", "`specifiers.o`"),
            ("x = \"1\"", "unknown field `x`"),
            ("[specifiers.mips]\nw = \"1\"", "`specifiers.mips`"),
            (
                "[specifiers.arm64]\nq = \"1\"",
                "`specifiers.arm64`: unknown field `q`",
            ),
            ("[specifiers.arm64]\nw = \"a b\"", "`specifiers.arm64.w`"),
            ("[specifiers.arm64.x]\nw = \"1\"", "`specifiers.arm64.x`"),
            (
                "os-release = \"/nonexistent/os-release\"",
                "cannot read /nonexistent/os-release",
            ),
        ] {
            let e = err(&format!("{GOOD}[specifiers]\n{extra}\n"));
            assert!(e.contains(needle), "{extra}: {e}");
        }
    }

    #[test]
    fn sizes() {
        for (s, n) in [
            ("4096", 4096),
            ("512M", 512 << 20),
            ("512MiB", 512 << 20),
            ("2G", 2 << 30),
            ("1.5G", 3 << 29),
            ("64K", 64 << 10),
            ("1T", 1 << 40),
            ("100B", 100),
        ] {
            assert_eq!(parse_size(s), Ok(n), "{s}");
        }
        for bad in [
            "",
            "M",
            "0",
            "-1M",
            "1.2.3G",
            "99999999999T",
            "NaNG",
            "infM",
            "5 M",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,200}") {
            let _ = parse(&s);
        }
        #[test]
        fn sizes_never_panic_and_whole_units_are_exact(s in "\\PC{0,12}", n in 1u64..1_000_000, unit in 0usize..4) {
            let _ = parse_size(&s);
            let (suffix, shift) = [("K", 10), ("M", 20), ("G", 30), ("", 0)][unit];
            proptest::prop_assert_eq!(parse_size(&format!("{n}{suffix}")), Ok(n << shift));
        }
        #[test]
        fn mutated_good_config_never_panics(pos in 0usize..400, ch in proptest::char::any()) {
            let mut t: Vec<char> = GOOD.chars().collect();
            let p = pos % t.len();
            t[p] = ch;
            let _ = parse(&t.into_iter().collect::<String>());
        }
    }

    const CHANNELS: &str = r#"
[channels.canary]
store = "s3://bucket/canary"
keep = 2
[channels.stable]
store = "s3://bucket/stable"
url = "https://updates.example.com/stable"
[signing]
secret-key = "k.asc"
keyring = "k.pgp"
"#;

    #[test]
    fn several_channels_are_chosen_by_name() {
        let mut c = parse(CHANNELS).unwrap();
        assert_eq!(c.channels.keys().collect::<Vec<_>>(), ["canary", "stable"]);
        let e = c.select(None).unwrap_err().to_string();
        assert!(
            e.contains("several channels (canary, stable): pass --channel NAME"),
            "{e}"
        );
        c.select(Some("stable")).unwrap();
        assert_eq!(c.channel_name, "stable");
        assert_eq!(c.channel.keep, 3);
        assert!(c.channel.url.is_some());
        c.select(Some("canary")).unwrap();
        assert_eq!(c.channel.keep, 2);
        let e = c.select(Some("beta")).unwrap_err().to_string();
        assert!(
            e.contains("no channel \"beta\" (channels: canary, stable)"),
            "{e}"
        );
        // A lone [channel] is "default" and needs no --channel.
        let mut one = parse(GOOD).unwrap();
        one.select(None).unwrap();
        assert_eq!(one.channel_name, "default");
        one.select(Some("default")).unwrap();
    }

    #[test]
    fn channel_tables_are_validated_per_channel() {
        let both = format!("[channel]\nstore = \"x\"\n{CHANNELS}");
        assert!(parse(&both).unwrap_err().to_string().contains("not both"));
        let same = CHANNELS.replace("bucket/canary", "bucket/stable");
        let e = parse(&same).unwrap_err().to_string();
        assert!(
            e.contains("channels.stable.store") && e.contains("channel canary"),
            "{e}"
        );
        let bad = CHANNELS.replace("keep = 2", "keep = 0");
        let e = parse(&bad).unwrap_err().to_string();
        assert!(e.contains("channels.canary.keep"), "{e}");
        let none = "[signing]\nsecret-key = \"k\"\nkeyring = \"r\"\n";
        assert!(parse(none).unwrap_err().to_string().contains("missing"));
    }

    #[test]
    fn the_compressor_memory_budget_is_checked_up_front() {
        let with = |t: &str| parse(&GOOD.replace("compress = \"gzip\"", t));
        let c = with("compress = \"xz\"").unwrap();
        assert_eq!(c.transfers.memory, crate::compress::DEFAULT_MEMORY);
        let c = with("compress = \"xz\"\nmemory = \"1G\"").unwrap();
        assert_eq!(c.transfers.memory, 1 << 30);
        let e = with("compress = \"xz\"\nthreads = 100000")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("transfers.threads") && e.contains("1 to 256"),
            "{e}"
        );
        let e = with("compress = \"xz\"\nthreads = 4")
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than transfers.memory (200 MiB)"), "{e}");
        let e = with("compress = \"xz\"\nlevel = 9")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("transfers.memory") && e.contains("level 9"),
            "{e}"
        );
        with("compress = \"xz\"\nlevel = 9\nmemory = \"2G\"").unwrap();
        let e = with("compress = \"xz\"\nmemory = true")
            .unwrap_err()
            .to_string();
        assert!(e.contains("transfers.memory"), "{e}");
    }
}
