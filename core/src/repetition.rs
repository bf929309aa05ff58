//! Repetition code decoder (coding.md §2, §5): every member of a group of r workers sends the
//! same vector; the PS buckets the vectors by digest, confirms equality bytewise, and takes the
//! bucket holding at least s + 1 identical vectors. With at most s liars such a bucket must
//! contain an honest vector, so the result is exact, bit for bit. Unlike a Boyer-Moore vote,
//! a group without such a bucket is reported undecodable instead of guessed.

use std::ops::Range;

use crate::assignment::Assignment;
use crate::digest::{bits_equal, digest_f32};
use crate::outcome::{DecodeFailure, Outcome, SuspectReason, WorkerVerdict};
use crate::parallel;

/// Decodes one step of a repetition-coded job.
#[derive(Clone, Debug)]
pub struct RepetitionDecoder {
    groups: Vec<Range<usize>>,
    byzantine_tolerance: usize,
    dim: usize,
}

/// Identical vectors (confirmed bytewise) from one group; `members[0]` is the representative.
#[derive(Clone, Debug)]
struct Bucket {
    digest: u64,
    members: Vec<usize>,
}

/// Where a group stands given the vectors received so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupState {
    /// No bucket has s + 1 votes yet.
    Pending,
    /// Exactly one bucket has s + 1 votes: its vector is the honest one.
    Decided,
    /// Two different buckets have s + 1 votes each: more than s members lied.
    BoundViolated,
}

/// Votes received so far for one step. Feed it vectors as they arrive (`offer`); once
/// `is_final` the PS can decode without waiting for the slowest members, and late vectors can
/// still be offered so their senders get a verdict.
#[derive(Clone, Debug)]
pub struct Tally {
    decoder: RepetitionDecoder,
    groups: Vec<Vec<Bucket>>,
    malformed: Vec<bool>,
}

impl RepetitionDecoder {
    /// `assignment` must come from a repetition scheme; its units are the groups.
    pub fn new(assignment: &Assignment, byzantine_tolerance: usize, dim: usize) -> Self {
        RepetitionDecoder { groups: assignment.units().to_vec(), byzantine_tolerance, dim }
    }

    pub fn workers(&self) -> usize {
        self.groups.last().map_or(0, |g| g.end)
    }

    pub fn tally(&self) -> Tally {
        Tally {
            decoder: self.clone(),
            groups: vec![Vec::new(); self.groups.len()],
            malformed: vec![false; self.workers()],
        }
    }

    /// Decodes a complete step: `messages[j]` is worker j's vector, `None` if it never came.
    /// Digests are computed in parallel; the vectors are only borrowed.
    pub fn decode(&self, messages: &[Option<&[f32]>]) -> Outcome<f32> {
        assert_eq!(messages.len(), self.workers(), "one slot per worker");
        let usable: Vec<Option<&[f32]>> = messages.iter().map(|m| m.filter(|v| v.len() == self.dim)).collect();
        // Each thread sorts the members into classes of identical vectors over its own range of
        // coordinates; members are identical over the whole vector iff they share a class in
        // every range.
        let ranges = parallel::split(self.dim);
        let labels = parallel::map_items(&ranges, self.dim * messages.len() / ranges.len().max(1), |range| {
            self.identical_classes(&usable, range.clone())
        });
        let mut tally = self.tally();
        for (g, group) in self.groups.iter().enumerate() {
            let mut keys: Vec<Vec<usize>> = Vec::new();
            for j in group.clone().filter(|&j| usable[j].is_some()) {
                let key: Vec<usize> = labels.iter().map(|l| l[j]).collect();
                match keys.iter().position(|k| *k == key) {
                    Some(b) => tally.groups[g][b].members.push(j),
                    None => {
                        keys.push(key);
                        // Batch decoding never takes later votes, so the digest goes unused.
                        tally.groups[g].push(Bucket { digest: 0, members: vec![j] });
                    }
                }
            }
        }
        for (j, m) in messages.iter().enumerate() {
            tally.malformed[j] = m.is_some_and(|v| v.len() != self.dim);
        }
        tally.finish(messages)
    }

    /// For each worker, the lowest rank of its group whose vector equals its own on `range`.
    /// Works through cache-sized chunks: each chunk of each member is read from memory once,
    /// digested, and confirmed bytewise against the first member with the same class and
    /// digest while still in cache. Classes only ever split as chunks are added.
    fn identical_classes(&self, messages: &[Option<&[f32]>], range: Range<usize>) -> Vec<usize> {
        const CHUNK: usize = 4096;
        let mut label: Vec<usize> = (0..messages.len()).collect();
        for group in &self.groups {
            let present: Vec<usize> = group.clone().filter(|&j| messages[j].is_some()).collect();
            let Some(&first) = present.first() else {
                continue;
            };
            present.iter().for_each(|&j| label[j] = first);
            let mut digests = vec![0u64; present.len()];
            let mut next = vec![0usize; present.len()];
            let mut start = range.start;
            while start < range.end {
                let chunk = start..(start + CHUNK).min(range.end);
                let bytes = |j: usize| &messages[j].expect("present")[chunk.clone()];
                for (slot, &j) in present.iter().enumerate() {
                    digests[slot] = digest_f32(bytes(j));
                    next[slot] = (0..slot)
                        .find(|&earlier| {
                            let e = present[earlier];
                            label[e] == label[j] && digests[earlier] == digests[slot] && bits_equal(bytes(e), bytes(j))
                        })
                        .map_or(j, |earlier| next[earlier]);
                }
                for (slot, &j) in present.iter().enumerate() {
                    label[j] = next[slot];
                }
                start = chunk.end;
            }
        }
        label
    }
}

/// Adds worker `j`'s vote to its group's buckets: same digest and same bytes joins a bucket,
/// anything else opens a new one.
fn insert_vote<'a>(
    buckets: &mut Vec<Bucket>,
    j: usize,
    digest: u64,
    msg: &[f32],
    vector_of: impl Fn(usize) -> &'a [f32],
) {
    match buckets.iter_mut().find(|b| b.digest == digest && bits_equal(vector_of(b.members[0]), msg)) {
        Some(bucket) => bucket.members.push(j),
        None => buckets.push(Bucket { digest, members: vec![j] }),
    }
}

impl Tally {
    /// Records worker `j`'s vector. `vector_of(k)` must return the vector already offered by
    /// worker k of the same group (used to confirm equality bytewise). A vector of the wrong
    /// length is recorded as malformed and does not vote. Offering the same worker twice is
    /// ignored: the first contribution counts.
    pub fn offer<'a>(&mut self, j: usize, msg: &[f32], vector_of: impl Fn(usize) -> &'a [f32]) {
        if j >= self.malformed.len() {
            return; // not a worker of this job: no vote
        }
        let g = self.decoder.group_of(j);
        let already = self.malformed[j] || self.groups[g].iter().any(|b| b.members.contains(&j));
        if already {
            return;
        }
        if msg.len() != self.decoder.dim {
            self.malformed[j] = true;
            return;
        }
        insert_vote(&mut self.groups[g], j, digest_f32(msg), msg, vector_of);
    }

    /// The verdict on worker `j` given the votes so far (for a vector that arrived after its
    /// group was decided): honest if it joined the winning bucket, outvoted otherwise.
    pub fn verdict_of(&self, j: usize) -> WorkerVerdict {
        if j >= self.malformed.len() {
            return WorkerVerdict::Missing;
        }
        if self.malformed[j] {
            return WorkerVerdict::Suspect(SuspectReason::MalformedMessage);
        }
        let g = self.decoder.group_of(j);
        let quorum = self.decoder.byzantine_tolerance + 1;
        let winners: Vec<&Bucket> = self.groups[g].iter().filter(|b| b.members.len() >= quorum).collect();
        match (winners.as_slice(), self.groups[g].iter().find(|b| b.members.contains(&j))) {
            (_, None) => WorkerVerdict::Missing,
            ([winner], Some(mine)) if std::ptr::eq(*winner, mine) => WorkerVerdict::Honest,
            ([_], Some(_)) => WorkerVerdict::Suspect(SuspectReason::OutvotedInGroup),
            _ => WorkerVerdict::Unverified,
        }
    }

    pub fn group_state(&self, g: usize) -> GroupState {
        let quorum = self.decoder.byzantine_tolerance + 1;
        match self.groups[g].iter().filter(|b| b.members.len() >= quorum).count() {
            0 => GroupState::Pending,
            1 => GroupState::Decided,
            _ => GroupState::BoundViolated,
        }
    }

    /// True when no further vector can change the decoded sum: every group is decided (or
    /// provably violated). Late vectors only add verdicts.
    pub fn is_final(&self) -> bool {
        (0..self.groups.len()).all(|g| self.group_state(g) != GroupState::Pending)
    }

    /// Decodes from the vectors offered so far (`messages[j]` must be what worker j offered).
    pub fn finish(&self, messages: &[Option<&[f32]>]) -> Outcome<f32> {
        let d = &self.decoder;
        let quorum = d.byzantine_tolerance + 1;
        let mut workers = vec![WorkerVerdict::Missing; d.workers()];
        let mut winners = Vec::with_capacity(self.groups.len());
        let mut failure: Option<DecodeFailure> = None;
        for (g, buckets) in self.groups.iter().enumerate() {
            let range = &d.groups[g];
            let arrived: usize = buckets.iter().map(|b| b.members.len()).sum();
            let winning: Vec<&Bucket> = buckets.iter().filter(|b| b.members.len() >= quorum).collect();
            if let [winner] = winning[..] {
                for b in buckets {
                    let verdict = if std::ptr::eq(b, winner) {
                        WorkerVerdict::Honest
                    } else {
                        WorkerVerdict::Suspect(SuspectReason::OutvotedInGroup)
                    };
                    b.members.iter().for_each(|&j| workers[j] = verdict);
                }
                winners.push(winner.members[0]);
                continue;
            }
            buckets.iter().flat_map(|b| &b.members).for_each(|&j| workers[j] = WorkerVerdict::Unverified);
            let largest = buckets.iter().map(|b| b.members.len()).max().unwrap_or(0);
            let this = if winning.is_empty() {
                DecodeFailure::Undecodable {
                    unit: g,
                    detail: format!(
                        "group {g} (workers {}..{}): the largest set of identical vectors has {largest} of the \
                         {quorum} needed; {arrived} of {} vectors arrived",
                        range.start,
                        range.end - 1,
                        range.len()
                    ),
                }
            } else {
                DecodeFailure::BoundViolated {
                    unit: g,
                    detail: format!(
                        "group {g} (workers {}..{}): {} different vectors each have at least {quorum} votes, \
                         so more than {} members lied",
                        range.start,
                        range.end - 1,
                        winning.len(),
                        d.byzantine_tolerance
                    ),
                }
            };
            // A proven violation outranks "not enough votes yet".
            let replace = match &failure {
                None => true,
                Some(DecodeFailure::Undecodable { .. }) => !winning.is_empty(),
                Some(DecodeFailure::BoundViolated { .. }) => false,
            };
            if replace {
                failure = Some(this);
            }
        }
        for (j, &bad) in self.malformed.iter().enumerate() {
            if bad {
                workers[j] = WorkerVerdict::Suspect(SuspectReason::MalformedMessage);
            }
        }
        let aggregate = match failure {
            Some(f) => Err(f),
            None => Ok(sum_in_order(
                &winners.iter().map(|&j| messages[j].expect("winner arrived")).collect::<Vec<_>>(),
                d.dim,
            )),
        };
        Outcome { aggregate, workers }
    }
}

impl RepetitionDecoder {
    fn group_of(&self, worker: usize) -> usize {
        self.groups.partition_point(|g| g.end <= worker)
    }
}

/// Sums vectors coordinate-wise in the given (group) order, so the result never depends on
/// arrival order; in parallel over coordinate ranges.
fn sum_in_order(vectors: &[&[f32]], dim: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; dim];
    parallel::for_each_chunk_mut(&mut out, |offset, chunk| {
        let len = chunk.len();
        if let Some((first, rest)) = vectors.split_first() {
            chunk.copy_from_slice(&first[offset..offset + len]);
            for v in rest {
                for (o, x) in chunk.iter_mut().zip(&v[offset..offset + len]) {
                    *o += *x;
                }
            }
        }
    });
    out
}

#[cfg(test)]
#[path = "repetition_tests.rs"]
mod tests;
