//! The one result type shared by every decoder and statistical aggregator: the aggregated
//! vector (only when the step could be decided), a verdict per worker, and why a step failed.

use serde::Serialize;

/// What a decoder or aggregator concluded about one worker's message in one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "verdict", content = "reason")]
pub enum WorkerVerdict {
    /// The message agreed with the decoded result (or was used as-is by an aggregator).
    Honest,
    /// The message was provably wrong (codes) or rejected as an outlier (statistical rules).
    Suspect(SuspectReason),
    /// No message arrived: an erasure.
    Missing,
    /// A message arrived but its unit could not be decided, so it was neither confirmed
    /// nor refuted.
    Unverified,
}

/// Why a worker was named. A fixed set, so it can label metrics without unbounded cardinality.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum SuspectReason {
    /// Repetition code: the vector differs from its group's winning (majority) vector.
    OutvotedInGroup,
    /// Cyclic code: the coded vector is inconsistent with the codeword the others define.
    InconsistentCodeword,
    /// Statistical rule: the vector was discarded as an outlier (Krum, Bulyan, trimming, ...).
    RejectedOutlier,
    /// The message had the wrong length for its code (a protocol-level lie).
    MalformedMessage,
}

impl SuspectReason {
    pub const ALL: [SuspectReason; 4] = [
        SuspectReason::OutvotedInGroup,
        SuspectReason::InconsistentCodeword,
        SuspectReason::RejectedOutlier,
        SuspectReason::MalformedMessage,
    ];

    /// Stable snake_case name, used as a metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            SuspectReason::OutvotedInGroup => "outvoted_in_group",
            SuspectReason::InconsistentCodeword => "inconsistent_codeword",
            SuspectReason::RejectedOutlier => "rejected_outlier",
            SuspectReason::MalformedMessage => "malformed_message",
        }
    }
}

/// Why a step produced no aggregate. The decoder never guesses: it says one of these instead.
#[derive(Clone, Debug, PartialEq, Serialize, thiserror::Error)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum DecodeFailure {
    /// Not enough consistent messages in one unit (a repetition group or a cyclic block) to
    /// decide. More messages may still arrive; with all of them in, more than the tolerated
    /// number of workers lied or went missing.
    #[error("unit {unit} is undecodable: {detail}")]
    Undecodable { unit: usize, detail: String },
    /// The evidence proves that more than `s` workers lied in one unit (e.g. two different
    /// repetition buckets each reach s + 1 votes). The configured tolerance was exceeded.
    #[error("unit {unit} exceeds the Byzantine bound: {detail}")]
    BoundViolated { unit: usize, detail: String },
}

/// Step-level verdict, for metrics and status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum StepVerdict {
    Decoded,
    Undecodable,
    BoundViolated,
}

impl StepVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            StepVerdict::Decoded => "decoded",
            StepVerdict::Undecodable => "undecodable",
            StepVerdict::BoundViolated => "bound_violated",
        }
    }
}

/// The result of aggregating one step's messages.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Outcome<T = f32> {
    /// The aggregated gradient (for codes: the exact sum of all partition gradients), or why
    /// there is none.
    pub aggregate: Result<Vec<T>, DecodeFailure>,
    /// One verdict per worker, indexed by rank.
    pub workers: Vec<WorkerVerdict>,
}

impl<T> Outcome<T> {
    pub fn verdict(&self) -> StepVerdict {
        match &self.aggregate {
            Ok(_) => StepVerdict::Decoded,
            Err(DecodeFailure::Undecodable { .. }) => StepVerdict::Undecodable,
            Err(DecodeFailure::BoundViolated { .. }) => StepVerdict::BoundViolated,
        }
    }

    /// Ranks named as suspects, in increasing order.
    pub fn suspects(&self) -> Vec<usize> {
        self.workers
            .iter()
            .enumerate()
            .filter(|(_, v)| matches!(v, WorkerVerdict::Suspect(_)))
            .map(|(j, _)| j)
            .collect()
    }

    /// Ranks whose message was missing, in increasing order.
    pub fn missing(&self) -> Vec<usize> {
        self.workers.iter().enumerate().filter(|(_, v)| **v == WorkerVerdict::Missing).map(|(j, _)| j).collect()
    }
}
