//! The checkpoint readers (`torch.save` zip with its unpickler, and `.safetensors`) on arbitrary
//! bytes: every input is a typed error or a checkpoint, never a panic, a hang or a huge
//! allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(checkpoint) = vitae::checkpoint::parse_checkpoint(data, Path::new("fuzz.pth")) {
        for (key, tensor) in &checkpoint.tensors {
            let n: usize = tensor.shape.iter().product();
            assert_eq!(n, tensor.data.len(), "{key}");
        }
        for (key, tensor) in &checkpoint.int_tensors {
            let n: usize = tensor.shape.iter().product();
            assert_eq!(n, tensor.data.len(), "{key}");
        }
    }
});
