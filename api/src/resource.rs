//! The `DracoJob` custom resource: group `draco.dev`, version `v1alpha1`, short name `dj`.
//! The spec's nested field groups (model, dataset, training, ...) are draco-core's own types, so
//! a YAML and the runtime configuration the processes receive cannot drift apart.

use draco_core::job::{AdversarySpec, CheckpointSpec, DatasetSpec, ModelSpec, TrainingSpec};
use draco_core::scheme::CodeKind;
use draco_core::statistical::Aggregator;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::status::DracoJobStatus;

/// A Byzantine-resilient training job: one parameter server and `workers` workers, every data
/// partition computed by `redundancy` of them, up to `byzantineTolerance` liars per group or
/// block decoded away exactly.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
// Every printer column repeats `type_ = ...`: the lint takes those for duplicate attributes.
#[allow(clippy::duplicated_attributes)]
#[kube(
    group = "draco.dev",
    version = "v1alpha1",
    kind = "DracoJob",
    plural = "dracojobs",
    shortname = "dj",
    category = "all",
    namespaced,
    status = "DracoJobStatus",
    derive = "PartialEq",
    doc = "A Byzantine-resilient distributed training job (DRACO).",
    printcolumn(name = "State", type_ = "string", json_path = ".status.state"),
    printcolumn(name = "Workers", type_ = "string", description = "ready/desired", json_path = ".status.workersReady"),
    printcolumn(name = "R", type_ = "integer", description = "redundancy", json_path = ".spec.redundancy"),
    printcolumn(name = "Step", type_ = "integer", json_path = ".status.training.step"),
    printcolumn(name = "Accuracy", type_ = "number", json_path = ".status.training.testAccuracy"),
    printcolumn(
        name = "Suspects",
        type_ = "integer",
        description = "workers caught lying",
        json_path = ".status.byzantine.suspectedWorkers"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DracoJobSpec {
    /// P: workers, and data partitions.
    #[schemars(range(min = 1, max = 1024))]
    pub workers: usize,
    /// r: workers computing each partition.
    #[schemars(range(min = 1, max = 1024))]
    pub redundancy: usize,
    pub code: CodeKind,
    /// With `code: none` only (default mean).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregator: Option<Aggregator>,
    /// s: liars tolerated per group/block.
    #[serde(default)]
    #[schemars(range(max = 1024))]
    pub byzantine_tolerance: usize,
    /// e: missing workers tolerated per group/block.
    #[serde(default)]
    #[schemars(range(max = 1024))]
    pub straggler_tolerance: usize,
    /// How long the PS waits for missing workers before deciding a step with what it has.
    #[serde(default = "default_straggler_timeout")]
    #[schemars(range(max = 3600))]
    pub straggler_timeout_seconds: f64,
    /// Cyclic only: workers per block (default: the fewest blocks inside the numerical envelope).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1024))]
    pub cyclic_block_size: Option<usize>,
    pub model: ModelSpec,
    pub dataset: DatasetSpec,
    pub training: TrainingSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointSpec>,
    /// Opt-in drill: some workers lie on purpose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adversary: Option<AdversarySpec>,
    /// Kubeflow-style run policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_policy: Option<RunPolicy>,
    /// The parameter server's pod template overrides and restart policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ps: Option<ReplicaSpec>,
    /// The workers' pod template overrides and restart policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<ReplicaSpec>,
}

fn default_straggler_timeout() -> f64 {
    30.0
}

/// Kubeflow training-operator semantics.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunPolicy {
    /// Which pods to delete when the job finishes (default Running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clean_pod_policy: Option<CleanPodPolicy>,
    /// Delete the whole job this long after it finished (at most 31536000, one year).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 31_536_000))]
    pub ttl_seconds_after_finished: Option<i32>,
    /// Fail the job when it has been running (not suspended) this long (at most 315360000,
    /// ten years).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 315_360_000))]
    pub active_deadline_seconds: Option<i64>,
    /// Pod restarts allowed before the job fails (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub backoff_limit: Option<i32>,
    /// Remove the pods and keep the job; resuming restarts the PS from its latest checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CleanPodPolicy {
    /// Delete every pod of the job.
    All,
    /// Delete the pods still running; keep finished ones for their logs.
    #[default]
    Running,
    /// Keep every pod.
    None,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RestartPolicy {
    /// Restart a pod whatever its exit.
    Always,
    /// Restart a pod that failed (counted against backoffLimit).
    #[default]
    OnFailure,
    /// A failed pod fails the job.
    Never,
    /// Exit codes 1-127 are permanent (the job fails), 128-255 retryable (signals, OOM kills).
    ExitCode,
}

impl RunPolicy {
    pub const DEFAULT_BACKOFF_LIMIT: i32 = 3;
    /// The longest `activeDeadlineSeconds`: ten years (of 365 days). Longer means "no deadline";
    /// say so by leaving the field out. The bound keeps every deadline far inside the range of
    /// timestamps, so no arithmetic on it can overflow.
    pub const MAX_ACTIVE_DEADLINE_SECONDS: i64 = 10 * 365 * 86_400;
    /// The longest `ttlSecondsAfterFinished`: one year (of 365 days).
    pub const MAX_TTL_SECONDS_AFTER_FINISHED: i32 = 365 * 86_400;

    pub fn backoff_limit(&self) -> i32 {
        self.backoff_limit.unwrap_or(Self::DEFAULT_BACKOFF_LIMIT)
    }

    pub fn clean_pod_policy(&self) -> CleanPodPolicy {
        self.clean_pod_policy.unwrap_or_default()
    }

    pub fn suspended(&self) -> bool {
        self.suspend.unwrap_or(false)
    }
}

/// Per-replica-type settings, as in Kubeflow's replica specs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplicaSpec {
    /// A pod template merged under the operator's pods: its container named `draco` (or its first
    /// container) gives image, resources and env; pod-level fields (nodeSelector, tolerations,
    /// volumes, affinity, ...) are kept. The operator owns the command, ports and token wiring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<PodTemplateSpec>,
    /// Default OnFailure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartPolicy>,
}

impl DracoJobSpec {
    pub fn run_policy(&self) -> RunPolicy {
        self.run_policy.clone().unwrap_or_default()
    }
}
