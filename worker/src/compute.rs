//! What a worker sends for one step: the gradients of the partitions it holds, combined by the
//! job's code — or, when the adversary drill picks this worker, a forgery.

use draco_core::assignment::{Assignment, BatchPlan};
use draco_core::attack::{Attack, AttackContext};
use draco_core::cyclic::CyclicCode;
use draco_core::job::{DrillAttack, JobConfig};
use draco_core::scheme::CodeKind;
use draco_model::{Dataset, GradientComputer};

pub struct MessageBuilder {
    job: JobConfig,
    rank: usize,
    assignment: Assignment,
    plan: BatchPlan,
    computer: GradientComputer,
    /// Cyclic only: this worker's block code and its index inside the block.
    cyclic: Option<(CyclicCode, usize)>,
}

/// One step's message and the worker's training loss on its partitions.
pub struct Message {
    pub values: Vec<f32>,
    pub loss: f32,
    pub forged: bool,
}

impl MessageBuilder {
    pub fn new(job: &JobConfig, rank: usize, data: &Dataset) -> anyhow::Result<Self> {
        let assignment = Assignment::new(&job.scheme)?;
        anyhow::ensure!(
            rank < job.scheme.workers,
            "rank {rank} is not in this job's 0..{}",
            job.scheme.workers
        );
        let plan = BatchPlan::new(
            data.len(),
            job.training.batch_size,
            job.scheme.workers,
            job.training.seed,
        )?;
        let computer = GradientComputer::new(
            &draco_model::architecture(&job.model),
            data.shape,
            data.classes,
        );
        let cyclic = (job.scheme.code == CodeKind::Cyclic).then(|| {
            let unit = &assignment.units()[assignment.unit_of(rank)];
            (
                CyclicCode::new(unit.len(), job.scheme.redundancy),
                rank - unit.start,
            )
        });
        Ok(MessageBuilder {
            job: job.clone(),
            rank,
            assignment,
            plan,
            computer,
            cyclic,
        })
    }

    pub fn computer(&self) -> &GradientComputer {
        &self.computer
    }

    pub fn build(&mut self, step: u64, params: &[f32], data: &Dataset) -> Message {
        let drill = self
            .job
            .adversary
            .as_ref()
            .filter(|_| self.job.adversaries_at(step).contains(&self.rank));
        let flip = drill.is_some_and(|a| a.attack == DrillAttack::LabelFlip);
        let batch = self.job.training.batch_size;
        let partitions = self.assignment.partitions_of(self.rank);
        let (values, loss) = match self.job.scheme.code {
            // Every group member computes one gradient over the group's samples in the same
            // order: bit-identical replicas, which repetition voting relies on.
            CodeKind::Repetition | CodeKind::None => {
                let samples: Vec<usize> = partitions
                    .iter()
                    .flat_map(|&p| self.plan.samples(step, p))
                    .collect();
                self.computer.gradient(params, data, &samples, batch, flip)
            }
            CodeKind::Cyclic => {
                let mut loss = 0.0;
                let grads: Vec<Vec<f32>> = partitions
                    .iter()
                    .map(|&p| {
                        let samples = self.plan.samples(step, p);
                        let (g, l) = self.computer.gradient(params, data, &samples, batch, flip);
                        loss += l;
                        g
                    })
                    .collect();
                let (code, local) = self.cyclic.as_ref().expect("cyclic code built");
                let held: Vec<&[f32]> = grads.iter().map(Vec::as_slice).collect();
                (code.encode::<f32>(*local, &held), loss)
            }
        };
        match drill.and_then(|a| {
            a.attack.vector_attack().map(|kind| Attack {
                kind,
                scale: a.scale,
            })
        }) {
            Some(attack) => {
                // Colluders share the seed of the step, so their forgeries are identical.
                let seed = self.job.training.seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let forged = attack.forge(&AttackContext {
                    honest: &values,
                    observed: &[],
                    seed,
                });
                Message {
                    values: forged,
                    loss,
                    forged: true,
                }
            }
            None => Message {
                values,
                loss,
                forged: flip,
            },
        }
    }
}
