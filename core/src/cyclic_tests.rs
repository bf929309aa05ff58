//! Tests of the cyclic code against coding.md §3-§6.

use super::*;
use rand_chacha::ChaCha8Rng;

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn gradients(rng: &mut ChaCha8Rng, n: usize, d: usize) -> Vec<Vec<f32>> {
    (0..n).map(|_| (0..d).map(|_| (rng.next_u32() as f32 / u32::MAX as f32) * 4.0 - 2.0).collect()).collect()
}

fn true_sum(g: &[Vec<f32>]) -> Vec<f64> {
    (0..g[0].len()).map(|k| g.iter().map(|v| f64::from(v[k])).sum()).collect()
}

fn encode_all<T: WireScalar>(code: &CyclicCode, g: &[Vec<f32>]) -> Vec<Vec<T>> {
    let (n, r) = (code.n, code.r);
    (0..n)
        .map(|j| {
            let held: Vec<&[f32]> = (0..r).map(|k| g[(j + k) % n].as_slice()).collect();
            code.encode::<T>(j, &held)
        })
        .collect()
}

fn relative_error(got: &[f64], want: &[f64]) -> f64 {
    let num = got.iter().zip(want).map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt();
    num / want.iter().map(|b| b * b).sum::<f64>().sqrt()
}

/// Corrupts worker j's vector with one of several payload families.
fn corrupt<T: WireScalar>(z: &mut [T], family: usize, rng: &mut ChaCha8Rng) {
    for (k, x) in z.iter_mut().enumerate() {
        let v = x.to_f64();
        *x = T::from_f64(match family {
            0 => -100.0 * v,                                          // reverse gradient
            1 => 1000.0,                                              // constant
            2 => v + (rng.next_u32() as f64 / u32::MAX as f64 - 0.5), // small random noise
            _ => {
                if k == 0 {
                    v + 1e-3
                } else {
                    v
                }
            } // one coordinate nudged
        });
    }
}

fn decoder(n: usize, r: usize, s: usize, d: usize) -> CyclicDecoder {
    CyclicDecoder::new(std::slice::from_ref(&(0..n)), r, s, d)
}

fn as_slots<T>(msgs: &[Vec<T>]) -> Vec<Option<&[T]>> {
    msgs.iter().map(|m| Some(m.as_slice())).collect()
}

#[test]
fn encoding_matrix_structure() {
    for (n, r) in [(5, 3), (7, 3), (7, 5), (9, 5), (15, 7), (12, 1)] {
        let code = CyclicCode::new(n, r);
        let q = r - 1;
        for i in 0..n {
            let mut column_sum = ZERO;
            for j in 0..n {
                let held = (0..r).any(|k| (j + k) % n == i);
                let w = code.coefficient(j, i);
                if !held {
                    assert!(w.abs() < 1e-12, "W[{j},{i}] = {w:?} off support (n={n}, r={r})");
                }
                column_sum += w;
            }
            assert!((column_sum - C64::new((n as f64).sqrt(), 0.0)).abs() < 1e-10, "column {i} sums to {column_sum:?}");
            // C2^H W = 0: the last q DFT columns are orthogonal to every column of W.
            for c in n - q..n {
                let dot = (0..n).fold(ZERO, |acc, j| acc + root(n, (j * c) as i64).conj() * code.coefficient(j, i));
                assert!(dot.abs() < 1e-10, "C2^H W[{c},{i}] = {dot:?}");
            }
        }
    }
}

#[test]
fn closed_form_equals_solved_form() {
    // Solve, per column i, for its r nonzeros: C2^H w = 0 (q equations) and sum w = sqrt(n).
    for (n, r) in [(5, 3), (9, 5), (15, 7)] {
        let code = CyclicCode::new(n, r);
        let q = r - 1;
        for i in 0..n {
            let holders: Vec<usize> = (0..r).map(|k| (i + n - k) % n).collect();
            let system = Matrix::from_fn(r, r, |row, col| {
                if row < q { root(n, (holders[col] * (n - q + row)) as i64).conj() } else { ONE }
            });
            let mut rhs = vec![ZERO; r];
            rhs[q] = C64::new((n as f64).sqrt(), 0.0);
            let solved = least_squares(&system, &rhs).unwrap();
            for (col, &j) in holders.iter().enumerate() {
                assert!((solved[col] - code.coefficient(j, i)).abs() < 1e-10, "n={n} W[{j},{i}]");
            }
        }
    }
}

fn close(a: C64, re: f64, im: f64, tol: f64) -> bool {
    (a - C64::new(re, im)).abs() < tol
}

#[test]
fn golden_example_n5_s1() {
    let code = CyclicCode::new(5, 3);
    let (w, phi) = (C64::new(0.30901699437494745, -0.9510565162951535), 1.618033988749895);
    for j in 0..5 {
        assert!((code.coefficient(j, j) - w).abs() < 1e-12);
        assert!(close(code.coefficient(j, (j + 1) % 5), phi, 0.0, 1e-12));
        assert!((code.coefficient(j, (j + 2) % 5) - w.conj()).abs() < 1e-12);
    }
    let g: Vec<Vec<f32>> = vec![vec![1.0, 2.0], vec![3.0, -1.0], vec![0.5, 0.5], vec![-2.0, 4.0], vec![1.5, 0.0]];
    let mut msgs = encode_all::<f64>(&code, &g);
    let expected_z0 = [(5.3176, -0.4755), (-0.8455, -1.4266)];
    for (k, (re, im)) in expected_z0.iter().enumerate() {
        assert!(close(C64::new(msgs[0][2 * k], msgs[0][2 * k + 1]), *re, *im, 1e-4));
    }
    assert!(close(C64::new(msgs[2][2], msgs[2][3]), 6.6266, -0.4755, 1e-4));
    msgs[2][0] += 100.0;
    msgs[2][2] -= 100.0;
    let (outcome, traces) = decoder(5, 3, 1, 2).decode_with(&as_slots(&msgs), &[&[1.3, 0.7], &[0.3, -1.1]]);
    let t = &traces[0];
    let want_e = [(6.3211, -1.6168), (2.6687, -2.8532), (61.2352, 0.9035), (4.0513, 2.3776), (5.9601, 1.1888)];
    for (got, (re, im)) in t.projections.iter().zip(want_e) {
        assert!(close(*got, re, im, 1e-4), "e = {got:?}");
    }
    assert!(close(t.syndromes[0], 8.2918, 25.5195, 1e-4) && close(t.syndromes[1], -21.7082, -15.7719, 1e-4));
    assert!((t.locator[0] - root(5, -2)).abs() < 1e-12, "a = zeta_2, got {:?}", t.locator[0]);
    assert_eq!(t.flagged, vec![2]);
    // The paper's recovery set H = {0, 1, 3} gives v = [0.8090+0.5878i, 0.8090-0.5878i, 0.6180].
    let h_rows = code.data_columns.select_rows(&[0, 1, 3]);
    let v: Vec<C64> = (0..3)
        .map(|h| {
            least_squares(&h_rows, &(0..3).map(|i| if i == h { ONE } else { ZERO }).collect::<Vec<_>>()).unwrap()[0]
        })
        .collect();
    assert!(close(v[0], 0.8090169943749475, 0.5877852522924731, 1e-12));
    assert!(close(v[1], 0.8090169943749475, -0.5877852522924731, 1e-12));
    assert!(close(v[2], 0.6180339887498949, 0.0, 1e-12));
    let sum = outcome.aggregate.clone().unwrap();
    assert!((sum[0] - 4.0).abs() < 1e-12 && (sum[1] - 5.5).abs() < 1e-12, "{sum:?}");
    assert_eq!(outcome.suspects(), vec![2]);
}

/// Every placement of up to s liars (all subsets) for the given n, every payload family.
fn all_placements(n: usize, s: usize, d: usize) {
    let r = 2 * s + 1;
    let code = CyclicCode::new(n, r);
    let dec = decoder(n, r, s, d);
    let mut rng = rng(n as u64 * 31 + s as u64);
    let g = gradients(&mut rng, n, d);
    let want = true_sum(&g);
    let honest = encode_all::<f64>(&code, &g);
    let mut checked = 0;
    for mask in 0u32..(1 << n) {
        if mask.count_ones() as usize > s {
            continue;
        }
        let family = mask as usize % 4;
        let mut msgs = honest.clone();
        let liars: Vec<usize> = (0..n).filter(|j| mask & (1 << j) != 0).collect();
        for &j in &liars {
            corrupt(&mut msgs[j], family, &mut rng);
        }
        let outcome = dec.decode(&as_slots(&msgs));
        let sum = outcome.aggregate.as_ref().unwrap_or_else(|e| panic!("n={n} s={s} liars={liars:?}: {e}"));
        let err = relative_error(sum, &want);
        assert!(err <= 1e-9, "n={n} s={s} liars={liars:?} family={family}: relative error {err:e}");
        assert_eq!(outcome.suspects(), liars, "n={n} s={s} family={family}");
        checked += 1;
    }
    assert!(checked > n);
}

#[test]
fn all_placements_n5() {
    all_placements(5, 1, 40);
}

#[test]
fn all_placements_n7() {
    all_placements(7, 1, 40);
    all_placements(7, 2, 40);
}

#[test]
fn all_placements_n9() {
    all_placements(9, 2, 30);
}

#[test]
fn all_placements_n15() {
    all_placements(15, 3, 20);
}

#[test]
fn imaginary_part_of_the_recovery_vanishes() {
    let (n, r, d) = (9, 5, 16);
    let code = CyclicCode::new(n, r);
    let g = gradients(&mut rng(5), n, d);
    let msgs = encode_all::<f64>(&code, &g);
    let dec = decoder(n, r, 2, d);
    let (outcome, traces) = dec.decode_with(&as_slots(&msgs), &[&vec![0.5; d], &vec![-0.25; d]]);
    assert!(outcome.aggregate.is_ok());
    let rows = code.data_columns.select_rows(&traces[0].consistent);
    for k in 0..d {
        let imag: f64 = traces[0]
            .consistent
            .iter()
            .enumerate()
            .map(|(h, &j)| {
                let unit: Vec<C64> = (0..rows.rows).map(|i| if i == h { ONE } else { ZERO }).collect();
                let v = least_squares(&rows, &unit).unwrap()[0];
                v.im * msgs[j][2 * k] + v.re * msgs[j][2 * k + 1]
            })
            .sum();
        assert!(imag.abs() < 1e-12, "Im part {imag:e} at {k}");
    }
}

#[test]
fn liar_who_knows_last_steps_projection_is_still_caught() {
    let (n, r, s, d) = (7, 3, 1, 64);
    let code = CyclicCode::new(n, r);
    let dec = decoder(n, r, s, d);
    let g = gradients(&mut rng(9), n, d);
    let want = true_sum(&g);
    let mut msgs = encode_all::<f64>(&code, &g);
    // The liar saw last step's direction f and adds an error orthogonal to it.
    let f_last: Vec<f64> = (0..d).map(|k| ((k * 7919) % 13) as f64 - 6.0).collect();
    let mut err: Vec<f64> = (0..d).map(|k| ((k * 104729) % 17) as f64 - 8.0).collect();
    let along = err.iter().zip(&f_last).map(|(a, b)| a * b).sum::<f64>() / f_last.iter().map(|b| b * b).sum::<f64>();
    err.iter_mut().zip(&f_last).for_each(|(e, f)| *e -= along * f);
    for k in 0..d {
        msgs[4][2 * k] += 50.0 * err[k];
    }
    // Were the PS to reuse f, the locator would see nothing wrong; the independent verify
    // projection still refuses to return the corrupted sum.
    let (reused, _) = dec.decode_with(&as_slots(&msgs), &[&f_last, &vec![1.0; d]]);
    if let Ok(sum) = &reused.aggregate {
        assert!(relative_error(sum, &want) < 1e-9, "a reused projection must never yield a wrong sum");
    }
    // With fresh secret projections (the real decode path) the liar is named and the sum exact.
    let fresh = dec.decode(&as_slots(&msgs));
    assert!(relative_error(fresh.aggregate.as_ref().unwrap(), &want) < 1e-9);
    assert_eq!(fresh.suspects(), vec![4]);
}

#[test]
fn erasures_and_errors_for_every_budget() {
    // n = 9, r = 5 (q = 4): every (a, e) with 2a + e <= 4, random placements.
    let (n, r, d) = (9, 5, 24);
    let code = CyclicCode::new(n, r);
    let mut rng = rng(77);
    let g = gradients(&mut rng, n, d);
    let want = true_sum(&g);
    let honest = encode_all::<f64>(&code, &g);
    for s in 0..=2 {
        let dec = decoder(n, r, s, d);
        for e in 0..=(4 - 2 * s) {
            for trial in 0..20 {
                let mut order: Vec<usize> = (0..n).collect();
                for i in (1..n).rev() {
                    order.swap(i, rng.next_u32() as usize % (i + 1));
                }
                let (liars, missing) = (&order[..s], &order[s..s + e]);
                let mut msgs = honest.clone();
                for &j in liars {
                    corrupt(&mut msgs[j], trial % 3, &mut rng);
                }
                let slots: Vec<Option<&[f64]>> =
                    (0..n).map(|j| (!missing.contains(&j)).then(|| msgs[j].as_slice())).collect();
                let outcome = dec.decode(&slots);
                let sum = outcome
                    .aggregate
                    .as_ref()
                    .unwrap_or_else(|f| panic!("s={s} e={e} liars={liars:?} missing={missing:?}: {f}"));
                assert!(relative_error(sum, &want) < 1e-9);
                let mut named = liars.to_vec();
                named.sort_unstable();
                assert_eq!(outcome.suspects(), named);
                let mut gone = missing.to_vec();
                gone.sort_unstable();
                assert_eq!(outcome.missing(), gone);
            }
        }
        // One more missing than the budget allows: undecodable, not a guess.
        let slots: Vec<Option<&[f64]>> = (0..n).map(|j| (j > 4 - 2 * s).then(|| honest[j].as_slice())).collect();
        let outcome = dec.decode(&slots);
        assert_eq!(outcome.verdict(), crate::StepVerdict::Undecodable, "s={s}");
        assert!(outcome.aggregate.unwrap_err().to_string().contains("missing"));
    }
}

#[test]
fn beyond_the_bound_is_reported_never_a_silent_wrong_sum() {
    let mut rng = rng(3);
    for (n, s) in [(5, 1), (7, 1), (9, 2), (15, 3)] {
        let r = 2 * s + 1;
        let d = 16;
        let code = CyclicCode::new(n, r);
        let dec = decoder(n, r, s, d);
        let g = gradients(&mut rng, n, d);
        let want = true_sum(&g);
        for trial in 0..30 {
            let mut msgs = encode_all::<f64>(&code, &g);
            for j in 0..=s {
                corrupt(&mut msgs[(j * 2 + trial) % n], trial % 3, &mut rng);
            }
            let outcome = dec.decode(&as_slots(&msgs));
            if let Ok(sum) = &outcome.aggregate {
                assert!(relative_error(sum, &want) < 1e-9, "n={n}: a wrong sum was returned");
            }
        }
    }
}

#[test]
fn with_s_zero_decoding_is_plain_summation() {
    let (n, d) = (6, 10);
    let code = CyclicCode::new(n, 1);
    let g = gradients(&mut rng(1), n, d);
    let msgs = encode_all::<f64>(&code, &g);
    let outcome = decoder(n, 1, 0, d).decode(&as_slots(&msgs));
    assert!(relative_error(outcome.aggregate.as_ref().unwrap(), &true_sum(&g)) < 1e-12);
}

#[test]
fn non_finite_and_malformed_payloads_are_named() {
    let (n, r, s, d) = (7, 3, 1, 12);
    let code = CyclicCode::new(n, r);
    let g = gradients(&mut rng(4), n, d);
    let want = true_sum(&g);
    let dec = decoder(n, r, s, d);
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut msgs = encode_all::<f32>(&code, &g);
        msgs[3][5] = bad;
        let outcome = dec.decode(&as_slots(&msgs));
        assert!(relative_error(outcome.aggregate.as_ref().unwrap(), &want) < 1e-5);
        assert_eq!(outcome.suspects(), vec![3]);
    }
    let mut msgs = encode_all::<f32>(&code, &g);
    msgs[6].pop();
    let outcome = dec.decode(&as_slots(&msgs));
    assert!(relative_error(outcome.aggregate.as_ref().unwrap(), &want) < 1e-5);
    assert_eq!(outcome.workers[6], WorkerVerdict::Suspect(SuspectReason::MalformedMessage));
}

#[test]
fn blocks_decode_independently() {
    let (p, r, s, d) = (40, 3, 1, 8);
    let scheme = crate::scheme::Scheme {
        code: crate::scheme::CodeKind::Cyclic,
        workers: p,
        redundancy: r,
        byzantine_tolerance: s,
        straggler_tolerance: 0,
        cyclic_block_size: None,
    };
    let blocks = scheme.cyclic_blocks().unwrap();
    assert!(blocks.len() > 1);
    let dec = CyclicDecoder::new(&blocks, r, s, d);
    let g = gradients(&mut rng(8), p, d);
    let mut msgs: Vec<Vec<f32>> = Vec::new();
    for b in &blocks {
        let local: Vec<Vec<f32>> = g[b.clone()].to_vec();
        msgs.extend(encode_all::<f32>(&CyclicCode::new(b.len(), r), &local));
    }
    // One liar per block.
    let liars: Vec<usize> = blocks.iter().map(|b| b.start + 1).collect();
    for &j in &liars {
        corrupt(&mut msgs[j], 0, &mut rng(j as u64));
    }
    let outcome = dec.decode(&as_slots(&msgs));
    assert!(relative_error(outcome.aggregate.as_ref().unwrap(), &true_sum(&g)) < 1e-5);
    assert_eq!(outcome.suspects(), liars);
}

/// The precision table of coding.md §3 for complex64 transport, which is what workers send.
/// Prints the measured worst relative error per (n, s) and asserts the envelope that
/// `MAX_CYCLIC_DATA_ROWS` promises.
#[test]
fn complex64_precision_envelope() {
    let d = 64;
    let mut rng = rng(11);
    println!("n  s  data-rows  worst-rel-error (complex64 transport, reverse attack on s workers)");
    for (n, s) in [
        (5, 1),
        (9, 2),
        (13, 1),
        (15, 3),
        (14, 1),
        (18, 3),
        (21, 4),
        (20, 2),
        (22, 3),
        (22, 1),
        (25, 2),
        (30, 5),
        (35, 5),
        (45, 5),
    ] {
        let r = 2 * s + 1;
        let code = CyclicCode::new(n, r);
        let dec = decoder(n, r, s, d);
        let mut worst: f64 = 0.0;
        for trial in 0..10 {
            let g = gradients(&mut rng, n, d);
            let mut msgs = encode_all::<f32>(&code, &g);
            for t in 0..s {
                corrupt(&mut msgs[(trial + 3 * t) % n], 0, &mut rng);
            }
            let outcome = dec.decode(&as_slots(&msgs));
            let err = outcome.aggregate.as_ref().map_or(f64::INFINITY, |sum| relative_error(sum, &true_sum(&g)));
            worst = worst.max(err);
        }
        let rows = n - 2 * s;
        println!("{n:<2} {s}  {rows:<9}  {worst:.1e}");
        if rows <= crate::scheme::MAX_CYCLIC_DATA_ROWS {
            assert!(worst < 1e-5, "n={n} s={s} inside the envelope: {worst:e}");
        }
    }
}

#[test]
fn random_direction_is_independent_of_chunking() {
    let seed = [7u8; 32];
    let long = random_direction(seed, 200_000);
    let short = random_direction(seed, 20_000);
    assert_eq!(&long[..20_000], &short[..]);
    assert!(long.iter().all(|x| x.abs() < 1.0));
    assert_ne!(random_direction([8u8; 32], 16), short[..16].to_vec());
    let mean = long.iter().sum::<f64>() / long.len() as f64;
    assert!(mean.abs() < 0.01, "mean {mean}");
}
