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
//! them; elsewhere a scalar path gives the same bits.

use bytemuck::cast;

use super::pool;

/// Output columns per panel (two 256-bit vectors).
const NR: usize = 16;
/// Rows per kernel call.
const MR: usize = 6;
/// Rows per chunk held in L2 while a thread's panels pass over it.
const MC: usize = 48;

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
        // Work items are panels; each range fills `[panel][row]` lanes, gathered into rows.
        let parts = pool::for_ranges(panels, |range| {
            let mut lanes = vec![[0f32; NR]; range.len() * rows];
            for chunk in (0..rows).step_by(MC) {
                let end = (chunk + MC).min(rows);
                for (i, p) in range.clone().enumerate() {
                    for first in (chunk..end).step_by(MR) {
                        let last = (first + MR).min(end);
                        let out = &mut lanes[i * rows + first..i * rows + last];
                        self.kernel(p, &x[first * self.inp..last * self.inp], out);
                    }
                }
            }
            then(lanes.as_flattened_mut());
            lanes
        });
        pool::gather_columns(parts, rows, self.out)
    }

    /// Up to `MR` rows of `x` against panel `p`, into `out`.
    fn kernel(&self, p: usize, x: &[f32], out: &mut [[f32; NR]]) {
        let panel = &self.panels[p * self.inp..(p + 1) * self.inp];
        let bias = &self.bias[p];
        #[cfg(target_arch = "x86_64")]
        if let Some(simd) = pulp::x86::V3::try_new() {
            return simd.vectorize(|| kernel_avx2(simd, panel, bias, x, out));
        }
        kernel_scalar(panel, bias, x, out)
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
    fn rejects_weights_of_the_wrong_size() {
        assert!(Dense::pack(&[0.0; 24], &[0.0; 12], 12, 3).is_err());
    }
}
