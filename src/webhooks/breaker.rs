//! A circuit breaker per endpoint, in memory: this process's view, which
//! mid-call actions consult (a live call does not wait on the database).
//! Deliveries are governed by the breaker shared through the store
//! (`store/shared.rs`, the same rules) and feed this one too. After
//! `failures` consecutive failed attempts it opens and the endpoint gets no
//! requests for `cooldown`; then one probe goes through. A successful probe
//! closes it; a failed one reopens it for twice as long (up to
//! `max_cooldown`). Deliveries wait in the store meanwhile, their retry
//! budgets untouched.

use std::time::{Duration, Instant};

use crate::config::outbound::BreakerConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open {
        until: Instant,
        cooldown: Duration,
    },
    /// A probe is in flight.
    HalfOpen {
        cooldown: Duration,
    },
}

/// How many requests may start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowance {
    Any,
    /// One probe (the caller must report its result, or `cancel_probe`).
    Probe,
    None,
}

#[derive(Debug)]
pub struct Breaker {
    cfg: BreakerConfig,
    failures: u32,
    state: State,
}

impl Breaker {
    pub fn new(cfg: BreakerConfig) -> Self {
        Self {
            cfg,
            failures: 0,
            state: State::Closed,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// 0 closed, 1 open, 2 half-open (the metrics gauge).
    pub fn gauge(&self) -> f64 {
        match self.state {
            State::Closed => 0.0,
            State::Open { .. } => 1.0,
            State::HalfOpen { .. } => 2.0,
        }
    }

    pub fn allow(&mut self, now: Instant) -> Allowance {
        match self.state {
            State::Closed => Allowance::Any,
            State::Open { until, cooldown } if now >= until => {
                self.state = State::HalfOpen { cooldown };
                Allowance::Probe
            }
            State::Open { .. } | State::HalfOpen { .. } => Allowance::None,
        }
    }

    /// The probe found nothing to send: probe again next time.
    pub fn cancel_probe(&mut self, now: Instant) {
        if let State::HalfOpen { cooldown } = self.state {
            self.state = State::Open {
                until: now,
                cooldown,
            };
        }
    }

    /// An attempt's result (`ok`: the endpoint answered in a way that is
    /// not its fault: 2xx or a 4xx other than 408/429).
    pub fn record(&mut self, ok: bool, now: Instant) {
        if ok {
            self.failures = 0;
            self.state = State::Closed;
            return;
        }
        self.failures = self.failures.saturating_add(1);
        match self.state {
            State::HalfOpen { cooldown } => {
                let cooldown = (cooldown * 2).min(self.cfg.max_cooldown);
                self.state = State::Open {
                    until: now + cooldown,
                    cooldown,
                };
            }
            State::Closed if self.failures >= self.cfg.failures => {
                self.state = State::Open {
                    until: now + self.cfg.cooldown,
                    cooldown: self.cfg.cooldown,
                };
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_probes_then_closes() {
        let cfg = BreakerConfig {
            failures: 3,
            cooldown: Duration::from_secs(10),
            max_cooldown: Duration::from_secs(25),
        };
        let mut b = Breaker::new(cfg);
        let t0 = Instant::now();
        b.record(false, t0);
        b.record(false, t0);
        b.record(true, t0);
        b.record(false, t0);
        b.record(false, t0);
        assert_eq!(b.allow(t0), Allowance::Any, "a success resets the count");
        b.record(false, t0);
        assert_eq!(b.allow(t0), Allowance::None);
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(b.allow(t1), Allowance::Probe);
        assert_eq!(b.allow(t1), Allowance::None, "one probe at a time");
        b.record(false, t1);
        assert_eq!(
            b.state(),
            State::Open {
                until: t1 + Duration::from_secs(20),
                cooldown: Duration::from_secs(20)
            }
        );
        let t2 = t1 + Duration::from_secs(20);
        assert_eq!(b.allow(t2), Allowance::Probe);
        b.record(false, t2);
        assert!(
            matches!(b.state(), State::Open { cooldown, .. } if cooldown == Duration::from_secs(25)),
            "capped"
        );
        let t3 = t2 + Duration::from_secs(25);
        assert_eq!(b.allow(t3), Allowance::Probe);
        b.cancel_probe(t3);
        assert_eq!(
            b.allow(t3),
            Allowance::Probe,
            "a cancelled probe is offered again"
        );
        b.record(true, t3);
        assert_eq!(b.allow(t3), Allowance::Any);
    }
}
