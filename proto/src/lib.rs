//! draco-proto: the generated gRPC code for `draco.proto`, and how vectors are laid into its
//! messages (`payload`).

pub mod payload;
pub mod push;

#[allow(clippy::all)]
pub mod v1 {
    tonic::include_proto!("draco.v1");
}

/// Metadata key carrying the worker's rank.
pub const RANK_HEADER: &str = "draco-rank";
/// Metadata key carrying `Bearer <token>`.
pub const AUTH_HEADER: &str = "authorization";
/// f32 values per chunk on the wire: 1 MiB of payload, a quarter of gRPC's default limit.
pub const CHUNK_VALUES: usize = 256 * 1024;
/// HTTP/2 frame size both ends accept: a whole chunk (plus framing) fits one frame.
pub const MAX_FRAME: u32 = 2 * 1024 * 1024;
/// How the status message of a parameter fetch starts when the PS published newer parameters
/// before the fetch read the old ones (Aborted): the worker fetches again.
pub const PARAMETERS_REPLACED: &str = "parameters_replaced";

/// Reasons a refused push's status message starts with that a worker acts on (the PS counts
/// refusals under the same names in `draco_rejected_messages_total`).
pub mod refusal {
    /// The step is already closed: move on.
    pub const STALE_STEP: &str = "stale_step";
    /// The PS restarted since this worker joined: join again.
    pub const WRONG_INCARNATION: &str = "wrong_incarnation";
    /// A newer push as the same rank replaced this one: another process holds the rank.
    pub const SUPERSEDED: &str = "superseded";
}
