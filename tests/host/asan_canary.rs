//! The canary of `cargo xtask asan`: a deliberate heap out-of-bounds read that AddressSanitizer
//! must catch (the run fails with an ASan report), showing that the sanitizer is really on before
//! the host tests are run under it. Ignored in normal runs: without ASan the read goes unnoticed.

#[test]
#[ignore = "run by `cargo xtask asan` under AddressSanitizer, where it must fail"]
fn reads_one_byte_past_a_heap_buffer() {
    let buffer = std::hint::black_box(vec![7u8; 16]);
    let p = buffer.as_ptr();
    // SAFETY: none, on purpose: this reads the byte just past the 16-byte allocation, which
    // AddressSanitizer reports as a heap-buffer-overflow. Test code only.
    let past_the_end = unsafe { std::ptr::read_volatile(p.add(16)) };
    std::hint::black_box(past_the_end);
}
