//! Where "now" comes from for `serve`: the system clock, or a fixed instant
//! for tests.
//!
//! Everything `serve` computes relative to the present (the demo history,
//! the metrics snapshot's windows, the pages' windows, settling, pruning,
//! ingest's time checks) asks the one [`Clock`] in `AppState`. In production
//! it is the system clock. `serve --now T` (or `CI_SLO_NOW=T`) fixes it at
//! `T`: the clock then never moves, so a demo database answers the same
//! bytes whenever it is asked (the golden files of `tests/it/golden.rs`). The
//! forge pollers keep the system clock: they talk to real forges.

use chrono::{DateTime, Utc};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Clock {
    fixed: Option<DateTime<Utc>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock { fixed: None }
    }

    /// A clock that always reads `at`.
    pub fn fixed(at: DateTime<Utc>) -> Clock {
        Clock { fixed: Some(at) }
    }

    /// `fixed(at)` when `at` is given, else the system clock.
    pub fn fixed_or_system(at: Option<DateTime<Utc>>) -> Clock {
        Clock { fixed: at }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.fixed.unwrap_or_else(Utc::now)
    }

    /// The instant the clock is fixed at, if it is.
    pub fn fixed_at(&self) -> Option<DateTime<Utc>> {
        self.fixed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_clock_never_moves_and_the_system_clock_does() {
        let at = DateTime::parse_from_rfc3339("2026-11-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let fixed = Clock::fixed(at);
        assert_eq!(fixed.now(), at);
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert_eq!(fixed.now(), at);
        assert_eq!(Clock::fixed_or_system(None), Clock::system());
        let before = Utc::now();
        assert!(Clock::system().now() >= before);
        assert_ne!(Clock::system().now(), at);
    }
}
