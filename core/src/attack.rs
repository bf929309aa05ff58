//! Attack models for drills: how a worker that has opted in impersonates a Byzantine one.
//!
//! Everything is deterministic. The random attacks draw from a ChaCha8 stream seeded only by
//! [`AttackContext::seed`], so a drill can be replayed, and colluders given the same seed
//! forge bit-identical vectors.

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

/// Which forgery a Byzantine worker sends. `g` is the worker's honest gradient.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AttackKind {
    /// `-scale * g`.
    Reverse,
    /// `-scale * sign(g)` per coordinate; zero (either sign) and NaN coordinates give 0.
    SignFlip,
    /// Every coordinate is `scale`.
    Constant,
    /// `g + N(0, scale^2)` noise per coordinate (Box–Muller on the seeded stream).
    Gaussian,
    /// "A Little Is Enough" (Baruch et al. 2019): `mean - scale * std` per coordinate over the
    /// observed honest vectors (population std).
    Alie,
    /// Inner product manipulation (Xie et al. 2020): `-scale * mean(observed)`.
    Ipm,
    /// The same forgery for every colluder: `scale * N(0, 1)` per coordinate from the seed
    /// alone, ignoring the worker's own data.
    Colluding,
    /// Uniform in `[-scale, scale]` per coordinate from the seed alone.
    Random,
}

impl AttackKind {
    pub const ALL: [AttackKind; 8] = [
        AttackKind::Reverse,
        AttackKind::SignFlip,
        AttackKind::Constant,
        AttackKind::Gaussian,
        AttackKind::Alie,
        AttackKind::Ipm,
        AttackKind::Colluding,
        AttackKind::Random,
    ];

    /// Stable camelCase name (the same spelling serde uses).
    pub fn as_str(&self) -> &'static str {
        match self {
            AttackKind::Reverse => "reverse",
            AttackKind::SignFlip => "signFlip",
            AttackKind::Constant => "constant",
            AttackKind::Gaussian => "gaussian",
            AttackKind::Alie => "alie",
            AttackKind::Ipm => "ipm",
            AttackKind::Colluding => "colluding",
            AttackKind::Random => "random",
        }
    }
}

/// An attack model and its strength (a multiplier, a noise std or a z-score by kind).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attack {
    pub kind: AttackKind,
    pub scale: f32,
}

/// What the adversary can see when forging.
#[derive(Clone, Copy, Debug)]
pub struct AttackContext<'a> {
    /// The vector this worker would honestly send; the forgery has its length.
    pub honest: &'a [f32],
    /// Honest vectors the adversary can observe. Vectors whose length differs from `honest`
    /// are ignored; if none remain, `honest` alone stands in for them.
    pub observed: &'a [&'a [f32]],
    /// Seed of all randomness: colluders that share a seed forge identical vectors.
    pub seed: u64,
}

// Each random attack reads its own ChaCha stream, so e.g. Random and Colluding with the same
// seed are not trivially related.
const GAUSSIAN_STREAM: u64 = 1;
const COLLUDING_STREAM: u64 = 2;
const RANDOM_STREAM: u64 = 3;

impl Attack {
    /// The forged vector, always of the same length as `ctx.honest`. Never panics; NaN in
    /// the inputs propagates to the affected coordinates (except SignFlip, which maps it to 0).
    pub fn forge(&self, ctx: &AttackContext) -> Vec<f32> {
        let scale = self.scale;
        let honest = ctx.honest;
        match self.kind {
            AttackKind::Reverse => honest.iter().map(|&g| -scale * g).collect(),
            AttackKind::SignFlip => honest
                .iter()
                .map(|&g| {
                    if g > 0.0 {
                        -scale
                    } else if g < 0.0 {
                        scale
                    } else {
                        0.0
                    }
                })
                .collect(),
            AttackKind::Constant => vec![scale; honest.len()],
            AttackKind::Gaussian => {
                let mut normal = StandardNormal::new(ctx.seed, GAUSSIAN_STREAM);
                honest.iter().map(|&g| (f64::from(g) + f64::from(scale) * normal.sample()) as f32).collect()
            }
            AttackKind::Alie => {
                let moments = ObservedMoments::of(ctx);
                moments
                    .mean
                    .iter()
                    .zip(&moments.std)
                    .map(|(&mean, &std)| (mean - f64::from(scale) * std) as f32)
                    .collect()
            }
            AttackKind::Ipm => {
                ObservedMoments::of(ctx).mean.iter().map(|&mean| (-f64::from(scale) * mean) as f32).collect()
            }
            AttackKind::Colluding => {
                let mut normal = StandardNormal::new(ctx.seed, COLLUDING_STREAM);
                (0..honest.len()).map(|_| (f64::from(scale) * normal.sample()) as f32).collect()
            }
            AttackKind::Random => {
                let mut rng = seeded_stream(ctx.seed, RANDOM_STREAM);
                (0..honest.len())
                    .map(|_| ((2.0 * unit_closed_open(&mut rng) - 1.0) * f64::from(scale)) as f32)
                    .collect()
            }
        }
    }
}

fn seeded_stream(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// 2^-53: turns the top 53 bits of a u64 into an evenly spaced f64 in [0, 1).
const UNIT_STEP: f64 = 1.0 / (1u64 << 53) as f64;

/// Uniform in [0, 1).
fn unit_closed_open(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * UNIT_STEP
}

/// Uniform in (0, 1]: never 0, so its logarithm is finite.
fn unit_open_closed(rng: &mut ChaCha8Rng) -> f64 {
    ((rng.next_u64() >> 11) + 1) as f64 * UNIT_STEP
}

/// Box–Muller: each pair of uniforms gives two independent standard normals.
struct StandardNormal {
    rng: ChaCha8Rng,
    spare: Option<f64>,
}

impl StandardNormal {
    fn new(seed: u64, stream: u64) -> Self {
        StandardNormal { rng: seeded_stream(seed, stream), spare: None }
    }

    fn sample(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let radius = (-2.0 * unit_open_closed(&mut self.rng).ln()).sqrt();
        let angle = std::f64::consts::TAU * unit_closed_open(&mut self.rng);
        self.spare = Some(radius * angle.sin());
        radius * angle.cos()
    }
}

/// Per-coordinate mean and population standard deviation of the observed vectors, in f64.
struct ObservedMoments {
    mean: Vec<f64>,
    std: Vec<f64>,
}

impl ObservedMoments {
    fn of(ctx: &AttackContext) -> Self {
        let dim = ctx.honest.len();
        let mut usable: Vec<&[f32]> = ctx.observed.iter().copied().filter(|v| v.len() == dim).collect();
        if usable.is_empty() {
            usable.push(ctx.honest);
        }
        let count = usable.len() as f64;

        let mut mean = vec![0.0f64; dim];
        for v in &usable {
            for (m, &x) in mean.iter_mut().zip(v.iter()) {
                *m += f64::from(x);
            }
        }
        for m in &mut mean {
            *m /= count;
        }

        // Two passes (deviations from the mean) to avoid cancellation.
        let mut std = vec![0.0f64; dim];
        for v in &usable {
            for ((s, &x), &m) in std.iter_mut().zip(v.iter()).zip(&mean) {
                let deviation = f64::from(x) - m;
                *s += deviation * deviation;
            }
        }
        for s in &mut std {
            *s = (*s / count).sqrt();
        }
        ObservedMoments { mean, std }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn forge(kind: AttackKind, scale: f32, honest: &[f32], observed: &[&[f32]], seed: u64) -> Vec<f32> {
        Attack { kind, scale }.forge(&AttackContext { honest, observed, seed })
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    const RANDOM_KINDS: [AttackKind; 3] = [AttackKind::Gaussian, AttackKind::Colluding, AttackKind::Random];

    #[test]
    fn names_and_all_are_consistent() {
        let names: Vec<&str> = AttackKind::ALL.iter().map(AttackKind::as_str).collect();
        assert_eq!(names, ["reverse", "signFlip", "constant", "gaussian", "alie", "ipm", "colluding", "random"]);
    }

    #[test]
    fn reverse_scales_and_negates() {
        assert_eq!(forge(AttackKind::Reverse, 2.0, &[1.0, -2.0, 0.0], &[], 0), [-2.0, 4.0, 0.0]);
    }

    #[test]
    fn sign_flip_uses_only_the_sign() {
        assert_eq!(
            forge(AttackKind::SignFlip, 2.0, &[3.0, -0.5, 0.0, -0.0, f32::NAN], &[], 0),
            [-2.0, 2.0, 0.0, 0.0, 0.0]
        );
    }

    #[test]
    fn constant_fills_every_coordinate() {
        assert_eq!(forge(AttackKind::Constant, 7.0, &[1.0, 2.0, 3.0], &[], 0), [7.0; 3]);
    }

    #[test]
    fn gaussian_adds_noise_of_the_requested_std() {
        let honest = vec![5.0f32; 20_000];
        assert_eq!(forge(AttackKind::Gaussian, 0.0, &honest, &[], 9), honest);
        let forged = forge(AttackKind::Gaussian, 2.0, &honest, &[], 9);
        let noise: Vec<f64> = forged.iter().map(|&x| f64::from(x) - 5.0).collect();
        let mean = noise.iter().sum::<f64>() / noise.len() as f64;
        let variance = noise.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / noise.len() as f64;
        assert!(mean.abs() < 0.05, "mean {mean}");
        assert!((variance.sqrt() - 2.0).abs() < 0.05, "std {}", variance.sqrt());
    }

    #[test]
    fn alie_is_mean_minus_z_std_of_the_observed() {
        let observed: [&[f32]; 2] = [&[1.0, 2.0], &[3.0, 6.0]];
        // mean [2, 4], population std [1, 2].
        assert_eq!(forge(AttackKind::Alie, 1.5, &[0.0, 0.0], &observed, 0), [0.5, 1.0]);
        // Nothing observed: honest alone, std 0.
        assert_eq!(forge(AttackKind::Alie, 1.5, &[4.0, -1.0], &[], 0), [4.0, -1.0]);
        // Observed vectors of another length are ignored.
        let mismatched: [&[f32]; 1] = [&[1.0, 2.0, 3.0]];
        assert_eq!(forge(AttackKind::Alie, 1.5, &[4.0, -1.0], &mismatched, 0), [4.0, -1.0]);
    }

    #[test]
    fn ipm_is_negated_scaled_observed_mean() {
        let observed: [&[f32]; 2] = [&[1.0, 2.0], &[3.0, 6.0]];
        assert_eq!(forge(AttackKind::Ipm, 0.5, &[9.0, 9.0], &observed, 0), [-1.0, -2.0]);
        assert_eq!(forge(AttackKind::Ipm, 0.5, &[4.0, -2.0], &[], 0), [-2.0, 1.0]);
    }

    #[test]
    fn colluders_with_one_seed_forge_identical_vectors_whatever_their_data() {
        let a = forge(AttackKind::Colluding, 3.0, &[1.0, 2.0, 3.0, 4.0], &[], 42);
        let observed: [&[f32]; 1] = [&[0.0; 4]];
        let b = forge(AttackKind::Colluding, 3.0, &[-7.0, 0.0, 1e9, f32::NAN], &observed, 42);
        assert_eq!(bits(&a), bits(&b));
        let c = forge(AttackKind::Colluding, 3.0, &[1.0, 2.0, 3.0, 4.0], &[], 43);
        assert_ne!(bits(&a), bits(&c));
    }

    #[test]
    fn colluding_vector_has_std_scale() {
        let forged = forge(AttackKind::Colluding, 3.0, &vec![0.0; 20_000], &[], 1);
        let rms = (forged.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / forged.len() as f64).sqrt();
        assert!((rms - 3.0).abs() < 0.1, "rms {rms}");
    }

    #[test]
    fn random_is_uniform_within_scale() {
        let forged = forge(AttackKind::Random, 0.5, &vec![100.0; 20_000], &[], 5);
        assert!(forged.iter().all(|x| (-0.5..=0.5).contains(x)));
        let mean = forged.iter().map(|&x| f64::from(x)).sum::<f64>() / forged.len() as f64;
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!(forged.iter().any(|&x| x > 0.45) && forged.iter().any(|&x| x < -0.45));
    }

    #[test]
    fn random_attacks_are_deterministic_per_seed() {
        let honest = [1.0f32, -2.0, 3.0, 0.25, 8.0];
        for kind in RANDOM_KINDS {
            let first = forge(kind, 1.0, &honest, &[], 7);
            let again = forge(kind, 1.0, &honest, &[], 7);
            let other = forge(kind, 1.0, &honest, &[], 8);
            assert_eq!(bits(&first), bits(&again), "{kind:?}");
            assert_ne!(bits(&first), bits(&other), "{kind:?}");
        }
    }

    #[test]
    fn random_attacks_use_separate_streams() {
        let zeros = [0.0f32; 8];
        let gaussian = forge(AttackKind::Gaussian, 1.0, &zeros, &[], 3);
        let colluding = forge(AttackKind::Colluding, 1.0, &zeros, &[], 3);
        assert_ne!(bits(&gaussian), bits(&colluding));
    }

    #[test]
    fn output_length_matches_input_including_empty() {
        let observed: [&[f32]; 2] = [&[1.0; 7], &[2.0; 3]];
        for kind in AttackKind::ALL {
            for len in [0, 1, 7] {
                let honest = vec![1.5f32; len];
                assert_eq!(forge(kind, 2.0, &honest, &observed, 1).len(), len, "{kind:?}");
            }
        }
    }

    proptest! {
        #[test]
        fn forging_never_panics_and_keeps_the_length(
            honest in prop::collection::vec(proptest::num::f32::ANY, 0..16),
            observed in prop::collection::vec(
                prop::collection::vec(proptest::num::f32::ANY, 0..16),
                0..4,
            ),
            scale in proptest::num::f32::ANY,
            seed in any::<u64>(),
        ) {
            let observed: Vec<&[f32]> = observed.iter().map(Vec::as_slice).collect();
            for kind in AttackKind::ALL {
                let forged = forge(kind, scale, &honest, &observed, seed);
                prop_assert_eq!(forged.len(), honest.len());
            }
        }
    }
}
