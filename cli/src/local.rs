//! `draco run -f job.yaml`: the whole job on this machine. Starts `draco ps` and one
//! `draco worker` per rank as child processes on 127.0.0.1 (free ports, a fresh token per
//! worker), shows live progress from the PS's `/status`, restarts crashed processes like a pod
//! restart would (up to `runPolicy.backoffLimit`), stops everything on Ctrl-C, and ends with a
//! summary and a per-worker verdict table. Logs, config, checkpoints and `summary.json` go to
//! the run directory.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use draco_api::DracoJob;
use serde_json::Value;

use crate::processes::Supervised;

#[derive(clap::Args)]
pub struct RunArgs {
    /// The DracoJob YAML.
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Where logs, checkpoints and the summary go (default: runs/<job>-<unix time>).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Print one progress line every this many seconds when not on a terminal.
    #[arg(long, default_value_t = 5.0)]
    report_seconds: f64,
    /// Write a Prometheus file-service-discovery JSON file listing the PS's and every worker's
    /// metrics endpoint (labels draco_job, draco_role, worker), for a local Prometheus.
    #[arg(long, value_name = "FILE")]
    prometheus_sd: Option<PathBuf>,
}

const DEFAULT_BACKOFF_LIMIT: u32 = 3;

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let job = DracoJob::load(&args.file)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let outcome = runtime.block_on(run_job(&job, &args))?;
    if !outcome {
        std::process::exit(1);
    }
    Ok(())
}

/// A loopback port that is free now and that outgoing connections will not take meanwhile.
/// A port from `bind(0)` lies in the kernel's ephemeral range, where every outgoing connection
/// (a worker's gRPC channel, say) also gets its local port: between our probe and the child's
/// bind, one of those can grab it and the child fails with "address in use", restart after
/// restart. So: random ports below the ephemeral range, probed; `bind(0)` only as a fallback.
fn free_port() -> anyhow::Result<u16> {
    use rand_core::{RngCore, TryRngCore};
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    const LOWEST: u16 = 10000;
    if ephemeral_start > LOWEST + 1000 {
        let mut rng = rand_core::OsRng.unwrap_err();
        for _ in 0..200 {
            let port = LOWEST + (rng.next_u32() % u32::from(ephemeral_start - LOWEST)) as u16;
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// The file-SD target groups of a local job: one for the PS, one per worker. Target labels
/// (not metric labels) carry the job name, the role and the worker's rank, the same names the
/// Helm chart's scrape config gives pods, so dashboards work on both.
pub fn prometheus_sd_targets(job: &str, ps_port: u16, worker_ports: &[u16]) -> Value {
    let mut groups = vec![serde_json::json!({
        "targets": [format!("127.0.0.1:{ps_port}")],
        "labels": {"draco_job": job, "draco_role": "ps"},
    })];
    groups.extend(worker_ports.iter().enumerate().map(|(rank, port)| {
        serde_json::json!({
            "targets": [format!("127.0.0.1:{port}")],
            "labels": {"draco_job": job, "draco_role": "worker", "worker": rank.to_string()},
        })
    }));
    Value::Array(groups)
}

/// Writes the file-SD file atomically: Prometheus watches it and must never read half a file.
fn write_prometheus_sd(path: &Path, job: &str, ps_port: u16, worker_ports: &[u16]) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(&prometheus_sd_targets(job, ps_port, worker_ports))? + "\n";
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("--prometheus-sd: writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("--prometheus-sd: renaming to {}", path.display()))?;
    Ok(())
}

/// GET `path` from the PS's HTTP port on this machine; `None` while it is not answering.
pub async fn http_get(port: u16, path: &str) -> Option<String> {
    draco_operator::ps_status::http_get(&format!("127.0.0.1:{port}"), path).await
}

fn dataset_hint(job: &DracoJob) -> anyhow::Result<()> {
    use draco_core::job::DatasetFormat;
    let d = &job.spec.dataset;
    if d.format != DatasetFormat::Synthetic && !Path::new(&d.path).is_dir() {
        bail!(
            "spec.dataset.path: {:?} is not a directory{}",
            d.path,
            if d.format == DatasetFormat::Idx {
                " (Fashion-MNIST: `apt-get install dataset-fashion-mnist` puts it in /usr/share/datasets/fashion-mnist)"
            } else {
                ""
            }
        );
    }
    Ok(())
}

async fn run_job(job: &DracoJob, args: &RunArgs) -> anyhow::Result<bool> {
    dataset_hint(job)?;
    let config = job.job_config();
    let name = job.name();
    let run_dir = match &args.run_dir {
        Some(d) => d.clone(),
        None => {
            let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
            PathBuf::from("runs").join(format!("{name}-{secs}"))
        }
    };
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    let config_path = run_dir.join("config.json");
    std::fs::write(&config_path, serde_json::to_string_pretty(&config)?)?;
    let tokens: Vec<String> = (0..config.scheme.workers).map(|_| draco_core::secret::random_hex(24)).collect();
    let tokens_path = run_dir.join("tokens");
    write_private(&tokens_path, &(tokens.join("\n") + "\n"))?;
    // Distinct ports: each probe's listener is closed again, so one port could come up twice.
    let mut ports: Vec<u16> = Vec::new();
    while ports.len() < 2 + config.scheme.workers {
        let p = free_port()?;
        if !ports.contains(&p) {
            ports.push(p);
        }
    }
    let (grpc_port, http_port, metrics_ports) = (ports[0], ports[1], ports[2..].to_vec());
    let exe = std::env::current_exe().context("locating the draco binary")?;
    let s = |p: &Path| p.display().to_string();
    let mut ps = Supervised::new(
        "ps",
        &exe,
        vec![
            "ps".into(),
            "--config".into(),
            s(&config_path),
            "--grpc-addr".into(),
            format!("127.0.0.1:{grpc_port}"),
            "--http-addr".into(),
            format!("127.0.0.1:{http_port}"),
            "--tokens-file".into(),
            s(&tokens_path),
            "--checkpoint-dir".into(),
            s(&run_dir.join("checkpoints")),
            "--linger-seconds".into(),
            "2".into(),
        ],
        vec![],
        &run_dir,
    );
    let ps_addr = format!("http://127.0.0.1:{grpc_port}");
    let mut workers: Vec<Supervised> = (0..config.scheme.workers)
        .map(|rank| {
            Supervised::new(
                &format!("worker-{rank}"),
                &exe,
                vec![
                    "worker".into(),
                    "--config".into(),
                    s(&config_path),
                    "--rank".into(),
                    rank.to_string(),
                    "--ps-addr".into(),
                    ps_addr.clone(),
                    "--metrics-addr".into(),
                    format!("127.0.0.1:{}", metrics_ports[rank]),
                ],
                vec![
                    ("DRACO_TOKEN".into(), tokens[rank].clone()),
                    ("DRACO_WORLD_SIZE".into(), config.scheme.workers.to_string()),
                ],
                &run_dir,
            )
        })
        .collect();
    let backoff_limit =
        job.spec.run_policy.as_ref().and_then(|r| r.backoff_limit).map_or(DEFAULT_BACKOFF_LIMIT, |l| l as u32);

    println!(
        "draco run: job {name:?}: {} workers, code {}, r = {}, s = {}, {} steps{}",
        config.scheme.workers,
        config.scheme.code.as_str(),
        config.scheme.redundancy,
        config.scheme.byzantine_tolerance,
        config.training.steps,
        config.adversary.as_ref().map(|a| format!(", drill: {} x {:?}", a.count, a.attack)).unwrap_or_default()
    );
    println!("  run directory: {}", run_dir.display());
    println!(
        "  PS: gRPC 127.0.0.1:{grpc_port}, metrics http://127.0.0.1:{http_port}/metrics, status http://127.0.0.1:{http_port}/status"
    );
    for (rank, port) in metrics_ports.iter().enumerate() {
        println!("  worker {rank}: metrics http://127.0.0.1:{port}/metrics");
    }
    if let Some(path) = &args.prometheus_sd {
        write_prometheus_sd(path, name, http_port, &metrics_ports)?;
        println!("  Prometheus file-SD targets: {}", path.display());
    }

    ps.start()?;
    for w in &mut workers {
        w.start()?;
    }
    let started = Instant::now();
    let tty = std::io::stdout().is_terminal();
    let mut last_report = Instant::now() - Duration::from_secs(3600);
    let mut status: Option<Value> = None;
    let mut restarts_used = 0u32;
    let mut failure: Option<String> = None;
    let mut ctrl_c = Box::pin(tokio::signal::ctrl_c());
    loop {
        tokio::select! {
            _ = &mut ctrl_c => {
                println!("\ninterrupted: stopping every process");
                for w in &mut workers { w.stop().await; }
                ps.stop().await;
                eprintln!("draco run: interrupted; logs in {}", run_dir.display());
                std::process::exit(130);
            }
            _ = tokio::time::sleep(Duration::from_millis(300)) => {}
        }
        if let Some(body) = http_get(http_port, "/status").await
            && let Ok(v) = serde_json::from_str::<Value>(&body)
        {
            status = Some(v);
        }
        let phase = status.as_ref().and_then(|s| s["phase"].as_str()).unwrap_or("Starting").to_string();
        if let Some(st) = &status
            && (tty || last_report.elapsed().as_secs_f64() >= args.report_seconds)
        {
            let line = progress_line(st, started.elapsed());
            if tty {
                print!("\r{line:<110}");
                let _ = std::io::stdout().flush();
            } else {
                println!("{line}");
            }
            last_report = Instant::now();
        }
        if let Some(exit) = ps.poll() {
            if exit.success() && phase == "Succeeded" {
                break;
            }
            if restarts_used >= backoff_limit {
                failure = Some(format!(
                    "the PS exited ({exit}) and the backoff limit of {backoff_limit} restarts is used up; see {}",
                    ps.log_path().display()
                ));
                break;
            }
            restarts_used += 1;
            eprintln!(
                "\nthe PS exited ({exit}): restarting it from its latest checkpoint ({restarts_used}/{backoff_limit})"
            );
            ps.restart()?;
        }
        for w in &mut workers {
            if let Some(exit) = w.poll()
                && !exit.success()
            {
                if restarts_used >= backoff_limit {
                    failure = Some(format!(
                        "{} exited ({exit}) and the backoff limit of {backoff_limit} restarts is used up; see {}",
                        w.name,
                        w.log_path().display()
                    ));
                    break;
                }
                restarts_used += 1;
                eprintln!("\n{} exited ({exit}): restarting it ({restarts_used}/{backoff_limit})", w.name);
                w.restart()?;
            }
        }
        if failure.is_some() || phase == "Failed" {
            break;
        }
    }
    if tty {
        println!();
    }
    for w in &mut workers {
        w.wait_or_stop(Duration::from_secs(10)).await;
    }
    ps.wait_or_stop(Duration::from_secs(10)).await;
    let wall = started.elapsed();
    let status = status.unwrap_or(Value::Null);
    let succeeded = failure.is_none() && status["phase"] == "Succeeded";
    let failure =
        failure.or_else(|| (!succeeded).then(|| format!("the PS reports {}: {}", status["phase"], status["message"])));
    let summary = serde_json::json!({
        "job": name,
        "succeeded": succeeded,
        "failure": failure,
        "wallSeconds": wall.as_secs_f64(),
        "restarts": restarts_used,
        "status": status,
    });
    std::fs::write(run_dir.join("summary.json"), serde_json::to_string_pretty(&summary)?)?;
    print_summary(&config, &status, wall, restarts_used);
    if let Some(f) = &failure {
        eprintln!("draco run: FAILED: {f}");
    }
    Ok(succeeded)
}

fn progress_line(st: &Value, elapsed: Duration) -> String {
    let step = st["step"].as_u64().unwrap_or(0);
    let total = st["totalSteps"].as_u64().unwrap_or(0);
    let fmt = |v: &Value, scale: f64, digits: usize, unit: &str| {
        v.as_f64().map_or("-".to_string(), |x| format!("{:.*}{unit}", digits, x * scale))
    };
    let suspects: Vec<String> = st["suspects"]
        .as_array()
        .map(|a| a.iter().map(|s| format!("w{}({})", s["worker"], s["count"])).collect())
        .unwrap_or_default();
    format!(
        "step {step}/{total}  loss {}  acc {}  {} steps/s  {:.0}s  suspects: {}",
        fmt(&st["loss"], 1.0, 3, ""),
        fmt(&st["testAccuracy"], 100.0, 1, "%"),
        fmt(&st["stepsPerSecond"], 1.0, 2, ""),
        elapsed.as_secs_f64(),
        if suspects.is_empty() { "none".to_string() } else { suspects.join(" ") }
    )
}

fn print_summary(config: &draco_core::job::JobConfig, st: &Value, wall: Duration, restarts: u32) {
    println!();
    println!("job {:?}: {}", config.name, st["phase"].as_str().unwrap_or("unknown"));
    println!(
        "  steps {} of {}, wall time {:.1} s, test accuracy {}, test loss {}, restarts {restarts}",
        st["step"],
        config.training.steps,
        wall.as_secs_f64(),
        st["testAccuracy"].as_f64().map_or("-".into(), |a| format!("{:.2}%", a * 100.0)),
        st["testLoss"].as_f64().map_or("-".into(), |l| format!("{l:.4}")),
    );
    println!(
        "  decoded steps {}, undecodable {}, bound violated {}, params digest {}",
        st["decodedSteps"], st["undecodableSteps"], st["boundViolatedSteps"], st["paramsDigest"]
    );
    let assignment = draco_core::assignment::Assignment::new(&config.scheme).ok();
    println!("  {:<7} {:<6} {:>14} {:>9}  verdict", "worker", "unit", "named suspect", "missing");
    for w in 0..config.scheme.workers {
        let named: Vec<&Value> = st["suspects"]
            .as_array()
            .map(|a| a.iter().filter(|s| s["worker"].as_u64() == Some(w as u64)).collect())
            .unwrap_or_default();
        let count: u64 = named.iter().map(|s| s["count"].as_u64().unwrap_or(0)).sum();
        let reasons: Vec<&str> = named.iter().filter_map(|s| s["reason"].as_str()).collect();
        let missing = st["missing"][w.to_string()].as_u64().unwrap_or(0);
        let unit = assignment.as_ref().map_or(0, |a| a.unit_of(w));
        let verdict = if count > 0 { format!("LIED ({})", reasons.join(", ")) } else { "honest".to_string() };
        println!("  {:<7} {:<6} {:>14} {:>9}  {verdict}", w, unit, count, missing);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_sd_lists_the_ps_and_every_worker_with_target_labels() {
        let dir = std::env::temp_dir().join(format!("draco-sd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("targets.json");
        write_prometheus_sd(&path, "fm", 9000, &[9001, 9002]).unwrap();
        let groups: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let groups = groups.as_array().unwrap();
        assert_eq!(groups.len(), 3);
        assert_eq!(groups[0]["targets"][0], "127.0.0.1:9000");
        assert_eq!(groups[0]["labels"], serde_json::json!({"draco_job": "fm", "draco_role": "ps"}));
        assert_eq!(groups[2]["targets"][0], "127.0.0.1:9002");
        assert_eq!(groups[2]["labels"], serde_json::json!({"draco_job": "fm", "draco_role": "worker", "worker": "1"}));
        assert!(!path.with_extension("json.tmp").exists(), "the temporary file is renamed away");
        let err = write_prometheus_sd(&dir.join("missing/targets.json"), "fm", 1, &[]).unwrap_err();
        assert!(format!("{err:#}").contains("--prometheus-sd"), "{err:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
