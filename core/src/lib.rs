//! draco-core: the pure heart of Draco. Every decision about codes, votes, suspects and
//! aggregation lives here, without I/O or async, so it can be tested exhaustively.
//!
//! - [`scheme`]: the code parameters of a job (P, r, s, e) and their validation.
//! - [`assignment`]: which partitions each worker holds, which samples each partition covers.
//! - [`repetition`]: the repetition code's exact majority decoder with attribution.
//! - [`cyclic`]: the cyclic code (encoder, Fourier decoder with erasures, blocks).
//! - [`decoder`]: the one entry point the PS uses, whatever the scheme.
//! - [`statistical`]: median-style aggregators for `code: none` and for comparisons.
//! - [`attack`]: attack models for drills.
//! - [`job`]: the runtime job configuration shared by the PS, workers and local runner.
//! - [`outcome`]: the result type every decoder and aggregator returns.
//! - [`optimizer`]: SGD (momentum, weight decay) and Adam on the flat parameter vector.

pub mod assignment;
pub mod attack;
mod complex;
pub mod cyclic;
pub mod decoder;
pub mod digest;
pub mod job;
pub mod optimizer;
pub mod outcome;
mod parallel;
pub mod repetition;
pub mod scheme;
pub mod secret;
pub mod statistical;
pub mod status;

pub use decoder::StepDecoder;
pub use outcome::{DecodeFailure, Outcome, StepVerdict, SuspectReason, WorkerVerdict};
