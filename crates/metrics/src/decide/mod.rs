//! Decisioning: which channel and variant each customer gets, by Thompson sampling over the
//! posteriors of every (context, channel, variant) arm, and when to send.
//!
//! The policy is randomised on purpose and every choice is logged with the probability it
//! was made with. To make that probability exact rather than a guess after the fact, the
//! choice is drawn from the policy's choice probabilities themselves: Monte Carlo Thompson
//! probabilities for the customer's eligible arms, mixed with a small uniform exploration
//! share so every eligible arm keeps some support (off-policy evaluation needs it).
//!
//! Reward is cost-aware: the value of a send is (value of a conversion) x (conversion
//! rate) minus the channel's cost per send. For revenue goals the value of a conversion is
//! itself uncertain and sampled from its posterior.

use chrono::{DateTime, Duration, DurationRound, TimeDelta, Timelike, Utc};
use uuid::Uuid;

use crate::stats::Rng;

/// Pseudo-observations a pooled prior is worth: enough to start a new campaign near the
/// tenant's usual rate, little enough that a few hundred sends override it.
pub const PRIOR_STRENGTH: f64 = 20.0;
/// Pseudo-conversions behind the prior on revenue per conversion.
pub const VALUE_PRIOR_STRENGTH: f64 = 5.0;
/// Monte Carlo draws behind each set of choice probabilities.
pub const PROBABILITY_DRAWS: usize = 4000;

/// Counts of one arm in one context, as kept in `metrics.arm_stats`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ArmCounts {
    pub sends: f64,
    pub conversions: f64,
    pub revenue: f64,
    pub revenue_sq: f64,
}

/// What a campaign knows before its own data: the tenant's pooled experience.
#[derive(Debug, Clone, PartialEq)]
pub struct Prior {
    pub alpha: f64,
    pub beta: f64,
    /// Prior mean and standard deviation of revenue per conversion.
    pub value_mean: f64,
    pub value_sd: f64,
}

impl Prior {
    /// Uniform on the rate; a vague prior on revenue per conversion.
    pub const FLAT: Prior = Prior {
        alpha: 1.0,
        beta: 1.0,
        value_mean: 1.0,
        value_sd: 1.0,
    };

    /// A prior centred on pooled counts from the tenant's other campaigns, worth at most
    /// [`PRIOR_STRENGTH`] sends.
    pub fn pooled(counts: &ArmCounts) -> Prior {
        if counts.sends <= 0.0 {
            return Prior::FLAT;
        }
        let rate = (counts.conversions / counts.sends).clamp(0.0, 1.0);
        let m = counts.sends.min(PRIOR_STRENGTH);
        let (value_mean, value_sd) = value_moments(counts).unwrap_or((1.0, 1.0));
        Prior {
            alpha: 1.0 + rate * m,
            beta: 1.0 + (1.0 - rate) * m,
            value_mean,
            value_sd,
        }
    }
}

/// Mean and standard deviation of revenue per conversion, when there are conversions.
fn value_moments(c: &ArmCounts) -> Option<(f64, f64)> {
    if c.conversions < 1.0 {
        return None;
    }
    let mean = c.revenue / c.conversions;
    let var = if c.conversions >= 2.0 {
        ((c.revenue_sq - c.conversions * mean * mean) / (c.conversions - 1.0)).max(0.0)
    } else {
        (mean * mean).max(1.0)
    };
    Some((mean, var.sqrt()))
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Goal {
    /// Each conversion is worth this much.
    Conversion { value: f64 },
    /// Each conversion is worth its revenue.
    Revenue,
}

/// An arm's posterior, ready to sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Arm {
    pub channel: String,
    pub variant_id: Uuid,
    /// Beta posterior of the conversion rate per send.
    pub alpha: f64,
    pub beta: f64,
    /// Normal posterior of the value of one conversion (sd 0: known).
    pub value_mean: f64,
    pub value_sd: f64,
    pub cost: f64,
}

impl Arm {
    pub fn new(
        channel: &str,
        variant_id: Uuid,
        counts: &ArmCounts,
        prior: &Prior,
        goal: Goal,
        cost: f64,
    ) -> Arm {
        let (value_mean, value_sd) = match goal {
            Goal::Conversion { value } => (value, 0.0),
            Goal::Revenue => {
                // Normal-normal update of the mean revenue per conversion, the prior worth
                // VALUE_PRIOR_STRENGTH conversions.
                let k = VALUE_PRIOR_STRENGTH;
                let n = counts.conversions;
                let sample_mean = if n > 0.0 { counts.revenue / n } else { 0.0 };
                let mean = (k * prior.value_mean + n * sample_mean) / (k + n);
                let spread = value_moments(counts).map_or(prior.value_sd, |(_, sd)| sd);
                (mean, spread / (k + n).sqrt())
            }
        };
        Arm {
            channel: channel.to_owned(),
            variant_id,
            alpha: prior.alpha + counts.conversions,
            beta: prior.beta + (counts.sends - counts.conversions).max(0.0),
            value_mean,
            value_sd,
            cost,
        }
    }

    /// `channel/variant`: how decisions log the arms a customer was eligible for.
    pub fn key(&self) -> String {
        arm_key(&self.channel, self.variant_id)
    }

    /// Posterior mean of the reward of one send.
    pub fn mean_reward(&self) -> f64 {
        self.value_mean * self.alpha / (self.alpha + self.beta) - self.cost
    }

    fn sample_reward(&self, rng: &mut Rng) -> f64 {
        let value = if self.value_sd > 0.0 {
            rng.normal_sample(self.value_mean, self.value_sd).max(0.0)
        } else {
            self.value_mean
        };
        value * rng.beta_sample(self.alpha, self.beta) - self.cost
    }
}

pub fn arm_key(channel: &str, variant_id: Uuid) -> String {
    format!("{channel}/{variant_id}")
}

/// `draws` joint Thompson samples of every arm's reward, one row per draw.
pub fn sample_rewards(arms: &[Arm], draws: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = Rng::new(seed);
    (0..draws.max(1))
        .map(|_| arms.iter().map(|a| a.sample_reward(&mut rng)).collect())
        .collect()
}

/// Probability that Thompson sampling restricted to the arms in `subset` picks each of
/// them: the share of draws each wins within the subset, mixed with `exploration` spread
/// uniformly. Sums to one. One set of draws serves every subset (customers differ in the
/// channels they consented to), which keeps a batch to one sampling pass per context.
pub fn subset_probabilities(draws: &[Vec<f64>], subset: &[usize], exploration: f64) -> Vec<f64> {
    if subset.is_empty() {
        return Vec::new();
    }
    let mut wins = vec![0u64; subset.len()];
    for row in draws {
        let mut best = 0;
        let mut best_reward = f64::NEG_INFINITY;
        for (j, &i) in subset.iter().enumerate() {
            let r = row.get(i).copied().unwrap_or(f64::NEG_INFINITY);
            if r > best_reward {
                best = j;
                best_reward = r;
            }
        }
        if let Some(w) = wins.get_mut(best) {
            *w += 1;
        }
    }
    let k = subset.len() as f64;
    let e = exploration.clamp(0.0, 1.0);
    let total = draws.len().max(1) as f64;
    wins.iter()
        .map(|&w| (1.0 - e) * w as f64 / total + e / k)
        .collect()
}

/// Probability that Thompson sampling picks each arm, estimated over `draws` draws, mixed
/// with `exploration` spread uniformly. Sums to one.
pub fn choice_probabilities(arms: &[Arm], exploration: f64, draws: usize, seed: u64) -> Vec<f64> {
    let all: Vec<usize> = (0..arms.len()).collect();
    subset_probabilities(&sample_rewards(arms, draws, seed), &all, exploration)
}

/// Draws an index from a probability vector with one uniform number in [0, 1).
pub fn draw(probabilities: &[f64], u: f64) -> usize {
    let mut acc = 0.0;
    for (i, p) in probabilities.iter().enumerate() {
        acc += p;
        if u < acc {
            return i;
        }
    }
    // Rounding left u above the running sum: the last arm with any probability.
    probabilities
        .iter()
        .rposition(|&p| p > 0.0)
        .unwrap_or_default()
}

/// A stable 64-bit mix of a campaign seed and an id, so each customer's draw is
/// reproducible and independent of the order of a batch.
pub fn seed_for(seed: u64, id: Uuid) -> u64 {
    let (hi, lo) = id.as_u64_pair();
    let mut x = seed ^ hi.rotate_left(17) ^ lo.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    x ^= x >> 33;
    x
}

/// A stable seed for a text key (a context name).
pub fn seed_for_text(seed: u64, text: &str) -> u64 {
    // FNV-1a, then the same mix as `seed_for`.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    seed_for(seed, Uuid::from_u64_pair(h, h.rotate_left(32)))
}

/// When to send: the next time the customer's best hour (UTC) comes round, not before
/// `not_before`; without a best hour, at `not_before`. A time past `deadline` falls back to
/// `not_before`, so the message still goes out while the campaign runs.
pub fn send_time(
    best_hour: Option<u32>,
    not_before: DateTime<Utc>,
    deadline: Option<DateTime<Utc>>,
) -> DateTime<Utc> {
    let Some(hour) = best_hour.filter(|h| *h < 24) else {
        return not_before;
    };
    let Ok(start_of_hour) = not_before.duration_trunc(TimeDelta::hours(1)) else {
        return not_before;
    };
    let ahead = (24 + hour as i64 - start_of_hour.hour() as i64) % 24;
    let mut at = start_of_hour + Duration::hours(ahead);
    if at < not_before {
        // Already inside the best hour: send now rather than tomorrow.
        at = not_before;
    }
    match deadline {
        Some(d) if at > d => not_before,
        _ => at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arm(alpha: f64, beta: f64, cost: f64) -> Arm {
        Arm {
            channel: "email".into(),
            variant_id: Uuid::nil(),
            alpha,
            beta,
            value_mean: 1.0,
            value_sd: 0.0,
            cost,
        }
    }

    #[test]
    fn probabilities_sum_to_one_and_favour_the_better_arm() {
        let arms = [arm(11.0, 91.0, 0.0), arm(31.0, 71.0, 0.0)];
        let p = choice_probabilities(&arms, 0.0, 4000, 7);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(p[1] > 0.99, "{p:?}");
    }

    #[test]
    fn exploration_keeps_every_arm_eligible() {
        let arms = [arm(1.0, 1000.0, 0.0), arm(500.0, 500.0, 0.0)];
        let p = choice_probabilities(&arms, 0.1, 2000, 1);
        assert!((p[0] - 0.05).abs() < 1e-12, "{p:?}");
        assert!((p[1] - 0.95).abs() < 1e-12, "{p:?}");
    }

    #[test]
    fn cost_turns_the_choice() {
        // Same rate; the second channel costs more than a conversion is worth at 30%.
        let arms = [arm(31.0, 71.0, 0.01), arm(31.0, 71.0, 0.5)];
        let p = choice_probabilities(&arms, 0.0, 2000, 3);
        assert!(p[0] > 0.99, "{p:?}");
    }

    #[test]
    fn same_seed_same_probabilities() {
        let arms = [arm(3.0, 9.0, 0.0), arm(4.0, 8.0, 0.0), arm(2.0, 2.0, 0.0)];
        assert_eq!(
            choice_probabilities(&arms, 0.05, 1000, 42),
            choice_probabilities(&arms, 0.05, 1000, 42)
        );
    }

    #[test]
    fn draw_follows_the_cumulative_sum() {
        let p = [0.2, 0.5, 0.3];
        assert_eq!(draw(&p, 0.0), 0);
        assert_eq!(draw(&p, 0.19), 0);
        assert_eq!(draw(&p, 0.2), 1);
        assert_eq!(draw(&p, 0.69), 1);
        assert_eq!(draw(&p, 0.7), 2);
        assert_eq!(draw(&p, 0.999_999), 2);
        assert_eq!(draw(&[0.5, 0.5, 0.0], 1.0), 1);
    }

    #[test]
    fn posterior_adds_counts_to_the_prior() {
        let counts = ArmCounts {
            sends: 100.0,
            conversions: 10.0,
            revenue: 500.0,
            revenue_sq: 30_000.0,
        };
        let a = Arm::new(
            "sms",
            Uuid::nil(),
            &counts,
            &Prior::FLAT,
            Goal::Conversion { value: 2.0 },
            0.05,
        );
        assert_eq!((a.alpha, a.beta), (11.0, 91.0));
        assert!((a.mean_reward() - (2.0 * 11.0 / 102.0 - 0.05)).abs() < 1e-12);
        let r = Arm::new(
            "sms",
            Uuid::nil(),
            &counts,
            &Prior::FLAT,
            Goal::Revenue,
            0.0,
        );
        // (5 x 1 + 10 x 50) / 15
        assert!((r.value_mean - 505.0 / 15.0).abs() < 1e-9);
        assert!(r.value_sd > 0.0);
    }

    #[test]
    fn pooled_prior_is_capped() {
        let p = Prior::pooled(&ArmCounts {
            sends: 10_000.0,
            conversions: 500.0,
            revenue: 0.0,
            revenue_sq: 0.0,
        });
        // 5% of 20 pseudo-sends.
        assert!((p.alpha - 2.0).abs() < 1e-12 && (p.beta - 20.0).abs() < 1e-12);
        assert_eq!(Prior::pooled(&ArmCounts::default()), Prior::FLAT);
    }

    #[test]
    fn send_time_is_the_next_best_hour() -> Result<(), Box<dyn std::error::Error>> {
        let now: DateTime<Utc> = "2026-03-01T10:20:00Z".parse()?;
        let at = |s: &str| s.parse::<DateTime<Utc>>();
        assert_eq!(send_time(Some(18), now, None), at("2026-03-01T18:00:00Z")?);
        assert_eq!(send_time(Some(9), now, None), at("2026-03-02T09:00:00Z")?);
        assert_eq!(send_time(Some(10), now, None), now);
        assert_eq!(send_time(None, now, None), now);
        // Past the campaign's end: send now instead.
        assert_eq!(
            send_time(Some(9), now, Some(at("2026-03-01T23:00:00Z")?)),
            now
        );
        Ok(())
    }

    #[test]
    fn subsets_reuse_the_draws() {
        let arms = [
            arm(11.0, 91.0, 0.0),
            arm(31.0, 71.0, 0.0),
            arm(21.0, 81.0, 0.0),
        ];
        let draws = sample_rewards(&arms, 2000, 5);
        let p = subset_probabilities(&draws, &[0, 2], 0.0);
        assert!(p[1] > 0.95, "{p:?}");
        let only = subset_probabilities(&draws, &[0], 0.3);
        assert_eq!(only, vec![1.0]);
        assert!(subset_probabilities(&draws, &[], 0.1).is_empty());
    }

    #[test]
    fn seeds_differ_per_customer_and_repeat() {
        let a = Uuid::from_u128(1);
        let b = Uuid::from_u128(2);
        assert_eq!(seed_for(9, a), seed_for(9, a));
        assert_ne!(seed_for(9, a), seed_for(9, b));
        assert_ne!(seed_for(9, a), seed_for(10, a));
    }
}
