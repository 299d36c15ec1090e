//! Calling windows in the callee's local time.
//!
//! Policy: a callee may have several candidate zones (`zones.rs` chooses
//! them); a call is placed only when it is inside the window in every one of
//! them, so no callee is called at 07:59 or 21:00 local. A job outside the
//! window is scheduled for the next opening (searched minute by minute over
//! the next eight days, exact across DST changes and half-hour offsets).

use chrono::{Datelike, TimeZone, Timelike};
use chrono_tz::Tz;

use crate::config::CallingWindowConfig;

/// A parsed calling window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallingWindow {
    enabled: bool,
    /// Monday first.
    days: [bool; 7],
    start_min: u32,
    end_min: u32,
}

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const MINUTE_MS: i64 = 60_000;
const SEARCH_MINUTES: i64 = 8 * 24 * 60;

impl CallingWindow {
    /// An always-open window.
    pub const ALWAYS: CallingWindow = CallingWindow {
        enabled: false,
        days: [true; 7],
        start_min: 0,
        end_min: 24 * 60,
    };

    pub fn parse(cfg: &CallingWindowConfig) -> Result<Self, String> {
        let mut days = [false; 7];
        for d in &cfg.days {
            let i = DAY_NAMES
                .iter()
                .position(|n| n.eq_ignore_ascii_case(d))
                .ok_or_else(|| format!("`{d}` is not a day (mon … sun)"))?;
            days[i] = true;
        }
        let start_min = hhmm(&cfg.start)?;
        let end_min = hhmm(&cfg.end)?;
        if cfg.enabled && start_min >= end_min {
            return Err(format!(
                "start {} must be before end {} (windows do not cross midnight)",
                cfg.start, cfg.end
            ));
        }
        if cfg.enabled && !days.contains(&true) {
            return Err("no days: calls could never be placed".into());
        }
        Ok(Self {
            enabled: cfg.enabled,
            days,
            start_min,
            end_min,
        })
    }

    fn allows_in(&self, at_ms: i64, tz: Tz) -> bool {
        let Some(local) = tz.timestamp_millis_opt(at_ms).single() else {
            return false;
        };
        let day = local.weekday().num_days_from_monday() as usize;
        let minute = local.hour() * 60 + local.minute();
        self.days[day] && (self.start_min..self.end_min).contains(&minute)
    }

    /// Whether a call may be placed at `at_ms` to a callee in all `zones`.
    pub fn allows(&self, at_ms: i64, zones: &[Tz]) -> bool {
        !self.enabled || zones.iter().all(|tz| self.allows_in(at_ms, *tz))
    }

    /// `now_ms` if allowed, else the start of the next allowed minute; `None`
    /// when no minute in the next eight days is allowed in every zone.
    pub fn next_opening(&self, now_ms: i64, zones: &[Tz]) -> Option<i64> {
        if self.allows(now_ms, zones) {
            return Some(now_ms);
        }
        let first = now_ms.div_euclid(MINUTE_MS) * MINUTE_MS + MINUTE_MS;
        (0..SEARCH_MINUTES)
            .map(|i| first + i * MINUTE_MS)
            .find(|t| self.allows(*t, zones))
    }
}

fn hhmm(s: &str) -> Result<u32, String> {
    let bad = || format!("`{s}` is not a time like 08:00");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m >= 60 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn us_default() -> CallingWindow {
        CallingWindow::parse(&CallingWindowConfig::default()).unwrap()
    }

    fn ms(tz: Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
        tz.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn an_explicit_zone_opens_at_eight_local() {
        let ny = chrono_tz::America::New_York;
        let w = us_default();
        let three_am = ms(ny, 2026, 11, 26, 3, 0);
        let opening = w.next_opening(three_am, &[ny]).unwrap();
        assert_eq!(opening, ms(ny, 2026, 11, 26, 8, 0));
        let noon = ms(ny, 2026, 11, 26, 12, 0);
        assert_eq!(w.next_opening(noon, &[ny]), Some(noon));
        // 21:00 is closed; the next opening is tomorrow 08:00.
        let nine_pm = ms(ny, 2026, 11, 26, 21, 0);
        assert_eq!(
            w.next_opening(nine_pm, &[ny]),
            Some(ms(ny, 2026, 11, 27, 8, 0))
        );
    }

    #[test]
    fn weekdays_only_windows_skip_the_weekend_across_dst() {
        let berlin = chrono_tz::Europe::Berlin;
        let w = CallingWindow::parse(&CallingWindowConfig {
            enabled: true,
            days: ["mon", "tue", "wed", "thu", "fri"]
                .map(String::from)
                .to_vec(),
            start: "09:30".into(),
            end: "17:00".into(),
        })
        .unwrap();
        // Saturday 24 Oct 2026, DST ends on Sunday 25 Oct.
        let saturday = ms(berlin, 2026, 10, 24, 12, 0);
        assert_eq!(
            w.next_opening(saturday, &[berlin]),
            Some(ms(berlin, 2026, 10, 26, 9, 30))
        );
    }

    #[test]
    fn bad_windows_are_refused() {
        let cfg = CallingWindowConfig {
            start: "21:00".into(),
            end: "08:00".into(),
            ..Default::default()
        };
        assert!(CallingWindow::parse(&cfg).is_err());
        let cfg = CallingWindowConfig {
            start: "8am".into(),
            ..Default::default()
        };
        assert!(CallingWindow::parse(&cfg).is_err());
        let cfg = CallingWindowConfig {
            days: vec!["funday".into()],
            ..Default::default()
        };
        assert!(CallingWindow::parse(&cfg).is_err());
        assert!(CallingWindow::ALWAYS.allows(0, &[Tz::UTC]));
    }
}
