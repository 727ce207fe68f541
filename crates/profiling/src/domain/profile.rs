//! Profiles: the running aggregates events add to, and what is read off them (RFM scores
//! and named segment, preferred channel, best send hour, top interests).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Timelike, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::event::is_engagement;

/// What one stored event contributes to its customer's profile.
#[derive(Debug, Clone)]
pub struct EventFact {
    pub customer_id: Uuid,
    pub kind: String,
    pub occurred_at: DateTime<Utc>,
    pub revenue: Option<f64>,
    pub channel: Option<String>,
    pub product_ids: Vec<String>,
    pub categories: Vec<String>,
}

/// The additive change a batch of events makes to one profile.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileDelta {
    pub customer_id: Uuid,
    pub event_count: i64,
    pub first_event_at: DateTime<Utc>,
    pub last_event_at: DateTime<Utc>,
    pub purchase_count: i64,
    pub revenue: f64,
    pub first_purchase_at: Option<DateTime<Utc>>,
    pub last_purchase_at: Option<DateTime<Utc>>,
    pub channel_engagement: BTreeMap<String, i64>,
    pub hour_engagement: [i64; 24],
    pub category_counts: BTreeMap<String, i64>,
    pub product_counts: BTreeMap<String, i64>,
}

impl ProfileDelta {
    /// Adds another delta (or a stored profile read as one) into this one. Every field is a
    /// count, a sum, a minimum or a maximum, so the order of merging does not matter.
    pub fn merge(&mut self, other: &ProfileDelta) {
        self.event_count += other.event_count;
        self.first_event_at = self.first_event_at.min(other.first_event_at);
        self.last_event_at = self.last_event_at.max(other.last_event_at);
        self.purchase_count += other.purchase_count;
        self.revenue += other.revenue;
        self.first_purchase_at = earliest(self.first_purchase_at, other.first_purchase_at);
        self.last_purchase_at = latest(self.last_purchase_at, other.last_purchase_at);
        for (map, add) in [
            (&mut self.channel_engagement, &other.channel_engagement),
            (&mut self.category_counts, &other.category_counts),
            (&mut self.product_counts, &other.product_counts),
        ] {
            for (k, v) in add {
                *map.entry(k.clone()).or_default() += v;
            }
        }
        for (mine, theirs) in self.hour_engagement.iter_mut().zip(other.hour_engagement) {
            *mine += theirs;
        }
    }
}

fn earliest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

fn latest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    }
}

/// Folds events into one delta per customer.
pub fn deltas(events: &[EventFact]) -> Vec<ProfileDelta> {
    let mut by_customer: HashMap<Uuid, ProfileDelta> = HashMap::new();
    for e in events {
        let d = by_customer
            .entry(e.customer_id)
            .or_insert_with(|| ProfileDelta {
                customer_id: e.customer_id,
                event_count: 0,
                first_event_at: e.occurred_at,
                last_event_at: e.occurred_at,
                purchase_count: 0,
                revenue: 0.0,
                first_purchase_at: None,
                last_purchase_at: None,
                channel_engagement: BTreeMap::new(),
                hour_engagement: [0; 24],
                category_counts: BTreeMap::new(),
                product_counts: BTreeMap::new(),
            });
        d.event_count += 1;
        d.first_event_at = d.first_event_at.min(e.occurred_at);
        d.last_event_at = d.last_event_at.max(e.occurred_at);
        if e.kind == "purchase" {
            d.purchase_count += 1;
            d.revenue += e.revenue.unwrap_or(0.0);
            d.first_purchase_at = Some(
                d.first_purchase_at
                    .map_or(e.occurred_at, |t| t.min(e.occurred_at)),
            );
            d.last_purchase_at = Some(
                d.last_purchase_at
                    .map_or(e.occurred_at, |t| t.max(e.occurred_at)),
            );
        }
        if is_engagement(&e.kind) {
            if let Some(channel) = &e.channel {
                *d.channel_engagement.entry(channel.clone()).or_default() += 1;
            }
            d.hour_engagement[e.occurred_at.hour() as usize] += 1;
        }
        // Interest signals: what they looked at, carted and bought.
        if matches!(
            e.kind.as_str(),
            "view" | "click" | "add_to_cart" | "purchase"
        ) {
            for p in &e.product_ids {
                *d.product_counts.entry(p.clone()).or_default() += 1;
            }
            for c in &e.categories {
                *d.category_counts.entry(c.clone()).or_default() += 1;
            }
        }
    }
    let mut out: Vec<ProfileDelta> = by_customer.into_values().collect();
    out.sort_by_key(|d| d.customer_id);
    out
}

/// The named RFM segment, from recency and frequency scores (1 worst .. 5 best).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RfmSegment {
    Champions,
    Loyal,
    PotentialLoyalist,
    New,
    Promising,
    NeedsAttention,
    AboutToSleep,
    AtRisk,
    CannotLoseThem,
    Hibernating,
    Lost,
}

impl RfmSegment {
    /// The usual recency × frequency grid.
    pub fn from_scores(r: u8, f: u8) -> Self {
        match (r, f) {
            (5, 4..=5) => Self::Champions,
            (3..=4, 4..=5) => Self::Loyal,
            (4..=5, 2..=3) => Self::PotentialLoyalist,
            (5, _) => Self::New,
            (4, _) => Self::Promising,
            (3, 3) => Self::NeedsAttention,
            (3, _) => Self::AboutToSleep,
            (_, 5) => Self::CannotLoseThem,
            (1..=2, 3..=4) => Self::AtRisk,
            (1, 1) => Self::Lost,
            _ => Self::Hibernating,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Champions => "champions",
            Self::Loyal => "loyal",
            Self::PotentialLoyalist => "potential_loyalist",
            Self::New => "new",
            Self::Promising => "promising",
            Self::NeedsAttention => "needs_attention",
            Self::AboutToSleep => "about_to_sleep",
            Self::AtRisk => "at_risk",
            Self::CannotLoseThem => "cannot_lose_them",
            Self::Hibernating => "hibernating",
            Self::Lost => "lost",
        }
    }

    pub const ALL: [RfmSegment; 11] = [
        Self::Champions,
        Self::Loyal,
        Self::PotentialLoyalist,
        Self::New,
        Self::Promising,
        Self::NeedsAttention,
        Self::AboutToSleep,
        Self::AtRisk,
        Self::CannotLoseThem,
        Self::Hibernating,
        Self::Lost,
    ];
}

/// RFM score 1 (worst) to 5 (best) from the tenant's quintile cut points. For recency
/// (days since the last purchase) lower is better. The SQL in `domain::segment` computes the
/// same score; a value equal to a cut point counts as below it in both.
pub fn quintile_score(value: f64, cuts: &[f64], lower_is_better: bool) -> u8 {
    let above = cuts.iter().filter(|c| value > **c).count().min(4) as u8;
    if lower_is_better {
        5 - above
    } else {
        1 + above
    }
}

/// The channel with the most engagement (ties: alphabetical), if any.
pub fn preferred_channel(engagement: &BTreeMap<String, i64>) -> Option<String> {
    engagement
        .iter()
        .filter(|(_, n)| **n > 0)
        .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
        .map(|(c, _)| c.clone())
}

/// The hour of day (UTC) with the most opens and clicks, if any.
pub fn best_hour(hours: &[i64]) -> Option<u8> {
    hours
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(&a.0)))
        .map(|(h, _)| h as u8)
}

/// The `k` keys with the highest counts (ties: alphabetical).
pub fn top(counts: &BTreeMap<String, i64>, k: usize) -> Vec<String> {
    let mut items: Vec<(&String, &i64)> = counts.iter().collect();
    items.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    items
        .into_iter()
        .take(k)
        .map(|(key, _)| key.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 1, h, 0, 0)
            .single()
            .expect("valid")
    }

    fn fact(customer: Uuid, kind: &str, hour: u32) -> EventFact {
        EventFact {
            customer_id: customer,
            kind: kind.into(),
            occurred_at: at(hour),
            revenue: (kind == "purchase").then_some(10.0),
            channel: (kind == "email_open").then(|| "email".to_owned()),
            product_ids: vec!["p1".into()],
            categories: vec!["shoes".into()],
        }
    }

    #[test]
    fn deltas_add_up_per_customer_in_any_order() {
        let a = Uuid::new_v4();
        let b = Uuid::new_v4();
        let events = vec![
            fact(a, "purchase", 9),
            fact(a, "email_open", 20),
            fact(b, "view", 3),
            fact(a, "purchase", 7),
        ];
        let mut reversed = events.clone();
        reversed.reverse();
        let d = deltas(&events);
        assert_eq!(d, deltas(&reversed));
        let da = d.iter().find(|x| x.customer_id == a).expect("a");
        assert_eq!(da.event_count, 3);
        assert_eq!(da.purchase_count, 2);
        assert_eq!(da.revenue, 20.0);
        assert_eq!(da.first_purchase_at, Some(at(7)));
        assert_eq!(da.last_purchase_at, Some(at(9)));
        assert_eq!(da.channel_engagement.get("email"), Some(&1));
        assert_eq!(da.hour_engagement[20], 1);
        assert_eq!(da.category_counts.get("shoes"), Some(&2));
    }

    #[test]
    fn merging_deltas_equals_one_delta_of_all_events() {
        let a = Uuid::new_v4();
        let events = vec![
            fact(a, "purchase", 9),
            fact(a, "email_open", 20),
            fact(a, "view", 3),
            fact(a, "purchase", 7),
        ];
        let mut first = deltas(&events[..2]).remove(0);
        first.merge(&deltas(&events[2..]).remove(0));
        assert_eq!(first, deltas(&events).remove(0));
    }

    #[test]
    fn rfm_grid_names_every_cell() {
        assert_eq!(RfmSegment::from_scores(5, 5), RfmSegment::Champions);
        assert_eq!(RfmSegment::from_scores(4, 4), RfmSegment::Loyal);
        assert_eq!(RfmSegment::from_scores(5, 1), RfmSegment::New);
        assert_eq!(RfmSegment::from_scores(4, 1), RfmSegment::Promising);
        assert_eq!(RfmSegment::from_scores(4, 2), RfmSegment::PotentialLoyalist);
        assert_eq!(RfmSegment::from_scores(3, 3), RfmSegment::NeedsAttention);
        assert_eq!(RfmSegment::from_scores(3, 1), RfmSegment::AboutToSleep);
        assert_eq!(RfmSegment::from_scores(2, 4), RfmSegment::AtRisk);
        assert_eq!(RfmSegment::from_scores(1, 5), RfmSegment::CannotLoseThem);
        assert_eq!(RfmSegment::from_scores(2, 2), RfmSegment::Hibernating);
        assert_eq!(RfmSegment::from_scores(1, 1), RfmSegment::Lost);
        let mut seen = std::collections::HashSet::new();
        for r in 1..=5 {
            for f in 1..=5 {
                seen.insert(RfmSegment::from_scores(r, f));
            }
        }
        assert_eq!(
            seen.len(),
            RfmSegment::ALL.len(),
            "every segment is reachable"
        );
    }

    #[test]
    fn quintile_scores_run_one_to_five() {
        let cuts = [2.0, 4.0, 6.0, 8.0];
        assert_eq!(quintile_score(1.0, &cuts, false), 1);
        assert_eq!(
            quintile_score(4.0, &cuts, false),
            2,
            "equal to a cut counts below it"
        );
        assert_eq!(quintile_score(9.0, &cuts, false), 5);
        assert_eq!(quintile_score(1.0, &cuts, true), 5);
        assert_eq!(quintile_score(9.0, &cuts, true), 1);
    }

    #[test]
    fn preferences_pick_the_strongest_signal() {
        let mut m = BTreeMap::new();
        m.insert("email".to_owned(), 3);
        m.insert("sms".to_owned(), 5);
        assert_eq!(preferred_channel(&m).as_deref(), Some("sms"));
        let mut hours = [0i64; 24];
        assert_eq!(best_hour(&hours), None);
        hours[19] = 4;
        hours[8] = 2;
        assert_eq!(best_hour(&hours), Some(19));
        m.insert("push".to_owned(), 5);
        assert_eq!(top(&m, 2), ["push", "sms"]);
    }
}
