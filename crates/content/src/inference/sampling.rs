//! Turning a row of logits into the next token: repetition penalty, temperature, top-k, top-p,
//! with a per-request random stream so a seed gives the same text whatever else is batched.

use mercato_platform::random::SplitMix64;
use serde::{Deserialize, Serialize};

use super::math::{exp, lanes, max, with_avx2};

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
#[inline(always)]
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
///
/// The candidates are the `top_k` best tokens (all of them for 0), weighted by
/// e^((logit - largest) / temperature); the nucleus is the fewest of them, best first, whose
/// weights reach `top_p` of the candidates' total; one draw from the request's stream picks
/// within it. This runs on the worker thread for every sequence of every step, so nothing
/// here sorts the vocabulary: the best candidates come from one pass ([`best`]), and a
/// nucleus over the whole vocabulary is looked for among the best 64 and otherwise bounded
/// by bisection ([`nucleus_floor`]), so that only it is sorted. Compiled for AVX2 where the
/// CPU has it ([`with_avx2`]).
pub fn sample(logits: &mut [f32], params: &Sampling, recent: &[u32], rng: &mut SplitMix64) -> u32 {
    struct Sample<'a> {
        logits: &'a mut [f32],
        params: &'a Sampling,
        recent: &'a [u32],
        rng: &'a mut SplitMix64,
    }
    impl pulp::NullaryFnOnce for Sample<'_> {
        type Output = u32;
        #[inline(always)]
        fn call(self) -> u32 {
            sample_body(self.logits, self.params, self.recent, self.rng)
        }
    }
    with_avx2(Sample {
        logits,
        params,
        recent,
        rng,
    })
}

#[inline(always)]
fn sample_body(logits: &mut [f32], params: &Sampling, recent: &[u32], rng: &mut SplitMix64) -> u32 {
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
    if params.temperature <= 0.0 || logits.is_empty() {
        return argmax(logits);
    }
    let largest = max(logits);
    let t = params.temperature;
    let weight = |l: f32| exp((l - largest) / t);
    let len = logits.len();
    if params.top_k != 0 && params.top_k < len {
        let ids = best(logits, params.top_k);
        let weights: Vec<f64> = ids
            .iter()
            .map(|&i| weight(logits[i as usize]) as f64)
            .collect();
        let total = weights.iter().sum();
        let kept = nucleus(&weights, total, params.top_p).unwrap_or(ids.len());
        return draw(&ids[..kept], &weights[..kept], rng);
    }
    // Written by a loop rather than collected: `collect` is not inlined here, and outside
    // this function's vector features `exp`'s fused multiply-adds are library calls. The
    // vector is the thread's own, kept between rows, and not cleared: every value is written.
    let mut weights = WEIGHTS.take();
    weights.resize(len, 0.0);
    for (w, &l) in weights.iter_mut().zip(logits.iter()) {
        *w = weight(l);
    }
    let id = whole_vocabulary(logits, &weights, params.top_p, rng);
    WEIGHTS.set(weights);
    id
}

thread_local! {
    /// The whole-vocabulary path's weights (196 KB for the default model's vocabulary).
    static WEIGHTS: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// A draw from the nucleus of the whole vocabulary, whose `weights` (one per logit) are
/// computed.
#[inline(always)]
fn whole_vocabulary(logits: &[f32], weights: &[f32], top_p: f32, rng: &mut SplitMix64) -> u32 {
    if top_p >= 1.0 {
        // The whole vocabulary is the nucleus: its order does not change the distribution.
        return draw_each(weights.iter().map(|&w| w as f64), rng);
    }
    // The mass the nucleus is a share of (`draw_each` above sums its own).
    let total = lanes(weights, 0.0, |a, w| a + w)
        .iter()
        .map(|&s| s as f64)
        .sum();
    // A peaked distribution's nucleus is among the best few; a flat one's can be thousands
    // of tokens, found by bisecting for the logit where the mass above reaches `top_p`.
    let mut ids = best(logits, 64);
    let (mut kept, sum) = nucleus_weights(&ids, weights);
    if sum < top_p as f64 * total {
        let floor = nucleus_floor(logits, weights, top_p * total as f32);
        let mut above: Vec<(i32, u32)> = logits
            .iter()
            .enumerate()
            .filter_map(|(i, &l)| {
                let key = order_key(l);
                (key >= floor).then_some((key, i as u32))
            })
            .collect();
        above.sort_unstable_by(rank);
        ids = above.into_iter().map(|(_, id)| id).collect();
        kept = nucleus_weights(&ids, weights).0;
    }
    let n = nucleus(&kept, total, top_p).unwrap_or(ids.len());
    draw(&ids[..n], &kept[..n], rng)
}

/// The weights of `ids` (widened for the running sums) and their sum.
fn nucleus_weights(ids: &[u32], weights: &[f32]) -> (Vec<f64>, f64) {
    let kept: Vec<f64> = ids.iter().map(|&i| weights[i as usize] as f64).collect();
    let sum = kept.iter().sum();
    (kept, sum)
}

/// The ranking of (order key, id) pairs: larger logit first, ties to the lower id.
fn rank(a: &(i32, u32), b: &(i32, u32)) -> std::cmp::Ordering {
    b.0.cmp(&a.0).then(a.1.cmp(&b.1))
}

/// The summed weight and the number of the tokens whose order key is at least `floor`, in
/// sixteen lanes.
#[inline(always)]
fn above(logits: &[f32], weights: &[f32], floor: i32) -> (f32, u32) {
    let mut mass = [0f32; 16];
    let mut count = [0u32; 16];
    let (lc, lt) = logits.as_chunks::<16>();
    let (wc, wt) = weights.as_chunks::<16>();
    // Masks of all ones or zeros, not branches or selects, so that the loop vectorises.
    let mut add = |j: usize, l: f32, w: f32| {
        let hit = (order_key(l) >= floor) as u32;
        mass[j] += f32::from_bits(w.to_bits() & hit.wrapping_neg());
        count[j] += hit;
    };
    for (l, w) in lc.iter().zip(wc) {
        for j in 0..16 {
            add(j, l[j], w[j]);
        }
    }
    for (j, (l, w)) in lt.iter().zip(wt).enumerate() {
        add(j, *l, *w);
    }
    (mass.iter().sum(), count.iter().sum())
}

/// An order key at or below the nucleus's worst logit, with few other tokens at or above it:
/// a bisection over keys, each step one vectorised pass summing the weights (and counting the
/// tokens) at or above the middle, kept while the mass there reaches `target`. It stops when
/// at most 64 tokens lie between a key whose mass reaches the target and one whose does not.
#[inline(always)]
fn nucleus_floor(logits: &[f32], weights: &[f32], target: f32) -> i32 {
    // lo: everything is at or above it; hi: nothing is (the largest logit's key plus one).
    let (mut lo, mut lo_count) = (i64::from(i32::MIN), logits.len() as u32);
    let top = logits
        .iter()
        .map(|&l| order_key(l))
        .max()
        .unwrap_or(i32::MIN);
    let (mut hi, mut hi_count) = (i64::from(top) + 1, 0u32);
    while hi - lo > 1 && lo_count - hi_count > 64 {
        let mid = lo + (hi - lo) / 2;
        let (mass, count) = above(logits, weights, mid as i32);
        if mass >= target {
            (lo, lo_count) = (mid, count);
        } else {
            (hi, hi_count) = (mid, count);
        }
    }
    lo as i32
}

/// How many of `weights` (best first) the nucleus keeps: the fewest whose sum reaches `top_p`
/// of `total`; `None` if all of them fall short.
fn nucleus(weights: &[f64], total: f64, top_p: f32) -> Option<usize> {
    let mut acc = 0.0;
    weights
        .iter()
        .position(|w| {
            acc += w / total;
            acc >= top_p as f64
        })
        .map(|n| n + 1)
}

/// One draw from `ids` in proportion to `weights`.
fn draw(ids: &[u32], weights: &[f64], rng: &mut SplitMix64) -> u32 {
    ids[draw_each(weights.iter().copied(), rng) as usize]
}

/// One draw of a position in proportion to `weights` (walked twice: the sum, then the draw).
#[inline(always)]
fn draw_each(weights: impl Iterator<Item = f64> + Clone, rng: &mut SplitMix64) -> u32 {
    let mass: f64 = weights.clone().sum();
    let mut u = rng.next_f64() * mass;
    let (mut last, mut positive) = (0, None);
    for (i, w) in weights.enumerate() {
        if u < w {
            return i as u32;
        }
        u -= w;
        last = i;
        if w > 0.0 {
            positive = Some(i);
        }
    }
    // Rounding left a sliver past the last: the last with any weight.
    positive.unwrap_or(last) as u32
}

/// [`f32::total_cmp`]'s order as integers (the key it compares), so that a pass over the
/// vocabulary compares in vector lanes.
#[inline(always)]
fn order_key(v: f32) -> i32 {
    let bits = v.to_bits() as i32;
    bits ^ (((bits >> 31) as u32) >> 1) as i32
}

/// The ids of the `k` largest logits in [`f32::total_cmp`]'s order (ties to the lower id),
/// best first. One pass keeps every id whose logit beats the worst of the best `k` found so
/// far (a chunk of 16 without one costs one vector comparison); the kept set is cut back to
/// the best `k` whenever it fills its room, which raises the bar.
#[inline(always)]
fn best(logits: &[f32], k: usize) -> Vec<u32> {
    let k = k.min(logits.len());
    if k == 0 {
        return Vec::new();
    }
    let cut = |kept: &mut Vec<(i32, u32)>| {
        if kept.len() > k {
            kept.select_nth_unstable_by(k - 1, rank);
            kept.truncate(k);
        }
        kept.iter().map(|e| e.0).min().unwrap_or(i32::MIN)
    };
    let room = (4 * k).max(256);
    let head = room.min(logits.len());
    let mut kept: Vec<(i32, u32)> = Vec::with_capacity(room + 16);
    kept.extend(
        logits[..head]
            .iter()
            .enumerate()
            .map(|(i, &v)| (order_key(v), i as u32)),
    );
    // The ids after the head come in increasing order, so one tying the worst kept would
    // rank below it: only a strictly larger key enters.
    let mut floor = cut(&mut kept);
    let (chunks, tail) = logits[head..].as_chunks::<16>();
    let tail_start = head + chunks.len() * 16;
    let pieces = chunks
        .iter()
        .enumerate()
        .map(|(c, chunk)| (head + c * 16, &chunk[..]))
        .chain(std::iter::once((tail_start, tail)));
    for (start, values) in pieces {
        if !values
            .iter()
            .fold(false, |hit, &v| hit | (order_key(v) > floor))
        {
            continue;
        }
        for (j, &v) in values.iter().enumerate() {
            let key = order_key(v);
            if key > floor {
                kept.push((key, (start + j) as u32));
            }
        }
        if kept.len() >= room {
            floor = cut(&mut kept);
        }
    }
    kept.sort_unstable_by(rank);
    kept.truncate(k);
    kept.into_iter().map(|(_, id)| id).collect()
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
    fn best_ranks_like_a_full_sort() {
        let mut rng = SplitMix64::new(5);
        // Few distinct values (many ties), signed zeros, infinities and NaN among them.
        let specials = [
            0.0f32,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
        ];
        for len in [1usize, 7, 16, 255, 256, 257, 1000, 5003] {
            let logits: Vec<f32> = (0..len)
                .map(|_| match rng.next_u64() % 20 {
                    0 => specials[(rng.next_u64() % 6) as usize],
                    _ => (rng.next_u64() % 50) as f32 / 4.0 - 6.0,
                })
                .collect();
            let mut sorted: Vec<u32> = (0..len as u32).collect();
            sorted.sort_by(|a, b| {
                logits[*b as usize]
                    .total_cmp(&logits[*a as usize])
                    .then(a.cmp(b))
            });
            for k in [1, 2, 40, 63, 64, 300, len] {
                assert_eq!(best(&logits, k), sorted[..k.min(len)], "len {len}, k {k}");
            }
        }
        assert!(best(&[], 3).is_empty());
        assert!(best(&[1.0], 0).is_empty());
    }

    #[test]
    fn draws_follow_the_weights_on_every_path() {
        // e^ln3 : e^ln1 : e^(-30): the first three times as likely as the second, the third
        // practically never, among 300 tokens far below them.
        let mut logits = vec![-60.0f32; 300];
        logits[17] = 3f32.ln();
        logits[250] = 0.0;
        logits[3] = -30.0;
        let settings = [(40, 1.0), (0, 1.0), (0, 0.999), (300, 0.99)];
        for (top_k, top_p) in settings {
            let p = Sampling {
                temperature: 1.0,
                top_p,
                top_k,
                repetition_penalty: 1.0,
                ..Sampling::default()
            };
            let mut rng = SplitMix64::new(9);
            let mut counts = [0usize; 3];
            for _ in 0..4000 {
                match sample(&mut logits.clone(), &p, &[], &mut rng) {
                    17 => counts[0] += 1,
                    250 => counts[1] += 1,
                    _ => counts[2] += 1,
                }
            }
            let share = counts[0] as f64 / 4000.0;
            assert!(
                (0.72..0.78).contains(&share),
                "top_k {top_k} top_p {top_p}: {counts:?}"
            );
            assert_eq!(counts[0] + counts[1], 4000, "top_k {top_k} top_p {top_p}");
        }
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
