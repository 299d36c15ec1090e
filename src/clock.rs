//! Time as a dependency: code that depends on "now" takes a `Clock`, so tests
//! can move time without sleeping.
//!
//! Policy: business time (job schedules, leases, calling windows, rate
//! limits, retention) comes from the injected clock. The few places that
//! must agree with someone else's clock use `system_now_ms` and say why:
//! replay windows of signed requests (the sender signs with real time, and
//! the Standard Webhooks and jsonwebtoken crates check against it), the
//! simulated phone network (it runs in real time), and the command line.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

/// A source of time: wall-clock Unix milliseconds, and a monotonic reading
/// for measuring intervals (rate limits).
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Wall-clock time in Unix milliseconds.
    fn now_ms(&self) -> i64;

    /// Nanoseconds on a monotonic scale with an arbitrary origin.
    fn monotonic_ns(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        system_now_ms()
    }

    fn monotonic_ns(&self) -> u64 {
        static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        ORIGIN.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }
}

/// Real wall-clock time, for the places that must agree with another
/// party's clock (see the module policy). Everything else takes a `Clock`.
pub fn system_now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A clock that only moves when told to (tests).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(start_ms: i64) -> Arc<Self> {
        Arc::new(Self(AtomicI64::new(start_ms)))
    }

    pub fn advance_ms(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }

    fn monotonic_ns(&self) -> u64 {
        (self.now_ms().max(0) as u64).saturating_mul(1_000_000)
    }
}

/// Formats Unix milliseconds as RFC 3339 UTC with milliseconds.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manual_clock_moves_both_readings_together() {
        let c = ManualClock::new(1_000);
        let (wall, mono) = (c.now_ms(), c.monotonic_ns());
        c.advance_ms(250);
        assert_eq!(c.now_ms() - wall, 250);
        assert_eq!(c.monotonic_ns() - mono, 250_000_000);
        let s = SystemClock;
        let a = s.monotonic_ns();
        assert!(s.monotonic_ns() >= a);
    }
}
