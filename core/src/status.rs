//! The parameter server's `/status` document: the job's progress and the workers caught lying.
//! The PS writes it; the operator and the local runner read it (so it lives here, where all
//! three can share it without the PS's dependencies). Counts only grow.

use std::collections::BTreeMap;

use crate::{Outcome, WorkerVerdict};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Starting,
    Running,
    Succeeded,
    Failed,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Suspect {
    pub worker: usize,
    pub count: u64,
    pub first_step: u64,
    pub last_step: u64,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub job: String,
    pub phase: Phase,
    pub message: String,
    pub incarnation: String,
    /// Steps completed.
    pub step: u64,
    pub total_steps: u64,
    pub loss: Option<f32>,
    pub test_loss: Option<f32>,
    pub test_accuracy: Option<f32>,
    pub steps_per_second: f64,
    pub resumed_from_step: u64,
    pub detections_total: u64,
    pub suspects: Vec<Suspect>,
    pub decoded_steps: u64,
    pub undecodable_steps: u64,
    pub bound_violated_steps: u64,
    /// Times each worker's message was missing at decode time.
    pub missing: BTreeMap<usize, u64>,
    /// FNV-1a of the parameters' bits: equal digests mean bit-identical models.
    pub params_digest: String,
    pub params_count: usize,
}

impl Status {
    /// Names one worker (e.g. judged after its step was decoded).
    pub fn name_suspect(&mut self, step: u64, worker: usize, reason: &str) {
        self.detections_total += 1;
        match self.suspects.iter_mut().find(|s| s.worker == worker && s.reason == reason) {
            Some(s) => {
                s.count += 1;
                s.first_step = s.first_step.min(step);
                s.last_step = s.last_step.max(step);
            }
            None => self.suspects.push(Suspect {
                worker,
                count: 1,
                first_step: step,
                last_step: step,
                reason: reason.to_string(),
            }),
        }
        self.suspects.sort_by_key(|s| (s.worker, s.reason.clone()));
    }

    /// Folds one decoded step's verdicts into the suspect table. Missing workers count as
    /// stragglers only when the step was decided at the straggler timeout (`timed_out`).
    pub fn record(&mut self, step: u64, outcome: &Outcome<f32>, timed_out: bool) {
        for (worker, verdict) in outcome.workers.iter().enumerate() {
            match verdict {
                WorkerVerdict::Suspect(reason) => self.name_suspect(step, worker, reason.as_str()),
                WorkerVerdict::Missing if timed_out => *self.missing.entry(worker).or_default() += 1,
                WorkerVerdict::Missing | WorkerVerdict::Honest | WorkerVerdict::Unverified => {}
            }
        }
        self.suspects.sort_by_key(|s| (s.worker, s.reason.clone()));
    }
}

pub fn params_digest(params: &[f32]) -> String {
    let h = crate::digest::fnv1a(params.iter().flat_map(|x| x.to_bits().to_le_bytes()));
    format!("{h:016x}")
}
