//! Work spread over candle's own CPU thread pool, so the project's kernels and candle's never
//! compete for the cores (candle's workers spin briefly between its operations).

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

/// Splits `0..items` into ranges, runs `work` on each range on candle's pool, and returns
/// each range's start with its result, in order.
pub fn for_ranges<T: Send>(
    items: usize,
    work: impl Fn(Range<usize>) -> T + Sync,
) -> Vec<(usize, T)> {
    let parts = std::sync::Mutex::new(Vec::new());
    candle_core::utils::barrier_pool().execute_chunked(items, |range| {
        let start = range.start;
        let out = work(range);
        if let Ok(mut all) = parts.lock() {
            all.push((start, out));
        }
    });
    let mut parts = parts.into_inner().unwrap_or_default();
    parts.sort_by_key(|(start, _)| *start);
    parts
}

/// Runs `work` on every part (its index and the part) on candle's pool, each part on one
/// thread: parts are typically disjoint pieces of one output, written in place. Threads take
/// one part at a time, so with a few dozen parts the last to finish waits at most one part
/// (candle's chunked split hands out several at once: up to a tenth of a product idle).
pub fn for_each_part<P: Send>(parts: Vec<P>, work: impl Fn(usize, &mut P) + Sync) {
    let parts: Vec<Mutex<P>> = parts.into_iter().map(Mutex::new).collect();
    let next = AtomicUsize::new(0);
    let take = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(part) = parts.get(i) else { break };
        // Each part is taken by exactly one thread, so the lock is never contended.
        work(i, &mut part.lock().unwrap_or_else(PoisonError::into_inner));
    };
    if parts.len() < 2 {
        return take();
    }
    // One item per thread (the chunked call runs them inline when called from the pool).
    let pool = candle_core::utils::barrier_pool();
    pool.execute_chunked(pool.n_workers() + 1, |_| take());
}

/// Row-major `[rows, out]` from the parts of a product split by column blocks of `W`: each
/// part is its first block's index and its lanes, `[block][row]`. Lanes past `out` (padding
/// of the last block) are dropped.
pub fn gather_columns<const W: usize>(
    parts: Vec<(usize, Vec<[f32; W]>)>,
    rows: usize,
    out: usize,
) -> Vec<f32> {
    let mut y = vec![0f32; rows * out];
    for (start, lanes) in parts {
        for (i, per_row) in lanes.chunks(rows.max(1)).enumerate() {
            let col = (start + i) * W;
            let n = W.min(out - col);
            for (r, l) in per_row.iter().enumerate() {
                y[r * out + col..r * out + col + n].copy_from_slice(&l[..n]);
            }
        }
    }
    y
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_item_once_in_order() {
        let parts = super::for_ranges(1000, |r| r.collect::<Vec<_>>());
        let all: Vec<usize> = parts.into_iter().flat_map(|(_, v)| v).collect();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn every_part_once_in_place() {
        let mut data = vec![0usize; 1000];
        super::for_each_part(data.chunks_mut(7).collect(), |i, part| {
            part.iter_mut().for_each(|v| *v += i + 1)
        });
        assert!(data.iter().enumerate().all(|(j, v)| *v == j / 7 + 1));
    }

    #[test]
    fn columns_gather_into_rows_without_the_padding() {
        // Two rows, five columns in blocks of two: blocks 0-1 in one part, block 2 (one real
        // column, one padding) in another.
        let parts = vec![
            (0, vec![[1.0, 2.0], [6.0, 7.0], [3.0, 4.0], [8.0, 9.0]]),
            (2, vec![[5.0, -1.0], [10.0, -1.0]]),
        ];
        let y = super::gather_columns(parts, 2, 5);
        assert_eq!(y, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]);
    }
}
