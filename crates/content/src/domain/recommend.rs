//! Product recommendations for one customer: similarity of each product's embedding to the
//! customer's recent interests, affinity to the categories they shop, and popularity, with the
//! items they bought recently (and, upstream, out-of-stock items) excluded. Every
//! recommendation says why.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;
use utoipa::ToSchema;

use crate::inference::embed::cosine;

/// Weights of the three signals in the score.
pub const W_SIMILARITY: f64 = 0.55;
pub const W_CATEGORY: f64 = 0.30;
pub const W_POPULARITY: f64 = 0.15;

/// A product that may be recommended (in stock, embedded).
#[derive(Debug, Clone)]
pub struct Candidate {
    pub product_id: String,
    pub title: String,
    pub category: Option<String>,
    pub embedding: Vec<f32>,
    /// Purchases by anyone over the popularity window.
    pub purchases: i64,
}

/// A product the customer interacted with, most recent first.
#[derive(Debug, Clone)]
pub struct Interaction {
    pub product_id: String,
    pub kind: String,
    pub days_ago: f64,
}

/// What the customer did.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub interactions: Vec<Interaction>,
    pub category_counts: BTreeMap<String, i64>,
    /// Bought within the exclusion window: never recommended again so soon.
    pub bought_recently: HashSet<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Components {
    pub similarity: f64,
    pub category: f64,
    pub popularity: f64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Recommendation {
    pub product_id: String,
    pub title: String,
    pub category: Option<String>,
    pub score: f64,
    /// Why, in words: the signal that contributed most.
    pub reason: String,
    pub components: Components,
}

/// How much an interaction says about interest: purchases and carts more than views, recent
/// more than old (half-life 14 days).
fn weight(i: &Interaction) -> f64 {
    let kind = match i.kind.as_str() {
        "purchase" => 1.0,
        "add_to_cart" => 0.8,
        "click" | "email_click" => 0.6,
        _ => 0.4,
    };
    kind * 0.5f64.powf(i.days_ago.max(0.0) / 14.0)
}

/// The top `k` candidates for this history.
pub fn recommend(candidates: &[Candidate], history: &History, k: usize) -> Vec<Recommendation> {
    let by_id: BTreeMap<&str, &Candidate> = candidates
        .iter()
        .map(|c| (c.product_id.as_str(), c))
        .collect();
    // The interest vector: weighted mean of recently touched products' embeddings.
    let dim = candidates.first().map(|c| c.embedding.len()).unwrap_or(0);
    let mut interest = vec![0f32; dim];
    let mut touched: Vec<(&Candidate, f64)> = Vec::new();
    for i in &history.interactions {
        if let Some(c) = by_id.get(i.product_id.as_str()) {
            let w = weight(i);
            for (a, b) in interest.iter_mut().zip(&c.embedding) {
                *a += (w as f32) * b;
            }
            touched.push((c, w));
        }
    }
    let norm = interest.iter().map(|x| x * x).sum::<f32>().sqrt();
    let has_interest = norm > 0.0;
    if has_interest {
        interest.iter_mut().for_each(|x| *x /= norm);
    }
    let max_cat = history
        .category_counts
        .values()
        .copied()
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let max_pop = candidates
        .iter()
        .map(|c| c.purchases)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let mut out: Vec<Recommendation> = candidates
        .iter()
        .filter(|c| !history.bought_recently.contains(&c.product_id))
        .map(|c| {
            let similarity = if has_interest {
                cosine(&interest, &c.embedding).max(0.0) as f64
            } else {
                0.0
            };
            let category = c
                .category
                .as_ref()
                .and_then(|cat| history.category_counts.get(cat))
                .map(|n| *n as f64 / max_cat)
                .unwrap_or(0.0);
            let popularity = (1.0 + c.purchases.max(0) as f64).ln() / (1.0 + max_pop).ln();
            let parts = [
                (W_SIMILARITY * similarity, 0),
                (W_CATEGORY * category, 1),
                (W_POPULARITY * popularity, 2),
            ];
            let score = parts.iter().map(|p| p.0).sum();
            let top = parts
                .iter()
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .map(|p| p.1)
                .unwrap_or(2);
            let reason = match top {
                0 if similarity > 0.0 => {
                    let like = touched
                        .iter()
                        .filter(|(t, _)| t.product_id != c.product_id)
                        .max_by(|a, b| {
                            cosine(&a.0.embedding, &c.embedding)
                                .total_cmp(&cosine(&b.0.embedding, &c.embedding))
                        })
                        .map(|(t, _)| t.title.clone());
                    match like {
                        Some(t) => format!("similar to {t}, which you looked at recently"),
                        None => "matches your recent interests".to_string(),
                    }
                }
                1 if category > 0.0 => {
                    format!("you often shop {}", c.category.clone().unwrap_or_default())
                }
                _ => "popular right now".to_string(),
            };
            Recommendation {
                product_id: c.product_id.clone(),
                title: c.title.clone(),
                category: c.category.clone(),
                score,
                reason,
                components: Components {
                    similarity,
                    category,
                    popularity,
                },
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(a.product_id.cmp(&b.product_id))
    });
    out.truncate(k);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(id: &str, cat: &str, e: [f32; 3], purchases: i64) -> Candidate {
        let n = e.iter().map(|x| x * x).sum::<f32>().sqrt();
        Candidate {
            product_id: id.into(),
            title: format!("Title {id}"),
            category: Some(cat.into()),
            embedding: e.iter().map(|x| x / n).collect(),
            purchases,
        }
    }

    #[test]
    fn similar_items_rank_first_bought_ones_are_excluded_and_reasons_follow_the_signal() {
        let cands = vec![
            cand("tent", "outdoor", [1.0, 0.0, 0.0], 1),
            cand("tarp", "outdoor", [0.9, 0.1, 0.0], 0),
            cand("lamp", "home", [0.0, 1.0, 0.0], 0),
            cand("mug", "kitchen", [0.0, 0.0, 1.0], 50),
        ];
        let history = History {
            interactions: vec![Interaction {
                product_id: "tent".into(),
                kind: "view".into(),
                days_ago: 1.0,
            }],
            category_counts: BTreeMap::from([("outdoor".to_string(), 3)]),
            bought_recently: HashSet::from(["tent".to_string()]),
        };
        let r = recommend(&cands, &history, 3);
        let ids: Vec<&str> = r.iter().map(|x| x.product_id.as_str()).collect();
        assert_eq!(ids, ["tarp", "mug", "lamp"]);
        assert!(
            r[0].reason.contains("similar to Title tent"),
            "{}",
            r[0].reason
        );
        assert_eq!(r[1].reason, "popular right now");
        assert!(r[0].score > r[1].score);
        // No history at all: popularity decides.
        let r = recommend(&cands, &History::default(), 1);
        assert_eq!(r[0].product_id, "mug");
    }

    #[test]
    fn category_affinity_explains_when_there_is_no_similar_history() {
        let cands = vec![
            cand("boots", "outdoor", [1.0, 0.0, 0.0], 0),
            cand("mug", "kitchen", [0.0, 1.0, 0.0], 0),
        ];
        let history = History {
            category_counts: BTreeMap::from([("outdoor".to_string(), 5)]),
            ..History::default()
        };
        let r = recommend(&cands, &history, 2);
        assert_eq!(r[0].product_id, "boots");
        assert_eq!(r[0].reason, "you often shop outdoor");
        assert!((r[0].components.category - 1.0).abs() < 1e-9);
    }
}
