//! The fp16 convolution and linear layer (`kernels::f16`) with AVX2 and F16C, bit-identical to
//! their scalar definitions.
//!
//! ## Why the bits are the same
//!
//! The scalar kernels compute each output on its own: `acc = bias`, then `acc = acc + x · w` for
//! every valid tap and input channel in memory order (a rounded product, then a rounded sum,
//! never fused), then the activation, then one rounding to binary16. Here each of the eight lanes
//! of a register is one output channel doing exactly that sequence with VMULPS and VADDPS (the
//! same IEEE operations, operands in the same order), so SIMD only changes which outputs run
//! side by side, never an output's arithmetic. Up to four output pixels (or tokens) with the same
//! valid taps run together, for four independent dependency chains.
//!
//! Conversions: binary16 → f32 is exact (VCVTPH2PS; a NaN keeps its payload and becomes quiet,
//! as `half`'s conversion does), and f32 → binary16 is VCVTPS2PH with round-to-nearest-even from
//! the immediate, the very instruction `half::f16::from_f32` uses on a host with F16C (its
//! portable fallback rounds the same way). The GELU and SiLU stay the scalar `math` functions,
//! lane by lane.
//!
//! The weights are repacked once per call into f32 panels of eight output channels
//! (`[tap·cin + ci][lane]`, 8×8 blocks converted with F16C and transposed in registers); a
//! group's last panel repeats its last channel in the lanes past the group, which are computed
//! and thrown away.

use super::{has_avx2, load8, store8};
use crate::kernels::conv::{ConvGeometry, OutputSlice};
use crate::kernels::f16::Activation;
use core::arch::x86_64::*;
use core::cell::RefCell;
use half::f16;

/// True when the CPU has AVX2 and F16C (both cached by std after the first call).
pub(crate) fn available() -> bool {
    has_avx2() && std::arch::is_x86_feature_detected!("f16c")
}

std::thread_local! {
    /// Packed weights, biases and the input in f32, reused between calls of one thread.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `kernels::f16::conv_f16` on an already validated geometry and buffers (the caller checks
/// them). Returns false, having done nothing, when the CPU lacks AVX2 or F16C.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv(
    g: &ConvGeometry,
    weights: &[f16],
    bias: &[f32],
    act: Activation,
    out_slice: OutputSlice,
    input: &[f16],
    output: &mut [f16],
) -> bool {
    if !available() {
        return false;
    }
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        // SAFETY: `conv_avx2` needs only AVX2 and F16C, which the CPU has (checked above); its
        // memory accesses are bounds-checked slices and the loads and stores below.
        unsafe { conv_avx2(g, weights, bias, act, out_slice, input, output, &mut s) }
    });
    true
}

/// `kernels::f16::linear_f16` on checked buffers: the convolution of a `tokens × 1` image with a
/// 1×1 kernel. Returns false when the CPU lacks AVX2 or F16C.
#[allow(clippy::too_many_arguments)]
pub(crate) fn linear(
    tokens: usize,
    in_features: usize,
    out_features: usize,
    weights: &[f16],
    bias: &[f32],
    act: Activation,
    input: &[f16],
    output: &mut [f16],
) -> bool {
    let g = ConvGeometry {
        in_h: tokens,
        in_w: 1,
        in_c: in_features,
        out_h: tokens,
        out_w: 1,
        out_c: out_features,
        kh: 1,
        kw: 1,
        stride_h: 1,
        stride_w: 1,
        pad_h: 0,
        pad_bottom: 0,
        pad_w: 0,
        dil_h: 1,
        dil_w: 1,
        groups: 1,
    };
    let slice = OutputSlice {
        offset: 0,
        pixel_stride: out_features,
    };
    conv(&g, weights, bias, act, slice, input, output)
}

/// Eight binary16 values to f32 (exact).
#[target_feature(enable = "avx2,f16c")]
#[inline]
fn load8h(v: &[f16; 8]) -> __m256 {
    // SAFETY: an unaligned load of exactly the 16 bytes of `v` (`f16` is a transparent `u16`).
    _mm256_cvtph_ps(unsafe { _mm_loadu_si128(v.as_ptr().cast::<__m128i>()) })
}

/// The 8×8 transpose of `r` (row `i` lane `j` → row `j` lane `i`).
#[target_feature(enable = "avx2")]
#[inline]
fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let s1 = _mm256_shuffle_ps::<0xee>(t0, t2);
    let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let s3 = _mm256_shuffle_ps::<0xee>(t1, t3);
    let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let s5 = _mm256_shuffle_ps::<0xee>(t4, t6);
    let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let s7 = _mm256_shuffle_ps::<0xee>(t5, t7);
    [
        _mm256_permute2f128_ps::<0x20>(s0, s4),
        _mm256_permute2f128_ps::<0x20>(s1, s5),
        _mm256_permute2f128_ps::<0x20>(s2, s6),
        _mm256_permute2f128_ps::<0x20>(s3, s7),
        _mm256_permute2f128_ps::<0x31>(s0, s4),
        _mm256_permute2f128_ps::<0x31>(s1, s5),
        _mm256_permute2f128_ps::<0x31>(s2, s6),
        _mm256_permute2f128_ps::<0x31>(s3, s7),
    ]
}

/// `dst[i·8 + l] = w[rows[l]·k + i]` as f32 for `i < k`: one panel of eight weight rows.
#[target_feature(enable = "avx2,f16c")]
fn pack_panel(w: &[f16], k: usize, rows: [usize; 8], dst: &mut [f32]) {
    let rows: [&[f16]; 8] = rows.map(|r| &w[r * k..][..k]);
    let dst = &mut dst[..k * 8];
    let k8 = k / 8 * 8;
    for i in (0..k8).step_by(8) {
        let r = rows.map(|row| load8h(row[i..i + 8].try_into().expect("8 values")));
        for (j, c) in transpose8(r).into_iter().enumerate() {
            store8(
                (&mut dst[(i + j) * 8..][..8]).try_into().expect("8 values"),
                c,
            );
        }
    }
    for i in k8..k {
        for (l, row) in rows.iter().enumerate() {
            dst[i * 8 + l] = row[i].to_f32();
        }
    }
}

/// The input in f32 (exact), eight at a time.
#[target_feature(enable = "avx2,f16c")]
fn widen(x: &[f16], dst: &mut [f32]) {
    let mut d = dst.chunks_exact_mut(8);
    let mut s = x.chunks_exact(8);
    for (d8, s8) in (&mut d).zip(&mut s) {
        store8(
            d8.try_into().expect("8 values"),
            load8h(s8.try_into().expect("8 values")),
        );
    }
    for (y, v) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *y = v.to_f32();
    }
}

/// The taps of an output pixel that fall inside the input, `ky0..ky1 × kx0..kx1` (a rectangle:
/// the input row and column grow with the tap), and the input row and column of tap (0, 0).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Taps {
    ky: (usize, usize),
    kx: (usize, usize),
}

/// The valid taps `k` of one axis: `0 ≤ start + k·dil < len`.
fn valid(start: isize, dil: usize, taps: usize, len: usize) -> (usize, usize) {
    let ok = |k: usize| {
        let i = start + (k * dil) as isize;
        i >= 0 && (i as usize) < len
    };
    let Some(first) = (0..taps).find(|&k| ok(k)) else {
        return (0, 0);
    };
    let end = (first..taps).find(|&k| !ok(k)).unwrap_or(taps);
    (first, end)
}

/// Where an output pixel reads: its valid taps and the input row and column of tap (0, 0).
fn pixel(g: &ConvGeometry, p: usize) -> (Taps, isize, isize) {
    let (oy, ox) = (p / g.out_w, p % g.out_w);
    let iy = (oy * g.stride_h) as isize - g.pad_h as isize;
    let ix = (ox * g.stride_w) as isize - g.pad_w as isize;
    let taps = Taps {
        ky: valid(iy, g.dil_h, g.kh, g.in_h),
        kx: valid(ix, g.dil_w, g.kw, g.in_w),
    };
    (taps, iy, ix)
}

/// The whole convolution: pack, widen, then runs of up to four pixels with the same taps.
#[target_feature(enable = "avx2,f16c")]
#[allow(clippy::too_many_arguments)]
fn conv_avx2(
    g: &ConvGeometry,
    weights: &[f16],
    bias: &[f32],
    act: Activation,
    out_slice: OutputSlice,
    input: &[f16],
    output: &mut [f16],
    scratch: &mut Vec<f32>,
) {
    let cin_g = g.in_c_per_group();
    let cout_g = g.out_c / g.groups;
    let k = g.kh * g.kw * cin_g;
    let panels = cout_g.div_ceil(8);
    let n_panels = g.groups * panels;
    let (packed_len, bias_len) = (n_panels * k * 8, n_panels * 8);
    scratch.clear();
    scratch.resize(packed_len + bias_len + input.len(), 0.0);
    let (packed, rest) = scratch.split_at_mut(packed_len);
    let (bias_p, xf) = rest.split_at_mut(bias_len);
    for grp in 0..g.groups {
        for p in 0..panels {
            let panel = grp * panels + p;
            let rows: [usize; 8] =
                core::array::from_fn(|l| grp * cout_g + (p * 8 + l).min(cout_g - 1));
            pack_panel(weights, k, rows, &mut packed[panel * k * 8..]);
            for (l, &r) in rows.iter().enumerate() {
                bias_p[panel * 8 + l] = bias[r];
            }
        }
    }
    widen(input, xf);
    let ctx = Ctx {
        g,
        cin_g,
        cout_g,
        k,
        panels,
        packed,
        bias: bias_p,
        x: xf,
        act,
        out_slice,
    };
    let n_pix = g.out_h * g.out_w;
    let mut p = 0;
    while p < n_pix {
        let (taps, ..) = pixel(g, p);
        let mut n = 1;
        while n < 4 && p + n < n_pix && pixel(g, p + n).0 == taps {
            n += 1;
        }
        match n {
            4 => run::<4>(&ctx, p, taps, output),
            3 => run::<3>(&ctx, p, taps, output),
            2 => run::<2>(&ctx, p, taps, output),
            _ => run::<1>(&ctx, p, taps, output),
        }
        p += n;
    }
}

/// What every run needs.
struct Ctx<'a> {
    g: &'a ConvGeometry,
    cin_g: usize,
    cout_g: usize,
    k: usize,
    panels: usize,
    packed: &'a [f32],
    bias: &'a [f32],
    x: &'a [f32],
    act: Activation,
    out_slice: OutputSlice,
}

/// Pixels `p0..p0 + N` (all with the valid taps `taps`), every panel: `N` accumulator chains.
#[target_feature(enable = "avx2,f16c")]
fn run<const N: usize>(c: &Ctx, p0: usize, taps: Taps, output: &mut [f16]) {
    let g = c.g;
    let origin: [(isize, isize); N] = core::array::from_fn(|i| {
        let (_, iy, ix) = pixel(g, p0 + i);
        (iy, ix)
    });
    for grp in 0..g.groups {
        for p in 0..c.panels {
            let panel = grp * c.panels + p;
            let w = &c.packed[panel * c.k * 8..][..c.k * 8];
            let b = load8(c.bias[panel * 8..][..8].try_into().expect("8 values"));
            let mut acc = [b; N];
            for ky in taps.ky.0..taps.ky.1 {
                for kx in taps.kx.0..taps.kx.1 {
                    let tap = (ky * g.kw + kx) * c.cin_g;
                    let wt = &w[tap * 8..][..c.cin_g * 8];
                    let xs: [&[f32]; N] = core::array::from_fn(|i| {
                        let iy = (origin[i].0 + (ky * g.dil_h) as isize) as usize;
                        let ix = (origin[i].1 + (kx * g.dil_w) as isize) as usize;
                        &c.x[(iy * g.in_w + ix) * g.in_c + grp * c.cin_g..][..c.cin_g]
                    });
                    for (ci, w8) in wt.chunks_exact(8).enumerate() {
                        let wv = load8(w8.try_into().expect("8 values"));
                        for i in 0..N {
                            let xv = _mm256_set1_ps(xs[i][ci]);
                            acc[i] = _mm256_add_ps(acc[i], _mm256_mul_ps(xv, wv));
                        }
                    }
                }
            }
            let first = grp * c.cout_g + p * 8;
            let lanes = (c.cout_g - p * 8).min(8);
            for (i, &a) in acc.iter().enumerate() {
                let base = (p0 + i) * c.out_slice.pixel_stride + c.out_slice.offset + first;
                finish(a, c.act, &mut output[base..][..lanes]);
            }
        }
    }
}

/// The activation and the rounding to binary16 of the first `out.len()` lanes of `acc`.
#[target_feature(enable = "avx2,f16c")]
#[inline]
fn finish(acc: __m256, act: Activation, out: &mut [f16]) {
    let v = if act == Activation::None {
        acc
    } else {
        let mut a = [0.0f32; 8];
        store8(&mut a, acc);
        for v in a.iter_mut().take(out.len()) {
            *v = act.apply(*v);
        }
        load8(&a)
    };
    let mut h = [0u16; 8];
    let packed = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
    // SAFETY: an unaligned store of exactly the 16 bytes of `h` (a unique borrow).
    unsafe { _mm_storeu_si128(h.as_mut_ptr().cast::<__m128i>(), packed) };
    for (y, &bits) in out.iter_mut().zip(&h) {
        *y = f16::from_bits(bits);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::cases::{self, Rng};
    use crate::kernels::f16::{conv_f16_reference, linear_f16_reference};

    /// binary16 values around every edge (extreme): zeros of both signs, the smallest and
    /// largest subnormals, the smallest normal, the largest finite, infinities and NaNs with
    /// payloads (rare enough that most outputs stay finite), and random finite values of every
    /// exponent, so that results overflow binary16 and products underflow; otherwise values in
    /// (−2, 2).
    fn edge_halves(rng: &mut Rng, n: usize, extreme: bool) -> Vec<f16> {
        let specials = [
            0x0000u16, 0x8000, 0x0001, 0x8001, 0x03ff, 0x83ff, 0x0400, 0x8400, 0x7bff, 0xfbff,
            0x7c00, 0xfc00, 0x7e00, 0xfe00, 0x7d01, 0xff3f, 0x3c00, 0xbc00,
        ];
        (0..n)
            .map(|_| {
                let r = rng.next_u32();
                let sign = (r >> 31) as u16 * 0x8000;
                let bits = if !extreme {
                    (r as u16 & 0x3fff) | sign
                } else if r.is_multiple_of(400) {
                    specials[(r >> 8) as usize % specials.len()]
                } else if r % 4 == 1 {
                    // Any finite value.
                    ((r >> 8) as u16 % 0x7c00) | sign
                } else {
                    ((r >> 8) as u16 & 0x3fff) | sign
                };
                f16::from_bits(bits)
            })
            .collect()
    }

    fn edge_bias(rng: &mut Rng, n: usize, extreme: bool) -> Vec<f32> {
        let specials = [
            0.0f32,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::from_bits(0x7fc1_2345),
            65504.0,
            1e-40,
            -3.0e38,
        ];
        (0..n)
            .map(|_| {
                let r = rng.next_u32();
                if extreme && r.is_multiple_of(3) {
                    specials[(r >> 8) as usize % specials.len()]
                } else {
                    (rng.next_u32() as i32 as f32) / 2_147_483_648.0
                }
            })
            .collect()
    }

    /// Fails at the first output whose bits differ, except that a NaN matches any NaN: which
    /// NaN operand's payload (and sign) an operation returns is left open by Rust, and the
    /// scalar code's own choice follows its register allocation (and differs between x86 and
    /// Arm, whose default NaNs have opposite signs), so only "NaN" is part of the definition.
    #[track_caller]
    fn same_bits(got: &[f16], want: &[f16], what: &str) -> (usize, usize) {
        assert_eq!(got.len(), want.len(), "{what}");
        let differ = |i: usize| {
            got[i].to_bits() != want[i].to_bits() && !(got[i].is_nan() && want[i].is_nan())
        };
        if let Some(i) = (0..got.len()).find(|&i| differ(i)) {
            panic!(
                "{what}: output {i} is {:#06x}, the definition gives {:#06x}",
                got[i].to_bits(),
                want[i].to_bits()
            );
        }
        (want.iter().filter(|v| v.is_nan()).count(), want.len())
    }

    const ACTS: [Activation; 3] = [Activation::None, Activation::Gelu, Activation::Silu];

    /// The AVX2 convolution against the scalar definition, bit for bit, on random geometries
    /// (groups, strides, padding, dilation, output slices, wide groups with partial panels) and
    /// extreme values.
    #[test]
    fn conv_equals_the_definition() {
        if !available() {
            return;
        }
        let mut rng = Rng(0xf16_c0de);
        let limits = cases::conv::Limits {
            input: 3000,
            weights: 6000,
            output: 6000,
        };
        let mut counts = (0, 0);
        for round in 0..400 {
            let r = cases::conv::random(&mut rng, limits);
            let mut geom = r.geom;
            // Wider groups than the shared cases: several panels and partial ones.
            if round % 3 == 0 {
                let cout_g = rng.range(7, 26);
                geom.out_c = cout_g * geom.groups;
            }
            let extreme = round % 2 == 1;
            let x = edge_halves(&mut rng, geom.in_h * geom.in_w * geom.in_c, extreme);
            let w = edge_halves(&mut rng, geom.weight_len(), extreme);
            let bias = edge_bias(&mut rng, geom.out_c, extreme);
            let act = ACTS[round % 3];
            let slice = OutputSlice {
                offset: r.offset,
                pixel_stride: r.offset + geom.out_c + r.extra,
            };
            let len = geom.out_h * geom.out_w * slice.pixel_stride;
            let mut want = vec![f16::from_f32(7.0); len];
            conv_f16_reference(&geom, &w, &bias, act, slice, &x, &mut want).unwrap();
            let mut got = vec![f16::from_f32(7.0); len];
            assert!(conv(&geom, &w, &bias, act, slice, &x, &mut got));
            let (nan, all) = same_bits(&got, &want, &format!("round {round} {geom:?} {act:?}"));
            counts = (counts.0 + nan, counts.1 + all);
        }
        // Most outputs finite: the extreme values test the arithmetic, not only NaN.
        assert!(
            counts.0 * 4 < counts.1,
            "{} NaN outputs of {}",
            counts.0,
            counts.1
        );
    }

    /// The AVX2 linear layer against the scalar definition, bit for bit, on the ViTAE shapes and
    /// random ones (tails of tokens, inputs and outputs), ordinary and extreme values.
    #[test]
    fn linear_equals_the_definition() {
        if !available() {
            return;
        }
        let mut rng = Rng(0xf16_11ea);
        let mut shapes = cases::linear::VITAE.to_vec();
        for _ in 0..200 {
            shapes.push(cases::linear::random(&mut rng, (4096, 16384, 4096)));
        }
        let mut counts = (0, 0);
        for (round, &(t, k, n)) in shapes.iter().enumerate() {
            let extreme = round % 2 == 1;
            let x = edge_halves(&mut rng, t * k, extreme);
            let w = edge_halves(&mut rng, k * n, extreme);
            let bias = edge_bias(&mut rng, n, extreme);
            let act = ACTS[round % 3];
            let mut want = vec![f16::ZERO; t * n];
            linear_f16_reference(t, k, n, &w, &bias, act, &x, &mut want).unwrap();
            let mut got = vec![f16::ZERO; t * n];
            assert!(linear(t, k, n, &w, &bias, act, &x, &mut got));
            let (nan, all) = same_bits(
                &got,
                &want,
                &format!("round {round} ({t}, {k}, {n}) {act:?}"),
            );
            counts = (counts.0 + nan, counts.1 + all);
        }
        // Most outputs finite: the extreme values test the arithmetic, not only NaN.
        assert!(
            counts.0 * 4 < counts.1,
            "{} NaN outputs of {}",
            counts.0,
            counts.1
        );
    }

    /// The output rounding against `half::f16::from_f32` on every f32 exponent with random and
    /// edge mantissas (ties, the subnormal range, overflow, NaN payloads).
    #[test]
    fn rounding_equals_half() {
        if !available() {
            return;
        }
        let mut rng = Rng(0xf16_0001);
        let mut xs: Vec<f32> = Vec::new();
        for e in 0..256u32 {
            for m in [
                0u32, 1, 0x1000, 0x1fff, 0x2000, 0x3000, 0x7f_ffff, 0x40_0000, 0x40_1000,
            ] {
                for s in [0, 0x8000_0000] {
                    xs.push(f32::from_bits(s | (e << 23) | m));
                }
            }
            for _ in 0..64 {
                xs.push(f32::from_bits((rng.next_u32() & 0x807f_ffff) | (e << 23)));
            }
        }
        for chunk in xs.chunks(8) {
            let mut a = [0.0f32; 8];
            a[..chunk.len()].copy_from_slice(chunk);
            let mut out = [f16::ZERO; 8];
            // SAFETY: `available()` said the CPU has AVX2 and F16C.
            unsafe { finish(load8(&a), Activation::None, &mut out[..chunk.len()]) };
            for (y, &x) in out.iter().zip(chunk) {
                let what = format!("{x:e} ({:#x})", x.to_bits());
                assert_eq!(y.to_bits(), f16::from_f32(x).to_bits(), "{what}");
                // The portable conversion, which the firmware runs.
                assert_eq!(y.to_bits(), f16::from_f32_const(x).to_bits(), "{what}");
            }
        }
    }
}
