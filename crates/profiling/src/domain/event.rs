//! Behavioural events as clients send them, and the cleaned record that is stored.

use chrono::{DateTime, TimeZone, Utc};
use mercato_platform::error::FieldError;
use serde::Deserialize;
use utoipa::ToSchema;

pub const MAX_BATCH: usize = 1000;
/// Clocks drift: timestamps up to this far ahead of ours are accepted.
pub const FUTURE_TOLERANCE_SECS: i64 = 300;
const MAX_PROPERTIES_BYTES: usize = 16 * 1024;

pub const KNOWN_TYPES: [&str; 9] = [
    "view",
    "click",
    "add_to_cart",
    "purchase",
    "email_open",
    "email_click",
    "sms_click",
    "push_open",
    "unsubscribe",
];

pub const CHANNELS: [&str; 7] = ["email", "sms", "push", "web", "app", "ad", "social"];

/// One event. `customer_id` is the tenant's own customer id (`external_id`); an event for a
/// customer not seen before creates them. Anonymous events join a profile once the
/// anonymous id is identified.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "event_id": "evt_9f1c", "customer_id": "cus_1042", "type": "purchase",
    "timestamp": "2026-11-27T18:45:00Z", "product_ids": ["sku-123"], "revenue": 59.90,
    "currency": "EUR", "channel": "email", "properties": {"order_id": "o-77"}
}))]
pub struct EventInput {
    /// Client-chosen id; a retry with the same id is recorded once.
    pub event_id: String,
    pub customer_id: Option<String>,
    pub anonymous_id: Option<String>,
    /// One of the known types, or `custom:<name>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// RFC 3339 time, or Unix seconds.
    #[schema(value_type = String, example = "2026-11-27T18:45:00Z")]
    pub timestamp: serde_json::Value,
    #[serde(default)]
    pub product_ids: Vec<String>,
    pub revenue: Option<f64>,
    /// ISO 4217 code, required with revenue.
    pub currency: Option<String>,
    pub channel: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub properties: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CleanEvent {
    pub event_id: String,
    pub customer_external_id: Option<String>,
    pub anonymous_id: Option<String>,
    pub kind: String,
    pub occurred_at: DateTime<Utc>,
    pub product_ids: Vec<String>,
    pub revenue: Option<f64>,
    pub currency: Option<String>,
    pub channel: Option<String>,
    pub properties: serde_json::Value,
}

fn is_custom(kind: &str) -> bool {
    kind.strip_prefix("custom")
        .and_then(|rest| rest.strip_prefix([':', '.', '_']))
        .is_some_and(|name| {
            !name.is_empty()
                && name.len() <= 100
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c))
        })
}

/// The channel an engagement event implies when it names none.
pub fn implied_channel(kind: &str) -> Option<&'static str> {
    match kind {
        "email_open" | "email_click" | "unsubscribe" => Some("email"),
        "sms_click" => Some("sms"),
        "push_open" => Some("push"),
        _ => None,
    }
}

/// Opens and clicks: what "engagement" means for preferred channel and best send hour.
pub fn is_engagement(kind: &str) -> bool {
    matches!(
        kind,
        "click" | "email_open" | "email_click" | "sms_click" | "push_open"
    )
}

pub fn parse_timestamp(value: &serde_json::Value) -> Result<DateTime<Utc>, &'static str> {
    match value {
        serde_json::Value::String(s) => DateTime::parse_from_rfc3339(s.trim())
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| "is not an RFC 3339 time such as 2026-11-27T18:45:00Z"),
        serde_json::Value::Number(n) => {
            let secs = n.as_f64().ok_or("is not a number of seconds")?;
            // Values this large are milliseconds.
            let secs = if secs > 1e11 { secs / 1000.0 } else { secs };
            Utc.timestamp_opt(secs.trunc() as i64, ((secs.fract()) * 1e9) as u32)
                .single()
                .ok_or("is not a valid Unix time")
        }
        _ => Err("must be an RFC 3339 string or Unix seconds"),
    }
}

fn clean_id(value: &str) -> Result<String, &'static str> {
    let v = value.trim();
    if v.is_empty() || v.chars().count() > 200 {
        Err("must be 1 to 200 characters")
    } else {
        Ok(v.to_owned())
    }
}

impl EventInput {
    pub fn clean(self, prefix: &str, now: DateTime<Utc>) -> Result<CleanEvent, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut fail = |field: &str, message: String| {
            errors.push(FieldError::new(format!("{prefix}{field}"), message))
        };

        let event_id = clean_id(&self.event_id)
            .map_err(|m| fail("event_id", m.into()))
            .ok();
        let customer = self
            .customer_id
            .as_deref()
            .map(clean_id)
            .transpose()
            .map_err(|m| fail("customer_id", m.into()))
            .ok()
            .flatten();
        let anonymous = self
            .anonymous_id
            .as_deref()
            .map(clean_id)
            .transpose()
            .map_err(|m| fail("anonymous_id", m.into()))
            .ok()
            .flatten();
        if self.customer_id.is_none() && self.anonymous_id.is_none() {
            fail(
                "customer_id",
                "either customer_id or anonymous_id is required".into(),
            );
        }
        let kind = self.kind.trim().to_owned();
        if !KNOWN_TYPES.contains(&kind.as_str()) && !is_custom(&kind) {
            fail(
                "type",
                format!(
                    "must be one of {} or start with `custom:`",
                    KNOWN_TYPES.join(", ")
                ),
            );
        }
        let occurred_at = match parse_timestamp(&self.timestamp) {
            Ok(t) if (t - now).num_seconds() > FUTURE_TOLERANCE_SECS => {
                fail(
                    "timestamp",
                    format!("is more than {FUTURE_TOLERANCE_SECS} s in the future"),
                );
                None
            }
            Ok(t) => Some(t),
            Err(m) => {
                fail("timestamp", m.into());
                None
            }
        };
        let mut product_ids = Vec::with_capacity(self.product_ids.len());
        for (i, id) in self.product_ids.iter().enumerate() {
            match clean_id(id) {
                Ok(id) => product_ids.push(id),
                Err(m) => fail(&format!("product_ids[{i}]"), m.into()),
            }
        }
        if let Some(revenue) = self.revenue
            && (!revenue.is_finite() || !(0.0..=1e12).contains(&revenue))
        {
            fail("revenue", "must be a non-negative amount".into());
        }
        let currency = self
            .currency
            .as_deref()
            .map(|c| c.trim().to_ascii_uppercase());
        if let Some(c) = &currency
            && (c.len() != 3 || !c.chars().all(|ch| ch.is_ascii_uppercase()))
        {
            fail("currency", "is not an ISO 4217 code such as EUR".into());
        }
        if self.revenue.is_some() && currency.is_none() {
            fail("currency", "is required with revenue".into());
        }
        let channel = self
            .channel
            .as_deref()
            .map(|c| c.trim().to_ascii_lowercase());
        if let Some(c) = &channel
            && !CHANNELS.contains(&c.as_str())
        {
            fail("channel", format!("must be one of {}", CHANNELS.join(", ")));
        }
        let properties = serde_json::Value::Object(self.properties.unwrap_or_default());
        if properties.to_string().len() > MAX_PROPERTIES_BYTES {
            fail("properties", "must be at most 16 KiB of JSON".into());
        }
        match (event_id, occurred_at) {
            (Some(event_id), Some(occurred_at)) if errors.is_empty() => Ok(CleanEvent {
                event_id,
                customer_external_id: customer,
                anonymous_id: anonymous,
                channel: channel.or_else(|| implied_channel(&kind).map(str::to_owned)),
                kind,
                occurred_at,
                product_ids,
                revenue: self.revenue,
                currency,
                properties,
            }),
            _ => Err(errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0)
            .single()
            .expect("valid date")
    }

    fn event(kind: &str) -> EventInput {
        EventInput {
            event_id: "e1".into(),
            customer_id: Some("c1".into()),
            kind: kind.into(),
            timestamp: json!("2026-11-28T11:00:00Z"),
            ..Default::default()
        }
    }

    #[test]
    fn known_and_custom_types_pass_others_fail() {
        assert!(event("purchase").clean("", now()).is_ok());
        assert!(event("custom:wishlist_add").clean("", now()).is_ok());
        let errors = event("wishlist_add")
            .clean("items[0].", now())
            .expect_err("unknown type");
        assert_eq!(errors[0].field, "items[0].type");
    }

    #[test]
    fn timestamps_parse_and_future_ones_are_refused() {
        let mut e = event("view");
        e.timestamp = json!(1_795_000_000);
        assert!(e.clone().clean("", now()).is_ok());
        e.timestamp = json!("2026-11-28T12:04:00Z");
        assert!(e.clone().clean("", now()).is_ok(), "within tolerance");
        e.timestamp = json!("2026-11-28T13:00:00Z");
        assert_eq!(
            e.clone().clean("", now()).expect_err("future")[0].field,
            "timestamp"
        );
        e.timestamp = json!("yesterday");
        assert_eq!(
            e.clean("", now()).expect_err("unparseable")[0].field,
            "timestamp"
        );
    }

    #[test]
    fn revenue_must_be_non_negative_with_a_currency() {
        let mut e = event("purchase");
        e.revenue = Some(-5.0);
        e.currency = Some("eur".into());
        assert_eq!(
            e.clone().clean("", now()).expect_err("negative")[0].field,
            "revenue"
        );
        e.revenue = Some(5.0);
        assert_eq!(
            e.clone()
                .clean("", now())
                .expect("valid")
                .currency
                .as_deref(),
            Some("EUR")
        );
        e.currency = None;
        assert_eq!(
            e.clean("", now()).expect_err("no currency")[0].field,
            "currency"
        );
    }

    #[test]
    fn engagement_events_imply_their_channel() {
        assert_eq!(
            event("email_open")
                .clean("", now())
                .expect("ok")
                .channel
                .as_deref(),
            Some("email")
        );
        let mut e = event("click");
        e.channel = Some("SMS".into());
        assert_eq!(
            e.clean("", now()).expect("ok").channel.as_deref(),
            Some("sms")
        );
    }

    #[test]
    fn a_subject_is_required() {
        let mut e = event("view");
        e.customer_id = None;
        assert_eq!(
            e.clean("", now()).expect_err("no subject")[0].field,
            "customer_id"
        );
    }
}
