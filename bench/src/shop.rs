//! A synthetic but realistic shop: customers with latent preferences and a known true
//! purchase propensity, who join during the year and may lapse (as in the Pareto/NBD and
//! BG/NBD models of customer bases), a catalog with long-tailed prices, sessions with
//! weekly and yearly seasonality, and purchases concentrated in few customers.
//! Deterministic for a seed and a clock.

use chrono::{DateTime, Duration, Utc};
use mercato_platform::random::SplitMix64;

/// The shop's draws: SplitMix64 with the distributions the generator needs.
pub struct Rng(SplitMix64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(SplitMix64::new(seed))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        (-2.0 * self.unit().ln()).sqrt() * (std::f64::consts::TAU * self.unit()).cos()
    }
    /// Gamma(shape, 1) by Marsaglia-Tsang (shape < 1 boosted).
    pub fn gamma(&mut self, shape: f64) -> f64 {
        if shape < 1.0 {
            return self.gamma(shape + 1.0) * self.unit().powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = (1.0 + c * x).powi(3);
            if v > 0.0 && self.unit().ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v;
            }
        }
    }
    pub fn beta(&mut self, a: f64, b: f64) -> f64 {
        let x = self.gamma(a);
        x / (x + self.gamma(b))
    }
}

pub const CATEGORIES: [&str; 12] = [
    "shoes",
    "jackets",
    "tents",
    "backpacks",
    "climbing",
    "cycling",
    "running",
    "swim",
    "kids",
    "camp-kitchen",
    "optics",
    "yoga",
];
pub const CHANNELS: [&str; 3] = ["email", "sms", "push"];

pub struct Product {
    pub id: String,
    pub category: usize,
    pub price: f64,
}

pub struct Customer {
    pub external_id: String,
    /// Sessions per year while active.
    pub activity: f64,
    /// Chance that a session ends in a purchase.
    pub propensity: f64,
    /// When the customer joined (the start of the year for those who were already there).
    pub joined: DateTime<Utc>,
    /// When the customer lapses for good (possibly after the end of the data).
    pub lapses: DateTime<Utc>,
    pub category: usize,
    pub channel: usize,
    pub hour: u32,
}

impl Customer {
    /// The true purchase rate (purchases a year) at `t`: activity x propensity while the
    /// customer is active, 0 before joining and after lapsing. The ground truth a model
    /// should recover.
    pub fn purchase_rate_at(&self, t: DateTime<Utc>) -> f64 {
        if self.joined <= t && t < self.lapses {
            self.activity * self.propensity
        } else {
            0.0
        }
    }
}

/// Share of customers who join during the year (the rest are there from its start).
pub const JOINING_SHARE: f64 = 0.3;
/// Mean of the customers' lapse rates, per year (each customer's is Gamma with shape
/// [`LAPSE_SHAPE`]).
pub const MEAN_LAPSE_RATE: f64 = 0.8;
pub const LAPSE_SHAPE: f64 = 2.0;
/// Shape of the Gamma the activities are drawn from (before scaling to the event count).
pub const ACTIVITY_SHAPE: f64 = 0.6;
/// Beta(a, b) of the purchase propensities.
pub const PROPENSITY_BETA: (f64, f64) = (1.2, 12.0);

pub struct Event {
    pub event_id: String,
    pub customer: usize,
    pub kind: &'static str,
    pub at: DateTime<Utc>,
    pub product: Option<usize>,
    pub revenue: Option<f64>,
    pub channel: Option<&'static str>,
}

pub struct Shop {
    pub products: Vec<Product>,
    pub customers: Vec<Customer>,
    pub events: Vec<Event>,
    /// The start of the year the events cover.
    pub start: DateTime<Utc>,
    /// Sessions a year per unit of the activity Gamma: activity = scale x Gamma(shape).
    pub activity_scale: f64,
}

/// Generates about `events` events for `customers` customers over the last year.
pub fn generate(customers: usize, events: usize, seed: u64) -> Shop {
    let mut rng = Rng::new(seed);
    let products: Vec<Product> = (0..2000)
        .map(|i| Product {
            id: format!("sku-{i:05}"),
            category: rng.below(CATEGORIES.len()),
            price: (3.2 + 0.8 * rng.normal()).exp().clamp(3.0, 2000.0).round(),
        })
        .collect();
    let now = Utc::now() - Duration::hours(1);
    let start = now - Duration::days(365);
    let at_day = |days: f64| start + Duration::seconds((days * 86400.0) as i64);
    let mut people: Vec<Customer> = (0..customers)
        .map(|i| {
            let joined = if rng.unit() < JOINING_SHARE {
                rng.unit() * 365.0
            } else {
                0.0
            };
            let lapse_rate = rng.gamma(LAPSE_SHAPE) * MEAN_LAPSE_RATE / LAPSE_SHAPE;
            let lifetime = -rng.unit().ln() / lapse_rate.max(1e-9) * 365.0;
            Customer {
                external_id: format!("cus-{i:07}"),
                activity: rng.gamma(ACTIVITY_SHAPE),
                propensity: rng.beta(PROPENSITY_BETA.0, PROPENSITY_BETA.1),
                joined: at_day(joined),
                lapses: at_day((joined + lifetime).min(365.0 * 100.0)),
                category: rng.below(CATEGORIES.len()),
                channel: rng.below(CHANNELS.len()),
                hour: (18.0 + 3.0 * rng.normal()).rem_euclid(24.0) as u32,
            }
        })
        .collect();
    // Days of the year each customer is active.
    let active_days = |c: &Customer| {
        let from = (c.joined - start).num_seconds() as f64 / 86400.0;
        let until = ((c.lapses - start).num_seconds() as f64 / 86400.0).min(365.0);
        (from, (until - from).max(0.0))
    };
    // Scale activity so the expected event count meets the target (~4 events a session).
    let total: f64 = people
        .iter()
        .map(|c| c.activity * active_days(c).1 / 365.0)
        .sum();
    let sessions_wanted = events as f64 / 4.0;
    let activity_scale = sessions_wanted / total.max(1e-9);
    for c in &mut people {
        c.activity *= activity_scale;
    }
    let mut out = Vec::with_capacity(events + events / 10);
    for (ci, c) in people.iter().enumerate() {
        let (from, span) = active_days(c);
        let sessions = poisson(&mut rng, c.activity * span / 365.0);
        for s in 0..sessions {
            // Weekly rhythm and a December peak: reject days by a seasonal weight.
            let at = loop {
                let t = at_day(from + rng.unit() * span);
                let weekday = chrono::Datelike::weekday(&t).num_days_from_monday();
                let month = chrono::Datelike::month(&t);
                let weight =
                    (if weekday >= 5 { 1.0 } else { 0.7 }) * (if month == 12 { 1.0 } else { 0.6 });
                if rng.unit() < weight {
                    break t;
                }
            };
            let mut push = |kind: &'static str,
                            product: Option<usize>,
                            revenue: Option<f64>,
                            channel: Option<&'static str>,
                            at| {
                out.push(Event {
                    event_id: format!("{ci}-{s}-{}", out.len()),
                    customer: ci,
                    kind,
                    at,
                    product,
                    revenue,
                    channel,
                });
            };
            if rng.unit() < 0.5 {
                let mut hour_at = at
                    .date_naive()
                    .and_hms_opt(c.hour, rng.below(60) as u32, 0)
                    .map(|t| t.and_utc())
                    .unwrap_or(at);
                if hour_at > now {
                    hour_at = at;
                }
                let channel = if rng.unit() < 0.7 {
                    CHANNELS[c.channel]
                } else {
                    CHANNELS[rng.below(3)]
                };
                let kind = match channel {
                    "email" => "email_open",
                    "sms" => "sms_click",
                    _ => "push_open",
                };
                push(kind, None, None, Some(channel), hour_at);
            }
            let views = 1 + rng.below(4);
            let mut last = 0;
            for _ in 0..views {
                let p = if rng.unit() < 0.7 {
                    // Preferred category.
                    loop {
                        let p = rng.below(products.len());
                        if products[p].category == c.category {
                            break p;
                        }
                    }
                } else {
                    rng.below(products.len())
                };
                last = p;
                push("view", Some(p), None, None, at);
            }
            if rng.unit() < 0.3 {
                push("add_to_cart", Some(last), None, None, at);
            }
            if rng.unit() < c.propensity {
                push("purchase", Some(last), Some(products[last].price), None, at);
            }
        }
    }
    out.sort_by_key(|e| e.at);
    Shop {
        products,
        customers: people,
        events: out,
        start,
        activity_scale,
    }
}

fn poisson(rng: &mut Rng, mean: f64) -> usize {
    if mean > 30.0 {
        return (mean + mean.sqrt() * rng.normal()).round().max(0.0) as usize;
    }
    let limit = (-mean).exp();
    let mut k = 0;
    let mut p = rng.unit();
    while p > limit {
        k += 1;
        p *= rng.unit();
    }
    k
}
