//! When to start cloudflared again after a start ended. A pure policy; the caller passes the
//! clock, so the tests need not wait.
//!
//! - Failed starts and crashes wait 5 s, then 10 s, 20 s … up to 5 min: the quick-tunnel API
//!   rate-limits, and a tight loop would keep it refusing us.
//! - A run that stayed up for a long time (`healthy_after`) was healthy: the next failure
//!   starts the ladder again from the bottom.
//! - Exit code 11 is cloudflared saying it replaced itself with an update: start again at once
//!   (the new binary is in place). Twice within `UPDATE_SPIN` is no update any more but a
//!   loop, and gets the normal ladder.

use std::time::{Duration, Instant};

/// Exit code of a cloudflared that updated itself.
pub const EXIT_UPDATED: i32 = 11;

/// Two update exits closer than this are treated as a crash loop.
const UPDATE_SPIN: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    healthy_after: Duration,
    next: Duration,
    last_update_exit: Option<Instant>,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration, healthy_after: Duration) -> Backoff {
        Backoff {
            first,
            max,
            healthy_after,
            next: first,
            last_update_exit: None,
        }
    }

    /// The wait before the next start, for a start that ended at `now` with `exit_code`
    /// (None: killed by a signal, or it never ran, or we gave up on it) after being up for
    /// `up_for` (zero if it never came up).
    pub fn after_end(
        &mut self,
        exit_code: Option<i32>,
        up_for: Duration,
        now: Instant,
    ) -> Duration {
        if up_for >= self.healthy_after {
            self.next = self.first;
        }
        if exit_code == Some(EXIT_UPDATED) {
            let spinning = self
                .last_update_exit
                .is_some_and(|t| now.saturating_duration_since(t) < UPDATE_SPIN);
            self.last_update_exit = Some(now);
            if !spinning {
                return Duration::ZERO;
            }
        }
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn production() -> Backoff {
        Backoff::new(S(5), S(300), S(600))
    }

    #[test]
    fn failures_wait_5s_doubling_up_to_5_minutes() {
        let mut b = production();
        let now = Instant::now();
        let waits: Vec<u64> = (0..10)
            .map(|_| b.after_end(Some(1), Duration::ZERO, now).as_secs())
            .collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300, 300, 300]);
    }

    #[test]
    fn a_long_healthy_run_resets_the_ladder_and_a_short_one_does_not() {
        let mut b = production();
        let now = Instant::now();
        for _ in 0..5 {
            b.after_end(Some(1), Duration::ZERO, now);
        }
        assert_eq!(b.after_end(Some(1), S(30), now), S(160));
        assert_eq!(b.after_end(None, S(601), now), S(5));
        assert_eq!(b.after_end(None, Duration::ZERO, now), S(10));
    }

    #[test]
    fn an_update_exit_restarts_at_once_but_not_in_a_loop() {
        let mut b = production();
        let t0 = Instant::now();
        assert_eq!(b.after_end(Some(1), Duration::ZERO, t0), S(5));
        assert_eq!(b.after_end(Some(EXIT_UPDATED), S(3600), t0), Duration::ZERO);
        // Another "update" a second later is a loop: back on the ladder.
        assert_eq!(b.after_end(Some(EXIT_UPDATED), S(1), t0 + S(1)), S(5));
        assert_eq!(b.after_end(Some(EXIT_UPDATED), S(1), t0 + S(2)), S(10));
        // A day later, an update is an update again.
        assert_eq!(
            b.after_end(Some(EXIT_UPDATED), S(86_000), t0 + S(86_400)),
            Duration::ZERO
        );
    }
}
