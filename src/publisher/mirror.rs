//! `mirror`: a channel published elsewhere, fetched as devices fetch it,
//! verified (every signature with the keyring, every payload's hash), and
//! served here through the commit protocol with its manifests and
//! signatures byte for byte, so devices keep trusting the original key.
//! The history here records each mirroring, signed by this publisher.

use std::collections::BTreeMap;

use super::{PublishError, Publisher, Report};
use crate::arch::Arch;
use crate::channel::plan::{ArchPlan, Plan};
use crate::channel::refusal::Refusal;
use crate::hash;
use crate::http::Http;
use crate::ledger::{Action, Origin};
use crate::manifest::{self, Manifest, MANIFEST, SIGNATURE};
use crate::payload::{FileStamp, PayloadDigest};
use crate::signing::Signer;
use crate::stage::Payload;

/// One arch directory of the source, verified.
struct Served {
    bytes: Vec<u8>,
    signature: Vec<u8>,
    manifest: Manifest,
}

fn refused(message: String) -> PublishError {
    Refusal::Other(message).into()
}

impl Publisher<'_> {
    /// Copies the channel at `url` into this one. A rerun fetches only
    /// payloads this channel does not hold yet and drops what the source
    /// dropped (through retention's cleanup of what no manifest names).
    pub fn mirror(
        &self,
        key: &dyn Signer,
        http: &Http,
        url: &str,
        dry_run: bool,
    ) -> Result<Report, PublishError> {
        let base = url.trim_end_matches('/');
        let source = self.fetch_source(http, base)?;
        let _lock = if dry_run {
            None
        } else {
            Some(self.store.lock(self.events)?)
        };
        let (channel, finished) = if dry_run {
            let ch = self.read(false)?;
            super::refuse_blocking(&ch)?;
            (ch, None)
        } else {
            self.read_for_write(key)?
        };
        let mut plan = Plan::new(Action::Mirror, vec![], None);
        plan.source = Some(Origin {
            channel: base.to_string(),
            store: base.to_string(),
            seq: 0,
            hash: String::new(),
        });
        let staging = tempfile::tempdir().map_err(|source| PublishError::Io {
            what: "creating a staging directory (set TMPDIR to a roomy filesystem)".into(),
            source,
        })?;
        for (arch, served) in &source {
            let view = channel.arches.get(arch);
            let mut ap = ArchPlan::of(*arch, &view.map(|v| v.manifest.clone()).unwrap_or_default());
            ap.after = served.manifest.clone();
            let sha = hash::to_hex(
                &sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(
                    &served.bytes,
                ))
                .into(),
            );
            ap.resign = view.and_then(|v| v.manifest_sha256.as_deref()) != Some(sha.as_str());
            ap.verbatim = Some((served.bytes.clone(), served.signature.clone()));
            let names = channel.history.names(*arch);
            let stored = view.map(|v| v.stored.clone()).unwrap_or_default();
            for (name, digest) in &served.manifest.entries {
                let hex = hash::to_hex(digest);
                if let Some(rec) = names.get(name) {
                    if rec.sha256 != hex {
                        return Err(Refusal::NameReused {
                            arch: *arch,
                            name: name.clone(),
                            seq: rec.seq,
                            recorded: rec.sha256.clone(),
                            found: hex,
                        }
                        .into());
                    }
                }
                if let Some(info) = stored.get(name) {
                    ap.sizes.insert(name.clone(), info.size);
                    ap.reused.push(name.clone());
                    continue;
                }
                if dry_run {
                    continue;
                }
                let p = self.fetch_payload(http, base, *arch, name, *digest, staging.path())?;
                ap.sizes.insert(name.clone(), p.size);
                ap.uploads.push(p);
            }
            plan.arches.push(ap);
        }
        let mut report = Report::new(&plan, self.store.describe(), dry_run);
        report.finished_interrupted = finished;
        if dry_run || !plan.changes() {
            if !dry_run {
                if let Some(state) = channel.head_state() {
                    self.cleanup(&channel.history, state, &channel)?;
                }
            }
            return Ok(report);
        }
        let seq = self.commit(key, &channel, &mut plan, None)?;
        let mut report = Report::new(&plan, self.store.describe(), false);
        report.history_seq = Some(seq);
        report.finished_interrupted = finished;
        Ok(report)
    }

    /// Every arch directory the source serves, each manifest verified with
    /// the keyring as devices do; anything that does not verify refuses
    /// the whole mirroring, naming the file.
    fn fetch_source(
        &self,
        http: &Http,
        base: &str,
    ) -> Result<BTreeMap<Arch, Served>, PublishError> {
        let mut out = BTreeMap::new();
        for arch in Arch::all() {
            let url = |name: &str| format!("{base}/{arch}/{name}");
            let sums = http
                .get(&url(MANIFEST))
                .map_err(|e| refused(e.to_string()))?;
            match sums.status {
                404 => continue,
                200 => {}
                s => {
                    return Err(refused(format!(
                        "{}: HTTP {s}; nothing mirrored",
                        url(MANIFEST)
                    )))
                }
            }
            let sig = http
                .get(&url(SIGNATURE))
                .map_err(|e| refused(e.to_string()))?;
            if sig.status != 200 {
                return Err(refused(format!(
                    "{}: HTTP {}; nothing mirrored",
                    url(SIGNATURE),
                    sig.status
                )));
            }
            self.keyring
                .verify(&sums.body, &sig.body, self.now)
                .map_err(|e| {
                    refused(format!(
                        "{}: does not verify with the keyring ({e}); nothing mirrored",
                        url(MANIFEST)
                    ))
                })?;
            let manifest = manifest::parse(&sums.body)
                .map_err(|e| refused(format!("{}: {e}; nothing mirrored", url(MANIFEST))))?;
            out.insert(
                arch,
                Served {
                    bytes: sums.body,
                    signature: sig.body,
                    manifest,
                },
            );
        }
        if out.is_empty() {
            return Err(refused(format!(
                "{base}: no arch directory with a SHA256SUMS (tried {})",
                Arch::all()
                    .map(|a| a.systemd())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(out)
    }

    /// Downloads one payload into `staging`, checking its hash against the
    /// verified manifest before it goes anywhere.
    fn fetch_payload(
        &self,
        http: &Http,
        base: &str,
        arch: Arch,
        name: &str,
        want: hash::Digest,
        staging: &std::path::Path,
    ) -> Result<Payload, PublishError> {
        let url = format!("{base}/{arch}/{name}");
        let dir = staging.join(arch.systemd());
        let io = |what: String| move |source| PublishError::Io { what, source };
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let path = dir.join(name);
        let mut file = std::io::BufWriter::new(
            std::fs::File::create(&path).map_err(io(format!("creating {}", path.display())))?,
        );
        let bar = self.events.bar(0, &format!("{arch} fetch {name}"));
        let (status, digest, size) = http
            .download(&url, &mut file, &mut |n| bar.inc(n))
            .map_err(|e| refused(e.to_string()))?;
        bar.finish();
        std::io::Write::flush(&mut file).map_err(io(format!("writing {}", path.display())))?;
        drop(file);
        if status != 200 {
            return Err(refused(format!("{url}: HTTP {status}; nothing mirrored")));
        }
        if digest != want {
            return Err(refused(format!(
                "{url}: {size} bytes that hash to {}, the source's manifest says {}; nothing mirrored",
                hash::to_hex(&digest),
                hash::to_hex(&want)
            )));
        }
        self.events
            .detail(format!("{arch}: fetched {name} ({size} bytes)"));
        Ok(Payload {
            name: name.to_string(),
            stamp: FileStamp::of(&path).ok(),
            file: path,
            sha256: PayloadDigest::known(digest),
            size,
            compressed_from: None,
            // The source's publisher ran the release checks.
            content: None,
            evidence: None,
            read: 0,
            raw: None,
        })
    }
}
