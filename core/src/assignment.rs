//! Who computes what: the partitions each worker holds under a scheme, the units (repetition
//! groups, cyclic blocks) the decoder works on, and which dataset samples each partition of
//! step t's batch covers — deterministic from the seed and the step, so every replica of a
//! partition computes on exactly the same samples in the same order.

use std::ops::Range;

use crate::scheme::{CodeKind, Scheme, SchemeError};

/// The partition layout of a validated scheme. Partition indices equal worker ranks in count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    code: CodeKind,
    redundancy: usize,
    /// Contiguous rank ranges decoded independently (groups, blocks, or single workers). The
    /// same range is also the set of partitions the unit owns.
    units: Vec<Range<usize>>,
}

impl Assignment {
    pub fn new(scheme: &Scheme) -> Result<Self, SchemeError> {
        scheme.validate()?;
        let (p, r) = (scheme.workers, scheme.redundancy);
        let units = match scheme.code {
            CodeKind::Repetition => (0..p / r).map(|g| g * r..(g + 1) * r).collect(),
            CodeKind::Cyclic => scheme.cyclic_blocks()?,
            CodeKind::None => (0..p).map(|j| j..j + 1).collect(),
        };
        Ok(Assignment { code: scheme.code, redundancy: r, units })
    }

    pub fn workers(&self) -> usize {
        self.units.last().map_or(0, |u| u.end)
    }

    /// Repetition groups, cyclic blocks, or (code none) one unit per worker.
    pub fn units(&self) -> &[Range<usize>] {
        &self.units
    }

    pub fn unit_of(&self, worker: usize) -> usize {
        self.units.partition_point(|u| u.end <= worker)
    }

    /// The r partitions worker `worker` computes, in the order its encoder combines them.
    pub fn partitions_of(&self, worker: usize) -> Vec<usize> {
        let unit = &self.units[self.unit_of(worker)];
        match self.code {
            CodeKind::Repetition | CodeKind::None => unit.clone().collect(),
            // Cyclic: worker j of a block of size n holds {j, j+1, ..., j+r-1} mod n.
            CodeKind::Cyclic => {
                let (n, local) = (unit.len(), worker - unit.start);
                (0..self.redundancy).map(|k| unit.start + (local + k) % n).collect()
            }
        }
    }

    /// The workers holding `partition`.
    pub fn holders_of(&self, partition: usize) -> Vec<usize> {
        let unit = &self.units[self.unit_of(partition)];
        unit.clone().filter(|&j| self.partitions_of(j).contains(&partition)).collect()
    }
}

/// Deterministic batches: the dataset is shuffled once per epoch (Fisher-Yates driven by
/// SplitMix64 seeded from the job seed and the epoch); step t takes the next `batch_size`
/// samples of that stream, and partition i takes a contiguous, balanced slice of the batch.
#[derive(Clone, Debug)]
pub struct BatchPlan {
    dataset_len: usize,
    batch_size: usize,
    partitions: usize,
    seed: u64,
    cached_epoch: Option<(u64, Vec<u32>)>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BatchPlanError {
    #[error("dataset is empty")]
    EmptyDataset,
    #[error("dataset has {0} samples; at most u32::MAX are supported")]
    DatasetTooLarge(usize),
    #[error(
        "spec.training.batchSize: must be at least the number of partitions ({partitions}) so none is empty, got {batch_size}"
    )]
    BatchTooSmall { batch_size: usize, partitions: usize },
}

impl BatchPlan {
    pub fn new(dataset_len: usize, batch_size: usize, partitions: usize, seed: u64) -> Result<Self, BatchPlanError> {
        if dataset_len == 0 {
            return Err(BatchPlanError::EmptyDataset);
        }
        if dataset_len > u32::MAX as usize {
            return Err(BatchPlanError::DatasetTooLarge(dataset_len));
        }
        if batch_size < partitions || partitions == 0 {
            return Err(BatchPlanError::BatchTooSmall { batch_size, partitions });
        }
        Ok(BatchPlan { dataset_len, batch_size, partitions, seed, cached_epoch: None })
    }

    /// Batch positions covered by `partition`: sizes differ by at most one.
    pub fn partition_range(&self, partition: usize) -> Range<usize> {
        let (b, p) = (self.batch_size as u128, self.partitions as u128);
        let at = |i: usize| (i as u128 * b / p) as usize;
        at(partition)..at(partition + 1)
    }

    /// Dataset indices of the samples `partition` covers in step `step`, in order.
    pub fn samples(&mut self, step: u64, partition: usize) -> Vec<usize> {
        let range = self.partition_range(partition);
        let first = step as u128 * self.batch_size as u128 + range.start as u128;
        (0..range.len() as u128)
            .map(|k| {
                let pos = first + k;
                let epoch = (pos / self.dataset_len as u128) as u64;
                let within = (pos % self.dataset_len as u128) as usize;
                self.epoch_order(epoch)[within] as usize
            })
            .collect()
    }

    fn epoch_order(&mut self, epoch: u64) -> &[u32] {
        if self.cached_epoch.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let mut order: Vec<u32> = (0..self.dataset_len as u32).collect();
            let mut rng = SplitMix64(self.seed ^ epoch.wrapping_mul(0xD1B5_4A32_D192_ED03));
            for i in (1..order.len()).rev() {
                let j = (rng.next_u64() % (i as u64 + 1)) as usize;
                order.swap(i, j);
            }
            self.cached_epoch = Some((epoch, order));
        }
        &self.cached_epoch.as_ref().expect("filled above").1
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and fully specified, so batches are
/// reproducible across versions and platforms. Not for secrets.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scheme(code: CodeKind, p: usize, r: usize, s: usize) -> Scheme {
        Scheme::new(code, p, r, s)
    }

    #[test]
    fn every_partition_is_held_by_exactly_r_workers() {
        for (code, p, r) in [
            (CodeKind::Repetition, 6, 3),
            (CodeKind::Repetition, 15, 5),
            (CodeKind::Cyclic, 5, 3),
            (CodeKind::Cyclic, 15, 7),
            (CodeKind::Cyclic, 100, 5),
            (CodeKind::None, 4, 1),
        ] {
            let a = Assignment::new(&scheme(code, p, r, (r - 1) / 2)).unwrap();
            assert_eq!(a.workers(), p);
            let mut count = vec![0; p];
            for j in 0..p {
                let parts = a.partitions_of(j);
                assert_eq!(parts.len(), r);
                for &i in &parts {
                    assert_eq!(a.unit_of(i), a.unit_of(j), "partition stays in its unit");
                    count[i] += 1;
                }
            }
            assert!(count.iter().all(|&c| c == r), "{code:?} p={p} r={r}: {count:?}");
            for i in 0..p {
                assert_eq!(a.holders_of(i).len(), r);
            }
        }
    }

    #[test]
    fn cyclic_support_matches_the_paper() {
        let a = Assignment::new(&scheme(CodeKind::Cyclic, 5, 3, 1)).unwrap();
        assert_eq!(a.partitions_of(0), vec![0, 1, 2]);
        assert_eq!(a.partitions_of(3), vec![3, 4, 0]);
        assert_eq!(a.partitions_of(4), vec![4, 0, 1]);
        let rep = Assignment::new(&scheme(CodeKind::Repetition, 6, 3, 1)).unwrap();
        assert_eq!(rep.partitions_of(4), vec![3, 4, 5]);
        assert_eq!(rep.units(), &[0..3, 3..6]);
    }

    #[test]
    fn batches_are_deterministic_disjoint_and_cover_each_epoch() {
        let mut plan = BatchPlan::new(100, 20, 6, 42).unwrap();
        let mut again = BatchPlan::new(100, 20, 6, 42).unwrap();
        let mut seen = Vec::new();
        for step in 0..5 {
            for part in 0..6 {
                let s = plan.samples(step, part);
                assert_eq!(s, again.samples(step, part));
                seen.extend(s);
            }
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..100).collect::<Vec<_>>(), "one epoch = every sample once");
        let other_seed = BatchPlan::new(100, 20, 6, 43).unwrap().samples(0, 0);
        assert_ne!(plan.samples(0, 0), other_seed);
        assert_ne!(plan.samples(5, 0), plan.samples(0, 0), "next epoch is reshuffled");
        assert_eq!((0..6).map(|i| plan.partition_range(i).len()).sum::<usize>(), 20);
    }

    #[test]
    fn batch_spanning_epochs_and_bad_sizes() {
        let mut plan = BatchPlan::new(7, 5, 5, 1).unwrap();
        let all: Vec<usize> = (0..5).flat_map(|p| plan.samples(1, p)).collect();
        assert_eq!(all.len(), 5);
        assert_eq!(BatchPlan::new(0, 5, 5, 1).unwrap_err(), BatchPlanError::EmptyDataset);
        let err = BatchPlan::new(10, 3, 5, 1).unwrap_err();
        assert!(err.to_string().contains("batchSize"), "{err}");
    }
}
