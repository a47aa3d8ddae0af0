//! Input preprocessing that must be identical in training and on the device.

/// The demo's digits: sklearn `load_digits` images, 8×8 pixels with integer values 0..=16.
pub mod digits {
    /// Source side length.
    pub const SRC: usize = 8;
    /// Nearest-neighbour upsampling factor.
    pub const UPSAMPLE: usize = 4;
    /// Model input side length (32).
    pub const SIZE: usize = SRC * UPSAMPLE;
    /// Values per model input (one channel).
    pub const INPUT_LEN: usize = SIZE * SIZE;

    /// The normalization of [`preprocess`] written for u8 pixels the way `vitae quantize
    /// --input u8 --mean M --std S` takes it, `x = (p / 255 − M) / S`: `v/8 − 1` is
    /// `(v/255 − 8/255) / (8/255)`.
    pub const PIXEL_MEAN: f32 = 8.0 / 255.0;
    /// See [`PIXEL_MEAN`].
    pub const PIXEL_STD: f32 = 8.0 / 255.0;

    /// The demo image as u8 pixels (`32 × 32 × 1`, HWC) for a blob that takes pixels: the
    /// upsampling of [`preprocess`] without the normalization, which such a blob does itself.
    pub fn upsample(pixels: &[u8; SRC * SRC], out: &mut [u8; INPUT_LEN]) {
        for (y, row) in out.chunks_exact_mut(SIZE).enumerate() {
            for (x, v) in row.iter_mut().enumerate() {
                *v = pixels[(y / UPSAMPLE) * SRC + x / UPSAMPLE].min(16);
            }
        }
    }

    /// The one definition of the demo preprocessing: upsample ×4 by nearest neighbour, then
    /// `x = v/8 − 1` (that is `(v/16 − 0.5)/0.5`, range [−1, 1]); output `1 × 32 × 32` (CHW).
    /// Every value is exact in f32. The training data is produced by this function too
    /// (`vitae digits`), so training and device see the same numbers.
    pub fn preprocess(pixels: &[u8; SRC * SRC], out: &mut [f32; INPUT_LEN]) {
        for (y, row) in out.chunks_exact_mut(SIZE).enumerate() {
            for (x, v) in row.iter_mut().enumerate() {
                let p = pixels[(y / UPSAMPLE) * SRC + x / UPSAMPLE].min(16);
                *v = p as f32 / 8.0 - 1.0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::digits::*;

    #[test]
    fn upsamples_and_normalizes() {
        let mut px = [0u8; 64];
        px[0] = 16;
        px[9] = 8; // row 1, col 1
        let mut out = [0.0f32; INPUT_LEN];
        preprocess(&px, &mut out);
        assert_eq!(out[0], 1.0);
        assert_eq!(out[3 * SIZE + 3], 1.0);
        assert_eq!(out[4], -1.0);
        assert_eq!(out[4 * SIZE + 4], 0.0);
        assert_eq!(out[7 * SIZE + 7], 0.0);
        assert_eq!(out[8 * SIZE + 8], -1.0);
    }

    #[test]
    fn upsample_is_preprocess_without_the_normalization() {
        let px: [u8; 64] = core::array::from_fn(|i| (i % 17) as u8);
        let (mut f, mut u) = ([0.0f32; INPUT_LEN], [0u8; INPUT_LEN]);
        preprocess(&px, &mut f);
        upsample(&px, &mut u);
        for (x, p) in f.iter().zip(u) {
            let folded = (p as f32 / 255.0 - PIXEL_MEAN) / PIXEL_STD;
            assert!((x - folded).abs() <= 1e-6, "{x} vs {folded} for pixel {p}");
        }
    }
}
