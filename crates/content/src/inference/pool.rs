//! Work spread over candle's own CPU thread pool, so the project's kernels and candle's never
//! compete for the cores (candle's workers spin briefly between its operations).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

/// Runs `work` on every part (its index and the part) on candle's pool, each part on one
/// thread: parts are typically disjoint pieces of one output, written in place. Threads take
/// one part at a time, so with a few dozen parts the last to finish waits at most one part
/// (candle's chunked split hands out several at once: up to a tenth of a product idle).
pub fn for_each_part<P: Send>(parts: Vec<P>, work: impl Fn(usize, &mut P) + Sync) {
    let parts: Vec<Own<P>> = parts.into_iter().map(|p| Own(Mutex::new(p))).collect();
    let next = AtomicUsize::new(0);
    let take = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(Own(part)) = parts.get(i) else { break };
        // Each part is taken by exactly one thread, so the lock is never contended.
        work(i, &mut part.lock().unwrap_or_else(PoisonError::into_inner));
    };
    if parts.len() < 2 {
        return take();
    }
    // One item per thread (the chunked call runs them inline when called from the pool).
    candle_core::utils::barrier_pool().execute_chunked(threads(), |_| take());
}

/// Threads of candle's pool, the calling thread included.
pub fn threads() -> usize {
    candle_core::utils::barrier_pool().n_workers() + 1
}

/// A part's lock on its own pair of cache lines: adjacent locks taken by different threads
/// would otherwise share a line and bounce it between the cores at every lock and unlock.
#[repr(align(128))]
struct Own<P>(Mutex<P>);

/// Splits row-major `y` (rows of `out` values) by columns into parts of `width` columns
/// (the last may be narrower), part after part in one vector: part `i` is the run of entries
/// `i * rows..(i + 1) * rows`, columns `i * width..` of every row in row order (take them with
/// `chunks_mut(rows)`). The parts are disjoint, so threads can fill them in place. Two
/// allocations whatever the number of parts (a vector per part cost ~2% of a single-stream
/// decode step in the allocator).
pub fn column_parts(y: &mut [f32], out: usize, width: usize) -> Vec<&mut [f32]> {
    let (out, width) = (out.max(1), width.max(1));
    let mut rows: Vec<&mut [f32]> = y.chunks_mut(out).collect();
    let mut parts = Vec::with_capacity(out.div_ceil(width) * rows.len());
    for _ in 0..out.div_ceil(width) {
        for row in rows.iter_mut() {
            let take = width.min(row.len());
            let (cols, rest) = std::mem::take(row).split_at_mut(take);
            parts.push(cols);
            *row = rest;
        }
    }
    parts
}

/// Parts worth handing out for `items` equal work items: two per thread, so a thread that
/// falls behind is covered by the other's second part, and few enough that the per-part
/// overhead (the lock, the tile's setup, its results scattered into rows) stays small. On the
/// model's layers, two per thread measured 1.01-1.13x the products of four per thread at 1 and
/// 16 rows (`llm-bench --only kernel`, Zen 5), where a product takes a few microseconds; guided
/// sizes (shrinking parts) measured slower than either. Never under `min` items per part, and
/// a multiple of `multiple`.
pub fn part_size(items: usize, min: usize, multiple: usize) -> usize {
    let size = items.div_ceil(2 * threads()).max(min).max(1);
    size.div_ceil(multiple.max(1)) * multiple.max(1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_part_once_in_place() {
        let mut data = vec![0usize; 1000];
        super::for_each_part(data.chunks_mut(7).collect(), |i, part| {
            part.iter_mut().for_each(|v| *v += i + 1)
        });
        assert!(data.iter().enumerate().all(|(j, v)| *v == j / 7 + 1));
    }

    #[test]
    fn column_parts_cover_every_value_once() {
        // Three rows of five columns in parts of two: columns 0-1, 2-3 and 4.
        let mut y: Vec<f32> = (0..15).map(|v| v as f32).collect();
        let mut flat = super::column_parts(&mut y, 5, 2);
        let parts: Vec<&mut [&mut [f32]]> = flat.chunks_mut(3).collect();
        let widths: Vec<Vec<usize>> = parts
            .iter()
            .map(|p| p.iter().map(|r| r.len()).collect())
            .collect();
        assert_eq!(widths, [vec![2, 2, 2], vec![2, 2, 2], vec![1, 1, 1]]);
        assert_eq!(parts[1][2], [12.0, 13.0]);
        assert_eq!(parts[2][0], [4.0]);
    }

    #[test]
    fn part_sizes_respect_the_minimum_and_multiple() {
        assert_eq!(super::part_size(3, 4, 2), 4);
        let size = super::part_size(6144, 4, 2);
        assert!(size >= 4 && size.is_multiple_of(2) && size < 6144);
    }
}
