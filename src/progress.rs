//! How the library tells what it is doing without printing: every long
//! operation takes an [`Events`] sink. The command-line UI renders events on
//! stderr (bars only on a terminal); tests and library callers pass
//! [`Silent`] or collect them.

use std::sync::Arc;

/// How much a note matters to someone watching.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// A step people want to see (what was uploaded, committed, recorded).
    Info,
    /// Only with `-v`.
    Detail,
    /// About the fleet's safety; shown even with `-q`.
    Warn,
}

/// One thing that happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub level: Level,
    pub text: String,
}

/// A byte counter for one long step (hashing, compressing, uploading).
pub trait Bar: Send + Sync {
    fn inc(&self, n: u64);
    fn finish(&self);
}

/// Where events and byte counts go.
pub trait Events: Sync {
    fn event(&self, event: Event);

    /// A counter for `total` bytes of work called `label`.
    fn bar(&self, _total: u64, _label: &str) -> Arc<dyn Bar> {
        Arc::new(NoBar)
    }

    /// Whether several bars may run at once without drawing over each other.
    fn parallel_bars(&self) -> bool {
        false
    }

    fn info(&self, text: String) {
        self.event(Event {
            level: Level::Info,
            text,
        })
    }

    fn detail(&self, text: String) {
        self.event(Event {
            level: Level::Detail,
            text,
        })
    }

    fn warn(&self, text: String) {
        self.event(Event {
            level: Level::Warn,
            text,
        })
    }
}

/// A counter that counts nothing.
pub struct NoBar;

impl Bar for NoBar {
    fn inc(&self, _: u64) {}
    fn finish(&self) {}
}

/// Drops every event.
pub struct Silent;

impl Events for Silent {
    fn event(&self, _: Event) {}
}

/// Keeps every event, for tests that check what a run reported.
#[derive(Default)]
pub struct Collect(pub std::sync::Mutex<Vec<Event>>);

impl Events for Collect {
    fn event(&self, event: Event) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(event);
    }
}

impl Collect {
    pub fn texts(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|e| e.text.clone())
            .collect()
    }
}

/// Wraps events for work running on several threads: no bars.
pub struct NoBars<'a>(pub &'a dyn Events);

impl Events for NoBars<'_> {
    fn event(&self, event: Event) {
        self.0.event(event)
    }
}
