//! Camera pixels into the input tensor: u8 HWC images through per-channel 256-entry tables.
//!
//! A u8 pixel has 256 values, so any per-channel function of it — the normalization
//! `(p / 255 − mean) / std` followed by the quantization to int8, or the conversion to fp16 — is
//! exactly a 256-entry table per channel, computed once on the host. The device only looks
//! values up: no float arithmetic, so nothing to round differently on any target, and the same
//! int8 values as the host gets for the same pixels.

use super::{KernelError, check_len, ensure};

/// Entries of one channel's table.
pub const TABLE_LEN: usize = 256;

/// `out[i] = table[(i % channels) · 256 + pixels[i]]` for an interleaved (HWC) image: each
/// pixel's channel `c` goes through table `c`. The output has the image's layout (NHWC).
pub fn lookup_hwc<T: Copy>(
    pixels: &[u8],
    channels: usize,
    tables: &[T],
    out: &mut [T],
) -> Result<(), KernelError> {
    ensure(channels > 0, "channels")?;
    check_len("pixel tables", tables.len(), channels * TABLE_LEN)?;
    check_len("pixels", pixels.len(), out.len())?;
    ensure(
        pixels.len().is_multiple_of(channels),
        "pixels of whole channels",
    )?;
    if channels == 1 {
        for (o, &p) in out.iter_mut().zip(pixels) {
            *o = tables[p as usize];
        }
        return Ok(());
    }
    for (o, p) in out
        .chunks_exact_mut(channels)
        .zip(pixels.chunks_exact(channels))
    {
        for (c, (o, &p)) in o.iter_mut().zip(p).enumerate() {
            *o = tables[c * TABLE_LEN + p as usize];
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_channel_goes_through_its_own_table() {
        let tables: Vec<i16> = (0..3 * 256).map(|i| i as i16).collect();
        let pixels = [0u8, 1, 2, 255, 254, 253];
        let mut out = [0i16; 6];
        lookup_hwc(&pixels, 3, &tables, &mut out).unwrap();
        assert_eq!(out, [0, 257, 514, 255, 510, 765]);
    }

    #[test]
    fn gray_and_wrong_lengths() {
        let tables: Vec<i8> = (0..256).map(|i| (i - 128) as i8).collect();
        let mut out = [0i8; 3];
        lookup_hwc(&[0, 128, 255], 1, &tables, &mut out).unwrap();
        assert_eq!(out, [-128, 0, 127]);
        assert!(lookup_hwc(&[0, 1], 1, &tables, &mut out).is_err());
        assert!(lookup_hwc(&[0, 1, 2], 2, &tables, &mut out).is_err());
        assert!(lookup_hwc(&[0, 1, 2], 3, &tables, &mut out).is_err());
    }
}
