//! The f32 reference engine: float building blocks ([`ops`]) and the official ViTAE forward
//! pass on top of them ([`model`]).

pub mod model;
pub mod ops;

pub use model::{ModelError, NoObserver, Observer, ReferenceModel};
