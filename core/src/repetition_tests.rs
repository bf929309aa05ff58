//! Tests of the repetition decoder against coding.md §2, §5 and §6: exact, bit for bit.

use super::*;
use crate::scheme::{CodeKind, Scheme};
use crate::{StepVerdict, SuspectReason, WorkerVerdict};
use proptest::prelude::*;

fn decoder(p: usize, r: usize, s: usize, d: usize) -> RepetitionDecoder {
    let scheme = Scheme {
        code: CodeKind::Repetition,
        workers: p,
        redundancy: r,
        byzantine_tolerance: s,
        straggler_tolerance: r - 1 - 2 * s,
        cyclic_block_size: None,
    };
    RepetitionDecoder::new(&Assignment::new(&scheme).unwrap(), s, d)
}

/// Honest messages: every member of group g sends the group vector.
fn honest(p: usize, r: usize, d: usize, seed: u32) -> Vec<Vec<f32>> {
    let groups: Vec<Vec<f32>> = (0..p / r)
        .map(|g| {
            (0..d)
                .map(|k| ((g * 131 + k * 17 + seed as usize) % 97) as f32 * 0.37 - 11.0 + 1.0 / (k as f32 + 3.0))
                .collect()
        })
        .collect();
    (0..p).map(|j| groups[j / r].clone()).collect()
}

/// The fault-free result: group vectors summed in group order.
fn fault_free(msgs: &[Vec<f32>], r: usize) -> Vec<f32> {
    let mut out = msgs[0].clone();
    for g in 1..msgs.len() / r {
        out.iter_mut().zip(&msgs[g * r]).for_each(|(o, x)| *o += *x);
    }
    out
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Payload families a liar may send (coding.md §6).
fn forge(family: usize, own: &[f32], other_group: &[f32], liar: usize) -> Vec<f32> {
    match family {
        0 => vec![7.0; own.len()],                                                      // constant
        1 => own.iter().map(|x| -3.0 * x).collect(),                                    // -k * g
        2 => (0..own.len()).map(|k| ((k * 7 + liar * 13) % 11) as f32 - 5.0).collect(), // random-ish, per liar
        3 => own.iter().enumerate().map(|(k, x)| if k % 2 == 0 { f32::NAN } else { x * f32::INFINITY }).collect(),
        4 => other_group.to_vec(),  // copy of another group's vector
        _ => vec![-1.5; own.len()], // identical forgery shared by colluders
    }
}

const FAMILIES: usize = 6;

fn slots(msgs: &[Vec<f32>]) -> Vec<Option<&[f32]>> {
    msgs.iter().map(|m| Some(m.as_slice())).collect()
}

/// Every placement of at most s liars per group, every payload family: bit-exact result and
/// exactly the liars named.
fn exhaustive(p: usize, r: usize, s: usize) {
    let d = 33;
    let dec = decoder(p, r, s, d);
    let clean = honest(p, r, d, 1);
    let want = bits(&fault_free(&clean, r));
    let mut placements = 0;
    for mask in 0u32..(1 << p) {
        let per_group_ok = (0..p / r).all(|g| ((mask >> (g * r)) & ((1 << r) - 1)).count_ones() as usize <= s);
        if !per_group_ok {
            continue;
        }
        for family in 0..FAMILIES {
            let mut msgs = clean.clone();
            let liars: Vec<usize> = (0..p).filter(|j| mask & (1 << j) != 0).collect();
            for &j in &liars {
                let other = &clean[(j + r) % p];
                msgs[j] = forge(family, &clean[j], other, j);
            }
            let outcome = dec.decode(&slots(&msgs));
            let got =
                outcome.aggregate.as_ref().unwrap_or_else(|f| panic!("p={p} liars={liars:?} family={family}: {f}"));
            assert_eq!(bits(got), want, "p={p} liars={liars:?} family={family}");
            assert_eq!(outcome.suspects(), liars, "family={family}");
            for &j in &liars {
                assert_eq!(outcome.workers[j], WorkerVerdict::Suspect(SuspectReason::OutvotedInGroup));
            }
            placements += 1;
        }
    }
    assert!(placements > p);
}

#[test]
fn exhaustive_placements_p6_r3_s1() {
    exhaustive(6, 3, 1);
}

#[test]
fn exhaustive_placements_p9_r3_s1() {
    exhaustive(9, 3, 1);
}

#[test]
fn exhaustive_placements_p10_r5_s2() {
    exhaustive(10, 5, 2);
}

#[test]
fn one_ulp_difference_is_a_different_vote() {
    let dec = decoder(3, 3, 1, 4);
    let mut msgs = honest(3, 3, 4, 2);
    msgs[1][2] = f32::from_bits(msgs[1][2].to_bits() + 1);
    let outcome = dec.decode(&slots(&msgs));
    assert_eq!(outcome.suspects(), vec![1]);
    assert_eq!(bits(outcome.aggregate.as_ref().unwrap()), bits(&msgs[0]));
    // Signed zeros are different bytes, and are documented to vote differently.
    let zeros = [vec![0.0f32; 4], vec![0.0f32; 4], vec![-0.0f32; 4]];
    assert_eq!(dec.decode(&slots(&zeros)).suspects(), vec![2]);
}

#[test]
fn more_than_s_independent_liars_is_undecodable() {
    let dec = decoder(6, 3, 1, 8);
    let clean = honest(6, 3, 8, 3);
    let mut msgs = clean.clone();
    msgs[3] = forge(0, &clean[3], &clean[0], 3);
    msgs[4] = forge(2, &clean[4], &clean[0], 4);
    let outcome = dec.decode(&slots(&msgs));
    assert_eq!(outcome.verdict(), StepVerdict::Undecodable);
    let detail = outcome.aggregate.as_ref().unwrap_err().to_string();
    assert!(detail.contains("group 1 (workers 3..5)") && detail.contains("1 of the 2 needed"), "{detail}");
    assert_eq!(&outcome.workers[3..6], &[WorkerVerdict::Unverified; 3]);
    assert_eq!(&outcome.workers[0..3], &[WorkerVerdict::Honest; 3]);
}

#[test]
fn more_than_s_colluding_liars_is_a_proven_violation() {
    // r = 4, s = 1: two colluders with an identical forgery against two honest members. Both
    // buckets reach s + 1: the decoder proves the bound was broken instead of picking one.
    // (Colluders forming a strict majority, e.g. 2 of 3, are indistinguishable from honest
    // members by anyone: that is why r >= 2s + 1 is required.)
    let dec = decoder(4, 4, 1, 5);
    let mut msgs = honest(4, 4, 5, 4);
    msgs[0] = vec![9.0; 5];
    msgs[2] = vec![9.0; 5];
    let outcome = dec.decode(&slots(&msgs));
    assert_eq!(outcome.verdict(), StepVerdict::BoundViolated);
    assert!(outcome.aggregate.unwrap_err().to_string().contains("more than 1 members lied"));
}

#[test]
fn erasures_and_errors_for_every_budget() {
    // r = 5: every (a liars, e missing) with 2a + e <= 4, at every position in each group.
    let (p, r, d) = (10, 5, 6);
    let clean = honest(p, r, d, 5);
    let want = bits(&fault_free(&clean, r));
    for s in 0..=2 {
        let dec = decoder(p, r, s, d);
        for e in 0..=(4 - 2 * s) {
            for shift in 0..r {
                let mut msgs = clean.clone();
                let mut present = vec![true; p];
                let mut liars = Vec::new();
                for g in 0..p / r {
                    let pos = |k: usize| g * r + (shift + k) % r;
                    for k in 0..s {
                        msgs[pos(k)] = forge(k % FAMILIES, &clean[pos(k)], &clean[0], pos(k));
                        liars.push(pos(k));
                    }
                    for k in s..s + e {
                        present[pos(k)] = false;
                    }
                }
                liars.sort_unstable();
                let slots: Vec<Option<&[f32]>> = (0..p).map(|j| present[j].then(|| msgs[j].as_slice())).collect();
                let outcome = dec.decode(&slots);
                assert_eq!(bits(outcome.aggregate.as_ref().unwrap()), want, "s={s} e={e} shift={shift}");
                assert_eq!(outcome.suspects(), liars);
                assert_eq!(outcome.missing().len(), e * (p / r));
            }
        }
    }
}

#[test]
fn early_decode_needs_only_s_plus_one_identical_vectors() {
    let (p, r, s, d) = (10, 5, 2, 7);
    let dec = decoder(p, r, s, d);
    let msgs = honest(p, r, d, 6);
    let mut forged = msgs.clone();
    forged[9] = vec![1.0; d];
    let mut tally = dec.tally();
    let lookup = |k: usize| forged[k].as_slice();
    // Group 0 gets three identical vectors (s + 1 = 3): decided. Group 1 only two so far.
    for j in [0, 1, 2, 5, 6] {
        tally.offer(j, &forged[j], lookup);
    }
    assert_eq!(tally.group_state(0), GroupState::Decided);
    assert_eq!(tally.group_state(1), GroupState::Pending);
    assert!(!tally.is_final());
    tally.offer(7, &forged[7], lookup);
    assert!(tally.is_final(), "decodable without waiting for workers 3, 4, 8, 9");
    let arrived: Vec<Option<&[f32]>> =
        (0..p).map(|j| [0, 1, 2, 5, 6, 7].contains(&j).then(|| forged[j].as_slice())).collect();
    let early = tally.finish(&arrived);
    assert_eq!(bits(early.aggregate.as_ref().unwrap()), bits(&fault_free(&msgs, r)));
    assert_eq!(early.missing(), vec![3, 4, 8, 9]);
    // A late liar is still judged; a duplicate offer changes nothing.
    tally.offer(9, &forged[9], lookup);
    tally.offer(9, &msgs[9], lookup);
    let all: Vec<Option<&[f32]>> =
        (0..p).map(|j| [0, 1, 2, 5, 6, 7, 9].contains(&j).then(|| forged[j].as_slice())).collect();
    assert_eq!(tally.finish(&all).suspects(), vec![9]);
}

#[test]
fn malformed_lengths_are_named_and_do_not_vote() {
    let dec = decoder(3, 3, 1, 4);
    let msgs = honest(3, 3, 4, 7);
    let short = vec![1.0f32; 3];
    let outcome = dec.decode(&[Some(&msgs[0]), Some(&short), Some(&msgs[2])]);
    assert_eq!(outcome.workers[1], WorkerVerdict::Suspect(SuspectReason::MalformedMessage));
    assert_eq!(bits(outcome.aggregate.as_ref().unwrap()), bits(&msgs[0]));
}

#[test]
fn large_vectors_use_the_parallel_paths() {
    let (p, r, s, d) = (6, 3, 1, 300_000);
    let dec = decoder(p, r, s, d);
    let mut msgs = honest(p, r, d, 8);
    let want = bits(&fault_free(&msgs, r));
    msgs[4][d - 1] = 0.5;
    let outcome = dec.decode(&slots(&msgs));
    assert_eq!(bits(outcome.aggregate.as_ref().unwrap()), want);
    assert_eq!(outcome.suspects(), vec![4]);
}

proptest! {
    #[test]
    fn arrival_order_never_changes_the_result(order in Just((0..9usize).collect::<Vec<_>>()).prop_shuffle(), liar in 0..9usize, family in 0..FAMILIES) {
        let (p, r, s, d) = (9, 3, 1, 11);
        let dec = decoder(p, r, s, d);
        let clean = honest(p, r, d, 9);
        let mut msgs = clean.clone();
        msgs[liar] = forge(family, &clean[liar], &clean[(liar + 3) % p], liar);
        let batch = dec.decode(&slots(&msgs));
        let mut tally = dec.tally();
        for &j in &order {
            tally.offer(j, &msgs[j], |k| msgs[k].as_slice());
        }
        let incremental = tally.finish(&slots(&msgs));
        prop_assert_eq!(bits(batch.aggregate.as_ref().unwrap()), bits(incremental.aggregate.as_ref().unwrap()));
        prop_assert_eq!(batch.workers, incremental.workers);
    }

    #[test]
    fn with_s_zero_the_result_is_the_plain_sum(values in proptest::collection::vec(proptest::num::f32::ANY, 4 * 5)) {
        // r = 1, s = 0: every worker is its own group; the decoder must add them in order.
        let dec = decoder(4, 1, 0, 5);
        let msgs: Vec<Vec<f32>> = values.chunks(5).map(|c| c.to_vec()).collect();
        let outcome = dec.decode(&slots(&msgs));
        let mut plain = msgs[0].clone();
        for m in &msgs[1..] {
            plain.iter_mut().zip(m).for_each(|(o, x)| *o += *x);
        }
        prop_assert_eq!(bits(outcome.aggregate.as_ref().unwrap()), bits(&plain));
    }
}
