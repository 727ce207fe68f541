//! Budget allocation across (segment, channel) cells with diminishing
//! returns.
//!
//! Spending `s` on a cell buys `s / cost_per_send` sends, but sends land on
//! people at random, so repeated sends increasingly reach people already
//! reached. The number of distinct people reached is
//! `reach(s) = N · (1 − exp(−s / (c · N)))` for an audience of `N` and a cost
//! per send of `c`, and a cell returns `p · reach(s)` conversions worth
//! `v · p · reach(s)`, where `p` is the conversion rate per person reached and
//! `v` the value of a conversion (1 to maximise conversions).
//!
//! The marginal value of a unit of money, `p · v / c · exp(−s / (c · N))`,
//! falls as a cell's spend grows, so the value-maximising split of a budget
//! is the *water-filling* one: every funded cell is funded up to the same
//! marginal value `λ`, and cells whose very first unit returns less than `λ`
//! get nothing. Requiring `λ ≥ min_marginal_roi` stops spending once a unit
//! of money would return less than that, leaving the rest of the budget
//! unspent.
//!
//! The conversion rate of each cell is uncertain: it is described by a Beta
//! posterior. The allocation uses the posterior mean, and the uncertainty of
//! the outcome is reported as 90% credible intervals obtained by drawing
//! every cell's rate from its posterior, holding the allocation fixed.

use crate::stats::Rng;

/// Fewest posterior draws accepted for the credible intervals.
pub const MIN_DRAWS: usize = 100;
/// Most posterior draws accepted for the credible intervals.
pub const MAX_DRAWS: usize = 100_000;

/// Rejected input, naming the field at fault.
pub use super::InputError as BudgetError;

/// One (segment, channel) pair the budget can be spent on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cell {
    /// People the channel can reach in the segment; finite and positive.
    pub audience: f64,
    /// Cost of one send; finite and positive.
    pub cost_per_send: f64,
    /// First parameter of the Beta posterior of the conversion rate per
    /// person reached (≈ conversions + prior); finite and positive.
    pub alpha: f64,
    /// Second parameter of the Beta posterior (≈ non-conversions + prior);
    /// finite and positive.
    pub beta: f64,
    /// Value of one conversion (1 to maximise conversions); finite and not
    /// negative.
    pub value_per_conversion: f64,
}

impl Cell {
    /// Posterior mean conversion rate, `alpha / (alpha + beta)`.
    pub fn conversion_rate(&self) -> f64 {
        self.alpha / (self.alpha + self.beta)
    }

    /// Spend at which reach saturates at rate `1/e` per unit of audience:
    /// `cost_per_send · audience`, the cost of sending once to everyone.
    fn scale(&self) -> f64 {
        self.cost_per_send * self.audience
    }

    /// ln of the marginal value per unit of money of the first unit spent,
    /// `ln(p · v / c)`; `−∞` when the cell is worthless. Computed in logs so
    /// that extreme but finite inputs do not overflow.
    fn ln_initial_marginal(&self) -> f64 {
        if self.value_per_conversion > 0.0 {
            self.conversion_rate().ln() + self.value_per_conversion.ln() - self.cost_per_send.ln()
        } else {
            f64::NEG_INFINITY
        }
    }

    /// Expected outcome of spending `spend` on this cell at the posterior
    /// mean conversion rate. Negative or non-finite spends count as none.
    pub fn at_spend(&self, spend: f64) -> CellAllocation {
        let spend = if spend.is_finite() && spend > 0.0 {
            spend
        } else {
            0.0
        };
        let x = spend / self.scale();
        let reach = reach_fraction(x) * self.audience;
        let p = self.conversion_rate();
        let expected_conversions = p * reach;
        let ln_marginal = self.ln_initial_marginal() - x;
        CellAllocation {
            spend,
            sends: spend / self.cost_per_send,
            reach,
            expected_conversions,
            expected_value: expected_conversions * self.value_per_conversion,
            marginal_value_per_unit: ln_marginal.exp(),
        }
    }
}

/// Share of an audience reached after `x` full passes' worth of random
/// sends, `1 − e^(−x)`, accurate for small `x`.
fn reach_fraction(x: f64) -> f64 {
    -(-x).exp_m1()
}

/// What the allocation spends on one cell and what it expects back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CellAllocation {
    /// Money allocated to the cell.
    pub spend: f64,
    /// Sends that money buys, `spend / cost_per_send`.
    pub sends: f64,
    /// Expected distinct people reached.
    pub reach: f64,
    /// Expected conversions at the posterior mean rate.
    pub expected_conversions: f64,
    /// Expected value at the posterior mean rate.
    pub expected_value: f64,
    /// Value returned by one more unit of money spent on the cell at this
    /// spend. Equal across all funded cells; no larger for unfunded ones.
    pub marginal_value_per_unit: f64,
}

/// The value-maximising split of a budget and its expected outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Allocation {
    /// Per cell, in input order.
    pub cells: Vec<CellAllocation>,
    /// Total allocated.
    pub spend: f64,
    /// Budget left unallocated because no cell returned at least
    /// `min_marginal_roi` per unit of money on it (0 when
    /// `min_marginal_roi` is 0 and some cell has value).
    pub unspent: f64,
    /// Marginal value per unit of money at which spending stops: that of
    /// every funded cell. When nothing is funded, the best first-unit return
    /// of any cell (0 when no cell has value).
    pub marginal_value_per_unit: f64,
    /// Expected conversions at the posterior mean rates.
    pub expected_conversions: f64,
    /// Expected value at the posterior mean rates.
    pub expected_value: f64,
    /// 90% credible interval (5th, 95th percentile) of total conversions.
    pub conversions_interval: (f64, f64),
    /// 90% credible interval (5th, 95th percentile) of total value.
    pub value_interval: (f64, f64),
}

/// Splits `budget` across `cells` to maximise expected value, spending only
/// while a unit of money returns at least `min_marginal_roi` in value (0 to
/// always spend the whole budget on cells that have value), and estimates
/// 90% credible intervals of the outcome from `draws` posterior draws
/// seeded with `seed` (same inputs and seed, same intervals).
///
/// The optimum funds each cell `i` with
/// `s_i = c_i N_i · max(0, ln(p_i v_i / (c_i λ)))` for the smallest common
/// marginal value `λ ≥ min_marginal_roi` whose total fits the budget. As a
/// function of `ln λ` the total is piecewise linear, so `λ` is found exactly
/// by adding cells in decreasing order of first-unit return rather than by
/// iteration. Cells with a zero value per conversion get nothing.
///
/// Costs `draws × cells.len()` Beta draws for the intervals.
///
/// # Errors
///
/// Invalid input, naming its field: `budget` not finite or negative;
/// `min_marginal_roi` not finite or negative; `draws` outside
/// [`MIN_DRAWS`]`..=`[`MAX_DRAWS`]; `cells` empty (or so large that the total
/// `audience × cost_per_send` overflows); `cells[i].audience`,
/// `cells[i].cost_per_send`, `cells[i].alpha`, `cells[i].beta` not finite
/// and positive; `cells[i].value_per_conversion` not finite or negative.
pub fn allocate(
    budget: f64,
    cells: &[Cell],
    min_marginal_roi: f64,
    draws: usize,
    seed: u64,
) -> Result<Allocation, BudgetError> {
    validate(budget, cells, min_marginal_roi, draws)?;

    let spends = water_fill(budget, cells, min_marginal_roi);
    let allocated: Vec<CellAllocation> = cells
        .iter()
        .zip(&spends)
        .map(|(cell, &spend)| cell.at_spend(spend))
        .collect();

    let spend: f64 = allocated.iter().map(|c| c.spend).sum();
    let expected_conversions = allocated.iter().map(|c| c.expected_conversions).sum();
    let expected_value = allocated.iter().map(|c| c.expected_value).sum();
    let funded = allocated.iter().filter(|c| c.spend > 0.0);
    let marginal_value_per_unit = funded
        .map(|c| c.marginal_value_per_unit)
        .max_by(f64::total_cmp)
        .or_else(|| {
            allocated
                .iter()
                .map(|c| c.marginal_value_per_unit)
                .max_by(f64::total_cmp)
        })
        .unwrap_or(0.0);
    let unspent = if min_marginal_roi == 0.0 && spend > 0.0 {
        // The whole budget is spent; any difference is rounding.
        0.0
    } else {
        (budget - spend).max(0.0)
    };

    let (conversions_interval, value_interval) = credible_intervals(cells, &allocated, draws, seed);

    Ok(Allocation {
        cells: allocated,
        spend,
        unspent,
        marginal_value_per_unit,
        expected_conversions,
        expected_value,
        conversions_interval,
        value_interval,
    })
}

fn validate(
    budget: f64,
    cells: &[Cell],
    min_marginal_roi: f64,
    draws: usize,
) -> Result<(), BudgetError> {
    if !(budget.is_finite() && budget >= 0.0) {
        return Err(BudgetError::new(
            "budget",
            "must be a finite number not below 0",
        ));
    }
    if !(min_marginal_roi.is_finite() && min_marginal_roi >= 0.0) {
        return Err(BudgetError::new(
            "min_marginal_roi",
            "must be a finite number not below 0",
        ));
    }
    if !(MIN_DRAWS..=MAX_DRAWS).contains(&draws) {
        return Err(BudgetError::new(
            "draws",
            format!("must be between {MIN_DRAWS} and {MAX_DRAWS}"),
        ));
    }
    if cells.is_empty() {
        return Err(BudgetError::new("cells", "must contain at least one cell"));
    }
    let positive = |x: f64| x.is_finite() && x > 0.0;
    let mut total_scale = 0.0;
    for (i, cell) in cells.iter().enumerate() {
        let field = |name: &str| format!("cells[{i}].{name}");
        let checks = [
            ("audience", positive(cell.audience)),
            ("cost_per_send", positive(cell.cost_per_send)),
            ("alpha", positive(cell.alpha)),
            ("beta", positive(cell.beta)),
        ];
        for (name, ok) in checks {
            if !ok {
                return Err(BudgetError::new(
                    field(name),
                    "must be a finite number greater than 0",
                ));
            }
        }
        if !(cell.value_per_conversion.is_finite() && cell.value_per_conversion >= 0.0) {
            return Err(BudgetError::new(
                field("value_per_conversion"),
                "must be a finite number not below 0",
            ));
        }
        if !(cell.alpha + cell.beta).is_finite() {
            return Err(BudgetError::new(
                field("beta"),
                "alpha + beta must be finite",
            ));
        }
        let scale = cell.scale();
        if !scale.is_finite() {
            return Err(BudgetError::new(
                field("audience"),
                "audience × cost_per_send must be finite",
            ));
        }
        total_scale += scale;
    }
    if !f64::is_finite(total_scale) {
        return Err(BudgetError::new(
            "cells",
            "the total of audience × cost_per_send over all cells must be finite",
        ));
    }
    Ok(())
}

/// Water-filling spends per cell (see [`allocate`]).
///
/// With `μ = ln λ`, `k_i = c_i N_i` and `m_i = ln(p_i v_i / c_i)`, the total
/// `S(μ) = Σ k_i · max(0, m_i − μ)` is continuous, decreasing and linear
/// between the breakpoints `m_i`. Taking cells in decreasing `m_i`, with the
/// first `j` funded `S(μ) = B` solves to
/// `μ_j = m_1 + (Σ_{i≤j} k_i (m_i − m_1) − B) / Σ_{i≤j} k_i`, which is the
/// answer as soon as it is not below the next breakpoint.
fn water_fill(budget: f64, cells: &[Cell], min_marginal_roi: f64) -> Vec<f64> {
    let mut spends = vec![0.0; cells.len()];
    if budget <= 0.0 {
        return spends;
    }
    let ln_marginal: Vec<f64> = cells.iter().map(Cell::ln_initial_marginal).collect();
    let mut order: Vec<usize> = (0..cells.len())
        .filter(|&i| ln_marginal[i].is_finite())
        .collect();
    order.sort_by(|&a, &b| ln_marginal[b].total_cmp(&ln_marginal[a]));
    let Some(&top) = order.first() else {
        return spends;
    };
    let m_top = ln_marginal[top];

    let mut scale_sum = 0.0;
    let mut weighted_gap = 0.0;
    let mut mu = f64::NEG_INFINITY;
    for (pos, &i) in order.iter().enumerate() {
        let k = cells[i].scale();
        scale_sum += k;
        weighted_gap += k * (ln_marginal[i] - m_top);
        let candidate = m_top + (weighted_gap - budget) / scale_sum;
        let next_breakpoint = order
            .get(pos + 1)
            .map_or(f64::NEG_INFINITY, |&n| ln_marginal[n]);
        if candidate >= next_breakpoint {
            mu = candidate;
            break;
        }
    }
    if min_marginal_roi > 0.0 {
        mu = mu.max(min_marginal_roi.ln());
    }

    for &i in &order {
        let gap = ln_marginal[i] - mu;
        if gap > 0.0 {
            spends[i] = cells[i].scale() * gap;
        }
    }
    spends
}

/// 5th and 95th percentiles of total conversions and total value over
/// `draws` joint draws of every cell's conversion rate from its posterior,
/// with the reach of each cell fixed by the allocation.
fn credible_intervals(
    cells: &[Cell],
    allocated: &[CellAllocation],
    draws: usize,
    seed: u64,
) -> ((f64, f64), (f64, f64)) {
    let mut rng = Rng::new(seed);
    let mut conversions = Vec::with_capacity(draws);
    let mut values = Vec::with_capacity(draws);
    for _ in 0..draws {
        let mut total_conversions = 0.0;
        let mut total_value = 0.0;
        for (cell, allocation) in cells.iter().zip(allocated) {
            let p = rng.beta_sample(cell.alpha, cell.beta);
            let c = p * allocation.reach;
            total_conversions += c;
            total_value += c * cell.value_per_conversion;
        }
        conversions.push(total_conversions);
        values.push(total_value);
    }
    conversions.sort_by(f64::total_cmp);
    values.sort_by(f64::total_cmp);
    (
        (quantile(&conversions, 0.05), quantile(&conversions, 0.95)),
        (quantile(&values, 0.05), quantile(&values, 0.95)),
    )
}

/// Quantile `q` of sorted, non-empty `xs` by linear interpolation between
/// order statistics (the usual "type 7" definition).
fn quantile(xs: &[f64], q: f64) -> f64 {
    let Some(last) = xs.len().checked_sub(1) else {
        return f64::NAN;
    };
    let h = q * last as f64;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(last);
    let frac = h - lo as f64;
    xs[lo] + frac * (xs[hi] - xs[lo])
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;

    type TestResult = Result<(), Box<dyn Error>>;

    fn cell(audience: f64, cost_per_send: f64, alpha: f64, beta: f64, value: f64) -> Cell {
        Cell {
            audience,
            cost_per_send,
            alpha,
            beta,
            value_per_conversion: value,
        }
    }

    fn rel_close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * a.abs().max(b.abs()).max(1e-300)
    }

    fn asymmetric_cells() -> Vec<Cell> {
        vec![
            // Email to a large segment: cheap, low rate.
            cell(50_000.0, 0.01, 20.0, 1980.0, 40.0),
            // SMS to the same segment: dearer, better rate.
            cell(20_000.0, 0.05, 30.0, 970.0, 40.0),
            // Push to a small loyal segment: high rate, saturates fast.
            cell(2_000.0, 0.02, 50.0, 450.0, 60.0),
            // Paid social: expensive, poor.
            cell(100_000.0, 0.5, 5.0, 995.0, 40.0),
        ]
    }

    #[test]
    fn identical_cells_split_equally() -> TestResult {
        let c = cell(1000.0, 1.0, 10.0, 90.0, 1.0);
        let a = allocate(500.0, &[c, c], 0.0, 1000, 7)?;
        assert!(rel_close(a.cells[0].spend, 250.0, 1e-12));
        assert!(rel_close(a.cells[1].spend, 250.0, 1e-12));
        assert!(rel_close(a.spend, 500.0, 1e-12));
        assert!(a.unspent.abs() < 1e-12);
        Ok(())
    }

    #[test]
    fn single_cell_matches_hand_computation() -> TestResult {
        // N = 1000, c = 1, p = 0.1, v = 1, B = 1000:
        // reach = 1000 (1 − e^−1) = 632.1206, conversions = 63.21206.
        let c = cell(1000.0, 1.0, 10.0, 90.0, 1.0);
        let a = allocate(1000.0, &[c], 0.0, 2000, 1)?;
        let only = &a.cells[0];
        assert!(rel_close(only.spend, 1000.0, 1e-12));
        assert!(rel_close(only.sends, 1000.0, 1e-12));
        assert!(rel_close(only.reach, 632.120_558_828_557_7, 1e-12));
        assert!(rel_close(
            only.expected_conversions,
            63.212_055_882_855_77,
            1e-12
        ));
        assert!(rel_close(only.expected_value, 63.212_055_882_855_77, 1e-12));
        // Marginal: 0.1 · e^−1.
        assert!(rel_close(
            only.marginal_value_per_unit,
            0.036_787_944_117_144_23,
            1e-12
        ));
        assert!(rel_close(
            a.expected_conversions,
            63.212_055_882_855_77,
            1e-12
        ));
        assert!(a.unspent.abs() < 1e-12);
        Ok(())
    }

    #[test]
    fn better_cell_gets_more_and_marginals_equalise() -> TestResult {
        let low = cell(1000.0, 1.0, 10.0, 90.0, 1.0);
        let high = cell(1000.0, 1.0, 20.0, 80.0, 1.0);
        let a = allocate(800.0, &[low, high], 0.0, 1000, 3)?;
        assert!(a.cells[1].spend > a.cells[0].spend);
        assert!(a.cells[0].spend > 0.0);
        // s_high − s_low = cN ln 2.
        assert!(rel_close(
            a.cells[1].spend - a.cells[0].spend,
            1000.0 * std::f64::consts::LN_2,
            1e-9
        ));
        assert!(rel_close(
            a.cells[0].marginal_value_per_unit,
            a.cells[1].marginal_value_per_unit,
            1e-6
        ));
        assert!(rel_close(
            a.marginal_value_per_unit,
            a.cells[0].marginal_value_per_unit,
            1e-6
        ));
        Ok(())
    }

    #[test]
    fn kkt_conditions_hold_on_asymmetric_case() -> TestResult {
        let cells = asymmetric_cells();
        for budget in [10.0, 300.0, 2_000.0, 50_000.0] {
            let a = allocate(budget, &cells, 0.0, 500, 11)?;
            assert!(
                rel_close(a.spend, budget, 1e-9),
                "spend {} != {budget}",
                a.spend
            );
            assert!(a.unspent.abs() < 1e-12);
            let lambda = a.marginal_value_per_unit;
            for (i, c) in a.cells.iter().enumerate() {
                assert!(c.spend >= 0.0);
                if c.spend > 0.0 {
                    assert!(
                        rel_close(c.marginal_value_per_unit, lambda, 1e-6),
                        "budget {budget}, cell {i}: {} vs λ {lambda}",
                        c.marginal_value_per_unit
                    );
                } else {
                    assert!(c.marginal_value_per_unit <= lambda * (1.0 + 1e-9));
                }
            }
        }
        // A small budget funds only the best cell (push: 0.1 · 60 / 0.02 = 300).
        let a = allocate(10.0, &cells, 0.0, 500, 11)?;
        assert!(a.cells[2].spend > 0.0);
        assert!(a.cells[3].spend == 0.0);
        Ok(())
    }

    #[test]
    fn allocation_beats_equal_split() -> TestResult {
        let cells = asymmetric_cells();
        let budget = 2_000.0;
        let a = allocate(budget, &cells, 0.0, 500, 5)?;
        let share = budget / cells.len() as f64;
        let equal: f64 = cells.iter().map(|c| c.at_spend(share).expected_value).sum();
        assert!(
            a.expected_value > equal * 1.01,
            "optimised {} vs equal split {equal}",
            a.expected_value
        );
        // Small perturbations of the optimum do not improve it either.
        for (from, to) in [(0, 1), (1, 2), (2, 0), (0, 3)] {
            let mut spends: Vec<f64> = a.cells.iter().map(|c| c.spend).collect();
            let delta = spends[from].min(5.0);
            spends[from] -= delta;
            spends[to] += delta;
            let moved: f64 = cells
                .iter()
                .zip(&spends)
                .map(|(c, &s)| c.at_spend(s).expected_value)
                .sum();
            assert!(moved <= a.expected_value * (1.0 + 1e-12));
        }
        Ok(())
    }

    #[test]
    fn min_marginal_roi_stops_spending() -> TestResult {
        // p v / c = 0.1, roi 0.05: stop where 0.1 e^(−s/1000) = 0.05,
        // s = 1000 ln 2 = 693.147.
        let c = cell(1000.0, 1.0, 10.0, 90.0, 1.0);
        let a = allocate(1000.0, &[c], 0.05, 1000, 9)?;
        assert!(rel_close(a.cells[0].spend, 693.147_180_559_945_3, 1e-12));
        assert!(rel_close(a.unspent, 1000.0 - 693.147_180_559_945_3, 1e-12));
        assert!(rel_close(a.cells[0].marginal_value_per_unit, 0.05, 1e-12));
        assert!(rel_close(a.cells[0].reach, 500.0, 1e-12));

        // A budget that runs out first is spent whole.
        let a = allocate(400.0, &[c], 0.05, 1000, 9)?;
        assert!(rel_close(a.spend, 400.0, 1e-12));
        assert!(a.unspent.abs() < 1e-12);

        // A threshold above every cell's first-unit return spends nothing.
        let a = allocate(400.0, &[c], 0.2, 1000, 9)?;
        assert!(a.spend == 0.0);
        assert!(rel_close(a.unspent, 400.0, 1e-12));
        assert!(rel_close(a.marginal_value_per_unit, 0.1, 1e-12));
        Ok(())
    }

    #[test]
    fn worthless_cells_and_zero_budget_get_nothing() -> TestResult {
        let good = cell(1000.0, 1.0, 10.0, 90.0, 1.0);
        let worthless = cell(1000.0, 1.0, 10.0, 90.0, 0.0);
        let a = allocate(500.0, &[worthless, good], 0.0, 100, 2)?;
        assert!(a.cells[0].spend == 0.0);
        assert!(rel_close(a.cells[1].spend, 500.0, 1e-12));

        let a = allocate(500.0, &[worthless], 0.0, 100, 2)?;
        assert!(a.spend == 0.0);
        assert!(rel_close(a.unspent, 500.0, 1e-12));
        assert!(a.marginal_value_per_unit == 0.0);
        assert!(a.expected_value == 0.0);

        let a = allocate(0.0, &[good, good], 0.0, 100, 2)?;
        assert!(a.spend == 0.0 && a.unspent == 0.0);
        assert!(a.expected_conversions == 0.0 && a.expected_value == 0.0);
        assert!(a.conversions_interval == (0.0, 0.0));
        assert!(a.value_interval == (0.0, 0.0));
        assert!(a.cells.iter().all(|c| c.spend == 0.0 && c.reach == 0.0));
        Ok(())
    }

    #[test]
    fn intervals_contain_estimate_and_are_reproducible() -> TestResult {
        let cells = asymmetric_cells();
        let a = allocate(2_000.0, &cells, 0.0, 4_000, 123)?;
        let (lo, hi) = a.conversions_interval;
        assert!(lo < a.expected_conversions && a.expected_conversions < hi);
        let (lo, hi) = a.value_interval;
        assert!(lo < a.expected_value && a.expected_value < hi);

        let again = allocate(2_000.0, &cells, 0.0, 4_000, 123)?;
        assert_eq!(a, again);
        let other_seed = allocate(2_000.0, &cells, 0.0, 4_000, 124)?;
        assert!(other_seed.conversions_interval != a.conversions_interval);
        assert!(other_seed.cells == a.cells);
        Ok(())
    }

    #[test]
    fn interval_matches_beta_quantiles_for_one_cell() -> TestResult {
        // One cell, reach R: conversions = p R with p ~ Beta(10, 90), whose
        // 5th and 95th percentiles are 0.055832 and 0.153275.
        let c = cell(1000.0, 1.0, 10.0, 90.0, 2.0);
        let a = allocate(1000.0, &[c], 0.0, 100_000, 77)?;
        let reach = a.cells[0].reach;
        let (lo, hi) = a.conversions_interval;
        assert!(
            (lo / reach - 0.055_832).abs() < 5e-4,
            "5th percentile {}",
            lo / reach
        );
        assert!(
            (hi / reach - 0.153_275).abs() < 5e-4,
            "95th percentile {}",
            hi / reach
        );
        let (vlo, vhi) = a.value_interval;
        assert!(rel_close(vlo, 2.0 * lo, 1e-12) && rel_close(vhi, 2.0 * hi, 1e-12));
        Ok(())
    }

    #[test]
    fn invalid_inputs_name_the_field() -> TestResult {
        let good = cell(1000.0, 1.0, 10.0, 90.0, 1.0);
        let field = |r: Result<Allocation, BudgetError>| -> Result<String, Box<dyn Error>> {
            Ok(r.err().ok_or("invalid input accepted")?.field)
        };

        for budget in [-1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(field(allocate(budget, &[good], 0.0, 100, 0))?, "budget");
        }
        assert_eq!(field(allocate(1.0, &[], 0.0, 100, 0))?, "cells");
        for draws in [0, 99, 100_001] {
            assert_eq!(field(allocate(1.0, &[good], 0.0, draws, 0))?, "draws");
        }
        for roi in [-0.1, f64::NAN, f64::INFINITY] {
            assert_eq!(
                field(allocate(1.0, &[good], roi, 100, 0))?,
                "min_marginal_roi"
            );
        }

        let bad_cells: [(Cell, &str); 10] = [
            (
                Cell {
                    audience: 0.0,
                    ..good
                },
                "cells[1].audience",
            ),
            (
                Cell {
                    audience: f64::INFINITY,
                    ..good
                },
                "cells[1].audience",
            ),
            (
                Cell {
                    cost_per_send: 0.0,
                    ..good
                },
                "cells[1].cost_per_send",
            ),
            (
                Cell {
                    cost_per_send: f64::NAN,
                    ..good
                },
                "cells[1].cost_per_send",
            ),
            (Cell { alpha: 0.0, ..good }, "cells[1].alpha"),
            (Cell { beta: -2.0, ..good }, "cells[1].beta"),
            (
                Cell {
                    value_per_conversion: -1.0,
                    ..good
                },
                "cells[1].value_per_conversion",
            ),
            (
                Cell {
                    value_per_conversion: f64::NAN,
                    ..good
                },
                "cells[1].value_per_conversion",
            ),
            (
                Cell {
                    alpha: f64::MAX,
                    beta: f64::MAX,
                    ..good
                },
                "cells[1].beta",
            ),
            (
                Cell {
                    audience: 1e300,
                    cost_per_send: 1e300,
                    ..good
                },
                "cells[1].audience",
            ),
        ];
        for (bad, expected) in bad_cells {
            assert_eq!(field(allocate(1.0, &[good, bad], 0.0, 100, 0))?, expected);
        }

        let err = allocate(-1.0, &[good], 0.0, 100, 0)
            .err()
            .ok_or("negative budget accepted")?;
        assert_eq!(
            err.to_string(),
            "budget: must be a finite number not below 0"
        );
        Ok(())
    }

    #[test]
    fn quantile_interpolates() {
        let xs = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert!(rel_close(quantile(&xs, 0.0), 1.0, 1e-15));
        assert!(rel_close(quantile(&xs, 0.5), 3.0, 1e-15));
        assert!(rel_close(quantile(&xs, 0.95), 4.8, 1e-12));
        assert!(rel_close(quantile(&xs, 1.0), 5.0, 1e-15));
    }
}
