//! Command-line definitions (clap). No logic lives here.

use std::path::PathBuf;

use clap::{ArgAction, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

/// The heading that separates the options every command takes from the
/// command's own in `COMMAND --help`.
const GLOBAL: &str = "Global options";

/// Commands that read no configuration: `--config` and `--channel` are
/// hidden from their help, and refused when given.
pub const WITHOUT_CONFIG: [&str; 5] = ["keygen", "sign", "sums", "completions", "man"];

/// The command line as clap sees it, with the global options a command
/// ignores hidden from its help. clap copies a global option into every
/// subcommand that has no option of that id yet, so those commands get a
/// hidden copy first. This is the one place that does it.
pub fn command() -> clap::Command {
    let mut cmd = Cli::command();
    let hidden: Vec<clap::Arg> = cmd
        .get_arguments()
        .filter(|a| ["config", "channel", "component"].contains(&a.get_id().as_str()))
        .map(|a| a.clone().hide(true))
        .collect();
    for name in WITHOUT_CONFIG {
        cmd = cmd.mut_subcommand(name, |sub| sub.args(hidden.clone()));
    }
    cmd
}

/// Parses the process arguments, exiting with clap's message (status 2) on a usage error.
pub fn parse() -> Cli {
    let matches = command().get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

const AFTER_HELP: &str = "\
Typical use:
  sysupdate-publish keygen --uid 'Appliance Updates <updates@example.com>' \\
      --secret /run/secrets/release.asc --keyring keys/release.pgp
  sysupdate-publish release --version 18          # nix build every configured system, publish
  sysupdate-publish release --output x86_64-linux=./result-x86 --output arm64=./result-arm
  sysupdate-publish status

The configuration is ./sysupdate-publish.toml unless --config says otherwise.
Exit status: 0 success, 1 the operation failed, 2 usage or configuration error.";

/// Publish signed systemd-sysupdate channels from per-architecture build outputs.
///
/// Builds per-architecture update directories (payloads, SHA256SUMS, SHA256SUMS.gpg)
/// that systemd-sysupdate 254 and later accept, and keeps them consistent:
/// payloads first, manifests and signatures after, old versions pruned last.
#[derive(Parser, Debug)]
#[command(name = "sysupdate-publish", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Configuration file [default: ./sysupdate-publish.toml]
    #[arg(long, global = true, value_name = "FILE", help_heading = GLOBAL)]
    pub config: Option<PathBuf>,

    /// The channel to work on, for a config with several `[channels.NAME]`
    #[arg(long, global = true, value_name = "NAME", help_heading = GLOBAL)]
    pub channel: Option<String>,

    /// The component to work on (systemd 262): its transfers are in sysupdate.NAME.d
    /// beside `[transfers] dir`, its versions a stream of their own in the same arch
    /// directories. Without it, commands work on the OS's own stream (sysupdate.d)
    #[arg(long, global = true, value_name = "NAME", help_heading = GLOBAL)]
    pub component: Option<String>,

    /// Print the report as one JSON document on stdout (docs/json.md); the human report goes to stderr
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub json: bool,

    /// More detail on stderr (repeat for more)
    #[arg(short, long, global = true, action = ArgAction::Count, conflicts_with = "quiet", help_heading = GLOBAL)]
    pub verbose: u8,

    /// No diagnostics on stderr, only errors and warnings (the report on stdout stays)
    #[arg(short, long, global = true, help_heading = GLOBAL)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Publish a version for every architecture, following the commit protocol
    ///
    /// Inputs come from --output (one per architecture) or, without it, from
    /// `nix build` of the configured attribute for every configured system.
    /// Existing manifests are verified first; the new version must be complete
    /// for the transfer files and newer than every published version.
    Release(ReleaseArgs),

    /// Show the published versions, signatures, history and problems of every architecture
    Status(StatusArgs),

    /// Withdraw a version from the manifests (payloads stay until retention prunes them)
    ///
    /// Devices that have not installed it will not; devices that have keep it.
    /// Undo with `unyank VERSION` or `release --unyank` of the same outputs (no re-upload).
    Yank(YankArgs),

    /// Publish a yanked version again from the payloads still on the hosting
    Unyank(UnyankArgs),

    /// Make VERSION the newest published version by withdrawing every newer one
    ///
    /// Devices that have not installed a newer version stay on or move to VERSION.
    /// Devices that already did keep it: systemd-sysupdate never downgrades on its
    /// own. Move them back with a new, higher version built from the good
    /// configuration; `systemd-sysupdate update VERSION` on a device is the manual
    /// escape hatch.
    Rollback(RollbackArgs),

    /// Re-sign every manifest with a fresh signature lifetime and BEST-BEFORE date
    Refresh(RefreshArgs),

    /// Publish a version of one channel on another, copying its payloads on the hosting
    ///
    /// Reads and verifies channel FROM (signatures, sizes, history), checks VERSION is
    /// published and not withdrawn there (and with --if-older-than, that FROM's history
    /// shows it published at least that long ago: a soak time), then publishes it to TO
    /// through TO's own checks, retention and history. On the same backend the payload
    /// bytes never pass through this machine (hard link, S3 CopyObject, WebDAV COPY).
    Promote(PromoteArgs),

    /// Copy a channel published elsewhere into this one, verified, byte for byte
    ///
    /// Fetches every arch's SHA256SUMS and signature from URL as a device does,
    /// verifies them with the keyring and every payload's hash, and publishes them
    /// here through the commit protocol with manifests and signatures unchanged, so
    /// devices keep trusting the original key. A rerun fetches only new payloads and
    /// drops what the source dropped. Anything that does not verify writes nothing.
    Mirror(MirrorArgs),

    /// Make the hosting serve the history's newest state again
    ///
    /// Finishes an interrupted write, puts back manifests the hosting replaced
    /// or lost (re-signed now) and, with --output, uploads again payloads whose
    /// bytes are missing or changed (only files that hash to what the history
    /// recorded; with --output every published payload is hashed, as by
    /// `status --deep`). Writes no history entry: the history already names
    /// this state.
    Repair(RepairArgs),

    /// Record what the hosting serves now as the channel's history
    ///
    /// For a history that was lost, cut short, rewritten or written by an older
    /// sysupdate-publish: every served manifest must verify with the keyring and
    /// list only payloads that are there. Check `status` first; nothing is
    /// written without --confirm. Also replaces the history head this machine
    /// remembers for the channel.
    Adopt(AdoptArgs),

    /// Check the channel as devices see it, over HTTP(S) from its public URL
    ///
    /// Fetches SHA256SUMS and its signature like systemd-pull, verifies them with
    /// the device keyring (and with systemd's gpg command line when gpg is
    /// installed), checks completeness, the 404s systemd 258+ needs, headers and
    /// expiry. Exits 1 on any problem.
    Verify(VerifyArgs),

    /// Serve a directory store over HTTP(S) as devices need it (test VMs, demos)
    ///
    /// Real 404s for absent files, bytes exactly as stored (no Content-Encoding),
    /// HEAD and byte ranges, Cache-Control as in the README's nginx snippet
    /// (no-cache for manifests, signatures and the history; immutable payloads).
    /// Never serves names starting with '.' or anything outside the store. For
    /// production use nginx, S3 or a CDN.
    Serve(ServeArgs),

    /// Create a signing key: armored secret key (mode 0600) and the binary keyring devices install
    ///
    /// The keyring goes onto devices as /etc/systemd/import-pubring.pgp and
    /// /etc/systemd/import-pubring.gpg (systemd 257 and older read only the latter).
    Keygen(KeygenArgs),

    /// Write a detached OpenPGP signature of FILE (what systemd-pull verifies)
    Sign(SignArgs),

    /// Write DIR/SHA256SUMS over the regular files of DIR, byte-exact for systemd-sysupdate
    Sums(SumsArgs),

    /// Show which versions a directory of payloads holds, per the transfer files
    ///
    /// Exits 1 when a version is incomplete or a file matches no transfer.
    Inspect(InspectArgs),

    /// Write the definitions a device of this channel installs, into DIR
    ///
    /// Copies the transfer files of [transfers] dir (with their drop-ins) and
    /// any *.feature files, after checking them as a release does and that every
    /// url transfer fetches from this channel's url: the files devices read are
    /// the ones the publisher checks against. For devices not built with the nix
    /// module: install DIR as /etc/sysupdate.d.
    DeviceFiles(DeviceFilesArgs),

    /// Print a shell completion script on stdout
    ///
    /// bash: `sysupdate-publish completions bash > /etc/bash_completion.d/sysupdate-publish`;
    /// zsh: into a directory of $fpath as `_sysupdate-publish`;
    /// fish: `~/.config/fish/completions/sysupdate-publish.fish`.
    Completions(CompletionsArgs),

    /// Write man pages, sysupdate-publish.1 and one per command, into DIR
    Man(ManArgs),
}

impl Command {
    /// The command's name as typed.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Release(_) => "release",
            Command::Status(_) => "status",
            Command::Yank(_) => "yank",
            Command::Unyank(_) => "unyank",
            Command::Rollback(_) => "rollback",
            Command::Refresh(_) => "refresh",
            Command::Promote(_) => "promote",
            Command::Mirror(_) => "mirror",
            Command::Repair(_) => "repair",
            Command::Adopt(_) => "adopt",
            Command::Verify(_) => "verify",
            Command::Serve(_) => "serve",
            Command::Keygen(_) => "keygen",
            Command::Sign(_) => "sign",
            Command::Sums(_) => "sums",
            Command::Inspect(_) => "inspect",
            Command::DeviceFiles(_) => "device-files",
            Command::Completions(_) => "completions",
            Command::Man(_) => "man",
        }
    }
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub struct DeviceFilesArgs {
    /// Directory to write into (created when missing), e.g. an image's /etc/sysupdate.d
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Directory for the pages (created when missing)
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// Preflight checks a write goes without (`release`, `promote`).
#[derive(Args, Debug)]
pub struct SkipArgs {
    /// Publish without this preflight check (repeatable; `all` for every one):
    /// uki-arch, uki-version, uki-image-id, esp-size, partition-size, gpt-arch,
    /// image-format. Recorded in the history with --reason
    #[arg(long = "skip-check", value_name = "NAME")]
    pub skip_checks: Vec<String>,

    /// Why checks are skipped, for the history (required with --skip-check)
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

#[derive(Args, Debug)]
pub struct ReleaseArgs {
    /// The version to publish (default: read from the payload names via the transfers)
    #[arg(long, value_name = "V")]
    pub version: Option<String>,

    /// A build output for one architecture: nix system or systemd name, and a directory
    #[arg(long = "output", value_name = "SYSTEM=PATH")]
    pub outputs: Vec<String>,

    /// Print the plan and change nothing
    #[arg(long)]
    pub dry_run: bool,

    /// Allow publishing a version older than the newest published one
    #[arg(long)]
    pub allow_downgrade: bool,

    /// Allow publishing a version that was yanked
    #[arg(long)]
    pub unyank: bool,

    #[command(flatten)]
    pub skip: SkipArgs,

    /// Read every build output file again instead of trusting the stamp
    /// cache ($SYSUPDATE_PUBLISH_CACHE_DIR, else ~/.cache/sysupdate-publish),
    /// which skips files unchanged (inode, size, mtime, ctime) since hashed
    /// and publishes the kept compressed copy of an unchanged raw file
    #[arg(long)]
    pub deep: bool,

    /// Publish only the architectures given with --output; the others published
    /// or configured in [nix] keep their current versions
    #[arg(long)]
    pub partial: bool,

    /// A version typed without --version (`release 19`): refused with a hint.
    #[arg(hide = true)]
    pub stray: Option<String>,
}

#[derive(Args, Debug)]
pub struct YankArgs {
    /// The version to withdraw, exactly as published (e.g. 18)
    pub version: String,
    /// Only these architectures (repeatable; default: every one publishing VERSION)
    #[arg(long = "arch", value_name = "ARCH")]
    pub arches: Vec<String>,
    /// Why, for the ledger (required)
    #[arg(long)]
    pub reason: String,
    /// Print the plan and change nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug)]
pub struct UnyankArgs {
    /// The yanked version to publish again
    pub version: String,
    /// Why, for the history
    #[arg(long)]
    pub reason: Option<String>,
    /// Print the plan and change nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug)]
pub struct RollbackArgs {
    /// The version to make the newest published one
    pub version: String,
    /// Why, for the ledger
    #[arg(long)]
    pub reason: Option<String>,
    /// Print the plan and change nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug)]
pub struct RefreshArgs {
    /// Only re-sign when a signature expires within DURATION (for cron; no-op otherwise)
    #[arg(long, value_name = "DURATION")]
    pub if_expiring_within: Option<String>,
    /// Print the plan and change nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug)]
pub struct PromoteArgs {
    /// The version to promote, exactly as published on FROM
    pub version: String,
    /// The channel it is published on (a [channels.NAME] of the config)
    #[arg(long, value_name = "CHANNEL")]
    pub from: String,
    /// The channel to publish it on
    #[arg(long, value_name = "CHANNEL")]
    pub to: String,
    /// Only if FROM published it at least this long ago, e.g. 2d (else exit 1, nothing written)
    #[arg(long, value_name = "DURATION")]
    pub if_older_than: Option<String>,
    #[command(flatten)]
    pub skip: SkipArgs,
    /// Print the plan and change nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug)]
pub struct MirrorArgs {
    /// The published channel's URL (what devices fetch: URL/<arch>/SHA256SUMS)
    #[arg(long, value_name = "URL")]
    pub from: String,
    /// Extra CA certificate (PEM) to trust for URL
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Print the plan and change nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug)]
pub struct RepairArgs {
    /// A build output to take recorded payloads from (nix system or systemd name, and a directory)
    #[arg(long = "output", value_name = "SYSTEM=PATH")]
    pub outputs: Vec<String>,
    /// Print what would be repaired and change nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug)]
pub struct AdoptArgs {
    /// Yes: what the hosting serves now is right (check `status` first)
    #[arg(long)]
    pub confirm: bool,
    /// Why, for the history
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Hash every published payload instead of comparing sizes with the history
    #[arg(long)]
    pub deep: bool,
    /// (no effect: sizes are compared by default, hashes with --deep)
    #[arg(long, hide = true)]
    pub no_hash: bool,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Base URL devices use [default: [channel] url]
    #[arg(long)]
    pub url: Option<String>,
    /// Extra CA certificate (PEM) to trust, for test hosting
    #[arg(long, value_name = "FILE")]
    pub ca: Option<std::path::PathBuf>,
    /// Download every payload and check its hash
    #[arg(long)]
    pub deep: bool,
    /// Only these architectures (repeatable; default: those in the store)
    #[arg(long = "arch", value_name = "ARCH")]
    pub arches: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The directory store to serve [default: the channel's `store` directory]
    #[arg(value_name = "DIR")]
    pub dir: Option<std::path::PathBuf>,
    /// Address and port to listen on (port 0: any free port, printed)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// PEM certificate chain: serve HTTPS (with --tls-key)
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key for --tls-cert
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
}

#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// User id, e.g. "Appliance Updates <updates@example.com>"
    #[arg(long, required_unless_present = "primary")]
    pub uid: Option<String>,
    /// Where to write the armored secret key (created with mode 0600, never overwritten)
    #[arg(long, value_name = "FILE", required_unless_present = "pkcs11")]
    pub secret: Option<PathBuf>,
    /// Where to write the binary public keyring for devices
    #[arg(long, value_name = "FILE")]
    pub keyring: PathBuf,
    /// Also write the armored public key here
    #[arg(long, value_name = "FILE")]
    pub public: Option<PathBuf>,
    /// Instead of a new key, make the OpenPGP certificate of an Ed25519 key in a
    /// PKCS#11 token (self-signed through the token; its PIN from
    /// SYSUPDATE_PUBLISH_PKCS11_PIN or --pin-env): the token's module
    #[arg(long, value_name = "MODULE", conflicts_with = "secret", requires_all = ["token", "key"])]
    pub pkcs11: Option<PathBuf>,
    /// With --pkcs11: the token's label
    #[arg(long, value_name = "LABEL", requires = "pkcs11")]
    pub token: Option<String>,
    /// With --pkcs11: the key pair's label on the token
    #[arg(long, value_name = "LABEL", requires = "pkcs11")]
    pub key: Option<String>,
    /// With --pkcs11: the environment variable holding the PIN
    #[arg(long, value_name = "VAR", requires = "pkcs11")]
    pub pin_env: Option<String>,
    /// With --pkcs11: bind the token's key as the signing subkey of this
    /// offline primary (armored secret key; passphrase from
    /// SYSUPDATE_PUBLISH_KEY_PASSPHRASE) instead of making a certificate of its own
    #[arg(long, value_name = "FILE", requires = "pkcs11", conflicts_with = "uid")]
    pub primary: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct SignArgs {
    /// Armored secret key (ours or `gpg --export-secret-keys --armor`)
    #[arg(long, value_name = "FILE", env = "SYSUPDATE_PUBLISH_SECRET_KEY")]
    pub key: PathBuf,
    /// Signature lifetime, e.g. 30d (written as the OpenPGP expiration, which gpg enforces)
    #[arg(long, value_name = "DURATION")]
    pub expires: Option<String>,
    /// Signature file [default: FILE.gpg]
    #[arg(long, value_name = "SIG")]
    pub output: Option<PathBuf>,
    /// The file to sign, usually SHA256SUMS
    pub file: PathBuf,
}

#[derive(Args, Debug)]
pub struct SumsArgs {
    /// Add a BEST-BEFORE-YYYY-MM-DD entry: systemd 260+ refuses the manifest from that day on
    #[arg(long, value_name = "DATE")]
    pub best_before: Option<String>,
    /// Directory of payloads (SHA256SUMS* and dotfiles are skipped)
    pub dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Directory holding the device's *.transfer files
    #[arg(long, value_name = "DIR")]
    pub transfers: PathBuf,
    /// Architecture for %a in the transfer files
    #[arg(long, default_value = "x86-64")]
    pub arch: String,
    /// Directory of payloads to classify
    pub payload_dir: PathBuf,
}
