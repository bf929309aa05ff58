//! What a worker sends for one step: the gradients of the partitions it holds, combined by the
//! job's code — or, when the adversary drill picks this worker, a forgery.

use std::time::Instant;

use draco_core::assignment::{Assignment, BatchPlan};
use draco_core::attack::{Attack, AttackContext, AttackKind};
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
    /// Seconds of `build` spent encoding (cyclic code, drill forgery) rather than computing.
    pub encode_seconds: f64,
}

impl MessageBuilder {
    pub fn new(job: &JobConfig, rank: usize, data: &Dataset) -> anyhow::Result<Self> {
        let assignment = Assignment::new(&job.scheme)?;
        anyhow::ensure!(rank < job.scheme.workers, "rank {rank} is not in this job's 0..{}", job.scheme.workers);
        let plan = BatchPlan::new(data.len(), job.training.batch_size, job.scheme.workers, job.training.seed)?;
        let computer = GradientComputer::new(&draco_model::architecture(&job.model), data.shape, data.classes);
        let cyclic = (job.scheme.code == CodeKind::Cyclic).then(|| {
            let unit = &assignment.units()[assignment.unit_of(rank)];
            (CyclicCode::new(unit.len(), job.scheme.redundancy), rank - unit.start)
        });
        Ok(MessageBuilder { job: job.clone(), rank, assignment, plan, computer, cyclic })
    }

    pub fn computer(&self) -> &GradientComputer {
        &self.computer
    }

    pub fn build(&mut self, step: u64, params: &[f32], data: &Dataset) -> Message {
        let drill = self.job.adversary.as_ref().filter(|_| self.job.adversaries_at(step).contains(&self.rank));
        let flip = drill.is_some_and(|a| a.attack == DrillAttack::LabelFlip);
        let batch = self.job.training.batch_size;
        let partitions = self.assignment.partitions_of(self.rank);
        let mut encode_seconds = 0.0;
        let (values, loss) = match self.job.scheme.code {
            // Every group member computes one gradient over the group's samples in the same
            // order: bit-identical replicas, which repetition voting relies on.
            CodeKind::Repetition | CodeKind::None => {
                let samples: Vec<usize> = partitions.iter().flat_map(|&p| self.plan.samples(step, p)).collect();
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
                let t = Instant::now();
                let encoded = code.encode::<f32>(*local, &held);
                encode_seconds = t.elapsed().as_secs_f64();
                (encoded, loss)
            }
        };
        match drill.and_then(|a| a.attack.vector_attack().map(|kind| Attack { kind, scale: a.scale })) {
            Some(attack) => {
                let observed = if matches!(attack.kind, AttackKind::Alie | AttackKind::Ipm) {
                    self.observations(step, params, data, &partitions)
                } else {
                    Vec::new()
                };
                let observed: Vec<&[f32]> = observed.iter().map(Vec::as_slice).collect();
                let t = Instant::now();
                // Colluders share the seed of the step, so their forgeries are identical.
                let seed = self.job.training.seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let forged = attack.forge(&AttackContext { honest: &values, observed: &observed, seed });
                encode_seconds += t.elapsed().as_secs_f64();
                Message { values: forged, loss, forged: true, encode_seconds }
            }
            None => Message { values, loss, forged: flip, encode_seconds },
        }
    }

    /// What ALIE and IPM estimate their statistics from: r versions of this worker's honest
    /// message, each built from one held partition's share (r times that share), so their
    /// mean is the honest message and their spread is the real spread between partitions.
    fn observations(&mut self, step: u64, params: &[f32], data: &Dataset, partitions: &[usize]) -> Vec<Vec<f32>> {
        let (batch, r) = (self.job.training.batch_size, partitions.len() as f32);
        partitions
            .iter()
            .enumerate()
            .map(|(k, &p)| {
                let samples = self.plan.samples(step, p);
                let (g, _) = self.computer.gradient(params, data, &samples, batch, false);
                let share: Vec<f32> = g.iter().map(|x| x * r).collect();
                match &self.cyclic {
                    // The cyclic message's share of partition k is W[j, k] g_k (complex).
                    Some((code, local)) => {
                        let zero = vec![0.0f32; share.len()];
                        let held: Vec<&[f32]> = (0..partitions.len())
                            .map(|i| if i == k { share.as_slice() } else { zero.as_slice() })
                            .collect();
                        code.encode::<f32>(*local, &held)
                    }
                    None => share,
                }
            })
            .collect()
    }
}
