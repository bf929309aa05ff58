//! One entry point for the parameter server: a job's scheme picks the decoder, the PS feeds
//! it the step's messages and always gets the sum-scale gradient plus verdicts back.

use crate::assignment::Assignment;
use crate::cyclic::CyclicDecoder;
use crate::outcome::Outcome;
use crate::repetition::RepetitionDecoder;
use crate::scheme::{CodeKind, Scheme, SchemeError};
use crate::statistical::{self, Aggregator, AggregatorParams};

#[derive(Clone, Debug)]
pub enum StepDecoder {
    Repetition(RepetitionDecoder),
    Cyclic(CyclicDecoder),
    /// `code: none`: every worker sends its own partition's gradient; a statistical rule
    /// estimates their center, scaled by P so every decoder returns a sum.
    Statistical {
        rule: Aggregator,
        params: AggregatorParams,
        byzantine_tolerance: usize,
        workers: usize,
        dim: usize,
    },
}

impl StepDecoder {
    /// `aggregator` applies to `code: none` only (default: mean).
    pub fn new(scheme: &Scheme, aggregator: Option<Aggregator>, dim: usize) -> Result<Self, SchemeError> {
        let assignment = Assignment::new(scheme)?;
        let s = scheme.byzantine_tolerance;
        Ok(match scheme.code {
            CodeKind::Repetition => StepDecoder::Repetition(RepetitionDecoder::new(&assignment, s, dim)),
            CodeKind::Cyclic => StepDecoder::Cyclic(CyclicDecoder::new(assignment.units(), scheme.redundancy, s, dim)),
            CodeKind::None => StepDecoder::Statistical {
                rule: aggregator.unwrap_or(Aggregator::Mean),
                params: AggregatorParams::default(),
                byzantine_tolerance: s,
                workers: scheme.workers,
                dim,
            },
        })
    }

    /// f32 values per message on the wire for a gradient of dimension `dim`.
    pub fn message_len(code: CodeKind, dim: usize) -> usize {
        match code {
            CodeKind::Cyclic => 2 * dim,
            CodeKind::Repetition | CodeKind::None => dim,
        }
    }

    /// Decodes one step: `messages[j]` is worker j's message or `None` if it is missing.
    pub fn decode(&self, messages: &[Option<&[f32]>]) -> Outcome<f32> {
        match self {
            StepDecoder::Repetition(d) => d.decode(messages),
            StepDecoder::Cyclic(d) => {
                let Outcome { aggregate, workers } = d.decode(messages);
                Outcome { aggregate: aggregate.map(|v| v.into_iter().map(|x| x as f32).collect()), workers }
            }
            StepDecoder::Statistical { rule, params, byzantine_tolerance, workers, dim } => {
                // The job fixes the length; a vector of any other length is a malformed lie
                // and must not get to vote on what the length is.
                let usable: Vec<Option<&[f32]>> = messages.iter().map(|m| m.filter(|v| v.len() == *dim)).collect();
                let Outcome { aggregate, workers: mut verdicts } =
                    statistical::aggregate(rule, params, &usable, *byzantine_tolerance);
                for (verdict, m) in verdicts.iter_mut().zip(messages) {
                    if m.is_some_and(|v| v.len() != *dim) {
                        *verdict = crate::WorkerVerdict::Suspect(crate::SuspectReason::MalformedMessage);
                    }
                }
                let scale = *workers as f32;
                Outcome {
                    aggregate: aggregate.map(|mut v| {
                        v.iter_mut().for_each(|x| *x *= scale);
                        v
                    }),
                    workers: verdicts,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scheme(code: CodeKind, p: usize, r: usize, s: usize) -> Scheme {
        Scheme::new(code, p, r, s)
    }

    #[test]
    fn every_code_returns_the_sum_of_partition_gradients() {
        let g: Vec<Vec<f32>> = (0..6).map(|i| vec![i as f32, 1.0, -2.0 * i as f32]).collect();
        let want: Vec<f32> = (0..3).map(|k| g.iter().map(|v| v[k]).sum()).collect();
        // Repetition: group members send the sum of their group's partitions.
        let rep = StepDecoder::new(&scheme(CodeKind::Repetition, 6, 3, 1), None, 3).unwrap();
        let group_sum = |gr: usize| -> Vec<f32> { (0..3).map(|k| (0..3).map(|i| g[gr * 3 + i][k]).sum()).collect() };
        let msgs: Vec<Vec<f32>> = (0..6).map(|j| group_sum(j / 3)).collect();
        let out = rep.decode(&msgs.iter().map(|m| Some(m.as_slice())).collect::<Vec<_>>());
        assert_eq!(out.aggregate.unwrap(), want);
        // Cyclic.
        let cyc = StepDecoder::new(&scheme(CodeKind::Cyclic, 6, 3, 1), None, 3).unwrap();
        let StepDecoder::Cyclic(inner) = &cyc else { unreachable!() };
        let msgs: Vec<Vec<f32>> = (0..6)
            .map(|j| {
                let (code, local) = inner.code_of(j);
                code.encode::<f32>(local, &(0..3).map(|k| g[(j + k) % 6].as_slice()).collect::<Vec<_>>())
            })
            .collect();
        assert_eq!(msgs[0].len(), StepDecoder::message_len(CodeKind::Cyclic, 3));
        let out = cyc.decode(&msgs.iter().map(|m| Some(m.as_slice())).collect::<Vec<_>>());
        for (a, b) in out.aggregate.unwrap().iter().zip(&want) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
        // None + mean: P * mean = sum.
        let none = StepDecoder::new(&scheme(CodeKind::None, 6, 1, 0), None, 3).unwrap();
        let out = none.decode(&g.iter().map(|m| Some(m.as_slice())).collect::<Vec<_>>());
        for (a, b) in out.aggregate.unwrap().iter().zip(&want) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }

    #[test]
    fn invalid_scheme_is_refused() {
        assert!(StepDecoder::new(&scheme(CodeKind::Repetition, 7, 3, 1), None, 3).is_err());
    }
}
