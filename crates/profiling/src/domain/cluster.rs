//! k-means clustering of customers on standardised behavioural features, k chosen by
//! silhouette when not given, each cluster described by how its centroid stands out.

use mercato_platform::random::SplitMix64;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Names of the features, in the order of each customer's feature vector.
pub const FEATURES: [&str; 6] = [
    "recency_days",
    "frequency",
    "monetary",
    "average_order_value",
    "event_count",
    "engagement",
];

/// Silhouette is quadratic in the number of points; beyond this a fixed sample is scored.
const SILHOUETTE_SAMPLE: usize = 2000;

/// Deterministic pseudo-random numbers: the same seed gives the same clusters.
type Rng = SplitMix64;

fn distance2(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Column means and standard deviations, and the z-scored data. Skewed money and count
/// features are log-transformed first so a few big spenders do not make all the clusters.
pub fn standardise(raw: &[Vec<f64>]) -> (Vec<Vec<f64>>, Vec<f64>, Vec<f64>) {
    let logged: Vec<Vec<f64>> = raw
        .iter()
        .map(|row| row.iter().map(|v| v.max(0.0).ln_1p()).collect())
        .collect();
    // A variance of at most 1e-12 counts as constant.
    let (mean, sd) = super::columns::mean_and_sd(&logged, 1e-6);
    let z = logged
        .iter()
        .map(|row| {
            row.iter()
                .zip(&mean)
                .zip(&sd)
                .map(|((v, m), s)| (v - m) / s)
                .collect()
        })
        .collect();
    (z, mean, sd)
}

#[derive(Debug, Clone)]
pub struct KMeans {
    pub centroids: Vec<Vec<f64>>,
    pub labels: Vec<usize>,
    pub inertia: f64,
}

/// Lloyd's algorithm from k-means++ seeds; the best of a few restarts by inertia.
pub fn kmeans(points: &[Vec<f64>], k: usize, seed: u64) -> KMeans {
    let mut best: Option<KMeans> = None;
    let mut rng = Rng::new(seed);
    for _ in 0..4 {
        let run = lloyd(points, k, &mut rng);
        if best.as_ref().is_none_or(|b| run.inertia < b.inertia) {
            best = Some(run);
        }
    }
    best.unwrap_or(KMeans {
        centroids: Vec::new(),
        labels: Vec::new(),
        inertia: 0.0,
    })
}

fn lloyd(points: &[Vec<f64>], k: usize, rng: &mut Rng) -> KMeans {
    let n = points.len();
    let k = k.min(n).max(1);
    // k-means++: each next seed far from the ones chosen.
    let mut centroids = vec![points[(rng.next_u64() % n as u64) as usize].clone()];
    let mut nearest: Vec<f64> = points.iter().map(|p| distance2(p, &centroids[0])).collect();
    while centroids.len() < k {
        let total: f64 = nearest.iter().sum();
        let mut target = rng.next_f64() * total;
        let mut chosen = n - 1;
        for (i, d) in nearest.iter().enumerate() {
            if target <= *d {
                chosen = i;
                break;
            }
            target -= d;
        }
        centroids.push(points[chosen].clone());
        for (d, p) in nearest.iter_mut().zip(points) {
            *d = d.min(distance2(p, &points[chosen]));
        }
    }
    let mut labels = vec![0usize; n];
    for _ in 0..100 {
        let mut changed = false;
        for (label, p) in labels.iter_mut().zip(points) {
            let closest = (0..centroids.len())
                .min_by(|a, b| {
                    distance2(p, &centroids[*a]).total_cmp(&distance2(p, &centroids[*b]))
                })
                .unwrap_or(0);
            if closest != *label {
                *label = closest;
                changed = true;
            }
        }
        let dims = points[0].len();
        let mut sums = vec![vec![0.0; dims]; centroids.len()];
        let mut counts = vec![0usize; centroids.len()];
        for (label, p) in labels.iter().zip(points) {
            counts[*label] += 1;
            for (s, v) in sums[*label].iter_mut().zip(p) {
                *s += v;
            }
        }
        for (c, (sum, count)) in centroids.iter_mut().zip(sums.into_iter().zip(counts)) {
            if count > 0 {
                *c = sum.into_iter().map(|s| s / count as f64).collect();
            }
        }
        if !changed {
            break;
        }
    }
    let inertia = labels
        .iter()
        .zip(points)
        .map(|(l, p)| distance2(p, &centroids[*l]))
        .sum();
    KMeans {
        centroids,
        labels,
        inertia,
    }
}

/// Mean silhouette (−1..1) over a deterministic sample of points.
pub fn silhouette(points: &[Vec<f64>], labels: &[usize], k: usize) -> f64 {
    let n = points.len();
    if n < 2 || k < 2 {
        return 0.0;
    }
    let step = n.div_ceil(SILHOUETTE_SAMPLE).max(1);
    let sample: Vec<usize> = (0..n).step_by(step).collect();
    let mut total = 0.0;
    for &i in &sample {
        let mut sums = vec![0.0; k];
        let mut counts = vec![0usize; k];
        for &j in &sample {
            if i != j {
                sums[labels[j]] += distance2(&points[i], &points[j]).sqrt();
                counts[labels[j]] += 1;
            }
        }
        let own = labels[i];
        if counts[own] == 0 {
            continue;
        }
        let a = sums[own] / counts[own] as f64;
        let b = (0..k)
            .filter(|c| *c != own && counts[*c] > 0)
            .map(|c| sums[c] / counts[c] as f64)
            .fold(f64::INFINITY, f64::min);
        if b.is_finite() {
            total += (b - a) / a.max(b).max(1e-12);
        }
    }
    total / sample.len() as f64
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClusterSummary {
    pub cluster: usize,
    pub size: usize,
    /// Centroid in the features' own units (back-transformed from the log scale).
    #[schema(value_type = Object)]
    pub centroid: serde_json::Map<String, serde_json::Value>,
    /// How the cluster differs from the average customer, strongest first,
    /// e.g. "high frequency (+1.4 sd)".
    pub distinguishing: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Clustering {
    pub k: usize,
    pub silhouette: f64,
    /// (k, silhouette) for every k tried.
    pub candidates: Vec<(usize, f64)>,
    pub labels: Vec<usize>,
    pub clusters: Vec<ClusterSummary>,
}

/// Clusters raw feature rows: with `k` given, that many clusters; else the k in `range`
/// with the best silhouette.
pub fn cluster(raw: &[Vec<f64>], k: Option<usize>, range: (usize, usize), seed: u64) -> Clustering {
    let (z, mean, sd) = standardise(raw);
    let ks: Vec<usize> = match k {
        Some(k) => vec![k],
        None => (range.0..=range.1).collect(),
    };
    let mut candidates = Vec::new();
    let mut best: Option<(usize, f64, KMeans)> = None;
    for k in ks {
        let run = kmeans(&z, k, seed);
        let s = silhouette(&z, &run.labels, k);
        candidates.push((k, s));
        if best.as_ref().is_none_or(|(_, bs, _)| s > *bs) {
            best = Some((k, s, run));
        }
    }
    let Some((k, silhouette, run)) = best else {
        return Clustering {
            k: 0,
            silhouette: 0.0,
            candidates,
            labels: Vec::new(),
            clusters: Vec::new(),
        };
    };
    let clusters = run
        .centroids
        .iter()
        .enumerate()
        .map(|(c, centroid)| {
            let size = run.labels.iter().filter(|l| **l == c).count();
            let original = centroid
                .iter()
                .zip(&mean)
                .zip(&sd)
                .zip(FEATURES)
                .map(|(((z, m), s), name)| {
                    (
                        name.to_owned(),
                        serde_json::json!(((z * s + m).exp() - 1.0).max(0.0)),
                    )
                })
                .collect();
            let mut standing: Vec<(f64, &str)> = centroid
                .iter()
                .copied()
                .zip(FEATURES)
                .filter(|(z, _)| z.abs() >= 0.5)
                .collect();
            standing.sort_by(|a, b| b.0.abs().total_cmp(&a.0.abs()));
            let distinguishing = standing
                .into_iter()
                .map(|(z, name)| {
                    format!(
                        "{} {name} ({z:+.1} sd)",
                        if z > 0.0 { "high" } else { "low" }
                    )
                })
                .collect();
            ClusterSummary {
                cluster: c,
                size,
                centroid: original,
                distinguishing,
            }
        })
        .collect();
    Clustering {
        k,
        silhouette,
        candidates,
        labels: run.labels,
        clusters,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three well separated groups in two of the six features.
    fn blobs() -> Vec<Vec<f64>> {
        let mut rng = Rng::new(7);
        let mut rows = Vec::new();
        for (f, m) in [(1.0, 20.0), (12.0, 900.0), (40.0, 20.0)] {
            for _ in 0..60 {
                let jitter = |x: f64, rng: &mut Rng| x * (0.9 + 0.2 * rng.next_f64());
                rows.push(vec![
                    10.0,
                    jitter(f, &mut rng),
                    jitter(m, &mut rng),
                    20.0,
                    30.0,
                    5.0,
                ]);
            }
        }
        rows
    }

    #[test]
    fn silhouette_finds_the_three_groups() {
        let result = cluster(&blobs(), None, (2, 6), 42);
        assert_eq!(result.k, 3, "candidates {:?}", result.candidates);
        assert!(result.silhouette > 0.7);
        let mut sizes: Vec<usize> = result.clusters.iter().map(|c| c.size).collect();
        sizes.sort();
        assert_eq!(sizes, [60, 60, 60]);
        // Points of one generated group share a label.
        for group in result.labels.chunks(60) {
            assert!(group.iter().all(|l| *l == group[0]));
        }
    }

    #[test]
    fn same_seed_same_clusters_and_descriptions_name_the_difference() {
        let a = cluster(&blobs(), Some(3), (2, 2), 1);
        let b = cluster(&blobs(), Some(3), (2, 2), 1);
        assert_eq!(a.labels, b.labels);
        let big_spenders = a
            .clusters
            .iter()
            .find(|c| c.centroid["monetary"].as_f64().unwrap_or(0.0) > 500.0)
            .expect("a big-spender cluster");
        assert!(
            big_spenders
                .distinguishing
                .iter()
                .any(|d| d.starts_with("high monetary")),
            "{:?}",
            big_spenders.distinguishing
        );
    }
}
