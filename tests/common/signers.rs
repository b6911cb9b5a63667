//! The real signers the tests sign with: gpg with its own gpg-agent and a
//! passphrase-protected key, Debian's `sqop` (Sequoia SOP), and a SoftHSM
//! token driven by OpenSC's `pkcs11-tool`. Each lives in a temporary
//! directory and is torn down on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::stderr;

/// Runs a helper program, panicking with its output unless it succeeds.
fn must(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (.ci/run installs it)"));
    assert!(out.status.success(), "{cmd:?}: {}", stderr(&out));
    out.stdout
}

/// A TOML string array.
pub fn toml_array(args: &[&str]) -> String {
    let quoted: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

/// The passphrase of every key a [`GpgAgent`] makes.
pub const PASSPHRASE: &str = "correct horse battery staple";

/// A gpg home with its own gpg-agent (stopped on drop). Keys get
/// [`PASSPHRASE`]; [`GpgAgent::preset`] gives it to the agent the way a
/// CI job would (`gpg-preset-passphrase`), so `gpg --batch` signs unattended.
pub struct GpgAgent {
    pub home: tempfile::TempDir,
    passphrase: &'static str,
}

impl GpgAgent {
    pub fn new() -> GpgAgent {
        Self::with_passphrase(PASSPHRASE)
    }

    /// Keys without a passphrase, for what reads their exported secrets.
    pub fn unprotected() -> GpgAgent {
        Self::with_passphrase("")
    }

    fn with_passphrase(passphrase: &'static str) -> GpgAgent {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(
            home.path().join("gpg-agent.conf"),
            "allow-preset-passphrase\nallow-loopback-pinentry\n",
        )
        .unwrap();
        GpgAgent { home, passphrase }
    }

    pub fn path(&self) -> &Path {
        self.home.path()
    }

    /// Runs gpg in this home (key management: loopback pinentry with the passphrase).
    pub fn gpg(&self, args: &[&str]) -> Vec<u8> {
        must(
            Command::new("gpg")
                .arg("--homedir")
                .arg(self.path())
                .args(["--batch", "--pinentry-mode", "loopback", "--passphrase"])
                .arg(self.passphrase)
                .args(args),
        )
    }

    /// Fingerprints of the primary keys of `who` (all keys when empty)
    /// and their subkeys, in order.
    pub fn fingerprints(&self, who: &[&str]) -> Vec<String> {
        let mut args = vec!["--list-keys", "--with-colons"];
        args.extend(who);
        String::from_utf8(self.gpg(&args))
            .unwrap()
            .lines()
            .filter_map(|l| {
                l.strip_prefix("fpr:")
                    .map(|r| r.trim_matches(':').to_string())
            })
            .collect()
    }

    /// A new Ed25519 key for `uid` that may `usage` ("sign" or "cert"); its fingerprint.
    pub fn generate(&self, uid: &str, usage: &str) -> String {
        self.gpg(&["--quick-gen-key", uid, "ed25519", usage, "never"]);
        self.fingerprints(&[uid])[0].clone()
    }

    /// Adds a signing subkey to the key of `uid`; its fingerprint.
    pub fn add_signing_subkey(&self, uid: &str) -> String {
        let primary = self.fingerprints(&[uid])[0].clone();
        self.gpg(&["--quick-add-key", &primary, "ed25519", "sign", "never"]);
        self.fingerprints(&[uid]).last().unwrap().clone()
    }

    /// Tells the agent the passphrase of every secret key here.
    pub fn preset(&self) {
        let keys =
            String::from_utf8(self.gpg(&["--list-secret-keys", "--with-colons", "--with-keygrip"]))
                .unwrap();
        for grip in keys.lines().filter_map(|l| l.strip_prefix("grp:")) {
            must(
                Command::new("/usr/lib/gnupg/gpg-preset-passphrase")
                    .env("GNUPGHOME", self.path())
                    .args(["--preset", "-P", self.passphrase])
                    .arg(grip.trim_matches(':')),
            );
        }
    }

    /// Writes the binary public keyring of `who` (all keys when empty).
    pub fn export(&self, who: &[&str], path: &Path) -> PathBuf {
        let mut args = vec!["--export"];
        args.extend(who);
        std::fs::write(path, self.gpg(&args)).unwrap();
        path.to_path_buf()
    }

    /// The command a release machine configures: gpg through the agent,
    /// the configured fingerprint, the lifetime as gpg's signature expiry.
    pub fn command(&self, local_user: &str) -> String {
        toml_array(&[
            "gpg",
            "--homedir",
            self.path().to_str().unwrap(),
            "--batch",
            "--local-user",
            local_user,
            "--default-sig-expire",
            "{expires}",
            "--detach-sign",
        ])
    }
}

impl Drop for GpgAgent {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(self.path())
            .args(["--kill", "all"])
            .status();
    }
}

/// The usual distribution layout, made on the "offline" machine: a
/// primary that only certifies, and a signing subkey.
pub struct OfflinePrimary {
    pub gpg: GpgAgent,
    pub primary: String,
    pub subkey: String,
    /// The binary public keyring devices install (primary and subkey).
    pub keyring: PathBuf,
}

impl OfflinePrimary {
    pub fn new() -> OfflinePrimary {
        Self::in_home(GpgAgent::new())
    }

    /// Without a passphrase, for a key file the publisher reads itself.
    pub fn new_unprotected() -> OfflinePrimary {
        Self::in_home(GpgAgent::unprotected())
    }

    fn in_home(gpg: GpgAgent) -> OfflinePrimary {
        let uid = "Offline Primary <ops@example.org>";
        let primary = gpg.generate(uid, "cert");
        let subkey = gpg.add_signing_subkey(uid);
        let keyring = gpg.export(&[], &gpg.path().join("release.pgp"));
        OfflinePrimary {
            gpg,
            primary,
            subkey,
            keyring,
        }
    }

    /// What leaves the offline machine: the subkey's secret, with a stub
    /// for the primary's (`gpg --export-secret-subkeys SUB!`), armored.
    pub fn subkey_only(&self) -> Vec<u8> {
        self.gpg.gpg(&[
            "--export-secret-subkeys",
            "--armor",
            &format!("{}!", self.subkey),
        ])
    }
}

/// A key made by Debian's `sqop` (Sequoia SOP): a certification primary
/// with a signing subkey, as Sequoia makes them.
pub struct Sqop {
    pub dir: tempfile::TempDir,
    /// The secret key file `sqop sign` takes.
    pub key: PathBuf,
    /// The binary certificate, as devices install it.
    pub keyring: PathBuf,
}

impl Sqop {
    pub fn new(uid: &str) -> Sqop {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("sop.key");
        std::fs::write(&key, must(Command::new("sqop").args(["generate-key", uid]))).unwrap();
        let keyring = dir.path().join("sop.pgp");
        let cert = must(
            Command::new("sh")
                .arg("-c")
                .arg("sqop extract-cert --no-armor < \"$1\"")
                .arg("sh")
                .arg(&key),
        );
        std::fs::write(&keyring, cert).unwrap();
        Sqop { dir, key, keyring }
    }

    /// The primary key's fingerprint.
    pub fn fingerprint(&self) -> String {
        let ring = std::fs::read(&self.keyring).unwrap();
        sysupdate_publish::signing::Keyring::from_bytes(&ring)
            .unwrap()
            .fingerprints()[0]
            .clone()
    }

    /// `sqop sign KEY`: armored output, which the publisher turns binary.
    pub fn command(key: &Path) -> String {
        toml_array(&["sqop", "sign", key.to_str().unwrap()])
    }
}

/// A `[signing]` body for a command signer.
pub fn command_signing(command: &str, fingerprint: &str, keyring: &Path, extra: &str) -> String {
    format!("command = {command}\nfingerprint = {fingerprint:?}\nkeyring = {keyring:?}\n{extra}\n")
}

/// Debian's SoftHSM module, the token the PKCS#11 tests sign with.
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// The user PIN of every [`SoftHsm`] token.
pub const HSM_PIN: &str = "2468-release";

/// A SoftHSM token store of its own (its `SOFTHSM2_CONF` in a temp dir),
/// with one initialised token; key pairs are made with OpenSC's `pkcs11-tool`.
pub struct SoftHsm {
    pub dir: tempfile::TempDir,
    pub conf: PathBuf,
    pub token: String,
}

impl SoftHsm {
    pub fn new(token: &str) -> SoftHsm {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        let hsm = SoftHsm {
            dir,
            conf,
            token: token.to_string(),
        };
        must(hsm.tool("softhsm2-util").args([
            "--init-token",
            "--free",
            "--label",
            token,
            "--so-pin",
            "1357-so",
            "--pin",
            HSM_PIN,
        ]));
        hsm
    }

    /// A command with this token store's `SOFTHSM2_CONF`.
    pub fn tool(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SOFTHSM2_CONF", &self.conf);
        c
    }

    /// A new Ed25519 key pair labelled `label` on the token, made in it.
    pub fn keypair(&self, label: &str) {
        must(self.tool("pkcs11-tool").args([
            "--module",
            SOFTHSM_MODULE,
            "--token-label",
            &self.token,
            "--login",
            "--pin",
            HSM_PIN,
            "--keypairgen",
            "--key-type",
            "EC:edwards25519",
            "--label",
            label,
        ]));
    }

    /// The environment our binary needs to use the token.
    pub fn env(&self) -> [(String, String); 2] {
        [
            ("SOFTHSM2_CONF".into(), self.conf.display().to_string()),
            ("SYSUPDATE_PUBLISH_PKCS11_PIN".into(), HSM_PIN.into()),
        ]
    }

    /// The `[signing]` body for the key `label`.
    pub fn signing(&self, label: &str, keyring: &Path) -> String {
        format!(
            "pkcs11 = {{ module = {SOFTHSM_MODULE:?}, token = {:?}, key = {label:?} }}\nkeyring = {keyring:?}\n",
            self.token
        )
    }

    /// `keygen --pkcs11 … --primary FILE`: binds `label` as the signing
    /// subkey of the offline primary in `primary` (passphrase [`PASSPHRASE`]);
    /// returns the keygen report.
    pub fn bind(&self, label: &str, primary: &Path, keyring: &Path) -> serde_json::Value {
        let mut cmd = super::bin();
        cmd.envs(self.env())
            .env("SYSUPDATE_PUBLISH_KEY_PASSPHRASE", PASSPHRASE)
            .args(["--json", "keygen", "--pkcs11", SOFTHSM_MODULE, "--token"])
            .arg(&self.token)
            .args(["--key", label, "--primary"])
            .arg(primary)
            .arg("--keyring")
            .arg(keyring);
        serde_json::from_slice(&must(&mut cmd)).unwrap()
    }

    /// `keygen --pkcs11`: the certificate of `label`, written to `keyring`;
    /// returns its fingerprint.
    pub fn keygen(&self, label: &str, uid: &str, keyring: &Path) -> String {
        let mut cmd = super::bin();
        cmd.envs(self.env())
            .args(["--json", "keygen", "--pkcs11", SOFTHSM_MODULE, "--token"])
            .arg(&self.token)
            .args(["--key", label, "--uid", uid, "--keyring"])
            .arg(keyring);
        let out: serde_json::Value = serde_json::from_slice(&must(&mut cmd)).unwrap();
        out["fingerprint"].as_str().unwrap().to_string()
    }
}
