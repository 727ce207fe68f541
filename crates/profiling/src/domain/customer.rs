//! A customer as clients send it, and the cleaned record that is stored.

use std::collections::HashMap;

use mercato_platform::error::FieldError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::contact;

pub const MAX_BATCH: usize = 1000;
const MAX_TRAITS_BYTES: usize = 16 * 1024;

/// Consent per channel. Absent means "not stated", which counts as no consent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Consent {
    pub email: Option<bool>,
    pub sms: Option<bool>,
    pub push: Option<bool>,
    /// Whether profile data may personalise generated copy.
    pub ai_personalization: Option<bool>,
}

/// A customer to create or update, matched on `external_id`. Absent fields keep their
/// stored values; `traits` are merged key by key.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "external_id": "cus_1042", "email": "Ada@Example.com", "phone": "+44 20 7946 0958",
    "first_name": "Ada", "last_name": "Lovelace", "locale": "en-GB", "country": "gb",
    "birth_year": 1985, "consent": {"email": true, "sms": false, "ai_personalization": true},
    "traits": {"plan": "gold"}
}))]
pub struct CustomerInput {
    /// The tenant's own id for the customer, 1 to 200 characters.
    pub external_id: String,
    pub email: Option<String>,
    /// E.164, or any common format with the country code.
    pub phone: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// BCP 47 tag, e.g. `pt-BR`.
    pub locale: Option<String>,
    /// ISO 3166-1 alpha-2.
    pub country: Option<String>,
    pub birth_year: Option<i32>,
    pub consent: Option<Consent>,
    /// Free-form attributes (a JSON object, up to 16 KiB).
    #[schema(value_type = Option<Object>)]
    pub traits: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A validated, normalised customer ready to upsert.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CleanCustomer {
    pub external_id: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub locale: Option<String>,
    pub country: Option<String>,
    pub birth_year: Option<i32>,
    pub consent: Consent,
    pub traits: Option<serde_json::Value>,
}

impl CustomerInput {
    /// Cleans every field, collecting all problems; `prefix` is prepended to field names
    /// (`items[3].`).
    pub fn clean(self, prefix: &str, current_year: i32) -> Result<CleanCustomer, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut check = |field: &str, result: Result<String, &'static str>| match result {
            Ok(v) => Some(v),
            Err(message) => {
                errors.push(FieldError::new(format!("{prefix}{field}"), message));
                None
            }
        };
        let external_id = check("external_id", {
            let id = self.external_id.trim();
            if id.is_empty() || id.chars().count() > 200 {
                Err("must be 1 to 200 characters")
            } else {
                Ok(id.to_owned())
            }
        });
        let email = self
            .email
            .and_then(|e| check("email", contact::normalize_email(&e)));
        let phone = self
            .phone
            .and_then(|p| check("phone", contact::normalize_phone(&p)));
        let name = |v: String| {
            let v = v.trim().to_owned();
            if v.chars().count() > 100 {
                Err("must be at most 100 characters")
            } else {
                Ok(v)
            }
        };
        let first_name = self.first_name.and_then(|v| check("first_name", name(v)));
        let last_name = self.last_name.and_then(|v| check("last_name", name(v)));
        let locale = self
            .locale
            .and_then(|v| check("locale", contact::normalize_locale(&v)));
        let country = self
            .country
            .and_then(|v| check("country", contact::normalize_country(&v)));
        if let Some(year) = self.birth_year
            && !(1900..=current_year).contains(&year)
        {
            errors.push(FieldError::new(
                format!("{prefix}birth_year"),
                format!("must be between 1900 and {current_year}"),
            ));
        }
        let traits = self.traits.map(serde_json::Value::Object);
        if let Some(t) = &traits
            && t.to_string().len() > MAX_TRAITS_BYTES
        {
            errors.push(FieldError::new(
                format!("{prefix}traits"),
                "must be at most 16 KiB of JSON",
            ));
        }
        match external_id {
            Some(external_id) if errors.is_empty() => Ok(CleanCustomer {
                external_id,
                email,
                phone,
                first_name,
                last_name,
                locale,
                country,
                birth_year: self.birth_year,
                consent: self.consent.unwrap_or_default(),
                traits,
            }),
            _ => Err(errors),
        }
    }
}

impl CleanCustomer {
    /// Folds a later record for the same customer into this one: the later one's stated
    /// fields win, traits merge.
    pub fn absorb(&mut self, later: CleanCustomer) {
        macro_rules! take {
            ($($f:ident),*) => { $( if later.$f.is_some() { self.$f = later.$f; } )* };
        }
        take!(
            email, phone, first_name, last_name, locale, country, birth_year
        );
        let c = later.consent;
        macro_rules! consent {
            ($($f:ident),*) => { $( if c.$f.is_some() { self.consent.$f = c.$f; } )* };
        }
        consent!(email, sms, push, ai_personalization);
        match (&mut self.traits, later.traits) {
            (Some(serde_json::Value::Object(mine)), Some(serde_json::Value::Object(theirs))) => {
                mine.extend(theirs)
            }
            (mine, Some(theirs)) => *mine = Some(theirs),
            (_, None) => {}
        }
    }
}

/// Collapses records with the same `external_id` (in order, later wins). Returns the
/// unique records and, for each input position, the index of the record it went into.
pub fn dedupe(records: Vec<(usize, CleanCustomer)>) -> (Vec<CleanCustomer>, HashMap<usize, usize>) {
    let mut unique: Vec<CleanCustomer> = Vec::new();
    let mut by_external: HashMap<String, usize> = HashMap::new();
    let mut slot_of = HashMap::new();
    for (position, record) in records {
        match by_external.get(&record.external_id) {
            Some(&slot) => {
                unique[slot].absorb(record);
                slot_of.insert(position, slot);
            }
            None => {
                by_external.insert(record.external_id.clone(), unique.len());
                slot_of.insert(position, unique.len());
                unique.push(record);
            }
        }
    }
    (unique, slot_of)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(external_id: &str) -> CustomerInput {
        CustomerInput {
            external_id: external_id.into(),
            ..Default::default()
        }
    }

    #[test]
    fn cleaning_normalises_and_names_each_bad_field() {
        let ok = CustomerInput {
            email: Some(" Ada@Example.com".into()),
            country: Some("gb".into()),
            ..input(" c1 ")
        }
        .clean("", 2026)
        .expect("valid");
        assert_eq!(ok.external_id, "c1");
        assert_eq!(ok.email.as_deref(), Some("ada@example.com"));
        assert_eq!(ok.country.as_deref(), Some("GB"));

        let errors = CustomerInput {
            email: Some("nope".into()),
            birth_year: Some(2031),
            ..input("")
        }
        .clean("items[4].", 2026)
        .expect_err("invalid");
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "items[4].external_id",
                "items[4].email",
                "items[4].birth_year"
            ]
        );
    }

    #[test]
    fn duplicates_merge_with_later_fields_winning() {
        let first = CustomerInput {
            email: Some("a@example.com".into()),
            consent: Some(Consent {
                email: Some(true),
                ..Default::default()
            }),
            ..input("c1")
        };
        let second = CustomerInput {
            phone: Some("+4915112345678".into()),
            consent: Some(Consent {
                email: Some(false),
                ..Default::default()
            }),
            ..input("c1")
        };
        let records = vec![
            (0, first.clean("", 2026).expect("ok")),
            (1, second.clean("", 2026).expect("ok")),
        ];
        let (unique, slots) = dedupe(records);
        assert_eq!(unique.len(), 1);
        assert_eq!(slots[&0], 0);
        assert_eq!(slots[&1], 0);
        assert_eq!(unique[0].email.as_deref(), Some("a@example.com"));
        assert_eq!(unique[0].phone.as_deref(), Some("+4915112345678"));
        assert_eq!(unique[0].consent.email, Some(false));
    }
}
