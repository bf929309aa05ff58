//! The `DracoJob` resource (group `draco.dev`, version `v1alpha1`): one YAML that runs the same
//! job on a laptop (`draco run -f`) and on a cluster (`kubectl apply -f`). Loading rejects
//! unknown fields (typos never pass silently); validation checks every cross-field rule with
//! errors naming the field and the value; `job_config` gives the runtime configuration.

use std::path::Path;

use draco_core::job::{AdversarySpec, CheckpointSpec, DatasetSpec, JobConfig, JobError, ModelSpec, TrainingSpec};
use draco_core::scheme::{CodeKind, Scheme};
use draco_core::statistical::Aggregator;
use serde::{Deserialize, Serialize};

pub const API_VERSION: &str = "draco.dev/v1alpha1";
pub const KIND: &str = "DracoJob";
/// Kubernetes object names are DNS labels of at most 63 characters; the longest child name is
/// `<job>-worker-<rank>`, so the job name leaves room for that suffix.
pub const MAX_NAME_LEN: usize = 63 - "-worker-1023".len();

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DracoJob {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: DracoJobSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DracoJobSpec {
    /// P: workers, and data partitions.
    pub workers: usize,
    /// r: workers computing each partition.
    pub redundancy: usize,
    pub code: CodeKind,
    /// With `code: none` only (default mean).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregator: Option<Aggregator>,
    /// s: liars tolerated per group/block.
    #[serde(default)]
    pub byzantine_tolerance: usize,
    /// e: missing workers tolerated per group/block.
    #[serde(default)]
    pub straggler_tolerance: usize,
    #[serde(default = "default_straggler_timeout")]
    pub straggler_timeout_seconds: f64,
    /// Cyclic only: workers per block (default: the fewest blocks inside the numerical envelope).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cyclic_block_size: Option<usize>,
    pub model: ModelSpec,
    pub dataset: DatasetSpec,
    pub training: TrainingSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointSpec>,
    /// Opt-in drill: some workers lie on purpose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adversary: Option<AdversarySpec>,
    /// Kubeflow-style run policy (used by the operator; the local runner honours backoffLimit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_policy: Option<RunPolicy>,
    /// Pod template overrides for the PS and the workers (used by the operator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ps: Option<ReplicaSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<ReplicaSpec>,
}

fn default_straggler_timeout() -> f64 {
    30.0
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clean_pod_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds_after_finished: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<i64>,
    /// Restarts allowed before the job fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_limit: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplicaSpec {
    /// A Kubernetes pod template (free-form here; the operator merges it into the pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: not a valid DracoJob: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: {source}")]
    Invalid { path: String, source: JobError },
}

impl DracoJob {
    pub fn from_yaml(text: &str) -> Result<DracoJob, String> {
        serde_saphyr::from_str(text).map_err(|e| e.to_string())
    }

    /// Reads, parses and validates a DracoJob YAML file.
    pub fn load(path: &Path) -> Result<DracoJob, LoadError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io { path: shown.clone(), source })?;
        let job = DracoJob::from_yaml(&text).map_err(|message| LoadError::Parse { path: shown.clone(), message })?;
        job.validate().map_err(|source| LoadError::Invalid { path: shown, source })?;
        Ok(job)
    }

    /// Every rule, the first broken one reported.
    pub fn validate(&self) -> Result<(), JobError> {
        let bad = |field: &str, message: String| JobError { field: field.to_string(), message };
        if self.api_version != API_VERSION {
            return Err(bad("apiVersion", format!("must be {API_VERSION}, got {:?}", self.api_version)));
        }
        if self.kind != KIND {
            return Err(bad("kind", format!("must be {KIND}, got {:?}", self.kind)));
        }
        let name = &self.metadata.name;
        let dns_label = !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-');
        if !dns_label || name.len() > MAX_NAME_LEN {
            return Err(JobError {
                field: "metadata.name".into(),
                message: format!(
                    "must be 1-{MAX_NAME_LEN} lowercase letters, digits or '-', starting and ending with a letter or digit \
                     (so '<name>-worker-<rank>' fits Kubernetes' 63-character limit), got {name:?}"
                ),
            });
        }
        if let Some(limit) = self.spec.run_policy.as_ref().and_then(|r| r.backoff_limit)
            && limit < 0
        {
            return Err(bad("runPolicy.backoffLimit", format!("must be >= 0, got {limit}")));
        }
        self.job_config().validate()
    }

    /// The runtime configuration the PS and workers run.
    pub fn job_config(&self) -> JobConfig {
        let s = &self.spec;
        JobConfig {
            name: self.metadata.name.clone(),
            scheme: Scheme {
                code: s.code,
                workers: s.workers,
                redundancy: s.redundancy,
                byzantine_tolerance: s.byzantine_tolerance,
                straggler_tolerance: s.straggler_tolerance,
                cyclic_block_size: s.cyclic_block_size,
            },
            aggregator: s.aggregator,
            straggler_timeout_seconds: s.straggler_timeout_seconds,
            model: s.model.clone(),
            dataset: s.dataset.clone(),
            training: s.training.clone(),
            checkpoint: s.checkpoint.clone().unwrap_or(CheckpointSpec { every_steps: 0 }),
            adversary: s.adversary.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "
apiVersion: draco.dev/v1alpha1
kind: DracoJob
metadata: {name: fmnist}
spec:
  workers: 6
  redundancy: 3
  code: repetition
  byzantineTolerance: 1
  model: {architecture: mlp, hidden: [64]}
  dataset: {format: synthetic}
  training:
    steps: 10
    batchSize: 60
    seed: 1
    optimizer: {type: sgd, learningRate: 0.05, momentum: 0.9}
  adversary: {count: 1, attack: reverse, scale: 100}
";

    #[test]
    fn parses_validates_and_converts() {
        let job = DracoJob::from_yaml(EXAMPLE).unwrap();
        assert_eq!(job.validate(), Ok(()));
        let cfg = job.job_config();
        assert_eq!(cfg.scheme.workers, 6);
        assert_eq!(cfg.straggler_timeout_seconds, 30.0);
        assert_eq!(cfg.adversary.unwrap().scale, 100.0);
    }

    #[test]
    fn typos_and_bad_values_are_named() {
        let typo = EXAMPLE.replace("redundancy: 3", "redundancy: 3\n  redundency: 3");
        let err = DracoJob::from_yaml(&typo).unwrap_err();
        assert!(err.contains("redundency"), "{err}");
        let bad_code = EXAMPLE.replace("code: repetition", "code: fountain");
        assert!(DracoJob::from_yaml(&bad_code).unwrap_err().contains("fountain"));
        let not_div = DracoJob::from_yaml(&EXAMPLE.replace("workers: 6", "workers: 7")).unwrap();
        assert!(not_div.validate().unwrap_err().to_string().contains("7 % 3 = 1"));
        let long = DracoJob::from_yaml(&EXAMPLE.replace("name: fmnist", &format!("name: {}", "a".repeat(60)))).unwrap();
        assert_eq!(long.validate().unwrap_err().field, "metadata.name");
        let upper = DracoJob::from_yaml(&EXAMPLE.replace("name: fmnist", "name: FMNIST")).unwrap();
        assert_eq!(upper.validate().unwrap_err().field, "metadata.name");
        let kind = DracoJob::from_yaml(&EXAMPLE.replace("kind: DracoJob", "kind: PyTorchJob")).unwrap();
        assert_eq!(kind.validate().unwrap_err().field, "kind");
        let s2 = DracoJob::from_yaml(&EXAMPLE.replace("byzantineTolerance: 1", "byzantineTolerance: 2")).unwrap();
        assert_eq!(s2.validate().unwrap_err().field, "byzantineTolerance");
    }
}
