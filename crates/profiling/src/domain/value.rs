//! Per-tenant lifetime value: fitting the CLV models on a tenant's buyers, leaning on a
//! pooled prior when the tenant has few repeat buyers, and reading a customer's value off
//! the fit.

use super::clv::{
    self, BgNbdParams, ClvError, GammaGammaParams, RfmSummary, customer_lifetime_value,
    expected_purchases, probability_alive,
};

/// The prior before any tenant has data of its own: the published CDNOW fits (Fader,
/// Hardie & Lee 2005), a typical retail buying pattern in weeks. Once tenants have fits of
/// their own, their geometric mean is the pooled prior (`db::clv::pooled_prior`).
pub const PRIOR_BGNBD: BgNbdParams = BgNbdParams {
    r: 0.243,
    alpha: 4.414,
    a: 0.793,
    b: 2.426,
};
pub const PRIOR_GAMMA_GAMMA: GammaGammaParams = GammaGammaParams {
    p: 6.25,
    q: 3.74,
    v: 15.44,
};

/// With this many repeat buyers a tenant's own data decides alone.
pub const OWN_DATA_REPEAT_BUYERS: usize = 200;

#[derive(Debug, Clone)]
pub struct TenantFit {
    pub bgnbd: BgNbdParams,
    pub gamma_gamma: GammaGammaParams,
    pub log_likelihood: f64,
    pub customers: usize,
    pub repeat_customers: usize,
    pub used_prior: bool,
}

/// Fits on (repeat purchases, t_x, T, average order value) per buyer, times in weeks,
/// pulled toward `prior` when the tenant has few repeat buyers.
pub fn fit(buyers: &[(f64, f64, f64, f64)], prior: &BgNbdParams) -> Result<TenantFit, ClvError> {
    let summaries: Vec<RfmSummary> = buyers
        .iter()
        .map(|(x, t_x, age, _)| RfmSummary {
            frequency: *x,
            recency: *t_x,
            age: age.max(*t_x),
        })
        .collect();
    let repeat: Vec<(f64, f64)> = buyers
        .iter()
        .filter(|(x, ..)| *x > 0.0)
        .map(|(x, _, _, m)| (*x, *m))
        .collect();
    let used_prior = repeat.len() < OWN_DATA_REPEAT_BUYERS;
    let bg = if used_prior {
        // The pull fades as data grows: the penalty is on the total likelihood.
        clv::fit_bgnbd_with_prior(&summaries, prior, 5.0)?
    } else {
        clv::fit_bgnbd(&summaries)?
    };
    let gamma_gamma = match clv::fit_gamma_gamma(&repeat) {
        Ok(fit) if !used_prior => fit.params,
        // Spend scales differ by shop, so the prior keeps its shape but takes the tenant's mean.
        _ => {
            let mean = repeat.iter().map(|(_, m)| m).sum::<f64>() / repeat.len().max(1) as f64;
            let scale = if mean > 0.0 {
                mean / (PRIOR_GAMMA_GAMMA.p * PRIOR_GAMMA_GAMMA.v / (PRIOR_GAMMA_GAMMA.q - 1.0))
            } else {
                1.0
            };
            GammaGammaParams {
                v: PRIOR_GAMMA_GAMMA.v * scale,
                ..PRIOR_GAMMA_GAMMA
            }
        }
    };
    Ok(TenantFit {
        bgnbd: bg.params,
        gamma_gamma,
        log_likelihood: bg.log_likelihood,
        customers: buyers.len(),
        repeat_customers: repeat.len(),
        used_prior,
    })
}

/// A customer's value as the fit sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerValue {
    pub probability_alive: f64,
    pub expected_purchases_90d: f64,
    /// Discounted value of the next twelve months' purchases (monthly steps, 1% a month).
    pub predicted_clv_12m: f64,
}

pub fn customer_value(
    bg: &BgNbdParams,
    gg: &GammaGammaParams,
    x: f64,
    t_x: f64,
    age: f64,
    aov: f64,
) -> CustomerValue {
    let s = RfmSummary {
        frequency: x,
        recency: t_x,
        age: age.max(t_x),
    };
    // Twelve steps of 30/7 weeks each.
    let clv = customer_lifetime_value_weeks(bg, gg, &s, aov);
    CustomerValue {
        probability_alive: probability_alive(bg, &s),
        expected_purchases_90d: expected_purchases(bg, 90.0 / 7.0, &s),
        predicted_clv_12m: clv,
    }
}

fn customer_lifetime_value_weeks(
    bg: &BgNbdParams,
    gg: &GammaGammaParams,
    s: &RfmSummary,
    aov: f64,
) -> f64 {
    // The CLV routine steps one model time unit per period; rescale weeks to months.
    let per_month = 30.0 / 7.0;
    let monthly = BgNbdParams {
        alpha: bg.alpha / per_month,
        ..*bg
    };
    let s_months = RfmSummary {
        frequency: s.frequency,
        recency: s.recency / per_month,
        age: s.age / per_month,
    };
    customer_lifetime_value(&monthly, gg, &s_months, aov, 12, 0.01)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn few_buyers_lean_on_the_prior_and_values_are_sane() {
        let buyers: Vec<(f64, f64, f64, f64)> = (0..40)
            .map(|i| ((i % 4) as f64, (i % 4) as f64 * 5.0, 30.0, 20.0 + i as f64))
            .collect();
        let fit = fit(&buyers, &PRIOR_BGNBD).expect("fits");
        assert!(fit.used_prior);
        assert_eq!(fit.customers, 40);
        let active = customer_value(&fit.bgnbd, &fit.gamma_gamma, 3.0, 29.0, 30.0, 40.0);
        let lapsed = customer_value(&fit.bgnbd, &fit.gamma_gamma, 3.0, 2.0, 30.0, 40.0);
        assert!(active.probability_alive > lapsed.probability_alive);
        assert!(active.expected_purchases_90d > lapsed.expected_purchases_90d);
        assert!(active.predicted_clv_12m > 0.0 && active.predicted_clv_12m.is_finite());
    }
}
