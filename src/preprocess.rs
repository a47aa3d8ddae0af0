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
}
