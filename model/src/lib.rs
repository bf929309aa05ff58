//! draco-model: the real models (burn) and datasets Draco trains, and their flat-vector view.
//! The only crate besides the PS and workers that links burn.

pub mod dataset;
pub mod network;

pub use dataset::{Dataset, DatasetError, Split};
pub use network::{Architecture, Evaluation, Evaluator, GradientComputer, Layout, Network, initial_parameters};
