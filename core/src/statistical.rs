//! Statistical (non-coded) aggregation rules: the baselines DRACO is compared against, and the
//! rule used for jobs with `code: none`.
//!
//! Every rule returns a robust *center* of the usable vectors (mean-scale, not a sum).
//!
//! Screening, shared by all rules, happens before any rule runs:
//! - a missing message is [`WorkerVerdict::Missing`];
//! - a vector whose length differs from the expected length is
//!   `Suspect(MalformedMessage)`. The expected length is the most common length among present
//!   vectors (ties: the length seen first), so a single liar cannot make everybody else look
//!   malformed; with an honest majority this is the first present vector's length;
//! - a vector containing NaN or ±Inf is `Suspect(RejectedOutlier)`. Without this one NaN
//!   would poison the mean (and every f64 accumulation). Huge *finite* values still fool the
//!   mean: that is the weakness the baseline exists to show.
//!
//! Only Krum, Multi-Krum and Bulyan attribute: vectors they do not select are
//! `Suspect(RejectedOutlier)`. The other rules mark every usable vector `Honest`.

use serde::{Deserialize, Serialize};

use crate::outcome::{DecodeFailure, Outcome, SuspectReason, WorkerVerdict};
use crate::parallel;

/// A statistical aggregation rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum Aggregator {
    /// Coordinate-wise arithmetic mean. Not robust at all: the baseline's weakness.
    Mean,
    /// Coordinate-wise median (mean of the two middle values for an even count).
    Median,
    /// Coordinate-wise mean after dropping the `trim` largest and `trim` smallest values.
    TrimmedMean,
    /// Point minimising the sum of Euclidean distances (Weiszfeld iterations).
    GeometricMedian,
    /// Blanchard et al. 2017: the vector with the smallest sum of squared distances to its
    /// n - f - 2 nearest neighbours.
    Krum,
    /// Mean of the m vectors with the best Krum scores.
    MultiKrum,
    /// El Mhamdi et al. 2018: iterated Krum selection, then a coordinate-wise trimmed mean
    /// around the median.
    Bulyan,
    /// Karimireddy et al. 2021: iterative clipping around a center.
    CenteredClipping,
}

impl Aggregator {
    pub const ALL: [Aggregator; 8] = [
        Aggregator::Mean,
        Aggregator::Median,
        Aggregator::TrimmedMean,
        Aggregator::GeometricMedian,
        Aggregator::Krum,
        Aggregator::MultiKrum,
        Aggregator::Bulyan,
        Aggregator::CenteredClipping,
    ];

    /// Stable camelCase name (the same spelling serde uses).
    pub fn as_str(&self) -> &'static str {
        match self {
            Aggregator::Mean => "mean",
            Aggregator::Median => "median",
            Aggregator::TrimmedMean => "trimmedMean",
            Aggregator::GeometricMedian => "geometricMedian",
            Aggregator::Krum => "krum",
            Aggregator::MultiKrum => "multiKrum",
            Aggregator::Bulyan => "bulyan",
            Aggregator::CenteredClipping => "centeredClipping",
        }
    }

    /// Fewest usable vectors the rule needs to tolerate `f` Byzantine ones.
    ///
    /// Trimmed mean additionally needs more than `2 * trim` vectors when `trim` is overridden.
    pub fn min_workers(&self, f: usize) -> usize {
        let two_f = f.saturating_mul(2);
        match self {
            Aggregator::Mean => 1,
            // An honest majority is what keeps the median-type estimators bounded.
            Aggregator::Median
            | Aggregator::TrimmedMean
            | Aggregator::GeometricMedian
            | Aggregator::CenteredClipping => two_f.saturating_add(1),
            // Krum's score needs n - f - 2 > f neighbours (Blanchard et al., n > 2f + 2).
            Aggregator::Krum | Aggregator::MultiKrum => two_f.saturating_add(3),
            // Bulyan: n >= 4f + 3 (El Mhamdi et al.).
            Aggregator::Bulyan => two_f.saturating_mul(2).saturating_add(3),
        }
    }
}

/// Default relative tolerance of the geometric median's Weiszfeld iterations.
pub const DEFAULT_GEOMETRIC_MEDIAN_TOLERANCE: f64 = 1e-6;
/// Default iteration cap of the geometric median's Weiszfeld iterations.
pub const DEFAULT_GEOMETRIC_MEDIAN_MAX_ITERATIONS: usize = 100;
/// Default clipping radius of centered clipping.
pub const DEFAULT_CLIPPING_TAU: f64 = 10.0;
/// Default number of centered-clipping iterations.
pub const DEFAULT_CLIPPING_ITERATIONS: usize = 3;

/// Tuning knobs. Every field has a documented default; `None` means "derive it from f / n".
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AggregatorParams {
    /// Trimmed mean: values dropped at each end of every coordinate. Default (`None`): f.
    pub trim: Option<usize>,
    /// Multi-Krum: how many best-scoring vectors are averaged, clamped to 1..=n.
    /// Default (`None`): n - f, where n counts usable vectors.
    pub multi_krum_m: Option<usize>,
    /// Geometric median: stop when a step moves the estimate by at most this fraction of
    /// its norm. Default 1e-6.
    pub geometric_median_tolerance: f64,
    /// Geometric median: iteration cap. Default 100.
    pub geometric_median_max_iterations: usize,
    /// Centered clipping: radius tau; each worker's pull is scaled to norm <= tau.
    /// Negative or NaN counts as 0. Default 10.0.
    pub clipping_tau: f64,
    /// Centered clipping: iterations. Default 3.
    pub clipping_iterations: usize,
}

impl Default for AggregatorParams {
    fn default() -> Self {
        AggregatorParams {
            trim: None,
            multi_krum_m: None,
            geometric_median_tolerance: DEFAULT_GEOMETRIC_MEDIAN_TOLERANCE,
            geometric_median_max_iterations: DEFAULT_GEOMETRIC_MEDIAN_MAX_ITERATIONS,
            clipping_tau: DEFAULT_CLIPPING_TAU,
            clipping_iterations: DEFAULT_CLIPPING_ITERATIONS,
        }
    }
}

/// Aggregates one step's messages with `rule`.
///
/// `messages[j]` is worker j's gradient (`None` = missing); `f` is the number of Byzantine
/// workers tolerated. Returns the robust center of the usable vectors and one verdict per
/// worker (see the module docs for screening). Too few usable vectors for the rule gives
/// `Undecodable { unit: 0, .. }`.
pub fn aggregate(rule: &Aggregator, params: &AggregatorParams, messages: &[Option<&[f32]>], f: usize) -> Outcome<f32> {
    let Screened { mut verdicts, ranks, vectors, dim, missing, malformed, non_finite } = screen(messages);
    let n = vectors.len();

    let trim = params.trim.unwrap_or(f);
    let mut required = rule.min_workers(f).max(1);
    if *rule == Aggregator::TrimmedMean {
        required = required.max(trim.saturating_mul(2).saturating_add(1));
    }
    if n < required {
        // The rule never looked at the usable vectors: neither confirmed nor refuted.
        for &rank in &ranks {
            verdicts[rank] = WorkerVerdict::Unverified;
        }
        let detail = format!(
            "{} needs at least {required} usable vectors for f = {f}, got {n} \
             ({missing} missing, {malformed} malformed, {non_finite} non-finite)",
            rule.as_str()
        );
        return Outcome { aggregate: Err(DecodeFailure::Undecodable { unit: 0, detail }), workers: verdicts };
    }

    let (center, kept) = match rule {
        Aggregator::Mean => (mean(&vectors, dim), None),
        Aggregator::Median => (coordinate_median(&vectors, dim), None),
        Aggregator::TrimmedMean => (trimmed_mean(&vectors, dim, trim), None),
        Aggregator::GeometricMedian => (geometric_median(&vectors, dim, params), None),
        Aggregator::Krum => {
            let (center, kept) = krum(&vectors, f);
            (center, Some(kept))
        }
        Aggregator::MultiKrum => {
            let (center, kept) = multi_krum(&vectors, dim, f, params.multi_krum_m);
            (center, Some(kept))
        }
        Aggregator::Bulyan => {
            let (center, kept) = bulyan(&vectors, dim, f);
            (center, Some(kept))
        }
        Aggregator::CenteredClipping => (centered_clipping(&vectors, dim, params), None),
    };

    for (&rank, keep) in ranks.iter().zip(kept.iter().flatten()) {
        if !keep {
            verdicts[rank] = WorkerVerdict::Suspect(SuspectReason::RejectedOutlier);
        }
    }
    Outcome { aggregate: Ok(center), workers: verdicts }
}

/// The usable vectors of a step and everyone's verdict so far.
struct Screened<'v> {
    verdicts: Vec<WorkerVerdict>,
    /// Worker rank of each usable vector, increasing.
    ranks: Vec<usize>,
    vectors: Vec<&'v [f32]>,
    dim: usize,
    missing: usize,
    malformed: usize,
    non_finite: usize,
}

fn screen<'v>(messages: &[Option<&'v [f32]>]) -> Screened<'v> {
    let dim = expected_length(messages);
    let mut screened = Screened {
        verdicts: Vec::with_capacity(messages.len()),
        ranks: Vec::new(),
        vectors: Vec::new(),
        dim,
        missing: 0,
        malformed: 0,
        non_finite: 0,
    };
    for (rank, message) in messages.iter().enumerate() {
        let verdict = match message {
            None => {
                screened.missing += 1;
                WorkerVerdict::Missing
            }
            Some(v) if v.len() != dim => {
                screened.malformed += 1;
                WorkerVerdict::Suspect(SuspectReason::MalformedMessage)
            }
            Some(v) if !v.iter().all(|x| x.is_finite()) => {
                screened.non_finite += 1;
                WorkerVerdict::Suspect(SuspectReason::RejectedOutlier)
            }
            Some(v) => {
                screened.ranks.push(rank);
                screened.vectors.push(v);
                WorkerVerdict::Honest
            }
        };
        screened.verdicts.push(verdict);
    }
    screened
}

/// Most common length among present messages; ties go to the length seen first.
fn expected_length(messages: &[Option<&[f32]>]) -> usize {
    let lengths: Vec<usize> = messages.iter().flatten().map(|v| v.len()).collect();
    let mut best: Option<(usize, usize)> = None; // (length, count)
    for &len in &lengths {
        let count = lengths.iter().filter(|&&other| other == len).count();
        if best.is_none_or(|(_, best_count)| count > best_count) {
            best = Some((len, count));
        }
    }
    best.map_or(0, |(len, _)| len)
}

// ---------------------------------------------------------------------------------------------
// Coordinate-wise rules
// ---------------------------------------------------------------------------------------------

/// Coordinate-wise mean, accumulated in f64 a vector at a time so the inner loop vectorizes.
fn mean(vectors: &[&[f32]], dim: usize) -> Vec<f32> {
    let count = vectors.len() as f64;
    let mut out = vec![0.0f32; dim];
    parallel::for_each_chunk_mut(&mut out, |offset, chunk| {
        let mut sum = vec![0.0f64; chunk.len()];
        for v in vectors {
            for (acc, &x) in sum.iter_mut().zip(&v[offset..]) {
                *acc += f64::from(x);
            }
        }
        for (slot, &s) in chunk.iter_mut().zip(&sum) {
            *slot = (s / count) as f32;
        }
    });
    out
}

/// `out[i] = per_column(column i)`, where column i holds coordinate i of every vector, in a
/// buffer reused for every coordinate (one allocation per parallel chunk, none per coordinate).
fn map_columns(vectors: &[&[f32]], dim: usize, per_column: impl Fn(&mut [f32]) -> f32 + Sync) -> Vec<f32> {
    let mut out = vec![0.0f32; dim];
    parallel::for_each_chunk_mut(&mut out, |offset, chunk| {
        let mut column = vec![0.0f32; vectors.len()];
        for (i, slot) in (offset..).zip(chunk.iter_mut()) {
            gather(&mut column, vectors, i);
            *slot = per_column(&mut column);
        }
    });
    out
}

/// Copies coordinate `i` of every vector into `column` (a reused buffer, no allocation).
fn gather(column: &mut [f32], vectors: &[&[f32]], i: usize) {
    for (slot, v) in column.iter_mut().zip(vectors) {
        *slot = v[i];
    }
}

/// Median of finite values, reordering them. Uses `total_cmp` so the result does not depend
/// on the input order, not even for -0.0 versus 0.0.
fn median_in_place(values: &mut [f32]) -> f32 {
    let len = values.len();
    let (lower, upper_middle, _) = values.select_nth_unstable_by(len / 2, f32::total_cmp);
    let upper_middle = *upper_middle;
    if len % 2 == 1 {
        return upper_middle;
    }
    let lower_middle =
        lower.iter().copied().reduce(|a, b| if b.total_cmp(&a).is_gt() { b } else { a }).unwrap_or(upper_middle);
    // f64 so that two values near f32::MAX do not overflow.
    ((f64::from(lower_middle) + f64::from(upper_middle)) / 2.0) as f32
}

fn coordinate_median(vectors: &[&[f32]], dim: usize) -> Vec<f32> {
    map_columns(vectors, dim, median_in_place)
}

/// Caller guarantees `vectors.len() > 2 * trim`.
fn trimmed_mean(vectors: &[&[f32]], dim: usize, trim: usize) -> Vec<f32> {
    let n = vectors.len();
    map_columns(vectors, dim, |column| {
        column.sort_unstable_by(f32::total_cmp);
        mean_of_values(&column[trim..n - trim])
    })
}

fn mean_of_values(values: &[f32]) -> f32 {
    let sum: f64 = values.iter().map(|&x| f64::from(x)).sum();
    (sum / values.len() as f64) as f32
}

// ---------------------------------------------------------------------------------------------
// Distance helpers (f64 accumulation in independent lanes so the compiler can vectorize)
// ---------------------------------------------------------------------------------------------

const LANES: usize = 8;

fn squared_distance(a: &[f32], b: &[f32]) -> f64 {
    let (a_blocks, a_tail) = a.as_chunks::<LANES>();
    let (b_blocks, b_tail) = b.as_chunks::<LANES>();
    let mut lanes = [0.0f64; LANES];
    for (x, y) in a_blocks.iter().zip(b_blocks) {
        for ((lane, &xi), &yi) in lanes.iter_mut().zip(x).zip(y) {
            let diff = f64::from(xi) - f64::from(yi);
            *lane += diff * diff;
        }
    }
    let tail: f64 = a_tail.iter().zip(b_tail).map(|(&xi, &yi)| (f64::from(xi) - f64::from(yi)).powi(2)).sum();
    lanes.iter().sum::<f64>() + tail
}

fn squared_distance_to_point(a: &[f32], point: &[f64]) -> f64 {
    let (a_blocks, a_tail) = a.as_chunks::<LANES>();
    let (p_blocks, p_tail) = point.as_chunks::<LANES>();
    let mut lanes = [0.0f64; LANES];
    for (x, p) in a_blocks.iter().zip(p_blocks) {
        for ((lane, &xi), &pi) in lanes.iter_mut().zip(x).zip(p) {
            let diff = f64::from(xi) - pi;
            *lane += diff * diff;
        }
    }
    let tail: f64 = a_tail.iter().zip(p_tail).map(|(&xi, &pi)| (f64::from(xi) - pi).powi(2)).sum();
    lanes.iter().sum::<f64>() + tail
}

fn distance_between_points(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt()
}

fn norm(a: &[f64]) -> f64 {
    a.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn to_f32(point: &[f64]) -> Vec<f32> {
    point.iter().map(|&x| x as f32).collect()
}

// ---------------------------------------------------------------------------------------------
// Geometric median
// ---------------------------------------------------------------------------------------------

/// Weiszfeld iterations from the coordinate-wise median (a robust start: it is already close
/// when a majority is honest).
///
/// Weights are normalised by the smallest non-zero distance, so a near-zero distance gives a
/// large but finite relative weight instead of a division blow-up. When the estimate sits
/// exactly on input points (likely: the coordinate-wise median is often an input), the
/// Vardi–Zhang step either proves it optimal or moves off it, instead of sticking there.
fn geometric_median(vectors: &[&[f32]], dim: usize, params: &AggregatorParams) -> Vec<f32> {
    let mut estimate: Vec<f64> = coordinate_median(vectors, dim).into_iter().map(f64::from).collect();
    let mut next = vec![0.0f64; dim];

    for _ in 0..params.geometric_median_max_iterations {
        let distances: Vec<f64> = parallel::map_items(vectors, dim, |v| squared_distance_to_point(v, &estimate).sqrt());
        let coincident = distances.iter().filter(|&&d| d == 0.0).count();
        let Some(nearest) = distances.iter().copied().filter(|&d| d > 0.0).min_by(f64::total_cmp) else {
            break; // every point sits on the estimate: it is the geometric median
        };

        // Weighted mean of the points not on the estimate, weights nearest/d in (0, 1].
        let weights: Vec<f64> = distances.iter().map(|&d| if d > 0.0 { nearest / d } else { 0.0 }).collect();
        let weight_sum: f64 = weights.iter().sum();
        parallel::for_each_chunk_mut(&mut next, |offset, chunk| {
            chunk.fill(0.0);
            for (v, &weight) in vectors.iter().zip(&weights) {
                if weight > 0.0 {
                    for (acc, &x) in chunk.iter_mut().zip(&v[offset..]) {
                        *acc += weight * f64::from(x);
                    }
                }
            }
            for acc in chunk.iter_mut() {
                *acc /= weight_sum;
            }
        });

        if coincident > 0 {
            // Vardi–Zhang: r = |sum over other points of the unit vectors towards them|.
            let gap = distance_between_points(&next, &estimate);
            let pull = if gap == 0.0 { 0.0 } else { weight_sum * (gap / nearest) };
            if pull <= coincident as f64 {
                break; // the estimate is optimal
            }
            let stay = coincident as f64 / pull;
            for (acc, &e) in next.iter_mut().zip(&estimate) {
                *acc = (1.0 - stay) * *acc + stay * e;
            }
        }

        let step = distance_between_points(&next, &estimate);
        let scale = norm(&next).max(f64::MIN_POSITIVE);
        std::mem::swap(&mut estimate, &mut next);
        if step <= params.geometric_median_tolerance * scale {
            break;
        }
    }
    to_f32(&estimate)
}

// ---------------------------------------------------------------------------------------------
// Krum family
// ---------------------------------------------------------------------------------------------

/// Coordinates per cache block when computing pairwise distances: all n blocks stay in cache
/// while every pair is accumulated, instead of streaming each vector n - 1 times.
const DISTANCE_BLOCK: usize = 2048;
/// Coordinates per parallel task; each task returns its own partial matrix.
const DISTANCE_TASK: usize = 32 * DISTANCE_BLOCK;

/// Symmetric matrix of pairwise squared distances, computed once in O(n^2 d).
struct PairwiseDistances {
    n: usize,
    squared: Vec<f64>,
}

impl PairwiseDistances {
    fn new(vectors: &[&[f32]]) -> Self {
        let n = vectors.len();
        let dim = vectors.first().map_or(0, |v| v.len());
        let tasks: Vec<(usize, usize)> =
            (0..dim).step_by(DISTANCE_TASK).map(|start| (start, (start + DISTANCE_TASK).min(dim))).collect();
        let partials = parallel::map_items(&tasks, n * DISTANCE_TASK, |&(task_start, task_end)| {
            let mut partial = vec![0.0f64; n * n];
            for start in (task_start..task_end).step_by(DISTANCE_BLOCK) {
                let end = (start + DISTANCE_BLOCK).min(task_end);
                for i in 0..n {
                    for j in i + 1..n {
                        partial[i * n + j] += squared_distance(&vectors[i][start..end], &vectors[j][start..end]);
                    }
                }
            }
            partial
        });
        // Summed in task order, so the result does not depend on the thread count.
        let mut squared = vec![0.0f64; n * n];
        for partial in &partials {
            for (total, &part) in squared.iter_mut().zip(partial) {
                *total += part;
            }
        }
        for i in 0..n {
            for j in 0..i {
                squared[i * n + j] = squared[j * n + i];
            }
        }
        PairwiseDistances { n, squared }
    }

    fn get(&self, i: usize, j: usize) -> f64 {
        self.squared[i * self.n + j]
    }
}

/// Krum scores of `candidates` (indices into the usable vectors) among themselves: the sum
/// of squared distances to the `len - f - 2` nearest other candidates. That count is clamped
/// to at least 1 so Bulyan's late, small rounds still prefer clustered vectors.
fn krum_scores(distances: &PairwiseDistances, candidates: &[usize], f: usize) -> Vec<f64> {
    let others = candidates.len().saturating_sub(1);
    let neighbours = candidates.len().saturating_sub(f + 2).max(1).min(others);
    let mut to_others = Vec::with_capacity(others);
    candidates
        .iter()
        .map(|&i| {
            to_others.clear();
            to_others.extend(candidates.iter().filter(|&&j| j != i).map(|&j| distances.get(i, j)));
            to_others.sort_unstable_by(f64::total_cmp);
            to_others[..neighbours].iter().sum()
        })
        .collect()
}

/// Position in `candidates` of the best (lowest) Krum score; ties go to the earliest.
fn krum_pick(distances: &PairwiseDistances, candidates: &[usize], f: usize) -> usize {
    krum_scores(distances, candidates, f)
        .iter()
        .enumerate()
        .min_by(|(_, a), (_, b)| a.total_cmp(b))
        .map_or(0, |(position, _)| position)
}

fn krum(vectors: &[&[f32]], f: usize) -> (Vec<f32>, Vec<bool>) {
    let distances = PairwiseDistances::new(vectors);
    let candidates: Vec<usize> = (0..vectors.len()).collect();
    let chosen = krum_pick(&distances, &candidates, f);
    let mut kept = vec![false; vectors.len()];
    kept[chosen] = true;
    (vectors[chosen].to_vec(), kept)
}

/// Scores are computed once (Blanchard et al.'s Multi-Krum), then the m best are averaged.
fn multi_krum(vectors: &[&[f32]], dim: usize, f: usize, m: Option<usize>) -> (Vec<f32>, Vec<bool>) {
    let n = vectors.len();
    let m = m.unwrap_or(n.saturating_sub(f)).clamp(1, n);
    let distances = PairwiseDistances::new(vectors);
    let candidates: Vec<usize> = (0..n).collect();
    let scores = krum_scores(&distances, &candidates, f);
    let mut order = candidates;
    // Stable sort: equal scores keep rank order.
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut kept = vec![false; n];
    let selected: Vec<&[f32]> = order[..m]
        .iter()
        .map(|&i| {
            kept[i] = true;
            vectors[i]
        })
        .collect();
    (mean(&selected, dim), kept)
}

/// Caller guarantees `vectors.len() >= 4f + 3`.
fn bulyan(vectors: &[&[f32]], dim: usize, f: usize) -> (Vec<f32>, Vec<bool>) {
    let n = vectors.len();
    let theta = n - 2 * f;
    let beta = theta - 2 * f;

    // Selection: repeatedly take the Krum winner of what remains.
    let distances = PairwiseDistances::new(vectors);
    let mut remaining: Vec<usize> = (0..n).collect();
    let mut kept = vec![false; n];
    let mut selected = Vec::with_capacity(theta);
    while selected.len() < theta {
        let position = krum_pick(&distances, &remaining, f);
        let chosen = remaining.remove(position);
        kept[chosen] = true;
        selected.push(vectors[chosen]);
    }

    // Aggregation: per coordinate, average the beta values closest to the median.
    let center = map_columns(&selected, dim, |column| {
        column.sort_unstable_by(f32::total_cmp);
        let median = if theta % 2 == 1 {
            f64::from(column[theta / 2])
        } else {
            (f64::from(column[theta / 2 - 1]) + f64::from(column[theta / 2])) / 2.0
        };
        // In sorted order the beta closest values form a window; shrink it from the end
        // farther from the median (ties drop the upper end).
        let (mut low, mut high) = (0, theta);
        while high - low > beta {
            if median - f64::from(column[low]) > f64::from(column[high - 1]) - median {
                low += 1;
            } else {
                high -= 1;
            }
        }
        mean_of_values(&column[low..high])
    });
    (center, kept)
}

// ---------------------------------------------------------------------------------------------
// Centered clipping
// ---------------------------------------------------------------------------------------------

/// v <- v + mean_i clip(x_i - v, tau), where clip scales a vector down to norm tau.
///
/// Karimireddy et al. start from the previous step's aggregate (momentum). This module is
/// stateless, so it starts from the coordinate-wise median, which is already robust; each
/// iteration can then move at most tau * (Byzantine fraction) towards the attackers.
fn centered_clipping(vectors: &[&[f32]], dim: usize, params: &AggregatorParams) -> Vec<f32> {
    // `max` maps NaN to 0 too.
    let tau = params.clipping_tau.max(0.0);
    let count = vectors.len() as f64;
    let mut center: Vec<f64> = coordinate_median(vectors, dim).into_iter().map(f64::from).collect();
    for _ in 0..params.clipping_iterations {
        let factors: Vec<f64> = parallel::map_items(vectors, dim, |v| {
            let distance = squared_distance_to_point(v, &center).sqrt();
            if distance > tau { tau / distance } else { 1.0 }
        });
        parallel::for_each_chunk_mut(&mut center, |offset, chunk| {
            let mut pull = vec![0.0f64; chunk.len()];
            for (v, &factor) in vectors.iter().zip(&factors) {
                for ((acc, &x), &c) in pull.iter_mut().zip(&v[offset..]).zip(chunk.iter()) {
                    *acc += factor * (f64::from(x) - c);
                }
            }
            for (c, &p) in chunk.iter_mut().zip(&pull) {
                *c += p / count;
            }
        });
    }
    to_f32(&center)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(rule: Aggregator, vectors: &[Vec<f32>], f: usize) -> Outcome<f32> {
        run_with(rule, &AggregatorParams::default(), vectors, f)
    }

    fn run_with(rule: Aggregator, params: &AggregatorParams, vectors: &[Vec<f32>], f: usize) -> Outcome<f32> {
        let messages: Vec<Option<&[f32]>> = vectors.iter().map(|v| Some(v.as_slice())).collect();
        aggregate(&rule, params, &messages, f)
    }

    fn center_of(outcome: &Outcome<f32>) -> &[f32] {
        match &outcome.aggregate {
            Ok(center) => center,
            Err(failure) => panic!("expected an aggregate, got {failure}"),
        }
    }

    fn assert_close(actual: &[f32], expected: &[f32], tolerance: f32) {
        assert_eq!(actual.len(), expected.len(), "{actual:?} vs {expected:?}");
        for (a, e) in actual.iter().zip(expected) {
            assert!((a - e).abs() <= tolerance, "{actual:?} is not within {tolerance} of {expected:?}");
        }
    }

    fn distance(a: &[f32], b: &[f32]) -> f64 {
        squared_distance(a, b).sqrt()
    }

    fn scalars(values: &[f32]) -> Vec<Vec<f32>> {
        values.iter().map(|&x| vec![x]).collect()
    }

    const HONEST_CENTER: [f32; 4] = [1.0, -2.0, 3.0, 0.5];

    /// `honest` vectors spread by at most 0.1 around HONEST_CENTER, then `byzantine` vectors
    /// of magnitude 1e30 (still finite, so screening keeps them).
    fn honest_and_huge(honest: usize, byzantine: usize) -> Vec<Vec<f32>> {
        let mut vectors: Vec<Vec<f32>> = (0..honest)
            .map(|j| {
                HONEST_CENTER
                    .iter()
                    .enumerate()
                    .map(|(i, &c)| c + 0.1 * (((j * 7 + i * 3) % 5) as f32 - 2.0) / 2.0)
                    .collect()
            })
            .collect();
        vectors.extend((0..byzantine).map(|_| vec![1e30; HONEST_CENTER.len()]));
        vectors
    }

    #[test]
    fn names_and_all_are_consistent() {
        let names: Vec<&str> = Aggregator::ALL.iter().map(Aggregator::as_str).collect();
        assert_eq!(
            names,
            ["mean", "median", "trimmedMean", "geometricMedian", "krum", "multiKrum", "bulyan", "centeredClipping"]
        );
    }

    #[test]
    fn min_workers_follow_the_papers() {
        assert_eq!(Aggregator::Mean.min_workers(3), 1);
        assert_eq!(Aggregator::Median.min_workers(3), 7);
        assert_eq!(Aggregator::TrimmedMean.min_workers(3), 7);
        assert_eq!(Aggregator::GeometricMedian.min_workers(3), 7);
        assert_eq!(Aggregator::CenteredClipping.min_workers(3), 7);
        assert_eq!(Aggregator::Krum.min_workers(3), 9);
        assert_eq!(Aggregator::MultiKrum.min_workers(3), 9);
        assert_eq!(Aggregator::Bulyan.min_workers(3), 15);
        assert_eq!(Aggregator::Bulyan.min_workers(usize::MAX), usize::MAX);
    }

    #[test]
    fn mean_hand_example() {
        let outcome = run(Aggregator::Mean, &[vec![1.0, 2.0], vec![3.0, 4.0], vec![5.0, 9.0]], 0);
        assert_eq!(center_of(&outcome), [3.0, 5.0]);
        assert_eq!(outcome.workers, vec![WorkerVerdict::Honest; 3]);
    }

    #[test]
    fn median_hand_example_odd_and_even() {
        let odd = run(Aggregator::Median, &[vec![1.0, 10.0], vec![2.0, 20.0], vec![100.0, -5.0]], 1);
        assert_eq!(center_of(&odd), [2.0, 10.0]);
        let even = run(Aggregator::Median, &scalars(&[10.0, 1.0, 3.0, 2.0]), 1);
        assert_eq!(center_of(&even), [2.5]);
    }

    #[test]
    fn median_of_values_near_f32_max_does_not_overflow() {
        let outcome = run(Aggregator::Median, &scalars(&[f32::MAX, f32::MAX]), 0);
        assert_eq!(center_of(&outcome), [f32::MAX]);
    }

    #[test]
    fn trimmed_mean_hand_example() {
        let outcome = run(
            Aggregator::TrimmedMean,
            &[vec![1.0, -100.0], vec![100.0, 0.0], vec![3.0, 1.0], vec![2.0, 2.0], vec![4.0, 3.0]],
            1,
        );
        assert_eq!(center_of(&outcome), [3.0, 1.0]);
        assert_eq!(outcome.workers, vec![WorkerVerdict::Honest; 5]);
    }

    #[test]
    fn trimmed_mean_honours_an_explicit_trim() {
        let params = AggregatorParams { trim: Some(2), ..AggregatorParams::default() };
        let outcome = run_with(Aggregator::TrimmedMean, &params, &scalars(&[1.0, 2.0, 3.0, 4.0, 100.0]), 0);
        assert_eq!(center_of(&outcome), [3.0]);
        // trim 2 needs 5 vectors even though f = 0.
        let too_few = run_with(Aggregator::TrimmedMean, &params, &scalars(&[1.0, 2.0, 3.0, 4.0]), 0);
        assert!(too_few.aggregate.is_err());
    }

    #[test]
    fn geometric_median_of_equilateral_triangle_is_its_centroid() {
        let height = 3.0f32.sqrt();
        let outcome = run(Aggregator::GeometricMedian, &[vec![0.0, 0.0], vec![2.0, 0.0], vec![1.0, height]], 1);
        assert_close(center_of(&outcome), &[1.0, height / 3.0], 1e-4);
        assert_eq!(outcome.workers, vec![WorkerVerdict::Honest; 3]);
    }

    #[test]
    fn geometric_median_moves_off_a_non_optimal_start_point() {
        // The coordinate-wise median (0, 0) is an input point but not the Fermat point,
        // which lies on the diagonal at t = (10 - sqrt(100 / 3)) / 2 (120 degree angles).
        let outcome = run(Aggregator::GeometricMedian, &[vec![0.0, 0.0], vec![0.0, 10.0], vec![10.0, 0.0]], 1);
        let t = (10.0 - (100.0f32 / 3.0).sqrt()) / 2.0;
        assert_close(center_of(&outcome), &[t, t], 1e-3);
    }

    #[test]
    fn geometric_median_stays_on_an_optimal_input_point() {
        // The angle at the origin exceeds 120 degrees, so the origin is the geometric median.
        let outcome = run(Aggregator::GeometricMedian, &[vec![0.0, 0.0], vec![1.0, 0.0], vec![-1.0, 0.1]], 1);
        assert_close(center_of(&outcome), &[0.0, 0.0], 1e-6);
    }

    #[test]
    fn geometric_median_of_identical_vectors_is_that_vector() {
        let outcome = run(Aggregator::GeometricMedian, &vec![vec![1.5, -2.0]; 5], 2);
        assert_eq!(center_of(&outcome), [1.5, -2.0]);
    }

    #[test]
    fn krum_hand_example() {
        // f = 1, n = 5: each score sums the 2 smallest squared distances.
        // Scores: 0 -> 1 + 4 = 5, 1 -> 1 + 1 = 2, 2 -> 1 + 4 = 5, 10 -> 1 + 64, 11 -> 1 + 81.
        let outcome = run(Aggregator::Krum, &scalars(&[0.0, 1.0, 2.0, 10.0, 11.0]), 1);
        assert_eq!(center_of(&outcome), [1.0]);
        assert_eq!(outcome.suspects(), vec![0, 2, 3, 4]);
        assert_eq!(outcome.workers[1], WorkerVerdict::Honest);
        assert_eq!(outcome.workers[0], WorkerVerdict::Suspect(SuspectReason::RejectedOutlier));
    }

    #[test]
    fn multi_krum_hand_example() {
        let points = scalars(&[0.0, 1.0, 2.0, 10.0, 11.0]);
        // Default m = n - f = 4: the four best scores are 1, 0, 2 (tie, rank order) and 10.
        let outcome = run(Aggregator::MultiKrum, &points, 1);
        assert_eq!(center_of(&outcome), [3.25]);
        assert_eq!(outcome.suspects(), vec![4]);
        let params = AggregatorParams { multi_krum_m: Some(3), ..AggregatorParams::default() };
        let outcome = run_with(Aggregator::MultiKrum, &params, &points, 1);
        assert_eq!(center_of(&outcome), [1.0]);
        assert_eq!(outcome.suspects(), vec![3, 4]);
    }

    #[test]
    fn bulyan_hand_example() {
        // n = 7, f = 1: theta = 5 selected by iterated Krum, beta = 3 averaged per coordinate.
        // Selection order: 2, 1, 3, 0 (tie with 4, rank order), then 4 (tie with -50, rank
        // order). Sorted selection 0..=4, median 2, the 3 closest values 1, 2, 3 -> 2.
        let outcome = run(Aggregator::Bulyan, &scalars(&[0.0, 1.0, 2.0, 3.0, 4.0, 100.0, -50.0]), 1);
        assert_eq!(center_of(&outcome), [2.0]);
        assert_eq!(outcome.suspects(), vec![5, 6]);
    }

    #[test]
    fn centered_clipping_hand_examples() {
        let points = scalars(&[0.0, 1.0, 5.0]);
        // tau = 10 never clips: one step from the median 1 lands on the mean 2, and stays.
        let outcome = run(Aggregator::CenteredClipping, &points, 1);
        assert_close(center_of(&outcome), &[2.0], 1e-6);
        // tau = 1 clips the pull of 5 to 1: (-1 + 0 + 1) / 3 = 0, so it stays at 1.
        let params = AggregatorParams { clipping_tau: 1.0, clipping_iterations: 1, ..AggregatorParams::default() };
        let outcome = run_with(Aggregator::CenteredClipping, &params, &points, 1);
        assert_close(center_of(&outcome), &[1.0], 1e-6);
        assert_eq!(outcome.workers, vec![WorkerVerdict::Honest; 3]);
    }

    #[test]
    fn robust_rules_survive_f_huge_byzantine_vectors() {
        let f = 2;
        let honest = 9; // n = 11 = 4f + 3, enough for Bulyan
        let vectors = honest_and_huge(honest, f);
        let byzantine_ranks: Vec<usize> = (honest..honest + f).collect();
        for rule in [
            Aggregator::Median,
            Aggregator::TrimmedMean,
            Aggregator::GeometricMedian,
            Aggregator::Krum,
            Aggregator::MultiKrum,
            Aggregator::Bulyan,
        ] {
            let outcome = run(rule, &vectors, f);
            let center = center_of(&outcome);
            assert!(distance(center, &HONEST_CENTER) < 0.2, "{rule:?} gave {center:?}");
            // Bulyan is left out: in its last selection rounds only 2f + 1 vectors remain,
            // Krum then counts f - 1 neighbours, and two identical Byzantine vectors (distance
            // 0) can win a round. Its coordinate-wise trimming is what removes them.
            let expected = match rule {
                Aggregator::Bulyan => continue,
                Aggregator::Krum | Aggregator::MultiKrum => WorkerVerdict::Suspect(SuspectReason::RejectedOutlier),
                _ => WorkerVerdict::Honest,
            };
            for &rank in &byzantine_ranks {
                assert_eq!(outcome.workers[rank], expected, "{rule:?}");
            }
        }
        // Multi-Krum's default m = n - f keeps exactly the honest vectors.
        let outcome = run(Aggregator::MultiKrum, &vectors, f);
        assert_eq!(outcome.suspects(), byzantine_ranks);
    }

    #[test]
    fn centered_clipping_moves_at_most_tau_times_byzantine_fraction_per_iteration() {
        let (f, honest) = (2, 9);
        let vectors = honest_and_huge(honest, f);
        let params = AggregatorParams::default();
        let outcome = run_with(Aggregator::CenteredClipping, &params, &vectors, f);
        let center = center_of(&outcome);
        let drift_bound = params.clipping_iterations as f64 * params.clipping_tau * f as f64 / (honest + f) as f64;
        // Honest spread is below 0.2 in norm.
        assert!(distance(center, &HONEST_CENTER) < drift_bound + 0.2, "{center:?}");
        // A small tau keeps it close to the honest center.
        let tight = AggregatorParams { clipping_tau: 0.1, ..AggregatorParams::default() };
        let outcome = run_with(Aggregator::CenteredClipping, &tight, &vectors, f);
        assert!(distance(center_of(&outcome), &HONEST_CENTER) < 0.3);
    }

    #[test]
    fn mean_is_dragged_away_by_huge_byzantine_vectors() {
        let vectors = honest_and_huge(9, 2);
        let outcome = run(Aggregator::Mean, &vectors, 2);
        let center = center_of(&outcome);
        assert!(center.iter().all(|&x| x > 1e28), "{center:?}");
        assert_eq!(outcome.suspects(), Vec::<usize>::new());
    }

    #[test]
    fn non_finite_vectors_are_excluded_by_every_rule() {
        let mut vectors = honest_and_huge(11, 0);
        vectors[3][1] = f32::NAN;
        vectors[7][0] = f32::INFINITY;
        vectors[9][2] = f32::NEG_INFINITY;
        // 8 usable vectors: enough for every rule with f = 1 (Bulyan needs 7).
        for rule in Aggregator::ALL {
            let outcome = run(rule, &vectors, 1);
            let center = center_of(&outcome);
            assert!(center.iter().all(|x| x.is_finite()), "{rule:?}: {center:?}");
            assert!(distance(center, &HONEST_CENTER) < 0.2, "{rule:?}");
            for rank in [3, 7, 9] {
                assert_eq!(outcome.workers[rank], WorkerVerdict::Suspect(SuspectReason::RejectedOutlier), "{rule:?}");
            }
        }
    }

    #[test]
    fn missing_workers_are_marked_and_skipped() {
        let a = [1.0f32, 2.0];
        let b = [3.0f32, 4.0];
        let c = [5.0f32, 9.0];
        let messages = [Some(&a[..]), None, Some(&b[..]), None, Some(&c[..])];
        let outcome = aggregate(&Aggregator::Mean, &AggregatorParams::default(), &messages, 0);
        assert_eq!(center_of(&outcome), [3.0, 5.0]);
        assert_eq!(outcome.missing(), vec![1, 3]);
        assert_eq!(outcome.workers.len(), 5);
        assert!(outcome.suspects().is_empty());
    }

    #[test]
    fn wrong_length_vectors_are_malformed_and_excluded() {
        let vectors = vec![vec![1.0], vec![1.0, 2.0], vec![3.0, 4.0, 5.0], vec![3.0, 4.0], vec![5.0, 9.0]];
        for rule in Aggregator::ALL {
            let outcome = run(rule, &vectors, 0);
            assert_eq!(center_of(&outcome).len(), 2, "{rule:?}");
            for rank in [0, 2] {
                assert_eq!(outcome.workers[rank], WorkerVerdict::Suspect(SuspectReason::MalformedMessage), "{rule:?}");
            }
        }
        let outcome = run(Aggregator::Mean, &vectors, 0);
        assert_eq!(center_of(&outcome), [3.0, 5.0]);
    }

    #[test]
    fn the_first_vector_alone_does_not_set_the_expected_length() {
        let vectors = vec![vec![7.0; 5], vec![1.0, 2.0], vec![3.0, 4.0], vec![5.0, 9.0]];
        let outcome = run(Aggregator::Median, &vectors, 1);
        assert_eq!(center_of(&outcome), [3.0, 4.0]);
        assert_eq!(outcome.suspects(), vec![0]);
    }

    #[test]
    fn too_few_usable_vectors_is_undecodable() {
        let vectors = honest_and_huge(6, 0);
        let outcome = run(Aggregator::Bulyan, &vectors, 1);
        match &outcome.aggregate {
            Err(DecodeFailure::Undecodable { unit: 0, detail }) => {
                assert!(detail.contains("bulyan"), "{detail}");
                assert!(detail.contains("at least 7"), "{detail}");
                assert!(detail.contains("got 6"), "{detail}");
            }
            other => panic!("expected Undecodable, got {other:?}"),
        }
        assert_eq!(outcome.workers, vec![WorkerVerdict::Unverified; 6]);

        // Excluded vectors do not count.
        let a = [1.0f32];
        let nan = [f32::NAN];
        let messages = [Some(&a[..]), Some(&nan[..]), None];
        let outcome = aggregate(&Aggregator::Median, &AggregatorParams::default(), &messages, 1);
        assert_eq!(outcome.verdict(), crate::outcome::StepVerdict::Undecodable);

        // Nothing at all is undecodable even for the mean.
        let outcome = aggregate(&Aggregator::Mean, &AggregatorParams::default(), &[], 0);
        assert!(outcome.aggregate.is_err());
        assert!(outcome.workers.is_empty());
    }

    #[test]
    fn empty_vectors_aggregate_to_an_empty_vector() {
        for rule in Aggregator::ALL {
            let outcome = run(rule, &vec![Vec::new(); 7], 1);
            assert!(center_of(&outcome).is_empty(), "{rule:?}");
        }
    }

    #[test]
    fn odd_params_do_not_panic() {
        let params = AggregatorParams {
            trim: Some(0),
            multi_krum_m: Some(0),
            geometric_median_tolerance: f64::NAN,
            geometric_median_max_iterations: 0,
            clipping_tau: f64::NAN,
            clipping_iterations: 5,
        };
        let vectors = honest_and_huge(9, 2);
        for rule in Aggregator::ALL {
            let outcome = run_with(rule, &params, &vectors, 2);
            assert!(outcome.aggregate.is_ok(), "{rule:?}");
        }
        let huge_m = AggregatorParams { multi_krum_m: Some(1000), ..AggregatorParams::default() };
        let outcome = run_with(Aggregator::MultiKrum, &huge_m, &vectors, 2);
        assert!(outcome.suspects().is_empty());
    }

    #[test]
    fn large_vectors_split_across_threads_give_the_tiled_small_result() {
        // Tiling a small example k times multiplies every distance by sqrt(k), which changes
        // no selection and no (geometric) median, so the large result is the small one tiled.
        // Clipping is switched off (infinite tau) because tau does not scale with k.
        let small = [
            [0.0f32, 1.0, -3.0, 2.5, 7.0],
            [1.0, 1.5, -2.0, 2.0, 6.0],
            [2.0, 0.5, -2.5, 3.0, 6.5],
            [1.5, 1.0, -3.5, 2.5, 7.5],
            [0.5, 2.0, -3.0, 1.5, 7.0],
            [1e6, -1e6, 1e6, -1e6, 1e6],
            [0.7, 1.2, -2.7, 2.2, 6.7],
        ];
        let tiles = 60_000; // 300,000 coordinates: several parallel chunks and distance tasks
        let large: Vec<Vec<f32>> = small.iter().map(|v| v.repeat(tiles)).collect();
        let small: Vec<Vec<f32>> = small.iter().map(|v| v.to_vec()).collect();
        let params = AggregatorParams { clipping_tau: f64::INFINITY, ..AggregatorParams::default() };
        for rule in Aggregator::ALL {
            let expected = run_with(rule, &params, &small, 1);
            let actual = run_with(rule, &params, &large, 1);
            assert_eq!(actual.workers, expected.workers, "{rule:?}");
            let tiled = center_of(&expected).repeat(tiles);
            let tolerance = if rule == Aggregator::GeometricMedian { 1e-3 } else { 1e-4 };
            assert_close(center_of(&actual), &tiled, tolerance);
        }
    }

    fn messages_strategy() -> impl Strategy<Value = (Vec<Option<Vec<f32>>>, usize)> {
        (0usize..6, 1usize..12).prop_flat_map(|(dim, workers)| {
            (
                prop::collection::vec(
                    prop::option::weighted(
                        0.85,
                        prop::collection::vec(
                            prop_oneof![
                                4 => -1e3f32..1e3f32,
                                1 => proptest::num::f32::ANY,
                            ],
                            dim,
                        ),
                    ),
                    workers,
                ),
                0usize..3,
            )
        })
    }

    fn finite_messages_strategy() -> impl Strategy<Value = (Vec<Vec<f32>>, Vec<usize>)> {
        (1usize..5, 1usize..10).prop_flat_map(|(dim, workers)| {
            let vectors = prop::collection::vec(prop::collection::vec(-1e6f32..1e6f32, dim), workers);
            let order = Just((0..workers).collect::<Vec<usize>>()).prop_shuffle();
            (vectors, order)
        })
    }

    fn as_messages(vectors: &[Option<Vec<f32>>]) -> Vec<Option<&[f32]>> {
        vectors.iter().map(|v| v.as_deref()).collect()
    }

    proptest! {
        #[test]
        fn no_rule_panics_on_arbitrary_input((vectors, f) in messages_strategy()) {
            let messages = as_messages(&vectors);
            for rule in Aggregator::ALL {
                let outcome = aggregate(&rule, &AggregatorParams::default(), &messages, f);
                prop_assert_eq!(outcome.workers.len(), messages.len());
                if let Ok(center) = &outcome.aggregate {
                    let dim = expected_length(&messages);
                    prop_assert_eq!(center.len(), dim);
                    // Every rule stays inside the hull of finite inputs.
                    prop_assert!(center.iter().all(|x| x.is_finite()), "{:?}: {:?}", rule, center);
                }
                for (verdict, message) in outcome.workers.iter().zip(&messages) {
                    prop_assert_eq!(*verdict == WorkerVerdict::Missing, message.is_none());
                }
            }
        }

        #[test]
        fn permuting_workers_does_not_change_coordinate_rules(
            (vectors, order) in finite_messages_strategy(),
        ) {
            let permuted: Vec<Vec<f32>> = order.iter().map(|&j| vectors[j].clone()).collect();
            for rule in [Aggregator::Median, Aggregator::TrimmedMean, Aggregator::Mean] {
                let f = (vectors.len() - 1) / 2;
                let original = run(rule, &vectors, f);
                let shuffled = run(rule, &permuted, f);
                let (a, b) = (center_of(&original), center_of(&shuffled));
                if rule == Aggregator::Mean {
                    for (x, y) in a.iter().zip(b) {
                        prop_assert!((x - y).abs() <= 1e-6 * x.abs().max(1.0), "{:?} vs {:?}", a, b);
                    }
                } else {
                    // Sorted order is canonical under total_cmp, so these are bitwise equal.
                    let a_bits: Vec<u32> = a.iter().map(|x| x.to_bits()).collect();
                    let b_bits: Vec<u32> = b.iter().map(|x| x.to_bits()).collect();
                    prop_assert_eq!(a_bits, b_bits, "{:?}", rule);
                }
            }
        }
    }
}
