//! Causal attention of new tokens (a decode step's one per sequence, or a prefill chunk's)
//! over each sequence's cached keys and values, computed straight from the cache on the CPU.
//!
//! Through candle this took a handful of tensor operations per sequence and layer (views,
//! copies, a softmax, a small matmul), whose fixed cost outweighed the arithmetic: about a
//! sixth of a 16-sequence decode step, and more of a short prompt's prefill. Here each
//! (sequence, key head) pair is one work item on candle's thread pool (a long prompt chunk's,
//! several: runs of its tokens of about equal work); it reads the cache in place and gives the
//! query heads that share the key head their outputs, one new token at a time over exactly the
//! positions that token sees.
//!
//! The cache keeps keys in blocks of [`KEY_BLOCK`] positions, dimension-major inside a block,
//! so one vector holds one dimension of sixteen positions: a query's scores come out sixteen
//! at a time from one fused multiply-add per dimension, with no horizontal sums, and the query
//! heads sharing a key head read each block once. The weighted sum of the values runs the
//! same way across the head's dimensions.
//!
//! Keys and values are cached in half precision (IEEE f16, rounded to nearest even, as
//! llama.cpp caches them by default): attention reads every cached position of every sequence
//! in every layer, and at 16 sequences of ~100 positions those reads, not the arithmetic, were
//! most of its time. Widening is exact, so the arithmetic below is on f32 as before.
//!
//! Every number is a chain of fused multiply-adds in a fixed order (per score over the
//! dimensions, per output over the positions), so it comes out the same bit for bit with
//! AVX-512, AVX2 or neither; and every sequence is computed alone, over exactly its own
//! length, so its numbers do not depend on which other sequences share the step (greedy
//! output is the same alone or in a batch).

use std::cell::RefCell;

use super::math::{has_avx512, softmax_numerators};

/// Positions per block of the cached keys.
pub const KEY_BLOCK: usize = 16;

/// A value as the cache keeps it: half precision, rounded to nearest even (beyond its range,
/// infinite).
#[inline]
pub fn narrow(x: f32) -> u16 {
    half::f16::from_f32(x).to_bits()
}

/// `src` as the cache keeps it (see [`narrow`]), into `dst` (resized): one conversion of a
/// layer's new keys or values together, through the CPU's half-precision conversion where it
/// has one (F16C, rounding to nearest even: the same bits as `narrow` for every number). One
/// call per value, each checking the CPU's features, was most of the cache write's time.
pub fn narrow_all(src: &[f32], dst: &mut Vec<u16>) {
    use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};
    dst.resize(src.len(), 0);
    dst.reinterpret_cast_mut::<half::f16>()
        .convert_from_f32_slice(src);
}

/// A cached value as f32, exactly, in plain operations (no table, no library call): the
/// magnitude's bits shifted into an f32 and scaled by 2^112 rebias the exponent and also place
/// subnormals exactly; infinities and NaN keep an all-ones exponent. The vector paths widen
/// sixteen at a time with the CPU's conversion instead, to the same values.
#[inline(always)]
pub fn widen(x: u16) -> f32 {
    let magnitude = (x & 0x7fff) as u32;
    let sign = ((x & 0x8000) as u32) << 16;
    let scaled = f32::from_bits(magnitude << 13) * f32::from_bits(0x7780_0000);
    let special = (magnitude << 13) | 0x7f80_0000;
    let bits = if magnitude >= 0x7c00 {
        special
    } else {
        scaled.to_bits()
    };
    f32::from_bits(bits | sign)
}

/// Where position `p`, dimension `d` of a key lies in one (slot, key head)'s blocked keys:
/// blocks of [`KEY_BLOCK`] positions, each `[head_dim][KEY_BLOCK]`.
#[inline]
pub fn key_offset(p: usize, d: usize, head_dim: usize) -> usize {
    (p / KEY_BLOCK * head_dim + d) * KEY_BLOCK + p % KEY_BLOCK
}

/// Keys `[lanes, capacity, head_dim]` (row per position) as the cache keeps them: narrowed,
/// in the blocked layout; `capacity` is a multiple of [`KEY_BLOCK`].
pub fn block_keys(keys: &[f32], capacity: usize, head_dim: usize) -> Vec<u16> {
    assert!(capacity.is_multiple_of(KEY_BLOCK) && keys.len().is_multiple_of(capacity * head_dim));
    let mut out = vec![0u16; keys.len()];
    for (from, to) in keys
        .chunks_exact(capacity * head_dim)
        .zip(out.chunks_exact_mut(capacity * head_dim))
    {
        for (p, key) in from.chunks_exact(head_dim).enumerate() {
            for (d, k) in key.iter().enumerate() {
                to[key_offset(p, d, head_dim)] = narrow(*k);
            }
        }
    }
    out
}

/// Shape of the attention: query heads, key/value heads, head width and score scale.
#[derive(Clone, Copy)]
pub struct Heads {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub scale: f32,
}

/// A row of new tokens of one sequence: its cache slot, the position of its first new token
/// and how many there are.
#[derive(Clone, Copy, Debug)]
pub struct Span {
    pub slot: usize,
    pub pos: usize,
    pub tokens: usize,
}

/// Causal attention of new tokens over each sequence's cache. `q` holds the queries of every
/// row's tokens, row after row, `[tokens, heads, head_dim]`; row i's new tokens are
/// `seqs[i]`, whose keys and values are already in the cache: its new token j sees positions
/// `0..=pos + j`. Rows may carry different numbers of tokens. `k` and `v` are one layer's
/// cache, `[slots, kv_heads, capacity, head_dim]`, narrowed, the keys of each (slot, key head)
/// blocked (see [`key_offset`]; `capacity` is a multiple of [`KEY_BLOCK`]). Returns `[tokens,
/// heads * head_dim]`, the rows' tokens in order.
pub fn from_cache(
    q: &[f32],
    seqs: &[Span],
    k: &[u16],
    v: &[u16],
    capacity: usize,
    shape: Heads,
) -> Vec<f32> {
    let mut out = Vec::new();
    from_cache_into(q, seqs, (k, v), capacity, shape, &mut out);
    out
}

thread_local! {
    /// Each pool thread's scores, kept between work items.
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `from_cache` into `out` (resized; its allocation is reused and not cleared, since every
/// value is written).
pub fn from_cache_into(
    q: &[f32],
    seqs: &[Span],
    (k, v): (&[u16], &[u16]),
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
    assert!(
        capacity.is_multiple_of(KEY_BLOCK),
        "the cache holds whole key blocks"
    );
    let rep = heads / kv_heads;
    let width = heads * hd;
    let tokens: usize = seqs.iter().map(|s| s.tokens).sum();
    out.resize(tokens * width, 0.0);
    // Work items are (row, key head) pairs, taken one at a time (rows differ in length); each
    // owns the output columns of its query heads in its tokens' rows and writes them in place.
    // A key head's columns come in token order, so each row's run of them is an item, in (key
    // head, row) order, borrowed from one vector (a vector per item cost the allocator ~1.5%
    // of a 16-sequence decode step). A row's run is cut into several items where it holds
    // more than a fair share of the work (`item_tokens`): a lone prompt has only one item per
    // key head, three on the default model for two threads.
    let mut columns = super::pool::column_parts(out, width, rep * hd);
    let mut items = Vec::with_capacity(kv_heads * seqs.len());
    let mut rest = columns.as_mut_slice();
    let share = fair_share(seqs, kv_heads);
    for g in 0..kv_heads {
        let mut first = 0;
        for s in seqs {
            let mut j = 0;
            while j < s.tokens {
                let n = item_tokens(s.pos + j, s.tokens - j, share);
                let (outs, tail) = std::mem::take(&mut rest).split_at_mut(n);
                // The item's tokens: from position pos + j, queries from first + j.
                items.push((s.slot, s.pos + j, g, first + j, outs));
                rest = tail;
                j += n;
            }
            first += s.tokens;
        }
    }
    super::pool::for_each_part(items, |_, (slot, pos, g, first, outs)| {
        let (slot, pos, g, first) = (*slot, *pos, *g, *first);
        let base = (slot * kv_heads + g) * capacity * hd;
        SCORES.with_borrow_mut(|scores| {
            for (j, y) in outs.iter_mut().enumerate() {
                // Token-major queries: the heads sharing key head g are adjacent.
                let at = ((first + j) * heads + g * rep) * hd;
                let len = pos + j + 1;
                let inputs = Inputs {
                    queries: &q[at..at + rep * hd],
                    keys: &k[base..base + len.next_multiple_of(KEY_BLOCK) * hd],
                    values: &v[base..base + len * hd],
                    head_dim: hd,
                    scale: shape.scale,
                };
                attention_into(inputs, y, scores);
            }
        })
    });
}

/// Work items per thread that a call aims at when it cuts rows (`fair_share`): enough that
/// the last item taken leaves the other threads little to wait for.
const ITEMS_PER_THREAD: usize = 8;
/// The least work, in positions seen, of an item cut from a row: a decode step's token and
/// short chunks (the bench's 29-token prompts: 435) stay whole as before, so cutting only
/// touches the long prompt chunks whose items the threads would otherwise wait for.
const MIN_ITEM_WORK: usize = 4096;

/// The work, in positions seen summed over tokens, above which a call cuts a row's tokens of
/// one key head into several items: an even split of the call's work into
/// `ITEMS_PER_THREAD` items per thread (token j of a row sees `pos + j + 1` positions).
fn fair_share(seqs: &[Span], kv_heads: usize) -> usize {
    let work: usize = seqs.iter().map(|s| seen(s.pos, s.tokens)).sum();
    (work * kv_heads / (ITEMS_PER_THREAD * super::pool::threads())).max(MIN_ITEM_WORK)
}

/// Positions seen by `tokens` new tokens from position `pos`, summed: (pos + 1) + ... +
/// (pos + tokens).
fn seen(pos: usize, tokens: usize) -> usize {
    tokens * (2 * pos + tokens + 1) / 2
}

/// How many of `left` tokens from position `pos` one item takes: the fewest (at least one)
/// whose positions seen reach `share`, or all of them.
fn item_tokens(pos: usize, left: usize, share: usize) -> usize {
    // A row within its share (every decode row, most chunks) stays whole without a walk.
    if seen(pos, left) <= share {
        return left;
    }
    let mut work = 0;
    for n in 1..=left {
        work += pos + n;
        if work >= share {
            return n;
        }
    }
    left
}

/// Softmax attention of `queries` (`[q, head_dim]`) over `len` positions, keys and values
/// narrowed: `keys` blocked (`[len / KEY_BLOCK rounded up][head_dim][KEY_BLOCK]`, the last
/// block's extra positions ignored), `values` `[len, head_dim]`; every query sees every
/// position. Returns `[q, head_dim]`.
pub fn attention(
    queries: &[f32],
    keys: &[u16],
    values: &[u16],
    head_dim: usize,
    scale: f32,
) -> Vec<f32> {
    let mut out = vec![0f32; queries.len()];
    let inputs = Inputs {
        queries,
        keys,
        values,
        head_dim,
        scale,
    };
    attention_into(inputs, &mut out, &mut Vec::new());
    out
}

/// One attention call's queries, keys and values (as [`attention`] takes them).
#[derive(Clone, Copy)]
struct Inputs<'a> {
    queries: &'a [f32],
    keys: &'a [u16],
    values: &'a [u16],
    head_dim: usize,
    scale: f32,
}

/// [`attention`] into `out`, with `scores` as scratch. AVX-512 (three query heads at a time)
/// where the CPU has it, else AVX2 with F16C (one), else plain code: the same operations in
/// the same order, so the same bits.
fn attention_into(inputs: Inputs<'_>, out: &mut [f32], scores: &mut Vec<f32>) {
    let Inputs {
        queries,
        keys,
        values,
        head_dim: hd,
        ..
    } = inputs;
    let len = values.len() / hd.max(1);
    assert!(hd > 0 && len > 0 && values.len() == len * hd);
    assert!(queries.len().is_multiple_of(hd) && out.len() == queries.len());
    assert!(keys.len() >= len.next_multiple_of(KEY_BLOCK) * hd);
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx512() {
            return x86::avx512(inputs, out, scores);
        }
        if x86::has_avx2() {
            return x86::avx2(inputs, out, scores);
        }
    }
    attention_body::<1>(inputs, out, scores, plain_widen16)
}

/// Sixteen cached values widened one by one.
#[inline(always)]
fn plain_widen16(v: &[u16; 16]) -> [f32; 16] {
    std::array::from_fn(|i| widen(v[i]))
}

/// The vector paths: `#[target_feature]` functions (`pulp`'s safe wrappers stop at AVX2 and
/// have no F16C), which need `unsafe` to call, widening with the CPU's half-precision
/// conversion (exact, so the same values as `widen`).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86 {
    use std::arch::x86_64::{__m256i, _mm256_cvtph_ps, _mm512_cvtph_ps, _mm512_storeu_ps};

    use super::{Inputs, attention_body};

    /// Whether the CPU has the AVX2 path's features.
    pub(super) fn has_avx2() -> bool {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
    }

    pub(super) fn avx512(inputs: Inputs<'_>, out: &mut [f32], scores: &mut Vec<f32>) {
        assert!(super::has_avx512());
        // SAFETY: the features `run_avx512` enables were detected just above.
        unsafe { run_avx512(inputs, out, scores) }
    }

    pub(super) fn avx2(inputs: Inputs<'_>, out: &mut [f32], scores: &mut Vec<f32>) {
        assert!(has_avx2());
        // SAFETY: the features `run_avx2` enables were detected just above.
        unsafe { run_avx2(inputs, out, scores) }
    }

    #[target_feature(enable = "avx512f,fma")]
    fn run_avx512(inputs: Inputs<'_>, out: &mut [f32], scores: &mut Vec<f32>) {
        // The closure inherits the function's features.
        let widen16 = |v: &[u16; 16]| -> [f32; 16] {
            let mut wide = [0f32; 16];
            let sixteen = _mm512_cvtph_ps(bytemuck::cast::<[u16; 16], __m256i>(*v));
            // SAFETY: `wide` has room for the sixteen values stored.
            unsafe { _mm512_storeu_ps(wide.as_mut_ptr(), sixteen) };
            wide
        };
        attention_body::<3>(inputs, out, scores, widen16)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    fn run_avx2(inputs: Inputs<'_>, out: &mut [f32], scores: &mut Vec<f32>) {
        let widen16 = |v: &[u16; 16]| -> [f32; 16] {
            let halves: [std::arch::x86_64::__m128i; 2] = bytemuck::cast(*v);
            bytemuck::cast(halves.map(|h| _mm256_cvtph_ps(h)))
        };
        attention_body::<1>(inputs, out, scores, widen16)
    }
}

/// Attention with `G` query heads at a time: they share each key block's and value row's
/// loads. A last group with fewer heads repeats its last head, whose results are dropped.
#[inline(always)]
fn attention_body<const G: usize>(
    inputs: Inputs<'_>,
    out: &mut [f32],
    scores: &mut Vec<f32>,
    widen16: impl Fn(&[u16; 16]) -> [f32; 16] + Copy,
) {
    let Inputs {
        queries,
        keys,
        values,
        head_dim: hd,
        scale,
    } = inputs;
    let rep = queries.len() / hd;
    let len = values.len() / hd;
    let blocks = len.div_ceil(KEY_BLOCK);
    let width = blocks * KEY_BLOCK;
    // Each head's scores, then each head's one over its softmax sum.
    if scores.len() < rep * (width + 1) {
        scores.resize(rep * (width + 1), 0.0);
    }
    let (scores, inv) = scores.split_at_mut(rep * width);
    let keys = &keys.as_chunks::<KEY_BLOCK>().0[..blocks * hd];
    let rows = scores.as_chunks_mut::<KEY_BLOCK>().0;
    for first in (0..rep).step_by(G) {
        let heads: [usize; G] = std::array::from_fn(|r| (first + r).min(rep - 1));
        let q = heads.map(|h| &queries[h * hd..(h + 1) * hd]);
        let mut put = |b: usize, acc: &[[f32; KEY_BLOCK]]| {
            for (r, sums) in acc
                .chunks_exact(acc.len() / G)
                .enumerate()
                .take(rep - first)
            {
                let at = (first + r) * blocks + b;
                for (row, s) in rows[at..at + sums.len()].iter_mut().zip(sums) {
                    *row = s.map(|s| s * scale);
                }
            }
        };
        let mut b = 0;
        while b + 4 <= blocks {
            put(
                b,
                block_scores::<G, 4>(q, &keys[b * hd..(b + 4) * hd], widen16).as_flattened(),
            );
            b += 4;
        }
        for b in b..blocks {
            put(
                b,
                block_scores::<G, 1>(q, &keys[b * hd..(b + 1) * hd], widen16).as_flattened(),
            );
        }
    }
    let row = |h: usize| h * width..h * width + len;
    for (h, inv) in inv[..rep].iter_mut().enumerate() {
        *inv = softmax_numerators(&mut scores[row(h)]);
    }
    let scores = &*scores;
    for first in (0..rep).step_by(G) {
        let heads: [usize; G] = std::array::from_fn(|r| (first + r).min(rep - 1));
        let weights = heads.map(|h| &scores[row(h)]);
        let mut put = |r: usize, sums: &[f32]| {
            if first + r < rep {
                let h = first + r;
                for (o, s) in out[h * hd..(h + 1) * hd].iter_mut().zip(sums) {
                    *o = s * inv[h];
                }
            }
        };
        match hd {
            32 => weighted::<32, G>(weights, values.as_chunks().0, widen16, put),
            64 => weighted::<64, G>(weights, values.as_chunks().0, widen16, put),
            128 => weighted::<128, G>(weights, values.as_chunks().0, widen16, put),
            _ => {
                for (r, w) in weights.iter().enumerate() {
                    let mut acc = vec![0f32; hd];
                    for (w, v) in w.iter().zip(values.chunks_exact(hd)) {
                        for (a, v) in acc.iter_mut().zip(v) {
                            *a = w.mul_add(widen(*v), *a);
                        }
                    }
                    put(r, &acc);
                }
            }
        }
    }
}

/// Scores of `G` queries against `N` key blocks: per query and position, a chain of fused
/// multiply-adds over the dimensions. `G * N` independent vectors of sums.
#[inline(always)]
fn block_scores<const G: usize, const N: usize>(
    q: [&[f32]; G],
    keys: &[[u16; KEY_BLOCK]],
    widen16: impl Fn(&[u16; 16]) -> [f32; 16],
) -> [[[f32; KEY_BLOCK]; N]; G] {
    let hd = keys.len() / N;
    let blocks: [&[[u16; KEY_BLOCK]]; N] = std::array::from_fn(|n| &keys[n * hd..(n + 1) * hd]);
    let q = q.map(|q| &q[..hd]);
    let mut acc = [[[0f32; KEY_BLOCK]; N]; G];
    for d in 0..hd {
        for n in 0..N {
            let k = widen16(&blocks[n][d]);
            for r in 0..G {
                let x = q[r][d];
                for i in 0..KEY_BLOCK {
                    acc[r][n][i] = x.mul_add(k[i], acc[r][n][i]);
                }
            }
        }
    }
    acc
}

/// `G` weighted sums of the value rows (head width `HD`, a multiple of 16 known at compile
/// time so the sums stay in registers), handed to `put` with their group index: per output, a
/// chain of fused multiply-adds over the positions.
#[inline(always)]
fn weighted<const HD: usize, const G: usize>(
    weights: [&[f32]; G],
    values: &[[u16; HD]],
    widen16: impl Fn(&[u16; 16]) -> [f32; 16],
    mut put: impl FnMut(usize, &[f32]),
) {
    let weights = weights.map(|w| &w[..values.len()]);
    let mut acc = [[0f32; HD]; G];
    for (p, v) in values.iter().enumerate() {
        let mut wide = [0f32; HD];
        for (to, from) in wide
            .as_chunks_mut::<16>()
            .0
            .iter_mut()
            .zip(v.as_chunks::<16>().0)
        {
            *to = widen16(from);
        }
        let v = wide;
        for r in 0..G {
            let w = weights[r][p];
            for i in 0..HD {
                acc[r][i] = w.mul_add(v[i], acc[r][i]);
            }
        }
    }
    for (r, sums) in acc.iter().enumerate() {
        put(r, sums);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values drawn uniformly, already at the precision the cache keeps (so references
    /// computed from them see what attention sees).
    fn draw(rng: &mut mercato_platform::random::SplitMix64, n: usize, spread: f32) -> Vec<f32> {
        (0..n)
            .map(|_| widen(narrow((rng.next_f64() as f32 - 0.5) * spread)))
            .collect()
    }

    fn narrowed(values: &[f32]) -> Vec<u16> {
        values.iter().map(|v| narrow(*v)).collect()
    }

    #[test]
    fn matches_softmax_attention_written_out() {
        let mut rng = mercato_platform::random::SplitMix64::new(7);
        // Head widths of the fixed-width and general paths; two, three and four query heads
        // per key head (whole and partial groups of three); lengths within one block and
        // across several.
        for (hd, heads, kvh) in [(12, 4, 2), (64, 9, 3), (32, 8, 2)] {
            let (slots, cap) = (3, 48);
            let k = draw(&mut rng, slots * kvh * cap * hd, 1.0);
            let v = draw(&mut rng, slots * kvh * cap * hd, 1.0);
            let q = draw(&mut rng, 2 * heads * hd, 1.0);
            let seqs = spans(&[(2, 4, 1), (0, 37, 1)]);
            let shape = Heads {
                heads,
                kv_heads: kvh,
                head_dim: hd,
                scale: 0.3,
            };
            let (blocked, cached) = (block_keys(&k, cap, hd), narrowed(&v));
            let got = from_cache(&q, &seqs, &blocked, &cached, cap, shape);
            // A reused buffer (longer, holding NaN) gets every value written.
            let mut reused = vec![f32::NAN; got.len() + 9];
            from_cache_into(&q, &seqs, (&blocked, &cached), cap, shape, &mut reused);
            assert_eq!(reused, got);
            for (row, &Span { slot, pos, .. }) in seqs.iter().enumerate() {
                let len = pos + 1;
                for h in 0..heads {
                    let g = h / (heads / kvh);
                    let at =
                        |t: &[f32], p: usize, d: usize| t[((slot * kvh + g) * cap + p) * hd + d];
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
                        assert!(
                            (want - have).abs() < 1e-5,
                            "hd {hd} row {row} head {h} dim {d}"
                        );
                    }
                }
            }
            // A row's numbers are the same alone as beside another.
            let alone = from_cache(&q[heads * hd..], &seqs[1..], &blocked, &cached, cap, shape);
            assert_eq!(alone, got[heads * hd..]);
        }
    }

    #[test]
    fn every_path_gives_the_plain_codes_bits() {
        let mut rng = mercato_platform::random::SplitMix64::new(5);
        // Head widths of the fixed-width and general paths; lengths around the blocks; one to
        // four query heads (groups of three whole and partial).
        for (hd, rep) in [(64, 3), (32, 1), (12, 2), (128, 4)] {
            for len in [1usize, 7, 15, 16, 17, 40, 64, 71] {
                let cap = len.next_multiple_of(KEY_BLOCK);
                let q = draw(&mut rng, rep * hd, 6.0);
                let k = block_keys(&draw(&mut rng, cap * hd, 6.0), cap, hd);
                let v = narrowed(&draw(&mut rng, len * hd, 6.0));
                let plain = |group: usize| {
                    let mut out = vec![f32::NAN; rep * hd];
                    let mut scores = vec![f32::NAN; 3];
                    let inputs = Inputs {
                        queries: &q,
                        keys: &k,
                        values: &v,
                        head_dim: hd,
                        scale: 0.125,
                    };
                    match group {
                        1 => attention_body::<1>(inputs, &mut out, &mut scores, plain_widen16),
                        _ => attention_body::<3>(inputs, &mut out, &mut scores, plain_widen16),
                    }
                    out
                };
                let one = plain(1);
                assert_eq!(plain(3), one, "groups of three, hd {hd} len {len}");
                assert_eq!(attention(&q, &k, &v, hd, 0.125), one, "hd {hd} len {len}");
                // The AVX2 path too where the CPU has it (`attention` takes AVX-512 first).
                #[cfg(target_arch = "x86_64")]
                if x86::has_avx2() {
                    let mut out = vec![f32::NAN; rep * hd];
                    let inputs = Inputs {
                        queries: &q,
                        keys: &k,
                        values: &v,
                        head_dim: hd,
                        scale: 0.125,
                    };
                    x86::avx2(inputs, &mut out, &mut Vec::new());
                    assert_eq!(out, one, "AVX2, hd {hd} len {len}");
                }
            }
        }
    }

    fn spans(rows: &[(usize, usize, usize)]) -> Vec<Span> {
        rows.iter()
            .map(|&(slot, pos, tokens)| Span { slot, pos, tokens })
            .collect()
    }

    #[test]
    fn new_tokens_of_a_chunk_see_exactly_the_positions_before_them() {
        let (slots, kvh, cap, hd, heads) = (4, 2, 240, 8, 4);
        let mut rng = mercato_platform::random::SplitMix64::new(11);
        let keys = block_keys(&draw(&mut rng, slots * kvh * cap * hd, 1.0), cap, hd);
        let values = narrowed(&draw(&mut rng, slots * kvh * cap * hd, 1.0));
        // Rows of three, five and one new tokens, one crossing a block, and a long chunk that
        // is cut into several work items.
        let seqs = spans(&[(1, 4, 3), (0, 14, 5), (2, 9, 1), (3, 20, 200)]);
        let share = fair_share(&seqs, kvh);
        assert!(item_tokens(20, 200, share) < 200);
        let q = draw(&mut rng, 209 * heads * hd, 1.0);
        let shape = Heads {
            heads,
            kv_heads: kvh,
            head_dim: hd,
            scale: 0.25,
        };
        let chunk = from_cache(&q, &seqs, &keys, &values, cap, shape);
        assert_eq!(chunk.len(), q.len());
        // Token j of a row is the same as one new token at position pos + j.
        let mut first = 0;
        for (row, &Span { slot, pos, tokens }) in seqs.iter().enumerate() {
            for j in 0..tokens {
                let at = (first + j) * heads * hd;
                let one = &q[at..at + heads * hd];
                let alone = spans(&[(slot, pos + j, 1)]);
                let single = from_cache(one, &alone, &keys, &values, cap, shape);
                assert_eq!(chunk[at..at + heads * hd], single, "row {row} token {j}");
            }
            first += tokens;
        }
    }

    #[test]
    fn rows_are_cut_into_items_of_about_equal_work() {
        // A lone prompt of 512 tokens, the work of one key head: 512 * 513 / 2 positions seen.
        let seqs = spans(&[(0, 0, 512)]);
        let share = fair_share(&seqs, 3);
        let threads = crate::inference::pool::threads();
        assert_eq!(
            share,
            (3 * 512 * 513 / 2 / (ITEMS_PER_THREAD * threads)).max(MIN_ITEM_WORK)
        );
        let (mut pos, mut cuts) = (0, Vec::new());
        while pos < 512 {
            let n = item_tokens(pos, 512 - pos, share);
            cuts.push(n);
            pos += n;
        }
        assert_eq!(cuts.iter().sum::<usize>(), 512);
        // Later tokens see more positions, so the items shrink; every one but the last reaches
        // the share, and none by more than one token's work.
        assert!(cuts.windows(2).all(|w| w[0] >= w[1]));
        let mut from = 0;
        for (i, &n) in cuts.iter().enumerate() {
            let work: usize = (from + 1..=from + n).sum();
            if i + 1 < cuts.len() {
                assert!(
                    work >= share && work - (from + n) < share,
                    "item {i}: {work}"
                );
            }
            from += n;
        }
        // Decode steps and short chunks stay whole.
        assert_eq!(
            item_tokens(100, 1, fair_share(&spans(&[(0, 100, 1)]), 3)),
            1
        );
        assert_eq!(item_tokens(0, 29, fair_share(&spans(&[(0, 0, 29)]), 3)), 29);
    }

    #[test]
    fn blocked_keys_put_each_value_once() {
        let (cap, hd) = (32, 5);
        // Integers up to 2048, which half precision holds exactly.
        let keys: Vec<f32> = (0..2 * cap * hd).map(|i| i as f32).collect();
        let blocked = block_keys(&keys, cap, hd);
        let mut seen: Vec<f32> = blocked.iter().map(|k| widen(*k)).collect();
        seen.sort_by(f32::total_cmp);
        assert_eq!(seen, keys);
        // Position 17, dimension 3 of the second lane: block 1, row 3, column 1.
        let at = cap * hd + (hd + 3) * KEY_BLOCK + 1;
        assert_eq!(widen(blocked[at]), keys[(cap + 17) * hd + 3]);
    }

    #[test]
    fn narrowing_together_rounds_as_one_by_one() {
        // Every half's value, the midpoints between neighbours (where rounding to even
        // decides), and values past the range and below the subnormals.
        let mut src: Vec<f32> = Vec::new();
        for bits in 0..=u16::MAX {
            let x = half::f16::from_bits(bits).to_f32();
            let next = half::f16::from_bits(bits.wrapping_add(1)).to_f32();
            src.push(x);
            src.push((x as f64 + (next as f64 - x as f64) / 2.0) as f32);
        }
        src.extend([1e9f32, -1e9, 1e-9, -1e-9, 65520.0, -65520.0, 65519.99]);
        let mut got = Vec::new();
        narrow_all(&src, &mut got);
        for (x, h) in src.iter().zip(&got) {
            if x.is_nan() {
                assert!(half::f16::from_bits(*h).is_nan());
            } else {
                assert_eq!(*h, narrow(*x), "{x}");
            }
        }
    }

    #[test]
    fn widening_is_exact_for_every_half() {
        for bits in 0..=u16::MAX {
            let (got, want) = (widen(bits), half::f16::from_bits(bits).to_f32());
            if want.is_nan() {
                assert!(got.is_nan(), "{bits:#06x}");
            } else {
                assert_eq!(got.to_bits(), want.to_bits(), "{bits:#06x}");
            }
        }
    }
}
