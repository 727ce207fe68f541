//! Normalising contact data: emails, phone numbers, country codes, locales. Pure rules,
//! no I/O; each returns the cleaned value or the reason it is not acceptable.

/// Trims and lower-cases an email; checks the shape `local@domain.tld`.
pub fn normalize_email(raw: &str) -> Result<String, &'static str> {
    let email = raw.trim().to_lowercase();
    if email.len() > 254 {
        return Err("is longer than 254 characters");
    }
    let (local, domain) = email
        .split_once('@')
        .ok_or("is not a valid email address")?;
    let valid_local = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c));
    let labels: Vec<&str> = domain.split('.').collect();
    let valid_domain = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        && labels
            .last()
            .is_some_and(|tld| tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic()));
    if valid_local && valid_domain {
        Ok(email)
    } else {
        Err("is not a valid email address")
    }
}

/// Normalises a phone number to E.164 (`+` and 8 to 15 digits). Spaces, dashes, dots and
/// brackets are dropped; a leading `00` becomes `+`. Numbers without a country code are
/// refused rather than guessed.
pub fn normalize_phone(raw: &str) -> Result<String, &'static str> {
    let trimmed = raw.trim();
    let rest = if let Some(r) = trimmed.strip_prefix('+') {
        r
    } else if let Some(r) = trimmed.strip_prefix("00") {
        r
    } else {
        return Err("must start with + and the country code (E.164)");
    };
    let mut digits = String::with_capacity(16);
    for c in rest.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => return Err("may contain only digits, spaces, dashes, dots and brackets"),
        }
    }
    if !(8..=15).contains(&digits.len()) || digits.starts_with('0') {
        return Err("must have 8 to 15 digits after the country code's +");
    }
    Ok(format!("+{digits}"))
}

/// ISO 3166-1 alpha-2 codes.
const COUNTRIES: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW";

pub fn normalize_country(raw: &str) -> Result<String, &'static str> {
    let code = raw.trim().to_ascii_uppercase();
    if code.len() == 2 && COUNTRIES.split(' ').any(|c| c == code) {
        Ok(code)
    } else {
        Err("is not an ISO 3166-1 alpha-2 country code")
    }
}

/// A BCP 47 language tag of the common shape `ll`, `ll-RR` or `ll-Scri-RR`, canonically cased.
pub fn normalize_locale(raw: &str) -> Result<String, &'static str> {
    let raw = raw.trim().replace('_', "-");
    let mut parts = raw.split('-');
    let lang = parts.next().unwrap_or_default();
    if !(2..=3).contains(&lang.len()) || !lang.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err("is not a language tag like `en` or `pt-BR`");
    }
    let mut out = lang.to_ascii_lowercase();
    for part in parts {
        let ok = part.chars().all(|c| c.is_ascii_alphanumeric());
        match part.len() {
            2 if ok => out.push_str(&format!("-{}", part.to_ascii_uppercase())),
            3 if part.chars().all(|c| c.is_ascii_digit()) => out.push_str(&format!("-{part}")),
            4 if ok => {
                let mut chars = part.chars();
                let first = chars
                    .next()
                    .map(|c| c.to_ascii_uppercase())
                    .unwrap_or_default();
                out.push_str(&format!("-{first}{}", chars.as_str().to_ascii_lowercase()));
            }
            _ => return Err("is not a language tag like `en` or `pt-BR`"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_lowercased_and_checked() {
        assert_eq!(
            normalize_email("  Ada.Lovelace@Example.COM ").as_deref(),
            Ok("ada.lovelace@example.com")
        );
        for bad in [
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a..b@example.com",
            "ada@exa mple.com",
            "ada@example.c0m",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn phones_become_e164() {
        assert_eq!(
            normalize_phone("+44 (20) 7946-0958").as_deref(),
            Ok("+442079460958")
        );
        assert_eq!(
            normalize_phone("0049 30 1234567").as_deref(),
            Ok("+49301234567")
        );
        assert!(normalize_phone("020 7946 0958").is_err());
        assert!(normalize_phone("+1 555").is_err());
        assert!(normalize_phone("+44 20 7946 095x").is_err());
    }

    #[test]
    fn countries_and_locales() {
        assert_eq!(normalize_country(" de").as_deref(), Ok("DE"));
        assert!(normalize_country("XX").is_err());
        assert!(normalize_country("DEU").is_err());
        assert_eq!(normalize_locale("pt_br").as_deref(), Ok("pt-BR"));
        assert_eq!(normalize_locale("zh-hant-tw").as_deref(), Ok("zh-Hant-TW"));
        assert!(normalize_locale("english").is_err());
    }
}
