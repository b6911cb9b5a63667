//! What a payload holds, told from its decompressed bytes: a PE image
//! (UKI), a GPT disk image, a file system, or something else.
//!
//! The [`Inspector`] is fed the decompressed stream as it goes past
//! (staging's compressor input, or the start of an already-compressed
//! payload decoded on the fly). It keeps the first [`HEAD_LEN`] bytes and,
//! once the headers there say where they are, the few ranges further on
//! that the checks need (a UKI's `.osrel`, a GPT's entry array), so no
//! payload is read a second time and memory stays small.

pub mod fs;
pub mod gpt;
pub mod osrel;
pub mod pe;

use std::ops::Range;

use crate::compress::{self, Detected};
use fs::Fs;
use gpt::{Header, Partition};
use osrel::OsRelease;
use pe::Pe;

/// Bytes kept from the start: PE headers, a GPT with 4 KiB sectors and its
/// usual entry array, every superblock [`fs::detect`] looks at.
pub const HEAD_LEN: usize = 128 << 10;

/// Largest `.osrel` read; an os-release file is a few hundred bytes.
pub const MAX_OSREL: u64 = 64 << 10;

/// What the payload turned out to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A PE image; `osrel` is `None` without an `.osrel` section, else its
    /// parsed text or why it could not be read.
    Pe {
        pe: Pe,
        osrel: Option<Result<OsRelease, String>>,
    },
    /// Starts like a PE image but its headers are broken.
    BadPe(String),
    Gpt {
        header: Header,
        partitions: Vec<Partition>,
    },
    /// Has a GPT signature but the table is damaged.
    BadGpt(String),
    FileSystem(Fs),
    /// Still compressed after the device's decompression: compressed twice.
    Compressed(Detected),
    Unknown,
}

/// A payload's content as the device will write it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Content {
    pub kind: Kind,
    /// The exact decompressed size, when every byte went past the
    /// inspector or the payload is stored uncompressed.
    pub exact_size: Option<u64>,
}

impl Content {
    /// What the headers say the content occupies (PE extent, GPT disk,
    /// file system size).
    pub fn declared_size(&self) -> Option<u64> {
        match &self.kind {
            Kind::Pe { pe, .. } => Some(pe.extent),
            Kind::Gpt { header, .. } => Some(header.disk_size()),
            Kind::FileSystem(fs) => fs.size,
            _ => None,
        }
    }

    /// The size the device writes: exact when known, else declared.
    pub fn size(&self) -> Option<u64> {
        self.exact_size.or_else(|| self.declared_size())
    }

    /// One phrase for reports: "AMD64 (x86-64) UKI, IMAGE_VERSION=18".
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Pe { pe, osrel } => {
                let what = if pe.is_uki() { "UKI" } else { "PE image" };
                let mut s = format!("{} {what}", pe::machine_name(pe.machine));
                match osrel {
                    Some(Ok(o)) => {
                        for key in ["IMAGE_ID", "IMAGE_VERSION"] {
                            if let Some(v) = o.get(key) {
                                s += &format!(", {key}={v}");
                            }
                        }
                    }
                    Some(Err(e)) => s += &format!(", unreadable .osrel ({e})"),
                    None => {}
                }
                s
            }
            Kind::BadPe(e) => format!("damaged PE image ({e})"),
            Kind::Gpt { partitions, .. } => {
                let types: Vec<String> = partitions
                    .iter()
                    .map(|p| {
                        gpt::dps_type(&p.type_guid)
                            .map_or_else(|| p.type_guid.to_string(), |t| t.name.to_string())
                    })
                    .collect();
                format!("GPT disk image ({})", types.join(", "))
            }
            Kind::BadGpt(e) => format!("damaged GPT disk image ({e})"),
            Kind::FileSystem(fs) => format!("{} file system", fs.kind),
            Kind::Compressed(d) => format!("{d}-compressed data"),
            Kind::Unknown => "data of no recognised format".into(),
        }
    }
}

/// The bytes an [`Inspector`] kept (offset, bytes) and the size it was
/// finished with: all [`analyze`] depends on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Evidence {
    pub chunks: Vec<(u64, Vec<u8>)>,
    pub exact_size: Option<u64>,
}

impl Evidence {
    /// The content the inspection that kept this evidence found.
    pub fn replay(&self) -> Content {
        let mut i = Inspector::new();
        for (offset, bytes) in &self.chunks {
            i.feed_at(*offset, bytes);
        }
        i.finish(self.exact_size)
    }
}

/// A range of the stream to keep, filled front to back.
#[derive(Debug)]
struct Capture {
    start: u64,
    data: Vec<u8>,
    want: usize,
}

impl Capture {
    fn complete(&self) -> bool {
        self.data.len() == self.want
    }

    /// Takes the part of `chunk` (at `offset`) that continues the capture.
    fn offer(&mut self, offset: u64, chunk: &[u8]) {
        let next = self.start + self.data.len() as u64;
        let end = offset + chunk.len() as u64;
        if self.complete() || next < offset || next >= end {
            return;
        }
        let from = (next - offset) as usize;
        let take = (self.want - self.data.len()).min(chunk.len() - from);
        self.data.extend_from_slice(&chunk[from..from + take]);
    }
}

/// Watches a decompressed stream; see the module documentation.
#[derive(Debug)]
pub struct Inspector {
    head: Capture,
    ranges: Vec<Capture>,
    planned: bool,
}

impl Default for Inspector {
    fn default() -> Self {
        Self::new()
    }
}

impl Inspector {
    pub fn new() -> Inspector {
        Inspector {
            head: Capture {
                start: 0,
                data: Vec::with_capacity(HEAD_LEN),
                want: HEAD_LEN,
            },
            ranges: Vec::new(),
            planned: false,
        }
    }

    /// Offers the stream's bytes at `offset`. Bytes arrive in order per
    /// range; anything not needed is ignored.
    pub fn feed_at(&mut self, offset: u64, chunk: &[u8]) {
        if !self.planned {
            self.head.offer(offset, chunk);
            if self.head.complete() {
                self.plan();
            }
        }
        for r in &mut self.ranges {
            r.offer(offset, chunk);
        }
    }

    /// Whether everything the checks need has been seen.
    pub fn done(&self) -> bool {
        self.planned && self.ranges.iter().all(Capture::complete)
    }

    /// What is still missing, for a reader that can seek.
    pub fn missing(&self) -> Vec<Range<u64>> {
        let mut out = Vec::new();
        for c in std::iter::once(&self.head).chain(&self.ranges) {
            if !c.complete() {
                let next = c.start + c.data.len() as u64;
                out.push(next..c.start + c.want as u64);
            }
        }
        out
    }

    /// The head is complete: learn from it which ranges to keep.
    fn plan(&mut self) {
        self.planned = true;
        if let Some(r) = wanted(&self.head.data) {
            let mut c = Capture {
                start: r.start,
                data: Vec::new(),
                want: (r.end - r.start) as usize,
            };
            c.offer(0, &self.head.data);
            self.ranges.push(c);
        }
    }

    /// What was kept so far: replaying it into a new inspector gives the
    /// same [`Content`] without reading the payload again.
    pub fn evidence(&self, exact_size: Option<u64>) -> Evidence {
        let chunks = std::iter::once(&self.head)
            .chain(&self.ranges)
            .map(|c| (c.start, c.data.clone()))
            .collect();
        Evidence { chunks, exact_size }
    }

    /// What the payload is. `exact_size` when the whole stream went past
    /// (or the file is stored as is).
    pub fn finish(mut self, exact_size: Option<u64>) -> Content {
        if !self.planned {
            // Shorter than the head: the head is all there is.
            self.plan();
        }
        Content {
            kind: analyze(&self.head.data, &self.ranges),
            exact_size,
        }
    }
}

/// The range past the head that `head`'s headers point at, if any.
fn wanted(head: &[u8]) -> Option<Range<u64>> {
    if let Ok(Some(pe)) = pe::parse(head) {
        return pe
            .section(".osrel")
            .filter(|s| s.size > 0)
            .map(|s| s.offset..s.offset + s.size.min(MAX_OSREL));
    }
    gpt::header(head).ok().flatten().map(|h| h.entries_range())
}

fn captured<'a>(ranges: &'a [Capture], r: &Range<u64>) -> Option<&'a [u8]> {
    ranges
        .iter()
        .find(|c| c.start == r.start && c.want as u64 == r.end - r.start)
        .map(|c| c.data.as_slice())
}

fn analyze(head: &[u8], ranges: &[Capture]) -> Kind {
    match pe::parse(head) {
        Err(e) => return Kind::BadPe(e.0),
        Ok(Some(pe)) => {
            let osrel = pe.section(".osrel").map(|s| {
                let r = s.offset..s.offset + s.size.min(MAX_OSREL);
                match captured(ranges, &r) {
                    Some(b) if b.len() as u64 == r.end - r.start => {
                        OsRelease::parse(b).map_err(|e| e.to_string())
                    }
                    _ => Err("the section lies beyond the end of the file".into()),
                }
            });
            return Kind::Pe { pe, osrel };
        }
        Ok(None) => {}
    }
    match gpt::header(head) {
        Err(e) => return Kind::BadGpt(e.0),
        Ok(Some(header)) => {
            let r = header.entries_range();
            let array = captured(ranges, &r).unwrap_or_default();
            return match gpt::partitions(&header, array) {
                Ok(partitions) => Kind::Gpt { header, partitions },
                Err(e) => Kind::BadGpt(e.0),
            };
        }
        Ok(None) => {}
    }
    if let Some(fs) = fs::detect(head) {
        return Kind::FileSystem(fs);
    }
    match compress::detect(head) {
        Some(d) => Kind::Compressed(d),
        None => Kind::Unknown,
    }
}

/// Inspects a whole in-memory payload (tests, `inspect` of small files).
pub fn inspect_bytes(data: &[u8]) -> Content {
    let mut i = Inspector::new();
    i.feed_at(0, data);
    i.finish(Some(data.len() as u64))
}

#[cfg(test)]
mod tests;
