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

use crate::complex::{C64, Matrix, ONE, ZERO, least_squares, regularized_solve};
use crate::outcome::{DecodeFailure, Outcome, SuspectReason, WorkerVerdict};
use crate::parallel;

/// Element types a coded vector may arrive in.
pub trait WireScalar: Copy + Send + Sync + 'static {
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
    /// Relative residual below which a row counts as consistent with the codeword: a few
    /// orders of magnitude above the transport's rounding noise.
    const CONSISTENCY_TOLERANCE: f64;
}
impl WireScalar for f32 {
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    const CONSISTENCY_TOLERANCE: f64 = 1e-3;
}
impl WireScalar for f64 {
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(v: f64) -> Self {
        v
    }
    const CONSISTENCY_TOLERANCE: f64 = 1e-8;
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
        let data_columns =
            Matrix::from_fn(n, n - (r - 1), |j, k| root(n, (j * k) as i64).scale(norm));
        CyclicCode {
            n,
            r,
            encoding,
            data_columns,
        }
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
        assert!(
            gradients.iter().all(|g| g.len() == dim),
            "gradients of one length"
        );
        let coeffs: Vec<C64> = (0..self.r)
            .map(|k| self.coefficient(worker, (worker + k) % self.n))
            .collect();
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
    pub fn new(
        blocks: &[Range<usize>],
        redundancy: usize,
        byzantine_tolerance: usize,
        dim: usize,
    ) -> Self {
        let blocks = blocks
            .iter()
            .map(|b| (b.clone(), CyclicCode::new(b.len(), redundancy)))
            .collect();
        CyclicDecoder {
            blocks,
            byzantine_tolerance,
            dim,
        }
    }

    pub fn workers(&self) -> usize {
        self.blocks.last().map_or(0, |(b, _)| b.end)
    }

    /// The code of the block `worker` belongs to, and its index inside the block.
    pub fn code_of(&self, worker: usize) -> (&CyclicCode, usize) {
        let (range, code) = self
            .blocks
            .iter()
            .find(|(b, _)| b.contains(&worker))
            .expect("worker in range");
        (code, worker - range.start)
    }

    /// Decodes with two fresh secret projections drawn from the OS-seeded CSPRNG: a liar
    /// cannot aim for the null space of a direction chosen after its message arrived.
    pub fn decode<T: WireScalar>(&self, messages: &[Option<&[T]>]) -> Outcome<f64> {
        let mut seeds = [[0u8; 32]; 2];
        for seed in &mut seeds {
            // Without OS entropy the projection would be guessable: refuse to run rather than
            // decode with a predictable one.
            rand_core::OsRng
                .try_fill_bytes(seed)
                .expect("the operating system's random source failed");
        }
        let locate = random_direction(seeds[0], self.dim);
        let verify = random_direction(seeds[1], self.dim);
        self.decode_with(messages, &locate, &verify).0
    }

    pub(crate) fn decode_with<T: WireScalar>(
        &self,
        messages: &[Option<&[T]>],
        locate: &[f64],
        verify: &[f64],
    ) -> (Outcome<f64>, Vec<BlockTrace>) {
        assert_eq!(messages.len(), self.workers(), "one slot per worker");
        let wire_len = 2 * self.dim;
        let mut workers = vec![WorkerVerdict::Missing; messages.len()];
        for (j, m) in messages.iter().enumerate() {
            if m.is_some_and(|v| v.len() != wire_len) {
                workers[j] = WorkerVerdict::Suspect(SuspectReason::MalformedMessage);
            }
        }
        let usable: Vec<Option<&[T]>> = messages
            .iter()
            .map(|m| m.filter(|v| v.len() == wire_len))
            .collect();
        // One pass over every received vector computes both projections.
        let projections =
            parallel::map_items(&usable, wire_len, |m| m.map(|v| project(v, locate, verify)));
        let mut total: Option<Vec<f64>> = Some(vec![0.0; self.dim]);
        let mut failure = None;
        let mut traces = Vec::new();
        for (b, (range, code)) in self.blocks.iter().enumerate() {
            let proj = &projections[range.clone()];
            let (result, trace) = decode_block(
                code,
                self.byzantine_tolerance,
                b,
                proj,
                &mut workers[range.clone()],
                T::CONSISTENCY_TOLERANCE,
            );
            traces.push(trace);
            match result {
                Ok(weights) => {
                    if let Some(total) = total.as_mut() {
                        let rows: Vec<(C64, &[T])> = weights
                            .iter()
                            .map(|&(h, v)| {
                                (v, usable[range.start + h].expect("consistent row arrived"))
                            })
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

/// (z . f, z . f2) for an interleaved complex vector z and real directions f, f2. Four
/// independent partial sums per output keep the floating-point adders busy.
fn project<T: WireScalar>(z: &[T], f: &[f64], f2: &[f64]) -> (C64, C64) {
    const LANES: usize = 4;
    let mut acc = [[0.0f64; 4]; LANES];
    let pairs = z.len() / 2;
    let whole = pairs - pairs % LANES;
    for ((zs, fs), gs) in z[..2 * whole]
        .chunks_exact(2 * LANES)
        .zip(f.chunks_exact(LANES))
        .zip(f2.chunks_exact(LANES))
    {
        for lane in 0..LANES {
            let (re, im) = (zs[2 * lane].to_f64(), zs[2 * lane + 1].to_f64());
            let a = &mut acc[lane];
            a[0] += re * fs[lane];
            a[1] += im * fs[lane];
            a[2] += re * gs[lane];
            a[3] += im * gs[lane];
        }
    }
    for k in whole..pairs {
        let (re, im) = (z[2 * k].to_f64(), z[2 * k + 1].to_f64());
        let a = &mut acc[0];
        a[0] += re * f[k];
        a[1] += im * f[k];
        a[2] += re * f2[k];
        a[3] += im * f2[k];
    }
    let total = |i: usize| acc.iter().map(|a| a[i]).sum::<f64>();
    (C64::new(total(0), total(1)), C64::new(total(2), total(3)))
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

/// Locates liars in one block from the projected rows and returns the recovery weights
/// (local row, v_h) whose combination sum_h v_h z_h has real part sum_i g_i.
fn decode_block(
    code: &CyclicCode,
    s: usize,
    block: usize,
    projections: &[Option<(C64, C64)>],
    verdicts: &mut [WorkerVerdict],
    tolerance: f64,
) -> (Result<Vec<(usize, C64)>, DecodeFailure>, BlockTrace) {
    let n = code.n;
    let q = code.r - 1;
    let k = n - q;
    let mut trace = BlockTrace::default();
    let undecodable = |detail: String| DecodeFailure::Undecodable {
        unit: block,
        detail,
    };

    // Rows that cannot be honest: non-finite projections (NaN/Inf payloads). They are liars at
    // known positions, so they cost one syndrome each instead of two.
    let mut erased: Vec<usize> = Vec::new();
    let mut known_liars = 0;
    for (j, p) in projections.iter().enumerate() {
        match p {
            // A malformed vector is a liar at a known position, like a non-finite one.
            None if matches!(verdicts[j], WorkerVerdict::Suspect(_)) => {
                erased.push(j);
                known_liars += 1;
            }
            None => erased.push(j),
            Some((a, b)) if !(a.is_finite() && b.is_finite()) => {
                erased.push(j);
                known_liars += 1;
                verdicts[j] = WorkerVerdict::Suspect(SuspectReason::InconsistentCodeword);
            }
            Some(_) => {}
        }
    }
    let missing = erased.len() - known_liars;
    if 2 * s + missing > q {
        mark_unverified(projections, verdicts);
        let detail = format!(
            "block {block}: {missing} of {n} coded vectors missing; with byzantineTolerance {s} and redundancy {} \
             at most {} may be missing",
            code.r,
            q - 2 * s
        );
        return (Err(undecodable(detail)), trace);
    }
    let unknown_liars = s.saturating_sub(known_liars);
    let live: Vec<usize> = (0..n).filter(|j| !erased.contains(j)).collect();
    let e: Vec<C64> = (0..n)
        .map(|j| {
            projections[j]
                .filter(|_| !erased.contains(&j))
                .map_or(ZERO, |p| p.0)
        })
        .collect();
    let scale =
        (live.iter().map(|&j| e[j].norm_sqr()).sum::<f64>() / live.len().max(1) as f64).sqrt();
    trace.projections = e.clone();

    // Syndromes y_m = n^-1/2 sum_j zeta_j^(k+m) e_j (the honest part cancels: C2^H W = 0).
    let norm = 1.0 / (n as f64).sqrt();
    let zeta = |j: usize, power: usize| root(n, -((j * power) as i64));
    let syndromes: Vec<C64> = (0..q)
        .map(|m| {
            live.iter()
                .fold(ZERO, |acc, &j| acc + zeta(j, k + m) * e[j])
                .scale(norm)
        })
        .collect();
    trace.syndromes = syndromes.clone();
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
    let modified: Vec<C64> = (0..q - erased.len())
        .map(|m| {
            gamma
                .iter()
                .enumerate()
                .fold(ZERO, |acc, (t, &g)| acc + g * syndromes[m + t])
        })
        .collect();

    // Locate up to `unknown_liars` errors: the locator L(x) = x^v - sum a_t x^t annihilates the
    // modified syndromes; every solution of the Hankel system vanishes at the true locations,
    // so the v rows with the smallest |L(zeta_j)| contain all liars.
    let v = unknown_liars;
    let syndrome_energy = modified.iter().map(|y| y.abs()).fold(0.0, f64::max);
    let flagged: Vec<usize> = if v == 0 || syndrome_energy <= scale * tolerance * 1e-3 {
        Vec::new()
    } else {
        let hankel = Matrix::from_fn(v, v, |i, t| modified[i + t]);
        let rhs: Vec<C64> = (0..v).map(|i| modified[i + v]).collect();
        let a = regularized_solve(&hankel, &rhs);
        trace.locator = a.clone();
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
        by_size.iter().take(v).map(|&(_, j)| j).collect()
    };
    trace.flagged = flagged.clone();

    // Fit the honest codeword on the unflagged rows, then keep every row consistent with it.
    let fit_rows: Vec<usize> = live
        .iter()
        .copied()
        .filter(|j| !flagged.contains(j))
        .collect();
    let fit = match least_squares(
        &code.data_columns.select_rows(&fit_rows),
        &fit_rows.iter().map(|&j| e[j]).collect::<Vec<_>>(),
    ) {
        Some(u) => u,
        None => {
            mark_unverified(projections, verdicts);
            return (
                Err(undecodable(format!(
                    "block {block}: the remaining rows do not determine the codeword"
                ))),
                trace,
            );
        }
    };
    let predicted =
        |j: usize, u: &[C64]| (0..k).fold(ZERO, |acc, c| acc + code.data_columns.at(j, c) * u[c]);
    let consistent: Vec<usize> = live
        .iter()
        .copied()
        .filter(|&j| (e[j] - predicted(j, &fit)).abs() <= tolerance * scale)
        .collect();
    trace.consistent = consistent.clone();
    let inconsistent = live.len() - consistent.len();
    if inconsistent > unknown_liars {
        mark_unverified(projections, verdicts);
        let detail = format!(
            "block {block}: {inconsistent} coded vectors are inconsistent with the codeword, more than the {unknown_liars} \
             liars that can still be located (byzantineTolerance {s}, {known_liars} non-finite, {missing} missing)"
        );
        return (
            Err(DecodeFailure::BoundViolated {
                unit: block,
                detail,
            }),
            trace,
        );
    }

    // Verify on the second, independent projection: every kept row must lie on one codeword.
    let e2: Vec<C64> = consistent
        .iter()
        .map(|&j| projections[j].expect("live row").1)
        .collect();
    let rows = code.data_columns.select_rows(&consistent);
    let verified = least_squares(&rows, &e2).is_some_and(|u2| {
        let scale2 = (e2.iter().map(|x| x.norm_sqr()).sum::<f64>() / e2.len() as f64).sqrt();
        consistent
            .iter()
            .zip(&e2)
            .all(|(&j, &y)| (y - predicted(j, &u2)).abs() <= tolerance * scale2)
    });
    if !verified {
        mark_unverified(projections, verdicts);
        let detail = format!(
            "block {block}: the rows consistent under the first projection disagree under an independent second one"
        );
        return (Err(undecodable(detail)), trace);
    }

    for &j in &live {
        verdicts[j] = if consistent.contains(&j) {
            WorkerVerdict::Honest
        } else {
            WorkerVerdict::Suspect(SuspectReason::InconsistentCodeword)
        };
    }
    // Recovery weights: v = row 0 of pinv(C1[G,:]), i.e. the minimum-norm solution of
    // C1[G,:]^T v = e_0; then sum_h v_h z_h = sum_i g_i (column sums of W are sqrt(n)).
    let weights = (0..consistent.len())
        .map(|h| {
            let unit: Vec<C64> = (0..consistent.len())
                .map(|i| if i == h { ONE } else { ZERO })
                .collect();
            least_squares(&rows, &unit).expect("rows verified to have full rank")[0]
        })
        .collect::<Vec<_>>();
    (Ok(consistent.into_iter().zip(weights).collect()), trace)
}

fn mark_unverified(projections: &[Option<(C64, C64)>], verdicts: &mut [WorkerVerdict]) {
    for (j, p) in projections.iter().enumerate() {
        if p.is_some() && verdicts[j] == WorkerVerdict::Missing {
            verdicts[j] = WorkerVerdict::Unverified;
        }
    }
}

#[cfg(test)]
#[path = "cyclic_tests.rs"]
mod tests;
