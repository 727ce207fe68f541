//! The f32 matrix product of the embedding encoder: activations `[rows, in]` times a weight
//! matrix packed at load, plus a bias.
//!
//! candle's CPU matmul (the `gemm` crate) reached about a quarter of the cores' peak on the
//! encoder's shapes (a few hundred rows, 384-1536 wide) and was half the encoder's time. Here
//! the weights are packed once into panels of 16 output columns, `[in][16]` contiguous, and a
//! register-blocked kernel multiplies 6 rows by one panel: 12 accumulators, per input two
//! panel loads, six broadcasts and twelve fused multiply-adds. Row chunks keep the activations
//! in L2 while every panel of a thread's share passes over them.
//!
//! Each output is summed over the inputs in order, one fused multiply-add per input, starting
//! from the bias, whichever rows share the call, so a text's vector does not depend on the
//! other texts of its batch. AVX2 and FMA run through `pulp`'s safe wrappers where the CPU has
//! them; elsewhere a scalar path gives the same bits. On AVX-512 CPUs a panel is one 512-bit
//! register, and 12 rows at a time keep 12 independent accumulators (`mod avx512`), with the
//! same per-lane steps, so the same bits.

use bytemuck::cast;

use super::pool;

/// Output columns per panel (two 256-bit vectors).
const NR: usize = 16;
/// Rows per kernel call.
const MR: usize = 6;
/// Rows per kernel call on the AVX-512 path (one register per row).
const MR_512: usize = 12;
/// Rows per chunk held in L2 while a thread's panels pass over it.
const MC: usize = 48;
const _: () = assert!(MC.is_multiple_of(MR) && MC.is_multiple_of(MR_512));

/// A weight matrix packed for `matmul`, with its bias.
pub struct Dense {
    inp: usize,
    out: usize,
    /// `[panel][in]`: 16 columns of one input.
    panels: Vec<[f32; NR]>,
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
        let mut panels = vec![[0f32; NR]; out.div_ceil(NR) * inp];
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
        self.matmul_then(x, |_| {})
    }

    /// `matmul`, with `then` applied to the results on the thread that computed them (an
    /// activation, elementwise: it sees them in no particular order or grouping).
    pub fn matmul_then(&self, x: &[f32], then: impl Fn(&mut [f32]) + Sync) -> Vec<f32> {
        let rows = x.len() / self.inp;
        let panels = self.out.div_ceil(NR);
        let wide = has_avx512();
        let mr = if wide { MR_512 } else { MR };
        // Work items are panels; each range fills `[panel][row]` lanes, gathered into rows.
        let parts = pool::for_ranges(panels, |range| {
            let mut lanes = vec![[0f32; NR]; range.len() * rows];
            for chunk in (0..rows).step_by(MC) {
                let end = (chunk + MC).min(rows);
                for (i, p) in range.clone().enumerate() {
                    for first in (chunk..end).step_by(mr) {
                        let last = (first + mr).min(end);
                        let out = &mut lanes[i * rows + first..i * rows + last];
                        self.kernel(p, wide, &x[first * self.inp..last * self.inp], out);
                    }
                }
            }
            then(lanes.as_flattened_mut());
            lanes
        });
        pool::gather_columns(parts, rows, self.out)
    }

    /// Up to `MR` rows of `x` (`MR_512` with `wide`) against panel `p`, into `out`.
    fn kernel(&self, p: usize, wide: bool, x: &[f32], out: &mut [[f32; NR]]) {
        let panel = &self.panels[p * self.inp..(p + 1) * self.inp];
        let bias = &self.bias[p];
        #[cfg(target_arch = "x86_64")]
        if wide {
            return avx512::kernel(panel, bias, x, out);
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(simd) = pulp::x86::V3::try_new() {
            return simd.vectorize(|| kernel_avx2(simd, panel, bias, x, out));
        }
        kernel_scalar(panel, bias, x, out)
    }
}

/// Whether the CPU has the AVX-512 path.
fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
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
    use std::arch::x86_64::{_mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_storeu_ps};

    use super::{MR_512, NR};

    /// Only called where `has_avx512` holds.
    pub(super) fn kernel(panel: &[[f32; NR]], bias: &[f32; NR], x: &[f32], out: &mut [[f32; NR]]) {
        assert!(super::has_avx512() && out.len() <= MR_512);
        assert!(x.len() >= out.len().max(1) * panel.len());
        // SAFETY: the features `kernel_avx512` enables were detected just above.
        unsafe { kernel_avx512(panel, bias, x, out) }
    }

    #[target_feature(enable = "avx512f,fma")]
    fn kernel_avx512(panel: &[[f32; NR]], bias: &[f32; NR], x: &[f32], out: &mut [[f32; NR]]) {
        let inp = panel.len();
        // Fewer rows than `MR_512` repeat the last row; only `out` is written.
        let last = out.len().clamp(1, MR_512) - 1;
        let rows: [&[f32]; MR_512] = std::array::from_fn(|r| &x[r.min(last) * inp..][..inp]);
        // SAFETY: a panel row and the bias are 16 f32, one register.
        let mut acc = [unsafe { _mm512_loadu_ps(bias.as_ptr()) }; MR_512];
        // The rows are a constant count, so the loop over them unrolls into registers; their
        // values are read through pointers, which spares a bounds check per row and input.
        let starts = rows.map(<[f32]>::as_ptr);
        for (k, w) in panel.iter().enumerate() {
            // SAFETY: as above.
            let w = unsafe { _mm512_loadu_ps(w.as_ptr()) };
            acc = std::array::from_fn(|r| {
                // SAFETY: every row is `inp` long and k < `inp` (the panel's length).
                let v = unsafe { *starts[r].add(k) };
                _mm512_fmadd_ps(_mm512_set1_ps(v), w, acc[r])
            });
        }
        for (lanes, acc) in out.iter_mut().zip(acc) {
            // SAFETY: writes the row's 16 f32.
            unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), acc) };
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
        let (out, inp) = (32, 50);
        let m = Dense::pack(&values(out * inp, 7), &values(out, 8), out, inp).expect("pack");
        for n in 1..=MR_512 {
            let x = values(n * inp, 9 + n as u64);
            for p in 0..out / NR {
                let (panel, bias) = (&m.panels[p * inp..(p + 1) * inp], &m.bias[p]);
                let mut want = vec![[0f32; NR]; n];
                kernel_scalar(panel, bias, &x, &mut want);
                #[cfg(target_arch = "x86_64")]
                if has_avx512() {
                    let mut got = vec![[0f32; NR]; n];
                    avx512::kernel(panel, bias, &x, &mut got);
                    assert_eq!(got, want, "AVX-512, {n} rows");
                }
                #[cfg(target_arch = "x86_64")]
                if let Some(simd) = pulp::x86::V3::try_new()
                    && n <= MR
                {
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
