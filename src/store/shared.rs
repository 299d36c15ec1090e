//! State that several instances share through the store, and the pure
//! rules both engines apply to it under a row lock: a GCRA per key (the
//! providers' dial rates) and a circuit breaker per outbound endpoint.
//!
//! Policy: the rules read the caller's `now_ms` (the injected clock), like
//! every lease and due time in the store. Instances are expected to run
//! NTP-synchronised clocks (leases already rely on it); an instance whose
//! clock runs ahead by `d` can take at most `d / interval` extra tokens
//! once, and one behind waits longer, never the reverse. The database's
//! clock would be immune to skew but cannot be moved by tests, and the
//! other rules would still read the instance's clock.

/// One GCRA step: the theoretical arrival time stored for the key (`None`
/// when unseen) → `Ok(new_tat)` when one token is taken now, `Err(wait_ms)`
/// (at least 1) when the budget is spent.
pub fn gcra(tat: Option<i64>, interval_ms: i64, burst: u32, now_ms: i64) -> Result<i64, i64> {
    let interval = interval_ms.max(1);
    let tolerance = interval.saturating_mul(i64::from(burst.max(1)) - 1);
    let tat = tat.unwrap_or(now_ms).max(now_ms);
    let ahead = tat - now_ms;
    if ahead > tolerance {
        return Err((ahead - tolerance).max(1));
    }
    Ok(tat + interval)
}

/// An endpoint's breaker policy (`endpoints.toml`'s `breaker`), in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Consecutive failed attempts that open it.
    pub failures: u32,
    pub cooldown_ms: i64,
    pub max_cooldown_ms: i64,
}

/// What an endpoint may send now, by its shared breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerAdmission {
    /// Closed: as many requests as the concurrency cap allows.
    Closed,
    /// The caller holds the one half-open probe (until the probe lease
    /// it asked for): it must report the result (`breaker_record`) or
    /// give it back (`breaker_cancel_probe`).
    Probe,
    /// Open (or a probe is in flight elsewhere): nothing until `until_ms`.
    Open { until_ms: i64 },
}

/// One endpoint's stored breaker row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BreakerRow {
    /// Consecutive failures.
    pub failures: i64,
    /// Set while open or half-open (`<= now`: half-open).
    pub open_until_ms: Option<i64>,
    /// The current open period (doubles while probes fail).
    pub cooldown_ms: i64,
    /// The probe's lease while one is in flight.
    pub probe_until_ms: Option<i64>,
}

impl BreakerRow {
    /// Admission at `now_ms`; takes the probe (leased until
    /// `probe_until_ms`) when the open period has ended and nobody holds
    /// an unexpired one.
    pub fn admit(&mut self, now_ms: i64, probe_until_ms: i64) -> BreakerAdmission {
        match self.open_until_ms {
            None => BreakerAdmission::Closed,
            Some(until) if until > now_ms => BreakerAdmission::Open { until_ms: until },
            Some(_) => match self.probe_until_ms {
                Some(p) if p > now_ms => BreakerAdmission::Open { until_ms: p },
                _ => {
                    self.probe_until_ms = Some(probe_until_ms);
                    BreakerAdmission::Probe
                }
            },
        }
    }

    /// An attempt's result (`ok`: the endpoint answered in a way that is
    /// not its fault). A failure while half-open (the probe's) reopens it
    /// for twice as long, up to the maximum.
    pub fn record(&mut self, ok: bool, policy: BreakerPolicy, now_ms: i64) {
        if ok {
            *self = Self::default();
            return;
        }
        self.failures = self.failures.saturating_add(1);
        match self.open_until_ms {
            Some(until) if until <= now_ms => {
                let doubled = self.cooldown_ms.saturating_mul(2).max(policy.cooldown_ms);
                self.cooldown_ms = doubled.min(policy.max_cooldown_ms.max(policy.cooldown_ms));
                self.open_until_ms = Some(now_ms + self.cooldown_ms);
                self.probe_until_ms = None;
            }
            None if self.failures >= i64::from(policy.failures.max(1)) => {
                self.cooldown_ms = policy.cooldown_ms;
                self.open_until_ms = Some(now_ms + policy.cooldown_ms);
                self.probe_until_ms = None;
            }
            _ => {}
        }
    }

    /// The state as a gauge: 0 closed, 1 open, 2 half-open.
    pub fn gauge(&self, now_ms: i64) -> f64 {
        match self.open_until_ms {
            None => 0.0,
            Some(until) if until > now_ms => 1.0,
            Some(_) => 2.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_allows_the_burst_then_waits_one_interval() {
        let mut tat = None;
        for _ in 0..3 {
            tat = Some(gcra(tat, 100, 3, 1_000).unwrap());
        }
        assert_eq!(gcra(tat, 100, 3, 1_000), Err(100));
        assert_eq!(gcra(tat, 100, 3, 1_040), Err(60));
        assert!(gcra(tat, 100, 3, 1_100).is_ok());
    }

    #[test]
    fn breaker_opens_probes_doubles_and_closes() {
        let p = BreakerPolicy {
            failures: 2,
            cooldown_ms: 1_000,
            max_cooldown_ms: 3_000,
        };
        let mut b = BreakerRow::default();
        b.record(false, p, 0);
        assert_eq!(b.admit(0, 10), BreakerAdmission::Closed);
        b.record(false, p, 0);
        assert_eq!(b.admit(500, 10), BreakerAdmission::Open { until_ms: 1_000 });
        assert_eq!(b.admit(1_000, 1_500), BreakerAdmission::Probe);
        assert_eq!(
            b.admit(1_001, 1_501),
            BreakerAdmission::Open { until_ms: 1_500 }
        );
        b.record(false, p, 1_200);
        assert_eq!(b.open_until_ms, Some(3_200));
        b.record(false, p, 3_200); // the next probe fails: capped at 3 s
        assert_eq!(b.cooldown_ms, 3_000);
        b.record(true, p, 7_000);
        assert_eq!(b, BreakerRow::default());
    }
}
