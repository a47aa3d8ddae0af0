//! Armv8.1-M Helium (MVE) micro-kernels as safe functions.
//!
//! On a Helium core these are inline assembly (stable Rust has no MVE intrinsics, and LLVM's
//! auto-vectorizer neither blocks a matrix product over registers nor vectorizes the
//! requantization). Everywhere else (the host) the same functions are plain Rust with the same
//! semantics, so the Helium kernels' blocking and data layouts are exercised by the host unit
//! tests against the scalar reference; the assembly itself is checked against the reference under
//! QEMU (`tests/qemu`).
#![allow(unsafe_code)]

mod attention;
mod elementwise;
mod gather;
mod gemm;
mod performer;

pub use attention::*;
pub use elementwise::*;
pub use gather::*;
pub use gemm::*;
pub use performer::*;
