//! Causal attention of new tokens (a decode step's one per sequence, or a prefill chunk's)
//! over each sequence's cached keys and values, computed straight from the cache on the CPU.
//!
//! Through candle this took a handful of tensor operations per sequence and layer (views,
//! copies, a softmax, a small matmul), whose fixed cost outweighed the arithmetic: about a
//! sixth of a 16-sequence decode step, and more of a short prompt's prefill. Here each
//! (sequence, key head) pair is one work item on candle's thread pool; it reads the cache in
//! place and gives the query heads that share the key head their outputs, one new token at a
//! time over exactly the positions that token sees.
//!
//! Every sequence is computed alone, over exactly its own length, in a fixed order, so its
//! numbers do not depend on which other sequences share the step (greedy output is the same
//! alone or in a batch).

use super::math::exp;

/// Shape of the attention: query heads, key/value heads, head width and score scale.
#[derive(Clone, Copy)]
pub struct Heads {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub scale: f32,
}

/// Causal attention of new tokens over each sequence's cache. `q` holds each row's queries,
/// `[rows, tokens, heads, head_dim]`; `seqs[i]` is row i's cache slot and the position of its
/// first new token, whose keys and values are already in the cache: new token j sees
/// positions `0..=pos + j`. `k` and `v` are one layer's cache, `[slots, kv_heads, capacity,
/// head_dim]`. Returns `[rows * tokens, heads * head_dim]`.
pub fn from_cache(
    q: &[f32],
    tokens: usize,
    seqs: &[(usize, usize)],
    k: &[f32],
    v: &[f32],
    capacity: usize,
    shape: Heads,
) -> Vec<f32> {
    let mut out = Vec::new();
    from_cache_into(q, tokens, seqs, (k, v), capacity, shape, &mut out);
    out
}

/// `from_cache` into `out` (resized; its allocation is reused and not cleared, since every
/// value is written).
pub fn from_cache_into(
    q: &[f32],
    tokens: usize,
    seqs: &[(usize, usize)],
    (k, v): (&[f32], &[f32]),
    capacity: usize,
    shape: Heads,
    out: &mut Vec<f32>,
) {
    let Heads {
        heads,
        kv_heads,
        head_dim: hd,
        ..
    } = shape;
    let rep = heads / kv_heads;
    let width = heads * hd;
    out.resize(seqs.len() * tokens * width, 0.0);
    // Work items are (row, key head) pairs, taken one at a time (rows differ in length); each
    // owns the output columns of its query heads in its tokens' rows and writes them in place.
    let mut items = Vec::with_capacity(seqs.len() * kv_heads);
    for (g, part) in super::pool::column_parts(out, width, rep * hd)
        .into_iter()
        .enumerate()
    {
        let mut part = part.into_iter();
        for row in 0..seqs.len() {
            items.push((row, g, part.by_ref().take(tokens).collect::<Vec<_>>()));
        }
    }
    super::pool::for_each_part(items, |_, (row, g, outs)| {
        let (row, g) = (*row, *g);
        let (slot, pos) = seqs[row];
        let base = (slot * kv_heads + g) * capacity * hd;
        for (j, y) in outs.iter_mut().enumerate() {
            // Token-major queries: the heads sharing key head g are adjacent.
            let at = ((row * tokens + j) * heads + g * rep) * hd;
            let len = pos + j + 1;
            y.copy_from_slice(&attention(
                &q[at..at + rep * hd],
                &k[base..base + len * hd],
                &v[base..base + len * hd],
                hd,
                shape.scale,
            ));
        }
    });
}

/// Softmax attention of `queries` (`[q, head_dim]`) over `keys` and `values` (`[len,
/// head_dim]` each, every query sees every key): `[q, head_dim]`. Runs with AVX where the CPU
/// has it: the dot products with explicit AVX (the compiler left their eight lanes scalar),
/// the rest written so the compiler vectorises it (independent lanes, no reassociation), so
/// the result is the same bit for bit with or without.
pub fn attention(
    queries: &[f32],
    keys: &[f32],
    values: &[f32],
    head_dim: usize,
    scale: f32,
) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    if let Some(simd) = pulp::x86::V3::try_new() {
        let dot = |a: &[f32], b: &[f32]| dot_avx(simd, a, b);
        let dot8 = |a: &[f32], b: &[f32]| dot8_avx(simd, a, b);
        return simd
            .vectorize(|| attention_body(queries, keys, values, head_dim, scale, dot, dot8));
    }
    attention_body(queries, keys, values, head_dim, scale, dot, dot8)
}

#[inline(always)]
fn attention_body(
    queries: &[f32],
    keys: &[f32],
    values: &[f32],
    hd: usize,
    scale: f32,
    dot: impl Fn(&[f32], &[f32]) -> f32,
    dot8: impl Fn(&[f32], &[f32]) -> [f32; 8],
) -> Vec<f32> {
    let rep = queries.len() / hd;
    let len = keys.len() / hd;
    let mut scores = vec![0f32; rep * len];
    // Eight positions at a time where the head width is whole vectors, the rest one by one;
    // the same sums either way.
    let blocked = if hd.is_multiple_of(8) { len / 8 * 8 } else { 0 };
    for p in (0..blocked).step_by(8) {
        let block = &keys[p * hd..(p + 8) * hd];
        for j in 0..rep {
            let sums = dot8(&queries[j * hd..(j + 1) * hd], block);
            for (s, sum) in scores[j * len + p..j * len + p + 8].iter_mut().zip(sums) {
                *s = sum * scale;
            }
        }
    }
    for p in blocked..len {
        let key = &keys[p * hd..(p + 1) * hd];
        for j in 0..rep {
            scores[j * len + p] = dot(&queries[j * hd..(j + 1) * hd], key) * scale;
        }
    }
    let mut out = vec![0f32; rep * hd];
    for j in 0..rep {
        let row = &mut scores[j * len..(j + 1) * len];
        let max = row.iter().fold(f32::NEG_INFINITY, |m, s| m.max(*s));
        // Exponentials in their own loop (vectorised), then the sum in order.
        row.iter_mut().for_each(|s| *s = exp(*s - max));
        let sum = row.iter().fold(0f32, |sum, s| sum + s);
        let inv = 1.0 / sum;
        row.iter_mut().for_each(|w| *w *= inv);
        let o = &mut out[j * hd..(j + 1) * hd];
        match hd {
            32 => weighted_sum::<32>(row, values, o),
            64 => weighted_sum::<64>(row, values, o),
            128 => weighted_sum::<128>(row, values, o),
            _ => {
                for (weight, v) in row.iter().zip(values.chunks_exact(hd)) {
                    for (o, v) in o.iter_mut().zip(v) {
                        *o += weight * v;
                    }
                }
            }
        }
    }
    out
}

/// `o += weight * value` over the positions for a head width known at compile time, so the
/// output stays in registers instead of being loaded and stored once per position; the same
/// operations in the same order as the general loop.
#[inline(always)]
fn weighted_sum<const HD: usize>(weights: &[f32], values: &[f32], o: &mut [f32]) {
    let mut acc = [0f32; HD];
    for (weight, v) in weights.iter().zip(values.as_chunks::<HD>().0) {
        for i in 0..HD {
            acc[i] += weight * v[i];
        }
    }
    o.copy_from_slice(&acc);
}

/// Dot product in eight lanes (separate multiply and add), summed in a fixed order.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (a8, a_tail) = a.as_chunks::<8>();
    let (b8, b_tail) = b[..a.len()].as_chunks::<8>();
    for (ca, cb) in a8.iter().zip(b8) {
        for i in 0..8 {
            lanes[i] += ca[i] * cb[i];
        }
    }
    reduce(lanes, a_tail, b_tail)
}

/// `dot` with the eight lanes in one AVX register (the compiler left them scalar): the same
/// operations on each lane, so the same bits.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn dot_avx(simd: pulp::x86::V3, a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::__m256;
    let mut lanes = simd.avx._mm256_setzero_ps();
    let (a8, a_tail) = a.as_chunks::<8>();
    let (b8, b_tail) = b[..a.len()].as_chunks::<8>();
    for (ca, cb) in a8.iter().zip(b8) {
        let (x, y): (__m256, __m256) = (bytemuck::cast(*ca), bytemuck::cast(*cb));
        lanes = simd.avx._mm256_add_ps(lanes, simd.avx._mm256_mul_ps(x, y));
    }
    reduce(bytemuck::cast(lanes), a_tail, b_tail)
}

/// `dot` of one query with eight keys (`[8, head_dim]`).
#[inline(always)]
fn dot8(q: &[f32], keys: &[f32]) -> [f32; 8] {
    let hd = q.len();
    std::array::from_fn(|t| dot(q, &keys[t * hd..(t + 1) * hd]))
}

/// `dot8` with AVX: the eight keys' lanes summed as in `dot_avx`, then the eight horizontal
/// sums at once, pairing the lanes in `reduce`'s order ((0+4)+(1+5))+((2+6)+(3+7)), so the
/// same bits. The head width is a multiple of eight (no tails).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn dot8_avx(simd: pulp::x86::V3, q: &[f32], keys: &[f32]) -> [f32; 8] {
    use std::arch::x86_64::{__m128, __m256, __m256i};
    let per = q.len() / 8;
    let (q8, _) = q.as_chunks::<8>();
    let (k8, _) = keys[..8 * per * 8].as_chunks::<8>();
    let mut acc = [simd.avx._mm256_setzero_ps(); 8];
    for (c, qc) in q8.iter().enumerate() {
        let x: __m256 = bytemuck::cast(*qc);
        for (t, acc) in acc.iter_mut().enumerate() {
            let y: __m256 = bytemuck::cast(k8[t * per + c]);
            *acc = simd.avx._mm256_add_ps(*acc, simd.avx._mm256_mul_ps(x, y));
        }
    }
    // Per key: lanes (0+4, 1+5, 2+6, 3+7).
    let half: [__m128; 8] = acc.map(|a| {
        let (lo, hi) = (
            simd.avx._mm256_castps256_ps128(a),
            simd.avx._mm256_extractf128_ps::<1>(a),
        );
        simd.sse._mm_add_ps(lo, hi)
    });
    let pair = |lo: __m128, hi: __m128| simd.avx._mm256_set_m128(hi, lo);
    // Per key: (0+4)+(1+5) and (2+6)+(3+7), keys 0 and 2 in the low half, 1 and 3 in the
    // high half (and 4-7 likewise); then their sums, keys in the order 0 2 4 6 1 3 5 7.
    let low = simd
        .avx
        ._mm256_hadd_ps(pair(half[0], half[1]), pair(half[2], half[3]));
    let high = simd
        .avx
        ._mm256_hadd_ps(pair(half[4], half[5]), pair(half[6], half[7]));
    let sums = simd.avx._mm256_hadd_ps(low, high);
    let order: __m256i = bytemuck::cast([0i32, 4, 1, 5, 2, 6, 3, 7]);
    bytemuck::cast(simd.avx2._mm256_permutevar8x32_ps(sums, order))
}

#[inline(always)]
fn reduce(lanes: [f32; 8], a_tail: &[f32], b_tail: &[f32]) -> f32 {
    let mut sum = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
        + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
    for (x, y) in a_tail.iter().zip(b_tail) {
        sum += x * y;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_softmax_attention_written_out() {
        let (slots, kvh, cap, hd, heads) = (3, 2, 8, 12, 4);
        let mut rng = mercato_platform::random::SplitMix64::new(7);
        let mut draw =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.next_f64() as f32 - 0.5).collect() };
        let k = draw(slots * kvh * cap * hd);
        let v = draw(slots * kvh * cap * hd);
        let q = draw(2 * heads * hd);
        let seqs = [(2, 4), (0, 7)];
        let shape = Heads {
            heads,
            kv_heads: kvh,
            head_dim: hd,
            scale: 0.3,
        };
        let got = from_cache(&q, 1, &seqs, &k, &v, cap, shape);
        // A reused buffer (longer, holding NaN) gets every value written.
        let mut reused = vec![f32::NAN; got.len() + 9];
        from_cache_into(&q, 1, &seqs, (&k, &v), cap, shape, &mut reused);
        assert_eq!(reused, got);
        for (row, &(slot, pos)) in seqs.iter().enumerate() {
            let len = pos + 1;
            for h in 0..heads {
                let g = h / (heads / kvh);
                let at = |t: &[f32], p: usize, d: usize| t[((slot * kvh + g) * cap + p) * hd + d];
                let qh = &q[(row * heads + h) * hd..(row * heads + h + 1) * hd];
                let s: Vec<f64> = (0..len)
                    .map(|p| (0..hd).map(|d| (qh[d] * at(&k, p, d)) as f64).sum::<f64>() * 0.3)
                    .collect();
                let max = s.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
                let total: f64 = e.iter().sum();
                for d in 0..hd {
                    let want: f64 = (0..len).map(|p| e[p] / total * at(&v, p, d) as f64).sum();
                    let have = got[(row * heads + h) * hd + d] as f64;
                    assert!((want - have).abs() < 1e-5, "row {row} head {h} dim {d}");
                }
            }
        }
        // A row's numbers are the same alone as beside another.
        let alone = from_cache(&q[heads * hd..], 1, &seqs[1..], &k, &v, cap, shape);
        assert_eq!(alone, got[heads * hd..]);
    }

    #[test]
    fn the_vector_path_gives_the_scalar_bits() {
        let mut rng = mercato_platform::random::SplitMix64::new(5);
        let mut draw =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.next_f64() as f32 * 6.0 - 3.0).collect() };
        // Head widths of whole vectors (blocks of eight positions) and not; lengths around
        // the blocks.
        for (hd, rep) in [(64, 3), (32, 1), (12, 2)] {
            for len in [1, 7, 8, 9, 16, 23, 40] {
                let (q, k, v) = (draw(rep * hd), draw(len * hd), draw(len * hd));
                let scalar = attention_body(&q, &k, &v, hd, 0.125, dot, dot8);
                assert_eq!(
                    attention(&q, &k, &v, hd, 0.125),
                    scalar,
                    "hd {hd} len {len}"
                );
            }
        }
    }

    #[test]
    fn new_tokens_of_a_chunk_see_exactly_the_positions_before_them() {
        let (slots, kvh, cap, hd, heads, tokens) = (2, 2, 10, 8, 4, 3);
        let mut rng = mercato_platform::random::SplitMix64::new(11);
        let mut draw =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.next_f64() as f32 - 0.5).collect() };
        let keys = draw(slots * kvh * cap * hd);
        let values = draw(slots * kvh * cap * hd);
        // `[rows, tokens, heads, hd]`: two rows of three new tokens.
        let q = draw(2 * heads * tokens * hd);
        let seqs = [(1, 4), (0, 2)];
        let shape = Heads {
            heads,
            kv_heads: kvh,
            head_dim: hd,
            scale: 0.25,
        };
        let chunk = from_cache(&q, tokens, &seqs, &keys, &values, cap, shape);
        // Token j of a row is the same as one new token at position pos + j.
        for (row, &(slot, pos)) in seqs.iter().enumerate() {
            for j in 0..tokens {
                let at = (row * tokens + j) * heads * hd;
                let one = &q[at..at + heads * hd];
                let single = from_cache(one, 1, &[(slot, pos + j)], &keys, &values, cap, shape);
                let at = (row * tokens + j) * heads * hd;
                assert_eq!(chunk[at..at + heads * hd], single, "row {row} token {j}");
            }
        }
    }
}
