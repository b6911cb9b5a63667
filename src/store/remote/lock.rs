//! The publisher lock of a remote channel: an object (S3) or collection
//! (WebDAV) created only if absent, holding who took it; a heartbeat
//! rewrites it while held. A waiter breaks it when its holder is a dead
//! process on this machine, or when it has not changed for [`LEASE`] (a
//! publisher that died elsewhere). Commits check it is still ours first.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::backend::{Backend, Op};
use super::{locked, retry, Shared};
use crate::store::{Lock, StoreError};

pub(super) const LOCK_KEY: &str = ".sysupdate-publish.lock";
/// How often the holder rewrites the lock.
const HEARTBEAT: Duration = Duration::from_secs(10);
/// A lock unchanged for this long belongs to a publisher that died.
pub(super) const LEASE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_secs(1);

/// Who holds the publisher lock; rewritten (`beat`) while held.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Owner {
    token: String,
    host: String,
    boot_id: String,
    pid: u32,
    /// Start time of the process (clock ticks since boot), against pid reuse.
    pid_start: u64,
    since: String,
    beat: u64,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Field 22 of /proc/PID/stat; `None` when no such process runs.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

impl Owner {
    fn me() -> Owner {
        let pid = std::process::id();
        Owner {
            token: format!(
                "{:016x}{:016x}",
                rand::random::<u64>(),
                rand::random::<u64>()
            ),
            host: hostname(),
            boot_id: boot_id(),
            pid,
            pid_start: process_start(pid).unwrap_or(0),
            since: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            beat: 0,
        }
    }

    /// Certain death: the holder ran on this machine since its last boot and
    /// that process is gone.
    fn is_dead_here(&self) -> bool {
        !self.host.is_empty()
            && !self.boot_id.is_empty()
            && self.host == hostname()
            && self.boot_id == boot_id()
            && process_start(self.pid) != Some(self.pid_start)
    }

    fn describe(&self) -> String {
        format!("{} pid {} since {}", self.host, self.pid, self.since)
    }
}

/// The token of whoever holds the lock now; `None` when nobody does or it
/// cannot be read (the holder and the heartbeat then assume it is lost).
fn holder_token(backend: &dyn Backend) -> Option<String> {
    let bytes = backend.lock_read(LOCK_KEY).ok().flatten()?;
    serde_json::from_slice::<Owner>(&bytes)
        .ok()
        .map(|o| o.token)
}

/// The held lock: a heartbeat thread keeps it fresh; dropping it stops the
/// heartbeat and removes the lock if it is still ours.
struct Held {
    shared: Arc<Shared>,
    token: String,
    stop: Option<mpsc::Sender<()>>,
    heartbeat: Option<std::thread::JoinHandle<()>>,
}

impl Lock for Held {}

impl Drop for Held {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.heartbeat.take() {
            let _ = h.join();
        }
        *locked(&self.shared.lock_token) = None;
        let backend = self.shared.backend.as_ref();
        if holder_token(backend).is_some_and(|t| t == self.token) {
            let _ = retry::attempt(|| backend.lock_remove(LOCK_KEY));
        }
    }
}

pub(super) fn acquire(
    shared: Arc<Shared>,
    events: &dyn crate::progress::Events,
) -> Result<Box<dyn Lock>, StoreError> {
    let me = Owner::me();
    let url = shared.backend.url(LOCK_KEY);
    let mut unchanged: Option<(Vec<u8>, Instant)> = None;
    let mut told = false;
    loop {
        let bytes = serde_json::to_vec(&me).expect("plain struct");
        if shared.run(Op::Lock, LOCK_KEY, || {
            shared.backend.lock_create(LOCK_KEY, &bytes)
        })? {
            break;
        }
        let Some(current) =
            shared.run(Op::Lock, LOCK_KEY, || shared.backend.lock_read(LOCK_KEY))?
        else {
            // Released between our attempt and the read: try again.
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let owner = serde_json::from_slice::<Owner>(&current).ok();
        let who = owner
            .as_ref()
            .map_or_else(|| "an unknown publisher".to_string(), Owner::describe);
        let stale = owner.as_ref().is_some_and(Owner::is_dead_here)
            || match &unchanged {
                Some((seen, since)) if *seen == current => since.elapsed() >= LEASE,
                _ => {
                    unchanged = Some((current, Instant::now()));
                    false
                }
            };
        if stale {
            events.warn(format!("{url}: breaking the stale publisher lock of {who}"));
            shared.run(Op::Lock, LOCK_KEY, || shared.backend.lock_remove(LOCK_KEY))?;
            unchanged = None;
            continue;
        }
        if !told {
            events.info(format!(
                "{url}: waiting for the publisher lock held by {who}"
            ));
            told = true;
        }
        std::thread::sleep(POLL);
    }
    *locked(&shared.lock_token) = Some(me.token.clone());
    let (stop, stopped) = mpsc::channel::<()>();
    let beat_shared = shared.clone();
    let heartbeat = std::thread::Builder::new()
        .name("lock-heartbeat".into())
        .spawn(move || {
            let mut me = me;
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(HEARTBEAT) {
                let backend = beat_shared.backend.as_ref();
                if holder_token(backend).is_none_or(|t| t != me.token) {
                    // Commits notice through check_held and refuse.
                    return;
                }
                me.beat += 1;
                let _ =
                    backend.lock_write(LOCK_KEY, &serde_json::to_vec(&me).expect("plain struct"));
            }
        })
        .map_err(|e| StoreError::Remote {
            op: "locking",
            url: url.clone(),
            status: None,
            message: format!("cannot start the lock heartbeat: {e}"),
            hint: String::new(),
        })?;
    let token = locked(&shared.lock_token).clone().unwrap_or_default();
    Ok(Box::new(Held {
        shared,
        token,
        stop: Some(stop),
        heartbeat: Some(heartbeat),
    }))
}

/// Refuses to commit when the publisher lock we took is no longer ours
/// (broken as stale by another publisher while we were stalled).
pub(super) fn check_held(shared: &Shared, target: &str) -> Result<(), StoreError> {
    let Some(token) = locked(&shared.lock_token).clone() else {
        return Ok(());
    };
    let current = shared.run(Op::Lock, LOCK_KEY, || shared.backend.lock_read(LOCK_KEY))?;
    let owner = current.and_then(|b| serde_json::from_slice::<Owner>(&b).ok());
    if owner.is_some_and(|o| o.token == token) {
        return Ok(());
    }
    Err(StoreError::Remote {
        op: "committing",
        url: shared.backend.url(target),
        status: None,
        message: "the publisher lock is no longer ours (another publisher broke it as stale)"
            .into(),
        hint: "nothing was written there; run the command again".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_process_on_this_machine_holds_no_lock() {
        let me = Owner::me();
        assert!(!me.is_dead_here(), "we are alive");
        let gone = Owner {
            pid_start: me.pid_start + 1,
            ..me.clone()
        };
        assert!(gone.is_dead_here(), "pid reused by another process");
        let elsewhere = Owner {
            host: "another-host".into(),
            pid_start: 0,
            ..me
        };
        assert!(!elsewhere.is_dead_here(), "other machines use the lease");
    }
}
