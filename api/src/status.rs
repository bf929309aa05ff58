//! `DracoJob.status`: what `kubectl get dj` and `kubectl describe dj` tell. Written only by the
//! operator (status subresource), from the pods it owns and the PS's `/status` document.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Condition types, in metav1.Condition shape. The lifecycle ones (Created .. Suspended) also
/// name the job's `state`; the last two flag what DRACO saw.
pub mod condition {
    pub const CREATED: &str = "Created";
    pub const RUNNING: &str = "Running";
    pub const RESTARTING: &str = "Restarting";
    pub const SUCCEEDED: &str = "Succeeded";
    pub const FAILED: &str = "Failed";
    pub const SUSPENDED: &str = "Suspended";
    /// At least one worker was caught sending a wrong coded gradient.
    pub const BYZANTINE_DETECTED: &str = "ByzantineDetected";
    /// Some step had more liars or missing workers than the code can decode.
    pub const DECODE_CAPACITY_EXCEEDED: &str = "DecodeCapacityExceeded";
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DracoJobStatus {
    /// One word for `kubectl get`: Pending, Created, Running, Restarting, Suspended, Succeeded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// "ready/desired" workers, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers_ready: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Pod restarts counted against runPolicy.backoffLimit.
    #[serde(default)]
    pub restarts: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_statuses: Option<ReplicaStatuses>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<TrainingStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub byzantine: Option<ByzantineStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaStatuses {
    pub ps: ReplicaStatus,
    pub worker: ReplicaStatus,
}

/// Pod counts of one replica type.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaStatus {
    pub active: i32,
    pub ready: i32,
    pub succeeded: i32,
    pub failed: i32,
}

/// Progress, from the PS's `/status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrainingStatus {
    pub step: i64,
    pub total_steps: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_accuracy: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps_per_second: Option<f64>,
    pub decoded_steps: i64,
    pub undecodable_steps: i64,
    /// FNV-1a of the parameters' bits: equal digests mean bit-identical models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<Time>,
}

/// The workers DRACO caught lying.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ByzantineStatus {
    pub detections_total: i64,
    /// Distinct workers named at least once.
    pub suspected_workers: i32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suspects: Vec<SuspectStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SuspectStatus {
    /// Worker rank (pod `<job>-worker-<rank>`).
    pub worker: i32,
    pub count: i64,
    pub first_step: i64,
    pub last_step: i64,
    /// Why it was named (a fixed set, e.g. outvoted, inconsistentWithCode).
    pub reason: String,
}

impl DracoJobStatus {
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    pub fn is_true(&self, type_: &str) -> bool {
        self.condition(type_).is_some_and(|c| c.status == "True")
    }

    /// Succeeded or Failed: nothing more happens to the job but clean-up and TTL.
    pub fn is_finished(&self) -> bool {
        self.is_true(condition::SUCCEEDED) || self.is_true(condition::FAILED)
    }
}
