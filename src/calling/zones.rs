//! The callee's candidate time zones, for the calling window.
//!
//! Policy, first hit wins: the explicit `timezone` input; else the zones of
//! the longest matching E.164 prefix in `number_zones.rs` (libphonenumber's
//! area-code time zones, so +1 212 is New York only); else every zone of
//! the number's country (`country_zones.rs`, from zone.tab); else the
//! agent's default zone. Several zones mean the window must be open in all
//! of them (an area code spanning two zones, or a country without a finer
//! match), which never calls anyone outside their local window.

use std::str::FromStr;

use chrono_tz::Tz;
use phonenumber::metadata::DATABASE;

use super::country_zones::COUNTRY_ZONES;
use super::number_zones::NUMBER_ZONES;

/// Parses an IANA zone name.
pub fn parse_zone(name: &str) -> Result<Tz, String> {
    Tz::from_str(name)
        .map_err(|_| format!("`{name}` is not an IANA time zone (e.g. America/New_York)"))
}

/// The callee's zones: the explicit one, else the number's area code's,
/// else its country's, else `default`.
pub fn callee_zones(e164: &str, explicit: Option<&str>, default: Tz) -> Result<Vec<Tz>, String> {
    if let Some(name) = explicit {
        return parse_zone(name).map(|tz| vec![tz]);
    }
    let names = prefix_zones(e164).or_else(|| {
        country_of(e164)
            .and_then(|cc| COUNTRY_ZONES.iter().find(|(c, _)| *c == cc))
            .map(|(_, names)| *names)
    });
    let zones: Vec<Tz> = names
        .unwrap_or_default()
        .iter()
        .filter_map(|n| Tz::from_str(n).ok())
        .collect();
    Ok(if zones.is_empty() {
        vec![default]
    } else {
        zones
    })
}

/// The zones of the longest prefix of the number's digits in the table.
fn prefix_zones(e164: &str) -> Option<&'static [&'static str]> {
    let digits = e164.strip_prefix('+').unwrap_or(e164);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // At most nine binary searches (the longest prefix has nine digits).
    (1..=digits.len().min(9)).rev().find_map(|len| {
        let prefix = &digits[..len];
        NUMBER_ZONES
            .binary_search_by(|(p, _)| (*p).cmp(prefix))
            .ok()
            .map(|i| NUMBER_ZONES[i].1)
    })
}

/// The ISO country of an E.164 number: the exact region when the number is
/// in a known range, else the main country of its calling code.
fn country_of(e164: &str) -> Option<String> {
    let number = phonenumber::parse(None, e164).ok()?;
    if let Some(id) = number.country().id() {
        return Some(id.as_ref().to_owned());
    }
    let metas = DATABASE.by_code(&number.code().value())?;
    metas
        .iter()
        .find(|m| m.is_main_country_for_code())
        .or(metas.first())
        .map(|m| m.id().to_owned())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::calling::window::CallingWindow;
    use crate::config::CallingWindowConfig;

    fn zones(e164: &str) -> Vec<String> {
        let mut names: Vec<String> = callee_zones(e164, None, Tz::UTC)
            .unwrap()
            .iter()
            .map(|tz| tz.name().to_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_number_table_is_sorted_and_every_zone_parses() {
        assert!(NUMBER_ZONES.len() > 1000, "{}", NUMBER_ZONES.len());
        for pair in NUMBER_ZONES.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{} then {}", pair[0].0, pair[1].0);
        }
        for (prefix, names) in NUMBER_ZONES {
            assert!(
                (1..=9).contains(&prefix.len()) && prefix.bytes().all(|b| b.is_ascii_digit()),
                "{prefix}"
            );
            assert!(!names.is_empty(), "{prefix}");
            for name in *names {
                assert!(parse_zone(name).is_ok(), "{prefix}: {name}");
            }
        }
    }

    #[test]
    fn us_and_canadian_area_codes_get_their_own_zone() {
        assert_eq!(zones("+12125550143"), ["America/New_York"]);
        assert_eq!(zones("+18085550143"), ["Pacific/Honolulu"]);
        assert_eq!(zones("+14155550143"), ["America/Los_Angeles"]);
        assert_eq!(zones("+14165550143"), ["America/Toronto"]);
        assert_eq!(zones("+16045550143"), ["America/Vancouver"]);
    }

    #[test]
    fn an_area_code_spanning_zones_keeps_both_and_the_window_common_to_them() {
        // South Dakota: Central and Mountain time.
        assert_eq!(
            zones("+16055550143"),
            ["America/Denver", "America/North_Dakota/Center"]
        );
        let tzs = callee_zones("+16055550143", None, Tz::UTC).unwrap();
        let chicago = chrono_tz::America::Chicago;
        let at = |h, m| {
            chicago
                .with_ymd_and_hms(2026, 11, 26, h, m, 0)
                .unwrap()
                .timestamp_millis()
        };
        let w = CallingWindow::parse(&CallingWindowConfig::default()).unwrap();
        // 08:30 Central is 07:30 Mountain: not yet; both open at 09:00 Central.
        assert!(!w.allows(at(8, 30), &tzs));
        assert_eq!(w.next_opening(at(8, 30), &tzs), Some(at(9, 0)));
    }

    #[test]
    fn other_countries_use_the_table_or_their_own_zones() {
        // Australia by state: 02 is New South Wales, 08 Western/South Australia.
        assert_eq!(zones("+61291234567"), ["Australia/Sydney"]);
        assert_eq!(
            zones("+61891234567"),
            ["Australia/Adelaide", "Australia/Perth"]
        );
        // A single-zone country needs no entry: its country's zone answers.
        assert_eq!(zones("+442079460958"), ["Europe/London"]);
    }

    #[test]
    fn an_unknown_prefix_falls_back_to_the_country_then_the_default() {
        // 555 is no area code: every US zone, Honolulu included.
        let us = zones("+15550121234");
        assert!(us.len() > 20, "{us:?}");
        assert!(us.iter().any(|z| z == "Pacific/Honolulu"));
        assert!(us.iter().any(|z| z == "America/New_York"));
        assert_eq!(
            callee_zones("not a number", None, chrono_tz::Asia::Tokyo).unwrap(),
            vec![chrono_tz::Asia::Tokyo]
        );
    }

    #[test]
    fn an_explicit_zone_wins_and_a_bad_one_is_refused() {
        assert_eq!(
            callee_zones("+12125550143", Some("Asia/Tokyo"), Tz::UTC).unwrap(),
            vec![chrono_tz::Asia::Tokyo]
        );
        assert!(callee_zones("+1", Some("Mars/Base"), Tz::UTC).is_err());
    }
}
