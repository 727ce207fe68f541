//! Rows of a fixed width that start on a cache line.
//!
//! A `Vec<[T; N]>` is only aligned for `T`, and large allocations come back 16 bytes past a
//! page boundary, so with 64-byte rows every 512-bit load (or AMX tile row) of the packed
//! weights straddled two cache lines, and with 32-byte rows every other 256-bit load did.
//! Measured on the encoder's AVX-512 product: 5-10% of its time.

use std::ops::{Deref, DerefMut};

/// `[rows][N]` values from a 64-byte boundary, zeroed at first; a slice of rows to use.
pub struct Aligned<T, const N: usize> {
    store: Vec<T>,
    start: usize,
    rows: usize,
}

impl<T: Copy + Default, const N: usize> Aligned<T, N> {
    pub fn zeroed(rows: usize) -> Self {
        let pad = 64 / size_of::<T>().max(1);
        let store = vec![T::default(); rows * N + pad];
        // A whole number of `T` away, as the allocation is aligned for `T`; a type larger than
        // a line (never used) keeps the allocation's own start.
        let start = match store.as_ptr().align_offset(64) {
            s if s <= pad => s,
            _ => 0,
        };
        Aligned { store, start, rows }
    }
}

impl<T, const N: usize> Deref for Aligned<T, N> {
    type Target = [[T; N]];

    fn deref(&self) -> &[[T; N]] {
        self.store[self.start..self.start + self.rows * N]
            .as_chunks()
            .0
    }
}

impl<T, const N: usize> DerefMut for Aligned<T, N> {
    fn deref_mut(&mut self) -> &mut [[T; N]] {
        self.store[self.start..self.start + self.rows * N]
            .as_chunks_mut()
            .0
    }
}

#[cfg(test)]
mod tests {
    use super::Aligned;

    #[test]
    fn rows_start_on_a_cache_line_and_hold_their_values() {
        for rows in [0, 1, 5, 1000, 100_000] {
            let mut a = Aligned::<i8, 64>::zeroed(rows);
            assert_eq!(a.len(), rows);
            assert!(a.as_ptr().cast::<u8>().align_offset(64) == 0 || rows == 0);
            for (i, row) in a.iter_mut().enumerate() {
                row[i % 64] = 1;
            }
            assert!(a.iter().enumerate().all(
                |(i, row)| row[i % 64] == 1 && row.iter().map(|&v| v as i32).sum::<i32>() == 1
            ));
            let f = Aligned::<f32, 8>::zeroed(rows);
            assert!(f.as_ptr().cast::<u8>().align_offset(64) == 0 || rows == 0);
            assert_eq!(f.len(), rows);
        }
    }
}
