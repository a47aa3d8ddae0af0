fn main() {
    // Link args reach only this package's binaries (embassy's pattern): cortex-m-rt's link.x
    // (which INCLUDEs the board's memory.x) and defmt's symbol table.
    println!("cargo::rustc-link-arg-bins=-Tlink.x");
    println!("cargo::rustc-link-arg-bins=-Tdefmt.x");
}
