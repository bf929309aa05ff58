//! Optimizers on the flat parameter vector (the PS applies the decoded gradient sum). Pure and
//! deterministic, with their state exposed so checkpoints can restore them exactly.

use serde::{Deserialize, Serialize};

use crate::job::{OptimizerKind, OptimizerSpec};

/// Optimizer state: SGD keeps a momentum buffer; Adam its two moment estimates and the step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Optimizer {
    spec: OptimizerSpec,
    /// SGD: momentum buffer. Adam: first moment.
    first: Vec<f32>,
    /// Adam: second moment (empty for SGD).
    second: Vec<f32>,
    /// Updates applied so far (Adam's bias correction).
    updates: u64,
}

impl Optimizer {
    pub fn new(spec: &OptimizerSpec, params: usize) -> Self {
        let second = if spec.kind == OptimizerKind::Adam { vec![0.0; params] } else { Vec::new() };
        Optimizer { spec: spec.clone(), first: vec![0.0; params], second, updates: 0 }
    }

    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// The state vectors, for checkpoints: (first, second).
    pub fn state(&self) -> (&[f32], &[f32]) {
        (&self.first, &self.second)
    }

    /// Restores state written by `state` (lengths must match this optimizer's).
    pub fn restore(&mut self, first: Vec<f32>, second: Vec<f32>, updates: u64) -> Result<(), String> {
        if first.len() != self.first.len() || second.len() != self.second.len() {
            return Err(format!(
                "optimizer state has {} + {} values, expected {} + {}",
                first.len(),
                second.len(),
                self.first.len(),
                self.second.len()
            ));
        }
        self.first = first;
        self.second = second;
        self.updates = updates;
        Ok(())
    }

    /// One update of `params` with `gradient` (the gradient of the batch's mean loss).
    pub fn apply(&mut self, params: &mut [f32], gradient: &[f32]) {
        assert_eq!(params.len(), gradient.len(), "gradient of the parameters' size");
        let s = &self.spec;
        let (lr, wd) = (s.learning_rate as f32, s.weight_decay as f32);
        self.updates += 1;
        match s.kind {
            OptimizerKind::Sgd => {
                let mu = s.momentum as f32;
                for ((p, g), v) in params.iter_mut().zip(gradient).zip(&mut self.first) {
                    let g = g + wd * *p;
                    *v = mu * *v + g;
                    *p -= lr * *v;
                }
            }
            OptimizerKind::Adam => {
                let (b1, b2, eps) = (s.beta1 as f32, s.beta2 as f32, s.epsilon as f32);
                let t = self.updates as i32;
                let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
                for (((p, g), m), v) in params.iter_mut().zip(gradient).zip(&mut self.first).zip(&mut self.second) {
                    let g = g + wd * *p;
                    *m = b1 * *m + (1.0 - b1) * g;
                    *v = b2 * *v + (1.0 - b2) * g * g;
                    *p -= lr * (*m / c1) / ((*v / c2).sqrt() + eps);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: OptimizerKind, momentum: f64) -> OptimizerSpec {
        OptimizerSpec { kind, learning_rate: 0.1, momentum, weight_decay: 0.0, beta1: 0.9, beta2: 0.999, epsilon: 1e-8 }
    }

    #[test]
    fn sgd_with_momentum_matches_hand_computation() {
        let mut opt = Optimizer::new(&spec(OptimizerKind::Sgd, 0.9), 1);
        let mut p = [1.0f32];
        opt.apply(&mut p, &[1.0]);
        assert!((p[0] - 0.9).abs() < 1e-7);
        opt.apply(&mut p, &[1.0]);
        assert!((p[0] - (0.9 - 0.1 * 1.9)).abs() < 1e-6, "{}", p[0]);
    }

    #[test]
    fn adam_first_step_moves_by_the_learning_rate() {
        let mut opt = Optimizer::new(&spec(OptimizerKind::Adam, 0.0), 2);
        let mut p = [0.0f32, 0.0];
        opt.apply(&mut p, &[3.0, -0.01]);
        assert!((p[0] + 0.1).abs() < 1e-5 && (p[1] - 0.1).abs() < 1e-3, "{p:?}");
    }

    #[test]
    fn minimizes_a_quadratic_and_state_round_trips() {
        for kind in [OptimizerKind::Sgd, OptimizerKind::Adam] {
            let mut opt = Optimizer::new(&spec(kind, 0.5), 3);
            let mut p = [5.0f32, -3.0, 2.0];
            for _ in 0..300 {
                let g: Vec<f32> = p.to_vec();
                opt.apply(&mut p, &g);
            }
            assert!(p.iter().all(|x| x.abs() < 0.05), "{kind:?}: {p:?}");
            let (a, b) = opt.state();
            let mut copy = Optimizer::new(&spec(kind, 0.5), 3);
            copy.restore(a.to_vec(), b.to_vec(), opt.updates()).unwrap();
            assert_eq!(copy, opt);
            assert!(copy.restore(vec![0.0], vec![], 0).is_err());
        }
    }
}
