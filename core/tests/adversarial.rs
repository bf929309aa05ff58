use draco_core::cyclic::CyclicDecoder;
use draco_core::outcome::WorkerVerdict;

fn lcg(seed: &mut u64) -> f32 {
    *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
}
fn grads(n: usize, d: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut s = seed;
    (0..n).map(|_| (0..d).map(|_| lcg(&mut s)).collect()).collect()
}
fn sum(g: &[Vec<f32>]) -> Vec<f64> {
    (0..g[0].len()).map(|k| g.iter().map(|v| f64::from(v[k])).sum()).collect()
}
fn enc(dec: &CyclicDecoder, g: &[Vec<f32>], r: usize) -> Vec<Vec<f32>> {
    let n = dec.workers();
    (0..n).map(|j| {
        let (code, local) = dec.code_of(j);
        let start = j - local;
        let nb = code.workers();
        let held: Vec<&[f32]> = (0..r).map(|k| g[start + (local + k) % nb].as_slice()).collect();
        code.encode::<f32>(local, &held)
    }).collect()
}
fn rel(a: &[f64], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>().sqrt();
    num / b.iter().map(|y| y * y).sum::<f64>().sqrt()
}
fn norm(v: &[f32]) -> f64 { v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt() }

#[test]
fn explore_tolerance() {
    let (n, r, s, d) = (5, 3, 1, 1000);
    let dec = CyclicDecoder::new(&[0..n], r, s, d);
    let g = grads(n, d, 1);
    let want = sum(&g);
    let honest = enc(&dec, &g, r);
    let out = dec.decode(&honest.iter().map(|m| Some(m.as_slice())).collect::<Vec<_>>());
    println!("honest err {:e}", rel(&out.aggregate.unwrap(), &want));
    for c in [1e-5, 1e-4, 3e-4, 5e-4, 1e-3, 3e-3] {
        let mut ok = 0; let mut worst: f64 = 0.0; let mut honest_verdict = 0;
        for t in 0..50 {
            let mut msgs = honest.clone();
            let nz = norm(&msgs[2]);
            let mut ss = 77 + t as u64;
            let dir: Vec<f32> = (0..2*d).map(|_| lcg(&mut ss)).collect();
            let dn = norm(&dir);
            for (x, e) in msgs[2].iter_mut().zip(&dir) { *x += (f64::from(*e) / dn * nz * c) as f32; }
            let out = dec.decode(&msgs.iter().map(|m| Some(m.as_slice())).collect::<Vec<_>>());
            if let Ok(a) = &out.aggregate { ok += 1; worst = worst.max(rel(a, &want)); if out.workers[2] == WorkerVerdict::Honest { honest_verdict += 1; } }
        }
        println!("c={c:e} ok={ok}/50 liar-honest={honest_verdict} worst rel err {worst:e}");
    }
}

#[test]
fn explore_masking() {
    for (n, r, s) in [(7usize, 5usize, 2usize), (9, 5, 2), (11, 7, 3)] {
        let d = 200;
        let dec = CyclicDecoder::new(&[0..n], r, s, d);
        let g = grads(n, d, 3);
        let want = sum(&g);
        let honest = enc(&dec, &g, r);
        for big in [1e3f64, 1e6, 1e9, 1e12] {
            let mut stats = std::collections::BTreeMap::new();
            for a in 0..n { for b in 0..n { if a == b { continue; }
                let mut msgs = honest.clone();
                for x in msgs[a].iter_mut() { *x = (f64::from(*x) * big) as f32; }
                for (k, x) in msgs[b].iter_mut().enumerate() { if k % 2 == 0 { *x += 1.0; } }
                let out = dec.decode(&msgs.iter().map(|m| Some(m.as_slice())).collect::<Vec<_>>());
                let key = match &out.aggregate { Ok(v) => if rel(v, &want) < 1e-5 { format!("ok sus={:?}", out.suspects()==vec![a.min(b), a.max(b)]) } else { format!("WRONG {:e}", rel(v,&want)) }, Err(e) => format!("{:?}", out.verdict()) + if matches!(e, draco_core::DecodeFailure::BoundViolated{..}) {""} else {""} };
                *stats.entry(key).or_insert(0) += 1;
            }}
            println!("n={n} r={r} s={s} big={big:e}: {stats:?}");
        }
    }
}

#[test]
fn explore_masking_detail() {
    for (n, r, s, big) in [(7usize, 5usize, 2usize, 1e9f64), (9, 5, 2, 1e6), (11, 7, 3, 1e12)] {
        let d = 200;
        let dec = CyclicDecoder::new(&[0..n], r, s, d);
        let g = grads(n, d, 3);
        let want = sum(&g);
        let honest = enc(&dec, &g, r);
        for a in 0..n { for b in 0..n { if a == b { continue; }
            let mut wrong = 0;
            let mut last = None;
            for _ in 0..20 {
                let mut msgs = honest.clone();
                for x in msgs[a].iter_mut() { *x = (f64::from(*x) * big) as f32; }
                for (k, x) in msgs[b].iter_mut().enumerate() { if k % 2 == 0 { *x += 1.0; } }
                let out = dec.decode(&msgs.iter().map(|m| Some(m.as_slice())).collect::<Vec<_>>());
                if let Ok(v) = &out.aggregate { if rel(v, &want) > 1e-5 { wrong += 1; last = Some((rel(v,&want), out.workers.clone())); } }
            }
            if wrong > 0 { println!("n={n} a={a} b={b} wrong {wrong}/20 {last:?}"); }
        }}
    }
}
