//! The phases of `cargo xtask test`: each is announced, timed and recorded, and a summary
//! closes the run. Not a test harness: the phases run cargo and the integration tests do
//! the checking.

use std::time::{Duration, Instant};

use crate::error::Result;

/// How one phase ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Passed,
    Failed(String),
    Skipped(String),
}

/// The phases run so far.
#[derive(Default)]
pub struct Phases {
    done: Vec<(String, Duration, Outcome)>,
}

impl Phases {
    /// Runs one phase; its value if it succeeded.
    pub fn run<T>(&mut self, name: &str, phase: impl FnOnce() -> Result<T>) -> Option<T> {
        eprintln!("\n==> {name}");
        let start = Instant::now();
        let result = phase();
        let took = start.elapsed();
        let (value, outcome) = match result {
            Ok(v) => (Some(v), Outcome::Passed),
            Err(e) => (None, Outcome::Failed(e.to_string())),
        };
        eprintln!("==> {name}: {} ({})", describe(&outcome), seconds(took));
        self.done.push((name.to_string(), took, outcome));
        value
    }

    /// Records a phase that could not run.
    pub fn skip(&mut self, name: &str, why: &str) {
        eprintln!("\n==> {name}: skipped ({why})");
        self.done.push((
            name.to_string(),
            Duration::ZERO,
            Outcome::Skipped(why.to_string()),
        ));
    }

    /// Prints one line per phase and the total; true if every phase passed.
    pub fn summary(&self) -> bool {
        eprintln!("\n==> summary");
        for (name, took, outcome) in &self.done {
            eprintln!("  {name:<24} {:>8}  {}", seconds(*took), describe(outcome));
        }
        let total: Duration = self.done.iter().map(|(_, took, _)| *took).sum();
        let passed = self.all_passed();
        eprintln!(
            "  {:<24} {:>8}  {}",
            "total",
            seconds(total),
            if passed { "ok" } else { "FAILED" }
        );
        passed
    }

    fn all_passed(&self) -> bool {
        self.done
            .iter()
            .all(|(_, _, outcome)| *outcome == Outcome::Passed)
    }
}

fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Passed => "ok".to_string(),
        Outcome::Failed(why) => format!("FAILED: {why}"),
        Outcome::Skipped(why) => format!("skipped: {why}"),
    }
}

fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn a_failed_or_skipped_phase_fails_the_run() {
        let mut phases = Phases::default();
        assert_eq!(phases.run("one", || Ok(7)), Some(7));
        assert!(phases.all_passed());
        assert_eq!(
            phases.run("two", || Err::<(), _>(Error::new("broken"))),
            None
        );
        assert!(!phases.all_passed());

        let mut skipped = Phases::default();
        skipped.run("one", || Ok(()));
        skipped.skip("two", "needs one");
        assert!(!skipped.summary());
    }

    #[test]
    fn seconds_have_one_decimal() {
        assert_eq!(seconds(Duration::from_millis(12_345)), "12.3 s");
    }
}
