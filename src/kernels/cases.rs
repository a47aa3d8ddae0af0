//! The kernel test cases: one generator of data, the ViTAE shapes and the random shape spaces of
//! each kernel, and the benchmark's cases a–f.
//!
//! The host property tests (this crate's unit tests), the on-target tests under QEMU
//! (`tests/qemu`) and the kernel benchmark (`firmware/bench`) all draw their shapes and data from
//! here, so a shape added here is checked on the host, on every board and measured alike. No
//! allocation: callers own the buffers, and the random generators take the sizes the caller can
//! hold. Built with the `test-cases` feature (and for this crate's tests).

pub mod subnormal;

use super::conv::{ConvGeometry, conv_out_len};
use crate::quant::{Lut256, MAX_SHIFT, MIN_SHIFT, Requant};

/// xorshift32: deterministic data, the same on the host and every board.
#[derive(Clone, Debug)]
pub struct Rng(pub u32);

impl Rng {
    /// The next value (a zero state is treated as 1, which xorshift would never leave).
    pub fn next_u32(&mut self) -> u32 {
        let mut s = self.0.max(1);
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        self.0 = s;
        s
    }

    /// Uniform-ish in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.next_u32() as usize % (hi - lo + 1)
    }

    /// True with probability about 1/`n`.
    pub fn one_in(&mut self, n: u32) -> bool {
        self.next_u32().is_multiple_of(n)
    }

    /// Random int8 values.
    pub fn fill(&mut self, buf: &mut [i8]) {
        for b in buf {
            *b = self.next_u32() as i8;
        }
    }

    /// A zero point, often at the int8 extremes.
    pub fn zero_point(&mut self) -> i32 {
        match self.next_u32() % 4 {
            0 => -128,
            1 => 127,
            _ => self.next_u32() as i8 as i32,
        }
    }

    /// Per-channel requantization around `2^centre` (see [`shift_for`]); some channels take the
    /// general path (`shift > −2`) and some have a zero multiplier, so every requantization
    /// branch of the optimized kernels runs.
    pub fn requant(&mut self, out: &mut [Requant], centre: i32) {
        for r in out {
            *r = match self.next_u32() % 32 {
                0 | 1 => Requant {
                    multiplier: 0,
                    shift: 0,
                },
                2 => Requant {
                    multiplier: (1 << 30) | (self.next_u32() >> 2) as i32,
                    shift: (self.next_u32() % 3) as i32 - 1,
                },
                _ => Requant {
                    multiplier: (1 << 30) | (self.next_u32() >> 2) as i32,
                    shift: (centre - 3 + (self.next_u32() % 7) as i32).clamp(MIN_SHIFT, MAX_SHIFT),
                },
            };
        }
    }

    /// Random int32 biases of every magnitude (±2^0 .. ±2^19).
    pub fn bias(&mut self, out: &mut [i32]) {
        for b in out {
            *b = (self.next_u32() as i32) >> (12 + self.next_u32() % 19);
        }
    }

    /// A random f32 of magnitude `2^-max_exp ..= 2^max_exp` (either sign, any mantissa): never
    /// subnormal, so sums and products of a few stay in the normal range when `max_exp` is small.
    pub fn normal_f32(&mut self, max_exp: u32) -> f32 {
        let bits = self.next_u32();
        let exp = 127 - max_exp + (bits >> 8) % (2 * max_exp + 1);
        f32::from_bits((bits & 0x8000_0000) | (exp << 23) | (self.next_u32() & 0x007f_ffff))
    }

    /// A random activation table.
    pub fn lut(&mut self) -> Lut256 {
        let mut t = [0i8; 256];
        self.fill(&mut t);
        Lut256(t)
    }

    /// The benchmark's channel parameters: biases of ±2^19 and requantization as a trained model
    /// has it (multipliers in [2^30, 2^31), shifts −9..=−7), so the fast path is what is timed.
    pub fn bench_channels(&mut self, bias: &mut [i32], requant: &mut [Requant]) {
        for (b, r) in bias.iter_mut().zip(requant) {
            *b = (self.next_u32() as i32) >> 12;
            *r = Requant {
                multiplier: (1 << 30) | (self.next_u32() >> 2) as i32,
                shift: -9 + (self.next_u32() % 3) as i32,
            };
        }
    }
}

/// Vectors of random data, for host tests.
#[cfg(test)]
impl Rng {
    pub(crate) fn i8s(&mut self, n: usize) -> Vec<i8> {
        let mut v = vec![0; n];
        self.fill(&mut v);
        v
    }

    pub(crate) fn requants(&mut self, n: usize, centre: i32) -> Vec<Requant> {
        let mut v = vec![Requant::default(); n];
        self.requant(&mut v, centre);
        v
    }

    pub(crate) fn biases(&mut self, n: usize) -> Vec<i32> {
        let mut v = vec![0; n];
        self.bias(&mut v);
        v
    }
}

/// A requantization shift that brings a sum of `k` int8 products into the int8 range, give or
/// take (the centre for [`Rng::requant`]).
pub fn shift_for(k: usize) -> i32 {
    9 - (usize::BITS - (k.max(1) * 128 * 128).leading_zeros()) as i32
}

/// Convolution shapes.
pub mod conv {
    use super::*;

    /// A geometry from its parts, or `None` when the kernel does not fit the padded input.
    #[allow(clippy::too_many_arguments)]
    pub fn geometry(
        (in_h, in_w, in_c): (usize, usize, usize),
        out_c: usize,
        (kh, kw): (usize, usize),
        (stride_h, stride_w): (usize, usize),
        (pad_h, pad_w): (usize, usize),
        (dil_h, dil_w): (usize, usize),
        groups: usize,
    ) -> Option<ConvGeometry> {
        Some(ConvGeometry {
            in_h,
            in_w,
            in_c,
            out_h: conv_out_len(in_h, kh, stride_h, pad_h, dil_h)?,
            out_w: conv_out_len(in_w, kw, stride_w, pad_w, dil_w)?,
            out_c,
            kh,
            kw,
            stride_h,
            stride_w,
            pad_h,
            pad_w,
            pad_bottom: pad_h,
            dil_h,
            dil_w,
            groups,
        })
    }

    /// A square geometry (same kernel, stride, padding and dilation on both axes).
    pub fn square(
        input: (usize, usize, usize),
        out_c: usize,
        k: usize,
        stride: usize,
        pad: usize,
        dil: usize,
        groups: usize,
    ) -> Option<ConvGeometry> {
        geometry(
            input,
            out_c,
            (k, k),
            (stride, stride),
            (pad, pad),
            (dil, dil),
            groups,
        )
    }

    /// The ViTAE convolutions at reduced sizes: PCM stride-2 3×3 on RGB, the PRM's stride-4 7×7
    /// dilated convs, grouped 3×3 (8 and 64 groups), 1×1, padding beyond the kernel's reach, odd
    /// and non-square shapes. `None` entries would be a mistake in this list (callers fail).
    pub fn vitae() -> [Option<ConvGeometry>; 11] {
        [
            square((16, 16, 3), 8, 3, 2, 1, 1, 1),
            square((17, 13, 3), 16, 7, 4, 5, 2, 1),
            square((20, 20, 3), 12, 7, 4, 9, 3, 1),
            square((8, 8, 32), 32, 3, 1, 1, 1, 8),
            square((9, 9, 32), 32, 3, 1, 1, 1, 8),
            square((6, 6, 64), 64, 3, 1, 1, 1, 64),
            square((8, 8, 64), 64, 3, 1, 1, 1, 64),
            square((6, 7, 24), 20, 1, 1, 0, 1, 1),
            square((5, 5, 8), 8, 3, 1, 6, 1, 1),
            geometry((7, 9, 5), 7, (3, 2), (2, 1), (1, 0), (1, 2), 1),
            square((8, 8, 16), 16, 3, 1, 1, 1, 1),
        ]
    }

    /// What a caller's buffers hold, in elements.
    #[derive(Clone, Copy, Debug)]
    pub struct Limits {
        /// Input elements.
        pub input: usize,
        /// Weights.
        pub weights: usize,
        /// Output elements of the widest output slice a case may ask for.
        pub output: usize,
    }

    /// A random case: any kernel size (mostly small), stride, padding, dilation and group count,
    /// an output slice `offset`/`extra` channels inside a wider tensor, and whether an activation
    /// table applies.
    #[derive(Clone, Copy, Debug)]
    pub struct Random {
        /// The shape.
        pub geom: ConvGeometry,
        /// Channels before this kernel's slice in each output pixel.
        pub offset: usize,
        /// Channels after it.
        pub extra: usize,
        /// With an activation table.
        pub act: bool,
    }

    /// Draws random cases until one fits `limits` (and the kernel fits its input).
    pub fn random(rng: &mut Rng, limits: Limits) -> Random {
        loop {
            let groups = if rng.one_in(4) { rng.range(2, 4) } else { 1 };
            let (cin_g, cout_g) = (rng.range(1, 9), rng.range(1, 7));
            let big = rng.one_in(4);
            let mut k = || {
                if big {
                    rng.range(4, 7)
                } else {
                    rng.range(1, 3)
                }
            };
            let (kh, kw) = (k(), k());
            let g = geometry(
                (rng.range(1, 11), rng.range(1, 11), cin_g * groups),
                cout_g * groups,
                (kh, kw),
                (rng.range(1, 4), rng.range(1, 4)),
                (rng.range(0, 6), rng.range(0, 6)),
                (rng.range(1, 3), rng.range(1, 3)),
                groups,
            );
            let Some(geom) = g else { continue };
            let (offset, extra) = (rng.range(0, 3), rng.range(0, 3));
            let out = geom.out_h * geom.out_w * (offset + geom.out_c + extra);
            if geom.in_h * geom.in_w * geom.in_c > limits.input
                || geom.weight_len() > limits.weights
                || out > limits.output
            {
                continue;
            }
            let act = rng.one_in(2);
            return Random {
                geom,
                offset,
                extra,
                act,
            };
        }
    }
}

/// Data for the fp16 kernels.
pub mod half_data {
    use super::Rng;
    use half::f16;

    /// A finite half: mostly in [−1, 1]; one in eight is ±0, a subnormal or large (4 to 256),
    /// so the conversions' rare paths and the padding's zeros meet the tiles too.
    pub fn half(rng: &mut Rng) -> f16 {
        let r = rng.next_u32();
        let sign = ((r >> 31) as u16) << 15;
        let bits = match r % 32 {
            0 | 1 => sign,
            2 | 3 => sign | (r >> 8) as u16 & 0x03ff,
            4 => sign | (0x4400 + (r >> 8) as u16 % 0x1800),
            _ => return f16::from_f32((r >> 1) as i32 as f32 / 1_073_741_824.0 - 1.0),
        };
        f16::from_bits(bits)
    }

    /// Fills `out` with [`half`]s.
    pub fn fill(rng: &mut Rng, out: &mut [f16]) {
        out.iter_mut().for_each(|x| *x = half(rng));
    }

    /// f32 biases in [−1, 1], with −0 and +0 among them (`−0 + x` is not always `x`'s bits).
    pub fn bias(rng: &mut Rng, out: &mut [f32]) {
        for b in out.iter_mut() {
            let r = rng.next_u32();
            *b = match r % 8 {
                0 => -0.0,
                1 => 0.0,
                _ => (r >> 1) as i32 as f32 / 2_147_483_648.0,
            };
        }
    }
}

/// Linear-layer shapes `(tokens, in_features, out_features)`.
pub mod linear {
    use super::*;

    /// qkv, proj, MLP and head shapes at reduced token counts; token counts not a multiple of 3
    /// or 4 (the optimized kernels' block sizes). Each fits the on-target tests' buffers (4096
    /// input and output values, 16,384 weights).
    pub const VITAE: [(usize, usize, usize); 7] = [
        (19, 64, 192),
        (50, 64, 64),
        (49, 64, 64),
        (13, 64, 256),
        (1, 256, 10),
        (7, 40, 120),
        (9, 128, 96),
    ];

    /// A random shape whose input, weights and output fit `(input, weights, output)` elements:
    /// short and long rows (`in_features` 1..70 or 60..300), 1..30 tokens, 1..40 outputs.
    pub fn random(
        rng: &mut Rng,
        (input, weights, output): (usize, usize, usize),
    ) -> (usize, usize, usize) {
        loop {
            let tokens = rng.range(1, 30);
            let k = if rng.one_in(3) {
                rng.range(60, 300)
            } else {
                rng.range(1, 70)
            };
            let n = rng.range(1, 40);
            if tokens * k <= input && k * n <= weights && tokens * n <= output {
                return (tokens, k, n);
            }
        }
    }
}

/// Attention shapes `(tokens, heads, head_dim, logit_scale)`.
pub mod attention {
    use super::*;

    /// ViTAE token counts (one token, one key tile, a partial tile, several), head dims 40, 64,
    /// 80 and odd; logit scales from flat to sharp softmaxes, out to both ends of the range the
    /// validator accepts (2^−64 and 2^64, `kernels::FACTOR_MIN`/`FACTOR_MAX`).
    pub const VITAE: [(usize, usize, usize, f32); 17] = [
        (1, 1, 64, 0.01),
        (65, 1, 40, 0.002),
        (70, 2, 24, 0.05),
        (130, 1, 40, 0.0005),
        (96, 1, 64, 0.004),
        (33, 3, 7, 0.3),
        (17, 1, 64, 1e-7),
        (40, 1, 16, 1e-15),
        (40, 1, 16, 3e15),
        (20, 1, 80, 0.003),
        (49, 2, 40, 1e-3),
        (65, 1, 64, 6.7e-4),
        (197, 1, 64, 5e-4),
        (50, 3, 33, 4e-4),
        (1, 1, 65, 2.9e-4),
        (70, 1, 16, f32::from_bits(0x1f80_0000)),
        (70, 1, 16, f32::from_bits(0x5f80_0000)),
    ];

    /// A random shape of at most `max_elements` per tensor (1..140 tokens, 1..3 heads,
    /// head_dim 1..48) and a scale from a realistic set.
    pub fn random(rng: &mut Rng, max_elements: usize) -> (usize, usize, usize, f32) {
        loop {
            let tokens = rng.range(1, 140);
            let heads = rng.range(1, 3);
            let head_dim = rng.range(1, 48);
            let scale = [1e-4f32, 2e-3, 0.02, 0.3][rng.range(0, 3)];
            if tokens * heads * head_dim <= max_elements {
                return (tokens, heads, head_dim, scale);
            }
        }
    }
}

/// `quant::requantize` at its extremes: accumulators and multipliers at every rounding and
/// saturation edge, for every valid shift, and the exact value each stands for.
pub mod requant {
    use super::*;

    /// Both ends of i32, both sides of ±2^30 (where a 32-bit final step wraps), around 0 and
    /// ±2^16.
    pub const ACCUMULATORS: [i32; 17] = [
        i32::MIN,
        i32::MIN + 1,
        -(1 << 30) - 1,
        -(1 << 30),
        -65536,
        -3,
        -2,
        -1,
        0,
        1,
        2,
        3,
        65535,
        1 << 30,
        (1 << 30) + 1,
        i32::MAX - 1,
        i32::MAX,
    ];

    /// Zero, one half (2^30) and just above it, an alternating bit pattern, the largest two.
    pub const MULTIPLIERS: [i32; 6] = [
        0,
        1 << 30,
        (1 << 30) + 1,
        0x5555_5555,
        i32::MAX - 1,
        i32::MAX,
    ];

    /// Every accumulator of [`ACCUMULATORS`] with every multiplier of [`MULTIPLIERS`] at every
    /// valid shift.
    pub fn extremes() -> impl Iterator<Item = (i32, Requant)> {
        (MIN_SHIFT..=MAX_SHIFT).flat_map(|shift| {
            MULTIPLIERS.into_iter().flat_map(move |multiplier| {
                ACCUMULATORS
                    .into_iter()
                    .map(move |acc| (acc, Requant { multiplier, shift }))
            })
        })
    }

    /// The exact value `requantize(acc, r)` stands for, in 128 bits: `floor(acc·M / 2^(31−shift)
    /// + 1/2)` (round half up) saturated to i32.
    pub fn oracle(acc: i32, r: Requant) -> i32 {
        let product = i128::from(acc) * i128::from(r.multiplier);
        let total = 31 - r.shift;
        let half = 1i128 << (total - 1);
        let rounded = (product + half) >> total; // floor division by 2^total
        rounded.clamp(i128::from(i32::MIN), i128::from(i32::MAX)) as i32
    }
}

/// The performer's helper kernels (`kernels::performer`: Helium assembly on the M55, scalar
/// elsewhere): the lengths and widths their optimized paths are compared on.
pub mod performer {
    /// `axpy_f32` runs on every length from 0 up to this (Helium: whole vectors and tails).
    pub const AXPY_MAX_LEN: usize = 40;

    /// Every width from 1 to `max_width`, each with every row count of `rows`.
    #[derive(Clone, Copy, Debug)]
    pub struct Sweep {
        /// Widest row.
        pub max_width: usize,
        /// Row counts.
        pub rows: [usize; 3],
    }

    impl Sweep {
        /// The largest row count (what a caller's buffers must hold).
        pub const fn max_rows(&self) -> usize {
            let (mut most, mut i) = (0, 0);
            while i < self.rows.len() {
                if self.rows[i] > most {
                    most = self.rows[i];
                }
                i += 1;
            }
            most
        }
    }

    /// `rank1_update_rows` and `weighted_row_sum`: column chunks of one to four vectors and the
    /// widths that are not a multiple of 4.
    pub const ROW_UPDATES: Sweep = Sweep {
        max_width: 40,
        rows: [1, 5, 12],
    };

    /// `feature_dots`: the register path (widths that are multiples of 8 up to 48) and the
    /// general one.
    pub const FEATURE_DOTS: Sweep = Sweep {
        max_width: 64,
        rows: [1, 7, 16],
    };
}

/// The kernel benchmark's cases (`cargo xtask bench kernels`), the shapes CMSIS-NN was measured on.
pub mod bench {
    use super::*;

    /// What one case runs.
    #[derive(Clone, Copy, Debug)]
    pub enum Kernel {
        /// A convolution.
        Conv(ConvGeometry),
        /// The same with int4 weights ([`crate::kernels::conv_s4`]).
        ConvS4(ConvGeometry),
        /// A linear layer `(tokens, in_features, out_features)`.
        Linear(usize, usize, usize),
        /// The same with int4 weights ([`crate::kernels::linear_s4`]).
        LinearS4(usize, usize, usize),
        /// Attention `(tokens, heads, head_dim)` with logit scale 1.1e-4 (activation scales around
        /// 0.03: logits of a few units, a realistic softmax).
        Attention(usize, usize, usize),
    }

    /// One case.
    #[derive(Clone, Copy, Debug)]
    pub struct Case {
        /// Its letter.
        pub name: &'static str,
        /// The shape, for people.
        pub shape: &'static str,
        /// What it runs.
        pub kernel: Kernel,
    }

    impl Case {
        /// The case's data generator (seeded by its letter).
        pub fn rng(&self) -> Rng {
            Rng(0x2545_f491 ^ self.name.as_bytes()[0] as u32)
        }
    }

    /// Input and output zero points of every case.
    pub const ZERO_POINTS: (i32, i32) = (7, -5);

    /// Attention's logit scale.
    pub const LOGIT_SCALE: f32 = 1.1e-4;

    const fn conv(
        (in_h, in_w, in_c): (usize, usize, usize),
        out_c: usize,
        k: usize,
        stride: usize,
        pad: usize,
        dil: usize,
        groups: usize,
    ) -> ConvGeometry {
        let (out_h, out_w) = (
            (in_h + 2 * pad - dil * (k - 1) - 1) / stride + 1,
            (in_w + 2 * pad - dil * (k - 1) - 1) / stride + 1,
        );
        ConvGeometry {
            in_h,
            in_w,
            in_c,
            out_h,
            out_w,
            out_c,
            kh: k,
            kw: k,
            stride_h: stride,
            stride_w: stride,
            pad_h: pad,
            pad_bottom: pad,
            pad_w: pad,
            dil_h: dil,
            dil_w: dil,
            groups,
        }
    }

    /// Cases a–f, and a4, d4 and e4: cases a, d and e with int4 weights.
    pub const CASES: [Case; 9] = [
        Case {
            name: "a",
            shape: "conv 3x3 s1 p1 32x32x64->32x32x64",
            kernel: Kernel::Conv(conv((32, 32, 64), 64, 3, 1, 1, 1, 1)),
        },
        Case {
            name: "a4",
            shape: "conv 3x3 s1 p1 32x32x64->32x32x64, int4 weights",
            kernel: Kernel::ConvS4(conv((32, 32, 64), 64, 3, 1, 1, 1, 1)),
        },
        Case {
            name: "b",
            shape: "conv 3x3 s2 p1 64x64x3->32x32x32",
            kernel: Kernel::Conv(conv((64, 64, 3), 32, 3, 2, 1, 1, 1)),
        },
        Case {
            name: "c",
            shape: "conv 7x7 s4 d2 p5 64x64x3->16x16x32",
            kernel: Kernel::Conv(conv((64, 64, 3), 32, 7, 4, 5, 2, 1)),
        },
        Case {
            name: "d",
            shape: "grouped conv 3x3 s1 p1 16x16x128->128, 8 groups",
            kernel: Kernel::Conv(conv((16, 16, 128), 128, 3, 1, 1, 1, 8)),
        },
        Case {
            name: "d4",
            shape: "grouped conv 3x3 s1 p1 16x16x128->128, 8 groups, int4 weights",
            kernel: Kernel::ConvS4(conv((16, 16, 128), 128, 3, 1, 1, 1, 8)),
        },
        Case {
            name: "e",
            shape: "linear 256 tokens x 128 -> 384",
            kernel: Kernel::Linear(256, 128, 384),
        },
        Case {
            name: "e4",
            shape: "linear 256 tokens x 128 -> 384, int4 weights",
            kernel: Kernel::LinearS4(256, 128, 384),
        },
        Case {
            name: "f",
            shape: "attention 256 tokens, 1 head, dim 64",
            kernel: Kernel::Attention(256, 1, 64),
        },
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listed_shapes_are_valid() {
        for g in conv::vitae() {
            assert!(g.is_some_and(|g| g.validate().is_ok()), "{g:?}");
        }
        for c in bench::CASES {
            if let bench::Kernel::Conv(g) | bench::Kernel::ConvS4(g) = c.kernel {
                assert!(g.validate().is_ok(), "{}", c.name);
            }
        }
    }

    #[test]
    fn normal_floats_stay_within_their_exponents() {
        let mut rng = Rng(17);
        let (mut smallest, mut largest) = (f32::INFINITY, 0.0f32);
        for _ in 0..20_000 {
            let v = rng.normal_f32(30).abs();
            smallest = smallest.min(v);
            largest = largest.max(v);
        }
        assert!(smallest >= 2f32.powi(-30) && largest < 2f32.powi(31));
        // Both ends of the range are reached, not just the middle.
        assert!(smallest < 2f32.powi(-28) && largest >= 2f32.powi(28));
    }

    #[test]
    fn performer_sweeps_know_their_largest_row_count() {
        assert_eq!(performer::ROW_UPDATES.max_rows(), 12);
        assert_eq!(performer::FEATURE_DOTS.max_rows(), 16);
        let unsorted = performer::Sweep {
            max_width: 1,
            rows: [9, 30, 2],
        };
        assert_eq!(unsorted.max_rows(), 30);
    }

    #[test]
    fn random_shapes_respect_the_limits() {
        let mut rng = Rng(9);
        let limits = conv::Limits {
            input: 300,
            weights: 500,
            output: 400,
        };
        for _ in 0..500 {
            let r = conv::random(&mut rng, limits);
            assert!(r.geom.validate().is_ok());
            assert!(r.geom.weight_len() <= 500);
        }
    }
}
