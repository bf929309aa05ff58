//! End to end: `draco run` starts a real PS and real workers as processes on loopback, trains a
//! real (small) model, and the tests read what the job reports and the checkpoints it wrote.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use draco_api::DracoJob;
use draco_core::job::DrillAttack;
use serde_json::Value;

fn draco() -> &'static str {
    env!("CARGO_BIN_EXE_draco")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("draco-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A small job on the generated dataset; `extra` lines are appended to the spec.
fn job_yaml(name: &str, code: &str, workers: usize, redundancy: usize, s: usize, steps: u64, extra: &str) -> String {
    format!(
        "apiVersion: draco.dev/v1alpha1
kind: DracoJob
metadata: {{name: {name}}}
spec:
  workers: {workers}
  redundancy: {redundancy}
  code: {code}
  byzantineTolerance: {s}
  stragglerTimeoutSeconds: 20
  model: {{architecture: mlp, hidden: [24]}}
  dataset: {{format: synthetic}}
  training: {{steps: {steps}, batchSize: 60, seed: 11, evalEverySteps: 0, optimizer: {{type: sgd, learningRate: 0.05, momentum: 0.9}}}}
  checkpoint: {{everySteps: 5}}
{extra}"
    )
}

/// Runs `draco run` to completion and returns its summary.json.
fn run(dir: &Path, yaml: &str) -> Value {
    std::fs::create_dir_all(dir).unwrap();
    let file = dir.join("job.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = Command::new(draco())
        .args(["run", "-f", file.to_str().unwrap(), "--run-dir", dir.join("run").to_str().unwrap()])
        .output()
        .expect("draco run starts");
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("run/summary.json")).unwrap_or_default())
            .unwrap_or_else(|_| {
                panic!("no summary: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
            });
    assert!(
        out.status.success(),
        "draco run failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    summary
}

fn final_params(dir: &Path, count: usize) -> Vec<f32> {
    draco_ps::checkpoint::Checkpoint::load(&dir.join("run/checkpoints"), count)
        .unwrap()
        .expect("final checkpoint")
        .params
}

/// How many steps each worker lied in, per the drill's deterministic placement.
fn lies_per_worker(yaml: &str) -> Vec<u64> {
    let job = DracoJob::from_yaml(yaml).unwrap().job_config();
    let mut lies = vec![0; job.scheme.workers];
    for step in 0..job.training.steps {
        job.adversaries_at(step).into_iter().for_each(|w| lies[w] += 1);
    }
    lies
}

/// Lies each worker delivered (its `forged=` count at exit).
fn forged_per_worker(dir: &Path, workers: usize) -> Vec<u64> {
    (0..workers)
        .map(|w| {
            let log = std::fs::read_to_string(dir.join(format!("run/worker-{w}.log"))).unwrap();
            let line = log.lines().rev().find(|l| l.contains("worker done")).expect("worker finished");
            line.split("forged=").nth(1).and_then(|v| v.split_whitespace().next()).unwrap().parse().unwrap()
        })
        .collect()
}

fn named_per_worker(summary: &Value, workers: usize) -> Vec<u64> {
    let mut named = vec![0; workers];
    for s in summary["status"]["suspects"].as_array().unwrap() {
        named[s["worker"].as_u64().unwrap() as usize] += s["count"].as_u64().unwrap();
    }
    named
}

fn attack_name(a: DrillAttack) -> String {
    serde_json::to_value(a).unwrap().as_str().unwrap().to_string()
}

#[test]
fn repetition_under_every_attack_trains_the_bit_identical_model() {
    let dir = scratch("rep");
    let clean = run(&dir.join("clean"), &job_yaml("clean", "repetition", 6, 3, 1, 12, ""));
    let digest = clean["status"]["paramsDigest"].as_str().unwrap().to_string();
    assert!(clean["status"]["suspects"].as_array().unwrap().is_empty(), "nobody lied, nobody named");
    for attack in DrillAttack::ALL {
        let name = attack_name(attack);
        let drill = format!("  adversary: {{count: 1, attack: {name}, scale: 50, placement: random}}\n");
        let yaml = job_yaml("drill", "repetition", 6, 3, 1, 12, &drill);
        let summary = run(&dir.join(&name), &yaml);
        assert_eq!(summary["status"]["paramsDigest"], digest.as_str(), "{name}: the model differs from the clean run");
        let (planned, named) = (lies_per_worker(&yaml), named_per_worker(&summary, 6));
        // A worker that fell behind skips steps (it fetches the current one), so it may tell
        // fewer lies than planned; every lie it did deliver is judged, even one arriving after
        // its group was decided.
        let told = forged_per_worker(&dir.join(&name), 6);
        for w in 0..6 {
            assert!(told[w] <= planned[w], "{name}: worker {w} forged {} times, planned {}", told[w], planned[w]);
        }
        assert_eq!(named, told, "{name}: named vs delivered lies (planned {planned:?})");
    }
}

#[test]
fn a_fixed_liar_is_the_only_worker_named() {
    let dir = scratch("fixed");
    let drill = "  adversary: {count: 1, attack: signFlip, scale: 1, placement: fixed}\n";
    let yaml = job_yaml("fixed", "repetition", 6, 3, 1, 15, drill);
    let liar = DracoJob::from_yaml(&yaml).unwrap().job_config().adversaries_at(0)[0];
    let summary = run(&dir, &yaml);
    let named = named_per_worker(&summary, 6);
    // A liar that falls behind skips steps, so count the lies it actually delivered.
    let told = forged_per_worker(&dir, 6);
    assert!(told[liar] >= 1, "the drill made worker {liar} lie at least once");
    assert_eq!(named[liar], told[liar], "every delivered lie of worker {liar} is named");
    assert_eq!(named.iter().sum::<u64>(), named[liar], "an honest worker was named: {named:?}");
}

#[test]
fn cyclic_under_attack_trains_the_same_model_within_1e5() {
    let dir = scratch("cyc");
    let _ = run(&dir.join("clean"), &job_yaml("clean", "cyclic", 5, 3, 1, 10, ""));
    let count =
        draco_model::initial_parameters(&draco_model::Architecture::Mlp { hidden: vec![24] }, [1, 28, 28], 10, 11)
            .0
            .len();
    let reference = final_params(&dir.join("clean"), count);
    for attack in
        [DrillAttack::Reverse, DrillAttack::Constant, DrillAttack::Random, DrillAttack::LabelFlip, DrillAttack::Alie]
    {
        let name = attack_name(attack);
        let drill = format!("  adversary: {{count: 1, attack: {name}, scale: 50, placement: random}}\n");
        let summary = run(&dir.join(&name), &job_yaml("drill", "cyclic", 5, 3, 1, 10, &drill));
        let params = final_params(&dir.join(&name), count);
        let diff = params.iter().zip(&reference).map(|(a, b)| f64::from(a - b).powi(2)).sum::<f64>().sqrt();
        let norm = reference.iter().map(|b| f64::from(*b).powi(2)).sum::<f64>().sqrt();
        assert!(diff / norm <= 1e-5, "{name}: relative difference {:e}", diff / norm);
        let named = named_per_worker(&summary, 5);
        let lies = lies_per_worker(&job_yaml("drill", "cyclic", 5, 3, 1, 10, &drill));
        // The cyclic code waits for every worker (stragglerTolerance 0): every liar is judged.
        assert_eq!(named, lies, "{name}");
    }
}

fn accuracy(summary: &Value) -> f64 {
    summary["status"]["testAccuracy"].as_f64().unwrap_or(0.0)
}

#[test]
fn without_a_code_the_attack_wins_and_the_median_lags() {
    let dir = scratch("none");
    let drill = "  adversary: {count: 1, attack: reverse, scale: 100, placement: random}\n";
    let draco = run(&dir.join("draco"), &job_yaml("draco", "repetition", 6, 3, 1, 30, drill));
    let mean = run(&dir.join("mean"), &job_yaml("mean", "none", 6, 1, 1, 30, &format!("  aggregator: mean\n{drill}")));
    let median =
        run(&dir.join("median"), &job_yaml("median", "none", 6, 1, 1, 30, &format!("  aggregator: median\n{drill}")));
    let (a_draco, a_mean, a_median) = (accuracy(&draco), accuracy(&mean), accuracy(&median));
    eprintln!("accuracy after 30 steps: draco {a_draco}, mean {a_mean}, median {a_median}");
    assert!(a_mean <= 0.2, "the mean under a reverse attack should not learn: {a_mean}");
    assert!(a_draco >= 0.8, "DRACO should learn: {a_draco}");
    let loss = |s: &Value| s["status"]["testLoss"].as_f64().unwrap_or(f64::INFINITY);
    assert!(loss(&median) > loss(&draco), "median {} should trail DRACO {}", loss(&median), loss(&draco));
}

/// Starts `draco run` and returns the child and the PS's HTTP port (read from its banner).
fn start(dir: &Path, yaml: &str) -> (std::process::Child, u16) {
    std::fs::write(dir.join("job.yaml"), yaml).unwrap();
    let mut child = Command::new(draco())
        .args([
            "run",
            "-f",
            dir.join("job.yaml").to_str().unwrap(),
            "--run-dir",
            dir.join("run").to_str().unwrap(),
            "--report-seconds",
            "1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let port = loop {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "runner ended before printing its ports");
        if let Some(rest) = line.split("status http://127.0.0.1:").nth(1) {
            break rest.split('/').next().unwrap().parse().unwrap();
        }
    };
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    (child, port)
}

/// The PS's `/status`, if it answers.
fn status(port: u16) -> Option<Value> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /status HTTP/1.0\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    serde_json::from_str(body.split("\r\n\r\n").nth(1)?).ok()
}

/// Polls the PS's `/status` until `done` holds for it (two minutes at most).
fn wait_until(port: u16, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(st) = status(port).filter(|st| done(st)) {
            return st;
        }
        assert!(Instant::now() < deadline, "the job never got to: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_for_step(port: u16, step: u64) {
    wait_until(port, &format!("step {step}"), |st| st["step"].as_u64().is_some_and(|s| s >= step));
}

/// Waits for a `draco run` started by [`start`] in `dir`, which must succeed; its summary.json.
fn finished(mut child: std::process::Child, dir: &Path, why: &str) -> Value {
    assert!(child.wait().unwrap().success(), "{why}");
    serde_json::from_str(&std::fs::read_to_string(dir.join("run/summary.json")).unwrap()).unwrap()
}

/// Sends `signal` (e.g. "-9", "-STOP") to the process whose pid `draco run` wrote to `pid_file`.
fn signal(pid_file: &Path, signal: &str) {
    let pid = std::fs::read_to_string(pid_file).unwrap();
    assert!(Command::new("kill").args([signal, pid.trim()]).status().unwrap().success());
}

#[test]
fn killed_worker_and_killed_ps_recover_to_the_uninterrupted_model() {
    let dir = scratch("kill");
    let yaml = job_yaml("kill", "repetition", 6, 3, 1, 60, "");
    let reference = run(&dir.join("clean"), &yaml);
    let run_dir = dir.join("killed");
    std::fs::create_dir_all(&run_dir).unwrap();
    let (child, port) = start(&run_dir, &yaml);
    wait_for_step(port, 12);
    signal(&run_dir.join("run/pids/worker-2"), "-9");
    wait_for_step(port, 22);
    signal(&run_dir.join("run/pids/ps"), "-9");
    let summary = finished(child, &run_dir, "the job should survive a killed worker and a killed PS");
    assert!(summary["restarts"].as_u64().unwrap() >= 2, "{summary}");
    assert!(
        summary["status"]["resumedFromStep"].as_u64().unwrap() >= 20,
        "the PS resumed from a checkpoint: {summary}"
    );
    assert_eq!(
        summary["status"]["paramsDigest"], reference["status"]["paramsDigest"],
        "resumed model differs from the uninterrupted one"
    );
}

/// With a liar in the group, one more member gone leaves 2s + e > r - 1: the group cannot be
/// decoded, so the PS must say it waits (not guess, not skip) and hold the step; the member
/// that comes back rejoins at that step and the job ends with the uninterrupted model.
#[test]
fn a_group_beyond_its_erasure_bound_waits_for_the_member_that_comes_back() {
    let dir = scratch("wait");
    let drill = "  adversary: {count: 1, attack: reverse, scale: 100, placement: fixed}\n";
    let yaml = job_yaml("wait", "repetition", 6, 3, 1, 30, drill)
        .replace("stragglerTimeoutSeconds: 20", "stragglerTimeoutSeconds: 1");
    assert!(yaml.contains("stragglerTimeoutSeconds: 1\n"), "the job template changed: {yaml}");
    let liar = DracoJob::from_yaml(&yaml).unwrap().job_config().adversaries_at(0)[0];
    // Another member of the liar's group (groups are consecutive ranks, r = 3).
    let victim = if liar.is_multiple_of(3) { liar + 1 } else { liar - 1 };
    let reference = run(&dir.join("clean"), &yaml);
    let run_dir = dir.join("interrupted");
    std::fs::create_dir_all(&run_dir).unwrap();
    let (child, port) = start(&run_dir, &yaml);
    wait_for_step(port, 8);
    // A hung member first: the PS must wait for it, saying so, and not advance.
    let pid_file = run_dir.join("run/pids").join(format!("worker-{victim}"));
    signal(&pid_file, "-STOP");
    let waits_for_victim = |st: &Value| {
        // "step N: waiting for workers [a, b] (why)"
        let message = st["message"].as_str().unwrap_or("");
        let Some(list) = message.split("waiting for workers [").nth(1).and_then(|rest| rest.split(']').next()) else {
            return false;
        };
        list.split(", ").any(|w| w == victim.to_string())
    };
    // Its push for the step it was stopped in may still have been on the wire, so the PS may
    // wait for it one step later; a PS that gave up on the group would never hold a step for
    // longer than the 1 s straggler timeout.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let waiting = wait_until(port, "a wait for the stopped worker", waits_for_victim);
        std::thread::sleep(Duration::from_millis(2500));
        let held = status(port).expect("the PS answers while it waits");
        if held["step"] == waiting["step"] && waits_for_victim(&held) {
            assert_eq!(held["undecodableSteps"], 0, "{held}");
            break;
        }
        assert!(Instant::now() < deadline, "the PS never held a step for the stopped worker: {held}");
    }
    // Then it dies; `draco run` restarts it like a pod restart and it rejoins at the held step.
    signal(&pid_file, "-9");
    let summary = finished(child, &run_dir, "the job should finish once the member is back");
    assert!(summary["restarts"].as_u64().unwrap() >= 1, "{summary}");
    assert_eq!(
        summary["status"]["paramsDigest"], reference["status"]["paramsDigest"],
        "the model differs from the uninterrupted run's"
    );
    let named = named_per_worker(&summary, 6);
    assert!(named[liar] > 0, "the liar was never named: {named:?}");
    assert_eq!(named.iter().sum::<u64>(), named[liar], "an honest worker was named: {named:?}");
}
