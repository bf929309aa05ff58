//! `draco`: the one binary of the project (the container image runs it too).

mod bench;
mod bench_ingest;
mod local;
mod processes;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use draco_core::job::JobConfig;

#[derive(Parser)]
#[command(name = "draco", version, about = "Byzantine-resilient distributed training (DRACO)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a DracoJob locally: the PS and every worker as processes on 127.0.0.1.
    Run(local::RunArgs),
    /// Check a DracoJob YAML: schema, every cross-field rule (in Rust and as the CRD's CEL rules,
    /// as the API server would run them), errors naming field and value.
    Validate {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Print the DracoJob CustomResourceDefinition (YAML), as `crds/` and the Helm chart hold it.
    Crd,
    /// The parameter server of one job.
    Ps(PsArgs),
    /// One worker of one job.
    Worker(WorkerArgs),
    /// The Kubernetes operator: reconciles DracoJobs into pods, services, secrets and config.
    Operator(OperatorArgs),
    /// Measure Draco's hot paths against baselines measured in the same run.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

#[derive(clap::Args)]
struct PsArgs {
    /// The job's runtime configuration (JSON, as `draco run` writes it or the operator mounts it).
    #[arg(long, env = "DRACO_CONFIG")]
    config: PathBuf,
    #[arg(long, env = "DRACO_GRPC_ADDR", default_value = "0.0.0.0:7070")]
    grpc_addr: SocketAddr,
    #[arg(long, env = "DRACO_HTTP_ADDR", default_value = "0.0.0.0:9090")]
    http_addr: SocketAddr,
    /// One token per line, line i for rank i (as `draco run` writes it).
    #[arg(long, env = "DRACO_TOKENS_FILE", required_unless_present = "tokens_dir", conflicts_with = "tokens_dir")]
    tokens_file: Option<PathBuf>,
    /// A directory with one file `worker-<rank>` per worker (a mounted Secret, as the operator
    /// creates it).
    #[arg(long, env = "DRACO_TOKENS_DIR")]
    tokens_dir: Option<PathBuf>,
    /// Where checkpoints are written and resumed from.
    #[arg(long, env = "DRACO_CHECKPOINT_DIR")]
    checkpoint_dir: Option<PathBuf>,
    /// Seconds to keep serving after the last step, so workers learn the job is over (and the
    /// operator reads the final status).
    #[arg(long, env = "DRACO_LINGER_SECONDS", default_value_t = 3.0)]
    linger_seconds: f64,
}

#[derive(clap::Args)]
struct OperatorArgs {
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, env = "DRACO_OPERATOR_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Watch only this namespace (namespace-scoped install); every namespace when unset.
    #[arg(long, env = "DRACO_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// The image of the PS and worker pods (a template's `draco` container may override it).
    #[arg(long, env = "DRACO_IMAGE")]
    image: String,
    #[arg(long, env = "DRACO_IMAGE_PULL_POLICY")]
    image_pull_policy: Option<String>,
}

#[derive(clap::Args)]
struct WorkerArgs {
    #[arg(long, env = "DRACO_CONFIG")]
    config: PathBuf,
    #[arg(long, env = "DRACO_RANK")]
    rank: usize,
    /// e.g. http://127.0.0.1:7070
    #[arg(long, env = "DRACO_PS_ADDR")]
    ps_addr: String,
    /// This worker's own secret token.
    #[arg(long, env = "DRACO_TOKEN", hide_env_values = true)]
    token: String,
    /// Give up when the PS stays unreachable this long.
    #[arg(long, default_value_t = 120.0)]
    connect_deadline_seconds: f64,
    /// Where this worker serves /metrics and /healthz (port 0: any free port, logged).
    #[arg(long, env = "DRACO_METRICS_ADDR", default_value = "0.0.0.0:9091")]
    metrics_addr: SocketAddr,
}

fn read_config(path: &PathBuf) -> anyhow::Result<JobConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let job: JobConfig =
        serde_json::from_str(&text).with_context(|| format!("{}: not a job configuration", path.display()))?;
    job.validate().with_context(|| format!("{}", path.display()))?;
    Ok(job)
}

/// The workers' tokens, rank order, from `--tokens-file` or `--tokens-dir`.
fn read_tokens(args: &PsArgs, workers: usize) -> anyhow::Result<Vec<String>> {
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path).with_context(|| format!("reading the token file {}", path.display()))
    };
    if let Some(dir) = &args.tokens_dir {
        return (0..workers)
            .map(|rank| {
                let token = read(&dir.join(format!("worker-{rank}")))?.trim().to_string();
                anyhow::ensure!(!token.is_empty(), "--tokens-dir: {}/worker-{rank} is empty", dir.display());
                Ok(token)
            })
            .collect();
    }
    let file = args.tokens_file.as_ref().context("one of --tokens-file or --tokens-dir is required")?;
    Ok(read(file)?.lines().map(str::to_string).filter(|l| !l.is_empty()).collect())
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // Plain text when logging to a file (as under `draco run`), colours on a terminal.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_ansi(ansi).init();
}

/// The signal that stopped this process (0: none), for its exit code.
static STOPPED_BY: AtomicI32 = AtomicI32::new(0);
const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

/// Ctrl-C, or SIGTERM (how Kubernetes stops a pod).
async fn ctrl_c() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminated = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    let signal = tokio::select! {
        _ = tokio::signal::ctrl_c() => SIGINT,
        _ = terminated => SIGTERM,
    };
    STOPPED_BY.store(signal, Ordering::Release);
}

/// Errors print once, as one line with their causes (`a: b: c`), never as a panic-style
/// backtrace. A process stopped by a signal exits 128 + its number, as if it had not caught
/// it: the operator's restartPolicy ExitCode then sees an eviction (143), not a bug (1).
fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => match STOPPED_BY.load(Ordering::Acquire) {
            0 => {
                eprintln!("error: {error:#}");
                ExitCode::FAILURE
            }
            signal => {
                eprintln!("draco: stopped by signal {signal}");
                ExitCode::from(128 + signal as u8)
            }
        },
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime =
        || tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime");
    match cli.command {
        Command::Bench(cmd) => bench::run(cmd),
        Command::Crd => {
            print!("{}", draco_api::schema::crd_yaml());
            Ok(())
        }
        Command::Validate { file } => {
            let job = draco_api::DracoJob::load(&file)?;
            if let Err(errors) = draco_api::schema::validate_cel(&job, None) {
                anyhow::bail!(
                    "{}: the API server would refuse this DracoJob:\n  {}",
                    file.display(),
                    errors.join("\n  ")
                );
            }
            let s = &job.spec;
            println!(
                "{}: valid DracoJob {:?}: {} workers, code {}, r = {}, tolerates s = {} lying and e = {} missing per unit",
                file.display(),
                job.name(),
                s.workers,
                s.code.as_str(),
                s.redundancy,
                s.byzantine_tolerance,
                s.straggler_tolerance
            );
            Ok(())
        }
        Command::Ps(args) => {
            init_logging();
            let job = read_config(&args.config)?;
            let tokens = read_tokens(&args, job.scheme.workers)?;
            let opts = draco_ps::PsOptions {
                job,
                grpc_addr: args.grpc_addr,
                http_addr: args.http_addr,
                tokens,
                checkpoint_dir: args.checkpoint_dir,
                linger: Duration::from_secs_f64(args.linger_seconds.max(0.0)),
            };
            let status = runtime()?.block_on(draco_ps::run(opts, ctrl_c()))?;
            match status.test_accuracy {
                Some(accuracy) => tracing::info!(step = status.step, accuracy, "job finished"),
                None => tracing::info!(step = status.step, "job finished"),
            }
            Ok(())
        }
        Command::Worker(args) => {
            init_logging();
            let job = read_config(&args.config)?;
            let opts = draco_worker::WorkerOptions {
                job,
                rank: args.rank,
                token: args.token,
                ps_addr: args.ps_addr,
                connect_deadline: Duration::from_secs_f64(args.connect_deadline_seconds.max(0.0)),
                metrics_addr: Some(args.metrics_addr),
            };
            let summary = runtime()?.block_on(async {
                tokio::select! {
                    r = draco_worker::run(opts) => r,
                    _ = ctrl_c() => Err(anyhow::anyhow!("interrupted")),
                }
            })?;
            tracing::info!(
                steps = summary.steps,
                forged = summary.forged,
                reconnects = summary.reconnects,
                "worker done"
            );
            Ok(())
        }
        Command::Run(args) => local::run(args),
        Command::Operator(args) => {
            init_logging();
            let opts = draco_operator::OperatorOptions {
                namespace: args.namespace.filter(|n| !n.is_empty()),
                metrics_addr: args.metrics_addr,
                pod_defaults: draco_operator::PodDefaults {
                    image: args.image,
                    image_pull_policy: args.image_pull_policy.filter(|p| !p.is_empty()),
                },
            };
            runtime()?.block_on(draco_operator::run(opts))
        }
    }
}
