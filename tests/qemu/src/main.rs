//! On-target tests: the optimized kernels of this build (DSP on M4/M7, Helium on M55) checked
//! against known values and against the scalar reference, on the emulated core.
//!
//! The comparisons use a small deterministic generator for shapes and data, so every run checks
//! the same cases; shapes are kept small because Helium is slow to emulate.
#![no_std]
#![no_main]

use half::f16;
use vitae_board::testing::TestResult;
use vitae_board::{check, check_eq, tests};
use vitae_edge::kernels::attention::{self, AttentionS8};
use vitae_edge::kernels::cases::{self, Rng, shift_for};
use vitae_edge::kernels::conv::{self, ConvGeometry, ConvS8, OutputSlice};
use vitae_edge::kernels::conv_s4::{self, ConvS4};
use vitae_edge::kernels::f16 as f16k;
use vitae_edge::kernels::linear::{self, LinearS8};
use vitae_edge::kernels::linear_s4::{self, LinearS4};
use vitae_edge::kernels::{self, dot, f16_fpu};
use vitae_edge::quant::Requant;

#[cortex_m_rt::entry]
fn main() -> ! {
    vitae_board::init();
    defmt::println!(
        "on-target tests on {=str} ({=str}), kernels: {}",
        vitae_board::BOARD,
        vitae_board::CORE,
        defmt::Debug2Format(&kernels::selected_impl())
    );
    let failed = vitae_board::testing::run_all(ALL);
    vitae_board::exit(failed == 0)
}

const ALL: &[vitae_board::testing::Test] = if cfg!(feature = "demo-failure") {
    tests![deliberately_failing, dot_s8_known_value]
} else {
    tests![
        dot_s8_known_value,
        dot_s8_matches_reference_all_lengths,
        selected_impl_matches_core,
        conv_known_value,
        conv_vitae_shapes_match_reference,
        conv_random_shapes_match_reference,
        conv_s4_shapes_match_reference,
        linear_vitae_shapes_match_reference,
        linear_random_shapes_match_reference,
        linear_s4_shapes_match_reference,
        attention_shapes_match_reference,
        attention_random_shapes_match_reference,
        tile_probabilities_match_exp,
        arm_flush_to_zero_facts,
        performer_axpy_matches_scalar,
        performer_row_updates_match_axpy,
        performer_feature_dots_match_scalar,
        quantize_image_matches_scalar,
        sqrt_matches_libm,
        requantize_matches_i128_oracle_at_extremes,
        linear_saturates_with_the_right_sign_at_the_requantization_extremes,
        subnormals_through_every_vectorized_step,
        f16_widen_matches_software_for_every_half,
        f16_widen_slice_matches_widen,
        f16_narrow_matches_software_at_every_rounding_boundary,
        f16_conv_vitae_shapes_match_reference,
        f16_conv_random_shapes_match_reference,
        f16_linear_shapes_match_reference,
    ]
};

/// Randomized cases per comparison test: fewer on the Helium board, whose emulation is slow.
const RANDOM_CASES: usize = if matches!(kernels::selected_impl(), kernels::Impl::Mve) {
    40
} else {
    120
};

/// Fails (and logs where) unless the slices are equal.
fn same(what: &str, got: &[i8], want: &[i8]) -> TestResult {
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        defmt::println!(
            "{=str}: first difference at {=usize}: {=i8} != {=i8}",
            what,
            i,
            got[i],
            want[i]
        );
    }
    check!(got.len() == want.len() && got == want);
    Ok(())
}

fn dot_s8_known_value() -> TestResult {
    let a = [1i8, -2, 3, -128, 127, 0, 5];
    let b = [4i8, 5, -6, -128, 127, 9, -1];
    check_eq!(dot::dot_s8(&a, &b), 4 - 10 - 18 + 16384 + 16129 - 5);
    Ok(())
}

fn dot_s8_matches_reference_all_lengths() -> TestResult {
    let mut a = [0i8; 67];
    let mut b = [0i8; 67];
    let mut rng = Rng(0x1234_5678);
    rng.fill(&mut a);
    rng.fill(&mut b);
    a[0] = -128;
    b[0] = -128;
    for n in 0..=a.len() {
        check_eq!(
            dot::dot_s8(&a[..n], &b[..n]),
            dot::dot_s8_reference(&a[..n], &b[..n])
        );
    }
    Ok(())
}

fn selected_impl_matches_core() -> TestResult {
    let expected = if vitae_board::CORE == "Cortex-M55" {
        kernels::Impl::Mve
    } else {
        kernels::Impl::Dsp
    };
    check!(kernels::selected_impl() == expected);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Convolution

// Room for the suite's largest ViTAE shape (8×8×64 in, 64 groups, a 67-channel output slice).
const CONV_IN: usize = 4096;
const CONV_W: usize = 9216;
const CONV_OUT: usize = 4608;
const CONV_SCRATCH: usize = 8192;

/// Builds random data for `geom`, runs the optimized and the reference convolution into a wider
/// output tensor (`offset`, `extra` channels around the slice) and compares everything.
fn conv_case(
    rng: &mut Rng,
    geom: ConvGeometry,
    offset: usize,
    extra: usize,
    act: bool,
) -> TestResult {
    let (n_in, n_out) = (
        geom.in_h * geom.in_w * geom.in_c,
        geom.out_h * geom.out_w * (offset + geom.out_c + extra),
    );
    if n_in > CONV_IN || geom.weight_len() > CONV_W || n_out > CONV_OUT || geom.out_c > 128 {
        defmt::println!(
            "conv case larger than the test buffers: {}",
            defmt::Debug2Format(&geom)
        );
        check!(false);
    }
    let mut input = [0i8; CONV_IN];
    let mut weights = [0i8; CONV_W];
    let mut bias = [0i32; 128];
    let mut requant = [Requant::default(); 128];
    let input = &mut input[..n_in];
    let weights = &mut weights[..geom.weight_len()];
    let bias = &mut bias[..geom.out_c];
    let requant = &mut requant[..geom.out_c];
    rng.fill(input);
    rng.fill(weights);
    rng.bias(bias);
    rng.requant(
        requant,
        shift_for(geom.kh * geom.kw * geom.in_c_per_group()),
    );
    let lut = rng.lut();
    let (in_zp, out_zp) = (rng.zero_point(), rng.zero_point());
    let slice = OutputSlice {
        offset,
        pixel_stride: offset + geom.out_c + extra,
    };
    let p = ConvS8::new(
        geom,
        weights,
        bias,
        requant,
        in_zp,
        out_zp,
        act.then_some(&lut),
        slice,
    );
    let Ok(p) = p else {
        defmt::println!("invalid test case {}", defmt::Debug2Format(&geom));
        check!(false);
        return Ok(());
    };
    let n = p.output_len();
    let mut want = [0x55i8; CONV_OUT];
    let mut got = [0x55i8; CONV_OUT];
    let mut scratch = [0u8; CONV_SCRATCH];
    let need = conv::conv_s8_scratch_size(&geom);
    check!(n <= CONV_OUT && need <= CONV_SCRATCH);
    check!(conv::conv_s8_reference(&p, input, &mut want[..n]).is_ok());
    check!(conv::conv_s8(&p, input, &mut got[..n], &mut scratch[..need]).is_ok());
    same("conv", &got[..n], &want[..n])
}

/// A hand-computed 1×1 convolution: identity-ish weights, multiplier 0.5 (exact rounding).
fn conv_known_value() -> TestResult {
    let geom =
        cases::conv::geometry((1, 2, 4), 2, (1, 1), (1, 1), (0, 0), (1, 1), 1).unwrap_or_default();
    let input = [10i8, 20, 30, 40, -1, -2, -3, -4];
    let weights = [1i8, 0, 0, 1, 0, 1, 1, 0];
    let half = Requant {
        multiplier: 1 << 30,
        shift: 0,
    };
    let requant = [half; 2];
    let p = ConvS8::new(
        geom,
        &weights,
        &[1, 0],
        &requant,
        0,
        3,
        None,
        OutputSlice {
            offset: 0,
            pixel_stride: 2,
        },
    );
    let Ok(p) = p else {
        check!(false);
        return Ok(());
    };
    let mut out = [0i8; 4];
    let mut scratch = [0u8; 2048];
    check!(conv::conv_s8_scratch_size(&geom) <= scratch.len());
    check!(conv::conv_s8(&p, &input, &mut out, &mut scratch).is_ok());
    // (10 + 40 + 1)/2 = 25.5 → 26, + 3; (20 + 30)/2 = 25, + 3; (−1 − 4 + 1)/2 = −2, + 3; −5/2 → −2.
    check_eq!(out, [29, 28, 1, 1]);
    Ok(())
}

/// The suite's ViTAE convolutions (`kernels::cases::conv::vitae`).
fn conv_vitae_shapes_match_reference() -> TestResult {
    let mut rng = Rng(0xc0ffee);
    for (i, g) in cases::conv::vitae().into_iter().enumerate() {
        let Some(g) = g else {
            check!(false);
            continue;
        };
        conv_case(&mut rng, g, i % 3, i % 2, i % 2 == 0)?;
    }
    Ok(())
}

/// The suite's random convolutions that fit this binary's buffers.
fn conv_random_shapes_match_reference() -> TestResult {
    let mut rng = Rng(0x5eed_0001);
    let limits = cases::conv::Limits {
        input: CONV_IN,
        weights: CONV_W,
        output: CONV_OUT,
    };
    for _ in 0..RANDOM_CASES {
        let r = cases::conv::random(&mut rng, limits);
        conv_case(&mut rng, r.geom, r.offset, r.extra, r.act)?;
    }
    Ok(())
}

/// Scratch of the int4 convolution cases: the int8 convolution's plus one chunk of unpacked
/// channels (all of them for a grouped convolution: at most `CONV_W` bytes).
const CONV_S4_SCRATCH: usize = CONV_SCRATCH + 16384;

/// One int4-weight convolution: random packed nibbles, optimized against reference, into an
/// output slice whose other channels must stay untouched.
fn conv_s4_case(
    rng: &mut Rng,
    r: cases::conv::Random,
    scratch: &mut [u8; CONV_S4_SCRATCH],
) -> TestResult {
    let geom = r.geom;
    let k = geom.kh * geom.kw * geom.in_c_per_group();
    let packed_len = vitae_edge::kernels::s4::s4_row_bytes(k) * geom.out_c;
    let n_in = geom.in_h * geom.in_w * geom.in_c;
    check!(n_in <= CONV_IN && packed_len <= CONV_W && geom.out_c <= 128);
    let mut input = [0i8; CONV_IN];
    let mut packed = [0u8; CONV_W];
    let mut bias = [0i32; 128];
    let mut requant = [Requant::default(); 128];
    let input = &mut input[..n_in];
    let packed = &mut packed[..packed_len];
    let (bias, requant) = (&mut bias[..geom.out_c], &mut requant[..geom.out_c]);
    rng.fill(input);
    for b in packed.iter_mut() {
        *b = rng.next_u32() as u8;
    }
    rng.bias(bias);
    rng.requant(requant, shift_for(k) + 4);
    let lut = rng.lut();
    let (in_zp, out_zp) = (rng.zero_point(), rng.zero_point());
    let slice = OutputSlice {
        offset: r.offset,
        pixel_stride: r.offset + geom.out_c + r.extra,
    };
    let act = r.act.then_some(&lut);
    let p = ConvS4::new(geom, packed, bias, requant, in_zp, out_zp, act, slice);
    let Ok(p) = p else {
        defmt::println!("invalid test case {}", defmt::Debug2Format(&geom));
        check!(false);
        return Ok(());
    };
    let n = (geom.out_h * geom.out_w - 1) * slice.pixel_stride + r.offset + geom.out_c;
    let mut want = [0x55i8; CONV_OUT];
    let mut got = [0x55i8; CONV_OUT];
    let need = conv_s4::conv_s4_scratch_size(&geom);
    check!(n <= CONV_OUT && need <= CONV_S4_SCRATCH);
    check!(conv_s4::conv_s4_reference(&p, input, &mut want[..n]).is_ok());
    check!(conv_s4::conv_s4(&p, input, &mut got[..n], &mut scratch[..need]).is_ok());
    same("conv int4", &got[..n], &want[..n])
}

/// int4-weight convolutions: the suite's ViTAE shapes and random shapes.
fn conv_s4_shapes_match_reference() -> TestResult {
    let Some(scratch) = cortex_m::singleton!(: [u8; CONV_S4_SCRATCH] = [0; CONV_S4_SCRATCH]) else {
        check!(false);
        return Ok(());
    };
    let mut rng = Rng(0xc0ff_ee04);
    for (i, g) in cases::conv::vitae().into_iter().enumerate() {
        let Some(geom) = g else {
            check!(false);
            continue;
        };
        let r = cases::conv::Random {
            geom,
            offset: i % 3,
            extra: i % 2,
            act: i % 2 == 0,
        };
        conv_s4_case(&mut rng, r, scratch)?;
    }
    let limits = cases::conv::Limits {
        input: CONV_IN,
        weights: CONV_W,
        output: CONV_OUT,
    };
    for _ in 0..RANDOM_CASES {
        let r = cases::conv::random(&mut rng, limits);
        conv_s4_case(&mut rng, r, scratch)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Linear

const LIN_IN: usize = 4096;
const LIN_W: usize = 16384;
const LIN_OUT: usize = 4096;

fn linear_case(rng: &mut Rng, tokens: usize, k: usize, n_out: usize, act: bool) -> TestResult {
    if tokens * k > LIN_IN || k * n_out > LIN_W || tokens * n_out > LIN_OUT || n_out > 512 {
        defmt::println!(
            "linear case {=usize}x{=usize}->{=usize} larger than the test buffers",
            tokens,
            k,
            n_out
        );
        check!(false);
    }
    let mut input = [0i8; LIN_IN];
    let mut weights = [0i8; LIN_W];
    let mut bias = [0i32; 512];
    let mut requant = [Requant::default(); 512];
    let input = &mut input[..tokens * k];
    let weights = &mut weights[..k * n_out];
    let bias = &mut bias[..n_out];
    let requant = &mut requant[..n_out];
    rng.fill(input);
    rng.fill(weights);
    rng.bias(bias);
    rng.requant(requant, shift_for(k));
    let lut = rng.lut();
    let p = LinearS8::new(
        tokens,
        k,
        n_out,
        weights,
        bias,
        requant,
        rng.zero_point(),
        act.then_some(&lut),
    );
    let Ok(p) = p else {
        check!(false);
        return Ok(());
    };
    let n = tokens * n_out;
    let mut want = [0i8; LIN_OUT];
    let mut got = [0i8; LIN_OUT];
    let mut scratch = [0u8; 8192];
    let need = linear::linear_s8_scratch_size(tokens, k, n_out);
    check!(need <= scratch.len());
    check!(linear::linear_s8_reference(&p, input, &mut want[..n]).is_ok());
    check!(linear::linear_s8(&p, input, &mut got[..n], &mut scratch[..need]).is_ok());
    same("linear", &got[..n], &want[..n])
}

/// The suite's ViTAE linear shapes.
fn linear_vitae_shapes_match_reference() -> TestResult {
    let mut rng = Rng(0x11ea_0001);
    for (i, &(t, k, n)) in cases::linear::VITAE.iter().enumerate() {
        linear_case(&mut rng, t, k, n, i % 2 == 1)?;
    }
    Ok(())
}

/// The suite's random linear shapes that fit this binary's buffers.
fn linear_random_shapes_match_reference() -> TestResult {
    let mut rng = Rng(0x11ea_0002);
    for _ in 0..RANDOM_CASES {
        let (tokens, k, n_out) = cases::linear::random(&mut rng, (LIN_IN, LIN_W, LIN_OUT));
        let act = rng.one_in(2);
        linear_case(&mut rng, tokens, k, n_out, act)?;
    }
    Ok(())
}

/// Scratch of the int4 linear cases (a chunk of unpacked rows plus the int8 product's buffers).
const S4_SCRATCH: usize = 16384;

/// One int4-weight linear case: random packed nibbles (every value of −8..=7; the padding
/// nibbles of a short last group are ignored by both paths), optimized against reference.
fn linear_s4_case(
    rng: &mut Rng,
    (tokens, k, n_out): (usize, usize, usize),
    act: bool,
    scratch: &mut [u8],
) -> TestResult {
    let row = vitae_edge::kernels::s4::s4_row_bytes(k);
    check!(tokens * k <= LIN_IN && row * n_out <= LIN_W / 2 && tokens * n_out <= LIN_OUT);
    check!(n_out <= 512);
    let mut input = [0i8; LIN_IN];
    let mut packed = [0u8; LIN_W / 2];
    let mut bias = [0i32; 512];
    let mut requant = [Requant::default(); 512];
    let input = &mut input[..tokens * k];
    let packed = &mut packed[..row * n_out];
    let (bias, requant) = (&mut bias[..n_out], &mut requant[..n_out]);
    rng.fill(input);
    for b in packed.iter_mut() {
        *b = rng.next_u32() as u8;
    }
    rng.bias(bias);
    // int4 products are 16 times smaller than int8 ones: centre the shift 4 bits lower.
    rng.requant(requant, shift_for(k) + 4);
    let lut = rng.lut();
    let p = LinearS4::new(
        tokens,
        k,
        n_out,
        packed,
        bias,
        requant,
        rng.zero_point(),
        act.then_some(&lut),
    );
    let Ok(p) = p else {
        check!(false);
        return Ok(());
    };
    let n = tokens * n_out;
    let mut want = [0i8; LIN_OUT];
    let mut got = [0i8; LIN_OUT];
    let need = linear_s4::linear_s4_scratch_size(tokens, k, n_out);
    check!(need <= scratch.len());
    check!(linear_s4::linear_s4_reference(&p, input, &mut want[..n]).is_ok());
    check!(linear_s4::linear_s4(&p, input, &mut got[..n], &mut scratch[..need]).is_ok());
    same("linear int4", &got[..n], &want[..n])
}

/// int4-weight linear: the ViTAE shapes (several chunks of rows where out > the chunk) and the
/// suite's random shapes.
fn linear_s4_shapes_match_reference() -> TestResult {
    let Some(scratch) = cortex_m::singleton!(: [u8; S4_SCRATCH] = [0; S4_SCRATCH]) else {
        check!(false);
        return Ok(());
    };
    let mut rng = Rng(0x11ea_0004);
    for (i, &shape) in cases::linear::VITAE.iter().enumerate() {
        linear_s4_case(&mut rng, shape, i % 2 == 1, scratch)?;
    }
    for _ in 0..RANDOM_CASES {
        let shape = cases::linear::random(&mut rng, (LIN_IN, LIN_W / 2, LIN_OUT));
        let act = rng.one_in(2);
        linear_s4_case(&mut rng, shape, act, scratch)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Attention

const ATT_QKV: usize = 6144;
const ATT_SCRATCH: usize = 16384;

fn attention_case(
    rng: &mut Rng,
    tokens: usize,
    heads: usize,
    head_dim: usize,
    logit_scale: f32,
) -> TestResult {
    let c = heads * head_dim;
    let n = tokens * c;
    check!(n <= ATT_QKV);
    let mut q = [0i8; ATT_QKV];
    let mut k = [0i8; ATT_QKV];
    let mut v = [0i8; ATT_QKV];
    rng.fill(&mut q[..n]);
    rng.fill(&mut k[..n]);
    rng.fill(&mut v[..n]);
    let out_zp = rng.zero_point();
    let p = AttentionS8::new(tokens, heads, head_dim, logit_scale, 0.9, out_zp);
    let Ok(p) = p else {
        check!(false);
        return Ok(());
    };
    let mut want = [0i8; ATT_QKV];
    let mut got = [0i8; ATT_QKV];
    let mut scratch = [0u8; ATT_SCRATCH];
    let need = attention::attention_s8_scratch_size(tokens, head_dim);
    check!(need <= ATT_SCRATCH);
    check!(
        attention::attention_s8_reference(
            &p,
            &q[..n],
            &k[..n],
            &v[..n],
            &mut want[..n],
            &mut scratch[..need]
        )
        .is_ok()
    );
    check!(
        attention::attention_s8(
            &p,
            &q[..n],
            &k[..n],
            &v[..n],
            &mut got[..n],
            &mut scratch[..need]
        )
        .is_ok()
    );
    same("attention", &got[..n], &want[..n])
}

/// The suite's ViTAE attention shapes that fit this binary's buffers (the host runs all).
fn attention_shapes_match_reference() -> TestResult {
    let mut rng = Rng(0xa77e_0001);
    let mut ran = 0;
    for &(t, h, d, s) in &cases::attention::VITAE {
        if t * h * d <= ATT_QKV {
            attention_case(&mut rng, t, h, d, s)?;
            ran += 1;
        }
    }
    defmt::println!(
        "  {=usize} of {=usize} ViTAE attention shapes fit the test buffers",
        ran,
        cases::attention::VITAE.len()
    );
    check!(ran + 1 >= cases::attention::VITAE.len());
    Ok(())
}

/// The suite's random attention shapes that fit this binary's buffers.
fn attention_random_shapes_match_reference() -> TestResult {
    let mut rng = Rng(0xa77e_0002);
    for _ in 0..RANDOM_CASES / 8 {
        let (tokens, heads, head_dim, scale) = cases::attention::random(&mut rng, ATT_QKV);
        attention_case(&mut rng, tokens, heads, head_dim, scale)?;
    }
    Ok(())
}

/// The probabilities of one key tile (vectorized exponentials on Helium) against the scalar
/// `math::exp`, value by value, on exponents chosen where its rounding decisions flip: both sides
/// of every boundary of `n = trunc(x·log2e + 128.5) − 128` (x·log2e = j − ½), of the clamp at
/// −87.33, near 0, at the ends of the scale range the vector path accepts, and random ones.
fn tile_probabilities_match_exp() -> TestResult {
    use vitae_edge::math::exp;
    use vitae_edge::quant::round_half_up;
    let check_tile = |s: &[i32], scale: f32, m: f32| -> TestResult {
        let mut p = [0i16; 64];
        let psum = attention::tile_probabilities(s, scale, m, &mut p[..s.len()]);
        let mut want_sum = 0i32;
        for (j, &sj) in s.iter().enumerate() {
            let want = round_half_up(exp(sj as f32 * scale - m) * 32767.0);
            want_sum += want;
            if i32::from(p[j]) != want {
                defmt::println!(
                    "s={=i32} scale={=f32} m={=f32}: {=i16} != {=i32}",
                    sj,
                    scale,
                    m,
                    p[j],
                    want
                );
            }
            check_eq!(i32::from(p[j]), want);
        }
        check_eq!(psum, want_sum);
        Ok(())
    };
    // x = s·2^−16 exactly (|s| < 2^24): 16 values around each boundary, four boundaries a tile.
    let scale = 1.0 / 65536.0;
    let mut s = [0i32; 64];
    let mut fill = 0;
    for j in (-126i32..=0).chain([-127]) {
        let x = if j == -127 {
            -87.33f32
        } else {
            (j as f32 - 0.5) / core::f32::consts::LOG2_E
        };
        let centre = (x * 65536.0) as i32;
        for d in -8..8 {
            s[fill] = (centre + d).min(0);
            fill += 1;
            if fill == s.len() {
                check_tile(&s, scale, 0.0)?;
                fill = 0;
            }
        }
    }
    check_tile(&s[..fill], scale, 0.0)?;
    // Random scores under a running maximum, across scales (both ends of the range the vector
    // code computes for, and of the validator's; outside it every probability is 0, which the
    // subnormal suite checks).
    let mut rng = Rng(0x50f7_0001);
    for scale in [
        1e-4f32,
        2.5e-3,
        0.3,
        f32::from_bits(0x1380_0000),
        f32::from_bits(0x6f80_0000),
        kernels::FACTOR_MIN,
        kernels::FACTOR_MAX,
    ] {
        for _ in 0..4 {
            let len = rng.range(1, 64);
            let mut s = [0i32; 64];
            for v in &mut s[..len] {
                *v = (rng.next_u32() as i32) >> (rng.next_u32() % 24);
            }
            let smax = s[..len].iter().copied().max().unwrap_or(0);
            let m = smax as f32 * scale + [0.0f32, 1.5, 40.0][rng.range(0, 2)];
            check_tile(&s[..len], scale, m)?;
        }
    }
    Ok(())
}

/// What the subnormal rules rest on, measured on this core. The scalar FPU keeps subnormals (IEEE,
/// the reset value of FPSCR), as the host does. The performer's f32 update (`y + a·x`: Helium
/// assembly on the M55, the FPU with FPSCR.FZ and DN set inside the assembly on the M4/M7)
/// computes Arm flush-to-zero arithmetic, as `math::ftz` does in software: subnormal operands
/// read as 0, a result whose exact value is below 2^-126 becomes 0 before rounding (even
/// 2^-126(1 − 2^-46), which IEEE rounds up to 2^-126), signs kept, NaNs the default NaN.
fn arm_flush_to_zero_facts() -> TestResult {
    use core::hint::black_box;
    use vitae_edge::kernels::performer::axpy_f32;
    use vitae_edge::math::ftz;
    let f = f32::from_bits;
    let ieee_mul = |a: u32, b: u32| (black_box(f(a)) * black_box(f(b))).to_bits();
    check_eq!(ieee_mul(0x3f7f_fffe, 0x0080_0001), 0x0080_0000);
    check_eq!(ieee_mul(0x0d80_0000, 0x3080_0000), 0x0008_0000);
    check_eq!(ieee_mul(0x3f80_0000, 0x0001_16c2), 0x0001_16c2);
    check_eq!(
        (black_box(f(0x00c0_0000)) + black_box(f(0x8080_0000))).to_bits(),
        0x0040_0000
    );
    // (y, a, x, y + a·x with flush-to-zero)
    let table: [(u32, u32, u32, u32); 10] = [
        (0x0000_0000, 0x3f80_0000, 0x0001_16c2, 0x0000_0000), // subnormal operand
        (0x0001_16c2, 0x3f80_0000, 0x3f80_0000, 0x3f80_0000), // subnormal y + 1
        (0x0000_0000, 0x0d80_0000, 0x3080_0000, 0x0000_0000), // 2^-100 · 2^-30
        (0x8000_0000, 0x8d80_0000, 0x3080_0000, 0x8000_0000), // −0 + (−0): signs kept
        (0x0000_0000, 0x3f7f_fffe, 0x0080_0001, 0x0000_0000), // IEEE rounds up, Arm flushes
        (0x0000_0000, 0x2000_0000, 0x2000_0000, 0x0080_0000), // exactly 2^-126 stays
        (0x00c0_0000, 0x3f80_0000, 0x8080_0000, 0x0000_0000), // sum 2^-127 flushed
        (0x8080_0000, 0x3f80_0000, 0x00c0_0000, 0x0000_0000), // and with the other sign
        (0x0000_0000, 0x7fc1_2345, 0x3f80_0000, 0x7fc0_0000), // the default NaN
        (0x3f80_0000, 0x3fc0_0000, 0x4040_0000, 0x40b0_0000), // 1 + 1.5 · 3
    ];
    for (y, a, x, want) in table {
        // Five values: a vector body (or an unrolled step) and a tail.
        let mut out = [f(y); 5];
        axpy_f32(&mut out, f(a), &[f(x); 5]);
        for o in out {
            if o.to_bits() != want {
                defmt::println!(
                    "{=u32:#x} + {=u32:#x}·{=u32:#x} = {=u32:#x}, want {=u32:#x}",
                    y,
                    a,
                    x,
                    o.to_bits(),
                    want
                );
            }
            check_eq!(o.to_bits(), want);
        }
        check_eq!(ftz::add(f(y), ftz::mul(f(a), f(x))).to_bits(), want);
    }
    Ok(())
}

/// The performer's feature update (`y += a·x`; Helium on the M55, the FPU in flush-to-zero mode on
/// the M4/M7) against `math::ftz::axpy` computed in software on this core, bit for bit, on every
/// length up to 40, for values of magnitudes 2^-40..2^40 (the subnormal suite covers the rest).
fn performer_axpy_matches_scalar() -> TestResult {
    use vitae_edge::kernels::performer::axpy_f32;
    const MAX: usize = cases::performer::AXPY_MAX_LEN;
    let mut rng = Rng(0xa8b1_0003);
    for len in 0..=MAX {
        let mut x = [0f32; MAX];
        let mut y = [0f32; MAX];
        for v in x[..len].iter_mut().chain(y[..len].iter_mut()) {
            *v = rng.normal_f32(40);
        }
        for a in [rng.normal_f32(40), 1e-9, 3.5, -1.0] {
            let mut got = y;
            axpy_f32(&mut got[..len], a, &x[..len]);
            let mut want = y;
            vitae_edge::math::ftz::axpy(&mut want[..len], a, &x[..len]);
            for i in 0..MAX {
                if got[i].to_bits() != want[i].to_bits() {
                    defmt::println!(
                        "len {=usize} a {=f32} i {=usize}: {=u32:#x} != {=u32:#x}",
                        len,
                        a,
                        i,
                        got[i].to_bits(),
                        want[i].to_bits()
                    );
                }
                check_eq!(got[i].to_bits(), want[i].to_bits());
            }
        }
    }
    Ok(())
}

/// The performer's whole-matrix updates (Helium: column chunks held in registers across the
/// feature rows) against one `axpy_f32` per row, bit for bit, for every width up to 40 (chunks of
/// one to four vectors, and the widths that are not a multiple of 4) and 1, 5 and 12 rows, on
/// values of magnitudes 2^-30..2^30 (the subnormal suite covers the rest).
fn performer_row_updates_match_axpy() -> TestResult {
    use vitae_edge::kernels::performer::{axpy_f32, rank1_update_rows, weighted_row_sum};
    const SWEEP: cases::performer::Sweep = cases::performer::ROW_UPDATES;
    const E: usize = SWEEP.max_width;
    const M: usize = SWEEP.max_rows();
    let mut rng = Rng(0x9e37_0007);
    for e in 1..=E {
        for m in SWEEP.rows {
            let mut mat = [0f32; M * E];
            let (mut coef, mut x) = ([0f32; M], [0f32; E]);
            for v in mat[..m * e]
                .iter_mut()
                .chain(&mut coef[..m])
                .chain(&mut x[..e])
            {
                *v = rng.normal_f32(30);
            }
            let mut got = mat;
            rank1_update_rows(&mut got[..m * e], e, &coef[..m], &x[..e]);
            let mut want = mat;
            for (row, &a) in want[..m * e].chunks_exact_mut(e).zip(&coef[..m]) {
                axpy_f32(row, a, &x[..e]);
            }
            for (g, w) in got.iter().zip(&want) {
                check_eq!(g.to_bits(), w.to_bits());
            }
            let mut got_y = [1f32; E];
            weighted_row_sum(&mut got_y[..e], e, &coef[..m], &mat[..m * e]);
            let mut want_y = [1f32; E];
            want_y[..e].fill(0.0);
            for (row, &a) in mat[..m * e].chunks_exact(e).zip(&coef[..m]) {
                axpy_f32(&mut want_y[..e], a, row);
            }
            for (g, w) in got_y.iter().zip(&want_y) {
                check_eq!(g.to_bits(), w.to_bits());
            }
        }
    }
    Ok(())
}

/// The performer's int16 × int8 feature dots (Helium: the token held in registers for widths that
/// are multiples of 8 up to 48) against a scalar sum, for every width up to 64 (both paths) and
/// 1, 7 and 16 rows, with extreme values (−32768 × −128) included; an output word past the rows
/// must stay untouched.
fn performer_feature_dots_match_scalar() -> TestResult {
    use vitae_edge::kernels::performer::feature_dots;
    const SWEEP: cases::performer::Sweep = cases::performer::FEATURE_DOTS;
    const E: usize = SWEEP.max_width;
    const M: usize = SWEEP.max_rows();
    let mut rng = Rng(0xd07e_0011);
    for e in 1..=E {
        for m in SWEEP.rows {
            let mut w = [0i16; M * E];
            let mut z = [0i8; E];
            for v in w[..m * e].iter_mut() {
                *v = match rng.next_u32() % 8 {
                    0 => i16::MIN,
                    1 => i16::MAX,
                    _ => rng.next_u32() as i16,
                };
            }
            for v in z[..e].iter_mut() {
                *v = if rng.next_u32() % 8 == 0 {
                    i8::MIN
                } else {
                    rng.next_u32() as i8
                };
            }
            let mut got = [0x5a5a_5a5ai32; M + 1];
            feature_dots(&w[..m * e], e, &z[..e], &mut got[..m]);
            for i in 0..m {
                let want: i32 = (0..e)
                    .map(|c| i32::from(w[i * e + c]) * i32::from(z[c]))
                    .sum();
                if got[i] != want {
                    defmt::println!("e {=usize} m {=usize} row {=usize}", e, m, i);
                }
                check_eq!(got[i], want);
            }
            check_eq!(got[m], 0x5a5a_5a5a);
        }
    }
    Ok(())
}

/// The input image quantization (Helium: four RGB pixels per step with a byte scatter) against
/// `quant::quantize_f32` per value, for 1 to 40 pixels, 3 channels (the fast path) and 2 (the
/// general loop), with NaN, infinities, huge values, subnormals, rounding ties and random
/// values, and zero points −128, 0, 127; bytes past the image must stay untouched.
fn quantize_image_matches_scalar() -> TestResult {
    use kernels::elementwise::quantize_image_nchw;
    use vitae_edge::quant::quantize_f32;
    const MAX: usize = 40;
    let specials = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        1e30,
        -1e30,
        1e-40,
        -1e-40,
        0.5,
        -0.5,
        1.5,
        127.5,
        -128.5,
        254.5,
    ];
    let mut rng = Rng(0x9a17_0013);
    for pixels in 1..=MAX {
        for channels in [3usize, 2] {
            for (zp, inv) in [(0i32, 1.0f32), (-128, 0.37), (127, 41.0)] {
                let n = pixels * channels;
                let mut image = [0f32; 3 * MAX];
                for v in image[..n].iter_mut() {
                    *v = match rng.next_u32() % 4 {
                        0 => specials[rng.next_u32() as usize % specials.len()],
                        _ => (rng.next_u32() as i32 as f32) * 1e-7,
                    };
                }
                let mut got = [0x55i8; 3 * MAX + 1];
                let r =
                    quantize_image_nchw(&image[..n], channels, 1, pixels, inv, zp, &mut got[..n]);
                check!(r.is_ok());
                for p in 0..pixels {
                    for ch in 0..channels {
                        let want = quantize_f32(image[ch * pixels + p], inv, zp);
                        check_eq!(got[p * channels + ch], want);
                    }
                }
                check_eq!(got[n], 0x55);
            }
        }
    }
    Ok(())
}

/// `quant::requantize` against an i128 oracle at the extremes of every valid shift
/// (`kernels::cases::requant`): its final step is 64-bit and saturating, so a result of 2^30 or
/// more in magnitude must not wrap on any core (`round(acc · M / 2^(31 − shift))`, half up,
/// clamped to i32).
fn requantize_matches_i128_oracle_at_extremes() -> TestResult {
    use vitae_edge::quant::{MAX_SHIFT, MIN_SHIFT, requantize};
    let mut checked = 0usize;
    for (acc, r) in cases::requant::extremes() {
        let (got, want) = (requantize(acc, r), cases::requant::oracle(acc, r));
        if got != want {
            defmt::println!(
                "acc={=i32} m={=i32} shift={=i32}: {=i32} != {=i32}",
                acc,
                r.multiplier,
                r.shift,
                got,
                want
            );
        }
        check_eq!(got, want);
        checked += 1;
    }
    check_eq!(
        checked,
        cases::requant::ACCUMULATORS.len()
            * cases::requant::MULTIPLIERS.len()
            * (MAX_SHIFT - MIN_SHIFT + 1) as usize
    );
    Ok(())
}

/// A linear layer whose channels take the general requantization path with the largest
/// multiplier (2^31 − 1, shift 0) and biases near ±2^31: the optimized kernel equals the
/// reference and saturates with the sign of the accumulator (a wrapping final step gave the
/// opposite sign).
fn linear_saturates_with_the_right_sign_at_the_requantization_extremes() -> TestResult {
    let (tokens, k, n_out) = (5, 16, 4);
    let mut rng = Rng(0x5a7_0021);
    let mut input = [0i8; 5 * 16];
    let mut weights = [0i8; 16 * 4];
    rng.fill(&mut input);
    rng.fill(&mut weights);
    // |Σ w·x| ≤ 16·128·128 = 262,144: the biases keep the accumulators within 2^31 of zero.
    let bias = [i32::MAX - 300_000, i32::MIN + 300_000, 1000, -1000];
    let extreme = Requant {
        multiplier: i32::MAX,
        shift: 0,
    };
    let normal = Requant {
        multiplier: 1 << 30,
        shift: -8,
    };
    let requant = [extreme, extreme, normal, extreme];
    let p = LinearS8::new(tokens, k, n_out, &weights, &bias, &requant, 0, None);
    let Ok(p) = p else {
        check!(false);
        return Ok(());
    };
    let mut want = [0i8; 20];
    let mut got = [0i8; 20];
    let mut scratch = [0u8; 4096];
    let need = linear::linear_s8_scratch_size(tokens, k, n_out);
    check!(need <= scratch.len());
    check!(linear::linear_s8_reference(&p, &input, &mut want).is_ok());
    check!(linear::linear_s8(&p, &input, &mut got, &mut scratch[..need]).is_ok());
    for t in 0..tokens {
        check_eq!(want[t * n_out], 127);
        check_eq!(want[t * n_out + 1], -128);
    }
    same("linear at the requantization extremes", &got, &want)
}

/// `math::sqrt` (VSQRT on the Cortex-M55, `libm` elsewhere) against `libm::sqrtf`, bit for bit:
/// the host computes LayerNorm and the performer with `libm`. Zeros, subnormals, powers of two,
/// the largest finite value, infinity, and random values over the whole positive range.
fn sqrt_matches_libm() -> TestResult {
    let check = |x: f32| -> TestResult {
        let (got, want) = (vitae_edge::math::sqrt(x), libm::sqrtf(x));
        if got.to_bits() != want.to_bits() {
            defmt::println!(
                "sqrt({=u32:#x}) = {=u32:#x}, libm {=u32:#x}",
                x.to_bits(),
                got.to_bits(),
                want.to_bits()
            );
        }
        check_eq!(got.to_bits(), want.to_bits());
        Ok(())
    };
    for x in [
        0.0f32,
        1e-45,
        1.1e-38,
        1.0,
        2.0,
        4.0,
        f32::MAX,
        f32::INFINITY,
    ] {
        check(x)?;
    }
    let mut rng = Rng(0x5a17_0005);
    for _ in 0..2000 {
        check(f32::from_bits(rng.next_u32() & 0x7f7f_ffff))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// fp16 on the FPU (`kernels::f16_fpu`, `kernels::f16::{widen, narrow}`)

/// The FPU's half-to-single conversion against `half`'s software one, for all 65,536 halves
/// (NaNs included: both quiet them the same way).
fn f16_widen_matches_software_for_every_half() -> TestResult {
    let mut wrong = 0u32;
    for b in 0..=u16::MAX {
        let x = f16::from_bits(b);
        if f16k::widen(x).to_bits() != x.to_f32().to_bits() {
            if wrong == 0 {
                defmt::println!("widen {=u16:#x}: {=u32:#x}", b, f16k::widen(x).to_bits());
            }
            wrong += 1;
        }
    }
    check_eq!(wrong, 0);
    Ok(())
}

/// The two-at-a-time widening against one at a time, for every length up to 19 and every
/// offset of the source (any halfword alignment), leaving the rest of the output alone.
fn f16_widen_slice_matches_widen() -> TestResult {
    let mut rng = Rng(0xf16_0002);
    let mut src = [f16::ZERO; 24];
    cases::half_data::fill(&mut rng, &mut src);
    for start in 0..4 {
        for n in 0..20 {
            let mut got = [f32::NAN; 21];
            f16k::widen_slice(&src[start..start + n], &mut got);
            let want = src[start..start + n]
                .iter()
                .map(|&x| f16k::widen(x).to_bits());
            check!(got[..n].iter().map(|y| y.to_bits()).eq(want));
            check!(got[n..].iter().all(|y| y.is_nan()));
        }
    }
    Ok(())
}

/// The FPU's single-to-half rounding against `half`'s software one: at every midpoint between
/// two adjacent halves (both signs, subnormals and the overflow threshold included) and one f32
/// step either side, then a sweep of 2^20 spread bit patterns (NaNs, infinities, f32 subnormals).
fn f16_narrow_matches_software_at_every_rounding_boundary() -> TestResult {
    let mut wrong = 0u32;
    let mut probe = |bits: u32| {
        let x = f32::from_bits(bits);
        let (got, want) = (f16k::narrow(x).to_bits(), f16::from_f32(x).to_bits());
        if got != want {
            if wrong == 0 {
                defmt::println!("narrow {=u32:#x}: {=u16:#x} != {=u16:#x}", bits, got, want);
            }
            wrong += 1;
        }
    };
    for b in 0..0x7c00u16 {
        let lo = f16::from_bits(b).to_f32();
        // The next half up (65504's is 65536: the point where rounding overflows to infinity).
        let hi = if b == 0x7bff {
            65536.0
        } else {
            f16::from_bits(b + 1).to_f32()
        };
        let mid = ((lo as f64 + hi as f64) / 2.0) as f32;
        for sign in [0, 0x8000_0000] {
            for bits in [mid.to_bits() - 1, mid.to_bits(), mid.to_bits() + 1] {
                probe(bits | sign);
            }
        }
    }
    for i in 0..(1u32 << 20) {
        probe(i.wrapping_mul(4096) ^ (i.wrapping_mul(0x9e37_79b9) >> 20));
    }
    check_eq!(wrong, 0);
    Ok(())
}

// Room for the largest fp16 case's columns (four receptive fields of up to 288 values in f32).
const F16_SCRATCH: usize = 8192;

/// Fails (and logs where) unless the halves are equal bit for bit.
fn same_halves(what: &str, got: &[f16], want: &[f16]) -> TestResult {
    let differs = |(a, b): (&f16, &f16)| a.to_bits() != b.to_bits();
    if let Some(i) = got.iter().zip(want).position(differs) {
        defmt::println!(
            "{=str}: first difference at {=usize}: {=u16:#x} != {=u16:#x}",
            what,
            i,
            got[i].to_bits(),
            want[i].to_bits()
        );
    }
    check!(got.len() == want.len() && !got.iter().zip(want).any(differs));
    Ok(())
}

const F16_ACTS: [f16k::Activation; 3] = [
    f16k::Activation::None,
    f16k::Activation::Gelu,
    f16k::Activation::Silu,
];

/// The FPU convolution against the reference on random fp16 data (`cases::half_data`).
fn f16_conv_case(
    rng: &mut Rng,
    geom: ConvGeometry,
    offset: usize,
    extra: usize,
    act: f16k::Activation,
) -> TestResult {
    let slice = OutputSlice {
        offset,
        pixel_stride: offset + geom.out_c + extra,
    };
    let (n_in, n_out) = (
        geom.in_h * geom.in_w * geom.in_c,
        geom.out_h * geom.out_w * slice.pixel_stride,
    );
    let need = f16_fpu::conv_scratch_bytes(&geom);
    if n_in > CONV_IN || geom.weight_len() > CONV_W || n_out > CONV_OUT || geom.out_c > 128 {
        defmt::println!("fp16 conv case larger than the test buffers");
        check!(false);
    }
    check!(need <= F16_SCRATCH);
    let mut input = [f16::ZERO; CONV_IN];
    let mut weights = [f16::ZERO; CONV_W];
    let mut bias = [0f32; 128];
    let (input, weights, bias) = (
        &mut input[..n_in],
        &mut weights[..geom.weight_len()],
        &mut bias[..geom.out_c],
    );
    cases::half_data::fill(rng, input);
    cases::half_data::fill(rng, weights);
    cases::half_data::bias(rng, bias);
    let mut want = [f16::NAN; CONV_OUT];
    let mut got = [f16::NAN; CONV_OUT];
    let mut scratch = [0u8; F16_SCRATCH];
    let (want, got) = (&mut want[..n_out], &mut got[..n_out]);
    check!(f16k::conv_f16_reference(&geom, weights, bias, act, slice, input, want).is_ok());
    let scratch = &mut scratch[..need];
    check!(f16_fpu::conv(&geom, weights, bias, act, slice, input, got, scratch).is_ok());
    same_halves("fp16 conv", got, want)
}

/// The suite's ViTAE convolutions in fp16.
fn f16_conv_vitae_shapes_match_reference() -> TestResult {
    let mut rng = Rng(0xf16_c001);
    for (i, g) in cases::conv::vitae().into_iter().enumerate() {
        let Some(g) = g else {
            check!(false);
            continue;
        };
        f16_conv_case(&mut rng, g, i % 3, i % 2, F16_ACTS[i % 3])?;
    }
    Ok(())
}

/// The suite's random convolutions in fp16.
fn f16_conv_random_shapes_match_reference() -> TestResult {
    let mut rng = Rng(0xf16_c002);
    let limits = cases::conv::Limits {
        input: CONV_IN,
        weights: CONV_W,
        output: CONV_OUT,
    };
    for i in 0..RANDOM_CASES {
        let r = cases::conv::random(&mut rng, limits);
        f16_conv_case(&mut rng, r.geom, r.offset, r.extra, F16_ACTS[i % 3])?;
    }
    Ok(())
}

/// The FPU linear layer against the reference: the ViTAE shapes, then every token count up to
/// nine (the tile's remainders) with short and odd feature counts.
fn f16_linear_shapes_match_reference() -> TestResult {
    let mut rng = Rng(0xf16_1001);
    let small = (1..=9).flat_map(|t| [(t, 1, 1), (t, 3, 5), (t, 8, 4), (t, 17, 9)]);
    // The weights of the largest shape (32 KiB) in a static: with the rest on the stack they
    // would not fit the 32–64 KiB stacks of the boards.
    let Some(all_weights) = cortex_m::singleton!(: [f16; LIN_W] = [f16::ZERO; LIN_W]) else {
        check!(false);
        return Ok(());
    };
    for (i, (t, k, n)) in cases::linear::VITAE
        .iter()
        .copied()
        .chain(small)
        .enumerate()
    {
        check!(t * k <= LIN_IN && k * n <= LIN_W && t * n <= LIN_OUT && n <= 512);
        let mut input = [f16::ZERO; LIN_IN];
        let weights = &mut *all_weights;
        let mut bias = [0f32; 512];
        let (input, weights, bias) = (&mut input[..t * k], &mut weights[..k * n], &mut bias[..n]);
        cases::half_data::fill(&mut rng, input);
        cases::half_data::fill(&mut rng, weights);
        cases::half_data::bias(&mut rng, bias);
        let act = F16_ACTS[i % 3];
        let mut want = [f16::NAN; LIN_OUT];
        let mut got = [f16::NAN; LIN_OUT];
        let mut scratch = [0u8; F16_SCRATCH];
        let need = f16_fpu::linear_scratch_bytes(k);
        check!(need <= F16_SCRATCH);
        let (want, got) = (&mut want[..t * n], &mut got[..t * n]);
        check!(f16k::linear_f16_reference(t, k, n, weights, bias, act, input, want).is_ok());
        let scratch = &mut scratch[..need];
        check!(f16_fpu::linear(t, k, n, weights, bias, act, input, got, scratch).is_ok());
        same_halves("fp16 linear", got, want)?;
    }
    Ok(())
}

/// Only in builds with `--features demo-failure` (`cargo xtask test --demo-failure`).
fn deliberately_failing() -> TestResult {
    check_eq!(dot::dot_s8(&[1, 2], &[3, 4]), 12);
    Ok(())
}

/// The subnormal suite (`kernels::cases::subnormal`): inputs and parameters that bring subnormal
/// operands and products or sums below 2^-126 (some that IEEE rounds up to 2^-126) to every f32
/// step the Cortex-M55 vectorizes, at the ends of the ranges the validator accepts. Each case's
/// output digest must be the host's (pinned in the suite, which its host test checks), and each
/// step must agree with its scalar reference on this core.
fn subnormals_through_every_vectorized_step() -> TestResult {
    let mut failed = 0;
    for c in cases::subnormal::CASES {
        let o = (c.run)();
        if o.digest != c.digest || o.mismatches != 0 {
            defmt::println!(
                "{=str}: digest {=u64:#x}, host {=u64:#x}, {=u32} mismatches",
                c.name,
                o.digest,
                c.digest,
                o.mismatches
            );
            failed += 1;
        }
    }
    check_eq!(failed, 0);
    Ok(())
}
