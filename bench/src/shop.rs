//! A synthetic but realistic shop: customers with latent preferences and a known true
//! purchase propensity, a catalog with long-tailed prices, sessions with weekly and yearly
//! seasonality, and purchases concentrated in few customers. Deterministic for a seed.

use chrono::{DateTime, Duration, Utc};

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
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
    /// Sessions per year.
    pub activity: f64,
    /// Chance that a session ends in a purchase: the ground truth a model should recover.
    pub propensity: f64,
    pub category: usize,
    pub channel: usize,
    pub hour: u32,
}

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
    let mut people: Vec<Customer> = (0..customers)
        .map(|i| Customer {
            external_id: format!("cus-{i:07}"),
            activity: rng.gamma(0.6),
            propensity: rng.beta(1.2, 12.0),
            category: rng.below(CATEGORIES.len()),
            channel: rng.below(CHANNELS.len()),
            hour: (18.0 + 3.0 * rng.normal()).rem_euclid(24.0) as u32,
        })
        .collect();
    // Scale activity so the expected event count meets the target (~4 events a session).
    let total: f64 = people.iter().map(|c| c.activity).sum();
    let sessions_wanted = events as f64 / 4.0;
    for c in &mut people {
        c.activity *= sessions_wanted / total;
    }
    let now = Utc::now() - Duration::hours(1);
    let mut out = Vec::with_capacity(events + events / 10);
    for (ci, c) in people.iter().enumerate() {
        let sessions = poisson(&mut rng, c.activity);
        for s in 0..sessions {
            // Weekly rhythm and a December peak: reject days by a seasonal weight.
            let at = loop {
                let days = rng.unit() * 365.0;
                let t = now - Duration::seconds((days * 86400.0) as i64);
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
