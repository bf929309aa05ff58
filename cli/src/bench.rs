//! `draco bench decode`: times every decoder and statistical aggregator on the same step's
//! inputs in one run, beside a plain memcpy of the same bytes, and prints ratios (machines are
//! noisy; only ratios measured together mean anything).

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use draco_core::attack::{Attack, AttackContext, AttackKind};
use draco_core::cyclic::CyclicDecoder;
use draco_core::repetition::RepetitionDecoder;
use draco_core::scheme::{CodeKind, Scheme};
use draco_core::statistical::{self, Aggregator, AggregatorParams};
use draco_core::{StepVerdict, assignment::Assignment};
use serde::Serialize;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Decoders and aggregators vs memcpy of the same input bytes.
    Decode(DecodeArgs),
    /// Gradient streaming through a real PS vs raw TCP on loopback, and one step's time split.
    Ingest(crate::bench_ingest::IngestArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CodeChoice {
    All,
    Repetition,
    Cyclic,
    Statistical,
}

#[derive(Args)]
pub struct DecodeArgs {
    /// P: number of workers (and partitions).
    #[arg(long, default_value_t = 15)]
    workers: usize,
    /// r: workers per partition; the codes tolerate s = (r - 1) / 2 liars.
    #[arg(long, default_value_t = 3)]
    redundancy: usize,
    /// d: gradient dimension (f32 values).
    #[arg(long, default_value_t = 4_000_000)]
    dim: usize,
    /// Which decoders to time.
    #[arg(long, value_enum, default_value_t = CodeChoice::All)]
    code: CodeChoice,
    /// Timed runs per entry (the fastest is reported); slow entries stop after ~3 s.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Row {
    name: String,
    input_bytes: usize,
    seconds: f64,
    gb_per_s: f64,
    /// Throughput relative to memcpy of the same number of bytes (higher is better).
    vs_memcpy: f64,
    /// How many times slower than the repetition decoder (for aggregators).
    vs_repetition: Option<f64>,
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Decode(args) => decode(&args),
        BenchCommand::Ingest(args) => crate::bench_ingest::run(&args),
    }
}

/// Fastest of up to `repeats` runs, stopping early once ~3 s were spent.
pub fn time_best(repeats: usize, mut f: impl FnMut()) -> Duration {
    let started = Instant::now();
    let mut best = Duration::MAX;
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed());
        if started.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    best
}

/// memcpy of `bytes` bytes (as f32s) into a buffer that already exists.
fn memcpy_time(values: usize, repeats: usize) -> Duration {
    let src = vec![1.5f32; values];
    let mut dst = vec![0.0f32; values];
    time_best(repeats, || {
        dst.copy_from_slice(black_box(&src));
        black_box(&dst);
    })
}

fn decode(args: &DecodeArgs) -> anyhow::Result<()> {
    let (p, r, d) = (args.workers, args.redundancy, args.dim);
    if r % 2 == 0 {
        bail!("--redundancy: must be odd so that s = (r - 1) / 2 liars are tolerated, got {r}");
    }
    if d == 0 {
        bail!("--dim: must be at least 1, got 0");
    }
    let s = (r - 1) / 2;
    let scheme = |code| Scheme::new(code, p, r, s);
    let want = |c: CodeChoice| args.code == CodeChoice::All || args.code == c;
    let mut rows: Vec<Row> = Vec::new();
    let mut record = |name: &str, values: usize, memcpy: Duration, t: Duration| {
        let bytes = values * 4;
        rows.push(Row {
            name: name.to_string(),
            input_bytes: bytes,
            seconds: t.as_secs_f64(),
            gb_per_s: bytes as f64 / t.as_secs_f64() / 1e9,
            vs_memcpy: memcpy.as_secs_f64() / t.as_secs_f64(),
            vs_repetition: None,
        });
    };

    // Partition gradients; a liar in every unit sends the reverse attack.
    let gradients: Vec<Vec<f32>> =
        (0..p).map(|i| (0..d).map(|k| (((i * 7919 + k * 31) % 1013) as f32 - 506.0) * 1e-3).collect()).collect();
    let reverse = Attack { kind: AttackKind::Reverse, scale: 100.0 };
    let memcpy_plain = memcpy_time(p * d, args.repeats);
    record("memcpy (P x d f32)", p * d, memcpy_plain, memcpy_plain);

    if want(CodeChoice::Repetition) || want(CodeChoice::Statistical) {
        let rep_scheme = scheme(CodeKind::Repetition);
        let assignment = Assignment::new(&rep_scheme).context("repetition scheme")?;
        let mut msgs: Vec<Vec<f32>> = (0..p)
            .map(|j| {
                let parts = assignment.partitions_of(j);
                (0..d).map(|k| parts.iter().map(|&i| gradients[i][k]).sum()).collect()
            })
            .collect();
        for unit in assignment.units() {
            let liar = unit.start;
            msgs[liar] = reverse.forge(&AttackContext { honest: &msgs[liar], observed: &[], seed: liar as u64 });
        }
        let slots: Vec<Option<&[f32]>> = msgs.iter().map(|m| Some(m.as_slice())).collect();
        if want(CodeChoice::Repetition) {
            let decoder = RepetitionDecoder::new(&assignment, s, d);
            let outcome = decoder.decode(&slots);
            if outcome.verdict() != StepVerdict::Decoded {
                bail!("repetition decode failed on benchmark inputs: {:?}", outcome.aggregate.err());
            }
            let t = time_best(args.repeats, || {
                black_box(decoder.decode(black_box(&slots)));
            });
            record("repetition decode", p * d, memcpy_plain, t);
        }
        if want(CodeChoice::Statistical) {
            let params = AggregatorParams::default();
            for rule in Aggregator::ALL {
                if p < rule.min_workers(s) {
                    continue;
                }
                let t = time_best(args.repeats, || {
                    black_box(statistical::aggregate(&rule, &params, black_box(&slots), s));
                });
                record(rule.as_str(), p * d, memcpy_plain, t);
            }
        }
    }

    if want(CodeChoice::Cyclic) {
        let cyc_scheme = scheme(CodeKind::Cyclic);
        let blocks = cyc_scheme.cyclic_blocks().context("cyclic scheme")?;
        let decoder = CyclicDecoder::new(&blocks, r, s, d);
        let mut msgs: Vec<Vec<f32>> = (0..p)
            .map(|j| {
                let (code, local) = decoder.code_of(j);
                let start = j - local;
                let n = code.workers();
                let held: Vec<&[f32]> = (0..r).map(|k| gradients[start + (local + k) % n].as_slice()).collect();
                code.encode::<f32>(local, &held)
            })
            .collect();
        for b in &blocks {
            let liar = b.start;
            msgs[liar] = reverse.forge(&AttackContext { honest: &msgs[liar], observed: &[], seed: liar as u64 });
        }
        let slots: Vec<Option<&[f32]>> = msgs.iter().map(|m| Some(m.as_slice())).collect();
        let outcome = decoder.decode(&slots);
        if outcome.verdict() != StepVerdict::Decoded {
            bail!("cyclic decode failed on benchmark inputs: {:?}", outcome.aggregate.err());
        }
        let memcpy_wide = memcpy_time(2 * p * d, args.repeats);
        record("memcpy (P x 2d f32)", 2 * p * d, memcpy_wide, memcpy_wide);
        let t = time_best(args.repeats, || {
            black_box(decoder.decode(black_box(&slots)));
        });
        record("cyclic decode", 2 * p * d, memcpy_wide, t);
    }

    if let Some(rep) = rows.iter().find(|r| r.name == "repetition decode").map(|r| r.seconds) {
        for row in rows.iter_mut().filter(|r| !r.name.starts_with("memcpy") && r.name != "repetition decode") {
            row.vs_repetition = Some(row.seconds / rep);
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "draco bench decode: P={p} r={r} s={s} d={d} (one liar per unit, reverse attack), best of {} runs",
        args.repeats
    );
    println!(
        "{:<22} {:>12} {:>11} {:>8} {:>10} {:>14}",
        "decoder", "input MB", "time ms", "GB/s", "vs memcpy", "x repetition"
    );
    for row in &rows {
        let vs_rep = row.vs_repetition.map_or(String::from("-"), |x| format!("{x:.1}x slower"));
        println!(
            "{:<22} {:>12.1} {:>11.2} {:>8.2} {:>10.2} {:>14}",
            row.name,
            row.input_bytes as f64 / 1e6,
            row.seconds * 1e3,
            row.gb_per_s,
            row.vs_memcpy,
            vs_rep
        );
    }
    Ok(())
}
