//! One step's worth of received messages and the rule for when the step can be decoded:
//! repetition decides as soon as every group has s + 1 identical vectors (coding.md §5); the
//! cyclic code as soon as every block misses at most e messages; statistical rules when all
//! arrived. After the straggler timeout, whatever arrived is tried.

use std::sync::Arc;

use draco_core::WorkerVerdict;
use draco_core::assignment::Assignment;
use draco_core::repetition::{RepetitionDecoder, Tally};
use draco_core::scheme::{CodeKind, Scheme};

pub struct Round {
    pub step: u64,
    /// Shared so the decoder can take a snapshot without copying the vectors (an `Arc<Vec>`,
    /// not `Arc<[f32]>`, whose construction from a Vec copies it).
    pub messages: Vec<Option<Arc<Vec<f32>>>>,
    /// Losses the workers reported with their messages.
    pub losses: Vec<Option<f32>>,
    tally: Option<Tally>,
    units: Vec<std::ops::Range<usize>>,
    code: CodeKind,
    straggler_tolerance: usize,
}

impl Round {
    pub fn new(step: u64, scheme: &Scheme, dim: usize) -> Round {
        let assignment = Assignment::new(scheme).expect("validated scheme");
        let tally = (scheme.code == CodeKind::Repetition)
            .then(|| RepetitionDecoder::new(&assignment, scheme.byzantine_tolerance, dim).tally());
        Round {
            step,
            messages: vec![None; scheme.workers],
            losses: vec![None; scheme.workers],
            tally,
            units: assignment.units().to_vec(),
            code: scheme.code,
            straggler_tolerance: scheme.straggler_tolerance,
        }
    }

    pub fn has(&self, rank: usize) -> bool {
        self.messages[rank].is_some()
    }

    pub fn arrived(&self) -> usize {
        self.messages.iter().filter(|m| m.is_some()).count()
    }

    /// Stores worker `rank`'s message (the caller checked it is the first for this step).
    pub fn insert(&mut self, rank: usize, message: Vec<f32>, loss: f32) {
        self.messages[rank] = Some(Arc::new(message));
        self.losses[rank] = Some(loss);
        if let Some(tally) = &mut self.tally {
            let messages = &self.messages;
            let msg = messages[rank].as_deref().expect("just stored");
            tally.offer(rank, msg, |k| messages[k].as_deref().map(Vec::as_slice).unwrap_or_default());
        }
    }

    /// Whether decoding now gives the same result as waiting for everyone.
    pub fn ready(&self) -> bool {
        if self.arrived() == self.messages.len() {
            return true;
        }
        match self.code {
            CodeKind::Repetition => self.tally.as_ref().is_some_and(Tally::is_final),
            CodeKind::Cyclic => self
                .units
                .iter()
                .all(|u| u.clone().filter(|&j| self.messages[j].is_none()).count() <= self.straggler_tolerance),
            CodeKind::None => false,
        }
    }

    /// Judges a vector that arrived after this round was decoded (repetition only: its tally
    /// still knows each group's winner). `None` when the code cannot judge late vectors.
    pub fn judge_late(&mut self, rank: usize, message: Vec<f32>) -> Option<WorkerVerdict> {
        self.tally.as_ref()?;
        self.insert(rank, message, 0.0);
        self.verdict_of(rank)
    }

    /// The round's vectors that nothing else holds any more, for the next rounds to reuse.
    pub fn into_buffers(self) -> impl Iterator<Item = Vec<f32>> {
        self.messages.into_iter().flatten().filter_map(|m| Arc::try_unwrap(m).ok())
    }

    /// The verdict on `rank`'s stored vector against its group's winner (repetition only).
    pub fn verdict_of(&self, rank: usize) -> Option<WorkerVerdict> {
        self.tally.as_ref().map(|t| t.verdict_of(rank))
    }
}
