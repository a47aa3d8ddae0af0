//! The `.npy` reader on arbitrary bytes: a typed error or an array whose element count matches
//! its shape, never a panic or a huge allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vitae::npy::{NpyData, parse_npy};

fuzz_target!(|data: &[u8]| {
    if let Ok(array) = parse_npy(data) {
        let n: usize = array.shape.iter().product();
        let len = match &array.data {
            NpyData::F32(v) => v.len(),
            NpyData::F64(v) => v.len(),
            NpyData::U8(v) => v.len(),
            NpyData::I64(v) => v.len(),
        };
        assert_eq!(n, len, "shape {:?}", array.shape);
    }
});
