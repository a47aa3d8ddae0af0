//! Build script shared by every board package: the link arguments reach only that package's
//! binary (embassy's pattern). `link.x` comes from cortex-m-rt and INCLUDEs the board's memory.x
//! (put on the search path by vitae-board); `defmt.x` places the defmt symbol table.
fn main() {
    println!("cargo::rustc-link-arg-bins=-Tlink.x");
    println!("cargo::rustc-link-arg-bins=-Tdefmt.x");
}
