//! Campaign metrics: counts summed from the finest grain, rates with intervals, ROI.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::stats::normal_quantile;

/// A rate with its Wilson score interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Rate {
    pub value: f64,
    pub ci_low: f64,
    pub ci_high: f64,
}

/// Wilson score interval for `k` successes in `n` trials (well-behaved near 0 and 1,
/// unlike the Wald interval); `None` without trials.
pub fn wilson(k: f64, n: f64, confidence: f64) -> Option<Rate> {
    if n <= 0.0 {
        return None;
    }
    let z = -normal_quantile(0.5 * (1.0 - confidence));
    let p = k / n;
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denom;
    Some(Rate {
        value: p,
        ci_low: (centre - half).max(0.0),
        ci_high: (centre + half).min(1.0),
    })
}

/// Raw counts of one slice of a campaign.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tally {
    pub sends: i64,
    pub delivered: i64,
    pub opened: i64,
    pub clicked: i64,
    pub converted: i64,
    pub unsubscribed: i64,
    pub revenue: f64,
    pub revenue_sq: f64,
    pub cost: f64,
}

impl Tally {
    pub fn add(&mut self, o: &Tally) {
        self.sends += o.sends;
        self.delivered += o.delivered;
        self.opened += o.opened;
        self.clicked += o.clicked;
        self.converted += o.converted;
        self.unsubscribed += o.unsubscribed;
        self.revenue += o.revenue;
        self.revenue_sq += o.revenue_sq;
        self.cost += o.cost;
    }
}

/// Counts and the rates derived from them; rates are per send.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Counts {
    pub sends: i64,
    pub delivered: i64,
    pub opened: i64,
    pub clicked: i64,
    pub conversions: i64,
    pub unsubscribed: i64,
    pub revenue: f64,
    pub cost: f64,
    /// What the goal counts: conversions x value per conversion, or revenue.
    pub value: f64,
    pub delivery_rate: Option<Rate>,
    pub open_rate: Option<Rate>,
    pub click_rate: Option<Rate>,
    pub conversion_rate: Option<Rate>,
    pub unsubscribe_rate: Option<Rate>,
    pub revenue_per_send: Option<f64>,
    /// (value - cost) / cost; absent when nothing was spent.
    pub roi: Option<f64>,
}

/// `value_per_conversion` is `None` for revenue goals.
pub fn counts(t: &Tally, value_per_conversion: Option<f64>, confidence: f64) -> Counts {
    let n = t.sends as f64;
    let value = value_per_conversion.map_or(t.revenue, |v| v * t.converted as f64);
    Counts {
        sends: t.sends,
        delivered: t.delivered,
        opened: t.opened,
        clicked: t.clicked,
        conversions: t.converted,
        unsubscribed: t.unsubscribed,
        revenue: t.revenue,
        cost: t.cost,
        value,
        delivery_rate: wilson(t.delivered as f64, n, confidence),
        open_rate: wilson(t.opened as f64, n, confidence),
        click_rate: wilson(t.clicked as f64, n, confidence),
        conversion_rate: wilson(t.converted as f64, n, confidence),
        unsubscribe_rate: wilson(t.unsubscribed as f64, n, confidence),
        revenue_per_send: (n > 0.0).then(|| t.revenue / n),
        roi: (t.cost > 0.0).then(|| (value - t.cost) / t.cost),
    }
}

/// Mean and sample variance from a count, a sum and a sum of squares.
pub fn mean_var(n: f64, sum: f64, sum_sq: f64) -> Option<(f64, f64)> {
    if n < 2.0 {
        return None;
    }
    let mean = sum / n;
    Some((mean, ((sum_sq - n * mean * mean) / (n - 1.0)).max(0.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_matches_the_published_example() -> Result<(), String> {
        // Newcombe (1998), Statistics in Medicine 17:857, table I, example (81/263):
        // Wilson 95% interval 0.2553 to 0.3662.
        let r = wilson(81.0, 263.0, 0.95).ok_or("no interval")?;
        assert!((r.ci_low - 0.2553).abs() < 5e-5, "{r:?}");
        assert!((r.ci_high - 0.3662).abs() < 5e-5, "{r:?}");
        // Example (0/10): 0 to 0.2775.
        let r = wilson(0.0, 10.0, 0.95).ok_or("no interval")?;
        assert!(r.ci_low.abs() < 1e-12, "{r:?}");
        assert!((r.ci_high - 0.2775).abs() < 5e-5, "{r:?}");
        assert!(wilson(0.0, 0.0, 0.95).is_none());
        Ok(())
    }

    #[test]
    fn roi_and_value_follow_the_goal() {
        let t = Tally {
            sends: 100,
            converted: 5,
            revenue: 250.0,
            cost: 10.0,
            ..Tally::default()
        };
        let c = counts(&t, Some(20.0), 0.95);
        assert_eq!(c.value, 100.0);
        assert_eq!(c.roi, Some(9.0));
        let r = counts(&t, None, 0.95);
        assert_eq!(r.value, 250.0);
        assert_eq!(r.roi, Some(24.0));
        assert_eq!(r.revenue_per_send, Some(2.5));
        assert_eq!(counts(&Tally::default(), None, 0.95).roi, None);
    }

    #[test]
    fn mean_var_from_sums() -> Result<(), String> {
        // 1, 2, 3, 4: mean 2.5, sample variance 5/3.
        let (m, v) = mean_var(4.0, 10.0, 30.0).ok_or("too few")?;
        assert_eq!(m, 2.5);
        assert!((v - 5.0 / 3.0).abs() < 1e-12);
        assert!(mean_var(1.0, 3.0, 9.0).is_none());
        Ok(())
    }
}
