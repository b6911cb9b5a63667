//! A signer that is a program: gpg (and so gpg-agent, OpenPGP smartcards,
//! YubiKeys, Nitrokeys), a SOP implementation (`sqop sign KEY`), or a
//! wrapper around a signing service. The data goes to its stdin; a
//! detached OpenPGP signature, binary or armored, comes back on stdout.
//! Whatever it prints is parsed and published in binary, and checked by
//! the publisher like every other signature.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use pgp::composed::{Deserializable, DetachedSignature};
use pgp::ser::Serialize;

use super::{normalize_fingerprint, Keyring, SignOptions, Signer, SigningError};

/// How long a command may take per signature unless `command-timeout`
/// says otherwise: long enough to touch a smartcard, short enough that a
/// hung agent does not hold the channel's lock for ever.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The placeholders an argument may contain, replaced for each signature.
pub const PLACEHOLDERS: [(&str, &str); 3] = [
    ("fingerprint", "the configured `fingerprint`"),
    (
        "expires",
        "the signature lifetime as gpg's --default-sig-expire takes it: `seconds=N`, or `0` for none",
    ),
    ("lifetime", "the signature lifetime in seconds, `0` for none"),
];

/// Placeholders that hand the lifetime to the program: without one, its
/// signatures cannot carry the expiry devices enforce.
const EXPIRY_PLACEHOLDERS: [&str; 2] = ["expires", "lifetime"];

/// systemd-pull refuses signature files over 1 MiB; nothing longer is one.
const MAX_OUTPUT: u64 = 1 << 20;

/// A configured signing command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandSpec {
    /// The program and its arguments, with placeholders.
    pub argv: Vec<String>,
    /// The key it signs with (a primary or subkey fingerprint), upper-case hex.
    pub fingerprint: String,
    pub timeout: Duration,
}

impl CommandSpec {
    /// Checks the command and the fingerprint; the error says what is wrong.
    pub fn new(
        argv: Vec<String>,
        fingerprint: &str,
        timeout: Duration,
    ) -> Result<CommandSpec, String> {
        if argv.first().is_none_or(|p| p.is_empty()) {
            return Err("empty: give the program and its arguments, e.g. [\"gpg\", \"--batch\", \"--local-user\", \"{fingerprint}\", \"--detach-sign\"]".into());
        }
        for arg in &argv {
            for name in placeholders(arg) {
                if !PLACEHOLDERS.iter().any(|(p, _)| *p == name) {
                    let known: Vec<String> = PLACEHOLDERS
                        .iter()
                        .map(|(p, _)| format!("{{{p}}}"))
                        .collect();
                    return Err(format!(
                        "unknown placeholder {{{name}}} in {arg:?}; known: {}",
                        known.join(", ")
                    ));
                }
            }
        }
        if timeout.is_zero() {
            return Err("the timeout must be longer than zero".into());
        }
        Ok(CommandSpec {
            argv,
            fingerprint: normalize_fingerprint(fingerprint)?,
            timeout,
        })
    }

    /// Whether the program is told the lifetime, so its signatures can expire.
    pub fn sets_expiry(&self) -> bool {
        self.argv
            .iter()
            .flat_map(|a| placeholders(a))
            .any(|p| EXPIRY_PLACEHOLDERS.contains(&p))
    }

    /// "the command `gpg --batch …`", for messages, quoted as a shell would need.
    pub fn describe(&self) -> String {
        let words: Vec<String> = self.argv.iter().map(|a| shell_quote(a)).collect();
        format!("the command `{}`", words.join(" "))
    }

    /// The arguments for one signature.
    fn args(&self, opts: SignOptions) -> Result<Vec<String>, SigningError> {
        let lifetime = match opts.lifetime {
            None => 0,
            Some(l) => u32::try_from(l.as_secs())
                .ok()
                .filter(|s| *s > 0)
                .ok_or(SigningError::Lifetime(l))?,
        };
        let expires = if lifetime == 0 {
            "0".to_string()
        } else {
            format!("seconds={lifetime}")
        };
        Ok(self
            .argv
            .iter()
            .map(|a| {
                a.replace("{fingerprint}", &self.fingerprint)
                    .replace("{expires}", &expires)
                    .replace("{lifetime}", &lifetime.to_string())
            })
            .collect())
    }
}

/// `arg` as a POSIX shell reads it back: bare when that is safe.
fn shell_quote(arg: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_=+.,/:@%{}!".contains(c);
    if !arg.is_empty() && arg.chars().all(plain) {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// The `{name}` placeholders in an argument.
fn placeholders(arg: &str) -> impl Iterator<Item = &str> {
    arg.split('{').skip(1).filter_map(|rest| {
        let (name, _) = rest.split_once('}')?;
        (!name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
            .then_some(name)
    })
}

/// Runs the configured command for every signature.
#[derive(Debug)]
pub struct CommandSigner {
    spec: CommandSpec,
    /// The primary key of `spec.fingerprint`, as the keyring knows it.
    primary: String,
}

impl CommandSigner {
    /// `keyring` tells the primary key of a subkey's fingerprint.
    pub fn new(spec: CommandSpec, keyring: &Keyring) -> CommandSigner {
        let primary = keyring
            .primary_of(&spec.fingerprint)
            .unwrap_or_else(|| spec.fingerprint.clone());
        CommandSigner { spec, primary }
    }
}

impl Signer for CommandSigner {
    fn fingerprint(&self) -> String {
        self.primary.clone()
    }

    fn describe(&self) -> String {
        self.spec.describe()
    }

    fn sign(&self, data: &[u8], opts: SignOptions) -> Result<Vec<u8>, SigningError> {
        let args = self.spec.args(opts)?;
        let failed = |problem: String, stderr: &[u8]| SigningError::Command {
            command: self.describe(),
            problem,
            stderr: stderr_note(stderr),
        };
        let (status, stdout, stderr) = run(&args, data, self.spec.timeout)
            .map_err(|(problem, stderr)| failed(problem, &stderr))?;
        if !status.success() {
            use std::os::unix::process::ExitStatusExt;
            let how = match (status.code(), status.signal()) {
                (Some(code), _) => format!("it failed (exit status {code})"),
                (None, Some(signal)) => format!("it was killed by signal {signal}"),
                _ => format!("it failed ({status})"),
            };
            return Err(failed(how, &stderr));
        }
        binary_signature(&stdout).map_err(|problem| failed(problem, &stderr))
    }
}

/// What a finished command left: exit status, stdout, stderr.
type Finished = (std::process::ExitStatus, Vec<u8>, Vec<u8>);

/// Runs `args` with `data` on stdin in a process group of its own, killed
/// whole when it is not done (exited, stdout and stderr closed) by
/// `timeout`. The error says what went wrong, with what it wrote to stderr.
fn run(args: &[String], data: &[u8], timeout: Duration) -> Result<Finished, (String, Vec<u8>)> {
    let deadline = Instant::now() + timeout;
    let mut child = Command::new(&args[0])
        .args(&args[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| (format!("it cannot be started: {e}"), vec![]))?;
    let group = child.id() as libc::pid_t;
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let data = data.to_vec();
    // A program that never reads its input only fails the signature check.
    std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    enum Event {
        Exit(std::io::Result<std::process::ExitStatus>),
        Stdout(Vec<u8>),
        StderrClosed,
    }
    let (tx, rx) = mpsc::channel();
    let errors = Arc::new(Mutex::new(Vec::new()));
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = (&mut stdout).take(MAX_OUTPUT + 1).read_to_end(&mut out);
            let _ = tx.send(Event::Stdout(out));
        });
    }
    {
        let (tx, errors) = (tx.clone(), errors.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stderr.read(&mut buf) {
                errors
                    .lock()
                    .expect("no panics")
                    .extend_from_slice(&buf[..n]);
            }
            let _ = tx.send(Event::StderrClosed);
        });
    }
    std::thread::spawn(move || {
        let _ = tx.send(Event::Exit(child.wait()));
    });
    let (mut status, mut out, mut err_closed) = (None, None, false);
    while status.is_none() || out.is_none() || !err_closed {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Event::Exit(s)) => {
                status = Some(s.map_err(|e| (format!("waiting for it failed: {e}"), vec![]))?)
            }
            Ok(Event::Stdout(o)) => out = Some(o),
            Ok(Event::StderrClosed) => err_closed = true,
            Err(_) => {
                // SAFETY: kill(2) on the process group made for this child.
                unsafe { libc::kill(-group, libc::SIGKILL) };
                let said = errors.lock().expect("no panics").clone();
                return Err((
                    format!(
                        "it did not finish within {} and was killed (`command-timeout` sets the limit)",
                        humantime::format_duration(timeout)
                    ),
                    said,
                ));
            }
        }
    }
    let said = errors.lock().expect("no panics").clone();
    Ok((
        status.expect("loop ends with it"),
        out.expect("loop ends with it"),
        said,
    ))
}

/// The one detached signature in what a signer printed (binary or
/// armored), as binary: what `SHA256SUMS.gpg` must hold.
pub fn binary_signature(output: &[u8]) -> Result<Vec<u8>, String> {
    if output.iter().all(u8::is_ascii_whitespace) {
        return Err("it printed no signature on stdout".into());
    }
    if output.len() as u64 > MAX_OUTPUT {
        return Err("it printed more than 1 MiB, which is no signature".into());
    }
    let garbage = |e: String| format!("what it printed is not an OpenPGP signature ({e})");
    let (sigs, _) =
        DetachedSignature::from_reader_many(output).map_err(|e| garbage(e.to_string()))?;
    let sigs = sigs
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| garbage(e.to_string()))?;
    match sigs.as_slice() {
        [sig] => sig
            .to_bytes()
            .map_err(|e| format!("re-encoding its signature failed: {e}")),
        [] => Err(garbage("no signature packet".into())),
        more => Err(format!(
            "it printed {} signatures; devices need exactly one",
            more.len()
        )),
    }
}

/// The end of what a program wrote to stderr, to show with its failure.
fn stderr_note(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.trim_end().lines().collect();
    if lines.is_empty() {
        return String::new();
    }
    let tail = &lines[lines.len().saturating_sub(20)..];
    format!("; it said:\n    {}", tail.join("\n    "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(argv: &[&str]) -> Result<CommandSpec, String> {
        CommandSpec::new(
            argv.iter().map(|s| s.to_string()).collect(),
            "0123 4567 89ab cdef 0123 4567 89ab cdef 0123 4567",
            DEFAULT_TIMEOUT,
        )
    }

    #[test]
    fn placeholders_are_replaced_and_unknown_ones_refused() {
        let s = spec(&[
            "gpg",
            "--local-user",
            "{fingerprint}!",
            "--default-sig-expire={expires}",
            "{lifetime}",
            "{\"json\": 1}",
        ])
        .unwrap();
        assert!(s.sets_expiry());
        let opts = SignOptions {
            lifetime: Some(Duration::from_secs(7200)),
            ..Default::default()
        };
        assert_eq!(
            s.args(opts).unwrap()[2..],
            [
                "0123456789ABCDEF0123456789ABCDEF01234567!",
                "--default-sig-expire=seconds=7200",
                "7200",
                "{\"json\": 1}"
            ]
        );
        let none = s.args(SignOptions::default()).unwrap();
        assert_eq!(none[3..5], ["--default-sig-expire=0", "0"]);

        assert!(!spec(&["sqop", "sign", "k.asc"]).unwrap().sets_expiry());
        assert_eq!(
            spec(&["sh", "-c", "cat; echo 'x'", "{expires}"])
                .unwrap()
                .describe(),
            r"the command `sh -c 'cat; echo '\''x'\''' {expires}`"
        );
        let e = spec(&["gpg", "{expiry}"]).unwrap_err();
        assert!(e.contains("{expiry}") && e.contains("{expires}"), "{e}");
        assert!(spec(&[]).unwrap_err().contains("empty"));
        let e = CommandSpec::new(vec!["gpg".into()], "ABCD", DEFAULT_TIMEOUT).unwrap_err();
        assert!(e.contains("40 hex"), "{e}");
    }

    #[test]
    fn output_must_be_exactly_one_signature() {
        for (out, needle) in [
            (&b"  \n"[..], "no signature"),
            (b"garbage\n", "not an OpenPGP signature"),
        ] {
            let e = binary_signature(out).unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn a_failing_command_shows_its_stderr_and_a_hung_one_is_killed() {
        let sh = |script: &str, timeout| {
            run(&["sh".into(), "-c".into(), script.into()], b"data", timeout)
        };
        let (status, out, err) = sh("cat; echo oops >&2; exit 3", DEFAULT_TIMEOUT).unwrap();
        assert_eq!(status.code(), Some(3));
        assert_eq!(out, b"data");
        assert_eq!(stderr_note(&err), "; it said:\n    oops");
        // The grandchild holding stdout is killed with its group.
        let (problem, err) =
            sh("echo waiting >&2; sleep 600 & wait", Duration::from_secs(1)).unwrap_err();
        assert!(problem.contains("did not finish within 1s"), "{problem}");
        assert_eq!(err, b"waiting\n");
    }
}
