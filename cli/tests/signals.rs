//! How `draco` ends: a process stopped by SIGTERM (how Kubernetes evicts, drains and suspends)
//! exits 143, like one killed by the signal, so the operator's restartPolicy ExitCode retries
//! it; errors on bad input exit 1 with one line naming the cause once.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use draco_api::DracoJob;

const JOB: &str = "apiVersion: draco.dev/v1alpha1
kind: DracoJob
metadata: {name: sig}
spec:
  workers: 3
  redundancy: 3
  code: repetition
  byzantineTolerance: 1
  model: {architecture: mlp, hidden: [8]}
  dataset: {format: synthetic}
  training: {steps: 5, batchSize: 30, optimizer: {type: sgd, learningRate: 0.05}}
";

#[test]
fn a_worker_stopped_by_sigterm_exits_143() {
    let dir = std::env::temp_dir().join(format!("draco-signals-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.json");
    let job = DracoJob::from_yaml(JOB).unwrap();
    std::fs::write(&config, serde_json::to_string(&job.job_config()).unwrap()).unwrap();
    // A PS address nothing listens on: the worker keeps retrying until its deadline.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut worker = Command::new(env!("CARGO_BIN_EXE_draco"))
        .args(["worker", "--rank", "0", "--token", "t", "--metrics-addr", "127.0.0.1:0"])
        .arg("--config")
        .arg(&config)
        .args(["--ps-addr", &format!("http://{closed}")])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Its first log line comes after the signal handlers are installed.
    let mut lines = BufReader::new(worker.stdout.take().unwrap()).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    assert!(first.contains("serving metrics"), "{first}");
    std::thread::sleep(Duration::from_millis(300));
    let sent = Command::new("kill").args(["-TERM", &worker.id().to_string()]).status().unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = worker.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the worker ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(143), "{status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_error_exits_1_and_names_its_cause_once() {
    let output =
        Command::new(env!("CARGO_BIN_EXE_draco")).args(["validate", "-f", "/no/such/job.yaml"]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: /no/such/job.yaml: "), "{stderr}");
    assert_eq!(stderr.matches("No such file").count(), 1, "{stderr}");
}
