//! Streaming compression that hashes the compressed bytes while writing them.
//!
//! systemd-pull hashes the payload as served (compressed) and then decompresses
//! it by *magic bytes*, never by file suffix. So the SHA256SUMS digest must be
//! over our output, and the output must be a plain stream the device's
//! decoders accept: single-member gzip, normal `.xz` (multi-block is fine),
//! zstd frames (systemd 258+ only).

use std::fmt;
use std::io::{self, Read, Write};
use std::ops::RangeInclusive;
use std::str::FromStr;

use crate::hash::{AlignedBuf, Digest, HashingWriter};

/// Output compression for a payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// Every systemd version decompresses it; slow to compress.
    Xz,
    /// Every systemd version decompresses it; fast, larger output.
    Gzip,
    /// Only systemd 258+ decompresses it: 254–257 would install the compressed
    /// bytes as the image (and the hash check still passes).
    Zstd,
    /// Publish the bytes as they are.
    None,
}

impl Codec {
    pub const ALL: [Codec; 4] = [Codec::Xz, Codec::Gzip, Codec::Zstd, Codec::None];

    /// File name suffix without the dot; `""` for [`Codec::None`].
    pub fn extension(self) -> &'static str {
        match self {
            Codec::Xz => "xz",
            Codec::Gzip => "gz",
            Codec::Zstd => "zst",
            Codec::None => "",
        }
    }

    /// The name accepted by [`FromStr`] (and used on the command line).
    pub fn name(self) -> &'static str {
        match self {
            Codec::Xz => "xz",
            Codec::Gzip => "gzip",
            Codec::Zstd => "zstd",
            Codec::None => "none",
        }
    }

    /// Same defaults as the `xz`, `gzip` and `zstd` command-line tools.
    pub fn default_level(self) -> u32 {
        match self {
            Codec::Xz | Codec::Gzip => 6,
            Codec::Zstd => 3,
            Codec::None => 0,
        }
    }

    /// Accepted levels (zstd's 20–22 "ultra" levels are left out: huge windows
    /// need more memory on the device to decompress).
    pub fn levels(self) -> RangeInclusive<u32> {
        match self {
            Codec::Xz => 0..=9,
            Codec::Gzip => 1..=9,
            Codec::Zstd => 1..=19,
            Codec::None => 0..=0,
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown `--compression` value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown compression {0:?}: choose one of xz, gzip, zstd, none")]
pub struct ParseCodecError(pub String);

impl FromStr for Codec {
    type Err = ParseCodecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Codec::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| ParseCodecError(s.to_owned()))
    }
}

/// A compression format recognised by its magic bytes, the way systemd-pull
/// decides whether (and how) to decompress a download.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detected {
    /// `FD 37 7A 58 5A 00`: all versions.
    Xz,
    /// `1F 8B`: all versions.
    Gzip,
    /// `28 B5 2F FD`: systemd 258+.
    Zstd,
    /// `42 5A 68` ("BZh"): only if the device's systemd was built with bzip2.
    Bzip2,
    /// `04 22 4D 18`: systemd 262 only (not in NEWS; do not rely on it).
    Lz4,
}

impl Detected {
    /// The codec that produces this format, if we can produce it.
    pub fn codec(self) -> Option<Codec> {
        match self {
            Detected::Xz => Some(Codec::Xz),
            Detected::Gzip => Some(Codec::Gzip),
            Detected::Zstd => Some(Codec::Zstd),
            Detected::Bzip2 | Detected::Lz4 => None,
        }
    }
}

impl fmt::Display for Detected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Detected::Xz => "xz",
            Detected::Gzip => "gzip",
            Detected::Zstd => "zstd",
            Detected::Bzip2 => "bzip2",
            Detected::Lz4 => "lz4",
        })
    }
}

/// Bytes [`detect`] needs to decide (systemd waits for as many).
pub const MAGIC_LEN: usize = 6;

/// systemd 254–260 fail to download a body shorter than this ("Premature
/// connection termination") while they wait for compression magic; every
/// compressed output is longer, an uncompressed payload may not be.
pub const MIN_PAYLOAD_SIZE: u64 = 6;

/// Recognises already-compressed data by its magic bytes. A payload that
/// starts with one of these is decompressed by the device whatever its name,
/// so it cannot be shipped verbatim and must not be compressed a second time.
pub fn detect(head: &[u8]) -> Option<Detected> {
    const TABLE: [(&[u8], Detected); 5] = [
        (&[0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00], Detected::Xz),
        (&[0x1F, 0x8B], Detected::Gzip),
        (&[0x28, 0xB5, 0x2F, 0xFD], Detected::Zstd),
        (&[0x42, 0x5A, 0x68], Detected::Bzip2),
        (&[0x04, 0x22, 0x4D, 0x18], Detected::Lz4),
    ];
    TABLE
        .iter()
        .find(|(magic, _)| head.starts_with(magic))
        .map(|&(_, d)| d)
}

/// How to compress.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub codec: Codec,
    /// xz 0–9 (default 6), gzip 1–9 (default 6), zstd 1–19 (default 3); ignored for none.
    pub level: u32,
    /// Worker threads for xz and zstd; 0 = as many as the cores and (xz)
    /// `memory` allow. gzip is single-threaded because the device's zlib
    /// reads only the first member of a multi-member file.
    pub threads: u32,
    /// What the xz encoder may use (its own accounting, liblzma's
    /// `lzma_stream_encoder_mt_memusage`) when it picks the thread count.
    pub memory: u64,
}

/// The compressor's memory budget unless `[transfers] memory` says otherwise.
pub const DEFAULT_MEMORY: u64 = 200 << 20;

/// What a release needs besides the encoder: read and write buffers,
/// hashing, the async runtime (about 22 MiB measured on uploads).
const RESERVE: u64 = 32 << 20;

/// The most xz threads (up to `cores`) whose encoder fits `memory`, or
/// `None` when not even one does. Always the multi-threaded encoder: its
/// output depends on the block size, not the thread count, so a release
/// compresses to the same bytes on any machine.
pub fn xz_threads(level: u32, cores: u32, memory: u64) -> Option<u32> {
    let budget = memory.saturating_sub(RESERVE);
    (1..=cores.max(1))
        .rev()
        .find(|&t| xz_memusage(level, t) - RESERVE <= budget)
}

/// What the xz encoder of `level` with `threads` needs, for messages.
pub fn xz_memusage(level: u32, threads: u32) -> u64 {
    let mut b = liblzma::stream::MtStreamBuilder::new();
    b.preset(level).threads(threads.max(1));
    b.memusage() + RESERVE
}

impl Settings {
    /// The codec's default level, all cores.
    pub fn new(codec: Codec) -> Settings {
        Settings {
            codec,
            level: codec.default_level(),
            threads: 0,
            memory: DEFAULT_MEMORY,
        }
    }

    /// `threads`, with 0 resolved to the number of available cores.
    pub fn resolved_threads(&self) -> u32 {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            n => n,
        }
    }

    /// Rejects a level outside [`Codec::levels`] (none ignores the level).
    pub fn validate(&self) -> Result<(), CompressError> {
        let range = self.codec.levels();
        if self.codec != Codec::None && !range.contains(&self.level) {
            return Err(CompressError::InvalidLevel {
                codec: self.codec,
                level: self.level,
                min: *range.start(),
                max: *range.end(),
            });
        }
        Ok(())
    }
}

impl Default for Settings {
    /// xz: the one format every systemd version decompresses and the smallest output.
    fn default() -> Self {
        Settings::new(Codec::Xz)
    }
}

/// What was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Output {
    /// SHA-256 of the bytes written to `dst`: the SHA256SUMS value.
    pub sha256: Digest,
    /// Compressed bytes written.
    pub size: u64,
    /// Uncompressed bytes read.
    pub input_size: u64,
}

/// A compression failure. The caller knows the file names and should add them.
#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    #[error("{codec} level {level} is out of range: choose {min}–{max}")]
    InvalidLevel {
        codec: Codec,
        level: u32,
        min: u32,
        max: u32,
    },
    #[error("cannot start the {codec} encoder: {message}; try fewer threads or a lower level")]
    Init { codec: Codec, message: String },
    #[error("reading the input failed: {0}")]
    Read(io::Error),
    #[error("{codec} compression or writing the output failed: {error}; check free space on the destination")]
    Write { codec: Codec, error: io::Error },
}

/// Compresses `src` into `dst` with bounded memory, hashing the compressed
/// bytes as they are written. `progress` receives the number of input bytes
/// consumed by each read (a delta). `dst` is flushed before returning.
///
/// xz uses liblzma's multi-threaded encoder (independent blocks, still one
/// normal `.xz` stream) when more than one thread is asked for; the result
/// is then the same for any thread count ≥ 2, but differs from single-threaded
/// output. zstd writes a content checksum; its multi-threaded output is the
/// same for any worker count ≥ 2.
pub fn compress(
    mut src: impl Read,
    dst: impl Write,
    s: &Settings,
    progress: &mut dyn FnMut(u64),
) -> Result<Output, CompressError> {
    s.validate()?;
    let codec = s.codec;
    let threads = s.resolved_threads();
    let init = |e: &dyn fmt::Display| CompressError::Init {
        codec,
        message: e.to_string(),
    };
    let werr = |error| CompressError::Write { codec, error };
    let sink = HashingWriter::new(dst);

    let (sink, input_size) = match codec {
        Codec::None => {
            let mut w = sink;
            let n = pump(&mut src, &mut w, codec, progress)?;
            (w, n)
        }
        Codec::Xz => {
            use liblzma::stream::{Check, MtStreamBuilder, Stream};
            let t = match s.threads {
                0 => xz_threads(s.level, threads, s.memory),
                n => Some(n),
            };
            let stream = match t {
                Some(t) => MtStreamBuilder::new()
                    .threads(t)
                    .preset(s.level)
                    .check(Check::Crc64)
                    .encoder(),
                // Config validation refuses a budget this small; still compress.
                None => Stream::new_easy_encoder(s.level, Check::Crc64),
            }
            .map_err(|e| init(&e))?;
            let mut enc = liblzma::write::XzEncoder::new_stream(sink, stream);
            let n = pump(&mut src, &mut enc, codec, progress)?;
            (enc.finish().map_err(werr)?, n)
        }
        Codec::Gzip => {
            // A single member with mtime 0 and no name: reproducible, and all
            // the device's `inflateInit2(15+16)` reads.
            let mut enc = flate2::write::GzEncoder::new(sink, flate2::Compression::new(s.level));
            let n = pump(&mut src, &mut enc, codec, progress)?;
            (enc.finish().map_err(werr)?, n)
        }
        Codec::Zstd => {
            let mut enc = zstd::Encoder::new(sink, s.level as i32).map_err(|e| init(&e))?;
            enc.include_checksum(true).map_err(|e| init(&e))?;
            if threads > 1 {
                enc.multithread(threads).map_err(|e| init(&e))?;
            }
            let n = pump(&mut src, &mut enc, codec, progress)?;
            (enc.finish().map_err(werr)?, n)
        }
    };

    let (mut dst, sha256, size) = sink.finish();
    dst.flush().map_err(werr)?;
    Ok(Output {
        sha256,
        size,
        input_size,
    })
}

/// Copies `src` into `dst` in 1 MiB reads, keeping read and write errors apart.
fn pump(
    src: &mut impl Read,
    dst: &mut impl Write,
    codec: Codec,
    progress: &mut dyn FnMut(u64),
) -> Result<u64, CompressError> {
    let mut aligned = AlignedBuf::new();
    let buf = aligned.as_mut_slice();
    let mut total = 0u64;
    loop {
        let n = match src.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CompressError::Read(e)),
        };
        dst.write_all(&buf[..n])
            .map_err(|error| CompressError::Write { codec, error })?;
        total += n as u64;
        progress(n as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xz_threads_fit_the_memory_budget() {
        // liblzma's own accounting at level 6: ~165 MiB per thread.
        assert_eq!(xz_threads(6, 8, DEFAULT_MEMORY), Some(1));
        assert_eq!(xz_threads(6, 8, 400 << 20), Some(2));
        assert_eq!(
            xz_threads(6, 1, 1 << 30),
            Some(1),
            "never more than the cores"
        );
        assert_eq!(xz_threads(1, 4, DEFAULT_MEMORY), Some(4));
        assert_eq!(xz_threads(9, 8, DEFAULT_MEMORY), None);
        for level in 0..=9 {
            for t in 1..=4 {
                if let Some(n) = xz_threads(level, t, DEFAULT_MEMORY) {
                    assert!(xz_memusage(level, n) <= DEFAULT_MEMORY, "level {level}");
                }
            }
        }
    }
    use sha2::{Digest as _, Sha256};
    use std::process::{Command, Stdio};

    /// Compressible but not trivial data (text-like bytes from a small alphabet).
    fn data(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b"abcdefghij klmnop\n"[(x % 18) as usize]
            })
            .collect()
    }

    fn run(input: &[u8], s: Settings) -> (Vec<u8>, Output) {
        let mut out = Vec::new();
        let mut seen = 0u64;
        let o = compress(input, &mut out, &s, &mut |n| seen += n).unwrap();
        assert_eq!(
            seen,
            input.len() as u64,
            "progress deltas must sum to the input size"
        );
        assert_eq!(o.input_size, input.len() as u64);
        assert_eq!(o.size, out.len() as u64);
        assert_eq!(o.sha256, <[u8; 32]>::from(Sha256::digest(&out)));
        (out, o)
    }

    fn decode_with_crate(codec: Codec, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match codec {
            Codec::Xz => {
                liblzma::read::XzDecoder::new(bytes)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Codec::Gzip => {
                // Single-member decoder, like the device's zlib.
                flate2::read::GzDecoder::new(bytes)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Codec::Zstd => out = zstd::decode_all(bytes).unwrap(),
            Codec::None => out = bytes.to_vec(),
        }
        out
    }

    /// Decodes with the real CLI (`xz -dc` etc.), or `None` if it is not installed.
    fn decode_with_cli(codec: Codec, bytes: &[u8]) -> Option<Vec<u8>> {
        let tool = match codec {
            Codec::Xz => "xz",
            Codec::Gzip => "gzip",
            Codec::Zstd => "zstd",
            Codec::None => return None,
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("payload.{}", codec.extension()));
        std::fs::write(&path, bytes).unwrap();
        let out = match Command::new(tool)
            .arg("-dc")
            .arg(&path)
            .stderr(Stdio::piped())
            .output()
        {
            Ok(o) => o,
            Err(_) => {
                eprintln!("{tool} not installed; skipping the CLI check");
                return None;
            }
        };
        assert!(
            out.status.success(),
            "{tool} -dc failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(out.stdout)
    }

    fn settings(codec: Codec, level: u32, threads: u32) -> Settings {
        Settings {
            memory: DEFAULT_MEMORY,
            codec,
            level,
            threads,
        }
    }

    #[test]
    fn codec_names() {
        for c in Codec::ALL {
            assert_eq!(c.name().parse::<Codec>().unwrap(), c);
            assert_eq!(c.to_string(), c.name());
            assert!(c.levels().contains(&c.default_level()));
        }
        assert_eq!(Codec::ALL.map(Codec::extension), ["xz", "gz", "zst", ""]);
        let e = "gz".parse::<Codec>().unwrap_err().to_string();
        assert!(
            e.contains("\"gz\"") && e.contains("xz, gzip, zstd, none"),
            "{e}"
        );
    }

    #[test]
    fn level_validation() {
        for (c, bad) in [
            (Codec::Xz, 10),
            (Codec::Gzip, 0),
            (Codec::Zstd, 0),
            (Codec::Zstd, 20),
        ] {
            let e = compress(&b"x"[..], io::sink(), &settings(c, bad, 1), &mut |_| {}).unwrap_err();
            assert!(matches!(e, CompressError::InvalidLevel { .. }), "{e}");
            assert!(e.to_string().contains("choose"), "{e}");
        }
        assert!(settings(Codec::None, 42, 1).validate().is_ok());
        assert!(Settings::default().validate().is_ok());
        assert!(Settings::new(Codec::Zstd).resolved_threads() >= 1);
    }

    #[test]
    fn detect_magic() {
        assert_eq!(
            detect(&[0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00, 1]),
            Some(Detected::Xz)
        );
        assert_eq!(detect(&[0xFD, 0x37, 0x7A, 0x58, 0x5A]), None);
        assert_eq!(detect(&[0x1F, 0x8B]), Some(Detected::Gzip));
        assert_eq!(detect(&[0x28, 0xB5, 0x2F, 0xFD, 0]), Some(Detected::Zstd));
        assert_eq!(detect(b"BZh91AY&SY"), Some(Detected::Bzip2));
        assert_eq!(detect(&[0x04, 0x22, 0x4D, 0x18]), Some(Detected::Lz4));
        assert_eq!(detect(b""), None);
        assert_eq!(detect(b"\x7fELF\x02\x01"), None);
        assert_eq!(Detected::Bzip2.codec(), None);
        assert_eq!(Detected::Zstd.codec(), Some(Codec::Zstd));
    }

    #[test]
    fn detect_real_bzip2() {
        let out = Command::new("bzip2")
            .arg("-c")
            .stdin(Stdio::null())
            .output()
            .expect("bzip2 (scripts/test-prereqs installs it)");
        assert_eq!(detect(&out.stdout), Some(Detected::Bzip2));
    }

    #[test]
    fn round_trip_every_codec() {
        let input = data(300_000, 7);
        for codec in Codec::ALL {
            for threads in [1, 2] {
                let (out, _) = run(&input, settings(codec, codec.default_level(), threads));
                assert_eq!(
                    detect(&out).and_then(Detected::codec),
                    (codec != Codec::None).then_some(codec)
                );
                assert_eq!(
                    decode_with_crate(codec, &out),
                    input,
                    "{codec} threads={threads}"
                );
                if let Some(plain) = decode_with_cli(codec, &out) {
                    assert_eq!(plain, input, "{codec} CLI, threads={threads}");
                }
                if codec != Codec::None {
                    assert!(out.len() < input.len() * 3 / 5, "{codec} did not compress");
                }
            }
        }
    }

    #[test]
    fn empty_input() {
        for codec in Codec::ALL {
            let (out, o) = run(b"", Settings::new(codec));
            assert_eq!(o.input_size, 0);
            if codec == Codec::None {
                assert!(out.is_empty());
                assert_eq!(o.sha256, crate::hash::EMPTY_SHA256);
            } else {
                assert!(o.size >= MIN_PAYLOAD_SIZE, "{codec}: {} bytes", o.size);
                assert_eq!(detect(&out).and_then(Detected::codec), Some(codec));
                assert!(decode_with_crate(codec, &out).is_empty());
                if let Some(plain) = decode_with_cli(codec, &out) {
                    assert!(plain.is_empty());
                }
            }
        }
    }

    #[test]
    fn xz_multithreaded_multi_mib() {
        // Level 1: 1 MiB dictionary, 3 MiB blocks, so 10 MiB gives several blocks.
        let input = data(10 << 20, 99);
        let (out2, o2) = run(&input, settings(Codec::Xz, 1, 2));
        let (out3, _) = run(&input, settings(Codec::Xz, 1, 3));
        assert_eq!(
            out2, out3,
            "MT xz output should not depend on the thread count"
        );
        assert_eq!(o2.input_size, 10 << 20);
        assert_eq!(detect(&out2), Some(Detected::Xz));
        assert_eq!(decode_with_crate(Codec::Xz, &out2), input);
        if let Some(plain) = decode_with_cli(Codec::Xz, &out2) {
            assert_eq!(plain, input);
            // `xz --robot -l`: "file <streams> <blocks> ..."; one stream, several blocks.
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("p.xz");
            std::fs::write(&p, &out2).unwrap();
            let l = Command::new("xz")
                .args(["--robot", "-l"])
                .arg(&p)
                .output()
                .unwrap();
            let text = String::from_utf8(l.stdout).unwrap();
            let file_line = text.lines().find(|l| l.starts_with("file\t")).unwrap();
            let cols: Vec<&str> = file_line.split('\t').collect();
            assert_eq!(cols[1], "1", "streams: {file_line}");
            assert!(cols[2].parse::<u32>().unwrap() > 1, "blocks: {file_line}");
        }
    }

    #[test]
    fn zstd_multithreaded_is_reproducible() {
        let input = data(3 << 20, 5);
        let (a, _) = run(&input, settings(Codec::Zstd, 3, 2));
        let (b, _) = run(&input, settings(Codec::Zstd, 3, 3));
        assert_eq!(a, b);
        assert_eq!(decode_with_crate(Codec::Zstd, &a), input);
    }

    #[test]
    fn gzip_is_deterministic_single_member() {
        let input = data(200_000, 3);
        let (a, _) = run(&input, Settings::new(Codec::Gzip));
        let (b, _) = run(&input, Settings::new(Codec::Gzip));
        assert_eq!(a, b);
        // mtime (bytes 4..8) is zero, so the digest does not change between builds.
        assert_eq!(&a[4..8], &[0, 0, 0, 0]);
        // Exactly one member: a single-member decoder consumes every byte.
        let mut dec = flate2::bufread::GzDecoder::new(&a[..]);
        let mut plain = Vec::new();
        dec.read_to_end(&mut plain).unwrap();
        assert_eq!(plain, input);
        assert!(
            dec.into_inner().is_empty(),
            "trailing data after the first member"
        );
    }

    struct FailingWriter;
    impl Write for FailingWriter {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("disk full"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    struct FailingReader;
    impl Read for FailingReader {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("EIO"))
        }
    }

    #[test]
    fn errors_are_reported() {
        let input = data(100_000, 1);
        for codec in Codec::ALL {
            let e = compress(
                &input[..],
                FailingWriter,
                &Settings::new(codec),
                &mut |_| {},
            )
            .unwrap_err();
            assert!(matches!(e, CompressError::Write { .. }), "{codec}: {e}");
            assert!(e.to_string().contains("disk full"), "{e}");
            let e = compress(
                FailingReader,
                io::sink(),
                &Settings::new(codec),
                &mut |_| {},
            )
            .unwrap_err();
            assert!(matches!(e, CompressError::Read(_)), "{codec}: {e}");
        }
    }
}
