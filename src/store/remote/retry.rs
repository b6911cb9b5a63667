//! Transient failures (5xx, 429, timeouts, refused or reset connections)
//! are retried with exponential backoff, a bounded number of times; every
//! other failure is returned at once.

use std::time::Duration;

use super::backend::{Failure, Kind};

/// Attempts and backoff for transient failures: 0.5 + 1 + 2 + 4 s of
/// waiting before giving up, enough for a restarting server or a flaky link.
const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// Runs a request, retrying transient failures with backoff.
pub(super) fn attempt<T>(f: impl FnMut() -> Result<T, Failure>) -> Result<T, Failure> {
    attempt_with(FIRST_BACKOFF, f)
}

fn attempt_with<T>(
    first_backoff: Duration,
    mut f: impl FnMut() -> Result<T, Failure>,
) -> Result<T, Failure> {
    let mut delay = first_backoff;
    for attempt in 1.. {
        match f() {
            Err(e) if e.kind == Kind::Transient && attempt < ATTEMPTS => {
                std::thread::sleep(delay);
                delay *= 2;
            }
            Err(mut e) if e.kind == Kind::Transient => {
                e.message = format!("{} (gave up after {attempt} attempts)", e.message);
                return Err(e);
            }
            r => return r,
        }
    }
    unreachable!("the loop returns")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(kinds: &[Kind]) -> (Result<u32, Failure>, usize) {
        let mut calls = 0;
        let r = attempt_with(Duration::from_millis(1), || {
            calls += 1;
            match kinds.get(calls - 1) {
                Some(&k) => Err(Failure::new(k, None, "failed")),
                None => Ok(7),
            }
        });
        (r, calls)
    }

    #[test]
    fn transient_failures_are_retried_until_success() {
        let (r, calls) = run(&[Kind::Transient, Kind::Transient]);
        assert_eq!(r.unwrap(), 7);
        assert_eq!(calls, 3);
    }

    #[test]
    fn other_failures_are_returned_at_once() {
        let (r, calls) = run(&[Kind::Denied, Kind::Transient]);
        assert_eq!(r.unwrap_err().kind, Kind::Denied);
        assert_eq!(calls, 1);
    }

    #[test]
    fn a_failure_that_persists_gives_up_after_the_last_attempt() {
        let (r, calls) = run(&[Kind::Transient; ATTEMPTS as usize + 1]);
        let e = r.unwrap_err();
        assert_eq!(calls, ATTEMPTS as usize);
        assert!(
            e.message.ends_with("(gave up after 5 attempts)"),
            "{}",
            e.message
        );
    }
}
