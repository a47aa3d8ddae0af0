//! `Model::parse` on arbitrary bytes, exactly as given: almost every mutation is stopped by the
//! length or checksum checks, which is the point of this target (they must never panic, whatever
//! the header says). `blob_run` fixes the checksum up to reach the structural validation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vitae_edge::format::{AlignedBytes, Model};

fuzz_target!(|data: &[u8]| {
    let blob = AlignedBytes::new(data);
    if let Ok(model) = Model::parse(blob.as_bytes()) {
        // The accessors promise not to fail on a parsed model.
        for i in 0..model.op_count() {
            let _ = model.decode(i).expect("a parsed model decodes");
            model.op(i).expect("a parsed model has only known op kinds");
            model
                .op_data_bytes(i)
                .expect("a parsed model reports its data bytes");
        }
    }
});
