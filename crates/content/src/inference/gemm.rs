//! The f32 matrix product of the embedding encoder: activations `[rows, in]` times a weight
//! matrix packed at load, plus a bias.
//!
//! candle's CPU matmul (the `gemm` crate) reached about a quarter of the cores' peak on the
//! encoder's shapes (a few hundred rows, 384-1536 wide) and was half the encoder's time. Here
//! the weights are packed once into panels of 16 output columns, `[in][16]` contiguous. Work
//! items are groups of four panels; each owns its columns of every output row and writes
//! them in place (no per-thread buffer copied into rows afterwards). Row chunks keep the
//! activations in L2 while a group passes over them. A register-blocked kernel multiplies 6
//! rows by one panel with AVX2 (12 accumulators, per input two panel loads, six broadcasts
//! and twelve fused multiply-adds); on AVX-512 CPUs 6 rows by the group's four panels at once
//! (`mod avx512`: 24 accumulators, per input four panel loads and six broadcasts), over blocks
//! of 128 inputs so the group's block stays in L1 while the chunk's rows pass.
//!
//! Each output is summed over the inputs in order, one fused multiply-add per input, starting
//! from the bias, whichever rows share the call, so a text's vector does not depend on the
//! other texts of its batch; the AVX2 path runs through `pulp`'s safe wrappers, a scalar path
//! serves other CPUs, and all give the same bits.

use bytemuck::cast;

use super::aligned::Aligned;
use super::math::has_avx512;
use super::pool;

/// Output columns per panel (two 256-bit vectors).
const NR: usize = 16;
/// Rows per kernel call.
const MR: usize = 6;
/// Rows per kernel call on the AVX-512 path.
const MR_512: usize = 6;
/// Panels per work item; the AVX-512 kernel multiplies all of them at once (`MR_512 * GROUP`
/// accumulators).
const GROUP: usize = 4;
/// Rows per chunk held in L2 while a thread's panels pass over it.
const MC: usize = 48;
/// Inputs per block on the AVX-512 path: `GROUP` panels' block is 32 KiB, within L1.
const KC: usize = 128;
const _: () = assert!(MC.is_multiple_of(MR) && MC.is_multiple_of(MR_512));

/// A weight matrix packed for `matmul`, with its bias.
pub struct Dense {
    inp: usize,
    out: usize,
    /// `[panel][in]`: 16 columns of one input, from a cache line (one 512-bit load each).
    panels: Aligned<f32, NR>,
    /// `[panel]`: the 16 columns' biases.
    bias: Vec<[f32; NR]>,
}

impl Dense {
    /// Packs a row-major `[out, in]` weight (a linear layer's layout) and its `[out]` bias.
    /// The last panel is padded with zero columns when `out` is not a multiple of 16.
    pub fn pack(w: &[f32], bias: &[f32], out: usize, inp: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(
            out > 0 && inp > 0 && w.len() == out * inp && bias.len() == out,
            "a {out} x {inp} matrix needs {} weights and {out} biases, not {} and {}",
            out * inp,
            w.len(),
            bias.len()
        );
        let mut panels = Aligned::zeroed(out.div_ceil(NR) * inp);
        for (col, row) in w.chunks(inp).enumerate() {
            let (p, c) = (col / NR, col % NR);
            for (i, v) in row.iter().enumerate() {
                panels[p * inp + i][c] = *v;
            }
        }
        let bias = bias
            .chunks(NR)
            .map(|b| {
                let mut lanes = [0f32; NR];
                lanes[..b.len()].copy_from_slice(b);
                lanes
            })
            .collect();
        Ok(Dense {
            inp,
            out,
            panels,
            bias,
        })
    }

    pub fn out_dim(&self) -> usize {
        self.out
    }

    /// `x` is row-major `[rows, in]`; returns row-major `[rows, out]`.
    pub fn matmul(&self, x: &[f32]) -> Vec<f32> {
        let mut y = Vec::new();
        self.matmul_into(x, &mut y, |_| {});
        y
    }

    /// `matmul` into `y` (resized; its allocation is reused), with `then` applied to the
    /// results on the thread that computed them (an activation, elementwise: it sees them in
    /// no particular order or grouping).
    pub fn matmul_into(&self, x: &[f32], y: &mut Vec<f32>, then: impl Fn(&mut [f32]) + Sync) {
        let rows = x.len() / self.inp;
        let groups = self.out.div_ceil(NR * GROUP);
        let wide = has_avx512();
        // Every value is written below, so a reused buffer is not cleared first.
        y.resize(rows * self.out, 0.0);
        // Work items are groups of panels; each owns its columns of every row of `y`, so the
        // kernels write the rows in place.
        let mut columns = pool::column_parts(y, self.out, NR * GROUP);
        let owned: Vec<_> = columns.chunks_mut(rows.max(1)).collect();
        debug_assert!(rows == 0 || owned.len() == groups);
        pool::for_each_part(owned, |group, item| {
            for chunk in (0..rows).step_by(MC) {
                let chunk = chunk..(chunk + MC).min(rows);
                let out = &mut item[chunk.clone()];
                self.group(
                    group,
                    wide,
                    &x[chunk.start * self.inp..chunk.end * self.inp],
                    out,
                );
                out.iter_mut().for_each(|cols| then(cols));
            }
        });
    }

    /// Rows `x` against the panels of group `group`, into `out` (each row's columns of the
    /// group).
    fn group(&self, group: usize, wide: bool, x: &[f32], out: &mut [&mut [f32]]) {
        let inp = self.inp;
        let panels = group * GROUP..((group + 1) * GROUP).min(self.bias.len());
        let weights = &self.panels[panels.start * inp..panels.end * inp];
        let bias = &self.bias[panels];
        #[cfg(target_arch = "x86_64")]
        if wide {
            // The inputs in blocks of `KC`: a block of the panels stays in L1 while every row
            // of the chunk passes over it. Each output still sums its inputs in order.
            for ks in (0..inp).step_by(KC) {
                let ks = ks..(ks + KC).min(inp);
                for (x, out) in x.chunks(MR_512 * inp).zip(out.chunks_mut(MR_512)) {
                    avx512::kernel(weights, bias, x, out, ks.clone());
                }
            }
            return;
        }
        #[cfg(target_arch = "x86_64")]
        let simd = pulp::x86::V3::try_new();
        for (p, (panel, bias)) in weights.chunks(inp).zip(bias).enumerate() {
            for (x, out) in x.chunks(MR * inp).zip(out.chunks_mut(MR)) {
                let mut lanes = [[0f32; NR]; MR];
                let lanes = &mut lanes[..out.len()];
                #[cfg(target_arch = "x86_64")]
                if let Some(simd) = simd {
                    simd.vectorize(|| kernel_avx2(simd, panel, bias, x, lanes));
                } else {
                    kernel_scalar(panel, bias, x, lanes)
                }
                #[cfg(not(target_arch = "x86_64"))]
                kernel_scalar(panel, bias, x, lanes);
                for (cols, lanes) in out.iter_mut().zip(lanes.iter()) {
                    let cols = &mut cols[p * NR..];
                    let n = cols.len().min(NR);
                    cols[..n].copy_from_slice(&lanes[..n]);
                }
            }
        }
    }
}

fn kernel_scalar(panel: &[[f32; NR]], bias: &[f32; NR], x: &[f32], out: &mut [[f32; NR]]) {
    let inp = panel.len();
    for (row, lanes) in x.chunks(inp).zip(out.iter_mut()) {
        let mut acc = *bias;
        for (w, v) in panel.iter().zip(row) {
            for (a, w) in acc.iter_mut().zip(w) {
                *a = v.mul_add(*w, *a);
            }
        }
        *lanes = acc;
    }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn kernel_avx2(
    simd: pulp::x86::V3,
    panel: &[[f32; NR]],
    bias: &[f32; NR],
    x: &[f32],
    out: &mut [[f32; NR]],
) {
    use std::arch::x86_64::__m256;
    let inp = panel.len();
    // Fewer rows than `MR` (the last of a call) repeat the last row; only `out` is written.
    let last = out.len().clamp(1, MR) - 1;
    let rows: [&[f32]; MR] = std::array::from_fn(|r| {
        let r = r.min(last);
        &x[r * inp..(r + 1) * inp]
    });
    let [b0, b1]: [__m256; 2] = cast(*bias);
    let mut lo = [b0; MR];
    let mut hi = [b1; MR];
    // Every slice is `inp` long, which lets the compiler drop the bounds checks.
    let panel = &panel[..inp];
    let rows = rows.map(|r| &r[..inp]);
    for k in 0..inp {
        let [w0, w1]: [__m256; 2] = cast(panel[k]);
        for r in 0..MR {
            let v = simd.avx._mm256_set1_ps(rows[r][k]);
            lo[r] = simd.fma._mm256_fmadd_ps(v, w0, lo[r]);
            hi[r] = simd.fma._mm256_fmadd_ps(v, w1, hi[r]);
        }
    }
    for (r, lanes) in out.iter_mut().enumerate().take(MR) {
        let (l, h): ([f32; 8], [f32; 8]) = (cast(lo[r]), cast(hi[r]));
        lanes[..8].copy_from_slice(&l);
        lanes[8..].copy_from_slice(&h);
    }
}

/// The AVX-512 kernel. `pulp`'s safe wrappers stop at AVX2 without a feature that would
/// rebuild candle, so this calls a `#[target_feature]` function, which needs `unsafe`, as do
/// the unaligned loads and stores of whole panels.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx512 {
    use std::arch::x86_64::{
        __m512, __mmask16, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_mask_storeu_ps,
        _mm512_maskz_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps,
    };

    use std::ops::Range;

    use super::{GROUP, MR_512, NR};

    /// Up to `MR_512` rows `x` against up to `GROUP` panels (`panels`, `[panel][in]`, with
    /// their `bias`), over the inputs `ks`, into `out` (each row's columns of the panels; the
    /// last panel may have fewer than 16). The sums start from the bias when `ks` starts at
    /// input 0 and from `out` otherwise. Only called where `has_avx512` holds.
    pub(super) fn kernel(
        panels: &[[f32; NR]],
        bias: &[[f32; NR]],
        x: &[f32],
        out: &mut [&mut [f32]],
        ks: Range<usize>,
    ) {
        let count = bias.len();
        let inp = panels.len() / count.max(1);
        let n = out.len();
        assert!(super::has_avx512() && (1..=GROUP).contains(&count) && (1..=MR_512).contains(&n));
        assert!(panels.len() == count * inp && x.len() == n * inp && ks.end <= inp);
        let cols = out[0].len();
        assert!(cols > (count - 1) * NR && cols <= count * NR);
        assert!(out.iter().all(|row| row.len() == cols));
        // SAFETY: the features enabled by `block` were detected just above, and the slices
        // have the lengths it reads and writes.
        unsafe {
            match count {
                1 => block::<1>(panels, bias, x, out, ks),
                2 => block::<2>(panels, bias, x, out, ks),
                3 => block::<3>(panels, bias, x, out, ks),
                _ => block::<GROUP>(panels, bias, x, out, ks),
            }
        }
    }

    /// `P` panels by up to `MR_512` rows: `P * MR_512` accumulators, per input `P` panel
    /// loads, `MR_512` broadcasts (folded into the multiply-adds) and `P * MR_512` fused
    /// multiply-adds.
    #[target_feature(enable = "avx512f,fma")]
    fn block<const P: usize>(
        panels: &[[f32; NR]],
        bias: &[[f32; NR]],
        x: &[f32],
        out: &mut [&mut [f32]],
        ks: Range<usize>,
    ) {
        let inp = panels.len() / P;
        let n = out.len();
        // The last panel's columns (the others have 16), as a lane mask.
        let last = out[0].len() - (P - 1) * NR;
        let masks: [__mmask16; P] = std::array::from_fn(|p| {
            if p + 1 < P {
                !0
            } else {
                (!0u32 >> (32 - last)) as u16
            }
        });
        // Fewer rows than `MR_512` repeat the last row; only the `n` real ones are written.
        let starts: [*const f32; MR_512] =
            std::array::from_fn(|r| x[r.min(n - 1) * inp..][..inp].as_ptr());
        let weights: [*const [f32; NR]; P] = std::array::from_fn(|p| panels[p * inp..].as_ptr());
        let mut acc = [[_mm512_setzero_ps(); P]; MR_512];
        for (r, acc) in acc.iter_mut().enumerate() {
            for (p, acc) in acc.iter_mut().enumerate() {
                *acc = if ks.start == 0 || r >= n {
                    // SAFETY: a bias is 16 f32, one register.
                    unsafe { _mm512_loadu_ps(bias[p].as_ptr()) }
                } else {
                    // SAFETY: the mask covers the row's columns of panel p only.
                    unsafe { _mm512_maskz_loadu_ps(masks[p], out[r][p * NR..].as_ptr()) }
                };
            }
        }
        // The counts are constants, so the loops unroll into registers; the values are read
        // through pointers, which spares a bounds check per row, panel and input.
        for k in ks {
            // SAFETY: every panel and row is `inp` long and k < `inp`.
            let w: [__m512; P] =
                std::array::from_fn(|p| unsafe { _mm512_loadu_ps(weights[p].add(k).cast()) });
            for r in 0..MR_512 {
                // SAFETY: as above.
                let v = _mm512_set1_ps(unsafe { *starts[r].add(k) });
                for p in 0..P {
                    acc[r][p] = _mm512_fmadd_ps(v, w[p], acc[r][p]);
                }
            }
        }
        for (row, acc) in out.iter_mut().zip(acc) {
            for (p, acc) in acc.into_iter().enumerate() {
                // SAFETY: the mask covers the row's columns of panel p only.
                unsafe { _mm512_mask_storeu_ps(row[p * NR..].as_mut_ptr(), masks[p], acc) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = mercato_platform::random::SplitMix64::new(seed);
        (0..n).map(|_| rng.next_f64() as f32 * 2.0 - 1.0).collect()
    }

    #[test]
    fn equals_the_float_product() {
        let (out, inp, rows) = (37, 40, 13);
        let (w, b, x) = (values(out * inp, 1), values(out, 2), values(rows * inp, 3));
        let y = Dense::pack(&w, &b, out, inp).expect("pack").matmul(&x);
        for r in 0..rows {
            for c in 0..out {
                let exact = b[c]
                    + (0..inp)
                        .map(|i| w[c * inp + i] * x[r * inp + i])
                        .sum::<f32>();
                assert!((y[r * out + c] - exact).abs() < 1e-4, "{r},{c}");
            }
        }
    }

    #[test]
    fn a_row_gives_the_same_bits_alone_or_in_a_batch() {
        let (out, inp, rows) = (48, 64, 61);
        let m = Dense::pack(&values(out * inp, 4), &values(out, 5), out, inp).expect("pack");
        let x = values(rows * inp, 6);
        let together = m.matmul(&x);
        for r in 0..rows {
            let alone = m.matmul(&x[r * inp..(r + 1) * inp]);
            assert_eq!(alone, together[r * out..(r + 1) * out], "row {r}");
        }
    }

    #[test]
    fn the_vector_paths_equal_the_scalar_path() {
        let (out, inp) = (GROUP * NR, 50);
        let m = Dense::pack(&values(out * inp, 7), &values(out, 8), out, inp).expect("pack");
        for n in 1..=MR_512.max(MR) {
            let x = values(n * inp, 9 + n as u64);
            let mut want = vec![[0f32; NR]; GROUP * n];
            for (p, want) in want.chunks_mut(n).enumerate() {
                kernel_scalar(&m.panels[p * inp..(p + 1) * inp], &m.bias[p], &x, want);
            }
            #[cfg(target_arch = "x86_64")]
            if has_avx512() && n <= MR_512 {
                // Whole panels and a last one of 11 columns; all inputs and two blocks of them.
                for (count, cols) in (1..=GROUP).flat_map(|c| [(c, c * NR), (c, c * NR - 5)]) {
                    let (panels, bias) = (&m.panels[..count * inp], &m.bias[..count]);
                    let want: Vec<Vec<f32>> = (0..n)
                        .map(|r| (0..cols).map(|c| want[(c / NR) * n + r][c % NR]).collect())
                        .collect();
                    let mut got = vec![vec![f32::NAN; cols]; n];
                    let mut rows: Vec<&mut [f32]> = got.iter_mut().map(|r| &mut r[..]).collect();
                    avx512::kernel(panels, bias, &x, &mut rows, 0..inp);
                    assert_eq!(got, want, "AVX-512, {n} rows, {cols} columns");
                    let mut got = vec![vec![f32::NAN; cols]; n];
                    let mut rows: Vec<&mut [f32]> = got.iter_mut().map(|r| &mut r[..]).collect();
                    avx512::kernel(panels, bias, &x, &mut rows, 0..inp / 3);
                    avx512::kernel(panels, bias, &x, &mut rows, inp / 3..inp);
                    assert_eq!(got, want, "AVX-512 in two blocks, {n} rows, {cols} columns");
                }
            }
            #[cfg(target_arch = "x86_64")]
            if let Some(simd) = pulp::x86::V3::try_new()
                && n <= MR
            {
                for (p, want) in want.chunks(n).enumerate() {
                    let (panel, bias) = (&m.panels[p * inp..(p + 1) * inp], &m.bias[p]);
                    let mut got = vec![[0f32; NR]; n];
                    simd.vectorize(|| kernel_avx2(simd, panel, bias, &x, &mut got));
                    assert_eq!(got, want, "AVX2, {n} rows");
                }
            }
        }
    }

    #[test]
    fn rejects_weights_of_the_wrong_size() {
        assert!(Dense::pack(&[0.0; 24], &[0.0; 12], 12, 3).is_err());
    }
}
