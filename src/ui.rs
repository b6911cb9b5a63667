//! Human output: the command's report on stdout (so `status | head` and
//! `status > report.txt` work), diagnostics and progress on stderr (bars
//! only on a terminal). With `--json` the JSON document is the report on
//! stdout and the human report lines become diagnostics on stderr.

use std::fmt::Display;
use std::io::IsTerminal;

use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};

use crate::progress::{Bar, Event, Events, Level};

#[derive(Clone, Debug)]
pub struct Ui {
    quiet: bool,
    verbose: u8,
    bars: bool,
    json: bool,
}

impl Ui {
    pub fn new(quiet: bool, verbose: u8) -> Ui {
        Ui {
            quiet,
            verbose,
            bars: !quiet && std::io::stderr().is_terminal(),
            json: false,
        }
    }

    /// With `--json`: stdout carries only the JSON document.
    pub fn with_json(self, json: bool) -> Ui {
        Ui { json, ..self }
    }

    /// A Ui that prints nothing: for library callers and tests.
    pub fn silent() -> Ui {
        Ui {
            quiet: true,
            verbose: 0,
            bars: false,
            json: false,
        }
    }

    /// The same messages without progress bars, for work on several threads
    /// at once whose bars would draw over each other.
    pub fn without_bars(&self) -> Ui {
        Ui {
            bars: false,
            ..self.clone()
        }
    }

    /// Whether details (`-v`) are shown.
    pub fn verbose(&self) -> bool {
        self.verbose > 0 && !self.quiet
    }

    /// A line of the command's report: stdout, even with `-q` (which
    /// silences only diagnostics). With `--json` the document is the report,
    /// so the line becomes a diagnostic on stderr.
    pub fn report(&self, msg: impl Display) {
        if !self.json {
            stdout_line(&msg);
        } else if !self.quiet {
            eprintln!("{msg}");
        }
    }

    /// Warnings that are part of a report (`verify`'s header checks, what
    /// systemd ignores in the transfer files): one report line each with
    /// `-v`; without it they are only counted for [`Ui::warnings_hint`], so
    /// `verify` and `status` hold back and hint the same way.
    pub fn report_warnings(&self, indent: &str, warnings: &[String]) {
        if self.verbose() {
            for w in warnings {
                self.report(format!("{indent}warning: {w}"));
            }
        }
    }

    /// The report's last line when [`Ui::report_warnings`] held `count`
    /// back: a hidden warning nobody hears of is as good as none.
    pub fn warnings_hint(&self, count: usize) {
        if count > 0 && !self.verbose() {
            let s = if count == 1 { "" } else { "s" };
            self.report(format!("{count} warning{s} (run with -v to see them)"));
        }
    }

    /// A diagnostic: progress and notes on stderr, silenced by `-q`.
    pub fn info(&self, msg: impl Display) {
        if !self.quiet {
            eprintln!("{msg}");
        }
    }

    pub fn detail(&self, msg: impl Display) {
        if self.verbose > 0 && !self.quiet {
            eprintln!("{msg}");
        }
    }

    /// Warnings show even with --quiet: they are about the fleet's safety.
    pub fn warn(&self, msg: impl Display) {
        eprintln!("warning: {msg}");
    }

    /// A byte-count bar; hidden (and free) when stderr is not a terminal,
    /// where a line per finished step is printed instead by the caller.
    pub fn bytes_bar(&self, total: u64, msg: impl Into<String>) -> ProgressBar {
        if !self.bars {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:30!} {bar:30} {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} {eta:>4}",
            )
            .expect("valid template"),
        );
        bar.set_message(msg.into());
        bar
    }
}

/// One line on stdout. A reader that went away (`status | head`) does not
/// stop the command: println! would panic, and dying of SIGPIPE halfway
/// through a release is worse than a report nobody reads.
pub fn stdout_line(line: &dyn Display) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// An indicatif bar is a [`Bar`].
struct IndicatifBar(ProgressBar);

impl Bar for IndicatifBar {
    fn inc(&self, n: u64) {
        self.0.inc(n)
    }
    fn finish(&self) {
        self.0.finish_and_clear()
    }
}

/// The terminal renders the library's events.
impl Events for Ui {
    fn event(&self, event: Event) {
        match event.level {
            Level::Info => self.info(event.text),
            Level::Detail => self.detail(event.text),
            Level::Warn => self.warn(event.text),
        }
    }

    fn bar(&self, total: u64, label: &str) -> Arc<dyn Bar> {
        Arc::new(IndicatifBar(self.bytes_bar(total, label)))
    }
}
