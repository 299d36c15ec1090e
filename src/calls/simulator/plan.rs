//! A call's fate, decided up front: answered or not, ring and talk time,
//! outcome, as a pure function of the seed and the call id.

use rand::{RngExt, SeedableRng};

use crate::config::SimulatorConfig;
use crate::store::CallStatus;

/// A call's predetermined fate.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub final_status: CallStatus,
    pub ring_ms: i64,
    pub talk_ms: i64,
    pub outcome: Option<String>,
}

impl Plan {
    /// The events and their offsets from the dial.
    pub(super) fn timeline(&self) -> Vec<(i64, CallStatus)> {
        let mut t = vec![(0, CallStatus::Ringing)];
        match self.final_status {
            CallStatus::Completed => {
                t.push((self.ring_ms, CallStatus::InProgress));
                t.push((self.ring_ms + self.talk_ms, CallStatus::Completed));
            }
            CallStatus::Failed => t.push((0, CallStatus::Failed)),
            other => t.push((self.ring_ms, other)),
        }
        t
    }

    /// The status a lookup reports `elapsed_ms` after the dial.
    pub(super) fn status_at(&self, elapsed_ms: i64) -> CallStatus {
        self.timeline()
            .into_iter()
            .take_while(|(at, _)| *at <= elapsed_ms)
            .last()
            .map(|(_, s)| s)
            .unwrap_or(CallStatus::Dialing)
    }
}

/// The fate of `call_id` under `cfg` (same seed, same id: same fate).
pub fn plan(cfg: &SimulatorConfig, call_id: &str) -> Plan {
    let mut seed_input = cfg.seed.to_le_bytes().to_vec();
    seed_input.extend_from_slice(call_id.as_bytes());
    let mut rng = rand::rngs::StdRng::from_seed(crate::crypto::sha256(&seed_input));
    let ring_ms = cfg.ring_time.as_millis() as i64;
    let (r_fail, r_answer, r_busy, r_talk, r_outcome): (f64, f64, f64, f64, f64) = (
        rng.random(),
        rng.random(),
        rng.random(),
        rng.random(),
        rng.random(),
    );
    if r_fail < cfg.fail_rate {
        return Plan {
            final_status: CallStatus::Failed,
            ring_ms: 0,
            talk_ms: 0,
            outcome: None,
        };
    }
    if r_answer >= cfg.answer_rate {
        let status = if r_busy < cfg.busy_rate {
            CallStatus::Busy
        } else {
            CallStatus::NoAnswer
        };
        return Plan {
            final_status: status,
            ring_ms,
            talk_ms: 0,
            outcome: None,
        };
    }
    let (min, max) = (
        cfg.min_duration.as_millis() as f64,
        cfg.max_duration.as_millis() as f64,
    );
    let total: f64 = cfg.outcomes.values().sum();
    let mut pick = r_outcome * total;
    let outcome = cfg
        .outcomes
        .iter()
        .find(|(_, w)| {
            pick -= **w;
            pick < 0.0
        })
        .or(cfg.outcomes.iter().last())
        .map(|(o, _)| o.clone());
    Plan {
        final_status: CallStatus::Completed,
        ring_ms,
        talk_ms: (min + (max - min) * r_talk) as i64,
        outcome,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(toml_text: &str) -> SimulatorConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn the_same_seed_and_call_give_the_same_fate() {
        let c = cfg("seed = 42");
        for id in ["call_a", "call_b", "call_c"] {
            assert_eq!(plan(&c, id), plan(&c, id));
        }
        let other = cfg("seed = 43");
        let differs =
            (0..50).any(|i| plan(&c, &format!("call_{i}")) != plan(&other, &format!("call_{i}")));
        assert!(differs, "another seed gives other fates");
    }

    #[test]
    fn the_mix_follows_the_configured_rates() {
        let c =
            cfg("seed = 1\nanswer_rate = 0.7\nbusy_rate = 0.5\noutcomes = { yes = 1.0, no = 3.0 }");
        let plans: Vec<Plan> = (0..2000).map(|i| plan(&c, &format!("call_{i}"))).collect();
        let answered = plans
            .iter()
            .filter(|p| p.final_status == CallStatus::Completed)
            .count();
        assert!((1300..1500).contains(&answered), "{answered}");
        let yes = plans
            .iter()
            .filter(|p| p.outcome.as_deref() == Some("yes"))
            .count();
        assert!((250..450).contains(&yes), "{yes}");
        assert!(
            plans
                .iter()
                .all(|p| p.final_status != CallStatus::Completed || p.talk_ms >= 20_000)
        );
        let never = cfg("answer_rate = 0.0\nbusy_rate = 1.0");
        assert_eq!(plan(&never, "x").final_status, CallStatus::Busy);
    }

    #[test]
    fn lookups_report_the_status_the_timeline_has_reached() {
        let p = Plan {
            final_status: CallStatus::Completed,
            ring_ms: 100,
            talk_ms: 1000,
            outcome: None,
        };
        assert_eq!(p.status_at(-1), CallStatus::Dialing);
        assert_eq!(p.status_at(0), CallStatus::Ringing);
        assert_eq!(p.status_at(500), CallStatus::InProgress);
        assert_eq!(p.status_at(5000), CallStatus::Completed);
    }
}
