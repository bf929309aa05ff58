//! The runtime job configuration every process of a job shares (PS, workers, local runner):
//! the scheme, the model and data, training and checkpoint settings, and the opt-in adversary
//! drill. The DracoJob resource (draco-api) converts into this; processes receive it as JSON.
//! The nested specs are the DracoJob's own field groups, so a YAML and its runtime form agree.

use serde::{Deserialize, Serialize};

use crate::attack::AttackKind;
use crate::scheme::{Scheme, SchemeError};
use crate::statistical::Aggregator;

/// `spec.model`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelSpec {
    pub architecture: ArchitectureKind,
    /// Hidden layer widths of the MLP (ignored by LeNet).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(length(max = 16)))]
    pub hidden: Vec<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum ArchitectureKind {
    Mlp,
    Lenet,
}

/// `spec.dataset`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DatasetSpec {
    pub format: DatasetFormat,
    /// Directory holding the files (idx, cifar10). Unused by `synthetic`.
    #[serde(default)]
    pub path: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum DatasetFormat {
    /// MNIST family (MNIST, Fashion-MNIST, KMNIST) in IDX files, gzipped or raw.
    Idx,
    /// CIFAR-10 binary version.
    Cifar10,
    /// Generated: 28x28 single-channel, 10 classes; for tests and smoke runs.
    Synthetic,
}

/// `spec.training`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrainingSpec {
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 100_000_000)))]
    pub steps: u64,
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 1_048_576)))]
    pub batch_size: usize,
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(range(max = 9_223_372_036_854_775_807u64)))]
    pub seed: u64,
    /// Evaluate on the test split every this many steps (0 = only at the end).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(range(max = 100_000_000)))]
    pub eval_every_steps: u64,
    pub optimizer: OptimizerSpec,
}

/// `spec.training.optimizer`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OptimizerSpec {
    #[serde(rename = "type")]
    pub kind: OptimizerKind,
    pub learning_rate: f64,
    /// SGD momentum (0 = plain SGD).
    #[serde(default)]
    pub momentum: f64,
    /// L2 weight decay added to the gradient.
    #[serde(default)]
    pub weight_decay: f64,
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    #[serde(default = "default_epsilon")]
    pub epsilon: f64,
}

fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_epsilon() -> f64 {
    1e-8
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum OptimizerKind {
    Sgd,
    Adam,
}

/// `spec.checkpoint`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CheckpointSpec {
    /// Write a checkpoint every this many steps (0 = never).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(range(max = 100_000_000)))]
    pub every_steps: u64,
}

/// `spec.adversary`: an opt-in drill in which some workers lie on purpose.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdversarySpec {
    /// How many workers lie in each step.
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 1024)))]
    pub count: usize,
    pub attack: DrillAttack,
    /// Attack strength (meaning per attack: factor, constant, noise std, z, epsilon).
    #[serde(default = "default_scale")]
    pub scale: f32,
    #[serde(default)]
    pub placement: Placement,
}

fn default_scale() -> f32 {
    100.0
}

/// Every vector attack of draco-core, plus label flipping at the data level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum DrillAttack {
    Reverse,
    SignFlip,
    Constant,
    Gaussian,
    Alie,
    Ipm,
    Colluding,
    Random,
    /// Train on labels 9 - y: a poisoned but plausible-looking gradient.
    LabelFlip,
}

impl DrillAttack {
    pub const ALL: [DrillAttack; 9] = [
        DrillAttack::Reverse,
        DrillAttack::SignFlip,
        DrillAttack::Constant,
        DrillAttack::Gaussian,
        DrillAttack::Alie,
        DrillAttack::Ipm,
        DrillAttack::Colluding,
        DrillAttack::Random,
        DrillAttack::LabelFlip,
    ];

    /// The vector attack, or `None` for label flipping.
    pub fn vector_attack(self) -> Option<AttackKind> {
        Some(match self {
            DrillAttack::Reverse => AttackKind::Reverse,
            DrillAttack::SignFlip => AttackKind::SignFlip,
            DrillAttack::Constant => AttackKind::Constant,
            DrillAttack::Gaussian => AttackKind::Gaussian,
            DrillAttack::Alie => AttackKind::Alie,
            DrillAttack::Ipm => AttackKind::Ipm,
            DrillAttack::Colluding => AttackKind::Colluding,
            DrillAttack::Random => AttackKind::Random,
            DrillAttack::LabelFlip => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum Placement {
    /// The same workers lie every step (chosen from the seed).
    Fixed,
    /// Different workers each step (drawn from the seed and the step).
    #[default]
    Random,
}

/// Everything a PS or worker process needs to run its part of a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobConfig {
    pub name: String,
    pub scheme: Scheme,
    /// For `code: none`.
    pub aggregator: Option<Aggregator>,
    pub straggler_timeout_seconds: f64,
    pub model: ModelSpec,
    pub dataset: DatasetSpec,
    pub training: TrainingSpec,
    pub checkpoint: CheckpointSpec,
    pub adversary: Option<AdversarySpec>,
}

/// A job rule that is broken, naming the field (in DracoJob spelling, relative to `spec` unless
/// it is under `metadata`) and the value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct JobError {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let spec = if self.field.starts_with("metadata.") { "" } else { "spec." };
        write!(f, "{spec}{}: {}", self.field, self.message)
    }
}

impl From<SchemeError> for JobError {
    fn from(e: SchemeError) -> Self {
        JobError { field: e.field.to_string(), message: e.message }
    }
}

fn bad(field: &str, message: String) -> JobError {
    JobError { field: field.to_string(), message }
}

/// Upper bounds that keep a typo from allocating the machine away.
pub const MAX_STEPS: u64 = 100_000_000;
pub const MAX_BATCH_SIZE: usize = 1 << 20;
pub const MAX_HIDDEN_WIDTH: usize = 1 << 16;

impl JobConfig {
    /// Every cross-field rule, checked before anything starts.
    pub fn validate(&self) -> Result<(), JobError> {
        let s = &self.scheme;
        s.validate()?;
        if self.aggregator.is_some() && s.code != crate::scheme::CodeKind::None {
            return Err(bad("aggregator", format!("only applies to code none, not {}", s.code.as_str())));
        }
        if let Some(rule) = &self.aggregator {
            let need = rule.min_workers(s.byzantine_tolerance);
            if s.workers < need {
                return Err(bad(
                    "aggregator",
                    format!(
                        "{} with byzantineTolerance {} needs at least {need} workers, got {}",
                        rule.as_str(),
                        s.byzantine_tolerance,
                        s.workers
                    ),
                ));
            }
        }
        if !(self.straggler_timeout_seconds > 0.0 && self.straggler_timeout_seconds <= 3600.0) {
            return Err(bad(
                "stragglerTimeoutSeconds",
                format!("must be in (0, 3600], got {}", self.straggler_timeout_seconds),
            ));
        }
        let t = &self.training;
        if t.steps == 0 || t.steps > MAX_STEPS {
            return Err(bad("training.steps", format!("must be between 1 and {MAX_STEPS}, got {}", t.steps)));
        }
        if t.batch_size < s.workers || t.batch_size > MAX_BATCH_SIZE {
            return Err(bad(
                "training.batchSize",
                format!(
                    "must be between workers ({}) and {MAX_BATCH_SIZE} so no partition is empty, got {}",
                    s.workers, t.batch_size
                ),
            ));
        }
        let o = &t.optimizer;
        if !(o.learning_rate.is_finite() && o.learning_rate > 0.0) {
            return Err(bad(
                "training.optimizer.learningRate",
                format!("must be a positive number, got {}", o.learning_rate),
            ));
        }
        if !(0.0..1.0).contains(&o.momentum) {
            return Err(bad("training.optimizer.momentum", format!("must be in [0, 1), got {}", o.momentum)));
        }
        if !(o.weight_decay.is_finite() && o.weight_decay >= 0.0) {
            return Err(bad("training.optimizer.weightDecay", format!("must be >= 0, got {}", o.weight_decay)));
        }
        for (name, v) in [("beta1", o.beta1), ("beta2", o.beta2)] {
            if !(0.0..1.0).contains(&v) {
                return Err(bad(&format!("training.optimizer.{name}"), format!("must be in [0, 1), got {v}")));
            }
        }
        if !(o.epsilon.is_finite() && o.epsilon > 0.0) {
            return Err(bad("training.optimizer.epsilon", format!("must be > 0, got {}", o.epsilon)));
        }
        if let Some(w) = self.model.hidden.iter().find(|&&w| w == 0 || w > MAX_HIDDEN_WIDTH) {
            return Err(bad("model.hidden", format!("layer widths must be between 1 and {MAX_HIDDEN_WIDTH}, got {w}")));
        }
        if self.model.hidden.len() > 16 {
            return Err(bad("model.hidden", format!("at most 16 hidden layers, got {}", self.model.hidden.len())));
        }
        if self.dataset.format != DatasetFormat::Synthetic && self.dataset.path.is_empty() {
            return Err(bad("dataset.path", "is required for idx and cifar10 datasets".to_string()));
        }
        if self.dataset.format == DatasetFormat::Cifar10 && self.model.architecture == ArchitectureKind::Lenet {
            // LeNet works on any size >= 12; nothing to check. Kept explicit for readers.
        }
        if let Some(a) = &self.adversary {
            if a.count == 0 || a.count > s.workers {
                return Err(bad(
                    "adversary.count",
                    format!("must be between 1 and workers ({}), got {}", s.workers, a.count),
                ));
            }
            if !a.scale.is_finite() {
                return Err(bad("adversary.scale", format!("must be a finite number, got {}", a.scale)));
            }
        }
        Ok(())
    }

    /// The ranks that lie in `step` of the drill (empty without a drill). Deterministic from the
    /// seed and the step, so every process (and a restarted one) agrees.
    pub fn adversaries_at(&self, step: u64) -> Vec<usize> {
        let Some(a) = &self.adversary else {
            return Vec::new();
        };
        let salt = match a.placement {
            Placement::Fixed => 0,
            Placement::Random => step.wrapping_add(1),
        };
        let mut rng = crate::assignment::SplitMix64(
            self.training.seed ^ 0xA5A5_5A5A_0F0F_F0F0 ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let mut ranks: Vec<usize> = (0..self.scheme.workers).collect();
        for i in 0..a.count.min(ranks.len()) {
            let j = i + (rng.next_u64() % (ranks.len() - i) as u64) as usize;
            ranks.swap(i, j);
        }
        let mut chosen = ranks[..a.count.min(ranks.len())].to_vec();
        chosen.sort_unstable();
        chosen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheme::CodeKind;

    pub(crate) fn example() -> JobConfig {
        JobConfig {
            name: "t".into(),
            scheme: Scheme {
                code: CodeKind::Repetition,
                workers: 6,
                redundancy: 3,
                byzantine_tolerance: 1,
                straggler_tolerance: 0,
                cyclic_block_size: None,
            },
            aggregator: None,
            straggler_timeout_seconds: 30.0,
            model: ModelSpec { architecture: ArchitectureKind::Mlp, hidden: vec![32] },
            dataset: DatasetSpec { format: DatasetFormat::Synthetic, path: String::new() },
            training: TrainingSpec {
                steps: 10,
                batch_size: 60,
                seed: 7,
                eval_every_steps: 5,
                optimizer: OptimizerSpec {
                    kind: OptimizerKind::Sgd,
                    learning_rate: 0.1,
                    momentum: 0.9,
                    weight_decay: 0.0,
                    beta1: 0.9,
                    beta2: 0.999,
                    epsilon: 1e-8,
                },
            },
            checkpoint: CheckpointSpec { every_steps: 5 },
            adversary: Some(AdversarySpec {
                count: 1,
                attack: DrillAttack::Reverse,
                scale: 100.0,
                placement: Placement::Random,
            }),
        }
    }

    #[test]
    fn example_is_valid_and_errors_name_fields() {
        assert_eq!(example().validate(), Ok(()));
        let mut j = example();
        j.training.batch_size = 3;
        assert_eq!(j.validate().unwrap_err().field, "training.batchSize");
        let mut j = example();
        j.training.optimizer.learning_rate = f64::NAN;
        assert!(j.validate().unwrap_err().to_string().contains("learningRate: must be a positive number, got NaN"));
        let mut j = example();
        j.aggregator = Some(Aggregator::Median);
        assert_eq!(j.validate().unwrap_err().field, "aggregator");
        let mut j = example();
        j.scheme.workers = 7;
        assert_eq!(j.validate().unwrap_err().field, "workers");
        let mut j = example();
        j.adversary.as_mut().unwrap().count = 0;
        assert_eq!(j.validate().unwrap_err().field, "adversary.count");
        let mut j = example();
        j.straggler_timeout_seconds = -1.0;
        assert_eq!(j.validate().unwrap_err().field, "stragglerTimeoutSeconds");
    }

    #[test]
    fn adversary_placement_is_deterministic() {
        let j = example();
        let steps: Vec<Vec<usize>> = (0..20).map(|t| j.adversaries_at(t)).collect();
        assert!(steps.iter().all(|a| a.len() == 1 && a[0] < 6));
        assert_eq!(steps, (0..20).map(|t| j.adversaries_at(t)).collect::<Vec<_>>());
        assert!(steps.iter().any(|a| a != &steps[0]), "random placement moves");
        let mut fixed = example();
        fixed.adversary.as_mut().unwrap().placement = Placement::Fixed;
        assert!((0..20).all(|t| fixed.adversaries_at(t) == fixed.adversaries_at(0)));
        let mut none = example();
        none.adversary = None;
        assert!(none.adversaries_at(3).is_empty());
    }
}
