//! Reading a payload just far enough for preflight: from a build output
//! file (staging) or from a store (promote, whose payloads are already
//! published and never pass through this machine otherwise).
//!
//! A compressed payload is decoded from its start only until the
//! [`Inspector`] has what it needs (the first 128 KiB, and a UKI's `.osrel`
//! wherever it lies); its size is then what the headers declare, unless
//! decoding reached the end. An uncompressed one is read only as far as
//! the inspector asks.

use std::cell::Cell;
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::rc::Rc;

use crate::compress::{self, Detected};
use crate::image::{Content, Evidence, Inspector};

/// What a payload holds and the evidence for it, or why it could not be
/// looked into.
pub type Inspected = Result<(Content, Evidence), String>;

/// What a payload file holds, and how many of its bytes that took. An
/// uncompressed one is read where the inspector asks (positioned reads).
/// `Err` inside says why it could not look: bzip2 or lz4 (no decoder
/// here), or data that does not decompress.
pub fn inspect_file(path: &Path) -> std::io::Result<(Inspected, u64)> {
    use std::os::unix::fs::FileExt;
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut magic = [0u8; compress::MAGIC_LEN];
    let n = file.read_at(&mut magic, 0)?;
    let Some(detected) = compress::detect(&magic[..n]) else {
        let mut inspector = Inspector::new();
        let mut read = 0u64;
        while let Some(r) = inspector.missing().first().cloned() {
            let end = r.end.min(len);
            if r.start >= end {
                break;
            }
            let mut buf = vec![0u8; (end - r.start) as usize];
            file.read_exact_at(&mut buf, r.start)?;
            read += buf.len() as u64;
            inspector.feed_at(r.start, &buf);
            if end < r.end {
                break;
            }
        }
        return Ok((Ok(finish(inspector, Some(len))), read));
    };
    let read = Rc::new(Cell::new(0));
    let counted = Counted {
        inner: std::io::BufReader::with_capacity(64 << 10, file),
        read: read.clone(),
    };
    let found = decode(detected, counted)?;
    Ok((found, read.get()))
}

/// What a stored payload of `size` bytes holds, read through `download`
/// (which streams it into the writer it is given, as
/// [`crate::store::Store::download`] does) and cut off as soon as the
/// inspector has what it needs. Gives the inspection and the bytes the
/// download delivered, or the download's error when it failed before
/// that (one cut off on purpose did not fail). The outer error is this
/// machine's: no pipe or thread.
pub fn inspect_download<E>(
    size: u64,
    download: impl FnOnce(&mut dyn Write) -> Result<(), E>,
) -> std::io::Result<Result<(Inspected, u64), E>> {
    let (reader, writer) = std::io::pipe()?;
    // The reader closes its end when it has seen enough: the download's
    // next write fails (EPIPE; Rust ignores SIGPIPE) and it stops.
    let looking = std::thread::Builder::new()
        .name("inspect".into())
        .spawn(move || inspect_stream(size, reader))?;
    let mut sent = CountingWriter {
        inner: writer,
        sent: 0,
        cut: false,
    };
    let fetched = download(&mut sent);
    let (delivered, cut) = (sent.sent, sent.cut);
    drop(sent);
    let looked = looking
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the inspecting thread panicked")))?;
    Ok(match fetched {
        Ok(()) => Ok((looked, delivered)),
        // The inspector stopped reading first (seen enough, or data that
        // does not decode): its finding stands.
        Err(_) if cut => Ok((looked, delivered)),
        Err(e) => Err(e),
    })
}

/// Inspects a stream of a payload of `size` stored bytes, stopping when
/// the inspector is done.
fn inspect_stream(size: u64, mut input: impl Read) -> std::io::Result<Inspected> {
    let mut magic = Vec::with_capacity(compress::MAGIC_LEN);
    (&mut input)
        .take(compress::MAGIC_LEN as u64)
        .read_to_end(&mut magic)?;
    let detected = compress::detect(&magic);
    let input = std::io::Cursor::new(magic).chain(input);
    match detected {
        Some(detected) => decode(detected, input),
        None => {
            let mut inspector = Inspector::new();
            feed(&mut inspector, input)?;
            Ok(Ok(finish(inspector, Some(size))))
        }
    }
}

/// Decodes `input` (compressed as `detected`) until the inspector is done.
fn decode(detected: Detected, input: impl Read) -> std::io::Result<Inspected> {
    let decoder: Box<dyn Read + '_> = match detected.codec() {
        Some(compress::Codec::Xz) => Box::new(liblzma::read::XzDecoder::new_multi_decoder(input)),
        Some(compress::Codec::Gzip) => Box::new(flate2::read::GzDecoder::new(input)),
        Some(compress::Codec::Zstd) => Box::new(zstd::stream::read::Decoder::new(input)?),
        Some(compress::Codec::None) | None => {
            return Ok(Err(format!("{detected} data is not decoded here")))
        }
    };
    let mut inspector = Inspector::new();
    match feed(&mut inspector, decoder) {
        Ok(end) => Ok(Ok(finish(inspector, end))),
        Err(e) => Ok(Err(format!(
            "its {detected} data does not decompress ({e}); devices would fail to install it"
        ))),
    }
}

/// Feeds `input` from its start until the inspector is done. Returns the
/// stream's length if it ended first, `None` if the inspector was done.
fn feed(inspector: &mut Inspector, mut input: impl Read) -> std::io::Result<Option<u64>> {
    let mut buf = vec![0u8; 64 << 10];
    let mut at = 0u64;
    while !inspector.done() {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(Some(at)),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        inspector.feed_at(at, &buf[..n]);
        at += n as u64;
    }
    Ok(None)
}

fn finish(inspector: Inspector, exact_size: Option<u64>) -> (Content, Evidence) {
    let evidence = inspector.evidence(exact_size);
    (inspector.finish(exact_size), evidence)
}

/// Counts what a decoder pulls from the file.
struct Counted<R> {
    inner: R,
    read: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

/// Counts what a download delivered, and notices the inspector closing
/// its end (the download then fails, but only because we stopped it).
struct CountingWriter<W> {
    inner: W,
    sent: u64,
    cut: bool,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf).inspect_err(|e| {
            self.cut |= e.kind() == std::io::ErrorKind::BrokenPipe;
        })?;
        self.sent += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Incompressible bytes, so that the compressed payload is large too.
    fn noise(len: usize) -> Vec<u8> {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    fn xz(data: &[u8]) -> Vec<u8> {
        let mut e = liblzma::write::XzEncoder::new(Vec::new(), 0);
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// Streams `data` into the writer 64 KiB at a time, as a store does.
    fn serve(data: &[u8]) -> impl FnOnce(&mut dyn Write) -> Result<(), std::io::Error> + '_ {
        move |to| {
            for chunk in data.chunks(64 << 10) {
                to.write_all(chunk)?;
            }
            Ok(())
        }
    }

    #[test]
    fn a_download_is_cut_off_once_the_inspector_has_seen_enough() {
        for data in [noise(16 << 20), xz(&noise(16 << 20))] {
            let (found, delivered) = inspect_download(data.len() as u64, serve(&data))
                .unwrap()
                .unwrap();
            assert!(delivered < data.len() as u64 / 4, "{delivered} delivered");
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("payload");
            std::fs::write(&path, &data).unwrap();
            let (whole, _) = inspect_file(&path).unwrap();
            assert_eq!(found, whole, "the stream saw what the file shows");
        }
    }

    #[test]
    fn a_short_payload_is_seen_whole_with_its_exact_size() {
        let data = xz(b"hello");
        let (found, delivered) = inspect_download(data.len() as u64, serve(&data))
            .unwrap()
            .unwrap();
        assert_eq!(delivered, data.len() as u64);
        let (content, _) = found.unwrap();
        assert_eq!(content.exact_size, Some(5));
    }

    #[test]
    fn a_download_that_fails_early_is_the_error_and_bad_data_is_named() {
        let failed = inspect_download::<&str>(1 << 20, |to| {
            to.write_all(&[0; 100]).unwrap();
            Err("connection reset")
        })
        .unwrap();
        assert_eq!(failed.unwrap_err(), "connection reset");
        let mut broken = xz(&noise(1 << 20));
        broken.truncate(4096);
        let (found, _) = inspect_download(broken.len() as u64, serve(&broken))
            .unwrap()
            .unwrap();
        assert!(found.unwrap_err().contains("does not decompress"));
        // Noise after an xz magic: the decoder gives up long before the end
        // and the download it cut off is not an error.
        let mut fake = vec![0xfd, b'7', b'z', b'X', b'Z', 0];
        fake.extend(noise(4 << 20));
        let (found, delivered) = inspect_download(fake.len() as u64, serve(&fake))
            .unwrap()
            .unwrap();
        assert!(found.unwrap_err().contains("does not decompress"));
        assert!(delivered < fake.len() as u64, "{delivered} delivered");
    }
}
