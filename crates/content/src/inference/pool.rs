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

#[cfg(test)]
mod tests {
    #[test]
    fn every_item_once_in_order() {
        let parts = super::for_ranges(1000, |r| r.collect::<Vec<_>>());
        let all: Vec<usize> = parts.into_iter().flat_map(|(_, v)| v).collect();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
    }
}
