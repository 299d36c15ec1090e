//! Phone numbers to E.164 (`+1 (555) 012-1234` → `+15550121234`), with
//! libphonenumber's metadata (the `phonenumber` crate).
//!
//! Policy: only digits, spaces and `+ - ( ) . /` are accepted (libphonenumber
//! would read letters as keypad digits, so `555-CALL-NOW` or trailing junk
//! would dial something nobody wrote). A number without `+` is read in the
//! trigger's region. The national number must have a length that is possible
//! in its country (`possible`, the default: it admits test ranges such as
//! 555-01xx and ranges newer than the metadata), or match a number range
//! known to be assigned (`valid`).

use std::str::FromStr;

use phonenumber::country;
use phonenumber::metadata::DATABASE;
use serde::Deserialize;

/// The region for numbers written without a country code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region(country::Id);

impl Region {
    /// Parses an ISO 3166 alpha-2 code (`US`, `GB`).
    pub fn parse(s: &str) -> Result<Self, String> {
        country::Id::from_str(&s.to_ascii_uppercase())
            .map(Region)
            .map_err(|_| format!("`{s}` is not a known ISO 3166 region code (such as US or GB)"))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_ref()
    }
}

/// How strictly numbers are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PhoneValidation {
    /// The length is possible for the country.
    #[default]
    Possible,
    /// The number is in a range the metadata knows as assigned.
    Valid,
}

/// Normalises `raw` to E.164, or says why it cannot.
pub fn normalize(raw: &str, region: Region, strictness: PhoneValidation) -> Result<String, String> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err("is empty, expected a phone number".into());
    }
    if let Some(bad) = trimmed
        .chars()
        .find(|c| !(c.is_ascii_digit() || " +-().\u{a0}/".contains(*c)))
    {
        return Err(format!(
            "contains `{bad}`; a phone number may hold only digits, spaces and + - ( ) . /"
        ));
    }
    if trimmed.matches('+').count() > 1 || trimmed.find('+').is_some_and(|i| i > 0) {
        return Err("has a `+` that is not at the start".into());
    }
    let number = phonenumber::parse(Some(region.0), trimmed)
        .map_err(|e| format!("is not a phone number ({e})"))?;
    let code = number.code().value();
    let national_len = number.national().to_string().len() as u16;
    let Some(metas) = DATABASE.by_code(&code) else {
        return Err(format!("has an unknown country calling code +{code}"));
    };
    let ok = match strictness {
        PhoneValidation::Valid => number.is_valid(),
        PhoneValidation::Possible => metas
            .iter()
            .any(|m| possible_lengths(m).contains(&national_len)),
    };
    if !ok {
        return Err(match strictness {
            PhoneValidation::Valid => "is not a valid, assigned phone number".to_owned(),
            PhoneValidation::Possible => format!(
                "has {national_len} digits after +{code}, which is not a possible length there"
            ),
        });
    }
    Ok(number.format().mode(phonenumber::Mode::E164).to_string())
}

/// Every full-length (not local-only) national number length the region
/// uses, over all number types. The general descriptor alone is not enough:
/// the metadata often lists lengths only per type.
fn possible_lengths(meta: &phonenumber::Metadata) -> Vec<u16> {
    let d = meta.descriptors();
    let typed = [
        d.fixed_line(),
        d.mobile(),
        d.toll_free(),
        d.premium_rate(),
        d.shared_cost(),
        d.personal_number(),
        d.voip(),
        d.pager(),
        d.uan(),
        d.voicemail(),
    ];
    let mut lengths: Vec<u16> = std::iter::once(d.general())
        .chain(typed.into_iter().flatten())
        .flat_map(|desc| desc.possible_length().iter().copied())
        .collect();
    lengths.sort_unstable();
    lengths.dedup();
    lengths
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us() -> Region {
        Region::parse("US").unwrap()
    }

    #[test]
    fn formats_from_the_issue_normalise_to_e164() {
        let p = PhoneValidation::Possible;
        assert_eq!(
            normalize("+1 (555) 012-1234", us(), p).unwrap(),
            "+15550121234"
        );
        assert_eq!(normalize("555-012-1234", us(), p).unwrap(), "+15550121234");
        assert_eq!(
            normalize("+1 555-012-1234", us(), p).unwrap(),
            "+15550121234"
        );
        assert_eq!(
            normalize("+44 20 7946 0958", us(), p).unwrap(),
            "+442079460958"
        );
        assert_eq!(
            normalize("020 7946 0958", Region::parse("gb").unwrap(), p).unwrap(),
            "+442079460958"
        );
    }

    #[test]
    fn junk_short_and_lettered_numbers_are_refused() {
        let p = PhoneValidation::Possible;
        for bad in [
            "",
            "abc",
            "123",
            "+1 650 253 0000 junk",
            "555-CALL-NOW",
            "1+5550121234",
            "12345678901234567890",
        ] {
            assert!(normalize(bad, us(), p).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn valid_mode_refuses_unassigned_ranges_that_possible_mode_admits() {
        assert!(normalize("+1 555 012 1234", us(), PhoneValidation::Valid).is_err());
        assert_eq!(
            normalize("+1 202 555 0143", us(), PhoneValidation::Valid).unwrap(),
            "+12025550143"
        );
    }

    #[test]
    fn unknown_regions_are_rejected() {
        assert!(Region::parse("XX").is_err());
        assert_eq!(Region::parse("us").unwrap().as_str(), "US");
    }
}
