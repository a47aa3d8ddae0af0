//! Subnormals through every f32 step the Cortex-M55 vectorizes (the list `cargo xtask test`
//! checks in the M55 binaries): inputs and parameters chosen so that subnormal operands,
//! products and sums below 2^−126 (including ones IEEE rounding carries up to 2^−126) reach each
//! step, at the ends of the ranges the validator accepts.
//!
//! Each case runs the crate's entry points and returns an FNV-1a digest of their outputs, plus the
//! number of disagreements with the scalar reference where the step has one. [`CASES`] pins the
//! digests the host computes; the host unit test and the on-target test (every QEMU board)
//! compare against the same numbers, so host = device follows for these inputs.

use super::Rng;
use crate::kernels::attention::{self, AttentionS8};
use crate::kernels::elementwise::{self, AddS8, MeanPoolS8};
use crate::kernels::f16 as kf16;
use crate::kernels::layernorm::{self, LayerNormS8};
use crate::kernels::performer::{self, PerformerS8};
use crate::kernels::{FACTOR_MAX, FACTOR_MIN};
use crate::math::ftz;
use crate::quant::quantize_f32;
use half::f16;

/// A case's result: a digest of every output and the disagreements with a reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// FNV-1a (64-bit) of the outputs' bytes, in the order the case produced them.
    pub digest: u64,
    /// Outputs that differ from the step's scalar reference (0 when it has none).
    pub mismatches: u32,
}

/// One case: its name, what it runs, the host's pinned digest.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    /// Name, reported by the tests.
    pub name: &'static str,
    /// Runs the case.
    pub run: fn() -> Outcome,
    /// The digest the host computes.
    pub digest: u64,
}

/// Every case, with the digests of the host (x86-64, `cargo test -p vitae-edge`).
pub const CASES: [Case; 11] = [
    Case {
        name: "performer row updates (hand-written Helium, FPU flush-to-zero on M4/M7)",
        run: performer_updates,
        digest: 0x4c8d_8b18_3631_0713,
    },
    Case {
        name: "image quantization (hand-written Helium for RGB)",
        run: quantize_image,
        digest: 0x3a6d_85ff_1e60_30a3,
    },
    Case {
        name: "layernorm output",
        run: layernorm,
        digest: 0x75ca_13a7_c630_981a,
    },
    Case {
        name: "add",
        run: add,
        digest: 0x24d2_b4c2_58a6_5a69,
    },
    Case {
        name: "int16 residual stream (add, requantize, layernorm)",
        run: int16_stream,
        digest: 0x4421_17be_ec68_8c60,
    },
    Case {
        name: "mean pool",
        run: mean_pool,
        digest: 0xd94e_1920_dd3f_edbb,
    },
    Case {
        name: "performer (features, token, feature sums, updates, output)",
        run: performer,
        digest: 0x04aa_7d5a_c068_8471,
    },
    Case {
        name: "attention (rescale, output)",
        run: attention,
        digest: 0xd990_3f88_1be3_3209,
    },
    Case {
        name: "attention probabilities (hand-written Helium)",
        run: probabilities,
        digest: 0xadd3_9a53_c453_a41c,
    },
    Case {
        name: "fp16 attention rescale",
        run: attention_f16,
        digest: 0x2a5b_820d_786e_f13d,
    },
    Case {
        name: "fp16 performer",
        run: performer_f16,
        digest: 0x9dbb_8e71_5294_9125,
    },
];

/// FNV-1a, 64-bit.
#[derive(Clone, Copy, Debug)]
struct Digest(u64);

impl Digest {
    const START: Digest = Digest(0xcbf2_9ce4_8422_2325);

    fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn f32s(&mut self, v: &[f32]) {
        for x in v {
            self.bytes(&x.to_bits().to_le_bytes());
        }
    }

    fn i8s(&mut self, v: &[i8]) {
        self.bytes(bytemuck::cast_slice(v));
    }

    fn outcome(self, mismatches: u32) -> Outcome {
        Outcome {
            digest: self.0,
            mismatches,
        }
    }
}

const fn f(bits: u32) -> f32 {
    f32::from_bits(bits)
}

/// `(y, a, x)` for `y + a·x` at the corners of Arm's flush-to-zero: subnormal operands, a
/// product below 2^−126, one IEEE rounds up to 2^−126 (`(1 − 2^−23)·2^−126(1 + 2^−23)`), exactly
/// 2^−126, sums that cancel below 2^−126, signs, ∞, NaN.
pub const CORNERS: [(u32, u32, u32); 14] = [
    (0x0000_0000, 0x3f80_0000, 0x0001_16c2), // 0 + 1 × subnormal
    (0x0001_16c2, 0x3f80_0000, 0x0000_0000), // subnormal y
    (0x0000_0000, 0x0d80_0000, 0x3080_0000), // 2^-100 × 2^-30 = 2^-130
    (0x8000_0000, 0x8d80_0000, 0x3080_0000), // −0 + (−2^-130): the sign of the zeros
    (0x0000_0000, 0x3f7f_fffe, 0x0080_0001), // 2^-126(1 − 2^-46): IEEE 2^-126, Arm 0
    (0x0000_0000, 0x2000_0000, 0x2000_0000), // exactly 2^-126
    (0x00c0_0000, 0x3f80_0000, 0x8080_0000), // 1.5·2^-126 − 2^-126 = 2^-127
    (0x0080_0000, 0xbf80_0000, 0x0080_0000), // 2^-126 − 2^-126 = +0
    (0x3f80_0000, 0x0d80_0000, 0x3080_0000), // 1 + tiny
    (0x7f80_0000, 0x0001_16c2, 0x7f80_0000), // ∞ + subnormal × ∞ = ∞ + NaN
    (0x0000_0000, 0x7fc1_2345, 0x3f80_0000), // a NaN payload: the default NaN
    (0x4049_0fdb, 0x3fc0_0000, 0x4040_0000), // ordinary
    (0x0000_0000, 0x1f80_0000, 0x1f80_0000), // 2^-64 × 2^-64 = 2^-128
    (0x0080_0000, 0x3f00_0000, 0x0080_0001), // 2^-126 + 2^-127(1 + 2^-23)
];

/// A value for the f32 primitives: zeros, subnormals, 2^−126 and just above, tiny normals whose
/// products fall below 2^−126, the factor `1 − 2^−23`, ordinary values, ±∞, NaNs; either sign.
pub fn value(rng: &mut Rng) -> f32 {
    let r = rng.next_u32();
    let mant = rng.next_u32() & 0x007f_ffff;
    let bits = match r % 16 {
        0 => 0,
        1 | 2 => mant | 1,
        3 => 0x0080_0000,
        4 => 0x0080_0001 + (mant & 0xff),
        5 => 0x3f7f_fffe,
        6 | 7 => ((1 + (r >> 8) % 40) << 23) | mant,
        8 | 9 => ((50 + (r >> 8) % 40) << 23) | mant,
        10 => 0x7f80_0000,
        11 => 0x7fc0_0000 | (mant & 0xffff),
        _ => ((110 + (r >> 8) % 30) << 23) | mant,
    };
    f(bits | (r & 0x8000_0000))
}

/// `axpy_f32`, `rank1_update_rows` and `weighted_row_sum` (Helium assembly on the M55, the FPU in
/// flush-to-zero mode on the M4/M7) against [`ftz::axpy`] computed in software on the same core.
pub fn performer_updates() -> Outcome {
    use performer::{axpy_f32, rank1_update_rows, weighted_row_sum};
    let mut d = Digest::START;
    let mut bad = 0u32;
    let mut count = |got: &[f32], want: &[f32]| {
        bad += got
            .iter()
            .zip(want)
            .filter(|(g, w)| g.to_bits() != w.to_bits())
            .count() as u32;
    };
    for &(y, a, x) in &CORNERS {
        for len in [1usize, 4, 7] {
            let mut got = [f(y); 8];
            axpy_f32(&mut got[..len], f(a), &[f(x); 8][..len]);
            let mut want = [f(y); 8];
            ftz::axpy(&mut want[..len], f(a), &[f(x); 8][..len]);
            count(&got, &want);
            d.f32s(&got);
        }
    }
    const E: usize = 28;
    const M: usize = 6;
    let mut rng = Rng(0x5b17_0001);
    for e in [1usize, 3, 4, 7, 8, 13, 16, 24, 28] {
        for m in [1usize, 6] {
            let (mut mat, mut coef, mut x) = ([0f32; M * E], [0f32; M], [0f32; E]);
            for v in mat.iter_mut().chain(&mut coef).chain(&mut x) {
                *v = value(&mut rng);
            }
            let mut got = mat;
            rank1_update_rows(&mut got[..m * e], e, &coef[..m], &x[..e]);
            let mut want = mat;
            for (row, &c) in want[..m * e].chunks_exact_mut(e).zip(&coef) {
                ftz::axpy(row, c, &x[..e]);
            }
            count(&got, &want);
            d.f32s(&got);
            let mut got = [1f32; E];
            weighted_row_sum(&mut got[..e], e, &coef[..m], &mat[..m * e]);
            let mut want = [1f32; E];
            want[..e].fill(0.0);
            for (row, &c) in mat[..m * e].chunks_exact(e).zip(&coef) {
                ftz::axpy(&mut want[..e], c, row);
            }
            count(&got, &want);
            d.f32s(&got);
            let mut got = x;
            axpy_f32(&mut got[..e], coef[0], &mat[..e]);
            let mut want = x;
            ftz::axpy(&mut want[..e], coef[0], &mat[..e]);
            count(&got, &want);
            d.f32s(&got);
        }
    }
    d.outcome(bad)
}

/// Pixels: zeros, the smallest and largest subnormals, 5e−39 (which `inv_scale = 1e38` once
/// turned into 1 on the host and 0 on the M55), 2^−126, tiny and ordinary values, ties, ±∞, NaN.
const PIXELS: [f32; 20] = [
    0.0,
    -0.0,
    f(1),
    f(0x8000_0001),
    f(0x007f_ffff),
    f(0x807f_ffff),
    5e-39,
    -5e-39,
    f(0x0080_0000),
    f(0x0080_0001),
    f(0x1f80_0000),
    f(0x2000_0000),
    0.5,
    -0.5,
    1.5,
    127.5,
    -128.5,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::NAN,
];

/// `quantize_image_nchw` on three channels (Helium assembly) and two (the general loop), with
/// `inv_scale` at both ends of 2^−64..2^64: every value against `quantize_f32`.
pub fn quantize_image() -> Outcome {
    const P: usize = 9;
    let mut d = Digest::START;
    let mut bad = 0u32;
    let invs = [
        FACTOR_MIN,
        FACTOR_MAX,
        f(FACTOR_MAX.to_bits() - 1),
        1.0,
        0.37,
    ];
    for (k, &inv) in invs.iter().enumerate() {
        for zp in [-128, 0, 127] {
            for channels in [3usize, 2] {
                let n = channels * P;
                let mut image = [0f32; 3 * P];
                for (i, v) in image[..n].iter_mut().enumerate() {
                    *v = PIXELS[(i * 7 + k) % PIXELS.len()];
                }
                let mut out = [0i8; 3 * P];
                if elementwise::quantize_image_nchw(
                    &image[..n],
                    channels,
                    1,
                    P,
                    inv,
                    zp,
                    &mut out[..n],
                )
                .is_err()
                {
                    bad += 1;
                }
                for p in 0..P {
                    for ch in 0..channels {
                        let want = quantize_f32(image[ch * P + p], inv, zp);
                        bad += u32::from(out[p * channels + ch] != want);
                    }
                }
                d.i8s(&out[..n]);
            }
        }
    }
    d.outcome(bad)
}

/// Channels and tokens of the LayerNorm cases.
const C: usize = 16;
const T: usize = 3;

/// Runs `layernorm` (on the case's own tokens) with the eps term at 2^−64, 2^96 and 3, gains and
/// offsets at 0, ±2^−64, ±2^64 and ordinary values, into `d`; returns the failures.
fn layernorm_at_the_ends(
    d: &mut Digest,
    layernorm: impl Fn(&LayerNormS8, &mut [i8]) -> Result<(), crate::kernels::KernelError>,
) -> u32 {
    let picks = [
        0.0,
        FACTOR_MIN,
        -FACTOR_MIN,
        FACTOR_MAX,
        -FACTOR_MAX,
        1.0,
        -3e-10,
        127.5,
    ];
    let mut gain = [0f32; C];
    let mut offset = [0f32; C];
    for c in 0..C {
        gain[c] = picks[c % picks.len()];
        offset[c] = picks[(c * 3 + 1) % picks.len()];
    }
    let mut bad = 0;
    for eps in [layernorm::EPS_TERM_MIN, layernorm::EPS_TERM_MAX, 3.0] {
        let mut out = [0i8; T * C];
        match LayerNormS8::new(T, C, eps, &gain, &offset) {
            Ok(p) => bad += u32::from(layernorm(&p, &mut out).is_err()),
            Err(_) => bad += 1,
        }
        d.i8s(&out);
    }
    bad
}

/// `layernorm_s8` with the eps term at 2^−64 and 2^96, gains and offsets at 0, ±2^−64 and
/// ±2^64: a constant token (variance 0), a ±127 token and a random one.
pub fn layernorm() -> Outcome {
    let mut x = [5i8; T * C];
    for (i, v) in x[C..2 * C].iter_mut().enumerate() {
        *v = if i % 2 == 0 { 127 } else { -127 };
    }
    Rng(0x1a7e_0001).fill(&mut x[2 * C..]);
    let mut d = Digest::START;
    let bad = layernorm_at_the_ends(&mut d, |p, out| layernorm::layernorm_s8(p, &x, out));
    d.outcome(bad)
}

/// `add_s8` and `add_s8_in_place` (which must agree) over every int8 value, with factors at the
/// ends of the range, cancelling `a·ra + b·rb` and `c` at 0 and ±2^−64.
pub fn add() -> Outcome {
    let mut a = [0i8; 256];
    let mut b = [0i8; 256];
    for i in 0..256 {
        a[i] = i as u8 as i8;
        b[i] = (255 - i) as u8 as i8;
    }
    let just_above = f(FACTOR_MIN.to_bits() + 1);
    let factors = [
        (FACTOR_MIN, -just_above, 0.0),
        (FACTOR_MAX, -FACTOR_MAX, 0.0),
        (1.0, -1.0, FACTOR_MIN),
        (FACTOR_MIN, FACTOR_MIN, -FACTOR_MIN),
        (0.37, 0.5, 0.5),
    ];
    let mut d = Digest::START;
    let mut bad = 0u32;
    for (ra, rb, c) in factors {
        let p = AddS8 { ra, rb, c };
        let mut out = [0i8; 256];
        bad += u32::from(elementwise::add_s8(&p, &a, &b, &mut out).is_err());
        let mut in_place = a;
        bad += u32::from(elementwise::add_s8_in_place(&p, &mut in_place, &b).is_err());
        bad += out.iter().zip(&in_place).filter(|(x, y)| x != y).count() as u32;
        d.i8s(&out);
    }
    d.outcome(bad)
}

/// The int16 residual stream's steps: `add_s16` (every pair of operand types, in and out of
/// place, which must agree) with factors at the ends of the range and cancelling sums over int16
/// values from end to end; `requantize_s16` with the ratio at 2^−64 and 2^64; `layernorm_s16`
/// with the eps term at 2^−64 and 2^96 and [`layernorm`]'s gains and offsets, on a constant
/// token, a ±32767 token and a random one.
pub fn int16_stream() -> Outcome {
    use elementwise::AddOperand;
    let mut a = [0i16; 256];
    let mut b = [0i16; 256];
    let mut a8 = [0i8; 256];
    for i in 0..256 {
        a[i] = (i as i32 * 257 - 32768) as i16;
        b[i] = (32767 - i as i32 * 257) as i16;
        a8[i] = i as u8 as i8;
    }
    let just_above = f(FACTOR_MIN.to_bits() + 1);
    let factors = [
        (FACTOR_MIN, -just_above, 0.0),
        (FACTOR_MAX, -FACTOR_MAX, 0.0),
        (1.0, -1.0, FACTOR_MIN),
        (FACTOR_MIN, FACTOR_MIN, -FACTOR_MIN),
        (0.37, 0.5, 0.5),
    ];
    let mut d = Digest::START;
    let mut bad = 0u32;
    for (ra, rb, c) in factors {
        let p = AddS8 { ra, rb, c };
        for (x, y) in [
            (AddOperand::I16(&a), AddOperand::I16(&b)),
            (AddOperand::I16(&a), AddOperand::I8(&a8)),
            (AddOperand::I8(&a8), AddOperand::I16(&b)),
        ] {
            let mut out = [0i16; 256];
            bad += u32::from(elementwise::add_s16(&p, x, y, &mut out).is_err());
            if let AddOperand::I16(x) = x {
                let mut in_place = [0i16; 256];
                in_place.copy_from_slice(x);
                bad += u32::from(elementwise::add_s16_in_place(&p, &mut in_place, y).is_err());
                bad += out.iter().zip(&in_place).filter(|(u, v)| u != v).count() as u32;
            }
            d.bytes(bytemuck::cast_slice(&out));
        }
    }
    for (ratio, zp) in [
        (FACTOR_MIN, 0),
        (FACTOR_MAX, -128),
        (just_above, 127),
        (0.01, 3),
    ] {
        let mut out = [0i8; 256];
        bad += u32::from(elementwise::requantize_s16(&a, ratio, zp, &mut out).is_err());
        d.i8s(&out);
    }
    let mut x = [-300i16; T * C];
    for (i, v) in x[C..2 * C].iter_mut().enumerate() {
        *v = if i % 2 == 0 { 32767 } else { -32767 };
    }
    for (v, s) in x[2 * C..].iter_mut().zip(&b) {
        *v = s.wrapping_mul(7);
    }
    bad += layernorm_at_the_ends(&mut d, |p, out| layernorm::layernorm_s16(p, &x, out));
    d.outcome(bad)
}

/// `mean_pool_s8` with the scale and offset at the ends of the range.
pub fn mean_pool() -> Outcome {
    let mut x = [0i8; 5 * 8];
    Rng(0x3ea9_0001).fill(&mut x);
    let mut d = Digest::START;
    let mut bad = 0u32;
    for (scale, offset) in [
        (FACTOR_MIN, 0.0),
        (FACTOR_MAX, -FACTOR_MIN),
        (FACTOR_MIN, 3.5),
        (0.2, FACTOR_MIN),
    ] {
        let p = MeanPoolS8 {
            tokens: 5,
            channels: 8,
            scale,
            offset,
        };
        let mut out = [0i8; 8];
        bad += u32::from(elementwise::mean_pool_s8(&p, &x, &mut out).is_err());
        d.i8s(&out);
    }
    d.outcome(bad)
}

/// Tokens, embedding width and features of the [`performer`] case.
pub const PERFORMER_SHAPE: (usize, usize, usize) = (4, 8, 4);

/// The hand-made tokens of the [`performer`] case: `(k, q, v, w)`, for scales of 2^−4 (k, q, w).
/// Key features `exp(w·64/256 − 8)/2`: rows 0 and 1 about 2^−100, row 2 just below the feature
/// threshold (exponent −83.25 < −83.17), row 3 just above (−83.0); query token 0 makes features up to about 2^116.
pub fn performer_tokens() -> ([i8; 32], [i8; 32], [i8; 32], [i16; 32]) {
    const E: usize = PERFORMER_SHAPE.1;
    let mut w = [0i16; 32];
    let (mut k, mut q, mut v) = ([0i8; 32], [0i8; 32], [0i8; 32]);
    for (row, w0) in [-242i16, -241, -301, -300].into_iter().enumerate() {
        w[row * E] = w0;
        w[row * E + 1] = 37 * row as i16 - 50;
    }
    for t in 0..PERFORMER_SHAPE.0 {
        k[t * E] = 64;
    }
    v[0] = 1;
    v[3 * E] = -2;
    v[3 * E + 1] = 5;
    q[0] = -80;
    q[E] = 60;
    q[2 * E] = 5;
    q[2 * E + 1] = 3;
    (k, q, v, w)
}

/// `performer_s8`, first on hand-made tokens (scales 2^−4, values scaled by 2^−30, output scale
/// 2^64): key features of about 2^−100, whose products with the values fall below 2^−126, and
/// features on both sides of the −83.17 exponent threshold; query features near 2^107 that turn those
/// tiny sums into whole output steps. IEEE arithmetic without the threshold gives other bytes
/// here (`kernels::performer` tests). Then random tokens with scales at the ends of their ranges.
pub fn performer() -> Outcome {
    const N: usize = PERFORMER_SHAPE.0;
    const E: usize = PERFORMER_SHAPE.1;
    const M: usize = PERFORMER_SHAPE.2;
    let mut d = Digest::START;
    let mut bad = 0u32;
    let crafted = performer_tokens();
    // (k_scale, q_scale, w_scale, v_scale, out_inv_scale, random tokens): exponents of a few
    // units to a few tens for the random ones, then the extremes of the ranges.
    let p2 = |e: i32| f(((127 + e) as u32) << 23);
    let sets = [
        (p2(-4), p2(-4), p2(-4), p2(-30), FACTOR_MAX, 0u32),
        (p2(-4), p2(-4), p2(-4), FACTOR_MIN, FACTOR_MAX, 0),
        (p2(-6), p2(-6), p2(-14), FACTOR_MIN, FACTOR_MAX, 2),
        (p2(-5), p2(-7), p2(-13), 1e-12, p2(40), 3),
        (p2(-4), p2(-6), p2(-15), 0.01, 1.0, 4),
        (
            performer::SCALE_MAX,
            0.05,
            performer::SCALE_MIN,
            0.01,
            1.0,
            5,
        ),
        (
            performer::SCALE_MIN,
            performer::SCALE_MIN,
            performer::SCALE_MAX,
            FACTOR_MIN,
            7.0,
            6,
        ),
    ];
    for (ks, qs, ws, vs, out_inv, seed) in sets {
        let (mut k, mut q, mut v, mut w) = crafted;
        if seed != 0 {
            let mut rng = Rng(0x9e4f_0000 ^ seed);
            for x in &mut w {
                *x = rng.next_u32() as i16;
            }
            rng.fill(&mut k);
            rng.fill(&mut q);
            rng.fill(&mut v);
        }
        let mut out = [0i8; N * E];
        let mut scratch = [0u8; 256];
        let need = performer::performer_s8_scratch_size(E, M);
        match PerformerS8::new(N, E, M, &w, ws, ks, qs, vs, out_inv, 3) {
            Ok(p) if need <= scratch.len() => {
                let r = performer::performer_s8(&p, &k, &q, &v, &mut out, &mut scratch[..need]);
                bad += u32::from(r.is_err());
            }
            _ => bad += 1,
        }
        d.i8s(&out);
    }
    d.outcome(bad)
}

/// `attention_s8` (optimized) against `attention_s8_reference` on 130 tokens (three key tiles)
/// whose running maximum jumps by about 85 and then 20 logits between tiles while a channel's
/// values are 0: the accumulator decays below 2^−126 before it is used again. Logit and output
/// scales at the ends of the range too.
pub fn attention() -> Outcome {
    const N: usize = 130;
    const D: usize = 8;
    let mut q = [127i8; N * D];
    let mut k = [0i8; N * D];
    let mut v = [0i8; N * D];
    let mut rng = Rng(0xa77e_5b01);
    for j in 0..N {
        let kappa = match j {
            0..64 => -100,
            64..128 => -14,
            _ => 6,
        };
        k[j * D..][..D].fill(kappa);
        rng.fill(&mut v[j * D..][..D]);
        if j >= 64 {
            v[j * D] = 0;
        }
    }
    v[0] = 1;
    for x in v[D..64 * D].iter_mut().step_by(D) {
        *x = 0;
    }
    let mut d = Digest::START;
    let mut bad = 0u32;
    let scales = [
        (f(0x3a80_0000), FACTOR_MAX),
        (f(0x3a80_0000), 0.9),
        (FACTOR_MIN, 0.9),
        (FACTOR_MAX, FACTOR_MIN),
    ];
    for (round, (logit, out_scale)) in scales.into_iter().enumerate() {
        if round == 3 {
            rng.fill(&mut q);
        }
        let Ok(p) = AttentionS8::new(N, 1, D, logit, out_scale, -3) else {
            bad += 1;
            continue;
        };
        let mut scratch = [0u8; 8192];
        let need = attention::attention_s8_scratch_size(N, D);
        if need > scratch.len() {
            bad += 1;
            continue;
        }
        let mut want = [0i8; N * D];
        let mut got = [0i8; N * D];
        let s = &mut scratch[..need];
        bad += u32::from(attention::attention_s8_reference(&p, &q, &k, &v, &mut want, s).is_err());
        bad += u32::from(attention::attention_s8(&p, &q, &k, &v, &mut got, s).is_err());
        bad += got.iter().zip(&want).filter(|(a, b)| a != b).count() as u32;
        d.i8s(&got);
    }
    d.outcome(bad)
}

/// `tile_probabilities` at the ends of the scales it computes for (2^−88, 2^96) and of the
/// validator's (2^−64, 2^64), and outside (all 0 on every target): extreme scores, running
/// maxima of 0 and 2^−88 (computed), 2^−126 and subnormal (all 0).
pub fn probabilities() -> Outcome {
    let mut s = [0i32; 24];
    s[..8].copy_from_slice(&[0, 1, -1, 1 << 23, -(1 << 23), i32::MIN, -7, -123_456]);
    let mut rng = Rng(0x50f7_5b01);
    for v in &mut s[8..] {
        *v = (rng.next_u32() as i32) >> (rng.next_u32() % 28);
    }
    // The same scores made ≤ 0, for running maxima of 0 and tiny ones (the maximum must be at
    // least every `s[j]·scale`).
    let mut neg = s;
    for v in &mut neg {
        *v = -v.saturating_abs();
    }
    let mut d = Digest::START;
    for scale in [
        f(0x1380_0000),
        FACTOR_MIN,
        f(0x3000_0000),
        1e-4,
        FACTOR_MAX,
        f(0x6f80_0000),
        f(0x1380_0000 - 1),
        f(0x6f80_0001),
        1e-40,
    ] {
        let smax = s.iter().copied().max().unwrap_or(0) as f32 * scale;
        let runs = [
            (&s, smax),
            (&s, smax + 40.0),
            (&neg, 0.0),
            (&neg, f(0x1380_0000)),
            (&neg, f32::MIN_POSITIVE),
            (&neg, 1e-40),
        ];
        for (scores, m) in runs {
            let mut p = [0i16; 24];
            let sum = attention::tile_probabilities(scores, scale, m, &mut p);
            d.bytes(bytemuck::cast_slice(&p));
            d.bytes(&sum.to_le_bytes());
        }
    }
    d.outcome(0)
}

/// `attention_f16` on 130 tokens with the running maximum jumping by 86 then 20 between tiles
/// while channel 0 of the values is 0: the f32 accumulators' rescale meets products below 2^−126.
pub fn attention_f16() -> Outcome {
    const N: usize = 130;
    const D: usize = 8;
    let one = f16::from_f32(1.0);
    let q = [one; N * D];
    let mut k = [f16::ZERO; N * D];
    let mut v = [f16::ZERO; N * D];
    let mut rng = Rng(0xf16a_5b01);
    for j in 0..N {
        let kappa = match j {
            0..64 => -100.0f32,
            64..128 => -14.0,
            _ => 6.0,
        };
        k[j * D..][..D].fill(f16::from_f32(kappa / D as f32));
        for x in &mut v[j * D..][..D] {
            // f16 subnormals, ordinary values and large ones.
            *x = f16::from_bits(match rng.next_u32() % 4 {
                0 => (rng.next_u32() as u16) & 0x83ff,
                1 => 0x7bff,
                _ => (rng.next_u32() as u16) & 0xbfff,
            });
        }
        if j >= 64 {
            v[j * D] = f16::ZERO;
        }
    }
    v[0] = one;
    let mut d = Digest::START;
    let mut bad = 0u32;
    let mut out = [f16::ZERO; N * D];
    let mut scratch = [0u8; 1024];
    let need = kf16::attention_f16_scratch_size(D);
    if need > scratch.len()
        || kf16::attention_f16(N, 1, D, 1.0, &q, &k, &v, &mut out, &mut scratch[..need]).is_err()
    {
        bad += 1;
    }
    d.bytes(bytemuck::cast_slice(&out));
    d.outcome(bad)
}

/// `performer_f16` with f16 subnormals and large values: key features around the −83.17
/// exponent threshold and tiny feature × value products.
pub fn performer_f16() -> Outcome {
    const N: usize = 8;
    const E: usize = 8;
    const M: usize = 4;
    let mut rng = Rng(0xf169_5b01);
    let mut w = [0f32; M * E];
    for x in &mut w {
        *x = (rng.next_u32() as i32) as f32 / 2_147_483_648.0 * 4.0;
    }
    let mut tok = |big: bool| {
        let mut t = [f16::ZERO; N * E];
        for x in &mut t {
            *x = f16::from_bits(match rng.next_u32() % 4 {
                0 => (rng.next_u32() as u16) & 0x83ff,
                1 if big => 0x4900 | (rng.next_u32() as u16 & 0x80ff),
                _ => (rng.next_u32() as u16) & 0xbbff,
            });
        }
        t
    };
    let (k, q, v) = (tok(true), tok(false), tok(false));
    let mut out = [f16::ZERO; N * E];
    let mut scratch = [0u8; 512];
    let need = kf16::performer_f16_scratch_size(E, M);
    let mut bad = 0u32;
    if need > scratch.len()
        || kf16::performer_f16(N, E, M, &w, &k, &q, &v, &mut out, &mut scratch[..need]).is_err()
    {
        bad += 1;
    }
    let mut d = Digest::START;
    d.bytes(bytemuck::cast_slice(&out));
    d.outcome(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host's digests are the pinned ones, and every step agrees with its reference.
    #[test]
    fn host_digests_are_the_pinned_ones() {
        let mut wrong = 0;
        for c in CASES {
            let o = (c.run)();
            if o.digest != c.digest || o.mismatches != 0 {
                eprintln!(
                    "{}: digest {:#018x} (pinned {:#018x}), {} mismatches",
                    c.name, o.digest, c.digest, o.mismatches
                );
                wrong += 1;
            }
        }
        assert_eq!(wrong, 0);
    }
}
