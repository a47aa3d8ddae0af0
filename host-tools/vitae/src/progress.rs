//! Progress bars for long steps (indicatif) when stderr is a terminal, one line per step when it
//! is not, nothing with `--no-progress` (so stderr holds only a failure's own lines).

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use vitae::quantize::Progress;

/// Maps the library's progress events to one bar per step.
pub struct Bars {
    quiet: bool,
    enabled: bool,
    bar: Option<ProgressBar>,
}

impl Bars {
    /// Bars on stderr when `wanted` and stderr is a terminal; step lines when only `wanted`.
    pub fn new(wanted: bool) -> Self {
        Bars {
            quiet: !wanted,
            enabled: wanted && std::io::stderr().is_terminal(),
            bar: None,
        }
    }
}

impl Progress for Bars {
    fn begin(&mut self, what: &str, total: usize) {
        if self.quiet {
            return;
        }
        if !self.enabled {
            eprintln!("{what} ({total} steps)…");
            return;
        }
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:36} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(what.to_string());
        self.bar = Some(bar);
    }

    fn advance(&mut self, done: usize) {
        if let Some(b) = &self.bar {
            b.set_position(done as u64);
        }
    }

    fn end(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}
