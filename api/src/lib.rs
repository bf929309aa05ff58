//! The `DracoJob` resource (group `draco.dev`, version `v1alpha1`): one YAML that runs the same
//! job on a laptop (`draco run -f`) and on a cluster (`kubectl apply -f`). Loading rejects
//! unknown fields in the spec (typos never pass silently); validation checks every cross-field
//! rule with errors naming the field and the value; `job_config` gives the runtime configuration.
//! `resource` holds the types (and the CRD derive), `status` what the operator reports, `schema`
//! the CRD the API server gets, with the same rules as CEL.

pub mod resource;
pub mod schema;
pub mod status;

use std::path::Path;

use draco_core::job::{CheckpointSpec, JobConfig, JobError};
use draco_core::scheme::Scheme;

pub use resource::{CleanPodPolicy, DracoJob, DracoJobSpec, ReplicaSpec, RestartPolicy, RunPolicy};
pub use schema::MAX_NAME_LEN;
pub use status::DracoJobStatus;

pub const API_VERSION: &str = "draco.dev/v1alpha1";
pub const KIND: &str = "DracoJob";

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    // The cause is part of the message (not a `source`), so `{:#}` prints it once.
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{path}: not a valid DracoJob: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: {error}")]
    Invalid { path: String, error: JobError },
}

/// serde-saphyr's message for a user: without its own `error: ` prefix or advice meant for
/// programmers.
fn yaml_message(error: serde_saphyr::Error) -> String {
    let text = error.to_string().replace(", set DuplicateKeyPolicy in Options if acceptable", "");
    text.strip_prefix("error: ").unwrap_or(&text).to_string()
}

impl DracoJob {
    pub fn from_yaml(text: &str) -> Result<DracoJob, String> {
        // The type header first, so a PyTorchJob or a v1beta1 gets a plain answer instead of a
        // complaint about some spec field.
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct TypeHeader {
            api_version: Option<String>,
            kind: Option<String>,
        }
        let header: TypeHeader = serde_saphyr::from_str(text).map_err(yaml_message)?;
        if header.api_version.as_deref() != Some(API_VERSION) {
            return Err(format!("apiVersion must be {API_VERSION}, got {:?}", header.api_version.unwrap_or_default()));
        }
        if header.kind.as_deref() != Some(KIND) {
            return Err(format!("kind must be {KIND}, got {:?}", header.kind.unwrap_or_default()));
        }
        serde_saphyr::from_str(text).map_err(yaml_message)
    }

    /// `metadata.name` ("" when missing; `validate` refuses that).
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or("")
    }

    /// Reads, parses and validates a DracoJob YAML file.
    pub fn load(path: &Path) -> Result<DracoJob, LoadError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| LoadError::Io { path: shown.clone(), error })?;
        let job = DracoJob::from_yaml(&text).map_err(|message| LoadError::Parse { path: shown.clone(), message })?;
        job.validate().map_err(|error| LoadError::Invalid { path: shown, error })?;
        Ok(job)
    }

    /// Every rule, the first broken one reported.
    pub fn validate(&self) -> Result<(), JobError> {
        let bad = |field: &str, message: String| JobError { field: field.to_string(), message };
        let name = self.name();
        if !schema::is_job_name(name) {
            return Err(JobError {
                field: "metadata.name".into(),
                message: format!(
                    "must be 1-{MAX_NAME_LEN} lowercase letters, digits or '-', starting with a letter and ending with a \
                     letter or digit (a DNS-1035 label, as the PS Service '<name>-ps' must be, short enough that \
                     '<name>-worker-<rank>' fits Kubernetes' 63-character limit), got {name:?}"
                ),
            });
        }
        let run_policy = self.spec.run_policy();
        if let Some(limit) = run_policy.backoff_limit
            && !(0..=1000).contains(&limit)
        {
            return Err(bad("runPolicy.backoffLimit", format!("must be between 0 and 1000, got {limit}")));
        }
        if let Some(deadline) = run_policy.active_deadline_seconds
            && !(1..=RunPolicy::MAX_ACTIVE_DEADLINE_SECONDS).contains(&deadline)
        {
            return Err(bad(
                "runPolicy.activeDeadlineSeconds",
                format!(
                    "must be between 1 and {} (ten years; leave it out for no deadline), got {deadline}",
                    RunPolicy::MAX_ACTIVE_DEADLINE_SECONDS
                ),
            ));
        }
        if let Some(ttl) = run_policy.ttl_seconds_after_finished
            && !(0..=RunPolicy::MAX_TTL_SECONDS_AFTER_FINISHED).contains(&ttl)
        {
            return Err(bad(
                "runPolicy.ttlSecondsAfterFinished",
                format!(
                    "must be between 0 and {} (one year; leave it out to keep the job), got {ttl}",
                    RunPolicy::MAX_TTL_SECONDS_AFTER_FINISHED
                ),
            ));
        }
        self.job_config().validate()
    }

    /// The runtime configuration the PS and workers run.
    pub fn job_config(&self) -> JobConfig {
        let s = &self.spec;
        JobConfig {
            name: self.name().to_string(),
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
        // Service '<name>-ps' is a DNS-1035 label: a leading digit would make it 422 forever.
        let digit = DracoJob::from_yaml(&EXAMPLE.replace("name: fmnist", "name: 1fm")).unwrap();
        let err = digit.validate().unwrap_err();
        assert_eq!(err.field, "metadata.name");
        assert!(err.message.contains("\"1fm\"") && err.message.contains("starting with a letter"), "{err}");
        let kind = DracoJob::from_yaml(&EXAMPLE.replace("kind: DracoJob", "kind: PyTorchJob")).unwrap_err();
        assert!(kind.contains("kind must be DracoJob, got \"PyTorchJob\""), "{kind}");
        let forever = DracoJob::from_yaml(
            &EXAMPLE.replace("adversary:", "runPolicy: {activeDeadlineSeconds: 250000000000}\n  adversary:"),
        )
        .unwrap();
        let err = forever.validate().unwrap_err();
        assert_eq!(err.field, "runPolicy.activeDeadlineSeconds");
        assert!(err.message.contains("250000000000") && err.message.contains("315360000"), "{err}");
        let ttl = DracoJob::from_yaml(
            &EXAMPLE.replace("adversary:", "runPolicy: {ttlSecondsAfterFinished: 40000000}\n  adversary:"),
        )
        .unwrap();
        assert_eq!(ttl.validate().unwrap_err().field, "runPolicy.ttlSecondsAfterFinished");
        let s2 = DracoJob::from_yaml(&EXAMPLE.replace("byzantineTolerance: 1", "byzantineTolerance: 2")).unwrap();
        assert_eq!(s2.validate().unwrap_err().field, "byzantineTolerance");
    }
}
