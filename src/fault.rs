//! Crash points for the crash-consistency tests (test hook, not a feature).
//!
//! With `SYSUPDATE_PUBLISH_CRASH_AT=N` the process sends itself SIGKILL at the
//! N-th crash point it passes, exactly as if the machine died there; the tests
//! then check the channel is still consistent and that a rerun finishes.

use std::sync::atomic::{AtomicU64, Ordering};

pub const ENV: &str = "SYSUPDATE_PUBLISH_CRASH_AT";

static PASSED: AtomicU64 = AtomicU64::new(0);

/// Marks a point between two durable steps of the commit protocol.
pub fn point(_name: &str) {
    let Some(at) = std::env::var(ENV).ok().and_then(|v| v.parse::<u64>().ok()) else {
        return;
    };
    if PASSED.fetch_add(1, Ordering::SeqCst) + 1 == at {
        // SAFETY: raising a signal on ourselves; SIGKILL cannot be caught.
        unsafe {
            libc::raise(libc::SIGKILL);
        }
    }
}
