//! Campaigns: what a client may ask for, the checks it must pass, and the lifecycle.

use chrono::{DateTime, Utc};
use mercato_platform::error::FieldError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// Channels the decisioning can choose; email, SMS and push need the customer's consent.
pub const CHANNELS: [&str; 5] = ["email", "sms", "push", "ad", "social"];
pub const MAX_VARIANTS: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Draft,
    Running,
    Paused,
    Completed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Draft => "draft",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Completed => "completed",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "draft" => Status::Draft,
            "running" => Status::Running,
            "paused" => Status::Paused,
            "completed" => Status::Completed,
            _ => return None,
        })
    }

    /// Whether the lifecycle allows going from `self` to `to`:
    /// draft -> running -> paused <-> running, and running or paused -> completed.
    pub fn can_become(self, to: Status) -> bool {
        matches!(
            (self, to),
            (Status::Draft, Status::Running)
                | (Status::Running, Status::Paused)
                | (Status::Paused, Status::Running)
                | (Status::Running | Status::Paused, Status::Completed)
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GoalKind {
    Conversion,
    Revenue,
}

impl GoalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            GoalKind::Conversion => "conversion",
            GoalKind::Revenue => "revenue",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GoalInput {
    pub kind: GoalKind,
    /// The event that counts as a conversion (default `purchase`).
    pub event: Option<String>,
    /// What one conversion is worth when maximising conversions (default 1); sends cost
    /// money, so this is what makes a channel worth its price.
    pub value_per_conversion: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChannelCost {
    pub channel: String,
    /// Cost of one send, in the budget's currency.
    pub cost: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FrequencyCap {
    /// At most this many messages per customer, across all campaigns...
    pub max: i32,
    /// ...within this many hours.
    pub per_hours: i32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
}

/// How the campaign optimises itself while running.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Optimisation {
    pub enabled: bool,
    /// Seconds between optimisation runs (10 to 86400).
    pub interval_secs: u32,
    /// Pause a variant once its probability of being best falls below this (0 to 0.5).
    pub pause_below: f64,
    /// Sends a variant needs before it may be paused.
    pub min_sends: u32,
    /// Complete the campaign when the sequential test finds a winner.
    pub stop_on_decision: bool,
    /// Significance level of the sequential test.
    pub alpha: f64,
    /// Share of decisions spread uniformly over eligible arms (0 to 0.5): keeps every arm
    /// observable for off-policy evaluation.
    pub exploration: f64,
    /// When a generated variant is paused, ask the content service (its job
    /// `content.campaign_variants`) for a fresh one from the same brief, told what lost.
    pub refresh_paused: bool,
}

impl Default for Optimisation {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_secs: 300,
            pause_below: 0.02,
            min_sends: 500,
            stop_on_decision: false,
            alpha: 0.05,
            exploration: 0.05,
            refresh_paused: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VariantInput {
    pub name: String,
    /// The copy itself, by field (`subject`, `body`, `title`, `headline`...).
    #[schema(value_type = Option<Object>)]
    pub content: Option<serde_json::Map<String, serde_json::Value>>,
    /// A content template to render per customer instead of fixed copy.
    pub template_id: Option<String>,
    /// Where generated copy came from (model, prompt version, fields used).
    #[schema(value_type = Option<Object>)]
    pub provenance: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "name": "Spring reactivation",
    "goal": {"kind": "conversion", "event": "purchase", "value_per_conversion": 20.0},
    "segment_id": null,
    "context_by": "cluster",
    "channels": [{"channel": "email", "cost": 0.002}, {"channel": "sms", "cost": 0.04}],
    "variants": [
        {"name": "A", "content": {"subject": "We saved your cart", "body": "Come back for 10% off."}},
        {"name": "B", "content": {"subject": "Still thinking it over?", "body": "Your picks are waiting."}}
    ],
    "holdout_share": 0.1, "budget": 500.0,
    "frequency_cap": {"max": 3, "per_hours": 168}
}))]
pub struct CampaignInput {
    pub name: String,
    pub goal: GoalInput,
    /// A profiling segment; absent means every customer.
    pub segment_id: Option<Uuid>,
    /// What decisions condition on: `none` (default), `cluster`, or `trait:<key>`.
    pub context_by: Option<String>,
    pub channels: Vec<ChannelCost>,
    pub variants: Vec<VariantInput>,
    /// Share of the audience kept as a control group that gets nothing (0 to 0.5).
    pub holdout_share: Option<f64>,
    /// Total spend allowed; absent means no limit.
    pub budget: Option<f64>,
    pub frequency_cap: Option<FrequencyCap>,
    pub schedule: Option<Schedule>,
    pub optimisation: Option<Optimisation>,
    /// Seed of the decisioning's random draws (default: random).
    pub seed: Option<i64>,
}

/// A campaign that passed validation, ready to store.
#[derive(Debug, Clone)]
pub struct NewCampaign {
    pub name: String,
    pub goal: GoalKind,
    pub conversion_event: String,
    pub value_per_conversion: f64,
    pub segment_id: Option<Uuid>,
    pub context_by: String,
    pub channels: Vec<ChannelCost>,
    pub variants: Vec<NewVariant>,
    pub holdout_share: f64,
    pub budget: Option<f64>,
    pub frequency_cap: Option<FrequencyCap>,
    pub schedule: Schedule,
    pub optimisation: Optimisation,
    pub seed: i64,
}

#[derive(Debug, Clone)]
pub struct NewVariant {
    pub name: String,
    pub source: &'static str,
    pub content: serde_json::Value,
    pub template_id: Option<String>,
    pub provenance: serde_json::Value,
}

fn err(errors: &mut Vec<FieldError>, field: impl Into<String>, message: impl Into<String>) {
    errors.push(FieldError::new(field, message));
}

/// Checks a variant; `at` is its path in the request (`variants[1]`).
pub fn validate_variant(v: &VariantInput, at: &str, errors: &mut Vec<FieldError>) -> NewVariant {
    let name = v.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        err(errors, format!("{at}.name"), "must be 1 to 100 characters");
    }
    let content = v.content.clone().unwrap_or_default();
    for (key, value) in &content {
        match value.as_str() {
            Some(s) if !s.trim().is_empty() && s.chars().count() <= 10_000 => {}
            _ => err(
                errors,
                format!("{at}.content.{key}"),
                "must be non-empty text of at most 10000 characters",
            ),
        }
    }
    let template_id = v
        .template_id
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty());
    if content.is_empty() && template_id.is_none() {
        err(
            errors,
            format!("{at}.content"),
            "a variant needs content fields or a template_id",
        );
    }
    if !content.is_empty() && template_id.is_some() {
        err(
            errors,
            format!("{at}.template_id"),
            "give either content or a template_id, not both",
        );
    }
    if let Some(p) = &v.provenance
        && !p.is_object()
    {
        err(errors, format!("{at}.provenance"), "must be an object");
    }
    let source = if template_id.is_some() {
        "template"
    } else if v.provenance.is_some() {
        "generated"
    } else {
        "text"
    };
    NewVariant {
        name: name.to_owned(),
        source,
        content: serde_json::Value::Object(content),
        template_id: template_id.map(str::to_owned),
        provenance: v
            .provenance
            .clone()
            .unwrap_or_else(|| serde_json::json!({})),
    }
}

/// Whether `context_by` names a supported context.
pub fn valid_context(c: &str) -> bool {
    match c {
        "none" | "cluster" => true,
        _ => c.strip_prefix("trait:").is_some_and(|k| {
            !k.is_empty()
                && k.len() <= 64
                && k.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
        }),
    }
}

pub fn validate(input: CampaignInput, random_seed: i64) -> Result<NewCampaign, Vec<FieldError>> {
    let mut e = Vec::new();
    let name = input.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 200 {
        err(&mut e, "name", "must be 1 to 200 characters");
    }
    let event = input
        .goal
        .event
        .as_deref()
        .map(str::trim)
        .unwrap_or("purchase")
        .to_owned();
    if event.is_empty() || event.len() > 100 {
        err(&mut e, "goal.event", "must be 1 to 100 characters");
    }
    let value = input.goal.value_per_conversion.unwrap_or(1.0);
    if !(value.is_finite() && value >= 0.0) {
        err(
            &mut e,
            "goal.value_per_conversion",
            "must be a number of at least 0",
        );
    }
    let context_by = input.context_by.unwrap_or_else(|| "none".into());
    if !valid_context(&context_by) {
        err(
            &mut e,
            "context_by",
            "must be `none`, `cluster` or `trait:<key>` (letters, digits, _ and -)",
        );
    }
    if input.channels.is_empty() {
        err(&mut e, "channels", "must name at least one channel");
    }
    for (i, c) in input.channels.iter().enumerate() {
        if !CHANNELS.contains(&c.channel.as_str()) {
            err(
                &mut e,
                format!("channels[{i}].channel"),
                format!("must be one of {}", CHANNELS.join(", ")),
            );
        }
        if input.channels[..i].iter().any(|o| o.channel == c.channel) {
            err(&mut e, format!("channels[{i}].channel"), "is listed twice");
        }
        if !(c.cost.is_finite() && c.cost >= 0.0) {
            err(
                &mut e,
                format!("channels[{i}].cost"),
                "must be a number of at least 0",
            );
        }
    }
    if input.variants.is_empty() || input.variants.len() > MAX_VARIANTS {
        err(
            &mut e,
            "variants",
            format!("must hold 1 to {MAX_VARIANTS} variants"),
        );
    }
    let variants: Vec<NewVariant> = input
        .variants
        .iter()
        .enumerate()
        .map(|(i, v)| validate_variant(v, &format!("variants[{i}]"), &mut e))
        .collect();
    for (i, v) in variants.iter().enumerate() {
        if variants[..i].iter().any(|o| o.name == v.name) {
            err(&mut e, format!("variants[{i}].name"), "is used twice");
        }
    }
    let holdout_share = input.holdout_share.unwrap_or(0.0);
    if !(0.0..=0.5).contains(&holdout_share) {
        err(&mut e, "holdout_share", "must lie between 0 and 0.5");
    }
    if let Some(b) = input.budget
        && !(b.is_finite() && b >= 0.0)
    {
        err(&mut e, "budget", "must be a number of at least 0");
    }
    if let Some(cap) = &input.frequency_cap {
        if !(1..=1000).contains(&cap.max) {
            err(&mut e, "frequency_cap.max", "must lie between 1 and 1000");
        }
        if !(1..=24 * 366).contains(&cap.per_hours) {
            err(
                &mut e,
                "frequency_cap.per_hours",
                "must lie between 1 and 8784",
            );
        }
    }
    let schedule = input.schedule.unwrap_or_default();
    if let (Some(s), Some(t)) = (schedule.starts_at, schedule.ends_at)
        && t <= s
    {
        err(&mut e, "schedule.ends_at", "must be after starts_at");
    }
    let optimisation = input.optimisation.unwrap_or_default();
    let o = &optimisation;
    if !(10..=86_400).contains(&o.interval_secs) {
        err(
            &mut e,
            "optimisation.interval_secs",
            "must lie between 10 and 86400",
        );
    }
    if !(0.0..=0.5).contains(&o.pause_below) {
        err(
            &mut e,
            "optimisation.pause_below",
            "must lie between 0 and 0.5",
        );
    }
    if !(o.alpha > 0.0 && o.alpha < 0.5) {
        err(
            &mut e,
            "optimisation.alpha",
            "must lie strictly between 0 and 0.5",
        );
    }
    if !(0.0..=0.5).contains(&o.exploration) {
        err(
            &mut e,
            "optimisation.exploration",
            "must lie between 0 and 0.5",
        );
    }
    if !e.is_empty() {
        return Err(e);
    }
    Ok(NewCampaign {
        name,
        goal: input.goal.kind,
        conversion_event: event,
        value_per_conversion: value,
        segment_id: input.segment_id,
        context_by,
        channels: input.channels,
        variants,
        holdout_share,
        budget: input.budget,
        frequency_cap: input.frequency_cap,
        schedule,
        optimisation,
        seed: input.seed.unwrap_or(random_seed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> Result<CampaignInput, serde_json::Error> {
        serde_json::from_value(serde_json::json!({
            "name": "Spring",
            "goal": {"kind": "conversion"},
            "channels": [{"channel": "email", "cost": 0.01}],
            "variants": [{"name": "A", "content": {"subject": "Hi", "body": "Hello"}}]
        }))
    }

    fn fields(r: Result<NewCampaign, Vec<FieldError>>) -> Vec<String> {
        r.err()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn defaults_fill_in() -> Result<(), Box<dyn std::error::Error>> {
        let c = validate(input()?, 5).map_err(|e| format!("{e:?}"))?;
        assert_eq!(c.conversion_event, "purchase");
        assert_eq!(c.context_by, "none");
        assert_eq!(c.seed, 5);
        assert_eq!(c.variants[0].source, "text");
        assert_eq!(c.optimisation, Optimisation::default());
        Ok(())
    }

    #[test]
    fn each_bad_field_is_named() -> Result<(), Box<dyn std::error::Error>> {
        let mut i = input()?;
        i.channels.push(ChannelCost {
            channel: "fax".into(),
            cost: -1.0,
        });
        i.variants.push(VariantInput {
            name: "B".into(),
            content: None,
            template_id: None,
            provenance: None,
        });
        i.holdout_share = Some(0.9);
        i.budget = Some(-5.0);
        i.context_by = Some("trait:".into());
        assert_eq!(
            fields(validate(i, 1)),
            [
                "context_by",
                "channels[1].channel",
                "channels[1].cost",
                "variants[1].content",
                "holdout_share",
                "budget"
            ]
        );
        Ok(())
    }

    #[test]
    fn lifecycle() {
        use Status::*;
        assert!(Draft.can_become(Running));
        assert!(Running.can_become(Paused) && Paused.can_become(Running));
        assert!(Running.can_become(Completed) && Paused.can_become(Completed));
        assert!(!Draft.can_become(Paused) && !Draft.can_become(Completed));
        assert!(!Completed.can_become(Running) && !Running.can_become(Draft));
    }
}
