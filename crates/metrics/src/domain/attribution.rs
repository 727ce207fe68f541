//! Multi-touch attribution: sharing the credit for each conversion among the
//! marketing touches that preceded it.
//!
//! A *touch* is one message that reached a customer (a campaign on a channel
//! at a time); a *conversion* is a purchase with a revenue value. For every
//! conversion, the touches of the same customer that happened at most
//! `window` before it (and not after it) are *eligible*, and the conversion
//! hands out exactly one unit of conversion credit and its whole value among
//! them according to the chosen [`Model`]. Summed over customers, the credit
//! per key (typically `(campaign, channel)`) says how many conversions and how
//! much revenue each key drove.
//!
//! Journeys are fed one customer at a time into a [`Report`], so a report
//! over millions of customers can be built from a streamed query without
//! holding every journey in memory.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};

/// Rejected input, naming the field at fault.
pub use super::InputError as AttributionError;

/// How a conversion's credit is shared among its eligible touches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Model {
    /// All credit to the latest eligible touch; among touches at the same
    /// instant, the one that comes later in the input.
    LastTouch,
    /// All credit to the earliest eligible touch; among touches at the same
    /// instant, the one that comes first in the input.
    FirstTouch,
    /// Equal shares for every eligible touch.
    Linear,
    /// Shares proportional to `2^(-age / half_life)`, where `age` is the time
    /// from the touch to the conversion: a touch one half-life older than
    /// another gets half its credit.
    TimeDecay {
        /// Half-life of a touch's influence, in hours; finite and positive.
        half_life_hours: f64,
    },
}

impl Model {
    /// Checks the model's parameters.
    ///
    /// # Errors
    ///
    /// A time-decay half-life that is not finite and positive (field
    /// `half_life_hours`).
    pub fn validate(&self) -> Result<(), AttributionError> {
        match *self {
            Model::TimeDecay { half_life_hours } => {
                if half_life_hours.is_finite() && half_life_hours > 0.0 {
                    Ok(())
                } else {
                    Err(AttributionError::new(
                        "half_life_hours",
                        "must be a finite number greater than 0",
                    ))
                }
            }
            Model::LastTouch | Model::FirstTouch | Model::Linear => Ok(()),
        }
    }
}

/// Converts a lookback window given in (possibly fractional) days into a
/// duration, rounded to the millisecond.
///
/// # Errors
///
/// Windows that are not finite, not positive, shorter than a millisecond or
/// longer than a duration can hold (field `window_days`).
pub fn window_from_days(days: f64) -> Result<TimeDelta, AttributionError> {
    const MS_PER_DAY: f64 = 86_400_000.0;
    let invalid = || AttributionError::new("window_days", "must be a finite number greater than 0");
    if !(days.is_finite() && days > 0.0) {
        return Err(invalid());
    }
    let ms = (days * MS_PER_DAY).round();
    // i64::MAX as f64 rounds up to 2^63, so `<` keeps the cast exact.
    if ms < 1.0 || ms >= i64::MAX as f64 {
        return Err(AttributionError::new(
            "window_days",
            "must be between one millisecond and the longest representable duration",
        ));
    }
    TimeDelta::try_milliseconds(ms as i64).ok_or_else(invalid)
}

/// A marketing message that reached the customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Touch<K> {
    /// When the message reached the customer.
    pub at: DateTime<Utc>,
    /// What gets the credit, e.g. `(campaign_id, channel)`.
    pub key: K,
}

/// A purchase by the customer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Conversion {
    /// When the purchase happened.
    pub at: DateTime<Utc>,
    /// Revenue of the purchase; finite and not negative.
    pub value: f64,
}

/// Credit accumulated by one key.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Credit {
    /// Fractional conversions credited to the key.
    pub conversions: f64,
    /// Revenue credited to the key.
    pub value: f64,
    /// Every touch of the key seen, whether or not it preceded a conversion:
    /// the denominator for conversions per touch.
    pub touches: u64,
    /// Touches of the key that were eligible for at least one conversion
    /// (inside its window). Under last- and first-touch an eligible touch may
    /// still receive no credit.
    pub eligible_touches: u64,
}

/// Attribution totals over every journey added so far.
#[derive(Debug, Clone, PartialEq)]
pub struct Report<K> {
    /// Credit per key. Every key that was touched appears, even with zero
    /// credit.
    pub credits: BTreeMap<K, Credit>,
    /// Conversions seen.
    pub conversions: u64,
    /// Conversions that had at least one eligible touch. The conversion
    /// credit of all keys sums to this number.
    pub attributed: u64,
    /// Revenue of all conversions seen.
    pub value: f64,
    /// Revenue of the attributed conversions. The value credit of all keys
    /// sums to this amount (up to rounding).
    pub attributed_value: f64,
}

impl<K> Default for Report<K> {
    fn default() -> Self {
        Self {
            credits: BTreeMap::new(),
            conversions: 0,
            attributed: 0,
            value: 0.0,
            attributed_value: 0.0,
        }
    }
}

impl<K: Ord + Clone> Report<K> {
    /// An empty report.
    pub fn new() -> Self {
        Self::default()
    }

    /// Conversions that had no eligible touch (organic, or touched only
    /// outside the window).
    pub fn unattributed(&self) -> u64 {
        self.conversions - self.attributed
    }

    /// Adds one customer's journey: all their touches and conversions over
    /// the reporting period, in any order.
    ///
    /// A touch is eligible for a conversion when
    /// `conversion.at - window <= touch.at <= conversion.at`; each
    /// conversion then gives one unit of conversion credit and its whole
    /// value to its eligible touches as `model` decides (several touches of
    /// the same key add up). A conversion with no eligible touch counts in
    /// [`Report::conversions`] and [`Report::value`] only.
    ///
    /// # Errors
    ///
    /// Nothing is added, and the report is left unchanged, when `window` is
    /// not positive (field `window_days`), the model is invalid (see
    /// [`Model::validate`]) or a conversion value is not finite or is
    /// negative (field `conversions[i].value`, `i` indexing the
    /// `conversions` slice).
    pub fn add_journey(
        &mut self,
        touches: &[Touch<K>],
        conversions: &[Conversion],
        model: &Model,
        window: TimeDelta,
    ) -> Result<(), AttributionError> {
        if window <= TimeDelta::zero() {
            return Err(AttributionError::new(
                "window_days",
                "must be greater than 0",
            ));
        }
        model.validate()?;
        for (i, conversion) in conversions.iter().enumerate() {
            if !(conversion.value.is_finite() && conversion.value >= 0.0) {
                return Err(AttributionError::new(
                    format!("conversions[{i}].value"),
                    "must be a finite number not below 0",
                ));
            }
        }

        // Stable sort: touches at the same instant keep their input order,
        // which settles last- and first-touch ties.
        let mut order: Vec<usize> = (0..touches.len()).collect();
        order.sort_by_key(|&i| touches[i].at);
        let mut eligible_once = vec![false; touches.len()];
        let mut shares: Vec<f64> = Vec::new();

        for conversion in conversions {
            self.conversions += 1;
            self.value += conversion.value;

            let hi = order.partition_point(|&i| touches[i].at <= conversion.at);
            let lo = match conversion.at.checked_sub_signed(window) {
                Some(start) => order[..hi].partition_point(|&i| touches[i].at < start),
                // The window reaches back past the earliest representable
                // instant: every earlier touch is inside it.
                None => 0,
            };
            let eligible = &order[lo..hi];
            if eligible.is_empty() {
                continue;
            }
            self.attributed += 1;
            self.attributed_value += conversion.value;

            shares.clear();
            shares.resize(eligible.len(), 0.0);
            let last = eligible.len() - 1;
            match *model {
                Model::LastTouch => shares[last] = 1.0,
                Model::FirstTouch => shares[0] = 1.0,
                Model::Linear => {
                    let share = 1.0 / eligible.len() as f64;
                    shares.fill(share);
                }
                Model::TimeDecay { half_life_hours } => {
                    // Weights relative to the latest eligible touch give the
                    // same normalised shares as weights relative to the
                    // conversion, but the largest is 1 so the sum cannot
                    // underflow to 0.
                    let latest = touches[eligible[last]].at;
                    let mut total = 0.0;
                    for (share, &i) in shares.iter_mut().zip(eligible) {
                        let gap = hours(latest.signed_duration_since(touches[i].at));
                        *share = (-gap / half_life_hours).exp2();
                        total += *share;
                    }
                    for share in &mut shares {
                        *share /= total;
                    }
                }
            }

            for (&share, &i) in shares.iter().zip(eligible) {
                eligible_once[i] = true;
                if share > 0.0 {
                    let credit = self.credits.entry(touches[i].key.clone()).or_default();
                    credit.conversions += share;
                    credit.value += share * conversion.value;
                }
            }
        }

        for (touch, eligible) in touches.iter().zip(&eligible_once) {
            let credit = self.credits.entry(touch.key.clone()).or_default();
            credit.touches += 1;
            if *eligible {
                credit.eligible_touches += 1;
            }
        }
        Ok(())
    }
}

/// Length of a non-negative duration in hours, to sub-microsecond precision.
fn hours(d: TimeDelta) -> f64 {
    (d.num_seconds() as f64 + f64::from(d.subsec_nanos()) * 1e-9) / 3600.0
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;
    use crate::stats::Rng;

    type TestResult = Result<(), Box<dyn Error>>;

    const EMAIL: &str = "email";
    const SMS: &str = "sms";
    const PUSH: &str = "push";

    fn t0() -> Result<DateTime<Utc>, Box<dyn Error>> {
        Ok(DateTime::from_timestamp(1_700_000_000, 0).ok_or("timestamp out of range")?)
    }

    fn touch(at: DateTime<Utc>, key: &'static str) -> Touch<&'static str> {
        Touch { at, key }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
    }

    fn credit<'a>(
        report: &'a Report<&'static str>,
        key: &'static str,
    ) -> Result<&'a Credit, Box<dyn Error>> {
        Ok(report
            .credits
            .get(key)
            .ok_or_else(|| format!("no credit entry for {key}"))?)
    }

    /// email at t0, sms at t0+24h, push at t0+48h, a 90 purchase at t0+72h.
    fn three_touch_report(model: Model) -> Result<Report<&'static str>, Box<dyn Error>> {
        let t0 = t0()?;
        // Deliberately unsorted.
        let touches = [
            touch(t0 + TimeDelta::hours(48), PUSH),
            touch(t0, EMAIL),
            touch(t0 + TimeDelta::hours(24), SMS),
        ];
        let conversions = [Conversion {
            at: t0 + TimeDelta::hours(72),
            value: 90.0,
        }];
        let mut report = Report::new();
        report.add_journey(&touches, &conversions, &model, TimeDelta::days(7))?;
        assert_eq!(report.conversions, 1);
        assert_eq!(report.attributed, 1);
        assert!(close(report.value, 90.0));
        assert!(close(report.attributed_value, 90.0));
        Ok(report)
    }

    fn assert_credit(
        report: &Report<&'static str>,
        key: &'static str,
        conversions: f64,
        value: f64,
    ) -> TestResult {
        let c = credit(report, key)?;
        assert!(
            close(c.conversions, conversions),
            "{key}: conversions {} != {conversions}",
            c.conversions
        );
        assert!(close(c.value, value), "{key}: value {} != {value}", c.value);
        assert_eq!(c.touches, 1);
        assert_eq!(c.eligible_touches, 1);
        Ok(())
    }

    #[test]
    fn last_touch_credits_the_latest_touch() -> TestResult {
        let report = three_touch_report(Model::LastTouch)?;
        assert_credit(&report, PUSH, 1.0, 90.0)?;
        assert_credit(&report, SMS, 0.0, 0.0)?;
        assert_credit(&report, EMAIL, 0.0, 0.0)
    }

    #[test]
    fn first_touch_credits_the_earliest_touch() -> TestResult {
        let report = three_touch_report(Model::FirstTouch)?;
        assert_credit(&report, EMAIL, 1.0, 90.0)?;
        assert_credit(&report, SMS, 0.0, 0.0)?;
        assert_credit(&report, PUSH, 0.0, 0.0)
    }

    #[test]
    fn linear_shares_equally() -> TestResult {
        let report = three_touch_report(Model::Linear)?;
        for key in [EMAIL, SMS, PUSH] {
            assert_credit(&report, key, 1.0 / 3.0, 30.0)?;
        }
        Ok(())
    }

    #[test]
    fn time_decay_halves_credit_per_half_life() -> TestResult {
        // Ages 72h, 48h, 24h with a 24h half-life: weights 1/8, 1/4, 1/2,
        // shares 1/7, 2/7, 4/7.
        let report = three_touch_report(Model::TimeDecay {
            half_life_hours: 24.0,
        })?;
        assert_credit(&report, EMAIL, 1.0 / 7.0, 90.0 / 7.0)?;
        assert_credit(&report, SMS, 2.0 / 7.0, 180.0 / 7.0)?;
        assert_credit(&report, PUSH, 4.0 / 7.0, 360.0 / 7.0)?;
        assert!(close(credit(&report, EMAIL)?.value, 12.857_142_857_142_858));
        assert!(close(credit(&report, SMS)?.value, 25.714_285_714_285_715));
        assert!(close(credit(&report, PUSH)?.value, 51.428_571_428_571_43));
        Ok(())
    }

    #[test]
    fn time_decay_survives_very_old_touches() -> TestResult {
        // Ages of 10_000 half-lives would underflow 2^-age to 0 for both
        // touches; relative weights must still split the credit 1/3, 2/3.
        let t0 = t0()?;
        let conversion_at = t0 + TimeDelta::hours(10_001);
        let touches = [touch(t0, EMAIL), touch(t0 + TimeDelta::hours(1), SMS)];
        let conversions = [Conversion {
            at: conversion_at,
            value: 3.0,
        }];
        let mut report = Report::new();
        report.add_journey(
            &touches,
            &conversions,
            &Model::TimeDecay {
                half_life_hours: 1.0,
            },
            TimeDelta::days(1000),
        )?;
        assert_credit(&report, EMAIL, 1.0 / 3.0, 1.0)?;
        assert_credit(&report, SMS, 2.0 / 3.0, 2.0)
    }

    #[test]
    fn touch_outside_window_gets_nothing() -> TestResult {
        let t0 = t0()?;
        let touches = [
            touch(t0, EMAIL),
            touch(t0 + TimeDelta::days(7), SMS),
            touch(t0 + TimeDelta::days(10), PUSH),
        ];
        // The window reaches back exactly to the sms touch, which is
        // inside; the email touch is a week and a day earlier.
        let conversions = [Conversion {
            at: t0 + TimeDelta::days(14),
            value: 10.0,
        }];
        let mut report = Report::new();
        report.add_journey(&touches, &conversions, &Model::Linear, TimeDelta::days(7))?;
        let email = credit(&report, EMAIL)?;
        assert!(close(email.conversions, 0.0));
        assert!(close(email.value, 0.0));
        assert_eq!(email.touches, 1);
        assert_eq!(email.eligible_touches, 0);
        assert_credit(&report, SMS, 0.5, 5.0)?;
        assert_credit(&report, PUSH, 0.5, 5.0)
    }

    #[test]
    fn touch_after_conversion_gets_nothing() -> TestResult {
        let t0 = t0()?;
        let touches = [
            touch(t0, EMAIL),
            touch(t0 + TimeDelta::hours(2), PUSH),
            // A touch at the very instant of the purchase is eligible.
            touch(t0 + TimeDelta::hours(1), SMS),
        ];
        let conversions = [Conversion {
            at: t0 + TimeDelta::hours(1),
            value: 50.0,
        }];
        for model in [Model::LastTouch, Model::Linear] {
            let mut report = Report::new();
            report.add_journey(&touches, &conversions, &model, TimeDelta::days(1))?;
            let push = credit(&report, PUSH)?;
            assert!(close(push.conversions, 0.0));
            assert_eq!(push.eligible_touches, 0);
            let sms = credit(&report, SMS)?;
            assert!(sms.conversions > 0.0);
        }
        Ok(())
    }

    #[test]
    fn conversion_without_touches_is_unattributed() -> TestResult {
        let t0 = t0()?;
        let mut report: Report<&'static str> = Report::new();
        report.add_journey(
            &[],
            &[Conversion {
                at: t0,
                value: 25.0,
            }],
            &Model::LastTouch,
            TimeDelta::days(7),
        )?;
        // A second customer touched only after buying.
        report.add_journey(
            &[touch(t0 + TimeDelta::hours(1), EMAIL)],
            &[Conversion { at: t0, value: 5.0 }],
            &Model::LastTouch,
            TimeDelta::days(7),
        )?;
        assert_eq!(report.conversions, 2);
        assert_eq!(report.attributed, 0);
        assert_eq!(report.unattributed(), 2);
        assert!(close(report.value, 30.0));
        assert!(close(report.attributed_value, 0.0));
        let email = credit(&report, EMAIL)?;
        assert!(close(email.conversions, 0.0));
        assert_eq!(email.touches, 1);
        Ok(())
    }

    #[test]
    fn ties_go_to_input_order() -> TestResult {
        let t0 = t0()?;
        let touches = [touch(t0, EMAIL), touch(t0, SMS)];
        let conversions = [Conversion {
            at: t0 + TimeDelta::hours(1),
            value: 1.0,
        }];
        let mut last = Report::new();
        last.add_journey(
            &touches,
            &conversions,
            &Model::LastTouch,
            TimeDelta::days(1),
        )?;
        assert!(close(credit(&last, SMS)?.conversions, 1.0));
        let mut first = Report::new();
        first.add_journey(
            &touches,
            &conversions,
            &Model::FirstTouch,
            TimeDelta::days(1),
        )?;
        assert!(close(credit(&first, EMAIL)?.conversions, 1.0));
        Ok(())
    }

    #[test]
    fn repeated_key_and_several_conversions_accumulate() -> TestResult {
        let t0 = t0()?;
        let touches = [
            touch(t0, EMAIL),
            touch(t0 + TimeDelta::hours(1), EMAIL),
            touch(t0 + TimeDelta::hours(2), SMS),
        ];
        let conversions = [
            Conversion {
                at: t0 + TimeDelta::hours(3),
                value: 30.0,
            },
            // Only the first email is before this one.
            Conversion {
                at: t0 + TimeDelta::minutes(30),
                value: 6.0,
            },
        ];
        let mut report = Report::new();
        report.add_journey(&touches, &conversions, &Model::Linear, TimeDelta::days(1))?;
        let email = credit(&report, EMAIL)?;
        assert!(close(email.conversions, 2.0 / 3.0 + 1.0));
        assert!(close(email.value, 20.0 + 6.0));
        assert_eq!(email.touches, 2);
        assert_eq!(email.eligible_touches, 2);
        let sms = credit(&report, SMS)?;
        assert!(close(sms.conversions, 1.0 / 3.0));
        assert!(close(sms.value, 10.0));
        assert_eq!(report.attributed, 2);
        Ok(())
    }

    #[test]
    fn credits_sum_to_attributed_totals() -> TestResult {
        let t0 = t0()?;
        let keys = ["a", "b", "c", "d", "e"];
        let models = [
            Model::LastTouch,
            Model::FirstTouch,
            Model::Linear,
            Model::TimeDecay {
                half_life_hours: 36.0,
            },
        ];
        for model in models {
            let mut rng = Rng::new(42);
            let mut report = Report::new();
            let mut touches_seen = 0u64;
            for _customer in 0..300 {
                let n_touches = (rng.next_f64() * 8.0) as usize;
                let n_conversions = (rng.next_f64() * 4.0) as usize;
                let at = |rng: &mut Rng| {
                    t0 + TimeDelta::minutes((rng.next_f64() * 30.0 * 1440.0) as i64)
                };
                let touches: Vec<_> = (0..n_touches)
                    .map(|_| {
                        let key = keys[(rng.next_f64() * keys.len() as f64) as usize];
                        touch(at(&mut rng), key)
                    })
                    .collect();
                let conversions: Vec<_> = (0..n_conversions)
                    .map(|_| Conversion {
                        at: at(&mut rng),
                        value: (rng.next_f64() * 200.0).round(),
                    })
                    .collect();
                touches_seen += touches.len() as u64;
                report.add_journey(&touches, &conversions, &model, TimeDelta::days(7))?;
            }
            assert!(report.attributed > 50, "too few attributed conversions");
            assert!(
                report.attributed < report.conversions,
                "expected some organic conversions"
            );
            let credited: f64 = report.credits.values().map(|c| c.conversions).sum();
            let credited_value: f64 = report.credits.values().map(|c| c.value).sum();
            let touches: u64 = report.credits.values().map(|c| c.touches).sum();
            assert!(
                (credited - report.attributed as f64).abs() < 1e-9,
                "{model:?}: credited {credited} vs attributed {}",
                report.attributed
            );
            assert!(
                (credited_value - report.attributed_value).abs() < 1e-9 * report.attributed_value,
                "{model:?}: credited value {credited_value} vs {}",
                report.attributed_value
            );
            assert_eq!(touches, touches_seen);
            assert!(
                report
                    .credits
                    .values()
                    .all(|c| c.eligible_touches <= c.touches)
            );
        }
        Ok(())
    }

    #[test]
    fn invalid_inputs_name_the_field() -> TestResult {
        let t0 = t0()?;
        let touches = [touch(t0, EMAIL)];
        let conversions = [
            Conversion { at: t0, value: 1.0 },
            Conversion {
                at: t0,
                value: f64::NAN,
            },
        ];
        let mut report = Report::new();

        let err = report
            .add_journey(
                &touches,
                &conversions[..1],
                &Model::Linear,
                TimeDelta::zero(),
            )
            .err()
            .ok_or("zero window accepted")?;
        assert_eq!(err.field(), "window_days");

        for half_life_hours in [0.0, -1.0, f64::INFINITY, f64::NAN] {
            let err = report
                .add_journey(
                    &touches,
                    &conversions[..1],
                    &Model::TimeDecay { half_life_hours },
                    TimeDelta::days(1),
                )
                .err()
                .ok_or("bad half-life accepted")?;
            assert_eq!(err.field(), "half_life_hours");
        }

        let err = report
            .add_journey(&touches, &conversions, &Model::Linear, TimeDelta::days(1))
            .err()
            .ok_or("NaN value accepted")?;
        assert_eq!(err.field(), "conversions[1].value");
        assert_eq!(
            err.to_string(),
            "conversions[1].value: must be a finite number not below 0"
        );

        let negative = [Conversion {
            at: t0,
            value: -1.0,
        }];
        let err = report
            .add_journey(&touches, &negative, &Model::Linear, TimeDelta::days(1))
            .err()
            .ok_or("negative value accepted")?;
        assert_eq!(err.field(), "conversions[0].value");

        // Rejected journeys leave the report untouched.
        assert_eq!(report, Report::new());
        Ok(())
    }

    #[test]
    fn window_from_days_validates() -> TestResult {
        assert_eq!(window_from_days(7.0)?, TimeDelta::days(7));
        assert_eq!(window_from_days(0.5)?, TimeDelta::hours(12));
        for days in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e-12, 1e300] {
            let err = window_from_days(days)
                .err()
                .ok_or_else(|| format!("{days} accepted"))?;
            assert_eq!(err.field(), "window_days");
        }
        Ok(())
    }

    #[test]
    fn huge_window_reaches_back_to_every_touch() -> TestResult {
        let t0 = t0()?;
        let touches = [touch(DateTime::<Utc>::MIN_UTC, EMAIL), touch(t0, SMS)];
        let conversions = [Conversion { at: t0, value: 2.0 }];
        let mut report = Report::new();
        report.add_journey(&touches, &conversions, &Model::Linear, TimeDelta::MAX)?;
        assert_credit(&report, EMAIL, 0.5, 1.0)?;
        assert_credit(&report, SMS, 0.5, 1.0)
    }
}
