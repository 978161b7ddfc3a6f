//! Encode progress on stderr: a bar per phase redrawn in place when stderr
//! is a terminal (indicatif), one line per finished phase otherwise (logs,
//! CI, pipes), nothing with `--quiet`.

use std::time::Instant;

/// Progress of the encoder's phases.
pub struct Phases {
    quiet: bool,
    current: Option<(&'static str, Instant)>,
    #[cfg(not(target_arch = "wasm32"))]
    bar: Option<indicatif::ProgressBar>,
}

impl Phases {
    /// Reports nothing when `quiet`.
    pub fn new(quiet: bool) -> Self {
        Phases {
            quiet,
            current: None,
            #[cfg(not(target_arch = "wasm32"))]
            bar: None,
        }
    }

    /// `done` of `total` steps of `phase`.
    pub fn update(&mut self, phase: &'static str, done: usize, total: usize) {
        if self.quiet {
            return;
        }
        if self.current.map(|(p, _)| p) != Some(phase) {
            self.current = Some((phase, Instant::now()));
            self.start_bar(phase, total);
        }
        self.advance(done);
        if done == total {
            let secs = self.current.map_or(0.0, |(_, t)| t.elapsed().as_secs_f64());
            if !self.finish_bar(secs) {
                eprintln!("{phase}: {total} done in {secs:.1} s");
            }
        }
    }

    /// Clears a bar left unfinished.
    pub fn finish(&mut self) {
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn start_bar(&mut self, phase: &'static str, total: usize) {
        self.finish();
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            let style = indicatif::ProgressStyle::with_template("{msg:<22} [{bar:30}] {pos}/{len} {elapsed}")
                .expect("a valid template")
                .progress_chars("#> ");
            self.bar = Some(indicatif::ProgressBar::new(total as u64).with_style(style).with_message(phase));
        }
    }

    #[cfg(target_arch = "wasm32")]
    fn start_bar(&mut self, _: &'static str, _: usize) {}

    #[cfg(not(target_arch = "wasm32"))]
    fn advance(&mut self, done: usize) {
        if let Some(bar) = &self.bar {
            bar.set_position(done as u64);
        }
    }

    #[cfg(target_arch = "wasm32")]
    fn advance(&mut self, _: usize) {}

    /// Ends the bar with its time; false when there was no bar.
    #[cfg(not(target_arch = "wasm32"))]
    fn finish_bar(&mut self, secs: f64) -> bool {
        match self.bar.take() {
            Some(bar) => {
                bar.finish_with_message(format!("{} ({secs:.1} s)", bar.message()));
                true
            }
            None => false,
        }
    }

    #[cfg(target_arch = "wasm32")]
    fn finish_bar(&mut self, _: f64) -> bool {
        false
    }
}
