//! Turning a row of logits into the next token: repetition penalty, temperature, top-k, top-p,
//! with a per-request random stream so a seed gives the same text whatever else is batched.

use mercato_platform::random::SplitMix64;
use serde::{Deserialize, Serialize};

use super::math::max;

/// Sampling settings of one request (validated by [`Sampling::validate`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Sampling {
    /// 0 = greedy. At most 2.
    pub temperature: f32,
    /// Nucleus mass in (0, 1].
    pub top_p: f32,
    /// 0 = no limit.
    pub top_k: usize,
    /// 1 = none; at most 2. Applied over the last 64 tokens.
    pub repetition_penalty: f32,
    /// Tokens to generate at most.
    pub max_tokens: usize,
    /// Generation stops before any of these strings (at most 8, each at most 64 characters).
    pub stop: Vec<String>,
    /// The same seed and prompt give the same text.
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            temperature: 0.7,
            top_p: 0.9,
            top_k: 40,
            repetition_penalty: 1.1,
            max_tokens: 256,
            stop: Vec::new(),
            seed: 0,
        }
    }
}

/// Tokens the repetition penalty looks back over.
pub const PENALTY_WINDOW: usize = 64;

impl Sampling {
    pub fn greedy(max_tokens: usize) -> Self {
        Sampling {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            repetition_penalty: 1.0,
            max_tokens,
            stop: Vec::new(),
            seed: 0,
        }
    }

    /// Every field out of range, as (field, message).
    pub fn validate(&self, max_tokens_limit: usize) -> Vec<(&'static str, String)> {
        let mut bad = Vec::new();
        if !(0.0..=2.0).contains(&self.temperature) || self.temperature.is_nan() {
            bad.push(("temperature", "must be between 0 and 2".to_string()));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            bad.push(("top_p", "must be in (0, 1]".to_string()));
        }
        if self.top_k > 1000 {
            bad.push(("top_k", "must be at most 1000 (0 = no limit)".to_string()));
        }
        if !(1.0..=2.0).contains(&self.repetition_penalty) || self.repetition_penalty.is_nan() {
            bad.push(("repetition_penalty", "must be between 1 and 2".to_string()));
        }
        if self.max_tokens == 0 || self.max_tokens > max_tokens_limit {
            bad.push((
                "max_tokens",
                format!("must be between 1 and {max_tokens_limit}"),
            ));
        }
        if self.stop.len() > 8
            || self
                .stop
                .iter()
                .any(|s| s.is_empty() || s.chars().count() > 64)
        {
            bad.push((
                "stop",
                "at most 8 non-empty strings of at most 64 characters".to_string(),
            ));
        }
        bad
    }
}

/// Greedy choice over one row of logits (ties go to the lowest id; NaN is never chosen).
/// Two passes the compiler vectorises, the largest value in eight lanes and then its first
/// position, instead of one pass whose every step waits on the comparison before it: this
/// runs on the worker thread for every sequence of every step, over the whole vocabulary.
pub fn argmax(logits: &[f32]) -> u32 {
    let max = max(logits);
    let (chunks, tail) = logits.as_chunks::<16>();
    let hit = chunks
        .iter()
        .position(|c| c.iter().fold(false, |hit, &v| hit | (v == max)));
    let (start, rest) = match hit {
        Some(c) => (c * 16, &chunks[c][..]),
        None => (chunks.len() * 16, tail),
    };
    rest.iter().position(|&v| v == max).map_or(0, |i| start + i) as u32
}

/// Picks the next token from `logits` (modified in place by the penalty).
pub fn sample(logits: &mut [f32], params: &Sampling, recent: &[u32], rng: &mut SplitMix64) -> u32 {
    if params.repetition_penalty != 1.0 {
        let start = recent.len().saturating_sub(PENALTY_WINDOW);
        let mut seen = recent[start..].to_vec();
        seen.sort_unstable();
        seen.dedup();
        for &id in &seen {
            if let Some(l) = logits.get_mut(id as usize) {
                *l = if *l >= 0.0 {
                    *l / params.repetition_penalty
                } else {
                    *l * params.repetition_penalty
                };
            }
        }
    }
    if params.temperature <= 0.0 {
        return argmax(logits);
    }
    // Candidates sorted by logit, cut by top-k, then softmax with temperature and top-p.
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    let k = if params.top_k == 0 {
        logits.len()
    } else {
        params.top_k.min(logits.len())
    };
    let by_logit = |a: &u32, b: &u32| {
        logits[*b as usize]
            .total_cmp(&logits[*a as usize])
            .then(a.cmp(b))
    };
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, by_logit);
        idx.truncate(k);
    }
    idx.sort_unstable_by(by_logit);
    let max = logits[idx[0] as usize];
    let t = params.temperature;
    let mut probs: Vec<f64> = idx
        .iter()
        .map(|&i| (((logits[i as usize] - max) / t) as f64).exp())
        .collect();
    let total: f64 = probs.iter().sum();
    let mut kept = probs.len();
    let mut acc = 0.0;
    for (n, p) in probs.iter_mut().enumerate() {
        *p /= total;
        acc += *p;
        if acc >= params.top_p as f64 {
            kept = n + 1;
            break;
        }
    }
    let mass: f64 = probs[..kept].iter().sum();
    let mut u = rng.next_f64() * mass;
    for (n, p) in probs[..kept].iter().enumerate() {
        if u < *p {
            return idx[n];
        }
        u -= p;
    }
    idx[kept - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_first_largest_and_skips_nan() {
        let mut logits: Vec<f32> = (0..100).map(|i| ((i * 37) % 100) as f32).collect();
        assert_eq!(argmax(&logits), 27); // 27 * 37 = 999: the 99
        logits[90] = 500.0;
        logits[95] = 500.0;
        logits[3] = f32::NAN;
        assert_eq!(argmax(&logits), 90);
        logits[5] = 500.0;
        assert_eq!(argmax(&logits), 5);
        assert_eq!(argmax(&[f32::NAN, f32::NAN]), 0);
        assert_eq!(argmax(&[f32::NEG_INFINITY; 3]), 0);
        assert_eq!(argmax(&[1.0, 2.0, 2.0]), 1);
        let rising: Vec<f32> = (0..20).map(|i| i as f32).collect();
        assert_eq!(argmax(&rising), 19);
    }

    #[test]
    fn greedy_takes_the_largest_and_penalty_can_change_it() {
        let logits = [0.1f32, 2.0, 1.9, -1.0];
        let mut l = logits;
        assert_eq!(
            sample(&mut l, &Sampling::greedy(1), &[], &mut SplitMix64::new(1)),
            1
        );
        let mut l = logits;
        let p = Sampling {
            repetition_penalty: 1.2,
            ..Sampling::greedy(1)
        };
        // 2.0 / 1.2 = 1.67 < 1.9: the repeated token loses.
        assert_eq!(sample(&mut l, &p, &[1], &mut SplitMix64::new(1)), 2);
    }

    #[test]
    fn top_k_one_is_greedy_and_seeds_repeat() {
        let logits: Vec<f32> = (0..100).map(|i| ((i * 37) % 100) as f32 / 10.0).collect();
        let p = Sampling {
            top_k: 1,
            temperature: 1.0,
            ..Sampling::default()
        };
        let best = argmax(&logits);
        for s in 0..20 {
            assert_eq!(
                sample(&mut logits.clone(), &p, &[], &mut SplitMix64::new(s)),
                best
            );
        }
        let p = Sampling {
            temperature: 1.5,
            top_p: 1.0,
            top_k: 0,
            repetition_penalty: 1.0,
            ..Sampling::default()
        };
        let draw = |seed| {
            let mut rng = SplitMix64::new(seed);
            (0..30)
                .map(|_| sample(&mut logits.clone(), &p, &[], &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_the_mass() {
        // Probabilities ~ 0.64, 0.24, 0.09, 0.03: top_p 0.5 keeps only the first.
        let logits = [3.0f32, 2.0, 1.0, 0.0];
        let p = Sampling {
            temperature: 1.0,
            top_p: 0.5,
            top_k: 0,
            repetition_penalty: 1.0,
            ..Sampling::default()
        };
        let mut rng = SplitMix64::new(3);
        for _ in 0..50 {
            assert_eq!(sample(&mut logits.to_vec(), &p, &[], &mut rng), 0);
        }
        // top_p 0.8 keeps two; both appear.
        let p = Sampling { top_p: 0.8, ..p };
        let seen: std::collections::BTreeSet<u32> = (0..200)
            .map(|_| sample(&mut logits.to_vec(), &p, &[], &mut rng))
            .collect();
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![0, 1]);
    }

    #[test]
    fn validation_names_each_bad_field() {
        let p = Sampling {
            temperature: 3.0,
            top_p: 0.0,
            top_k: 5000,
            repetition_penalty: 0.5,
            max_tokens: 0,
            stop: vec![String::new()],
            seed: 1,
        };
        let fields: Vec<_> = p.validate(512).into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            [
                "temperature",
                "top_p",
                "top_k",
                "repetition_penalty",
                "max_tokens",
                "stop"
            ]
        );
        assert!(Sampling::default().validate(512).is_empty());
    }
}
