//! Elementary functions written so the compiler vectorises the loops that call them: no
//! branches, no library calls, no float-to-int casts (Rust's saturating casts keep the
//! compiler from vectorising). Every step is an explicit operation, so a value comes out the
//! same bit for bit whether its loop ran with AVX or not.

/// erf(x) to within 5e-7 (Abramowitz and Stegun 7.1.26, 1.5e-7, plus f32 rounding), without
/// branches.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / 0.327_591_1f32.mul_add(a, 1.0);
    let poly = t * 1.061_405_4f32
        .mul_add(t, -1.453_152)
        .mul_add(t, 1.421_413_7)
        .mul_add(t, -0.284_496_74)
        .mul_add(t, 0.254_829_6);
    (1.0 - poly * exp(-a * a)).copysign(x)
}

/// e^x for x in [-87, 88] (clamped), to about 2 ulp: 2^n times a polynomial on the rest
/// (Cephes' expf coefficients). No branches and no float-to-int casts (Rust's saturating
/// casts keep the compiler from vectorising): n is rounded with the 1.5 * 2^23 trick and 2^n
/// built from its bits.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x.mul_add(std::f32::consts::LOG2_E, SHIFT);
    let n = shifted - SHIFT;
    let r = n.mul_add(-0.693_359_4, x);
    let r = n.mul_add(2.121_944_4e-4, r);
    let p = 1.987_569_1e-4f32
        .mul_add(r, 1.398_199_9e-3)
        .mul_add(r, 8.333_452e-3)
        .mul_add(r, 4.166_579_6e-2)
        .mul_add(r, 0.166_666_65)
        .mul_add(r, 0.5);
    let e = p.mul_add(r * r, r) + 1.0;
    let two_n = shifted
        .to_bits()
        .wrapping_sub(SHIFT.to_bits())
        .wrapping_add(127)
        << 23;
    e * f32::from_bits(two_n)
}

/// `step` folded over `values` in eight independent lanes (so the compiler keeps them in one
/// vector), the lanes returned: a fixed order whatever the CPU.
#[inline(always)]
pub fn lanes(values: &[f32], init: f32, step: impl Fn(f32, f32) -> f32) -> [f32; 8] {
    let mut acc = [init; 8];
    let (whole, tail) = values.as_chunks::<8>();
    for chunk in whole {
        for l in 0..8 {
            acc[l] = step(acc[l], chunk[l]);
        }
    }
    for (l, v) in tail.iter().enumerate() {
        acc[l] = step(acc[l], *v);
    }
    acc
}

/// The largest of `values` (negative infinity for none; NaN is never the result), through
/// eight lanes the compiler keeps in one vector.
#[inline(always)]
pub fn max(values: &[f32]) -> f32 {
    lanes(values, f32::NEG_INFINITY, |m, v| if v > m { v } else { m })
        .into_iter()
        .fold(f32::NEG_INFINITY, f32::max)
}

/// Softmax numerators in place: each score becomes e^(score - the largest); returns one over
/// their sum (summed in eight lanes), by which the caller scales what the weights produce.
#[inline(always)]
pub fn softmax_numerators(scores: &mut [f32]) -> f32 {
    let max = max(scores);
    scores.iter_mut().for_each(|s| *s = exp(*s - max));
    1.0 / lanes(scores, 0.0, |a, s| a + s).iter().sum::<f32>()
}

/// Runs `f` compiled for AVX2 and FMA where the CPU has them (pulp's `vectorize`), so the
/// loops of the `#[inline(always)]` functions it calls become 256-bit vector code and
/// `mul_add` one instruction instead of a library call; plain code elsewhere. Every function
/// here gives the same bits either way.
///
/// `f` is a type whose `call` is `#[inline(always)]`, not a closure: a closure's body is a
/// function of its own that the compiler need not inline into the one with the features, and
/// for bodies of any size it does not, which leaves them plain (as the encoder's activation
/// and attention were until this was found).
#[inline(always)]
pub fn with_avx2<F: pulp::NullaryFnOnce>(f: F) -> F::Output {
    #[cfg(target_arch = "x86_64")]
    if let Some(simd) = pulp::x86::V3::try_new() {
        return simd.vectorize(f);
    }
    f.call()
}

/// Whether the CPU has AVX-512 (foundation) and FMA, for the kernels written with them.
pub fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[cfg(test)]
mod tests {
    #[test]
    fn erf_and_exp_match_the_library() {
        for i in -4000..=4000 {
            let x = i as f32 / 500.0;
            let exact = libm::erf(x as f64);
            assert!((super::erf(x) as f64 - exact).abs() < 5e-7, "erf({x})");
            let y = x * 10.0;
            let e = (y as f64).exp();
            assert!(((super::exp(y) as f64) - e).abs() <= 4e-7 * e, "exp({y})");
        }
    }
}
