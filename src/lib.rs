//! # vitae-edge
//!
//! `no_std`, allocation-free int8 and fp16 kernels and the runtime that runs quantized ViTAE
//! vision transformers on Arm Cortex-M microcontrollers. The same code runs on the host, where
//! the `vitae` tool uses it to check a quantized model bit for bit before it goes to a device.
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![deny(missing_docs)]
#![deny(unsafe_code)]

mod arch;
pub mod kernels;
