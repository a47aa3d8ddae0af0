//! Links the tool check with its own two-region linker script (no cortex-m-rt: nothing but the
//! toolchain is under test).
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo");
    println!("cargo::rustc-link-search={dir}");
    println!("cargo::rustc-link-arg-bins=-Ttoolcheck.x");
    println!("cargo::rerun-if-changed=toolcheck.x");
}
