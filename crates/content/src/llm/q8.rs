//! The 8-bit matmul (every decode step, and prefill chunks the f32 GEMM does not take): 8-bit
//! weights against 8-bit activations, lanes across output columns.
//!
//! Weights are quantised at load in blocks of 32 inputs with one f32 scale each (the Q8_0
//! scheme), and interleaved so that one 256-bit vector holds four consecutive inputs of eight
//! output columns. Each activation row is quantised the same way, four of its bytes are
//! broadcast to all eight lanes, and `maddubs`/`madd` add their products into one i32 lane per
//! column. Per block the exact integer sum is scaled and fused into an f32 accumulator per
//! column, so there is no horizontal sum anywhere, and the weights loaded for one group of
//! columns serve every row of the batch while they sit in L1.
//!
//! Every row's numbers are the same whichever other rows share the call: a row owns its own
//! lanes, the integer sums are exact, and the float steps run in the same order for every row
//! (block by block, one fused multiply-add each). So a sequence decodes to the same tokens
//! alone or in a batch of 32, which candle's quantised kernels also give, and the weights are
//! read once per group of rows instead of once per row.
//!
//! The AVX2 path runs where the CPU has AVX2 and FMA (detected at run time, safe intrinsics
//! through `pulp`); elsewhere a scalar path computes the same numbers, bit for bit (integer
//! sums, then the same fused multiply-adds).

use bytemuck::cast;

use super::pool;

/// Inputs per block (one scale each).
pub const BLOCK: usize = 32;
/// Output columns per group (one 256-bit vector of i32/f32 lanes).
const COLS: usize = 8;
/// Inputs per broadcast (four bytes make one i32 lane).
const STEP: usize = 4;
/// Activation rows handled together while a group's weights are hot.
const ROW_TILE: usize = 4;

/// A `[out, in]` weight matrix in the interleaved 8-bit layout.
pub struct Q8Matrix {
    out: usize,
    inp: usize,
    blocks: usize,
    groups: usize,
    /// `[group][block][step]`: 32 bytes = 8 columns x 4 consecutive inputs.
    qs: Vec<[i8; 32]>,
    /// `[group][block]`: the 8 columns' scales.
    d: Vec<[f32; COLS]>,
}

/// One block's quantisation: values into `q`, returns the scale.
#[inline(always)]
fn quantise_block(x: &[f32], q: &mut [i8]) -> f32 {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    for (q, v) in q.iter_mut().zip(x) {
        *q = (v * id).round().clamp(-127.0, 127.0) as i8;
    }
    d
}

impl Q8Matrix {
    /// Quantises a row-major `[out, in]` f32 matrix; `in` must be a multiple of 32.
    pub fn quantise(w: &[f32], out: usize, inp: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(
            inp > 0 && inp.is_multiple_of(BLOCK) && w.len() == out * inp,
            "an 8-bit matrix needs inputs in blocks of {BLOCK} ({out} x {inp}, {} values)",
            w.len()
        );
        let blocks = inp / BLOCK;
        let groups = out.div_ceil(COLS);
        let steps = BLOCK / STEP;
        let mut qs = vec![[0i8; 32]; groups * blocks * steps];
        let mut d = vec![[0f32; COLS]; groups * blocks];
        let mut q = [0i8; BLOCK];
        for col in 0..out {
            let (g, c) = (col / COLS, col % COLS);
            for b in 0..blocks {
                let x = &w[col * inp + b * BLOCK..col * inp + (b + 1) * BLOCK];
                d[g * blocks + b][c] = quantise_block(x, &mut q);
                for s in 0..steps {
                    let lanes = &mut qs[(g * blocks + b) * steps + s];
                    lanes[c * STEP..(c + 1) * STEP].copy_from_slice(&q[s * STEP..(s + 1) * STEP]);
                }
            }
        }
        Ok(Q8Matrix {
            out,
            inp,
            blocks,
            groups,
            qs,
            d,
        })
    }

    pub fn out_dim(&self) -> usize {
        self.out
    }

    /// `x` is row-major `[rows, in]`; returns row-major `[rows, out]`.
    pub fn matmul(&self, x: &[f32]) -> Vec<f32> {
        let rows = x.len() / self.inp;
        let acts = Activations::new(x, rows, self.inp);
        // The work items are column groups; each range of groups fills its own buffer,
        // `[group][row]` lanes, copied into place below.
        let parts = pool::for_ranges(self.groups, |range| {
            let mut lanes = vec![[0f32; COLS]; range.len() * rows];
            for (g, out) in range.zip(lanes.chunks_mut(rows.max(1))) {
                self.group(&acts, g, out);
            }
            lanes
        });
        let mut y = vec![0f32; rows * self.out];
        for (start, lanes) in parts {
            for (i, per_row) in lanes.chunks(rows.max(1)).enumerate() {
                let col = (start + i) * COLS;
                let n = COLS.min(self.out - col);
                for (r, l) in per_row.iter().enumerate() {
                    y[r * self.out + col..r * self.out + col + n].copy_from_slice(&l[..n]);
                }
            }
        }
        y
    }

    /// The weights and scales of column group `g`.
    fn group_parts(&self, g: usize) -> (&[[i8; 32]], &[[f32; COLS]]) {
        let per_group = self.blocks * (BLOCK / STEP);
        (
            &self.qs[g * per_group..(g + 1) * per_group],
            &self.d[g * self.blocks..(g + 1) * self.blocks],
        )
    }

    /// Every row against column group `g`, into `out` (`[rows]` of 8 lanes).
    fn group(&self, acts: &Activations, g: usize, out: &mut [[f32; COLS]]) {
        let (weights, scales) = self.group_parts(g);
        for (i, out) in out.chunks_mut(ROW_TILE).enumerate() {
            let tile = Tile {
                weights,
                scales,
                acts,
                first: i * ROW_TILE,
            };
            kernel(&tile, out);
        }
    }
}

/// Activation rows quantised per block: bytes as i32 words (4 inputs each) and scales.
struct Activations {
    blocks: usize,
    /// `[row][block][step]`.
    words: Vec<i32>,
    /// `[row][block]`.
    d: Vec<f32>,
}

impl Activations {
    /// Quantises `rows` rows of `inp` values. Under AVX the rounding is inlined rather than a
    /// call per value (the same rounding either way: half away from zero).
    fn new(x: &[f32], rows: usize, inp: usize) -> Self {
        #[cfg(target_arch = "x86_64")]
        if let Some(simd) = pulp::x86::V3::try_new() {
            return simd.vectorize(|| Self::quantise(x, rows, inp));
        }
        Self::quantise(x, rows, inp)
    }

    #[inline(always)]
    fn quantise(x: &[f32], rows: usize, inp: usize) -> Self {
        let blocks = inp / BLOCK;
        let steps = BLOCK / STEP;
        let mut words = vec![0i32; rows * blocks * steps];
        let mut d = vec![0f32; rows * blocks];
        let mut q = [0i8; BLOCK];
        for r in 0..rows {
            for b in 0..blocks {
                let start = r * inp + b * BLOCK;
                d[r * blocks + b] = quantise_block(&x[start..start + BLOCK], &mut q);
                for s in 0..steps {
                    let bytes = [
                        q[s * STEP] as u8,
                        q[s * STEP + 1] as u8,
                        q[s * STEP + 2] as u8,
                        q[s * STEP + 3] as u8,
                    ];
                    words[(r * blocks + b) * steps + s] = i32::from_le_bytes(bytes);
                }
            }
        }
        Activations { blocks, words, d }
    }
}

/// Rows `first..first + out.len()` (at most `ROW_TILE`) of the activations against one
/// column group's weights and scales.
#[derive(Clone, Copy)]
struct Tile<'a> {
    weights: &'a [[i8; 32]],
    scales: &'a [[f32; COLS]],
    acts: &'a Activations,
    first: usize,
}

fn kernel(tile: &Tile, out: &mut [[f32; COLS]]) {
    #[cfg(target_arch = "x86_64")]
    if let Some(simd) = pulp::x86::V3::try_new() {
        return simd.vectorize(|| kernel_avx2(simd, tile, out));
    }
    kernel_scalar(tile, out)
}

fn kernel_scalar(tile: &Tile, out: &mut [[f32; COLS]]) {
    let Tile {
        weights,
        scales,
        acts,
        first,
    } = *tile;
    let steps = BLOCK / STEP;
    for (i, lanes) in out.iter_mut().enumerate() {
        let r = first + i;
        let mut acc = [0f32; COLS];
        for (b, dw) in scales.iter().enumerate() {
            let mut sums = [0i32; COLS];
            for s in 0..steps {
                let a = acts.words[(r * acts.blocks + b) * steps + s].to_le_bytes();
                let w = &weights[b * steps + s];
                for (c, sum) in sums.iter_mut().enumerate() {
                    for j in 0..STEP {
                        *sum += w[c * STEP + j] as i32 * a[j] as i8 as i32;
                    }
                }
            }
            let da = acts.d[r * acts.blocks + b];
            for c in 0..COLS {
                acc[c] = (sums[c] as f32).mul_add(dw[c] * da, acc[c]);
            }
        }
        *lanes = acc;
    }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn kernel_avx2(simd: pulp::x86::V3, tile: &Tile, out: &mut [[f32; COLS]]) {
    use std::arch::x86_64::{__m256, __m256i};
    let (acts, first) = (tile.acts, tile.first);
    let steps = BLOCK / STEP;
    let n = out.len();
    let ones = simd.avx._mm256_set1_epi16(1);
    let mut acc: [__m256; ROW_TILE] = [simd.avx._mm256_setzero_ps(); ROW_TILE];
    for (b, dw) in tile.scales.iter().enumerate() {
        let mut sums: [__m256i; ROW_TILE] = [simd.avx._mm256_setzero_si256(); ROW_TILE];
        for s in 0..steps {
            let w: __m256i = cast(tile.weights[b * steps + s]);
            let aw = simd.avx2._mm256_sign_epi8(w, w);
            for (i, sum) in sums.iter_mut().enumerate().take(n) {
                let word = acts.words[((first + i) * acts.blocks + b) * steps + s];
                let a = simd.avx._mm256_set1_epi32(word);
                let sa = simd.avx2._mm256_sign_epi8(a, w);
                let pairs = simd.avx2._mm256_maddubs_epi16(aw, sa);
                *sum = simd
                    .avx2
                    ._mm256_add_epi32(*sum, simd.avx2._mm256_madd_epi16(pairs, ones));
            }
        }
        let dw: __m256 = cast(*dw);
        for (i, a) in acc.iter_mut().enumerate().take(n) {
            let da = simd
                .avx
                ._mm256_set1_ps(acts.d[(first + i) * acts.blocks + b]);
            let scale = simd.avx._mm256_mul_ps(dw, da);
            *a = simd
                .fma
                ._mm256_fmadd_ps(simd.avx._mm256_cvtepi32_ps(sums[i]), scale, *a);
        }
    }
    for (lanes, a) in out.iter_mut().zip(acc) {
        *lanes = cast(a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(out: usize, inp: usize, seed: u64) -> Vec<f32> {
        let mut rng = mercato_platform::random::SplitMix64::new(seed);
        (0..out * inp)
            .map(|_| rng.next_f64() as f32 * 2.0 - 1.0)
            .collect()
    }

    #[test]
    fn close_to_the_float_product() {
        let (out, inp, rows) = (20, 96, 3);
        let w = matrix(out, inp, 1);
        let x = matrix(rows, inp, 2);
        let y = Q8Matrix::quantise(&w, out, inp)
            .expect("quantise")
            .matmul(&x);
        for r in 0..rows {
            for c in 0..out {
                let exact: f32 = (0..inp).map(|i| w[c * inp + i] * x[r * inp + i]).sum();
                assert!(
                    (y[r * out + c] - exact).abs() < 0.05 * (1.0 + exact.abs()),
                    "{r},{c}"
                );
            }
        }
    }

    #[test]
    fn a_row_gives_the_same_bits_alone_or_in_a_batch() {
        let (out, inp) = (40, 128);
        let m = Q8Matrix::quantise(&matrix(out, inp, 3), out, inp).expect("quantise");
        let x = matrix(9, inp, 4);
        let together = m.matmul(&x);
        for r in 0..9 {
            let alone = m.matmul(&x[r * inp..(r + 1) * inp]);
            assert_eq!(alone, together[r * out..(r + 1) * out], "row {r}");
        }
    }

    #[test]
    fn the_vector_path_equals_the_scalar_path() {
        let (out, inp, rows) = (16, 64, 5);
        let m = Q8Matrix::quantise(&matrix(out, inp, 5), out, inp).expect("quantise");
        let acts = Activations::new(&matrix(rows, inp, 6), rows, inp);
        for g in 0..m.groups {
            let (weights, scales) = m.group_parts(g);
            for first in (0..rows).step_by(ROW_TILE) {
                let n = ROW_TILE.min(rows - first);
                let mut a = vec![[0f32; COLS]; n];
                let mut b = vec![[0f32; COLS]; n];
                let tile = Tile {
                    weights,
                    scales,
                    acts: &acts,
                    first,
                };
                kernel(&tile, &mut a);
                kernel_scalar(&tile, &mut b);
                assert_eq!(a, b);
            }
        }
    }

    #[test]
    fn rejects_inputs_that_are_not_whole_blocks() {
        assert!(Q8Matrix::quantise(&[0.0; 30], 1, 30).is_err());
    }
}
