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
//! Three paths, chosen at run time, compute the same numbers bit for bit (integer sums, then
//! the same fused multiply-adds): AVX-512 VNNI (one `vpdpbusd` per four inputs of eight
//! columns and row, about twice the AVX2 path's throughput on batches; `mod vnni`), AVX2 and
//! FMA (safe intrinsics through `pulp`), and scalar code elsewhere. Where the CPU has AMX
//! (Intel's tile unit), batches of 12 rows or more take a fourth path with the same bits: one
//! `tdpbssd` multiplies a block of 16 rows by 16 columns at once (`mod amx`).
//!
//! A matrix can also keep a GGUF file's own 4-bit blocks (Q4_0, Q4_1: weight = d * q + m with
//! q in 0..=15; `Q8Matrix::from_q4`), two steps per 32 bytes. Their values are unsigned, so
//! `maddubs` multiplies them by the signed activation bytes directly, and a block's sums fit in
//! 16-bit lanes until one `madd` per block: half the bytes and half the multiplies per input
//! of the 8-bit AVX2 path (`kernel4`; AVX2 and scalar paths, the same bits). With VNNI,
//! `vpdpbusd` takes the 4-bit values as its unsigned operand, two column groups at a time
//! (`vnni::pair`, the same bits again): the instructions per input of the 8-bit VNNI path on
//! half its bytes. The offset m multiplies each block's activation sum times its scale, which
//! the activations keep for these matrices (one product per block and row, not one per column
//! group).

use bytemuck::cast;

use super::aligned::Aligned;
use super::pool;

/// Inputs per block (one scale each).
pub const BLOCK: usize = 32;
/// Output columns per group (one 256-bit vector of i32/f32 lanes).
const COLS: usize = 8;
/// Inputs per broadcast (four bytes make one i32 lane).
const STEP: usize = 4;
/// Activation rows handled together while a group's weights are hot (AVX2 and scalar paths).
const ROW_TILE: usize = 4;
/// The same for the VNNI path. Eight rows keep every integer sum and float accumulator of a
/// tile in registers (16 rows spilled them, two partial-sum chains per row too); measured on
/// the model's shapes with `llm-bench --only kernel`, interleaved: 8 rows x 1 chain 147-161
/// GMAC/s at 16+ rows, 16 x 1 131-146, 8 x 2 92-97.
const VNNI_ROWS: usize = 8;
// Activations are padded to whole VNNI tiles, which must also be whole AVX2 tiles.
const _: () = assert!(VNNI_ROWS.is_multiple_of(ROW_TILE));
/// Rows from which the VNNI path takes column groups in pairs (512-bit). A single row is bound
/// by memory bandwidth, and the pair measured slower there (30-37 against 38-48 GMAC/s).
const PAIR_FROM_ROWS: usize = 2;
/// Rows per AMX tile (the unit's most), to which the activations are padded on that path.
const AMX_ROWS: usize = 16;
const _: () = assert!(AMX_ROWS.is_multiple_of(VNNI_ROWS));
/// Rows from which a product takes the AMX path where the CPU has it; fewer rows would be
/// mostly padding, and one or two are bound by memory bandwidth on any path.
const AMX_FROM_ROWS: usize = 12;
/// XOR with this word turns four signed bytes into four bytes offset by 128 and back.
const FLIP: i32 = 0x8080_8080_u32 as i32;

/// Which kernel runs, chosen once per product from what the CPU has.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Path {
    /// AVX-512 VNNI (256-bit): one `vpdpbusd` per four inputs of eight columns.
    Vnni,
    /// AVX2 and FMA: `maddubs` and `madd` per four inputs of eight columns.
    Avx2,
    Scalar,
    /// AMX tiles for batches (8-bit weights), on a CPU that has the VNNI path too.
    Amx,
}

/// Whether this CPU runs the AMX kernel on batches (and it is not switched off).
pub fn has_amx() -> bool {
    amx_supported() && !AMX_OFF.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether the CPU has AMX and this process may use it (whether or not it is switched off):
/// 8-bit matrices then keep the AMX path's layout too.
fn amx_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        amx::supported()
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Switches the AMX path off or back on for the whole process (it gives the same numbers as
/// the VNNI path; the benchmark compares the two in one run).
pub fn use_amx(on: bool) {
    AMX_OFF.store(!on, std::sync::atomic::Ordering::Relaxed);
}

static AMX_OFF: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this CPU runs a vector kernel (VNNI or AVX2), not the scalar fallback.
pub fn has_vector_kernel() -> bool {
    Path::detect() != Path::Scalar
}

impl Path {
    fn detect() -> Path {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512vnni")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Path::Vnni;
            }
            if pulp::x86::V3::try_new().is_some() {
                return Path::Avx2;
            }
        }
        Path::Scalar
    }

    /// The path for one column group of a 4-bit matrix: VNNI CPUs take 4-bit groups in pairs
    /// only (`vnni::pair`), and a group left alone takes the AVX2 kernel (which they have).
    fn four_bit(self) -> Path {
        match self {
            Path::Vnni => Path::Avx2,
            other => other,
        }
    }

    /// The path for a product of `rows` rows with 8-bit weights (`tiles`: whether they all
    /// keep the AMX layout).
    fn for_rows(self, rows: usize, tiles: bool) -> Path {
        if self == Path::Vnni && rows >= AMX_FROM_ROWS && tiles && has_amx() {
            Path::Amx
        } else {
            self
        }
    }

    fn row_tile(self) -> usize {
        match self {
            Path::Amx => AMX_ROWS,
            Path::Vnni => VNNI_ROWS,
            Path::Avx2 | Path::Scalar => ROW_TILE,
        }
    }
}

/// A `[out, in]` weight matrix in the interleaved 8-bit layout.
pub struct Q8Matrix {
    out: usize,
    inp: usize,
    blocks: usize,
    groups: usize,
    /// `[group][block][step]`: 32 bytes = 8 columns x 4 consecutive inputs.
    qs: Aligned<i8, 32>,
    /// `[group][block]`: the 8 columns' scales.
    d: Aligned<f32, COLS>,
    kind: Kind,
}

/// How a matrix holds its integers.
enum Kind {
    /// Signed bytes, one per input (`qs` is `[group][block][step]`). `bias` is `[group][block]`:
    /// -128 times each column's sum of weights over the block, which the VNNI path starts from
    /// because it multiplies activations offset by 128 (unsigned). `pairs` is the same bytes
    /// for the AMX path, two groups side by side (`[group pair][block][step]`, 16 columns x 4
    /// inputs), so that one tile holds a block of 16 columns; empty where the CPU has no AMX.
    Signed8 {
        bias: Vec<[i32; COLS]>,
        pairs: Aligned<i8, 64>,
    },
    /// A GGUF file's own 4-bit values (0 to 15), weight = d * q + m per column and block. `qs`
    /// is `[group][block][pair]`: the 32 bytes of steps 2p (low nibbles) and 2p + 1 (high
    /// nibbles), so a block is half the bytes of `Signed8`. `min` is `[group][block]`: m.
    Unsigned4 { min: Vec<[f32; COLS]> },
}

impl Kind {
    /// Weight vectors per block.
    fn vectors(&self) -> usize {
        match self {
            Kind::Signed8 { .. } => BLOCK / STEP,
            Kind::Unsigned4 { .. } => BLOCK / STEP / 2,
        }
    }
}

/// Which 4-bit GGUF block layout [`Q8Matrix::from_q4`] reads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Q4Blocks {
    /// `Q4_0`: an f16 scale d and 16 bytes; weight = d * (q - 8).
    Q4_0,
    /// `Q4_1`: f16 d and m and 16 bytes; weight = d * q + m.
    Q4_1,
}

/// `[group][block][step]` units of 32 bytes as `[group pair][block][step]` units of 64 (the
/// pair's first group in the low half; zeros for a missing last one).
fn side_by_side(qs: &[[i8; 32]], groups: usize, blocks: usize) -> Aligned<i8, 64> {
    let steps = BLOCK / STEP;
    let mut pairs = Aligned::zeroed(groups.div_ceil(2) * blocks * steps);
    for (i, unit) in qs.iter().enumerate() {
        let (g, rest) = (i / (blocks * steps), i % (blocks * steps));
        let half = (g % 2) * 32;
        pairs[(g / 2) * blocks * steps + rest][half..half + 32].copy_from_slice(unit);
    }
    pairs
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
        let mut qs = Aligned::zeroed(groups * blocks * steps);
        let mut d = Aligned::zeroed(groups * blocks);
        let mut bias = vec![[0i32; COLS]; groups * blocks];
        let mut q = [0i8; BLOCK];
        for col in 0..out {
            let (g, c) = (col / COLS, col % COLS);
            for b in 0..blocks {
                let x = &w[col * inp + b * BLOCK..col * inp + (b + 1) * BLOCK];
                d[g * blocks + b][c] = quantise_block(x, &mut q);
                bias[g * blocks + b][c] = -128 * q.iter().map(|&v| v as i32).sum::<i32>();
                for s in 0..steps {
                    let lanes = &mut qs[(g * blocks + b) * steps + s];
                    lanes[c * STEP..(c + 1) * STEP].copy_from_slice(&q[s * STEP..(s + 1) * STEP]);
                }
            }
        }
        let pairs = if amx_supported() {
            side_by_side(&qs, groups, blocks)
        } else {
            Aligned::zeroed(0)
        };
        Ok(Q8Matrix {
            out,
            inp,
            blocks,
            groups,
            qs,
            d,
            kind: Kind::Signed8 { bias, pairs },
        })
    }

    /// Keeps a row-major `[out, in]` matrix of GGUF 4-bit blocks as it is (the same weights,
    /// no second rounding). In a block, byte j holds input j in its low nibble and input
    /// j + 16 in its high nibble.
    pub fn from_q4(data: &[u8], layout: Q4Blocks, out: usize, inp: usize) -> anyhow::Result<Self> {
        let size = match layout {
            Q4Blocks::Q4_0 => 18,
            Q4Blocks::Q4_1 => 20,
        };
        let blocks = inp / BLOCK;
        anyhow::ensure!(
            inp > 0 && inp.is_multiple_of(BLOCK) && data.len() == out * blocks * size,
            "a 4-bit matrix needs whole blocks of {BLOCK} inputs ({out} x {inp}, {} bytes)",
            data.len()
        );
        let f16 = |b: &[u8]| half::f16::from_le_bytes([b[0], b[1]]).to_f32();
        let groups = out.div_ceil(COLS);
        let pairs = BLOCK / STEP / 2;
        let mut qs = Aligned::zeroed(groups * blocks * pairs);
        let mut d = Aligned::zeroed(groups * blocks);
        let mut min = vec![[0f32; COLS]; groups * blocks];
        for col in 0..out {
            let (g, c) = (col / COLS, col % COLS);
            for b in 0..blocks {
                let raw = &data[(col * blocks + b) * size..][..size];
                let scale = f16(&raw[0..2]);
                let (m, nibbles) = match layout {
                    Q4Blocks::Q4_0 => (-8.0 * scale, &raw[2..]),
                    Q4Blocks::Q4_1 => (f16(&raw[2..4]), &raw[4..]),
                };
                d[g * blocks + b][c] = scale;
                min[g * blocks + b][c] = m;
                let q = |i: usize| {
                    if i < BLOCK / 2 {
                        nibbles[i] & 0x0F
                    } else {
                        nibbles[i - BLOCK / 2] >> 4
                    }
                };
                for p in 0..pairs {
                    let lanes = &mut qs[(g * blocks + b) * pairs + p];
                    for j in 0..STEP {
                        let (lo, hi) = (q(2 * p * STEP + j), q((2 * p + 1) * STEP + j));
                        lanes[c * STEP + j] = (lo | (hi << 4)) as i8;
                    }
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
            kind: Kind::Unsigned4 { min },
        })
    }

    pub fn out_dim(&self) -> usize {
        self.out
    }

    /// `x` is row-major `[rows, in]`; returns row-major `[rows, out]`.
    pub fn matmul(&self, x: &[f32]) -> Vec<f32> {
        Self::matmul_each(&[self], x).pop().unwrap_or_default()
    }

    /// The same input against several matrices of the same input width (a layer's query, key
    /// and value projections; its gate and up projections): the input is quantised once and
    /// all their column groups share one dispatch on the pool. Returns one `[rows, out]`
    /// product per matrix, each the same numbers `matmul` gives.
    pub fn matmul_each(matrices: &[&Q8Matrix], x: &[f32]) -> Vec<Vec<f32>> {
        let mut ys = vec![Vec::new(); matrices.len()];
        Self::matmul_each_into(matrices, x, &mut ys.iter_mut().collect::<Vec<_>>());
        ys
    }

    /// `matmul_each` into `ys` (one per matrix, resized; their allocations are reused and
    /// not cleared, since every value is written).
    pub fn matmul_each_into(matrices: &[&Q8Matrix], x: &[f32], ys: &mut [&mut Vec<f32>]) {
        let Some(first) = matrices.first() else {
            return;
        };
        // The two kinds quantise the input differently; a mix goes one matrix at a time.
        if matrices
            .iter()
            .any(|m| m.is_four_bit() != first.is_four_bit())
        {
            for (m, y) in matrices.iter().zip(ys.iter_mut()) {
                Self::matmul_each_into(&[m], x, &mut [&mut **y]);
            }
            return;
        }
        let (rows, path, acts) = Self::prepare(matrices, x);
        // Work items are runs of column groups of one matrix; each owns its columns of every
        // row of that matrix's output and writes them in place (on the thread that computed
        // them, so no serial gather follows).
        let total: usize = matrices.iter().map(|m| m.groups).sum();
        // Even, so the VNNI path's pairs of groups never split across items.
        let size = pool::part_size(total, 4, 2);
        let mut columns: Vec<Vec<&mut [f32]>> = matrices
            .iter()
            .zip(ys.iter_mut())
            .map(|(m, y)| {
                y.resize(rows * m.out, 0.0);
                pool::column_parts(y, m.out, size * COLS)
            })
            .collect();
        let mut parts = Vec::new();
        for (i, columns) in columns.iter_mut().enumerate() {
            for (j, cols) in columns.chunks_mut(rows.max(1)).enumerate() {
                parts.push((i, j * size, cols));
            }
        }
        pool::for_each_part(parts, |_, (i, first, cols)| {
            let m = matrices[*i];
            LANES.with_borrow_mut(|[lanes, _]| {
                m.lanes_into(
                    path,
                    &acts,
                    *first..(*first + size).min(m.groups),
                    rows,
                    lanes,
                );
                scatter(lanes, rows, cols);
            });
        });
    }

    /// `a` and `b` against the same input (of the same width and output width), merged by
    /// `combine(a, b)` into `a`'s values (elementwise: it sees matching values of the two
    /// products in no particular grouping), into `y` (resized, not cleared): a feed-forward's
    /// gate and up projections with their gating, in one dispatch, without the up product's
    /// output or a serial pass over it. The same numbers as the two products followed by
    /// `combine` over them.
    pub fn matmul_combined_into(
        a: &Q8Matrix,
        b: &Q8Matrix,
        x: &[f32],
        y: &mut Vec<f32>,
        combine: impl Fn(&mut [f32], &[f32]) + Sync,
    ) {
        if a.is_four_bit() != b.is_four_bit() || a.out != b.out || a.groups != b.groups {
            let mut yb = Vec::new();
            Self::matmul_each_into(&[a, b], x, &mut [&mut *y, &mut yb]);
            combine(y, &yb);
            return;
        }
        let (rows, path, acts) = Self::prepare(&[a, b], x);
        // Items are column groups, each computed for both matrices.
        let size = pool::part_size(a.groups, 2, 2);
        y.resize(rows * a.out, 0.0);
        let mut columns = pool::column_parts(y, a.out, size * COLS);
        let parts: Vec<_> = columns.chunks_mut(rows.max(1)).collect();
        pool::for_each_part(parts, |j, cols| {
            let own = j * size..((j + 1) * size).min(a.groups);
            LANES.with_borrow_mut(|[la, lb]| {
                a.lanes_into(path, &acts, own.clone(), rows, la);
                b.lanes_into(path, &acts, own, rows, lb);
                combine(la.as_flattened_mut(), lb.as_flattened());
                scatter(la, rows, cols);
            });
        });
    }

    /// Rows, kernel path and quantised activations of `x` for `matrices` (one kind, one input
    /// width).
    fn prepare(matrices: &[&Q8Matrix], x: &[f32]) -> (usize, Path, Activations) {
        let (inp, four) = (matrices[0].inp, matrices[0].is_four_bit());
        debug_assert!(matrices.iter().all(|m| m.inp == inp));
        let rows = x.len() / inp;
        let path = if four {
            Path::detect()
        } else {
            let tiles = matrices.iter().all(|m| m.has_tiles());
            Path::detect().for_rows(rows, tiles)
        };
        (rows, path, Activations::new(x, rows, inp, path, four))
    }

    /// Whether the matrix keeps the AMX path's layout.
    fn has_tiles(&self) -> bool {
        matches!(&self.kind, Kind::Signed8 { pairs, .. } if !pairs.is_empty())
    }

    fn is_four_bit(&self) -> bool {
        matches!(self.kind, Kind::Unsigned4 { .. })
    }

    /// Rows `first..` of the activations against column group `g`.
    fn tile<'a>(&'a self, acts: &'a Activations, g: usize, first: usize) -> Tile<'a> {
        let per_group = self.blocks * self.kind.vectors();
        let blocks = g * self.blocks..(g + 1) * self.blocks;
        let (bias, min) = match &self.kind {
            Kind::Signed8 { bias, .. } => (&bias[blocks.clone()], None),
            Kind::Unsigned4 { min } => (&[][..], Some(&min[blocks.clone()])),
        };
        Tile {
            weights: &self.qs[g * per_group..(g + 1) * per_group],
            scales: &self.d[blocks],
            bias,
            min,
            acts,
            first,
        }
    }

    /// Every row against column group `g`, into `out` (`[rows]` of 8 lanes).
    fn group(&self, path: Path, acts: &Activations, g: usize, out: &mut [[f32; COLS]]) {
        let path = if self.is_four_bit() {
            path.four_bit()
        } else {
            path
        };
        let rows = path.row_tile();
        for (i, out) in out.chunks_mut(rows).enumerate() {
            kernel(path, &self.tile(acts, g, i * rows), out);
        }
    }

    /// Column groups `own` against every row into `lanes` (`[group][row]`; resized, and
    /// every value written).
    fn lanes_into(
        &self,
        path: Path,
        acts: &Activations,
        own: std::ops::Range<usize>,
        rows: usize,
        lanes: &mut Vec<[f32; COLS]>,
    ) {
        lanes.resize(own.len() * rows, [0.0; COLS]);
        self.groups(path, acts, own.start, lanes, rows);
    }

    /// Consecutive column groups from `first` into `lanes` (`[group][row]`, `rows` per
    /// group). The VNNI path takes them two at a time (`vnni::pair`: 16 columns per 512-bit
    /// instruction, so each activation broadcast serves twice the columns).
    fn groups(
        &self,
        path: Path,
        acts: &Activations,
        first: usize,
        lanes: &mut [[f32; COLS]],
        rows: usize,
    ) {
        #[cfg(target_arch = "x86_64")]
        if path == Path::Amx {
            return amx::groups(self, acts, first, lanes, rows);
        }
        let mut g = first;
        let mut rest = lanes;
        while !rest.is_empty() {
            #[cfg(target_arch = "x86_64")]
            if path == Path::Vnni && rows >= PAIR_FROM_ROWS && rest.len() >= 2 * rows {
                let (two, tail) = rest.split_at_mut(2 * rows);
                let (a, b) = two.split_at_mut(rows);
                let tile = path.row_tile();
                for (i, (a, b)) in a.chunks_mut(tile).zip(b.chunks_mut(tile)).enumerate() {
                    let (ta, tb) = (
                        self.tile(acts, g, i * tile),
                        self.tile(acts, g + 1, i * tile),
                    );
                    vnni::pair(&ta, &tb, a, b);
                }
                (g, rest) = (g + 2, tail);
                continue;
            }
            let (one, tail) = rest.split_at_mut(rows.min(rest.len()));
            self.group(path, acts, g, one);
            (g, rest) = (g + 1, tail);
        }
    }
}

thread_local! {
    /// Each pool thread's lanes for its work items (two: a combined product's pair), kept
    /// between items and products. Fresh ones per item (up to ~400 KB each for the output
    /// head at 16 rows) cost the allocator and page faults about 3% of a decode step.
    static LANES: std::cell::RefCell<[Vec<[f32; COLS]>; 2]> =
        const { std::cell::RefCell::new([Vec::new(), Vec::new()]) };
}

/// Lanes of consecutive column groups (`[group][row]`, `rows` per group) into each row's
/// columns of those groups (`cols[row]`, whose length drops a partial last group's padding).
fn scatter(lanes: &[[f32; COLS]], rows: usize, cols: &mut [&mut [f32]]) {
    for (r, row) in cols.iter_mut().enumerate() {
        // Whole groups as fixed-size copies (a register move each; one loop over both cases
        // compiles to a library call per group).
        let (whole, tail) = row.as_chunks_mut::<COLS>();
        for (g, dst) in whole.iter_mut().enumerate() {
            *dst = lanes[g * rows + r];
        }
        if !tail.is_empty() {
            tail.copy_from_slice(&lanes[whole.len() * rows + r][..tail.len()]);
        }
    }
}

/// Activation rows quantised per block: bytes as i32 words (4 inputs each) and scales, stored
/// row-minor (`[block][step][row]`) so that one step of a tile of rows is one contiguous run of
/// words the kernel reads at fixed offsets from one pointer; for the AMX path `[block][row]
/// [step]`, so that a block of a tile's rows is one contiguous run of rows of 32 bytes. Rows
/// are padded with zeros to a whole number of the widest tile, so a short last tile reads
/// padding, never past the end.
struct Activations {
    /// Rows stored (the real rows, padded).
    rows: usize,
    /// `FLIP` where the words hold bytes offset by 128 (the VNNI path, 8-bit weights), else 0.
    flip: i32,
    /// Whether `words` is `[block][row][step]` (the AMX path).
    row_major: bool,
    /// `[block][step][row]`, or `[block][row][step]` with `row_major`.
    words: Vec<i32>,
    /// `[block][row]`.
    d: Vec<f32>,
    /// `[block][row]`: the block's scale times the sum of its quantised values (exact in f32
    /// before the product), which 4-bit matrices multiply by their offsets m; empty otherwise.
    offsets: Vec<f32>,
}

impl Activations {
    /// Quantises `rows` rows of `inp` values (rounding half to even) for `path`: the VNNI
    /// path multiplies each byte plus 128 (unsigned) by 8-bit weights, the AMX path reads the
    /// row-major layout. For 4-bit weights (`four_bit`), which are the unsigned operand on
    /// every path, the bytes stay signed and each block's scale times its sum is kept too.
    /// Runs with explicit AVX2 where the CPU has it (the scalar path gives the same bytes);
    /// from `PARALLEL_ROWS` rows the blocks are spread over the pool (at 16 rows, done on the
    /// calling thread alone, it was a fifth of what that thread did alone while the other
    /// cores waited).
    fn new(x: &[f32], rows: usize, inp: usize, path: Path, four_bit: bool) -> Self {
        const PARALLEL_ROWS: usize = 8;
        let flip = if path == Path::Vnni && !four_bit {
            FLIP
        } else {
            0
        };
        let row_major = path == Path::Amx;
        let padding = path.row_tile().max(VNNI_ROWS);
        let blocks = inp / BLOCK;
        let padded = rows.div_ceil(padding) * padding;
        // The buffers of an earlier product on this thread, refilled (the padding rows' words
        // hold `flip`, their scales and offsets zero).
        let (mut words, mut d, mut offsets) = BUFFERS.take();
        refill(&mut words, blocks * (BLOCK / STEP) * padded, flip);
        refill(&mut d, blocks * padded, 0.0);
        refill(
            &mut offsets,
            if four_bit { blocks * padded } else { 0 },
            0.0,
        );
        // Parts are runs of whole blocks: each block's words, scales and offsets are contiguous
        // in either layout.
        let per_part = if rows >= PARALLEL_ROWS {
            pool::part_size(blocks, 1, 1)
        } else {
            blocks.max(1)
        };
        let span = (per_part * padded).max(1);
        let mut offset_parts: Vec<&mut [f32]> = offsets.chunks_mut(span).collect();
        offset_parts.resize_with(blocks.div_ceil(per_part), Default::default);
        let parts: Vec<_> = words
            .chunks_mut(span * (BLOCK / STEP))
            .zip(d.chunks_mut(span))
            .zip(offset_parts)
            .collect();
        let layout = Layout {
            flip,
            row_major,
            padded,
        };
        let fill =
            |part: usize, ((words, d), offsets): &mut ((&mut [i32], &mut [f32]), &mut [f32])| {
                let first = part * per_part;
                let part = Part {
                    x: &x[..rows * inp],
                    inp,
                    blocks: first..(first + per_part).min(blocks),
                    words,
                    d,
                    offsets,
                };
                #[cfg(target_arch = "x86_64")]
                if let Some(simd) = pulp::x86::V3::try_new() {
                    return simd
                        .vectorize(|| part.fill(layout, |b| quantise_words_avx2(simd, b, flip)));
                }
                part.fill(layout, |b| quantise_words(b, flip))
            };
        // A single part runs inline on this thread.
        pool::for_each_part(parts, fill);
        Activations {
            rows: padded,
            flip,
            row_major,
            words,
            d,
            offsets,
        }
    }

    /// Row `r`'s word `s` of block `b`.
    #[inline(always)]
    fn word(&self, r: usize, b: usize, s: usize) -> i32 {
        if self.row_major {
            self.words[(b * self.rows + r) * (BLOCK / STEP) + s]
        } else {
            self.words[(b * (BLOCK / STEP) + s) * self.rows + r]
        }
    }

    /// Row `r`'s scale of block `b`.
    #[inline(always)]
    fn scale(&self, r: usize, b: usize) -> f32 {
        self.d[b * self.rows + r]
    }
}

impl Drop for Activations {
    fn drop(&mut self) {
        let buffers = (
            std::mem::take(&mut self.words),
            std::mem::take(&mut self.d),
            std::mem::take(&mut self.offsets),
        );
        BUFFERS.set(buffers);
    }
}

thread_local! {
    /// Each thread's last activations' buffers (words, scales, offsets), which the next
    /// product's activations refill: fresh zeroed ones for every product cost ~1.5% of a
    /// single-stream decode step in the allocator.
    static BUFFERS: std::cell::Cell<(Vec<i32>, Vec<f32>, Vec<f32>)> =
        const { std::cell::Cell::new((Vec::new(), Vec::new(), Vec::new())) };
}

/// `v` emptied and filled with `len` copies of `value`, keeping its allocation.
fn refill<T: Clone>(v: &mut Vec<T>, len: usize, value: T) {
    v.clear();
    v.resize(len, value);
}

/// How [`Activations::new`] stores the rows.
#[derive(Clone, Copy)]
struct Layout {
    flip: i32,
    row_major: bool,
    /// Rows stored (the real rows, padded).
    padded: usize,
}

/// A run of whole blocks of the activations being quantised: the input rows, and the blocks'
/// words, scales and (where kept) offsets.
struct Part<'a> {
    x: &'a [f32],
    inp: usize,
    blocks: std::ops::Range<usize>,
    words: &'a mut [i32],
    d: &'a mut [f32],
    offsets: &'a mut [f32],
}

impl Part<'_> {
    #[inline(always)]
    fn fill(self, layout: Layout, block: impl Fn(&[f32; BLOCK]) -> (f32, [i32; BLOCK / STEP])) {
        let Layout {
            flip,
            row_major,
            padded,
        } = layout;
        for (r, row) in self.x.chunks_exact(self.inp).enumerate() {
            let values = &row.as_chunks::<BLOCK>().0[self.blocks.clone()];
            // `b` counts from the part's first block, as its slices do.
            for (b, values) in values.iter().enumerate() {
                let (scale, w) = block(values);
                self.d[b * padded + r] = scale;
                if !self.offsets.is_empty() {
                    let bytes = w.iter().flat_map(|w| (w ^ flip).to_le_bytes());
                    let sum = bytes.map(|q| q as i8 as i32).sum::<i32>() as f32;
                    self.offsets[b * padded + r] = scale * sum;
                }
                if row_major {
                    let at = (b * padded + r) * (BLOCK / STEP);
                    self.words[at..at + BLOCK / STEP].copy_from_slice(&w);
                } else {
                    for (s, w) in w.into_iter().enumerate() {
                        self.words[(b * (BLOCK / STEP) + s) * padded + r] = w;
                    }
                }
            }
        }
    }
}

/// One block's scale and bytes (four per word, XORed with `flip`), rounding half to even.
fn quantise_words(x: &[f32; BLOCK], flip: i32) -> (f32, [i32; BLOCK / STEP]) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let (d, id) = scales(amax);
    let mut words = [0i32; BLOCK / STEP];
    for (w, four) in words.iter_mut().zip(x.as_chunks::<STEP>().0) {
        let bytes = four.map(|v| (v * id).round_ties_even().clamp(-127.0, 127.0) as i8 as u8);
        *w = i32::from_le_bytes(bytes) ^ flip;
    }
    (d, words)
}

/// A block's scale and its inverse from its largest magnitude.
#[inline(always)]
fn scales(amax: f32) -> (f32, f32) {
    let d = amax / 127.0;
    (d, if d > 0.0 { 1.0 / d } else { 0.0 })
}

/// `quantise_words` with AVX2: the products convert to integers in the default rounding mode
/// (half to even), and saturating packs narrow them to bytes in input order.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn quantise_words_avx2(
    simd: pulp::x86::V3,
    x: &[f32; BLOCK],
    flip: i32,
) -> (f32, [i32; BLOCK / STEP]) {
    use std::arch::x86_64::{__m256, __m256i};
    let v: [__m256; 4] = cast(*x);
    let sign = simd.avx._mm256_set1_ps(-0.0);
    let abs = v.map(|v| simd.avx._mm256_andnot_ps(sign, v));
    let max = simd.avx._mm256_max_ps(
        simd.avx._mm256_max_ps(abs[0], abs[1]),
        simd.avx._mm256_max_ps(abs[2], abs[3]),
    );
    let lanes: [f32; 8] = cast(max);
    let (d, id) = scales(lanes.iter().fold(0f32, |m, v| m.max(*v)));
    let id = simd.avx._mm256_set1_ps(id);
    let q = v.map(|v| simd.avx._mm256_cvtps_epi32(simd.avx._mm256_mul_ps(v, id)));
    // Packing works within 128-bit halves: the four-byte groups come out as inputs
    // 0-3, 8-11, 16-19, 24-27, 4-7, 12-15, 20-23, 28-31, and the permutation restores order.
    let lo = simd.avx2._mm256_packs_epi32(q[0], q[1]);
    let hi = simd.avx2._mm256_packs_epi32(q[2], q[3]);
    let bytes = simd.avx2._mm256_packs_epi16(lo, hi);
    let order: __m256i = cast([0i32, 4, 1, 5, 2, 6, 3, 7]);
    let bytes = simd.avx2._mm256_permutevar8x32_epi32(bytes, order);
    let bytes = simd
        .avx2
        ._mm256_xor_si256(bytes, simd.avx._mm256_set1_epi32(flip));
    (d, cast(bytes))
}

/// Rows `first..first + out.len()` (at most the path's row tile) of the activations against
/// one column group's weights, scales and biases.
#[derive(Clone, Copy)]
struct Tile<'a> {
    weights: &'a [[i8; 32]],
    scales: &'a [[f32; COLS]],
    bias: &'a [[i32; COLS]],
    /// A 4-bit matrix's offsets m (`None` for 8-bit weights).
    min: Option<&'a [[f32; COLS]]>,
    acts: &'a Activations,
    first: usize,
}

fn kernel(path: Path, tile: &Tile, out: &mut [[f32; COLS]]) {
    if let Some(min) = tile.min {
        return kernel4(path, tile, min, out);
    }
    // The vector kernels read the step-major layout; the AMX path has its own (`amx::groups`).
    if tile.acts.row_major {
        return kernel_scalar(tile, out);
    }
    #[cfg(target_arch = "x86_64")]
    match path {
        Path::Vnni => return vnni::kernel(tile, out),
        Path::Avx2 => {
            if let Some(simd) = pulp::x86::V3::try_new() {
                // Padding rows cost as much as real ones: a tile computes only as many as it
                // keeps.
                return simd.vectorize(|| match out.len() {
                    1 => kernel_avx2::<1>(simd, tile, out),
                    2 => kernel_avx2::<2>(simd, tile, out),
                    _ => kernel_avx2::<ROW_TILE>(simd, tile, out),
                });
            }
        }
        Path::Scalar | Path::Amx => {}
    }
    kernel_scalar(tile, out)
}

fn kernel_scalar(tile: &Tile, out: &mut [[f32; COLS]]) {
    let Tile {
        weights,
        scales,
        acts,
        first,
        ..
    } = *tile;
    let steps = BLOCK / STEP;
    for (i, lanes) in out.iter_mut().enumerate() {
        let r = first + i;
        let mut acc = [0f32; COLS];
        for (b, dw) in scales.iter().enumerate() {
            let mut sums = [0i32; COLS];
            for s in 0..steps {
                let a = (acts.word(r, b, s) ^ acts.flip).to_le_bytes();
                let w = &weights[b * steps + s];
                for (c, sum) in sums.iter_mut().enumerate() {
                    for j in 0..STEP {
                        *sum += w[c * STEP + j] as i32 * a[j] as i8 as i32;
                    }
                }
            }
            let da = acts.scale(r, b);
            for c in 0..COLS {
                acc[c] = (sums[c] as f32).mul_add(dw[c] * da, acc[c]);
            }
        }
        *lanes = acc;
    }
}

/// The 8-bit AVX2 tile (`R` rows computed, `out.len()` kept): `maddubs` needs one unsigned
/// operand, so it multiplies the weights' magnitudes by the activations carrying the weights'
/// signs, and `madd` widens each step's pairs to 32 bits (two steps' pairs could pass 16 bits).
/// The rows are a fixed count, so each step's broadcasts read fixed offsets of one run of
/// words and the loop over rows unrolls.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn kernel_avx2<const R: usize>(simd: pulp::x86::V3, tile: &Tile, out: &mut [[f32; COLS]]) {
    use std::arch::x86_64::{__m256, __m256i};
    const STEPS: usize = BLOCK / STEP;
    let (acts, first) = (tile.acts, tile.first);
    // Rows are padded to whole tiles, so a tile can compute `R` rows and keep `out.len()`.
    debug_assert!(first + R <= acts.rows);
    let ones = simd.avx._mm256_set1_epi16(1);
    let mut acc: [__m256; R] = [simd.avx._mm256_setzero_ps(); R];
    let blocks = tile
        .weights
        .as_chunks::<STEPS>()
        .0
        .iter()
        .zip(tile.scales)
        .zip(acts.words.chunks_exact(STEPS * acts.rows))
        .zip(acts.d.chunks_exact(acts.rows));
    for (((w, dw), words), d) in blocks {
        let mut sums: [__m256i; R] = [simd.avx._mm256_setzero_si256(); R];
        for (w, step) in w.iter().zip(words.chunks_exact(acts.rows)) {
            let Some(a) = step[first..].first_chunk::<R>() else {
                return;
            };
            let w: __m256i = cast(*w);
            let aw = simd.avx2._mm256_sign_epi8(w, w);
            for (sum, a) in sums.iter_mut().zip(a) {
                let sa = simd
                    .avx2
                    ._mm256_sign_epi8(simd.avx._mm256_set1_epi32(*a), w);
                let pairs = simd.avx2._mm256_maddubs_epi16(aw, sa);
                *sum = simd
                    .avx2
                    ._mm256_add_epi32(*sum, simd.avx2._mm256_madd_epi16(pairs, ones));
            }
        }
        let Some(da) = d[first..].first_chunk::<R>() else {
            return;
        };
        let dw: __m256 = cast(*dw);
        for ((acc, sum), da) in acc.iter_mut().zip(sums).zip(da) {
            let scale = simd.avx._mm256_mul_ps(dw, simd.avx._mm256_set1_ps(*da));
            *acc = simd
                .fma
                ._mm256_fmadd_ps(simd.avx._mm256_cvtepi32_ps(sum), scale, *acc);
        }
    }
    for (lanes, a) in out.iter_mut().zip(acc) {
        *lanes = cast(a);
    }
}

/// A 4-bit tile: `maddubs` multiplies the weights' unsigned values by the activations' signed
/// bytes directly (no sign trick) and a block's eight steps add up in 16-bit lanes (at most 16
/// products of 15 x 127 each, so no lane saturates) before one `madd` widens them: half the
/// multiplies per input of the 8-bit AVX2 path. Per block the integer sum is scaled by d and
/// the block's activation sum by m, as in `kernel4_scalar`.
fn kernel4(path: Path, tile: &Tile, min: &[[f32; COLS]], out: &mut [[f32; COLS]]) {
    #[cfg(target_arch = "x86_64")]
    if path != Path::Scalar
        && !tile.acts.row_major
        && let Some(simd) = pulp::x86::V3::try_new()
    {
        // Padding rows cost as much as real ones: a tile computes only as many as it keeps.
        return simd.vectorize(|| match out.len() {
            1 => kernel4_avx2::<1>(simd, tile, min, out),
            2 => kernel4_avx2::<2>(simd, tile, min, out),
            _ => kernel4_avx2::<ROW_TILE>(simd, tile, min, out),
        });
    }
    // Only the vector path is chosen by it.
    #[cfg(not(target_arch = "x86_64"))]
    let _ = path;
    kernel4_scalar(tile, min, out)
}

fn kernel4_scalar(tile: &Tile, min: &[[f32; COLS]], out: &mut [[f32; COLS]]) {
    let Tile {
        weights,
        scales,
        acts,
        first,
        ..
    } = *tile;
    let pairs = BLOCK / STEP / 2;
    for (i, lanes) in out.iter_mut().enumerate() {
        let r = first + i;
        let mut acc = [0f32; COLS];
        for (b, (dw, m)) in scales.iter().zip(min).enumerate() {
            let mut sums = [0i32; COLS];
            for p in 0..pairs {
                let w = &weights[b * pairs + p];
                for (half, shift) in [(0, 0), (1, 4)] {
                    let a = acts.word(r, b, 2 * p + half).to_le_bytes();
                    for (c, sum) in sums.iter_mut().enumerate() {
                        for j in 0..STEP {
                            let q = (w[c * STEP + j] as u8 >> shift) & 0x0F;
                            *sum += q as i32 * a[j] as i8 as i32;
                        }
                    }
                }
            }
            let da = acts.scale(r, b);
            let offset = acts.offsets[b * acts.rows + r];
            for c in 0..COLS {
                acc[c] = (sums[c] as f32).mul_add(dw[c] * da, acc[c]);
                acc[c] = m[c].mul_add(offset, acc[c]);
            }
        }
        *lanes = acc;
    }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn kernel4_avx2<const R: usize>(
    simd: pulp::x86::V3,
    tile: &Tile,
    min: &[[f32; COLS]],
    out: &mut [[f32; COLS]],
) {
    use std::arch::x86_64::{__m256, __m256i};
    const STEPS: usize = BLOCK / STEP;
    let (acts, first) = (tile.acts, tile.first);
    // Rows are padded to whole tiles, so a tile can compute `R` rows and keep `out.len()`.
    debug_assert!(first + R <= acts.rows);
    let ones = simd.avx._mm256_set1_epi16(1);
    let low = simd.avx._mm256_set1_epi8(0x0F);
    let zero = simd.avx._mm256_setzero_si256();
    let mut acc: [__m256; R] = [simd.avx._mm256_setzero_ps(); R];
    let blocks = tile
        .weights
        .as_chunks::<{ STEPS / 2 }>()
        .0
        .iter()
        .zip(tile.scales.iter().zip(min))
        .zip(acts.words.chunks_exact(STEPS * acts.rows))
        .zip(
            acts.d
                .chunks_exact(acts.rows)
                .zip(acts.offsets.chunks_exact(acts.rows)),
        );
    for (((w, (dw, m)), words), (d, offsets)) in blocks {
        let mut wide: [__m256i; R] = [zero; R];
        for (w, two) in w.iter().zip(words.chunks_exact(2 * acts.rows)) {
            let v: __m256i = cast(*w);
            let lo = simd.avx2._mm256_and_si256(v, low);
            let hi = simd
                .avx2
                ._mm256_and_si256(simd.avx2._mm256_srli_epi16::<4>(v), low);
            let Some((even, odd)) = step_pair::<R>(two, acts.rows, first) else {
                return;
            };
            for ((sum, e), o) in wide.iter_mut().zip(even).zip(odd) {
                let pe = simd
                    .avx2
                    ._mm256_maddubs_epi16(lo, simd.avx._mm256_set1_epi32(*e));
                let po = simd
                    .avx2
                    ._mm256_maddubs_epi16(hi, simd.avx._mm256_set1_epi32(*o));
                *sum = simd
                    .avx2
                    ._mm256_add_epi16(*sum, simd.avx2._mm256_add_epi16(pe, po));
            }
        }
        let Some((da, oa)) = row_pair::<R, _>(d, offsets, first) else {
            return;
        };
        let (dw, m): (__m256, __m256) = (cast(*dw), cast(*m));
        for (i, acc) in acc.iter_mut().enumerate() {
            let sum = simd.avx2._mm256_madd_epi16(wide[i], ones);
            let scale = simd.avx._mm256_mul_ps(dw, simd.avx._mm256_set1_ps(da[i]));
            *acc = simd
                .fma
                ._mm256_fmadd_ps(simd.avx._mm256_cvtepi32_ps(sum), scale, *acc);
            let offset = simd.avx._mm256_set1_ps(oa[i]);
            *acc = simd.fma._mm256_fmadd_ps(m, offset, *acc);
        }
    }
    for (lanes, a) in out.iter_mut().zip(acc) {
        *lanes = cast(a);
    }
}

/// A 4-bit block's pair of steps for rows `first..first + R`: `two` holds the even step's
/// words of every stored row (`rows`), then the odd step's.
#[inline(always)]
fn step_pair<const R: usize>(
    two: &[i32],
    rows: usize,
    first: usize,
) -> Option<(&[i32; R], &[i32; R])> {
    let (even, odd) = two.split_at(rows);
    row_pair(even, odd, first)
}

/// Rows `first..first + R` of two per-row values of a 4-bit block: its even and odd steps'
/// words (`step_pair`), or its scales and offsets. `None` only if the rows run past the
/// padding, which the 4-bit kernels' callers rule out.
#[inline(always)]
fn row_pair<'a, const R: usize, T>(
    a: &'a [T],
    b: &'a [T],
    first: usize,
) -> Option<(&'a [T; R], &'a [T; R])> {
    Some((
        a.get(first..)?.first_chunk::<R>()?,
        b.get(first..)?.first_chunk::<R>()?,
    ))
}

/// Two 256-bit halves as one 512-bit register (`lo` in lanes 0-7): the VNNI pair kernel joins
/// two column groups' weights and scales this way, the AMX kernel two groups' scales.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn join(
    lo: std::arch::x86_64::__m256i,
    hi: std::arch::x86_64::__m256i,
) -> std::arch::x86_64::__m512i {
    use std::arch::x86_64::{_mm512_castsi256_si512, _mm512_inserti64x4};
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// The VNNI kernel. It calls `#[target_feature]` functions, which Rust only allows in
/// `unsafe` (`pulp`, which wraps AVX2 safely, has no VNNI wrappers). Measured on the default
/// model (2 cores, AVX-512 VNNI): see bench/README.md.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod vnni {
    use std::arch::x86_64::{__m256, __m256i, __m512, __m512i};
    use std::arch::x86_64::{
        _mm256_add_epi32, _mm256_cvtepi32_ps, _mm256_dpbusd_epi32, _mm256_fmadd_ps, _mm256_mul_ps,
        _mm256_set1_epi32, _mm256_set1_ps,
    };
    use std::arch::x86_64::{
        _mm512_add_epi32, _mm512_castps_si512, _mm512_castsi512_ps, _mm512_castsi512_si256,
        _mm512_cvtepi32_ps, _mm512_dpbusd_epi32, _mm512_extracti64x4_epi64, _mm512_fmadd_ps,
        _mm512_mul_ps, _mm512_set1_epi32, _mm512_set1_ps, _mm512_setzero_ps, _mm512_setzero_si512,
    };
    use std::arch::x86_64::{_mm512_and_si512, _mm512_set1_epi8, _mm512_srli_epi32};

    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};

    use bytemuck::cast;

    use super::{BLOCK, COLS, STEP, Tile, VNNI_ROWS};

    /// Only called by `super::kernel` on the path `Path::detect` chose.
    pub(super) fn kernel(tile: &Tile, out: &mut [[f32; COLS]]) {
        debug_assert!(std::arch::is_x86_feature_detected!("avx512vnni"));
        // SAFETY: `Path::Vnni` is chosen only after run-time detection of every feature
        // `kernel_vnni` enables (avx2, fma, avx512f via avx512vl, avx512vl, avx512vnni).
        unsafe { kernel_vnni(tile, out) }
    }

    /// Activation bytes are offset by 128 (unsigned, as `vpdpbusd` wants) and each block's
    /// sums start from the weights' bias (-128 times their sum), so the integer sums are the
    /// same exact numbers the other paths compute. Few rows would leave the unit waiting on one
    /// chain of dependent instructions, so they get several partial sums each (`C` chains,
    /// added at the end of the block; integer, so the order does not matter).
    #[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512vnni")]
    fn kernel_vnni(tile: &Tile, out: &mut [[f32; COLS]]) {
        match out.len() {
            1 => rows_chains::<1, 4>(tile, out),
            2 => rows_chains::<2, 4>(tile, out),
            3 | 4 => rows_chains::<4, 2>(tile, out),
            5..=8 => rows_chains::<8, 1>(tile, out),
            _ => rows_chains::<VNNI_ROWS, 1>(tile, out),
        }
    }

    /// `R` rows from `first` (`out.len()` of them kept; a short tile computes padding rows)
    /// with `C` chains of partial sums per row. A step's words of the tile's rows are
    /// contiguous, so each broadcast reads at a fixed offset from one pointer.
    #[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512vnni")]
    fn rows_chains<const R: usize, const C: usize>(tile: &Tile, out: &mut [[f32; COLS]]) {
        const STEPS: usize = BLOCK / STEP;
        let (acts, first) = (tile.acts, tile.first);
        // Rows are padded to whole tiles, so the slices below always have `R` words.
        debug_assert!(first + R <= acts.rows);
        let n = out.len().min(R);
        let zero: __m256i = cast([0i32; COLS]);
        let mut acc: [[f32; COLS]; R] = [[0.0; COLS]; R];
        let blocks = tile
            .weights
            .as_chunks::<STEPS>()
            .0
            .iter()
            .zip(tile.scales)
            .zip(tile.bias)
            .zip(acts.words.chunks_exact(STEPS * acts.rows))
            .zip(acts.d.chunks_exact(acts.rows));
        for ((((w, dw), bias), words), d) in blocks {
            let mut sums: [[__m256i; R]; C] = [[zero; R]; C];
            sums[0] = [cast(*bias); R];
            for (s, (w, step)) in w.iter().zip(words.chunks_exact(acts.rows)).enumerate() {
                let Some(a) = step[first..].first_chunk::<R>() else {
                    return;
                };
                let w: __m256i = cast(*w);
                for (sum, a) in sums[s % C].iter_mut().zip(a) {
                    *sum = _mm256_dpbusd_epi32(*sum, _mm256_set1_epi32(*a), w);
                }
            }
            let Some(da) = d[first..].first_chunk::<R>() else {
                return;
            };
            let dw: __m256 = cast(*dw);
            for (i, acc) in acc.iter_mut().enumerate() {
                let mut sum = sums[0][i];
                for chain in &sums[1..] {
                    sum = _mm256_add_epi32(sum, chain[i]);
                }
                let scale = _mm256_mul_ps(dw, _mm256_set1_ps(da[i]));
                let a: __m256 = cast(*acc);
                *acc = cast(_mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), scale, a));
            }
        }
        out[..n].copy_from_slice(&acc[..n]);
    }

    /// Two column groups' tiles (the same rows) at once in 512-bit registers: group `a`'s
    /// eight columns in the low half, `b`'s in the high half. The same integer sums and the
    /// same float steps per lane as `kernel` (8-bit weights) or `kernel4` (4-bit weights, the
    /// tiles with offsets m: `pair4_rows_chains`), so the same bits.
    pub(super) fn pair(a: &Tile, b: &Tile, out_a: &mut [[f32; COLS]], out_b: &mut [[f32; COLS]]) {
        debug_assert!(std::arch::is_x86_feature_detected!("avx512vnni"));
        debug_assert_eq!(a.min.is_some(), b.min.is_some());
        // SAFETY: as in `kernel`; the 512-bit forms need avx512f and avx512vnni, detected
        // with the rest before `Path::Vnni` is chosen.
        unsafe { pair_vnni(a, b, out_a, out_b) }
    }

    #[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512vnni")]
    fn pair_vnni(a: &Tile, b: &Tile, out_a: &mut [[f32; COLS]], out_b: &mut [[f32; COLS]]) {
        match out_a.len() {
            1 => pair_rows::<1, 4>(a, b, out_a, out_b),
            2 => pair_rows::<2, 2>(a, b, out_a, out_b),
            3 | 4 => pair_rows::<4, 1>(a, b, out_a, out_b),
            _ => pair_rows::<VNNI_ROWS, 1>(a, b, out_a, out_b),
        }
    }

    /// `R` rows with `C` chains of partial sums per row, by the weights' kind. The 4-bit kernel
    /// stays out of line: inlined here beside the 8-bit one, it measured ~5% slower.
    #[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512vnni")]
    #[inline]
    fn pair_rows<const R: usize, const C: usize>(
        a: &Tile,
        b: &Tile,
        out_a: &mut [[f32; COLS]],
        out_b: &mut [[f32; COLS]],
    ) {
        if a.min.is_some() {
            pair4_rows_chains::<R, C>(a, b, out_a, out_b)
        } else {
            pair_rows_chains::<R, C>(a, b, out_a, out_b)
        }
    }

    /// Prefetches the block of weights `AHEAD` blocks past `block` (one group's 32-byte
    /// vectors of a block: four cache lines of 8-bit weights, two of 4-bit). Past a group's
    /// last block that is the next group's first, which the next call reads.
    #[inline(always)]
    fn ahead<T>(block: &T) {
        const AHEAD: usize = 4;
        const LINE: usize = 64;
        let bytes = std::mem::size_of::<T>();
        let at = std::ptr::from_ref(block)
            .cast::<i8>()
            .wrapping_add(AHEAD * bytes);
        for line in 0..bytes.div_ceil(LINE) {
            // SAFETY: a prefetch is a hint: it never faults and changes no state the program
            // can observe, whatever the address (the pointer is never dereferenced).
            unsafe { _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(line * LINE)) };
        }
    }

    #[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512vnni")]
    fn pair_rows_chains<const R: usize, const C: usize>(
        ta: &Tile,
        tb: &Tile,
        out_a: &mut [[f32; COLS]],
        out_b: &mut [[f32; COLS]],
    ) {
        const STEPS: usize = BLOCK / STEP;
        let (acts, first) = (ta.acts, ta.first);
        debug_assert!(first + R <= acts.rows);
        let n = out_a.len().min(R);
        let zero = _mm512_setzero_si512();
        let mut acc: [__m512; R] = [_mm512_setzero_ps(); R];
        let blocks = block_pairs::<STEPS>(ta, tb)
            .zip(ta.bias.iter().zip(tb.bias))
            .zip(acts.words.chunks_exact(STEPS * acts.rows))
            .zip(acts.d.chunks_exact(acts.rows));
        for (((((wa, wb), (da_, db_)), (ba, bb)), words), d) in blocks {
            // The first tile of rows reads the weights from memory (later tiles find them in
            // cache): ask for both groups' lines a few blocks ahead.
            if first == 0 {
                ahead(wa);
                ahead(wb);
            }
            let mut sums: [[__m512i; R]; C] = [[zero; R]; C];
            sums[0] = [super::join(cast(*ba), cast(*bb)); R];
            for (s, ((wa, wb), step)) in wa
                .iter()
                .zip(wb)
                .zip(words.chunks_exact(acts.rows))
                .enumerate()
            {
                let Some(x) = step[first..].first_chunk::<R>() else {
                    return;
                };
                let w = super::join(cast(*wa), cast(*wb));
                for (sum, x) in sums[s % C].iter_mut().zip(x) {
                    *sum = _mm512_dpbusd_epi32(*sum, _mm512_set1_epi32(*x), w);
                }
            }
            let Some(dx) = d[first..].first_chunk::<R>() else {
                return;
            };
            let dw = _mm512_castsi512_ps(super::join(cast(*da_), cast(*db_)));
            for (i, acc) in acc.iter_mut().enumerate() {
                *acc = fuse(&sums, i, dw, dx[i], *acc);
            }
        }
        split(&acc, n, out_a, out_b);
    }

    /// Two tiles' weights (`N` vectors a block) and scales, block by block.
    #[inline(always)]
    #[allow(clippy::type_complexity)]
    fn block_pairs<'a, const N: usize>(
        ta: &'a Tile,
        tb: &'a Tile,
    ) -> impl Iterator<
        Item = (
            (&'a [[i8; 32]; N], &'a [[i8; 32]; N]),
            (&'a [f32; COLS], &'a [f32; COLS]),
        ),
    > {
        let weights = |t: &'a Tile| t.weights.as_chunks::<N>().0.iter();
        weights(ta)
            .zip(weights(tb))
            .zip(ta.scales.iter().zip(tb.scales))
    }

    /// Row `i`'s chains of integer sums added up and fused into `acc`, scaled by the columns'
    /// scales `dw` times the row's `dx`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn fuse<const R: usize, const C: usize>(
        sums: &[[__m512i; R]; C],
        i: usize,
        dw: __m512,
        dx: f32,
        acc: __m512,
    ) -> __m512 {
        let mut sum = sums[0][i];
        for chain in &sums[1..] {
            sum = _mm512_add_epi32(sum, chain[i]);
        }
        let scale = _mm512_mul_ps(dw, _mm512_set1_ps(dx));
        _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), scale, acc)
    }

    /// The first `n` rows' accumulators: the low halves into `out_a`, the high into `out_b`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn split<const R: usize>(
        acc: &[__m512; R],
        n: usize,
        out_a: &mut [[f32; COLS]],
        out_b: &mut [[f32; COLS]],
    ) {
        for (i, acc) in acc.iter().enumerate().take(n) {
            let bits = _mm512_castps_si512(*acc);
            out_a[i] = cast(_mm512_castsi512_si256(bits));
            out_b[i] = cast(_mm512_extracti64x4_epi64::<1>(bits));
        }
    }

    /// Two column groups of a 4-bit matrix (the same rows) at once: a 32-byte vector of each
    /// group holds two steps (low and high nibbles), which a mask and a shift split into two
    /// 512-bit vectors of unsigned values 0 to 15, the operand `vpdpbusd` wants unsigned; the
    /// activations stay signed. The same exact integer sums per block and row as `kernel4`,
    /// and the same float steps per lane (the scaled sum, then the offset m times the block's
    /// activation offset).
    #[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512vnni")]
    #[inline(never)]
    fn pair4_rows_chains<const R: usize, const C: usize>(
        ta: &Tile,
        tb: &Tile,
        out_a: &mut [[f32; COLS]],
        out_b: &mut [[f32; COLS]],
    ) {
        const PAIRS: usize = BLOCK / STEP / 2;
        let (acts, first) = (ta.acts, ta.first);
        debug_assert!(first + R <= acts.rows);
        let (Some(ma), Some(mb)) = (ta.min, tb.min) else {
            return;
        };
        let n = out_a.len().min(R);
        let zero = _mm512_setzero_si512();
        let low = _mm512_set1_epi8(0x0F);
        let mut acc: [__m512; R] = [_mm512_setzero_ps(); R];
        let blocks = block_pairs::<PAIRS>(ta, tb)
            .zip(ma.iter().zip(mb))
            .zip(acts.words.chunks_exact(2 * PAIRS * acts.rows))
            .zip(
                acts.d
                    .chunks_exact(acts.rows)
                    .zip(acts.offsets.chunks_exact(acts.rows)),
            );
        for (((((wa, wb), (da_, db_)), (ma, mb)), words), (d, offsets)) in blocks {
            if first == 0 {
                ahead(wa);
                ahead(wb);
            }
            let mut sums: [[__m512i; R]; C] = [[zero; R]; C];
            for (p, ((wa, wb), two)) in wa
                .iter()
                .zip(wb)
                .zip(words.chunks_exact(2 * acts.rows))
                .enumerate()
            {
                let v = super::join(cast(*wa), cast(*wb));
                let lo = _mm512_and_si512(v, low);
                // 32-bit shifts carry a byte's low bits into its neighbour's high nibble,
                // which the mask clears.
                let hi = _mm512_and_si512(_mm512_srli_epi32::<4>(v), low);
                let Some((even, odd)) = super::step_pair::<R>(two, acts.rows, first) else {
                    return;
                };
                for ((sum, e), o) in sums[p % C].iter_mut().zip(even).zip(odd) {
                    *sum = _mm512_dpbusd_epi32(*sum, lo, _mm512_set1_epi32(*e));
                    *sum = _mm512_dpbusd_epi32(*sum, hi, _mm512_set1_epi32(*o));
                }
            }
            let Some((dx, ox)) = super::row_pair::<R, _>(d, offsets, first) else {
                return;
            };
            let dw = _mm512_castsi512_ps(super::join(cast(*da_), cast(*db_)));
            let m = _mm512_castsi512_ps(super::join(cast(*ma), cast(*mb)));
            for (i, acc) in acc.iter_mut().enumerate() {
                *acc = fuse(&sums, i, dw, dx[i], *acc);
                *acc = _mm512_fmadd_ps(m, _mm512_set1_ps(ox[i]), *acc);
            }
        }
        split(&acc, n, out_a, out_b);
    }
}

/// The AMX kernel (Intel's tile unit, Sapphire Rapids and later): one `tdpbssd` multiplies a
/// tile of 16 activation rows by 32 bytes (one block) with a tile of 16 columns' 32 weights of
/// the block, signed by signed, into 16 x 16 exact i32 sums. Those are the integer sums every
/// other path computes, and each block's float step is the same multiply and fused
/// multiply-add per lane as the VNNI kernel's, so the bits are the same too, and a sequence's
/// tokens do not depend on which path its batch took. The weights' tile is a block of two
/// column groups side by side (`Kind::Signed8::pairs`, a second copy of the 8-bit weights
/// kept only on AMX CPUs); the activations take the row-major layout.
///
/// The per-block scales bound the gain: every block's sums leave the tile unit through memory
/// (`tilestored`) to be scaled, and that store, not the multiply, is most of the tile work.
/// Measured with `llm-bench --only kernel` (2 cores): 1.1-1.4x the VNNI kernel at 16 rows and
/// 1.2-1.5x at 64, level with it at 8 and below it at 4 (the tile always computes 16 rows),
/// hence `AMX_FROM_ROWS`.
///
/// Tiles are used through `asm!` (Rust has no stable AMX intrinsics), which needs `unsafe`,
/// as does calling the `#[target_feature]` function that scales the sums with AVX-512.
/// Linux hands the tile state to a process only on request (`arch_prctl`), once, in
/// `supported`.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod amx {
    use std::arch::asm;
    use std::arch::x86_64::{
        _mm512_castps_si512, _mm512_castsi512_ps, _mm512_castsi512_si256, _mm512_cvtepi32_ps,
        _mm512_extracti64x4_epi64, _mm512_fmadd_ps, _mm512_loadu_si512, _mm512_mul_ps,
        _mm512_set1_ps, _mm512_setzero_ps,
    };
    use std::sync::OnceLock;

    use bytemuck::cast;

    use super::{AMX_ROWS, Activations, BLOCK, COLS, Kind, Q8Matrix, STEP};

    const STEPS: usize = BLOCK / STEP;
    /// Blocks whose sums are stored before they are scaled (8 KiB).
    const WINDOW: usize = 8;

    /// The tile configuration (palette 1): tmm0 the activations (16 rows x 32 bytes), tmm1 a
    /// group pair's weights (8 rows of 4 inputs x 16 columns), tmm2 their sums (16 rows x 16
    /// i32).
    #[repr(C, align(64))]
    struct Config {
        palette: u8,
        start_row: u8,
        reserved: [u8; 14],
        bytes_per_row: [u16; 16],
        rows: [u8; 16],
    }

    const CONFIG: Config = {
        let mut bytes_per_row = [0u16; 16];
        let mut rows = [0u8; 16];
        (bytes_per_row[0], rows[0]) = ((COLS * STEP) as u16, AMX_ROWS as u8);
        (bytes_per_row[1], rows[1]) = ((2 * COLS * STEP) as u16, STEPS as u8);
        (bytes_per_row[2], rows[2]) = ((2 * COLS * 4) as u16, AMX_ROWS as u8);
        Config {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            bytes_per_row,
            rows,
        }
    };

    /// Whether the CPU has AMX with 8-bit products and the AVX-512 the scaling uses, and the
    /// kernel granted this process the tile state.
    pub(super) fn supported() -> bool {
        static SUPPORTED: OnceLock<bool> = OnceLock::new();
        *SUPPORTED.get_or_init(|| {
            let leaf = std::arch::x86_64::__cpuid_count(7, 0);
            let (tile, int8) = (leaf.edx & (1 << 24) != 0, leaf.edx & (1 << 25) != 0);
            tile && int8
                && std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && request_tiles()
        })
    }

    /// Asks Linux for the tile data state (`arch_prctl(ARCH_REQ_XCOMP_PERM,
    /// XFEATURE_XTILEDATA)`), which it grants to the whole process.
    #[cfg(target_os = "linux")]
    fn request_tiles() -> bool {
        const SYS_ARCH_PRCTL: usize = 158;
        const ARCH_REQ_XCOMP_PERM: usize = 0x1023;
        const XFEATURE_XTILEDATA: usize = 18;
        let ret: isize;
        // SAFETY: the system call reads and writes no memory of ours; `syscall` overwrites
        // rcx and r11, declared as clobbered, and returns in rax.
        unsafe {
            asm!(
                "syscall",
                inlateout("rax") SYS_ARCH_PRCTL as isize => ret,
                in("rdi") ARCH_REQ_XCOMP_PERM,
                in("rsi") XFEATURE_XTILEDATA,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        ret == 0
    }

    #[cfg(not(target_os = "linux"))]
    fn request_tiles() -> bool {
        false
    }

    /// One tile of sums, `[row][the pair's first group's 8 | second's 8]`, 64 bytes a row.
    #[repr(C, align(64))]
    struct Sums([[i32; 2 * COLS]; AMX_ROWS]);

    /// Column groups `first..` of an 8-bit matrix against every row into `lanes` (`[group]
    /// [row]`, `rows` real rows per group), a pair of groups per tile.
    pub(super) fn groups(
        m: &Q8Matrix,
        acts: &Activations,
        first: usize,
        lanes: &mut [[f32; COLS]],
        rows: usize,
    ) {
        assert!(supported());
        let Kind::Signed8 { pairs, .. } = &m.kind else {
            panic!("the AMX path takes 8-bit weights");
        };
        assert!(pairs.len() == m.groups.div_ceil(2) * m.blocks * STEPS);
        assert!(acts.row_major && acts.flip == 0 && acts.rows.is_multiple_of(AMX_ROWS));
        assert!(rows <= acts.rows && lanes.len().is_multiple_of(rows));
        assert!(first + lanes.len() / rows <= m.groups);
        // SAFETY: `supported` detected every feature `groups_amx` enables and was granted the
        // tile state; the asserts above are the bounds its tile loads and stores rely on.
        unsafe { groups_amx(m, pairs, acts, first, lanes, rows) }
    }

    #[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
    fn groups_amx(
        m: &Q8Matrix,
        pairs: &[[i8; 64]],
        acts: &Activations,
        first: usize,
        lanes: &mut [[f32; COLS]],
        rows: usize,
    ) {
        let (blocks, end) = (m.blocks, first + lanes.len() / rows);
        let join =
            |lo: [f32; COLS], hi: [f32; COLS]| _mm512_castsi512_ps(super::join(cast(lo), cast(hi)));
        // A window of blocks' sums first, then the float steps over them: a tile store read
        // back at once by vector loads would stall each block, and the window stays in L1.
        let mut window = [const { Sums([[0; 2 * COLS]; AMX_ROWS]) }; WINDOW];
        // SAFETY: loads the 64-byte configuration above, which names tiles within the unit's
        // limits (16 rows, 64 bytes a row).
        unsafe { asm!("ldtilecfg [{}]", in(reg) &CONFIG, options(nostack, readonly)) };
        let mut g = first;
        while g < end {
            // The pair holding group g; a half outside `first..end` is computed and dropped.
            let (lo, hi) = (g / 2 * 2, g / 2 * 2 + 1);
            for chunk in (0..rows).step_by(AMX_ROWS) {
                let mut acc = [_mm512_setzero_ps(); AMX_ROWS];
                for start in (0..blocks).step_by(WINDOW) {
                    let n = WINDOW.min(blocks - start);
                    for (b, sums) in (start..).zip(&mut window[..n]) {
                        let a = &acts.words[(b * acts.rows + chunk) * STEPS..][..AMX_ROWS * STEPS];
                        let w = &pairs[(g / 2 * blocks + b) * STEPS..][..STEPS];
                        // SAFETY: the tile loads read their slices exactly: 16 rows of 32 bytes
                        // of `a` (128 words), 8 rows of 64 bytes of `w`; the store writes 16 rows
                        // of 64 bytes, all of `sums`.
                        unsafe {
                            asm!(
                                // The weights stream from memory once per step; a tile load does
                                // not start the hardware prefetcher's stream the way vector loads
                                // do, so the block after next is asked for here (a prefetch past
                                // the end of the matrix reads nothing and cannot fault).
                                "prefetcht0 [{w} + 1024]",
                                "prefetcht0 [{w} + 1088]",
                                "prefetcht0 [{w} + 1152]",
                                "prefetcht0 [{w} + 1216]",
                                "prefetcht0 [{w} + 1280]",
                                "prefetcht0 [{w} + 1344]",
                                "prefetcht0 [{w} + 1408]",
                                "prefetcht0 [{w} + 1472]",
                                "tilezero tmm2",
                                "tileloadd tmm0, [{a} + {narrow}]",
                                "tileloadd tmm1, [{w} + {wide}]",
                                "tdpbssd tmm2, tmm0, tmm1",
                                "tilestored [{out} + {wide}], tmm2",
                                a = in(reg) a.as_ptr(),
                                w = in(reg) w.as_ptr(),
                                out = in(reg) sums.0.as_mut_ptr(),
                                narrow = in(reg) COLS * STEP,
                                wide = in(reg) 2 * COLS * STEP,
                                options(nostack),
                            );
                        }
                    }
                    for (b, sums) in (start..).zip(&window[..n]) {
                        let second = m.d.get(hi * blocks + b).copied().unwrap_or_default();
                        let dw = join(m.d[lo * blocks + b], second);
                        let da = &acts.d[b * acts.rows + chunk..][..AMX_ROWS];
                        // A whole array per block, so that the rows unroll and `acc` stays in
                        // registers.
                        acc = std::array::from_fn(|r| {
                            // SAFETY: reads row r's 16 i32 (64 bytes).
                            let sum = unsafe { _mm512_loadu_si512(sums.0[r].as_ptr().cast()) };
                            let scale = _mm512_mul_ps(dw, _mm512_set1_ps(da[r]));
                            _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), scale, acc[r])
                        });
                    }
                }
                let real = (rows - chunk).min(AMX_ROWS);
                for (r, acc) in acc.iter().enumerate().take(real) {
                    let bits = _mm512_castps_si512(*acc);
                    if lo >= first {
                        lanes[(lo - first) * rows + chunk + r] = cast(_mm512_castsi512_si256(bits));
                    }
                    if hi < end {
                        lanes[(hi - first) * rows + chunk + r] =
                            cast(_mm512_extracti64x4_epi64::<1>(bits));
                    }
                }
            }
            g = hi + 1;
        }
        // SAFETY: returns the tiles to their initial state (cheaper context switches).
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
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
    fn several_matrices_at_once_equal_each_alone() {
        let inp = 64;
        let ms: Vec<Q8Matrix> = [(24, 1), (8, 2), (40, 3)]
            .iter()
            .map(|&(out, seed)| Q8Matrix::quantise(&matrix(out, inp, seed), out, inp))
            .collect::<anyhow::Result<_>>()
            .expect("quantise");
        let x = matrix(5, inp, 9);
        let together = Q8Matrix::matmul_each(&ms.iter().collect::<Vec<_>>(), &x);
        for (m, y) in ms.iter().zip(together) {
            assert_eq!(y, m.matmul(&x));
        }
    }

    #[test]
    fn combined_products_and_reused_buffers_give_the_same_numbers() {
        let inp = 64;
        let combine = |a: &mut [f32], b: &[f32]| {
            a.iter_mut().zip(b).for_each(|(a, b)| *a = *a * 2.0 - b);
        };
        // Many column groups (several parts, a partial last group), and a few.
        for (out, rows) in [(803, 1), (803, 16), (20, 3)] {
            let a = Q8Matrix::quantise(&matrix(out, inp, 5), out, inp).expect("quantise");
            let b = Q8Matrix::quantise(&matrix(out, inp, 6), out, inp).expect("quantise");
            let x = matrix(rows, inp, 7);
            let (alone_a, alone_b) = (a.matmul(&x), b.matmul(&x));
            let mut expected = alone_a.clone();
            combine(&mut expected, &alone_b);
            // Buffers too short and too long, holding NaN: every value must be written.
            for len in [5, rows * out + 7] {
                let mut y = vec![f32::NAN; len];
                Q8Matrix::matmul_combined_into(&a, &b, &x, &mut y, combine);
                assert_eq!(y, expected, "{out} x {rows}");
                let (mut ya, mut yb) = (vec![f32::NAN; len], vec![f32::NAN; len]);
                Q8Matrix::matmul_each_into(&[&a, &b], &x, &mut [&mut ya, &mut yb]);
                assert_eq!((&ya, &yb), (&alone_a, &alone_b), "{out} x {rows}");
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
        let (out, inp) = (16, 64);
        let m = Q8Matrix::quantise(&matrix(out, inp, 5), out, inp).expect("quantise");
        // The paths this CPU has: the detected one and every one below it; the row counts
        // reach every row-tile shape of each.
        let paths = match Path::detect() {
            Path::Vnni => vec![Path::Vnni, Path::Avx2],
            Path::Avx2 => vec![Path::Avx2],
            Path::Scalar | Path::Amx => vec![],
        };
        let cases = paths
            .into_iter()
            .flat_map(|p| [1, 2, 3, 4, 7, 16, 21].map(|rows| (p, rows)));
        for (path, rows) in cases {
            let x = matrix(rows, inp, 6 + rows as u64);
            let acts = Activations::new(&x, rows, inp, path, false);
            for g in 0..m.groups {
                for first in (0..rows).step_by(path.row_tile()) {
                    let n = path.row_tile().min(rows - first);
                    let mut a = vec![[0f32; COLS]; n];
                    let mut b = vec![[0f32; COLS]; n];
                    let tile = m.tile(&acts, g, first);
                    kernel(path, &tile, &mut a);
                    kernel_scalar(&tile, &mut b);
                    assert_eq!(a, b, "{path:?}");
                }
            }
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_vnni_group_pair_equals_the_scalar_path() {
        if Path::detect() != Path::Vnni {
            return;
        }
        let (out, inp) = (16, 64);
        let m = Q8Matrix::quantise(&matrix(out, inp, 5), out, inp).expect("quantise");
        vnni_pair_equals_scalar(&m, inp, 60);
        // 4-bit weights, both layouts.
        for layout in [Q4Blocks::Q4_0, Q4Blocks::Q4_1] {
            let (m, _) = four_bit(out, 2 * inp, 17, layout);
            vnni_pair_equals_scalar(&m, 2 * inp, 70);
        }
    }

    /// `vnni::pair` against the scalar kernel of the weights' kind on the first two column
    /// groups of `m`, at row counts that reach every tile shape.
    #[cfg(target_arch = "x86_64")]
    fn vnni_pair_equals_scalar(m: &Q8Matrix, inp: usize, seed: u64) {
        let scalar = |tile: &Tile, out: &mut [[f32; COLS]]| match tile.min {
            Some(min) => kernel4_scalar(tile, min, out),
            None => kernel_scalar(tile, out),
        };
        for rows in [1, 2, 3, 4, 7, 8, 16, 21] {
            let x = matrix(rows, inp, seed + rows as u64);
            let acts = Activations::new(&x, rows, inp, Path::Vnni, m.is_four_bit());
            for first in (0..rows).step_by(VNNI_ROWS) {
                let n = VNNI_ROWS.min(rows - first);
                let (ta, tb) = (m.tile(&acts, 0, first), m.tile(&acts, 1, first));
                let (mut a, mut b) = (vec![[0f32; COLS]; n], vec![[0f32; COLS]; n]);
                vnni::pair(&ta, &tb, &mut a, &mut b);
                let (mut sa, mut sb) = (vec![[0f32; COLS]; n], vec![[0f32; COLS]; n]);
                scalar(&ta, &mut sa);
                scalar(&tb, &mut sb);
                assert_eq!((a, b), (sa, sb), "{rows} rows from {first}");
            }
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_amx_path_equals_the_scalar_path() {
        if !has_amx() {
            return;
        }
        // Five column groups (two pairs and one alone), rows in one tile, a tile and a row,
        // several tiles; the whole matrix and a range of groups from the middle.
        let (out, inp) = (40, 96);
        let m = Q8Matrix::quantise(&matrix(out, inp, 8), out, inp).expect("quantise");
        for rows in [4, 5, 16, 17, 40] {
            let x = matrix(rows, inp, 70 + rows as u64);
            let acts = Activations::new(&x, rows, inp, Path::Amx, false);
            let plain = Activations::new(&x, rows, inp, Path::Scalar, false);
            for (first, count) in [(0, m.groups), (1, 3)] {
                let mut lanes = vec![[0f32; COLS]; count * rows];
                amx::groups(&m, &acts, first, &mut lanes, rows);
                for g in 0..count {
                    let mut want = vec![[0f32; COLS]; rows];
                    for (r, lane) in want.iter_mut().enumerate() {
                        let tile = m.tile(&plain, first + g, r);
                        kernel_scalar(&tile, std::slice::from_mut(lane));
                    }
                    assert_eq!(
                        lanes[g * rows..(g + 1) * rows],
                        want,
                        "{rows} rows, group {g}"
                    );
                }
            }
        }
    }

    #[test]
    fn activations_quantise_the_same_with_and_without_avx() {
        let mut x = matrix(3, 96, 7);
        // Exact halves, which the two paths must round alike (to even).
        // Block 0's scale is 0.5: x / 0.5 of 63.5, -0.25 and 0.75 are 127, -0.5 and 1.5.
        x[0] = 63.5;
        x[1] = -0.25;
        x[2] = 0.75;
        x[64..96].iter_mut().for_each(|v| *v = 0.0);
        for flip in [0, FLIP] {
            let scalar: Vec<_> = x
                .as_chunks::<BLOCK>()
                .0
                .iter()
                .map(|b| quantise_words(b, flip))
                .collect();
            #[cfg(target_arch = "x86_64")]
            if let Some(simd) = pulp::x86::V3::try_new() {
                let avx: Vec<_> = x
                    .as_chunks::<BLOCK>()
                    .0
                    .iter()
                    .map(|b| simd.vectorize(|| quantise_words_avx2(simd, b, flip)))
                    .collect();
                assert_eq!(avx, scalar);
            }
            let (d, words) = scalar[0];
            assert_eq!(d, 0.5);
            let bytes = (words[0] ^ flip).to_le_bytes().map(|b| b as i8);
            assert_eq!(bytes[..3], [127, 0, 2]);
        }
    }

    /// A matrix in a GGUF 4-bit layout through candle's own quantiser, with candle's
    /// dequantised values of it.
    fn four_bit(out: usize, inp: usize, seed: u64, layout: Q4Blocks) -> (Q8Matrix, Vec<f32>) {
        use candle_core::quantized::{GgmlDType, QTensor};
        let w = candle_core::Tensor::from_vec(
            matrix(out, inp, seed),
            (out, inp),
            &candle_core::Device::Cpu,
        )
        .expect("tensor");
        let dtype = match layout {
            Q4Blocks::Q4_0 => GgmlDType::Q4_0,
            Q4Blocks::Q4_1 => GgmlDType::Q4_1,
        };
        let q = QTensor::quantize(&w, dtype).expect("quantize");
        let exact = q
            .dequantize(&candle_core::Device::Cpu)
            .and_then(|t| t.flatten_all()?.to_vec1::<f32>())
            .expect("dequantize");
        let m = Q8Matrix::from_q4(&q.data().expect("data"), layout, out, inp).expect("from_q4");
        (m, exact)
    }

    #[test]
    fn four_bit_blocks_multiply_as_the_weights_candle_reads() {
        let (out, inp, rows) = (20, 96, 3);
        for layout in [Q4Blocks::Q4_0, Q4Blocks::Q4_1] {
            let (m, w) = four_bit(out, inp, 11, layout);
            let x = matrix(rows, inp, 12);
            let y = m.matmul(&x);
            for r in 0..rows {
                for c in 0..out {
                    let exact: f32 = (0..inp).map(|i| w[c * inp + i] * x[r * inp + i]).sum();
                    // Only the activations are rounded (to 8 bits); the weights are the file's.
                    assert!(
                        (y[r * out + c] - exact).abs() < 0.02 * (1.0 + exact.abs()),
                        "{layout:?} {r},{c}: {} vs {exact}",
                        y[r * out + c]
                    );
                }
            }
        }
    }

    #[test]
    fn four_bit_vector_path_equals_scalar_path_and_rows_stand_alone() {
        let (out, inp) = (24, 128);
        let (m, _) = four_bit(out, inp, 13, Q4Blocks::Q4_1);
        for rows in [1, 2, 3, 4, 5, 9, 16] {
            let x = matrix(rows, inp, 20 + rows as u64);
            let acts = Activations::new(&x, rows, inp, Path::Avx2, true);
            for g in 0..m.groups {
                for first in (0..rows).step_by(ROW_TILE) {
                    let n = ROW_TILE.min(rows - first);
                    let tile = m.tile(&acts, g, first);
                    let min = tile.min.expect("a 4-bit tile");
                    let mut b = vec![[0f32; COLS]; n];
                    kernel4_scalar(&tile, min, &mut b);
                    #[cfg(target_arch = "x86_64")]
                    if let Some(simd) = pulp::x86::V3::try_new() {
                        let mut a = vec![[0f32; COLS]; n];
                        simd.vectorize(|| kernel4(Path::Avx2, &tile, min, &mut a));
                        assert_eq!(a, b, "{rows} rows, group {g} from {first}");
                    }
                }
            }
            let together = m.matmul(&x);
            for r in 0..rows {
                let alone = m.matmul(&x[r * inp..(r + 1) * inp]);
                assert_eq!(alone, together[r * out..(r + 1) * out], "row {r} of {rows}");
            }
        }
    }

    #[test]
    fn rejects_inputs_that_are_not_whole_blocks() {
        assert!(Q8Matrix::from_q4(&[0; 19], Q4Blocks::Q4_1, 1, 32).is_err());
        assert!(Q8Matrix::quantise(&[0.0; 30], 1, 30).is_err());
    }
}
