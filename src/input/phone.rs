//! Phone numbers to E.164 (`+1 (555) 012-1234` → `+15550121234`), with
//! libphonenumber's metadata (the `phonenumber` crate).
//!
//! Policy: only digits, spaces and `+ - ( ) . /` are accepted (libphonenumber
//! would read letters as keypad digits, so `555-CALL-NOW` or trailing junk
//! would dial something nobody wrote). A number without `+` is read in the
//! trigger's region. Digits as written are kept when they fit the country's
//! numbers; a trunk prefix is dropped only when they do not (libphonenumber's
//! rule; the `phonenumber` crate's own reading is corrected for this, see
//! `national_number`). The national number must have a length that is possible
//! in its country (`possible`, the default: it admits test ranges such as
//! 555-01xx and ranges newer than the metadata), or match a number range
//! known to be assigned (`valid`). Either way the result has at most the 15
//! digits E.164 allows (the metadata admits longer national numbers in some
//! countries, such as Germany, which no carrier will dial as E.164), and a
//! zero after the country code only where numbers start with one (Italy).

use std::str::FromStr;

use phonenumber::country;
use phonenumber::metadata::DATABASE;

/// The region for numbers written without a country code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    id: country::Id,
    /// The region's country calling code (1 for the NANP regions).
    calling_code: u16,
}

impl Region {
    /// Parses an ISO 3166 alpha-2 code (`US`, `GB`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let unknown = || format!("`{s}` is not a known ISO 3166 region code (such as US or GB)");
        let id = country::Id::from_str(&s.to_ascii_uppercase()).map_err(|_| unknown())?;
        let meta = DATABASE.by_id(id.as_ref()).ok_or_else(unknown)?;
        Ok(Region {
            id,
            calling_code: meta.country_code(),
        })
    }

    pub fn as_str(&self) -> &str {
        self.id.as_ref()
    }
}

pub use crate::config::PhoneValidation;

/// Most digits in an E.164 number, country code included (ITU-T E.164 §6).
const E164_MAX_DIGITS: usize = 15;

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
    if strictness == PhoneValidation::Possible
        && let Some(e164) = nanp(trimmed, region)
    {
        return Ok(e164);
    }
    let number = phonenumber::parse(Some(region.id), trimmed)
        .map_err(|e| format!("is not a phone number ({e})"))?;
    let code = number.code().value();
    let Some(metas) = DATABASE.by_code(&code) else {
        return Err(format!("has an unknown country calling code +{code}"));
    };
    let national = national_number(trimmed, &number, region, &metas);
    // The parser keeps zeros that follow a national prefix (`0 0016716` in
    // GB gave `+440016716`, which reads back as +44 16716): a leading zero
    // stays only where the country's numbers may start with one (Italy).
    if national.starts_with('0') {
        let may_start_with_zero = metas.iter().any(|m| {
            m.descriptors()
                .general()
                .national_number()
                .find(&national)
                .is_some_and(|found| found.start() == 0)
        });
        if !may_start_with_zero {
            return Err(format!(
                "has a leading 0 after +{code}, which numbers there do not start with"
            ));
        }
    }
    let national_len = national.len() as u16;
    let ok = match strictness {
        PhoneValidation::Valid => metas.iter().any(|m| is_assigned(m, &national)),
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
    let e164 = format!("+{code}{national}");
    let digits = e164.len() - 1;
    if digits > E164_MAX_DIGITS {
        return Err(format!(
            "has {digits} digits with its country code +{code}; E.164 allows at most {E164_MAX_DIGITS}"
        ));
    }
    Ok(e164)
}

/// The national significant number, as libphonenumber defines it.
///
/// The `phonenumber` crate strips a national prefix and carrier code with
/// the metadata of the region it was *given*, even from a number written
/// with `+` and another country's code, and strips without checking that the
/// number was not already whole: read in US, `+44 1632 960961` became
/// +44 632960961 and `+55 11 91234 5678` +55 912345678 (wrong numbers,
/// dialled), in GB `+39 06 6982 1234` lost Italy's 0, in RU
/// `+7 800 555 3535` its 8. libphonenumber itself strips only when the
/// number as written does not fit the country's general pattern and what is
/// left does; so does this: the digits as written win when they fit, then a
/// national number without the region's trunk prefix, else a `+` number is
/// read with its own country's prefixes (`+44 (0)20 …`) and a national one
/// as the parser reads it in the trigger's region.
fn national_number(
    trimmed: &str,
    number: &phonenumber::PhoneNumber,
    region: Region,
    metas: &[&phonenumber::Metadata],
) -> String {
    let code = number.code().value();
    let digits: String = trimmed.chars().filter(char::is_ascii_digit).collect();
    let international = trimmed.starts_with('+');
    let as_written = if international {
        digits.strip_prefix(code.to_string().as_str())
    } else if code == region.calling_code {
        Some(digits.as_str())
    } else {
        // Dialled with an international prefix (`011 44 …`): the parser's.
        None
    };
    // The general pattern matched from the start, at a length the country
    // uses (the pattern alone is not anchored at the end).
    let fits = |nsn: &str| {
        metas.iter().any(|m| {
            possible_lengths(m).contains(&(nsn.len() as u16))
                && m.descriptors().general().is_match(nsn)
        })
    };
    if let Some(nsn) = as_written.filter(|nsn| fits(nsn)) {
        return nsn.to_owned();
    }
    // A national number with the region's trunk prefix (`8 800 …` in RU).
    if !international
        && let Some(prefix) = DATABASE
            .by_id(region.as_str())
            .and_then(|m| m.national_prefix())
        && let Some(nsn) = as_written.and_then(|d| d.strip_prefix(prefix))
        && fits(nsn)
    {
        return nsn.to_owned();
    }
    if international {
        let own = metas
            .iter()
            .find(|m| m.is_main_country_for_code())
            .or(metas.first())
            .and_then(|m| country::Id::from_str(m.id()).ok());
        if let Some(own) = own
            && let Ok(reread) = phonenumber::parse(Some(own), trimmed)
            && reread.code().value() == code
        {
            return reread.national().to_string();
        }
    }
    number.national().to_string()
}

/// Whether `national` is in a range `meta` knows as assigned (any number
/// type), as libphonenumber's `is_valid` decides it.
fn is_assigned(meta: &phonenumber::Metadata, national: &str) -> bool {
    let d = meta.descriptors();
    d.general().is_match(national)
        && [
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
        ]
        .into_iter()
        .flatten()
        .any(|t| t.is_match(national))
}

/// The common North American case without the general parser: `+1` and ten
/// digits, or (in a NANP region) ten digits with an optional leading trunk
/// `1`. For these, every NANP number of possible length is ten digits after
/// the `1`, which is exactly what the general path concludes, at a fraction
/// of its cost (it is on every accepted request). Anything else returns
/// `None` and takes the general path.
fn nanp(trimmed: &str, region: Region) -> Option<String> {
    let mut digits = [0u8; 11];
    let mut n = 0;
    for b in trimmed.bytes().filter(u8::is_ascii_digit) {
        *digits.get_mut(n)? = b;
        n += 1;
    }
    let national = match (trimmed.starts_with('+'), n, digits[0]) {
        (true, 11, b'1') => &digits[1..11],
        (false, 11, b'1') if region.calling_code == 1 => &digits[1..11],
        (false, 10, _) if region.calling_code == 1 => &digits[..10],
        _ => return None,
    };
    let mut e164 = String::with_capacity(12);
    e164.push_str("+1");
    e164.extend(national.iter().map(|d| char::from(*d)));
    Some(e164)
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
    fn numbers_longer_than_e164_allows_are_refused() {
        // Found by the `phone` fuzz target: German metadata admits 14-digit
        // national numbers, so +49 and 14 digits came out as a 16-digit
        // "E.164" number, in both modes.
        let de = Region::parse("DE").unwrap();
        for strictness in [PhoneValidation::Possible, PhoneValidation::Valid] {
            let err = normalize("91 987471547158", de, strictness).unwrap_err();
            assert!(err.contains("at most 15"), "{err}");
            assert!(normalize("+49 91 987471547158", us(), strictness).is_err());
        }
        // 15 digits is still fine.
        assert_eq!(
            normalize("9198747154715", de, PhoneValidation::Possible).unwrap(),
            "+499198747154715"
        );
    }

    #[test]
    fn leading_zeros_are_kept_only_where_numbers_start_with_one() {
        // Found by the `phone` fuzz target: zeros after the national prefix
        // survived into the E.164 form, which then read as another number
        // (+440016716 as +44 16716).
        for (raw, region) in [
            (")0 0 0 016716", "GB"),
            ("/00019(780 8171", "BR"),
            (" 000 30939", "AU"),
        ] {
            let err = normalize(
                raw,
                Region::parse(region).unwrap(),
                PhoneValidation::Possible,
            )
            .unwrap_err();
            assert!(err.contains("leading 0"), "{raw}: {err}");
        }
        // Written after the country code, Brazil's trunk 0 is dropped (as
        // `+44 (0)20 …`), not kept as a leading zero.
        assert_eq!(
            normalize("+55 0197808171", us(), PhoneValidation::Possible).as_deref(),
            Ok("+55197808171")
        );
        // Italy keeps its leading zero, in both directions.
        let it = Region::parse("IT").unwrap();
        assert_eq!(
            normalize("06 6982 1234", it, PhoneValidation::Possible).unwrap(),
            "+390669821234"
        );
        assert_eq!(
            normalize("+39 06 6982 1234", us(), PhoneValidation::Valid).unwrap(),
            "+390669821234"
        );
    }

    #[test]
    fn international_numbers_keep_their_digits_whatever_the_region() {
        // Found by the `phone` fuzz target (a result that did not normalise
        // to itself): the parser stripped the *trigger region's* national
        // prefix from other countries' numbers, and stripped prefixes from
        // numbers that were already whole.
        let region = |r: &str| Region::parse(r).unwrap();
        for (raw, in_region, e164) in [
            ("+44 1632 960961", "US", "+441632960961"),
            ("+44 113 496 0000", "US", "+441134960000"),
            ("+55 11 91234 5678", "US", "+5511912345678"),
            ("+39 06 6982 1234", "GB", "+390669821234"),
            ("+7 800 555 3535", "RU", "+78005553535"),
            ("+7 800 555 3535", "US", "+78005553535"),
            ("+559017650041", "BR", "+559017650041"),
            // A trunk 0 written in brackets is still the country's prefix.
            ("+44 (0)20 7946 0958", "US", "+442079460958"),
            ("+44 (0)20 7946 0958", "GB", "+442079460958"),
            // National numbers: the region's prefix goes, a whole number stays.
            ("020 7946 0958", "GB", "+442079460958"),
            ("8 800 555 3535", "RU", "+78005553535"),
            ("800 555 3535", "RU", "+78005553535"),
            ("06 6982 1234", "IT", "+390669821234"),
        ] {
            let possible = PhoneValidation::Possible;
            assert_eq!(
                normalize(raw, region(in_region), possible).as_deref(),
                Ok(e164),
                "{raw} in {in_region}"
            );
            assert_eq!(
                normalize(e164, region(in_region), possible).as_deref(),
                Ok(e164),
                "{e164} in {in_region}"
            );
            // `valid` may refuse a test range, but never reads another number.
            match normalize(raw, region(in_region), PhoneValidation::Valid) {
                Ok(got) => assert_eq!(got, e164, "{raw} in {in_region}, valid"),
                Err(why) => assert!(why.contains("not a valid"), "{raw}: {why}"),
            }
        }
        assert_eq!(
            normalize("+39 06 6982 1234", region("GB"), PhoneValidation::Valid).as_deref(),
            Ok("+390669821234")
        );
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
    fn the_nanp_shortcut_agrees_with_the_general_parser() {
        let ca = Region::parse("CA").unwrap();
        let gb = Region::parse("GB").unwrap();
        for (raw, region) in [
            ("+1 (555) 012-1234", us()),
            ("555-012-1234", us()),
            ("1 555 012 1234", us()),
            ("+1 415 555 2671", gb),
            ("(416) 555-0199", ca),
            ("+1 202.555.0143", us()),
        ] {
            let fast = nanp(raw, region).expect(raw);
            let general = phonenumber::parse(Some(region.id), raw).unwrap();
            assert_eq!(
                fast,
                general.format().mode(phonenumber::Mode::E164).to_string(),
                "{raw}"
            );
        }
        for (raw, region) in [
            ("555 0121", us()),
            ("020 7946 0958", gb),
            ("+44 20 7946 0958", us()),
            ("+1 555 012 12345", us()),
        ] {
            assert_eq!(nanp(raw, region), None, "{raw}");
        }
    }

    #[test]
    fn unknown_regions_are_rejected() {
        assert!(Region::parse("XX").is_err());
        assert_eq!(Region::parse("us").unwrap().as_str(), "US");
    }
}
