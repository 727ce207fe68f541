//! Column statistics shared by the models that standardise their inputs (the sequence
//! model's history features, the logistic baseline, k-means).

/// Mean and standard deviation (population) of each column of `rows`; a column whose
/// standard deviation is at most `min_sd` gets 1, so dividing by it leaves the column
/// centred rather than blown up.
pub fn mean_and_sd<R: AsRef<[f64]>>(rows: &[R], min_sd: f64) -> (Vec<f64>, Vec<f64>) {
    let width = rows.first().map_or(0, |r| r.as_ref().len());
    let n = rows.len().max(1) as f64;
    let mut mean = vec![0.0; width];
    for row in rows {
        for (m, v) in mean.iter_mut().zip(row.as_ref()) {
            *m += v / n;
        }
    }
    let mut sd = vec![0.0; width];
    for row in rows {
        for ((s, v), m) in sd.iter_mut().zip(row.as_ref()).zip(&mean) {
            *s += (v - m) * (v - m) / n;
        }
    }
    for s in &mut sd {
        let root = s.sqrt();
        *s = if root > min_sd { root } else { 1.0 };
    }
    (mean, sd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn population_moments_and_constant_columns() {
        let rows = [[1.0, 5.0], [3.0, 5.0]];
        let (mean, sd) = mean_and_sd(&rows, 1e-12);
        assert_eq!(mean, [2.0, 5.0]);
        assert_eq!(sd, [1.0, 1.0], "sd 1 for the first, constant second gets 1");
        let (mean, sd) = mean_and_sd(&[[2.0, 0.0], [6.0, 0.0]], 1e-12);
        assert_eq!((mean[0], sd[0]), (4.0, 2.0));
    }
}
