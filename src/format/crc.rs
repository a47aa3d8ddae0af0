//! CRC-32 (IEEE 802.3, reflected, as zlib/PNG), table-driven; the table is built at compile time.

const TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// Running CRC-32 state.
#[derive(Clone, Copy, Debug)]
pub struct Crc32(u32);

impl Default for Crc32 {
    fn default() -> Self {
        Crc32(0xFFFF_FFFF)
    }
}

/// Slice-by-8 tables for host builds: `TABLES8[k][b]` is the CRC state change of byte `b`
/// followed by `k` zero bytes (`TABLES8[0]` is [`TABLE`]). 8 KiB, so devices keep the byte-wise
/// loop (the host re-validates multi-megabyte blobs before every batch).
#[cfg(feature = "std")]
const TABLES8: [[u32; 256]; 8] = {
    let mut t = [[0u32; 256]; 8];
    t[0] = TABLE;
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[k - 1][i];
            t[k][i] = TABLE[(prev & 0xFF) as usize] ^ (prev >> 8);
            i += 1;
        }
        k += 1;
    }
    t
};

impl Crc32 {
    /// Adds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        let mut c = self.0;
        #[cfg(feature = "std")]
        let bytes = {
            // Eight bytes per step: the same CRC as the byte-wise loop below (the tables are its
            // steps composed; `tests::slice_by_8_equals_byte_wise`).
            let mut blocks = bytes.chunks_exact(8);
            for b in &mut blocks {
                let lo = c ^ u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                let t = &TABLES8;
                c = t[7][(lo & 0xFF) as usize]
                    ^ t[6][((lo >> 8) & 0xFF) as usize]
                    ^ t[5][((lo >> 16) & 0xFF) as usize]
                    ^ t[4][(lo >> 24) as usize]
                    ^ t[3][b[4] as usize]
                    ^ t[2][b[5] as usize]
                    ^ t[1][b[6] as usize]
                    ^ t[0][b[7] as usize];
            }
            blocks.remainder()
        };
        for &b in bytes {
            c = TABLE[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8);
        }
        self.0 = c;
    }

    /// The checksum.
    pub fn finish(self) -> u32 {
        !self.0
    }
}

/// CRC-32 of a byte string.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut c = Crc32::default();
    c.update(bytes);
    c.finish()
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_the_standard_check_value() {
        assert_eq!(super::crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(super::crc32(b""), 0);
    }

    /// The host's eight-byte steps against the byte-wise definition, on every length up to 80,
    /// split at every point (running states carried across `update` calls).
    #[test]
    fn slice_by_8_equals_byte_wise() {
        let bytewise = |state: u32, bytes: &[u8]| {
            bytes.iter().fold(state, |c, &b| {
                super::TABLE[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8)
            })
        };
        let data: Vec<u8> = (0..80u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for len in 0..=data.len() {
            for split in 0..=len {
                let mut c = super::Crc32::default();
                c.update(&data[..split]);
                c.update(&data[split..len]);
                assert_eq!(
                    c.0,
                    bytewise(0xFFFF_FFFF, &data[..len]),
                    "len {len} split {split}"
                );
            }
        }
        assert_eq!(
            super::crc32(&[0xff; 1000]),
            !bytewise(0xFFFF_FFFF, &[0xff; 1000])
        );
    }
}
