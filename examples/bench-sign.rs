//! Signing time per manifest for the signer a config names, as the
//! publisher signs: one detached signature, then the in-process check
//! against the keyring devices install. Used by `scripts/bench-sign`.
//!
//!   bench-sign CONFIG COUNT
//!
//! Prints one line: `signer=… count=N open_ms=… mean_ms=… median_ms=… min_ms=… max_ms=…`.

use std::time::{Duration, Instant, SystemTime};

use sysupdate_publish::config::Config;
use sysupdate_publish::signing::{Checked, Keyring, SignOptions, Signer};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, config, count] = args.as_slice() else {
        anyhow::bail!("usage: bench-sign CONFIG COUNT");
    };
    let count: usize = count.parse()?;
    let config = Config::load(Some(std::path::Path::new(config)))?;
    let s = &config.signing;
    let started = Instant::now();
    let keyring = Keyring::load(&s.keyring)?;
    let signer = s.signer.open(&keyring, &s.keyring)?;
    let open = started.elapsed();
    let checked = Checked::new(signer.as_ref(), &keyring);
    let mut times = Vec::with_capacity(count);
    for i in 0..count {
        // A manifest of the usual shape: a few payload lines, distinct per round.
        let manifest: String = (0..6)
            .map(|n| format!("{:064x} *store_{i}_{n}.img.xz\n", i * 31 + n))
            .collect();
        let opts = SignOptions {
            created: SystemTime::now(),
            lifetime: config.channel.signature_lifetime,
        };
        let t = Instant::now();
        checked.sign(manifest.as_bytes(), opts)?;
        times.push(t.elapsed());
    }
    times.sort();
    let ms = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1000.0);
    let mean = times.iter().sum::<Duration>() / count.max(1) as u32;
    println!(
        "signer={:?} count={count} open_ms={} mean_ms={} median_ms={} min_ms={} max_ms={}",
        signer.describe(),
        ms(open),
        ms(mean),
        ms(times[count / 2]),
        ms(times[0]),
        ms(times[count - 1]),
    );
    Ok(())
}
