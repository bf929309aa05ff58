//! Cyclic code with Fourier decoding (coding.md §3, §5), generalised from 2s to q = r - 1
//! syndromes so stragglers and liars share the redundancy: 2a + e <= r - 1.
//!
//! Worker j of a block of n holds partitions {j, ..., j + r - 1} mod n and sends one complex
//! vector z_j = sum_i W[j, i] g_i. The PS projects the n received vectors onto a fresh secret
//! random direction, locates the liars from the q syndromes, fits the honest codeword on the
//! rest, verifies that fit on a second independent projection, and only then recovers the
//! exact sum. Anything inconsistent is reported, never returned.
//!
//! Wire layout of a coded vector: interleaved complex numbers `[re_0, im_0, re_1, im_1, ...]`,
//! 2d values (f32 little-endian on the wire; f64 is accepted for tests and references).

use std::f64::consts::PI;
use std::ops::Range;

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng, TryRngCore};

use crate::complex::{C64, Matrix, ONE, ZERO, least_squares, least_squares_conditioned, regularized_solve};
use crate::outcome::{DecodeFailure, Outcome, SuspectReason, WorkerVerdict};
use crate::parallel;

/// Element types a coded vector may arrive in.
pub trait WireScalar: Copy + Send + Sync + 'static {
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
    /// Unit roundoff of the transport: the relative rounding noise of an honest message.
    const UNIT_ROUNDOFF: f64;
}
impl WireScalar for f32 {
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    const UNIT_ROUNDOFF: f64 = f32::EPSILON as f64 / 2.0;
}
impl WireScalar for f64 {
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(v: f64) -> Self {
        v
    }
    const UNIT_ROUNDOFF: f64 = f64::EPSILON / 2.0;
}

/// The code of one block: n workers, redundancy r, q = r - 1 syndromes.
#[derive(Clone, Debug)]
pub struct CyclicCode {
    n: usize,
    r: usize,
    /// W[j, i], n x n, zero outside worker j's support.
    encoding: Matrix,
    /// C1: the first n - q columns of the unitary DFT, n x (n - q).
    data_columns: Matrix,
}

/// exp(-2 pi i k / n): the DFT root `w` of coding.md raised to k.
fn root(n: usize, k: i64) -> C64 {
    C64::cis(-2.0 * PI * (k.rem_euclid(n as i64) as f64) / n as f64)
}

impl CyclicCode {
    /// Requires 1 <= r <= n (validated by `Scheme`).
    pub fn new(n: usize, r: usize) -> Self {
        assert!(r >= 1 && r <= n, "cyclic code needs 1 <= r <= n");
        let norm = 1.0 / (n as f64).sqrt();
        // Closed form: W[j,i] = n^-1/2 prod_{m in J_i} (1 - w^(j-m)), J_i = the n - r workers
        // that do not hold partition i, i.e. {i+1, ..., i+n-r} mod n.
        let encoding = Matrix::from_fn(n, n, |j, i| {
            (1..=n - r).fold(C64::new(norm, 0.0), |acc, t| {
                let m = (i + t) % n;
                acc * (ONE - root(n, j as i64 - m as i64))
            })
        });
        let data_columns = Matrix::from_fn(n, n - (r - 1), |j, k| root(n, (j * k) as i64).scale(norm));
        CyclicCode { n, r, encoding, data_columns }
    }

    pub fn workers(&self) -> usize {
        self.n
    }

    /// W[j, i].
    pub fn coefficient(&self, worker: usize, partition: usize) -> C64 {
        self.encoding.at(worker, partition)
    }

    /// Worker `worker`'s coded vector from the gradients of its partitions, given in the order
    /// {worker, worker + 1, ..., worker + r - 1} mod n. Computed in f64, sent as `T`.
    pub fn encode<T: WireScalar>(&self, worker: usize, gradients: &[&[f32]]) -> Vec<T> {
        assert_eq!(gradients.len(), self.r, "one gradient per held partition");
        let dim = gradients.first().map_or(0, |g| g.len());
        assert!(gradients.iter().all(|g| g.len() == dim), "gradients of one length");
        let coeffs: Vec<C64> = (0..self.r).map(|k| self.coefficient(worker, (worker + k) % self.n)).collect();
        let mut out = vec![T::from_f64(0.0); 2 * dim];
        parallel::for_each_chunk_mut(&mut out, |offset, chunk| {
            // Chunks of an even-length vector split at even offsets except possibly the
            // last; index by absolute position to stay correct.
            for (slot, value) in chunk.iter_mut().enumerate() {
                let pos = offset + slot;
                let (coord, imag) = (pos / 2, pos % 2 == 1);
                let acc = coeffs.iter().zip(gradients).fold(0.0, |acc, (c, g)| {
                    let x = f64::from(g[coord]);
                    acc + if imag { c.im * x } else { c.re * x }
                });
                *value = T::from_f64(acc);
            }
        });
        out
    }
}

/// Decodes one step of a cyclic-coded job (all blocks).
#[derive(Clone, Debug)]
pub struct CyclicDecoder {
    blocks: Vec<(Range<usize>, CyclicCode)>,
    byzantine_tolerance: usize,
    dim: usize,
}

/// What the decoder saw in one block, for tests and diagnostics.
#[derive(Clone, Debug, Default)]
pub(crate) struct BlockTrace {
    pub projections: Vec<C64>,
    pub syndromes: Vec<C64>,
    pub locator: Vec<C64>,
    pub flagged: Vec<usize>,
    pub consistent: Vec<usize>,
}

impl CyclicDecoder {
    /// `blocks` from `Scheme::cyclic_blocks`; `dim` = the gradient dimension d (messages carry 2d).
    pub fn new(blocks: &[Range<usize>], redundancy: usize, byzantine_tolerance: usize, dim: usize) -> Self {
        let blocks = blocks.iter().map(|b| (b.clone(), CyclicCode::new(b.len(), redundancy))).collect();
        CyclicDecoder { blocks, byzantine_tolerance, dim }
    }

    pub fn workers(&self) -> usize {
        self.blocks.last().map_or(0, |(b, _)| b.end)
    }

    /// The code of the block `worker` belongs to, and its index inside the block.
    pub fn code_of(&self, worker: usize) -> (&CyclicCode, usize) {
        let (range, code) = self.blocks.iter().find(|(b, _)| b.contains(&worker)).expect("worker in range");
        (code, worker - range.start)
    }

    /// Decodes with two fresh secret projections drawn from the OS-seeded CSPRNG: a liar
    /// cannot aim for the null space of a direction chosen after its message arrived.
    pub fn decode<T: WireScalar>(&self, messages: &[Option<&[T]>]) -> Outcome<f64> {
        let mut seeds = [[0u8; 32]; DIRECTIONS];
        for seed in &mut seeds {
            // Without OS entropy the projection would be guessable: refuse to run rather than
            // decode with a predictable one.
            rand_core::OsRng.try_fill_bytes(seed).expect("the operating system's random source failed");
        }
        let directions: Vec<Vec<f64>> = seeds.iter().map(|&seed| random_direction(seed, self.dim)).collect();
        let views: Vec<&[f64]> = directions.iter().map(Vec::as_slice).collect();
        self.decode_with(messages, &views).0
    }

    pub(crate) fn decode_with<T: WireScalar>(
        &self,
        messages: &[Option<&[T]>],
        directions: &[&[f64]],
    ) -> (Outcome<f64>, Vec<BlockTrace>) {
        assert_eq!(messages.len(), self.workers(), "one slot per worker");
        let wire_len = 2 * self.dim;
        let mut workers = vec![WorkerVerdict::Missing; messages.len()];
        for (j, m) in messages.iter().enumerate() {
            if m.is_some_and(|v| v.len() != wire_len) {
                workers[j] = WorkerVerdict::Suspect(SuspectReason::MalformedMessage);
            }
        }
        let usable: Vec<Option<&[T]>> = messages.iter().map(|m| m.filter(|v| v.len() == wire_len)).collect();
        // One pass over every received vector computes every projection.
        let projections = project_all(&usable, directions, self.dim);
        let mut total: Option<Vec<f64>> = Some(vec![0.0; self.dim]);
        let mut failure = None;
        let mut traces = Vec::new();
        for (b, (range, code)) in self.blocks.iter().enumerate() {
            let proj = &projections[range.clone()];
            let (result, trace) =
                decode_block(code, self.byzantine_tolerance, b, proj, &mut workers[range.clone()], T::UNIT_ROUNDOFF);
            traces.push(trace);
            match result {
                Ok(weights) => {
                    if let Some(total) = total.as_mut() {
                        let rows: Vec<(C64, &[T])> = weights
                            .iter()
                            .map(|&(h, v)| (v, usable[range.start + h].expect("consistent row arrived")))
                            .collect();
                        accumulate_real_part(total, &rows);
                    }
                }
                Err(f) => {
                    total = None;
                    let proven = matches!(f, DecodeFailure::BoundViolated { .. });
                    if failure.is_none() || proven {
                        failure = Some(f);
                    }
                }
            }
        }
        let aggregate = match failure {
            Some(f) => Err(f),
            None => Ok(total.expect("no block failed")),
        };
        (Outcome { aggregate, workers }, traces)
    }
}

/// A direction with independent coordinates uniform in (-1, 1), from ChaCha8 keyed by a secret
/// seed. Each coordinate range uses its own ChaCha stream, so threads can fill it in parallel
/// and the result does not depend on the thread count.
fn random_direction(seed: [u8; 32], dim: usize) -> Vec<f64> {
    const STREAM_LEN: usize = 1 << 14;
    let mut out = vec![0.0; dim];
    parallel::for_each_chunk_mut(&mut out, |offset, chunk| {
        let mut pos = 0;
        while pos < chunk.len() {
            let index = offset + pos;
            let take = (STREAM_LEN - index % STREAM_LEN).min(chunk.len() - pos);
            let mut rng = ChaCha8Rng::from_seed(seed);
            rng.set_stream((index / STREAM_LEN) as u64);
            rng.set_word_pos((index % STREAM_LEN) as u128);
            for x in &mut chunk[pos..pos + take] {
                *x = (f64::from(rng.next_u32()) + 0.5) * (2.0 / 4_294_967_296.0) - 1.0;
            }
            pos += take;
        }
    });
    out
}

/// z_j . f for every received vector z_j (interleaved complex) and every real direction f.
/// Threads split the coordinates; each walks them in cache-sized chunks so a chunk of every
/// direction is loaded once and reused for all rows (the directions are as large as a message:
/// re-reading them per row would cost more than the messages themselves). Partial sums are
/// added in a fixed order.
fn project_all<T: WireScalar>(messages: &[Option<&[T]>], directions: &[&[f64]], dim: usize) -> Vec<Option<Vec<C64>>> {
    const CHUNK: usize = 2048;
    let ranges = parallel::split(dim);
    let rows = messages.len();
    let partials = parallel::map_items(&ranges, dim * rows * 2 / ranges.len().max(1), |range| {
        let mut acc = vec![vec![ZERO; directions.len()]; rows];
        let mut start = range.start;
        while start < range.end {
            let end = (start + CHUNK).min(range.end);
            for (row, m) in acc.iter_mut().zip(messages) {
                let Some(z) = m else { continue };
                let z = &z[2 * start..2 * end];
                for (a, f) in row.iter_mut().zip(directions) {
                    *a += dot_complex_real(z, &f[start..end]);
                }
            }
            start = end;
        }
        acc
    });
    (0..rows)
        .map(|j| {
            messages[j]
                .map(|_| (0..directions.len()).map(|d| partials.iter().fold(ZERO, |acc, p| acc + p[j][d])).collect())
        })
        .collect()
}

/// z . f for an interleaved complex chunk z and a real chunk f, with two independent partial
/// sums per component to keep the adders busy.
fn dot_complex_real<T: WireScalar>(z: &[T], f: &[f64]) -> C64 {
    let mut acc = [0.0f64; 4];
    let mut pairs = z.chunks_exact(4).zip(f.chunks_exact(2));
    for (zs, fs) in &mut pairs {
        acc[0] += zs[0].to_f64() * fs[0];
        acc[1] += zs[1].to_f64() * fs[0];
        acc[2] += zs[2].to_f64() * fs[1];
        acc[3] += zs[3].to_f64() * fs[1];
    }
    if f.len() % 2 == 1 {
        let k = f.len() - 1;
        acc[0] += z[2 * k].to_f64() * f[k];
        acc[1] += z[2 * k + 1].to_f64() * f[k];
    }
    C64::new(acc[0] + acc[2], acc[1] + acc[3])
}

/// total += Re(sum_h v_h z_h), in parallel over coordinate ranges; row by row over cache-sized
/// chunks so each inner loop is a simple streaming multiply-add.
fn accumulate_real_part<T: WireScalar>(total: &mut [f64], rows: &[(C64, &[T])]) {
    const CHUNK: usize = 2048;
    parallel::for_each_chunk_mut(total, |offset, part| {
        for (c, out) in part.chunks_mut(CHUNK).enumerate() {
            let start = offset + c * CHUNK;
            for (v, z) in rows {
                let zs = &z[2 * start..2 * (start + out.len())];
                for (o, pair) in out.iter_mut().zip(zs.chunks_exact(2)) {
                    *o += v.re * pair[0].to_f64() - v.im * pair[1].to_f64();
                }
            }
        }
    });
}

/// Honest rows may disagree with the fitted codeword by the transport's rounding noise times
/// the fit's conditioning; this factor is the margin above that noise. A liar whose error hides
/// below it can move the sum by no more than the decoder's own numerical noise.
const NOISE_MARGIN: f64 = 64.0;

/// Secret random directions per step: one locates, all of them must agree the kept rows form
/// one codeword. An error that a single direction misses by chance (its projection happening
/// to fall under the noise tolerance) is caught by the others; location is retried with each.
pub const DIRECTIONS: usize = 4;

/// Locates liars in one block from the projected rows and returns the recovery weights
/// (local row, v_h) whose combination sum_h v_h z_h has real part sum_i g_i.
///
/// Steps: known erasures (missing rows) and known liars (malformed or non-finite rows) are
/// removed; the remaining liars are located from the syndromes; the codeword is fitted on the
/// rows not located — never re-admitting a located row — and must explain every one of them
/// under both secret projections, within the noise tolerance, or the block is undecodable.
/// Located rows that turn out consistent were false alarms and are not named.
fn decode_block(
    code: &CyclicCode,
    s: usize,
    block: usize,
    projections: &[Option<Vec<C64>>],
    verdicts: &mut [WorkerVerdict],
    unit_roundoff: f64,
) -> (Result<Vec<(usize, C64)>, DecodeFailure>, BlockTrace) {
    let n = code.n;
    let q = code.r - 1;
    let k = n - q;
    let mut trace = BlockTrace::default();
    let fail = |verdicts: &mut [WorkerVerdict], failure: DecodeFailure| {
        mark_unverified(projections, verdicts);
        failure
    };

    // Rows that cannot be honest: malformed (already named) and non-finite (NaN/Inf) ones. They
    // are liars at known positions, so they cost one syndrome each instead of two.
    let mut erased: Vec<usize> = Vec::new();
    let mut known_liars = 0usize;
    for (j, p) in projections.iter().enumerate() {
        let known_liar = match p {
            None => matches!(verdicts[j], WorkerVerdict::Suspect(_)),
            Some(values) => !values.iter().all(|x| x.is_finite()),
        };
        if p.is_none() || known_liar {
            erased.push(j);
        }
        if known_liar {
            known_liars += 1;
            verdicts[j] = match verdicts[j] {
                WorkerVerdict::Suspect(reason) => WorkerVerdict::Suspect(reason),
                _ => WorkerVerdict::Suspect(SuspectReason::InconsistentCodeword),
            };
        }
    }
    let missing = erased.len() - known_liars;
    if known_liars > s {
        let detail = format!(
            "block {block}: {known_liars} coded vectors are malformed or non-finite, more than byzantineTolerance {s}"
        );
        return (Err(fail(verdicts, DecodeFailure::BoundViolated { unit: block, detail })), trace);
    }
    let unknown_liars = s - known_liars;
    if erased.len() + 2 * unknown_liars > q {
        let detail = format!(
            "block {block}: {missing} of {n} coded vectors missing and {known_liars} unusable; with byzantineTolerance {s} \
             and redundancy {} the code needs 2 * (liars still to locate) + (missing or unusable) <= {q}",
            code.r
        );
        return (Err(fail(verdicts, DecodeFailure::Undecodable { unit: block, detail })), trace);
    }
    let live: Vec<usize> = (0..n).filter(|j| !erased.contains(j)).collect();
    // Per direction, the projected rows, scaled so the largest is 1: a liar sending 1e200 must
    // not overflow anything. Erased rows are zero.
    let directions = projections.iter().flatten().map(Vec::len).next().unwrap_or(0);
    let projected: Vec<Vec<C64>> = (0..directions)
        .map(|dir| {
            let raw: Vec<C64> = (0..n)
                .map(|j| if erased.contains(&j) { ZERO } else { projections[j].as_ref().map_or(ZERO, |p| p[dir]) })
                .collect();
            let top = raw.iter().map(|x| x.re.abs().max(x.im.abs())).fold(0.0, f64::max);
            if top > 0.0 { raw.iter().map(|x| x.scale(1.0 / top)).collect() } else { raw }
        })
        .collect();
    trace.projections = (0..n).map(|j| projections[j].as_ref().map_or(ZERO, |p| p[0])).collect();

    let norm = 1.0 / (n as f64).sqrt();
    let zeta = |j: usize, power: usize| root(n, -((j * power) as i64));
    // Syndromes y_m = n^-1/2 sum_j zeta_j^(k+m) e_j (the honest part cancels: C2^H W = 0).
    let syndromes_of = |e: &[C64]| -> Vec<C64> {
        (0..q).map(|m| live.iter().fold(ZERO, |acc, &j| acc + zeta(j, k + m) * e[j]).scale(norm)).collect()
    };
    trace.syndromes = syndromes_of(&trace.projections);
    // Known erasures: multiply by their locator polynomial Gamma(x) = prod (x - zeta_j), which
    // leaves power sums over the unknown error locations only.
    let mut gamma = vec![ONE];
    for &j in &erased {
        let z = zeta(j, 1);
        let mut next = vec![ZERO; gamma.len() + 1];
        for (t, &g) in gamma.iter().enumerate() {
            next[t + 1] += g;
            next[t] = next[t] - z * g;
        }
        gamma = next;
    }
    let v = unknown_liars;
    // Locates up to v errors from one direction: the locator L(x) = x^v - sum a_t x^t
    // annihilates the modified syndromes; every solution of the Hankel system vanishes at the
    // true locations, so the v rows with the smallest |L(zeta_j)| contain all liars.
    let locate = |e: &[C64]| -> (Vec<usize>, Vec<C64>) {
        if v == 0 {
            return (Vec::new(), Vec::new());
        }
        let syndromes = syndromes_of(e);
        let modified: Vec<C64> = (0..q - erased.len())
            .map(|m| gamma.iter().enumerate().fold(ZERO, |acc, (t, &g)| acc + g * syndromes[m + t]))
            .collect();
        let hankel = Matrix::from_fn(v, v, |i, t| modified[i + t]);
        let rhs: Vec<C64> = (0..v).map(|i| modified[i + v]).collect();
        let a = regularized_solve(&hankel, &rhs);
        let mut by_size: Vec<(f64, usize)> = live
            .iter()
            .map(|&j| {
                let x = zeta(j, 1);
                let (mut power, mut value) = (ONE, ZERO);
                for coef in &a {
                    value = value - *coef * power;
                    power = power * x;
                }
                ((value + power).abs(), j)
            })
            .collect();
        by_size.sort_by(|p, q| p.0.total_cmp(&q.0));
        (by_size.iter().take(v).map(|&(_, j)| j).collect(), a)
    };
    let predicted = |j: usize, u: &[C64]| (0..k).fold(ZERO, |acc, c| acc + code.data_columns.at(j, c) * u[c]);

    // Try locating with each direction in turn; accept the first set of kept rows that every
    // direction sees as one codeword (within the noise tolerance).
    let mut last_bad = None;
    for (attempt, e) in projected.iter().enumerate() {
        let (flagged, locator) = locate(e);
        if attempt == 0 {
            trace.flagged = flagged.clone();
            trace.locator = locator;
        }
        let kept: Vec<usize> = live.iter().copied().filter(|j| !flagged.contains(j)).collect();
        let rows = code.data_columns.select_rows(&kept);
        let mut fits = Vec::with_capacity(projected.len());
        for values in &projected {
            match least_squares_conditioned(&rows, &kept.iter().map(|&j| values[j]).collect::<Vec<_>>()) {
                Some(fit) => fits.push(fit),
                None => break,
            }
        }
        if fits.len() < projected.len() {
            continue;
        }
        let cond = fits.iter().map(|(_, c)| *c).fold(1.0, f64::max);
        let tolerance = NOISE_MARGIN * unit_roundoff * cond * (n as f64).sqrt();
        // The kept rows' largest magnitude (hypot-based: no overflow or underflow even when a
        // located liar dwarfs them) sets the scale of the tolerance.
        let consistent = |j: usize| {
            projected.iter().zip(&fits).all(|(values, (u, _))| {
                let peak = kept.iter().map(|&h| values[h].abs()).fold(0.0, f64::max);
                (values[j] - predicted(j, u)).abs() <= tolerance * peak
            })
        };
        if let Some(&bad) = kept.iter().find(|&&j| !consistent(j)) {
            last_bad = Some(bad);
            continue;
        }
        let consistent_rows: Vec<usize> = live.iter().copied().filter(|&j| consistent(j)).collect();
        for &j in &live {
            verdicts[j] = if consistent_rows.contains(&j) {
                WorkerVerdict::Honest
            } else {
                WorkerVerdict::Suspect(SuspectReason::InconsistentCodeword)
            };
        }
        trace.consistent = consistent_rows;
        // Recovery weights: v = row 0 of pinv(C1[kept,:]), the minimum-norm solution of
        // C1[kept,:]^T v = e_0; then sum_h v_h z_h = sum_i g_i (column sums of W are sqrt(n)).
        let weights = (0..kept.len())
            .map(|h| {
                let unit: Vec<C64> = (0..kept.len()).map(|i| if i == h { ONE } else { ZERO }).collect();
                least_squares(&rows, &unit).expect("rows verified to have full rank")[0]
            })
            .collect::<Vec<_>>();
        return (Ok(kept.into_iter().zip(weights).collect()), trace);
    }
    let detail = match last_bad {
        Some(bad) => format!(
            "block {block}: after setting aside the {v} most suspicious rows, worker {bad} still disagrees with the codeword \
             the others define (more than {s} liars, or errors too small to locate)"
        ),
        None => format!("block {block}: the remaining rows do not determine the codeword"),
    };
    (Err(fail(verdicts, DecodeFailure::Undecodable { unit: block, detail })), trace)
}

fn mark_unverified(projections: &[Option<Vec<C64>>], verdicts: &mut [WorkerVerdict]) {
    for (j, p) in projections.iter().enumerate() {
        if p.is_some() && verdicts[j] == WorkerVerdict::Missing {
            verdicts[j] = WorkerVerdict::Unverified;
        }
    }
}

#[cfg(test)]
#[path = "cyclic_tests.rs"]
mod tests;
