//! Work spread over candle's own CPU thread pool, so the project's kernels and candle's never
//! compete for the cores (candle's workers spin briefly between its operations).

use std::ops::Range;

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
