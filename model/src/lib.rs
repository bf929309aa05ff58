//! draco-model: the real models (burn) and datasets Draco trains, and their flat-vector view.
//! The only crate besides the PS and workers that links burn.

pub mod dataset;
pub mod network;

pub use dataset::{Dataset, DatasetError, Split};
pub use network::{Architecture, Evaluation, Evaluator, GradientComputer, Layout, Network, initial_parameters};

use draco_core::job::{ArchitectureKind, DatasetFormat, DatasetSpec, ModelSpec};

/// The burn architecture a job's `spec.model` names.
pub fn architecture(spec: &ModelSpec) -> Architecture {
    match spec.architecture {
        ArchitectureKind::Mlp => Architecture::Mlp { hidden: spec.hidden.clone() },
        ArchitectureKind::Lenet => Architecture::Lenet,
    }
}

/// Samples of the generated dataset (train split; the test split has a sixth as many).
const SYNTHETIC_TRAIN: usize = 6000;

/// Loads the split a job's `spec.dataset` names.
pub fn load_dataset(spec: &DatasetSpec, split: Split, seed: u64) -> Result<Dataset, DatasetError> {
    let dir = std::path::Path::new(&spec.path);
    match spec.format {
        DatasetFormat::Idx => Dataset::idx(dir, split),
        DatasetFormat::Cifar10 => Dataset::cifar10(dir, split),
        DatasetFormat::Synthetic => Ok(match split {
            // The same class prototypes (seed) for both splits; different noise comes from
            // drawing a different number of samples' worth from the stream.
            Split::Train => Dataset::synthetic(SYNTHETIC_TRAIN, [1, 28, 28], 10, seed),
            Split::Test => {
                let all = Dataset::synthetic(SYNTHETIC_TRAIN + SYNTHETIC_TRAIN / 6, [1, 28, 28], 10, seed);
                let dim = all.sample_len();
                Dataset {
                    images: all.images[SYNTHETIC_TRAIN * dim..].to_vec(),
                    labels: all.labels[SYNTHETIC_TRAIN..].to_vec(),
                    shape: all.shape,
                    classes: all.classes,
                }
            }
        }),
    }
}
