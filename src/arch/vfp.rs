//! Half precision on the scalar FPU of Armv7E-M (FPv4-SP, FPv5) and Armv8.1-M cores: the
//! conversions, the packing of fp16 activations into f32 columns and the fp16 × f32 matrix tile.
//!
//! Why assembly: VCVTB/VCVTT convert between binary16 and binary32 in one instruction, and the
//! `half` crate converts in software on these targets (20–40 instructions, with branches). Rust
//! has no stable half type that would let the compiler emit them.
//!
//! Why the results equal the reference's: the conversions are exact (half to single) or
//! correctly rounded to nearest-even (single to half, the FPSCR reset mode), as `half`'s are; and
//! VMLA.F32 is the *chained* multiply-accumulate of the Arm FPU (the product is rounded, then the
//! sum), the same two roundings as the reference's `acc + x * w` (VFMA would be the fused one).
//! The firmware must keep FPSCR.AHP = 0 (IEEE half precision) and FPSCR.RMode = 0 (round to
//! nearest), both reset values; the on-target tests check every half and a sweep of singles.
//!
//! The Cortex-M4's Rust target does not give inline assembly the single-precision registers (the
//! `sreg` class needs the `vfp2` feature, which a single-precision FPU lacks), so no block here can
//! declare an S register clobbered: each saves the S registers it uses with VPUSH and restores
//! them with VPOP.
//!
//! Compiled as assembly for Arm cores with a hardware FPU (`vitae_vfp`), and as plain Rust with
//! the same results for host tests.
#![allow(unsafe_code)]

#[cfg(all(target_arch = "arm", vitae_vfp))]
use core::arch::asm;
use half::f16;

/// Pixels (or tokens) per tile: the columns of [`mac_4x4`].
pub const TILE: usize = 4;

/// `x` as f32 (exact).
#[inline(always)]
pub fn f16_to_f32(x: f16) -> f32 {
    #[cfg(all(target_arch = "arm", vitae_vfp))]
    {
        let bits: u32;
        // SAFETY: register-only FPU instructions on s0, which is saved and restored around them
        // (8 bytes of stack); no other memory is touched and no flags are written.
        unsafe {
            asm!(
                "vpush {{s0}}",
                "vmov s0, {x}",
                "vcvtb.f32.f16 s0, s0",
                "vmov {y}, s0",
                "vpop {{s0}}",
                x = in(reg) u32::from(x.to_bits()),
                y = lateout(reg) bits,
                options(pure, nomem, preserves_flags),
            );
        }
        f32::from_bits(bits)
    }
    #[cfg(not(all(target_arch = "arm", vitae_vfp)))]
    {
        x.to_f32()
    }
}

/// `x` rounded to the nearest half (ties to even).
#[inline(always)]
pub fn f32_to_f16(x: f32) -> f16 {
    #[cfg(all(target_arch = "arm", vitae_vfp))]
    {
        let bits: u32;
        // SAFETY: as in `f16_to_f32`. VCVTB writes the bottom half of s0 only; the top half is
        // whatever `x` had there and is masked off below.
        unsafe {
            asm!(
                "vpush {{s0}}",
                "vmov s0, {x}",
                "vcvtb.f16.f32 s0, s0",
                "vmov {y}, s0",
                "vpop {{s0}}",
                x = in(reg) x.to_bits(),
                y = lateout(reg) bits,
                options(pure, nomem, preserves_flags),
            );
        }
        f16::from_bits(bits as u16)
    }
    #[cfg(not(all(target_arch = "arm", vitae_vfp)))]
    {
        f16::from_f32(x)
    }
}

/// `dst[i] = src[i]` as f32 (exact) for `i < min(src.len(), dst.len())`: about 3.5 instructions
/// per value (LDR of two halves, VMOV, VCVTB, VCVTT, VSTM of two, the loop), against about 7 for
/// [`f16_to_f32`] one at a time.
pub fn widen_into(src: &[f16], dst: &mut [f32]) {
    let n = src.len().min(dst.len());
    if n == 0 {
        return;
    }
    #[cfg(all(target_arch = "arm", vitae_vfp))]
    {
        // SAFETY: reads `n` halves from `src` (LDR/LDRH: any alignment) and writes `n` words to
        // `dst` (a `&mut [f32]`, word-aligned for VSTM/VSTR), in bounds by the choice of `n ≥ 1`.
        // s0–s1 are saved and restored; every core register written is an operand. (The odd
        // count's bit is kept in a register: the pair loop's SUBS overwrites the flags.)
        unsafe {
            asm!(
                "vpush {{s0-s1}}",
                "and {odd}, {n}, #1",
                "lsrs {n}, {n}, #1",
                "beq 3f",
                "2:",
                "ldr {t}, [{src}], #4",
                "vmov s1, {t}",
                "vcvtb.f32.f16 s0, s1",
                "vcvtt.f32.f16 s1, s1",
                "vstmia {dst}!, {{s0-s1}}",
                "subs {n}, {n}, #1",
                "bne 2b",
                "3:",
                "cmp {odd}, #0",
                "beq 4f",
                "ldrh {t}, [{src}]",
                "vmov s0, {t}",
                "vcvtb.f32.f16 s0, s0",
                "vstr s0, [{dst}]",
                "4:",
                "vpop {{s0-s1}}",
                src = inout(reg) src.as_ptr() => _,
                dst = inout(reg) dst.as_mut_ptr() => _,
                n = inout(reg) n => _,
                odd = out(reg) _,
                t = out(reg) _,
            );
        }
    }
    #[cfg(not(all(target_arch = "arm", vitae_vfp)))]
    for (y, x) in dst[..n].iter_mut().zip(src) {
        *y = x.to_f32();
    }
}

/// Where [`pack_4`] reads: `runs` runs of `run_len` consecutive halves, run `r` starting at
/// `first + r·run_step` for the first column, and column `p` at `pixel[p]` further.
#[derive(Clone, Copy, Debug)]
pub struct PackRuns {
    /// Index of the first column's first value.
    pub first: usize,
    /// Offset of each column from the first (`pixel[0]` is 0).
    pub pixel: [usize; TILE],
    /// Runs to read.
    pub runs: usize,
    /// Values per run (> 0).
    pub run_len: usize,
    /// From one run's start to the next one's.
    pub run_step: usize,
}

impl PackRuns {
    /// Values packed per column.
    pub fn len(&self) -> usize {
        self.runs * self.run_len
    }

    /// The largest index read, or `None` when that overflows.
    fn last_index(&self) -> Option<usize> {
        let run = self.runs.checked_sub(1)?.checked_mul(self.run_step)?;
        let pixel = *self.pixel.iter().max()?;
        self.first
            .checked_add(run)?
            .checked_add(pixel)?
            .checked_add(self.run_len.checked_sub(1)?)
    }
}

/// Packs four columns of f32 from fp16 `src`: `dst[4·i + p] = src[first + pixel[p] + r·run_step
/// + j]` for value `i = r·run_len + j`. Returns false (nothing written) when a read or write
/// would fall outside the slices, or `pixel[0] ≠ 0`.
///
/// About 3.3 instructions per value: per value of the four columns, four LDRH, two VMOV (a pair
/// of core registers each), four VCVTB, one VSTM, and the loop.
pub fn pack_4(src: &[f16], runs: &PackRuns, dst: &mut [f32]) -> bool {
    let n = runs.len();
    let fits = runs.pixel[0] == 0
        && runs.run_len > 0
        && runs.last_index().is_some_and(|last| last < src.len())
        && n.checked_mul(TILE).is_some_and(|need| need <= dst.len());
    if !fits {
        return false;
    }
    if n == 0 {
        return true;
    }
    #[cfg(all(target_arch = "arm", vitae_vfp))]
    {
        let params: [u32; 2] = [runs.run_len as u32, (2 * runs.run_step) as u32];
        // SAFETY: every address read is `src + 2·(first + pixel[p] + r·run_step + j)` for
        // `r < runs`, `j < run_len`, all checked inside `src` above (LDRH: any halfword
        // alignment); the writes are `4·n` consecutive words from `dst` (a `&mut [f32]`, so
        // word-aligned for VSTM), checked above. s0–s3 are saved and restored; every core
        // register written is an operand.
        unsafe {
            asm!(
                "vpush {{s0-s3}}",
                "2:",
                "ldr {k}, [{prm}]",
                "mov {s}, {run}",
                "3:",
                "ldrh {t0}, [{s}]",
                "ldrh {t1}, [{s}, {o1}]",
                "vmov s0, s1, {t0}, {t1}",
                "ldrh {t0}, [{s}, {o2}]",
                "ldrh {t1}, [{s}, {o3}]",
                "vmov s2, s3, {t0}, {t1}",
                "adds {s}, {s}, #2",
                "vcvtb.f32.f16 s0, s0",
                "vcvtb.f32.f16 s1, s1",
                "vcvtb.f32.f16 s2, s2",
                "vcvtb.f32.f16 s3, s3",
                "vstmia {d}!, {{s0-s3}}",
                "subs {k}, {k}, #1",
                "bne 3b",
                "ldr {k}, [{prm}, #4]",
                "add {run}, {run}, {k}",
                "subs {runs}, {runs}, #1",
                "bne 2b",
                "vpop {{s0-s3}}",
                run = inout(reg) src.as_ptr().add(runs.first) => _,
                runs = inout(reg) runs.runs => _,
                prm = in(reg) params.as_ptr(),
                o1 = in(reg) 2 * runs.pixel[1],
                o2 = in(reg) 2 * runs.pixel[2],
                o3 = in(reg) 2 * runs.pixel[3],
                d = inout(reg) dst.as_mut_ptr() => _,
                k = out(reg) _,
                s = out(reg) _,
                t0 = out(reg) _,
                t1 = out(reg) _,
            );
        }
    }
    #[cfg(not(all(target_arch = "arm", vitae_vfp)))]
    {
        let mut out = dst.chunks_exact_mut(TILE);
        for r in 0..runs.runs {
            let start = runs.first + r * runs.run_step;
            for j in 0..runs.run_len {
                let column = out.next().expect("checked above");
                for (y, &off) in column.iter_mut().zip(&runs.pixel) {
                    *y = src[start + off + j].to_f32();
                }
            }
        }
    }
    true
}

/// The fp16 × f32 tile: for `k < n`, in that order, `acc[4·o + p] = acc[4·o + p] + cols[4·k + p]
/// · w_o[k]` (product rounded, then the sum), for four weight rows `w_o = rows[o]` and the four
/// columns of [`pack_4`]. `n` is limited to what the slices hold.
///
/// Per two values of `k` (32 MACs): one VLDM of eight column values, per row one LDR (any
/// alignment), one VMOV and two conversions, then 32 VMLA and the loop: about 1.6 instructions
/// per MAC, plus about 10 per call.
pub fn mac_4x4(acc: &mut [f32; TILE * TILE], cols: &[f32], rows: [&[f16]; TILE], n: usize) {
    let n = rows
        .iter()
        .fold(n.min(cols.len() / TILE), |n, r| n.min(r.len()));
    if n == 0 {
        return;
    }
    #[cfg(all(target_arch = "arm", vitae_vfp))]
    {
        // One row `w` against the columns of one value of `k` in s16–s19: its half converted
        // into s24, four VMLA into the row's accumulators.
        macro_rules! one {
            ($w:literal, $a0:literal, $a1:literal, $a2:literal, $a3:literal) => {
                concat!(
                    "ldrh {t}, [{",
                    $w,
                    "}], #2\n",
                    "vmov s26, {t}\n",
                    "vcvtb.f32.f16 s24, s26\n",
                    "vmla.f32 s",
                    $a0,
                    ", s16, s24\n",
                    "vmla.f32 s",
                    $a1,
                    ", s17, s24\n",
                    "vmla.f32 s",
                    $a2,
                    ", s18, s24\n",
                    "vmla.f32 s",
                    $a3,
                    ", s19, s24\n",
                )
            };
        }
        // Two values of `k` (columns in s16–s23): both halves of one word, k before k + 1 for
        // each accumulator.
        macro_rules! two {
            ($w:literal, $a0:literal, $a1:literal, $a2:literal, $a3:literal) => {
                concat!(
                    "ldr {t}, [{",
                    $w,
                    "}], #4\n",
                    "vmov s26, {t}\n",
                    "vcvtb.f32.f16 s24, s26\n",
                    "vcvtt.f32.f16 s25, s26\n",
                    "vmla.f32 s",
                    $a0,
                    ", s16, s24\n",
                    "vmla.f32 s",
                    $a1,
                    ", s17, s24\n",
                    "vmla.f32 s",
                    $a2,
                    ", s18, s24\n",
                    "vmla.f32 s",
                    $a3,
                    ", s19, s24\n",
                    "vmla.f32 s",
                    $a0,
                    ", s20, s25\n",
                    "vmla.f32 s",
                    $a1,
                    ", s21, s25\n",
                    "vmla.f32 s",
                    $a2,
                    ", s22, s25\n",
                    "vmla.f32 s",
                    $a3,
                    ", s23, s25\n",
                )
            };
        }
        // SAFETY: reads `n` halves from each row (LDR/LDRH: any alignment) and `4·n` words from
        // `cols` (a `&[f32]`, word-aligned for VLDM), all in bounds by the choice of `n ≥ 1`;
        // reads and writes the 16 words of `acc`. s0–s26 are saved and restored; every core
        // register written is an operand. The flags of LSRS survive the odd value's block (LDRH,
        // VMOV, VCVT and VMLA leave the APSR alone).
        unsafe {
            asm!(
                "vpush {{s0-s26}}",
                "vldmia {acc}, {{s0-s15}}",
                // An odd count runs its first value alone, then pairs: k stays in order.
                "lsrs {n}, {n}, #1",
                "bcc 2f",
                "vldmia {cols}!, {{s16-s19}}",
                one!("w0", "0", "1", "2", "3"),
                one!("w1", "4", "5", "6", "7"),
                one!("w2", "8", "9", "10", "11"),
                one!("w3", "12", "13", "14", "15"),
                "2:",
                "beq 4f",
                "3:",
                "vldmia {cols}!, {{s16-s23}}",
                two!("w0", "0", "1", "2", "3"),
                two!("w1", "4", "5", "6", "7"),
                two!("w2", "8", "9", "10", "11"),
                two!("w3", "12", "13", "14", "15"),
                "subs {n}, {n}, #1",
                "bne 3b",
                "4:",
                "vstmia {acc}, {{s0-s15}}",
                "vpop {{s0-s26}}",
                acc = in(reg) acc.as_mut_ptr(),
                cols = inout(reg) cols.as_ptr() => _,
                w0 = inout(reg) rows[0].as_ptr() => _,
                w1 = inout(reg) rows[1].as_ptr() => _,
                w2 = inout(reg) rows[2].as_ptr() => _,
                w3 = inout(reg) rows[3].as_ptr() => _,
                n = inout(reg) n => _,
                t = out(reg) _,
            );
        }
    }
    #[cfg(not(all(target_arch = "arm", vitae_vfp)))]
    {
        for k in 0..n {
            for (o, row) in rows.iter().enumerate() {
                let w = row[k].to_f32();
                for (p, a) in acc[TILE * o..][..TILE].iter_mut().enumerate() {
                    *a += cols[TILE * k + p] * w;
                }
            }
        }
    }
}
