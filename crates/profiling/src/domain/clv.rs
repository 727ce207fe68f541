//! Customer lifetime value (CLV) models for profiling.
//!
//! Owns the probabilistic CLV stack and all numerics it needs, in pure `std`:
//! - BG/NBD purchase-count model (Fader, Hardie & Lee 2005, "Counting your customers
//!   the easy way"): likelihood, maximum-likelihood fit (optionally pulled toward a
//!   pooled prior), conditional expected purchases and P(alive);
//! - Gamma-Gamma spend model (Fader, Hardie & Lee 2005, "RFM and CLV: using iso-value
//!   curves"; Fader & Hardie, "The Gamma-Gamma model of monetary value"): fit and
//!   conditional expected average spend;
//! - the discounted CLV built from both, computed the way the `lifetimes` Python
//!   package does;
//! - `ln_gamma` (Lanczos), Gauss `hyp2f1` and a Nelder–Mead minimiser.
//!
//! Time is in whatever unit the RFM summaries use (days, weeks, ...); parameters such
//! as `alpha` carry that unit, and predictions use the same unit.

use std::f64::consts::PI;
use std::fmt;

/// Fewer repeat buyers than this leaves the BG/NBD / Gamma-Gamma likelihood flat
/// in some direction, so an unpenalised fit is refused.
pub const MIN_REPEAT_CUSTOMERS: usize = 2;

/// Errors from fitting the CLV models.
#[derive(Debug, Clone, PartialEq)]
pub enum ClvError {
    /// Too few customers carry information (for the plain fits: customers with
    /// repeat purchases; for a prior-weighted fit: customers at all).
    NotEnoughData {
        /// How many usable customers there were.
        customers: usize,
    },
    /// A data row is unusable (non-finite, negative, recency beyond age, ...).
    InvalidData {
        /// Position of the offending row in the input slice.
        index: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A model parameter or setting is out of its domain.
    InvalidParameter {
        /// Which parameter and what is wrong with it.
        reason: &'static str,
    },
    /// The optimiser did not reach a finite, converged optimum.
    DidNotConverge,
}

impl fmt::Display for ClvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotEnoughData { customers } => write!(
                f,
                "not enough data to fit the CLV model: {customers} usable customer(s)"
            ),
            Self::InvalidData { index, reason } => {
                write!(f, "invalid CLV input at row {index}: {reason}")
            }
            Self::InvalidParameter { reason } => write!(f, "invalid CLV parameter: {reason}"),
            Self::DidNotConverge => write!(f, "CLV model fit did not converge"),
        }
    }
}

impl std::error::Error for ClvError {}

// ---------------------------------------------------------------------------
// BG/NBD
// ---------------------------------------------------------------------------

/// One customer's purchase history, in a single time unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RfmSummary {
    /// `x`: number of repeat purchases (purchases after the first).
    pub frequency: f64,
    /// `t_x`: time of the last purchase, measured from the first purchase
    /// (ignored when `frequency` is 0).
    pub recency: f64,
    /// `T`: time from the first purchase to the end of the observation window.
    pub age: f64,
}

/// BG/NBD parameters: purchase rate ~ Gamma(r, alpha), dropout probability ~ Beta(a, b).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BgNbdParams {
    /// Shape of the Gamma purchase-rate heterogeneity.
    pub r: f64,
    /// Scale of the Gamma purchase-rate heterogeneity (in the data's time unit).
    pub alpha: f64,
    /// First Beta shape of the dropout probability.
    pub a: f64,
    /// Second Beta shape of the dropout probability.
    pub b: f64,
}

/// Result of a BG/NBD maximum-likelihood fit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BgNbdFit {
    /// Maximum-likelihood (or maximum-penalised-likelihood) parameters.
    pub params: BgNbdParams,
    /// Log-likelihood of the data at `params` (without any prior penalty).
    pub log_likelihood: f64,
    /// Nelder–Mead iterations summed over all starts and restarts.
    pub iterations: usize,
}

/// BG/NBD log-likelihood summed over customers (Fader, Hardie & Lee 2005, eq. 6,
/// in the log-sum-exp form of Hardie's note 004).
///
/// Runs of equal `frequency` reuse the gamma terms, so sorted input is faster.
pub fn bgnbd_log_likelihood(params: &BgNbdParams, data: &[RfmSummary]) -> f64 {
    let BgNbdParams { r, alpha, a, b } = *params;
    // Terms that depend only on the parameters.
    let base = -ln_gamma(r) + r * alpha.ln() + ln_gamma(a + b) - ln_gamma(b);
    let ln_a = a.ln();
    let mut cached_x = f64::NAN;
    let mut gamma_terms = 0.0;
    let mut total = 0.0;
    for s in data {
        let x = s.frequency;
        if x != cached_x {
            cached_x = x;
            gamma_terms = ln_gamma(r + x) + ln_gamma(b + x) - ln_gamma(a + b + x);
        }
        // A3: the customer is still alive at T; A4: dropped out right after t_x,
        // which is only possible once there was a repeat purchase.
        let a3 = -(r + x) * (alpha + s.age).ln();
        let tail = if x > 0.0 {
            let a4 = ln_a - (b + x - 1.0).ln() - (r + x) * (alpha + s.recency).ln();
            log_add_exp(a3, a4)
        } else {
            a3
        };
        total += base + gamma_terms + tail;
    }
    total
}

/// Maximum-likelihood BG/NBD fit.
///
/// Nelder–Mead on log-parameters (keeps them positive) from several starts, each
/// restarted from its optimum until it stops improving.
///
/// # Errors
/// [`ClvError::InvalidData`] for an unusable row, [`ClvError::NotEnoughData`] with
/// fewer than [`MIN_REPEAT_CUSTOMERS`] repeat buyers, [`ClvError::DidNotConverge`].
pub fn fit_bgnbd(data: &[RfmSummary]) -> Result<BgNbdFit, ClvError> {
    fit_bgnbd_inner(data, None)
}

/// BG/NBD fit penalised toward a pooled `prior`: maximises
/// `LL - weight * sum((ln θ - ln θ_prior)^2)` over the four parameters.
///
/// The penalty is not scaled by the number of customers, so it dominates for a
/// small tenant and fades as its data grows. `weight == 0` is exactly [`fit_bgnbd`];
/// with `weight > 0` a single customer suffices because the prior identifies the model.
///
/// # Errors
/// As [`fit_bgnbd`], plus [`ClvError::InvalidParameter`] for a negative or
/// non-finite weight or a non-positive prior.
pub fn fit_bgnbd_with_prior(
    data: &[RfmSummary],
    prior: &BgNbdParams,
    weight: f64,
) -> Result<BgNbdFit, ClvError> {
    if !(weight.is_finite() && weight >= 0.0) {
        return Err(ClvError::InvalidParameter {
            reason: "prior weight must be finite and non-negative",
        });
    }
    let prior_values = [prior.r, prior.alpha, prior.a, prior.b];
    if prior_values.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
        return Err(ClvError::InvalidParameter {
            reason: "prior parameters must be finite and positive",
        });
    }
    if weight == 0.0 {
        return fit_bgnbd(data);
    }
    fit_bgnbd_inner(data, Some((prior_values.map(f64::ln), weight)))
}

fn fit_bgnbd_inner(
    data: &[RfmSummary],
    prior: Option<([f64; 4], f64)>,
) -> Result<BgNbdFit, ClvError> {
    validate_rfm(data)?;
    let repeaters = data.iter().filter(|s| s.frequency > 0.0).count();
    match prior {
        None if repeaters < MIN_REPEAT_CUSTOMERS => {
            return Err(ClvError::NotEnoughData {
                customers: repeaters,
            });
        }
        Some(_) if data.is_empty() => return Err(ClvError::NotEnoughData { customers: 0 }),
        _ => {}
    }

    // Sorting by frequency lets the likelihood reuse its gamma terms.
    let mut sorted = data.to_vec();
    sorted.sort_by(|l, r| l.frequency.total_cmp(&r.frequency));

    let from_logs = |p: &[f64]| BgNbdParams {
        r: p[0].exp(),
        alpha: p[1].exp(),
        a: p[2].exp(),
        b: p[3].exp(),
    };
    let objective = |p: &[f64]| {
        let nll = -bgnbd_log_likelihood(&from_logs(p), &sorted);
        match prior {
            Some((centre, weight)) => {
                nll + weight
                    * p.iter()
                        .zip(centre)
                        .map(|(v, c)| (v - c).powi(2))
                        .sum::<f64>()
            }
            None => nll,
        }
    };

    // All-ones is lifetimes' start; alpha has the time unit, so also start it at
    // the typical customer age.
    let mean_age = sorted.iter().map(|s| s.age).sum::<f64>() / sorted.len() as f64;
    let mut starts = vec![vec![0.0; 4]];
    if mean_age.is_finite() && mean_age > 0.0 {
        starts.push(vec![0.0, mean_age.ln(), 0.0, 0.0]);
    }
    if let Some((centre, _)) = prior {
        starts.push(centre.to_vec());
    }

    let best = minimize(&objective, &starts)?;
    let params = from_logs(&best.x);
    Ok(BgNbdFit {
        params,
        log_likelihood: bgnbd_log_likelihood(&params, &sorted),
        iterations: best.iterations,
    })
}

fn validate_rfm(data: &[RfmSummary]) -> Result<(), ClvError> {
    for (index, s) in data.iter().enumerate() {
        let reason = if !(s.frequency.is_finite() && s.recency.is_finite() && s.age.is_finite()) {
            Some("frequency, recency and age must be finite")
        } else if s.frequency < 0.0 || s.recency < 0.0 || s.age < 0.0 {
            Some("frequency, recency and age must be non-negative")
        } else if s.frequency > 0.0 && s.recency > s.age {
            Some("recency must not exceed age")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(ClvError::InvalidData { index, reason });
        }
    }
    Ok(())
}

/// Half-width around `a = 1` where eq. 10 is 0/0 and is interpolated instead.
const A_NEAR_ONE: f64 = 1e-4;

/// Conditional expected number of purchases in `(T, T + t]` for a customer with
/// history `s` (Fader, Hardie & Lee 2005, eq. 10).
pub fn expected_purchases(params: &BgNbdParams, t: f64, s: &RfmSummary) -> f64 {
    if t <= 0.0 {
        return 0.0;
    }
    let a = params.a;
    if (a - 1.0).abs() < A_NEAR_ONE {
        // (a+b+x-1)/(a-1) * (1 - H) is 0/0 at a = 1 but smooth in a: interpolate
        // between two well-conditioned neighbours.
        let lo_a = 1.0 - A_NEAR_ONE;
        let hi_a = 1.0 + A_NEAR_ONE;
        let lo = expected_purchases_eq10(&BgNbdParams { a: lo_a, ..*params }, t, s);
        let hi = expected_purchases_eq10(&BgNbdParams { a: hi_a, ..*params }, t, s);
        return lo + (a - lo_a) / (hi_a - lo_a) * (hi - lo);
    }
    expected_purchases_eq10(params, t, s)
}

fn expected_purchases_eq10(params: &BgNbdParams, t: f64, s: &RfmSummary) -> f64 {
    let BgNbdParams { r, alpha, a, b } = *params;
    let x = s.frequency;
    let z = t / (alpha + s.age + t);
    let one_minus_z = (alpha + s.age) / (alpha + s.age + t);
    // Eq. 10 needs H = (1-z)^(r+x) 2F1(r+x, b+x; a+b+x-1; z) (z as in lifetimes).
    // Euler's transformation turns it into (1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z),
    // whose numerator parameters do not grow with x, so heavy buyers cannot overflow.
    let h = one_minus_z.powf(a - 1.0) * hyp2f1(a + b - 1.0 - r, a - 1.0, a + b + x - 1.0, z);
    // Eq. 10's denominator is exactly 1 / P(alive).
    (a + b + x - 1.0) / (a - 1.0) * (1.0 - h) * probability_alive(params, s)
}

/// P(alive | x, t_x, T) (Fader, Hardie & Lee 2005; Hardie's note 021). A customer
/// without repeat purchases cannot have dropped out under BG/NBD, so that is 1.
pub fn probability_alive(params: &BgNbdParams, s: &RfmSummary) -> f64 {
    let x = s.frequency;
    if x <= 0.0 {
        return 1.0;
    }
    let BgNbdParams { r, alpha, a, b } = *params;
    // Odds of being dead, in logs so a long silence cannot overflow.
    let ln_odds =
        a.ln() - (b + x - 1.0).ln() + (r + x) * ((alpha + s.age) / (alpha + s.recency)).ln();
    1.0 / (1.0 + ln_odds.exp())
}

// ---------------------------------------------------------------------------
// Gamma-Gamma
// ---------------------------------------------------------------------------

/// Gamma-Gamma spend parameters: per-transaction spend ~ Gamma(p, ν) with
/// ν ~ Gamma(q, v) across customers (`v` is the papers' γ).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GammaGammaParams {
    /// Shape of the per-transaction spend distribution.
    pub p: f64,
    /// Shape of the Gamma heterogeneity of the spend rate ν.
    pub q: f64,
    /// Scale of the Gamma heterogeneity of ν (the papers' γ, in currency units).
    pub v: f64,
}

/// Result of a Gamma-Gamma maximum-likelihood fit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GammaGammaFit {
    /// Maximum-likelihood parameters.
    pub params: GammaGammaParams,
    /// Log-likelihood of the data at `params`.
    pub log_likelihood: f64,
}

/// Gamma-Gamma log-likelihood of `(x, m_x)` pairs (repeat-purchase count > 0 and
/// mean spend per repeat transaction > 0), summed over customers (Fader & Hardie,
/// "The Gamma-Gamma model of monetary value", eq. 1a).
pub fn gamma_gamma_log_likelihood(params: &GammaGammaParams, data: &[(f64, f64)]) -> f64 {
    let GammaGammaParams { p, q, v } = *params;
    let base = -ln_gamma(q) + q * v.ln();
    data.iter()
        .map(|&(x, m)| {
            let px = p * x;
            base + ln_gamma(px + q) - ln_gamma(px) + (px - 1.0) * m.ln() + px * x.ln()
                - (px + q) * (v + x * m).ln()
        })
        .sum()
}

/// Maximum-likelihood Gamma-Gamma fit on `(x, m_x)` pairs; customers without
/// repeat purchases carry no spend information and must be filtered out first.
///
/// # Errors
/// [`ClvError::InvalidData`] for a pair that is not finite and positive,
/// [`ClvError::NotEnoughData`] with fewer than [`MIN_REPEAT_CUSTOMERS`] pairs,
/// [`ClvError::DidNotConverge`].
pub fn fit_gamma_gamma(data: &[(f64, f64)]) -> Result<GammaGammaFit, ClvError> {
    for (index, &(x, m)) in data.iter().enumerate() {
        if !(x.is_finite() && m.is_finite() && x > 0.0 && m > 0.0) {
            return Err(ClvError::InvalidData {
                index,
                reason: "frequency and mean spend must be finite and positive",
            });
        }
    }
    if data.len() < MIN_REPEAT_CUSTOMERS {
        return Err(ClvError::NotEnoughData {
            customers: data.len(),
        });
    }
    let from_logs = |p: &[f64]| GammaGammaParams {
        p: p[0].exp(),
        q: p[1].exp(),
        v: p[2].exp(),
    };
    let objective = |p: &[f64]| -gamma_gamma_log_likelihood(&from_logs(p), data);
    // v has the currency unit, so besides all-ones start it at the mean spend.
    let mean_spend = data.iter().map(|&(_, m)| m).sum::<f64>() / data.len() as f64;
    let starts = [vec![0.0; 3], vec![0.0, 2f64.ln(), mean_spend.ln()]];
    let best = minimize(&objective, &starts)?;
    let params = from_logs(&best.x);
    Ok(GammaGammaFit {
        params,
        log_likelihood: gamma_gamma_log_likelihood(&params, data),
    })
}

/// Conditional expected average spend per transaction given `x` repeat purchases
/// with mean spend `m_x`: a credibility-weighted mix of `m_x` and the population
/// mean `p v / (q - 1)`. Infinite when that mean does not exist (`p x + q <= 1`).
pub fn expected_average_spend(params: &GammaGammaParams, x: f64, m_x: f64) -> f64 {
    let GammaGammaParams { p, q, v } = *params;
    let denominator = p * x + q - 1.0;
    if denominator <= 0.0 {
        return f64::INFINITY;
    }
    p * (v + x * m_x) / denominator
}

// ---------------------------------------------------------------------------
// CLV
// ---------------------------------------------------------------------------

/// Discounted CLV over `horizon_periods` periods of one model time unit each, as
/// `lifetimes` computes it: for every period k, (E[purchases by k] - E[purchases
/// by k-1]) × expected spend / (1 + rate)^k. `monetary` is the observed mean spend
/// `m_x`; the Gamma-Gamma model shrinks it toward the population mean.
pub fn customer_lifetime_value(
    bg: &BgNbdParams,
    gg: &GammaGammaParams,
    s: &RfmSummary,
    monetary: f64,
    horizon_periods: usize,
    discount_rate_per_period: f64,
) -> f64 {
    let spend = expected_average_spend(gg, s.frequency, monetary);
    let step_discount = 1.0 / (1.0 + discount_rate_per_period);
    let mut discount = 1.0;
    let mut previous = 0.0;
    let mut value = 0.0;
    let mut t = 0.0;
    for _ in 0..horizon_periods {
        t += 1.0;
        discount *= step_discount;
        let cumulative = expected_purchases(bg, t, s);
        value += spend * (cumulative - previous) * discount;
        previous = cumulative;
    }
    value
}

// ---------------------------------------------------------------------------
// Special functions
// ---------------------------------------------------------------------------

/// Lanczos coefficients for g = 607/128, N = 15 (Godfrey; Numerical Recipes 3rd ed.
/// `gammln`), giving ~1e-15 relative accuracy for x > 0.
#[allow(clippy::excessive_precision)] // published digits kept verbatim
const LANCZOS_COEFFICIENTS: [f64; 14] = [
    57.156_235_665_862_923_5,
    -59.597_960_355_475_491_2,
    14.136_097_974_741_747_1,
    -0.491_913_816_097_620_199,
    0.339_946_499_848_118_887e-4,
    0.465_236_289_270_485_756e-4,
    -0.983_744_753_048_795_646e-4,
    0.158_088_703_224_912_494e-3,
    -0.210_264_441_724_104_883e-3,
    0.217_439_618_115_212_643e-3,
    -0.164_318_106_536_763_890e-3,
    0.844_182_239_838_527_433e-4,
    -0.261_908_384_015_814_087e-4,
    0.368_991_826_595_316_234e-5,
];
#[allow(clippy::excessive_precision)] // published digits kept verbatim
const LANCZOS_C0: f64 = 0.999_999_999_999_997_092;
/// g + 1/2.
const LANCZOS_G_HALF: f64 = 5.242_187_5;
const SQRT_TWO_PI: f64 = 2.506_628_274_631_000_5;

/// ln |Γ(x)|; +∞ at the poles (0, -1, -2, ...).
pub fn ln_gamma(x: f64) -> f64 {
    ln_gamma_with_sign(x).0
}

/// (ln |Γ(x)|, sign of Γ(x)); the sign is reported as +1 at poles.
fn ln_gamma_with_sign(x: f64) -> (f64, f64) {
    if x.is_nan() {
        return (f64::NAN, f64::NAN);
    }
    if x == f64::INFINITY {
        return (f64::INFINITY, 1.0);
    }
    if x < 0.5 {
        if x == x.floor() {
            return (f64::INFINITY, 1.0);
        }
        // Reflection Γ(x)Γ(1-x) = π / sin(πx); Lanczos is only accurate for x ≥ 1/2.
        let s = sin_pi(x);
        return (
            PI.ln() - s.abs().ln() - ln_gamma_lanczos(1.0 - x),
            s.signum(),
        );
    }
    (ln_gamma_lanczos(x), 1.0)
}

fn ln_gamma_lanczos(x: f64) -> f64 {
    let shifted = x + LANCZOS_G_HALF;
    let head = (x + 0.5) * shifted.ln() - shifted;
    let mut series = LANCZOS_C0;
    let mut denominator = x;
    for c in LANCZOS_COEFFICIENTS {
        denominator += 1.0;
        series += c / denominator;
    }
    head + (SQRT_TWO_PI * series / x).ln()
}

/// sin(πx) with exact argument reduction, so it is accurate near the integers.
fn sin_pi(x: f64) -> f64 {
    // All steps below are exact in floating point (fmod, Sterbenz subtraction).
    let mut r = x % 2.0;
    if r > 1.0 {
        r -= 2.0;
    } else if r < -1.0 {
        r += 2.0;
    }
    if r > 0.5 {
        r = 1.0 - r;
    } else if r < -0.5 {
        r = -1.0 - r;
    }
    (PI * r).sin()
}

fn log_add_exp(u: f64, v: f64) -> f64 {
    let hi = u.max(v);
    if hi == f64::NEG_INFINITY {
        return hi;
    }
    hi + (-(u - v).abs()).exp().ln_1p()
}

/// Above this |z| the 2F1 series converges slowly and the 1-z connection formula
/// takes over.
const HYP2F1_SERIES_MAX_Z: f64 = 0.9;
/// c-a-b this close to an integer makes the connection formula's gamma factors
/// blow up and cancel (losing ~log10(1/h) digits); interpolate in c instead.
const HYP2F1_NEAR_INTEGER: f64 = 1e-4;
const HYP2F1_MAX_TERMS: usize = 2_000_000;
/// Series budget near z = 1 before falling back to interpolation (~1 ms).
const HYP2F1_SLOW_SERIES_TERMS: usize = 100_000;
const HYP2F1_TOLERANCE: f64 = 1e-17;

/// Gauss hypergeometric function 2F1(a, b; c; z) for real arguments and z ≤ 1.
///
/// Direct series for 0 ≤ z ≤ 0.9, Pfaff's transformation for z < 0, and the 1-z
/// connection formula for 0.9 < z < 1. When c-a-b is within 1e-4 of an integer the
/// latter is singular: then the slow series, or beyond z ≈ 0.9995 an interpolation
/// in c (~1e-12 relative accuracy). Returns NaN for z > 1 (branch cut) or
/// c ∈ {0, -1, -2, ...}; at z = 1 Gauss's theorem (∞ when c-a-b ≤ 0).
pub fn hyp2f1(a: f64, b: f64, c: f64, z: f64) -> f64 {
    if !(a.is_finite() && b.is_finite() && c.is_finite() && z.is_finite()) {
        return f64::NAN;
    }
    if is_non_positive_integer(c) {
        return f64::NAN;
    }
    if z == 0.0 {
        return 1.0;
    }
    if is_non_positive_integer(a) || is_non_positive_integer(b) {
        // Terminating polynomial: the series is exact for every z.
        return hyp2f1_series(a, b, c, z, HYP2F1_MAX_TERMS).unwrap_or(f64::NAN);
    }
    if z > 1.0 {
        return f64::NAN;
    }
    if z == 1.0 {
        let d = c - a - b;
        if d <= 0.0 {
            return f64::INFINITY;
        }
        return gamma_ratio(&[c, d], &[c - a, c - b]);
    }
    if z < 0.0 {
        // Pfaff: 2F1(a,b;c;z) = (1-z)^(-a) 2F1(a, c-b; c; z/(z-1)), with z/(z-1) in (0, 1).
        return (1.0 - z).powf(-a) * hyp2f1(a, c - b, c, z / (z - 1.0));
    }
    if z <= HYP2F1_SERIES_MAX_Z {
        return hyp2f1_series(a, b, c, z, HYP2F1_MAX_TERMS).unwrap_or(f64::NAN);
    }
    let d = c - a - b;
    if (d - d.round()).abs() >= HYP2F1_NEAR_INTEGER {
        return hyp2f1_connection(a, b, c, z);
    }
    // c-a-b (nearly) an integer makes the connection formula singular. The series
    // is exact if it converges within a moderate number of terms (z up to ~0.9995).
    if let Some(value) = hyp2f1_series(a, b, c, z, HYP2F1_SLOW_SERIES_TERMS) {
        return value;
    }
    // Beyond that, 2F1 is smooth in c: interpolate (cubic Lagrange) from the c values
    // that put c-a-b at ±h, ±2h from the integer: O(h^4) error plus ~eps/h cancellation.
    let offset = d - d.round();
    let h = HYP2F1_NEAR_INTEGER;
    let nodes = [-2.0 * h, -h, h, 2.0 * h];
    let mut value = 0.0;
    for (i, node) in nodes.iter().enumerate() {
        let weight: f64 = nodes
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, other)| (offset - other) / (node - other))
            .product();
        value += weight * hyp2f1_connection(a, b, c + (node - offset), z);
    }
    value
}

fn is_non_positive_integer(v: f64) -> bool {
    v <= 0.0 && v == v.floor()
}

/// Γ(n1)Γ(n2).../(Γ(d1)Γ(d2)...) through ln|Γ| and signs; 1/Γ at a pole is 0.
fn gamma_ratio(numerator: &[f64], denominator: &[f64]) -> f64 {
    let mut ln_value = 0.0;
    let mut sign = 1.0;
    for &v in numerator {
        let (l, s) = ln_gamma_with_sign(v);
        ln_value += l;
        sign *= s;
    }
    for &v in denominator {
        if is_non_positive_integer(v) {
            return 0.0;
        }
        let (l, s) = ln_gamma_with_sign(v);
        ln_value -= l;
        sign *= s;
    }
    sign * ln_value.exp()
}

/// 2F1 via the linear transformation to 1-z (Abramowitz & Stegun 15.3.6); both
/// series then run at 1-z < 0.1. Requires c-a-b not an integer.
fn hyp2f1_connection(a: f64, b: f64, c: f64, z: f64) -> f64 {
    let w = 1.0 - z;
    let d = c - a - b;
    let first = gamma_ratio(&[c, d], &[c - a, c - b]);
    let second = gamma_ratio(&[c, -d], &[a, b]);
    let first_series = if first == 0.0 {
        0.0
    } else {
        hyp2f1_series(a, b, 1.0 - d, w, HYP2F1_MAX_TERMS).unwrap_or(f64::NAN)
    };
    let second_series = if second == 0.0 {
        0.0
    } else {
        hyp2f1_series(c - a, c - b, 1.0 + d, w, HYP2F1_MAX_TERMS).unwrap_or(f64::NAN)
    };
    first * first_series + w.powf(d) * second * second_series
}

/// Plain hypergeometric series; `None` if it has not converged after `max_terms`.
fn hyp2f1_series(a: f64, b: f64, c: f64, z: f64, max_terms: usize) -> Option<f64> {
    let mut term = 1.0;
    // Neumaier-compensated sum: near z = 1 the series runs to many terms.
    let mut sum = 1.0;
    let mut compensation = 0.0;
    let mut quiet_steps = 0;
    let mut n = 0.0;
    for _ in 0..max_terms {
        let ratio = (a + n) * (b + n) / ((c + n) * (n + 1.0)) * z;
        term *= ratio;
        n += 1.0;
        if term == 0.0 {
            return Some(sum + compensation);
        }
        let next = sum + term;
        compensation += if sum.abs() >= term.abs() {
            (sum - next) + term
        } else {
            (term - next) + sum
        };
        sum = next;
        if !sum.is_finite() {
            return Some(sum);
        }
        // Term ratios tend to z, so once below 1 the tail is bounded by a
        // geometric series; require it twice to step over a stray small term.
        let rho = ratio.abs().max(z.abs());
        if rho < 1.0 && term.abs() * rho / (1.0 - rho) <= HYP2F1_TOLERANCE * sum.abs() {
            quiet_steps += 1;
            if quiet_steps >= 2 {
                return Some(sum + compensation);
            }
        } else {
            quiet_steps = 0;
        }
    }
    None
}

// ---------------------------------------------------------------------------
// Optimiser
// ---------------------------------------------------------------------------

struct Minimum {
    x: Vec<f64>,
    value: f64,
    iterations: usize,
    converged: bool,
}

const NM_MAX_ITERATIONS: usize = 20_000;
const NM_MAX_RESTARTS: usize = 20;
/// Relative spread of simplex values at convergence.
const NM_F_TOLERANCE: f64 = 1e-12;
/// Simplex diameter (in log-parameter units) at convergence.
const NM_X_TOLERANCE: f64 = 1e-8;
const NM_FIRST_STEP: f64 = 0.5;
const NM_RESTART_STEP: f64 = 0.1;

/// Minimise from each start, restarting Nelder–Mead from its own optimum (fresh
/// simplex) until a restart no longer improves: a collapsed simplex can stall
/// short of the minimum.
fn minimize<F: Fn(&[f64]) -> f64>(f: &F, starts: &[Vec<f64>]) -> Result<Minimum, ClvError> {
    let mut best: Option<Minimum> = None;
    let mut iterations = 0;
    for start in starts {
        let mut current = nelder_mead(f, start, NM_FIRST_STEP);
        iterations += current.iterations;
        for _ in 0..NM_MAX_RESTARTS {
            let next = nelder_mead(f, &current.x, NM_RESTART_STEP);
            iterations += next.iterations;
            let improved =
                current.value - next.value > NM_F_TOLERANCE * (1.0 + current.value.abs());
            let next_converged = next.converged;
            if next.value <= current.value {
                current = next;
            }
            // Converged means a fresh simplex around the optimum confirmed it.
            current.converged = next_converged && !improved;
            if !improved {
                break;
            }
        }
        if current.value.is_finite() && best.as_ref().is_none_or(|b| current.value < b.value) {
            best = Some(current);
        }
    }
    match best {
        Some(mut found) if found.converged => {
            found.iterations = iterations;
            Ok(found)
        }
        _ => Err(ClvError::DidNotConverge),
    }
}

/// Nelder–Mead with the standard coefficients (reflection 1, expansion 2,
/// contraction 1/2, shrink 1/2); non-finite objective values count as +∞.
fn nelder_mead<F: Fn(&[f64]) -> f64>(f: &F, x0: &[f64], step: f64) -> Minimum {
    let eval = |x: &[f64]| {
        let v = f(x);
        if v.is_finite() { v } else { f64::INFINITY }
    };
    let n = x0.len();
    let mut simplex: Vec<(Vec<f64>, f64)> = Vec::with_capacity(n + 1);
    simplex.push((x0.to_vec(), eval(x0)));
    for i in 0..n {
        let mut x = x0.to_vec();
        x[i] += step;
        let v = eval(&x);
        simplex.push((x, v));
    }
    let mut iterations = 0;
    let mut converged = false;
    let mut centroid = vec![0.0; n];
    let point = |from: &[f64], towards: &[f64], coefficient: f64| -> Vec<f64> {
        from.iter()
            .zip(towards)
            .map(|(c, w)| c + coefficient * (w - c))
            .collect()
    };
    while iterations < NM_MAX_ITERATIONS {
        simplex.sort_by(|l, r| l.1.total_cmp(&r.1));
        let best_value = simplex[0].1;
        let worst_value = simplex[n].1;
        let diameter = simplex[1..]
            .iter()
            .flat_map(|(x, _)| x.iter().zip(&simplex[0].0).map(|(u, v)| (u - v).abs()))
            .fold(0.0, f64::max);
        if best_value.is_finite()
            && worst_value - best_value <= NM_F_TOLERANCE * (1.0 + best_value.abs())
            && diameter <= NM_X_TOLERANCE
        {
            converged = true;
            break;
        }
        iterations += 1;

        centroid.fill(0.0);
        for (x, _) in &simplex[..n] {
            for (c, v) in centroid.iter_mut().zip(x) {
                *c += v / n as f64;
            }
        }
        let worst = simplex[n].0.clone();
        // Reflection and friends, all along the line from the centroid through
        // the worst vertex.
        let reflected = point(&centroid, &worst, -1.0);
        let reflected_value = eval(&reflected);
        if reflected_value < best_value {
            let expanded = point(&centroid, &worst, -2.0);
            let expanded_value = eval(&expanded);
            simplex[n] = if expanded_value < reflected_value {
                (expanded, expanded_value)
            } else {
                (reflected, reflected_value)
            };
            continue;
        }
        if reflected_value < simplex[n - 1].1 {
            simplex[n] = (reflected, reflected_value);
            continue;
        }
        let (contracted, limit) = if reflected_value < worst_value {
            (point(&centroid, &worst, -0.5), reflected_value)
        } else {
            (point(&centroid, &worst, 0.5), worst_value)
        };
        let contracted_value = eval(&contracted);
        if contracted_value < limit {
            simplex[n] = (contracted, contracted_value);
            continue;
        }
        let anchor = simplex[0].0.clone();
        for vertex in simplex.iter_mut().skip(1) {
            let shrunk = point(&anchor, &vertex.0, 0.5);
            let value = eval(&shrunk);
            *vertex = (shrunk, value);
        }
    }
    simplex.sort_by(|l, r| l.1.total_cmp(&r.1));
    let (x, value) = simplex.swap_remove(0);
    Minimum {
        x,
        value,
        iterations,
        converged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    const SUMMARY_CSV: &str = "cdnow_customers_summary.csv";
    const TRANSACTIONS_CSV: &str = "cdnow_customers_summary_with_transactions.csv";

    fn assert_close(actual: f64, expected: f64, relative: f64, what: &str) {
        let scale = expected.abs().max(1.0);
        assert!(
            (actual - expected).abs() <= relative * scale,
            "{what}: got {actual:.17e}, expected {expected:.17e} (tolerance {relative:e})"
        );
    }

    fn assert_relative(actual: f64, expected: f64, relative: f64, what: &str) {
        assert!(
            (actual - expected).abs() <= relative * expected.abs(),
            "{what}: got {actual:.17e}, expected {expected:.17e} (relative tolerance {relative:e})"
        );
    }

    // --- CDNOW data -------------------------------------------------------

    /// `MERCATO_DATA_DIR`, else the nearest `data/cdnow` above the crate.
    fn data_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("MERCATO_DATA_DIR") {
            return PathBuf::from(dir);
        }
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        manifest
            .ancestors()
            .map(|dir| dir.join("data").join("cdnow"))
            .find(|candidate| candidate.is_dir())
            .unwrap_or_else(|| {
                panic!(
                    "CDNOW data folder not found: no data/cdnow above {}. Run \
                     scripts/fetch-data (scripts/test does) or set MERCATO_DATA_DIR",
                    manifest.display()
                )
            })
    }

    /// Header names and numeric rows of a small, unquoted CSV file.
    fn read_csv(name: &str) -> (Vec<String>, Vec<Vec<f64>>) {
        let path = data_dir().join(name);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "cannot read CDNOW file {} ({e}). Run scripts/fetch-data \
                 (scripts/test does) or point MERCATO_DATA_DIR at the unpacked files",
                path.display()
            )
        });
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let header = lines
            .next()
            .unwrap_or_else(|| panic!("{} is empty", path.display()))
            .split(',')
            .map(|h| h.trim().to_string())
            .collect();
        let rows = lines
            .enumerate()
            .map(|(i, line)| {
                line.split(',')
                    .map(|field| {
                        field.trim().parse::<f64>().unwrap_or_else(|e| {
                            panic!("{} line {}: {field:?}: {e}", path.display(), i + 2)
                        })
                    })
                    .collect()
            })
            .collect();
        (header, rows)
    }

    fn column(header: &[String], name: &str) -> usize {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("column {name} not in {header:?}"))
    }

    fn cdnow_summary() -> Vec<RfmSummary> {
        let (header, rows) = read_csv(SUMMARY_CSV);
        let (x, tx, age) = (
            column(&header, "frequency"),
            column(&header, "recency"),
            column(&header, "T"),
        );
        rows.iter()
            .map(|row| RfmSummary {
                frequency: row[x],
                recency: row[tx],
                age: row[age],
            })
            .collect()
    }

    /// (x, m_x) for customers with repeat purchases; the file calls them x and zbar.
    fn cdnow_spend() -> Vec<(f64, f64)> {
        let (header, rows) = read_csv(TRANSACTIONS_CSV);
        let (x, zbar) = (column(&header, "x"), column(&header, "zbar"));
        rows.iter()
            .filter(|row| row[x] > 0.0)
            .map(|row| (row[x], row[zbar]))
            .collect()
    }

    /// Published BG/NBD estimates for CDNOW (Fader, Hardie & Lee 2005, weeks).
    const PUBLISHED: BgNbdParams = BgNbdParams {
        r: 0.243,
        alpha: 4.414,
        a: 0.793,
        b: 2.426,
    };

    fn round_to(value: f64, significant: i32) -> f64 {
        let magnitude = value.abs().log10().floor() as i32;
        let scale = 10f64.powi(significant - 1 - magnitude);
        (value * scale).round() / scale
    }

    // --- BG/NBD on CDNOW ---------------------------------------------------

    #[test]
    fn bgnbd_fit_matches_published_cdnow_estimates() {
        let data = cdnow_summary();
        assert_eq!(data.len(), 2357);
        let fit = fit_bgnbd(&data).expect("BG/NBD fit on CDNOW");
        let p = fit.params;
        // The paper reports three significant figures.
        assert_eq!(round_to(p.r, 3), 0.243, "r = {}", p.r);
        assert_eq!(round_to(p.alpha, 3), 4.41, "alpha = {}", p.alpha);
        assert_eq!(round_to(p.a, 3), 0.793, "a = {}", p.a);
        assert_eq!(round_to(p.b, 3), 2.43, "b = {}", p.b);
        assert!(
            (fit.log_likelihood - -9582.4).abs() < 0.05,
            "log-likelihood {}",
            fit.log_likelihood
        );
        // lifetimes 0.11.3 BetaGeoFitter().fit(frequency, recency, T) on the same file
        // (scipy 1.17.1): r=0.24259292827982182 alpha=4.413532265271819
        // a=0.7928859664406882 b=2.42575238262586. Agreement limited by its tolerance.
        assert_relative(p.r, 0.242_592_928_279_821_8, 1e-4, "r vs lifetimes");
        assert_relative(p.alpha, 4.413_532_265_271_819, 1e-4, "alpha vs lifetimes");
        assert_relative(p.a, 0.792_885_966_440_688_2, 1e-4, "a vs lifetimes");
        assert_relative(p.b, 2.425_752_382_625_86, 1e-4, "b vs lifetimes");
        // The MLE is at least as good as the published (rounded) estimates.
        assert!(fit.log_likelihood >= bgnbd_log_likelihood(&PUBLISHED, &data));
        assert!(fit.iterations > 0);
    }

    #[test]
    fn prior_weight_zero_is_the_plain_fit() {
        let data = cdnow_summary();
        let plain = fit_bgnbd(&data).expect("plain fit");
        let prior = BgNbdParams {
            r: 1.0,
            alpha: 1.0,
            a: 1.0,
            b: 1.0,
        };
        let pooled = fit_bgnbd_with_prior(&data, &prior, 0.0).expect("weight-0 fit");
        assert_eq!(pooled, plain);
    }

    #[test]
    fn strong_prior_dominates_a_small_tenant() {
        let data = cdnow_summary();
        let small = &data[..30];
        let prior = BgNbdParams {
            r: 0.5,
            alpha: 10.0,
            a: 0.5,
            b: 5.0,
        };
        let fit = fit_bgnbd_with_prior(small, &prior, 1e4).expect("prior fit");
        let pairs = [
            (fit.params.r, prior.r),
            (fit.params.alpha, prior.alpha),
            (fit.params.a, prior.a),
            (fit.params.b, prior.b),
        ];
        for (got, centre) in pairs {
            assert!(
                (got.ln() - centre.ln()).abs() < 0.02,
                "{got} vs prior {centre}"
            );
        }
        // A moderate weight lands between the tenant's own MLE and the prior.
        let own = fit_bgnbd(small).expect("small plain fit");
        let mid = fit_bgnbd_with_prior(small, &prior, 5.0).expect("moderate prior fit");
        let distance = |p: &BgNbdParams| {
            [
                (p.r, prior.r),
                (p.alpha, prior.alpha),
                (p.a, prior.a),
                (p.b, prior.b),
            ]
            .iter()
            .map(|(v, c)| (v.ln() - c.ln()).powi(2))
            .sum::<f64>()
        };
        assert!(distance(&mid.params) < distance(&own.params));
        assert!(mid.log_likelihood <= own.log_likelihood);
    }

    #[test]
    fn refuses_too_little_or_bad_data() {
        let lone = RfmSummary {
            frequency: 3.0,
            recency: 10.0,
            age: 20.0,
        };
        let new = RfmSummary {
            frequency: 0.0,
            recency: 0.0,
            age: 20.0,
        };
        assert_eq!(
            fit_bgnbd(&[lone, new, new]),
            Err(ClvError::NotEnoughData { customers: 1 })
        );
        let broken = RfmSummary {
            recency: 30.0,
            ..lone
        };
        assert!(matches!(
            fit_bgnbd(&[lone, broken]),
            Err(ClvError::InvalidData { index: 1, .. })
        ));
        assert_eq!(
            fit_gamma_gamma(&[(2.0, 10.0)]),
            Err(ClvError::NotEnoughData { customers: 1 })
        );
        assert!(matches!(
            fit_gamma_gamma(&[(2.0, 10.0), (0.0, 5.0)]),
            Err(ClvError::InvalidData { index: 1, .. })
        ));
        assert!(matches!(
            fit_bgnbd_with_prior(&[lone], &PUBLISHED, -1.0),
            Err(ClvError::InvalidParameter { .. })
        ));
        // With a prior one customer is enough.
        assert!(fit_bgnbd_with_prior(&[lone], &PUBLISHED, 10.0).is_ok());
        assert!(!ClvError::DidNotConverge.to_string().is_empty());
    }

    // --- Predictions against lifetimes --------------------------------------

    /// References from lifetimes 0.11.3 with the PUBLISHED params fixed (venv with
    /// `pip install lifetimes==0.11.3`; numpy 2.4.6, scipy 1.17.1, pandas 3.0.1):
    /// ```text
    /// import numpy as np, pandas as pd
    /// from lifetimes import BetaGeoFitter
    /// bg = BetaGeoFitter()
    /// bg.params_ = pd.Series(dict(r=0.243, alpha=4.414, a=0.793, b=2.426))
    /// for (x, tx, T, t) in [(2, 30.43, 38.86, 39.0), (0, 0.0, 38.86, 39.0),
    ///                       (10, 20.0, 30.0, 52.0), (1, 1.71, 38.86, 10.0)]:
    ///     print(np.ravel(bg.conditional_expected_number_of_purchases_up_to_time(t, x, tx, T))[0],
    ///           np.ravel(bg.conditional_probability_alive(x, tx, T))[0])
    /// ```
    const LIFETIMES_REFERENCE: [(f64, f64, f64, f64, f64, f64); 4] = [
        (
            2.0,
            30.43,
            38.86,
            39.0,
            1.226_028_174_767_135,
            0.726_578_570_080_673,
        ),
        (0.0, 0.0, 38.86, 39.0, 0.195_098_052_011_253_96, 1.0),
        (
            10.0,
            20.0,
            30.0,
            52.0,
            3.257_362_627_284_526,
            0.299_712_514_065_842_76,
        ),
        (
            1.0,
            1.71,
            38.86,
            10.0,
            0.058_185_839_678_623_92,
            0.212_100_985_377_379_1,
        ),
    ];

    #[test]
    fn predictions_match_lifetimes_and_the_paper() {
        for (x, tx, age, t, purchases, alive) in LIFETIMES_REFERENCE {
            let s = RfmSummary {
                frequency: x,
                recency: tx,
                age,
            };
            assert_relative(
                expected_purchases(&PUBLISHED, t, &s),
                purchases,
                1e-10,
                &format!("E[purchases] x={x}"),
            );
            assert_relative(
                probability_alive(&PUBLISHED, &s),
                alive,
                1e-12,
                &format!("P(alive) x={x}"),
            );
        }
        // The paper's worked example: customer 1 of CDNOW, next 39 weeks.
        let customer = RfmSummary {
            frequency: 2.0,
            recency: 30.43,
            age: 38.86,
        };
        assert_eq!(
            round_to(expected_purchases(&PUBLISHED, 39.0, &customer), 4),
            1.226
        );
    }

    #[test]
    fn expected_purchases_is_stable_at_the_edges() {
        let s = RfmSummary {
            frequency: 2.0,
            recency: 30.43,
            age: 38.86,
        };
        assert_eq!(expected_purchases(&PUBLISHED, 0.0, &s), 0.0);
        // a = 1 is a removable 0/0 in eq. 10.
        let at = |a: f64| expected_purchases(&BgNbdParams { a, ..PUBLISHED }, 39.0, &s);
        let (below, one, above) = (at(0.999), at(1.0), at(1.001));
        assert!(
            one.is_finite() && below > one && one > above,
            "{below} {one} {above}"
        );
        assert_close(one, 0.5 * (below + above), 1e-5, "a = 1 continuity");
        // Long horizons (z near 1) and heavy buyers stay finite and increasing.
        let heavy = RfmSummary {
            frequency: 2000.0,
            recency: 364.0,
            age: 365.0,
        };
        let mut previous = 0.0;
        for t in [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6] {
            for who in [&s, &heavy] {
                let v = expected_purchases(&PUBLISHED, t, who);
                assert!(v.is_finite() && v > 0.0, "t={t}: {v}");
            }
            let v = expected_purchases(&PUBLISHED, t, &s);
            assert!(v > previous, "not increasing at t={t}");
            previous = v;
        }
    }

    // --- Gamma-Gamma and CLV -------------------------------------------------

    #[test]
    fn gamma_gamma_fit_matches_published_cdnow_estimates() {
        let data = cdnow_spend();
        assert_eq!(data.len(), 946);
        let fit = fit_gamma_gamma(&data).expect("Gamma-Gamma fit on CDNOW");
        let GammaGammaParams { p, q, v } = fit.params;
        // Fader & Hardie's note: p = 6.25, q = 3.74, γ = 15.44; lifetimes' docs say
        // 15.45, so only the range shared by both is asserted for γ.
        assert_eq!(round_to(p, 3), 6.25, "p = {p}");
        assert_eq!(round_to(q, 3), 3.74, "q = {q}");
        assert!((15.4..=15.5).contains(&v), "v = {v}");
        // lifetimes 0.11.3 GammaGammaFitter().fit(x, zbar) on x > 0 (scipy 1.17.1):
        // p=6.248802496075312 q=3.744588460923114 v=15.44774806492914, and
        // -mean NLL * n = -4055.9232435028644.
        assert_relative(p, 6.248_802_496_075_312, 1e-4, "p vs lifetimes");
        assert_relative(q, 3.744_588_460_923_114, 1e-4, "q vs lifetimes");
        assert_relative(v, 15.447_748_064_929_14, 1e-4, "v vs lifetimes");
        assert!(fit.log_likelihood >= -4_055.923_243_502_864_4 - 1e-6);
        assert!(fit.log_likelihood < -4_055.9);
    }

    /// lifetimes 0.11.3 with the PUBLISHED BG/NBD params and p=6.25, q=3.74, v=15.44:
    /// `gg.conditional_expected_average_profit(2, 22.35)` and
    /// `lifetimes.utils._customer_lifetime_value(bg, f=2, r=30.43, T=38.86, m, time=10,
    /// discount_rate=0.02, freq="M")` (freq "M" = one model time unit per period).
    #[test]
    fn clv_matches_lifetimes() {
        let gg = GammaGammaParams {
            p: 6.25,
            q: 3.74,
            v: 15.44,
        };
        let customer = RfmSummary {
            frequency: 2.0,
            recency: 30.43,
            age: 38.86,
        };
        assert_relative(
            expected_average_spend(&gg, 2.0, 22.35),
            24.663_713_910_761_157,
            1e-13,
            "expected spend",
        );
        assert_relative(
            customer_lifetime_value(&PUBLISHED, &gg, &customer, 22.35, 10, 0.02),
            7.922_125_641_958_447,
            1e-10,
            "CLV",
        );
        assert_eq!(
            customer_lifetime_value(&PUBLISHED, &gg, &customer, 22.35, 0, 0.02),
            0.0
        );
        // No repeat purchases: spend falls back to the population mean p v / (q - 1).
        assert_relative(
            expected_average_spend(&gg, 0.0, 0.0),
            6.25 * 15.44 / 2.74,
            1e-15,
            "population mean spend",
        );
    }

    // --- Special functions ---------------------------------------------------

    #[test]
    #[allow(clippy::excessive_precision)] // mpmath digits kept verbatim
    fn ln_gamma_known_values() {
        // Exact values, and mpmath 1.4.1 at 40 digits: mp.log(abs(mp.gamma(x))).
        let cases = [
            (0.5, 0.5 * PI.ln()),
            (1.0, 0.0),
            (2.0, 0.0),
            (10.0, 362_880f64.ln()),
            (1e-8, 18.420_680_738_180_208_884),
            (0.1, 2.252_712_651_734_205_902),
            (1.5, -0.120_782_237_635_245_222_35),
            (2.5, 0.284_682_870_472_919_159_63),
            (3.7, 1.428_072_326_665_388_129_2),
            (100.5, 361.435_540_467_777_621_56),
            (1000.0, 5_905.220_423_209_181_211_8),
            (1e6, 12_815_504.569_147_611_66),
            (-0.5, 1.265_512_123_484_645_396_5),
            (-2.3, 0.369_566_663_455_008_037_46),
            (0.243, 1.318_043_584_699_669_876_5),
            (4.414, 2.335_220_052_201_890_562_3),
        ];
        for (x, expected) in cases {
            assert_close(ln_gamma(x), expected, 1e-14, &format!("ln_gamma({x})"));
        }
        assert_eq!(ln_gamma(0.0), f64::INFINITY);
        assert_eq!(ln_gamma(-3.0), f64::INFINITY);
        assert!(ln_gamma(f64::NAN).is_nan());
        // Recurrence Γ(x+1) = xΓ(x) across the reflection boundary.
        for x in [0.3, 0.49, 0.51, 0.7, 7.25] {
            assert_close(
                ln_gamma(x + 1.0),
                ln_gamma(x) + f64::ln(x),
                1e-14,
                "recurrence",
            );
        }
    }

    #[test]
    #[allow(clippy::excessive_precision)] // mpmath digits kept verbatim
    fn hyp2f1_known_values() {
        // Closed form 2F1(1,1;2;z) = -ln(1-z)/z, on every code path.
        for z in [-5.0_f64, -0.5, 0.3, 0.5, 0.89, 0.95, 0.999, 1.0 - 1e-9] {
            let expected = -(-z).ln_1p() / z;
            assert_relative(hyp2f1(1.0, 1.0, 2.0, z), expected, 1e-12, &format!("z={z}"));
        }
        // mpmath 1.4.1 at 40 digits: mp.hyp2f1(a, b, c, z).
        let cases = [
            (2.243, 4.426, 4.219, 0.6, 8.791_369_855_504_945_410_5),
            (1.5, 2.25, 3.1, 0.97, 24.037_070_053_402_858_812),
            (0.5, 1.5, 3.0, 0.95, 1.547_476_182_821_625_894_1),
            (2.0, 3.0, 4.0, 0.99, 280.675_316_458_196_079_73),
            (-3.0, 2.0, 1.5, 0.7, -0.075_200_000_000_000_001_421),
            (0.3, 0.7, 1.9, -5.0, 0.770_451_787_151_497_380_84),
            (2.976, -0.207, 3.219, 0.9999, 0.437_181_873_312_231_544_64),
            (2.976, -0.207, 3.219, 0.5, 0.878_595_559_219_411_287_13),
            (0.5, 0.5, 1.5, 0.999_999, 1.569_797_111_526_967_510_5),
        ];
        for (a, b, c, z, expected) in cases {
            assert_relative(
                hyp2f1(a, b, c, z),
                expected,
                1e-12,
                &format!("2F1({a},{b};{c};{z})"),
            );
        }
        // Gauss's theorem at z = 1: 2F1(1/2,1/2;3/2;1) = π/2.
        assert_relative(hyp2f1(0.5, 0.5, 1.5, 1.0), PI / 2.0, 1e-14, "z = 1");
        assert!(hyp2f1(1.0, 1.0, 0.0, 0.5).is_nan());
        assert!(hyp2f1(1.0, 1.0, 2.0, 1.5).is_nan());
        assert_eq!(hyp2f1(3.0, 4.0, 5.0, 0.0), 1.0);
    }
}
