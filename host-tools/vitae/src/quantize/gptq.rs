//! int4 weights with error feedback (GPTQ, Frantar et al. 2022): the weights of a row are rounded
//! one input at a time, and each rounding error is spread over the inputs not rounded yet in
//! proportion to how the calibration inputs correlate, so the layer's *outputs* on the
//! calibration data move as little as possible. At 15 levels plain rounding loses too much (a
//! ViTAE-T with every linear layer in int4 fell to logits cosine 0.91); this is what makes int4
//! usable.
//!
//! Per row the scale is fixed first (the clipping with the least squared error on the row,
//! [`super::lower`]); only the rounding uses the correlations `H = Σ x xᵀ` of the layer's inputs
//! ([`Gram`]): a linear layer's input tokens, a convolution's receptive fields (one `H` per
//! group). `H` is damped by 1 % of its mean diagonal (the usual choice; it keeps
//! the inverse well conditioned when there are fewer tokens than inputs).

/// `Σ x xᵀ` over the calibration tokens of one tensor of `k` channels (upper and lower halves
/// both filled).
#[derive(Clone, Debug)]
pub struct Gram {
    /// Channels.
    pub k: usize,
    /// `k × k`, row-major.
    pub sum: Vec<f64>,
    /// Tokens summed.
    pub tokens: usize,
}

impl Gram {
    /// An empty sum over `k` channels.
    pub fn new(k: usize) -> Self {
        Gram {
            k,
            sum: vec![0.0; k * k],
            tokens: 0,
        }
    }

    /// Adds the tokens of `x` (`tokens × k`, row-major).
    pub fn add(&mut self, x: &[f32]) {
        let k = self.k;
        for t in x.chunks_exact(k) {
            for i in 0..k {
                let xi = t[i] as f64;
                if xi == 0.0 {
                    continue;
                }
                let row = &mut self.sum[i * k..(i + 1) * k];
                for (s, &xj) in row[i..].iter_mut().zip(&t[i..]) {
                    *s += xi * xj as f64;
                }
            }
            self.tokens += 1;
        }
    }

    /// Adds the receptive fields of every output pixel of group `group` of a convolution
    /// (`spec`, output `out_h × out_w`) over the HWC map `x` (`h × w × spec.in_channels`), in the
    /// order of an OHWI weight row (`(ky · kw + kx) · in_per_group + ic`), padding as zeros (the
    /// real value of the quantized padding).
    pub fn add_patches(
        &mut self,
        x: &[f32],
        (h, w): (usize, usize),
        spec: &crate::reference::ops::ConvSpec,
        group: usize,
        (out_h, out_w): (usize, usize),
    ) {
        let (kh, kw, cin_g) = (spec.kernel[0], spec.kernel[1], spec.in_per_group());
        let c = spec.in_channels;
        let mut patch = vec![0.0f32; self.k];
        for oy in 0..out_h {
            for ox in 0..out_w {
                patch.fill(0.0);
                for ky in 0..kh {
                    let iy = (oy * spec.stride[0] + ky * spec.dilation[0]) as isize
                        - spec.padding[0] as isize;
                    if iy < 0 || iy as usize >= h {
                        continue;
                    }
                    for kx in 0..kw {
                        let ix = (ox * spec.stride[1] + kx * spec.dilation[1]) as isize
                            - spec.padding[1] as isize;
                        if ix < 0 || ix as usize >= w {
                            continue;
                        }
                        let src = ((iy as usize * w + ix as usize) * c + group * cin_g)..;
                        let dst = (ky * kw + kx) * cin_g..;
                        patch[dst][..cin_g].copy_from_slice(&x[src][..cin_g]);
                    }
                }
                self.add(&patch);
            }
        }
    }

    /// The full symmetric matrix (the sums fill only the upper half).
    fn symmetric(&self) -> Vec<f64> {
        let k = self.k;
        let mut h = self.sum.clone();
        for i in 0..k {
            for j in 0..i {
                h[i * k + j] = h[j * k + i];
            }
        }
        h
    }
}

/// Lower Cholesky factor of the symmetric positive definite `a` (`n × n`), in place; `None`
/// when it is not positive definite.
fn cholesky(a: &mut [f64], n: usize) -> Option<()> {
    for j in 0..n {
        let mut d = a[j * n + j];
        for p in 0..j {
            d -= a[j * n + p] * a[j * n + p];
        }
        if d <= 0.0 || !d.is_finite() {
            return None;
        }
        let d = d.sqrt();
        a[j * n + j] = d;
        for i in j + 1..n {
            let mut s = a[i * n + j];
            for p in 0..j {
                s -= a[i * n + p] * a[j * n + p];
            }
            a[i * n + j] = s / d;
        }
        for i in 0..j {
            a[i * n + j] = 0.0;
        }
    }
    Some(())
}

/// The upper factor `U` with `Uᵀ U = H⁻¹`, from `H`: the order in which GPTQ needs the inverse.
fn inverse_upper_factor(mut h: Vec<f64>, n: usize) -> Option<Vec<f64>> {
    cholesky(&mut h, n)?;
    // L⁻¹ by forward substitution, column by column.
    let mut linv = vec![0.0; n * n];
    for c in 0..n {
        for i in c..n {
            let mut s = if i == c { 1.0 } else { 0.0 };
            for p in c..i {
                s -= h[i * n + p] * linv[p * n + c];
            }
            linv[i * n + c] = s / h[i * n + i];
        }
    }
    // H⁻¹ = L⁻ᵀ L⁻¹.
    let mut hinv = vec![0.0; n * n];
    for i in 0..n {
        for j in i..n {
            let s: f64 = (j..n).map(|p| linv[p * n + i] * linv[p * n + j]).sum();
            hinv[i * n + j] = s;
            hinv[j * n + i] = s;
        }
    }
    // Upper U with Uᵀ U = H⁻¹: the transpose of H⁻¹'s lower Cholesky factor.
    cholesky(&mut hinv, n)?;
    let mut u = vec![0.0; n * n];
    for i in 0..n {
        for j in i..n {
            u[i * n + j] = hinv[j * n + i];
        }
    }
    Some(u)
}

/// Rounds `w` (`rows × k`, row-major) to integers in `−7..=7` with the given per-row `scales`,
/// each rounding error fed back over the row's later inputs through the calibration inputs'
/// correlations `gram`. Falls back to plain rounding when the damped `H` is still not positive
/// definite (never seen; the fallback keeps a degenerate calibration from failing the run).
pub fn quantize_rows(w: &[f32], k: usize, scales: &[f32], gram: &Gram) -> Vec<i8> {
    let round = |x: f64, s: f64| (x / s).round().clamp(-7.0, 7.0);
    let plain = || {
        w.chunks_exact(k)
            .zip(scales)
            .flat_map(|(row, &s)| row.iter().map(move |&x| round(x as f64, s as f64) as i8))
            .collect()
    };
    if gram.k != k || gram.tokens == 0 {
        return plain();
    }
    let mut h = gram.symmetric();
    let mean_diag = (0..k).map(|i| h[i * k + i]).sum::<f64>() / k as f64;
    let damp = 0.01 * mean_diag.max(1e-12);
    // Inputs that never fire carry no information: their weights do not matter to the outputs.
    let dead: Vec<bool> = (0..k).map(|i| h[i * k + i] == 0.0).collect();
    for i in 0..k {
        if dead[i] {
            h[i * k + i] = 1.0;
        }
        h[i * k + i] += damp;
    }
    let Some(u) = inverse_upper_factor(h, k) else {
        return plain();
    };
    let mut out = Vec::with_capacity(w.len());
    let mut row = vec![0.0f64; k];
    for (src, &s) in w.chunks_exact(k).zip(scales) {
        let s = s as f64;
        for (r, &x) in row.iter_mut().zip(src) {
            *r = x as f64;
        }
        for i in 0..k {
            let q = round(row[i], s);
            out.push(q as i8);
            let err = (row[i] - q * s) / u[i * k + i];
            for j in i + 1..k {
                row[j] -= err * u[i * k + j];
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng(seed: &mut u64) -> f64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        (*seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    }

    #[test]
    fn factor_inverts() {
        let n = 6;
        let mut seed = 7u64;
        let a: Vec<f64> = (0..n * n).map(|_| rng(&mut seed)).collect();
        // H = A Aᵀ + I
        let mut h = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                h[i * n + j] = (0..n).map(|p| a[i * n + p] * a[j * n + p]).sum::<f64>()
                    + if i == j { 1.0 } else { 0.0 };
            }
        }
        let u = inverse_upper_factor(h.clone(), n).unwrap();
        // (Uᵀ U) H = I
        for i in 0..n {
            for j in 0..n {
                let hinv_row: Vec<f64> = (0..n)
                    .map(|c| (0..n).map(|p| u[p * n + i] * u[p * n + c]).sum())
                    .collect();
                let v: f64 = (0..n).map(|c| hinv_row[c] * h[c * n + j]).sum();
                assert!(
                    (v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-9,
                    "{i},{j}: {v}"
                );
            }
        }
    }

    /// A receptive field is laid out as an OHWI weight row: a 2×2 kernel over a 2×2×3 map with
    /// one output pixel sees the map in HWC order; a second group starts at its own channels; a
    /// padded tap contributes zeros.
    #[test]
    fn patches_follow_the_weight_layout() {
        use crate::reference::ops::ConvSpec;
        let x: Vec<f32> = (1..=12).map(|v| v as f32).collect();
        let spec = |groups: usize, padding| ConvSpec {
            in_channels: 3 * groups,
            out_channels: groups,
            kernel: [2, 2],
            stride: [1, 1],
            padding: [padding, padding],
            dilation: [1, 1],
            groups,
        };
        let mut g = Gram::new(12);
        g.add_patches(&x, (2, 2), &spec(1, 0), 0, (1, 1));
        for i in 0..12 {
            for j in i..12 {
                assert_eq!(g.sum[i * 12 + j], x[i] as f64 * x[j] as f64, "{i},{j}");
            }
        }
        // 6 channels in 2 groups of 3: group 1 reads channels 3..6 of each pixel.
        let x6: Vec<f32> = (1..=24).map(|v| v as f32).collect();
        let mut g1 = Gram::new(12);
        g1.add_patches(&x6, (2, 2), &spec(2, 0), 1, (1, 1));
        let want: Vec<f32> = (0..4)
            .flat_map(|p| x6[p * 6 + 3..p * 6 + 6].to_vec())
            .collect();
        assert_eq!(g1.sum[0], (want[0] * want[0]) as f64);
        assert_eq!(g1.sum[11 * 12 + 11], (want[11] * want[11]) as f64);
        // Padding 1: the top-left output pixel's first three taps are outside the map.
        let mut gp = Gram::new(12);
        gp.add_patches(&x, (2, 2), &spec(1, 1), 0, (1, 1));
        assert_eq!(gp.sum[0], 0.0);
        assert_eq!(gp.sum[9 * 12 + 9], (x[0] * x[0]) as f64);
    }

    /// On correlated inputs, error feedback gives smaller output errors than plain rounding.
    #[test]
    fn outputs_move_less_than_with_plain_rounding() {
        let (k, rows, tokens) = (32, 16, 200);
        let mut seed = 99u64;
        let base: Vec<f64> = (0..tokens).map(|_| rng(&mut seed)).collect();
        let x: Vec<f32> = (0..tokens * k)
            .map(|i| (base[i / k] + 0.3 * rng(&mut seed)) as f32)
            .collect();
        let w: Vec<f32> = (0..rows * k).map(|_| rng(&mut seed) as f32).collect();
        let mut gram = Gram::new(k);
        gram.add(&x);
        let scales: Vec<f32> = w
            .chunks_exact(k)
            .map(|r| r.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 7.0)
            .collect();
        let fed = quantize_rows(&w, k, &scales, &gram);
        let plain: Vec<i8> = w
            .chunks_exact(k)
            .zip(&scales)
            .flat_map(|(r, &s)| {
                r.iter()
                    .map(move |&v| (v / s).round().clamp(-7.0, 7.0) as i8)
            })
            .collect();
        let err = |q: &[i8]| -> f64 {
            let mut e = 0.0;
            for t in x.chunks_exact(k) {
                for r in 0..rows {
                    let s = scales[r] as f64;
                    let d: f64 = (0..k)
                        .map(|i| (w[r * k + i] as f64 - q[r * k + i] as f64 * s) * t[i] as f64)
                        .sum();
                    e += d * d;
                }
            }
            e
        };
        assert!(fed.iter().all(|&q| (-7..=7).contains(&q)));
        assert!(
            err(&fed) < 0.8 * err(&plain),
            "{} vs {}",
            err(&fed),
            err(&plain)
        );
    }
}
